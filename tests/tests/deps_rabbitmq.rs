//! The RabbitMQ story (seed 001, "Simulating network problems with docker
//! network"): a publisher buffers while the broker is unreachable, and
//! must reconnect and deliver every buffered message exactly once. Here
//! against Debian's real RabbitMQ in the server namespace, with a Python
//! publisher (python3-pika, publisher confirms) in the client namespace,
//! and `faultbpf blackhole --port 5672` in the client namespace for 10 s:
//! the publisher's host loses the broker, the broker itself keeps running.

use std::{collections::BTreeMap, time::Duration};

use faultbpf_tests::{
    Launch, Topology,
    deps::{RabbitMq, python, require_heavy_deps},
};
use serde_json::Value;

/// Messages the publisher makes, one every `INTERVAL_S`: about 24 s of
/// publishing, so the outage (from ~3 s to ~13 s) sits inside it.
const MESSAGES: u32 = 480;
const INTERVAL_S: &str = "0.05";
/// The publisher gives up after this long (a bound, not an expectation).
const PUBLISHER_DEADLINE_S: &str = "80";
const OUTAGE: Duration = Duration::from_secs(10);

/// Publishes MESSAGES numbered messages at a steady rate to queue `fbt`,
/// each confirmed by the broker before the next; buffers in memory while
/// disconnected and reconnects every ~1 s. Prints one JSON line per event.
/// A dead connection is noticed by TCP_USER_TIMEOUT (3 s of unacknowledged
/// data, heartbeats every second), as a production publisher should
/// configure. A message handed to a connection that then died is
/// "ambiguous": the broker may have it, so it is sent again and may arrive
/// twice; every other message must arrive exactly once.
const PUBLISHER: &str = r#"
import collections, json, sys, time
import pika

N, INTERVAL, DEADLINE = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
t0 = time.monotonic()

def event(**kw):
    kw["t"] = round(time.monotonic() - t0, 3)
    print(json.dumps(kw), flush=True)

params = pika.ConnectionParameters(
    host="10.200.0.2", port=5672, heartbeat=2, socket_timeout=1, stack_timeout=3,
    blocked_connection_timeout=5, connection_attempts=1,
    tcp_options={"TCP_USER_TIMEOUT": 3000})
buffer = collections.deque()
generated = confirmed = reconnects = 0
ambiguous, buffered_while_down = [], []
conn = ch = None
ever = False

def generate():
    global generated
    due = min(N, int((time.monotonic() - t0) / INTERVAL) + 1)
    while generated < due:
        buffer.append(generated)
        if ch is None:
            buffered_while_down.append(generated)
        generated += 1

def drop_connection():
    global conn, ch
    try:
        conn.close()
    except Exception:
        pass
    conn = ch = None

while generated < N or buffer:
    if time.monotonic() - t0 > DEADLINE:
        event(event="deadline", buffered=len(buffer))
        break
    generate()
    if ch is None:
        try:
            conn = pika.BlockingConnection(params)
            ch = conn.channel()
            ch.confirm_delivery()
            ch.queue_declare("fbt", durable=True)
        except Exception as e:
            conn = ch = None
            time.sleep(0.2)
            continue
        if ever:
            reconnects += 1
            event(event="reconnected", buffered=len(buffer))
        else:
            event(event="connected")
        ever = True
    if not buffer:
        try:
            conn.sleep(0.02)
        except Exception as e:
            event(event="disconnected", error=type(e).__name__, while_idle=True)
            drop_connection()
        continue
    i = buffer[0]
    try:
        ch.basic_publish("", "fbt", str(i).encode(),
                         pika.BasicProperties(delivery_mode=2), mandatory=True)
    except Exception as e:
        ambiguous.append(i)
        event(event="disconnected", error=type(e).__name__, at_message=i)
        drop_connection()
        continue
    buffer.popleft()
    confirmed += 1
    if confirmed % 50 == 0:
        event(event="progress", confirmed=confirmed)
try:
    conn.close()
except Exception:
    pass
event(event="done", generated=generated, confirmed=confirmed, left=len(buffer),
      reconnects=reconnects, ambiguous=ambiguous, buffered_while_down=buffered_while_down)
"#;

/// Takes every message of queue `fbt`; prints their numbers.
const DRAIN: &str = r#"
import json, pika
conn = pika.BlockingConnection(pika.ConnectionParameters(host="10.200.0.2", port=5672, socket_timeout=5))
ch = conn.channel()
ids = []
for _ in range(100000):
    method, props, body = ch.basic_get("fbt", auto_ack=True)
    if method is None:
        break
    ids.append(int(body))
conn.close()
print(json.dumps({"ids": ids}))
"#;

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

#[test]
fn publisher_buffers_reconnects_and_delivers_every_message_once() {
    require_heavy_deps(&[
        ("/usr/lib/rabbitmq/bin/rabbitmq-server", "rabbitmq-server"),
        ("/usr/lib/python3/dist-packages/pika", "python3-pika"),
    ]);
    let topo = Topology::new("rmq");
    let rabbit = RabbitMq::start(&topo.server, &topo.client);

    let mut publisher = python(
        &topo.client,
        PUBLISHER,
        &[&MESSAGES.to_string(), INTERVAL_S, PUBLISHER_DEADLINE_S],
        None,
    );
    let first = publisher.next_json(Duration::from_secs(30));
    assert_eq!(
        first["event"],
        "connected",
        "{first}\nrabbitmq log:\n{}",
        rabbit.log()
    );
    // A few seconds of healthy publishing first.
    let progress = publisher.next_json(Duration::from_secs(10));
    assert_eq!(progress["event"], "progress", "{progress}");
    std::thread::sleep(Duration::from_millis(500));

    // The outage: the client's host loses the broker for 10 s.
    let mut cut = Launch::new(&topo.client, ["blackhole"])
        .args(["--port", "5672", "--json"])
        .standalone()
        .start();
    std::thread::sleep(OUTAGE);
    let exit = cut.finish();
    let counters = exit.rule(0);
    assert!(
        counters.acted_packets > 0,
        "the blackhole dropped nothing: {exit:#?}"
    );

    // Then the publisher must come back by itself and finish.
    let mut events = Vec::new();
    let done = loop {
        let e = publisher.next_json(Duration::from_secs(60));
        if e["event"] == "done" || e["event"] == "deadline" {
            break e;
        }
        events.push(e);
    };
    let exit = publisher.wait(Duration::from_secs(10));
    assert!(exit.status.success(), "publisher failed: {exit:#?}");
    assert_eq!(
        done["event"], "done",
        "publisher gave up: {done}\nevents: {events:?}"
    );

    let disconnects: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "disconnected")
        .collect();
    let reconnects: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "reconnected")
        .collect();
    assert!(
        !disconnects.is_empty(),
        "the publisher never noticed the outage: {events:?}"
    );
    assert!(
        !reconnects.is_empty(),
        "the publisher never reconnected: {events:?}"
    );
    let buffered = ids(&done["buffered_while_down"]);
    let ambiguous = ids(&done["ambiguous"]);
    // ~10 s of outage at 20 messages/s, less the time to notice it.
    assert!(
        buffered.len() >= 60,
        "only {} messages were made while disconnected: {done}",
        buffered.len()
    );
    assert_eq!(done["generated"], MESSAGES, "{done}");
    assert_eq!(done["left"], 0, "{done}");

    // What the broker has: every message, buffered ones exactly once.
    let mut drain = python(&topo.server, DRAIN, &[], None);
    let got = drain.next_json(Duration::from_secs(30));
    assert!(drain.wait(Duration::from_secs(10)).status.success());
    let mut count: BTreeMap<u64, u32> = BTreeMap::new();
    for id in ids(&got["ids"]) {
        *count.entry(id).or_default() += 1;
    }
    let missing: Vec<u64> = (0..u64::from(MESSAGES))
        .filter(|i| !count.contains_key(i))
        .collect();
    assert!(missing.is_empty(), "messages lost: {missing:?}");
    let unexpected: Vec<u64> = count
        .keys()
        .copied()
        .filter(|&i| i >= u64::from(MESSAGES))
        .collect();
    assert!(unexpected.is_empty(), "unknown messages: {unexpected:?}");
    for id in &buffered {
        if !ambiguous.contains(id) {
            assert_eq!(
                count[id], 1,
                "buffered message {id} arrived {} times",
                count[id]
            );
        }
    }
    let duplicates: Vec<(u64, u32)> = count
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(i, n)| (*i, *n))
        .collect();
    for (id, n) in &duplicates {
        assert!(
            ambiguous.contains(id) && *n == 2,
            "message {id} arrived {n} times but was never in doubt (ambiguous: {ambiguous:?})"
        );
    }
    eprintln!(
        "outage: {} disconnect(s), {} reconnect(s), {} message(s) buffered while down, \
         {} ambiguous, {} duplicate(s); faultbpf dropped {} packets",
        disconnects.len(),
        reconnects.len(),
        buffered.len(),
        ambiguous.len(),
        duplicates.len(),
        counters.acted_packets
    );
    drop(rabbit);
}
