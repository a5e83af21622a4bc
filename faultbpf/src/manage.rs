//! The daemon's rules from the command line: `faultbpf rules`, `rm` and
//! `stats`, through the typed client; `--json` prints the API's own types.

use std::{io::Write, time::Duration};

use faultbpf::api::{Client, ClientError, RuleInfo, RuleList};
use serde::Serialize;

use crate::fault::Failure;

/// `faultbpf rules`.
pub fn rules(client: &Client, json: bool) -> Result<(), Failure> {
    let rules = client.list()?;
    if json {
        println!("{}", serde_json::to_string(&RuleList { rules })?);
        return Ok(());
    }
    if rules.is_empty() {
        println!("no rules");
        return Ok(());
    }
    println!(
        "{:>5}  {:<16}  {:>7}  {:<6}  RULE",
        "ID", "NAME", "EXPIRES", "ORIGIN"
    );
    for r in rules {
        let expires = r
            .expires_in_seconds
            .map(|s| format!("{}s", s.round()))
            .unwrap_or_else(|| "never".into());
        let origin = serde_json::to_value(r.origin)?;
        println!(
            "{:>5}  {:<16}  {expires:>7}  {:<6}  {}",
            r.id,
            r.name.unwrap_or_default(),
            origin.as_str().unwrap_or_default(),
            r.description
        );
        // A container rule: where it acts, or why it waits.
        if let Some(t) = r.target {
            println!("{:>44}in {t}", "");
        }
    }
    Ok(())
}

/// One id `rm` could not remove, and why.
#[derive(Serialize)]
struct RmFailure {
    id: u32,
    error: String,
}

/// `rm --json`.
#[derive(Serialize)]
struct RmReport {
    removed: Vec<RuleInfo>,
    failed: Vec<RmFailure>,
}

/// `faultbpf rm`: removes every id it can, reports each, and fails (exit
/// 1) if any could not be removed.
pub fn rm(client: &Client, ids: &[u32], all: bool, json: bool) -> Result<(), Failure> {
    if all {
        let n = client.remove_all()?;
        if json {
            println!("{}", serde_json::to_string(&n)?);
        } else {
            println!("removed {} rule(s)", n.removed);
        }
        return Ok(());
    }
    let mut report = RmReport {
        removed: Vec::new(),
        failed: Vec::new(),
    };
    for &id in ids {
        match client.remove(id) {
            Ok(r) => {
                if !json {
                    println!("removed rule {}: {}", r.id, r.description);
                }
                report.removed.push(r);
            }
            // The daemon itself is unreachable: no point trying the rest.
            Err(e @ ClientError::Io { .. }) => return Err(e.into()),
            Err(e) => {
                if !json {
                    eprintln!("faultbpf: rule {id} not removed: {e}");
                }
                report.failed.push(RmFailure {
                    id,
                    error: e.to_string(),
                });
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string(&report)?);
    }
    match report.failed.len() {
        0 => Ok(()),
        n => Err(Failure::Runtime(anyhow::anyhow!(
            "{n} of {} rule(s) could not be removed",
            ids.len()
        ))),
    }
}

/// `faultbpf stats`.
pub fn stats(client: &Client, watch: bool, json: bool) -> Result<(), Failure> {
    loop {
        let rules = client.stats()?;
        if json {
            println!("{}", serde_json::to_string(&RuleList { rules })?);
        } else {
            if watch {
                print!("\x1b[H\x1b[2J");
            }
            println!(
                "{:>5}  {:<16}  {:>12}  {:>12}  {:>14}  RULE",
                "ID", "NAME", "MATCHED", "ACTED", "ACTED BYTES"
            );
            for s in rules {
                println!(
                    "{:>5}  {:<16}  {:>12}  {:>12}  {:>14}  {}",
                    s.id,
                    s.name.unwrap_or_default(),
                    s.matched_packets,
                    s.acted_packets,
                    s.acted_bytes,
                    s.description
                );
            }
        }
        if !watch {
            return Ok(());
        }
        let _ = std::io::stdout().flush();
        std::thread::sleep(Duration::from_secs(1));
    }
}
