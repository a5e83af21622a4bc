//! The kernel's port filter (`PORTS` map, see `faultbpf_common::port_bit`):
//! which bits a set of rule keys needs, grouped by map word so that a rule
//! of 60 000 ports is ~1 000 map updates, not 60 000.

use std::collections::BTreeMap;

use faultbpf_common::{PROTO_TCP, PROTO_UDP, RuleKey, port_bit};

/// Word index -> the bits `keys` need in it.
pub fn words(keys: impl IntoIterator<Item = RuleKey>) -> BTreeMap<u32, u64> {
    let mut words = BTreeMap::new();
    for k in keys {
        if let Some((word, mask)) = port_bit(k.side, k.port_be) {
            *words.entry(word).or_insert(0) |= mask;
        }
    }
    words
}

/// The keys, of either protocol, whose presence in the rule index keeps the
/// bit of `key` set.
pub fn sharing(key: RuleKey) -> [RuleKey; 2] {
    [PROTO_TCP, PROTO_UDP].map(|proto| RuleKey { proto, ..key })
}

#[cfg(test)]
mod tests {
    use faultbpf_common::{PORT_WORDS_PER_SIDE, SIDE_DST, SIDE_FRAGMENT, SIDE_SRC};

    use super::*;

    #[test]
    fn groups_bits_by_word_and_skips_fragments() {
        let keys = [
            RuleKey::new(PROTO_TCP, SIDE_DST, 1),
            RuleKey::new(PROTO_UDP, SIDE_DST, 2),
            RuleKey::new(PROTO_TCP, SIDE_DST, 64),
            RuleKey::new(PROTO_TCP, SIDE_SRC, 1),
            RuleKey::new(PROTO_TCP, SIDE_FRAGMENT, 0),
        ];
        let w = words(keys);
        assert_eq!(w.len(), 3);
        assert_eq!(w[&0], 0b110);
        assert_eq!(w[&1], 1);
        assert_eq!(w[&PORT_WORDS_PER_SIDE], 0b10);
    }

    #[test]
    fn a_port_is_shared_by_both_protocols() {
        let k = RuleKey::new(PROTO_UDP, SIDE_SRC, 53);
        let s = sharing(k);
        assert!(s.contains(&k));
        assert!(s.contains(&RuleKey::new(PROTO_TCP, SIDE_SRC, 53)));
    }
}
