//! `faultbpf http`'s kernel half: an `sk_lookup` program that gives
//! selected new TCP connections to one port to the HTTP responder's
//! listening socket (`RESPONDER`), so only they pass through faultbpf;
//! every other connection finds the real server as if we were not there.
//!
//! Runs once per new connection (SYN), not per packet: steering costs an
//! established connection nothing. Its maps live here, beside the one
//! program that reads them, apart from the tc programs' `maps.rs`.

use aya_ebpf::{
    helpers::bpf_get_prandom_u32,
    macros::map,
    maps::{Array, HashMap, SockMap},
    programs::SkLookupContext,
};
use faultbpf_common::{
    ExemptKey, MAX_STEER_EXEMPT, PROTO_TCP, RESPONDER_V4, RESPONDER_V6, SteerConf, draw_hits,
};

/// `sk_lookup` verdict: carry on with the socket we chose, or the normal lookup.
const SK_PASS: u32 = 1;

const AF_INET6: u32 = 10;

/// What to steer; one entry, written by user space before the attach.
#[map]
pub static STEER: Array<SteerConf> = Array::with_max_entries(1, 0);

/// The responder's listening sockets, IPv4 and IPv6.
#[map]
pub static RESPONDER: SockMap = SockMap::with_max_entries(2, 0);

/// Source addresses and ports of the responder's own connections to the
/// real server: never steered, or a forwarded request would come back.
/// Not preallocated: every faultbpf start creates the object's maps, and
/// only `faultbpf http` fills this one.
#[map]
pub static STEER_EXEMPT: HashMap<ExemptKey, u8> =
    HashMap::with_max_entries(MAX_STEER_EXEMPT, BPF_F_NO_PREALLOC);

/// `BPF_F_NO_PREALLOC` from the kernel's uapi (`include/uapi/linux/bpf.h`).
const BPF_F_NO_PREALLOC: u32 = 1;

/// Steers the connection when it is selected; otherwise, or on any error,
/// leaves the kernel's own lookup alone (`SK_PASS` with no socket chosen).
#[inline(always)]
pub fn run(ctx: &SkLookupContext) -> u32 {
    // SAFETY: the context pointer is the kernel's `bpf_sk_lookup`, valid
    // for the program's run; the verifier allows these narrow reads.
    let (proto, family, local_port, remote_port_be) = unsafe {
        let l = &*ctx.lookup;
        (l.protocol, l.family, l.local_port, l.remote_port)
    };
    if proto != u32::from(PROTO_TCP) {
        return SK_PASS;
    }
    let Some(conf) = STEER.get(0) else {
        return SK_PASS;
    };
    if conf.port == 0 || local_port != u32::from(conf.port) {
        return SK_PASS;
    }
    let mut key = ExemptKey {
        addr: [0; 16],
        port: u16::from_be(remote_port_be),
        family: 4,
        _pad: 0,
    };
    // SAFETY: as above; whole 4-byte loads of the address words.
    unsafe {
        let l = &*ctx.lookup;
        if family == AF_INET6 {
            key.family = 6;
            for (i, w) in l.remote_ip6.iter().enumerate() {
                key.addr[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
        } else {
            key.addr[..4].copy_from_slice(&l.remote_ip4.to_ne_bytes());
        }
    }
    // SAFETY: a hash map lookup with a key on our stack; the value is
    // only tested for presence.
    if unsafe { STEER_EXEMPT.get(&key) }.is_some() {
        return SK_PASS;
    }
    // SAFETY: a helper with no arguments.
    if !draw_hits(conf.threshold, unsafe { bpf_get_prandom_u32() }) {
        return SK_PASS;
    }
    let index = if family == AF_INET6 {
        RESPONDER_V6
    } else {
        RESPONDER_V4
    };
    // No socket there (the responder is gone) or a refused assign: the
    // normal lookup goes on, so the connection reaches the real server.
    let _ = RESPONDER.redirect_sk_lookup(ctx, index, 0);
    SK_PASS
}
