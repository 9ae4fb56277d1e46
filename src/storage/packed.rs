//! The entries of a run or NULL page, packed: groups of [`GROUP`] (key, TID)
//! pairs encoded by [`codec`], a group table that finds a key's group
//! without decoding anything, and a tombstone bitmap. Free of pgrx, so that
//! packing and searching are tested with plain `cargo test`; `run.rs` puts
//! the region on a page, after its header.
//!
//! The region, for `count` entries in `g = count.div_ceil(GROUP)` groups:
//!
//! | bytes | what |
//! |---|---|
//! | `8 g` | each group's first key (`u64`) |
//! | `2 g` | where each group's bytes end, from the start of the first (`u16`) |
//! | `count` bits, rounded up to 8 bytes | tombstones: VACUUM sets them in place |
//! | the rest | the groups' bytes, in order |
//!
//! Every group holds `GROUP` entries except the page's last, so slot `s` is
//! in group `s / GROUP`. The packer fills a page greedily: whole groups while
//! they fit, then the longest prefix of the next that does (the rest starts
//! the next page), so that a page whose data does not compress still holds
//! as many entries as its bytes allow.

use super::codec::{self, Group, Malformed, Tid, GROUP};

/// Most entries a page may hold (a page of equal keys on consecutive heap
/// rows packs to about a bit an entry, its tombstone included).
pub const MAX_COUNT: usize = 16384;

/// The smallest budget a packer takes: room for one entry of any kind (a
/// one-entry group is its mode byte, a few parameters and 14 bytes at most).
pub const MIN_BUDGET: usize = 256;

/// Bytes of the group table per group.
const TABLE: usize = 8 + 2;

const fn bitmap_len(count: usize) -> usize {
    count.div_ceil(64) * 8
}

/// Bytes the region takes for `count` entries whose groups take `bytes`.
pub const fn region_len(count: usize, bytes: usize) -> usize {
    count.div_ceil(GROUP) * TABLE + bitmap_len(count) + bytes
}

/// One page's worth of packed entries, ready to be written.
#[derive(Debug, Default, Clone)]
pub struct PackedPage {
    pub count: usize,
    /// The last entry's (key, TID): the next page's fence.
    pub last: (u64, Tid),
    firsts: Vec<u64>,
    ends: Vec<u16>,
    bytes: Vec<u8>,
    dead: Vec<usize>,
}

impl PackedPage {
    pub fn len(&self) -> usize {
        region_len(self.count, self.bytes.len())
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Writes the region into `out`, which is [`PackedPage::len`] bytes
    /// long.
    pub fn write(&self, out: &mut [u8]) {
        assert_eq!(out.len(), self.len());
        let g = self.firsts.len();
        let (table, rest) = out.split_at_mut(g * TABLE);
        for (i, f) in self.firsts.iter().enumerate() {
            table[8 * i..8 * i + 8].copy_from_slice(&f.to_le_bytes());
        }
        for (i, e) in self.ends.iter().enumerate() {
            table[8 * g + 2 * i..8 * g + 2 * i + 2].copy_from_slice(&e.to_le_bytes());
        }
        let (bitmap, bytes) = rest.split_at_mut(bitmap_len(self.count));
        bitmap.fill(0);
        for &s in &self.dead {
            bitmap[s / 8] |= 1 << (s % 8);
        }
        bytes.copy_from_slice(&self.bytes);
    }
}

/// Packs sorted entries into pages of at most `budget` region bytes.
pub struct Packer {
    budget: usize,
    /// Most entries a page takes.
    max_count: usize,
    page: PackedPage,
    /// Entries not yet in a group: fewer than `GROUP`.
    keys: Vec<u64>,
    tids: Vec<Tid>,
    dead: Vec<bool>,
    scratch: Vec<u8>,
    /// Pages done, for the caller to take.
    ready: Vec<PackedPage>,
}

impl Packer {
    /// A packer of pages whose region takes at most `budget` bytes, at least
    /// [`MIN_BUDGET`].
    pub fn new(budget: usize) -> Packer {
        assert!(budget >= MIN_BUDGET);
        Packer {
            budget,
            max_count: MAX_COUNT,
            page: PackedPage::default(),
            keys: Vec::with_capacity(GROUP),
            tids: Vec::with_capacity(GROUP),
            dead: Vec::with_capacity(GROUP),
            scratch: Vec::with_capacity(codec::MAX_ENCODED),
            ready: Vec::new(),
        }
    }

    /// At most `n` entries a page (1..=[`MAX_COUNT`]).
    pub fn at_most(mut self, n: usize) -> Packer {
        self.max_count = n.clamp(1, MAX_COUNT);
        self
    }

    /// Adds an entry (in (key, TID) order), tombstoned if `dead`. Pages it
    /// completed wait in [`Packer::ready`].
    pub fn push(&mut self, key: u64, tid: Tid, dead: bool) {
        self.keys.push(key);
        self.tids.push(tid);
        self.dead.push(dead);
        // A group that does not fit leaves its rest pending for the next
        // page, whole again once this placed some of it.
        while self.keys.len() >= GROUP {
            self.place_group();
        }
    }

    /// The pages completed so far, in order.
    pub fn ready(&mut self) -> std::vec::Drain<'_, PackedPage> {
        self.ready.drain(..)
    }

    /// The pages not yet taken, the last one included.
    pub fn finish(mut self) -> Vec<PackedPage> {
        while !self.keys.is_empty() {
            self.place_group();
        }
        if !self.page.is_empty() {
            self.ready.push(std::mem::take(&mut self.page));
        }
        self.ready
    }

    /// Whether `n` more entries in a group of `bytes` fit the page.
    fn fits(&self, n: usize, bytes: usize) -> bool {
        let count = self.page.count + n;
        count <= self.max_count && region_len(count, self.page.bytes.len() + bytes) <= self.budget
    }

    fn encode(&mut self, n: usize) -> usize {
        self.scratch.clear();
        codec::encode(&self.keys[..n], &self.tids[..n], &mut self.scratch);
        self.scratch.len()
    }

    /// Places up to a group of the pending entries: all of them if they fit
    /// the page, else the longest prefix that does, and the page is done.
    fn place_group(&mut self) {
        let n = self.keys.len().min(GROUP);
        let len = self.encode(n);
        if self.fits(n, len) {
            self.commit(n);
            return;
        }
        // The longest prefix that fits: encoded sizes grow with the prefix
        // (a longer one has as many gaps, each as wide, and as many values),
        // and the answer is checked by encoding it.
        let (mut lo, mut hi) = (0usize, n); // lo fits (0 trivially), hi does not
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            let len = self.encode(mid);
            if self.fits(mid, len) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        if lo > 0 {
            let len = self.encode(lo);
            if self.fits(lo, len) {
                self.commit(lo);
            }
        }
        assert!(
            !self.page.is_empty(),
            "an empty page holds an entry of any size (MIN_BUDGET)"
        );
        self.ready.push(std::mem::take(&mut self.page));
    }

    /// Moves the first `n` pending entries, encoded in `scratch`, into the
    /// page as a group.
    fn commit(&mut self, n: usize) {
        let p = &mut self.page;
        p.firsts.push(self.keys[0]);
        p.bytes.extend_from_slice(&self.scratch);
        p.ends.push(p.bytes.len() as u16);
        for (i, &d) in self.dead[..n].iter().enumerate() {
            if d {
                p.dead.push(p.count + i);
            }
        }
        p.count += n;
        p.last = (self.keys[n - 1], self.tids[n - 1]);
        self.keys.drain(..n);
        self.tids.drain(..n);
        self.dead.drain(..n);
    }
}

/// A packed region as read from a page, checked for its size (each group's
/// bounds are checked by [`Region::open`], and its values as they are
/// decoded: a lookup reads part of one group, and should not pay for
/// checking all of them).
#[derive(Clone, Copy)]
pub struct Region<'a> {
    raw: &'a [u8],
    // Narrow, so that a page view (which holds two) stays small to move.
    count: u32,
    groups: u32,
}

impl<'a> Region<'a> {
    /// The region of `count` entries at the start of `raw`, which it must
    /// fill exactly.
    pub fn parse(raw: &'a [u8], count: usize) -> Result<Region<'a>, Malformed> {
        if count == 0 || count > MAX_COUNT {
            return Err(Malformed("entry count out of range"));
        }
        let groups = count.div_ceil(GROUP);
        let r = Region {
            raw,
            count: count as u32,
            groups: groups as u32,
        };
        if raw.len() < region_len(count, 0) || region_len(count, r.end(groups - 1)) != raw.len() {
            return Err(Malformed("region length does not match its groups"));
        }
        Ok(r)
    }

    #[inline]
    pub fn count(&self) -> usize {
        self.count as usize
    }

    #[inline]
    pub fn groups(&self) -> usize {
        self.groups as usize
    }

    #[inline]
    pub fn first_key(&self, g: usize) -> u64 {
        u64::from_le_bytes(self.raw[8 * g..8 * g + 8].try_into().expect("8 bytes"))
    }

    fn end(&self, g: usize) -> usize {
        let at = 8 * self.groups() + 2 * g;
        u16::from_le_bytes([self.raw[at], self.raw[at + 1]]) as usize
    }

    /// Entries in group `g`.
    pub fn group_len(&self, g: usize) -> usize {
        (self.count() - g * GROUP).min(GROUP)
    }

    /// Opens group `g` in `group`; its values are then read with
    /// [`Region::bytes`].
    pub fn open(&self, g: usize, group: &mut Group) -> Result<(), Malformed> {
        let at = self.groups() * TABLE + bitmap_len(self.count());
        let start = if g == 0 { 0 } else { self.end(g - 1) };
        let end = self.end(g);
        if start >= end || at + end > self.raw.len() {
            return Err(Malformed("group offsets out of order"));
        }
        if g > 0 && self.first_key(g) < self.first_key(g - 1) {
            return Err(Malformed("group keys out of order"));
        }
        prefetch(&self.raw[at + start..at + end]);
        let bits = Self::bitmap_at(self.count()) + g * GROUP / 8;
        prefetch(&self.raw[bits..bits + 1]);
        let bound = if g + 1 < self.groups() {
            self.first_key(g + 1)
        } else {
            u64::MAX
        };
        group.open(
            self.raw,
            at + start..at + end,
            self.first_key(g),
            self.group_len(g),
            bound,
        )
    }

    /// The bytes a group opened by [`Region::open`] reads its values from.
    #[inline]
    pub fn bytes(&self) -> &'a [u8] {
        self.raw
    }

    /// Decodes group `g` whole into the first [`Region::group_len`] slots
    /// of `keys` and `tids`.
    #[cfg(test)]
    pub fn decode(&self, g: usize, keys: &mut [u64], tids: &mut [Tid]) -> Result<(), Malformed> {
        let mut group = Group::default();
        self.open(g, &mut group)?;
        let (k, t) = group.decoded(self.raw)?;
        keys[..k.len()].copy_from_slice(k);
        tids[..t.len()].copy_from_slice(t);
        Ok(())
    }

    /// Offset of the tombstone bitmap in the region.
    pub fn bitmap_at(count: usize) -> usize {
        count.div_ceil(GROUP) * TABLE
    }

    /// Whether a slot of `from..to` may be tombstoned: a bitmap byte that
    /// covers one of them is not zero. A scan reads the slots one by one only
    /// then.
    #[inline]
    pub fn may_have_dead(&self, from: usize, to: usize) -> bool {
        let at = Self::bitmap_at(self.count());
        from < to
            && self.raw[at + from / 8..at + (to - 1) / 8 + 1]
                .iter()
                .any(|&b| b != 0)
    }

    #[inline]
    pub fn dead(&self, slot: usize) -> bool {
        debug_assert!(slot < self.count());
        self.raw[Self::bitmap_at(self.count()) + slot / 8] & (1 << (slot % 8)) != 0
    }

    /// The group that holds the lower bound of `key` (the first entry
    /// `>= key`), or the one before it when that is a group's first entry:
    /// the last group whose first key is below `key`, or group 0. Group
    /// `near` is tried first (two neighbouring keys of the table, where a
    /// binary search over a full page's would touch several cache lines).
    pub fn group_of(&self, key: u64, near: usize) -> usize {
        if near < self.groups()
            && (near == 0 || self.first_key(near) < key)
            && (near + 1 == self.groups() || self.first_key(near + 1) >= key)
        {
            return near;
        }
        let (mut lo, mut hi) = (0usize, self.groups());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.first_key(mid) < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.saturating_sub(1)
    }
}

/// Asks the CPU to start loading `bytes` into its cache: a lookup reads a
/// few scattered lines of a page (its header, group table, a group, its
/// insert area), each a cache miss on a large index, and waiting for them
/// one after the other showed in its profile.
#[inline]
pub fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: a prefetch is a hint; it reads nothing and cannot fault,
        // and the address is inside `bytes` anyway.
        unsafe {
            std::arch::x86_64::_mm_prefetch(
                line.as_ptr() as *const i8,
                std::arch::x86_64::_MM_HINT_T0,
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn pack(entries: &[(u64, Tid, bool)], budget: usize) -> Vec<PackedPage> {
        let mut p = Packer::new(budget);
        let mut pages = Vec::new();
        for &(k, t, d) in entries {
            p.push(k, t, d);
            pages.extend(p.ready());
        }
        pages.extend(p.finish());
        pages
    }

    fn unpack(page: &PackedPage) -> Vec<(u64, Tid, bool)> {
        let mut raw = vec![0u8; page.len()];
        page.write(&mut raw);
        let r = Region::parse(&raw, page.count).expect("well formed");
        let mut out = Vec::new();
        let (mut keys, mut tids) = ([0u64; GROUP], [0u64; GROUP]);
        for g in 0..r.groups() {
            r.decode(g, &mut keys, &mut tids).expect("decodes");
            for i in 0..r.group_len(g) {
                out.push((keys[i], tids[i], r.dead(g * GROUP + i)));
            }
        }
        out
    }

    fn sorted(mut v: Vec<(u64, u64, bool)>) -> Vec<(u64, Tid, bool)> {
        v.sort_unstable_by_key(|&(k, t, _)| (k, t));
        v.dedup_by_key(|e| (e.0, e.1));
        v
    }

    /// Keys from a few shapes: dense, duplicated, spread over 64 bits.
    fn keys() -> impl Strategy<Value = u64> {
        prop_oneof![0u64..1000, 0u64..20, any::<u64>()]
    }

    /// TIDs: a small heap, a large one, any 48 bits.
    fn tids() -> impl Strategy<Value = Tid> {
        prop_oneof![
            (0u64..50, 1u64..300).prop_map(|(b, o)| b << 16 | o),
            (0u64..(1 << 32), 1u64..(1 << 16)).prop_map(|(b, o)| b << 16 | o),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Whatever the data and the budget, the pages hold every entry in
        /// order with its tombstone, each within its budget.
        #[test]
        fn pages_round_trip(entries in vec((keys(), tids(), any::<bool>()), 1..3000),
                            budget in MIN_BUDGET..8160) {
            let entries = sorted(entries);
            let pages = pack(&entries, budget);
            let mut back = Vec::new();
            for p in &pages {
                prop_assert!(p.len() <= budget && p.count <= MAX_COUNT);
                back.extend(unpack(p));
            }
            prop_assert_eq!(back, entries);
            // Only the last page may have been closed with room for a
            // whole group of the next entries; every other stopped because
            // the next entry did not fit (so at most a group's worth is lost).
            for p in &pages[..pages.len() - 1] {
                prop_assert!(p.len() + codec::MAX_ENCODED + TABLE + 16 > budget
                             || p.count + GROUP > MAX_COUNT);
            }
        }

        /// The group a key's lower bound is searched in holds it, or it is
        /// the first entry of the next group.
        #[test]
        fn group_of_finds_the_lower_bound(entries in vec((keys(), tids()), 1..1500), probe in keys(),
                                          near in 0usize..20) {
            let entries = sorted(entries.into_iter().map(|(k, t)| (k, t, false)).collect());
            let pages = pack(&entries, 8160);
            let mut raw = vec![0u8; pages[0].len()];
            pages[0].write(&mut raw);
            let r = Region::parse(&raw, pages[0].count).unwrap();
            let on_page = &entries[..pages[0].count];
            let lb = on_page.partition_point(|e| e.0 < probe);
            let g = r.group_of(probe, near);
            prop_assert_eq!(g, r.group_of(probe, usize::MAX));
            prop_assert!(lb >= g * GROUP && lb <= g * GROUP + r.group_len(g),
                         "lower bound {} outside group {}", lb, g);
        }

        /// A range is said to hold tombstones exactly when a bitmap byte
        /// over it has one: never a tombstone missed, and a range whose
        /// bytes are clear is read in bulk.
        #[test]
        fn may_have_dead_follows_the_bitmap(
            entries in vec((keys(), tids(), prop::bool::weighted(0.02)), 1..2000),
            ranges in vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 1..40),
        ) {
            let entries = sorted(entries);
            let pages = pack(&entries, 8160);
            let mut raw = vec![0u8; pages[0].len()];
            pages[0].write(&mut raw);
            let n = pages[0].count;
            let r = Region::parse(&raw, n).unwrap();
            for (a, b) in ranges {
                let (a, b) = (a.index(n + 1), b.index(n + 1));
                let (from, to) = (a.min(b), a.max(b));
                let dead_near = from < to
                    && (from / 8 * 8..((to - 1) / 8 * 8 + 8).min(n)).any(|s| r.dead(s));
                prop_assert_eq!(r.may_have_dead(from, to), dead_near, "slots {}..{}", from, to);
                prop_assert!(r.may_have_dead(from, to) || !(from..to).any(|s| r.dead(s)));
            }
        }

        /// Damaged regions are refused or decode to something, never panic.
        #[test]
        fn damaged_regions_never_panic(entries in vec((keys(), tids()), 1..600),
                                       flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
                                       cut in 0usize..40) {
            let entries = sorted(entries.into_iter().map(|(k, t)| (k, t, false)).collect());
            let pages = pack(&entries, 8160);
            let mut raw = vec![0u8; pages[0].len()];
            pages[0].write(&mut raw);
            for (i, x) in flips {
                let i = i.index(raw.len());
                raw[i] ^= x;
            }
            raw.truncate(raw.len().saturating_sub(cut));
            if let Ok(r) = Region::parse(&raw, pages[0].count) {
                let (mut keys, mut tids) = ([0u64; GROUP], [0u64; GROUP]);
                for g in 0..r.groups() {
                    let _ = r.decode(g, &mut keys, &mut tids);
                    let _ = r.group_of(keys[0], g);
                }
            }
        }
    }

    /// A heap in key order packs to a few bits an entry; data that does not
    /// compress costs at most the raw 14 bytes and the page overhead.
    #[test]
    fn sizes() {
        let ordered: Vec<_> = (0..100_000u64)
            .map(|i| (i * 3, (i / 100) << 16 | (i % 100 + 1), false))
            .collect();
        let pages = pack(&ordered, 8160);
        let bits = pages.iter().map(|p| p.len() * 8).sum::<usize>() as f64 / ordered.len() as f64;
        assert!(bits < 8.0, "ordered heap: {bits} bits an entry");

        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut random: Vec<_> = (0..20_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (
                    x,
                    (x >> 16 & 0xFFFF_FFFF) << 16 | (x & 0xFFFF).max(1),
                    false,
                )
            })
            .collect();
        random.sort_unstable();
        let pages = pack(&random, 8160);
        let per_page = random.len() as f64 / pages.len() as f64;
        assert!(
            per_page >= 8160.0 / 15.0,
            "random: {per_page} entries a page"
        );
    }
}
