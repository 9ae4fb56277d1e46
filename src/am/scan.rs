//! Index scans: `ambeginscan`, `amrescan`, `amgettuple`, `amgetbitmap`,
//! `amendscan`, `amcanreturn`.
//!
//! A scan walks its plan's intervals in key order (reversed for a backward
//! scan), NULLs last (first when backward). For each interval it seeks the run
//! with the model, copies the matching entries of one page at a time, and merges
//! them with the matching delta entries, which are gathered once per rescan.
//! The metapage and delta directory are read once per scan, not per rescan, so
//! the inner side of a nested loop costs one run page per probe.

use super::datum::{datum, index_kind};
use super::scankey::{self, Plan};
use crate::key::KeyKind;
use crate::storage::delta::{self, DeltaEntry, DirEntry};
use crate::storage::run::{tid_to_ptr, RunPage, Section, Tid};
use crate::storage::{model_pages, Buf, Meta};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgMemoryContexts;
use std::collections::VecDeque;

/// What a scan reads once and keeps across rescans.
struct Snapshot {
    meta: Meta,
    dir: Vec<DirEntry>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    Start,
    Interval(usize),
    Nulls,
    Done,
}

/// Position inside the current interval.
struct Cursor {
    lo: u64,
    hi: u64,
    /// Next run position to read (forward), or one past it (backward); `None`
    /// once the run part of the interval is exhausted.
    run_pos: Option<u64>,
    /// Page the seek left locked, holding `run_pos`.
    preloaded: Option<(Buf, RunPage)>,
    /// The interval's delta entries: `delta[dlo..dhi]`, consumed from the front
    /// (forward) or the back (backward).
    dlo: usize,
    dhi: usize,
}

struct ScanState {
    kind: KeyKind,
    snapshot: Option<Snapshot>,
    plan: Plan,
    backward: bool,
    stage: Stage,
    cursor: Option<Cursor>,
    /// Next null page to read; then the delta NULLs.
    null_page: u32,
    delta: Vec<DeltaEntry>,
    delta_nulls: Vec<Tid>,
    out: VecDeque<(Option<u64>, Tid)>,
    batch: Vec<(u64, Tid)>,
    /// The index tuple an index-only scan returns, rewritten in place for
    /// every entry (no allocation per tuple).
    itup: [u64; 3],
}

#[pg_guard]
pub unsafe extern "C-unwind" fn ambeginscan(
    index: pg_sys::Relation,
    nkeys: i32,
    norderbys: i32,
) -> pg_sys::IndexScanDesc {
    let scan = pg_sys::RelationGetIndexScan(index, nkeys, norderbys);
    let state = ScanState {
        kind: index_kind(index),
        snapshot: None,
        plan: Plan::default(),
        backward: false,
        stage: Stage::Done,
        cursor: None,
        null_page: 0,
        delta: Vec::new(),
        delta_nulls: Vec::new(),
        out: VecDeque::new(),
        batch: Vec::new(),
        itup: [0; 3],
    };
    // The state is dropped when the scan's memory context goes away, which
    // also covers scans an error interrupts before amendscan.
    let mut cxt = PgMemoryContexts::CurrentMemoryContext;
    (*scan).opaque = cxt.leak_and_drop_on_delete(Some(state)).cast();
    (*scan).xs_itupdesc = (*index).rd_att;
    scan
}

unsafe fn state<'a>(scan: pg_sys::IndexScanDesc) -> &'a mut ScanState {
    // SAFETY (callers): `opaque` was set by ambeginscan and is cleared only by
    // amendscan, after which the executor makes no further calls.
    (*((*scan).opaque as *mut Option<ScanState>))
        .as_mut()
        .expect("scan is open")
}

#[pg_guard]
pub unsafe extern "C-unwind" fn amrescan(
    scan: pg_sys::IndexScanDesc,
    keys: pg_sys::ScanKey,
    nkeys: i32,
    _orderbys: pg_sys::ScanKey,
    _norderbys: i32,
) {
    if !keys.is_null() && nkeys > 0 {
        std::ptr::copy(keys, (*scan).keyData, nkeys as usize);
    }
    let st = state(scan);
    let n = (*scan).numberOfKeys as usize;
    let keys = if n == 0 {
        &[][..]
    } else {
        std::slice::from_raw_parts((*scan).keyData, n)
    };
    st.plan = scankey::plan(st.kind, keys);
    st.stage = Stage::Start;
    st.cursor = None;
    st.out.clear();
}

impl ScanState {
    /// Reads metapage and delta directory once per scan.
    fn snapshot(&mut self, rel: pg_sys::Relation) -> &Snapshot {
        self.snapshot.get_or_insert_with(|| {
            let meta = Meta::read(rel);
            let dir = delta::directory(rel, &meta);
            Snapshot { meta, dir }
        })
    }

    /// Starts an execution of the plan: gathers the matching delta entries.
    fn start(&mut self, rel: pg_sys::Relation, backward: bool) {
        self.backward = backward;
        self.snapshot(rel);
        let snap = self.snapshot.as_ref().unwrap();
        self.delta.clear();
        self.delta_nulls.clear();
        let hull = self.plan.hull();
        let mut found = Vec::new();
        for d in &snap.dir {
            let keys = hull.is_some_and(|(lo, hi)| d.may_hold(lo, hi));
            let nulls = self.plan.nulls && d.may_hold_nulls();
            if keys || nulls {
                let plan = &self.plan;
                delta::read_page(rel, d.blk, &mut found, |e| {
                    if e.null {
                        plan.nulls
                    } else {
                        plan.contains(e.key)
                    }
                });
            }
        }
        for e in found {
            if e.null {
                self.delta_nulls.push(e.tid);
            } else {
                self.delta.push(e);
            }
        }
        self.delta.sort_unstable_by_key(|e| (e.key, e.tid));
        self.null_page = 0;
        let n = self.plan.intervals.len();
        self.stage = if backward {
            if self.plan.nulls {
                Stage::Nulls
            } else if n > 0 {
                Stage::Interval(n - 1)
            } else {
                Stage::Done
            }
        } else if n > 0 {
            Stage::Interval(0)
        } else if self.plan.nulls {
            Stage::Nulls
        } else {
            Stage::Done
        };
        // SAFETY: counts an index scan in pg_stat_all_indexes, as
        // pgstat_count_index_scan does.
        unsafe { count_scan(rel) };
    }

    fn next_stage(&self) -> Stage {
        let n = self.plan.intervals.len();
        match (self.stage, self.backward) {
            (Stage::Interval(k), false) if k + 1 < n => Stage::Interval(k + 1),
            (Stage::Interval(_), false) if self.plan.nulls => Stage::Nulls,
            (Stage::Interval(k), true) if k > 0 => Stage::Interval(k - 1),
            (Stage::Nulls, true) if n > 0 => Stage::Interval(n - 1),
            _ => Stage::Done,
        }
    }

    /// Refills `out`; false when the scan is exhausted.
    fn fill(&mut self, rel: pg_sys::Relation) -> bool {
        while self.out.is_empty() {
            match self.stage {
                Stage::Done => return false,
                Stage::Start => unreachable!("start() runs first"),
                Stage::Nulls => {
                    if !self.step_nulls(rel) {
                        self.stage = self.next_stage();
                    }
                }
                Stage::Interval(k) => {
                    if !self.step_interval(rel, k) {
                        self.cursor = None;
                        self.stage = self.next_stage();
                    }
                }
            }
        }
        true
    }

    /// One null page, then the delta NULLs. False when done.
    fn step_nulls(&mut self, rel: pg_sys::Relation) -> bool {
        let nulls = Section::nulls(&self.snapshot.as_ref().unwrap().meta);
        if self.null_page < nulls.pages {
            let (_buf, page) = nulls.read(rel, self.null_page);
            for s in 0..page.len() {
                if !page.dead(s) {
                    self.out.push_back((None, page.tid(s)));
                }
            }
            self.null_page += 1;
            return true;
        }
        if self.null_page == nulls.pages {
            self.out
                .extend(self.delta_nulls.drain(..).map(|t| (None, t)));
            self.null_page += 1;
            return true;
        }
        false
    }

    fn open_interval(&mut self, rel: pg_sys::Relation, k: usize) -> Cursor {
        let (lo, hi) = self.plan.intervals[k];
        let dlo = self.delta.partition_point(|e| e.key < lo);
        let dhi = self.delta.partition_point(|e| e.key <= hi);
        let meta = self.snapshot.as_ref().unwrap().meta;
        let run = Section::run(&meta);
        let seek_key = if self.backward {
            hi.checked_add(1)
        } else {
            Some(lo)
        };
        let (pos, preloaded) = match seek_key {
            // Backward from the largest ordinal: the end of the run.
            None => (run.entries, None),
            Some(key) => {
                // The view lives only inside this callback: rd_amcache may be
                // rebuilt between callbacks.
                let model = model_pages::load(rel, &meta);
                run.seek(rel, key, model.window(key))
            }
        };
        let run_pos = match self.backward {
            false => (pos < run.entries).then_some(pos),
            true => (pos > 0).then_some(pos),
        };
        // Keep the preloaded page only if it is the one the first batch reads.
        let preloaded =
            preloaded.filter(|_| run_pos.is_some_and(|p| !self.backward || p % run.cap() != 0));
        Cursor {
            lo,
            hi,
            run_pos,
            preloaded,
            dlo,
            dhi,
        }
    }

    /// Emits one run page's worth of the interval merged with its delta
    /// entries. False when the interval is exhausted.
    fn step_interval(&mut self, rel: pg_sys::Relation, k: usize) -> bool {
        if self.cursor.is_none() {
            let c = self.open_interval(rel, k);
            self.cursor = Some(c);
        }
        let run = Section::run(&self.snapshot.as_ref().unwrap().meta);
        let backward = self.backward;
        let c = self.cursor.as_mut().unwrap();
        self.batch.clear();
        let mut run_done = true;
        if let Some(pos) = c.run_pos {
            let page_no = run.page_of(if backward { pos - 1 } else { pos });
            let (buf, page) = c.preloaded.take().unwrap_or_else(|| run.read(rel, page_no));
            let (ps, pe) = run.page_span(page_no);
            run_done = false;
            if !backward {
                for s in (pos - ps) as usize..page.len() {
                    let key = page.key(s);
                    if key > c.hi {
                        run_done = true;
                        break;
                    }
                    if !page.dead(s) {
                        self.batch.push((key, page.tid(s)));
                    }
                }
                run_done |= pe == run.entries;
                c.run_pos = (!run_done).then_some(pe);
            } else {
                for s in (0..(pos - ps) as usize).rev() {
                    let key = page.key(s);
                    if key < c.lo {
                        run_done = true;
                        break;
                    }
                    if !page.dead(s) {
                        self.batch.push((key, page.tid(s)));
                    }
                }
                run_done |= ps == 0;
                c.run_pos = (!run_done).then_some(ps);
            }
            drop(buf);
        }
        let delta = &self.delta;
        for &(key, tid) in &self.batch {
            if !backward {
                while c.dlo < c.dhi && delta[c.dlo].key < key {
                    self.out
                        .push_back((Some(delta[c.dlo].key), delta[c.dlo].tid));
                    c.dlo += 1;
                }
            } else {
                while c.dlo < c.dhi && delta[c.dhi - 1].key > key {
                    self.out
                        .push_back((Some(delta[c.dhi - 1].key), delta[c.dhi - 1].tid));
                    c.dhi -= 1;
                }
            }
            self.out.push_back((Some(key), tid));
        }
        if run_done {
            let rest = &delta[c.dlo..c.dhi];
            if backward {
                self.out
                    .extend(rest.iter().rev().map(|e| (Some(e.key), e.tid)));
            } else {
                self.out.extend(rest.iter().map(|e| (Some(e.key), e.tid)));
            }
            c.dlo = c.dhi;
            return false;
        }
        true
    }
}

unsafe fn count_scan(rel: pg_sys::Relation) {
    if (*rel).pgstat_enabled {
        if (*rel).pgstat_info.is_null() {
            pg_sys::pgstat_assoc_relation(rel);
        }
        if !(*rel).pgstat_info.is_null() {
            (*(*rel).pgstat_info).t_counts.t_numscans += 1;
        }
    }
}

#[pg_guard]
pub unsafe extern "C-unwind" fn amgettuple(
    scan: pg_sys::IndexScanDesc,
    direction: pg_sys::ScanDirection::Type,
) -> bool {
    let rel = (*scan).indexRelation;
    let st = state(scan);
    if st.stage == Stage::Start {
        st.start(
            rel,
            direction == pg_sys::ScanDirection::BackwardScanDirection,
        );
    }
    if !st.fill(rel) {
        return false;
    }
    let (key, tid) = st.out.pop_front().unwrap();
    (*scan).xs_heaptid = tid_to_ptr(tid);
    (*scan).xs_recheck = st.plan.recheck;
    if (*scan).xs_want_itup {
        (*scan).xs_itup = form_tuple(&mut st.itup, st.kind, key);
    }
    true
}

/// Writes the index tuple `index_form_tuple` would build for one by-value key
/// column: an 8-byte header, then the value at offset 8 (every supported
/// type's alignment divides 8), or for NULL the null bitmap and no data.
fn form_tuple(buf: &mut [u64; 3], kind: KeyKind, key: Option<u64>) -> pg_sys::IndexTuple {
    const INDEX_NULL_MASK: u64 = 0x8000;
    *buf = [0; 3];
    match key {
        None => buf[0] = (16 | INDEX_NULL_MASK) << 48, // t_info: size 16, has nulls; bitmap bit 0 clear
        Some(k) => {
            let d = datum(kind, k).value() as u64;
            buf[0] = 16 << 48; // t_info: size 16
            buf[1] = match kind {
                KeyKind::Int2 => d & 0xffff,
                KeyKind::Int4 | KeyKind::Date | KeyKind::Float4 => d & 0xffff_ffff,
                _ => d,
            };
        }
    }
    buf.as_mut_ptr().cast()
}

#[pg_guard]
pub unsafe extern "C-unwind" fn amgetbitmap(
    scan: pg_sys::IndexScanDesc,
    tbm: *mut pg_sys::TIDBitmap,
) -> i64 {
    let rel = (*scan).indexRelation;
    let st = state(scan);
    if st.stage == Stage::Start {
        st.start(rel, false);
    }
    let mut total = 0i64;
    let mut tids: Vec<pg_sys::ItemPointerData> = Vec::new();
    while st.fill(rel) {
        tids.clear();
        tids.extend(st.out.drain(..).map(|(_, t)| tid_to_ptr(t)));
        pg_sys::tbm_add_tuples(tbm, tids.as_mut_ptr(), tids.len() as i32, st.plan.recheck);
        total += tids.len() as i64;
        pgrx::check_for_interrupts!();
    }
    total
}

#[pg_guard]
pub unsafe extern "C-unwind" fn amendscan(scan: pg_sys::IndexScanDesc) {
    let slot = (*scan).opaque as *mut Option<ScanState>;
    drop((*slot).take());
}

#[pg_guard]
pub unsafe extern "C-unwind" fn amcanreturn(_index: pg_sys::Relation, _attno: i32) -> bool {
    true
}
