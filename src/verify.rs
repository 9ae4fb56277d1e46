//! `learned_verify(index, heapallindexed)`: an amcheck-style check of one
//! learned index. Raises an ERROR that says what is wrong, or returns true.
//!
//! It runs on a live index, under AccessShareLock only, while other sessions
//! insert, delete and VACUUM (DESIGN.md section 3a), so every check compares
//! things read together: the metapage with the directory under the metapage's
//! share lock (pages are opened and closed only under its exclusive lock),
//! and each delta page with its directory entry under both pages' locks. For
//! `heapallindexed`, the snapshot is taken before the index is read, as
//! amcheck does: a row that snapshot sees was indexed before the index is
//! read, and VACUUM cannot remove its entry while the snapshot is held.

use crate::am::build::scan_heap;
use crate::am::datum::index_kind;
use crate::am::sort::{maintenance_budget, Sorter};
use crate::key::{KeyKind, RawValue};
use crate::model::ModelView;
use crate::stats::{IndexArg, Opened};
use crate::storage::buffer::{nblocks, BulkRead, Strategy};
use crate::storage::delta::{self, DeltaPage, DirEntry, DirPage, CLOSED, FREE, OPEN, SPLIT};
use crate::storage::extents::{overlaps, Extent};
use crate::storage::meta::META_BLOCK;
use crate::storage::page::recycled_error;
use crate::storage::run::{Section, Tid};
use crate::storage::search::Directory;
use crate::storage::{model_pages, Buf, Meta};
use pgrx::pg_sys;
use pgrx::prelude::*;

/// Checks a learned index; raises an ERROR that says what is wrong.
#[pg_extern(volatile)]
fn learned_verify(index: IndexArg, heapallindexed: default!(bool, true)) -> bool {
    let rel = Opened::new(index);
    let idx = rel.index;
    // SAFETY: a registered snapshot, unregistered below; taking it before
    // anything of the index is read is what makes the heap check sound.
    let snapshot = heapallindexed
        .then(|| unsafe { pg_sys::RegisterSnapshot(pg_sys::GetTransactionSnapshot()) });
    let ring = BulkRead::new();
    let strategy = ring.get();
    let (meta, dir) = read_meta_and_directory(idx, strategy);
    // SAFETY: the index is open and locked.
    let kind = unsafe { index_kind(idx) };
    if kind != meta.kind() {
        fail(
            idx,
            &format!(
                "metapage key type {:?} differs from the column type {:?}",
                meta.kind(),
                kind
            ),
        );
    }
    let size = nblocks(idx);
    // The run pages the two generations share, leading and trailing, are
    // the same blocks; the rest of the previous generation is its own.
    let (head, tail) = (meta.shared_pages, meta.shared_tail);
    let same = |i: u32, j: u32| {
        meta.place.block(i).is_some() && meta.place.block(i) == meta.prev_place.block(j)
    };
    if !(0..head).all(|i| same(i, i)) {
        fail(
            idx,
            &format!("the generations do not share their first {head} run pages"),
        );
    }
    let (n, prev_n) = (meta.run_pages, meta.prev_run_pages);
    if !(0..tail).all(|i| same(n - tail + i, prev_n - tail + i)) {
        fail(
            idx,
            &format!("the generations do not share their last {tail} run pages"),
        );
    }
    let prev_own = meta.prev_own();
    // The blocks a retrain under way (or one that ended without its switch)
    // took share none with the others, but an operating system crash may
    // have lost the end of them: only the first three lie within the index.
    let lists: [(&str, &[Extent]); 4] = [
        ("current generation", meta.place.as_slice()),
        ("previous generation", &prev_own),
        ("free list", meta.free.as_slice()),
        ("blocks a retrain took", meta.pending.as_slice()),
    ];
    for (what, list) in &lists[..3] {
        for e in list.iter() {
            if e.end() > size as u64 {
                fail(
                    idx,
                    &format!(
                        "the {what} places blocks {}..{} past the end of the index ({size} blocks)",
                        e.start,
                        e.end()
                    ),
                );
            }
        }
    }
    for (i, (a, x)) in lists.iter().enumerate() {
        for (b, y) in &lists[i + 1..] {
            if overlaps(x, y) {
                fail(idx, &format!("the {a} and the {b} share blocks"));
            }
        }
    }
    // Delta and directory pages are blocks of their own, taken one at a
    // time: none lies where a generation is, or may be, written.
    let mut delta_blocks: Vec<u32> = dir.iter().flat_map(|d| [d.blk, d.dir_blk]).collect();
    delta_blocks.sort_unstable();
    delta_blocks.dedup();
    for blk in delta_blocks {
        let one = [Extent { start: blk, len: 1 }];
        if let Some((what, _)) = lists.iter().find(|(_, list)| overlaps(list, &one)) {
            fail(
                idx,
                &format!("the {what} places a block that is a delta or directory page ({blk})"),
            );
        }
    }
    let (model_bytes, starts) = model_pages::read(idx, &meta);
    let model = ModelView::open(&model_bytes).expect("validated by read");
    let run = Section::run(&meta).with(Directory::new(&starts));
    let budget = maintenance_budget() / 2;
    let mut index_side = heapallindexed.then(|| Sorter::new(budget));
    let mut put = |tid: Tid, key: Option<u64>| {
        if let Some(s) = index_side.as_mut() {
            let (a, b) = pack(tid, key);
            s.put(a, b);
        }
    };
    check_run(idx, &meta, (run, &model), strategy, &mut put);
    check_delta(idx, meta.generation, &dir, strategy, &mut put);
    if let (Some(index_side), Some(snapshot)) = (index_side, snapshot) {
        let owner = AsTableOwner::begin(rel.heap);
        check_heap(&rel, kind, snapshot, index_side, budget);
        owner.end();
        // SAFETY: registered above.
        unsafe { pg_sys::UnregisterSnapshot(snapshot) };
    }
    true
}

/// The heap check evaluates the index's expressions and predicate, which
/// are the table owner's functions: as amcheck does, it runs them as that
/// owner, in a security-restricted operation, and undoes the settings they
/// change, so that a superuser verifying another role's index does not run
/// that role's code with its own rights. An ERROR in between restores all
/// of it with the transaction.
struct AsTableOwner {
    user: pg_sys::Oid,
    context: std::ffi::c_int,
    nest: std::ffi::c_int,
}

impl AsTableOwner {
    fn begin(heap: pg_sys::Relation) -> AsTableOwner {
        let (mut user, mut context) = (pg_sys::InvalidOid, 0);
        // SAFETY: `heap` is open; these save and set this backend's user and
        // security context, and open a GUC nesting level, as amcheck does.
        unsafe {
            pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
            pg_sys::SetUserIdAndSecContext(
                (*(*heap).rd_rel).relowner,
                context | pg_sys::SECURITY_RESTRICTED_OPERATION as std::ffi::c_int,
            );
            let nest = pg_sys::NewGUCNestLevel();
            #[cfg(feature = "pg18")]
            pg_sys::RestrictSearchPath();
            AsTableOwner {
                user,
                context,
                nest,
            }
        }
    }

    fn end(self) {
        // SAFETY: undoes `begin`, in the reverse order.
        unsafe {
            pg_sys::AtEOXact_GUC(false, self.nest);
            pg_sys::SetUserIdAndSecContext(self.user, self.context);
        }
    }
}

fn fail(idx: pg_sys::Relation, what: &str) -> ! {
    // SAFETY: `idx` is open.
    let name = unsafe { crate::storage::page::relation_name(idx) };
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_INDEX_CORRUPTED,
        format!("learned index \"{name}\" failed verification: {what}")
    );
}

/// The metapage and the directory read under the metapage's share lock, and
/// checked against each other: the directory lists `delta_pages` pages, and
/// exactly the pages the metapage lists as open are open.
fn read_meta_and_directory(idx: pg_sys::Relation, strategy: Strategy) -> (Meta, Vec<DirEntry>) {
    let meta_buf = Buf::read_shared(idx, META_BLOCK);
    // SAFETY: block 0, pinned and share-locked until the end of this function.
    let meta = unsafe { Meta::from_page(idx, meta_buf.page()) };
    let dir = delta::directory(idx, &meta, strategy);
    if dir.len() as u64 != meta.delta_pages as u64 {
        fail(
            idx,
            &format!(
                "directory lists {} delta pages, the metapage {}",
                dir.len(),
                meta.delta_pages
            ),
        );
    }
    let open = &meta.open[..meta.n_open as usize];
    for (i, &blk) in open.iter().enumerate() {
        let listed = dir
            .iter()
            .find(|d| d.dir_blk == meta.open_dir[i] && d.slot == meta.open_slot[i] as usize);
        if !listed.is_some_and(|d| d.blk == blk && d.state == OPEN && !d.bounded) {
            fail(
                idx,
                &format!(
                    "delta page {blk} is open in the metapage but not as an unbounded open page in the directory"
                ),
            );
        }
    }
    if let Some(d) = dir
        .iter()
        .find(|d| d.state == OPEN && !d.bounded && !open.contains(&d.blk))
    {
        fail(
            idx,
            &format!(
                "delta page {} is open in the directory but not in the metapage",
                d.blk
            ),
        );
    }
    drop(meta_buf);
    (meta, dir)
}

fn show(kind: KeyKind, ord: u64) -> String {
    match kind.value(ord) {
        RawValue::Int(v) => format!("{v}"),
        RawValue::Float(f) => format!("{f}"),
    }
}

/// The run is sorted and every key, and the gap after it, lies in its window;
/// NULL pages are valid. Hands every live entry to `put`.
fn check_run(
    idx: pg_sys::Relation,
    meta: &Meta,
    (run, model): (Section, &ModelView),
    strategy: Strategy,
    put: &mut impl FnMut(Tid, Option<u64>),
) {
    let kind = meta.kind();
    let in_window = |key: u64, pos: u64| {
        let w = model.window(key);
        if pos < w.lo || pos > w.hi {
            fail(
                idx,
                &format!(
                    "key {} has lower bound {pos}, outside its model window [{}, {}]",
                    show(kind, key),
                    w.lo,
                    w.hi
                ),
            );
        }
    };
    let mut prev: Option<u64> = None;
    let mut prev_tid: Tid = 0;
    for i in 0..run.pages {
        let page = run.read_with(idx, i, strategy);
        let (ps, _) = run.page_span(i);
        // The page's fence is the entry before it, and its inserted entries
        // lie between the fence and its own last entry (the pairs it owns).
        let fence = prev.map(|k| (k, prev_tid));
        if page.fence() != fence {
            fail(idx, &format!("run page {i} has the wrong fence"));
        }
        let last = page.last();
        for (key, tid) in page.inserted_all() {
            if fence.is_some_and(|f| (key, tid) <= f) || (key, tid) > last {
                fail(
                    idx,
                    &format!(
                        "run page {i} holds an inserted entry (key {}) outside the range it owns",
                        show(kind, key)
                    ),
                );
            }
            put(tid, Some(key));
        }
        if let Some(key) = page.fingerprint_miss() {
            fail(
                idx,
                &format!(
                    "run page {i} holds an inserted entry (key {}) its fingerprint lacks",
                    show(kind, key)
                ),
            );
        }
        // The packed part of the insert area is searched by key.
        let mut packed = page.packed_inserted(0, u64::MAX);
        if let Some(first) = packed.next() {
            if packed
                .try_fold(first, |p, e| (p < e).then_some(e))
                .is_none()
            {
                fail(
                    idx,
                    &format!("run page {i} has packed inserted entries out of order"),
                );
            }
        }
        // Decoding every entry checks every group's encoding.
        for s in 0..page.len() {
            let (key, tid) = page.entry(s);
            let pos = ps + s as u64;
            if !page.dead(s) {
                put(tid, Some(key));
            }
            // Scans rely on (key, TID) order to start over (src/am/scan.rs).
            let unsorted = prev.is_some_and(|p| (key, tid) < (p, prev_tid));
            prev_tid = tid;
            match prev {
                _ if unsorted => fail(idx, &format!("run is not sorted at position {pos}")),
                Some(p) if key == p => continue,
                Some(p) if key > p + 1 => in_window(p + 1, pos),
                _ => {}
            }
            in_window(key, pos);
            prev = Some(key);
        }
    }
    if let Some(p) = prev.filter(|&p| p < u64::MAX) {
        in_window(p + 1, run.entries);
    }
    if meta.run_last() != prev.map(|k| (k, prev_tid)) {
        fail(idx, "the metapage's last run entry is not the run's last");
    }
    let nulls = Section::nulls(meta);
    let mut prev_tid = None;
    let mut entries = 0u64;
    for i in 0..nulls.pages {
        let page = nulls.read_with(idx, i, strategy);
        for s in 0..page.len() {
            let (key, tid) = page.entry(s);
            if key != 0 {
                fail(idx, &format!("NULL page {i} holds a key"));
            }
            if prev_tid.is_some_and(|p| tid < p) {
                fail(idx, &format!("NULL page {i} is not in TID order"));
            }
            prev_tid = Some(tid);
        }
        entries += page.len() as u64;
        page.live().for_each(|s| put(page.tid(s), None));
    }
    if entries != nulls.entries {
        fail(
            idx,
            &format!(
                "NULL pages hold {entries} entries, the metapage says {}",
                nulls.entries
            ),
        );
    }
}

/// Each delta page agrees with its directory entry, read together under both
/// pages' locks: same state, and a closed page's entries inside its range.
/// Hands every entry to `put`.
fn check_delta(
    idx: pg_sys::Relation,
    generation: u32,
    dir: &[DirEntry],
    strategy: Strategy,
    put: &mut impl FnMut(Tid, Option<u64>),
) {
    // SAFETY: reads shared memory.
    let standby = unsafe { pg_sys::RecoveryInProgress() };
    crate::pause::pause_point("verify_delta");
    for d in dir {
        // Lock order: delta page, then directory page (storage/README.md).
        let page = DeltaPage::read(idx, d.blk, strategy);
        let entry = DirPage::read(idx, d.dir_blk, strategy).entry(idx, d.slot);
        let h = page.header();
        if entry.blk != d.blk {
            fail(
                idx,
                &format!("delta directory entry for page {} moved", d.blk),
            );
        }
        // A split page stays closed; only its directory entry says split.
        let split = entry.state == SPLIT;
        if entry.state != h.state && !(split && h.state == CLOSED) {
            fail(
                idx,
                &format!(
                    "delta page {} is in state {} but its directory entry says {}",
                    d.blk, h.state, entry.state
                ),
            );
        }
        let mut has_nulls = false;
        // Pages of earlier generations are in the run already. As a scan
        // does, by the directory as read: the pages live then hold each
        // entry once (a page split since keeps its entries, and the pages
        // they were copied to were not live then), and a page freed since
        // and reused may hold copies of entries of pages read here.
        let current = d.generation >= generation && d.is_live();
        // On a standby nothing holds retirement back for this snapshot: a
        // page the generation read, freed since, is not damage, but this
        // check cannot go on (as a scan would start over). One freed and
        // reused by then the metapage tells, after the loop; a tag changed
        // by carry or absorb is none of these.
        if current && standby && page.is_free() {
            recycled_error(idx);
        }
        let sorted = page.is_sorted();
        let mut prev = None;
        for e in page.entries() {
            if sorted && (h.state != CLOSED || prev > Some((e.key, e.tid))) {
                fail(
                    idx,
                    &format!("delta page {} is marked sorted but is not", d.blk),
                );
            }
            prev = Some((e.key, e.tid));
            has_nulls |= e.null;
            if !e.null && (e.key < h.min || e.key > h.max) {
                fail(
                    idx,
                    &format!("delta page {} holds a key outside its own range", d.blk),
                );
            }
            if current {
                put(e.tid, (!e.null).then_some(e.key));
            }
        }
        // A split's half that a crash left before the split's last record:
        // its entry takes no key, whatever the page holds (copies of a live
        // page's entries, not counted above).
        let unfinished = entry.state == OPEN && entry.bounded && entry.min > entry.max;
        match h.state {
            OPEN if unfinished && h.bounded != 0 && h.has_nulls == 0 => {}
            CLOSED if split && (entry.min <= entry.max || entry.bounded || entry.has_nulls) => {
                fail(
                    idx,
                    &format!(
                        "split delta page {} has a key range in the directory",
                        d.blk
                    ),
                )
            }
            CLOSED
                if !split
                    && (entry.min, entry.max, entry.has_nulls)
                        != (h.min, h.max, h.has_nulls != 0) =>
            {
                fail(
                    idx,
                    &format!(
                        "delta page {} has another key range than its directory entry",
                        d.blk
                    ),
                )
            }
            OPEN if (h.bounded != 0) != entry.bounded
                || entry.bounded && (entry.min, entry.max) != (h.min, h.max) =>
            {
                fail(
                    idx,
                    &format!(
                        "open delta page {} has other bounds than its directory entry",
                        d.blk
                    ),
                )
            }
            OPEN if h.bounded != 0 && h.has_nulls != 0 => {
                fail(idx, &format!("bounded delta page {} holds NULLs", d.blk))
            }
            OPEN if h.min <= h.max && entry.min > h.min => fail(
                idx,
                &format!(
                    "open delta page {} holds keys below its directory entry's bound",
                    d.blk
                ),
            ),
            CLOSED | OPEN if has_nulls && h.has_nulls == 0 => fail(
                idx,
                &format!("delta page {} holds NULLs its header does not note", d.blk),
            ),
            FREE if !page.is_empty() => {
                fail(idx, &format!("free delta page {} holds entries", d.blk))
            }
            _ => {}
        }
    }
    // A page freed and reused can carry the tag it was listed with (see
    // `gather` in src/am/scan.rs): the retire that freed it made the
    // metapage stop listing this generation first.
    if standby && !Meta::read(idx).readable(generation) {
        recycled_error(idx);
    }
}

/// Sort item for the TID-ordered comparison: TID and NULL flag, then key.
fn pack(tid: Tid, key: Option<u64>) -> (u64, u64) {
    ((tid << 1) | key.is_none() as u64, key.unwrap_or(0))
}

fn unpack((a, b): (u64, u64)) -> (Tid, Option<u64>) {
    (a >> 1, (a & 1 == 0).then_some(b))
}

/// Every row visible to `snapshot` is in the index exactly once, with its key.
/// Both sides are sorted by TID and merged. Entries of rows the snapshot does
/// not see are ignored: VACUUM may be removing them while the index is read,
/// and their TIDs may already be reused by rows inserted since.
fn check_heap(
    rel: &Opened,
    kind: KeyKind,
    snapshot: pg_sys::Snapshot,
    index_side: Sorter,
    budget: usize,
) {
    let idx = rel.index;
    let mut index_side = index_side.finish();
    let mut heap_side = Sorter::new(budget);
    // SAFETY: the amcheck recipe: an MVCC snapshot scan through the table AM's
    // index build scan, with ii_Concurrent so that it uses that snapshot.
    unsafe {
        let info = pg_sys::BuildIndexInfo(idx);
        (*info).ii_Concurrent = true;
        let scan =
            pg_sys::table_beginscan_strat(rel.heap, snapshot, 0, std::ptr::null_mut(), true, false);
        scan_heap(rel.heap, idx, info, false, scan, |key, tid| {
            let (a, b) = pack(tid, key);
            heap_side.put(a, b);
        });
    }
    let mut heap_side = heap_side.finish();

    let mut pending = index_side.next().map(unpack);
    while let Some(hb) = heap_side.next() {
        let (tid, key) = unpack(hb);
        while pending.is_some_and(|(t, _)| t < tid) {
            pending = index_side.next().map(unpack);
        }
        match pending {
            Some((t, k)) if t == tid => {
                if k != key {
                    fail(
                        idx,
                        &format!(
                            "row {} is indexed with key {} but has key {}",
                            show_tid(tid),
                            show_key(kind, k),
                            show_key(kind, key)
                        ),
                    );
                }
                pending = index_side.next().map(unpack);
                if pending.is_some_and(|(t2, _)| t2 == tid) {
                    fail(idx, &format!("heap TID {} is indexed twice", show_tid(tid)));
                }
            }
            _ => fail(
                idx,
                &format!(
                    "row {} with key {} is not in the index",
                    show_tid(tid),
                    show_key(kind, key)
                ),
            ),
        }
    }
    index_side.end();
    heap_side.end();
}

fn show_key(kind: KeyKind, k: Option<u64>) -> String {
    k.map_or("NULL".into(), |k| show(kind, k))
}

fn show_tid(t: Tid) -> String {
    format!("({},{})", t >> 16, t & 0xffff)
}
