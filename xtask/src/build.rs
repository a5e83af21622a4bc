//! `cargo xtask build`: builds the faultbpf binary, eBPF object included.
//! Also the one place that knows how cargo must be invoked for anything that
//! compiles `faultbpf` and where the binary ends up, so test and demo reuse it.

use std::{env, path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::{cmd, setup};

/// `cargo xtask build`.
pub fn run() -> Result<()> {
    setup::run(setup::Scope::Build)?;
    let bin = build_faultbpf()?;
    eprintln!("build: {}", bin.display());
    Ok(())
}

/// `cargo` for anything that compiles `faultbpf`.
///
/// Deliberately without `RUSTC_BOOTSTRAP=1`: faultbpf/build.rs sets it for
/// aya-build itself (so plain `cargo build` works too), and setting it here
/// as well made every `cargo xtask` run rebuild proc-macro2, syn, serde,
/// anyhow and all that depends on them (~16 s), because their build scripts
/// rerun when it changes and the `cargo run` that starts xtask has it unset.
pub fn cargo() -> Command {
    cmd::cargo()
}

/// `cargo build -p faultbpf`, returning the binary's absolute path.
pub fn build_faultbpf() -> Result<PathBuf> {
    cmd::run(cargo().args(["build", "-p", "faultbpf"]))?;
    built(faultbpf_bin()?, "`cargo build -p faultbpf`")
}

/// `cargo build --release -p faultbpf`: the optimised binary a user
/// installs, which is what the benchmark measures (a debug build starts and
/// answers API calls several times slower).
pub fn build_faultbpf_release() -> Result<PathBuf> {
    cmd::run(cargo().args(["build", "--release", "-p", "faultbpf"]))?;
    let debug = faultbpf_bin()?;
    let bin = match debug.parent().and_then(|d| d.parent()) {
        Some(target) => target.join("release").join("faultbpf"),
        None => cmd::workspace_root().join("target/release/faultbpf"),
    };
    built(bin, "`cargo build --release -p faultbpf`")
}

fn built(bin: PathBuf, how: &str) -> Result<PathBuf> {
    if !bin.is_file() {
        bail!("{how} succeeded but {} is missing", bin.display());
    }
    Ok(bin)
}

/// `target/debug/faultbpf`, absolute. xtask itself runs from that same
/// `target/debug` (`cargo xtask` is a debug `cargo run`), which also covers
/// a `CARGO_TARGET_DIR` or `build.target-dir` set elsewhere.
fn faultbpf_bin() -> Result<PathBuf> {
    let exe = env::current_exe().context("locating the running xtask binary")?;
    let dir = match exe.parent() {
        Some(dir) if dir.ends_with("debug") => dir.to_owned(),
        _ => cmd::workspace_root().join("target").join("debug"),
    };
    Ok(dir.join("faultbpf"))
}
