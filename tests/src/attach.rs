//! What is attached to an interface's tc hooks, read from the kernel (TCX via
//! aya's `query_tcx`, netlink filters and qdiscs via `tc`), so tests can
//! check that faultbpf attached where it said and left nothing behind.

use aya::{
    programs::{SchedClassifier, tc::TcAttachType},
    util::KernelVersion,
};

use crate::Netns;

/// The names faultbpf gives its tc programs (TCX program and netlink filter
/// names, see docs/cli-contract.md).
pub const INGRESS_PROGRAM: &str = "faultbpf_in";
pub const EGRESS_PROGRAM: &str = "faultbpf_out";

/// faultbpf's program on `hook`.
pub fn program_name(hook: TcAttachType) -> &'static str {
    match hook {
        TcAttachType::Egress => EGRESS_PROGRAM,
        _ => INGRESS_PROGRAM,
    }
}

/// Names of the TCX programs on `ifname`'s `hook` in `ns`; none on a
/// kernel without TCX (before 6.6), where the query itself fails.
pub fn tcx_program_names(ns: &Netns, ifname: &str, hook: TcAttachType) -> Vec<String> {
    if !kernel_has_tcx() {
        return Vec::new();
    }
    // The query resolves the ifindex in the calling thread's namespace.
    ns.run(|| {
        let (_, programs) = SchedClassifier::query_tcx(ifname, hook)
            .unwrap_or_else(|e| panic!("query_tcx {ifname} {hook:?} in {}: {e}", ns.name()));
        programs
            .iter()
            .map(|p| p.name_as_str().unwrap_or("<unnamed>").to_owned())
            .collect()
    })
}

/// TCX links came with Linux 6.6.
pub fn kernel_has_tcx() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}

/// `tc filter show dev IF ingress|egress` (empty when there are none).
pub fn tc_filters(ns: &Netns, ifname: &str, hook: &str) -> String {
    ns.tc(&["filter", "show", "dev", ifname, hook])
}

/// True if `ifname` has a clsact qdisc.
pub fn has_clsact(ns: &Netns, ifname: &str) -> bool {
    ns.tc(&["qdisc", "show", "dev", ifname]).contains("clsact")
}

/// Panics unless `ifnames` in `ns` carry no TCX program, no tc filter and
/// no clsact qdisc. The test namespaces start with none, so anything found
/// was left by faultbpf.
pub fn assert_nothing_attached(ns: &Netns, ifnames: &[&str]) {
    let mut left = Vec::new();
    for &ifname in ifnames {
        for hook in [TcAttachType::Ingress, TcAttachType::Egress] {
            let names = tcx_program_names(ns, ifname, hook);
            if !names.is_empty() {
                left.push(format!("{ifname} {hook:?}: TCX programs {names:?}"));
            }
        }
        for hook in ["ingress", "egress"] {
            let filters = tc_filters(ns, ifname, hook);
            if !filters.trim().is_empty() {
                left.push(format!("{ifname} {hook}: tc filters:\n{filters}"));
            }
        }
        if has_clsact(ns, ifname) {
            left.push(format!("{ifname}: clsact qdisc"));
        }
    }
    assert!(
        left.is_empty(),
        "left attached after faultbpf exited:\n{}",
        left.join("\n")
    );
}
