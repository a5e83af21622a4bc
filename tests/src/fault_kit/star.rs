//! Three hosts: a server namespace with one veth pair to each of two client
//! namespaces, A and B, on separate subnets, so a rule can tell the clients
//! apart by address (`--peer`).
//!
//! | link | client addresses               | server side                        |
//! |------|--------------------------------|------------------------------------|
//! | A    | 10.200.1.1/24, fd00:200::1:1/112 | `veth-a` 10.200.1.2, fd00:200::1:2 |
//! | B    | 10.200.2.1/24, fd00:200::2:1/112 | `veth-b` 10.200.2.2, fd00:200::2:2 |
//!
//! The IPv6 subnets are /112s inside fd00:200::/64, the only IPv6 range the
//! tests use. Each client's end is called `veth-c` in its own namespace.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{CLIENT_IF, Netns};

/// The server's veth towards client A.
pub const STAR_A_IF: &str = "veth-a";
/// The server's veth towards client B.
pub const STAR_B_IF: &str = "veth-b";

/// One client of a [`Star`] and the addresses of its link.
pub struct StarClient {
    pub ns: Netns,
    /// The client's own addresses.
    pub v4: IpAddr,
    pub v6: IpAddr,
    /// The server's addresses on this client's link.
    pub server_v4: IpAddr,
    pub server_v6: IpAddr,
    /// The link's prefixes, in `--peer` syntax.
    pub prefix_v4: String,
    pub prefix_v6: String,
}

/// A server and two clients (see the module docs); all removed on drop.
pub struct Star {
    pub server: Netns,
    pub a: StarClient,
    pub b: StarClient,
}

impl Star {
    pub fn new(tag: &str) -> Self {
        let server = Netns::new(&format!("{tag}-s"));
        server.ip(&["link", "set", "lo", "up"]);
        let a = link(&server, &format!("{tag}-a"), STAR_A_IF, 1);
        let b = link(&server, &format!("{tag}-b"), STAR_B_IF, 2);
        Star { server, a, b }
    }
}

fn link(server: &Netns, tag: &str, server_if: &str, n: u8) -> StarClient {
    let ns = Netns::new(tag);
    // Created in the client namespace with the peer placed directly in the
    // server's: no veth ever appears in the root namespace.
    ns.ip(&[
        "link",
        "add",
        CLIENT_IF,
        "type",
        "veth",
        "peer",
        "name",
        server_if,
        "netns",
        server.name(),
    ]);
    let v4 = |host: u8| Ipv4Addr::new(10, 200, n, host);
    let v6 = |host: u16| Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, u16::from(n), host);
    for (netns, ifname, host) in [(&ns, CLIENT_IF, 1), (server, server_if, 2)] {
        netns.ip(&["link", "set", "lo", "up"]);
        netns.ip(&["addr", "add", &format!("{}/24", v4(host)), "dev", ifname]);
        netns.ip(&[
            "addr",
            "add",
            &format!("{}/112", v6(u16::from(host))),
            "dev",
            ifname,
            "nodad",
        ]);
        netns.ip(&["link", "set", ifname, "up"]);
    }
    ns.wait_link_up(CLIENT_IF);
    server.wait_link_up(server_if);
    StarClient {
        ns,
        v4: IpAddr::V4(v4(1)),
        v6: IpAddr::V6(v6(1)),
        server_v4: IpAddr::V4(v4(2)),
        server_v6: IpAddr::V6(v6(2)),
        prefix_v4: format!("10.200.{n}.0/24"),
        prefix_v6: format!("fd00:200::{n}:0/112"),
    }
}
