//! Issue 3, `--peer`: a rule can partition a server from one host or
//! prefix and leave the others alone. Three namespaces: a server and two
//! clients, A and B, on their own links and subnets. With faultbpf's
//! blackhole on the server (all its interfaces), a connection from a named
//! peer times out while the same port answers the other client, and the
//! named client's other address family, over IPv4 and IPv6, with host
//! addresses, prefixes and several `--peer` at once.

use std::{net::IpAddr, net::SocketAddr, time::Duration};

use faultbpf_tests::{
    Launch,
    fault_kit::{EchoServer, Star, StarClient, connect_timed, exchange},
};

const P: u16 = 5000;

/// Which of a client's addresses a rule cuts.
#[derive(Clone, Copy)]
struct Cut {
    v4: bool,
    v6: bool,
}

const NONE: Cut = Cut {
    v4: false,
    v6: false,
};

#[test]
fn peer_ipv4_host() {
    partition(
        "peer-h4",
        |star| vec![star.a.v4.to_string()],
        Cut {
            v4: true,
            v6: false,
        },
        NONE,
    );
}

#[test]
fn peer_ipv6_prefix() {
    partition(
        "peer-p6",
        |star| vec![star.a.prefix_v6.clone()],
        Cut {
            v4: false,
            v6: true,
        },
        NONE,
    );
}

#[test]
fn peer_repeated_ipv4_prefix_and_ipv6_prefix() {
    partition(
        "peer-mix",
        |star| vec![star.a.prefix_v4.clone(), star.b.prefix_v6.clone()],
        Cut {
            v4: true,
            v6: false,
        },
        Cut {
            v4: false,
            v6: true,
        },
    );
}

fn partition(tag: &str, peers: impl Fn(&Star) -> Vec<String>, cut_a: Cut, cut_b: Cut) {
    let star = Star::new(tag);
    let echo = EchoServer::tcp(&star.server, SocketAddr::new("::".parse().unwrap(), P));
    let targets =
        |client: &StarClient, cut: Cut| [(client.server_v4, cut.v4), (client.server_v6, cut.v6)];
    for client in [&star.a, &star.b] {
        for (server, _) in targets(client, NONE) {
            assert!(
                answers(client, server),
                "before the fault, {} to {server}",
                client.ns.name()
            );
        }
    }

    let peers = peers(&star);
    let mut args = vec!["--port".to_owned(), P.to_string(), "--json".to_owned()];
    for peer in &peers {
        args.extend(["--peer".to_owned(), peer.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut fb = Launch::new(&star.server, ["blackhole"])
        .args(&args)
        .standalone()
        .start();
    let cmd = fb.command().to_owned();
    let mut wrong = Vec::new();
    let mut expected_cuts = 0;
    for (name, client, cut) in [("A", &star.a, cut_a), ("B", &star.b, cut_b)] {
        for (server, should_cut) in targets(client, cut) {
            let from = if server.is_ipv6() {
                client.v6
            } else {
                client.v4
            };
            let answered = answers(client, server);
            expected_cuts += u64::from(should_cut);
            if answered == should_cut {
                wrong.push(format!(
                    "client {name} ({from} -> {server}): {}",
                    if should_cut { "still answered" } else { "cut" }
                ));
            }
        }
    }
    let exit = fb.finish();
    assert!(wrong.is_empty(), "under `{cmd}`:\n  {}", wrong.join("\n  "));
    let rule = exit.rule(0);
    assert!(
        rule.acted_packets >= expected_cuts,
        "one SYN per cut connection at least: {rule:?}"
    );
    assert!(echo.accepted() > 0);
}

/// True if a connection from `client` to `server` opens within 1 s and
/// echoes.
fn answers(client: &StarClient, server: IpAddr) -> bool {
    let (stream, _) = connect_timed(
        &client.ns,
        SocketAddr::new(server, P),
        Duration::from_secs(1),
    );
    match stream {
        Ok(mut stream) => {
            exchange(&mut stream, b"ping", Duration::from_secs(1)).is_ok_and(|r| r == b"ping")
        }
        Err(_) => false,
    }
}
