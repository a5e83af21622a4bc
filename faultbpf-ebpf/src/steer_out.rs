//! `faultbpf http --side client`'s kernel half: the dependency runs on
//! another host, so there is no listening socket here for `sk_lookup` to
//! stand in for. Instead, cgroup hooks on the application's side:
//! - `connect4`/`connect6` rewrite a selected TCP connect to the port so it
//!   reaches the responder on loopback, and remember where it was going
//!   (`ORIG_DST`, by socket cookie);
//! - the `sock_ops` program, when such a connection sends its SYN (its
//!   source port now chosen), files the original destination under that
//!   port (`ORIG_BY_PORT`), where the responder finds it on accept and
//!   forwards there;
//! - `getpeername4`/`getpeername6` show the application the peer it
//!   dialled, not the responder.
//!
//! Cgroup programs see every process in the cgroup, whatever its network
//! namespace: each hook first compares the socket's namespace cookie with
//! the one faultbpf runs in, and leaves every other connect alone. The
//! responder's own connects to the real servers are exempt by socket
//! cookie (`CONNECT_EXEMPT`). Runs once per connect, never per packet.

use aya_ebpf::{
    bindings::BPF_SOCK_OPS_TCP_CONNECT_CB,
    helpers::{bpf_get_netns_cookie, bpf_get_prandom_u32, bpf_get_socket_cookie},
    macros::map,
    maps::{Array, HashMap},
    programs::{SockAddrContext, SockOpsContext},
};
use faultbpf_common::{ConnectConf, MAX_STEERED, OrigDst, PROTO_TCP, draw_hits};

/// Return value of a cgroup sock_addr program that lets the call go on.
const ALLOW: i32 = 1;

/// What to steer; one entry, written by user space before the attach.
#[map]
pub static CONNECT: Array<ConnectConf> = Array::with_max_entries(1, 0);

/// Socket cookie -> where a steered connect was going.
#[map]
pub static ORIG_DST: HashMap<u64, OrigDst> =
    HashMap::with_max_entries(MAX_STEERED, BPF_F_NO_PREALLOC);

/// Source port (host order) -> where a steered connection was going.
#[map]
pub static ORIG_BY_PORT: HashMap<u16, OrigDst> =
    HashMap::with_max_entries(MAX_STEERED, BPF_F_NO_PREALLOC);

/// Cookies of the responder's own sockets: never steered.
#[map]
pub static CONNECT_EXEMPT: HashMap<u64, u8> =
    HashMap::with_max_entries(MAX_STEERED, BPF_F_NO_PREALLOC);

/// `BPF_F_NO_PREALLOC` (uapi bpf.h): every faultbpf start creates these
/// maps; only `faultbpf http --side client` fills them.
const BPF_F_NO_PREALLOC: u32 = 1;

/// 127.0.0.1 as `user_ip4` holds it (network order in a `u32`).
const LOOPBACK4_BE: u32 = u32::from_ne_bytes([127, 0, 0, 1]);
/// ::1 as `user_ip6` holds it.
const LOOPBACK6_BE: [u32; 4] = [0, 0, 0, u32::from_ne_bytes([0, 0, 0, 1])];

/// Writes `user_ip6` one word at a time, each store straight off the
/// context pointer: the verifier refuses a store through a context pointer
/// plus an offset, which is what an array copy compiles to.
///
/// # Safety
/// `a` is the program's context, in a hook that may write `user_ip6`.
#[inline(always)]
unsafe fn set_ip6(a: *mut aya_ebpf::bindings::bpf_sock_addr, ip: [u32; 4]) {
    // SAFETY: the caller's promise; each pointer is a field of `*a`.
    unsafe {
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*a).user_ip6[0]), ip[0]);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*a).user_ip6[1]), ip[1]);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*a).user_ip6[2]), ip[2]);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*a).user_ip6[3]), ip[3]);
    }
}

/// The `connect` hooks: steers a selected connect to the responder.
#[inline(always)]
pub fn connect(ctx: &SockAddrContext, v6: bool) -> i32 {
    let Some(conf) = CONNECT.get(0) else {
        return ALLOW;
    };
    // SAFETY: the context pointer is the kernel's `bpf_sock_addr`, valid
    // for the program's run; the verifier allows these reads.
    let (proto, port_be) = unsafe {
        let a = &*ctx.sock_addr;
        (a.protocol, a.user_port)
    };
    if conf.port == 0 || proto != u32::from(PROTO_TCP) {
        return ALLOW;
    }
    // `user_port` holds the port in network order in its low 16 bits.
    if u16::from_be(port_be as u16) != conf.port {
        return ALLOW;
    }
    let resp_port = if v6 { conf.resp_port6 } else { conf.resp_port4 };
    if resp_port == 0 {
        return ALLOW;
    }
    // SAFETY: helpers valid for cgroup sock_addr programs (5.7+).
    let (netns, cookie) = unsafe {
        (
            bpf_get_netns_cookie(ctx.sock_addr.cast()),
            bpf_get_socket_cookie(ctx.sock_addr.cast()),
        )
    };
    if netns != conf.netns_cookie {
        return ALLOW;
    }
    // SAFETY: a lookup with a key on our stack, tested for presence only.
    if unsafe { CONNECT_EXEMPT.get(&cookie) }.is_some() {
        return ALLOW;
    }
    // SAFETY: a helper with no arguments.
    if !draw_hits(conf.threshold, unsafe { bpf_get_prandom_u32() }) {
        return ALLOW;
    }
    let mut orig = OrigDst {
        addr: [0; 16],
        port_be: port_be as u16,
        family: if v6 { 6 } else { 4 },
        _pad: [0; 5],
        cookie,
    };
    // SAFETY: as above; user_ip4/user_ip6 are read whole, 4-byte aligned.
    unsafe {
        let a = &*ctx.sock_addr;
        if v6 {
            for (i, w) in a.user_ip6.iter().enumerate() {
                orig.addr[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
        } else {
            orig.addr[..4].copy_from_slice(&a.user_ip4.to_ne_bytes());
        }
    }
    // Remembered first: a connect we could not remember is not steered
    // (the responder would not know where to forward it).
    if ORIG_DST.insert(&cookie, &orig, 0).is_err() {
        return ALLOW;
    }
    // SAFETY: the verifier allows 4-byte writes of these fields in
    // connect hooks; the kernel connects to what they then hold.
    unsafe {
        if v6 {
            set_ip6(ctx.sock_addr, LOOPBACK6_BE);
        } else {
            (*ctx.sock_addr).user_ip4 = LOOPBACK4_BE;
        }
        (*ctx.sock_addr).user_port = u32::from(resp_port.to_be());
    }
    ALLOW
}

/// The `getpeername` hooks: a steered socket's peer is the one dialled.
#[inline(always)]
pub fn peername(ctx: &SockAddrContext, v6: bool) -> i32 {
    // SAFETY: helper valid for cgroup sock_addr programs.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    // SAFETY: a lookup with a key on our stack; the value is copied out.
    let Some(orig) = (unsafe { ORIG_DST.get(&cookie) }).copied() else {
        return ALLOW;
    };
    // SAFETY: as in `connect`; getpeername hooks may rewrite the address
    // the call returns.
    unsafe {
        if v6 && orig.family == 6 {
            let mut ip = [0u32; 4];
            for (i, w) in ip.iter_mut().enumerate() {
                let mut b = [0u8; 4];
                b.copy_from_slice(&orig.addr[i * 4..i * 4 + 4]);
                *w = u32::from_ne_bytes(b);
            }
            set_ip6(ctx.sock_addr, ip);
        } else if !v6 && orig.family == 4 {
            let mut b = [0u8; 4];
            b.copy_from_slice(&orig.addr[..4]);
            (*ctx.sock_addr).user_ip4 = u32::from_ne_bytes(b);
        } else {
            return ALLOW;
        }
        (*ctx.sock_addr).user_port = u32::from(orig.port_be);
    }
    ALLOW
}

/// The `sock_ops` hook: when a steered connection is about to send its
/// SYN, its source port is known; file its destination under it.
#[inline(always)]
pub fn sockops(ctx: &SockOpsContext) -> u32 {
    if ctx.op() != BPF_SOCK_OPS_TCP_CONNECT_CB {
        return 1;
    }
    // SAFETY: helper valid for sock_ops programs.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
    // SAFETY: a lookup with a key on our stack; the value is copied out.
    if let Some(orig) = unsafe { ORIG_DST.get(&cookie) }.copied() {
        // `local_port` is in host order.
        let _ = ORIG_BY_PORT.insert(&(ctx.local_port() as u16), &orig, 0);
    }
    1
}
