//! schemathesis (PyPI) fuzzes the daemon's TCP API from `docs/openapi.yaml`:
//! generated bodies, paths and headers, the documented examples, and
//! stateful sequences (add, get, delete). A bounded run must find no 5xx
//! and no answer that breaks the document (status, content type, schema).
//!
//! The daemon attaches to a veth of its own namespace, not to `lo` where
//! its API listens, so a generated rule (it may cut any port with `force`)
//! cannot cut the fuzzer off.
//!
//! Not run: schemathesis's `positive_data_acceptance`, which expects every
//! schema-valid body to be accepted; the daemon refuses what a schema
//! cannot say (a range `9-1`, guard rails, overlapping rules), each with a
//! 4xx naming the value, which that check reads as a failure.

use std::{path::PathBuf, process::Command, time::Duration};

use faultbpf_tests::{Netns, daemon::Daemon, run_bounded, temp::TempFile};

const API: &str = "127.0.0.1:7070";
const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// `st`, from `cargo xtask test` (FAULTBPF_SCHEMATHESIS); missing is a
/// failure, never a skip.
fn schemathesis() -> PathBuf {
    let st = std::env::var_os("FAULTBPF_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/tools/schemathesis/bin/st")
        });
    assert!(
        st.exists(),
        "schemathesis is not installed at {} (cargo xtask test installs it)",
        st.display()
    );
    st
}

#[test]
fn fuzzed_api_answers_no_5xx_and_only_what_the_document_says() {
    let st = schemathesis();
    let ns = Netns::new("st-api");
    ns.ip(&["link", "set", "lo", "up"]);
    ns.ip(&["link", "add", "st0", "type", "veth", "peer", "name", "st1"]);
    ns.ip(&["link", "set", "st0", "up"]);
    ns.ip(&["link", "set", "st1", "up"]);
    let token = TempFile::new("st", ".token", TOKEN);
    // A generated `container` is asked of engines that cannot answer
    // (422), never of the host's own docker or podman.
    let d = Daemon::start_env(
        &ns,
        "st",
        &[
            "--iface",
            "st0",
            "--listen",
            API,
            "--token-file",
            token.as_str(),
        ],
        &[
            ("DOCKER_HOST", "unix:///nonexistent/fbt-docker.sock"),
            ("CONTAINER_HOST", "unix:///nonexistent/fbt-podman.sock"),
        ],
    );
    let doc = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.yaml");
    let mut cmd: Command = ns.command(&st);
    cmd.arg("run")
        .arg(&doc)
        .args(["--url", &format!("http://{API}")])
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args([
            "--max-examples",
            "50",
            "--request-timeout",
            "5",
            "--workers",
            "1",
        ])
        .env("NO_COLOR", "1")
        // Its example database (.hypothesis/) goes there, not in the tree.
        .current_dir(std::env::temp_dir());
    let out = run_bounded(&mut cmd, Duration::from_secs(300));
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(out.stdout.contains("passed"), "{}", out.stdout);
    d.assert_healthy("the schemathesis run");
}
