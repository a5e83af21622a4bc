//! `dns`: name lookups fail the way a broken resolver makes them fail.
//!
//! What the application sees: with `--rcode nxdomain` the name does not
//! exist (`getaddrinfo` returns EAI_NONAME, `dig` status NXDOMAIN); with
//! `servfail` the resolver failed (EAI_AGAIN, SERVFAIL); with `refused` it
//! will not answer (REFUSED). Without `--rcode` the query vanishes and the
//! lookup times out. The answer comes from the kernel, built from the
//! query itself (see `faultbpf-ebpf/src/fault/dns.rs`): the resolver never
//! sees matched queries.
//!
//! Matching: UDP queries to port 53 by default (`--port`/`--dport` to
//! change), IPv4 and IPv6, at ingress on the resolver's host or at egress
//! on the client's. `--domain SUFFIX` (repeatable) takes the name and any
//! name under it, case-insensitively (`--domain example.com` takes
//! `example.com` and `www.Example.COM`, not `myexample.com`); without it,
//! every query. Malformed queries pass untouched.
//!
//! Hooks: tc ingress and egress (not XDP).
//!
//! Knobs: `rcode` (`nxdomain`, `servfail`, `refused`), `domain` (names, at
//! most 64 per rule), `--pct`.

use faultbpf_common::{
    DNS_MAX_NAME, DNS_RCODE_NXDOMAIN, DNS_RCODE_REFUSED, DNS_RCODE_SERVFAIL, FaultKind,
    dns_hash_step,
};
use serde::{Deserialize, Serialize};

use super::{Fault, FaultDef, Param};
use crate::spec::{RuleSpec, SpecError};

pub static DEF: FaultDef = FaultDef {
    name: "dns",
    command: "dns",
    about: "Answer DNS queries from the kernel with NXDOMAIN, SERVFAIL or REFUSED",
    long_about: "Answer DNS queries from the kernel with NXDOMAIN, SERVFAIL or REFUSED\n\n\
        Matched queries (UDP port 53 unless --port/--dport says otherwise, IPv4 and \
        IPv6) are turned into their own answer with --rcode and sent back, so the \
        resolver never sees them: lookups fail with \"name not found\" (nxdomain), \
        \"try again\" (servfail) or a refusal. Without --rcode they vanish and lookups \
        time out. --domain limits it to names under a suffix.",
    examples: "Examples:\n  \
        faultbpf dns --rcode nxdomain --domain db.internal   db.internal and *.db.internal vanish from DNS\n  \
        faultbpf dns --rcode servfail --pct 30               30 % of all lookups fail\n  \
        faultbpf dns --domain example.com                    lookups under example.com time out",
    verb: "answered or dropped",
    kind: FaultKind::Dns,
    xdp: false,
    xdp_refusal: "cannot answer DNS queries: faultbpf rewrites them on tc only, where \
        the skb says how to fix their checksums",
    udp: true,
    params: &[
        Param {
            field: "rcode",
            unit: "nxdomain, servfail or refused (none: queries vanish)",
        },
        Param {
            field: "domain",
            unit: "names; each matches itself and every name under it",
        },
    ],
    mix_action: None,
    build,
};

/// The port a `dns` rule takes when it names none.
pub const DEFAULT_PORT: u16 = 53;
/// Most `--domain` suffixes per rule.
pub const MAX_DOMAINS: usize = 64;

/// The response code a `dns` rule answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Rcode {
    /// The name does not exist (EAI_NONAME).
    Nxdomain,
    /// The resolver failed (EAI_AGAIN).
    Servfail,
    /// The resolver refuses to answer.
    Refused,
}

impl Rcode {
    /// The code in the DNS header.
    pub fn code(self) -> u8 {
        match self {
            Self::Nxdomain => DNS_RCODE_NXDOMAIN,
            Self::Servfail => DNS_RCODE_SERVFAIL,
            Self::Refused => DNS_RCODE_REFUSED,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Nxdomain => "nxdomain",
            Self::Servfail => "servfail",
            Self::Refused => "refused",
        }
    }
}

/// A validated `dns` fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsParams {
    /// `None`: queries vanish.
    pub rcode: Option<Rcode>,
    /// Lower-case names without the final dot; empty: every name.
    pub domains: Vec<String>,
}

impl DnsParams {
    /// "nxdomain for db.internal", for descriptions.
    pub fn describe(&self) -> String {
        let what = self.rcode.map_or("drop", Rcode::label);
        if self.domains.is_empty() {
            what.to_string()
        } else {
            format!("{what} for {}", self.domains.join(", "))
        }
    }

    /// Writes `rcode` and `domain` (the inverse of `build`).
    pub fn write_params(&self, spec: &mut RuleSpec) {
        spec.rcode = self.rcode;
        spec.domain = self.domains.clone();
    }
}

fn build(spec: &RuleSpec) -> Result<Fault, SpecError> {
    if spec.domain.len() > MAX_DOMAINS {
        return Err(SpecError::new(
            "domain",
            format!(
                "{} domains; at most {MAX_DOMAINS} per rule",
                spec.domain.len()
            ),
        ));
    }
    let mut domains = Vec::new();
    for d in &spec.domain {
        let name = domain(d).map_err(|e| SpecError::new("domain", e))?;
        if !domains.contains(&name) {
            domains.push(name);
        }
    }
    Ok(Fault::Dns(DnsParams {
        rcode: spec.rcode,
        domains,
    }))
}

/// A `--domain` value, checked and lower-cased, without the final dot.
pub fn domain(s: &str) -> Result<String, String> {
    let name = s.trim().trim_end_matches('.').to_ascii_lowercase();
    let bad = |why: &str| format!("`{s}` is not a domain name: {why} (e.g. db.internal)");
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if wire(&name).len() > DNS_MAX_NAME {
        return Err(bad("longer than 255 bytes in DNS form"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(bad("each label has 1 to 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad("letters, digits, '-' and '_' only"));
        }
    }
    Ok(name)
}

/// The name in DNS wire form: length-prefixed labels and a final 0.
fn wire(name: &str) -> Vec<u8> {
    let mut w = Vec::new();
    for label in name.split('.').filter(|l| !l.is_empty()) {
        w.push(label.len() as u8);
        w.extend_from_slice(label.as_bytes());
    }
    w.push(0);
    w
}

/// The `DNS_SUFFIXES` hash of a domain: `dns_hash_step` over its wire
/// form, from the end, as the kernel hashes a query name's suffixes.
pub fn suffix_hash(name: &str) -> u64 {
    wire(name).iter().rev().fold(0, |h, &c| dns_hash_step(h, c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_checked_and_folded() {
        assert_eq!(domain("Example.COM."), Ok("example.com".into()));
        assert!(domain("").unwrap_err().contains("empty"));
        assert!(domain("a..b").unwrap_err().contains("`a..b`"));
        assert!(domain(&"a".repeat(64)).unwrap_err().contains("63"));
        assert!(domain("a b").is_err());
        let long = vec!["abcdefghi"; 26].join(".");
        assert!(domain(&long).unwrap_err().contains("255"));
    }

    #[test]
    fn suffix_hash_is_the_hash_of_the_name_s_tail() {
        // The kernel hashes a query name backwards and looks the hash up
        // at each label start: the hash at "example.com" inside
        // "www.Example.com" must be the domain's.
        let q = wire("www.Example.com");
        let mut h = 0;
        let mut at_label = Vec::new();
        for (i, &c) in q.iter().enumerate().rev() {
            h = dns_hash_step(h, c);
            if i == 0 || i == 4 || i == 12 {
                at_label.push(h);
            }
        }
        assert!(at_label.contains(&suffix_hash("example.com")));
        assert!(at_label.contains(&suffix_hash("com")));
        assert!(!at_label.contains(&suffix_hash("ample.com")));
    }

    #[test]
    fn dns_spec_round_trips() {
        let mut spec = RuleSpec::new("dns");
        spec.rcode = Some(Rcode::Servfail);
        spec.domain = vec!["DB.internal".into(), "db.internal.".into()];
        let Fault::Dns(d) = build(&spec).unwrap() else {
            panic!()
        };
        assert_eq!(d.domains, ["db.internal"]);
        assert_eq!(d.describe(), "servfail for db.internal");
        let mut back = RuleSpec::new("dns");
        d.write_params(&mut back);
        assert_eq!(build(&back).unwrap(), Fault::Dns(d));
    }
}
