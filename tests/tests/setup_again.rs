//! Issue 13: `cargo xtask setup` on a machine where it already ran (as
//! `cargo xtask test` did before this test) installs nothing and answers
//! in well under a second, so `demo`, `build` and `test` can always call
//! it first. Runs the xtask binary `cargo xtask` built, for every scope.

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use faultbpf_tests::run_bounded;

/// The seconds in setup's own summary, `setup (Scope): done in 0.13s: ...`.
fn reported_seconds(line: &str) -> f64 {
    line.split("done in ")
        .nth(1)
        .and_then(|rest| rest.split('s').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `done in Ns` in {line:?}"))
}

#[test]
fn setup_where_it_already_ran_installs_nothing_within_a_second() {
    let xtask = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/xtask");
    assert!(
        xtask.is_file(),
        "{} is missing: run through `cargo xtask test`, which builds it",
        xtask.display()
    );
    for scope in [None, Some("--dist"), Some("--test")] {
        let mut cmd = Command::new(&xtask);
        cmd.arg("setup").args(scope);
        let start = Instant::now();
        let exit = run_bounded(&mut cmd, Duration::from_secs(120));
        let took = start.elapsed();
        exit.assert_success();
        let line = exit
            .stderr
            .lines()
            .find(|l| l.starts_with("setup ("))
            .unwrap_or_else(|| panic!("{scope:?}: no summary line: {exit:#?}"))
            .to_string();
        assert!(
            line.contains("already installed") && !line.contains("apt: installed"),
            "{scope:?}: a second setup must install nothing: {line}"
        );
        let reported = reported_seconds(&line);
        assert!(
            reported < 1.0 && took < Duration::from_secs(5),
            "{scope:?}: setup took {reported:.2} s by its own count ({took:?} in all): {line}"
        );
    }
}
