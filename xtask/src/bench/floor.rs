//! A hook's floor: a two-instruction program (`r0 = DROP; exit`) that drops
//! every packet without reading it. No dropper on that hook can be faster,
//! so the drop scenario measures it beside faultbpf: it tells what the
//! hook itself costs on this machine (and so which goals can be reached
//! here) apart from what faultbpf's program adds.
//!
//! On tc there is a second floor, [`Hook::TcxReadsPort`]: the same, plus one
//! `bpf_skb_load_bytes` of the destination port, the least a dropper that
//! filters by port must do. The first read of a packet's headers is where
//! it pays for bringing them into cache; this floor pays it too.
//!
//! The netlink (cls_bpf) floors are classic BPF given to `tc filter ...
//! bpf bytecode ... da` (`ret #2`, or `ldh [36]; ret #2`): the kernel turns
//! them into eBPF and runs them like any cls_bpf program, and no ELF
//! object is needed. They are removed with the clsact qdisc on drop.
//!
//! Loaded with raw bpf(2) calls because xtask deliberately has no aya (it
//! installs the toolchain aya's build needs). Attached with a BPF link held
//! by this process, never pinned: dropping [`Floor`] detaches it.

use std::{
    io,
    os::fd::{FromRawFd as _, OwnedFd},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use super::topo::{Netns, output_within};
use crate::cmd::command;

/// The name the floor program is loaded under.
pub const PROGRAM: &str = "fbb_floor";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// tc ingress through TCX (kernel >= 6.6).
    Tcx,
    /// The same, reading the UDP destination port first.
    TcxReadsPort,
    /// tc ingress through a clsact qdisc and a cls_bpf filter (netlink).
    Netlink,
    /// The same, reading the UDP destination port first.
    NetlinkReadsPort,
    /// XDP in the driver (veth's native XDP).
    XdpNative,
    /// XDP on the skb (generic XDP).
    XdpGeneric,
}

// From include/uapi/linux/bpf.h.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const BPF_TCX_INGRESS: u32 = 46;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const TC_ACT_SHOT: i32 = 2;
const XDP_DROP: i32 = 1;
const BPF_FUNC_SKB_LOAD_BYTES: i32 = 26;
/// The UDP destination port of an untagged IPv4 frame without options.
const DPORT_OFFSET: i32 = 14 + 20 + 2;

/// One `struct bpf_insn`.
fn insn(code: u8, dst: u8, src: u8, imm: i32) -> u64 {
    u64::from(code) | u64::from(dst | (src << 4)) << 8 | u64::from(imm as u32) << 32
}
const MOV64_IMM: u8 = 0xb7;
const MOV64_REG: u8 = 0xbf;
const ADD64_IMM: u8 = 0x07;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;

/// `r0 = verdict; exit`.
fn drop_all(verdict: i32) -> Vec<u64> {
    vec![insn(MOV64_IMM, 0, 0, verdict), insn(EXIT, 0, 0, 0)]
}

/// `bpf_skb_load_bytes(ctx, DPORT_OFFSET, fp - 8, 2)`, then drop whatever
/// it returned (r1 already holds the context).
fn read_port_then_drop() -> Vec<u64> {
    let mut v = vec![
        insn(MOV64_IMM, 2, 0, DPORT_OFFSET),
        insn(MOV64_REG, 3, 10, 0),
        insn(ADD64_IMM, 3, 0, -8),
        insn(MOV64_IMM, 4, 0, 2),
        insn(CALL, 0, 0, BPF_FUNC_SKB_LOAD_BYTES),
    ];
    v.extend(drop_all(TC_ACT_SHOT));
    v
}

/// The `BPF_PROG_LOAD` part of `union bpf_attr`; the kernel wants the
/// rest zero, hence the padding.
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    pad: [u64; 8],
}

/// The `BPF_LINK_CREATE` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct LinkCreate {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    pad: [u64; 6],
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a `union bpf_attr` prefix of the right layout for
    // `cmd`, zero beyond the fields set, and lives across the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            std::mem::size_of::<T>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success bpf(2) returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

impl Hook {
    /// True when this process holds the program (an fd its BPF statistics
    /// can be read through); a cls_bpf floor belongs to its filter.
    pub fn held_here(self) -> bool {
        !matches!(self, Hook::Netlink | Hook::NetlinkReadsPort)
    }
}

/// The floor program, attached to `ifname` in `ns`; detached on drop.
pub struct Floor(Held);

enum Held {
    Link {
        _link: OwnedFd,
        _prog: OwnedFd,
    },
    /// A clsact qdisc this floor added, with its cls_bpf filter.
    Clsact {
        netns: String,
        ifname: String,
    },
}

impl Drop for Floor {
    fn drop(&mut self) {
        if let Held::Clsact { netns, ifname } = &self.0 {
            let _ = tc(netns, &["qdisc", "del", "dev", ifname, "clsact"]);
        }
    }
}

/// `ip netns exec NETNS tc ARGS...`, bounded. Takes the name, not the
/// [`Netns`], because `Floor`'s drop only keeps that.
fn tc(netns: &str, args: &[&str]) -> Result<String> {
    output_within(
        command("ip")
            .args(["netns", "exec", netns, "tc"])
            .args(args),
        None,
        Duration::from_secs(10),
    )
}

/// Classic BPF for `tc ... bpf bytecode`: `ret #TC_ACT_SHOT`, with
/// `ldh [DPORT_OFFSET]` first when `read_port`.
fn classic(read_port: bool) -> String {
    // BPF_LD | BPF_H | BPF_ABS, and BPF_RET | BPF_K.
    let ret = format!("6 0 0 {TC_ACT_SHOT}");
    if read_port {
        format!("2,40 0 0 {DPORT_OFFSET},{ret}")
    } else {
        format!("1,{ret}")
    }
}

impl Floor {
    pub fn attach(ns: &Netns, ifname: &str, hook: Hook) -> Result<Self> {
        let (prog_type, expected, attach_type, flags) = match hook {
            Hook::Tcx | Hook::TcxReadsPort => (BPF_PROG_TYPE_SCHED_CLS, 0, BPF_TCX_INGRESS, 0),
            Hook::XdpNative => (BPF_PROG_TYPE_XDP, BPF_XDP, BPF_XDP, XDP_FLAGS_DRV_MODE),
            Hook::XdpGeneric => (BPF_PROG_TYPE_XDP, BPF_XDP, BPF_XDP, XDP_FLAGS_SKB_MODE),
            Hook::Netlink | Hook::NetlinkReadsPort => {
                return Self::classic(ns, ifname, hook == Hook::NetlinkReadsPort);
            }
        };
        let insns = match hook {
            Hook::TcxReadsPort => read_port_then_drop(),
            Hook::XdpNative | Hook::XdpGeneric => drop_all(XDP_DROP),
            _ => drop_all(TC_ACT_SHOT),
        };
        let license = c"GPL";
        let mut name = [0u8; 16];
        name[..PROGRAM.len()].copy_from_slice(PROGRAM.as_bytes());
        let mut load = ProgLoad {
            prog_type,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name: name,
            expected_attach_type: expected,
            ..Default::default()
        };
        let prog = bpf(BPF_PROG_LOAD, &mut load).context("loading the floor program")?;
        let ifname = std::ffi::CString::new(ifname)?;
        let link = ns.run(None, || {
            // SAFETY: a NUL-terminated name; the call only reads it.
            let ifindex = unsafe { libc::if_nametoindex(ifname.as_ptr()) };
            if ifindex == 0 {
                bail!("no {ifname:?} in {}", ns.name);
            }
            let mut create = LinkCreate {
                prog_fd: std::os::fd::AsRawFd::as_raw_fd(&prog) as u32,
                target_ifindex: ifindex,
                attach_type,
                flags,
                ..Default::default()
            };
            bpf(BPF_LINK_CREATE, &mut create)
                .with_context(|| format!("attaching the floor program ({hook:?})"))
        })?;
        Ok(Self(Held::Link {
            _link: link,
            _prog: prog,
        }))
    }

    fn classic(ns: &Netns, ifname: &str, read_port: bool) -> Result<Self> {
        tc(&ns.name, &["qdisc", "add", "dev", ifname, "clsact"])?;
        // From here on the qdisc is ours to remove, also if the filter fails.
        let floor = Self(Held::Clsact {
            netns: ns.name.clone(),
            ifname: ifname.to_owned(),
        });
        let code = classic(read_port);
        tc(
            &ns.name,
            &[
                "filter", "add", "dev", ifname, "ingress", "bpf", "bytecode", &code, "da",
            ],
        )?;
        Ok(floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_all_is_mov_r0_then_exit() {
        // As `llvm-objdump -d` shows `r0 = 2; exit`: b7 00 00 00 02 00 00 00, 95 00 ...
        let v = drop_all(TC_ACT_SHOT);
        assert_eq!(v[0].to_le_bytes(), [0xb7, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(v[1].to_le_bytes(), [0x95, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn register_fields_and_negative_immediates() {
        // `r3 = r10` is bf a3 .., `r3 += -8` is 07 03 00 00 f8 ff ff ff.
        assert_eq!(
            insn(MOV64_REG, 3, 10, 0).to_le_bytes(),
            [0xbf, 0xa3, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            insn(ADD64_IMM, 3, 0, -8).to_le_bytes(),
            [0x07, 0x03, 0, 0, 0xf8, 0xff, 0xff, 0xff]
        );
        assert_eq!(read_port_then_drop().len(), 7);
    }

    #[test]
    fn classic_floors_for_tc() {
        assert_eq!(classic(false), "1,6 0 0 2");
        assert_eq!(classic(true), "2,40 0 0 36,6 0 0 2");
    }
}
