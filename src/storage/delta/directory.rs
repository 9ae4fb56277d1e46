//! The delta directory: a chain of pages from `Meta::dir_head`, one entry per
//! delta page ever allocated, in allocation order. Entries are appended under
//! the metapage's exclusive lock and never removed; their state and key range
//! change with their delta page's, in the same WAL record.

use super::{CLOSED, OPEN, SPLIT};
use crate::storage::buffer::{nblocks, Strategy};
use crate::storage::meta::META_BLOCK;
use crate::storage::page::{self, corrupt, PageKind, CONTENT};
use crate::storage::{Buf, Meta};
use pgrx::pg_sys;

#[derive(Clone, Copy)]
#[repr(C)]
struct DirHeader {
    count: u32,
    /// The next directory page, or `InvalidBlockNumber`.
    next: u32,
}

#[derive(Clone, Copy)]
#[repr(C)]
struct RawDirEntry {
    blk: u32,
    /// The delta page's generation: the index generation it was opened for.
    generation: u32,
    state: u8,
    has_nulls: u8,
    /// 1 for an open bounded page: `min` and `max` are its bounds.
    bounded: u8,
    _pad: [u8; 5],
    min: u64,
    max: u64,
}

const HEADER: usize = std::mem::size_of::<DirHeader>();
const ENTRY: usize = std::mem::size_of::<RawDirEntry>();
pub const DIR_CAPACITY: usize = (CONTENT - HEADER) / ENTRY;
const _: () = assert!(HEADER == 8 && ENTRY == 32);

/// A directory entry, with where it is stored.
#[derive(Clone, Copy, Debug)]
pub struct DirEntry {
    pub blk: pg_sys::BlockNumber,
    /// Generations from this one on read the page; earlier ones merged it
    /// into their run.
    pub generation: u32,
    pub state: u8,
    pub has_nulls: bool,
    /// An open page for spilled keys within `[min, max]` (no NULLs).
    pub bounded: bool,
    pub min: u64,
    pub max: u64,
    pub dir_blk: pg_sys::BlockNumber,
    pub slot: usize,
}

impl DirEntry {
    /// Whether the page can hold a non-null key in `[lo, hi]`. An open
    /// page's `min` is a lower bound of its keys, lowered with the insert of
    /// any key below it (`u64::MAX` while it has none; 0 from versions that
    /// did not keep it); its `max` is not kept, unless the page is bounded.
    pub fn may_hold(&self, lo: u64, hi: u64) -> bool {
        let (min, max) = self.range();
        min <= max && min <= hi && lo <= max
    }

    /// Whether the page's entries are the generation's: open or closed, not
    /// free or split (whose entries are on the pages it was split into), nor
    /// a bounded page that takes no key (a split's half before the split's
    /// last record: its entries, if any, are copies of a live page's).
    pub fn is_live(&self) -> bool {
        (self.state == OPEN && !(self.bounded && self.min > self.max)) || self.state == CLOSED
    }

    pub fn may_hold_nulls(&self) -> bool {
        (self.state == OPEN && !self.bounded) || (self.state == CLOSED && self.has_nulls)
    }

    /// The keys the page may hold: empty (`min > max`) for a free or split
    /// page, a closed page holding only NULLs, or a page a split is about to
    /// fill.
    pub fn range(&self) -> (u64, u64) {
        match self.state {
            OPEN if !self.bounded => (self.min, u64::MAX),
            OPEN | CLOSED => (self.min, self.max),
            _ => (u64::MAX, 0),
        }
    }
}

/// The directory entries a generation reads. A scan rescanned for every
/// outer row of a nested loop orders them ([`Summary::order`]) by the
/// smallest key each may hold, over a tree of the largest key each may hold,
/// so that a probe finds the entries that may hold its key in a few steps
/// per entry found, however many there are. Pages keep apart in key order
/// what they hold: time-ordered inserts fill pages with rising, disjoint key
/// ranges, spilled keys fill pages bounded to ever smaller parts of the run;
/// a probe's key lies in one or two. (Checking every entry at every rescan
/// cost a probe 5 us by a million rows in the delta; checking blocks of 64
/// still cost it about a tenth of its time.) A scan that looks once filters
/// them as they are: ordering would cost it more than it saves.
pub struct Summary {
    entries: Vec<DirEntry>,
    /// Once ordered: the smallest key each entry may hold, ascending (a
    /// copy, so that a probe reads one cache line for it, not a whole
    /// entry).
    mins: Vec<u64>,
    /// Once ordered: a max-tree over the largest key each entry may hold
    /// ([`MaxTree`]).
    maxes: Option<MaxTree>,
}

impl Summary {
    /// `dir`'s live entries of generation `generation` and later (the
    /// earlier ones were merged into the run).
    pub fn new(dir: Vec<DirEntry>, generation: u32) -> Summary {
        let entries = dir
            .into_iter()
            .filter(|d| d.generation >= generation && d.is_live())
            .collect();
        Summary {
            entries,
            mins: Vec::new(),
            maxes: None,
        }
    }

    /// Orders the entries for repeated lookups (once).
    pub fn order(&mut self) {
        if self.maxes.is_some() {
            return;
        }
        self.entries.sort_unstable_by_key(|d| d.range().0);
        self.mins = self.entries.iter().map(|d| d.range().0).collect();
        self.maxes = Some(MaxTree::new(self.entries.iter().map(|d| d.range().1)));
    }

    /// The entries that may hold a key in `[lo, hi]` (none for `None`)
    /// or, with `nulls`, a NULL: those [`DirEntry::may_hold`] or
    /// [`DirEntry::may_hold_nulls`] accepts.
    pub fn candidates(
        &self,
        keys: Option<(u64, u64)>,
        nulls: bool,
    ) -> impl Iterator<Item = &DirEntry> + '_ {
        let may = move |d: &&DirEntry| {
            keys.is_some_and(|(lo, hi)| d.may_hold(lo, hi)) || nulls && d.may_hold_nulls()
        };
        // Ordered and for keys alone: the entries whose largest key is at
        // least `lo` (the tree finds each), up to the first whose smallest
        // lies above `hi` (so do all after it).
        let stab = match (&self.maxes, keys) {
            (Some(tree), Some(keys)) if !nulls => Some((tree, keys)),
            _ => None,
        };
        let mut next = 0;
        let stabbed = std::iter::from_fn(move || {
            let (tree, (lo, hi)) = stab?;
            let i = tree
                .first_at_least(next, lo)
                .filter(|&i| i < self.mins.len() && self.mins[i] <= hi)?;
            next = i + 1;
            Some(&self.entries[i])
        });
        let all = self
            .entries
            .iter()
            .take(if stab.is_some() { 0 } else { usize::MAX });
        stabbed.chain(all).filter(may)
    }
}

/// A max segment tree over a list of values: the first value at least `x`
/// from a position on is found in a few steps.
struct MaxTree {
    /// Leaves at `[size, 2 * size)` (the values, then zeros), and each inner
    /// node `i` the larger of `2i` and `2i + 1`.
    nodes: Vec<u64>,
    size: usize,
}

impl MaxTree {
    fn new(values: impl ExactSizeIterator<Item = u64>) -> MaxTree {
        let size = values.len().next_power_of_two();
        let mut nodes = vec![0u64; 2 * size];
        for (i, v) in values.enumerate() {
            nodes[size + i] = v;
        }
        for i in (1..size).rev() {
            nodes[i] = nodes[2 * i].max(nodes[2 * i + 1]);
        }
        MaxTree { nodes, size }
    }

    /// The first position from `from` on whose value is at least `x` (a
    /// padding position past the values, whose value is 0, when `x` is 0).
    fn first_at_least(&self, from: usize, x: u64) -> Option<usize> {
        if from >= self.size {
            return None;
        }
        let mut node = self.size + from;
        if self.nodes[node] < x {
            // Up until a right sibling holds a value at least `x`: every
            // subtree passed holds only positions before it or values below.
            loop {
                if node & 1 == 0 && self.nodes[node + 1] >= x {
                    node += 1;
                    break;
                }
                node >>= 1;
                if node <= 1 {
                    return None;
                }
            }
            // Down to its first such leaf.
            while node < self.size {
                node = if self.nodes[2 * node] >= x {
                    2 * node
                } else {
                    2 * node + 1
                };
            }
        }
        Some(node - self.size)
    }
}

/// A validated view of one directory page, owning its locked buffer.
pub struct DirPage {
    buf: Buf,
    h: DirHeader,
}

impl DirPage {
    /// The view of a directory page whose buffer the caller has locked.
    pub fn open(rel: pg_sys::Relation, buf: Buf) -> DirPage {
        let blk = buf.blkno();
        // SAFETY: pinned and locked; the count is checked before entries are read.
        let h: DirHeader = unsafe {
            page::check(rel, blk, buf.page(), PageKind::DeltaDir);
            page::read_header(buf.page())
        };
        if h.count as usize > DIR_CAPACITY || h.next == META_BLOCK {
            corrupt(rel, blk, "delta directory page header is out of range");
        }
        DirPage { buf, h }
    }

    pub fn read(rel: pg_sys::Relation, blk: pg_sys::BlockNumber, strategy: Strategy) -> DirPage {
        let mut buf = Buf::read_with(rel, blk, strategy);
        buf.lock_shared();
        DirPage::open(rel, buf)
    }

    pub fn read_exclusive(rel: pg_sys::Relation, blk: pg_sys::BlockNumber) -> DirPage {
        DirPage::open(rel, Buf::read_exclusive(rel, blk))
    }

    #[allow(clippy::len_without_is_empty)] // a directory page's emptiness never matters
    pub fn len(&self) -> usize {
        self.h.count as usize
    }

    pub fn next(&self) -> pg_sys::BlockNumber {
        self.h.next
    }

    pub fn buf(&self) -> &Buf {
        &self.buf
    }

    /// Entry `slot`, validated.
    pub fn entry(&self, rel: pg_sys::Relation, slot: usize) -> DirEntry {
        let blk = self.buf.blkno();
        if slot >= self.len() {
            corrupt(rel, blk, &format!("delta directory has no slot {slot}"));
        }
        // SAFETY: slot < count <= DIR_CAPACITY keeps the read inside the page.
        let raw = unsafe {
            page::content(self.buf.page())
                .add(HEADER + slot * ENTRY)
                .cast::<RawDirEntry>()
                .read_unaligned()
        };
        if raw.blk == META_BLOCK || !(OPEN..=SPLIT).contains(&raw.state) {
            corrupt(rel, blk, "delta directory entry is invalid");
        }
        DirEntry {
            blk: raw.blk,
            generation: raw.generation,
            state: raw.state,
            has_nulls: raw.has_nulls != 0,
            bounded: raw.bounded != 0,
            min: raw.min,
            max: raw.max,
            dir_blk: blk,
            slot,
        }
    }
}

/// Writes entry `slot` on a directory page image.
///
/// # Safety
/// `image` must be a writable directory page image and `slot` below
/// `DIR_CAPACITY`.
pub(super) unsafe fn set_entry(
    image: pg_sys::Page,
    slot: usize,
    (blk, generation): (pg_sys::BlockNumber, u32),
    state: u8,
    (has_nulls, bounded): (bool, bool),
    (min, max): (u64, u64),
) {
    assert!(slot < DIR_CAPACITY);
    page::content(image)
        .add(HEADER + slot * ENTRY)
        .cast::<RawDirEntry>()
        .write_unaligned(RawDirEntry {
            blk,
            generation,
            state,
            has_nulls: has_nulls as u8,
            bounded: bounded as u8,
            _pad: [0; 5],
            min,
            max,
        });
}

/// The key range of a newly opened page's entry: no key yet. As the bounds
/// of a bounded page, no key at all: a page a split is about to fill.
pub(super) const OPEN_RANGE: (u64, u64) = (u64::MAX, 0);

/// Appends the entry of a newly opened page to a directory page image
/// holding `count` entries: bounded to `bounds`, or with [`OPEN_RANGE`].
///
/// # Safety
/// `image` must be a writable directory page image with `count < DIR_CAPACITY`.
pub(super) unsafe fn append(
    image: pg_sys::Page,
    count: usize,
    blk: pg_sys::BlockNumber,
    generation: u32,
    bounds: Option<(u64, u64)>,
) {
    set_entry(
        image,
        count,
        (blk, generation),
        OPEN,
        (false, bounds.is_some()),
        bounds.unwrap_or(OPEN_RANGE),
    );
    let mut h: DirHeader = page::read_header(image);
    h.count = count as u32 + 1;
    page::write_header(image, &h);
    page::set_content_len(image, HEADER + (count + 1) * ENTRY);
}

/// Formats an empty directory page image.
///
/// # Safety
/// `image` must be a writable page image.
pub(super) unsafe fn init_page(image: pg_sys::Page, generation: u32) {
    page::init(image, PageKind::DeltaDir, generation, HEADER);
    page::write_header(
        image,
        &DirHeader {
            count: 0,
            next: pg_sys::InvalidBlockNumber,
        },
    );
}

/// # Safety
/// `image` must be a writable directory page image.
pub(super) unsafe fn set_next(image: pg_sys::Page, next: pg_sys::BlockNumber) {
    let mut h: DirHeader = page::read_header(image);
    h.next = next;
    page::write_header(image, &h);
}

/// Every directory entry, reading one directory page at a time.
///
/// The directory as of one moment: read under the metapage's share lock,
/// which a split holds exclusive from its first record to its last (and
/// whose last record registers the metapage, so replay on a standby holds it
/// too), and whose directory records change two directory pages at once.
/// Readers that take its entries as a set of live pages read it so; those
/// that merely visit pages need not.
pub fn directory_consistent(rel: pg_sys::Relation, strategy: Strategy) -> Vec<DirEntry> {
    let meta_buf = Buf::read_shared(rel, META_BLOCK);
    // SAFETY: block 0, pinned and share-locked while the directory is read.
    let meta = unsafe { Meta::from_page(rel, meta_buf.page()) };
    directory(rel, &meta, strategy)
}

/// `meta` may be older than the directory: the chain only grows, so what it
/// adds is read too, and nothing about its length is taken from `meta`. A
/// chain longer than the relation has blocks has a cycle: that is damage.
pub fn directory(rel: pg_sys::Relation, meta: &Meta, strategy: Strategy) -> Vec<DirEntry> {
    let mut out = Vec::new();
    let mut blk = meta.dir_head;
    let mut seen = 0u32;
    let mut limit = meta.delta_pages / DIR_CAPACITY as u32 + 1;
    while blk != pg_sys::InvalidBlockNumber {
        seen += 1;
        if seen > limit {
            // Only now ask how large the index is: a stale hint is not damage.
            limit = nblocks(rel);
            if seen > limit {
                corrupt(rel, meta.dir_head, "delta directory chain has a cycle");
            }
        }
        let page = DirPage::read(rel, blk, strategy);
        out.extend((0..page.len()).map(|slot| page.entry(rel, slot)));
        blk = page.next();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::FREE;
    use super::{DirEntry, MaxTree, Summary, CLOSED, OPEN, SPLIT};
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn entry() -> impl Strategy<Value = DirEntry> {
        (
            0u8..12,
            1u32..4,
            any::<bool>(),
            any::<bool>(),
            0u64..40,
            0u64..5,
        )
            .prop_map(
                |(state, generation, has_nulls, bounded, min, width)| DirEntry {
                    blk: 1,
                    generation,
                    // Mostly closed: an open entry makes its block's range unbounded.
                    state: match state {
                        0 => OPEN,
                        1 => FREE,
                        2 => SPLIT,
                        _ => CLOSED,
                    },
                    has_nulls,
                    bounded,
                    min,
                    max: min + width,
                    dir_blk: 1,
                    slot: 0,
                },
            )
    }

    /// Entries with their position as `slot`, to tell them apart.
    fn entries() -> impl Strategy<Value = Vec<DirEntry>> {
        vec(entry(), 0..200).prop_map(|mut dir| {
            dir.iter_mut().enumerate().for_each(|(i, d)| d.slot = i);
            dir
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// A scan reads exactly the entries of its generation that may hold
        /// what it looks for (few keys, so that bounds often meet).
        #[test]
        fn candidates_are_the_entries_that_may_hold(
            dir in entries(),
            generation in 1u32..4,
            lo in 0u64..50,
            width in 0u64..8,
            keys in any::<bool>(),
            nulls in any::<bool>(),
            ordered in any::<bool>(),
        ) {
            let mut summary = Summary::new(dir.clone(), generation);
            if ordered {
                summary.order();
            }
            // Sometimes an empty interval (`lo > hi`), as a floor above the
            // scan's keys makes it.
            let keys = keys.then_some((lo, (lo + width).saturating_sub(2)));
            let mut got: Vec<usize> = summary.candidates(keys, nulls).map(|d| d.slot).collect();
            got.sort_unstable();
            let wanted: Vec<usize> = dir
                .iter()
                .filter(|d| {
                    d.generation >= generation
                        && (keys.is_some_and(|(lo, hi)| d.may_hold(lo, hi))
                            || nulls && d.may_hold_nulls())
                })
                .map(|d| d.slot)
                .collect();
            prop_assert_eq!(got, wanted);
        }

        /// The tree finds the first value at least `x` from any position.
        #[test]
        fn max_tree_finds_the_first_value_at_least(
            values in vec(0u64..100, 0..70),
            from in 0usize..80,
            x in 1u64..110,
        ) {
            let tree = MaxTree::new(values.iter().copied());
            let wanted = values.iter().skip(from).position(|&v| v >= x).map(|i| i + from);
            prop_assert_eq!(tree.first_at_least(from, x), wanted);
        }
    }
}
