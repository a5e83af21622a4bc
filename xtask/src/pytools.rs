//! Python tools the e2e tests run that Debian does not package, each in a
//! virtualenv of its own under `target/tools/`, pinned, made once and
//! reused (a second run only checks the version, in well under a second).
//!
//! - schemathesis: fuzzes the daemon's API from `docs/openapi.yaml`
//!   (`tests/tests/schemathesis.rs`).
//! - kubernetes-validate: checks `deploy/kubernetes/` against the
//!   Kubernetes schemas it bundles, offline (`tests/tests/kubernetes.rs`).
//! - chaostoolkit: `chaos run` drives clients/chaostoolkit-faultbpf
//!   against three daemons (`tests/tests/chaostoolkit.rs`).

use std::path::PathBuf;

use anyhow::{Context as _, Result};

use crate::cmd;

/// Pinned: its checks' names and defaults change between releases.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";

/// Pinned: each release bundles the schemas up to one Kubernetes version.
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

/// Pinned: the journal's layout is what the test reads.
const CHAOSTOOLKIT: &str = "chaostoolkit==1.19.0";

/// `target/tools/schemathesis/bin/st`, installed if missing; the tests find
/// it in `FAULTBPF_SCHEMATHESIS`.
pub fn ensure_schemathesis() -> Result<PathBuf> {
    ensure_tool("schemathesis", SCHEMATHESIS, "st")
}

/// `target/tools/kubernetes-validate/bin/kubernetes-validate`, installed if
/// missing; the tests find it in `FAULTBPF_KUBERNETES_VALIDATE`.
pub fn ensure_kubernetes_validate() -> Result<PathBuf> {
    ensure_tool(
        "kubernetes-validate",
        KUBERNETES_VALIDATE,
        "kubernetes-validate",
    )
}

/// `target/tools/chaostoolkit/bin/chaos`, installed if missing; the tests
/// find it in `FAULTBPF_CHAOS`.
pub fn ensure_chaostoolkit() -> Result<PathBuf> {
    ensure_tool("chaostoolkit", CHAOSTOOLKIT, "chaos")
}

/// `target/tools/<dir>/bin/<bin>` from `pin` (`name==version`): kept when
/// its `--version` already names the version, else a fresh virtualenv.
fn ensure_tool(dir: &str, pin: &str, bin: &str) -> Result<PathBuf> {
    let venv = cmd::workspace_root().join("target/tools").join(dir);
    let path = venv.join("bin").join(bin);
    let version = pin.split("==").nth(1).unwrap_or_default();
    if let Ok(out) = cmd::stdout_of(cmd::command(&path).arg("--version"))
        && out.contains(version)
    {
        return Ok(path);
    }
    eprintln!("xtask: installing {pin} into {}", venv.display());
    cmd::run(
        cmd::command("/usr/bin/python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
    )
    .context("python3 -m venv (Debian: python3-venv)")?;
    cmd::run(cmd::command(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        pin,
    ]))?;
    Ok(path)
}
