//! The amplification rule (seed 004, Wikimedia's "Rules of thumb for robust
//! service infrastructure"): with N attempts per request, a failing
//! dependency sees at most N times the load, and failures beyond the
//! retries must surface, not vanish. A Python `http.client` loop with a
//! policy of 3 attempts and no backoff fetches from `python3 -m http.server`
//! in the server namespace while `faultbpf reset --dport 8000 --pct 30
//! --per packet` resets 30 % of the packets sent to the server's port.
//!
//! Every attempt's fate is an independent draw on its packets, so with q
//! the chance that one attempt fails, a request makes 1, 2 or 3 attempts
//! with probabilities (1-q), q(1-q), q², and fails with q³. q is estimated
//! from the first attempts alone; the rest of the numbers must agree with
//! it within 4 standard deviations, and the client must count every
//! request that failed all 3 attempts.

use std::time::Duration;

use faultbpf_tests::{
    Launch, Topology,
    deps::{HttpServer, python},
};

const PORT: u16 = 8000;
const REQUESTS: u32 = 400;
const ATTEMPTS: u32 = 3;

/// Fetches /hello.txt REQUESTS times, each with up to ATTEMPTS attempts on
/// a fresh connection (1 s timeout each, no backoff); prints one JSON line
/// with the attempts each request made and whether it succeeded.
const CLIENT: &str = r#"
import http.client, json, sys, time
REQUESTS, ATTEMPTS = int(sys.argv[1]), int(sys.argv[2])
EXPECTED = b"hello from the server namespace\n"
stop_at = time.monotonic() + 90
attempts, ok, errors = [], [], {}

def attempt():
    conn = http.client.HTTPConnection("10.200.0.2", 8000, timeout=1)
    try:
        conn.request("GET", "/hello.txt")
        resp = conn.getresponse()
        body = resp.read()
        return resp.status == 200 and body == EXPECTED, "status %d" % resp.status
    except Exception as e:
        return False, type(e).__name__
    finally:
        conn.close()

for _ in range(REQUESTS):
    if time.monotonic() > stop_at:
        break
    for n in range(1, ATTEMPTS + 1):
        good, why = attempt()
        if good:
            break
        errors[why] = errors.get(why, 0) + 1
    attempts.append(n)
    ok.append(good)
print(json.dumps({"attempts": attempts, "ok": ok, "errors": errors}), flush=True)
"#;

#[test]
fn three_attempts_at_most_and_every_exhausted_request_is_counted() {
    let topo = Topology::new("retry");
    let _server = HttpServer::start(&topo.server, &topo.client, PORT);
    let mut fault = Launch::new(&topo.server, ["reset"])
        .args([
            "--dport",
            &PORT.to_string(),
            "--pct",
            "30",
            "--per",
            "packet",
            "--json",
        ])
        .standalone()
        .start();
    let mut client = python(
        &topo.client,
        CLIENT,
        &[&REQUESTS.to_string(), &ATTEMPTS.to_string()],
        None,
    );
    let out = client.next_json(Duration::from_secs(120));
    assert!(client.wait(Duration::from_secs(10)).status.success());
    let exit = fault.finish();
    let acted = exit.rule(0).acted_packets;

    let attempts: Vec<u32> = out["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_u64().unwrap() as u32)
        .collect();
    let ok: Vec<bool> = out["ok"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_bool().unwrap())
        .collect();
    let n = attempts.len() as f64;
    assert_eq!(
        attempts.len(),
        REQUESTS as usize,
        "the client ran out of time: {out}"
    );

    // The policy itself: never more than 3 attempts; fewer only on success.
    assert!(
        attempts.iter().all(|&a| (1..=ATTEMPTS).contains(&a)),
        "{out}"
    );
    for (a, good) in attempts.iter().zip(&ok) {
        assert!(*a == ATTEMPTS || *good, "gave up after {a} attempts: {out}");
    }

    // q from the first attempts alone: a first attempt failed iff the
    // request needed a second one.
    let first_failed = attempts.iter().filter(|&&a| a > 1).count() as f64;
    let q = first_failed / n;
    // At least the SYN is drawn at 30 %; every packet before the answer is
    // drawn too, so q is above 0.3 (allowing 4 sd of noise) and below 1.
    let sd_q = (0.3f64 * 0.7 / n).sqrt();
    assert!(
        q > 0.3 - 4.0 * sd_q && q < 0.99,
        "one attempt in {q:.3} failed; 30 % per packet should fail more than 0.3"
    );

    // Second attempts fail with the same q (independent draws).
    let second = attempts.iter().filter(|&&a| a >= 2).count() as f64;
    let second_failed = attempts.iter().filter(|&&a| a >= 3).count() as f64;
    let q2 = second_failed / second;
    let sd2 = (q * (1.0 - q) / second).sqrt() + sd_q;
    assert!(
        (q2 - q).abs() <= 4.0 * sd2,
        "second attempts failed at {q2:.3}, first ones at {q:.3} (4 sd = {:.3})",
        4.0 * sd2
    );

    // Amplification: total attempts ≈ n(1 + q + q²), at most 3n.
    let total: f64 = attempts.iter().map(|&a| f64::from(a)).sum();
    let expected = n * (1.0 + q + q * q);
    // Per request: 1 + B1 + B1·B2, variance q(1-q) + q²(1-q²) + 2q²(1-q).
    let var = q * (1.0 - q) + q * q * (1.0 - q * q) + 2.0 * q * q * (1.0 - q);
    let sd_total = (n * var).sqrt();
    assert!(
        (total - expected).abs() <= 4.0 * sd_total + 1.0,
        "{total} attempts for {n} requests; expected {expected:.1} ± {:.1}",
        4.0 * sd_total
    );
    assert!(total <= f64::from(ATTEMPTS) * n);

    // Failures beyond the retries: counted, at the rate q³.
    let failed = ok.iter().filter(|&&g| !g).count() as f64;
    let expected_failed = n * q.powi(3);
    let sd_failed = (n * q.powi(3) * (1.0 - q.powi(3))).sqrt();
    assert!(
        (failed - expected_failed).abs() <= 4.0 * sd_failed + 1.0,
        "{failed} requests failed all {ATTEMPTS} attempts; expected {expected_failed:.1} ± {:.1}",
        4.0 * sd_failed
    );

    // faultbpf's own count: every failed attempt had at least one packet reset.
    let failed_attempts = total - (n - failed);
    assert!(
        acted as f64 >= failed_attempts,
        "faultbpf reset {acted} packets but {failed_attempts} attempts failed: {out}"
    );
    eprintln!(
        "{n} requests, {total} attempts (amplification {:.2}), q = {q:.3}, {failed} failed after \
         {ATTEMPTS} attempts; faultbpf reset {acted} packets; errors {}",
        total / n,
        out["errors"]
    );
}
