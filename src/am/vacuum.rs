//! VACUUM: dead entries are tombstoned in the run and null pages (positions
//! never move, so the model stays exact) and removed from delta pages; emptied
//! delta pages are reused by later inserts.
//!
//! Every page VACUUM removes entries from is cleanup-locked first: a scan
//! that still has to return entries of the page holds its pin, and VACUUM waits
//! for it, as nbtree's does (DESIGN.md section 3a). Pages with nothing to
//! remove are only share-locked, so a paused cursor holds VACUUM up only where
//! it must.

use crate::storage::buffer::{nblocks, Strategy};
use crate::storage::meta::META_BLOCK;
use crate::storage::page::PageKind;
use crate::storage::run::{retain_inserted, set_dead, tid_to_ptr, Section, Tid};
use crate::storage::wal::Wal;
use crate::storage::{delta, Buf, Meta};
use pgrx::pg_sys;
use pgrx::prelude::*;

#[pg_guard]
pub unsafe extern "C-unwind" fn ambulkdelete(
    info: *mut pg_sys::IndexVacuumInfo,
    stats: *mut pg_sys::IndexBulkDeleteResult,
    callback: pg_sys::IndexBulkDeleteCallback,
    callback_state: *mut std::ffi::c_void,
) -> *mut pg_sys::IndexBulkDeleteResult {
    let rel = (*info).index;
    let strategy = Strategy((*info).strategy);
    let stats = if stats.is_null() {
        pg_sys::palloc0(std::mem::size_of::<pg_sys::IndexBulkDeleteResult>())
            as *mut pg_sys::IndexBulkDeleteResult
    } else {
        stats
    };
    let callback = callback.expect("VACUUM passes a callback");
    let mut dead = |tid: Tid| {
        let mut p = tid_to_ptr(tid);
        // SAFETY: the callback and its state come from VACUUM for this call.
        // It is PostgreSQL code that could raise an ERROR: the guard turns
        // that into a Rust panic, which the #[pg_guard] on this function
        // re-raises, instead of a longjmp across Rust frames.
        unsafe { pg_sys::ffi::pg_guard_ffi_boundary(|| callback(&mut p, callback_state)) }
    };
    let meta = Meta::read(rel);
    let (mut removed, mut live, mut run_removed) = (0u64, 0u64, 0u64);
    // The previous generation too, while scans that began before the switch
    // may read it: they must not find entries of rows VACUUM removes.
    let previous = Section::previous(&meta).into_iter().flatten();
    for section in [Section::run(&meta), Section::nulls(&meta)]
        .into_iter()
        .chain(previous)
    {
        let current = section.generation == meta.generation;
        // The run pages the two generations share (leading and trailing)
        // are visited once, as the current generation's; NULL pages are
        // never shared.
        let (from, to) = if current || section.kind == PageKind::Null {
            (0, section.pages)
        } else {
            let to = section.pages.saturating_sub(meta.shared_tail);
            (meta.shared_pages.min(to), to)
        };
        for i in from..to {
            delay_point();
            let page = section.read_with(rel, i, strategy);
            // Run pages change only here (VACUUMs exclude each other), so the
            // slots found under the share lock are the slots to mark.
            let slots: Vec<usize> = page.live().filter(|&s| dead(page.tid(s))).collect();
            // Raw inserted entries are removed, packed ones tombstoned (the
            // next packing drops them): nothing locates them by position.
            let ins_dead: Vec<Tid> = page
                .inserted_all()
                .map(|(_, t)| t)
                .filter(|&t| dead(t))
                .collect();
            // Count the current generation's entries only: the previous
            // generation holds the same rows.
            if current {
                live += (page.live().count() - slots.len()) as u64;
                live += (page.inserted_len() - ins_dead.len()) as u64;
                removed += (slots.len() + ins_dead.len()) as u64;
                if section.kind == PageKind::Run {
                    run_removed += slots.len() as u64;
                }
            }
            if slots.is_empty() && ins_dead.is_empty() {
                continue;
            }
            let mut buf = page.into_pin();
            crate::pause::pause_point("vacuum_relock");
            buf.lock_for_cleanup();
            let page = section.open(rel, buf, i);
            // Inserts may have added entries since the share lock, and packed
            // the insert area: only the TIDs found dead then are removed, from
            // where they are now.
            let packed_dead = page.packed_inserted_where(|t| ins_dead.contains(&t));
            let mut wal = Wal::start(rel);
            let image = wal.page(page.buf(), false);
            // SAFETY: WAL image of the cleanup-locked page; slots < its count,
            // and the packed slots below its packed insert area's.
            unsafe {
                set_dead(image, &slots);
                if !ins_dead.is_empty() {
                    retain_inserted(image, |t| !ins_dead.contains(&t), &packed_dead);
                }
            }
            wal.finish();
        }
    }
    if run_removed > 0 {
        count_dead(rel, meta.generation, run_removed);
    }
    let (delta_removed, delta_live) = delta::bulk_delete(rel, &meta, strategy, &mut dead);
    (*stats).tuples_removed += (removed + delta_removed) as f64;
    (*stats).num_index_tuples = (live + delta_live) as f64;
    (*stats).estimated_count = false;
    (*stats).num_pages = nblocks(rel);
    stats
}

/// Adds to the metapage's count of tombstoned run entries, which tells a
/// retrain when to merge rather than append. A retrain cannot have switched
/// generations meanwhile (it takes the lock VACUUM holds), so `generation`
/// is still current.
fn count_dead(rel: pg_sys::Relation, generation: u32, n: u64) {
    let meta_buf = Buf::read_exclusive(rel, META_BLOCK);
    // SAFETY: block 0, pinned and exclusive-locked.
    let mut m = unsafe { Meta::from_page(rel, meta_buf.page()) };
    if m.generation != generation {
        return;
    }
    m.run_dead = (m.run_dead + n).min(m.run_entries);
    let mut wal = Wal::start(rel);
    m.write(&mut wal, &meta_buf);
    wal.finish();
}

#[pg_guard]
pub unsafe extern "C-unwind" fn amvacuumcleanup(
    info: *mut pg_sys::IndexVacuumInfo,
    stats: *mut pg_sys::IndexBulkDeleteResult,
) -> *mut pg_sys::IndexBulkDeleteResult {
    if (*info).analyze_only {
        return stats;
    }
    // VACUUM holds the locks a retrain takes: retire the previous generation
    // if no snapshot can read it any more, so that inserts reuse its delta
    // pages even where no worker runs. PostgreSQL 15 does not pass the heap:
    // the horizon of every table is the cautious one.
    #[cfg(not(feature = "pg15"))]
    let heap = (*info).heaprel;
    #[cfg(feature = "pg15")]
    let heap = std::ptr::null_mut();
    crate::retrain::retire_unread((*info).index, heap);
    if !stats.is_null() {
        return stats;
    }
    // No bulk delete ran: report the heap's count rather than read the index.
    let stats = pg_sys::palloc0(std::mem::size_of::<pg_sys::IndexBulkDeleteResult>())
        as *mut pg_sys::IndexBulkDeleteResult;
    (*stats).num_pages = nblocks((*info).index);
    (*stats).num_index_tuples = (*info).num_heap_tuples;
    (*stats).estimated_count = true;
    stats
}

/// Sleeps as `vacuum_cost_delay` asks and serves interrupts; called between
/// pages, as VACUUM's own access methods do.
pub fn delay_point() {
    // SAFETY: takes no pointers; PostgreSQL 18 added the is_analyze flag.
    #[cfg(not(feature = "pg18"))]
    unsafe {
        pg_sys::vacuum_delay_point()
    };
    #[cfg(feature = "pg18")]
    unsafe {
        pg_sys::vacuum_delay_point(false)
    };
}
