//! `aminsert`: an entry whose place is inside the run goes to the insert area
//! of the run page that owns it (the page of its (key, TID) lower bound), so
//! a lookup finds it on the page it reads anyway. Entries above the run's
//! last go to the delta (appended timestamps and serial ids: the pages a
//! retrain appends to the run), as do NULLs, entries whose page is full, and
//! entries that arrive while a retrain runs (but for those of pages a partial
//! merge carries over as they are, once it has said which); an entry of the run's range
//! that goes to the delta first marks the generation `spilled`, so that
//! scans read the delta for every key until the next retrain. Such entries go
//! to delta pages bounded to the slice of [`SLICE_PAGES`] run pages their
//! page lies in, so a lookup reads the delta pages of its slice only.

use super::datum::{index_kind, ordinal};
use crate::storage::amcache::{self, Route};
use crate::storage::delta::Placement;
use crate::storage::meta::{META_BLOCK, PACKED_INSERTS_VERSION};
use crate::storage::page::recycled_error;
use crate::storage::run::{tid_from_ptr, Section, Tid};
use crate::storage::wal::Wal;
use crate::storage::{delta, model_pages, Buf, Meta};
use pgrx::pg_sys;
use pgrx::prelude::*;

#[pg_guard]
#[allow(clippy::too_many_arguments)] // the signature is PostgreSQL's
pub unsafe extern "C-unwind" fn aminsert(
    index: pg_sys::Relation,
    values: *mut pg_sys::Datum,
    isnull: *mut bool,
    heap_tid: pg_sys::ItemPointer,
    _heap: pg_sys::Relation,
    _check_unique: pg_sys::IndexUniqueCheck::Type,
    _index_unchanged: bool,
    _index_info: *mut pg_sys::IndexInfo,
) -> bool {
    // SAFETY: the executor passes one value and null flag for our one column,
    // and a valid heap TID.
    let tid = tid_from_ptr(&*heap_tid);
    if *isnull {
        delta::insert(index, None, tid, Placement::Spread);
    } else {
        insert_key(index, (ordinal(index_kind(index), *values), tid));
    }
    false
}

fn insert_key(rel: pg_sys::Relation, pair: (u64, Tid)) {
    // Above the run as this backend last read it: straight into its open
    // delta page, as btree's fast path goes straight to its rightmost leaf.
    // SAFETY: the reference does not outlive this statement.
    let route = unsafe { amcache::get(rel).route };
    if route.valid
        && route.run_last.is_none_or(|last| pair > last)
        && delta::insert_into_open(rel, pair.0, pair.1, route.generation)
    {
        return;
    }
    let meta_buf = Buf::read_shared(rel, META_BLOCK);
    // SAFETY: block 0, pinned and share-locked.
    let meta = unsafe { Meta::from_page(rel, meta_buf.page()) };
    let retraining = meta.insert_generation != meta.generation;
    // SAFETY: the reference does not outlive this statement.
    unsafe {
        amcache::get(rel).route = Route {
            valid: !retraining,
            generation: meta.generation,
            run_last: meta.run_last(),
        }
    };
    let inside = meta.run_last().is_some_and(|last| pair <= last);
    let mut bounds = None;
    if inside {
        // SAFETY: the reference does not outlive this statement.
        let known = unsafe {
            amcache::get(rel)
                .bounded_for(pair.0, Some((meta.insert_generation, meta.generation)))
                .is_some()
        };
        // The metapage's share lock keeps a retrain from freezing the run
        // pages (it takes the lock exclusive) until the entry is in.
        match add_to_run(rel, &meta, pair, !known) {
            Ok(()) => return,
            Err(b) => bounds = b,
        }
    }
    let spill = inside && meta.spilled == 0;
    drop(meta_buf);
    crate::pause::pause_point("insert_routed");
    if spill {
        mark_spilled(rel, meta.generation);
    }
    let bounded = inside
        .then(|| {
            delta::insert_bounded(
                rel,
                pair.0,
                pair.1,
                bounds,
                (meta.insert_generation, meta.generation),
            )
        })
        .flatten();
    let blk = bounded.unwrap_or_else(|| {
        let placement = if inside {
            Placement::Spread
        } else {
            Placement::Append
        };
        delta::insert(rel, Some(pair.0), pair.1, placement)
    });
    settle(rel, pair, blk, meta.generation);
    if !retraining {
        // The slow path: a spilled row, or (once a page) an appended one.
        crate::worker::call_launcher(rel, &meta);
    }
}

/// Run pages in one slice of the run: its spilled entries share delta pages
/// bounded to its key range (halved as they fill, `delta::insert_bounded`).
/// Fewer make a lookup read fewer delta pages, more waste less room in
/// pages opened while few entries spilled (each slice keeps one open; 10M
/// keys with small gaps make 830 run pages, 52 slices).
pub const SLICE_PAGES: u32 = 16;

/// Adds `pair` to the insert area of the run page that owns it, if the page
/// takes inserts now (`Meta::takes_inserts`) and has room. Otherwise, with
/// `want_bounds`, returns the key range of that page's slice (the fence of
/// its first page, the first page's none counting as 0, through the fence of
/// the page after its last, or the run's last key). Reads nothing when
/// neither can be. The caller holds the metapage share-locked, which keeps a
/// retrain from saying it rewrites the page meanwhile.
fn add_to_run(
    rel: pg_sys::Relation,
    meta: &Meta,
    pair: (u64, Tid),
    want_bounds: bool,
) -> Result<(), Option<(u64, u64)>> {
    // While a retrain runs, only pages it carries over as they are take
    // entries (`Meta::takes_inserts`), if it said which.
    let retraining = meta.insert_generation != meta.generation;
    if retraining && meta.rewrite_first >= meta.rewrite_end && !want_bounds {
        return Err(None);
    }
    // Under the metapage lock the generation is current: its pages cannot
    // have been reused, so `Recycled` would mean damage.
    let g = model_pages::load(rel, meta).unwrap_or_else(|_| recycled_error(rel));
    let run = Section::run(meta).with(g.dir);
    let (pos, page) = run
        .seek_pair(rel, pair, g.model.window(pair.0))
        .unwrap_or_else(|_| recycled_error(rel));
    drop(page);
    let i = run.page_of(pos.min(run.entries - 1));
    if meta.takes_inserts(i) {
        let mut page = run.open(rel, Buf::read_exclusive(rel, run.block(rel, i)), i);
        // Packing the insert area needs format 6 (an index of format 5 gets
        // it with its next retrain or REINDEX).
        if page.has_room() || (meta.version >= PACKED_INSERTS_VERSION && page.compact(rel)) {
            page.add_inserted(rel, pair);
            return Ok(());
        }
    }
    if !want_bounds {
        return Err(None);
    }
    let first = i - i % SLICE_PAGES;
    let end = first + SLICE_PAGES;
    let fence = |p: u32| run.read(rel, p).fence().map_or(0, |(key, _)| key);
    let lo = fence(first);
    let hi = if end < run.pages {
        fence(end)
    } else {
        meta.run_last_key
    };
    Err(Some((lo, hi)))
}

/// Marks generation `generation` spilled, if it is still current: one WAL
/// record, the metapage, before the entry goes to the delta.
fn mark_spilled(rel: pg_sys::Relation, generation: u32) {
    let meta_buf = Buf::read_exclusive(rel, META_BLOCK);
    // SAFETY: block 0, pinned and exclusive-locked.
    let mut m = unsafe { Meta::from_page(rel, meta_buf.page()) };
    if m.generation != generation || m.spilled != 0 {
        return;
    }
    m.spilled = 1;
    let mut wal = Wal::start(rel);
    m.write(&mut wal, &meta_buf);
    wal.finish();
}

/// After an entry went to delta page `blk` on what generation `routed` said:
/// if a retrain switched generations meanwhile, the entry may sit in a delta
/// page of the new one inside its run, so that generation is marked spilled
/// too. Nothing can have read the entry yet (this transaction has not
/// committed), so marking it now is in time. Not when the retrain took the
/// page into its run (merged, or moved before the switch): the page then
/// carries an older generation. (Were it emptied and reused since, it would
/// carry a newer one, and the mark would only be in vain.)
fn settle(rel: pg_sys::Relation, pair: (u64, Tid), blk: pg_sys::BlockNumber, mut routed: u32) {
    loop {
        let m = Meta::read(rel);
        if m.generation == routed {
            return;
        }
        routed = m.generation;
        if m.spilled != 0 || m.run_last().is_none_or(|last| pair > last) {
            return;
        }
        let page = Buf::read_shared(rel, blk);
        // SAFETY: the page is pinned and share-locked; only its special
        // space is read, which every page of the index has.
        let tag = unsafe { crate::storage::page::opaque(page.page()).generation };
        drop(page);
        if tag < routed {
            return;
        }
        mark_spilled(rel, routed);
    }
}
