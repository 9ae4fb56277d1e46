//! The background worker that retrains learned indexes (DESIGN.md section 3b).
//!
//! With `shared_preload_libraries = 'learneddb'` the postmaster starts a
//! launcher. Every `learneddb.retrain_naptime` seconds it lists the databases
//! that accept connections (new ones too) and, one at a time, starts a worker
//! in each. That worker visits the database's learned indexes, each in a
//! transaction of its own, and retrains those whose delta has passed their
//! threshold (the `retrain_threshold` reloption, else
//! `learneddb.retrain_threshold`), unless the index opted out
//! (`retrain = off`). It never waits for a lock: a table VACUUM (or a
//! retrain) is working on is skipped until the next round, and a retrain
//! under way gives way to a session that waits for a lock on its table. An ERROR in one
//! index (a damaged page, say) is logged and rolled back, and the worker goes
//! on with the next index, as autovacuum goes on past a table it cannot
//! vacuum.

use crate::am::insert::SLICE_PAGES;
use crate::am::options::retrain_settings;
use crate::retrain::retrain_giving_way;
use crate::stats::{name_of, Opened};
use crate::storage::buffer::BulkRead;
use crate::storage::{delta, Meta};
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use pgrx::{pg_shmem_init, pg_sys, GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::{PGRXSharedMemory, PgAtomic, PgLwLock};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static RETRAIN: GucSetting<bool> = GucSetting::<bool>::new(true);
static NAPTIME: GucSetting<i32> = GucSetting::<i32>::new(60);
static THRESHOLD: GucSetting<f64> = GucSetting::<f64>::new(0.1);

/// Why the worker last left an index past its threshold alone, per index, in
/// shared memory (which exists only with the preload, as the worker does).
static SKIPS: PgLwLock<Skips> = unsafe { PgLwLock::new(c"learneddb retrain skips") };
/// Set in the postmaster when `SKIPS` and `WAKE` are set up; backends
/// inherit it.
static SHMEM_READY: AtomicBool = AtomicBool::new(false);
/// How an inserter whose index looks due calls the launcher before its
/// naptime is up (see [`call_launcher`]).
static WAKE: PgAtomic<Wake> = unsafe { PgAtomic::new(c"learneddb launcher wake") };
/// The launcher visits a database it was called to at most this often: a
/// stream of 200,000 appended rows a second grows the delta by that much
/// between two visits a second apart, 16 bytes a row against about one in
/// the packed run of a table in key order (35% of a 10M-row index).
const WAKE_GAP: Duration = Duration::from_millis(250);

/// Databases that can call the launcher at once; more wait for a free slot.
const CALL_SLOTS: usize = 8;

#[derive(Default)]
struct Wake {
    /// The launcher's latch (`MyLatch`, an address in shared memory, the same
    /// in every process), 0 while no launcher has started.
    latch: AtomicUsize,
    /// Databases whose due indexes called the launcher, 0 for a free slot.
    called: [AtomicU32; CALL_SLOTS],
}

// SAFETY: atomics only; the latch address points into shared memory.
unsafe impl PGRXSharedMemory for Wake {}
const SKIP_SLOTS: usize = 256;

/// Why a retrain the threshold called for did not happen.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Skip {
    /// The table or index could not be locked at once: a VACUUM, a manual
    /// retrain or DDL held it.
    Locked = 1,
    /// Transactions older than the last retrain were still running.
    OldSnapshots = 2,
    /// Visiting it raised an ERROR, which the server log has.
    Failed = 3,
}

impl Skip {
    fn describe(self) -> &'static str {
        match self {
            Skip::Locked => "table locked (VACUUM, a retrain or DDL was running or waiting)",
            Skip::OldSnapshots => "transactions older than the last retrain were running",
            Skip::Failed => "an ERROR while the worker visited it (see the server log)",
        }
    }
}

#[derive(Clone, Copy, Default)]
struct SkipSlot {
    database: u32,
    index: u32,
    reason: u8,
    at: i64,
}

#[derive(Clone, Copy)]
struct Skips {
    slots: [SkipSlot; SKIP_SLOTS],
}

impl Default for Skips {
    fn default() -> Skips {
        Skips {
            slots: [SkipSlot::default(); SKIP_SLOTS],
        }
    }
}

// SAFETY: plain old data, no pointers; read and written under the LWLock.
unsafe impl PGRXSharedMemory for Skips {}

/// Records (or with `None` clears) why the worker skipped `index` of this
/// database. The oldest entry makes room when the table is full.
fn note_skip(index: pg_sys::Oid, skip: Option<Skip>) {
    if !SHMEM_READY.load(Ordering::Relaxed) {
        return;
    }
    // SAFETY: reads this backend's database id and the clock.
    let (database, at) = unsafe { (pg_sys::MyDatabaseId.to_u32(), pg_sys::GetCurrentTimestamp()) };
    let index = index.to_u32();
    let mut skips = SKIPS.exclusive();
    let slots = &mut skips.slots;
    let found = slots
        .iter()
        .position(|s| s.reason != 0 && s.database == database && s.index == index);
    match (found, skip) {
        (Some(i), None) => slots[i] = SkipSlot::default(),
        (None, None) => {}
        (found, Some(reason)) => {
            let i = found
                .or_else(|| slots.iter().position(|s| s.reason == 0))
                .unwrap_or_else(|| (0..SKIP_SLOTS).min_by_key(|&i| slots[i].at).unwrap());
            slots[i] = SkipSlot {
                database,
                index,
                reason: reason as u8,
                at,
            };
        }
    }
}

/// Why the worker last skipped `index` (of this database) and when, unless
/// it retrained it since; `None` without the preload.
pub fn last_skip(index: pg_sys::Oid) -> Option<(&'static str, i64)> {
    if !SHMEM_READY.load(Ordering::Relaxed) {
        return None;
    }
    // SAFETY: reads this backend's database id.
    let database = unsafe { pg_sys::MyDatabaseId.to_u32() };
    let index = index.to_u32();
    let skips = SKIPS.share();
    let slot = skips
        .slots
        .iter()
        .find(|s| s.reason != 0 && s.database == database && s.index == index)?;
    let reason = match slot.reason {
        1 => Skip::Locked,
        2 => Skip::OldSnapshots,
        _ => Skip::Failed,
    };
    Some((reason.describe(), slot.at))
}

/// Calls the launcher to this database soon if `index`, whose metapage an
/// inserter read as `meta`, looks due (see [`looks_due`]), so that the worker
/// retrains it then rather than a naptime later: a fast stream of appended
/// rows would otherwise grow the delta (16 bytes a row) to several times the
/// packed run, and rows that spill cost every lookup until a retrain. Only
/// for an index the worker would retrain (the preload, the GUC and the
/// reloption on, not temporary). While this database's call is pending, it
/// costs a few relaxed reads.
pub fn call_launcher(index: pg_sys::Relation, meta: &Meta) {
    if !SHMEM_READY.load(Ordering::Relaxed) || !RETRAIN.get() {
        return;
    }
    let wake = WAKE.get();
    // SAFETY: reads this backend's database id.
    let database = unsafe { pg_sys::MyDatabaseId.to_u32() };
    if wake
        .called
        .iter()
        .any(|c| c.load(Ordering::Relaxed) == database)
    {
        return;
    }
    // SAFETY: `index` is an open learned index (the caller inserts into it).
    let (enabled, threshold) = unsafe { retrain_settings(index) };
    // SAFETY: as above.
    let temporary = unsafe {
        (*(*index).rd_rel).relpersistence == pg_sys::RELPERSISTENCE_TEMP as std::ffi::c_char
    };
    let eligible =
        enabled && !temporary && looks_due(meta, threshold.unwrap_or_else(|| THRESHOLD.get()));
    let taken = eligible
        && wake.called.iter().any(|c| {
            c.compare_exchange(0, database, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        });
    if !taken {
        return;
    }
    let latch = wake.latch.load(Ordering::Acquire);
    if latch != 0 {
        // SAFETY: the launcher's latch, in shared memory for the life of the
        // cluster; setting the latch of a process that has exited is harmless.
        unsafe { pg_sys::SetLatch(latch as *mut pg_sys::Latch) };
    }
}

/// Defines the GUCs and, when loaded by `shared_preload_libraries`, registers
/// the launcher. Called from `_PG_init`.
pub fn init() {
    GucRegistry::define_bool_guc(
        c"learneddb.retrain",
        c"Whether the background worker retrains learned indexes.",
        c"Needs learneddb in shared_preload_libraries; learned_retrain() works either way.",
        &RETRAIN,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"learneddb.retrain_naptime",
        c"Seconds between the background worker's visits to each database.",
        c"",
        &NAPTIME,
        1,
        86400,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_float_guc(
        c"learneddb.retrain_threshold",
        c"Delta size, as a fraction of the run, past which the worker retrains an index.",
        c"An index's retrain_threshold reloption overrides it.",
        &THRESHOLD,
        0.0,
        1000.0,
        GucContext::Sighup,
        GucFlags::default(),
    );
    // SAFETY: reads a flag the postmaster sets while loading preloaded libraries.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        pg_shmem_init!(SKIPS);
        pg_shmem_init!(WAKE);
        SHMEM_READY.store(true, Ordering::Relaxed);
        BackgroundWorkerBuilder::new("learneddb launcher")
            .set_type("learneddb launcher")
            .set_library("learneddb")
            .set_function("learneddb_launcher_main")
            .enable_spi_access()
            .set_start_time(BgWorkerStartTime::RecoveryFinished)
            .set_restart_time(Some(Duration::from_secs(10)))
            .load();
    }
}

fn naptime() -> Duration {
    Duration::from_secs(NAPTIME.get().max(1) as u64)
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn learneddb_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // No database: the launcher reads only the shared catalog pg_database.
    BackgroundWorker::connect_worker_to_spi(None, None);
    let wake = WAKE.get();
    // SAFETY: reads this process's latch pointer, set before bgworker code runs.
    wake.latch
        .store(unsafe { pg_sys::MyLatch } as usize, Ordering::Release);
    rounds(wake);
    // The latch may go to another process once this one exits.
    wake.latch.store(0, Ordering::Release);
    if stopping() {
        // Exit code 1: the postmaster starts the launcher again (after
        // `bgw_restart_time`) unless it is shutting down, so that
        // `pg_terminate_backend` on it does not end retraining until the
        // next restart. (Code 0 would unregister it.)
        // SAFETY: ends this process as any backend ends, running its
        // exit callbacks; nothing of this function is used after.
        unsafe { pg_sys::proc_exit(1) };
    }
}

/// Whether the launcher was told to stop (SIGTERM). pgrx's handler sets
/// `ShutdownRequestPending`, which stays set; its own flag is cleared by
/// every read, so a SIGTERM read once (while a database was visited) was
/// lost, and the launcher went on to start workers the postmaster, shutting
/// down, never started, and waited for them.
fn stopping() -> bool {
    // SAFETY: a flag of this process, set by its signal handler.
    unsafe { std::ptr::addr_of!(pg_sys::ShutdownRequestPending).read_volatile() != 0 }
}

/// The launcher's rounds, until SIGTERM or the postmaster's death.
fn rounds(wake: &Wake) {
    let (mut last_round, mut last_visit) = (Instant::now(), Instant::now());
    loop {
        if BackgroundWorker::sighup_received() {
            // SAFETY: reloads the configuration file, as any backend does on SIGHUP.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let called = wake.called.iter().any(|c| c.load(Ordering::Acquire) != 0);
        let wait = naptime().saturating_sub(last_round.elapsed());
        let wait = if called {
            wait.min(WAKE_GAP.saturating_sub(last_visit.elapsed()))
        } else {
            wait
        };
        if !wait.is_zero() {
            // Rounded up: a timeout below a millisecond would be none.
            if !BackgroundWorker::wait_latch(Some(wait.max(Duration::from_millis(1)))) || stopping()
            {
                return;
            }
            continue;
        }
        // Every database once the naptime is up, else the ones that called.
        let every = last_round.elapsed() >= naptime();
        if every {
            last_round = Instant::now();
        }
        // Calls made from here on (rows inserted while the visit runs) are
        // served a gap after it ends, so the launcher always waits (and
        // reloads its settings) between visits, however long they take.
        let called: Vec<u32> = wake
            .called
            .iter()
            .map(|c| c.swap(0, Ordering::AcqRel))
            .filter(|&d| d != 0)
            .collect();
        visit_databases(every, &called);
        last_visit = Instant::now();
        if stopping() {
            return;
        }
    }
}

/// Starts a retrain worker in every database (`every`), else in the
/// databases that `called`, one after the other.
fn visit_databases(every: bool, called: &[u32]) {
    if !RETRAIN.get() {
        return;
    }
    let visit = databases()
        .into_iter()
        .filter(|(oid, _)| every || called.contains(oid))
        .map(|(_, name)| name);
    for db in visit {
        if stopping() {
            return;
        }
        // SAFETY: reads this process's pid.
        let me = unsafe { pg_sys::MyProcPid };
        let started = BackgroundWorkerBuilder::new("learneddb retrain")
            .set_type("learneddb retrain")
            .set_library("learneddb")
            .set_function("learneddb_database_main")
            .enable_spi_access()
            .set_extra(&db)
            .set_notify_pid(me)
            .load_dynamic();
        // No free worker slot: try again next round.
        if let Ok(worker) = started {
            if worker.wait_for_startup().is_ok() {
                let _ = worker.wait_for_shutdown();
            }
        }
    }
}

/// `pg_database.datconnlimit` of a database a DROP DATABASE left half done
/// (PostgreSQL 15.4 and later; earlier headers lack the name).
const DATCONNLIMIT_INVALID_DB: i32 = -2;

/// Databases that accept connections (OID and name), from the shared catalog.
fn databases() -> Vec<(u32, String)> {
    let mut names = Vec::new();
    // SAFETY: the autovacuum launcher's recipe (get_database_list): a catalog
    // scan of pg_database in a transaction of its own; the names are copied
    // out before the transaction ends.
    unsafe {
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        let rel = pg_sys::table_open(pg_sys::DatabaseRelationId, pg_sys::AccessShareLock as i32);
        let scan = pg_sys::table_beginscan_catalog(rel, 0, std::ptr::null_mut());
        loop {
            let tup = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tup.is_null() {
                break;
            }
            let form = pg_sys::GETSTRUCT(tup) as *const pg_sys::FormData_pg_database;
            // An interrupted DROP DATABASE leaves the database invalid: it
            // refuses connections, as a worker's would be.
            let valid = (*form).datconnlimit != DATCONNLIMIT_INVALID_DB;
            if (*form).datallowconn && !(*form).datistemplate && valid {
                let name = std::ffi::CStr::from_ptr((*form).datname.data.as_ptr());
                names.push(((*form).oid.to_u32(), name.to_string_lossy().into_owned()));
            }
        }
        pg_sys::table_endscan(scan);
        pg_sys::table_close(rel, pg_sys::AccessShareLock as i32);
        pg_sys::PopActiveSnapshot();
        pg_sys::CommitTransactionCommand();
    }
    names
}

extern "C-unwind" {
    /// PostgreSQL's SIGTERM handler for backends (`tcop/postgres.c`), the C
    /// function itself: a signal handler must not be the wrapper pgrx
    /// generates for calls from Rust.
    #[link_name = "die"]
    fn postgres_die(signal: std::ffi::c_int);
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn learneddb_database_main(_arg: pg_sys::Datum) {
    // SIGTERM (shutdown, `pg_terminate_backend`, DROP DATABASE ... FORCE)
    // ends the worker at its next interrupt check, as it ends an autovacuum
    // worker, with FATAL: a retrain stopped so leaves what a failed one does,
    // reclaimed by the next. (pgrx's handler only sets a flag that nothing
    // inside a retrain reads.) Installed before pgrx unblocks signals.
    // SAFETY: installs PostgreSQL's own handler for backends.
    unsafe {
        #[cfg(not(feature = "pg18"))]
        pg_sys::pqsignal(pg_sys::SIGTERM as i32, Some(postgres_die));
        #[cfg(feature = "pg18")]
        pg_sys::pqsignal_be(pg_sys::SIGTERM as i32, Some(postgres_die));
    }
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP);
    let db = BackgroundWorker::get_extra().to_string();
    BackgroundWorker::connect_worker_to_spi(Some(&db), None);
    let indexes: Vec<pg_sys::Oid> = BackgroundWorker::transaction(|| {
        // Temporary tables of other sessions cannot be read from here; an
        // index a concurrent build has not made valid has nothing to merge.
        Spi::connect(|c| {
            c.select(
                "SELECT c.oid FROM pg_class c JOIN pg_am a ON a.oid = c.relam
                  JOIN pg_index i ON i.indexrelid = c.oid AND i.indisvalid
                  WHERE a.amname = 'learned' AND c.relkind = 'i' AND c.relpersistence <> 't'
                  ORDER BY c.oid",
                None,
                &[],
            )
            .map(|rows| {
                rows.filter_map(|r| r.get::<pg_sys::Oid>(1).ok().flatten())
                    .collect()
            })
            .unwrap_or_default()
        })
    });
    let mut retrained = Vec::new();
    for oid in indexes {
        pgrx::check_for_interrupts!();
        if index_transaction(oid, move || visit(oid)).unwrap_or(false) {
            retrained.push(oid);
        }
    }
    retire_soon(retrained);
}

/// How long a database worker waits, after retraining, for the snapshots
/// that can read the generations it replaced to end.
const RETIRE_WAIT: Duration = Duration::from_millis(500);

/// Retires the generations the retrains of this visit replaced as soon as
/// no snapshot can read them (the running transactions of an OLTP stream
/// end within milliseconds), rather than at the index's next retrain: until
/// then the delta pages merged are not reused, and an index under a steady
/// stream would hold two deltas rather than one. Gives up after
/// [`RETIRE_WAIT`] (a long transaction holds it back, and the launcher
/// waits for this worker before it visits another database); the next
/// visit tries again.
fn retire_soon(mut pending: Vec<pg_sys::Oid>) {
    let deadline = Instant::now() + RETIRE_WAIT;
    while !pending.is_empty() && Instant::now() < deadline {
        if !BackgroundWorker::wait_latch(Some(Duration::from_millis(20))) {
            return;
        }
        pgrx::check_for_interrupts!();
        pending.retain(|&oid| {
            let done = index_transaction(oid, move || match lock_for_retrain(oid) {
                Ok(rel) => crate::retrain::retire_unread(rel.index, rel.heap),
                Err(Unlocked::Dropped) => true,
                Err(Unlocked::Busy) => false,
            });
            // After an ERROR, the next visit tries again.
            !done.unwrap_or(true)
        });
    }
}

/// Runs `body`, the worker's work on index `oid`, in a transaction of its
/// own. An ERROR (a damaged page, say) is logged, rolled back and noted for
/// the statistics, and gives `None`: otherwise one failing index would end
/// the database's worker at every visit, before the indexes after it.
fn index_transaction<R>(
    oid: pg_sys::Oid,
    body: impl FnOnce() -> R + std::panic::UnwindSafe + std::panic::RefUnwindSafe,
) -> Option<R> {
    PgTryBuilder::new(move || Some(BackgroundWorker::transaction(body)))
        .catch_others(move |e| {
            let report = match &e {
                CaughtError::PostgresError(r)
                | CaughtError::ErrorReport(r)
                | CaughtError::RustPanic { ereport: r, .. } => r,
            };
            // SAFETY: autovacuum's recovery from an ERROR in one table
            // (do_autovacuum): the error was copied out and its state
            // flushed when it was caught; aborting releases the locks,
            // buffer pins and memory of the failed transaction, with
            // interrupts held off meanwhile as PostgresMain does.
            unsafe {
                pg_sys::InterruptHoldoffCount += 1;
                pg_sys::AbortOutOfAnyTransaction();
                pg_sys::InterruptHoldoffCount -= 1;
            }
            let name = match BackgroundWorker::transaction(move || name_of(oid)) {
                name if name.is_empty() => format!("with OID {}", oid.to_u32()),
                name => format!("\"{name}\""),
            };
            let message = format!(
                "learneddb: the retrain worker skipped index {name}: {}",
                report.message()
            );
            match report.detail() {
                Some(detail) => {
                    ereport!(PgLogLevel::LOG, report.sql_error_code(), message, detail)
                }
                None => ereport!(PgLogLevel::LOG, report.sql_error_code(), message),
            }
            let skip = if crate::retrain::gave_way() {
                Skip::Locked
            } else {
                Skip::Failed
            };
            note_skip(oid, Some(skip));
            None
        })
        .execute()
}

/// Why [`lock_for_retrain`] did not open an index.
enum Unlocked {
    Dropped,
    /// Its table or the index is locked (VACUUM, a retrain or DDL).
    Busy,
}

/// Opens index `oid` and its table with a retrain's locks, if they can be
/// had at once.
fn lock_for_retrain(oid: pg_sys::Oid) -> Result<Opened, Unlocked> {
    let share_update = pg_sys::ShareUpdateExclusiveLock as i32;
    let row_exclusive = pg_sys::RowExclusiveLock as i32;
    // SAFETY: catalog lookups and conditional locks; the relations are opened
    // only once locked and known to exist, and closed by `Opened`.
    unsafe {
        let heap = pg_sys::IndexGetRelation(oid, true);
        if heap == pg_sys::InvalidOid {
            return Err(Unlocked::Dropped);
        }
        if !pg_sys::ConditionalLockRelationOid(heap, share_update) {
            return Err(Unlocked::Busy);
        }
        if !pg_sys::ConditionalLockRelationOid(oid, row_exclusive) {
            pg_sys::UnlockRelationOid(heap, share_update);
            return Err(Unlocked::Busy);
        }
        // Dropped between the listing and the locks?
        if pg_sys::IndexGetRelation(oid, true) != heap {
            pg_sys::UnlockRelationOid(oid, row_exclusive);
            pg_sys::UnlockRelationOid(heap, share_update);
            return Err(Unlocked::Dropped);
        }
        Ok(Opened::from_open(
            pg_sys::table_open(heap, pg_sys::NoLock as i32),
            pg_sys::index_open(oid, pg_sys::NoLock as i32),
            share_update,
            row_exclusive,
        ))
    }
}

/// Retires index `oid`'s previous generation if no snapshot can read it any
/// more, then retrains the index if its delta passed its threshold and its
/// table can be locked at once; otherwise notes why not, for the statistics.
/// True if it retrained.
fn visit(oid: pg_sys::Oid) -> bool {
    let rel = match lock_for_retrain(oid) {
        Ok(rel) => rel,
        Err(Unlocked::Dropped) => return false,
        Err(Unlocked::Busy) => {
            skipped_while_locked(oid);
            return false;
        }
    };
    crate::retrain::retire_unread(rel.index, rel.heap);
    if !due(rel.index) {
        note_skip(oid, None);
        return false;
    }
    // SAFETY: the index is open.
    let name = unsafe { crate::storage::page::relation_name(rel.index) };
    match retrain_giving_way(&rel) {
        Some(r) => {
            note_skip(oid, None);
            log!(
                "learneddb: retrained index \"{name}\" ({}): generation {}, {} delta entries merged, {} entries, {} pages written, {} blocks ({} free), {:.3} s",
                r.path.name(),
                r.generation,
                r.merged,
                r.entries,
                r.pages_written,
                r.blocks,
                r.free_blocks,
                r.seconds
            );
            true
        }
        None => {
            note_skip(oid, Some(Skip::OldSnapshots));
            debug1!(
                "learneddb: index \"{name}\" skipped: {}",
                Skip::OldSnapshots.describe()
            );
            false
        }
    }
}

/// Whether the index takes part in retraining and its delta passed its
/// threshold, as a fraction of the run's entries or of its pages, whichever
/// comes first: a delta row takes 16 bytes where a packed run of a table in
/// key order takes about one, so counting entries alone let the delta of
/// time-ordered rows grow to several times the run before the (cheap)
/// append. Rows that spilled inside the run (their pages were full) count
/// apart: a tenth of the threshold of them (at least 1024) calls for a merge,
/// which gives the run pages room again; fewer are carried over by an append
/// (the stragglers of concurrent appenders, below the keys appended last).
fn due(index: pg_sys::Relation) -> bool {
    // SAFETY: the index is open.
    let (enabled, threshold) = unsafe { retrain_settings(index) };
    if !enabled || crate::storage::buffer::nblocks(index) == 0 {
        return false;
    }
    let meta = Meta::read(index);
    // A retrain froze the delta and ended without its switch (an ERROR, a
    // cancel, a crash; none runs now, the caller holds the lock): until the
    // next one, every row inside the run goes to the delta, and inserts read
    // the metapage, so the next comes now rather than at the threshold.
    if meta.insert_generation != meta.generation {
        return true;
    }
    let ring = BulkRead::new();
    let counts = delta::count(index, &meta, ring.get());
    past_threshold(&meta, &counts, threshold.unwrap_or_else(|| THRESHOLD.get()))
}

/// [`due`] from the metapage's counts alone, for an inserter: the closed
/// delta pages of the current generation, each taken as full. (VACUUM can
/// empty some; the worker counts exactly.) Which of them spilled the
/// metapage does not say; once any did, either way may be due.
fn looks_due(meta: &Meta, threshold: f64) -> bool {
    let entries = meta.closed_pages as u64 * delta::DELTA_CAPACITY as u64;
    let pages = meta.closed_pages as u64 + meta.n_open as u64;
    let appended = delta::Counts {
        entries,
        pages,
        ..Default::default()
    };
    let spilled = delta::Counts {
        spilled_entries: entries,
        spilled_pages: pages,
        ..appended
    };
    past_threshold(meta, &appended, threshold)
        || (meta.spilled != 0 && past_threshold(meta, &spilled, threshold))
}

/// Whether delta `c` passed `threshold` for the generation `meta`
/// describes (see [`due`]).
fn past_threshold(meta: &Meta, c: &delta::Counts, threshold: f64) -> bool {
    if merges_spilled(meta, (c.spilled_entries, c.spilled_pages), threshold) {
        return true;
    }
    let entries = c.entries - c.spilled_entries;
    let pages = c.pages - c.spilled_pages;
    let fraction = entries as f64 / (meta.run_entries + meta.null_entries).max(1) as f64;
    let size = pages as f64 / (meta.run_pages + meta.null_pages).max(1) as f64;
    let by_size = pages >= MIN_DELTA_PAGES && size >= threshold;
    entries > 0 && (fraction >= threshold || by_size)
}

/// Whether rows that spilled, `(rows, pages)`, call for a merge of the
/// generation `meta` describes: a tenth of `threshold` of its entries (at
/// least [`SPILLED_ENTRIES`]), or as many delta pages as make a lookup read
/// five times `threshold` of a page more on average (half a page at the
/// default 0.1; at least [`MIN_DELTA_PAGES`]). A lookup reads every delta
/// page of its slice of the run, and each retrain leaves a page per slice
/// that took rows since the freeze, filled or not: counting rows alone let
/// a few rows on many pages cost every lookup five pages and never call for
/// a merge. Fewer are carried over by an append.
fn merges_spilled(meta: &Meta, (rows, pages): (u64, u64), threshold: f64) -> bool {
    let share = (meta.run_entries + meta.null_entries) as f64 * threshold / 10.0;
    let slices = (meta.run_pages / SLICE_PAGES).max(1) as f64;
    let per_lookup = pages as f64 / slices;
    rows > 0
        && (rows >= SPILLED_ENTRIES.max(share as u64)
            || (pages >= MIN_DELTA_PAGES && per_lookup >= threshold * 5.0))
}

/// [`merges_spilled`] with `index`'s threshold, for a retrain deciding
/// whether to carry its spilled rows, `(rows, pages)`, over an append.
pub fn spilled_call_for_merge(index: pg_sys::Relation, meta: &Meta, spilled: (u64, u64)) -> bool {
    // SAFETY: the caller has the index open.
    let (_, threshold) = unsafe { retrain_settings(index) };
    merges_spilled(meta, spilled, threshold.unwrap_or_else(|| THRESHOLD.get()))
}

/// Spilled rows below which a merge is not worth it whatever the index's
/// size: about two delta pages.
const SPILLED_ENTRIES: u64 = 1024;

/// Delta pages below which the delta's size alone does not call for a
/// retrain: a small index would otherwise be retrained for every page.
const MIN_DELTA_PAGES: u64 = 8;

/// Notes a skip for an index its table's lock kept from being retrained, if
/// it was due (read under a share lock on the index alone; if even that is
/// not to be had at once, DDL holds it and it counts as locked).
fn skipped_while_locked(oid: pg_sys::Oid) {
    let share = pg_sys::AccessShareLock as i32;
    // SAFETY: a conditional lock; the index is opened only once locked and
    // still there, and closed with the lock released before returning.
    let due = unsafe {
        if !pg_sys::ConditionalLockRelationOid(oid, share) {
            true
        } else if pg_sys::IndexGetRelation(oid, true) == pg_sys::InvalidOid {
            pg_sys::UnlockRelationOid(oid, share);
            return;
        } else {
            let index = pg_sys::index_open(oid, pg_sys::NoLock as i32);
            let due = due(index);
            pg_sys::index_close(index, share);
            due
        }
    };
    if due {
        note_skip(oid, Some(Skip::Locked));
        debug1!(
            "learneddb: index {} skipped: {}",
            oid.to_u32(),
            Skip::Locked.describe()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run of 6,400 pages (400 slices) and 10M entries, at the default
    /// threshold of 0.1.
    fn run() -> Meta {
        // SAFETY: `Meta` is plain old data, for which all zeroes is valid.
        let mut m: Meta = unsafe { std::mem::zeroed() };
        (m.run_pages, m.run_entries) = (6_400, 10_000_000);
        m
    }

    #[test]
    fn spilled_rows_call_for_a_merge_by_rows_or_by_the_pages_a_lookup_reads() {
        let m = run();
        // A tenth of the threshold of the rows: 100,000.
        assert!(merges_spilled(&m, (100_000, 150), 0.1));
        assert!(!merges_spilled(&m, (99_999, 150), 0.1));
        // Few rows on a page for every other slice: half a page a lookup.
        assert!(merges_spilled(&m, (20_000, 200), 0.1));
        assert!(!merges_spilled(&m, (20_000, 199), 0.1));
        // The threshold scales both.
        assert!(!merges_spilled(&m, (20_000, 200), 0.2));
        assert!(merges_spilled(&m, (20_000, 400), 0.2));
        // No rows, or fewer pages than a retrain is worth on a small run.
        assert!(!merges_spilled(&m, (0, 400), 0.1));
        let small = Meta {
            run_pages: 16,
            run_entries: 20_000,
            ..m
        };
        assert!(!merges_spilled(&small, (100, 7), 0.1));
        assert!(merges_spilled(&small, (100, 8), 0.1));
        // As the worker counts them.
        let c = delta::Counts {
            entries: 20_000,
            pages: 200,
            spilled_entries: 20_000,
            spilled_pages: 200,
            ..Default::default()
        };
        assert!(past_threshold(&m, &c, 0.1));
    }
}
