//! What the kernel of a test namespace says about the packets it got:
//! SNMP counters (`nstat`), checksum offload (`ethtool`), nftables counters.

use std::collections::BTreeMap;

use crate::{Netns, run_checked};

/// The kernel's checksum-error counters (`nstat` names): a packet whose
/// TCP, UDP or ICMP checksum is wrong is dropped and counted in one of them.
pub const CSUM_ERROR_COUNTERS: [&str; 5] = [
    "TcpInCsumErrors",
    "UdpInCsumErrors",
    "Udp6InCsumErrors",
    "IcmpInCsumErrors",
    "Icmp6InCsumErrors",
];

/// Turns transmit checksum offload off on `ifname` (`ethtool -K IF tx off`),
/// so the sender computes every checksum in software and the receiving side
/// verifies it: a packet faultbpf left with a wrong checksum is then dropped
/// and counted instead of slipping through as "checksum to be done".
pub fn tx_checksum_off(ns: &Netns, ifname: &str) {
    run_checked(ns.command("ethtool").args(["-K", ifname, "tx", "off"]));
}

/// Every SNMP/netstat counter of `ns` (`nstat -azs --json`: absolute values,
/// zeros included, no history file touched).
pub fn nstat(ns: &Netns) -> BTreeMap<String, u64> {
    let out = run_checked(ns.command("nstat").args(["-azs", "--json"]));
    let json: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("nstat --json ({e}): {out}"));
    json["kernel"]
        .as_object()
        .unwrap_or_else(|| panic!("no \"kernel\" object in nstat output: {out}"))
        .iter()
        .filter_map(|(name, value)| Some((name.clone(), value.as_u64()?)))
        .collect()
}

/// A snapshot of [`CSUM_ERROR_COUNTERS`] in one namespace.
pub struct CsumErrors {
    ns_name: String,
    before: BTreeMap<String, u64>,
}

impl CsumErrors {
    /// Reads the counters now.
    pub fn snapshot(ns: &Netns) -> Self {
        CsumErrors {
            ns_name: ns.name().to_owned(),
            before: read_csum(ns),
        }
    }

    /// Panics if any checksum-error counter of `ns` grew since the snapshot.
    pub fn assert_unchanged(&self, ns: &Netns) {
        assert_eq!(ns.name(), self.ns_name, "snapshot of another namespace");
        let after = read_csum(ns);
        let grown: Vec<String> = after
            .iter()
            .filter(|(name, value)| **value != self.before[*name])
            .map(|(name, value)| format!("{name}: {} -> {value}", self.before[name]))
            .collect();
        assert!(
            grown.is_empty(),
            "checksum errors in {}: {} (a packet left by faultbpf had a wrong checksum)",
            self.ns_name,
            grown.join(", ")
        );
    }
}

fn read_csum(ns: &Netns) -> BTreeMap<String, u64> {
    let all = nstat(ns);
    CSUM_ERROR_COUNTERS
        .iter()
        .map(|&name| {
            let value = *all
                .get(name)
                .unwrap_or_else(|| panic!("nstat in {} has no {name}", ns.name()));
            (name.to_owned(), value)
        })
        .collect()
}

/// Runs `nft ARGS..` inside `ns` and returns its stdout.
pub fn nft(ns: &Netns, args: &[&str]) -> String {
    run_checked(ns.command("nft").args(args))
}

/// The packet count of the first `counter` statement of the ruleset in `ns`
/// (`nft -j list ruleset`).
pub fn nft_counter_packets(ns: &Netns) -> u64 {
    let out = nft(ns, &["-j", "list", "ruleset"]);
    let json: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("nft -j ({e}): {out}"));
    json["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["rule"]["expr"].as_array())
        .flatten()
        .find_map(|expr| expr["counter"]["packets"].as_u64())
        .unwrap_or_else(|| panic!("no counter in the ruleset of {}: {out}", ns.name()))
}
