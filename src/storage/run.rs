//! Run pages: the sorted (ordinal, TID) entries, structure-of-arrays, a fixed
//! number per page so that position `p` lives at block `start + p / cap`, slot
//! `p % cap`. Keys are stored as 4-byte offsets from the page's first key when
//! every page of the run allows it, else as full 8-byte ordinals. Each page has a
//! tombstone bitmap: VACUUM marks dead entries there and nothing ever moves.
//!
//! Null pages hold the TIDs of rows whose key is NULL, in the same format
//! without keys.

use super::page::{self, corrupt, PageKind, CONTENT};
use super::search::{self, SortedPage};
use super::Buf;
use crate::model::Window;
use pgrx::pg_sys;

const HEADER: usize = 16;

/// Entries per run page for a key width.
pub const fn capacity(width: u8) -> u32 {
    match width {
        4 => 804,
        _ => 576,
    }
}
pub const NULL_CAPACITY: u32 = 1329;

const fn bitmap_len(cap: u32) -> usize {
    (cap as usize).div_ceil(64) * 8
}

const _: () = {
    assert!(HEADER + bitmap_len(804) + 804 * (4 + 6) <= CONTENT);
    assert!(HEADER + bitmap_len(576) + 576 * (8 + 6) <= CONTENT);
    assert!(HEADER + bitmap_len(NULL_CAPACITY) + NULL_CAPACITY as usize * 6 <= CONTENT);
};

/// A heap TID as a sortable integer: block in the high bits, offset in the low.
pub type Tid = u64;

pub fn tid_from_ptr(t: &pg_sys::ItemPointerData) -> Tid {
    let blk = ((t.ip_blkid.bi_hi as u64) << 16) | t.ip_blkid.bi_lo as u64;
    (blk << 16) | t.ip_posid as u64
}

pub fn tid_to_ptr(t: Tid) -> pg_sys::ItemPointerData {
    let blk = (t >> 16) as u32;
    pg_sys::ItemPointerData {
        ip_blkid: pg_sys::BlockIdData {
            bi_hi: (blk >> 16) as u16,
            bi_lo: blk as u16,
        },
        ip_posid: t as u16,
    }
}

/// A section of same-format pages: the run (`width` 4 or 8) or the null TIDs
/// (`width` 0).
#[derive(Clone, Copy, Debug)]
pub struct Section {
    pub start: pg_sys::BlockNumber,
    pub pages: u32,
    pub entries: u64,
    pub width: u8,
}

impl Section {
    pub fn run(m: &super::Meta) -> Section {
        Section {
            start: m.run_start,
            pages: m.run_pages,
            entries: m.run_entries,
            width: m.key_width,
        }
    }

    pub fn nulls(m: &super::Meta) -> Section {
        Section {
            start: m.null_start,
            pages: m.null_pages,
            entries: m.null_entries,
            width: 0,
        }
    }

    pub fn cap(&self) -> u64 {
        if self.width == 0 {
            NULL_CAPACITY as u64
        } else {
            capacity(self.width) as u64
        }
    }

    fn kind(&self) -> PageKind {
        if self.width == 0 {
            PageKind::Null
        } else {
            PageKind::Run
        }
    }

    /// Positions `[first, end)` held by page `i`.
    pub fn page_span(&self, i: u32) -> (u64, u64) {
        let first = i as u64 * self.cap();
        (first, (first + self.cap()).min(self.entries))
    }

    pub fn page_of(&self, pos: u64) -> u32 {
        (pos / self.cap()) as u32
    }

    /// Share-locks page `i` and checks that it is what the metapage says.
    pub fn read(&self, rel: pg_sys::Relation, i: u32) -> (Buf, RunPage) {
        self.read_locked(rel, i, false)
    }

    /// As [`Section::read`], exclusive-locked, for VACUUM.
    pub fn read_locked(&self, rel: pg_sys::Relation, i: u32, exclusive: bool) -> (Buf, RunPage) {
        let blk = self.start + i;
        let buf = if exclusive {
            Buf::read_exclusive(rel, blk)
        } else {
            Buf::read_shared(rel, blk)
        };
        // SAFETY: the buffer is pinned and share-locked while the view is used;
        // `open` validates the header before any other field is trusted.
        let view = unsafe { RunPage::open(rel, blk, buf.page(), self, i) };
        (buf, view)
    }

    /// Finds the lower bound of `key` (the position of the first entry whose
    /// ordinal is `>= key`), starting from the model's prediction (see
    /// [`super::search`]). Returns the answer with its page still locked when
    /// it lies on a page; `None` for the page when it is the end of the run.
    pub fn seek(
        &self,
        rel: pg_sys::Relation,
        key: u64,
        hint: Window,
    ) -> (u64, Option<(Buf, RunPage)>) {
        let (pos, page) = search::lower_bound(self.entries, self.cap(), key, hint, |i| {
            Located(self.read(rel, i))
        });
        (pos, page.map(|p| p.0))
    }
}

/// A locked page as the last-mile search sees it.
struct Located((Buf, RunPage));

impl SortedPage for Located {
    fn count(&self) -> usize {
        self.0 .1.count
    }
    fn key(&self, slot: usize) -> u64 {
        self.0 .1.key(slot)
    }
}

/// A validated view of one run or null page, borrowed while its buffer is locked.
pub struct RunPage {
    base: *const u8,
    count: usize,
    width: u8,
    first_key: u64,
    cap: usize,
}

impl RunPage {
    /// # Safety
    /// `page` must stay pinned and locked while the view is used.
    unsafe fn open(
        rel: pg_sys::Relation,
        blk: pg_sys::BlockNumber,
        page: pg_sys::Page,
        s: &Section,
        i: u32,
    ) -> RunPage {
        page::check(rel, blk, page, s.kind());
        let base = page::content(page) as *const u8;
        let first_key = base.cast::<u64>().read_unaligned();
        let count = base.add(8).cast::<u16>().read_unaligned() as usize;
        let width = base.add(10).read();
        let (ps, pe) = s.page_span(i);
        if width != s.width {
            corrupt(
                rel,
                blk,
                &format!(
                    "page key width {width} differs from the metapage's {}",
                    s.width
                ),
            );
        }
        if count as u64 != pe - ps {
            corrupt(
                rel,
                blk,
                &format!("page holds {count} entries, the metapage says {}", pe - ps),
            );
        }
        RunPage {
            base,
            count,
            width,
            first_key,
            cap: s.cap() as usize,
        }
    }

    #[allow(clippy::len_without_is_empty)] // a run page always holds entries
    pub fn len(&self) -> usize {
        self.count
    }

    #[inline]
    pub fn key(&self, i: usize) -> u64 {
        debug_assert!(i < self.count);
        let keys = HEADER + bitmap_len(self.cap as u32);
        // SAFETY: i < count <= cap, so the read stays inside the keys array,
        // which lies inside the page (checked by the const assertions above).
        unsafe {
            match self.width {
                4 => {
                    self.first_key
                        + self.base.add(keys + 4 * i).cast::<u32>().read_unaligned() as u64
                }
                _ => self.base.add(keys + 8 * i).cast::<u64>().read_unaligned(),
            }
        }
    }

    #[inline]
    pub fn tid(&self, i: usize) -> Tid {
        debug_assert!(i < self.count);
        let tids = HEADER + bitmap_len(self.cap as u32) + self.cap * self.width as usize;
        // SAFETY: as in `key`, the TID array lies inside the page.
        let p = unsafe {
            self.base
                .add(tids + 6 * i)
                .cast::<pg_sys::ItemPointerData>()
                .read_unaligned()
        };
        tid_from_ptr(&p)
    }

    #[inline]
    pub fn dead(&self, i: usize) -> bool {
        // SAFETY: the bitmap holds cap bits and i < count <= cap.
        unsafe { self.base.add(HEADER + i / 8).read() & (1 << (i % 8)) != 0 }
    }
}

/// Marks slots dead on a writable page image.
///
/// # Safety
/// `page` must be a writable image of a page of this format and every slot
/// below the page's capacity.
pub unsafe fn set_dead(page: pg_sys::Page, slots: &[usize]) {
    let base = page::content(page);
    for &i in slots {
        *base.add(HEADER + i / 8) |= 1 << (i % 8);
    }
}

/// Writes a section page by page during a build. Pages go through shared
/// buffers unlogged; the build WAL-logs the whole index at the end.
pub struct SectionWriter {
    rel: pg_sys::Relation,
    width: u8,
    cap: usize,
    next_blk: pg_sys::BlockNumber,
    keys: Vec<u64>,
    tids: Vec<Tid>,
    pub pages: u32,
    pub entries: u64,
    /// Smallest and largest key pushed (keys arrive sorted).
    pub key_range: Option<(u64, u64)>,
}

/// A width-4 run page whose keys span more than 32 bits.
#[derive(Debug)]
pub struct TooWide;

impl SectionWriter {
    pub fn new(rel: pg_sys::Relation, start: pg_sys::BlockNumber, width: u8) -> SectionWriter {
        let cap = if width == 0 {
            NULL_CAPACITY
        } else {
            capacity(width)
        } as usize;
        SectionWriter {
            rel,
            width,
            cap,
            next_blk: start,
            keys: Vec::with_capacity(cap),
            tids: Vec::with_capacity(cap),
            pages: 0,
            entries: 0,
            key_range: None,
        }
    }

    pub fn push(&mut self, key: u64, tid: Tid) -> Result<(), TooWide> {
        if self.width == 4 && !self.keys.is_empty() && key - self.keys[0] > u32::MAX as u64 {
            return Err(TooWide);
        }
        self.keys.push(key);
        self.tids.push(tid);
        self.entries += 1;
        self.key_range = Some((self.key_range.map_or(key, |r| r.0), key));
        if self.keys.len() == self.cap {
            self.flush();
        }
        Ok(())
    }

    /// The entries not yet written to a page.
    pub fn pending(&self) -> impl Iterator<Item = (u64, Tid)> + '_ {
        self.keys.iter().copied().zip(self.tids.iter().copied())
    }

    /// The block after the last page this writer will have written.
    pub fn end_block(&self) -> pg_sys::BlockNumber {
        self.next_blk + !self.keys.is_empty() as u32
    }

    fn flush(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        // SAFETY: the relation is being built by this backend.
        let nblocks = unsafe {
            pg_sys::RelationGetNumberOfBlocksInFork(self.rel, pg_sys::ForkNumber::MAIN_FORKNUM)
        };
        let buf = if self.next_blk < nblocks {
            Buf::read_exclusive(self.rel, self.next_blk)
        } else {
            Buf::extend(self.rel, false)
        };
        debug_assert_eq!(buf.blkno(), self.next_blk);
        let kind = if self.width == 0 {
            PageKind::Null
        } else {
            PageKind::Run
        };
        let bitmap = bitmap_len(self.cap as u32);
        let keys_at = HEADER + bitmap;
        let tids_at = keys_at + self.cap * self.width as usize;
        let n = self.keys.len();
        // SAFETY: the page is pinned and exclusive-locked; all writes stay below
        // `tids_at + 6 * cap <= CONTENT` (const assertions above).
        unsafe {
            let page = buf.page();
            page::init(page, kind, tids_at + 6 * self.cap);
            let base = page::content(page);
            let first = self.keys[0];
            base.cast::<u64>().write_unaligned(first);
            base.add(8).cast::<u16>().write_unaligned(n as u16);
            base.add(10).write(self.width);
            for (i, &k) in self.keys.iter().enumerate() {
                match self.width {
                    4 => base
                        .add(keys_at + 4 * i)
                        .cast::<u32>()
                        .write_unaligned((k - first) as u32),
                    8 => base.add(keys_at + 8 * i).cast::<u64>().write_unaligned(k),
                    _ => {}
                }
            }
            for (i, &t) in self.tids.iter().enumerate() {
                base.add(tids_at + 6 * i)
                    .cast::<pg_sys::ItemPointerData>()
                    .write_unaligned(tid_to_ptr(t));
            }
            pg_sys::MarkBufferDirty(buf.buffer());
        }
        self.keys.clear();
        self.tids.clear();
        self.pages += 1;
        self.next_blk += 1;
    }

    /// Writes the last partial page; returns (pages, entries).
    pub fn finish(mut self) -> (u32, u64) {
        self.flush();
        (self.pages, self.entries)
    }
}
