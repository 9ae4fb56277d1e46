//! Delta pages hold entries inserted since the build, unsorted, each page with
//! the min/max ordinal of its entries. A directory (a chain of pages from the
//! metapage, [`directory`]) lists every delta page with its state and, once
//! the page is full and closed, its key range, so scans read only the pages
//! that can match. Inserting is in [`insert`], VACUUM in [`vacuum`]; this file
//! declares the two page formats and the views that read them.
//!
//! A page's state lives both on the page (what inserters check under the page
//! lock) and in its directory entry (what scans read); the two change together
//! in one WAL record. `src/storage/README.md` has the lock rules.

mod directory;
mod insert;
mod key_filter;
mod vacuum;

pub use directory::{directory, directory_consistent, DirEntry, DirPage, Summary};
pub use insert::{
    close_bounded, close_open, freeze, insert, insert_bounded, insert_into_open, Placement,
};
pub use key_filter::PageFilters;
pub use vacuum::{bulk_delete, discard, retag};

use super::buffer::Strategy;
use super::page::{self, corrupt, PageKind, CONTENT, PAGE_HEADER};
use super::run::{tid_from_ptr, tid_to_ptr, Tid};
use super::{Buf, Meta};
use pgrx::pg_sys;

/// Header of a delta page, followed by `count` entries.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct DeltaHeader {
    /// Smallest and largest non-null key on the page (`u64::MAX`, 0 if none);
    /// on an open bounded page, the bounds its keys must lie within.
    pub min: u64,
    pub max: u64,
    pub count: u16,
    pub state: u8,
    pub has_nulls: u8,
    /// 1 once the page is closed: its entries are in (key, TID) order, so a
    /// lookup binary-searches them (0 on pages closed by earlier builds).
    pub sorted: u8,
    /// 1 on a page for spilled keys of one key range (see [`insert`]): while
    /// open, it takes only keys within `[min, max]`, which its directory
    /// entry gives as well (0 on pages of earlier versions).
    pub bounded: u8,
    pub _pad: [u8; 2],
}

/// One entry as stored.
#[derive(Clone, Copy)]
#[repr(C)]
struct RawEntry {
    key: u64,
    tid: pg_sys::ItemPointerData,
    flags: u16,
}

const HEADER: usize = std::mem::size_of::<DeltaHeader>();
const ENTRY: usize = std::mem::size_of::<RawEntry>();
pub const DELTA_CAPACITY: usize = (CONTENT - HEADER) / ENTRY;
const _: () = assert!(HEADER == 24 && ENTRY == 16 && DELTA_CAPACITY <= u16::MAX as usize);

/// Page and directory entry states.
pub const OPEN: u8 = 1;
pub const CLOSED: u8 = 2;
pub const FREE: u8 = 3;
/// Directory entries only: a bounded page whose entries were copied into two
/// pages for the halves of its bounds (`insert::split`). Its page stays
/// `CLOSED` and unchanged, for scans that read the directory before the
/// split; scans that read it after do not read the page, and neither do
/// retrains. Freed once no snapshot from before the split is left.
pub const SPLIT: u8 = 4;

const FLAG_NULL: u16 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeltaEntry {
    pub key: u64,
    pub tid: Tid,
    pub null: bool,
}

impl DeltaHeader {
    fn empty() -> DeltaHeader {
        DeltaHeader {
            min: u64::MAX,
            max: 0,
            count: 0,
            state: OPEN,
            has_nulls: 0,
            sorted: 0,
            bounded: 0,
            _pad: [0; 2],
        }
    }
}

/// A validated view of one delta page. It owns the pinned buffer, so it cannot
/// outlive the pin; it is read while the buffer is locked.
pub struct DeltaPage {
    buf: Buf,
    h: DeltaHeader,
}

impl DeltaPage {
    /// Share-locks delta page `blk` and validates it.
    pub fn read(rel: pg_sys::Relation, blk: pg_sys::BlockNumber, strategy: Strategy) -> DeltaPage {
        let mut buf = Buf::read_with(rel, blk, strategy);
        buf.lock_shared();
        DeltaPage::open(rel, buf)
    }

    /// The view of a delta page whose buffer the caller has locked.
    pub fn open(rel: pg_sys::Relation, buf: Buf) -> DeltaPage {
        let blk = buf.blkno();
        // SAFETY: the buffer is pinned and locked; the header is validated
        // before the entries are read.
        let h: DeltaHeader = unsafe {
            page::check(rel, blk, buf.page(), PageKind::Delta);
            page::read_header(buf.page())
        };
        if h.count as usize > DELTA_CAPACITY || !(OPEN..=FREE).contains(&h.state) {
            corrupt(rel, blk, "delta page header is out of range");
        }
        DeltaPage { buf, h }
    }

    pub fn header(&self) -> DeltaHeader {
        self.h
    }

    /// Whether this page is free: retired (its entries were moved into a
    /// newer generation's run) or emptied by VACUUM.
    pub fn is_free(&self) -> bool {
        self.h.state == FREE
    }

    /// The generation the page is tagged with.
    pub fn tag(&self) -> u32 {
        // SAFETY: the buffer is pinned and locked, and the page was
        // validated in `open`.
        unsafe { page::opaque(self.buf.page()).generation }
    }

    pub fn len(&self) -> usize {
        self.h.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.h.count == 0
    }

    pub fn is_full(&self) -> bool {
        self.len() >= DELTA_CAPACITY
    }

    /// Where entry `i` is stored.
    fn at(&self, i: usize) -> *const RawEntry {
        assert!(i < self.len());
        // SAFETY: i < count <= DELTA_CAPACITY keeps the address inside the
        // page, which is locked while the view exists.
        unsafe {
            page::content(self.buf.page())
                .add(HEADER + i * ENTRY)
                .cast()
        }
    }

    pub fn entry(&self, i: usize) -> DeltaEntry {
        // SAFETY: `at` checked the index; the page is locked.
        let raw = unsafe { self.at(i).read_unaligned() };
        DeltaEntry {
            key: raw.key,
            tid: tid_from_ptr(&raw.tid),
            null: raw.flags & FLAG_NULL != 0,
        }
    }

    /// Every entry of the page (a delta page holds live entries only: VACUUM
    /// removes dead ones).
    pub fn entries(&self) -> impl Iterator<Item = DeltaEntry> + '_ {
        (0..self.len()).map(|i| self.entry(i))
    }

    fn key(&self, i: usize) -> u64 {
        // SAFETY: as in `entry`; the key is the entry's first field.
        unsafe { self.at(i).cast::<u64>().read_unaligned() }
    }

    /// Whether the page says its entries are in (key, TID) order.
    pub fn is_sorted(&self) -> bool {
        self.h.sorted != 0
    }

    /// The non-null entries with a key in `[lo, hi]`, in (key, TID) order on
    /// a sorted page. A lookup reads every page spilled rows may be on and
    /// takes few entries of each: a sorted page is binary-searched, and on
    /// the others each key is compared before the rest of its entry is
    /// decoded.
    pub fn keys_in(&self, lo: u64, hi: u64) -> impl Iterator<Item = DeltaEntry> + '_ {
        // Only a closed page is ever sorted; one open page said to be (a
        // damaged flag, which learned_verify reports) is read whole.
        let (from, sorted) = if self.is_sorted() && self.h.state == CLOSED {
            let (mut a, mut b) = (0, self.len());
            while a < b {
                let mid = (a + b) / 2;
                if self.key(mid) < lo {
                    a = mid + 1;
                } else {
                    b = mid;
                }
            }
            (a, true)
        } else {
            (0, false)
        };
        (from..self.len())
            .map(move |i| (i, self.key(i)))
            .take_while(move |&(_, key)| !sorted || key <= hi)
            .filter(move |&(_, key)| lo <= key && key <= hi)
            .map(|(i, _)| self.entry(i))
            .filter(|e| !e.null)
    }

    pub fn buf(&self) -> &Buf {
        &self.buf
    }

    /// Gives up the view and its lock, keeping the pin.
    pub fn into_pin(self) -> Buf {
        let mut buf = self.buf;
        buf.unlock();
        buf
    }
}

/// Appends `e` to an open page that is not full, whose buffer the caller holds
/// exclusive-locked: the entry, the header and `pd_lower` are written and
/// logged alone (`wal::write_ranges`), since this is every insert's path.
fn append_entry(rel: pg_sys::Relation, page: &DeltaPage, e: &DeltaEntry) {
    let old = page.h;
    let mut h = old;
    let i = h.count as usize;
    assert!(h.state == OPEN && i < DELTA_CAPACITY);
    h.count += 1;
    if e.null {
        h.has_nulls = 1;
    } else {
        h.min = h.min.min(e.key);
        h.max = h.max.max(e.key);
    }
    let raw = RawEntry {
        key: e.key,
        tid: tid_to_ptr(e.tid),
        flags: if e.null { FLAG_NULL } else { 0 },
    };
    let lower = (PAGE_HEADER + HEADER + h.count as usize * ENTRY) as u16;
    // The header from its first changed field through count, state and
    // has_nulls (which end at byte 20; an open page is never sorted, and the
    // padding never changes).
    let from = if h.min != old.min {
        std::mem::offset_of!(DeltaHeader, min)
    } else if h.max != old.max {
        std::mem::offset_of!(DeltaHeader, max)
    } else {
        std::mem::offset_of!(DeltaHeader, count)
    };
    let to = std::mem::offset_of!(DeltaHeader, sorted);
    // SAFETY: both are #[repr(C)] structs of plain integers without padding
    // (sizes asserted above), so every byte is initialized.
    let (hb, eb) = unsafe {
        (
            std::slice::from_raw_parts((&h as *const DeltaHeader).cast::<u8>(), HEADER),
            std::slice::from_raw_parts((&raw as *const RawEntry).cast::<u8>(), ENTRY),
        )
    };
    super::wal::write_ranges(
        rel,
        &page.buf,
        &[
            (
                std::mem::offset_of!(pg_sys::PageHeaderData, pd_lower),
                &lower.to_ne_bytes(),
            ),
            (PAGE_HEADER + from, &hb[from..to]),
            (PAGE_HEADER + HEADER + i * ENTRY, eb),
        ],
    );
}

/// # Safety
/// `image` must be a writable delta page image.
unsafe fn set_header(image: pg_sys::Page, h: &DeltaHeader) {
    page::write_header(image, h);
    page::set_content_len(image, HEADER + h.count as usize * ENTRY);
}

/// Marks a delta page and its directory entry FREE (an empty page, to reuse):
/// `image` and `dimage` are their WAL images, `slot` the entry's.
///
/// # Safety
/// `image` must be a writable delta page image, `dimage` a writable image of
/// the directory page holding entry `slot` (below `DIR_CAPACITY`).
unsafe fn mark_free(
    image: pg_sys::Page,
    dimage: pg_sys::Page,
    slot: usize,
    (blk, generation): (pg_sys::BlockNumber, u32),
) {
    set_header(
        image,
        &DeltaHeader {
            state: FREE,
            ..DeltaHeader::empty()
        },
    );
    directory::set_entry(
        dimage,
        slot,
        (blk, generation),
        FREE,
        (false, false),
        (0, 0),
    );
}

/// Puts the `count` entries of a writable delta page image in (key, TID)
/// order (NULLs, whose key is 0, first) and marks the header sorted.
///
/// # Safety
/// `image` must be a writable image of a valid delta page.
pub(super) unsafe fn sort_entries(image: pg_sys::Page) {
    let mut h: DeltaHeader = page::read_header(image);
    let base = page::content(image).add(HEADER).cast::<RawEntry>();
    let mut raw: Vec<RawEntry> = (0..h.count as usize)
        .map(|i| base.add(i).read_unaligned())
        .collect();
    raw.sort_unstable_by_key(|r| (r.key, tid_from_ptr(&r.tid)));
    for (i, r) in raw.iter().enumerate() {
        base.add(i).write_unaligned(*r);
    }
    h.sorted = 1;
    page::write_header(image, &h);
}

/// # Safety
/// `i` must be below `DELTA_CAPACITY`; `image` a writable delta page image.
unsafe fn set_entry(image: pg_sys::Page, i: usize, d: &DeltaEntry) {
    debug_assert!(i < DELTA_CAPACITY);
    page::content(image)
        .add(HEADER + i * ENTRY)
        .cast::<RawEntry>()
        .write_unaligned(RawEntry {
            key: d.key,
            tid: tid_to_ptr(d.tid),
            flags: if d.null { FLAG_NULL } else { 0 },
        });
}

/// Formats an empty open delta page, bounded to `bounds` or not.
///
/// # Safety
/// `image` must be a writable page image.
unsafe fn init_page(image: pg_sys::Page, generation: u32, bounds: Option<(u64, u64)>) {
    page::init(image, PageKind::Delta, generation, HEADER);
    let h = match bounds {
        Some((min, max)) => DeltaHeader {
            min,
            max,
            bounded: 1,
            ..DeltaHeader::empty()
        },
        None => DeltaHeader::empty(),
    };
    set_header(image, &h);
}

/// What the current generation's delta holds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub entries: u64,
    pub pages: u64,
    /// Of those, on pages whose keys begin below the run's last entry:
    /// spilled rows, which an append retrain carries over rather than
    /// appends.
    pub spilled_entries: u64,
    pub spilled_pages: u64,
    /// Delta pages merged into the current run that snapshots older than
    /// its retrain may still read: free once the previous generation is
    /// retired.
    pub retained_pages: u64,
    /// Delta pages free to reuse.
    pub free_pages: u64,
}

/// Counts the delta entries and pages in use by the current generation, and
/// the other delta pages, for statistics and the worker.
pub fn count(rel: pg_sys::Relation, meta: &Meta, strategy: Strategy) -> Counts {
    let mut c = Counts::default();
    let dir = directory_consistent(rel, strategy);
    for d in &dir {
        if d.state == FREE {
            c.free_pages += 1;
            continue;
        }
        // A split page's entries are counted on the pages they were copied to.
        if d.generation < meta.generation || !d.is_live() {
            c.retained_pages += 1;
            continue;
        }
        let page = DeltaPage::read(rel, d.blk, strategy);
        let n = page.len() as u64;
        let h = page.header();
        c.entries += n;
        c.pages += 1;
        if h.min <= h.max && meta.run_last().is_some_and(|(key, _)| h.min < key) {
            c.spilled_entries += n;
            c.spilled_pages += 1;
        }
    }
    c
}
