//! `blackhole`: the dependency's packets vanish, as if its host were
//! unplugged or a firewall silently dropped them.
//!
//! What the application sees: a `connect()` hangs until its own timeout (or
//! the kernel's, about 2 minutes for TCP) and an established connection
//! stalls, its sends still "succeed" while TCP retransmits with exponential
//! backoff; UDP datagrams are lost. Nothing is answered, so no error comes
//! back quickly: this is the failure that finds missing timeouts.
//!
//! Hooks: tc ingress and egress, and XDP ingress. At egress the drop is
//! hidden from the local stack (see `faultbpf-ebpf/src/actions.rs`), so the
//! local sender backs off as after real loss instead of seeing a local send
//! error.
//!
//! Knobs: `--pct` (percent of matched packets dropped, 0 to 100, default
//! 100: below 100 this is packet loss rather than a blackhole).

use faultbpf_common::FaultKind;

use super::{Fault, FaultDef};

pub static DEF: FaultDef = FaultDef {
    name: "blackhole",
    command: "blackhole",
    about: "Drop the packets of a port, as if the dependency's host vanished",
    long_about: "Drop the packets of a port, as if the dependency's host vanished\n\n\
        The application sees what a dead host or a silent firewall gives: connect() \
        hangs until a timeout, an established connection stalls while TCP retransmits \
        with backoff, UDP datagrams are lost. Nothing answers, so nothing fails fast: \
        this is the fault that finds missing timeouts. With --pct below 100 it is \
        packet loss instead.\n\n\
        Runs in the foreground until Ctrl-C, SIGTERM or --for, then removes \
        everything and prints the counters.",
    examples: "Examples:\n  \
        faultbpf blackhole --port 5672                        both directions, tcp and udp, until Ctrl-C\n  \
        faultbpf blackhole --port 5432 --proto tcp --for 10s  a 10 s outage, then heal by itself\n  \
        faultbpf blackhole --port 8080 --pct 25 --iface eth1  lose a quarter of the packets on eth1\n  \
        faultbpf blackhole --port 9000 --direction egress     only what this host sends",
    verb: "dropped",
    kind: FaultKind::Drop,
    xdp: true,
    xdp_refusal: "",
    udp: true,
    params: &[],
    mix_action: Some("drop"),
    build: |_| Ok(Fault::Blackhole),
};
