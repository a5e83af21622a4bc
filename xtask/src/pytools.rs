//! Python tools the e2e tests run that Debian does not package, each in a
//! virtualenv of its own under `target/tools/`, pinned, made once and
//! reused (a second run only checks the version, in well under a second).
//!
//! - schemathesis: fuzzes the daemon's API from `docs/openapi.yaml`
//!   (`tests/tests/schemathesis.rs`).

use std::path::PathBuf;

use anyhow::{Context as _, Result};

use crate::cmd;

/// Pinned: its checks' names and defaults change between releases.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";

/// `target/tools/schemathesis/bin/st`, installed if missing; the tests find
/// it in `FAULTBPF_SCHEMATHESIS`.
pub fn ensure_schemathesis() -> Result<PathBuf> {
    let venv = cmd::workspace_root().join("target/tools/schemathesis");
    let st = venv.join("bin/st");
    let version = SCHEMATHESIS.split("==").nth(1).unwrap_or_default();
    if let Ok(out) = cmd::stdout_of(cmd::command(&st).arg("--version"))
        && out.contains(version)
    {
        return Ok(st);
    }
    eprintln!("xtask: installing {SCHEMATHESIS} into {}", venv.display());
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
        SCHEMATHESIS,
    ]))?;
    Ok(st)
}
