//! `cargo xtask test`: everything CI checks, in the order that fails fastest
//! on the cheapest mistake: format, lints, unit tests, then the privileged
//! end-to-end tests against the freshly built binary. Stops at the first
//! failing step; the children's output streams through, so cargo test's own
//! closing lines are the last thing printed on success.

use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use crate::{build, cmd, setup};

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

/// `cargo xtask test`. `no_vm` is accepted so scripts can already ask for
/// the host-kernel lane; there is no VM lane yet, so it changes nothing.
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
    if !no_vm {
        eprintln!("xtask test: no VM lane yet, testing on this machine's kernel");
    }
    setup::run()?;
    let bin = build::build_faultbpf()?;

    for (name, args) in STEPS {
        step(name, build::cargo().args(args.split_whitespace()))?;
    }
    step(
        "end-to-end tests",
        build::cargo()
            .args(["test", "-p", "faultbpf-tests", "--", "--test-threads", "4"])
            .env("FAULTBPF_BIN", &bin),
    )
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
