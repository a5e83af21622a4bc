//! Issue 2, test 4: a flood of raw 60-byte UDP frames from trafgen
//! (netsniff-ng), which bypasses the client's socket layer entirely, is
//! dropped at the server and counted frame for frame.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr},
    os::fd::AsFd,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant},
};

use faultbpf_tests::{
    CLIENT_IF, Launch, Netns, SERVER_IF, SERVER_V4, Topology, count_datagrams, force_rcvbuf,
    frames, udp_bind,
};

const P: u16 = 5000;
const N: usize = 1000;

/// Removes the trafgen config file even if the test panics.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// The trafgen config for one fixed frame: `{ 0x.., 0x.., .. }`.
fn trafgen_config(frame: &[u8]) -> String {
    let bytes: Vec<String> = frame.iter().map(|b| format!("0x{b:02x}")).collect();
    format!("{{ {} }}\n", bytes.join(", "))
}

/// Sends `count` copies of the configured frame on the client's veth,
/// paced (`--gap`) so the receiver never overflows; bounded to 60 s.
fn trafgen(ns: &Netns, config: &Path, count: usize) {
    let mut child: Child = ns
        .command("trafgen")
        .args(["--dev", CLIENT_IF, "--conf"])
        .arg(config)
        .args(["--num", &count.to_string(), "--cpus", "1", "--gap", "100us"])
        // Leave global sysctls and IRQ affinities alone; go through the qdisc layer.
        .args([
            "--no-sock-mem",
            "--notouch-irq",
            "--qdisc-path",
            "--no-cpu-stats",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run trafgen (install netsniff-ng): {e}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            assert!(status.success(), "trafgen failed ({status}): {stderr}");
            return;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("trafgen still running after 60 s; killed it");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn trafgen_udp_flood_is_dropped_and_counted() {
    let topo = Topology::new("trafgen");
    let payload = *b"faultbpf-trafgen!!"; // 14 + 20 + 8 + 18 = 60 bytes
    let frame = frames::ethernet(
        topo.server.mac(SERVER_IF),
        topo.client.mac(CLIENT_IF),
        frames::ETH_P_IP,
        &frames::ipv4(
            Ipv4Addr::new(10, 200, 0, 1),
            Ipv4Addr::new(10, 200, 0, 2),
            frames::IPPROTO_UDP,
            &[],
            0,
            &frames::udp4(40000, P, &payload),
        ),
    );
    assert_eq!(frame.len(), 60);
    let config = TempFile(
        std::env::temp_dir().join(format!("faultbpf-tests-{}-trafgen.cfg", std::process::id())),
    );
    fs::write(&config.0, trafgen_config(&frame)).unwrap();

    let rx = udp_bind(&topo.server, SocketAddr::new(SERVER_V4, P));
    force_rcvbuf(rx.as_fd(), 16 << 20);

    // Control: the frames are valid, every one reaches the socket.
    trafgen(&topo.client, &config.0, N);
    let got = count_datagrams(&rx, N + 1, Duration::from_secs(1));
    assert_eq!(got.len(), N, "without faultbpf every frame must arrive");
    assert!(got.iter().all(|d| d[..] == payload[..]));

    let mut fb = Launch::new(&topo.server, ["blackhole"])
        .args(["--port", &P.to_string(), "--iface", SERVER_IF, "--json"])
        .standalone()
        .start();
    trafgen(&topo.client, &config.0, N);
    let got = count_datagrams(&rx, N + 1, Duration::from_secs(1));
    let exit = fb.stop(libc::SIGTERM);
    exit.assert_success();
    assert_eq!(got.len(), 0, "under the blackhole no frame may arrive");
    let rule = exit.rule(0);
    assert_eq!(rule.matched_packets, N as u64, "{rule:?}");
    assert_eq!(rule.acted_packets, N as u64, "{rule:?}");
    assert_eq!(rule.acted_bytes, (N * frame.len()) as u64, "{rule:?}");
}
