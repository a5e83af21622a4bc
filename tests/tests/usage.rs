//! Issue 2, test 7: bad input is refused with exit code 2 and a message that
//! repeats the bad value, before anything is attached. Run inside a
//! namespace (needed for `--iface`, and so nothing can touch the root one).

use std::time::Duration;

use faultbpf_tests::{Launch, Netns, assert_nothing_attached};

/// (arguments, text stderr must contain)
const CASES: &[(&[&str], &str)] = &[
    (&["--port", "0"], "0"),
    (&["--port", "70000"], "70000"),
    (&["--port", "5000", "--pct", "101"], "101"),
    (&["--port", "5000", "--pct", "abc"], "abc"),
    (&["--port", "5000", "--iface", "nosuchif0"], "nosuchif0"),
    (&["--port", "5000", "--for", "5parsecs"], "5parsecs"),
    (&["--port", "5000", "--proto", "icmp"], "icmp"),
];

#[test]
fn bad_input_exits_2_naming_the_value() {
    let ns = Netns::new("usage");
    let mut failures = Vec::new();
    for (args, needle) in CASES {
        let exit = Launch::new(&ns, ["blackhole"])
            .args(*args)
            .standalone()
            .run_within(Duration::from_secs(20));
        let code = exit.status.code();
        let stderr = &exit.stderr;
        if code != Some(2) {
            failures.push(format!(
                "{args:?}: exit {:?}, want 2; stderr: {stderr}",
                exit.status
            ));
        }
        if !stderr.contains(needle) {
            failures.push(format!(
                "{args:?}: stderr does not name {needle:?}: {stderr}"
            ));
        }
        // "0" alone is in many messages; the port case must also say which flag.
        if *needle == "0" && !stderr.to_lowercase().contains("port") {
            failures.push(format!(
                "{args:?}: stderr does not mention the port: {stderr}"
            ));
        }
        if stderr.contains(faultbpf_tests::ACTIVE_PREFIX) {
            failures.push(format!("{args:?}: became active despite bad input"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_nothing_attached(&ns, &["lo"]);
}
