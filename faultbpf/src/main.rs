//! The `faultbpf` command: parse arguments, run, map the outcome to an exit
//! code (0 done, 1 runtime failure, 2 bad usage).

mod cli;
mod foreground;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, error::ErrorKind};
use faultbpf::Fault;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Blackhole(args) => foreground::run(Fault::Blackhole, args),
        Command::Reset(args) => foreground::run(Fault::Reset, args),
        Command::Hang(args) => foreground::run(Fault::Hang, args),
        Command::Corrupt(args) => foreground::run(Fault::Corrupt, args),
        Command::Mark(m) => {
            let fault = match m.value {
                Some(value) => Fault::Mark { value },
                None => Fault::Ecn,
            };
            foreground::run(fault, m.common)
        }
        Command::Chaos(c) => foreground::run(Fault::Chaos(c.mix), c.common),
        Command::Reap(args) => {
            faultbpf::reaper::run(&args.filters, &args.clsact);
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(foreground::Failure::Usage(msg)) => {
            // Same look and exit code (2) as clap's own usage errors.
            Cli::command().error(ErrorKind::InvalidValue, msg).exit()
        }
        Err(foreground::Failure::Runtime(e)) => {
            eprintln!("faultbpf: error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(1)
        }
    }
}
