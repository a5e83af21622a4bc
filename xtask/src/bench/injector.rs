//! The injectors the bench compares, behind one vocabulary: a running
//! `faultbpf blackhole` process, nftables scripts, how "N rules" is formed for
//! each, and the placeholders for what faultbpf cannot do yet (XDP, the
//! daemon). A placeholder returns [`Unavailable`], which the report prints as
//! "n/a (...)" instead of a number; making one real is one function here.

use std::{
    collections::VecDeque,
    io::{BufRead as _, BufReader, Read as _},
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    daemon,
    topo::{self, Netns, Proc},
};

/// Why a row has no number.
#[derive(Debug, Clone)]
pub struct Unavailable(pub String);

/// The highest destination port a rule set uses; everything the bench sends
/// is UDP to or from ports above it, or TCP, so no rule ever matches.
pub const RULE_DPORT_MAX: usize = 60_000;

/// N non-matching rules, formed the same way for faultbpf and nftables: UDP
/// destination ports 1..=min(N, 60000), then UDP source ports 1..=(N-60000)
/// for counts beyond 60000 (65 536 = 60 000 dport + 5 536 sport keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleSet {
    pub n: usize,
}

impl RuleSet {
    pub const HOW: &'static str = "N rules = UDP destination ports 1..min(N, 60000), then UDP source \
         ports 1..(N-60000) beyond that (65 536 = 60 000 dport + 5 536 sport). faultbpf gets \
         them as one rule whose port ranges load one hash-map key per port \
         (`--proto udp --dport 1-60000 --sport 1-5536`); the nftables linear chain has one \
         `udp dport X drop` rule per port, the set variant one rule per side matching an \
         N-element set (`udp dport @d drop`). All measured traffic is TCP, or UDP on ports \
         above 60000, so nothing matches.";

    pub fn dports(self) -> Option<(usize, usize)> {
        (self.n > 0).then(|| (1, self.n.min(RULE_DPORT_MAX)))
    }

    pub fn sports(self) -> Option<(usize, usize)> {
        (self.n > RULE_DPORT_MAX).then(|| (1, self.n - RULE_DPORT_MAX))
    }

    /// `--proto udp --dport 1-N [--sport 1-M]`; empty for 0 rules (which
    /// the CLI cannot express).
    pub fn faultbpf_args(self) -> Vec<String> {
        let range = |(a, b): (usize, usize)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        };
        let mut args = Vec::new();
        if let Some(d) = self.dports() {
            args.extend(["--proto".into(), "udp".into(), "--dport".into(), range(d)]);
        }
        if let Some(s) = self.sports() {
            args.extend(["--sport".into(), range(s)]);
        }
        // From 22 rules on the ranges include port 22, which the guard
        // rails refuse without it (as `daemon_spec` says `force`).
        if self.n >= 22 {
            args.push("--force".into());
        }
        args
    }

    /// The same rules as one daemon API rule (`force`: the ranges include
    /// port 22, which the daemon's guard rails refuse otherwise).
    pub fn daemon_spec(self) -> String {
        let mut spec = r#"{"fault":"blackhole","proto":"udp","force":true"#.to_owned();
        for (side, range) in [("dport", self.dports()), ("sport", self.sports())] {
            if let Some((a, b)) = range {
                spec.push_str(&format!(r#","{side}":["{a}-{b}"]"#));
            }
        }
        spec.push('}');
        spec
    }

    /// One `udp dport X drop` line per rule (then `udp sport X drop`).
    pub fn nft_linear_rules(self) -> String {
        let mut text = String::new();
        for (side, range) in [("dport", self.dports()), ("sport", self.sports())] {
            if let Some((a, b)) = range {
                for port in a..=b {
                    text.push_str(&format!("udp {side} {port} drop\n"));
                }
            }
        }
        text
    }

    /// The elements of the destination- and source-port sets.
    pub fn nft_set_elements(self) -> [(&'static str, Option<String>); 2] {
        let list = |range: Option<(usize, usize)>| {
            range.map(|(a, b)| (a..=b).map(|p| p.to_string()).collect::<Vec<_>>().join(","))
        };
        [
            ("dport", list(self.dports())),
            ("sport", list(self.sports())),
        ]
    }
}

/// How a faultbpf process is put into its namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launch {
    /// `ip netns exec NS faultbpf ...`, as a user would.
    IpNetnsExec,
    /// Spawned from a thread that entered the namespace: no `ip` in between,
    /// so timing the spawn times faultbpf alone.
    Setns,
}

/// What a `faultbpf ... --json` printed when it ended, summed over rules.
#[derive(Debug, Clone, Default)]
pub struct FinalCounters {
    pub attach: String,
    pub matched_packets: u64,
    pub acted_packets: u64,
}

/// A running `faultbpf` process; killed by PID on drop.
pub struct Faultbpf {
    pub proc: Proc,
    pub spawned_at: Instant,
    active: mpsc::Receiver<Instant>,
    stdout: mpsc::Receiver<String>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

impl Faultbpf {
    /// Starts `faultbpf ARGS... --json` in `ns`.
    pub fn start(bin: &Path, ns: &Netns, args: &[String], launch: Launch) -> Result<Self> {
        let mut cmd = match launch {
            Launch::IpNetnsExec => ns.exec(bin),
            Launch::Setns => Command::new(bin),
        };
        cmd.args(args)
            .arg("--json")
            .env("FAULTBPF_SOCKET", daemon::NO_DAEMON_SOCKET)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawned_at = Instant::now();
        let mut proc = match launch {
            Launch::IpNetnsExec => Proc::spawn("faultbpf", &mut cmd)?,
            Launch::Setns => ns.run(None, || Proc::spawn("faultbpf", &mut cmd))?,
        };
        let stderr = proc.child.stderr.take().context("faultbpf's stderr")?;
        let mut stdout = proc.child.stdout.take().context("faultbpf's stdout")?;
        let (active_tx, active) = mpsc::channel();
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let tail2 = Arc::clone(&tail);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.starts_with("faultbpf: active:") {
                    let _ = active_tx.send(Instant::now());
                }
                if let Ok(mut tail) = tail2.lock() {
                    if tail.len() == 20 {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            }
        });
        let (stdout_tx, stdout_rx) = mpsc::channel();
        thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            let _ = stdout_tx.send(text);
        });
        Ok(Self {
            proc,
            spawned_at,
            active,
            stdout: stdout_rx,
            stderr_tail: tail,
        })
    }

    fn stderr(&self) -> String {
        self.stderr_tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    /// Waits for `faultbpf: active:` and returns when it was read.
    pub fn wait_active(&mut self, timeout: Duration) -> Result<Instant> {
        let end = Instant::now() + timeout;
        loop {
            topo::check_interrupted()?;
            match self.active.recv_timeout(Duration::from_millis(5)) {
                Ok(at) => return Ok(at),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    thread::sleep(Duration::from_millis(5))
                }
            }
            if let Some(status) = self.proc.child.try_wait()? {
                // Let the reader catch the last lines.
                thread::sleep(Duration::from_millis(50));
                bail!(
                    "faultbpf exited ({status}) before `faultbpf: active:`: {}",
                    self.stderr()
                );
            }
            if Instant::now() >= end {
                bail!(
                    "faultbpf was not active within {timeout:?}: {}",
                    self.stderr()
                );
            }
        }
    }

    /// SIGTERM, then the final counters it prints.
    pub fn stop(self) -> Result<FinalCounters> {
        let v = self.stop_json()?;
        final_counters(&v).with_context(|| format!("reading faultbpf's JSON: {v}"))
    }

    /// SIGTERM, then the `--json` line it printed (any fault command's,
    /// `http`'s included).
    pub fn stop_json(mut self) -> Result<serde_json::Value> {
        let status = self.proc.stop(libc::SIGTERM, Duration::from_secs(15))?;
        if !status.success() {
            bail!("faultbpf ended with {status}: {}", self.stderr());
        }
        let text = self
            .stdout
            .recv_timeout(Duration::from_secs(5))
            .context("faultbpf exited but its stdout stayed open")?;
        last_json(&text).with_context(|| format!("reading faultbpf's JSON: {text}"))
    }
}

/// The last line of `text` that is a JSON object.
fn last_json(text: &str) -> Result<serde_json::Value> {
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .context("no JSON line")?;
    Ok(serde_json::from_str(line)?)
}

/// A packet fault's `--json` line:
/// `{"attach":..,"rules":[{"matched_packets":..,..}]}`.
fn final_counters(v: &serde_json::Value) -> Result<FinalCounters> {
    let mut out = FinalCounters {
        attach: v["attach"].as_str().unwrap_or("?").to_owned(),
        ..Default::default()
    };
    for rule in v["rules"].as_array().context("no `rules` array")? {
        out.matched_packets += rule["matched_packets"].as_u64().unwrap_or(0);
        out.acted_packets += rule["acted_packets"].as_u64().unwrap_or(0);
    }
    Ok(out)
}

/// `nft -f -` in `ns` with `script` on stdin.
pub fn nft(ns: &Netns, script: &str, timeout: Duration) -> Result<String> {
    topo::output_within(ns.exec("nft").args(["-f", "-"]), Some(script), timeout)
}

/// The packets counted by the first `counter` of `chain` in table
/// `netdev TABLE`.
pub fn nft_counter(ns: &Netns, table: &str, chain: &str) -> Result<u64> {
    let json = topo::output_within(
        ns.exec("nft")
            .args(["-j", "list", "chain", "netdev", table, chain]),
        None,
        Duration::from_secs(30),
    )?;
    let v: serde_json::Value = serde_json::from_str(&json).context("nft -j")?;
    for item in v["nftables"].as_array().into_iter().flatten() {
        for expr in item["rule"]["expr"].as_array().into_iter().flatten() {
            if let Some(packets) = expr["counter"]["packets"].as_u64() {
                return Ok(packets);
            }
        }
    }
    bail!("no counter in netdev {table} {chain}: {json}")
}

/// The XDP attach modes the drop scenario wants rows for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    Native,
    Generic,
}

/// faultbpf's arguments (after `blackhole`) for an XDP drop of UDP `port`
/// arriving on `iface`: `--xdp --xdp-mode native|generic`, ingress only
/// (egress has no XDP hook). The mode is explicit, so a native attach that
/// is not possible fails rather than silently measuring generic.
pub fn xdp_blackhole_args(
    mode: XdpMode,
    port: u16,
    iface: &str,
) -> Result<Vec<String>, Unavailable> {
    let mode = match mode {
        XdpMode::Native => "native",
        XdpMode::Generic => "generic",
    };
    Ok([
        "--proto",
        "udp",
        "--dport",
        &port.to_string(),
        "--iface",
        iface,
        "--direction",
        "ingress",
        "--xdp",
        "--xdp-mode",
        mode,
    ]
    .map(String::from)
    .to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_sets_are_formed_from_dports_then_sports() {
        assert_eq!(RuleSet { n: 0 }.faultbpf_args(), Vec::<String>::new());
        assert_eq!(
            RuleSet { n: 1 }.faultbpf_args(),
            ["--proto", "udp", "--dport", "1"]
        );
        assert_eq!(
            RuleSet { n: 65_536 }.faultbpf_args(),
            [
                "--proto", "udp", "--dport", "1-60000", "--sport", "1-5536", "--force"
            ]
        );
        assert_eq!(
            RuleSet { n: 3 }.nft_linear_rules(),
            "udp dport 1 drop\nudp dport 2 drop\nudp dport 3 drop\n"
        );
        assert_eq!(
            RuleSet { n: 60_002 }.nft_linear_rules().lines().count(),
            60_002
        );
        assert_eq!(
            RuleSet { n: 65_536 }.daemon_spec(),
            r#"{"fault":"blackhole","proto":"udp","force":true,"dport":["1-60000"],"sport":["1-5536"]}"#
        );
        let [(_, d), (_, s)] = RuleSet { n: 60_002 }.nft_set_elements();
        assert_eq!(d.unwrap().split(',').count(), 60_000);
        assert_eq!(s.unwrap(), "1,2");
    }

    #[test]
    fn parses_the_final_json() {
        let line = r#"{"attach":"tcx","interfaces":["fbb-s"],"rules":[{"id":0,"matched_packets":12,"matched_bytes":840,"acted_packets":10,"acted_bytes":700}]}"#;
        let c = final_counters(&last_json(&format!("log\n{line}\n")).unwrap()).unwrap();
        assert_eq!(c.attach, "tcx");
        assert_eq!((c.matched_packets, c.acted_packets), (12, 10));
    }
}
