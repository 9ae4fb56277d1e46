//! `learned_index_stats(regclass)` and the view over it; [`Opened`], how both
//! this and `learned_verify` open the index they are asked about.

use crate::storage::buffer::{nblocks, BulkRead};
use crate::storage::delta;
use crate::storage::Meta;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;

/// An open learned index and its table, closed on drop.
pub struct Opened {
    pub heap: pg_sys::Relation,
    pub index: pg_sys::Relation,
    heap_lock: i32,
    index_lock: i32,
}

/// A `regclass` argument, not yet opened: [`Opened`] locks the table before
/// the index, as amcheck does, and DDL too (pgrx's `PgRelation` argument
/// locks the index as it is unboxed, before the function runs).
pub struct IndexArg(pub pg_sys::Oid);

impl FromDatum for IndexArg {
    unsafe fn from_polymorphic_datum(
        datum: pg_sys::Datum,
        is_null: bool,
        _typoid: pg_sys::Oid,
    ) -> Option<IndexArg> {
        // SAFETY: a regclass datum is an Oid.
        (!is_null).then(|| IndexArg(unsafe { pg_sys::Oid::from_datum(datum, false) }.unwrap()))
    }
}

// SAFETY: unboxed with FromDatum, as pgrx unboxes its own `PgRelation`.
unsafe impl<'fcx> pgrx::callconv::ArgAbi<'fcx> for IndexArg {
    unsafe fn unbox_arg_unchecked(arg: pgrx::callconv::Arg<'_, 'fcx>) -> IndexArg {
        // SAFETY: the caller passes an argument of this function's type.
        unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or_else(|| {
            ereport!(
                ERROR,
                PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                "the index must not be NULL"
            );
        })
    }
}

pgrx::impl_sql_translatable!(IndexArg, arg_only = "regclass");

impl Opened {
    /// Locks table then index in AccessShareLock, as amcheck does, and checks
    /// that the relation is a learned index with storage.
    pub fn new(index: IndexArg) -> Opened {
        let share = pg_sys::AccessShareLock as i32;
        Opened::with_locks(index, share, share)
    }

    /// As `new`, with the given lock modes on the table and the index.
    pub fn with_locks(index: IndexArg, heap_lock: i32, index_lock: i32) -> Opened {
        Opened::open(index, (heap_lock, index_lock), false).expect("raised, not missing")
    }

    /// As `new`, but `None` rather than an ERROR when `missing_ok` and the
    /// relation is no longer a valid learned index: the view lists indexes
    /// as its snapshot saw them, and one may since have been dropped, or
    /// marked dead by a REINDEX CONCURRENTLY that now waits to drop it.
    pub fn open(
        index: IndexArg,
        (heap_lock, index_lock): (i32, i32),
        missing_ok: bool,
    ) -> Option<Opened> {
        let oid = index.0;
        // SAFETY: catalog lookups, then the table's lock before the index's;
        // the relations are opened once locked, the index only if it still
        // exists then (`try_relation_open`); each is closed with its lock
        // released on every path that does not keep it.
        unsafe {
            let heap_oid = pg_sys::IndexGetRelation(oid, true);
            if heap_oid == pg_sys::InvalidOid {
                if missing_ok {
                    return None;
                }
                not_learned(oid);
            }
            pg_sys::LockRelationOid(heap_oid, heap_lock);
            // Dropped once the table was locked, or (DROP INDEX CONCURRENTLY
            // drops it under a lock this one does not wait for) by the time
            // the index is opened.
            let index = if pg_sys::IndexGetRelation(oid, true) == heap_oid {
                pg_sys::try_relation_open(oid, index_lock)
            } else {
                std::ptr::null_mut()
            };
            if index.is_null() {
                pg_sys::UnlockRelationOid(heap_oid, heap_lock);
                if missing_ok {
                    return None;
                }
                ereport!(
                    ERROR,
                    PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
                    format!("could not open index with OID {}", oid.to_u32()),
                    "The index was dropped meanwhile."
                );
            }
            let relkind = (*(*index).rd_rel).relkind as u8;
            let learned = is_learned(index);
            let valid =
                relkind == pg_sys::RELKIND_INDEX && learned && (*(*index).rd_index).indisvalid;
            if missing_ok && !valid {
                pg_sys::relation_close(index, index_lock);
                pg_sys::UnlockRelationOid(heap_oid, heap_lock);
                return None;
            }
            if relkind == pg_sys::RELKIND_PARTITIONED_INDEX && learned {
                let parts = Spi::get_one_with_args::<String>(
                    "SELECT string_agg(relid::regclass::text, ', ' ORDER BY relid::regclass::text)
                       FROM pg_partition_tree($1) WHERE isleaf",
                    &[oid.into()],
                )
                .ok()
                .flatten()
                .unwrap_or_default();
                ErrorReport::new(
                    PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
                    format!(
                        "\"{}\" is a partitioned learned index, which has no storage of its own",
                        name_of(oid)
                    ),
                    "learneddb",
                )
                .set_detail(if parts.is_empty() {
                    "It has no partitions yet.".to_string()
                } else {
                    format!("Its partitions' indexes are: {parts}.")
                })
                .set_hint("Pass one of its partitions' indexes instead.")
                .report(PgLogLevel::ERROR);
            }
            if relkind != pg_sys::RELKIND_INDEX || !learned {
                not_learned(oid);
            }
            // A concurrent build under way, or one that failed, may not have
            // written its metapage whole: nothing to report, check or merge.
            if !valid {
                ErrorReport::new(
                    PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                    format!("learned index \"{}\" is not valid", name_of(oid)),
                    "learneddb",
                )
                .set_detail(
                    "A CREATE INDEX CONCURRENTLY or REINDEX CONCURRENTLY is building it, or failed.",
                )
                .set_hint("Wait for the build to end, or drop the index, or REINDEX it.")
                .report(PgLogLevel::ERROR);
            }
            let heap = pg_sys::table_open(heap_oid, pg_sys::NoLock as i32);
            Some(Opened {
                heap,
                index,
                heap_lock,
                index_lock,
            })
        }
    }
}

fn not_learned(oid: pg_sys::Oid) -> ! {
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
        format!("\"{}\" is not a learned index", name_of(oid))
    );
}

/// Whether open relation `rel` uses the learned access method.
unsafe fn is_learned(rel: pg_sys::Relation) -> bool {
    let am = pg_sys::get_am_name((*(*rel).rd_rel).relam);
    !am.is_null() && std::ffi::CStr::from_ptr(am).to_bytes() == b"learned"
}

impl Opened {
    /// Wraps a table and index the caller opened with these lock modes.
    pub fn from_open(
        heap: pg_sys::Relation,
        index: pg_sys::Relation,
        heap_lock: i32,
        index_lock: i32,
    ) -> Opened {
        Opened {
            heap,
            index,
            heap_lock,
            index_lock,
        }
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // SAFETY: opened with these lock modes in `new`.
            unsafe {
                pg_sys::index_close(self.index, self.index_lock);
                pg_sys::table_close(self.heap, self.heap_lock);
            }
        }
    }
}

fn timestamp(t: i64) -> Option<TimestampWithTimeZone> {
    (t != 0)
        .then(|| TimestampWithTimeZone::try_from(t).ok())
        .flatten()
}

/// The relation's name, or "" if there is no such relation.
pub fn name_of(oid: pg_sys::Oid) -> String {
    // SAFETY: a catalog lookup; the result is null or a palloc'd C string.
    unsafe {
        let p = pg_sys::get_rel_name(oid);
        if p.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}

#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_safe)]
fn learned_index_stats(
    index: IndexArg,
    missing_ok: default!(bool, false),
) -> TableIterator<
    'static,
    (
        name!(schema_name, String),
        name!(table_name, String),
        name!(index_name, String),
        name!(key_type, String),
        name!(entries, i64),
        name!(run_pages, i64),
        name!(null_entries, i64),
        name!(delta_entries, i64),
        name!(delta_pages, i64),
        name!(model_leaves, i64),
        name!(model_bytes, i64),
        name!(max_error, i64),
        name!(mean_error, f64),
        name!(generation, i64),
        name!(built_at, Option<TimestampWithTimeZone>),
        name!(last_retrain, Option<TimestampWithTimeZone>),
        name!(retrain_count, i64),
        name!(last_retrain_seconds, Option<f64>),
        name!(delta_fraction, f64),
        name!(retrain_skipped, Option<String>),
        name!(retrain_skipped_at, Option<TimestampWithTimeZone>),
        name!(index_size, i64),
        name!(retained_pages, i64),
        name!(free_pages, i64),
        name!(idx_scan, i64),
        name!(idx_tup_read, i64),
    ),
> {
    let share = pg_sys::AccessShareLock as i32;
    let Some(rel) = Opened::open(index, (share, share), missing_ok) else {
        return TableIterator::new(None);
    };
    let meta = Meta::read(rel.index);
    let ring = BulkRead::new();
    let counts = delta::count(rel.index, &meta, ring.get());
    let (delta_entries, delta_pages) = (counts.entries, counts.pages);
    // What only snapshots older than the last retrain can read: the previous
    // generation's own blocks and the delta pages merged since.
    let previous: u64 = if meta.prev_generation != 0 {
        meta.prev_own().iter().map(|e| e.len as u64).sum()
    } else {
        0
    };
    let retained_pages = previous + counts.retained_pages;
    // SAFETY: the index is open.
    let skip = crate::worker::last_skip(unsafe { (*rel.index).rd_id });
    // SAFETY: both relations are open and locked; the pgstat functions read
    // this backend's snapshot of the cumulative statistics.
    let row = unsafe {
        let oid = (*rel.index).rd_id;
        let nsp = pg_sys::get_namespace_name((*(*rel.index).rd_rel).relnamespace);
        let nblocks = nblocks(rel.index);
        let scans = stat_counter(pg_sys::pg_stat_get_numscans, oid);
        let read = stat_counter(pg_sys::pg_stat_get_tuples_returned, oid);
        (
            std::ffi::CStr::from_ptr(nsp).to_string_lossy().into_owned(),
            name_of((*rel.heap).rd_id),
            name_of(oid),
            meta.kind().sql_name().to_string(),
            (meta.run_entries - meta.run_dead + meta.null_entries + delta_entries) as i64,
            meta.run_pages as i64,
            meta.null_entries as i64,
            delta_entries as i64,
            delta_pages as i64,
            meta.model_leaves as i64,
            meta.model_bytes as i64,
            meta.max_window as i64,
            meta.mean_window as f64,
            meta.generation as i64,
            timestamp(meta.built_at),
            timestamp(meta.retrained_at),
            meta.retrain_count as i64,
            (meta.retrain_count > 0).then(|| meta.retrain_us as f64 / 1e6),
            delta_entries as f64 / (meta.run_entries + meta.null_entries).max(1) as f64,
            skip.map(|(reason, _)| reason.to_string()),
            skip.and_then(|(_, at)| timestamp(at)),
            nblocks as i64 * crate::storage::page::BLCKSZ as i64,
            retained_pages as i64,
            (counts.free_pages + meta.free.blocks()) as i64,
            scans,
            read,
        )
    };
    TableIterator::new(Some(row))
}

unsafe fn stat_counter(
    f: unsafe fn(pg_sys::FunctionCallInfo) -> pg_sys::Datum,
    oid: pg_sys::Oid,
) -> i64 {
    let r: Option<i64> = pgrx::direct_function_call(f, &[oid.into_datum()]);
    r.unwrap_or(0)
}
