//! Issue 13: the .deb `cargo xtask dist` made installs like any Debian
//! package into a clean Debian 12 root, and purging it leaves nothing.
//!
//! The root is made once with debootstrap (minbase plus man-db,
//! bash-completion and systemd, the tools the checks use, and the package's
//! own dependencies) from the mirror the host's apt uses, and cached as a
//! tar under `target/dist-chroot/`; each run unpacks a fresh copy. Every
//! command runs `chroot`ed inside a private mount namespace (`unshare
//! --mount`), so its /proc and /dev mounts die with it. Nothing is started: the
//! unit is not enabled on install, and a `policy-rc.d` forbids it anyway.

use std::{
    collections::BTreeSet,
    fs,
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

/// The packages the root gets on top of debootstrap's minbase.
const INCLUDE: &str = "man-db,bash-completion,systemd,iproute2";

/// `target/dist/faultbpf_*_amd64.deb`; panics (with the fix) if missing.
fn deb() -> PathBuf {
    faultbpf_tests::dist::artifact("faultbpf_", "_amd64.deb")
}

/// The Debian mirror the host's apt uses for bookworm (deb822 `URIs:` of
/// a stanza whose `Suites:` has `bookworm`, or a one-line `deb` entry).
fn host_mirror() -> String {
    let mut texts = Vec::new();
    for dir in ["/etc/apt/sources.list.d"] {
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "sources" || x == "list") {
                    texts.push(fs::read_to_string(&p).unwrap_or_default());
                }
            }
        }
    }
    texts.push(fs::read_to_string("/etc/apt/sources.list").unwrap_or_default());
    for text in &texts {
        for stanza in text.split("\n\n") {
            let field = |key: &str| {
                stanza.lines().find_map(|l| {
                    l.strip_prefix(key)
                        .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
                })
            };
            let suites = stanza
                .lines()
                .find_map(|l| l.strip_prefix("Suites:"))
                .unwrap_or("");
            if suites.split_whitespace().any(|s| s == "bookworm")
                && let Some(uri) = field("URIs:")
            {
                return uri;
            }
        }
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.first() == Some(&"deb") {
                let rest: Vec<&&str> = words.iter().filter(|w| !w.starts_with('[')).collect();
                if rest.len() >= 3 && *rest[2] == "bookworm" {
                    return rest[1].to_string();
                }
            }
        }
    }
    panic!("no bookworm mirror in the host's apt sources: cannot debootstrap a Debian 12 root")
}

/// The cached tar of the clean root, made once.
fn base_tar() -> PathBuf {
    let cache = faultbpf_tests::dist::target_dir().join("dist-chroot");
    let tar = cache.join(format!("bookworm-{}.tar", INCLUDE.replace(',', "+")));
    if tar.is_file() {
        return tar;
    }
    fs::create_dir_all(&cache).unwrap();
    let build = cache.join(format!("build-{}", std::process::id()));
    let _ = fs::remove_dir_all(&build);
    let mirror = host_mirror();
    run(Command::new("debootstrap")
        .args([
            "--variant=minbase",
            &format!("--include={INCLUDE}"),
            "bookworm",
        ])
        .arg(&build)
        .arg(&mirror));
    let partial = tar.with_extension("partial");
    run(Command::new("tar")
        .arg("-C")
        .arg(&build)
        .arg("-cf")
        .arg(&partial)
        .arg("."));
    fs::rename(&partial, &tar).unwrap();
    fs::remove_dir_all(&build).unwrap();
    tar
}

/// A fresh copy of the clean root, removed on drop.
struct Root(PathBuf);

impl Root {
    fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = faultbpf_tests::dist::target_dir()
            .join("dist-chroot")
            .join(format!(
                "{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
        let tar = base_tar();
        fs::create_dir_all(&dir).unwrap();
        run(Command::new("tar").arg("-C").arg(&dir).arg("-xf").arg(&tar));
        // Never start a service from a maintainer script in here.
        let policy = dir.join("usr/sbin/policy-rc.d");
        fs::write(&policy, "#!/bin/sh\nexit 101\n").unwrap();
        run(Command::new("chmod").arg("755").arg(&policy));
        Root(dir)
    }

    /// `sh -c script` chrooted, in a private mount namespace with /proc.
    fn sh(&self, script: &str) -> std::process::Output {
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--"])
            .args([
                "sh",
                "-c",
                r#"mount -t proc proc "$1/proc" && mount --rbind /dev "$1/dev" && exec chroot "$1" sh -c "$2""#,
            ])
            .arg("sh")
            .arg(&self.0)
            .arg(script)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", "/root")
            .env("LANG", "C.UTF-8")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .unwrap()
    }

    /// [`Root::sh`], asserting exit 0; returns stdout.
    fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "in the Debian 12 root, `{script}` failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every path in the root except the kernel's, the package managers'
    /// own bookkeeping, which install and purge rightly change, and /run
    /// (a tmpfs on a booted system; `systemd-analyze` leaves a mark there).
    fn files(&self) -> BTreeSet<String> {
        let out = self.ok(
            "find / -xdev \\( -path /proc -o -path /var/lib/dpkg -o -path /var/lib/apt \
             -o -path /var/cache -o -path /var/log -o -path /tmp -o -path /var/lib/systemd \
             -o -path /run \\) -prune -o -print",
        );
        out.lines().map(str::to_owned).collect()
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn deb_installs_into_a_clean_debian_12_root_and_purge_leaves_nothing() {
    faultbpf_tests::require_root();
    let deb = deb();
    let root = Root::new("deb");
    let before = root.files();
    assert!(
        root.sh("getent group faultbpf").status.code() == Some(2),
        "the clean root already has a faultbpf group"
    );
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    fs::copy(&deb, root.0.join("tmp").join(&name)).unwrap();

    root.ok(&format!("apt-get install -y /tmp/{name}"));

    let version = root.ok("faultbpf --version");
    assert!(version.starts_with("faultbpf "), "{version}");
    assert_eq!(
        root.ok("man -w faultbpf").trim(),
        "/usr/share/man/man1/faultbpf.1.gz"
    );
    for page in [
        "faultbpf-blackhole",
        "faultbpf-daemon",
        "faultbpf-scenario-run",
    ] {
        assert_eq!(
            root.ok(&format!("man -w {page}")).trim(),
            format!("/usr/share/man/man1/{page}.1.gz")
        );
    }
    let text = root.ok("MANWIDTH=80 man faultbpf-blackhole 2>/dev/null | head -20");
    assert!(text.contains("--port"), "man faultbpf-blackhole:\n{text}");
    // What a user's first Tab does: bash-completion loads the command's
    // completion on demand from /usr/share/bash-completion/completions.
    let complete = root.ok("bash -ic '. /usr/share/bash-completion/bash_completion; \
         _completion_loader faultbpf; complete -p faultbpf' 2>/dev/null");
    assert!(
        complete.trim().ends_with(" faultbpf") && complete.contains("-F"),
        "complete -p faultbpf: {complete}"
    );
    root.ok("test -s /usr/share/zsh/vendor-completions/_faultbpf");
    root.ok("test -s /usr/share/fish/vendor_completions.d/faultbpf.fish");
    let unit = root.ok("dpkg -L faultbpf | grep '/systemd/system/faultbpf.service$'");
    root.ok(&format!("systemd-analyze verify {}", unit.trim()));
    root.ok("systemctl is-enabled faultbpf.service; test \"$(systemctl is-enabled faultbpf.service)\" = disabled");
    let check = root.ok("faultbpf check /etc/faultbpf/faultbpf.toml");
    assert!(check.contains("OK"), "{check}");
    root.ok("getent group faultbpf");
    root.ok(
        "test -s /usr/share/doc/faultbpf/copyright && test -s /usr/share/doc/faultbpf/README.md",
    );
    // The binary is static: no shared library, so no libc dependency.
    let deps = root.ok("dpkg-query -W -f '${Depends}' faultbpf");
    assert!(!deps.contains("libc6"), "Depends: {deps}");

    root.ok("apt-get purge -y faultbpf");
    fs::remove_file(root.0.join("tmp").join(&name)).unwrap();
    let after = root.files();
    let added: Vec<_> = after.difference(&before).collect();
    let removed: Vec<_> = before.difference(&after).collect();
    assert!(
        added.is_empty() && removed.is_empty(),
        "purge left the root changed: added {added:?}, removed {removed:?}"
    );
    assert_eq!(
        root.sh("getent group faultbpf").status.code(),
        Some(2),
        "purge left the faultbpf group"
    );
    let left = root.ok("dpkg-query -W -f '${Status}' faultbpf 2>/dev/null || true");
    assert!(left.is_empty() || left.contains("not-installed"), "{left}");
}
