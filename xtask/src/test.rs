//! `cargo xtask test`: everything CI checks, in the order that fails fastest
//! on the cheapest mistake: format, lints, unit tests, then the privileged
//! end-to-end tests against the freshly built binary, first on this
//! machine's kernel, then (unless `--no-vm`) on Debian's 6.1 LTS kernel in a
//! VM. Stops at the first failing step; the children's output streams
//! through, and the VM lane ends with its own `N passed, N failed` line.

use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use crate::{build, cmd, pytools, setup, vm};

/// The unprivileged steps: name, then cargo's arguments.
const STEPS: [(&str, &str); 4] = [
    ("format", "fmt --all --check"),
    (
        "lints",
        "clippy -p faultbpf -p faultbpf-common -p xtask --all-targets -- -D warnings",
    ),
    (
        "lints of the e2e tests",
        "clippy -p faultbpf-tests --tests -- -D warnings",
    ),
    // Default members only: the e2e tests need root and run last.
    ("unit tests", "test"),
];

/// `cargo xtask test`; `no_vm` skips the VM lane.
pub fn run(no_vm: bool) -> Result<()> {
    // Checked first, so a non-root run fails in a second rather than after
    // minutes of lints.
    if !cmd::is_root()? {
        bail!(
            "`cargo xtask test` must run as root: its end-to-end tests create network \
             namespaces and load BPF programs (the unprivileged checks also run alone: \
             `cargo fmt --all --check`, `cargo clippy`, `cargo test`)"
        );
    }
    setup::run()?;
    let bin = build::build_faultbpf()?;

    for (name, args) in STEPS {
        step(name, build::cargo().args(args.split_whitespace()))?;
    }
    let schemathesis = pytools::ensure_schemathesis()?;
    step(
        "end-to-end tests",
        build::cargo()
            .args(["test", "-p", "faultbpf-tests", "--", "--test-threads", "4"])
            .env("FAULTBPF_BIN", &bin)
            .env("FAULTBPF_SCHEMATHESIS", &schemathesis),
    )?;
    if no_vm {
        eprintln!("xtask test: --no-vm: skipping the e2e tests on Linux 6.1 in a VM");
        return Ok(());
    }
    eprintln!("xtask test: end-to-end tests on Linux 6.1 in a VM");
    let started = Instant::now();
    vm::e2e(&bin).with_context(|| {
        format!(
            "test step `end-to-end tests in a VM` failed after {:.1}s",
            started.elapsed().as_secs_f64()
        )
    })
}

/// Runs one step, announcing it first and naming it if it fails.
fn step(name: &str, cargo: &mut std::process::Command) -> Result<()> {
    eprintln!("xtask test: {name}");
    let started = Instant::now();
    cmd::run(cargo).with_context(|| {
        format!(
            "test step `{name}` failed after {:.1}s",
            started.elapsed().as_secs_f64()
        )
    })
}
