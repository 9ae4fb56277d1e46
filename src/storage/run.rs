//! Run pages: the sorted (ordinal, TID) entries, structure-of-arrays, the same
//! number per page (`per_page`, chosen per generation) so that position `p`
//! lives at block `start + p / per_page`, slot `p % per_page`. Keys are stored
//! as 4-byte offsets from the page's first key when every page of the run
//! allows it, else as full 8-byte ordinals. Each page has a tombstone bitmap:
//! VACUUM marks dead run entries there and they never move.
//!
//! The space a page's run entries leave free is its **insert area**: entries
//! inserted after the run was written whose place in the run is on this page
//! (the run position of their (key, TID) lower bound), unsorted, growing down
//! from the special space as `pd_upper` descends. A page owns the (key, TID)
//! pairs above its fence (the last entry of the page before) up to its own
//! last entry, so a lookup reads one page for run and inserted entries alike.
//!
//! Null pages hold the TIDs of rows whose key is NULL, in the same format
//! without keys and without an insert area.

use super::buffer::{nblocks, Strategy};
use super::extents::Extents;
use super::meta::META_BLOCK;
use super::page::{self, corrupt, recycled_error, PageKind, Recycled, CONTENT, PAGE_HEADER};
use super::search::{self, SortedPage};
use super::Buf;
use crate::model::Window;
use pgrx::pg_sys;

/// Header of a run or NULL page; then the tombstone bitmap, the keys (none on
/// NULL pages) and the TIDs, each array sized for the page's `count`. The
/// insert area (`ins` entries) ends at the special space.
#[derive(Clone, Copy)]
#[repr(C)]
struct RunHeader {
    /// Keys are stored as offsets from this one when `width` is 4.
    first_key: u64,
    /// The last (key, TID) of the page before, when `has_fence`.
    fence_key: u64,
    fence_tid: u64,
    count: u16,
    /// 4 or 8 on run pages, 0 on NULL pages.
    width: u8,
    has_fence: u8,
    /// Entries in the insert area.
    ins: u16,
    _pad: u16,
}
const HEADER: usize = std::mem::size_of::<RunHeader>();
const _: () = assert!(HEADER == 32);

/// One insert-area entry: the key and the heap TID.
pub const INSERTED: usize = 8 + 6;

/// Most entries a run page holds for a key width.
pub const fn capacity(width: u8) -> u32 {
    match width {
        4 => 802,
        _ => 575,
    }
}
pub const NULL_CAPACITY: u32 = 1326;

const fn bitmap_len(count: u32) -> usize {
    (count as usize).div_ceil(64) * 8
}

/// Bytes the header and `count` entries of `width` take.
const fn used(count: u32, width: u8) -> usize {
    HEADER + bitmap_len(count) + count as usize * (width as usize + 6)
}

const _: () = {
    assert!(used(802, 4) <= CONTENT && used(803, 4) > CONTENT);
    assert!(used(575, 8) <= CONTENT && used(576, 8) > CONTENT);
    assert!(used(NULL_CAPACITY, 0) <= CONTENT);
    assert!(std::mem::size_of::<pg_sys::ItemPointerData>() == 6);
};

/// Run entries per page for a key width and a fill factor (percent): the rest
/// of each page is its insert area.
pub fn per_page(width: u8, fillfactor: u32) -> u32 {
    (capacity(width) * fillfactor.clamp(10, 100) / 100).max(1)
}

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
    /// Entries per page.
    pub per_page: u32,
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
            per_page: m.per_page,
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
                per_page: m.prev_per_page,
                generation: m.prev_generation,
                base: m.prev_run_base,
            },
            Section {
                place: m.prev_place,
                first: m.prev_run_pages,
                pages: m.prev_null_pages,
                entries: m.prev_null_entries,
                width: 0,
                per_page: NULL_CAPACITY,
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
            per_page: NULL_CAPACITY,
            generation: m.generation,
            base: m.generation,
        }
    }

    pub fn cap(&self) -> u64 {
        self.per_page as u64
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

    /// As [`Section::seek`], for the pair (key, TID): the position of the
    /// first run entry whose pair is `>= (key, tid)`. The page it lies on
    /// owns the pair (an insert puts it there).
    pub fn seek_pair(
        &self,
        rel: pg_sys::Relation,
        (key, tid): (u64, Tid),
        hint: Window,
    ) -> Result<(u64, Option<RunPage>), Recycled> {
        let (mut pos, mut page) = self.seek(rel, key, hint)?;
        // The seek found the first entry with the key; step over those of
        // the key with smaller TIDs, which may continue on later pages.
        while let Some(p) = page.as_ref() {
            let (ps, _) = self.page_span(self.page_of(pos));
            let mut s = (pos - ps) as usize;
            while s < p.len() && (p.key(s), p.tid(s)) < (key, tid) {
                s += 1;
            }
            pos = ps + s as u64;
            if s < p.len() {
                break;
            }
            page = None;
            if pos < self.entries {
                page = Some(self.try_read(rel, self.page_of(pos))?);
            }
        }
        Ok((pos, page))
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
    fence: Option<(u64, Tid)>,
    keys_at: usize,
    tids_at: usize,
    ins: usize,
    /// Offset in the page of the insert area's lowest entry (`pd_upper`).
    ins_at: usize,
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
        let header = &*(page as *const pg_sys::PageHeaderData);
        let (lower, upper) = (header.pd_lower as usize, header.pd_upper as usize);
        let end = PAGE_HEADER + used(h.count as u32, h.width);
        let special = PAGE_HEADER + CONTENT;
        if lower != end
            || upper < lower
            || upper + h.ins as usize * INSERTED != special
            || (h.width == 0 && h.ins != 0)
            || (h.width != 0 && (h.has_fence != 0) != (i > 0))
        {
            corrupt(rel, blk, "run page layout does not match its header");
        }
        let keys_at = HEADER + bitmap_len(h.count as u32);
        Ok(RunPage {
            base: page::content(page) as *const u8,
            buf,
            count: h.count as usize,
            width: h.width,
            first_key: h.first_key,
            fence: (h.has_fence != 0).then_some((h.fence_key, h.fence_tid)),
            keys_at,
            tids_at: keys_at + h.count as usize * h.width as usize,
            ins: h.ins as usize,
            ins_at: upper - PAGE_HEADER,
        })
    }

    #[allow(clippy::len_without_is_empty)] // a run page always holds entries
    pub fn len(&self) -> usize {
        self.count
    }

    #[inline]
    pub fn key(&self, i: usize) -> u64 {
        debug_assert!(i < self.count);
        // SAFETY: i < count, so the read stays inside the keys array, which
        // `open` checked lies below pd_lower.
        unsafe {
            match self.width {
                4 => {
                    self.first_key
                        + self
                            .base
                            .add(self.keys_at + 4 * i)
                            .cast::<u32>()
                            .read_unaligned() as u64
                }
                _ => self
                    .base
                    .add(self.keys_at + 8 * i)
                    .cast::<u64>()
                    .read_unaligned(),
            }
        }
    }

    #[inline]
    pub fn tid(&self, i: usize) -> Tid {
        debug_assert!(i < self.count);
        // SAFETY: as in `key`, the TID array lies inside the page.
        let p = unsafe {
            self.base
                .add(self.tids_at + 6 * i)
                .cast::<pg_sys::ItemPointerData>()
                .read_unaligned()
        };
        tid_from_ptr(&p)
    }

    #[inline]
    pub fn dead(&self, i: usize) -> bool {
        debug_assert!(i < self.count);
        // SAFETY: the bitmap holds count bits rounded up and i < count.
        unsafe { self.base.add(HEADER + i / 8).read() & (1 << (i % 8)) != 0 }
    }

    /// The slots not tombstoned, in order.
    pub fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.count).filter(|&s| !self.dead(s))
    }

    /// The last (key, TID) of the page before; `None` on the first page.
    /// The page owns the pairs above it up to its own last entry.
    pub fn fence(&self) -> Option<(u64, Tid)> {
        self.fence
    }

    /// The last run entry's (key, TID).
    pub fn last(&self) -> (u64, Tid) {
        (self.key(self.count - 1), self.tid(self.count - 1))
    }

    /// Entries in the insert area.
    pub fn inserted_len(&self) -> usize {
        self.ins
    }

    /// Insert-area entry `i` (unsorted).
    pub fn inserted(&self, i: usize) -> (u64, Tid) {
        debug_assert!(i < self.ins);
        // SAFETY: `open` checked that the insert area's `ins` entries end at
        // the special space and begin at pd_upper, inside the page.
        unsafe {
            let at = self.base.add(self.ins_at + INSERTED * i);
            let key = at.cast::<u64>().read_unaligned();
            let tid = at.add(8).cast::<pg_sys::ItemPointerData>().read_unaligned();
            (key, tid_from_ptr(&tid))
        }
    }

    /// Every insert-area entry.
    pub fn inserted_all(&self) -> impl Iterator<Item = (u64, Tid)> + '_ {
        (0..self.ins).map(|i| self.inserted(i))
    }

    /// Whether the insert area has room for one more entry.
    pub fn has_room(&self) -> bool {
        self.room() > 0
    }

    /// How many more entries the insert area has room for.
    pub fn room(&self) -> usize {
        if self.width == 0 {
            return 0;
        }
        (self.ins_at - (self.tids_at + 6 * self.count)) / INSERTED
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

    /// Adds (key, TID) to the insert area of this page, whose buffer the
    /// caller holds exclusive-locked, in one WAL record that logs the entry
    /// and the two header fields it changes (`wal::write_ranges`).
    pub fn add_inserted(&mut self, rel: pg_sys::Relation, (key, tid): (u64, Tid)) {
        assert!(self.has_room(), "the caller checked for room");
        let mut entry = [0u8; INSERTED];
        entry[..8].copy_from_slice(&key.to_ne_bytes());
        let t = tid_to_ptr(tid);
        // SAFETY: ItemPointerData is 6 bytes of plain integers (asserted above).
        entry[8..].copy_from_slice(unsafe {
            std::slice::from_raw_parts((&t as *const pg_sys::ItemPointerData).cast::<u8>(), 6)
        });
        let at = PAGE_HEADER + self.ins_at - INSERTED;
        let ins = (self.ins as u16 + 1).to_ne_bytes();
        let upper = (at as u16).to_ne_bytes();
        super::wal::write_ranges(
            rel,
            &self.buf,
            &[
                (at, &entry),
                (PAGE_HEADER + std::mem::offset_of!(RunHeader, ins), &ins[..]),
                (
                    std::mem::offset_of!(pg_sys::PageHeaderData, pd_upper),
                    &upper[..],
                ),
            ],
        );
        self.ins += 1;
        self.ins_at -= INSERTED;
    }
}

/// Keeps only the insert-area entries `keep` says to on a writable page
/// image (VACUUM, under a cleanup lock).
///
/// # Safety
/// `page` must be a writable image of a valid run page.
pub unsafe fn retain_inserted(page: pg_sys::Page, mut keep: impl FnMut(Tid) -> bool) {
    let mut h: RunHeader = page::read_header(page);
    let header = page as *mut pg_sys::PageHeaderData;
    let special = PAGE_HEADER + CONTENT;
    let raw = page as *mut u8;
    let mut live: Vec<[u8; INSERTED]> = Vec::with_capacity(h.ins as usize);
    for i in 0..h.ins as usize {
        let at = raw.add(special - INSERTED * (i + 1));
        let mut e = [0u8; INSERTED];
        std::ptr::copy_nonoverlapping(at, e.as_mut_ptr(), INSERTED);
        let tid = tid_from_ptr(
            &e[8..]
                .as_ptr()
                .cast::<pg_sys::ItemPointerData>()
                .read_unaligned(),
        );
        if keep(tid) {
            live.push(e);
        }
    }
    let upper = special - INSERTED * live.len();
    // The old area is zeroed first: the hole below pd_upper stays zero, as
    // Generic WAL redo leaves it.
    std::ptr::write_bytes(
        raw.add((*header).pd_upper as usize),
        0,
        special - (*header).pd_upper as usize,
    );
    for (i, e) in live.iter().enumerate() {
        std::ptr::copy_nonoverlapping(e.as_ptr(), raw.add(special - INSERTED * (i + 1)), INSERTED);
    }
    (*header).pd_upper = upper as u16;
    h.ins = live.len() as u16;
    page::write_header(page, &h);
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
    per_page: usize,
    /// Where the pages go: page `first + pages` of `place` is written next.
    place: Extents,
    first: u32,
    keys: Vec<u64>,
    tids: Vec<Tid>,
    /// Slots of the page being filled that are written tombstoned.
    dead: Vec<usize>,
    /// The last entry written before the page being filled.
    fence: Option<(u64, Tid)>,
    pub pages: u32,
    pub entries: u64,
    /// Smallest and largest key pushed (keys arrive sorted).
    pub key_range: Option<(u64, u64)>,
    /// The last (key, TID) pushed.
    pub last: Option<(u64, Tid)>,
}

/// A width-4 run page whose keys span more than 32 bits.
#[derive(Debug)]
pub struct TooWide;

impl SectionWriter {
    /// A writer of `per_page` entries a page (ignored for NULL pages, which
    /// are always full).
    pub fn new(
        rel: pg_sys::Relation,
        (place, first): (Extents, u32),
        width: u8,
        per_page: u32,
        generation: u32,
    ) -> SectionWriter {
        let per_page = if width == 0 {
            NULL_CAPACITY
        } else {
            per_page.clamp(1, capacity(width))
        } as usize;
        SectionWriter {
            rel,
            width,
            generation,
            per_page,
            place,
            first,
            keys: Vec::with_capacity(per_page),
            tids: Vec::with_capacity(per_page),
            dead: Vec::new(),
            fence: None,
            pages: 0,
            entries: 0,
            key_range: None,
            last: None,
        }
    }

    /// Continues a run whose pages before the first one written end with
    /// `fence`.
    pub fn after(mut self, fence: Option<(u64, Tid)>) -> SectionWriter {
        self.fence = fence;
        self
    }

    pub fn push(&mut self, key: u64, tid: Tid) -> Result<(), TooWide> {
        if self.width == 4 && !self.keys.is_empty() && key - self.keys[0] > u32::MAX as u64 {
            return Err(TooWide);
        }
        self.keys.push(key);
        self.tids.push(tid);
        self.entries += 1;
        self.key_range = Some((self.key_range.map_or(key, |r| r.0), key));
        self.last = Some((key, tid));
        if self.keys.len() == self.per_page {
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
        let n = self.keys.len();
        let keys_at = HEADER + bitmap_len(n as u32);
        let tids_at = keys_at + n * self.width as usize;
        // SAFETY: the page is pinned and exclusive-locked; all writes stay
        // below `used(n) <= CONTENT` (const assertions above).
        unsafe {
            let page = buf.page();
            page::init(page, kind, self.generation, used(n as u32, self.width));
            let base = page::content(page);
            let first = self.keys[0];
            let (fence_key, fence_tid) = self.fence.unwrap_or((0, 0));
            page::write_header(
                page,
                &RunHeader {
                    first_key: first,
                    fence_key,
                    fence_tid,
                    count: n as u16,
                    width: self.width,
                    has_fence: (self.width != 0 && self.fence.is_some()) as u8,
                    ins: 0,
                    _pad: 0,
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
        if self.width != 0 {
            self.fence = self.last;
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
