//! The CLI's side of the daemon: add a fault as a daemon rule, list,
//! remove, and show counters.

use std::{
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

use anyhow::Context;
use faultbpf::{Fault, client::Client, report, spec::RuleSpec};
use serde::Deserialize;
use serde_json::Value;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    cli::FaultArgs,
    foreground::{self, Failure},
};

/// The parts of the daemon's rule JSON the CLI shows.
#[derive(Debug, Deserialize)]
struct Info {
    id: u32,
    #[serde(default)]
    name: Option<String>,
    description: String,
    #[serde(default)]
    expires_in_seconds: Option<f64>,
}

/// The parts of a `/v1/stats` entry the CLI shows.
#[derive(Debug, Deserialize)]
struct Stats {
    id: u32,
    #[serde(default)]
    name: Option<String>,
    description: String,
    matched_packets: u64,
    acted_packets: u64,
    acted_bytes: u64,
    matched_bytes: u64,
}

#[derive(Debug, Deserialize)]
struct RuleList<T> {
    rules: Vec<T>,
}

/// Adds the fault as a daemon rule; with `--wait`, stays until a signal or
/// `--for` and removes it.
pub fn add(fault: Fault, args: FaultArgs, client: &Client) -> Result<(), Failure> {
    if !args.ifaces.is_empty() || args.attach != faultbpf::AttachMode::Auto {
        return Err(Failure::Usage(format!(
            "--iface and --attach do not apply: the daemon at {} owns the interfaces; \
             drop them, or add --standalone to run without the daemon",
            client.path().display()
        )));
    }
    let rule = foreground::rule_from(fault, &args);
    let mut spec = RuleSpec::from_rule(&rule, args.name.clone(), args.force);
    if args.wait {
        // A killed `--wait` must not leave its rule behind.
        spec.owner_pid = Some(std::process::id());
    }
    let body = serde_json::to_value(&spec).context("could not encode the rule")?;
    let info: Info = client.call("POST", "/v1/rules", Some(&body))?;
    let expiry = match info.expires_in_seconds {
        Some(s) => format!(
            ", expires in {}",
            humantime::format_duration(Duration::from_secs(s.round() as u64))
        ),
        None => String::new(),
    };
    if !args.wait {
        println!(
            "rule {} added: {}{expiry}; remove it with: faultbpf rm {}",
            info.id, info.description, info.id
        );
        return Ok(());
    }
    eprintln!(
        "faultbpf: active: rule {} {} via the daemon at {}{expiry}; Ctrl-C to heal",
        info.id,
        info.description,
        client.path().display()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    let last = rt.block_on(wait(client, info.id, &rule, args.lasts))?;
    let _ = client.request("DELETE", &format!("/v1/rules/{}", info.id), None);
    let c = faultbpf_common::RuleCounters {
        matched_packets: last.as_ref().map_or(0, |s| s.matched_packets),
        matched_bytes: last.as_ref().map_or(0, |s| s.matched_bytes),
        acted_packets: last.as_ref().map_or(0, |s| s.acted_packets),
        acted_bytes: last.as_ref().map_or(0, |s| s.acted_bytes),
        ..Default::default()
    };
    if args.json {
        let r = report::Report {
            attach: "daemon",
            interfaces: &[],
            rules: vec![report::RuleReport::new(
                &faultbpf::Rule {
                    id: info.id,
                    ..rule.clone()
                },
                &c,
            )],
        };
        println!(
            "{}",
            serde_json::to_string(&r).context("could not encode the report")?
        );
    } else {
        println!(
            "{}",
            report::summary_line(
                &faultbpf::Rule {
                    id: info.id,
                    ..rule
                },
                &c
            )
        );
    }
    Ok(())
}

/// Polls the rule's counters until a signal, `--for`, or the rule is gone.
async fn wait(
    client: &Client,
    id: u32,
    rule: &faultbpf::Rule,
    lasts: Option<Duration>,
) -> Result<Option<Stats>, Failure> {
    let mut sigint = signal(SignalKind::interrupt()).context("could not watch SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("could not watch SIGTERM")?;
    let started = Instant::now();
    let deadline = lasts.map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let tty = std::io::stderr().is_terminal();
    let mut last = None;
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => break,
            _ = tick.tick() => {
                let list: RuleList<Stats> = client.call("GET", "/v1/stats", None)?;
                let Some(s) = list.rules.into_iter().find(|s| s.id == id) else {
                    eprintln!("faultbpf: rule {id} is gone (expired or removed)");
                    break;
                };
                if tty {
                    let c = faultbpf_common::RuleCounters {
                        matched_packets: s.matched_packets,
                        acted_packets: s.acted_packets,
                        ..Default::default()
                    };
                    eprint!("\r{}\x1b[K", report::status_line(started.elapsed().as_secs(), rule, &c));
                    let _ = std::io::stderr().flush();
                }
                last = Some(s);
            }
        }
    }
    if tty {
        eprintln!();
    }
    // One last read: counters up to the moment we stop.
    if let Ok(list) = client.call::<RuleList<Stats>>("GET", "/v1/stats", None)
        && let Some(s) = list.rules.into_iter().find(|s| s.id == id)
    {
        last = Some(s);
    }
    Ok(last)
}

/// `faultbpf rules`.
pub fn rules(client: &Client, json: bool) -> Result<(), Failure> {
    if json {
        let v: Value = client.call("GET", "/v1/rules", None)?;
        println!("{v}");
        return Ok(());
    }
    let list: RuleList<Info> = client.call("GET", "/v1/rules", None)?;
    if list.rules.is_empty() {
        println!("no rules");
    }
    for r in list.rules {
        let expires = r
            .expires_in_seconds
            .map(|s| format!("{:>6}s", s.round()))
            .unwrap_or_else(|| "  never".into());
        println!(
            "{:>5}  {:<16}  {expires}  {}",
            r.id,
            r.name.unwrap_or_default(),
            r.description
        );
    }
    Ok(())
}

/// `faultbpf rm`.
pub fn rm(client: &Client, ids: &[u32], all: bool) -> Result<(), Failure> {
    if all {
        let v: Value = client.call("DELETE", "/v1/rules", None)?;
        println!("removed {} rule(s)", v["removed"]);
        return Ok(());
    }
    for id in ids {
        let r: Info = client.call("DELETE", &format!("/v1/rules/{id}"), None)?;
        println!("removed rule {}: {}", r.id, r.description);
    }
    Ok(())
}

/// `faultbpf stats`.
pub fn stats(client: &Client, watch: bool, json: bool) -> Result<(), Failure> {
    loop {
        if json {
            let v: Value = client.call("GET", "/v1/stats", None)?;
            println!("{v}");
        } else {
            let list: RuleList<Stats> = client.call("GET", "/v1/stats", None)?;
            if watch {
                print!("\x1b[H\x1b[2J");
            }
            println!(
                "{:>5}  {:<16}  {:>12}  {:>12}  {:>14}  RULE",
                "ID", "NAME", "MATCHED", "ACTED", "ACTED BYTES"
            );
            for s in list.rules {
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
