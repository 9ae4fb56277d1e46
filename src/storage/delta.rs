//! Delta pages hold entries inserted since the build, unsorted, each page with
//! the min/max ordinal of its entries. A directory (a chain of pages from the
//! metapage) lists every delta page with its state and, once the page is full
//! and closed, its key range, so scans read only the pages that can match.
//!
//! Inserts go to one of a few open pages; contended inserters spread over more
//! open pages instead of queueing on one buffer. Only filling a page takes the
//! metapage lock. Lock order: metapage, then delta page, then directory page.
//!
//! A page's state lives both on the page (what inserters check under the page
//! lock) and in its directory entry (what scans read); the two change together
//! in one WAL record.

use super::meta::{MAX_OPEN, META_BLOCK};
use super::page::{self, corrupt, PageKind, CONTENT};
use super::run::{tid_from_ptr, tid_to_ptr, Tid};
use super::wal::Wal;
use super::{Buf, Meta};
use pgrx::pg_sys;

const PAGE_HEADER: usize = 24;
const ENTRY: usize = 16;
pub const DELTA_CAPACITY: usize = (CONTENT - PAGE_HEADER) / ENTRY;
const DIR_HEADER: usize = 8;
const DIR_ENTRY: usize = 24;
pub const DIR_CAPACITY: usize = (CONTENT - DIR_HEADER) / DIR_ENTRY;

pub const OPEN: u8 = 1;
pub const CLOSED: u8 = 2;
pub const FREE: u8 = 3;

const FLAG_NULL: u16 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeltaEntry {
    pub key: u64,
    pub tid: Tid,
    pub null: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct DirEntry {
    pub blk: pg_sys::BlockNumber,
    pub state: u8,
    pub has_nulls: bool,
    pub min: u64,
    pub max: u64,
    /// Where the entry itself is: directory block and slot.
    pub dir_blk: pg_sys::BlockNumber,
    pub slot: usize,
}

impl DirEntry {
    /// Whether the page can hold a non-null key in `[lo, hi]`.
    pub fn may_hold(&self, lo: u64, hi: u64) -> bool {
        match self.state {
            OPEN => true,
            CLOSED => self.min <= hi && lo <= self.max,
            _ => false,
        }
    }

    pub fn may_hold_nulls(&self) -> bool {
        self.state == OPEN || (self.state == CLOSED && self.has_nulls)
    }
}

/// Header of a delta page.
#[derive(Clone, Copy)]
struct Header {
    min: u64,
    max: u64,
    count: usize,
    state: u8,
    has_nulls: bool,
}

/// # Safety
/// `page` must be pinned and locked and already checked to be a delta page.
unsafe fn header(rel: pg_sys::Relation, blk: pg_sys::BlockNumber, page: pg_sys::Page) -> Header {
    let b = page::content(page);
    let h = Header {
        min: b.cast::<u64>().read_unaligned(),
        max: b.add(8).cast::<u64>().read_unaligned(),
        count: b.add(16).cast::<u16>().read_unaligned() as usize,
        state: b.add(18).read(),
        has_nulls: b.add(19).read() != 0,
    };
    if h.count > DELTA_CAPACITY || !(OPEN..=FREE).contains(&h.state) {
        corrupt(rel, blk, "delta page header is out of range");
    }
    h
}

/// # Safety
/// `page` must be a writable delta page image.
unsafe fn set_header(page: pg_sys::Page, h: &Header) {
    let b = page::content(page);
    b.cast::<u64>().write_unaligned(h.min);
    b.add(8).cast::<u64>().write_unaligned(h.max);
    b.add(16).cast::<u16>().write_unaligned(h.count as u16);
    b.add(18).write(h.state);
    b.add(19).write(h.has_nulls as u8);
    page::set_content_len(page, PAGE_HEADER + h.count * ENTRY);
}

/// # Safety
/// `i` must be below the page's capacity; `page` pinned and locked.
unsafe fn entry(page: pg_sys::Page, i: usize) -> DeltaEntry {
    let e = page::content(page).add(PAGE_HEADER + i * ENTRY);
    let tid = e.add(8).cast::<pg_sys::ItemPointerData>().read_unaligned();
    DeltaEntry {
        key: e.cast::<u64>().read_unaligned(),
        tid: tid_from_ptr(&tid),
        null: e.add(14).cast::<u16>().read_unaligned() & FLAG_NULL != 0,
    }
}

/// # Safety
/// `i` must be below the page's capacity; `page` a writable image.
unsafe fn set_entry(page: pg_sys::Page, i: usize, d: &DeltaEntry) {
    let e = page::content(page).add(PAGE_HEADER + i * ENTRY);
    e.cast::<u64>().write_unaligned(d.key);
    e.add(8)
        .cast::<pg_sys::ItemPointerData>()
        .write_unaligned(tid_to_ptr(d.tid));
    e.add(14)
        .cast::<u16>()
        .write_unaligned(if d.null { FLAG_NULL } else { 0 });
}

/// # Safety
/// `page` must be a writable page image.
unsafe fn init_delta_page(page: pg_sys::Page) {
    page::init(page, PageKind::Delta, PAGE_HEADER);
    set_header(
        page,
        &Header {
            min: u64::MAX,
            max: 0,
            count: 0,
            state: OPEN,
            has_nulls: false,
        },
    );
}

/// # Safety
/// `page` must be a directory page, pinned and locked.
unsafe fn dir_count(rel: pg_sys::Relation, blk: pg_sys::BlockNumber, page: pg_sys::Page) -> usize {
    let n = page::content(page).cast::<u32>().read_unaligned() as usize;
    if n > DIR_CAPACITY {
        corrupt(rel, blk, "delta directory entry count is out of range");
    }
    n
}

/// # Safety
/// `slot` below `DIR_CAPACITY`; `page` pinned and locked.
unsafe fn dir_entry(page: pg_sys::Page, dir_blk: pg_sys::BlockNumber, slot: usize) -> DirEntry {
    let e = page::content(page).add(DIR_HEADER + slot * DIR_ENTRY);
    DirEntry {
        blk: e.cast::<u32>().read_unaligned(),
        state: e.add(4).read(),
        has_nulls: e.add(5).read() != 0,
        min: e.add(8).cast::<u64>().read_unaligned(),
        max: e.add(16).cast::<u64>().read_unaligned(),
        dir_blk,
        slot,
    }
}

/// # Safety
/// `slot` below `DIR_CAPACITY`; `page` a writable directory page image.
unsafe fn set_dir_entry(
    page: pg_sys::Page,
    slot: usize,
    blk: pg_sys::BlockNumber,
    state: u8,
    has_nulls: bool,
    min: u64,
    max: u64,
) {
    let e = page::content(page).add(DIR_HEADER + slot * DIR_ENTRY);
    e.cast::<u32>().write_unaligned(blk);
    e.add(4).write(state);
    e.add(5).write(has_nulls as u8);
    e.add(8).cast::<u64>().write_unaligned(min);
    e.add(16).cast::<u64>().write_unaligned(max);
}

/// Every directory entry, reading one directory page at a time.
pub fn directory(rel: pg_sys::Relation, meta: &Meta) -> Vec<DirEntry> {
    let mut out = Vec::new();
    let mut blk = meta.dir_head;
    let mut seen = 0u32;
    while blk != pg_sys::InvalidBlockNumber {
        let buf = Buf::read_shared(rel, blk);
        // SAFETY: pinned and share-locked; the count is checked before use.
        unsafe {
            let page = buf.page();
            page::check(rel, blk, page, PageKind::DeltaDir);
            let n = dir_count(rel, blk, page);
            for slot in 0..n {
                let e = dir_entry(page, blk, slot);
                if e.blk == META_BLOCK || !(OPEN..=FREE).contains(&e.state) {
                    corrupt(rel, blk, "delta directory entry is invalid");
                }
                out.push(e);
            }
            blk = page::next_link(page);
        }
        seen += 1;
        if seen > meta.delta_pages / DIR_CAPACITY as u32 + 1 {
            corrupt(
                rel,
                meta.dir_head,
                "delta directory chain is longer than the metapage allows",
            );
        }
    }
    out
}

/// Appends the entries of delta page `blk` that `keep` accepts.
pub fn read_page(
    rel: pg_sys::Relation,
    blk: pg_sys::BlockNumber,
    out: &mut Vec<DeltaEntry>,
    keep: impl Fn(&DeltaEntry) -> bool,
) {
    let buf = Buf::read_shared(rel, blk);
    // SAFETY: pinned and share-locked; the count is validated by `header`.
    unsafe {
        let page = buf.page();
        page::check(rel, blk, page, PageKind::Delta);
        let h = header(rel, blk, page);
        for i in 0..h.count {
            let e = entry(page, i);
            if keep(&e) {
                out.push(e);
            }
        }
    }
}

enum Added {
    Yes,
    /// The page is full or no longer open: a new one is needed.
    NeedsPage(pg_sys::BlockNumber),
}

/// Adds one entry to an open delta page, WAL-logged.
pub fn insert(rel: pg_sys::Relation, key: Option<u64>, tid: Tid) {
    let e = DeltaEntry {
        key: key.unwrap_or(0),
        tid,
        null: key.is_none(),
    };
    loop {
        let meta = Meta::read(rel);
        let n = meta.n_open as usize;
        if n == 0 {
            open_page(rel, None);
            continue;
        }
        // SAFETY: reads a process-global set at backend start.
        let first = unsafe { pg_sys::MyProcPid } as usize % n;
        let mut outcome = None;
        for k in 0..n {
            let mut buf = Buf::read(rel, meta.open[(first + k) % n]);
            if buf.try_lock_exclusive() {
                outcome = Some(add(rel, &buf, &e));
                break;
            }
        }
        let outcome = match outcome {
            Some(o) => o,
            None if n < MAX_OPEN => {
                // Every open page is busy: open one more rather than queue.
                open_page(rel, None);
                continue;
            }
            None => add(rel, &Buf::read_exclusive(rel, meta.open[first]), &e),
        };
        match outcome {
            Added::Yes => return,
            Added::NeedsPage(blk) => open_page(rel, Some(blk)),
        }
    }
}

fn add(rel: pg_sys::Relation, buf: &Buf, e: &DeltaEntry) -> Added {
    let blk = buf.blkno();
    // SAFETY: the buffer is pinned and exclusive-locked by the caller.
    let mut h = unsafe {
        page::check(rel, blk, buf.page(), PageKind::Delta);
        header(rel, blk, buf.page())
    };
    if h.state != OPEN || h.count >= DELTA_CAPACITY {
        return Added::NeedsPage(blk);
    }
    let mut wal = Wal::start(rel);
    let page = wal.page(buf, false);
    // SAFETY: `page` is the WAL image of the locked delta page; count < capacity.
    unsafe {
        set_entry(page, h.count, e);
        h.count += 1;
        if e.null {
            h.has_nulls = true;
        } else {
            h.min = h.min.min(e.key);
            h.max = h.max.max(e.key);
        }
        set_header(page, &h);
    }
    wal.finish();
    Added::Yes
}

/// Replaces the open page `stale` (full or closed) with a fresh one, or, with
/// `None`, opens one more page. Runs under the metapage's exclusive lock.
fn open_page(rel: pg_sys::Relation, stale: Option<pg_sys::BlockNumber>) {
    let meta_buf = Buf::read_exclusive(rel, META_BLOCK);
    // SAFETY: block 0, pinned and exclusive-locked.
    let mut meta = unsafe { Meta::from_page(rel, meta_buf.page()) };
    let slot = match stale {
        Some(blk) => {
            let Some(s) = meta.open[..meta.n_open as usize]
                .iter()
                .position(|&b| b == blk)
            else {
                return; // another backend already replaced it
            };
            let buf = Buf::read_exclusive(rel, blk);
            // SAFETY: pinned and exclusive-locked.
            let h = unsafe {
                page::check(rel, blk, buf.page(), PageKind::Delta);
                header(rel, blk, buf.page())
            };
            if h.state == OPEN && h.count < DELTA_CAPACITY {
                return; // VACUUM made room meanwhile
            }
            if h.state == OPEN {
                close(rel, &buf, h, meta.open_dir[s], meta.open_slot[s] as usize);
                // Recorded with the metapage below, in the next WAL record.
                meta.closed_pages += 1;
                if h.min <= h.max {
                    meta.closed_width += (h.max - h.min) as f64;
                    meta.key_lo = meta.key_lo.min(h.min);
                    meta.key_hi = meta.key_hi.max(h.max);
                }
            }
            s
        }
        None if (meta.n_open as usize) < MAX_OPEN => meta.n_open as usize,
        None => return,
    };
    if !reuse_free_page(rel, &meta, &meta_buf, slot) {
        new_page(rel, &mut meta, &meta_buf, slot);
    }
}

/// Marks a full open page closed, with its key range in the directory.
fn close(
    rel: pg_sys::Relation,
    buf: &Buf,
    mut h: Header,
    dir_blk: pg_sys::BlockNumber,
    slot: usize,
) {
    let dir = Buf::read_exclusive(rel, dir_blk);
    // SAFETY: pinned and exclusive-locked.
    unsafe {
        page::check(rel, dir_blk, dir.page(), PageKind::DeltaDir);
        if slot >= dir_count(rel, dir_blk, dir.page())
            || dir_entry(dir.page(), dir_blk, slot).blk != buf.blkno()
        {
            corrupt(
                rel,
                dir_blk,
                "metapage points to the wrong delta directory entry",
            );
        }
    }
    let mut wal = Wal::start(rel);
    let page = wal.page(buf, false);
    let dpage = wal.page(&dir, false);
    h.state = CLOSED;
    // SAFETY: WAL images of locked pages; the slot was checked above.
    unsafe {
        set_header(page, &h);
        set_dir_entry(dpage, slot, buf.blkno(), CLOSED, h.has_nulls, h.min, h.max);
    }
    wal.finish();
}

fn install(meta: &mut Meta, slot: usize, delta_blk: u32, dir_blk: u32, dir_slot: usize) {
    meta.open[slot] = delta_blk;
    meta.open_dir[slot] = dir_blk;
    meta.open_slot[slot] = dir_slot as u32;
    meta.n_open = meta.n_open.max(slot as u32 + 1);
}

/// Reopens a page VACUUM emptied, if there is one.
fn reuse_free_page(rel: pg_sys::Relation, meta: &Meta, meta_buf: &Buf, slot: usize) -> bool {
    let Some(free) = directory(rel, meta).into_iter().find(|e| e.state == FREE) else {
        return false;
    };
    let buf = Buf::read_exclusive(rel, free.blk);
    let dir = Buf::read_exclusive(rel, free.dir_blk);
    let mut m = *meta;
    install(&mut m, slot, free.blk, free.dir_blk, free.slot);
    let mut wal = Wal::start(rel);
    m.write(&mut wal, meta_buf);
    let page = wal.page(&buf, true);
    let dpage = wal.page(&dir, false);
    // SAFETY: WAL images of pages locked above; the slot came from the directory.
    unsafe {
        init_delta_page(page);
        set_dir_entry(dpage, free.slot, free.blk, OPEN, false, 0, 0);
    }
    wal.finish();
    true
}

/// Extends the index by a delta page, and by a directory page when the last
/// one is full. One WAL record: metapage, delta page, up to two directory pages.
fn new_page(rel: pg_sys::Relation, meta: &mut Meta, meta_buf: &Buf, slot: usize) {
    let delta = Buf::extend(rel, true);
    let tail = (meta.dir_tail != pg_sys::InvalidBlockNumber)
        .then(|| Buf::read_exclusive(rel, meta.dir_tail));
    // SAFETY: the tail directory page is pinned and exclusive-locked.
    let tail_count = tail.as_ref().map(|t| unsafe {
        page::check(rel, t.blkno(), t.page(), PageKind::DeltaDir);
        dir_count(rel, t.blkno(), t.page())
    });
    let new_dir = match tail_count {
        Some(n) if n < DIR_CAPACITY => None,
        _ => Some(Buf::extend(rel, true)),
    };
    let mut wal = Wal::start(rel);
    // SAFETY: every page written below is a WAL image of a buffer locked here,
    // and the directory slot is below DIR_CAPACITY.
    unsafe {
        init_delta_page(wal.page(&delta, true));
        let (dir_blk, dir_slot, p) = match (&new_dir, &tail) {
            (None, Some(t)) => (t.blkno(), tail_count.unwrap(), wal.page(t, false)),
            (Some(d), _) => {
                let p = wal.page(d, true);
                page::init(p, PageKind::DeltaDir, DIR_HEADER);
                match &tail {
                    Some(t) => page::set_next_link(wal.page(t, false), d.blkno()),
                    None => meta.dir_head = d.blkno(),
                }
                meta.dir_tail = d.blkno();
                (d.blkno(), 0, p)
            }
            (None, None) => unreachable!("no tail directory page means a new one"),
        };
        set_dir_entry(p, dir_slot, delta.blkno(), OPEN, false, 0, 0);
        page::content(p)
            .cast::<u32>()
            .write_unaligned(dir_slot as u32 + 1);
        page::set_content_len(p, DIR_HEADER + (dir_slot + 1) * DIR_ENTRY);
        install(meta, slot, delta.blkno(), dir_blk, dir_slot);
        meta.delta_pages += 1;
        meta.write(&mut wal, meta_buf);
    }
    wal.finish();
}

/// VACUUM: removes entries whose TIDs `dead` reports, page by page. An emptied
/// closed page becomes free for reuse. Returns (removed, remaining).
pub fn bulk_delete(
    rel: pg_sys::Relation,
    meta: &Meta,
    mut dead: impl FnMut(Tid) -> bool,
) -> (u64, u64) {
    let (mut removed, mut remaining) = (0u64, 0u64);
    for d in directory(rel, meta) {
        if d.state == FREE {
            continue;
        }
        // SAFETY: called between pages, as VACUUM's own access methods do.
        unsafe { pg_sys::vacuum_delay_point() };
        let buf = Buf::read_exclusive(rel, d.blk);
        // SAFETY: pinned and exclusive-locked; the count is validated.
        let (h, entries) = unsafe {
            page::check(rel, d.blk, buf.page(), PageKind::Delta);
            let h = header(rel, d.blk, buf.page());
            (
                h,
                (0..h.count)
                    .map(|i| entry(buf.page(), i))
                    .collect::<Vec<_>>(),
            )
        };
        let keep: Vec<DeltaEntry> = entries.iter().copied().filter(|e| !dead(e.tid)).collect();
        remaining += keep.len() as u64;
        if keep.len() == entries.len() {
            continue;
        }
        removed += (entries.len() - keep.len()) as u64;
        let free = keep.is_empty() && h.state == CLOSED;
        let dir = free.then(|| Buf::read_exclusive(rel, d.dir_blk));
        let mut wal = Wal::start(rel);
        let page = wal.page(&buf, false);
        // SAFETY: WAL images of pages locked above; keep.len() <= old count.
        unsafe {
            for (i, e) in keep.iter().enumerate() {
                set_entry(page, i, e);
            }
            let mut nh = Header {
                count: keep.len(),
                ..h
            };
            if free {
                nh = Header {
                    min: u64::MAX,
                    max: 0,
                    count: 0,
                    state: FREE,
                    has_nulls: false,
                };
                let dp = wal.page(dir.as_ref().unwrap(), false);
                set_dir_entry(dp, d.slot, d.blk, FREE, false, 0, 0);
            }
            set_header(page, &nh);
        }
        wal.finish();
    }
    (removed, remaining)
}

/// Counts entries and pages in use, for statistics.
pub fn count(rel: pg_sys::Relation, meta: &Meta) -> (u64, u32) {
    let mut entries = 0;
    let mut pages = 0;
    let mut buf = Vec::new();
    for d in directory(rel, meta).iter().filter(|d| d.state != FREE) {
        buf.clear();
        read_page(rel, d.blk, &mut buf, |_| true);
        entries += buf.len() as u64;
        pages += 1;
    }
    (entries, pages)
}
