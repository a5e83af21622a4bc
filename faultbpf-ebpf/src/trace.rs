//! `faultbpf trace`: one `TraceEvent` per packet on the watched ports (or
//! on every port, rate-limited), saying which rule it met and why it was or
//! was not faulted, written to a ring buffer the tracer reads.
//!
//! Off (the `TRACE` entry's `until_ns` is 0), a packet pays one array load
//! here. On, a packet also reads the coarse clock (the tracer's lease: a
//! tracer killed by SIGKILL stops renewing it and tracing ends by itself
//! within `TRACE_LEASE_NS`), one word of the port bitmap, its CPU's rate
//! limiter (`TRACE_EVENTS_PER_SEC`), and reserves and submits one event.

use aya_ebpf::{
    helpers::bpf_ktime_get_coarse_ns,
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
};
use faultbpf_common::{
    TRACE_EVENTS_BYTES, TRACE_EVENTS_PER_SEC, TRACE_PORT_WORDS, TraceConf, TraceEvent, TraceRate,
    trace_reason::NOT_PARSED,
};

use crate::{
    flow::Flow,
    hook::Hook,
    matcher::{self, Miss},
};

/// The tracer's switch and lease (`faultbpf_common::TRACE_MAP`).
#[map]
pub static TRACE: Array<TraceConf> = Array::with_max_entries(1, 0);

/// Watched ports, one bit each.
#[map]
pub static TRACE_PORTS: Array<u64> = Array::with_max_entries(TRACE_PORT_WORDS, 0);

/// The events.
#[map]
pub static TRACE_EVENTS: RingBuf = RingBuf::with_byte_size(TRACE_EVENTS_BYTES, 0);

/// Each CPU's rate limiter.
#[map]
pub static TRACE_RATE: PerCpuArray<TraceRate> = PerCpuArray::with_max_entries(1, 0);

/// What became of a packet: a `trace_reason`, the rule's slot (`u32::MAX`:
/// none), and the `FaultKind` acted (0: none).
#[derive(Clone, Copy)]
pub struct Outcome {
    pub reason: u8,
    pub slot: u32,
    pub kind: u8,
}

impl Outcome {
    #[inline(always)]
    fn packed(self) -> u64 {
        u64::from(self.reason) | u64::from(self.kind) << 8 | u64::from(self.slot) << 32
    }

    #[inline(always)]
    fn unpack(v: u64) -> Self {
        Outcome {
            reason: v as u8,
            kind: (v >> 8) as u8,
            slot: (v >> 32) as u32,
        }
    }

    #[inline(always)]
    pub fn missed(m: Miss) -> Self {
        Outcome {
            reason: m.reason,
            slot: m.slot,
            kind: 0,
        }
    }
}

/// Traces a parsed packet, if a tracer watches.
#[inline(always)]
pub fn packet(ifindex: u32, hook: u8, flow: &Flow, outcome: Outcome, verdict: i32) {
    if is_off() {
        return;
    }
    emit(ifindex, hook, Some(flow), outcome.packed(), verdict);
}

/// Traces a parsed packet no rule applied to, if a tracer watches: only
/// then is the lookup redone to say why.
#[inline(always)]
pub fn missed(ifindex: u32, hook: u8, flow: &Flow, at: Hook, verdict: i32) {
    if is_off() {
        return;
    }
    let outcome = Outcome::missed(matcher::explain(flow, at));
    emit(ifindex, hook, Some(flow), outcome.packed(), verdict);
}

/// Traces a packet the parser gave up on, if a tracer watches every port.
#[inline(always)]
pub fn unparsed(ifindex: u32, hook: u8, verdict: i32) {
    if is_off() {
        return;
    }
    let outcome = Outcome {
        reason: NOT_PARSED,
        slot: u32::MAX,
        kind: 0,
    };
    emit(ifindex, hook, None, outcome.packed(), verdict);
}

/// Set to 1 at load time by a faultbpf started traceable (`--traceable`,
/// and always the daemon). In `.rodata`, which aya freezes, so the
/// verifier knows its value: at 0 every trace point is dead code it
/// neither walks nor keeps, and the programs are what they were without
/// tracing (the trace points would double the verifier's work, 64k to
/// 126k instructions per tc program on 6.18).
#[unsafe(no_mangle)]
static TRACEABLE: u8 = 0;

/// The per-packet cost with no tracer: nothing when not traceable, one
/// load when traceable.
#[inline(always)]
fn is_off() -> bool {
    // SAFETY: a plain read of a static; volatile so the compiler keeps the
    // load for the loader's value instead of folding in the 0 above.
    if unsafe { core::ptr::read_volatile(&TRACEABLE) } == 0 {
        return true;
    }
    TRACE.get(0).is_none_or(|c| c.until_ns == 0)
}

/// Not inlined: verified as one subprogram, not once more on every path
/// of the parser that reaches a trace point. Five scalar arguments (the
/// outcome packed), the most a BPF call takes in registers.
#[inline(never)]
fn emit(ifindex: u32, hook: u8, flow: Option<&Flow>, outcome: u64, verdict: i32) {
    let outcome = Outcome::unpack(outcome);
    let Some(conf) = TRACE.get(0) else {
        return;
    };
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if now >= conf.until_ns {
        return;
    }
    if conf.all_ports == 0 {
        let Some(f) = flow else {
            return;
        };
        if !watched(f.dport_be) && !watched(f.sport_be) {
            return;
        }
    }
    let Some(rate) = TRACE_RATE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's own entry; a program run is not preempted by
    // another run on the same CPU for this hook.
    let rate = unsafe { &mut *rate };
    if now.wrapping_sub(rate.window_ns) >= 1_000_000_000 {
        rate.window_ns = now;
        rate.events = 0;
    }
    if rate.events >= TRACE_EVENTS_PER_SEC {
        rate.suppressed += 1;
        return;
    }
    rate.events += 1;
    let Some(mut entry) = TRACE_EVENTS.reserve::<TraceEvent>(0) else {
        return;
    };
    let e = entry.as_mut_ptr();
    // SAFETY: `e` points at a reserved, writable `TraceEvent` in the ring
    // buffer; every field is written before `submit` makes it visible.
    unsafe {
        (*e).ifindex = ifindex;
        (*e).slot = outcome.slot;
        (*e).verdict = verdict;
        (*e).hook = hook;
        (*e).reason = outcome.reason;
        (*e).kind = outcome.kind;
        match flow {
            Some(f) => {
                (*e).saddr = f.saddr.0;
                (*e).daddr = f.daddr.0;
                (*e).sport_be = f.sport_be;
                (*e).dport_be = f.dport_be;
                (*e).proto = f.proto;
            }
            None => {
                (*e).saddr = [0; 16];
                (*e).daddr = [0; 16];
                (*e).sport_be = 0;
                (*e).dport_be = 0;
                (*e).proto = 0;
            }
        }
    }
    entry.submit(0);
}

/// Whether `port_be`'s bit is set in `TRACE_PORTS`.
#[inline(always)]
fn watched(port_be: u16) -> bool {
    let port = u16::from_be(port_be) as u32;
    TRACE_PORTS
        .get(port / 64)
        .is_some_and(|w| (w >> (port % 64)) & 1 != 0)
}
