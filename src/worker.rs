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
//! retrain) is working on is skipped until the next round. An error ends only
//! that database's worker; the launcher starts a fresh one next round.

use crate::am::options::retrain_settings;
use crate::retrain::retrain;
use crate::stats::Opened;
use crate::storage::buffer::BulkRead;
use crate::storage::{delta, Meta};
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::prelude::*;
use pgrx::{pg_sys, GucContext, GucFlags, GucRegistry, GucSetting};
use std::time::Duration;

static RETRAIN: GucSetting<bool> = GucSetting::<bool>::new(true);
static NAPTIME: GucSetting<i32> = GucSetting::<i32>::new(60);
static THRESHOLD: GucSetting<f64> = GucSetting::<f64>::new(0.1);

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
    while BackgroundWorker::wait_latch(Some(naptime())) {
        if BackgroundWorker::sighup_received() {
            // SAFETY: reloads the configuration file, as any backend does on SIGHUP.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        if !RETRAIN.get() {
            continue;
        }
        for db in databases() {
            if BackgroundWorker::sigterm_received() {
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
}

/// Databases that accept connections, from the shared catalog.
fn databases() -> Vec<String> {
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
            if (*form).datallowconn && !(*form).datistemplate {
                let name = std::ffi::CStr::from_ptr((*form).datname.data.as_ptr());
                names.push(name.to_string_lossy().into_owned());
            }
        }
        pg_sys::table_endscan(scan);
        pg_sys::table_close(rel, pg_sys::AccessShareLock as i32);
        pg_sys::PopActiveSnapshot();
        pg_sys::CommitTransactionCommand();
    }
    names
}

#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn learneddb_database_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = BackgroundWorker::get_extra().to_string();
    BackgroundWorker::connect_worker_to_spi(Some(&db), None);
    let indexes: Vec<pg_sys::Oid> = BackgroundWorker::transaction(|| {
        // Temporary tables of other sessions cannot be read from here.
        Spi::connect(|c| {
            c.select(
                "SELECT c.oid FROM pg_class c JOIN pg_am a ON a.oid = c.relam
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
    for oid in indexes {
        if BackgroundWorker::sigterm_received() {
            break;
        }
        BackgroundWorker::transaction(move || visit(oid));
    }
}

/// Retrains index `oid` if its delta passed its threshold and its table can
/// be locked at once.
fn visit(oid: pg_sys::Oid) {
    let share_update = pg_sys::ShareUpdateExclusiveLock as i32;
    let row_exclusive = pg_sys::RowExclusiveLock as i32;
    // SAFETY: catalog lookups and conditional locks; the relations are opened
    // only once locked and known to exist, and closed by `Opened`.
    let rel = unsafe {
        let heap = pg_sys::IndexGetRelation(oid, true);
        if heap == pg_sys::InvalidOid || !pg_sys::ConditionalLockRelationOid(heap, share_update) {
            return; // dropped, or VACUUM (or a retrain) is at work on it
        }
        if !pg_sys::ConditionalLockRelationOid(oid, row_exclusive) {
            pg_sys::UnlockRelationOid(heap, share_update);
            return;
        }
        // Dropped between the listing and the locks?
        if pg_sys::IndexGetRelation(oid, true) != heap {
            pg_sys::UnlockRelationOid(oid, row_exclusive);
            pg_sys::UnlockRelationOid(heap, share_update);
            return;
        }
        Opened::from_open(
            pg_sys::table_open(heap, pg_sys::NoLock as i32),
            pg_sys::index_open(oid, pg_sys::NoLock as i32),
            share_update,
            row_exclusive,
        )
    };
    // SAFETY: the index is open.
    let (enabled, threshold) = unsafe { retrain_settings(rel.index) };
    if !enabled || crate::storage::buffer::nblocks(rel.index) == 0 {
        return;
    }
    let threshold = threshold.unwrap_or_else(|| THRESHOLD.get());
    let meta = Meta::read(rel.index);
    let ring = BulkRead::new();
    let (delta_entries, _) = delta::count(rel.index, &meta, ring.get());
    let fraction = delta_entries as f64 / (meta.run_entries + meta.null_entries).max(1) as f64;
    if delta_entries == 0 || fraction < threshold {
        return;
    }
    // SAFETY: the index is open.
    let name = unsafe { crate::storage::page::relation_name(rel.index) };
    match retrain(&rel) {
        Some(r) => log!(
            "learneddb: retrained index \"{name}\" ({}): generation {}, {} delta entries merged, {} entries, {:.3} s",
            r.path.name(),
            r.generation,
            r.merged,
            r.entries,
            r.seconds
        ),
        None => debug1!(
            "learneddb: index \"{name}\" skipped: transactions older than its last retrain are running"
        ),
    }
}
