//! Issue 13: the portable tarball `cargo xtask dist` made holds a static
//! binary (no loader, no shared library: it runs on any x86_64 Linux with
//! BPF and BTF), its man pages and completions, and that very binary puts
//! a blackhole in force between two namespaces and lifts it on SIGTERM.

use std::{
    fs,
    io::{BufRead as _, BufReader, ErrorKind},
    net::SocketAddr,
    path::PathBuf,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use faultbpf_tests::{SERVER_V4, Topology, tcp_connect, tcp_listen, wait_within};

/// The blackholed port, and one that must keep answering.
const P: u16 = 5810;
const Q: u16 = 5811;

/// Unpacks `target/dist/faultbpf-*-x86_64-linux-musl.tar.gz` into a fresh
/// directory and returns (that directory, the top-level folder inside).
fn unpack() -> (PathBuf, PathBuf) {
    let tarball = faultbpf_tests::dist::artifact("faultbpf-", "-x86_64-linux-musl.tar.gz");
    let dir = std::env::temp_dir().join(format!("faultbpf-tarball-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let out = Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .arg("-xzf")
        .arg(&tarball)
        .output()
        .unwrap();
    assert!(out.status.success(), "untar: {out:?}");
    let top: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(top.len(), 1, "the tarball must hold one folder: {top:?}");
    (dir, top[0].clone())
}

#[test]
fn tarball_binary_is_static_and_blackholes_a_port_between_namespaces() {
    faultbpf_tests::require_root();
    let (dir, top) = unpack();
    let bin = top.join("bin/faultbpf");
    for file in [
        "share/man/man1/faultbpf.1.gz",
        "share/man/man1/faultbpf-blackhole.1.gz",
        "share/bash-completion/completions/faultbpf",
        "share/zsh/site-functions/_faultbpf",
        "share/fish/vendor_completions.d/faultbpf.fish",
        "lib/systemd/system/faultbpf.service",
        "etc/faultbpf/faultbpf.toml",
        "README.md",
        "LICENSE",
    ] {
        assert!(top.join(file).is_file(), "the tarball has no {file}");
    }
    // glibc's ldd on a static binary: "not a dynamic executable", exit 1.
    let ldd = Command::new("ldd").arg(&bin).output().unwrap();
    let said = String::from_utf8_lossy(&ldd.stdout) + String::from_utf8_lossy(&ldd.stderr);
    assert!(
        said.contains("not a dynamic executable") || said.contains("statically linked"),
        "{} is not static: ldd says {said}",
        bin.display()
    );

    let topo = Topology::new("dist-tar");
    let _p = tcp_listen(&topo.server, SocketAddr::new(SERVER_V4, P));
    let _q = tcp_listen(&topo.server, SocketAddr::new(SERVER_V4, Q));
    let addr = |port| SocketAddr::new(SERVER_V4, port);
    // The control: the same connect works before the fault.
    tcp_connect(&topo.client, addr(P), Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("before the fault, connect to port {P}: {e}"));

    let mut fb = topo
        .server
        .command(&bin)
        .args(["blackhole", "--port", &P.to_string(), "--for", "60s"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = fb.stderr.take().unwrap();
    let reader = thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with("faultbpf: active") => break,
            Ok(_) => {}
            Err(_) => {
                let _ = fb.kill();
                let _ = fb.wait();
                panic!(
                    "the tarball's faultbpf never became active:\n{}",
                    reader.join().unwrap()
                );
            }
        }
    }

    let err = tcp_connect(&topo.client, addr(P), Duration::from_millis(1500))
        .expect_err("connect to the blackholed port must not complete");
    assert_eq!(err.kind(), ErrorKind::TimedOut, "port {P}: {err}");
    tcp_connect(&topo.client, addr(Q), Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("port {Q} must still answer: {e}"));

    // SAFETY: kill(2) on the pid of the child this test spawned and has not reaped.
    unsafe { libc::kill(fb.id() as libc::pid_t, libc::SIGTERM) };
    let status = wait_within(&mut fb, Duration::from_secs(15)).unwrap_or_else(|| {
        let _ = fb.kill();
        let _ = fb.wait();
        panic!("the tarball's faultbpf did not exit within 15 s of SIGTERM")
    });
    let log = reader.join().unwrap();
    assert!(status.success(), "faultbpf exited {status}:\n{log}");
    tcp_connect(&topo.client, addr(P), Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("after SIGTERM, port {P} must answer again: {e}\n{log}"));
    fs::remove_dir_all(&dir).unwrap();
}
