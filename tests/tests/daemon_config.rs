//! The daemon's TOML config: a valid file is in force from the start; every
//! kind of mistake is reported as FILE:LINE:COLUMN by `faultbpf check` (and
//! by a daemon refusing to start on it); SIGHUP with a broken file changes
//! nothing and says why; SIGHUP with a changed file applies the difference,
//! keeping the id and counters of rules that did not change.

use std::time::Duration;

use faultbpf_tests::{Launch, SERVER_IF, Topology, daemon::Daemon, probe::UdpPath, temp::TempFile};
use serde_json::{Value, json};

/// Blackholed by the config's `sink` rule.
const P: u16 = 5000;
/// A second config rule's port (removed on reload).
const Q: u16 = 5001;
/// A rule added by reload.
const R: u16 = 5002;
/// An API rule's port.
const S: u16 = 5003;

/// The rule named `name`, from GET /v1/rules.
fn by_name(d: &Daemon, name: &str) -> Option<Value> {
    d.rules().into_iter().find(|r| r["name"] == name)
}

/// GET /v1/rules without the seconds left, which tick down between calls.
fn stable_rules(d: &Daemon) -> Vec<Value> {
    let mut rules = d.rules();
    for r in &mut rules {
        r.as_object_mut().unwrap().remove("expires_in_seconds");
    }
    rules
}

fn acted(d: &Daemon, id: &Value) -> u64 {
    d.stats_of(id.as_u64().unwrap())
        .unwrap_or_else(|| panic!("no stats for rule {id}"))["acted_packets"]
        .as_u64()
        .unwrap()
}

fn config(rules: &str) -> String {
    format!(
        "# faultbpf e2e test config\n\
         interfaces = [\"{SERVER_IF}\"]\n\
         lease = \"3s\"\n\
         \n\
         [defaults]\n\
         ttl = \"10m\"\n\
         {rules}"
    )
}

fn rule(name: &str, port: u16) -> String {
    format!(
        "\n[[rule]]\nname = \"{name}\"\nfault = \"blackhole\"\nport = [{port}]\nproto = \"udp\"\n"
    )
}

/// `faultbpf check FILE`.
fn check(file: &TempFile) -> faultbpf_tests::Exit {
    Launch::offline(["check", file.as_str()]).run()
}

#[test]
fn a_valid_config_is_in_force_from_the_start() {
    let topo = Topology::new("dcf-valid");
    let to_p = UdpPath::new(&topo, P);
    let to_q = UdpPath::new(&topo, Q);
    let to_s = UdpPath::new(&topo, S);
    let text = config(&format!(
        "{}\n[[rule]]\nname = \"refuse\"\nfault = \"reset\"\ndport = [\"{Q}-{}\"]\nproto = \"udp\"\nttl = \"1h\"\n",
        rule("sink", P),
        Q + 1
    ));
    let file = TempFile::new("valid", ".toml", &text);

    let out = check(&file);
    out.assert_success();
    assert!(
        out.stdout
            .contains("OK: 2 rule(s), lease 3s, default ttl 10m"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("sink") && out.stdout.contains("refuse"),
        "{out:?}"
    );

    let d = Daemon::start(&topo.server, "valid", &["--config", file.as_str()]);
    let health = d.get("/healthz").expect(200);
    assert_eq!(
        health["interfaces"],
        json!([SERVER_IF]),
        "the config's interfaces: {health}"
    );
    assert_eq!(health["rules"], 2, "{health}");
    let sink = by_name(&d, "sink").expect("rule sink");
    assert_eq!(sink["origin"], "config", "{sink}");
    assert_eq!(sink["fault"], "blackhole", "{sink}");
    let ttl = sink["expires_in_seconds"].as_f64().unwrap();
    assert!((590.0..=600.0).contains(&ttl), "defaults.ttl: {sink}");
    let refuse = by_name(&d, "refuse").expect("rule refuse");
    assert_eq!(refuse["fault"], "reset", "{refuse}");
    let ttl = refuse["expires_in_seconds"].as_f64().unwrap();
    assert!((3590.0..=3600.0).contains(&ttl), "ttl = 1h: {refuse}");
    assert!(d.stderr().contains("2 config rule(s)"), "{}", d.stderr());

    // Both act from the first packet.
    assert_eq!(to_p.probe(10), 0, "sink must blackhole port {P}");
    assert_eq!(
        to_q.probe(10),
        0,
        "refuse must answer port {Q}, not deliver"
    );
    assert_eq!(to_s.probe(10), 10, "port {S} has no rule");
    assert_eq!(acted(&d, &sink["id"]), 10);
    assert_eq!(acted(&d, &refuse["id"]), 10);
}

/// One broken file: its text, the 1-based line and column the error must
/// name, and a word the message must contain.
struct Broken {
    what: &'static str,
    text: String,
    line: usize,
    column: usize,
    needle: &'static str,
}

fn broken_files() -> Vec<Broken> {
    let sink = rule("sink", P);
    // Line numbers below count from config()'s first line; the first
    // `[[rule]]` header is on line 8 and its keys on lines 9-12.
    vec![
        Broken {
            what: "a syntax error (unclosed table header)",
            text: config("\n[[rule]\nname = \"x\"\n"),
            line: 8,
            column: 7,
            needle: "",
        },
        Broken {
            what: "a syntax error (unterminated string)",
            text: config(&sink.replace("\"sink\"", "\"sink")),
            line: 9,
            column: 13,
            needle: "",
        },
        Broken {
            what: "an unknown top-level key",
            text: config(&sink).replace("lease = \"3s\"", "lease = \"3s\"\ncolour = \"red\""),
            line: 4,
            column: 1,
            needle: "colour",
        },
        Broken {
            what: "an unknown key in a rule",
            text: config(&format!("{sink}prot = \"udp\"\n")),
            line: 13,
            column: 1,
            needle: "prot",
        },
        Broken {
            what: "an unknown key in [defaults]",
            text: config(&sink).replace("ttl = \"10m\"", "ttl = \"10m\"\nlease = \"1s\""),
            line: 7,
            column: 1,
            needle: "lease",
        },
        Broken {
            what: "a wrong type (number for lease)",
            text: config(&sink).replace("lease = \"3s\"", "lease = 3"),
            line: 3,
            column: 9,
            needle: "string",
        },
        Broken {
            what: "a wrong type (string for pct)",
            text: config(&format!("{sink}pct = \"fifty\"\n")),
            line: 13,
            column: 7,
            needle: "",
        },
        Broken {
            what: "a wrong type (string for interfaces)",
            text: config(&sink).replace("[\"veth-s\"]", "\"veth-s\""),
            line: 2,
            column: 14,
            needle: "",
        },
        Broken {
            what: "an impossible value (pct 101)",
            text: config(&format!("{sink}pct = 101\n")),
            line: 13,
            column: 1,
            needle: "101",
        },
        Broken {
            what: "an impossible value (port 0)",
            text: config(&rule("sink", 0)),
            line: 11,
            column: 1,
            needle: "port",
        },
        Broken {
            what: "an impossible value (lease 0s)",
            text: config(&sink).replace("lease = \"3s\"", "lease = \"0s\""),
            line: 3,
            column: 9,
            needle: "lease",
        },
        Broken {
            what: "an impossible value (ttl soon)",
            text: config(&format!("{sink}ttl = \"soon\"\n")),
            line: 13,
            column: 1,
            needle: "soon",
        },
        Broken {
            what: "an unknown fault",
            text: config(&sink.replace("blackhole", "explode")),
            line: 10,
            column: 9,
            needle: "explode",
        },
    ]
}

#[test]
fn check_names_file_line_and_column_of_each_kind_of_error() {
    assert_all_rejected_at_their_position(broken_files());
}

/// Runs `faultbpf check` on each file; panics, listing every file whose
/// result is wrong, unless each fails (exit 1) naming `FILE:LINE:COL:`
/// and its word.
fn assert_all_rejected_at_their_position(files: Vec<Broken>) {
    let mut wrong = Vec::new();
    for b in files {
        let file = TempFile::new("broken", ".toml", &b.text);
        let out = check(&file);
        let at = format!("{}:{}:{}:", file.as_str(), b.line, b.column);
        if out.status.code() != Some(1)
            || !out.stderr.contains(&at)
            || !out.stderr.contains(b.needle)
        {
            wrong.push(format!(
                "{}: expected exit 1 and `{at}` and {:?} in the error\n--- file ---\n{}--- exit {:?}, stdout ---\n{}--- stderr ---\n{}",
                b.what,
                b.needle,
                numbered(&b.text),
                out.status.code(),
                out.stdout,
                out.stderr
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

/// `faultbpf check` must refuse what the daemon refuses to load, and say
/// where: a guarded port without `force`, and two rules on one port.
#[test]
fn check_rejects_what_the_daemon_would_refuse() {
    let sink = rule("sink", P);
    assert_all_rejected_at_their_position(vec![
        Broken {
            what: "port 22 without force",
            text: config(&rule("ssh", 22)),
            line: 11,
            column: 1,
            needle: "22",
        },
        Broken {
            what: "two rules on one port",
            text: config(&format!("{sink}{}", rule("twin", P))),
            line: 17,
            column: 1,
            needle: "5000",
        },
    ]);
    // With force the guarded port is fine.
    let file = TempFile::new(
        "forced",
        ".toml",
        &format!("{}force = true\n", config(&rule("ssh", 22))),
    );
    check(&file).assert_success();
}

fn numbered(text: &str) -> String {
    text.lines()
        .enumerate()
        .map(|(i, l)| format!("{:>3} | {l}\n", i + 1))
        .collect()
}

#[test]
fn the_daemon_refuses_to_start_on_a_broken_config() {
    let topo = Topology::new("dcf-refuse");
    let file = TempFile::new(
        "refuse",
        ".toml",
        &config(&format!("{}pct = 101\n", rule("sink", P))),
    );
    let mut d = Daemon::spawn(&topo.server, "refuse", &["--config", file.as_str()]);
    let (status, log) = d.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains(&format!("{}:13:1:", file.as_str())),
        "the daemon must name the position too: {log}"
    );
    assert!(!d.socket().exists(), "a refused daemon left its socket");
}

#[test]
fn sighup_with_a_broken_file_changes_nothing() {
    const N: usize = 40;
    let topo = Topology::new("dcf-hupbad");
    let to_p = UdpPath::new(&topo, P);
    let to_s = UdpPath::new(&topo, S);
    let good = config(&rule("sink", P));
    let file = TempFile::new("hupbad", ".toml", &good);
    let d = Daemon::start(&topo.server, "hupbad", &["--config", file.as_str()]);
    let sink = by_name(&d, "sink").expect("rule sink");
    let api = d.add_rule(&json!({ "fault": "blackhole", "port": [S], "name": "api" }));
    to_p.send(N, 16);
    assert_eq!(to_p.drain(), 0);
    assert_eq!(acted(&d, &sink["id"]), N as u64);
    let before = stable_rules(&d);

    let mut sent = N as u64;
    let cases = [
        (
            "a syntax error",
            config("\n[[rule]\nname = \"x\"\n"),
            "config not reloaded",
            format!("{}:8:7:", file.as_str()),
        ),
        (
            "an unknown key",
            config(&format!("{}prot = \"udp\"\n", rule("sink", P))),
            "config not reloaded",
            format!("{}:13:1:", file.as_str()),
        ),
        (
            "a wrong type",
            config(&format!("{}pct = \"all\"\n", rule("sink", P))),
            "config not reloaded",
            format!("{}:13:7:", file.as_str()),
        ),
        (
            "an impossible value",
            config(&format!("{}pct = 101\n", rule("sink", P))),
            "config not reloaded",
            format!("{}:13:1:", file.as_str()),
        ),
        // Valid on its own, but a new rule takes the API rule's port, and
        // sink changes: all or nothing, so sink must stay as it was.
        (
            "a conflict with an API rule",
            config(&format!(
                "{}{}",
                rule("sink", P).replace("proto = \"udp\"", "proto = \"all\""),
                rule("clash", S)
            )),
            "config not applied",
            format!("port {S}"),
        ),
        // Two of its rules share a port: refused when the file is read,
        // at the second rule's `port` key, as `faultbpf check` does.
        (
            "two rules on one port",
            config(&format!("{}{}", rule("sink", P), rule("twin", P))),
            "config not reloaded",
            format!("port {P} is already faulted by rule `sink`"),
        ),
    ];
    for (what, text, says, detail) in cases {
        file.write(&text);
        let from = d.log_len();
        d.signal(libc::SIGHUP);
        let line = d.expect_log(from, "SIGHUP", Duration::from_secs(5));
        assert!(
            line.contains(says) && line.contains("nothing changed") && line.contains(&detail),
            "{what}: the log must say why nothing changed ({says}, {detail}): {line}"
        );
        assert_eq!(
            stable_rules(&d),
            before,
            "{what}: the rules must not change"
        );
        // Still acting, counters kept.
        to_p.send(N, 16);
        assert_eq!(to_p.drain(), 0, "{what}: sink must still act");
        sent += N as u64;
        assert_eq!(acted(&d, &sink["id"]), sent, "{what}: counters kept");
        assert_eq!(acted(&d, &api["id"]), 0);
        d.assert_healthy(what);
    }
    assert_eq!(to_s.probe(5), 0, "the API rule must still act");
}

#[test]
fn sighup_with_a_changed_file_applies_it() {
    const N: usize = 30;
    let topo = Topology::new("dcf-hup");
    let to_p = UdpPath::new(&topo, P);
    let to_q = UdpPath::new(&topo, Q);
    let to_r = UdpPath::new(&topo, R);
    let to_s = UdpPath::new(&topo, S);
    let file = TempFile::new(
        "hup",
        ".toml",
        &config(&format!("{}{}", rule("keep", P), rule("drop-me", Q))),
    );
    let d = Daemon::start(&topo.server, "hup", &["--config", file.as_str()]);
    let keep = by_name(&d, "keep").expect("rule keep");
    let api = d.add_rule(&json!({ "fault": "blackhole", "port": [S], "name": "api" }));
    assert_eq!(to_q.probe(5), 0, "drop-me must act before the reload");
    to_p.send(N, 16);
    assert_eq!(to_p.drain(), 0);
    assert_eq!(acted(&d, &keep["id"]), N as u64);

    // keep unchanged, drop-me gone, new added.
    file.write(&config(&format!("{}{}", rule("keep", P), rule("new", R))));
    let from = d.log_len();
    d.signal(libc::SIGHUP);
    let line = d.expect_log(from, "SIGHUP", Duration::from_secs(5));
    assert!(
        line.contains("config reloaded: 1 rule(s) added, 1 removed, 1 unchanged"),
        "{line}"
    );

    let kept = by_name(&d, "keep").expect("keep survives the reload");
    assert_eq!(kept["id"], keep["id"], "an unchanged rule keeps its id");
    assert_eq!(acted(&d, &kept["id"]), N as u64, "and its counters");
    assert!(by_name(&d, "drop-me").is_none(), "{:?}", d.rules());
    let new = by_name(&d, "new").expect("the new rule");
    assert_eq!(new["origin"], "config");
    let api_after = by_name(&d, "api").expect("API rules survive a reload");
    assert_eq!(api_after["id"], api["id"]);
    assert_eq!(d.rules().len(), 3, "{:?}", d.rules());

    // And the kernel agrees.
    to_p.send(N, 16);
    assert_eq!(to_p.drain(), 0, "keep must still act");
    assert_eq!(acted(&d, &kept["id"]), 2 * N as u64);
    assert_eq!(to_q.probe(5), 5, "drop-me must be lifted");
    assert_eq!(to_r.probe(5), 0, "new must act");
    assert_eq!(to_s.probe(5), 0, "the API rule must still act");

    // A changed spec under the same name is a new rule: replaced, fresh counters.
    file.write(&config(&format!(
        "{}{}",
        rule("keep", P).replace("proto = \"udp\"", "proto = \"all\""),
        rule("new", R)
    )));
    let from = d.log_len();
    d.signal(libc::SIGHUP);
    let line = d.expect_log(from, "SIGHUP", Duration::from_secs(5));
    assert!(
        line.contains("config reloaded: 1 rule(s) added, 1 removed, 1 unchanged"),
        "{line}"
    );
    let changed = by_name(&d, "keep").expect("keep, changed");
    assert_eq!(changed["spec"]["proto"], "all", "{changed}");
    assert_eq!(
        acted(&d, &changed["id"]),
        0,
        "a replaced rule starts at zero"
    );
    assert_eq!(by_name(&d, "new").unwrap()["id"], new["id"]);
    assert_eq!(to_p.probe(5), 0);
    d.assert_healthy("the reloads");
}
