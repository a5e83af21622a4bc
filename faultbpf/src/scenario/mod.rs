//! Game-day scenario files: a timeline of faults (each step a rule with
//! `at` and `for`) and an optional random pool (Chaos Monkey style: every
//! N seconds one fault drawn from the pool with a seed, so a run can be
//! replayed), run against the daemon or in-process, ending with a report
//! of what was active when and the counters each step collected.
//!
//! - `file.rs`: the TOML format (documented there) and its checks, with
//!   `FILE:LINE:COLUMN` errors;
//! - `random.rs`: the seeded generator;
//! - `plan.rs`: the timeline, random picks included, computed up front;
//! - `run.rs`: applying it, the live timeline, Ctrl-C;
//! - `report.rs`: the final text table and its JSON twin.
//!
//! `faultbpf scenario run` exits 0 when the timeline ran to its end, 1 when
//! a step could not be applied or the run had to stop (the report is
//! printed first), and 130 after Ctrl-C (143 after SIGTERM), once every
//! fault is lifted and the partial report printed: a cut-short game day is
//! not a successful one, and a script must be able to tell.

pub mod file;
pub mod plan;
pub mod random;
pub mod report;
pub mod run;

use std::path::Path;

pub use file::{Scenario, ScenarioError, load, parse};
pub use plan::Plan;

use crate::client::Client;

/// `faultbpf scenario run FILE [--json]`; returns the exit code.
pub fn run(file: &Path, json: bool, client: &Client) -> anyhow::Result<u8> {
    run::run(file, json, client)
}

/// `faultbpf scenario check FILE`: says what is wrong with line and
/// column, or prints the timeline the file describes.
pub fn check(file: &Path) -> anyhow::Result<()> {
    let s = load(file)?;
    print!("{}", check_text(&file.display().to_string(), &s));
    Ok(())
}

/// What `check` prints for a valid scenario: a summary line, then one
/// line per step and, when the file has a seed, per random pick.
pub fn check_text(file: &str, s: &Scenario) -> String {
    let mut plan = plan::build(s, 0);
    let length = plan.length;
    let mut out = format!(
        "{file}: OK: scenario `{}`: {} step(s)",
        s.name,
        s.steps.len()
    );
    if let Some(r) = &s.random {
        out += &format!(
            ", a random pool of {} every {} from {} until {}",
            r.pool.len(),
            file::secs(r.every),
            file::secs(r.from),
            file::secs(r.until)
        );
        match r.seed {
            Some(seed) => out += &format!(" (seed {seed}: {} pick(s))", plan.picks()),
            None => {
                out += " (no seed: each run draws one and prints it)";
                plan.activities
                    .retain(|a| matches!(a.origin, plan::Origin::Step { .. }));
            }
        }
    }
    out += &format!(", {} in all\n", file::secs(length));
    if let Some(t) = &s.target {
        out += "  target:";
        if let Some(n) = &t.netns {
            out += &format!(" netns {n}");
        }
        if !t.interfaces.is_empty() {
            out += &format!(" interfaces {}", t.interfaces.join(", "));
        }
        out.push('\n');
    }
    for line in plan::lines(&plan) {
        out += &format!("  {line}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GAMEDAY: &str = include_str!("../../../examples/gameday.toml");

    #[test]
    fn the_example_game_day_checks() {
        let s = parse("examples/gameday.toml", GAMEDAY).unwrap_or_else(|e| panic!("{e}"));
        // What the example promises in its comments.
        let rabbit = &s.steps[0];
        assert_eq!(rabbit.rule.ports_text(), ["port 5672"]);
        assert_eq!((rabbit.at.as_secs(), rabbit.lasts.as_secs()), (5, 10));
        let pg = &s.steps[1];
        assert_eq!(pg.rule.fault, crate::Fault::Hang);
        assert_eq!(pg.at.as_secs(), 20);
        let r = s.random.as_ref().unwrap();
        assert!(r.pool.len() >= 2 && r.seed.is_some());
        let text = check_text("examples/gameday.toml", &s);
        assert!(text.starts_with("examples/gameday.toml: OK:"), "{text}");
        assert!(text.contains("rabbitmq-outage"), "{text}");
        assert!(text.contains("random #1"), "{text}");
    }

    #[test]
    fn check_without_a_seed_lists_the_steps_only() {
        let s = parse(
            "f.toml",
            "[[step]]\nname = \"a\"\nat = \"0s\"\nfor = \"1s\"\nfault = \"hang\"\nport = [1]\n\
             [random]\nevery = \"5s\"\nfor = \"1s\"\nuntil = \"20s\"\n\
             [[random.pool]]\nfault = \"reset\"\nport = [2]\n",
        )
        .unwrap();
        let text = check_text("f.toml", &s);
        assert!(text.contains("no seed"), "{text}");
        assert_eq!(text.lines().count(), 2, "{text}");
    }
}
