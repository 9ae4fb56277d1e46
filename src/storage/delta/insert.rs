//! `aminsert`'s part: add an entry to one of a few open delta pages.
//!
//! Keys above the run (appended timestamps and serial ids) all go to the
//! first open page, and concurrent appenders queue on its lock as btree's
//! queue on the rightmost leaf: pages filled side by side from one sequence
//! would each cover the same keys, and a lookup of a recent key would read
//! one page per inserter. Other entries (keys that spilled from the run,
//! NULLs) go anywhere, so contended inserters spread over more open pages
//! (up to `MAX_OPEN`) instead of queueing. Only filling a page takes the
//! metapage lock,
//! and then two WAL records each leave the index consistent on their own:
//! closing the full page (the page, its directory entry and the metapage that
//! stops listing it as open), then opening another (the metapage, the new
//! page, and the directory pages that list it).
//!
//! Keys inside the run that find no room on their run page (spilled keys) go
//! to *bounded* pages instead: each open for one slice of the run's key range
//! (`insert_bounded`), so that a lookup reads only the pages of its slice,
//! not every page the spilled keys of the whole range went to. The metapage
//! does not list them (there is one per slice); the directory does, with
//! their bounds.

use super::directory::{self, DirPage, DIR_CAPACITY};
use super::{
    append_entry, init_page, mark_free, set_entry, set_header, sort_entries, DeltaEntry,
    DeltaHeader, DeltaPage, CLOSED, FREE, OPEN, SPLIT,
};
use crate::storage::amcache::{self, BoundedPage, OpenPage};
use crate::storage::buffer::Strategy;
use crate::storage::meta::{MAX_OPEN, META_BLOCK, SPLIT_VERSION};
use crate::storage::run::Tid;
use crate::storage::wal::Wal;
use crate::storage::{Buf, Meta};
use pgrx::pg_sys;

/// Which open page an insert takes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Placement {
    /// A key above the run: the first open page, waiting for its lock.
    Append,
    /// Any open page that is not busy.
    Spread,
}

enum Added {
    Yes,
    /// The page is full or no longer open: a new one is needed.
    NeedsPage(pg_sys::BlockNumber),
}

/// The page this backend last inserted into with `placement` (kept in
/// `rd_amcache`, as btree keeps its rightmost leaf).
fn last_page(rel: pg_sys::Relation, placement: Placement) -> OpenPage {
    // SAFETY: the reference does not outlive this statement.
    let c = unsafe { amcache::get(rel) };
    match placement {
        Placement::Append => c.append,
        Placement::Spread => c.open,
    }
}

fn remember(rel: pg_sys::Relation, placement: Placement, p: OpenPage) {
    // SAFETY: the reference does not outlive this statement.
    let c = unsafe { amcache::get(rel) };
    match placement {
        Placement::Append => c.append = p,
        Placement::Spread => c.open = p,
    }
}

/// Adds one entry to an open delta page, WAL-logged.
///
/// A backend inserts into the page it used last for the same placement
/// while that page, checked under its lock, is still open and has room: a
/// page is open exactly while the metapage lists it, and a page closed by a
/// retrain's freeze says so. Only when it is not (or, spreading, another
/// backend holds it) does the insert read the metapage. An appender's cached
/// page is the first open one whenever it is open at all: pages are only
/// ever listed after those already open, so appenders never part ways.
/// Returns the page the entry went to.
pub fn insert(
    rel: pg_sys::Relation,
    key: Option<u64>,
    tid: Tid,
    placement: Placement,
) -> pg_sys::BlockNumber {
    let e = DeltaEntry {
        key: key.unwrap_or(0),
        tid,
        null: key.is_none(),
    };
    let last = last_page(rel, placement);
    if last.blk != pg_sys::InvalidBlockNumber {
        let buf = match placement {
            Placement::Append => Some(Buf::read_exclusive(rel, last.blk)),
            Placement::Spread => {
                let mut buf = Buf::read(rel, last.blk);
                buf.try_lock_exclusive().then_some(buf)
            }
        };
        if let Some(buf) = buf {
            if let Added::Yes = add(rel, buf, last, &e) {
                return last.blk;
            }
        }
    }
    loop {
        let meta = Meta::read(rel);
        let n = meta.n_open as usize;
        if n == 0 {
            open_page(rel, None);
            continue;
        }
        let listed = |i: usize| OpenPage {
            blk: meta.open[i],
            dir_blk: meta.open_dir[i],
            slot: meta.open_slot[i],
        };
        if placement == Placement::Append {
            let p = listed(0);
            match add(rel, Buf::read_exclusive(rel, p.blk), p, &e) {
                Added::Yes => {
                    remember(rel, placement, p);
                    return p.blk;
                }
                Added::NeedsPage(blk) => open_page(rel, Some(blk)),
            }
            continue;
        }
        // SAFETY: reads a process-global set at backend start.
        let first = unsafe { pg_sys::MyProcPid } as usize % n;
        let mut outcome = None;
        for k in 0..n {
            let p = listed((first + k) % n);
            let mut buf = Buf::read(rel, p.blk);
            if buf.try_lock_exclusive() {
                outcome = Some((p, add(rel, buf, p, &e)));
                break;
            }
        }
        let (p, outcome) = match outcome {
            Some(o) => o,
            None if n < MAX_OPEN => {
                // Every open page is busy: open one more rather than queue.
                open_page(rel, None);
                continue;
            }
            None => {
                let p = listed(first);
                (p, add(rel, Buf::read_exclusive(rel, p.blk), p, &e))
            }
        };
        match outcome {
            Added::Yes => {
                remember(rel, placement, p);
                return p.blk;
            }
            Added::NeedsPage(blk) => open_page(rel, Some(blk)),
        }
    }
}

/// The fast path of an insert above the run: adds `e` to the open page this
/// backend used last, if it is still open, has room, is not busy and is
/// tagged `generation`. An open page so tagged means no retrain has frozen
/// the delta or switched generations since `generation` became current
/// (both close every open page, and pages opened while a retrain runs carry
/// the next number), so what the caller read of that generation still holds.
pub fn insert_into_open(rel: pg_sys::Relation, key: u64, tid: Tid, generation: u32) -> bool {
    let last = last_page(rel, Placement::Append);
    if last.blk == pg_sys::InvalidBlockNumber {
        return false;
    }
    let buf = Buf::read_exclusive(rel, last.blk);
    // SAFETY: the page is pinned and locked; `DeltaPage::open` below
    // validates it before anything else is read.
    let tag = unsafe { crate::storage::page::opaque(buf.page()).generation };
    if tag != generation {
        return false;
    }
    let e = DeltaEntry {
        key,
        tid,
        null: false,
    };
    matches!(add(rel, buf, last, &e), Added::Yes)
}

/// Adds a spilled entry (a key inside the run whose run page has no room,
/// or any key inside it while a retrain runs) to an open page bounded to
/// keys that hold it: one this backend knows of (checked on the page), else
/// one the directory lists, else a new one bounded to `bounds` (the slice of
/// the run the key falls in) or to those of the known page that filled up.
/// Returns the page; `None` when it has no bounds to open a page with (the
/// caller then spreads the entry over the unbounded pages).
pub fn insert_bounded(
    rel: pg_sys::Relation,
    key: u64,
    tid: Tid,
    mut bounds: Option<(u64, u64)>,
    generations: (u32, u32),
) -> Option<pg_sys::BlockNumber> {
    let e = DeltaEntry {
        key,
        tid,
        null: false,
    };
    // The pages known when the insert was routed, with `generations` as the
    // metapage's `(insert_generation, generation)`; after `open_bounded`,
    // the ones it read.
    let mut generations = Some(generations);
    loop {
        // SAFETY: the reference does not outlive this statement.
        let known = unsafe { amcache::get(rel).bounded_for(key, generations) };
        let mut full = None;
        if let Some(b) = known {
            let page = DeltaPage::open(rel, Buf::read_exclusive(rel, b.page.blk));
            let h = page.header();
            // The same page, still open and holding the key: a page reused
            // since it was listed carries a newer tag (see `bounded_for`).
            if h.state == OPEN
                && h.bounded != 0
                && page.tag() == b.generation
                && h.min <= key
                && key <= h.max
            {
                if !page.is_full() {
                    append_entry(rel, &page, &e);
                    return Some(b.page.blk);
                }
                full = Some(b.page);
            }
            bounds = bounds.or(Some((b.lo, b.hi)));
        }
        open_bounded(rel, key, bounds?, full);
        generations = None;
    }
}

/// Under the metapage's exclusive lock: splits `full` if it still is open
/// and full ([`split`]), or closes it and opens a page for each half of its
/// bounds when it cannot be split; reads the directory's open bounded pages
/// into this backend's cache and, if none holds `key`, opens one for
/// `bounds` (which hold it).
///
/// Halving the bounds of a page that filled keeps the pages of a slice apart
/// in key order, so that a lookup reads one of them (a split) or one per
/// halving (a page closed while VACUUM runs).
fn open_bounded(rel: pg_sys::Relation, key: u64, bounds: (u64, u64), full: Option<OpenPage>) {
    debug_assert!(bounds.0 <= key && key <= bounds.1);
    let meta_buf = Buf::read_exclusive(rel, META_BLOCK);
    // SAFETY: block 0, pinned and exclusive-locked.
    let mut meta = unsafe { Meta::from_page(rel, meta_buf.page()) };
    let mut halves = vec![];
    if let Some(p) = full {
        let page = DeltaPage::open(rel, Buf::read_exclusive(rel, p.blk));
        let h = page.header();
        if h.state == OPEN && page.is_full() {
            if h.bounded != 0 {
                halves = halve(&page, (h.min, h.max));
            }
            // An index of an older format keeps it (and so stays readable by
            // the build that wrote it) until a retrain's switch.
            let copies =
                (halves.len() == 2 && meta.vacuuming == 0 && meta.version >= SPLIT_VERSION)
                    .then(|| page.entries().collect::<Vec<DeltaEntry>>());
            close(
                rel,
                &mut meta,
                &meta_buf,
                page,
                (p.dir_blk, p.slot as usize),
                copies.is_some(),
            );
            if let Some(entries) = copies {
                split(
                    rel,
                    &mut meta,
                    &meta_buf,
                    p,
                    &entries,
                    [halves[0], halves[1]],
                );
                halves.clear();
            }
        }
    }
    let mut dir = directory::directory(rel, &meta, Strategy::DEFAULT);
    let mut pages: Vec<BoundedPage> = dir
        .iter()
        .filter(|d| d.state == OPEN && d.bounded && d.min <= d.max)
        .map(|d| BoundedPage {
            page: OpenPage {
                blk: d.blk,
                dir_blk: d.dir_blk,
                slot: d.slot as u32,
            },
            lo: d.min,
            hi: d.max,
            generation: d.generation,
        })
        .collect();
    let found = pages.iter().any(|b| b.lo <= key && key <= b.hi);
    let wanted = if found {
        halves
    } else if halves.is_empty() {
        vec![clip(bounds, key, &pages)]
    } else {
        halves
    };
    for b in wanted {
        let page = reuse_free_page(rel, &mut meta, &meta_buf, &mut dir, Some(b))
            .unwrap_or_else(|| new_page(rel, &mut meta, &meta_buf, Some(b)));
        pages.push(BoundedPage {
            page,
            lo: b.0,
            hi: b.1,
            generation: meta.insert_generation,
        });
    }
    // SAFETY: the reference does not outlive this statement.
    unsafe { amcache::set_bounded(rel, pages, (meta.insert_generation, meta.generation)) };
}

/// `bounds` narrowed to the keys around `key` that none of the open
/// bounded `pages` (none of which holds `key`) may take, so that a lookup
/// reads one of them: pages a partial merge left open keep the bounds of
/// the slices before it, which no longer match the run's.
fn clip((mut lo, mut hi): (u64, u64), key: u64, pages: &[BoundedPage]) -> (u64, u64) {
    for b in pages {
        if b.hi < key {
            lo = lo.max(b.hi + 1);
        } else if b.lo > key {
            hi = hi.min(b.lo - 1);
        }
    }
    (lo, hi)
}

/// Splits the bounded page `p`, just closed (so nothing is added to it any
/// more), whose entries were `entries`: two pages, bounded to `halves`, take
/// a copy of the entries of their half, and `p`'s directory entry becomes
/// `SPLIT`. A scan that read the directory before reads `p`, which keeps its
/// entries; one that read it after reads the two halves. Either way each
/// entry once, and a lookup of a spilled key reads one delta page of its
/// slice however many rows spilled there (pages closed whole and replaced
/// by empty halves made that one per halving).
///
/// Two records. The first writes the halves' pages, while their directory
/// entries still take no key: nothing reads them yet (a crash here leaves
/// them so, and the next retrain frees them). The second sets the halves'
/// ranges and `p`'s SPLIT on their directory pages, with the metapage: a
/// scan reads the directory under the metapage's share lock
/// ([`super::directory::directory_consistent`]), so it sees all of the
/// second record or none of it, here and on a standby replaying it.
///
/// Runs under the metapage's exclusive lock, while no VACUUM removes entries
/// (`Meta::vacuuming`): VACUUM does not visit pages opened after it read the
/// directory, which these copies would be. The copies carry the generation
/// new delta pages do: a retrain that froze the delta before `p` filled
/// did not freeze them, and carries them over.
fn split(
    rel: pg_sys::Relation,
    meta: &mut Meta,
    meta_buf: &Buf,
    p: OpenPage,
    entries: &[DeltaEntry],
    halves: [(u64, u64); 2],
) {
    let pair = alloc_pair(rel, meta, meta_buf);
    {
        let news = pair.map(|q| DeltaPage::open(rel, Buf::read_exclusive(rel, q.blk)));
        for q in &news {
            let h = q.header();
            if h.state != OPEN || h.bounded == 0 || !q.is_empty() {
                crate::storage::page::corrupt(
                    rel,
                    q.buf().blkno(),
                    "delta page taken for a split is not an empty bounded page",
                );
            }
        }
        let mut wal = Wal::start(rel);
        for (q, half) in news.iter().zip(halves) {
            let image = wal.page(q.buf(), true);
            let mut mine: Vec<DeltaEntry> = entries
                .iter()
                .filter(|e| !e.null && half.0 <= e.key && e.key <= half.1)
                .copied()
                .collect();
            mine.sort_unstable_by_key(|e| (e.key, e.tid));
            // SAFETY: the WAL image of a delta page locked above; a half
            // holds at most the entries of the full page.
            unsafe {
                init_page(image, meta.insert_generation, Some(half));
                for (i, e) in mine.iter().enumerate() {
                    set_entry(image, i, e);
                }
                set_header(
                    image,
                    &DeltaHeader {
                        min: half.0,
                        max: half.1,
                        count: mine.len() as u16,
                        bounded: 1,
                        ..DeltaHeader::empty()
                    },
                );
            }
        }
        wal.finish();
    }
    crate::pause::pause_point("split");
    // Lock order: the metapage (held), then directory pages by block number.
    let (qdir, pdir) = (pair[0].dir_blk, p.dir_blk);
    let mut dirs = vec![qdir];
    if pdir != qdir {
        dirs.push(pdir);
    }
    dirs.sort_unstable();
    let dirs: Vec<DirPage> = dirs
        .into_iter()
        .map(|b| DirPage::read_exclusive(rel, b))
        .collect();
    let dir_of = |b: pg_sys::BlockNumber| dirs.iter().position(|d| d.buf().blkno() == b).unwrap();
    let old = dirs[dir_of(pdir)].entry(rel, p.slot as usize);
    if old.blk != p.blk || old.state != CLOSED {
        crate::storage::page::corrupt(
            rel,
            pdir,
            "delta directory entry of a page being split changed",
        );
    }
    let mut wal = Wal::start(rel);
    // Counted now, as a page of spilled rows for the planner and the
    // worker (see `close`).
    meta.closed_pages += 1;
    meta.write(&mut wal, meta_buf);
    let dimages: Vec<pg_sys::Page> = dirs.iter().map(|d| wal.page(d.buf(), false)).collect();
    // SAFETY: WAL images of the directory pages locked above; the slots came
    // from the directory, and `p`'s was checked.
    unsafe {
        for (q, half) in pair.iter().zip(halves) {
            directory::set_entry(
                dimages[dir_of(q.dir_blk)],
                q.slot as usize,
                (q.blk, meta.insert_generation),
                OPEN,
                (false, true),
                half,
            );
        }
        directory::set_entry(
            dimages[dir_of(pdir)],
            p.slot as usize,
            (p.blk, old.generation),
            SPLIT,
            (false, false),
            directory::OPEN_RANGE,
        );
    }
    wal.finish();
}

/// Two empty bounded pages that take no key yet ([`directory::OPEN_RANGE`]
/// as bounds), listed on one directory page: with the split page's
/// directory page and the metapage, a split's last record then registers
/// three pages at most.
/// Free pages two of which one directory page lists, else new ones; a new
/// page left alone on a full directory page stays empty until the next
/// freeze frees it.
///
/// A free page is taken only if no scan's directory can list it: a scan
/// that read the directory while the page held entries of its generation
/// would read it again, and the copies it now holds twice. Scans list pages
/// of their generation and later, so pages of a generation before every
/// one still readable qualify (the merged pages a retire freed); pages
/// VACUUM emptied since do only once their generation is retired. Other
/// pages reuse them meanwhile: they take only rows inserted since, which no
/// such scan sees.
fn alloc_pair(rel: pg_sys::Relation, meta: &mut Meta, meta_buf: &Buf) -> [OpenPage; 2] {
    let none = Some(directory::OPEN_RANGE);
    let oldest = match meta.prev_generation {
        0 => meta.generation,
        prev => prev,
    };
    let dir = directory::directory(rel, meta, Strategy::DEFAULT);
    for listed in dir.chunk_by(|a, b| a.dir_blk == b.dir_blk) {
        let mut unread: Vec<directory::DirEntry> = listed
            .iter()
            .filter(|d| d.state == FREE && d.generation < oldest)
            .copied()
            .collect();
        if unread.len() >= 2 {
            let a = reuse_free_page(rel, meta, meta_buf, &mut unread, none);
            let b = reuse_free_page(rel, meta, meta_buf, &mut unread, none);
            if let (Some(a), Some(b)) = (a, b) {
                return [a, b];
            }
        }
    }
    let mut a = new_page(rel, meta, meta_buf, none);
    loop {
        let b = new_page(rel, meta, meta_buf, none);
        if b.dir_blk == a.dir_blk {
            return [a, b];
        }
        a = b;
    }
}

/// The two halves of the bounds `(lo, hi)` of a full bounded page, split at
/// its median key (the upper half from it): none if every key but the
/// smallest is one value, which no split would part.
fn halve(page: &DeltaPage, (lo, hi): (u64, u64)) -> Vec<(u64, u64)> {
    let mut keys: Vec<u64> = page.entries().map(|e| e.key).collect();
    let mid = keys.len() / 2;
    let (_, &mut median, _) = keys.select_nth_unstable(mid);
    if lo < median && median <= hi {
        vec![(lo, median - 1), (median, hi)]
    } else {
        vec![]
    }
}

/// Adds `e` to open page `p`, whose buffer is exclusive-locked, after lowering
/// the page's key bound in its directory entry if `e` is below it (a record of
/// its own, first: a bound lower than needed is harmless).
fn add(rel: pg_sys::Relation, buf: Buf, p: OpenPage, e: &DeltaEntry) -> Added {
    let page = DeltaPage::open(rel, buf);
    let h = page.header();
    // A cached page may have been freed and reopened for spilled keys since.
    if h.state != OPEN || h.bounded != 0 || page.is_full() {
        return Added::NeedsPage(p.blk);
    }
    // The page's own min is never below its directory bound, so only a key
    // below the page's min can be below the bound.
    if !e.null && e.key < h.min {
        let dir = DirPage::read_exclusive(rel, p.dir_blk);
        let entry = dir.entry(rel, p.slot as usize);
        if entry.blk != p.blk || entry.state != OPEN {
            crate::storage::page::corrupt(
                rel,
                p.dir_blk,
                "open delta page's directory entry does not list it as open",
            );
        }
        if e.key < entry.min {
            let mut wal = Wal::start(rel);
            let image = wal.page(dir.buf(), false);
            // SAFETY: the WAL image of the directory page locked above; the
            // slot was read from it.
            unsafe {
                directory::set_entry(
                    image,
                    p.slot as usize,
                    (entry.blk, entry.generation),
                    OPEN,
                    (entry.has_nulls, false),
                    (e.key, entry.max),
                )
            };
            wal.finish();
        }
    }
    append_entry(rel, &page, e);
    Added::Yes
}

/// Replaces the open page `stale` (full) with a fresh one, or, with `None`,
/// opens one more page. Runs under the metapage's exclusive lock.
fn open_page(rel: pg_sys::Relation, stale: Option<pg_sys::BlockNumber>) {
    let meta_buf = Buf::read_exclusive(rel, META_BLOCK);
    // SAFETY: block 0, pinned and exclusive-locked.
    let mut meta = unsafe { Meta::from_page(rel, meta_buf.page()) };
    let n = meta.n_open as usize;
    match stale {
        Some(blk) => {
            let Some(s) = meta.open[..n].iter().position(|&b| b == blk) else {
                return; // another backend already replaced it
            };
            let page = DeltaPage::open(rel, Buf::read_exclusive(rel, blk));
            let h = page.header();
            // (A listed page is never bounded; if one were, it would take no
            // insert, and is closed with the full ones.)
            if h.state == OPEN && h.bounded == 0 && !page.is_full() {
                return; // VACUUM made room meanwhile
            }
            let (dir_blk, slot) = (meta.open_dir[s], meta.open_slot[s] as usize);
            close(rel, &mut meta, &meta_buf, page, (dir_blk, slot), false);
        }
        None if n < MAX_OPEN => {}
        None => return,
    }
    let mut dir = directory::directory(rel, &meta, Strategy::DEFAULT);
    if reuse_free_page(rel, &mut meta, &meta_buf, &mut dir, None).is_none() {
        new_page(rel, &mut meta, &meta_buf, None);
    }
}

/// One WAL record: the full page is marked closed with its key range in the
/// directory, and the metapage stops listing it as open and counts it. A
/// bounded page's header held its bounds: its range becomes its keys', and
/// one left empty becomes free instead. A page closed to be split is left
/// unsorted (which tells a retrain's `absorb` not to move its entries: the
/// split that follows copies them), and not counted here: the split counts
/// it as a page of spilled rows, not by its key range (a lookup reads one of
/// the halves).
fn close(
    rel: pg_sys::Relation,
    meta: &mut Meta,
    meta_buf: &Buf,
    page: DeltaPage,
    (dir_blk, slot): (pg_sys::BlockNumber, usize),
    for_split: bool,
) {
    let blk = page.buf().blkno();
    let mut h = page.header();
    let mut wal = Wal::start(rel);
    meta.remove_open(blk);
    let dir = (h.state == OPEN).then(|| DirPage::read_exclusive(rel, dir_blk));
    if let Some(dir) = &dir {
        let entry = dir.entry(rel, slot);
        if entry.blk != blk {
            crate::storage::page::corrupt(
                rel,
                dir_blk,
                "metapage points to the wrong delta directory entry",
            );
        }
        if h.bounded != 0 {
            (h.min, h.max) = page
                .entries()
                .filter(|e| !e.null)
                .fold((u64::MAX, 0), |(lo, hi), e| (lo.min(e.key), hi.max(e.key)));
        }
        // A bounded page whose entry takes no key is a split's half that a
        // crash left before its last record: its entries are copies of a
        // page still live.
        let unfinished = entry.bounded && entry.min > entry.max;
        h.state = if h.bounded != 0 && (page.is_empty() || unfinished) {
            FREE
        } else {
            CLOSED
        };
        if h.state == CLOSED && !for_split {
            meta.closed_pages += 1;
            if h.min <= h.max {
                meta.closed_width += (h.max - h.min) as f64;
                meta.key_lo = meta.key_lo.min(h.min);
                meta.key_hi = meta.key_hi.max(h.max);
            }
        }
        let image = wal.page(page.buf(), false);
        let dimage = wal.page(dir.buf(), false);
        // SAFETY: WAL images of pages locked here; the slot was checked above.
        unsafe {
            if h.state == FREE {
                mark_free(image, dimage, slot, (blk, entry.generation));
            } else {
                set_header(image, &h);
                // Lookups binary-search a closed page; the order costs this
                // record the page's entries, once per page.
                if !for_split {
                    sort_entries(image);
                }
                directory::set_entry(
                    dimage,
                    slot,
                    (blk, entry.generation),
                    CLOSED,
                    (h.has_nulls != 0, false),
                    (h.min, h.max),
                );
            }
        }
    }
    meta.write(&mut wal, meta_buf);
    wal.finish();
}

fn install(meta: &mut Meta, p: OpenPage) {
    let s = meta.n_open as usize;
    debug_assert!(s < MAX_OPEN);
    meta.open[s] = p.blk;
    meta.open_dir[s] = p.dir_blk;
    meta.open_slot[s] = p.slot;
    meta.n_open += 1;
}

/// Reopens a page VACUUM emptied, if `dir` lists one: open for any entry,
/// or bounded to `bounds`. One WAL record: metapage, delta page, directory
/// page.
fn reuse_free_page(
    rel: pg_sys::Relation,
    meta: &mut Meta,
    meta_buf: &Buf,
    dir: &mut [directory::DirEntry],
    bounds: Option<(u64, u64)>,
) -> Option<OpenPage> {
    let free = dir.iter_mut().find(|e| e.state == FREE)?;
    // Taken, whether or not it can be reused: the caller may open another.
    free.state = OPEN;
    let page = DeltaPage::open(rel, Buf::read_exclusive(rel, free.blk));
    let dpage = DirPage::read_exclusive(rel, free.dir_blk);
    // Only VACUUM and closing an empty bounded page free pages, and only
    // this path (under the metapage lock) reuses them, so the entry is still
    // free; check rather than assume.
    if dpage.entry(rel, free.slot).state != FREE || page.header().state != FREE {
        return None;
    }
    let p = OpenPage {
        blk: free.blk,
        dir_blk: free.dir_blk,
        slot: free.slot as u32,
    };
    if bounds.is_none() {
        install(meta, p);
    }
    let mut wal = Wal::start(rel);
    meta.write(&mut wal, meta_buf);
    let image = wal.page(page.buf(), true);
    let dimage = wal.page(dpage.buf(), false);
    // SAFETY: WAL images of pages locked above; the slot came from the directory.
    unsafe {
        init_page(image, meta.insert_generation, bounds);
        directory::set_entry(
            dimage,
            free.slot,
            (free.blk, meta.insert_generation),
            OPEN,
            (false, bounds.is_some()),
            bounds.unwrap_or(directory::OPEN_RANGE),
        );
    }
    wal.finish();
    Some(p)
}

/// Extends the index by a delta page, open for any entry or bounded to
/// `bounds`, and by a directory page when the last one is full. One WAL
/// record: metapage, delta page, up to two directory pages.
fn new_page(
    rel: pg_sys::Relation,
    meta: &mut Meta,
    meta_buf: &Buf,
    bounds: Option<(u64, u64)>,
) -> OpenPage {
    let delta = Buf::extend(rel, true);
    let tail = (meta.dir_tail != pg_sys::InvalidBlockNumber)
        .then(|| DirPage::read_exclusive(rel, meta.dir_tail));
    let new_dir = match &tail {
        Some(t) if t.len() < DIR_CAPACITY => None,
        _ => Some(Buf::extend(rel, true)),
    };
    let mut wal = Wal::start(rel);
    // SAFETY: every page written below is a WAL image of a buffer locked here,
    // and the directory slot is below DIR_CAPACITY.
    let p = unsafe {
        init_page(wal.page(&delta, true), meta.insert_generation, bounds);
        let (dir_blk, dir_slot, image) = match (&new_dir, &tail) {
            (None, Some(t)) => (t.buf().blkno(), t.len(), wal.page(t.buf(), false)),
            (Some(d), _) => {
                let image = wal.page(d, true);
                directory::init_page(image, meta.generation);
                match &tail {
                    Some(t) => directory::set_next(wal.page(t.buf(), false), d.blkno()),
                    None => meta.dir_head = d.blkno(),
                }
                meta.dir_tail = d.blkno();
                (d.blkno(), 0, image)
            }
            (None, None) => unreachable!("no tail directory page means a new one"),
        };
        directory::append(
            image,
            dir_slot,
            delta.blkno(),
            meta.insert_generation,
            bounds,
        );
        OpenPage {
            blk: delta.blkno(),
            dir_blk,
            slot: dir_slot as u32,
        }
    };
    if bounds.is_none() {
        install(meta, p);
    }
    meta.delta_pages += 1;
    meta.write(&mut wal, meta_buf);
    wal.finish();
    p
}

/// Freezes the delta for a retrain (DESIGN.md section 3b): from now on new
/// delta pages carry generation `next`, and the open pages the metapage
/// lists (appended keys and NULLs, which every path merges) are closed, so
/// they take no more entries. Each step is a WAL record that leaves the
/// index consistent: a crash in between leaves closed pages, which the next
/// retrain merges. Returns the metapage as it is afterwards.
///
/// The bounded pages stay open: the retrain closes those whose rows it
/// merges ([`close_bounded`]) once it knows which, and the others carry
/// over to the next generation still open ([`super::retag`]), so the rows
/// that go on spilling into their slices join them rather than start new
/// pages (a lookup reads one page per generation a slice's pages carry).
pub fn freeze(rel: pg_sys::Relation, next: u32) -> Meta {
    let meta_buf = Buf::read_exclusive(rel, META_BLOCK);
    // SAFETY: block 0, pinned and exclusive-locked.
    let mut meta = unsafe { Meta::from_page(rel, meta_buf.page()) };
    meta.insert_generation = next;
    // A failed retrain's stretch: this one says its own, if any.
    (meta.rewrite_first, meta.rewrite_end) = (0, 0);
    let mut wal = Wal::start(rel);
    meta.write(&mut wal, &meta_buf);
    wal.finish();
    close_listed(rel, &mut meta, &meta_buf);
    meta
}

/// Closes the open bounded pages among `pages` (entries of a generation
/// before the metapage's `insert_generation`, read from the directory), each
/// under a hold of the metapage lock of its own, so that scans and inserts,
/// which read the metapage, go on between them rather than wait for all.
/// Returns `pages` as the directory lists them now, without those that are
/// no longer live: a page that filled meanwhile was split, and its entries
/// are on pages of the next generation.
///
/// Under the metapage lock no split is under way, so a page found closed is
/// not one whose copies are being made.
pub fn close_bounded(
    rel: pg_sys::Relation,
    pages: &[directory::DirEntry],
) -> Vec<directory::DirEntry> {
    let mut closed = 0;
    for d in pages.iter().filter(|d| d.state == OPEN && d.bounded) {
        if closed > 0 {
            crate::pause::pause_point("freeze_bounded");
        }
        closed += 1;
        let meta_buf = Buf::read_exclusive(rel, META_BLOCK);
        // SAFETY: block 0, pinned and exclusive-locked.
        let mut meta = unsafe { Meta::from_page(rel, meta_buf.page()) };
        let page = DeltaPage::open(rel, Buf::read_exclusive(rel, d.blk));
        if page.header().state == OPEN && page.header().bounded != 0 && page.tag() == d.generation {
            close(rel, &mut meta, &meta_buf, page, (d.dir_blk, d.slot), false);
        }
    }
    if closed == 0 {
        return pages.to_vec();
    }
    let now: std::collections::HashMap<(pg_sys::BlockNumber, usize), directory::DirEntry> =
        directory::directory_consistent(rel, Strategy::DEFAULT)
            .into_iter()
            .map(|e| ((e.dir_blk, e.slot), e))
            .collect();
    pages
        .iter()
        .filter_map(|d| now.get(&(d.dir_blk, d.slot)).map(|e| (d, e)))
        .filter(|(d, e)| e.blk == d.blk && e.generation == d.generation && e.is_live())
        .map(|(_, e)| *e)
        .collect()
}

/// Closes the open delta pages the metapage lists. The caller holds the
/// metapage exclusive-locked in `meta_buf`, and `meta` is its content.
fn close_listed(rel: pg_sys::Relation, meta: &mut Meta, meta_buf: &Buf) {
    while meta.n_open > 0 {
        let (blk, dir_blk, slot) = (meta.open[0], meta.open_dir[0], meta.open_slot[0]);
        let page = DeltaPage::open(rel, Buf::read_exclusive(rel, blk));
        close(rel, meta, meta_buf, page, (dir_blk, slot as usize), false);
    }
}

/// Closes the open delta pages, one WAL record each: those the metapage
/// lists, then the bounded ones the directory lists but those `keep` takes.
/// The caller holds the metapage exclusive-locked in `meta_buf` (so no page
/// opens meanwhile), and `meta` is its content.
pub fn close_open(
    rel: pg_sys::Relation,
    meta: &mut Meta,
    meta_buf: &Buf,
    keep: impl Fn(&directory::DirEntry) -> bool,
) {
    close_listed(rel, meta, meta_buf);
    for d in directory::directory(rel, meta, Strategy::DEFAULT) {
        if d.state == OPEN && d.bounded && !keep(&d) {
            let page = DeltaPage::open(rel, Buf::read_exclusive(rel, d.blk));
            close(rel, meta, meta_buf, page, (d.dir_blk, d.slot), false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pages(bounds: &[(u64, u64)]) -> Vec<BoundedPage> {
        bounds
            .iter()
            .enumerate()
            .map(|(i, &(lo, hi))| BoundedPage {
                page: OpenPage {
                    blk: i as u32 + 1,
                    dir_blk: 0,
                    slot: i as u32,
                },
                lo,
                hi,
                generation: 1,
            })
            .collect()
    }

    #[test]
    fn clipped_bounds_stop_short_of_the_open_pages_around_the_key() {
        let open = pages(&[(10, 20), (40, 50)]);
        assert_eq!(clip((0, 100), 30, &open), (21, 39));
        assert_eq!(clip((0, 100), 5, &open), (0, 9));
        assert_eq!(clip((0, 100), 60, &open), (51, 100));
        assert_eq!(clip((25, 35), 30, &open), (25, 35));
        assert_eq!(clip((0, 100), 21, &open), (21, 39));
    }

    proptest! {
        /// The bounds keep the key and lie within the bounds asked for,
        /// and no open page takes a key inside them.
        #[test]
        fn clipped_bounds_hold_the_key_and_no_open_page(
            mut cuts in proptest::collection::vec(0u64..1000, 0..12),
            key in 0u64..1000,
            (lo, hi) in (0u64..500, 500u64..1000),
        ) {
            cuts.sort_unstable();
            cuts.dedup();
            // Disjoint open pages, none holding `key`.
            let bounds: Vec<(u64, u64)> = cuts
                .chunks_exact(2)
                .map(|c| (c[0], c[1]))
                .filter(|&(a, b)| key < a || b < key)
                .collect();
            let key = key.clamp(lo, hi);
            let open = pages(&bounds);
            prop_assume!(open.iter().all(|b| key < b.lo || b.hi < key));
            let (a, b) = clip((lo, hi), key, &open);
            prop_assert!(lo <= a && a <= key && key <= b && b <= hi);
            for p in &open {
                prop_assert!(p.hi < a || b < p.lo, "{:?} overlaps {:?}", (p.lo, p.hi), (a, b));
            }
        }
    }
}
