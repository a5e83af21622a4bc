//! Issue 3, `--per flow`: with `blackhole --pct 30 --per flow` on the
//! server, each TCP connection's fate is drawn once. Over 1 000 connections
//! (half IPv4, half IPv6; 300 ms connect timeout; each sends a request and
//! reads the echo), about 30 % fail completely (their connect times out:
//! within 4 binomial standard deviations) and every other connection loses
//! nothing: its exchange succeeds and the client's TCP never retransmitted
//! (a request lost and resent would still be answered, so the answer alone
//! would not prove it). A connection that opens and then loses data is
//! exactly what per-packet drawing would produce, and fails the test.

use std::{
    io::ErrorKind,
    net::SocketAddr,
    os::fd::AsFd,
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use faultbpf_tests::{
    Launch, SERVER_IF, SERVER_V4, SERVER_V6, Topology,
    fault_kit::{EchoServer, exchange},
    tcp_info,
};

const P: u16 = 5000;
const CONNECTIONS: usize = 1000;
const WORKERS: usize = 10;
const PCT: f64 = 30.0;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Tally {
    ok: u64,
    failed: u64,
    /// Connections that were neither cleanly served nor cleanly cut.
    partial: Vec<String>,
}

#[test]
fn per_flow_fails_whole_connections() {
    let topo = Topology::new("perflow");
    let echo = EchoServer::tcp(&topo.server, SocketAddr::new("::".parse().unwrap(), P));
    let mut fb = Launch::new(&topo.server, ["blackhole"])
        .args([
            "--port",
            &P.to_string(),
            "--pct",
            &PCT.to_string(),
            "--per",
            "flow",
            "--iface",
            SERVER_IF,
            "--json",
        ])
        .standalone()
        .start();
    let cmd = fb.command().to_owned();
    let tally = Mutex::new(Tally::default());
    let start = Instant::now();
    thread::scope(|s| {
        for worker in 0..WORKERS {
            let (topo, tally) = (&topo, &tally);
            s.spawn(move || {
                topo.client.run(|| {
                    for i in (worker..CONNECTIONS).step_by(WORKERS) {
                        let ip = if i % 2 == 0 { SERVER_V4 } else { SERVER_V6 };
                        let outcome = connection(SocketAddr::new(ip, P), i);
                        let mut tally = tally.lock().unwrap();
                        match outcome {
                            Ok(true) => tally.ok += 1,
                            Ok(false) => tally.failed += 1,
                            Err(why) => {
                                tally.partial.push(format!("connection {i} to {ip}: {why}"))
                            }
                        }
                    }
                });
            });
        }
    });
    let took = start.elapsed();
    let exit = fb.finish();
    let rule = exit.rule(0);
    let tally = tally.into_inner().unwrap();
    let n = CONNECTIONS as u64;
    let p = PCT / 100.0;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    let z = (tally.failed as f64 - n as f64 * p) / sd;
    let summary = format!(
        "{} ok, {} failed, {} partial of {CONNECTIONS} in {took:?} (z = {z:.2}); \
         server accepted {}; {rule:?}; `{cmd}`",
        tally.ok,
        tally.failed,
        tally.partial.len(),
        echo.accepted()
    );
    eprintln!("{summary}");
    assert!(
        tally.partial.is_empty(),
        "every connection must be served whole or cut whole; {summary}\n{}",
        tally.partial.join("\n")
    );
    assert!(
        z.abs() <= 4.0,
        "about {PCT} % of connections must fail: {summary}"
    );
    // A cut connection sends one SYN within its 300 ms (the first
    // retransmission comes after 1 s), and nothing else is acted on.
    assert_eq!(
        rule.acted_packets, tally.failed,
        "one dropped SYN per failed connection: {summary}"
    );
    assert_eq!(
        echo.accepted(),
        tally.ok,
        "the server must see exactly the connections that worked: {summary}"
    );
}

/// One connection from the current (client namespace) thread: `Ok(true)`
/// when served whole, `Ok(false)` when its connect timed out, `Err` for
/// anything in between.
fn connection(addr: SocketAddr, i: usize) -> Result<bool, String> {
    let mut stream = match std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
        Ok(stream) => stream,
        Err(e) if e.kind() == ErrorKind::TimedOut => return Ok(false),
        Err(e) => return Err(format!("connect: {e}")),
    };
    let request = format!("request {i} to {addr}");
    let reply = exchange(&mut stream, request.as_bytes(), REPLY_TIMEOUT)
        .map_err(|e| format!("opened, then the exchange failed: {e}"))?;
    if reply != request.as_bytes() {
        return Err(format!("wrong reply {:?}", String::from_utf8_lossy(&reply)));
    }
    let info = tcp_info(stream.as_fd());
    if info.tcpi_total_retrans != 0 {
        return Err(format!(
            "served, but after {} retransmission(s)",
            info.tcpi_total_retrans
        ));
    }
    Ok(true)
}
