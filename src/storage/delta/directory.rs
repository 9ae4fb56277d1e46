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

/// Entries a [`Summary`] block covers.
const SUMMARY_BLOCK: usize = 64;

/// The directory entries a generation reads. A scan rescanned for every
/// outer row of a nested loop orders them ([`Summary::order`]) by the
/// smallest key each may hold, in blocks of [`SUMMARY_BLOCK`] with the
/// largest key each block's entries may hold, so that a probe looks only at
/// the blocks that may matter. Pages keep apart in key order what they hold:
/// time-ordered inserts fill pages with rising, disjoint key ranges, spilled
/// keys fill pages bounded to ever smaller parts of the run; a probe's key
/// lies in a block or two. (Checking every entry at every rescan cost a probe
/// 5 us by a million rows in the delta.) A scan that looks once filters them
/// as they are: ordering would cost it more than it saves.
pub struct Summary {
    entries: Vec<DirEntry>,
    /// Once ordered, per block: the largest key an entry may hold, and
    /// whether one may hold NULLs.
    blocks: Option<Vec<(u64, bool)>>,
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
            blocks: None,
        }
    }

    /// Orders the entries for repeated lookups (once).
    pub fn order(&mut self) {
        if self.blocks.is_some() {
            return;
        }
        self.entries.sort_unstable_by_key(|d| d.range().0);
        let blocks = self
            .entries
            .chunks(SUMMARY_BLOCK)
            .map(|chunk| {
                chunk.iter().fold((0, false), |(max, nulls), d| {
                    (max.max(d.range().1), nulls || d.may_hold_nulls())
                })
            })
            .collect();
        self.blocks = Some(blocks);
    }

    /// The entries that may hold a key in `[lo, hi]` (none for `None`)
    /// or, with `nulls`, a NULL: those [`DirEntry::may_hold`] or
    /// [`DirEntry::may_hold_nulls`] accepts.
    pub fn candidates(
        &self,
        keys: Option<(u64, u64)>,
        nulls: bool,
    ) -> impl Iterator<Item = &DirEntry> + '_ {
        let block = match self.blocks {
            Some(_) => SUMMARY_BLOCK,
            None => self.entries.len().max(1),
        };
        self.entries
            .chunks(block)
            .enumerate()
            .filter(move |&(b, chunk)| {
                let Some(blocks) = &self.blocks else {
                    return true;
                };
                let (max, has_nulls) = blocks[b];
                // Entries are ordered by their smallest key, so a block
                // whose first lies above `hi` holds nothing below it.
                keys.is_some_and(|(lo, hi)| chunk[0].range().0 <= hi && lo <= max)
                    || nulls && has_nulls
            })
            .flat_map(|(_, chunk)| chunk)
            .filter(move |d| {
                keys.is_some_and(|(lo, hi)| d.may_hold(lo, hi)) || nulls && d.may_hold_nulls()
            })
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
    use super::{DirEntry, Summary, CLOSED, OPEN, SPLIT};
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
    }
}
