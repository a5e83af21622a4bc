//! The `faultbpf` command: parse arguments, run, map the outcome to an exit
//! code (0 done, 1 runtime failure, 2 bad usage).

mod cli;
mod foreground;
mod remote;
mod runner;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, error::ErrorKind};
use faultbpf::{Fault, client::Client, daemon, scenario, target::Target};

use crate::{
    cli::{Cli, Command, FaultArgs, ScenarioCommand},
    foreground::Failure,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let client = Client::new(&cli.socket);
    let result = match cli.command {
        Command::Fault(fc) => match fc.into_parts() {
            Ok((f, args)) => fault(f, args, &client),
            Err(e) => Err(Failure::Usage(e)),
        },
        Command::Run { fault } => match fault.into_parts() {
            Ok((f, args)) => match run(f, args, &client) {
                Ok(code) => return ExitCode::from(code),
                Err(e) => Err(e),
            },
            Err(e) => Err(Failure::Usage(e)),
        },
        Command::Scenario(ScenarioCommand::Run { file, json }) => {
            match scenario::run(&file, json, &client) {
                Ok(code) => return ExitCode::from(code),
                Err(e) => Err(Failure::Runtime(e)),
            }
        }
        Command::Scenario(ScenarioCommand::Check { file }) => {
            scenario::check(&file).map_err(Failure::from)
        }
        Command::Daemon(d) => daemon::run(daemon::Options {
            config: d.config,
            socket: cli.socket.clone(),
            metrics: d.metrics,
            listen: d.listen,
            token_file: d.token_file,
            ifaces: d.ifaces,
            attach: d.attach,
            lease: d.lease,
        })
        .map_err(Failure::Runtime),
        Command::Rules { json } => remote::rules(&client, json),
        Command::Rm { ids, all } => remote::rm(&client, &ids, all),
        Command::Stats { watch, json } => remote::stats(&client, watch, json),
        Command::Check { file } => check(&file),
        Command::Reap(_) => {
            faultbpf::reaper::run();
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            // Same look and exit code (2) as clap's own usage errors.
            Cli::command().error(ErrorKind::InvalidValue, msg).exit()
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("faultbpf: error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(1)
        }
    }
}

/// A fault command: a daemon rule when a daemon listens, else standalone.
fn fault(f: Fault, args: FaultArgs, client: &Client) -> Result<(), Failure> {
    if !args.command.is_empty() {
        return Err(Failure::Usage(format!(
            "a command after `--` needs `faultbpf run`: faultbpf run {} ... -- {}",
            f.name(),
            args.command.join(" ")
        )));
    }
    match daemon_for(&args, client)? {
        Some(c) => remote::add(f, args, c),
        None => foreground::run(f, args),
    }
}

/// `faultbpf run`.
fn run(f: Fault, args: FaultArgs, client: &Client) -> Result<u8, Failure> {
    let c = daemon_for(&args, client)?;
    runner::run(f, args, c)
}

/// Enters the target namespace if one is named (then always standalone:
/// a daemon owns its own namespace), else picks the daemon if one listens.
fn daemon_for<'a>(args: &FaultArgs, client: &'a Client) -> Result<Option<&'a Client>, Failure> {
    let target = match (&args.netns, args.pid, &args.container) {
        (Some(n), _, _) => Some(Target::Netns(n.clone())),
        (_, Some(p), _) => Some(Target::Pid(p)),
        (_, _, Some(c)) => Some(Target::Container(c.clone())),
        _ => None,
    };
    if let Some(t) = target {
        t.enter().map_err(|e| Failure::Runtime(e.into()))?;
        return Ok(None);
    }
    // --xdp attaches its own program: standalone only.
    Ok((!args.standalone && !args.xdp && client.is_up()).then_some(client))
}

/// `faultbpf check FILE`.
fn check(file: &std::path::Path) -> Result<(), Failure> {
    let c = faultbpf::config::load(file).map_err(|e| Failure::Runtime(e.into()))?;
    println!(
        "{}: OK: {} rule(s), lease {}s, default ttl {}",
        file.display(),
        c.rules.len(),
        c.lease.as_secs_f64(),
        humantime::format_duration(c.default_ttl)
    );
    for r in &c.rules {
        println!("  {}: {}", r.name, r.rule.describe());
    }
    Ok(())
}
