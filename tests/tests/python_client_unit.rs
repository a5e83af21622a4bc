//! The Python client's own unit tests (clients/python/tests/test_client.py)
//! as part of `cargo xtask test`, so they run in CI: they talk to a fake
//! daemon on a real Unix socket, and one of them needs root to show what
//! an unprivileged caller sees when the socket refuses them (issue 13:
//! "add yourself to group faultbpf" instead of a bare `Permission denied`).

use std::{path::PathBuf, process::Command};

use faultbpf_tests::deps::PYTHON;

#[test]
fn python_client_unit_tests_pass_including_the_refused_socket_message() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clients/python");
    let out = Command::new(PYTHON)
        .args(["-B", "-m", "unittest", "-v", "tests.test_client"])
        .current_dir(&dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python3 -m unittest tests.test_client failed:\n{stderr}"
    );
    assert!(
        stderr.lines().any(|l| {
            l.starts_with("test_a_socket_that_refuses_the_user_says_which_group_to_join ")
                && l.ends_with(" ... ok")
        }),
        "the refused-socket test did not run and pass:\n{stderr}"
    );
}
