//! `faultbpf http`: flags to a validated fault, start it (probe, responder,
//! steering), print the `active:` line, hold until a signal or `--for`,
//! then print the counters on stdout (text, or `--json`), as
//! docs/cli-contract.md says.

use anyhow::Context;
use faultbpf::http;
use tokio::signal::unix::{SignalKind, signal};

use crate::{cli::HttpArgs, fault::Failure};

pub fn run(args: HttpArgs) -> Result<(), Failure> {
    let lasts = args.lasts;
    let json = args.json;
    let opts = args.options().map_err(Failure::Usage)?;
    let port = opts.port;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    rt.block_on(async move {
        // Watched before the fault is in force, so a signal right after the
        // `active:` line lifts it instead of killing us mid-way.
        let mut int = signal(SignalKind::interrupt()).context("could not watch SIGINT")?;
        let mut term = signal(SignalKind::terminate()).context("could not watch SIGTERM")?;
        let running = http::start(opts)
            .await
            .with_context(|| format!("faultbpf http --port {port}"))?;
        eprintln!("faultbpf: active: {}", running.description);
        let side = running.side;
        let until = async {
            match lasts {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            _ = until => {}
        }
        let c = running.counters();
        drop(running);
        if json {
            let v = serde_json::json!({
                "fault": "http",
                "port": port,
                "side": side,
                "connections_steered": c.connections_steered,
                "requests_seen": c.requests_seen,
                "requests_faulted": c.requests_faulted,
            });
            println!("{v}");
        } else {
            println!(
                "http port {port}: steered {} connection(s), saw {} request(s), faulted {}",
                c.connections_steered, c.requests_seen, c.requests_faulted
            );
        }
        Ok(())
    })
}
