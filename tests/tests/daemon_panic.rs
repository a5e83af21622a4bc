//! Issue 11 item 4: any panic in a handler is a bug, but if one happens it
//! must leave no rule in the kernel that the API cannot see. Debug builds of
//! the daemon panic right after the kernel write when
//! `FAULTBPF_TEST_PANIC_AFTER_KERNEL_WRITE` is set (daemon/state.rs); this
//! binary holds this one test so that no other daemon inherits it.

mod daemon_kit;

use daemon_kit::assert_kernel_matches_api;
use faultbpf_tests::{SERVER_IF, Topology, daemon::Daemon, probe::UdpPath};
use serde_json::json;

const PANIC_AFTER_WRITE: &str = "FAULTBPF_TEST_PANIC_AFTER_KERNEL_WRITE";

#[test]
fn a_handler_that_panics_after_its_kernel_write_leaves_nothing_behind() {
    let topo = Topology::new("dpn-panic");
    let to_p = UdpPath::new(&topo, 5003);
    // SAFETY: the only test of this binary, and no other thread of it reads
    // or writes the environment while the daemon is spawned.
    unsafe { std::env::set_var(PANIC_AFTER_WRITE, "1") };
    let mut d = Daemon::spawn(&topo.server, "panic", &["--iface", SERVER_IF]);
    // SAFETY: as above.
    unsafe { std::env::remove_var(PANIC_AFTER_WRITE) };
    d.wait_ready();

    let r = d.post(
        "/v1/rules",
        json!({ "fault": "blackhole", "port": [5003], "proto": "udp" })
            .to_string()
            .as_bytes(),
    );
    let detail = r.expect_problem(500);
    assert!(detail.contains("internal error"), "{detail}");
    assert!(d.rules().is_empty(), "{:?}", d.rules());
    assert_kernel_matches_api(&d, "a panicking handler");
    assert_eq!(to_p.probe(5), 5, "nothing the API cannot see may act");
    // And the daemon keeps serving.
    assert_eq!(d.get("/healthz").expect(200)["rules"], 0);
    d.assert_healthy("a panicking handler");
}
