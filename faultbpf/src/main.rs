//! The `faultbpf` command: parse arguments, run, map the outcome to an exit
//! code (0 done, 1 runtime failure, 2 bad usage).

mod cli;
mod foreground;
mod remote;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, error::ErrorKind};
use faultbpf::{Fault, client::Client, daemon};

use crate::{
    cli::{Cli, Command, FaultArgs},
    foreground::Failure,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let client = Client::new(&cli.socket);
    let result = match cli.command {
        Command::Blackhole(args) => fault(Fault::Blackhole, args, &client),
        Command::Reset(args) => fault(Fault::Reset, args, &client),
        Command::Hang(args) => fault(Fault::Hang, args, &client),
        Command::Corrupt(args) => fault(Fault::Corrupt, args, &client),
        Command::Mark(m) => {
            let f = match m.value {
                Some(value) => Fault::Mark { value },
                None => Fault::Ecn,
            };
            fault(f, m.common, &client)
        }
        Command::Chaos(c) => fault(Fault::Chaos(c.mix), c.common, &client),
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
        Command::Reap(args) => {
            faultbpf::reaper::run(&args.filters, &args.clsact);
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
    if !args.standalone && client.is_up() {
        remote::add(f, args, client)
    } else {
        foreground::run(f, args)
    }
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
