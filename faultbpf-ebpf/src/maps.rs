//! Every map the programs use but one (`FLOW_COPY` lives beside `Flow` in
//! `flow.rs`). User space finds them by the names in `faultbpf_common`
//! (`RULES_MAP`, ...), which must equal these statics' names.

use aya_ebpf::{
    macros::map,
    maps::{Array, LpmTrie, LruHashMap, PerCpuArray},
};
use faultbpf_common::{
    Lease, MAX_PEERS, MAX_SLOTS, PORT_WORDS, RULE_INDEX_WORDS, RuleCounters, RuleValue,
};

/// (protocol, side, port) -> slot + 1, four per word
/// (`RuleKey::index_bits`). With `RULES`, two array reads the verifier
/// inlines: the hash map they replace cost a matched packet ~40 ns (perf).
#[map]
pub static RULE_INDEX: Array<u64> = Array::with_max_entries(RULE_INDEX_WORDS, 0);

/// Slot -> rule.
#[map]
pub static RULES: Array<RuleValue> = Array::with_max_entries(MAX_SLOTS, 0);

/// One bit per (side, port) some rule uses (`faultbpf_common::port_bit`):
/// 16 KiB that stay in cache, read before the rule index so unmatched
/// traffic never reads the 768 KiB `RULE_INDEX`, which would not stay in
/// cache.
#[map]
pub static PORTS: Array<u64> = Array::with_max_entries(PORT_WORDS, 0);

/// Per-CPU counters indexed by `RuleValue::slot`: no atomics on the hot
/// path, and an array lookup the verifier inlines (a per-CPU hash cost the
/// drop path ~10 % of its packet rate).
#[map]
pub static COUNTERS: PerCpuArray<RuleCounters> = PerCpuArray::with_max_entries(MAX_SLOTS, 0);

/// The owner's heartbeat (dead man's switch), one entry.
#[map]
pub static LEASE: Array<Lease> = Array::with_max_entries(1, 0);

/// `--peer` prefixes, keyed by (slot, address): one lookup per packet of a
/// rule that has peers, whatever their number.
#[map]
pub static PEERS: LpmTrie<[u8; 20], u8> = LpmTrie::with_max_entries(MAX_PEERS, 0);

/// Room to build an answer (ICMPv6 unreachable: 96 bytes) outside the
/// 512-byte stack (`answer.rs`).
pub const SCRATCH_LEN: usize = 96;

/// A 4-byte aligned buffer, as `bpf_csum_diff` reads 32-bit words.
#[repr(C, align(8))]
pub struct Scratch(pub [u8; SCRATCH_LEN]);

/// One scratch buffer per CPU.
#[map]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// The delay device's sending-end ifindex; 0 while there is none.
#[map]
pub static DELAY_DEV: Array<u32> = Array::with_max_entries(1, 0);

/// Flows seen by delay rules: the delivery time last given to each, so
/// jitter never schedules a packet before the one ahead of it (fq orders a
/// flow by delivery time, so independent jitter would reorder it).
#[map]
pub static FLOW_LAST: LruHashMap<u32, u64> = LruHashMap::with_max_entries(65_536, 0);
