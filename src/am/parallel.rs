//! Parallel index build (PostgreSQL 17 and later offer it to any access method
//! that sets `amcanbuildparallel`; 15 offers it to btree only).
//!
//! The leader and its workers scan the heap together (a parallel table scan)
//! and each sorts what it saw with its share of `maintenance_work_mem`
//! ([`Sorter`]). A worker writes its sorted entries to a file of a shared file
//! set and exits; the leader merges its own sorted entries with the workers'
//! files and writes the run and trains the model as a serial build does.
//! Only the leader writes the index: the workers share the scan and the sort.

use super::build::scan_heap;
use super::sort::{maintenance_budget, Sorted, Sorter};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const KEY_SHARED: u64 = 0x4C44_B000_0000_0001;
const KEY_BUFFER_USAGE: u64 = 0x4C44_B000_0000_0002;
const KEY_WAL_USAGE: u64 = 0x4C44_B000_0000_0003;

/// What the leader and the workers share, followed in the segment by the
/// parallel table scan's descriptor.
#[repr(C)]
struct Shared {
    heap: pg_sys::Oid,
    index: pg_sys::Oid,
    concurrent: bool,
    /// Bytes of sort memory for each participant.
    budget: usize,
    /// Sums over the participants (f64 bits), and whether any of them met a
    /// broken HOT chain (which `index_build` must learn, as from a serial scan).
    heap_tuples: AtomicU64,
    index_tuples: AtomicU64,
    broken_hot_chain: AtomicBool,
    fileset: pg_sys::SharedFileSet,
}

fn buffer_align(n: usize) -> usize {
    n.next_multiple_of(pg_sys::ALIGNOF_BUFFER as usize)
}

/// # Safety
/// `shared` must point to a `Shared` followed by the scan descriptor.
unsafe fn parallel_scan(shared: *mut Shared) -> pg_sys::ParallelTableScanDesc {
    (shared as *mut u8).add(buffer_align(std::mem::size_of::<Shared>()))
        as pg_sys::ParallelTableScanDesc
}

fn add_f64(a: &AtomicU64, v: f64) {
    let _ = a.fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
        Some((f64::from_bits(bits) + v).to_bits())
    });
}

/// The name of worker `n`'s file in the shared file set.
fn run_name(n: i32) -> std::ffi::CString {
    std::ffi::CString::new(format!("learned-build-{n}")).expect("no NUL")
}

/// Lock modes a participant opens the heap and the index with: those the
/// leader holds (a worker shares the leader's lock group).
fn lock_modes(concurrent: bool) -> (pg_sys::LOCKMODE, pg_sys::LOCKMODE) {
    if concurrent {
        (
            pg_sys::ShareUpdateExclusiveLock as _,
            pg_sys::RowExclusiveLock as _,
        )
    } else {
        (pg_sys::ShareLock as _, pg_sys::AccessExclusiveLock as _)
    }
}

/// Scans this participant's share of the heap and sorts it; returns the
/// sorted entries and how many.
///
/// # Safety
/// `shared` must be the initialized shared state; relations open and locked.
unsafe fn scan_and_sort(
    heap: pg_sys::Relation,
    index: pg_sys::Relation,
    info: *mut pg_sys::IndexInfo,
    shared: *mut Shared,
    progress: bool,
) -> (Sorted, u64) {
    let scan = pg_sys::table_beginscan_parallel(heap, parallel_scan(shared));
    let mut sorter = Sorter::new((*shared).budget);
    let mut entries = 0u64;
    // table_index_build_scan ends the scan.
    let heap_tuples = scan_heap(heap, index, info, progress, scan, |key, tid| {
        entries += 1;
        sorter.put_entry(key, tid);
    });
    add_f64(&(*shared).heap_tuples, heap_tuples);
    add_f64(&(*shared).index_tuples, entries as f64);
    if (*info).ii_BrokenHotChain {
        (*shared).broken_hot_chain.store(true, Ordering::Release);
    }
    (sorter.finish(), entries)
}

/// A parallel build under way: the workers are scanning.
pub struct ParallelBuild {
    pcxt: *mut pg_sys::ParallelContext,
    /// The registered MVCC snapshot of a concurrent build, else null
    /// (SnapshotAny, as a serial build uses).
    snapshot: pg_sys::Snapshot,
    shared: *mut Shared,
    buffer_usage: *mut pg_sys::BufferUsage,
    wal_usage: *mut pg_sys::WalUsage,
}

impl ParallelBuild {
    /// Starts `(*info).ii_ParallelWorkers` workers; `None` when PostgreSQL
    /// asked for none, or none could be started (the build is then serial).
    ///
    /// # Safety
    /// Called from ambuild with the heap and index open and locked.
    pub unsafe fn launch(
        heap: pg_sys::Relation,
        index: pg_sys::Relation,
        info: *mut pg_sys::IndexInfo,
    ) -> Option<ParallelBuild> {
        let nworkers = (*info).ii_ParallelWorkers;
        if nworkers <= 0 {
            return None;
        }
        let concurrent = (*info).ii_Concurrent;
        pg_sys::EnterParallelMode();
        let pcxt = pg_sys::CreateParallelContext(
            c"$libdir/learneddb".as_ptr(),
            c"learned_parallel_build_main".as_ptr(),
            nworkers,
        );
        // As a serial build: every tuple version (SnapshotAny) unless the
        // build is concurrent, which indexes what its snapshot sees.
        let snapshot = if concurrent {
            pg_sys::RegisterSnapshot(pg_sys::GetTransactionSnapshot())
        } else {
            std::ptr::null_mut()
        };
        let scan_snapshot = if snapshot.is_null() {
            std::ptr::addr_of_mut!(pg_sys::SnapshotAnyData)
        } else {
            snapshot
        };
        let shared_size = buffer_align(std::mem::size_of::<Shared>())
            + pg_sys::table_parallelscan_estimate(heap, scan_snapshot);
        let usage_sizes = [
            std::mem::size_of::<pg_sys::BufferUsage>() * nworkers as usize,
            std::mem::size_of::<pg_sys::WalUsage>() * nworkers as usize,
        ];
        // shm_toc_estimate_chunk and shm_toc_estimate_keys are C macros.
        let e = &mut (*pcxt).estimator;
        for size in [shared_size, usage_sizes[0], usage_sizes[1]] {
            e.space_for_chunks += buffer_align(size);
        }
        e.number_of_keys += 3;
        pg_sys::InitializeParallelDSM(pcxt);
        let build = ParallelBuild {
            pcxt,
            snapshot,
            shared: std::ptr::null_mut(),
            buffer_usage: std::ptr::null_mut(),
            wal_usage: std::ptr::null_mut(),
        };
        if (*pcxt).seg.is_null() {
            // No dynamic shared memory to be had: build serially.
            build.end();
            return None;
        }
        let toc = (*pcxt).toc;
        let shared = pg_sys::shm_toc_allocate(toc, shared_size) as *mut Shared;
        // SAFETY: fresh shared memory of `shared_size` bytes; the file set is
        // initialized in place just below.
        std::ptr::write(
            shared,
            Shared {
                heap: (*(*heap).rd_rel).oid,
                index: (*(*index).rd_rel).oid,
                concurrent,
                budget: maintenance_budget() / (nworkers as usize + 1),
                heap_tuples: AtomicU64::new(0f64.to_bits()),
                index_tuples: AtomicU64::new(0f64.to_bits()),
                broken_hot_chain: AtomicBool::new(false),
                fileset: std::mem::zeroed(),
            },
        );
        pg_sys::SharedFileSetInit(std::ptr::addr_of_mut!((*shared).fileset), (*pcxt).seg);
        pg_sys::table_parallelscan_initialize(heap, parallel_scan(shared), scan_snapshot);
        pg_sys::shm_toc_insert(toc, KEY_SHARED, shared as *mut std::ffi::c_void);
        let buffer_usage = pg_sys::shm_toc_allocate(toc, usage_sizes[0]);
        std::ptr::write_bytes(buffer_usage as *mut u8, 0, usage_sizes[0]);
        pg_sys::shm_toc_insert(toc, KEY_BUFFER_USAGE, buffer_usage);
        let wal_usage = pg_sys::shm_toc_allocate(toc, usage_sizes[1]);
        std::ptr::write_bytes(wal_usage as *mut u8, 0, usage_sizes[1]);
        pg_sys::shm_toc_insert(toc, KEY_WAL_USAGE, wal_usage);
        let build = ParallelBuild {
            shared,
            buffer_usage: buffer_usage as *mut pg_sys::BufferUsage,
            wal_usage: wal_usage as *mut pg_sys::WalUsage,
            ..build
        };
        pg_sys::LaunchParallelWorkers(pcxt);
        pgrx::debug1!(
            "learned index \"{}\": {} of {nworkers} parallel workers launched",
            crate::storage::page::relation_name(index),
            (*pcxt).nworkers_launched
        );
        if (*pcxt).nworkers_launched == 0 {
            build.end();
            return None;
        }
        Some(build)
    }

    /// The leader's share of the scan and sort, then every participant's
    /// entries merged. Returns them with the heap and index tuple counts.
    ///
    /// # Safety
    /// As `launch`, on the relations it was launched for.
    pub unsafe fn sort(
        &mut self,
        heap: pg_sys::Relation,
        index: pg_sys::Relation,
        info: *mut pg_sys::IndexInfo,
    ) -> (Sorted, f64, f64) {
        // The leader scans a share too unless parallel_leader_participation
        // is off (then `launch` saw at least one worker start).
        let mut sorted = if pg_sys::parallel_leader_participation {
            scan_and_sort(heap, index, info, self.shared, true).0
        } else {
            Sorter::new(0).finish()
        };
        super::build::progress(
            pg_sys::PROGRESS_CREATEIDX_SUBPHASE,
            super::handler::PHASE_SORT,
        );
        // Raises a worker's ERROR here, in the leader.
        pg_sys::WaitForParallelWorkersToFinish(self.pcxt);
        let launched = (*self.pcxt).nworkers_launched;
        for i in 0..launched as usize {
            pg_sys::InstrAccumParallelQuery(self.buffer_usage.add(i), self.wal_usage.add(i));
        }
        let shared = self.shared;
        if (*shared).broken_hot_chain.load(Ordering::Acquire) {
            (*info).ii_BrokenHotChain = true;
        }
        for n in 0..launched {
            let file = pg_sys::BufFileOpenFileSet(
                std::ptr::addr_of_mut!((*shared).fileset.fs),
                run_name(n).as_ptr(),
                0, // O_RDONLY
                false,
            );
            sorted.add_file_run(file);
        }
        // The merge starts over with the workers' runs in it.
        sorted.rewind();
        (
            sorted,
            f64::from_bits((*shared).heap_tuples.load(Ordering::Acquire)),
            f64::from_bits((*shared).index_tuples.load(Ordering::Acquire)),
        )
    }

    /// Ends parallel mode; the workers' files go with the shared memory.
    /// Called once the merged entries have been read.
    pub fn end(self) {
        // SAFETY: the context and snapshot were created by `launch` in this
        // transaction and are released once.
        unsafe {
            if !self.snapshot.is_null() {
                pg_sys::UnregisterSnapshot(self.snapshot);
            }
            pg_sys::DestroyParallelContext(self.pcxt);
            pg_sys::ExitParallelMode();
        }
    }
}

/// A parallel build's worker: scans and sorts its share, writes it to its
/// file in the shared file set. PostgreSQL finds it by name in our library.
///
/// # Safety
/// Called by PostgreSQL's parallel worker machinery with the segment and
/// table of contents the leader set up in `launch`.
#[no_mangle]
#[pg_guard]
pub unsafe extern "C-unwind" fn learned_parallel_build_main(
    seg: *mut pg_sys::dsm_segment,
    toc: *mut pg_sys::shm_toc,
) {
    // Counts the buffers and WAL of everything below, relation opens included.
    pg_sys::InstrStartParallelQuery();
    let shared = pg_sys::shm_toc_lookup(toc, KEY_SHARED, false) as *mut Shared;
    let buffer_usage =
        pg_sys::shm_toc_lookup(toc, KEY_BUFFER_USAGE, false) as *mut pg_sys::BufferUsage;
    let wal_usage = pg_sys::shm_toc_lookup(toc, KEY_WAL_USAGE, false) as *mut pg_sys::WalUsage;
    let (heap_lock, index_lock) = lock_modes((*shared).concurrent);
    let heap = pg_sys::table_open((*shared).heap, heap_lock);
    let index = pg_sys::index_open((*shared).index, index_lock);
    let info = pg_sys::BuildIndexInfo(index);
    (*info).ii_Concurrent = (*shared).concurrent;
    // Keeps the files alive until the last participant detaches.
    pg_sys::SharedFileSetAttach(std::ptr::addr_of_mut!((*shared).fileset), seg);
    let (mut sorted, entries) = scan_and_sort(heap, index, info, shared, false);
    let file = pg_sys::BufFileCreateFileSet(
        std::ptr::addr_of_mut!((*shared).fileset.fs),
        run_name(pg_sys::ParallelWorkerNumber).as_ptr(),
    );
    let written = sorted.write_all(file);
    pg_sys::BufFileClose(file);
    if written != entries {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("parallel learned index build: sorted {entries} entries but wrote {written}")
        );
    }
    sorted.end();
    let n = pg_sys::ParallelWorkerNumber as usize;
    pg_sys::InstrEndParallelQuery(buffer_usage.add(n), wal_usage.add(n));
    pg_sys::index_close(index, index_lock);
    pg_sys::table_close(heap, heap_lock);
}
