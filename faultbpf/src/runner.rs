//! `faultbpf run FAULT ... -- CMD`: the fault lives exactly as long as the
//! command. Standalone, the rule goes with our links; through a daemon, the
//! rule names our pid as its owner, so even a `kill -9` of faultbpf lifts
//! it within a second.

use std::{process::Stdio, time::Duration};

use anyhow::Context;
use faultbpf::{Fault, Injector, client::Client, report, spec::RuleSpec};
use serde::Deserialize;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    cli::FaultArgs,
    foreground::{self, Failure},
};

/// Standalone lease, as in the foreground mode.
const LEASE: Duration = Duration::from_secs(3);

#[derive(Deserialize)]
struct Added {
    id: u32,
    description: String,
}

/// Runs the command under the fault; returns the command's exit code
/// (128 + signal if it was killed).
pub fn run(fault: Fault, args: FaultArgs, client: Option<&Client>) -> Result<u8, Failure> {
    let Some((program, rest)) = args.command.split_first() else {
        return Err(Failure::Usage(
            "faultbpf run needs a command after `--`, e.g. faultbpf run blackhole --port 5672 -- pytest"
                .into(),
        ));
    };
    let mut cmd = match faultbpf::child::resolve(program) {
        Ok(path) => faultbpf::child::command(&path, program, rest),
        Err(e) => return Ok(not_runnable(&e)),
    };
    cmd.stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    let rule = foreground::rule_from(fault, &args);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;

    match client {
        Some(client) => {
            let mut spec = RuleSpec::from_rule(&rule, args.name.clone(), args.force);
            spec.owner_pid = Some(std::process::id());
            let body = serde_json::to_value(&spec).context("could not encode the rule")?;
            let added: Added = client.call("POST", "/v1/rules", Some(&body))?;
            eprintln!(
                "faultbpf: active: rule {} {} via the daemon; running {program}",
                added.id, added.description
            );
            let code = rt.block_on(supervise(&mut cmd, program, || Ok(())));
            let _ = client.request("DELETE", &format!("/v1/rules/{}", added.id), None);
            eprintln!("faultbpf: rule {} removed", added.id);
            code
        }
        None => {
            let ifaces = foreground::interfaces(&args.ifaces)?;
            let hooks = args.hooks(&rule.fault).map_err(Failure::Usage)?;
            let _claim = faultbpf::claims::claim(&rule.keys(), &rule.describe(), args.force)?;
            let mut inj = Injector::attach_hooks(&ifaces, hooks)?;
            inj.renew_lease(LEASE)?;
            inj.insert(&rule)?;
            eprintln!(
                "faultbpf: active: {} on {} via {}; running {program}",
                rule.describe(),
                ifaces.join(", "),
                inj.attach_name()
            );
            let code = rt.block_on(supervise(&mut cmd, program, || {
                inj.renew_lease(LEASE)
                    .map_err(|e| Failure::Runtime(e.into()))
            }));
            let c = inj.counters(rule.id)?;
            drop(inj);
            eprintln!("faultbpf: {}", report::summary_line(&rule, &c));
            code
        }
    }
}

/// Says why the command cannot run; its exit code, as a shell gives it.
fn not_runnable(e: &faultbpf::child::NotRunnable) -> u8 {
    eprintln!("faultbpf: error: {e}");
    e.exit_code()
}

/// Starts the command and waits for it, renewing the lease each second;
/// SIGTERM and SIGINT are passed on to it (a terminal's Ctrl-C reaches it
/// anyway), and we wait for it to finish.
async fn supervise(
    cmd: &mut tokio::process::Command,
    program: &str,
    mut renew: impl FnMut() -> Result<(), Failure>,
) -> Result<u8, Failure> {
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start `{program}`"))?;
    let pid = child.id().and_then(|p| libc::pid_t::try_from(p).ok());
    let mut sigint = signal(SignalKind::interrupt()).context("could not watch SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("could not watch SIGTERM")?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let status = loop {
        tokio::select! {
            s = child.wait() => break s.with_context(|| format!("could not wait for `{program}`"))?,
            _ = sigint.recv() => forward(pid, libc::SIGINT),
            _ = sigterm.recv() => forward(pid, libc::SIGTERM),
            _ = tick.tick() => renew()?,
        }
    };
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => c.clamp(0, 255) as u8,
        (None, Some(sig)) => (128 + sig).clamp(0, 255) as u8,
        _ => 1,
    })
}

fn forward(pid: Option<libc::pid_t>, sig: libc::c_int) {
    if let Some(pid) = pid {
        // SAFETY: plain kill(2) to our own child.
        unsafe { libc::kill(pid, sig) };
    }
}
