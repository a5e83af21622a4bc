//! Load the kernel programs, attach them to interfaces, and give typed
//! access to their maps.
//!
//! Links are owned by this process and never pinned: when the `Injector` is
//! dropped, or the process dies, TCX links go with their file descriptors.
//! Netlink (cls_bpf) filters do not die with their process, so on that path
//! a reaper process removes them if we die first (`reaper.rs`), and the
//! lease in the `LEASE` map makes them inert anyway. The reaper starts
//! before the first kernel write and hears of each attach before it
//! happens ([`reaper::Intent`]), so no kill moment leaves anything behind.
//!
//! With `--xdp` ([`Hooks::xdp`]) the XDP program `faultbpf_xdp` takes the
//! ingress half instead of the tc ingress program, native (in the driver)
//! or generic, and the tc egress program keeps the egress half if asked.
//! aya attaches XDP with a bpf_link (Linux >= 5.9), which dies with its
//! file descriptor like a TCX link. Only where the kernel refuses XDP links
//! does aya fall back to netlink, whose attachment outlives the process:
//! those are detached on drop here, and by the reaper if we die.

use std::{
    collections::BTreeMap,
    os::fd::{AsFd, AsRawFd},
    time::Duration,
};

use aya::{
    Ebpf,
    maps::{
        Array, Map, MapData, PerCpuArray,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{
        LinkOrder, SchedClassifier, TcAttachType, Xdp, XdpMode as AyaXdpMode,
        links::FdLink,
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcError},
    },
    util::KernelVersion,
};
use faultbpf_common::{
    COUNTERS_MAP, DELAY_DEV_MAP, DNS_SUFFIXES_MAP, DnsKey, EGRESS_PROGRAM, INGRESS_PROGRAM,
    LEASE_MAP, Lease, PEERS_MAP, PORT_WORDS, PORTS_MAP, RETURN_PROGRAM, RULE_INDEX_MAP,
    RULE_INDEX_WORDS, RULES_MAP, RuleCounters, RuleKey, RuleValue, THROTTLE_MAP, TRACE_MAP,
    TraceConf, XDP_PROGRAM,
};
use serde::Serialize;

use crate::{
    delaydev::DelayDevice,
    error::Error,
    faults::Fault,
    iface, load,
    mapwrite::{self, ArrayFd},
    port_filter, reaper,
    rules::{Rule, monotonic_ns},
};

/// The kernel programs, built by build.rs.
pub(crate) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/faultbpf"));

/// How the tc programs are attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum AttachMode {
    /// TCX on kernels >= 6.6, netlink otherwise.
    Auto,
    /// TCX links (kernel >= 6.6): owned by a file descriptor.
    Tcx,
    /// A clsact qdisc with cls_bpf filters: every kernel with BPF.
    Netlink,
}

impl AttachMode {
    /// `Auto` made concrete for this kernel.
    pub fn resolve(self) -> Self {
        match self {
            Self::Auto => match KernelVersion::current() {
                Ok(v) if v >= KernelVersion::new(6, 6, 0) => Self::Tcx,
                _ => Self::Netlink,
            },
            m => m,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Tcx => "tcx",
            Self::Netlink => "netlink",
        }
    }
}

/// How the XDP program is attached (`--xdp-mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum XdpMode {
    /// Native where the driver supports it, generic otherwise (per interface).
    Auto,
    /// In the driver, before the kernel builds an skb: the cheap drop.
    Native,
    /// In the kernel's receive path, on the skb: works on every device.
    Generic,
}

impl XdpMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Native => "native",
            Self::Generic => "generic",
        }
    }

    /// The modes to try, in order.
    fn candidates(self) -> &'static [Self] {
        match self {
            Self::Auto => &[Self::Native, Self::Generic],
            Self::Native => &[Self::Native],
            Self::Generic => &[Self::Generic],
        }
    }

    /// aya's mode (`XDP_FLAGS_DRV_MODE` / `XDP_FLAGS_SKB_MODE`), and the
    /// hook name errors show.
    fn flags(self) -> (AyaXdpMode, &'static str) {
        match self {
            Self::Generic => (AyaXdpMode::Skb, "xdp generic"),
            _ => (AyaXdpMode::Driver, "xdp native"),
        }
    }
}

/// Which programs attach where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hooks {
    /// How the tc programs attach.
    pub tc: AttachMode,
    /// `Some`: the XDP program takes the ingress half, in this mode, and
    /// the tc ingress program is not attached.
    pub xdp: Option<XdpMode>,
    /// Whether the tc egress program attaches (always true without XDP).
    pub egress: bool,
}

impl Hooks {
    /// Both tc programs, attached in `mode`.
    pub fn tc(mode: AttachMode) -> Self {
        Self {
            tc: mode,
            xdp: None,
            egress: true,
        }
    }

    /// XDP for ingress, plus the tc egress program (attached in `egress`'s
    /// mode) if `egress` is `Some`.
    pub fn xdp(xdp: XdpMode, egress: Option<AttachMode>) -> Self {
        Self {
            tc: egress.unwrap_or(AttachMode::Auto),
            xdp: Some(xdp),
            egress: egress.is_some(),
        }
    }

    fn tc_hooks(self) -> impl Iterator<Item = (&'static str, TcAttachType, &'static str)> {
        HOOKS.into_iter().filter(move |(_, hook, _)| match hook {
            TcAttachType::Egress => self.egress,
            _ => self.xdp.is_none(),
        })
    }
}

const HOOKS: [(&str, TcAttachType, &str); 2] = [
    (INGRESS_PROGRAM, TcAttachType::Ingress, "ingress"),
    (EGRESS_PROGRAM, TcAttachType::Egress, "egress"),
];

/// The delay device's horizon for shaped packets: they wait at most
/// `faultbpf-ebpf`'s `throttle::MAX_WAIT_NS` (200 ms).
const SHAPE_HORIZON: Duration = Duration::from_millis(200);

/// Loaded programs attached to a set of interfaces.
pub struct Injector {
    /// Dropped last: the maps and programs live as long as this.
    ebpf: Ebpf,
    links: Vec<SchedClassifierLink>,
    mode: AttachMode,
    hooks: Hooks,
    /// XDP links (fd-owned) and the mode each interface got.
    xdp_links: Vec<FdLink>,
    xdp_modes: Vec<(String, XdpMode)>,
    /// XDP programs aya could only attach through netlink: they outlive
    /// us, so we (and the reaper) detach them.
    xdp_netlink: Vec<reaper::XdpAttachment>,
    interfaces: Vec<String>,
    /// clsact qdiscs we created (netlink path), deleted on drop.
    added_clsact: Vec<String>,
    /// Started before the first attach on the netlink and XDP paths; one
    /// for the Injector's whole life.
    reaper: Option<reaper::Guard>,
    /// The delay device, made on the first delay rule; its return
    /// program's link sits in `delay_link`, detached before the device goes.
    delay: Option<DelayDevice>,
    delay_link: Option<SchedClassifierLink>,
    /// The longest delay the device's qdiscs are sized for.
    delay_max: Duration,
    /// Whether throttle rules shape (the delay device could be made), once
    /// the first one has asked.
    can_shape: Option<bool>,
    /// What `RULE_INDEX` and `PORTS` hold: only this process writes them
    /// (the maps are created at load and never pinned), so a change is
    /// computed here and only the words that differ are written, in
    /// batches, without reading the kernel's copy first.
    index_shadow: Vec<u64>,
    ports_shadow: Vec<u64>,
}

impl Injector {
    /// Loads the programs and attaches them on ingress and egress of each
    /// interface. Nothing acts until a rule is inserted.
    pub fn attach(interfaces: &[String], mode: AttachMode) -> Result<Self, Error> {
        Self::attach_hooks(interfaces, Hooks::tc(mode))
    }

    /// Like [`Injector::attach`], with the XDP program for ingress if
    /// `hooks.xdp` says so.
    ///
    /// # Minimum kernel version
    ///
    /// 5.18 for the XDP program (`bpf_xdp_load_bytes`).
    pub fn attach_hooks(interfaces: &[String], hooks: Hooks) -> Result<Self, Error> {
        for i in interfaces {
            if iface::index(i).is_none() {
                return Err(Error::NoSuchInterface(i.clone()));
            }
        }
        raise_memlock();
        let mut ebpf = load::loader().load(OBJECT).map_err(Error::load)?;
        let wanted = |name: &str| {
            HOOKS.iter().any(|(n, _, _)| *n == name) || (hooks.xdp.is_some() && name == XDP_PROGRAM)
        };
        let chosen: Vec<_> = ebpf.programs_mut().filter(|(n, _)| wanted(n)).collect();
        for (name, result) in load::programs(chosen) {
            if name == XDP_PROGRAM {
                result.map_err(Error::xdp_load)?;
            } else {
                result.map_err(Error::load)?;
            }
        }
        // A missing program says so here rather than as a type error later.
        for (name, _, _) in HOOKS {
            program(&mut ebpf, name)?;
        }
        if hooks.xdp.is_some() {
            xdp_program(&mut ebpf)?;
        }
        let mut inj = Self {
            ebpf,
            links: Vec::new(),
            mode: hooks.tc.resolve(),
            hooks,
            xdp_links: Vec::new(),
            xdp_modes: Vec::new(),
            xdp_netlink: Vec::new(),
            interfaces: interfaces.to_vec(),
            added_clsact: Vec::new(),
            reaper: None,
            delay: None,
            delay_link: None,
            delay_max: Duration::ZERO,
            can_shape: None,
            index_shadow: vec![0; RULE_INDEX_WORDS as usize],
            ports_shadow: vec![0; PORT_WORDS as usize],
        };
        if inj.mode == AttachMode::Netlink || hooks.xdp.is_some() {
            inj.start_reaper()?;
        }
        if load::traceable() {
            // Tells a tracer these programs were loaded with their trace
            // points (the kernel does not read it).
            inj.array::<TraceConf>(TRACE_MAP)?
                .set(
                    0,
                    TraceConf {
                        traceable: 1,
                        ..TraceConf::default()
                    },
                    0,
                )
                .map_err(|e| map_err(TRACE_MAP, "could not mark the programs traceable", e))?;
        }
        inj.pause("attach:start");
        for i in interfaces {
            inj.attach_one(i)?;
        }
        inj.pause("attach:done");
        Ok(inj)
    }

    fn attach_one(&mut self, ifname: &str) -> Result<(), Error> {
        if let Some(want) = self.hooks.xdp {
            self.tell(reaper::Intent::Xdp(ifname.to_string()));
            self.attach_xdp(ifname, want)?;
        }
        if self.hooks.tc_hooks().next().is_none() {
            return Ok(());
        }
        if self.mode == AttachMode::Netlink {
            self.tell(reaper::Intent::Clsact(ifname.to_string()));
            let added = tc::qdisc_add_clsact(ifname);
            self.pause(&format!("attach:clsact:{ifname}"));
            match added {
                Ok(()) => self.added_clsact.push(ifname.to_string()),
                Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {
                    self.tell(reaper::Intent::ClsactKept(ifname.to_string()));
                }
                Err(e) => return Err(Error::attach(ifname, "clsact qdisc", e)),
            }
            self.tell(reaper::Intent::Tc(ifname.to_string()));
        }
        for (name, hook, hook_name) in self.hooks.tc_hooks() {
            let opts = match self.mode {
                AttachMode::Netlink => TcAttachOptions::Netlink(NlOptions::default()),
                _ => TcAttachOptions::TcxOrder(LinkOrder::default()),
            };
            let prog = program(&mut self.ebpf, name)?;
            let attached = prog.attach_with_options(ifname, hook, opts);
            self.pause(&format!("attach:filter:{ifname}"));
            let prog = program(&mut self.ebpf, name)?;
            let id = attached.map_err(|e| Error::attach(ifname, hook_name, e))?;
            let link = prog
                .take_link(id)
                .map_err(|e| Error::attach(ifname, hook_name, e))?;
            self.links.push(link);
        }
        Ok(())
    }

    /// Attaches the XDP program to `ifname`: each mode `want` allows, in
    /// order, until one works.
    fn attach_xdp(&mut self, ifname: &str, want: XdpMode) -> Result<(), Error> {
        let mut failed = None;
        for &mode in want.candidates() {
            let (flags, hook_name) = mode.flags();
            let attached = xdp_program(&mut self.ebpf)?.attach(ifname, flags);
            let reaper = self.reaper.as_ref().map(reaper::Guard::pid);
            reaper::pause_point(&format!("attach:xdp:{ifname}"), reaper);
            let prog = xdp_program(&mut self.ebpf)?;
            let id = match attached {
                Ok(id) => id,
                Err(e) => {
                    failed = Some(Error::attach(ifname, hook_name, e));
                    continue;
                }
            };
            let link = prog
                .take_link(id)
                .map_err(|e| Error::attach(ifname, hook_name, e))?;
            match FdLink::try_from(link) {
                Ok(fd) => self.xdp_links.push(fd),
                // aya fell back to netlink (no XDP links before Linux 5.9),
                // and dropped its handle without detaching: ours to remove.
                Err(_) => self.xdp_netlink.push(reaper::XdpAttachment {
                    iface: ifname.to_string(),
                    generic: mode == XdpMode::Generic,
                }),
            }
            self.xdp_modes.push((ifname.to_string(), mode));
            return Ok(());
        }
        Err(failed
            .unwrap_or_else(|| Error::attach(ifname, "xdp", anyhow::anyhow!("no XDP mode to try"))))
    }

    /// How the programs are attached, for people and for `--json`: the tc
    /// mode (`tcx`, `netlink`), or with XDP `xdp-native` / `xdp-generic`
    /// (`xdp-native(eth0)+xdp-generic(lo)` when interfaces differ), then
    /// `+tcx` or `+netlink` when the tc egress program is attached too.
    pub fn attach_name(&self) -> String {
        if self.hooks.xdp.is_none() {
            return self.mode.name().to_string();
        }
        let first = self.xdp_modes.first().map(|(_, m)| *m);
        let mut out = if self.xdp_modes.iter().all(|(_, m)| Some(*m) == first) {
            format!("xdp-{}", first.map_or("none", XdpMode::name))
        } else {
            self.xdp_modes
                .iter()
                .map(|(i, m)| format!("xdp-{}({i})", m.name()))
                .collect::<Vec<_>>()
                .join("+")
        };
        if self.hooks.egress {
            out.push('+');
            out.push_str(self.mode.name());
        }
        out
    }

    /// Attaches to one more interface (a container's new veth, say).
    pub fn attach_interface(&mut self, ifname: &str) -> Result<(), Error> {
        if iface::index(ifname).is_none() {
            return Err(Error::NoSuchInterface(ifname.to_string()));
        }
        // The same reaper hears of the new interface before the first
        // write to it: there is no moment without one.
        self.attach_one(ifname)?;
        self.interfaces.push(ifname.to_string());
        self.pause("attach:done");
        Ok(())
    }

    /// Starts the reaper and tells it the ids of our programs, before any
    /// attach. Without one (the library inside a program that cannot find
    /// the faultbpf binary) we still run: our own exit detaches, and the
    /// lease, where the owner renews one, makes filters left by a crash
    /// inert.
    fn start_reaper(&mut self) -> Result<(), Error> {
        let mut guard = match reaper::spawn() {
            Ok(r) => r,
            Err(e) => {
                eprintln!(
                    "faultbpf: warning: no reaper, a crash would leave tc filters behind: {}",
                    crate::error::chain(&e)
                );
                return Ok(());
            }
        };
        let mut ids = Vec::new();
        for (name, _, _) in HOOKS {
            ids.push(program_id(program(&mut self.ebpf, name)?.info(), name)?);
        }
        if self.hooks.xdp.is_some() {
            ids.push(program_id(
                xdp_program(&mut self.ebpf)?.info(),
                XDP_PROGRAM,
            )?);
        }
        for id in ids {
            guard.tell(&reaper::Intent::Prog(id));
        }
        self.reaper = Some(guard);
        Ok(())
    }

    /// Tells the reaper, if there is one, what we are about to do.
    fn tell(&mut self, intent: reaper::Intent) {
        if let Some(r) = &mut self.reaper {
            r.tell(&intent);
        }
    }

    /// A kill-test hook ([`reaper::pause_point`]).
    fn pause(&self, point: &str) {
        reaper::pause_point(point, self.reaper.as_ref().map(reaper::Guard::pid));
    }

    /// Forgets `ifname` (gone, or replaced by a new device of that name):
    /// its links went with the old device.
    pub fn forget_interface(&mut self, ifname: &str) {
        self.interfaces.retain(|i| i != ifname);
    }

    /// Drops interfaces that no longer exist (their links went with them).
    pub fn forget_vanished(&mut self) {
        self.interfaces.retain(|i| iface::index(i).is_some());
    }

    /// The attach mode in use (never `Auto`).
    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    pub fn interfaces(&self) -> &[String] {
        &self.interfaces
    }

    /// Puts `rule` in force; its expiry counts from now. Peers go in
    /// before the rule, so the rule never acts on everyone for a moment.
    /// Fills in what this kernel decides: whether a throttle shapes
    /// ([`Self::settle`]).
    pub fn insert(&mut self, rule: &mut Rule) -> Result<(), Error> {
        self.settle(rule);
        if let Some(d) = rule.fault.delay() {
            self.ensure_delay_device(d.max())?;
        }
        // Zero the rule's counters first so a reused slot starts clean.
        self.reset_counters(rule.id)?;
        if rule.fault.throttle().is_some() {
            // A full bucket in each direction, whatever the slot held.
            let mut buckets = self.array::<u64>(THROTTLE_MAP)?;
            for i in [2 * rule.id, 2 * rule.id + 1] {
                buckets
                    .set(i, 0, 0)
                    .map_err(|e| map_err(THROTTLE_MAP, "could not reset a bucket", e))?;
            }
        }
        {
            let mut peers = self.peers_map()?;
            for (len, data) in rule.peer_entries() {
                peers
                    .insert(&Key::new(len, data), 1, 0)
                    .map_err(|e| map_err(PEERS_MAP, "could not insert a peer prefix", e))?;
            }
            let mut suffixes = self.dns_map()?;
            for key in rule.dns_keys() {
                suffixes.insert(key, 1, 0).map_err(|e| {
                    map_err(DNS_SUFFIXES_MAP, "could not insert a --domain suffix", e)
                })?;
            }
        }
        // The rule, then its index entries, then the port filter: a packet
        // can find nothing yet, but never an entry without its rule.
        let keys = rule.keys();
        self.rules_map()?
            .set(rule.id, rule.value(monotonic_ns()), 0)
            .map_err(|e| map_err(RULES_MAP, "could not insert a rule", e))?;
        let slot = u16::try_from(rule.id + 1).map_err(|_| Error::Io {
            what: format!("rule slot {} out of range", rule.id),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        })?;
        self.set_index(&keys, slot)?;
        let changes = port_filter::words(keys)
            .into_iter()
            .map(|(word, mask)| (word, self.ports_shadow[word as usize] | mask))
            .collect();
        self.write_words(PORTS_MAP, changes)
            .map_err(|e| map_err(PORTS_MAP, "could not update the port filter", e))
    }

    /// Writes `(word, value)` pairs of `RULE_INDEX` or `PORTS` (whose
    /// shadow it updates), skipping words that already hold their value.
    fn write_words(&mut self, name: &'static str, changes: Vec<(u32, u64)>) -> std::io::Result<()> {
        let fd = self.map_fd(name).map_err(std::io::Error::other)?;
        let shadow = if name == PORTS_MAP {
            &mut self.ports_shadow
        } else {
            &mut self.index_shadow
        };
        let (words, values): (Vec<u32>, Vec<u64>) = changes
            .into_iter()
            .filter(|(w, v)| shadow[*w as usize] != *v)
            .unzip();
        mapwrite::update_batch(fd, &words, &values)?;
        for (w, v) in words.iter().zip(values) {
            shadow[*w as usize] = v;
        }
        Ok(())
    }

    /// The raw file descriptor of one of the object's maps (owned by
    /// `self.ebpf`).
    fn map_fd(&self, name: &'static str) -> Result<i32, Error> {
        match self.ebpf.map(name) {
            Some(Map::Array(d)) => Ok(d.fd().as_fd().as_raw_fd()),
            Some(_) => Err(map_err(
                name,
                "unexpected map type",
                anyhow::anyhow!("not an array"),
            )),
            None => Err(missing(name)),
        }
    }

    /// A handle on the `LEASE` map with a file descriptor of its own, for a
    /// heartbeat thread that must not wait for whoever holds the injector.
    pub fn lease_writer(&self) -> Result<LeaseWriter, Error> {
        let fd = self.map_fd(LEASE_MAP)?;
        // SAFETY: `fd` is open for as long as `self.ebpf` lives, which is
        // longer than this call; the clone is a new descriptor we own.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let owned = borrowed.try_clone_to_owned().map_err(|e| Error::Io {
            what: format!("could not duplicate the file descriptor of map `{LEASE_MAP}`"),
            source: e,
        })?;
        Ok(LeaseWriter(ArrayFd::new(owned)))
    }

    /// Decides what in `rule` depends on this kernel, before it is shown or
    /// inserted: a throttle shapes where the delay device can be made (the
    /// kernel has sch_fq and sch_netem), and polices elsewhere. The first
    /// throttle rule asks (making the device); later ones reuse the answer.
    pub fn settle(&mut self, rule: &mut Rule) {
        let Fault::Throttle(t) = &mut rule.fault else {
            return;
        };
        let can = match self.can_shape {
            Some(can) => can,
            None => {
                let can = match self.ensure_delay_device(SHAPE_HORIZON) {
                    Ok(()) => true,
                    Err(Error::Unsupported(_)) => false,
                    Err(e) => {
                        eprintln!(
                            "faultbpf: warning: throttle polices (drops over the rate) \
                             instead of shaping: {}",
                            crate::error::chain(&e)
                        );
                        false
                    }
                };
                self.can_shape = Some(can);
                can
            }
        };
        t.shape = can;
    }

    /// Makes sure a delay rule of up to `max` can be inserted (the delay
    /// device exists and its qdiscs are wide enough), without inserting
    /// any: lets a caller check what this kernel can do before changing
    /// anything.
    pub fn prepare_delay(&mut self, max: Duration) -> Result<(), Error> {
        self.ensure_delay_device(max)
    }

    /// Makes the delay device on first use (or widens its qdiscs' horizon),
    /// attaches the return program to its far end and tells the programs
    /// its ifindex.
    fn ensure_delay_device(&mut self, max: Duration) -> Result<(), Error> {
        if let Some(dev) = &self.delay {
            if max > self.delay_max {
                dev.set_horizon(max)?;
                self.delay_max = max;
            }
            return Ok(());
        }
        let mtu = self
            .interfaces
            .iter()
            .filter_map(|i| iface::mtu(i))
            .max()
            .unwrap_or(1500)
            // veth takes 68..=65535; lo says 65536.
            .clamp(1500, 65_535);
        let dev = DelayDevice::create(mtu, max)?;
        // Loaded only now: verifying it costs start-up time that faults
        // without delay need not pay.
        let prog = program(&mut self.ebpf, RETURN_PROGRAM)?;
        prog.load().map_err(Error::load)?;
        let id = program_id(prog.info(), RETURN_PROGRAM)?;
        self.tell(reaper::Intent::Prog(id));
        let opts = match self.mode {
            AttachMode::Netlink => {
                self.tell(reaper::Intent::Clsact(dev.far.clone()));
                self.tell(reaper::Intent::Tc(dev.far.clone()));
                match tc::qdisc_add_clsact(&dev.far) {
                    Ok(()) => {}
                    Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
                    Err(e) => return Err(Error::attach(&dev.far, "clsact qdisc", e)),
                }
                TcAttachOptions::Netlink(NlOptions::default())
            }
            _ => TcAttachOptions::TcxOrder(LinkOrder::default()),
        };
        let prog = program(&mut self.ebpf, RETURN_PROGRAM)?;
        let id = prog
            .attach_with_options(&dev.far, TcAttachType::Ingress, opts)
            .map_err(|e| Error::attach(&dev.far, "ingress", e))?;
        let link = prog
            .take_link(id)
            .map_err(|e| Error::attach(&dev.far, "ingress", e))?;
        self.array::<u32>(DELAY_DEV_MAP)?
            .set(0, dev.send_ifindex, 0)
            .map_err(|e| map_err(DELAY_DEV_MAP, "could not set the delay device", e))?;
        self.delay_link = Some(link);
        self.delay = Some(dev);
        self.delay_max = max;
        Ok(())
    }

    /// Lifts `rule`; missing entries are not an error. Its `RULES` entry
    /// stays until the slot is reused: nothing points to it any more.
    pub fn remove(&mut self, rule: &Rule) -> Result<(), Error> {
        let keys = rule.keys();
        let _ = self.set_index(&keys, 0);
        // A port's bit stays while any rule of either protocol still has it.
        let unused: Vec<_> = keys
            .into_iter()
            .filter(|k| {
                port_filter::sharing(*k)
                    .iter()
                    .all(|other| index_slot(&self.index_shadow, other) == 0)
            })
            .collect();
        let changes = port_filter::words(unused)
            .into_iter()
            .map(|(word, mask)| (word, self.ports_shadow[word as usize] & !mask))
            .collect();
        let _ = self.write_words(PORTS_MAP, changes);
        let mut peers = self.peers_map()?;
        for (len, data) in rule.peer_entries() {
            let _ = peers.remove(&Key::new(len, data));
        }
        let mut suffixes = self.dns_map()?;
        for key in rule.dns_keys() {
            let _ = suffixes.remove(&key);
        }
        Ok(())
    }

    /// One of the object's array maps, by name.
    fn array<V: aya::Pod>(&mut self, name: &'static str) -> Result<Array<&mut MapData, V>, Error> {
        let map = self.ebpf.map_mut(name).ok_or_else(|| missing(name))?;
        Array::try_from(map).map_err(|e| map_err(name, "unexpected map type", e))
    }

    fn peers_map(&mut self) -> Result<LpmTrie<&mut MapData, [u8; 20], u8>, Error> {
        let map = self
            .ebpf
            .map_mut(PEERS_MAP)
            .ok_or_else(|| missing(PEERS_MAP))?;
        LpmTrie::try_from(map).map_err(|e| map_err(PEERS_MAP, "unexpected map type", e))
    }

    fn dns_map(&mut self) -> Result<aya::maps::HashMap<&mut MapData, DnsKey, u8>, Error> {
        let map = self
            .ebpf
            .map_mut(DNS_SUFFIXES_MAP)
            .ok_or_else(|| missing(DNS_SUFFIXES_MAP))?;
        aya::maps::HashMap::try_from(map)
            .map_err(|e| map_err(DNS_SUFFIXES_MAP, "unexpected map type", e))
    }

    /// The rule's counters summed over CPUs.
    pub fn counters(&self, id: u32) -> Result<RuleCounters, Error> {
        let map = self
            .ebpf
            .map(COUNTERS_MAP)
            .ok_or_else(|| missing(COUNTERS_MAP))?;
        let arr: PerCpuArray<&MapData, RuleCounters> = PerCpuArray::try_from(map)
            .map_err(|e| map_err(COUNTERS_MAP, "unexpected map type", e))?;
        let per_cpu = arr
            .get(&id, 0)
            .map_err(|e| map_err(COUNTERS_MAP, "could not read counters", e))?;
        let mut sum = RuleCounters::default();
        for c in per_cpu.iter() {
            sum.add(c);
        }
        Ok(sum)
    }

    fn reset_counters(&mut self, id: u32) -> Result<(), Error> {
        let ncpu = aya::util::nr_cpus().map_err(|(what, e)| Error::Io {
            what: format!("could not count CPUs ({what})"),
            source: e,
        })?;
        let map = self
            .ebpf
            .map_mut(COUNTERS_MAP)
            .ok_or_else(|| missing(COUNTERS_MAP))?;
        let mut arr: PerCpuArray<&mut MapData, RuleCounters> = PerCpuArray::try_from(map)
            .map_err(|e| map_err(COUNTERS_MAP, "unexpected map type", e))?;
        let zero = aya::maps::PerCpuValues::try_from(vec![RuleCounters::default(); ncpu]).map_err(
            |e| Error::Io {
                what: "could not build per-CPU values".into(),
                source: e,
            },
        )?;
        arr.set(id, zero, 0)
            .map_err(|e| map_err(COUNTERS_MAP, "could not reset counters", e))
    }

    /// Renews the dead man's switch: rules act for `lease` from now, unless
    /// renewed again. A zero `lease` disables the switch.
    pub fn renew_lease(&mut self, lease: Duration) -> Result<(), Error> {
        let lease = Lease {
            heartbeat_ns: monotonic_ns(),
            lease_ns: u64::try_from(lease.as_nanos()).unwrap_or(u64::MAX),
        };
        self.array::<Lease>(LEASE_MAP)?
            .set(0, lease, 0)
            .map_err(|e| map_err(LEASE_MAP, "could not renew the lease", e))
    }

    fn rules_map(&mut self) -> Result<Array<&mut MapData, RuleValue>, Error> {
        self.array(RULES_MAP)
    }

    /// Points `keys` at `slot` (slot + 1 of a rule, or 0 for none): the
    /// words touched are computed from the shadow copy and written in
    /// batches.
    fn set_index(&mut self, keys: &[RuleKey], slot: u16) -> Result<(), Error> {
        let mut words: BTreeMap<u32, u64> = BTreeMap::new();
        for k in keys {
            if let Some((word, shift)) = k.index_bits() {
                let w = words
                    .entry(word)
                    .or_insert(self.index_shadow[word as usize]);
                *w = (*w & !(0xffff << shift)) | (u64::from(slot) << shift);
            }
        }
        self.write_words(RULE_INDEX_MAP, words.into_iter().collect())
            .map_err(|e| map_err(RULE_INDEX_MAP, "could not update the rule index", e))
    }

    /// The first attached interface that no longer exists, if any.
    pub fn vanished_interface(&self) -> Option<&str> {
        self.interfaces
            .iter()
            .find(|i| iface::index(i).is_none())
            .map(String::as_str)
    }
}

impl Drop for Injector {
    /// Detach, then remove the clsact qdiscs we added, then tell the reaper
    /// there is nothing left to do.
    fn drop(&mut self) {
        self.links.clear();
        self.delay_link = None;
        self.delay = None;
        self.xdp_links.clear();
        for x in &self.xdp_netlink {
            x.remove();
        }
        for i in &self.added_clsact {
            reaper::remove_clsact(i);
        }
        if let Some(r) = self.reaper.take() {
            r.dismiss();
        }
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut SchedClassifier, Error> {
    let p = ebpf.program_mut(name).ok_or_else(|| {
        Error::load(anyhow::anyhow!(
            "program `{name}` is missing from the object"
        ))
    })?;
    p.try_into().map_err(Error::load)
}

/// A loaded program's kernel id, which tells the reaper our filters from
/// other processes' filters running a program of the same name.
fn program_id(
    info: Result<aya::programs::ProgramInfo, aya::programs::ProgramError>,
    name: &str,
) -> Result<u32, Error> {
    info.map(|i| i.id()).map_err(|e| {
        Error::load(anyhow::anyhow!(
            "could not read the id of program `{name}`: {e}"
        ))
    })
}

fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, Error> {
    let p = ebpf.program_mut(XDP_PROGRAM).ok_or_else(|| {
        Error::load(anyhow::anyhow!(
            "program `{XDP_PROGRAM}` is missing from the object"
        ))
    })?;
    p.try_into().map_err(Error::load)
}

/// The slot + 1 `key` points at in the rule index; 0 for none.
fn index_slot(index: &[u64], key: &RuleKey) -> u64 {
    match key.index_bits() {
        Some((word, shift)) => (index[word as usize] >> shift) & 0xffff,
        None => 0,
    }
}

/// Renews the `LEASE` map through a file descriptor of its own
/// ([`Injector::lease_writer`]); `Send`, so a heartbeat thread can own it.
#[derive(Debug)]
pub struct LeaseWriter(ArrayFd);

impl LeaseWriter {
    /// Rules act for `lease` from now, unless renewed again; zero disables
    /// the switch.
    pub fn renew(&self, lease: Duration) -> Result<(), Error> {
        let lease = Lease {
            heartbeat_ns: monotonic_ns(),
            lease_ns: u64::try_from(lease.as_nanos()).unwrap_or(u64::MAX),
        };
        self.0
            .set(0, &lease)
            .map_err(|e| map_err(LEASE_MAP, "could not renew the lease", e))
    }
}

fn missing(map: &'static str) -> Error {
    Error::Map {
        map,
        what: "missing from the object",
        source: anyhow::anyhow!("map `{map}` not found"),
    }
}

fn map_err(map: &'static str, what: &'static str, e: impl Into<anyhow::Error>) -> Error {
    Error::Map {
        map,
        what,
        source: e.into(),
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it so map
/// creation does not fail there. Newer kernels ignore it.
fn raise_memlock() {
    let r = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid pointer to a valid rlimit. A failure shows up later as
    // a map creation error, which says more than this call could.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &r) };
}
