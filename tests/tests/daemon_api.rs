//! The daemon's HTTP/JSON API, end to end: every route, every kind of bad
//! request (each a 4xx `application/problem+json`, after which the daemon
//! keeps serving), Prometheus output checked with a real parser against the
//! traffic sent, the socket's permissions, the guard rails, the TCP
//! listener's token, and the CLI driving the daemon.

use std::{
    io::Write,
    os::unix::{
        fs::{FileTypeExt, MetadataExt},
        net::UnixStream,
    },
    time::{Duration, Instant},
};

use faultbpf_tests::{
    Launch, Topology,
    daemon::Daemon,
    http::{Request, Response, tcp_request},
    openapi::{ApiCheck, check_openapi},
    probe::UdpPath,
    prometheus::{parse_prometheus, sample_value},
    temp::TempFile,
    user::TestUser,
};
use serde_json::{Value, json};

/// The blackholed port.
const P: u16 = 5000;
/// A port no rule touches.
const Q: u16 = 5001;

fn rule_id(rule: &Value) -> u64 {
    rule["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("rule without an integer id: {rule}"))
}

#[test]
fn every_route_answers_and_rules_act() {
    let topo = Topology::new("dapi-routes");
    let to_p = UdpPath::new(&topo, P);
    let to_q = UdpPath::new(&topo, Q);
    let d = Daemon::start(&topo.server, "routes", &[]);

    let health = d.get("/healthz").expect(200);
    assert_eq!(health["status"], "ok", "{health}");
    assert!(
        health["attach"] == "tcx" || health["attach"] == "netlink",
        "{health}"
    );
    let ifaces = health["interfaces"].as_array().unwrap();
    for name in ["veth-s", "lo"] {
        assert!(
            ifaces.iter().any(|i| i == name),
            "the daemon should attach to every interface that is up, {name} missing: {health}"
        );
    }
    assert_eq!(health["rules"], 0, "{health}");
    assert_eq!(d.get("/v1/rules").expect(200), json!({ "rules": [] }));
    assert_eq!(d.get("/v1/stats").expect(200), json!({ "rules": [] }));
    assert_eq!(to_p.probe(5), 5, "before any rule, port {P} must receive");

    let spec = json!({ "fault": "blackhole", "port": [P], "proto": "udp", "name": "api-sink" });
    let r = d.post("/v1/rules", spec.to_string().as_bytes());
    let created = r.expect(201);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{r}"
    );
    let id = rule_id(&created);
    assert_eq!(created["name"], "api-sink", "{created}");
    assert_eq!(created["fault"], "blackhole", "{created}");
    assert_eq!(created["origin"], "api", "{created}");
    assert_eq!(created["spec"]["port"], json!([P]), "{created}");
    assert_eq!(created["spec"]["proto"], "udp", "{created}");
    let desc = created["description"].as_str().unwrap();
    assert!(
        desc.contains("blackhole") && desc.contains(&P.to_string()),
        "{created}"
    );
    // No `for`: the default ttl of 10 minutes applies.
    let expires = created["expires_in_seconds"].as_f64().unwrap();
    assert!((590.0..=600.0).contains(&expires), "{created}");

    // The rule acts at once, on its port only.
    assert_eq!(to_p.probe(20), 0, "port {P} must be blackholed");
    assert_eq!(to_q.probe(20), 20, "port {Q} must still receive");

    let one = d.get(&format!("/v1/rules/{id}")).expect(200);
    assert_eq!(one["id"], id);
    assert_eq!(one["name"], "api-sink");
    let list = d.rules();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["id"], id);
    let stats = d.stats_of(id).expect("the rule in /v1/stats");
    assert_eq!(stats["matched_packets"], 20, "{stats}");
    assert_eq!(stats["acted_packets"], 20, "{stats}");
    assert_eq!(stats["name"], "api-sink", "{stats}");
    let m = d.get("/metrics");
    assert_eq!(m.status, 200, "{m}");
    assert!(m.text().contains("faultbpf_acted_packets_total"), "{m}");
    assert_eq!(d.get("/healthz").expect(200)["rules"], 1);

    // A second rule gets its own id.
    let second = d.add_rule(&json!({ "fault": "reset", "dport": [Q + 1], "proto": "tcp" }));
    let id2 = rule_id(&second);
    assert_ne!(id2, id);
    assert!(second.get("name").is_none(), "{second}");

    // DELETE one: returns the rule, and the port heals.
    let gone = d.delete(&format!("/v1/rules/{id}")).expect(200);
    assert_eq!(gone["id"], id, "{gone}");
    assert_eq!(gone["name"], "api-sink", "{gone}");
    d.get(&format!("/v1/rules/{id}")).expect_problem(404);
    assert_eq!(to_p.probe(5), 5, "port {P} must receive after DELETE");
    assert_eq!(d.rules().len(), 1);

    // DELETE all.
    assert_eq!(
        d.delete("/v1/rules").expect(200),
        json!({ "removed": 1 }),
        "DELETE /v1/rules"
    );
    assert!(d.rules().is_empty());
    assert_eq!(d.delete("/v1/rules").expect(200), json!({ "removed": 0 }));
    assert_eq!(d.get("/healthz").expect(200)["rules"], 0);

    // Unknown routes and methods are problems too.
    d.get("/v2/rules").expect_problem(404);
    d.get("/").expect_problem(404);
    d.request(&Request::new("PUT", "/v1/rules").body(b"{}"))
        .expect_problem(405);
    d.request(&Request::new("POST", "/v1/stats").body(b"{}"))
        .expect_problem(405);
    d.request(&Request::new("DELETE", "/healthz"))
        .expect_problem(405);
    d.assert_healthy("the route checks");
}

#[test]
fn bad_requests_get_problems_and_the_daemon_keeps_serving() {
    let topo = Topology::new("dapi-bad");
    let d = Daemon::start(&topo.server, "bad", &["--iface", "veth-s"]);

    // (what, body, status, what the detail must contain: the bad value, or
    // where it is for JSON that does not parse)
    let cases: &[(&str, &str, u16, &str)] = &[
        ("malformed JSON", "{", 400, "line 1 column 1"),
        (
            "truncated JSON",
            r#"{"fault":"blackhole","port":[5000"#,
            400,
            "column 33",
        ),
        ("not JSON", "blackhole port 5000", 400, "line 1 column 1"),
        ("an empty body", "", 400, "EOF"),
        ("a JSON array", "[]", 400, "column 2"),
        ("JSON null", "null", 400, "null"),
        ("a JSON string", r#""blackhole""#, 400, "\"blackhole\""),
        (
            "an unknown field",
            r#"{"fault":"blackhole","port":[5000],"colour":"red"}"#,
            400,
            "colour",
        ),
        (
            "a misspelt field",
            r#"{"fault":"blackhole","prot":[5000]}"#,
            400,
            "prot",
        ),
        (
            "a string for pct",
            r#"{"fault":"blackhole","port":[5000],"pct":"fifty"}"#,
            400,
            "fifty",
        ),
        (
            "an object for port",
            r#"{"fault":"blackhole","port":{"a":1}}"#,
            400,
            "map",
        ),
        (
            "a fractional port",
            r#"{"fault":"blackhole","port":[5000.5]}"#,
            400,
            "column 36",
        ),
        (
            "a number for fault",
            r#"{"fault":7,"port":[5000]}"#,
            400,
            "column 10",
        ),
        (
            "a bool for force",
            r#"{"fault":"blackhole","port":[5000],"force":"yes"}"#,
            400,
            "yes",
        ),
        (
            "an unknown fault",
            r#"{"fault":"explode","port":[5000]}"#,
            400,
            "explode",
        ),
        ("no fault", r#"{"port":[5000]}"#, 400, "fault"),
        ("no port", r#"{"fault":"blackhole"}"#, 400, "port"),
        ("port 0", r#"{"fault":"blackhole","port":[0]}"#, 400, "port"),
        (
            "port 65536",
            r#"{"fault":"blackhole","port":[65536]}"#,
            400,
            "port",
        ),
        (
            "a negative port",
            r#"{"fault":"blackhole","dport":[-5]}"#,
            400,
            "dport",
        ),
        (
            "a reversed range",
            r#"{"fault":"blackhole","sport":["9-1"]}"#,
            400,
            "sport",
        ),
        (
            "pct 101",
            r#"{"fault":"blackhole","port":[5000],"pct":101}"#,
            400,
            "pct",
        ),
        (
            "pct -1",
            r#"{"fault":"blackhole","port":[5000],"pct":-1}"#,
            400,
            "pct",
        ),
        (
            "pct 1e400",
            r#"{"fault":"blackhole","port":[5000],"pct":1e400}"#,
            400,
            "out of range",
        ),
        (
            "for 0s",
            r#"{"fault":"blackhole","port":[5000],"for":"0s"}"#,
            400,
            "for",
        ),
        (
            "for soon",
            r#"{"fault":"blackhole","port":[5000],"for":"soon"}"#,
            400,
            "for",
        ),
        (
            "a bad peer",
            r#"{"fault":"blackhole","port":[5000],"peer":["10.0.0.0/40"]}"#,
            400,
            "peer",
        ),
        (
            "an unknown proto",
            r#"{"fault":"blackhole","port":[5000],"proto":"icmp"}"#,
            400,
            "icmp",
        ),
        (
            "mark without a value",
            r#"{"fault":"mark","port":[5000]}"#,
            400,
            "mark",
        ),
        (
            "a mark on a blackhole",
            r#"{"fault":"blackhole","port":[5000],"mark":1}"#,
            400,
            "mark",
        ),
        (
            "chaos without a mix",
            r#"{"fault":"chaos","port":[5000]}"#,
            400,
            "mix",
        ),
        (
            "a bad mix",
            r#"{"fault":"chaos","port":[5000],"mix":"boom:5"}"#,
            400,
            "mix",
        ),
        (
            "an empty name",
            r#"{"fault":"blackhole","port":[5000],"name":""}"#,
            400,
            "name",
        ),
    ];
    for (what, body, status, needle) in cases {
        assert!(!needle.is_empty(), "{what}: an empty needle checks nothing");
        let r = d.post("/v1/rules", body.as_bytes());
        let detail = r.expect_problem(*status);
        assert!(
            detail.contains(needle),
            "{what}: the detail should mention {needle:?}: {detail}"
        );
        d.assert_healthy(what);
    }

    // 10 MB bodies: refused with 413 whether the length is announced or
    // the body comes in chunks.
    let huge = format!(
        r#"{{"fault":"blackhole","port":[5000],"name":"{}"}}"#,
        "x".repeat(10 << 20)
    );
    let r = d.post("/v1/rules", huge.as_bytes());
    r.expect_problem(413);
    d.assert_healthy("a 10 MB body with Content-Length");
    let r = d.request(
        &Request::new("POST", "/v1/rules")
            .body(huge.as_bytes())
            .chunked(),
    );
    r.expect_problem(413);
    d.assert_healthy("a 10 MB chunked body");

    // Unknown rule ids.
    for path in [
        "/v1/rules/4242",
        "/v1/rules/abc",
        "/v1/rules/-1",
        "/v1/rules/99999999999",
    ] {
        d.get(path).expect_problem(404);
        d.assert_healthy(&format!("GET {path}"));
        d.delete(path).expect_problem(404);
        d.assert_healthy(&format!("DELETE {path}"));
    }

    // A client that sends half a request and stalls, and one that sends
    // nothing, hold no one else up.
    let mut stalled = UnixStream::connect(d.socket()).unwrap();
    stalled
        .write_all(b"POST /v1/rules HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"fault\"")
        .unwrap();
    let idle = UnixStream::connect(d.socket()).unwrap();
    d.assert_healthy("a stalled and an idle connection");
    let r = d.add_rule(&json!({ "fault": "blackhole", "port": [Q] }));
    assert_eq!(d.delete(&format!("/v1/rules/{}", rule_id(&r))).status, 200);
    drop((stalled, idle));
    d.assert_healthy("the stalled connections closed");

    // Nothing above created a rule.
    assert!(d.rules().is_empty(), "{:?}", d.rules());

    // A port another rule holds: 409, and the first rule stays as it was.
    let first = d.add_rule(&json!({ "fault": "blackhole", "port": [P] }));
    let detail = d
        .post(
            "/v1/rules",
            json!({ "fault": "reset", "dport": [P], "proto": "tcp" })
                .to_string()
                .as_bytes(),
        )
        .expect_problem(409);
    assert!(detail.contains(&P.to_string()), "{detail}");
    d.assert_healthy("a conflict");
    let list = d.rules();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["id"], first["id"]);
    assert_eq!(list[0]["fault"], "blackhole");

    // The daemon still does its job after all of it.
    let ok = d.add_rule(&json!({ "fault": "blackhole", "port": [Q], "for": "1m" }));
    assert_eq!(d.delete(&format!("/v1/rules/{}", rule_id(&ok))).status, 200);
}

/// The four counters of rule `id` in parsed metrics, in `/v1/stats` order.
fn metric_counters(samples: &[faultbpf_tests::prometheus::Sample], id: u64) -> [u64; 4] {
    [
        "faultbpf_matched_packets_total",
        "faultbpf_matched_bytes_total",
        "faultbpf_acted_packets_total",
        "faultbpf_acted_bytes_total",
    ]
    .map(|name| {
        let v = sample_value(samples, name, "id", &id.to_string())
            .unwrap_or_else(|| panic!("no {name}{{id=\"{id}\"}} in {samples:#?}"));
        assert_eq!(v.fract(), 0.0, "{name} is not an integer: {v}");
        v as u64
    })
}

#[test]
fn metrics_parse_and_equal_the_traffic_sent() {
    const N: usize = 300;
    const M: usize = 50;
    const LEN: usize = 100;
    // Ethernet (14) + IPv4 (20) + UDP (8) + payload, as the tc hook sees it.
    const FRAME: u64 = 14 + 20 + 8 + LEN as u64;
    let metrics_addr = "127.0.0.1:9464";
    let topo = Topology::new("dapi-metrics");
    let to_p = UdpPath::new(&topo, P);
    let to_q = UdpPath::new(&topo, Q);
    let d = Daemon::start(&topo.server, "metrics", &["--metrics", metrics_addr]);

    // A name with a quote, a backslash and a comma: the label must escape
    // them and the parser must give them back as they were.
    let name = r#"udp "sink" \ a,b"#;
    let a = rule_id(
        &d.add_rule(&json!({ "fault": "blackhole", "port": [P], "proto": "udp", "name": name })),
    );
    let idle =
        rule_id(&d.add_rule(&json!({ "fault": "blackhole", "port": [Q + 1], "proto": "udp" })));

    let before = parse_prometheus(&d.get("/metrics").text());
    assert_eq!(metric_counters(&before, a), [0; 4]);

    to_p.send(N, LEN);
    // Sent after P's, on the same path: once these arrived, P's were seen.
    to_q.send(M, LEN);
    assert_eq!(to_q.drain(), M, "port {Q} has no rule and must receive");
    assert_eq!(to_p.drain(), 0, "port {P} must receive nothing");

    let r = d.get("/metrics");
    assert_eq!(r.status, 200, "{r}");
    let ctype = r.header("content-type").unwrap_or("");
    assert!(
        ctype.starts_with("text/plain") && ctype.contains("version=0.0.4"),
        "Prometheus text format needs its content type: {ctype:?}"
    );
    let samples = parse_prometheus(&r.text());
    let n = N as u64;
    assert_eq!(
        metric_counters(&samples, a),
        [n, n * FRAME, n, n * FRAME],
        "[matched packets, matched bytes, acted packets, acted bytes] of rule {a}"
    );
    assert_eq!(metric_counters(&samples, idle), [0; 4]);

    // Labels and types.
    let s = samples
        .iter()
        .find(|s| s.name == "faultbpf_acted_packets_total" && s.labels["id"] == a.to_string())
        .unwrap();
    assert_eq!(s.family_type, "counter", "{s:?}");
    assert_eq!(s.labels["name"], name, "the name label must round-trip");
    assert_eq!(s.labels["fault"], "blackhole", "{s:?}");
    assert!(s.labels["port"].contains(&P.to_string()), "{s:?}");
    let rules = samples
        .iter()
        .find(|s| s.name == "faultbpf_rules")
        .expect("faultbpf_rules");
    assert_eq!(rules.family_type, "gauge");
    assert_eq!(rules.value, 2.0);

    // /v1/stats says the same.
    let st = d.stats_of(a).unwrap();
    let from_stats = [
        "matched_packets",
        "matched_bytes",
        "acted_packets",
        "acted_bytes",
    ]
    .map(|k| st[k].as_u64().unwrap());
    assert_eq!(from_stats, metric_counters(&samples, a), "{st}");

    // --metrics serves the same text over TCP (inside the namespace), and
    // nothing but /metrics.
    let addr = metrics_addr.parse().unwrap();
    let r = tcp_request(&topo.server, addr, &Request::new("GET", "/metrics")).unwrap();
    assert_eq!(r.status, 200, "{r}");
    let over_tcp = parse_prometheus(&r.text());
    assert_eq!(metric_counters(&over_tcp, a), metric_counters(&samples, a));
    for req in [
        Request::new("GET", "/v1/rules"),
        Request::new("GET", "/healthz"),
        Request::new("DELETE", "/v1/rules"),
        Request::new("POST", "/v1/rules").body(br#"{"fault":"blackhole","port":[6000]}"#),
    ] {
        let r = tcp_request(&topo.server, addr, &req).unwrap();
        assert!(
            r.status == 404 || r.status == 405,
            "{} {} on the metrics port must not be served: {r}",
            req.method,
            req.path
        );
    }
    assert_eq!(d.rules().len(), 2, "the metrics port must not change rules");

    // Counters keep counting.
    to_p.send(10, LEN);
    to_q.send(1, LEN);
    assert_eq!(to_q.drain(), 1);
    let after = parse_prometheus(&d.get("/metrics").text());
    assert_eq!(metric_counters(&after, a)[2], n + 10);
}

#[test]
fn socket_is_0600_and_other_users_cannot_connect() {
    let topo = Topology::new("dapi-perm");
    let d = Daemon::start(&topo.server, "perm", &["--iface", "veth-s"]);

    let meta = std::fs::metadata(d.socket()).unwrap();
    assert!(meta.file_type().is_socket(), "{meta:?}");
    assert_eq!(
        meta.mode() & 0o7777,
        0o600,
        "socket mode is {:o}",
        meta.mode() & 0o7777
    );
    assert_eq!(meta.uid(), 0, "the socket must belong to root");

    let url = "http://faultbpf/healthz";
    // Control: root gets through with the same command.
    let root = faultbpf_tests::run_bounded(
        topo.server.command("curl").args([
            "-sS",
            "--max-time",
            "5",
            "--unix-socket",
            d.socket_str(),
            url,
        ]),
        Duration::from_secs(10),
    );
    assert!(root.status.success(), "root's curl failed: {root:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&root.stdout).unwrap()["status"],
        "ok"
    );

    let user = TestUser::create();
    for (method, extra) in [
        ("GET", vec![]),
        (
            "POST",
            vec!["--data", r#"{"fault":"blackhole","port":[5000]}"#],
        ),
    ] {
        let mut cmd = user.command(&topo.server, "curl");
        cmd.args(["-sS", "--max-time", "5", "-X", method])
            .args(&extra)
            .args(["--unix-socket", d.socket_str()])
            .arg(if method == "GET" {
                url
            } else {
                "http://faultbpf/v1/rules"
            });
        let out = faultbpf_tests::run_bounded(&mut cmd, Duration::from_secs(10));
        assert!(
            !out.status.success(),
            "uid {} reached the daemon: {out:?}",
            user.uid
        );
        // curl's 7: "Failed to connect".
        assert_eq!(out.status.code(), Some(7), "{out:?}");
    }
    // curl does not show the errno; connect() itself must fail with EACCES.
    let mut cmd = user.command(&topo.server, "/usr/bin/python3");
    cmd.args([
        "-c",
        "import socket, sys\n\
         try:\n    socket.socket(socket.AF_UNIX).connect(sys.argv[1])\n\
         except OSError as e:\n    print(e.errno); sys.exit(0)\n\
         print('connected'); sys.exit(1)",
        d.socket_str(),
    ]);
    let out = faultbpf_tests::run_bounded(&mut cmd, Duration::from_secs(10));
    assert!(out.status.success(), "uid {} connected: {out:?}", user.uid);
    assert_eq!(
        out.stdout.trim(),
        libc::EACCES.to_string(),
        "connect() must fail with EACCES: {out:?}"
    );
    assert!(d.rules().is_empty());
    d.assert_healthy("connection attempts by another user");
}

#[test]
fn guard_rails_refuse_port_22_unless_forced() {
    let topo = Topology::new("dapi-guard");
    let d = Daemon::start(&topo.server, "guard", &["--iface", "veth-s"]);

    for spec in [
        json!({ "fault": "blackhole", "port": [22] }),
        json!({ "fault": "reset", "dport": [22], "proto": "tcp" }),
        json!({ "fault": "blackhole", "sport": ["22"] }),
        json!({ "fault": "blackhole", "port": ["20-30"] }),
        json!({ "fault": "blackhole", "port": [5000, 22] }),
        json!({ "fault": "blackhole", "port": [22], "force": false }),
    ] {
        let detail = d
            .post("/v1/rules", spec.to_string().as_bytes())
            .expect_problem(403);
        assert!(
            detail.contains("22") && detail.contains("force"),
            "{spec}: {detail}"
        );
        d.assert_healthy(&format!("{spec}"));
    }
    assert!(d.rules().is_empty(), "{:?}", d.rules());

    let forced = d.add_rule(&json!({ "fault": "blackhole", "port": [22], "force": true }));
    assert_eq!(forced["spec"]["force"], true, "{forced}");
    let id = rule_id(&forced);
    assert_eq!(d.delete(&format!("/v1/rules/{id}")).status, 200);

    // The CLI: refused as a usage error naming the port (the same guard
    // rail with or without a daemon), then allowed with --force.
    let out = Launch::new(&topo.server, ["blackhole", "--port", "22"])
        .socket(d.socket_str())
        .run();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        out.stderr.contains("port 22") && out.stderr.contains("force"),
        "{out:?}"
    );
    assert!(d.rules().is_empty());
    let out = Launch::new(&topo.server, ["blackhole", "--port", "22", "--force"])
        .socket(d.socket_str())
        .run();
    out.assert_success();
    assert_eq!(d.rules().len(), 1);
}

#[test]
fn tcp_listener_requires_the_bearer_token() {
    const API_PORT: u16 = 7070;
    let token = "0123456789abcdef0123456789abcdef";
    let topo = Topology::new("dapi-tcp");
    let token_file = TempFile::new("tcp-token", ".token", &format!("{token}\n"));
    let listen = format!("127.0.0.1:{API_PORT}");
    let d = Daemon::start(
        &topo.server,
        "tcp",
        &[
            "--iface",
            "veth-s",
            "--listen",
            &listen,
            "--token-file",
            token_file.as_str(),
        ],
    );
    let addr = listen.parse().unwrap();
    let call = |req: Request<'_>| tcp_request(&topo.server, addr, &req).unwrap();
    let bearer = format!("Bearer {token}");
    let spec = json!({ "fault": "blackhole", "port": [P] }).to_string();

    // No token, a wrong one, a prefix of the right one, another scheme.
    for auth in [
        None,
        Some("Bearer wrong-token-wrong-token-xx".to_string()),
        Some(format!("Bearer {}", &token[..16])),
        Some(format!("Basic {token}")),
        Some(token.to_string()),
    ] {
        for req in [
            Request::new("GET", "/healthz"),
            Request::new("GET", "/v1/rules"),
            Request::new("POST", "/v1/rules").body(spec.as_bytes()),
            Request::new("DELETE", "/v1/rules"),
        ] {
            let req = match &auth {
                Some(a) => req.header("Authorization", a.clone()),
                None => req,
            };
            let what = format!("{} {} with {auth:?}", req.method, req.path);
            call(req).expect_problem(401);
            d.assert_healthy(&what);
        }
    }
    assert!(d.rules().is_empty(), "a rejected request changed the rules");

    // With the token.
    let h =
        call(Request::new("GET", "/healthz").header("Authorization", bearer.clone())).expect(200);
    assert_eq!(h["status"], "ok");
    let created = call(
        Request::new("POST", "/v1/rules")
            .body(spec.as_bytes())
            .header("Authorization", bearer.clone()),
    )
    .expect(201);
    // The same table as the Unix socket's.
    assert_eq!(d.rules()[0]["id"], created["id"]);
    // The daemon's own API port is guarded like ssh.
    let own = json!({ "fault": "blackhole", "port": [API_PORT] }).to_string();
    let detail = call(
        Request::new("POST", "/v1/rules")
            .body(own.as_bytes())
            .header("Authorization", bearer.clone()),
    )
    .expect_problem(403);
    assert!(detail.contains(&API_PORT.to_string()), "{detail}");
    // A rejected token is rejected before the body is looked at.
    call(Request::new("POST", "/v1/rules").body(b"{")).expect_problem(401);
    assert_eq!(
        call(Request::new("DELETE", "/v1/rules").header("Authorization", bearer)).expect(200),
        json!({ "removed": 1 })
    );
}

#[test]
fn tcp_listener_is_refused_without_a_good_token_file() {
    let topo = Topology::new("dapi-tok");
    // --listen without --token-file: a usage error.
    let mut d = Daemon::spawn(&topo.server, "notok", &["--listen", "127.0.0.1:7070"]);
    let (status, log) = d.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("token"), "{log}");
    // A token shorter than 16 characters.
    let short = TempFile::new("short-token", ".token", "short\n");
    let mut d = Daemon::spawn(
        &topo.server,
        "shorttok",
        &["--listen", "127.0.0.1:7070", "--token-file", short.as_str()],
    );
    let (status, log) = d.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("16"), "{log}");
    assert!(!d.socket().exists(), "a refused daemon left its socket");
}

#[test]
fn cli_adds_lists_and_removes_rules_through_the_daemon() {
    let topo = Topology::new("dapi-cli");
    let to_p = UdpPath::new(&topo, P);
    let d = Daemon::start(&topo.server, "cli", &[]);
    let sock = d.socket_str();

    // Returns at once (a standalone run would stay until Ctrl-C), printing the id.
    let started = Instant::now();
    let out = Launch::new(
        &topo.server,
        [
            "blackhole",
            "--port",
            &P.to_string(),
            "--proto",
            "udp",
            "--name",
            "cli-sink",
        ],
    )
    .socket(sock)
    .run();
    let took = started.elapsed();
    out.assert_success();
    assert!(took < Duration::from_secs(5), "took {took:?}: {out:?}");
    let line = out.stdout.trim();
    let id: u64 = line
        .strip_prefix("rule ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `rule ID added` line: {out:?}"));
    assert!(line.contains("faultbpf rm"), "{line}");
    let listed = d.rules();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], id);
    assert_eq!(listed[0]["name"], "cli-sink");
    assert_eq!(listed[0]["origin"], "api");
    assert_eq!(to_p.probe(10), 0, "the CLI's rule must act");

    // `rules`: a line for it.
    let out = Launch::new(&topo.server, ["rules"]).socket(sock).run();
    out.assert_success();
    let row = out
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&id.to_string()))
        .unwrap_or_else(|| panic!("rule {id} not listed: {out:?}"));
    assert!(
        row.contains("cli-sink") && row.contains(&P.to_string()) && row.contains("blackhole"),
        "{row}"
    );
    let out = Launch::new(&topo.server, ["rules", "--json"])
        .socket(sock)
        .run();
    out.assert_success();
    assert_eq!(out.json()["rules"][0]["id"], id, "{out:?}");

    // `stats`: the counters of what was sent.
    let out = Launch::new(&topo.server, ["stats", "--json"])
        .socket(sock)
        .run();
    out.assert_success();
    let st = &out.json()["rules"][0];
    assert_eq!(st["acted_packets"], 10, "{st}");
    let out = Launch::new(&topo.server, ["stats"]).socket(sock).run();
    out.assert_success();
    assert!(
        out.stdout
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&id.to_string()) && l.contains("10")),
        "{out:?}"
    );

    // Flags that belong to a standalone run are refused with a reason.
    let out = Launch::new(
        &topo.server,
        ["blackhole", "--port", "6000", "--iface", "veth-s"],
    )
    .socket(sock)
    .run();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("--standalone"), "{out:?}");

    // `rm ID`.
    let out = Launch::new(&topo.server, ["rm", &id.to_string()])
        .socket(sock)
        .run();
    out.assert_success();
    assert!(
        out.stdout.contains(&format!("removed rule {id}")),
        "{out:?}"
    );
    assert!(d.rules().is_empty());
    assert_eq!(to_p.probe(10), 10, "port {P} must heal after `rm`");
    let out = Launch::new(&topo.server, ["rm", &id.to_string()])
        .socket(sock)
        .run();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("404"), "{out:?}");
    let out = Launch::new(&topo.server, ["rules"]).socket(sock).run();
    out.assert_success();
    assert_eq!(out.stdout.trim(), "no rules", "{out:?}");

    // Every fault command goes through the daemon; `rm --all` clears them.
    for args in [
        &["reset", "--port", "6001"][..],
        &["hang", "--port", "6002"],
        &["corrupt", "--port", "6003", "--pct", "5"],
        &["mark", "--port", "6004", "--value", "0x42"],
        &["mark", "--port", "6005", "--ecn"],
        &["chaos", "--port", "6006", "--mix", "drop:20,reset:10"],
        &["blackhole", "--port", "6007", "--for", "1m", "--name", "x"],
    ] {
        let out = Launch::new(&topo.server, args).socket(sock).run();
        out.assert_success();
        assert!(out.stdout.starts_with("rule "), "{args:?}: {out:?}");
    }
    let faults: Vec<String> = d
        .rules()
        .iter()
        .map(|r| r["fault"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        faults,
        [
            "reset",
            "hang",
            "corrupt",
            "mark",
            "ecn",
            "chaos",
            "blackhole"
        ],
        "one rule per command, in order"
    );
    let out = Launch::new(&topo.server, ["rm", "--all"])
        .socket(sock)
        .run();
    out.assert_success();
    assert!(out.stdout.contains("removed 7 rule(s)"), "{out:?}");
    assert!(d.rules().is_empty());

    // --standalone ignores the daemon and runs in the foreground.
    let out = Launch::new(
        &topo.server,
        [
            "blackhole",
            "--port",
            &P.to_string(),
            "--iface",
            "veth-s",
            "--for",
            "1s",
            "--json",
        ],
    )
    .socket(sock)
    .standalone()
    .run();
    out.assert_success();
    assert!(out.stderr.contains("faultbpf: active:"), "{out:?}");
    assert_ne!(out.json()["attach"], "daemon", "{out:?}");
    assert!(
        d.rules().is_empty(),
        "--standalone must not add a daemon rule"
    );
    d.assert_healthy("the CLI session");
}

/// Sends `req` (over `send`) and records the answer for the OpenAPI check.
fn observe(
    checks: &mut Vec<ApiCheck>,
    route: &str,
    req: &Request<'_>,
    send: impl Fn(&Request<'_>) -> Response,
) -> Response {
    let r = send(req);
    checks.push(ApiCheck::response(route, req.method, &r));
    r
}

/// docs/openapi.yaml describes what the daemon really does: every answer's
/// status and content type is documented for its operation and its body
/// fits the documented schema (which forbids undocumented fields), and the
/// document's `RuleSpec` accepts the bodies the daemon accepts and refuses
/// the malformed ones it refuses.
#[test]
fn openapi_document_describes_every_answer() {
    const API_PORT: u16 = 7070;
    let doc = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.yaml");
    assert!(doc.is_file(), "{} is missing", doc.display());
    let token = "feedfacefeedfacefeedfacefeedface";
    let token_file = TempFile::new("oas-token", ".token", token);
    let topo = Topology::new("dapi-oas");
    let listen = format!("127.0.0.1:{API_PORT}");
    let d = Daemon::start(
        &topo.server,
        "oas",
        &[
            "--iface",
            "veth-s",
            "--listen",
            &listen,
            "--token-file",
            token_file.as_str(),
        ],
    );
    let unix = |req: &Request<'_>| d.request(req);
    let addr = listen.parse().unwrap();
    let tcp = |req: &Request<'_>| tcp_request(&topo.server, addr, req).unwrap();
    let mut checks = Vec::new();

    observe(
        &mut checks,
        "/healthz",
        &Request::new("GET", "/healthz"),
        unix,
    );
    observe(
        &mut checks,
        "/v1/rules",
        &Request::new("GET", "/v1/rules"),
        unix,
    );

    let pid = std::process::id();
    let accepted = [
        json!({ "fault": "blackhole", "port": [P] }),
        json!({
            "name": "every-field", "fault": "chaos", "mix": "drop:20,reset:10",
            "port": [5101, "5102-5103"], "dport": ["5104"], "sport": [5105], "proto": "udp",
            "peer": ["10.200.0.0/24", "fd00:200::/64"], "pct": 50, "per": "flow",
            "direction": "ingress", "fragments": true, "for": "30s",
        }),
        json!({ "fault": "mark", "mark": 66, "dport": [5106], "direction": "egress" }),
        json!({ "fault": "ecn", "sport": ["5107"], "per": "packet" }),
        json!({ "fault": "reset", "port": [22], "force": true, "proto": "tcp" }),
        json!({ "fault": "hang", "port": [5108], "owner_pid": pid }),
        json!({ "fault": "corrupt", "port": [5109], "pct": 0.5, "name": "a \"quoted\" name" }),
    ];
    let mut ids = Vec::new();
    for spec in &accepted {
        let text = spec.to_string();
        let r = observe(
            &mut checks,
            "/v1/rules",
            &Request::new("POST", "/v1/rules").body(text.as_bytes()),
            unix,
        );
        assert_eq!(r.status, 201, "{spec}: {r}");
        ids.push(rule_id(&r.json()));
        checks.push(ApiCheck::RuleSpec {
            body: spec.clone(),
            accepted: true,
        });
    }
    let refused = [
        json!({ "fault": "blackhole", "port": [P], "colour": "red" }),
        json!({ "fault": "blackhole", "port": [0] }),
        json!({ "fault": "blackhole", "port": [65536] }),
        json!({ "fault": "blackhole", "port": ["abc"] }),
        json!({ "fault": "blackhole", "port": [P], "pct": 101 }),
        json!({ "fault": "blackhole", "port": [P], "pct": -1 }),
        json!({ "fault": "blackhole", "port": [P], "pct": "all" }),
        json!({ "fault": "blackhole" }),
        json!({ "port": [P] }),
        json!({ "fault": "explode", "port": [P] }),
        json!({ "fault": "blackhole", "port": [P], "proto": "icmp" }),
        json!({ "fault": "blackhole", "port": [P], "fragments": "yes" }),
        json!({ "fault": "blackhole", "port": [P], "name": "" }),
        json!({ "fault": "blackhole", "port": [P], "name": "n".repeat(65) }),
        json!({ "fault": "mark", "port": [P], "mark": -1 }),
        json!([{ "fault": "blackhole", "port": [P] }]),
    ];
    for spec in &refused {
        let text = spec.to_string();
        let r = observe(
            &mut checks,
            "/v1/rules",
            &Request::new("POST", "/v1/rules").body(text.as_bytes()),
            unix,
        );
        assert_eq!(r.status, 400, "{spec}: {r}");
        checks.push(ApiCheck::RuleSpec {
            body: spec.clone(),
            accepted: false,
        });
    }
    for (body, status) in [
        (b"{".to_vec(), 400),
        (br#"{"fault":"blackhole","port":[22]}"#.to_vec(), 403),
        (
            format!(r#"{{"fault":"blackhole","port":[{API_PORT}]}}"#).into_bytes(),
            403,
        ),
        (
            format!(r#"{{"fault":"reset","port":[{P}]}}"#).into_bytes(),
            409,
        ),
        (vec![b' '; 2 << 20], 413),
    ] {
        let r = observe(
            &mut checks,
            "/v1/rules",
            &Request::new("POST", "/v1/rules").body(&body),
            unix,
        );
        assert_eq!(r.status, status, "{r}");
    }

    observe(
        &mut checks,
        "/v1/rules",
        &Request::new("GET", "/v1/rules"),
        unix,
    );
    observe(
        &mut checks,
        "/v1/stats",
        &Request::new("GET", "/v1/stats"),
        unix,
    );
    let m = observe(
        &mut checks,
        "/metrics",
        &Request::new("GET", "/metrics"),
        unix,
    );
    assert_eq!(m.status, 200);
    for id in &ids {
        let path = format!("/v1/rules/{id}");
        observe(
            &mut checks,
            "/v1/rules/{id}",
            &Request::new("GET", &path),
            unix,
        );
    }
    let first = format!("/v1/rules/{}", ids[0]);
    for method in ["DELETE", "GET", "DELETE"] {
        observe(
            &mut checks,
            "/v1/rules/{id}",
            &Request::new(method, &first),
            unix,
        );
    }
    observe(
        &mut checks,
        "/v1/rules/{id}",
        &Request::new("GET", "/v1/rules/x"),
        unix,
    );

    // The TCP listener: 401 on every operation without the token.
    let some = format!("/v1/rules/{}", ids[1]);
    for (route, method, path) in [
        ("/healthz", "GET", "/healthz"),
        ("/v1/rules", "GET", "/v1/rules"),
        ("/v1/rules", "POST", "/v1/rules"),
        ("/v1/rules", "DELETE", "/v1/rules"),
        ("/v1/rules/{id}", "GET", some.as_str()),
        ("/v1/rules/{id}", "DELETE", some.as_str()),
        ("/v1/stats", "GET", "/v1/stats"),
        ("/metrics", "GET", "/metrics"),
    ] {
        let req = Request::new(method, path);
        let req = if method == "POST" {
            req.body(br#"{"fault":"blackhole","port":[6000]}"#)
        } else {
            req
        };
        let r = observe(&mut checks, route, &req, tcp);
        assert_eq!(
            r.status, 401,
            "{method} {path} over TCP without a token: {r}"
        );
    }
    let with_token =
        Request::new("GET", "/v1/rules").header("Authorization", format!("Bearer {token}"));
    assert_eq!(
        observe(&mut checks, "/v1/rules", &with_token, tcp).status,
        200
    );
    observe(
        &mut checks,
        "/v1/rules",
        &Request::new("DELETE", "/v1/rules"),
        unix,
    );

    let wrong = check_openapi(&doc, &checks);
    assert!(
        wrong.is_empty(),
        "docs/openapi.yaml disagrees with the daemon ({} of {} checks):\n{}",
        wrong.len(),
        checks.len(),
        wrong.join("\n")
    );
}

/// Rule slots (the kernel's per-rule counters) are finite: when every one
/// is taken, the next rule is a 507 problem that says so, the daemon keeps
/// serving, and a freed slot is usable again.
#[test]
fn running_out_of_rule_slots_is_a_507_until_one_is_freed() {
    const SLOTS: u16 = 4096;
    let topo = Topology::new("dapi-slots");
    let d = Daemon::start(&topo.server, "slots", &["--iface", "veth-s"]);
    let started = Instant::now();
    let mut first = None;
    for i in 0..SLOTS {
        let rule = d.add_rule(&json!({ "fault": "blackhole", "port": [10_000 + i] }));
        first.get_or_insert(rule_id(&rule));
    }
    eprintln!("{SLOTS} rules added in {:?}", started.elapsed());
    let spec = json!({ "fault": "blackhole", "port": [20_000] });
    let detail = d
        .post("/v1/rules", spec.to_string().as_bytes())
        .expect_problem(507);
    assert!(
        detail.contains(&SLOTS.to_string()) && detail.contains("remove"),
        "{detail}"
    );
    d.assert_healthy("the 507");
    assert_eq!(d.rules().len(), usize::from(SLOTS));

    // Give the first rule's counters something, free its slot, and take
    // it again: the only free slot, so the new rule gets it, from zero.
    let id = first.unwrap();
    let to_first = UdpPath::new(&topo, 10_000);
    assert_eq!(to_first.probe(5), 0, "port 10000 is blackholed");
    let counted = d.stats_of(id).map(|s| s["matched_packets"].clone());
    assert!(
        counted
            .as_ref()
            .and_then(Value::as_u64)
            .is_some_and(|n| n >= 5),
        "{counted:?}"
    );
    assert_eq!(d.delete(&format!("/v1/rules/{id}")).status, 200);
    let again = d.add_rule(&spec);
    assert_eq!(
        d.stats_of(rule_id(&again))
            .map(|s| s["matched_packets"].clone()),
        Some(json!(0)),
        "a reused slot starts from zero"
    );
}
