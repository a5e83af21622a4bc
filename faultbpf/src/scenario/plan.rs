//! A scenario made into its timeline: every step, and every random pick
//! drawn from the seed, each with its start and end. The plan is computed
//! in full before anything is applied, so `scenario check` can show the
//! same picks a run with that seed will make, and a replay with the same
//! seed makes them again.
//!
//! Picks: the pool is active from `from` to `until`; a pick starts at
//! `from`, `from + every`, ... (each before `until`) and lasts its `for`,
//! cut at `until`. Each period takes exactly one draw from the generator.
//! A pool entry whose ports a step holds during that period is not
//! eligible (one port takes one rule at a time): the draw picks among the
//! eligible entries, and when none is, the pick is skipped and says why.

use std::{collections::HashSet, time::Duration};

use faultbpf_common::RuleKey;

use super::{
    file::{Scenario, key_set, key_text, secs, shared_key},
    random::{SplitMix64, scale},
};
use crate::{rules::Rule, spec::RuleSpec};

/// Where an activity comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `[[step]]` number `index` (0-based, file order).
    Step { index: usize },
    /// Random pick number `pick` (0-based) of pool entry `entry` (0-based).
    Random { pick: usize, entry: usize },
}

/// One fault of the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    /// The step's name, or `random #N` (1-based), with the pool entry's
    /// name if it has one.
    pub label: String,
    pub origin: Origin,
    /// From the start of the run.
    pub start: Duration,
    pub end: Duration,
    pub spec: RuleSpec,
    /// Checked, with counter slot 0.
    pub rule: Rule,
    /// A random pick that is not applied, and why.
    pub skipped: Option<String>,
}

impl Activity {
    /// Whether it is an `http` step (a responder; `rule` only stands in).
    pub fn is_http(&self) -> bool {
        self.spec.fault == crate::http::rule::FAULT
    }

    /// The fault's wire name.
    pub fn fault(&self) -> &'static str {
        if self.is_http() {
            crate::http::rule::FAULT
        } else {
            self.rule.fault.name()
        }
    }

    /// One line for humans: "blackhole tcp port 5672 (100%)", "http 503 on
    /// port 8080 (100 % of requests)".
    pub fn describe(&self) -> String {
        match self.spec.http_rule(&crate::spec::Policy::default()) {
            Ok(h) if self.is_http() => h.options.describe(),
            _ => self.rule.describe(),
        }
    }

    /// What its acted count counts: "dropped", "faulted (requests)".
    pub fn verb(&self) -> &'static str {
        if self.is_http() {
            "faulted requests"
        } else {
            self.rule.fault.verb()
        }
    }
}

/// The whole timeline, sorted by start (then file order).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub activities: Vec<Activity>,
    /// The seed the picks were drawn with (`None`: no random pool).
    pub seed: Option<u64>,
    /// When the last activity ends.
    pub length: Duration,
}

impl Plan {
    pub fn steps(&self) -> usize {
        self.activities
            .iter()
            .filter(|a| matches!(a.origin, Origin::Step { .. }))
            .count()
    }

    pub fn picks(&self) -> usize {
        self.activities.len() - self.steps()
    }
}

/// The timeline of `s`; `seed` is used when the file gives none.
pub fn build(s: &Scenario, seed: u64) -> Plan {
    let mut activities: Vec<Activity> = s
        .steps
        .iter()
        .enumerate()
        .map(|(index, st)| Activity {
            label: st.name.clone(),
            origin: Origin::Step { index },
            start: st.at,
            end: st.end(),
            spec: st.spec.clone(),
            rule: st.rule.clone(),
            skipped: None,
        })
        .collect();
    let mut used_seed = None;
    if let Some(r) = &s.random {
        let seed = r.seed.unwrap_or(seed);
        used_seed = Some(seed);
        let mut rng = SplitMix64::new(seed);
        let step_keys: Vec<HashSet<RuleKey>> = s.steps.iter().map(|st| key_set(&st.rule)).collect();
        let entry_keys: Vec<HashSet<RuleKey>> = r.pool.iter().map(|e| key_set(&e.rule)).collect();
        let mut pick = 0;
        let mut t = r.from;
        while t < r.until {
            // Why each entry cannot go now, if it cannot.
            let blocked: Vec<Option<String>> = r
                .pool
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let end = (t + e.lasts).min(r.until);
                    s.steps.iter().zip(&step_keys).find_map(|(st, keys)| {
                        let shared = shared_key(keys, &entry_keys[i])?;
                        (st.at < end && t < st.end())
                            .then(|| format!("step `{}` holds {} then", st.name, key_text(&shared)))
                    })
                })
                .collect();
            let eligible: Vec<usize> = (0..r.pool.len())
                .filter(|&i| blocked[i].is_none())
                .collect();
            let draw = rng.next_u64();
            let below = |n: usize| scale(draw, n);
            let (entry, skipped) = if eligible.is_empty() {
                let i = below(r.pool.len());
                (
                    i,
                    Some(format!(
                        "skipped: no pool entry can go ({})",
                        blocked[i].clone().unwrap_or_default()
                    )),
                )
            } else {
                (eligible[below(eligible.len())], None)
            };
            let e = &r.pool[entry];
            let end = (t + e.lasts).min(r.until);
            let mut label = format!("random #{}", pick + 1);
            if let Some(n) = &e.name {
                label += &format!(" {n}");
            }
            let mut spec = e.spec.clone();
            spec.lasts = Some(humantime::format_duration(end - t).to_string());
            let mut rule = e.rule.clone();
            rule.lasts = Some(end - t);
            activities.push(Activity {
                label,
                origin: Origin::Random { pick, entry },
                start: t,
                end,
                spec,
                rule,
                skipped,
            });
            pick += 1;
            t += r.every;
        }
    }
    // Stable: steps before picks at the same start, each in its order.
    activities.sort_by_key(|a| a.start);
    let length = activities.iter().map(|a| a.end).max().unwrap_or_default();
    Plan {
        activities,
        seed: used_seed,
        length,
    }
}

/// One line per activity, for `scenario check` and the start of a run:
/// "   5s-15s    rabbitmq-outage      blackhole tcp+udp port 5672 (100%)".
pub fn lines(plan: &Plan) -> Vec<String> {
    let width = plan
        .activities
        .iter()
        .map(|a| a.label.chars().count())
        .max()
        .unwrap_or(0);
    plan.activities
        .iter()
        .map(|a| {
            let what = match &a.skipped {
                Some(why) => why.clone(),
                None => a.describe(),
            };
            format!(
                "{:>8}-{:<8} {:<width$}  {what}",
                secs(a.start),
                secs(a.end),
                a.label
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::file::parse;

    const POOL: &str = r#"
[[step]]
name = "pg"
at = "10s"
for = "10s"
fault = "hang"
port = [5432]

[random]
every = "5s"
for = "3s"
until = "40s"
seed = 42
[[random.pool]]
name = "pg-reset"
fault = "reset"
port = [5432]
[[random.pool]]
fault = "blackhole"
port = [6379]
[[random.pool]]
fault = "reset"
port = [8080]
"#;

    fn picks(p: &Plan) -> Vec<(u64, Option<usize>)> {
        p.activities
            .iter()
            .filter_map(|a| match a.origin {
                Origin::Random { entry, .. } => {
                    Some((a.start.as_secs(), a.skipped.is_none().then_some(entry)))
                }
                Origin::Step { .. } => None,
            })
            .collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_plan() {
        let s = parse("f.toml", POOL).unwrap();
        let a = build(&s, 1);
        let b = build(&s, 2);
        // The file's seed wins over the one offered.
        assert_eq!(a, b);
        assert_eq!(a.seed, Some(42));
        let p = picks(&a);
        assert_eq!(p.len(), 8, "{p:?}");
        assert_eq!(
            p.iter().map(|x| x.0).collect::<Vec<_>>(),
            [0, 5, 10, 15, 20, 25, 30, 35]
        );
        // A different seed gives other picks.
        let other = parse("f.toml", &POOL.replace("seed = 42", "seed = 43")).unwrap();
        assert_ne!(picks(&build(&other, 0)), p);
        // Without a seed in the file, the offered one is used and reported.
        let none = parse("f.toml", &POOL.replace("seed = 42\n", "")).unwrap();
        assert_eq!(build(&none, 42), a);
        assert_eq!(picks(&build(&none, 42)), p);
    }

    #[test]
    fn pinned_picks_of_seed_42() {
        // A replay must make the same picks in any later version.
        let s = parse("f.toml", POOL).unwrap();
        let p = picks(&build(&s, 0));
        // Cross-checked with an independent implementation of SplitMix64
        // and the eligibility rule (entry 0 shares port 5432 with the step
        // at 10s-20s, so the picks at 10s and 15s choose among 1 and 2).
        let expected = vec![
            (0, Some(2)),
            (5, Some(0)),
            (10, Some(1)),
            (15, Some(1)),
            (20, Some(0)),
            (25, Some(2)),
            (30, Some(0)),
            (35, Some(2)),
        ];
        assert_eq!(p, expected);
    }

    #[test]
    fn picks_never_take_a_port_a_step_holds() {
        for seed in 0..200 {
            let text = POOL.replace("seed = 42", &format!("seed = {seed}"));
            let plan = build(&parse("f.toml", &text).unwrap(), 0);
            for a in &plan.activities {
                if let Origin::Random { entry: 0, .. } = a.origin
                    && a.skipped.is_none()
                {
                    // pg-reset (5432) never runs while the pg step (10s-20s) does.
                    assert!(
                        a.end <= Duration::from_secs(10) || a.start >= Duration::from_secs(20),
                        "seed {seed}: {a:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_pick_with_no_eligible_entry_is_skipped() {
        let text = "[[step]]\nname = \"pg\"\nat = \"0s\"\nfor = \"10s\"\nfault = \"hang\"\nport = [5432]\n\
                    [random]\nevery = \"5s\"\nfor = \"5s\"\nuntil = \"15s\"\nseed = 1\n\
                    [[random.pool]]\nfault = \"reset\"\nport = [5432]\n";
        let plan = build(&parse("f.toml", text).unwrap(), 0);
        let picks: Vec<_> = plan
            .activities
            .iter()
            .filter(|a| matches!(a.origin, Origin::Random { .. }))
            .collect();
        assert_eq!(picks.len(), 3);
        assert!(
            picks[0]
                .skipped
                .as_deref()
                .unwrap()
                .contains("step `pg` holds tcp port 5432")
        );
        assert!(picks[1].skipped.is_some());
        assert!(picks[2].skipped.is_none());
        assert_eq!(plan.length, Duration::from_secs(15));
    }

    #[test]
    fn picks_are_cut_at_until_and_sorted() {
        let text = "[[step]]\nat = \"7s\"\nfor = \"1s\"\nfault = \"hang\"\nport = [1]\n\
                    [random]\nevery = \"4s\"\nfor = \"3s\"\nuntil = \"10s\"\n\
                    [[random.pool]]\nfault = \"reset\"\nport = [2]\n";
        let plan = build(&parse("f.toml", text).unwrap(), 9);
        let times: Vec<(u64, u64)> = plan
            .activities
            .iter()
            .map(|a| (a.start.as_secs(), a.end.as_secs()))
            .collect();
        assert_eq!(times, [(0, 3), (4, 7), (7, 8), (8, 10)]);
        assert_eq!(plan.activities[3].rule.lasts, Some(Duration::from_secs(2)));
        assert_eq!(plan.activities[3].spec.lasts.as_deref(), Some("2s"));
        assert_eq!((plan.steps(), plan.picks()), (1, 3));
        assert_eq!(plan.seed, Some(9));
        assert_eq!(lines(&plan).len(), 4);
    }
}
