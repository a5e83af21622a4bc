//! `cargo xtask <task>`: the developer and CI entry points of faultbpf, so a
//! fresh machine needs one command to get the eBPF toolchain and everyone
//! (CI included) tests the same way. Only dispatches; each task is a module.

mod bench;
mod build;
mod cmd;
mod demo;
mod dist;
mod pytools;
mod setup;
mod test;
mod vm;

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
    /// Install what building faultbpf needs (Debian packages, bpf-linker)
    ///
    /// Only the build toolchain and the demo's tools by default; `--dist`
    /// adds what `dist` needs, `--test` everything the tests and the bench
    /// need (servers, QEMU and its kernel, virtiofsd, ...). `build` and
    /// `demo` set up the build toolchain, `test`, `vm` and `bench`
    /// everything. Idempotent: on a machine where it already ran it only
    /// checks, in well under a second. Installing needs root (apt-get).
    Setup {
        /// Also install what `cargo xtask dist` needs (musl, cargo-deb)
        #[arg(long)]
        dist: bool,
        /// Also install what the tests and the bench need (implies --dist)
        #[arg(long)]
        test: bool,
    },
    /// Set up, then build target/debug/faultbpf with its eBPF object
    Build,
    /// Set up, build, then format check, clippy, unit and e2e tests (root)
    ///
    /// This is what CI runs. Stops at the first failing step. After the e2e
    /// tests on this machine's kernel, runs them again on Debian's 6.1 LTS
    /// kernel in a qemu VM (`cargo xtask vm --e2e`).
    Test {
        /// Skip the VM lane: test on this machine's kernel only
        #[arg(long)]
        no_vm: bool,
    },
    /// Run the e2e tests, or one command, on Debian's 6.1 kernel in a qemu VM (root)
    ///
    /// The guest sees this machine's root filesystem read-only and has no
    /// network device; it runs what was built here. Examples: `cargo xtask
    /// vm --e2e`, `cargo xtask vm -- uname -r`, `cargo xtask vm -- sh -c 'ip
    /// netns add x && ip netns del x'`.
    Vm {
        /// Build faultbpf and run the e2e suite in the guest (the VM lane of `test`)
        #[arg(long, conflicts_with = "command")]
        e2e: bool,
        /// Kill the guest after this many seconds (default 600 for --e2e, else 300)
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
        /// The command to run in the guest, after `--`
        #[arg(last = true, value_name = "CMD", required_unless_present = "e2e")]
        command: Vec<String>,
    },
    /// Build the .deb, the portable static tarball and the OCI image into target/dist/
    ///
    /// One static (musl) release build feeds all three: the .deb (made by
    /// cargo-deb: binary, systemd unit, example config, man pages,
    /// completions, the `faultbpf` group), `faultbpf-VERSION-x86_64-linux.tar.gz`
    /// and `faultbpf-oci-VERSION.tar` (load with `docker load` or `podman
    /// load`; nothing is pulled).
    Dist,
    /// Set up, build, then show a blackhole between two throwaway namespaces (root)
    ///
    /// Requests from a client namespace to a web server namespace succeed,
    /// time out while `faultbpf blackhole --port 8080 --for 6s` runs, then
    /// succeed again. Everything it creates is removed, also on Ctrl-C.
    Demo,
    /// Set up, build, then measure faultbpf against no injector and nftables (root)
    ///
    /// Overhead vs rule count, drop capacity, time to apply, --pct accuracy,
    /// cost, issue 15's faults and what `faultbpf http` adds to the requests
    /// it does not fault, in throwaway namespaces, interleaved round by round; writes
    /// target/bench/report.md, CSVs and throughput-vs-rules.png. About 15
    /// minutes; --quick takes a few.
    Bench(bench::Options),
    /// The in-guest half of the bench's delay accuracy (run by `bench`)
    #[command(hide = true)]
    BenchDelayGuest {
        #[arg(long)]
        bin: std::path::PathBuf,
        #[arg(long)]
        rounds: usize,
        #[arg(long)]
        samples: usize,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::Setup { dist, test } => setup::run(if test {
            setup::Scope::Test
        } else if dist {
            setup::Scope::Dist
        } else {
            setup::Scope::Build
        }),
        Task::Dist => dist::run(),
        Task::Build => build::run(),
        Task::Test { no_vm } => test::run(no_vm),
        Task::Demo => demo::run(),
        Task::Bench(opts) => bench::run(&opts),
        Task::BenchDelayGuest {
            bin,
            rounds,
            samples,
        } => bench::delay_accuracy::guest(&bin, rounds, samples),
        Task::Vm {
            e2e,
            timeout,
            command,
        } => vm::run(e2e, timeout, &command),
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
        assert!(matches!(
            task(&["setup"]),
            Ok(Task::Setup {
                dist: false,
                test: false
            })
        ));
        assert!(matches!(
            task(&["setup", "--test"]),
            Ok(Task::Setup {
                dist: false,
                test: true
            })
        ));
        assert!(matches!(task(&["dist"]), Ok(Task::Dist)));
        assert!(matches!(task(&["build"]), Ok(Task::Build)));
        assert!(matches!(task(&["test"]), Ok(Task::Test { no_vm: false })));
        assert!(matches!(
            task(&["test", "--no-vm"]),
            Ok(Task::Test { no_vm: true })
        ));
        assert!(matches!(task(&["demo"]), Ok(Task::Demo)));
        assert!(matches!(
            task(&["bench", "--quick", "--rounds", "2", "--only", "drop,cost"]),
            Ok(Task::Bench(o)) if o.quick && o.rounds == Some(2) && o.only.len() == 2
        ));
        assert!(matches!(
            task(&["bench", "--only", "http"]),
            Ok(Task::Bench(o)) if o.only.len() == 1
        ));
        assert!(task(&["bench", "--rounds", "0"]).is_err());
        assert!(task(&["demo", "--no-vm"]).is_err());
        assert!(matches!(
            task(&["vm", "--e2e"]),
            Ok(Task::Vm { e2e: true, timeout: None, command }) if command.is_empty()
        ));
        assert!(matches!(
            task(&["vm", "--timeout", "30", "--", "uname", "-r"]),
            Ok(Task::Vm { e2e: false, timeout: Some(30), command }) if command == ["uname", "-r"]
        ));
        assert!(task(&["vm"]).is_err());
        assert!(task(&["vm", "--e2e", "--", "uname"]).is_err());
        assert!(task(&[]).is_err());
    }
}
