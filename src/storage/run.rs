//! Run pages: the sorted (ordinal, TID) entries, packed ([`super::packed`]):
//! groups of encoded entries behind a group table, with a tombstone bitmap
//! (VACUUM marks dead run entries there and they never move). Pages hold as
//! many entries as their bytes allow, so each generation's model pages keep
//! a page directory ([`Directory`]): how many entries each run page holds,
//! which turns a run position into a page.
//!
//! The space a page's run entries leave free is its **insert area**: entries
//! inserted after the run was written whose place in the run is on this page
//! (the run position of their (key, TID) lower bound). They arrive raw and
//! unsorted, growing down as `pd_upper` descends; when no raw entry fits,
//! [`RunPage::compact`] packs them all, in order, at the end of the page (as
//! btree deduplicates a full leaf before it splits it), so a page takes as
//! many inserts as its room holds packed, not at 14 bytes each. A page owns
//! the (key, TID) pairs above its fence (the last entry of the page before)
//! up to its own last entry, so a lookup reads one page for run and inserted
//! entries alike.
//!
//! Null pages hold the TIDs of rows whose key is NULL, in the same format
//! with every key 0 (which packs to nothing) and without an insert area.

use super::buffer::{nblocks, Strategy};
use super::codec::{Group, Malformed, GROUP};
use super::extents::Extents;
use super::meta::META_BLOCK;
use super::packed::{self, PackedPage, Packer, Region};
use super::page::{
    self, corrupt, recycled_error, PageKind, Recycled, BLCKSZ, CONTENT, PAGE_HEADER,
};
use super::search::{self, Directory, SortedPage};
use super::Buf;
use crate::model::Window;
use pgrx::{pg_sys, GucContext, GucFlags, GucRegistry, GucSetting};
use std::cell::{Cell, UnsafeCell};

/// Header of a run or NULL page; then the packed region, whose length
/// `pd_lower` gives. The insert area ends at the special space: `ins` raw
/// entries from `pd_upper` up, then `packed_ins` bytes of packed ones, then
/// the fingerprint when `flags` has [`HAS_FINGERPRINT`].
#[derive(Clone, Copy)]
#[repr(C)]
struct RunHeader {
    /// The last (key, TID) of the page before, when `has_fence`.
    fence_key: u64,
    fence_tid: u64,
    count: u16,
    has_fence: u8,
    /// [`HAS_FINGERPRINT`] or 0 (every page of format 8 and earlier).
    flags: u8,
    /// Raw entries in the insert area.
    ins: u16,
    /// Bytes of the insert area's packed entries, at the end of the page: an
    /// entry count (`u16`, little-endian) then a packed region. 0 for none
    /// (every page of format 5 and earlier).
    packed_ins: u16,
}
const HEADER: usize = std::mem::size_of::<RunHeader>();
const _: () = assert!(HEADER == 24);

impl RunHeader {
    /// Bytes of the page's fingerprint: [`FINGERPRINT`], or 0 for none.
    fn fingerprint_len(&self) -> usize {
        if self.flags & HAS_FINGERPRINT != 0 {
            FINGERPRINT
        } else {
            0
        }
    }
}

/// One insert-area entry: the key and the heap TID.
pub const INSERTED: usize = 8 + 6;

/// `RunHeader::flags`: the last [`FINGERPRINT`] bytes of the page's content
/// are a fingerprint of its inserted keys, raw and packed: one bit set per
/// key ([`fingerprint_bit`]), cleared only when a packing drops dead ones.
/// A point lookup whose key's bit is clear skips the insert area: the raw
/// entries it would compare one by one (up to 115 on a page filled to 80%)
/// and the search of the packed ones, a few cache lines more than a fresh
/// page's lookup reads. With 300 entries about three lookups in four skip
/// it. Format 9.
const HAS_FINGERPRINT: u8 = 1;
/// Bytes of a fingerprint: 1024 bits, two cache lines (a lookup reads one).
const FINGERPRINT: usize = 128;

/// The fingerprint bit of `key`: the top 10 bits of a Fibonacci hash, which
/// spreads the nearby keys a page owns over the whole fingerprint.
#[inline]
fn fingerprint_bit(key: u64) -> usize {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize
}

/// The fingerprint of `keys`.
fn fingerprint_of(keys: impl Iterator<Item = u64>) -> [u8; FINGERPRINT] {
    let mut bits = [0u8; FINGERPRINT];
    for key in keys {
        let bit = fingerprint_bit(key);
        bits[bit / 8] |= 1 << (bit % 8);
    }
    bits
}

/// Bytes a page's packed region may take.
const REGION: usize = CONTENT - HEADER;
const _: () = assert!(REGION >= packed::MIN_BUDGET && packed::MAX_COUNT <= u16::MAX as usize);

/// A packer of run pages whose entries take at most `fillfactor` percent of
/// the bytes, or of NULL pages (`None`, full). The rest is the insert area:
/// once packed ([`RunPage::compact`]) inserted entries take about what run
/// entries do, so a page filled to `f` takes about `(100 - f) / f` more
/// entries (80: a quarter more).
fn packer(fillfactor: Option<u32>) -> Packer {
    let budget = fillfactor.map_or(REGION, |f| REGION * f.clamp(10, 100) as usize / 100);
    let packer = Packer::new(budget.max(packed::MIN_BUDGET));
    match DEBUG_PAGE_ENTRIES.get() {
        n if n > 0 => packer.at_most(n as usize),
        _ => packer,
    }
}

static DEBUG_PAGE_ENTRIES: GucSetting<i32> = GucSetting::<i32>::new(0);

/// Defines the testing GUC. Called from `_PG_init`.
pub fn init() {
    GucRegistry::define_int_guc(
        c"learneddb.debug_page_entries",
        c"Testing aid: the most entries a run or NULL page written by this session takes (0: as many as fit).",
        c"Tests that need entries on given pages set it before CREATE INDEX or learned_retrain; packed pages otherwise hold however many their data allows.",
        &DEBUG_PAGE_ENTRIES,
        0,
        packed::MAX_COUNT as i32,
        GucContext::Suset,
        GucFlags::NO_SHOW_ALL,
    );
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

/// A section of one generation's pages: the run or the NULL TIDs. With the
/// run's [`Directory`] it also knows which positions each page holds.
#[derive(Clone, Copy)]
pub struct Section<'a> {
    /// The generation's extents (borrowed: a lookup makes a section or
    /// two, and copying the list was 2% of its time), and where in them
    /// this section begins.
    pub place: &'a Extents,
    pub first: u32,
    pub pages: u32,
    pub entries: u64,
    pub kind: PageKind,
    pub generation: u32,
    /// The oldest generation whose pages the section holds (see
    /// [`super::Meta::run_base`]).
    pub base: u32,
    /// Where each page begins in the run (run sections, for positions).
    pub dir: Option<Directory<'a>>,
    /// Its run pages may gain a fingerprint: the index's format has them
    /// (an older one stays readable by the build that wrote it).
    pub fingerprints: bool,
}

impl<'a> Section<'a> {
    pub fn run(m: &'a super::Meta) -> Section<'a> {
        Section {
            place: &m.place,
            first: 0,
            pages: m.run_pages,
            entries: m.run_entries,
            kind: PageKind::Run,
            generation: m.generation,
            base: m.run_base,
            dir: None,
            fingerprints: m.version >= super::meta::FINGERPRINT_VERSION,
        }
    }

    /// The section with its directory, for lookups by position.
    pub fn with(self, dir: Directory<'a>) -> Section<'a> {
        debug_assert_eq!(dir.pages(), self.pages);
        Section {
            dir: Some(dir),
            ..self
        }
    }

    /// The previous generation's run and NULL sections, while scans may read them.
    pub fn previous(m: &'a super::Meta) -> Option<[Section<'a>; 2]> {
        (m.prev_generation != 0).then_some([
            Section {
                place: &m.prev_place,
                first: 0,
                pages: m.prev_run_pages,
                entries: m.prev_run_entries,
                kind: PageKind::Run,
                generation: m.prev_generation,
                base: m.prev_run_base,
                dir: None,
                fingerprints: false,
            },
            Section {
                place: &m.prev_place,
                first: m.prev_run_pages,
                pages: m.prev_null_pages,
                entries: m.prev_null_entries,
                kind: PageKind::Null,
                generation: m.prev_generation,
                base: m.prev_generation,
                dir: None,
                fingerprints: false,
            },
        ])
    }

    pub fn nulls(m: &'a super::Meta) -> Section<'a> {
        Section {
            place: &m.place,
            first: m.run_pages,
            pages: m.null_pages,
            entries: m.null_entries,
            kind: PageKind::Null,
            generation: m.generation,
            base: m.generation,
            dir: None,
            fingerprints: false,
        }
    }

    fn dir(&self) -> Directory<'a> {
        self.dir
            .expect("positions are looked up in a run section with its directory")
    }

    /// Positions `[first, end)` held by page `i`.
    pub fn page_span(&self, i: u32) -> (u64, u64) {
        self.dir().span(i)
    }

    /// The page holding position `pos` (`pos` below `entries`).
    pub fn page_of(&self, pos: u64) -> u32 {
        self.dir().page_of(pos)
    }

    /// Whether position `pos` is the first of a page.
    pub fn starts_page(&self, pos: u64) -> bool {
        pos < self.entries && self.page_span(self.page_of(pos)).0 == pos
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
        search::lower_bound(self.dir(), key, hint, |i| self.try_read(rel, i))
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
            while s < p.len() && p.entry(s) < (key, tid) {
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
        self.region.count()
    }
    /// The group table says which group holds the answer; its keys are
    /// decoded up to the answer.
    fn lower_bound(&self, key: u64, near: usize) -> usize {
        let g = self.region.group_of(key, near / GROUP);
        let slot = self.group(g).lower_bound(self.region.bytes(), key);
        g * GROUP + self.check(slot)
    }
}

/// Where [`RunPage::collect_forward`] stopped.
pub struct Forward {
    /// The slot after the last one read.
    pub stop: usize,
    /// The last entry read, live or not.
    pub last: Option<(u64, Tid)>,
    /// It stopped at a key above the bound.
    pub above: bool,
}

/// The group of a page being read, decoded as far as it was read.
struct Cached {
    /// Which group, or `usize::MAX` before one is opened.
    at: usize,
    group: Group,
}

thread_local! {
    /// The buffers of the last page view dropped: a lookup opens a page per
    /// probe, and allocating and zeroing 2 kB each time showed in its profile.
    static SPARE: Cell<Option<Box<Cached>>> = const { Cell::new(None) };
}

/// A page view's group buffers, taken from [`SPARE`] and given back.
struct GroupCache(Option<Box<Cached>>);

impl GroupCache {
    fn take() -> GroupCache {
        let mut c = SPARE.take().unwrap_or_else(|| {
            Box::new(Cached {
                at: usize::MAX,
                group: Group::default(),
            })
        });
        c.at = usize::MAX;
        GroupCache(Some(c))
    }

    #[inline]
    fn get(&mut self) -> &mut Cached {
        self.0.as_mut().expect("taken until dropped")
    }
}

impl Drop for GroupCache {
    fn drop(&mut self) {
        SPARE.set(self.0.take());
    }
}

/// A validated view of one run or NULL page. It owns the pinned buffer, so it
/// cannot outlive the pin; it is read while the buffer is locked.
pub struct RunPage {
    buf: Buf,
    rel: pg_sys::Relation,
    /// Which page of its section this is.
    index: u32,
    /// The packed entries, inside the locked page `buf` holds.
    region: Region<'static>,
    kind: PageKind,
    /// The last (key, TID) of the page before, if `has_fence`.
    fence: (u64, Tid),
    has_fence: bool,
    base: *const u8,
    // Offsets and counts in the page are narrow: a view is moved from the
    // search that reads it to the scan that keeps it, and small, it moves
    // without a call to memcpy (see the assertion below).
    /// End of the packed region, in the page's content.
    used: u16,
    /// Raw entries in the insert area.
    ins: u16,
    /// Offset in the page's content of the insert area's lowest entry
    /// (`pd_upper`).
    ins_at: u16,
    /// The insert area's packed entries.
    packed_ins: Option<Region<'static>>,
    /// Bytes of the page's fingerprint: [`FINGERPRINT`] or 0 for none.
    fp: u16,
    /// The page may gain a fingerprint ([`Section::fingerprints`]).
    fingerprints: bool,
    /// The group last read: a scan walks a page's entries in order, a
    /// lookup reads one group.
    cache: UnsafeCell<GroupCache>,
}

// What the narrow fields above are for: LLVM copies up to 128 bytes with a
// few vector moves, and calls memcpy above.
const _: () = assert!(std::mem::size_of::<RunPage>() <= 128);

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
        // The whole page, to ask for the lines a lookup reads at once (each
        // range clamped to the page: nothing here is validated yet).
        // SAFETY: `buf` is pinned and locked (the caller's contract), so its
        // BLCKSZ bytes stay in place while this view holds it.
        let bytes = std::slice::from_raw_parts(page as *const u8, BLCKSZ);
        let lines = |at: usize, len: usize| &bytes[at.min(BLCKSZ)..(at + len).min(BLCKSZ)];
        // The header and the special space, which are read first.
        packed::prefetch(lines(0, 128));
        packed::prefetch(lines(BLCKSZ - 64, 64));
        page::check_current(rel, blk, page, s.kind, s.base..=s.generation)?;
        let h: RunHeader = page::read_header(page);
        {
            // What a lookup reads next: the group table (first keys, then
            // the groups' ends) and the start of the insert area.
            let groups = (h.count as usize).div_ceil(GROUP);
            packed::prefetch(lines(PAGE_HEADER + HEADER, 10 * groups));
            // A point lookup reads the fingerprint, and the insert area
            // only if its key's bit is set; on a page without one, always.
            if h.flags & HAS_FINGERPRINT != 0 {
                packed::prefetch(lines(PAGE_HEADER + CONTENT - FINGERPRINT, FINGERPRINT));
            } else {
                let upper = (*(page as *const pg_sys::PageHeaderData)).pd_upper as usize;
                packed::prefetch(lines(upper, (h.ins as usize * INSERTED).min(1024)));
            }
        }
        if let Some(dir) = s.dir {
            let (ps, pe) = dir.span(i);
            if h.count as u64 != pe - ps {
                corrupt(
                    rel,
                    blk,
                    &format!(
                        "page holds {} entries, the page directory says {}",
                        h.count,
                        pe - ps
                    ),
                );
            }
        }
        let header = &*(page as *const pg_sys::PageHeaderData);
        let (lower, upper) = (header.pd_lower as usize, header.pd_upper as usize);
        let special = PAGE_HEADER + CONTENT;
        let run = s.kind == PageKind::Run;
        let fp = h.fingerprint_len();
        if lower < PAGE_HEADER + HEADER
            || upper < lower
            || upper + h.ins as usize * INSERTED + h.packed_ins as usize + fp != special
            || h.flags & !HAS_FINGERPRINT != 0
            || (!run && (h.ins != 0 || h.packed_ins != 0 || h.has_fence != 0 || h.flags != 0))
            || (run && (h.has_fence != 0) != (i > 0))
        {
            corrupt(rel, blk, "run page layout does not match its header");
        }
        let base = page::content(page) as *const u8;
        let used = lower - PAGE_HEADER;
        // The region lies between the header and pd_lower, inside the page
        // (pd_lower was checked against the special space above).
        let raw = std::slice::from_raw_parts(base.add(HEADER), used - HEADER);
        let region = Region::parse(raw, h.count as usize)
            .unwrap_or_else(|e| corrupt(rel, blk, &e.to_string()));
        let packed_ins = packed_insert_area(base, fp, h.packed_ins as usize)
            .unwrap_or_else(|e| corrupt(rel, blk, &e.to_string()));
        Ok(RunPage {
            buf,
            rel,
            index: i,
            region,
            kind: s.kind,
            fence: (h.fence_key, h.fence_tid),
            has_fence: h.has_fence != 0,
            base,
            used: used as u16,
            ins: h.ins,
            ins_at: (upper - PAGE_HEADER) as u16,
            packed_ins,
            fp: fp as u16,
            fingerprints: run && s.fingerprints,
            cache: UnsafeCell::new(GroupCache::take()),
        })
    }

    /// Group `g` of the run entries, opened.
    #[inline]
    #[allow(clippy::mut_from_ref)] // the cell is private to this view
    fn group(&self, g: usize) -> &mut Group {
        self.cached(&self.region, g, g)
    }

    /// Group `g` of the insert area's packed entries, opened.
    #[allow(clippy::mut_from_ref)] // as for `group`
    fn ins_group(&self, region: &Region, g: usize) -> &mut Group {
        self.cached(region, g, PACKED_INS_GROUPS + g)
    }

    /// Group `g` of `region`, opened in the view's cache under the name `at`.
    #[inline]
    #[allow(clippy::mut_from_ref)] // as for `group`
    fn cached(&self, region: &Region, g: usize, at: usize) -> &mut Group {
        // SAFETY: the cache is private to this view, which is not Sync (the
        // cell makes it so), and no reference into it outlives the method
        // of the view that took it: each reads a value and returns.
        let c = unsafe { &mut *self.cache.get() }.get();
        if c.at != at {
            c.at = usize::MAX;
            let opened = region.open(g, &mut c.group);
            self.check(opened);
            c.at = at;
        }
        &mut c.group
    }

    /// A value read from the page, or the ERROR that it is damaged.
    #[inline]
    fn check<T>(&self, read: Result<T, Malformed>) -> T {
        read.unwrap_or_else(|e| corrupt(self.rel, self.buf.blkno(), &e.to_string()))
    }

    /// Which page of its section this is.
    pub fn index(&self) -> u32 {
        self.index
    }

    #[allow(clippy::len_without_is_empty)] // a run page always holds entries
    pub fn len(&self) -> usize {
        self.region.count()
    }

    /// Entry `i`'s (key, TID).
    #[inline]
    pub fn entry(&self, i: usize) -> (u64, Tid) {
        (self.key(i), self.tid(i))
    }

    #[inline]
    pub fn key(&self, i: usize) -> u64 {
        let key = self.group(i / GROUP).key(self.region.bytes(), i % GROUP);
        self.check(key)
    }

    #[inline]
    pub fn tid(&self, i: usize) -> Tid {
        let tid = self.group(i / GROUP).tid(self.region.bytes(), i % GROUP);
        self.check(tid)
    }

    /// Reads forward from slot `from` to the first key above `hi`, the
    /// page's end, or the first group boundary at least `max` slots on,
    /// appending the live entries with keys from `lo` to `out`. What a
    /// scan's batch does, a group at a time.
    pub fn collect_forward(
        &self,
        from: usize,
        (lo, hi): (u64, u64),
        max: usize,
        out: &mut Vec<(u64, Tid)>,
    ) -> Forward {
        let mut s = from;
        let mut last = None;
        while s < self.len() && s - from < max {
            let g = s / GROUP;
            let base = g * GROUP;
            let group = self.group(g);
            // Decode only up to the first key above the interval: a probe
            // of one key reads a few dozen entries of its group, not 128.
            let end = self.check(group.upper_bound(self.region.bytes(), hi));
            // The slices point into this view's cache, and nothing below
            // calls a method of the view that uses it (`dead` reads the
            // region) until they are dropped.
            let first = (s - base).min(end);
            let (keys, tids) = self.check(group.entries(self.region.bytes(), first, end));
            // Only a scan that starts over from a page's first slot meets
            // keys below the interval; keys ascend, so the first says.
            if keys.first().is_some_and(|&k| k >= lo)
                && !self.region.may_have_dead(base + first, base + end)
            {
                out.extend(keys.iter().copied().zip(tids.iter().copied()));
            } else {
                for (j, (&key, &tid)) in (first..end).zip(keys.iter().zip(tids)) {
                    if key >= lo && !self.region.dead(base + j) {
                        out.push((key, tid));
                    }
                }
            }
            if let (Some(&key), Some(&tid)) = (keys.last(), tids.last()) {
                last = Some((key, tid));
            }
            if end < self.region.group_len(g) {
                return Forward {
                    stop: base + end.max(s - base),
                    last,
                    above: true,
                };
            }
            s = base + end;
        }
        Forward {
            stop: s,
            last,
            above: false,
        }
    }

    #[inline]
    pub fn dead(&self, i: usize) -> bool {
        self.region.dead(i)
    }

    /// The slots not tombstoned, in order.
    pub fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.len()).filter(|&s| !self.dead(s))
    }

    /// The last (key, TID) of the page before; `None` on the first page.
    /// The page owns the pairs above it up to its own last entry.
    pub fn fence(&self) -> Option<(u64, Tid)> {
        self.has_fence.then_some(self.fence)
    }

    /// Bytes after the packed region: what the insert area and the
    /// fingerprint may take at most.
    fn after_region(&self) -> usize {
        CONTENT - self.used as usize
    }

    /// Bytes free between the packed region and the insert area.
    fn free(&self) -> usize {
        debug_assert!(
            self.ins_at >= self.used,
            "open and add_inserted keep the area above"
        );
        (self.ins_at - self.used) as usize
    }

    /// The last run entry's (key, TID).
    pub fn last(&self) -> (u64, Tid) {
        self.entry(self.len() - 1)
    }

    /// Live entries in the insert area: its raw ones and its packed ones
    /// not tombstoned.
    pub fn inserted_len(&self) -> usize {
        self.ins as usize
            + self
                .packed_ins
                .map_or(0, |r| (0..r.count()).filter(|&s| !r.dead(s)).count())
    }

    /// Raw insert-area entry `i` (unsorted).
    fn raw_inserted(&self, i: usize) -> (u64, Tid) {
        (self.inserted_key(i), self.inserted_tid(i))
    }

    fn inserted_key(&self, i: usize) -> u64 {
        debug_assert!(i < self.ins as usize);
        // SAFETY: `open` checked that the insert area's `ins` raw entries
        // begin at pd_upper, inside the page.
        unsafe {
            self.base
                .add(self.ins_at as usize + INSERTED * i)
                .cast::<u64>()
                .read_unaligned()
        }
    }

    fn inserted_tid(&self, i: usize) -> Tid {
        debug_assert!(i < self.ins as usize);
        // SAFETY: as in `inserted_key`; the TID follows the key.
        let tid = unsafe {
            self.base
                .add(self.ins_at as usize + INSERTED * i + 8)
                .cast::<pg_sys::ItemPointerData>()
                .read_unaligned()
        };
        tid_from_ptr(&tid)
    }

    /// Every live insert-area entry: the raw ones (unsorted), then the packed
    /// ones in order.
    pub fn inserted_all(&self) -> impl Iterator<Item = (u64, Tid)> + '_ {
        (0..self.ins as usize)
            .map(|i| self.raw_inserted(i))
            .chain(self.packed_inserted(0, u64::MAX))
    }

    /// The insert area's live packed entries from slot `from` on, in order,
    /// up to the last with a key at most `hi`.
    pub fn packed_inserted(&self, from: usize, hi: u64) -> impl Iterator<Item = (u64, Tid)> + '_ {
        let region = self.packed_ins;
        let mut s = from;
        std::iter::from_fn(move || {
            let r = region?;
            while s < r.count() {
                let (g, i) = (s / GROUP, s % GROUP);
                s += 1;
                let key = self.check(self.ins_group(&r, g).key(r.bytes(), i));
                if key > hi {
                    s = r.count();
                    return None;
                }
                if !r.dead(g * GROUP + i) {
                    let tid = self.check(self.ins_group(&r, g).tid(r.bytes(), i));
                    return Some((key, tid));
                }
            }
            None
        })
    }

    /// The live insert-area entries with a key in `[lo, hi]`: a lookup
    /// compares every raw key and searches the packed ones, decoding the
    /// TIDs of those it returns alone; a lookup of one key, only if the
    /// fingerprint says the area may hold it.
    pub fn inserted_in(&self, lo: u64, hi: u64) -> impl Iterator<Item = (u64, Tid)> + '_ {
        let skip = lo == hi && !self.may_hold(lo);
        let from = match self.packed_ins {
            _ if skip => usize::MAX,
            None => 0,
            Some(r) => {
                let g = r.group_of(lo, 0);
                g * GROUP + self.check(self.ins_group(&r, g).lower_bound(r.bytes(), lo))
            }
        };
        let raw = if skip { 0 } else { self.ins as usize };
        (0..raw)
            .filter_map(move |i| {
                let key = self.inserted_key(i);
                (lo <= key && key <= hi).then(|| (key, self.inserted_tid(i)))
            })
            .chain(self.packed_inserted(from, hi))
    }

    /// Whether the insert area may hold `key`: its fingerprint bit is set,
    /// or the page has no fingerprint.
    #[inline]
    fn may_hold(&self, key: u64) -> bool {
        if self.fp == 0 {
            return true;
        }
        let bit = fingerprint_bit(key);
        // SAFETY: `open` checked that a page with a fingerprint ends its
        // content with it, and the view holds the page locked.
        let byte = unsafe { *self.base.add(CONTENT - FINGERPRINT + bit / 8) };
        byte & (1 << (bit % 8)) != 0
    }

    /// A live inserted key whose fingerprint bit is clear, which would hide
    /// it from lookups (`learned_verify`).
    pub fn fingerprint_miss(&self) -> Option<u64> {
        self.inserted_all()
            .map(|(k, _)| k)
            .find(|&k| !self.may_hold(k))
    }

    /// The slots of the insert area's live packed entries whose TID `dead`
    /// says is dead (for [`retain_inserted`]).
    pub fn packed_inserted_where(&self, mut dead: impl FnMut(Tid) -> bool) -> Vec<usize> {
        let Some(r) = self.packed_ins else {
            return Vec::new();
        };
        (0..r.count())
            .filter(|&s| {
                !r.dead(s)
                    && dead(self.check(self.ins_group(&r, s / GROUP).tid(r.bytes(), s % GROUP)))
            })
            .collect()
    }

    /// Whether the insert area has room for one more entry.
    pub fn has_room(&self) -> bool {
        self.room() > 0
    }

    /// How many more entries the insert area has room for.
    pub fn room(&self) -> usize {
        if self.kind != PageKind::Run {
            return 0;
        }
        self.free() / INSERTED
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

    /// Whether the next raw entry brings the fingerprint: the page may have
    /// one, its insert area is empty, and both fit.
    fn gains_fingerprint(&self) -> bool {
        self.fp == 0
            && self.fingerprints
            && self.ins == 0
            && self.packed_ins.is_none()
            && self.free() >= INSERTED + FINGERPRINT
    }

    /// Raw entries the insert area has room for, less the fingerprint the
    /// first would bring.
    fn raw_room(&self) -> usize {
        if self.gains_fingerprint() {
            (self.free() - FINGERPRINT) / INSERTED
        } else {
            self.room()
        }
    }

    /// Adds (key, TID) to the insert area of this page, whose buffer the
    /// caller holds exclusive-locked, in one WAL record that logs the entry,
    /// its fingerprint byte and the two header fields it changes
    /// (`wal::write_ranges`). The first entry of an empty insert area brings
    /// the fingerprint, when the page may have one and room for both.
    pub fn add_inserted(&mut self, rel: pg_sys::Relation, (key, tid): (u64, Tid)) {
        assert!(self.has_room(), "the caller checked for room");
        let gain = self.gains_fingerprint();
        debug_assert!(
            !gain || self.ins_at as usize == CONTENT,
            "gained in an empty area"
        );
        // The new entry and, when the page gains a fingerprint, the
        // fingerprint after it (both at the end of the content).
        let mut area = [0u8; INSERTED + FINGERPRINT];
        let len = if gain { area.len() } else { INSERTED };
        area[..8].copy_from_slice(&key.to_ne_bytes());
        let t = tid_to_ptr(tid);
        // SAFETY: ItemPointerData is 6 bytes of plain integers (asserted above).
        area[8..INSERTED].copy_from_slice(unsafe {
            std::slice::from_raw_parts((&t as *const pg_sys::ItemPointerData).cast::<u8>(), 6)
        });
        let bit = fingerprint_bit(key);
        let byte_at = CONTENT - FINGERPRINT + bit / 8;
        if gain {
            area[INSERTED + bit / 8] = 1 << (bit % 8);
        }
        let fp_byte = if self.fp > 0 {
            // SAFETY: `open` checked that the fingerprint ends the content.
            [unsafe { *self.base.add(byte_at) } | 1 << (bit % 8)]
        } else {
            [0]
        };
        let at = self.ins_at as usize - len;
        // `flags` and `ins`, adjacent in the header.
        const _: () = assert!(
            std::mem::offset_of!(RunHeader, ins) == std::mem::offset_of!(RunHeader, flags) + 1
        );
        let mut fields = [0u8; 3];
        fields[0] = if gain || self.fp > 0 {
            HAS_FINGERPRINT
        } else {
            0
        };
        fields[1..].copy_from_slice(&(self.ins + 1).to_ne_bytes());
        let upper = ((PAGE_HEADER + at) as u16).to_ne_bytes();
        let entry = (PAGE_HEADER + at, &area[..len]);
        let fields = (
            PAGE_HEADER + std::mem::offset_of!(RunHeader, flags),
            &fields[..],
        );
        let upper = (
            std::mem::offset_of!(pg_sys::PageHeaderData, pd_upper),
            &upper[..],
        );
        if self.fp > 0 {
            let fp = (PAGE_HEADER + byte_at, &fp_byte[..]);
            super::wal::write_ranges(rel, &self.buf, &[entry, fp, fields, upper]);
        } else {
            super::wal::write_ranges(rel, &self.buf, &[entry, fields, upper]);
        }
        if gain {
            self.fp = FINGERPRINT as u16;
        }
        self.ins += 1;
        self.ins_at = at as u16;
    }

    /// Packs the insert area's live entries, in order, at the end of this
    /// page (whose buffer the caller holds exclusive-locked), so that its raw
    /// part has room again; tombstoned packed entries are dropped. Returns
    /// whether it did. Only once the raw entries are at least a sixteenth of
    /// the packed ones (and 8): each entry is then packed again about 16
    /// times at most over the page's life, and a page whose room has shrunk
    /// below that is full, without a vain packing per insert.
    ///
    /// Entries change place but no scan holds a place in the insert area: a
    /// scan copies out what it takes of a page under its lock, by key.
    pub fn compact(&mut self, rel: pg_sys::Relation) -> bool {
        let packed_count = self.packed_ins.map_or(0, |r| r.count());
        if (self.ins as usize) < (packed_count / 16).max(8) {
            return false;
        }
        let Some(area) = self.packed_with(&[], |a| self.room_after(a) > self.room()) else {
            return false;
        };
        self.write_packed(rel, &area);
        true
    }

    /// Whether [`RunPage::take`] can add `entries`.
    pub fn can_take(&self, entries: &[(u64, Tid)]) -> bool {
        self.raw_room() >= entries.len() || self.packed_with(entries, |_| true).is_some()
    }

    /// Adds `entries` to the insert area of this page (whose buffer the
    /// caller holds exclusive-locked): raw if they fit so, else packed with
    /// the entries already there. The caller checked [`RunPage::can_take`].
    pub fn take(&mut self, rel: pg_sys::Relation, entries: &[(u64, Tid)]) {
        if self.raw_room() >= entries.len() {
            for &e in entries {
                self.add_inserted(rel, e);
            }
            return;
        }
        let area = self
            .packed_with(entries, |_| true)
            .expect("the caller checked for room");
        self.write_packed(rel, &area);
    }

    /// The insert area's live entries and `extra`, packed in order, if they
    /// fit the area and `accept` takes the result: with their fingerprint if
    /// the page has or may gain one, else (or if that does not do) without.
    fn packed_with(
        &self,
        extra: &[(u64, Tid)],
        accept: impl Fn(&InsertArea) -> bool,
    ) -> Option<InsertArea> {
        if self.kind != PageKind::Run {
            return None;
        }
        let mut all: Vec<(u64, Tid)> = self.inserted_all().chain(extra.iter().copied()).collect();
        all.sort_unstable();
        let fingerprint = fingerprint_of(all.iter().map(|&(k, _)| k));
        let tries: &[Option<[u8; FINGERPRINT]>] = if self.fp > 0 || self.fingerprints {
            &[Some(fingerprint), None]
        } else {
            &[None]
        };
        tries.iter().find_map(|&fingerprint| {
            let fp = fingerprint.map_or(0, |_| FINGERPRINT);
            let packed = if all.is_empty() {
                None
            } else {
                // What the packed part may take: the insert area, less its
                // count and the fingerprint.
                let budget = self.after_region().checked_sub(2 + fp)?;
                if budget < packed::MIN_BUDGET || all.len() > packed::MAX_COUNT {
                    return None;
                }
                let mut packer = Packer::new(budget);
                for &(key, tid) in &all {
                    packer.push(key, tid, false);
                }
                let [p] = <[PackedPage; 1]>::try_from(packer.finish()).ok()?;
                Some(p)
            };
            let area = InsertArea {
                packed,
                fingerprint,
            };
            (area.len() <= self.after_region() && accept(&area)).then_some(area)
        })
    }

    /// Raw entries the insert area has room for beside `area`.
    fn room_after(&self, area: &InsertArea) -> usize {
        (self.after_region() - area.len()) / INSERTED
    }

    /// Makes `area` the insert area, in one WAL record, and reads it back.
    fn write_packed(&mut self, rel: pg_sys::Relation, area: &InsertArea) {
        let mut wal = super::wal::Wal::start(rel);
        let image = wal.page(&self.buf, false);
        // SAFETY: the WAL image of this exclusive-locked run page, whose
        // insert area `area` fits (`packed_with`).
        unsafe { write_insert_area(image, area) };
        wal.finish();
        // SAFETY: the buffer is still locked; `write_insert_area` left a
        // well-formed area (what `open` checks), and the run region is as it
        // was. The cache may hold a packed group of the old area.
        unsafe {
            let page = self.buf.page();
            let h: RunHeader = page::read_header(page);
            let header = &*(page as *const pg_sys::PageHeaderData);
            self.ins = h.ins;
            self.ins_at = (header.pd_upper as usize - PAGE_HEADER) as u16;
            self.fp = area.fingerprint_len() as u16;
            self.packed_ins =
                packed_insert_area(self.base, self.fp as usize, h.packed_ins as usize)
                    .unwrap_or_else(|e| corrupt(rel, self.buf.blkno(), &e.to_string()));
            (*self.cache.get()).get().at = usize::MAX;
        }
    }
}

/// Names the insert area's packed groups apart from the run's in a view's
/// cache (a page has fewer than this many groups).
const PACKED_INS_GROUPS: usize = usize::MAX / 2;

/// The packed part of an insert area of `len` bytes, which ends where the
/// fingerprint of `fp` bytes begins, at the end of the content that `base`
/// begins.
///
/// # Safety
/// `base` must point to the content area of a page that stays valid and
/// unchanged for `'static` as far as the caller uses the result (a locked
/// page a view holds), and `len + fp` be at most its insert area's length.
unsafe fn packed_insert_area(
    base: *const u8,
    fp: usize,
    len: usize,
) -> Result<Option<Region<'static>>, Malformed> {
    if len == 0 {
        return Ok(None);
    }
    if len < 2 {
        return Err(Malformed("the insert area's packed part is too short"));
    }
    let raw = std::slice::from_raw_parts(base.add(CONTENT - fp - len), len);
    let count = u16::from_le_bytes([raw[0], raw[1]]) as usize;
    Region::parse(&raw[2..], count).map(Some)
}

/// An insert area without raw entries: its packed entries and their
/// fingerprint (or none), as [`RunPage::compact`] writes it.
struct InsertArea {
    packed: Option<PackedPage>,
    fingerprint: Option<[u8; FINGERPRINT]>,
}

impl InsertArea {
    /// Bytes it takes at the end of the page.
    fn len(&self) -> usize {
        self.packed.as_ref().map_or(0, |p| 2 + p.len()) + self.fingerprint_len()
    }

    /// Bytes of its fingerprint: [`FINGERPRINT`], or 0 for none.
    fn fingerprint_len(&self) -> usize {
        self.fingerprint.map_or(0, |_| FINGERPRINT)
    }
}

/// Makes `area` the insert area of a writable run page image; zeroes what
/// the area held before.
///
/// # Safety
/// `page` must be a writable image of a valid run page whose insert area
/// `area` fits.
unsafe fn write_insert_area(page: pg_sys::Page, area: &InsertArea) {
    let mut h: RunHeader = page::read_header(page);
    let header = page as *mut pg_sys::PageHeaderData;
    let special = PAGE_HEADER + CONTENT;
    let raw = page as *mut u8;
    let upper = (*header).pd_upper as usize;
    // The hole below pd_upper stays zero, as Generic WAL redo leaves it.
    std::ptr::write_bytes(raw.add(upper), 0, special - upper);
    let fp = area.fingerprint_len();
    if let Some(bits) = &area.fingerprint {
        std::ptr::copy_nonoverlapping(bits.as_ptr(), raw.add(special - fp), fp);
    }
    let len = area.len() - fp;
    if let Some(p) = &area.packed {
        let out = std::slice::from_raw_parts_mut(raw.add(special - fp - len), len);
        out[..2].copy_from_slice(&(p.count as u16).to_le_bytes());
        p.write(&mut out[2..]);
    }
    (*header).pd_upper = (special - fp - len) as u16;
    h.ins = 0;
    h.packed_ins = len as u16;
    h.flags = if fp > 0 { HAS_FINGERPRINT } else { 0 };
    page::write_header(page, &h);
}

/// Keeps only the raw insert-area entries `keep` says to, and tombstones
/// the packed ones at `packed_dead` ([`RunPage::packed_inserted_where`]), on
/// a writable page image (VACUUM, under a cleanup lock).
///
/// # Safety
/// `page` must be a writable image of a valid run page, and every slot of
/// `packed_dead` below the count of its packed insert area.
pub unsafe fn retain_inserted(
    page: pg_sys::Page,
    mut keep: impl FnMut(Tid) -> bool,
    packed_dead: &[usize],
) {
    let mut h: RunHeader = page::read_header(page);
    let header = page as *mut pg_sys::PageHeaderData;
    let fp = h.fingerprint_len();
    // The raw entries end where the packed ones begin.
    let end = PAGE_HEADER + CONTENT - fp - h.packed_ins as usize;
    let raw = page as *mut u8;
    let mut live: Vec<[u8; INSERTED]> = Vec::with_capacity(h.ins as usize);
    for i in 0..h.ins as usize {
        let at = raw.add(end - INSERTED * (i + 1));
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
    let upper = end - INSERTED * live.len();
    // The old raw entries are zeroed first: the hole below pd_upper stays
    // zero, as Generic WAL redo leaves it.
    std::ptr::write_bytes(
        raw.add((*header).pd_upper as usize),
        0,
        end - (*header).pd_upper as usize,
    );
    for (i, e) in live.iter().enumerate() {
        std::ptr::copy_nonoverlapping(e.as_ptr(), raw.add(end - INSERTED * (i + 1)), INSERTED);
    }
    // The fingerprint keeps the bits of the removed entries: it may say a
    // key is there that is not, never the reverse.
    (*header).pd_upper = upper as u16;
    h.ins = live.len() as u16;
    page::write_header(page, &h);
    if !packed_dead.is_empty() {
        let count = u16::from_le_bytes([*raw.add(end), *raw.add(end + 1)]) as usize;
        let bitmap = raw.add(end + 2 + Region::bitmap_at(count));
        for &s in packed_dead {
            debug_assert!(s < count);
            *bitmap.add(s / 8) |= 1 << (s % 8);
        }
    }
}

/// Marks slots dead on a writable page image.
///
/// # Safety
/// `page` must be a writable image of a valid page of this format and every
/// slot below its count.
pub unsafe fn set_dead(page: pg_sys::Page, slots: &[usize]) {
    let h: RunHeader = page::read_header(page);
    let bitmap = page::content(page).add(HEADER + Region::bitmap_at(h.count as usize));
    for &i in slots {
        debug_assert!(i < h.count as usize);
        *bitmap.add(i / 8) |= 1 << (i % 8);
    }
}

/// Counts the pages a section of sorted entries takes, packing them as
/// [`SectionWriter`] will, without writing: a retrain places a generation
/// before it writes it.
pub struct PageCounter {
    packer: Packer,
    /// Entries of each page counted so far.
    pub counts: Vec<u16>,
}

impl PageCounter {
    /// For run pages filled to `fillfactor`, or NULL pages (`None`).
    pub fn new(fillfactor: Option<u32>) -> PageCounter {
        PageCounter {
            packer: packer(fillfactor),
            counts: Vec::new(),
        }
    }

    pub fn push(&mut self, key: u64, tid: Tid, dead: bool) {
        self.packer.push(key, tid, dead);
        self.counts
            .extend(self.packer.ready().map(|p| p.count as u16));
    }

    /// Each page's entry count.
    pub fn finish(mut self) -> Vec<u16> {
        let last = self.packer.finish();
        self.counts.extend(last.iter().map(|p| p.count as u16));
        self.counts
    }
}

/// Writes a section page by page (a build or a retrain, before anything
/// points at its pages). Pages go through shared buffers unlogged; the
/// caller WAL-logs them before it publishes them.
pub struct SectionWriter {
    rel: pg_sys::Relation,
    kind: PageKind,
    generation: u32,
    /// Where the pages go: page `first + pages` of `place` is written next.
    place: Extents,
    first: u32,
    packer: Option<Packer>,
    /// The last entry written before the page being filled.
    fence: Option<(u64, Tid)>,
    /// Entries of each page written.
    pub counts: Vec<u16>,
    pub entries: u64,
    /// Smallest and largest key pushed (keys arrive sorted).
    pub key_range: Option<(u64, u64)>,
    /// The last (key, TID) pushed.
    pub last: Option<(u64, Tid)>,
}

impl SectionWriter {
    /// A writer of run pages filled to `fillfactor` percent, or of NULL
    /// pages (`None`, always full).
    pub fn new(
        rel: pg_sys::Relation,
        (place, first): (Extents, u32),
        fillfactor: Option<u32>,
        generation: u32,
    ) -> SectionWriter {
        SectionWriter {
            rel,
            kind: if fillfactor.is_some() {
                PageKind::Run
            } else {
                PageKind::Null
            },
            generation,
            place,
            first,
            packer: Some(packer(fillfactor)),
            fence: None,
            counts: Vec::new(),
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

    /// Pages written so far.
    pub fn pages(&self) -> u32 {
        self.counts.len() as u32
    }

    pub fn push(&mut self, key: u64, tid: Tid) {
        self.push_as(key, tid, false)
    }

    /// Pushes an entry VACUUM has tombstoned, keeping its position: an append
    /// retrain copies the run's last page with its tombstones.
    pub fn push_dead(&mut self, key: u64, tid: Tid) {
        self.push_as(key, tid, true)
    }

    fn push_as(&mut self, key: u64, tid: Tid, dead: bool) {
        self.entries += 1;
        self.key_range = Some((self.key_range.map_or(key, |r| r.0), key));
        self.last = Some((key, tid));
        let packer = self.packer.as_mut().expect("not finished");
        packer.push(key, tid, dead);
        let done: Vec<PackedPage> = packer.ready().collect();
        for p in done {
            self.write(p);
        }
    }

    fn write(&mut self, p: PackedPage) {
        let blk = self
            .place
            .block(self.first + self.pages())
            .expect("the writer's extents hold its pages");
        let buf = if blk < nblocks(self.rel) {
            Buf::overwrite(self.rel, blk)
        } else {
            Buf::extend(self.rel, false)
        };
        assert_eq!(
            buf.blkno(),
            blk,
            "extents past the end are written in order"
        );
        let fence = self.fence.filter(|_| self.kind == PageKind::Run);
        // SAFETY: the page is pinned and exclusive-locked; the region fits
        // the page (the packer's budget is at most REGION).
        unsafe {
            let page = buf.page();
            page::init(page, self.kind, self.generation, HEADER + p.len());
            let (fence_key, fence_tid) = fence.unwrap_or((0, 0));
            page::write_header(
                page,
                &RunHeader {
                    fence_key,
                    fence_tid,
                    count: p.count as u16,
                    has_fence: fence.is_some() as u8,
                    flags: 0,
                    ins: 0,
                    packed_ins: 0,
                },
            );
            let region = std::slice::from_raw_parts_mut(page::content(page).add(HEADER), p.len());
            p.write(region);
            pg_sys::MarkBufferDirty(buf.buffer());
        }
        self.fence = Some(p.last);
        self.counts.push(p.count as u16);
    }

    /// Writes the last pages; returns each page's entry count.
    pub fn finish(mut self) -> Vec<u16> {
        for p in self.packer.take().expect("not finished").finish() {
            self.write(p);
        }
        std::mem::take(&mut self.counts)
    }
}
