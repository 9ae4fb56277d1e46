//! VACUUM's part of the delta: remove entries whose TIDs are dead.

use super::directory::{self, directory, DirPage};
use super::{
    mark_free, set_entry, set_header, DeltaEntry, DeltaHeader, DeltaPage, CLOSED, FREE, OPEN,
};
use crate::storage::buffer::Strategy;
use crate::storage::meta::META_BLOCK;
use crate::storage::run::Tid;
use crate::storage::wal::Wal;
use crate::storage::{Buf, Meta};
use pgrx::pg_sys;

/// Removes entries whose TIDs `dead` reports, page by page, each page under a
/// cleanup lock so that scans still returning its entries finish first
/// (DESIGN.md section 3a). An emptied closed page becomes free for reuse.
/// Pages opened after the directory was read hold only entries inserted
/// since, which are not dead: bounded pages are not split meanwhile (a split
/// copies entries into new pages), `Meta::vacuuming` says so. Returns
/// (removed, remaining).
pub fn bulk_delete(
    rel: pg_sys::Relation,
    meta: &Meta,
    strategy: Strategy,
    dead: impl FnMut(Tid) -> bool,
) -> (u64, u64) {
    set_vacuuming(rel, 1);
    let counts = remove_dead(rel, meta, strategy, dead);
    // Not reached on an ERROR: the flag then stays until the next VACUUM
    // ends or a retrain switches, which only costs splits meanwhile.
    set_vacuuming(rel, 0);
    counts
}

/// Sets `Meta::vacuuming`, one metapage record.
fn set_vacuuming(rel: pg_sys::Relation, on: u8) {
    let meta_buf = Buf::read_exclusive(rel, META_BLOCK);
    // SAFETY: block 0, pinned and exclusive-locked.
    let mut m = unsafe { Meta::from_page(rel, meta_buf.page()) };
    if m.vacuuming == on {
        return;
    }
    m.vacuuming = on;
    let mut wal = Wal::start(rel);
    m.write(&mut wal, &meta_buf);
    wal.finish();
}

fn remove_dead(
    rel: pg_sys::Relation,
    meta: &Meta,
    strategy: Strategy,
    mut dead: impl FnMut(Tid) -> bool,
) -> (u64, u64) {
    let (mut removed, mut remaining) = (0u64, 0u64);
    // Read after the flag is set: every split before it is listed.
    let dir = directory(rel, meta, strategy);
    crate::pause::pause_point("vacuum_delta");
    for d in dir {
        if d.state == FREE {
            continue;
        }
        crate::am::vacuum::delay_point();
        // Pages an earlier generation merged into the run are still read by
        // scans that began before the switch, so they are vacuumed too, but
        // their rows are counted in the run; so are split pages, whose rows
        // are counted on the pages they were copied to.
        let counted = d.generation >= meta.generation && d.is_live();
        let page = DeltaPage::read(rel, d.blk, strategy);
        if !page.entries().any(|e| dead(e.tid)) {
            remaining += counted as u64 * page.len() as u64;
            continue;
        }
        let mut buf = page.into_pin();
        buf.lock_for_cleanup();
        // Inserts may have added entries while the page was unlocked.
        let page = DeltaPage::open(rel, buf);
        let h = page.header();
        let keep: Vec<DeltaEntry> = page.entries().filter(|e| !dead(e.tid)).collect();
        if counted {
            remaining += keep.len() as u64;
            removed += (page.len() - keep.len()) as u64;
        }
        let free = keep.is_empty() && h.state == CLOSED;
        let dir = free.then(|| DirPage::read_exclusive(rel, d.dir_blk));
        if let Some(dir) = &dir {
            if dir.entry(rel, d.slot).blk != d.blk {
                crate::storage::page::corrupt(rel, d.dir_blk, "delta directory entry moved");
            }
        }
        let mut wal = Wal::start(rel);
        let image = wal.page(page.buf(), false);
        // SAFETY: WAL images of pages locked above; keep.len() <= old count.
        unsafe {
            for (i, e) in keep.iter().enumerate() {
                set_entry(image, i, e);
            }
            if free {
                let dimage = wal.page(dir.as_ref().unwrap().buf(), false);
                mark_free(image, dimage, d.slot, (d.blk, d.generation));
            } else {
                set_header(
                    image,
                    &DeltaHeader {
                        count: keep.len() as u16,
                        ..h
                    },
                );
            }
        }
        wal.finish();
    }
    (removed, remaining)
}

/// Empties a closed delta page that no scan reads any more (its entries are
/// in a run whose generation before is retired), so that inserts reuse it.
/// One WAL record: the page and its directory entry.
pub fn discard(rel: pg_sys::Relation, d: &directory::DirEntry) {
    let page = DeltaPage::open(rel, crate::storage::Buf::read_exclusive(rel, d.blk));
    if page.header().state != CLOSED {
        return;
    }
    let dir = DirPage::read_exclusive(rel, d.dir_blk);
    if dir.entry(rel, d.slot).blk != d.blk {
        crate::storage::page::corrupt(rel, d.dir_blk, "delta directory entry moved");
    }
    let mut wal = Wal::start(rel);
    let image = wal.page(page.buf(), false);
    let dimage = wal.page(dir.buf(), false);
    // SAFETY: WAL images of the two pages locked above; the slot was checked.
    unsafe { mark_free(image, dimage, d.slot, (d.blk, d.generation)) };
    wal.finish();
}

/// Gives delta page `d`, closed or open and bounded, generation
/// `generation`. Below the one a retrain is about to switch to when the
/// retrain moved its entries into the new run, so the new generation must
/// not read them twice, while the current one, which reads pages of its own
/// number and above, still reads them. The one it switches to when the
/// retrain carries the page's rows over (spilled rows outside what it
/// merges): both generations read it, and an open page goes on taking rows.
/// One WAL record: the page and its directory entry. Nothing, when the
/// directory no longer lists the page as `d` says: an open page that filled
/// since was split, and its entries are on pages tagged as new delta pages
/// are. An open page VACUUM left empty is freed instead, as closing it
/// would: carried over, it would mark the new generation spilled.
///
/// For an open page, the metapage's share lock is taken first (the lock
/// order of `close`), so that no split is under way: one holds the
/// metapage exclusive from closing the page it splits to its last record.
pub fn retag(rel: pg_sys::Relation, d: &directory::DirEntry, generation: u32) {
    let _meta = (d.state == OPEN).then(|| Buf::read_shared(rel, META_BLOCK));
    let page = DeltaPage::open(rel, Buf::read_exclusive(rel, d.blk));
    let h = page.header();
    let dir = DirPage::read_exclusive(rel, d.dir_blk);
    let entry = dir.entry(rel, d.slot);
    if entry.blk != d.blk || entry.generation != d.generation || !entry.is_live() {
        return;
    }
    if h.state != entry.state || (entry.state == OPEN && (h.bounded == 0 || !entry.bounded)) {
        crate::storage::page::corrupt(rel, d.dir_blk, "a retrain's delta page changed under it");
    }
    let mut wal = Wal::start(rel);
    let image = wal.page(page.buf(), false);
    let dimage = wal.page(dir.buf(), false);
    // SAFETY: WAL images of the two pages locked above; the slot was checked.
    unsafe {
        if entry.state == OPEN && page.is_empty() {
            mark_free(image, dimage, d.slot, (d.blk, d.generation));
        } else {
            crate::storage::page::set_generation(image, generation);
            directory::set_entry(
                dimage,
                d.slot,
                (d.blk, generation),
                entry.state,
                (entry.has_nulls, entry.bounded),
                (entry.min, entry.max),
            );
        }
    }
    wal.finish();
}
