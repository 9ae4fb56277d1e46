//! What a rescanned scan remembers of the delta pages it read: a Bloom filter
//! of each page's keys, so that a later probe of a key the page did not hold
//! skips the page. Under a stream of random inserts into a run built full,
//! every probe of a slice's run page would otherwise read the slice's delta
//! page too (two pages a probe), although the key it looks for is almost
//! never there.
//!
//! Only an MVCC scan keeps these across rescans (with its other hints,
//! `src/am/scan.rs`), and only to skip a page: what a page holds after the
//! read is what was inserted since, which its snapshot, older than the read,
//! cannot see, and VACUUM only removes entries. A page the filter does not
//! rule out is read as before, so a false positive costs a read, never a row.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Filter bits per key, rounded up to a power of two per page: three probes
/// then pass about 3% of absent keys.
const BITS_PER_KEY: usize = 8;
const PROBES: u32 = 3;
/// A key's probes all fall in one block of this many words (a cache line):
/// a probe of a page costs one memory access, not three (a blocked Bloom
/// filter; it passes slightly more absent keys than a plain one).
const BLOCK_WORDS: usize = 8;

/// A Bloom filter of one page's keys.
pub struct KeyFilter {
    words: Box<[u64]>,
}

impl KeyFilter {
    /// The filter of `keys` (`len` of them at most); `None` if its memory
    /// could not be had (the page is then read at every probe, as without).
    pub fn new(keys: impl Iterator<Item = u64>, len: usize) -> Option<KeyFilter> {
        let bits = filter_bits(len);
        let mut words = Vec::new();
        words.try_reserve_exact(bits / 64).ok()?;
        words.resize(bits / 64, 0u64);
        for key in keys {
            for bit in probes(key, words.len()) {
                words[bit / 64] |= 1 << (bit % 64);
            }
        }
        Some(KeyFilter {
            words: words.into_boxed_slice(),
        })
    }

    /// False only if `key` is not among the keys the filter was made of.
    pub fn may_contain(&self, key: u64) -> bool {
        probes(key, self.words.len()).all(|bit| self.words[bit / 64] & (1 << (bit % 64)) != 0)
    }

    fn bytes(&self) -> usize {
        self.words.len() * 8
    }
}

/// The bits of a filter of `len` keys.
fn filter_bits(len: usize) -> usize {
    len.saturating_mul(BITS_PER_KEY).next_power_of_two().max(64)
}

/// The bits `key` sets in a filter of `words` words (a power of two): a
/// 64-bit mix of it picks a block with its low bits and the bits in the
/// block with nine high bits each.
fn probes(key: u64, words: usize) -> impl Iterator<Item = usize> {
    let h = mix(key);
    let block = BLOCK_WORDS.min(words);
    let first = (h as usize & (words / block - 1)) * block * 64;
    let in_block = block * 64 - 1;
    (0..PROBES).map(move |i| first + ((h >> (32 + 9 * i)) as usize & in_block))
}

/// splitmix64's finalizer: consecutive keys spread over the whole word.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Hashes a block number for the map of filters: one multiplication (the
/// default hasher, made to resist chosen keys, cost a probe more than its
/// filter did; block numbers are not chosen by users).
#[derive(Default)]
struct BlockHasher(u64);

impl Hasher for BlockHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// The filters of the delta pages a scan read, by block, within a memory
/// budget: past it, pages are read at every probe as before.
pub struct PageFilters {
    by_block: HashMap<u32, KeyFilter, BuildHasherDefault<BlockHasher>>,
    bytes: usize,
    budget: usize,
}

/// What a map entry costs beyond its filter's words (key, box, hashing).
const ENTRY_OVERHEAD: usize = 32;

impl PageFilters {
    pub fn new(budget: usize) -> PageFilters {
        PageFilters {
            by_block: HashMap::default(),
            bytes: 0,
            budget,
        }
    }

    /// The filter of block `blk`, if one was made.
    pub fn get(&self, blk: u32) -> Option<&KeyFilter> {
        self.by_block.get(&blk)
    }

    /// Makes and keeps the filter of block `blk`'s `keys` (`len` at most),
    /// unless the budget is spent or memory short; false then.
    pub fn remember(&mut self, blk: u32, keys: impl Iterator<Item = u64>, len: usize) -> bool {
        if self.bytes + filter_bits(len) / 8 + ENTRY_OVERHEAD > self.budget
            || self.by_block.try_reserve(1).is_err()
        {
            return false;
        }
        let Some(filter) = KeyFilter::new(keys, len) else {
            return false;
        };
        self.bytes += filter.bytes() + ENTRY_OVERHEAD;
        if let Some(old) = self.by_block.insert(blk, filter) {
            self.bytes -= old.bytes() + ENTRY_OVERHEAD;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *seed
    }

    #[test]
    fn every_key_of_the_page_passes() {
        let mut seed = 7;
        for len in [0usize, 1, 2, 7, 63, 64, 65, 500, 511, 4000] {
            for shape in 0..4 {
                let keys: Vec<u64> = (0..len as u64)
                    .map(|i| match shape {
                        0 => i,
                        1 => u64::MAX - i,
                        2 => i << 40,
                        _ => lcg(&mut seed),
                    })
                    .collect();
                let f = KeyFilter::new(keys.iter().copied(), len).unwrap();
                for &k in &keys {
                    assert!(f.may_contain(k), "key {k} of {len} (shape {shape})");
                }
            }
        }
    }

    #[test]
    fn absent_keys_mostly_fail() {
        let mut seed = 11;
        for len in [1usize, 50, 500] {
            let keys: Vec<u64> = (0..len).map(|_| lcg(&mut seed) >> 1).collect();
            let f = KeyFilter::new(keys.iter().copied(), len).unwrap();
            // Keys with the top bit set, which none of the above has.
            let absent: Vec<u64> = (0..100_000u64).map(|i| (1 << 63) | i).collect();
            let passed = absent.iter().filter(|&&k| f.may_contain(k)).count();
            assert!(
                passed * 100 < absent.len() * 5,
                "{passed} of {} absent keys passed a filter of {len}",
                absent.len()
            );
        }
        // Consecutive keys, as a time-ordered or serial column has.
        let f = KeyFilter::new((1000..1500).map(|k| k * 2), 500).unwrap();
        let passed = (1000..1500u64).filter(|k| f.may_contain(k * 2 + 1)).count();
        assert!(passed * 100 < 500 * 10, "{passed} of 500 neighbours passed");
    }

    #[test]
    fn an_empty_page_rules_out_every_key() {
        let f = KeyFilter::new(std::iter::empty(), 0).unwrap();
        assert!((0..10_000).all(|k| !f.may_contain(k)));
    }

    #[test]
    fn the_budget_bounds_the_filters_kept() {
        let mut pf = PageFilters::new(4096);
        let mut kept = 0;
        for blk in 0..1000 {
            if pf.remember(blk, 0..100, 100) {
                kept += 1;
            }
        }
        assert!(pf.bytes <= 4096, "{} bytes", pf.bytes);
        assert!(kept > 1 && kept < 1000, "{kept} filters kept");
        assert!(pf.get(0).is_some() && pf.get(999).is_none());
        assert!(pf.get(0).unwrap().may_contain(42));
        // Replacing a filter does not count it twice.
        let mut pf = PageFilters::new(4096);
        pf.remember(0, 0..100, 100);
        let before = pf.bytes;
        assert!(pf.remember(0, 0..100, 100));
        assert_eq!(pf.bytes, before);
    }
}
