//! The deterministic timeout test (seed 003, Piiano's Vault): a request's
//! deadline must fire on time however fast the machine, without a special
//! "slow" mode in the server. Here Debian's PostgreSQL runs untouched in
//! the server namespace; a psycopg2 client in the client namespace has an
//! open connection when `faultbpf hang --port 5432` starts, and its next
//! query must end with the client's own 3 s deadline (not sooner, not much
//! later, and not with a server error), then work again once healed.

use std::time::Duration;

use faultbpf_tests::{
    Launch, Topology,
    deps::{Postgres, postgres_installed, python, require_heavy_deps},
};

/// The client's deadline for one query.
const DEADLINE_S: f64 = 3.0;

/// A psycopg2 client with an application-level deadline (the way Go's
/// `context.WithTimeout` works): the connection is asynchronous and every
/// wait on its socket is bounded by what is left of the deadline. Driven by
/// lines on stdin; answers one JSON line each.
const CLIENT: &str = r#"
import json, select, sys, time
import psycopg2, psycopg2.extensions as ext

DEADLINE = float(sys.argv[1])

def wait(conn, deadline):
    while True:
        state = conn.poll()
        if state == ext.POLL_OK:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline exceeded")
        if state == ext.POLL_READ:
            ready = select.select([conn.fileno()], [], [], left)[0]
        elif state == ext.POLL_WRITE:
            ready = select.select([], [conn.fileno()], [], left)[1]
        else:
            raise RuntimeError("poll state %r" % state)
        if not ready:
            raise TimeoutError("deadline exceeded")

def connect():
    conn = psycopg2.connect(host="10.200.0.2", port=5432, user="postgres",
                            dbname="postgres", connect_timeout=5, async_=1)
    wait(conn, time.monotonic() + 5)
    return conn

def query(conn, sql):
    start = time.monotonic()
    try:
        cur = conn.cursor()
        cur.execute(sql)
        wait(conn, start + DEADLINE)
        return {"ok": True, "rows": cur.fetchall(), "seconds": time.monotonic() - start}
    except TimeoutError as e:
        return {"ok": False, "timeout": True, "error": str(e), "seconds": time.monotonic() - start}
    except psycopg2.Error as e:
        return {"ok": False, "timeout": False, "error": str(e), "seconds": time.monotonic() - start}

conn = connect()
print(json.dumps({"step": "connected", **query(conn, "select 1")}), flush=True)
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "query":
        print(json.dumps({"step": cmd, **query(conn, "select pg_sleep(0), 42")}), flush=True)
    elif cmd == "reconnect":
        try:
            conn.close()
        except Exception:
            pass
        conn = connect()
        print(json.dumps({"step": cmd, **query(conn, "select 42")}), flush=True)
    elif cmd == "exit":
        break
"#;

#[test]
fn a_query_under_hang_ends_at_the_clients_own_deadline() {
    require_heavy_deps(&[(
        "/usr/lib/python3/dist-packages/psycopg2",
        "python3-psycopg2",
    )]);
    assert!(
        postgres_installed(),
        "no /usr/lib/postgresql/*/bin/initdb: install Debian's postgresql (`cargo xtask setup` does)"
    );
    let topo = Topology::new("pg");
    let pg = Postgres::start(&topo.server);

    let mut client = python(&topo.client, CLIENT, &[&DEADLINE_S.to_string()], None);
    let r = client.next_json(Duration::from_secs(20));
    assert_eq!(
        r["ok"],
        true,
        "healthy query failed: {r}\nserver log:\n{}",
        pg.log()
    );
    assert_eq!(r["rows"][0][0], 1, "{r}");

    // The connection is open; now Postgres hangs (for this client).
    let mut hang = Launch::new(&topo.client, ["hang"])
        .args(["--port", "5432", "--json"])
        .standalone()
        .start();
    client.send("query");
    let r = client.next_json(Duration::from_secs(20));
    assert_eq!(r["ok"], false, "the query answered under hang: {r}");
    assert_eq!(r["timeout"], true, "not the client's deadline: {r}");
    let took = r["seconds"].as_f64().unwrap();
    assert!(
        (DEADLINE_S - 0.05..DEADLINE_S + 1.0).contains(&took),
        "the deadline is {DEADLINE_S} s, the query ended after {took:.3} s: {r}"
    );
    let exit = hang.finish();
    let c = exit.rule(0);
    assert!(c.acted_packets >= 1, "hang dropped nothing: {exit:#?}");

    // Healed: a fresh connection answers at once.
    client.send("reconnect");
    let r = client.next_json(Duration::from_secs(20));
    assert_eq!(r["ok"], true, "no answer after healing: {r}");
    assert_eq!(r["rows"][0][0], 42, "{r}");
    assert!(r["seconds"].as_f64().unwrap() < 1.0, "{r}");
    client.send("exit");
    assert!(client.wait(Duration::from_secs(10)).status.success());
}
