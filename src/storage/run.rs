//! Run pages: the sorted (ordinal, TID) entries, structure-of-arrays, a fixed
//! number per page so that position `p` lives at block `start + p / cap`, slot
//! `p % cap`. Keys are stored as 4-byte offsets from the page's first key when
//! every page of the run allows it, else as full 8-byte ordinals. Each page has a
//! tombstone bitmap: VACUUM marks dead entries there and nothing ever moves.
//!
//! Null pages hold the TIDs of rows whose key is NULL, in the same format
//! without keys.

use super::buffer::{nblocks, Strategy};
use super::extents::Extents;
use super::meta::META_BLOCK;
use super::page::{self, corrupt, recycled_error, PageKind, Recycled, CONTENT};
use super::search::{self, SortedPage};
use super::Buf;
use crate::model::Window;
use pgrx::pg_sys;

/// Header of a run or NULL page; then the tombstone bitmap, the keys (none on
/// NULL pages) and the TIDs, each array sized for the page's capacity.
#[derive(Clone, Copy)]
#[repr(C)]
struct RunHeader {
    /// Keys are stored as offsets from this one when `width` is 4.
    first_key: u64,
    count: u16,
    /// 4 or 8 on run pages, 0 on NULL pages.
    width: u8,
    _pad: [u8; 5],
}
const HEADER: usize = std::mem::size_of::<RunHeader>();
const _: () = assert!(HEADER == 16);

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
    assert!(std::mem::size_of::<pg_sys::ItemPointerData>() == 6);
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

/// A section of same-format pages of one generation: the run (`width` 4 or 8)
/// or the NULL TIDs (`width` 0).
#[derive(Clone, Copy, Debug)]
pub struct Section {
    /// The generation's extents, and where in them this section begins.
    pub place: Extents,
    pub first: u32,
    pub pages: u32,
    pub entries: u64,
    pub width: u8,
    pub generation: u32,
    /// The oldest generation whose pages the section holds (see
    /// [`super::Meta::run_base`]).
    pub base: u32,
}

impl Section {
    pub fn run(m: &super::Meta) -> Section {
        Section {
            place: m.place,
            first: 0,
            pages: m.run_pages,
            entries: m.run_entries,
            width: m.key_width,
            generation: m.generation,
            base: m.run_base,
        }
    }

    /// The previous generation's run and NULL sections, while scans may read them.
    pub fn previous(m: &super::Meta) -> Option<[Section; 2]> {
        (m.prev_generation != 0).then_some([
            Section {
                place: m.prev_place,
                first: 0,
                pages: m.prev_run_pages,
                entries: m.prev_run_entries,
                width: m.prev_key_width,
                generation: m.prev_generation,
                base: m.prev_run_base,
            },
            Section {
                place: m.prev_place,
                first: m.prev_run_pages,
                pages: m.prev_null_pages,
                entries: m.prev_null_entries,
                width: 0,
                generation: m.prev_generation,
                base: m.prev_generation,
            },
        ])
    }

    pub fn nulls(m: &super::Meta) -> Section {
        Section {
            place: m.place,
            first: m.run_pages,
            pages: m.null_pages,
            entries: m.null_entries,
            width: 0,
            generation: m.generation,
            base: m.generation,
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
    pub fn read(&self, rel: pg_sys::Relation, i: u32) -> RunPage {
        self.read_with(rel, i, Strategy::DEFAULT)
    }

    /// As [`Section::read`], for a scan that starts over when the page was
    /// reused by a newer generation.
    pub fn try_read(&self, rel: pg_sys::Relation, i: u32) -> Result<RunPage, Recycled> {
        let mut buf = Buf::read_with(rel, self.block(rel, i), Strategy::DEFAULT);
        buf.lock_shared();
        // SAFETY: as in `open`.
        unsafe { RunPage::open(rel, buf, self, i) }
    }

    /// The block of page `i`.
    pub fn block(&self, rel: pg_sys::Relation, i: u32) -> pg_sys::BlockNumber {
        self.place
            .block(self.first + i)
            .unwrap_or_else(|| corrupt(rel, META_BLOCK, "a page lies beyond its extents"))
    }

    /// As [`Section::read`], through a buffer access strategy.
    pub fn read_with(&self, rel: pg_sys::Relation, i: u32, strategy: Strategy) -> RunPage {
        let mut buf = Buf::read_with(rel, self.block(rel, i), strategy);
        buf.lock_shared();
        self.open(rel, buf, i)
    }

    /// The view of page `i`, whose buffer `buf` the caller has locked. Only
    /// scans can meet a recycled page; for anyone else it is an ERROR.
    pub fn open(&self, rel: pg_sys::Relation, buf: Buf, i: u32) -> RunPage {
        // SAFETY: the view owns the pinned, locked buffer, so the page stays
        // in place and unchanged while it is read; `open` validates the header
        // before any other field is trusted.
        unsafe { RunPage::open(rel, buf, self, i) }.unwrap_or_else(|_| recycled_error(rel))
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
    ) -> Result<(u64, Option<RunPage>), Recycled> {
        search::lower_bound(self.entries, self.cap(), key, hint, |i| {
            self.try_read(rel, i)
        })
    }
}

impl SortedPage for RunPage {
    fn count(&self) -> usize {
        self.count
    }
    fn key(&self, slot: usize) -> u64 {
        RunPage::key(self, slot)
    }
}

/// A validated view of one run or NULL page. It owns the pinned buffer, so it
/// cannot outlive the pin; it is read while the buffer is locked.
pub struct RunPage {
    buf: Buf,
    base: *const u8,
    count: usize,
    width: u8,
    first_key: u64,
    cap: usize,
}

impl RunPage {
    /// # Safety
    /// `buf` must be locked.
    unsafe fn open(
        rel: pg_sys::Relation,
        buf: Buf,
        s: &Section,
        i: u32,
    ) -> Result<RunPage, Recycled> {
        let blk = buf.blkno();
        let page = buf.page();
        page::check_current(rel, blk, page, s.kind(), s.base..=s.generation)?;
        let h: RunHeader = page::read_header(page);
        let (ps, pe) = s.page_span(i);
        if h.width != s.width {
            corrupt(
                rel,
                blk,
                &format!(
                    "page key width {} differs from the metapage's {}",
                    h.width, s.width
                ),
            );
        }
        if h.count as u64 != pe - ps {
            corrupt(
                rel,
                blk,
                &format!(
                    "page holds {} entries, the metapage says {}",
                    h.count,
                    pe - ps
                ),
            );
        }
        Ok(RunPage {
            base: page::content(page) as *const u8,
            buf,
            count: h.count as usize,
            width: h.width,
            first_key: h.first_key,
            cap: s.cap() as usize,
        })
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
        debug_assert!(i < self.count);
        // SAFETY: the bitmap holds cap bits and i < count <= cap.
        unsafe { self.base.add(HEADER + i / 8).read() & (1 << (i % 8)) != 0 }
    }

    /// The slots not tombstoned, in order.
    pub fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.count).filter(|&s| !self.dead(s))
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
    generation: u32,
    cap: usize,
    /// Where the pages go: page `first + pages` of `place` is written next.
    place: Extents,
    first: u32,
    keys: Vec<u64>,
    tids: Vec<Tid>,
    /// Slots of the page being filled that are written tombstoned.
    dead: Vec<usize>,
    pub pages: u32,
    pub entries: u64,
    /// Smallest and largest key pushed (keys arrive sorted).
    pub key_range: Option<(u64, u64)>,
}

/// A width-4 run page whose keys span more than 32 bits.
#[derive(Debug)]
pub struct TooWide;

impl SectionWriter {
    pub fn new(
        rel: pg_sys::Relation,
        (place, first): (Extents, u32),
        width: u8,
        generation: u32,
    ) -> SectionWriter {
        let cap = if width == 0 {
            NULL_CAPACITY
        } else {
            capacity(width)
        } as usize;
        SectionWriter {
            rel,
            width,
            generation,
            cap,
            place,
            first,
            keys: Vec::with_capacity(cap),
            tids: Vec::with_capacity(cap),
            dead: Vec::new(),
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

    /// Pushes an entry VACUUM has tombstoned, keeping its position: an append
    /// retrain copies the run's last page with its tombstones.
    pub fn push_dead(&mut self, key: u64, tid: Tid) -> Result<(), TooWide> {
        let slot = self.keys.len();
        if self.width == 4 && slot > 0 && key - self.keys[0] > u32::MAX as u64 {
            return Err(TooWide);
        }
        self.dead.push(slot);
        self.push(key, tid)
    }

    /// The entries not yet written to a page.
    pub fn pending(&self) -> impl Iterator<Item = (u64, Tid)> + '_ {
        self.keys.iter().copied().zip(self.tids.iter().copied())
    }

    fn flush(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        let blk = self
            .place
            .block(self.first + self.pages)
            .expect("the writer's extents hold its pages");
        let buf = if blk < nblocks(self.rel) {
            Buf::read_exclusive(self.rel, blk)
        } else {
            Buf::extend(self.rel, false)
        };
        assert_eq!(
            buf.blkno(),
            blk,
            "extents past the end are written in order"
        );
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
            page::init(page, kind, self.generation, tids_at + 6 * self.cap);
            let base = page::content(page);
            let first = self.keys[0];
            page::write_header(
                page,
                &RunHeader {
                    first_key: first,
                    count: n as u16,
                    width: self.width,
                    _pad: [0; 5],
                },
            );
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
            set_dead(page, &self.dead);
            pg_sys::MarkBufferDirty(buf.buffer());
        }
        self.keys.clear();
        self.tids.clear();
        self.dead.clear();
        self.pages += 1;
    }

    /// Writes the last partial page; returns (pages, entries).
    pub fn finish(mut self) -> (u32, u64) {
        self.flush();
        (self.pages, self.entries)
    }
}
