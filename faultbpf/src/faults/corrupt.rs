//! `corrupt`: delivered data is wrong (Vaurien's `errors`, at packet level).
//!
//! What the application sees: reads return bytes that differ from what the
//! peer sent, one damaged 16-bit word per hit packet (0x5555 added, so an
//! echo through the rule both ways never comes back intact). The checksums are
//! fixed, so no layer below the application notices and the kernel's
//! checksum-error counters stay still: only end-to-end checks (TLS, an
//! application CRC) can catch it. TLS connections fail with a MAC error.
//!
//! Hooks: tc ingress and egress. Packets with under 2 payload bytes pass.
//!
//! Knobs: `--pct` (percent of matched packets corrupted).

use faultbpf_common::FaultKind;

pub const KIND: FaultKind = FaultKind::Corrupt;
