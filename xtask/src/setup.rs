//! `cargo xtask setup`: turns a fresh Debian 12 machine that only has rustup's
//! stable toolchain into one that can build and test faultbpf, and does
//! nothing (in well under a second) on a machine where it already ran.
//!
//! Why this toolchain: the eBPF crate needs `-Z build-std=core` and a
//! `bpf-linker` whose LLVM matches the compiler's. aya-build compiles it with
//! `rustup run /usr cargo`, i.e. Debian's `rustc-web` (rustc 1.96, LLVM 22),
//! and bpf-linker is linked against that same Debian `libLLVM`, so both sides
//! agree on LLVM without downloading anything but crates.

use std::{
    fs,
    io::ErrorKind,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::cmd::{self, command};

/// What a setup prepares the machine for; each scope includes the ones
/// before it, so `demo` and `build` never wait for the test suite's servers,
/// QEMU and kernel (about 480 MB and 4 minutes on a fresh machine).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Build faultbpf and run the demo: `setup`, `build`, `demo`.
    Build,
    /// Also make the packages: `setup --dist`, `dist`.
    Dist,
    /// Also run every test and the bench: `setup --test`, `test`, `vm`, `bench`.
    Test,
}

/// Debian packages for building faultbpf and running the demo.
const BUILD_PACKAGES: &[&str] = &[
    // Debian's rustc 1.96 (LLVM 22) with the library source: aya-build builds
    // the eBPF crate with `rustup run /usr cargo -Z build-std=core`, and the
    // same package brings the libLLVM that bpf-linker links against.
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    // What the demo drives: namespaces and veth (iproute2), a web server
    // (python3) and a client (curl), and `modprobe` to load veth,
    // sch_ingress, ... where they are modules.
    "iproute2",
    "python3",
    "curl",
    "kmod",
];

/// Debian packages `cargo xtask dist` needs on top of [`BUILD_PACKAGES`].
const DIST_PACKAGES: &[&str] = &[
    // The portable binary is static against musl (see xtask/src/dist.rs):
    // musl's libc.a, crt files and the musl-gcc wrapper, and LLVM's
    // libunwind.a, the unwinder Rust's std links on musl targets.
    "musl-tools",
    "libunwind-14-dev",
];

/// Debian packages only the tests and the bench need.
const TEST_PACKAGES: &[&str] = &[
    // NIC offloads (ethtool), a second packet filter to compare with
    // (nftables), packet capture and generation (netsniff-ng).
    "ethtool",
    "nftables",
    "netsniff-ng",
    // Servers and clients that carry the test traffic.
    "socat",
    "iperf3",
    // The `dns` fault's tests: a real resolver and `dig`.
    "dnsmasq-base",
    "bind9-dnsutils",
    // `cargo xtask bench`: program sizes (bpftool) and the font its PNG
    // plot's text is drawn with.
    "bpftool",
    "fonts-dejavu-core",
    // Real dependencies the e2e tests fault (started by the tests inside
    // their own namespaces, never as system services: see
    // `install_without_services`), and the clients that talk to them.
    "rabbitmq-server",
    "python3-pika",
    "postgresql",
    "python3-psycopg2",
    // `faultbpf http`'s tests: a real retrying client (requests + urllib3's
    // Retry) and a TLS server's certificate (openssl).
    "python3-requests",
    "openssl",
    // The Python client's pytest fixture, a real Prometheus text parser and
    // the OpenAPI checker the daemon tests use (through /usr/bin/python3).
    "python3-pytest",
    "python3-prometheus-client",
    "python3-jsonschema",
    "python3-yaml",
    // Virtualenvs for the Python tools Debian lacks (xtask/src/pytools.rs).
    "python3-venv",
    // The VM lane (xtask/src/vm): qemu, the Debian 6.1 LTS kernel it boots
    // (installed into /boot, never booted on the host), and the static
    // busybox its initramfs runs; virtiofsd is built from crates.io (see
    // ensure_virtiofsd) and needs the last three.
    "qemu-system-x86",
    "linux-image-cloud-amd64",
    "busybox-static",
    "libcap-ng-dev",
    "libseccomp-dev",
    "pkg-config",
    // The package tests: dist_deb.rs installs the .deb into a clean Debian
    // 12 root it makes with debootstrap; dist_image.rs reads the OCI image
    // through skopeo's oci-archive and docker-archive transports.
    "debootstrap",
    "skopeo",
    // Container engines the `--container` tests drive (tests/src/engine.rs
    // starts dockerd in a namespace of its own, never as a service).
    "docker.io",
    "podman",
    // The Prometheus that scrapes three daemons (prometheus_fleet.rs;
    // started by the test in a namespace, never as a service). openssl,
    // above, also makes the TLS listener's certificates (daemon_tls.rs).
    "prometheus",
];

/// The Debian packages a scope needs.
fn apt_packages(scope: Scope) -> Vec<&'static str> {
    let mut all = BUILD_PACKAGES.to_vec();
    if scope >= Scope::Dist {
        all.extend_from_slice(DIST_PACKAGES);
    }
    if scope >= Scope::Test {
        all.extend_from_slice(TEST_PACKAGES);
    }
    all
}

/// cargo-deb, which turns the release binary and its files into the .deb
/// (`cargo xtask dist`); pinned so every machine builds the same package.
const CARGO_DEB_VERSION: &str = "3.8.0";

/// The bpf-linker release that matches aya 0.14 and LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// The virtiofsd the VM lane exports the host's root with (bookworm's qemu
/// ships only the old C daemon, which cannot do this).
const VIRTIOFSD_VERSION: &str = "1.14.0";

/// Debian's rustc, whose LLVM bpf-linker must match.
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";

/// The toolchain aya-build runs (`rustup run /usr ...`): Debian's, under /usr.
const DEBIAN_TOOLCHAIN: &str = "/usr";

/// `cargo xtask setup` for `scope` (see [`Scope`]).
pub fn run(scope: Scope) -> Result<()> {
    let started = Instant::now();
    let mut done = vec![
        timed(|| ensure_apt_packages(scope)).context("installing Debian packages")?,
        timed(ensure_bpf_linker).context("installing bpf-linker")?,
    ];
    if scope >= Scope::Dist {
        done.push(timed(ensure_cargo_deb).context("installing cargo-deb")?);
    }
    if scope >= Scope::Test {
        done.push(timed(ensure_virtiofsd).context("installing virtiofsd")?);
    }
    done.push(timed(verify_debian_toolchain).context("checking Debian's toolchain")?);
    eprintln!(
        "setup ({scope:?}): done in {:.2}s: {}",
        started.elapsed().as_secs_f64(),
        done.join("; ")
    );
    Ok(())
}

/// Runs a step and appends how long it took to its summary.
fn timed(step: impl FnOnce() -> Result<String>) -> Result<String> {
    let started = Instant::now();
    let summary = step()?;
    Ok(format!(
        "{summary} ({:.2}s)",
        started.elapsed().as_secs_f64()
    ))
}

/// Installs whatever of the scope's packages is missing; `apt-get update`
/// only runs when something is, so a set-up machine never touches the network.
fn ensure_apt_packages(scope: Scope) -> Result<String> {
    let wanted = apt_packages(scope);
    let missing = missing_packages(&wanted)?;
    if missing.is_empty() {
        return Ok(format!(
            "apt: all {} packages already installed",
            wanted.len()
        ));
    }
    let list = missing.join(" ");
    if !cmd::is_root()? {
        bail!(
            "missing Debian packages: {list}; run `cargo xtask setup` as root, or `apt-get install {list}`"
        );
    }
    eprintln!("setup: installing missing Debian packages: {list}");
    let apt_get = |args: &[&str]| {
        let mut apt = command("apt-get");
        apt.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        apt
    };
    cmd::run(&mut apt_get(&["update"]))?;
    install_without_services(|| cmd::run(apt_get(&["install", "-y"]).args(&missing)))?;
    let still = missing_packages(&wanted)?;
    if !still.is_empty() {
        bail!(
            "apt-get install succeeded but these are still not installed: {}",
            still.join(" ")
        );
    }
    Ok(format!("apt: installed {list}"))
}

/// Runs an install with a `policy-rc.d` that forbids starting services, so
/// rabbitmq-server and postgresql do not start in the root namespace (the
/// tests start their own, inside namespaces). An existing policy is kept.
fn install_without_services(install: impl FnOnce() -> Result<()>) -> Result<()> {
    const POLICY: &str = "/usr/sbin/policy-rc.d";
    let ours = !std::path::Path::new(POLICY).exists();
    if ours {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(
            POLICY,
            "#!/bin/sh\n# written by cargo xtask setup during apt-get install\nexit 101\n",
        )
        .context("could not write /usr/sbin/policy-rc.d")?;
        std::fs::set_permissions(POLICY, std::fs::Permissions::from_mode(0o755))?;
    }
    let r = install();
    if ours {
        let _ = std::fs::remove_file(POLICY);
    }
    r
}

/// The packages of `wanted` that dpkg does not report as installed.
fn missing_packages(wanted: &[&'static str]) -> Result<Vec<&'static str>> {
    // One dpkg-query for all: it prints a line per known package and exits 1
    // when some are unknown to dpkg, which just means "missing" here.
    let mut query = command("dpkg-query");
    query
        .args(["-W", "-f=${Package}\\t${Status}\\n"])
        .args(wanted);
    let line = cmd::describe(&query);
    let output = query
        .output()
        .with_context(|| format!("could not start `{line}`: this needs Debian (dpkg)"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let installed = installed_packages(&stdout);
    Ok(wanted
        .iter()
        .copied()
        .filter(|package| !installed.contains(package))
        .collect())
}

/// Package names that `dpkg-query -f '${Package}\t${Status}\n'` reports as
/// installed: status `<want> ok installed` (want is `install` or `hold`).
fn installed_packages(dpkg_query: &str) -> Vec<&str> {
    dpkg_query
        .lines()
        .filter_map(|line| {
            let (name, status) = line.split_once('\t')?;
            let words: Vec<&str> = status.split_whitespace().collect();
            (words.get(1..) == Some(&["ok", "installed"][..])).then_some(name.trim())
        })
        .collect()
}

/// Installs bpf-linker [`BPF_LINKER_VERSION`] built against Debian's libLLVM,
/// unless that exact build is already there.
fn ensure_bpf_linker() -> Result<String> {
    let major = debian_llvm_major()?;
    let feature = format!("llvm-{major}");
    match installed_bpf_linker_version() {
        Some(version) if version == BPF_LINKER_VERSION => {
            // Same version but built for another LLVM (Debian moved rustc-web
            // on): it would still run, and then fail to read rustc's bitcode.
            match installed_bpf_linker_features()? {
                Some(features) if !features.contains(&feature) => eprintln!(
                    "setup: bpf-linker {version} was built with features {features:?}, \
                     Debian's rustc needs `{feature}`: rebuilding"
                ),
                _ => return Ok(format!("bpf-linker {version} already installed")),
            }
        }
        Some(version) => eprintln!(
            "setup: bpf-linker {version} found, faultbpf needs {BPF_LINKER_VERSION}: replacing"
        ),
        None => {}
    }

    let libllvm = find_libllvm(major)?;
    let prefix = llvm_prefix(major, &libllvm)?;
    eprintln!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against {} (a few minutes)",
        libllvm.display()
    );
    // Runs outside the workspace so its .cargo/config.toml cannot change how
    // bpf-linker builds; `--force` because a same-version install is only
    // attempted when it is broken or built for the wrong LLVM.
    cmd::run(
        command("cargo")
            .current_dir(prefix.parent().unwrap_or(&prefix))
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
            .args(["--locked", "--force", "--no-default-features", "--features"])
            .arg(&feature)
            .env("LLVM_PREFIX", &prefix),
    )?;
    match installed_bpf_linker_version() {
        Some(version) if version == BPF_LINKER_VERSION => {
            Ok(format!("bpf-linker {version} installed for {feature}"))
        }
        other => bail!(
            "`cargo install bpf-linker` succeeded but `bpf-linker --version` gives {other:?}; \
             is {} on PATH?",
            cmd::cargo_bin_dir()?.display()
        ),
    }
}

/// Installs virtiofsd [`VIRTIOFSD_VERSION`] unless a virtiofsd already runs.
fn ensure_virtiofsd() -> Result<String> {
    let version = || cmd::stdout_of(command("virtiofsd").arg("--version")).ok();
    if let Some(out) = version() {
        return Ok(format!("{} already installed", out.trim()));
    }
    eprintln!("setup: building virtiofsd {VIRTIOFSD_VERSION} for the VM lane (a minute or two)");
    // Outside the workspace, so its .cargo/config.toml does not apply.
    cmd::run(command("cargo").current_dir(std::env::temp_dir()).args([
        "install",
        "virtiofsd",
        "--version",
        VIRTIOFSD_VERSION,
        "--locked",
    ]))?;
    match version() {
        Some(out) => Ok(format!("{} installed", out.trim())),
        None => bail!(
            "`cargo install virtiofsd` succeeded but `virtiofsd --version` does not run; \
             is {} on PATH?",
            cmd::cargo_bin_dir()?.display()
        ),
    }
}

/// Installs cargo-deb [`CARGO_DEB_VERSION`] unless that version is there.
fn ensure_cargo_deb() -> Result<String> {
    let version = || {
        let out = cmd::stdout_of(command("cargo-deb").arg("--version")).ok()?;
        out.split_whitespace().last().map(str::to_owned)
    };
    match version() {
        Some(v) if v == CARGO_DEB_VERSION => return Ok(format!("cargo-deb {v} already installed")),
        Some(v) => {
            eprintln!("setup: cargo-deb {v} found, dist needs {CARGO_DEB_VERSION}: replacing")
        }
        None => eprintln!("setup: building cargo-deb {CARGO_DEB_VERSION} (a minute or two)"),
    }
    // Outside the workspace, so its .cargo/config.toml does not apply.
    cmd::run(command("cargo").current_dir(std::env::temp_dir()).args([
        "install",
        "cargo-deb",
        "--version",
        CARGO_DEB_VERSION,
        "--locked",
        "--force",
    ]))?;
    match version() {
        Some(v) if v == CARGO_DEB_VERSION => Ok(format!("cargo-deb {v} installed")),
        other => bail!(
            "`cargo install cargo-deb --version {CARGO_DEB_VERSION}` succeeded but \
             `cargo-deb --version` says {other:?}; is {} first on PATH?",
            cmd::cargo_bin_dir()?.display()
        ),
    }
}

/// The LLVM major version of Debian's rustc, e.g. 22 for `LLVM version: 22.1.8`.
fn debian_llvm_major() -> Result<u32> {
    let vv = cmd::stdout_of(command(DEBIAN_RUSTC).arg("-vV"))
        .with_context(|| format!("{DEBIAN_RUSTC} (package rustc-web) does not run"))?;
    let llvm = rustc_vv_field(&vv, "LLVM version")
        .with_context(|| format!("no `LLVM version:` in `{DEBIAN_RUSTC} -vV`:\n{vv}"))?;
    llvm_major(llvm).with_context(|| format!("cannot read `LLVM version: {llvm}`"))
}

/// A `key: value` field of `rustc -vV`.
fn rustc_vv_field<'a>(vv: &'a str, key: &str) -> Option<&'a str> {
    vv.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim())
    })
}

/// `22.1.8` -> 22.
fn llvm_major(version: &str) -> Option<u32> {
    version.split('.').next()?.parse().ok()
}

/// The version `bpf-linker --version` prints (`bpf-linker 0.13.0`), or None
/// when it is missing or does not start (e.g. its libLLVM went away).
fn installed_bpf_linker_version() -> Option<String> {
    let out = cmd::stdout_of(command("bpf-linker").arg("--version")).ok()?;
    out.split_whitespace().nth(1).map(str::to_owned)
}

/// The cargo features bpf-linker was installed with, from cargo's own record
/// (`$CARGO_HOME/.crates2.json`); None when that record is absent.
fn installed_bpf_linker_features() -> Result<Option<Vec<String>>> {
    let path = cmd::cargo_bin_dir()?.with_file_name(".crates2.json");
    match fs::read_to_string(&path) {
        Ok(json) => Ok(crates2_features(&json, "bpf-linker")),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

/// The `features` of `krate`'s entry in `.crates2.json`. Each entry is a flat
/// object (`"name version (source)":{..."features":["a","b"],...}`), so a
/// string scan is enough and keeps xtask free of a JSON parser.
fn crates2_features(json: &str, krate: &str) -> Option<Vec<String>> {
    let start = json.find(&format!("\"{krate} "))?;
    let entry = &json[start..];
    let entry = &entry[..entry.find('}')?];
    let features = &entry[entry.find("\"features\":[")? + "\"features\":[".len()..];
    let features = &features[..features.find(']')?];
    Some(
        features
            .split(',')
            .map(|f| f.trim().trim_matches('"').to_owned())
            .filter(|f| !f.is_empty())
            .collect(),
    )
}

/// Debian's `libLLVM.so.<major>.<minor>` in the multiarch library dir.
fn find_libllvm(major: u32) -> Result<PathBuf> {
    let dir = Path::new("/usr/lib").join(multiarch()?);
    let prefix = format!("libLLVM.so.{major}.");
    let mut found: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
        .map(|entry| entry.path())
        .collect();
    found.sort();
    found.pop().with_context(|| {
        format!(
            "no {}/{prefix}* (Debian's libllvm{major} provides it: apt-get install libllvm{major})",
            dir.display()
        )
    })
}

/// The multiarch triple Debian puts libraries under (`x86_64-linux-gnu`).
fn multiarch() -> Result<String> {
    // gcc comes with rustc-web; dpkg-architecture only with dpkg-dev.
    let tries = [
        ("gcc", "-print-multiarch"),
        ("dpkg-architecture", "-qDEB_HOST_MULTIARCH"),
    ];
    let mut errors = Vec::new();
    for (program, arg) in tries {
        match cmd::stdout_of(command(program).arg(arg)) {
            Ok(out) if !out.trim().is_empty() => return Ok(out.trim().to_owned()),
            Ok(_) => errors.push(format!("`{program} {arg}` printed nothing")),
            Err(err) => errors.push(format!("{err:#}")),
        }
    }
    bail!(
        "cannot tell the multiarch library dir: {}",
        errors.join("; ")
    )
}

/// A directory laid out like an LLVM install (`lib/libLLVM.so`) pointing at
/// Debian's libLLVM, for bpf-linker's `LLVM_PREFIX`. It is kept in the user's
/// cache rather than target/ because the installed bpf-linker's RUNPATH names
/// it, and `cargo clean` should not reach outside target/ to break that.
fn llvm_prefix(major: u32, libllvm: &Path) -> Result<PathBuf> {
    let cache = match std::env::var_os("XDG_CACHE_HOME").filter(|dir| !dir.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => cmd::home_dir()?.join(".cache"),
    };
    let prefix = cache.join("faultbpf").join(format!("llvm-{major}"));
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    let link = lib.join("libLLVM.so");
    match fs::read_link(&link) {
        Ok(target) if target == libllvm => return Ok(prefix),
        Ok(_) => fs::remove_file(&link).with_context(|| format!("removing {}", link.display()))?,
        Err(err) if err.kind() == ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("reading {}", link.display())),
    }
    symlink(libllvm, &link)
        .with_context(|| format!("linking {} -> {}", link.display(), libllvm.display()))?;
    Ok(prefix)
}

/// Checks what aya-build will run: `rustup run /usr rustc|cargo`, and the
/// library source `-Z build-std=core` needs.
fn verify_debian_toolchain() -> Result<String> {
    let rustup = |program: &str| {
        let mut rustup = command("rustup");
        rustup.args(["run", DEBIAN_TOOLCHAIN, program]);
        rustup
    };
    let hint = "aya-build compiles the eBPF crate with `rustup run /usr cargo`; \
                check that rustup and Debian's rustc-web/cargo-web are installed";
    let vv = cmd::stdout_of(rustup("rustc").arg("-vV")).context(hint)?;
    cmd::stdout_of(rustup("cargo").arg("-V")).context(hint)?;
    let release = rustc_vv_field(&vv, "release").unwrap_or("?");
    let llvm = rustc_vv_field(&vv, "LLVM version").unwrap_or("?");

    let sysroot = cmd::stdout_of(rustup("rustc").args(["--print", "sysroot"]))?;
    let library = Path::new(sysroot.trim()).join("lib/rustlib/src/rust/library");
    if !library.is_dir() {
        bail!(
            "{} is missing: `-Z build-std=core` needs Debian's rust-web-src",
            library.display()
        );
    }
    Ok(format!("rustup run /usr: rustc {release} with LLVM {llvm}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_llvm_major_from_rustc_vv() {
        let vv = "rustc 1.96.0 (ac68faa20 2026-05-25)\nbinary: rustc\nrelease: 1.96.0\nLLVM version: 22.1.8\n";
        assert_eq!(rustc_vv_field(vv, "release"), Some("1.96.0"));
        let llvm = rustc_vv_field(vv, "LLVM version").unwrap();
        assert_eq!(llvm_major(llvm), Some(22));
        assert_eq!(rustc_vv_field(vv, "host"), None);
    }

    #[test]
    fn installed_packages_skip_removed_and_half_installed() {
        let out = "curl\tinstall ok installed\nsocat\tdeinstall ok config-files\n\
                   kmod\thold ok installed\nethtool\tinstall ok half-configured\n";
        assert_eq!(installed_packages(out), ["curl", "kmod"]);
    }

    #[test]
    fn crates2_features_of_one_entry() {
        let json = r#"{"installs":{"bpf-linker 0.13.0 (registry+https://x)":{"version_req":"=0.13.0","bins":["bpf-linker"],"features":["llvm-22"],"all_features":false},"other 1.0.0 (registry+https://x)":{"features":["llvm-21"]}}}"#;
        assert_eq!(
            crates2_features(json, "bpf-linker"),
            Some(vec!["llvm-22".to_owned()])
        );
        assert_eq!(crates2_features(json, "cargo-foo"), None);
        let none = r#"{"installs":{"bpf-linker 0.13.0 (x)":{"features":[],"bins":[]}}}"#;
        assert_eq!(crates2_features(none, "bpf-linker"), Some(vec![]));
    }
}
