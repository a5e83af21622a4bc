//! `cargo xtask dist`: everything a user installs faultbpf from, built from a
//! clean checkout into `target/dist/`:
//!
//! - `faultbpf_VERSION_amd64.deb`, made by cargo-deb from the metadata in
//!   faultbpf/Cargo.toml and the files in faultbpf/debian/ (systemd unit,
//!   commented example config, the `faultbpf` group's maintainer scripts);
//! - `faultbpf-VERSION-x86_64-linux-musl.tar.gz`, the portable binary with
//!   its man pages and completions;
//! - `faultbpf-oci-VERSION.tar`, an OCI image of the daemon (`docker load` /
//!   `podman load`), written here file by file: nothing is pulled, no engine
//!   runs.
//!
//! Why one static musl build feeds all three: a binary with no shared
//! library dependency runs on any x86_64 Linux whose kernel has BPF and BTF
//! (glibc's version does not matter, and it runs in a `FROM scratch` image),
//! and the .deb then depends on no libc at all. rustup cannot download the
//! musl target here, so the standard library is built from source by
//! Debian's rustc (`rust-web-src`, `-Z build-std`, the same toolchain that
//! builds the eBPF side), linked by `musl-gcc` against Debian's musl and
//! LLVM's `libunwind.a`. That libunwind was compiled against glibc and calls
//! `__fprintf_chk` (glibc's `_FORTIFY_SOURCE` printf) in its debug paths;
//! [`FORTIFY_SHIM`] provides it on top of musl's `vfprintf`.
//!
//! The man pages and completions come from the binary itself (`faultbpf
//! manpages DIR`, `faultbpf completions SHELL`), so they match its flags.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use serde_json::json;

use crate::{
    cmd::{self, command},
    setup,
};

/// The Rust target of the portable binary.
pub const TARGET: &str = "x86_64-unknown-linux-musl";

/// The version every artifact carries: the workspace's.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where LLVM's static unwinder lives (package libunwind-14-dev).
const LIBUNWIND_DIR: &str = "/usr/lib/llvm-14/lib";

/// glibc's fortified fprintf, which LLVM's libunwind.a (built against glibc)
/// calls; musl has no `__fprintf_chk`, so this forwards to `vfprintf`.
const FORTIFY_SHIM: &str = "\
/* Written by cargo xtask dist (xtask/src/dist.rs): glibc's __fprintf_chk for\n\
 * LLVM's libunwind.a when it is linked into a static musl binary. */\n\
#include <stdarg.h>\n\
#include <stdio.h>\n\
int __fprintf_chk(FILE *f, int flag, const char *fmt, ...) {\n\
    va_list ap;\n\
    (void)flag;\n\
    va_start(ap, fmt);\n\
    int r = vfprintf(f, fmt, ap);\n\
    va_end(ap);\n\
    return r;\n\
}\n";

/// What `cargo xtask dist` made.
#[derive(Debug)]
pub struct Artifacts {
    /// The static release binary (not stripped), for tests that run it.
    pub bin: PathBuf,
    pub deb: PathBuf,
    pub tarball: PathBuf,
    pub image: PathBuf,
}

/// `cargo xtask dist`.
pub fn run() -> Result<()> {
    setup::run(setup::Scope::Dist)?;
    let a = build()?;
    eprintln!(
        "dist: {}\n      {}\n      {}\n      (static binary: {})",
        a.deb.display(),
        a.tarball.display(),
        a.image.display(),
        a.bin.display()
    );
    Ok(())
}

/// Builds the three artifacts into `target/dist/` (emptied first).
pub fn build() -> Result<Artifacts> {
    let target = target_dir();
    let stage = target.join("dist-stage");
    let out = target.join("dist");
    for dir in [&stage, &out] {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let bin = build_static(&target)?;
    ensure_static(&bin)?;
    generate_docs(&bin, &stage)?;
    let deb = build_deb(&out)?;
    let stripped = stage.join("faultbpf");
    fs::copy(&bin, &stripped).with_context(|| format!("copying {}", bin.display()))?;
    cmd::run(command("strip").arg(&stripped))?;
    let tarball = build_tarball(&stripped, &stage, &out)?;
    let image = build_image(&stripped, &stage, &out)?;
    Ok(Artifacts {
        bin,
        deb,
        tarball,
        image,
    })
}

/// `target/`, or `$CARGO_TARGET_DIR`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => cmd::workspace_root().join(dir),
        None => cmd::workspace_root().join("target"),
    }
}

/// `cargo build --release -p faultbpf --target x86_64-unknown-linux-musl`
/// with Debian's toolchain and `-Z build-std` (see the module doc).
fn build_static(target: &Path) -> Result<PathBuf> {
    let shim_dir = target.join("dist-musl");
    fs::create_dir_all(&shim_dir).with_context(|| format!("creating {}", shim_dir.display()))?;
    let source = shim_dir.join("fortify_shim.c");
    let object = shim_dir.join("fortify_shim.o");
    if fs::read_to_string(&source).ok().as_deref() != Some(FORTIFY_SHIM) || !object.is_file() {
        fs::write(&source, FORTIFY_SHIM)
            .with_context(|| format!("writing {}", source.display()))?;
        cmd::run(
            command("musl-gcc")
                .args(["-O2", "-c"])
                .arg(&source)
                .arg("-o")
                .arg(&object),
        )
        .context("compiling the fortify shim (musl-gcc comes with Debian's musl-tools)")?;
    }
    let rustflags = [
        "-C target-feature=+crt-static".to_owned(),
        // Link with musl-gcc's crt files and libc.a, not the self-contained
        // ones rustup would ship with the target (it has none here).
        "-C link-self-contained=no".to_owned(),
        // A plain static executable (no static-pie), so no loader is needed.
        "-C relocation-model=static".to_owned(),
        format!("-L native={LIBUNWIND_DIR}"),
        format!("-C link-arg={}", object.display()),
    ]
    .join(" ");
    let env_target = TARGET.to_uppercase().replace('-', "_");
    let mut cargo = command("rustup");
    cargo
        .current_dir(cmd::workspace_root())
        .args([
            "run",
            "/usr",
            "cargo",
            "build",
            "--release",
            "-p",
            "faultbpf",
        ])
        .args(["--target", TARGET, "-Z", "build-std=std,panic_unwind"])
        .env("RUSTC_BOOTSTRAP", "1")
        .env(format!("CARGO_TARGET_{env_target}_LINKER"), "musl-gcc")
        .env(format!("CARGO_TARGET_{env_target}_RUSTFLAGS"), rustflags);
    cmd::run(&mut cargo).context(
        "building the static binary (needs Debian's rustc-web, rust-web-src, musl-tools and \
         libunwind-14-dev: `cargo xtask setup --dist`)",
    )?;
    let bin = target.join(TARGET).join("release").join("faultbpf");
    if !bin.is_file() {
        bail!(
            "the static build succeeded but {} is missing",
            bin.display()
        );
    }
    Ok(bin)
}

/// Fails unless `bin` is an ELF executable with no program interpreter,
/// i.e. the kernel runs it without any dynamic loader or shared library.
fn ensure_static(bin: &Path) -> Result<()> {
    let elf = fs::read(bin).with_context(|| format!("reading {}", bin.display()))?;
    match elf_interpreter(&elf) {
        Ok(None) => Ok(()),
        Ok(Some(interp)) => bail!(
            "{} is not static: it asks for the loader {interp}; the portable build must link \
             with +crt-static",
            bin.display()
        ),
        Err(why) => bail!("{} is not a 64-bit ELF executable: {why}", bin.display()),
    }
}

/// The `PT_INTERP` path of a little-endian ELF64 file, None if it has none.
fn elf_interpreter(elf: &[u8]) -> Result<Option<String>, String> {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    if elf.get(..6) != Some(b"\x7fELF\x02\x01") {
        return Err("no little-endian ELF64 header".into());
    }
    let short = || "truncated".to_owned();
    let phoff = u64_at(0x20).ok_or_else(short)? as usize;
    let phentsize = u16_at(0x36).ok_or_else(short)? as usize;
    let phnum = u16_at(0x38).ok_or_else(short)? as usize;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(ph).ok_or_else(short)? != PT_INTERP {
            continue;
        }
        let offset = u64_at(ph + 8).ok_or_else(short)? as usize;
        let size = u64_at(ph + 32).ok_or_else(short)? as usize;
        let path = elf.get(offset..offset + size).ok_or_else(short)?;
        let path = path.split(|&b| b == 0).next().unwrap_or_default();
        return Ok(Some(String::from_utf8_lossy(path).into_owned()));
    }
    Ok(None)
}

/// `faultbpf manpages` into `stage/man` (gzipped, as Debian ships them) and
/// the bash, zsh and fish completions into `stage/completions`.
fn generate_docs(bin: &Path, stage: &Path) -> Result<()> {
    let man = stage.join("man");
    cmd::stdout_of(Command::new(bin).arg("manpages").arg(&man))?;
    let mut pages: Vec<PathBuf> = fs::read_dir(&man)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    pages.sort();
    if pages.len() < 10 {
        bail!("`faultbpf manpages` wrote only {pages:?}");
    }
    cmd::run(command("gzip").args(["-9", "-n", "-f"]).args(&pages))?;
    let completions = stage.join("completions");
    fs::create_dir_all(&completions)?;
    for (shell, file) in [
        ("bash", "faultbpf.bash"),
        ("zsh", "_faultbpf"),
        ("fish", "faultbpf.fish"),
    ] {
        let script = cmd::stdout_of(Command::new(bin).args(["completions", shell]))?;
        fs::write(completions.join(file), script)?;
    }
    Ok(())
}

/// cargo-deb on the static build; returns the .deb's path.
fn build_deb(out: &Path) -> Result<PathBuf> {
    cmd::run(
        command("cargo-deb")
            .current_dir(cmd::workspace_root())
            .args(["-p", "faultbpf", "--no-build", "--target", TARGET])
            .arg("--output")
            .arg(out),
    )
    .context("cargo-deb (`cargo xtask setup --dist` installs it)")?;
    let deb = out.join(format!("faultbpf_{VERSION}_amd64.deb"));
    if !deb.is_file() {
        bail!("cargo-deb succeeded but {} is missing", deb.display());
    }
    Ok(deb)
}

/// Deterministic `tar` flags: sorted names, root-owned, one mtime.
fn tar() -> Command {
    let mut tar = command("tar");
    tar.args([
        "--sort=name",
        "--owner=0",
        "--group=0",
        "--numeric-owner",
        "--mtime=@0",
    ]);
    tar
}

/// `faultbpf-VERSION-x86_64-linux-musl.tar.gz`: `faultbpf-VERSION/` with
/// `bin/`, `share/man/man1/`, the completions where each shell looks under
/// a prefix, the unit and example config, README and the licence.
fn build_tarball(bin: &Path, stage: &Path, out: &Path) -> Result<PathBuf> {
    let name = format!("faultbpf-{VERSION}");
    let root = stage.join("tarball").join(&name);
    let debian = cmd::workspace_root().join("faultbpf/debian");
    let files: Vec<(PathBuf, String)> = vec![
        (bin.to_owned(), "bin/faultbpf".into()),
        (
            stage.join("completions/faultbpf.bash"),
            "share/bash-completion/completions/faultbpf".into(),
        ),
        (
            stage.join("completions/_faultbpf"),
            "share/zsh/site-functions/_faultbpf".into(),
        ),
        (
            stage.join("completions/faultbpf.fish"),
            "share/fish/vendor_completions.d/faultbpf.fish".into(),
        ),
        (
            debian.join("faultbpf.service"),
            "lib/systemd/system/faultbpf.service".into(),
        ),
        (
            debian.join("faultbpf.toml"),
            "etc/faultbpf/faultbpf.toml".into(),
        ),
        (cmd::workspace_root().join("README.md"), "README.md".into()),
        (debian.join("copyright"), "LICENSE".into()),
    ];
    for (from, to) in &files {
        copy_into(from, &root.join(to))?;
    }
    for page in fs::read_dir(stage.join("man"))? {
        let page = page?.path();
        copy_into(
            &page,
            &root.join("share/man/man1").join(page.file_name().unwrap()),
        )?;
    }
    let tarball = out.join(format!("faultbpf-{VERSION}-x86_64-linux-musl.tar.gz"));
    cmd::run(
        tar()
            .arg("-czf")
            .arg(&tarball)
            .arg("-C")
            .arg(root.parent().unwrap())
            .arg(&name),
    )?;
    Ok(tarball)
}

/// The iproute2 programs faultbpf runs, as the image holds them.
const IPROUTE2: [(&str, &str); 2] = [
    ("/usr/sbin/ip", "usr/sbin/ip"),
    ("/usr/sbin/tc", "usr/sbin/tc"),
];

/// Copies this machine's `ip` and `tc` (Debian's iproute2, which `cargo
/// xtask setup` installs) into `rootfs`, with every shared library `ldd`
/// says they load, at the same paths, and the dynamic loader: the image
/// has no distribution under it. Dynamic, not static: Debian ships no
/// static iproute2, and busybox's `tc` knows neither clsact nor fq.
fn add_iproute2(rootfs: &Path) -> Result<()> {
    let mut libs: Vec<PathBuf> = Vec::new();
    for (from, to) in IPROUTE2 {
        copy_into(&fs::canonicalize(from)?, &rootfs.join(to))?;
        let out = cmd::stdout_of(command("ldd").arg(from))?;
        libs.extend(ldd_paths(&out));
    }
    libs.sort();
    libs.dedup();
    for lib in libs {
        let inside = rootfs.join(lib.strip_prefix("/").unwrap_or(&lib));
        copy_into(&fs::canonicalize(&lib)?, &inside)?;
    }
    Ok(())
}

/// The files in `ldd` output: `libc.so.6 => /lib/.../libc.so.6 (0x..)` and
/// the loader's `/lib64/ld-linux-x86-64.so.2 (0x..)`; not the vDSO.
fn ldd_paths(out: &str) -> Vec<PathBuf> {
    out.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = l.split_once("=>").map_or(l, |(_, p)| p.trim());
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Copies `from` to `to`, creating `to`'s directory.
fn copy_into(from: &Path, to: &Path) -> Result<()> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::copy(from, to)
        .map(drop)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))
}

/// The daemon's OCI image, `faultbpf:VERSION`, as one tar file holding both
/// an OCI image layout (`oci-layout`, `index.json`, `blobs/`) and docker's
/// `manifest.json`, so `docker load` (old and new) and `podman load` take it.
/// One uncompressed layer: the static binary, the example config, `/run`
/// for the socket and `/tmp`, and Debian's `ip` and `tc` with the shared
/// libraries they load ([`add_iproute2`]): the delay device and the
/// reaper on kernels without TCX run them. Run it privileged with the
/// host's network and PID namespaces (see README, "Install").
fn build_image(bin: &Path, stage: &Path, out: &Path) -> Result<PathBuf> {
    let rootfs = stage.join("oci-rootfs");
    copy_into(bin, &rootfs.join("usr/bin/faultbpf"))?;
    copy_into(
        &cmd::workspace_root().join("faultbpf/debian/faultbpf.toml"),
        &rootfs.join("etc/faultbpf/faultbpf.toml"),
    )?;
    for dir in ["run", "tmp"] {
        fs::create_dir_all(rootfs.join(dir))?;
    }
    add_iproute2(&rootfs)?;
    let layout = stage.join("oci");
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    let layer_tmp = stage.join("layer.tar");
    cmd::run(
        tar()
            .arg("-cf")
            .arg(&layer_tmp)
            .arg("-C")
            .arg(&rootfs)
            .args(["etc", "lib", "lib64", "run", "tmp", "usr"]),
    )?;
    let layer = add_blob(&blobs, &layer_tmp)?;

    let reference = format!("faultbpf:{VERSION}");
    let labels = json!({
        "org.opencontainers.image.title": "faultbpf",
        "org.opencontainers.image.version": VERSION,
        "org.opencontainers.image.description":
            "faultbpf's daemon; run with --privileged --network host --pid host",
        "org.opencontainers.image.licenses": "MIT OR Apache-2.0",
    });
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": ["/usr/bin/faultbpf"],
            "Cmd": ["daemon", "--config", "/etc/faultbpf/faultbpf.toml"],
            "Env": ["PATH=/usr/bin:/usr/sbin", "FAULTBPF_SOCKET=/run/faultbpf/faultbpf.sock"],
            "Volumes": {"/run/faultbpf": {}},
            "Labels": labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", layer.0)]},
        "history": [{"created_by": "cargo xtask dist"}],
    });
    let config = add_json_blob(&blobs, &stage.join("config.json"), &config)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{}", config.0),
            "size": config.1,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{}", layer.0),
            "size": layer.1,
        }],
        "annotations": labels,
    });
    let manifest = add_json_blob(&blobs, &stage.join("manifest.json"), &manifest)?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", manifest.0),
            "size": manifest.1,
            "annotations": {
                "org.opencontainers.image.ref.name": VERSION,
                "io.containerd.image.name": format!("docker.io/library/{reference}"),
            },
        }],
    });
    fs::write(layout.join("index.json"), serde_json::to_vec(&index)?)?;
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let docker = json!([{
        "Config": format!("blobs/sha256/{}", config.0),
        "RepoTags": [reference],
        "Layers": [format!("blobs/sha256/{}", layer.0)],
    }]);
    fs::write(layout.join("manifest.json"), serde_json::to_vec(&docker)?)?;

    let image = out.join(format!("faultbpf-oci-{VERSION}.tar"));
    cmd::run(tar().arg("-cf").arg(&image).arg("-C").arg(&layout).args([
        "blobs",
        "index.json",
        "manifest.json",
        "oci-layout",
    ]))?;
    Ok(image)
}

/// Moves `file` into `blobs/` under its sha256; returns (hex digest, size).
fn add_blob(blobs: &Path, file: &Path) -> Result<(String, u64)> {
    let sum = cmd::stdout_of(command("sha256sum").arg(file))?;
    let hex = sum
        .split_whitespace()
        .next()
        .filter(|h| h.len() == 64)
        .with_context(|| format!("unexpected sha256sum output: {sum}"))?
        .to_owned();
    let size = fs::metadata(file)?.len();
    fs::rename(file, blobs.join(&hex))
        .with_context(|| format!("moving {} into {}", file.display(), blobs.display()))?;
    Ok((hex, size))
}

/// Writes `value` as compact JSON to `tmp`, then [`add_blob`]s it.
fn add_json_blob(blobs: &Path, tmp: &Path, value: &serde_json::Value) -> Result<(String, u64)> {
    fs::write(tmp, serde_json::to_vec(value)?)?;
    add_blob(blobs, tmp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_paths_are_the_libraries_and_the_loader_not_the_vdso() {
        let out = "\tlinux-vdso.so.1 (0x00007f2731c9b000)\n\
                   \tlibmnl.so.0 => /lib/x86_64-linux-gnu/libmnl.so.0 (0x00007f2731b72000)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f2731c9d000)\n";
        assert_eq!(
            ldd_paths(out),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libmnl.so.0"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
    }

    #[test]
    fn elf_interpreter_is_read_from_the_program_headers() {
        // The running test binary is dynamically linked against glibc.
        let me = fs::read(std::env::current_exe().unwrap()).unwrap();
        let interp = elf_interpreter(&me).unwrap().unwrap();
        assert!(interp.contains("ld-linux"), "{interp}");

        // A minimal ELF64 with one PT_LOAD and no PT_INTERP is static.
        let mut elf = vec![0u8; 0x40 + 56];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        elf[0x40..0x44].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(elf_interpreter(&elf), Ok(None));

        assert!(elf_interpreter(b"#!/bin/sh\n").is_err());
        assert!(elf_interpreter(&elf[..0x30]).is_err());
    }
}
