//! The test harness's own promises, checked like faultbpf's: what it does
//! to the host is undone or never happens, and a leak fails the test that
//! made it instead of being a warning nobody reads.
//! - [`TestUser`] adds no account: the host's /etc/passwd and /etc/group
//!   are the same before, during and after, and a child still runs with
//!   its uid and gid.
//! - A process left in a [`Netns`] when it drops fails the test (and is
//!   killed), as does a namespace that cannot be deleted.
//! - Every faultbpf the harness starts names where its rules go.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    process::Command,
    time::Duration,
};

use faultbpf_tests::{Launch, NO_DAEMON, Netns, pids_in, run_bounded, user::TestUser, wait_within};

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn test_user_leaves_the_hosts_account_files_alone() {
    let read = |f: &str| std::fs::read_to_string(f).unwrap();
    let (passwd, group) = (read("/etc/passwd"), read("/etc/group"));
    let ns = Netns::new("user");
    let user = TestUser::create();
    assert_eq!(read("/etc/passwd"), passwd, "TestUser wrote /etc/passwd");
    assert_eq!(read("/etc/group"), group, "TestUser wrote /etc/group");
    let out = run_bounded(
        user.command(&ns, "sh").args(["-c", "id -u; id -g; id -G"]),
        Duration::from_secs(10),
    );
    out.assert_success();
    let want = format!("{}\n{}\n{}\n", user.uid, user.gid, user.gid);
    assert_eq!(out.stdout, want, "{out:?}");
    assert_eq!(read("/etc/passwd"), passwd);
    assert_eq!(read("/etc/group"), group);
}

#[test]
fn a_process_left_in_a_namespace_fails_the_test_and_is_killed() {
    let ns = Netns::new("leak");
    let mut orphan = ns.command("sleep").arg("60").spawn().expect("start sleep");
    let pid = orphan.id();
    // `ip netns exec` enters the namespace after spawn returns: drop only
    // once the sleep is in it, or there is nothing to find yet.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !pids_in(ns.name()).unwrap().contains(&(pid as i32)) {
        assert!(
            std::time::Instant::now() < deadline,
            "sleep (pid {pid}) never entered {}",
            ns.name()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let caught = catch_unwind(AssertUnwindSafe(|| drop(ns)));
    let text = panic_text(caught.expect_err("a leaked process must fail the test"));
    assert!(
        text.contains("processes left")
            && text.contains(&pid.to_string())
            && text.contains("sleep"),
        "the failure must name the process: {text}"
    );
    assert!(
        wait_within(&mut orphan, Duration::from_secs(5)).is_some(),
        "the leaked sleep (pid {pid}) must have been killed"
    );
}

#[test]
fn a_namespace_that_cannot_be_deleted_fails_the_test() {
    let ns = Netns::new("gone");
    // Someone else removes it first: `ip netns del` then fails.
    faultbpf_tests::run_checked(Command::new("ip").args(["netns", "del", ns.name()]));
    let caught = catch_unwind(AssertUnwindSafe(|| drop(ns)));
    let text = panic_text(caught.expect_err("a failed clean-up must fail the test"));
    assert!(text.contains("leak"), "{text}");
}

#[test]
fn every_faultbpf_says_where_its_rules_go() {
    let ns = Netns::new("place");
    let caught = catch_unwind(AssertUnwindSafe(|| {
        Launch::new(&ns, ["blackhole", "--port", "5000"]).run()
    }));
    let text = panic_text(caught.expect_err("a launch without a placement must not run"));
    assert!(text.contains("--standalone"), "{text}");
    // And the children never see the host's daemon socket.
    let out = run_bounded(
        ns.command("sh").args(["-c", "echo $FAULTBPF_SOCKET"]),
        Duration::from_secs(10),
    );
    assert_eq!(out.stdout.trim(), NO_DAEMON);
}
