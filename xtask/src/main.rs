//! `cargo xtask <task>`: the developer and CI entry points of faultbpf, so a
//! fresh machine needs one command to get the eBPF toolchain and everyone
//! (CI included) tests the same way. Only dispatches; each task is a module.

mod build;
mod cmd;
mod demo;
mod setup;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Developer tasks for faultbpf.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install the toolchain and tools (Debian packages, bpf-linker)
    ///
    /// Idempotent: on a machine where it already ran it only checks, in well
    /// under a second. Installing needs root (apt-get).
    Setup,
    /// Set up, then build target/debug/faultbpf with its eBPF object
    Build,
    /// Set up, build, then format check, clippy, unit and e2e tests (root)
    ///
    /// This is what CI runs. Stops at the first failing step.
    Test {
        /// Test on this machine's kernel, not in a VM (the only lane so far)
        #[arg(long)]
        no_vm: bool,
    },
    /// Set up, build, then show a blackhole between two throwaway namespaces (root)
    ///
    /// Requests from a client namespace to a web server namespace succeed,
    /// time out while `faultbpf blackhole --port 8080 --for 6s` runs, then
    /// succeed again. Everything it creates is removed, also on Ctrl-C.
    Demo,
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::Setup => setup::run(),
        Task::Build => build::run(),
        Task::Test { no_vm } => test::run(no_vm),
        Task::Demo => demo::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_each_task() {
        let task = |args: &[&str]| Cli::try_parse_from([&["xtask"], args].concat()).map(|c| c.task);
        assert!(matches!(task(&["setup"]), Ok(Task::Setup)));
        assert!(matches!(task(&["build"]), Ok(Task::Build)));
        assert!(matches!(task(&["test"]), Ok(Task::Test { no_vm: false })));
        assert!(matches!(
            task(&["test", "--no-vm"]),
            Ok(Task::Test { no_vm: true })
        ));
        assert!(matches!(task(&["demo"]), Ok(Task::Demo)));
        assert!(task(&["demo", "--no-vm"]).is_err());
        assert!(task(&[]).is_err());
    }
}
