//! The `faultbpf` command: parse arguments, run, map the outcome to an exit
//! code (0 done, 1 runtime failure, 2 bad usage).

mod cli;
mod fault;
mod http_cmd;
mod manage;
mod manual;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, error::ErrorKind};
use faultbpf::{client::Client, daemon, scenario};

use crate::{
    cli::{Cli, Command, ScenarioCommand},
    fault::Failure,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let client = Client::new(&cli.socket);
    let result = match cli.command {
        Command::Fault(fc) => fault::fault(fc, &client),
        Command::Run { fault } => match fault::run(fault, &client) {
            Ok(code) => return ExitCode::from(code),
            Err(e) => Err(e),
        },
        Command::Scenario(ScenarioCommand::Run { file, json }) => {
            match scenario::run(&file, json, &client) {
                Ok(code) => return ExitCode::from(code),
                // A container no engine knows is a bad name (exit 2), as
                // for `--container`.
                Err(e) => match e.downcast_ref::<faultbpf::target::TargetError>() {
                    Some(t) if t.is_usage() => Err(Failure::Usage(t.to_string())),
                    _ => Err(Failure::Runtime(e)),
                },
            }
        }
        Command::Scenario(ScenarioCommand::Check { file }) => {
            scenario::check(&file).map_err(Failure::from)
        }
        Command::Daemon(d) => daemon::run(daemon::Options {
            config: d.config,
            watch_config: d.watch_config,
            socket: cli.socket.clone(),
            metrics: d.metrics,
            listen: d.listen,
            token_file: d.token_file,
            tls_cert: d.tls_cert,
            tls_key: d.tls_key,
            tls_client_ca: d.tls_client_ca,
            ifaces: d.ifaces,
            attach: d.attach,
            lease: d.lease,
            socket_group: d.socket_group,
            socket_mode: d.socket_mode,
        })
        .map_err(Failure::Runtime),
        Command::Rules { json } => manage::rules(&client, json),
        Command::Rm { ids, all, json } => manage::rm(&client, &ids, all, json),
        Command::Stats { watch, json } => manage::stats(&client, watch, json),
        Command::Check { file } => check(&file),
        Command::Trace(args) => trace(args),
        Command::Completions { shell } => manual::completions(shell),
        Command::Manpages { dir } => manual::manpages(&dir),
        Command::Http(args) => http_cmd::run(args),
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

/// `faultbpf check FILE`.
fn trace(args: cli::TraceArgs) -> Result<(), Failure> {
    let target =
        faultbpf::target::Target::from_flags(args.netns, args.pid, args.container, args.engine);
    if let Some(t) = target {
        t.enter().map_err(Failure::target)?;
    }
    let opts = faultbpf::trace::Options {
        ports: args.ports.into_iter().collect(),
        all: args.all,
        lasts: args.lasts,
        json: args.json,
    };
    let summary = faultbpf::trace::run(&opts).map_err(Failure::Runtime)?;
    eprintln!("{}", faultbpf::trace::summary_line(&summary));
    Ok(())
}

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
        println!("  {}: {}", r.name, r.description);
    }
    Ok(())
}
