//! `cargo xtask test`: everything CI checks, in the order that fails fastest
//! on the cheapest mistake: format, lints, unit tests, the packages
//! (`cargo xtask dist`, which the dist_* tests install), then the privileged
//! end-to-end tests against the freshly built binary, first on this
//! machine's kernel, then (unless `--no-vm`) on Debian's 6.1 LTS kernel in a
//! VM. Stops at the first failing step; the children's output streams
//! through, and the VM lane ends with its own `N passed, N failed` line.

use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use crate::{build, cmd, dist, pytools, setup, vm};

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
    setup::run(setup::Scope::Test)?;
    let bin = build::build_faultbpf()?;

    for (name, args) in STEPS {
        step(name, build::cargo().args(args.split_whitespace()))?;
    }
    // The packages the dist_* e2e tests install and run (target/dist/).
    eprintln!("xtask test: packages (cargo xtask dist)");
    let started = Instant::now();
    dist::build().with_context(|| {
        format!(
            "test step `packages` failed after {:.1}s",
            started.elapsed().as_secs_f64()
        )
    })?;
    let qdiscs = kernel_has_delay_qdiscs()?;
    let (skip, env) = qdisc_lane(qdiscs);
    eprintln!(
        "xtask test: this kernel {} sch_fq and sch_netem: skipping `{skip}` tests (libtest \
         counts them as filtered out){}",
        if qdiscs { "has" } else { "lacks" },
        env.map_or(String::new(), |(k, v)| format!("; {k}={v}")),
    );
    let schemathesis = pytools::ensure_schemathesis()?;
    let kubernetes_validate = pytools::ensure_kubernetes_validate()?;
    let chaos = pytools::ensure_chaostoolkit()?;
    let mut e2e = build::cargo();
    e2e.args(["test", "-p", "faultbpf-tests", "--", "--test-threads", "4"])
        .args(["--skip", skip])
        .env("FAULTBPF_BIN", &bin)
        .env("FAULTBPF_SCHEMATHESIS", &schemathesis)
        .env("FAULTBPF_KUBERNETES_VALIDATE", &kubernetes_validate)
        .env("FAULTBPF_CHAOS", &chaos);
    if let Some((k, v)) = env {
        e2e.env(k, v);
    }
    step("end-to-end tests", &mut e2e)?;
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

/// The e2e tests that need sch_fq and sch_netem (`delay`) are in modules
/// named `needs_qdiscs`; the one that checks `delay`'s refusal without them
/// is in `without_qdiscs`. Each fails where its premise does not hold, so
/// the lane skips the other group by name (libtest then reports it as
/// filtered out, never as passed), and, where the qdiscs are missing, says
/// so to the tests with `FAULTBPF_TEST_NO_NETEM=1`.
fn qdisc_lane(has_qdiscs: bool) -> (&'static str, Option<(&'static str, &'static str)>) {
    if has_qdiscs {
        ("without_qdiscs::", None)
    } else {
        ("needs_qdiscs::", Some(("FAULTBPF_TEST_NO_NETEM", "1")))
    }
}

/// What `tc` says when the kernel has no such qdisc (module missing).
const UNKNOWN_QDISC: &str = "Specified qdisc kind is unknown";

/// True if this kernel has sch_fq and sch_netem: adds each as the root
/// qdisc of `lo` in a network namespace of its own (`unshare --net`, gone
/// with the process, so nothing is left and the host's interfaces are not
/// touched). Any failure other than an unknown qdisc kind is an error.
fn kernel_has_delay_qdiscs() -> Result<bool> {
    let script = "tc qdisc add dev lo root fq && tc qdisc replace dev lo root netem delay 1ms";
    let out = cmd::command("unshare")
        .args(["--net", "--", "sh", "-c", script])
        .output()
        .context("running `unshare --net` to probe for sch_fq and sch_netem (util-linux)")?;
    if out.status.success() {
        return Ok(true);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains(UNKNOWN_QDISC) {
        return Ok(false);
    }
    bail!("probing for sch_fq and sch_netem (`unshare --net sh -c '{script}'`) failed: {err}")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_qdiscs_the_delay_tests_are_skipped_and_told_so() {
        assert_eq!(
            qdisc_lane(false),
            ("needs_qdiscs::", Some(("FAULTBPF_TEST_NO_NETEM", "1")))
        );
    }

    #[test]
    fn with_the_qdiscs_only_the_refusal_test_is_skipped() {
        assert_eq!(qdisc_lane(true), ("without_qdiscs::", None));
    }
}
