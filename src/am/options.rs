//! Reloptions: `CREATE INDEX ... USING learned (col) WITH (target_window = 32)`;
//! `retrain` and `retrain_threshold` steer the background worker per index,
//! as `autovacuum_enabled` does per table.

use pgrx::pg_sys;
use std::sync::atomic::{AtomicU32, Ordering};

pub const DEFAULT_TARGET_WINDOW: i32 = 64;

static RELOPT_KIND: AtomicU32 = AtomicU32::new(0);

#[repr(C)]
struct Options {
    vl_len_: i32,
    target_window: i32,
    retrain: bool,
    retrain_threshold: f64,
    fillfactor: i32,
}

/// How full a merge that took scattered inserts packs run pages, when the
/// `fillfactor` reloption is not set: the rest of each page's bytes is room
/// for the inserts that follow (about a quarter more entries, once packed),
/// so that they land in the page a lookup reads rather than in the delta.
pub const SCATTERED_FILLFACTOR: u32 = 80;

/// Registers the reloptions; called from `_PG_init`.
pub fn init() {
    // SAFETY: runs once at library load, in the postmaster or a backend, before
    // any index using these options is opened. The strings are static.
    unsafe {
        let kind = pg_sys::add_reloption_kind();
        pg_sys::add_int_reloption(
            kind,
            c"target_window".as_ptr(),
            c"Widest model error window (in entries) a leaf may have before it is split".as_ptr(),
            DEFAULT_TARGET_WINDOW,
            2,
            65536,
            pg_sys::AccessExclusiveLock as pg_sys::LOCKMODE,
        );
        pg_sys::add_bool_reloption(
            kind,
            c"retrain".as_ptr(),
            c"Whether the background worker retrains the index".as_ptr(),
            true,
            pg_sys::ShareUpdateExclusiveLock as pg_sys::LOCKMODE,
        );
        pg_sys::add_real_reloption(
            kind,
            c"retrain_threshold".as_ptr(),
            c"Delta size, as a fraction of the run, past which the worker retrains the index (-1: learneddb.retrain_threshold)".as_ptr(),
            -1.0,
            -1.0,
            1000.0,
            pg_sys::ShareUpdateExclusiveLock as pg_sys::LOCKMODE,
        );
        pg_sys::add_int_reloption(
            kind,
            c"fillfactor".as_ptr(),
            c"Percent of each run page filled by builds and retrains; the rest takes inserts (-1: full pages, except after scattered inserts)".as_ptr(),
            -1,
            -1,
            100,
            pg_sys::ShareUpdateExclusiveLock as pg_sys::LOCKMODE,
        );
        RELOPT_KIND.store(kind, Ordering::Relaxed);
    }
}

/// Where `build_reloptions` puts option `name` of type `ty` in `Options`.
fn parse_elt(
    name: &'static std::ffi::CStr,
    ty: pg_sys::relopt_type::Type,
    offset: usize,
) -> pg_sys::relopt_parse_elt {
    pg_sys::relopt_parse_elt {
        optname: name.as_ptr(),
        opttype: ty,
        offset: offset as i32,
        // PostgreSQL 18 can record whether an option was set (0: not asked).
        #[cfg(feature = "pg18")]
        isset_offset: 0,
    }
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn amoptions(
    reloptions: pg_sys::Datum,
    validate: bool,
) -> *mut pg_sys::bytea {
    let tab = [
        parse_elt(
            c"target_window",
            pg_sys::relopt_type::RELOPT_TYPE_INT,
            std::mem::offset_of!(Options, target_window),
        ),
        parse_elt(
            c"retrain",
            pg_sys::relopt_type::RELOPT_TYPE_BOOL,
            std::mem::offset_of!(Options, retrain),
        ),
        parse_elt(
            c"retrain_threshold",
            pg_sys::relopt_type::RELOPT_TYPE_REAL,
            std::mem::offset_of!(Options, retrain_threshold),
        ),
        parse_elt(
            c"fillfactor",
            pg_sys::relopt_type::RELOPT_TYPE_INT,
            std::mem::offset_of!(Options, fillfactor),
        ),
    ];
    // An invalid value raises an ERROR inside build_reloptions: pg_call
    // re-raises it as PostgreSQL worded it.
    crate::error::pg_call(
        || {
            // SAFETY: `tab` describes `Options` exactly; build_reloptions
            // allocates the result in the current memory context.
            unsafe {
                pg_sys::build_reloptions(
                    reloptions,
                    validate,
                    RELOPT_KIND.load(Ordering::Relaxed),
                    std::mem::size_of::<Options>(),
                    tab.as_ptr(),
                    tab.len() as i32,
                ) as *mut pg_sys::bytea
            }
        },
        || None,
    )
}

/// The index's target window.
///
/// # Safety
/// `index` must be an open index relation of this access method.
pub unsafe fn target_window(index: pg_sys::Relation) -> u32 {
    options(index).map_or(DEFAULT_TARGET_WINDOW as u32, |o| o.target_window as u32)
}

/// The index's parsed reloptions; `None` when none were given.
///
/// # Safety
/// `index` must be an open index relation of this access method; the
/// reference lives no longer than its relcache entry.
unsafe fn options<'a>(index: pg_sys::Relation) -> Option<&'a Options> {
    ((*index).rd_options as *const Options).as_ref()
}

/// The worker's settings for an index: whether to retrain it, and past which
/// delta fraction (`None`: the `learneddb.retrain_threshold` GUC).
///
/// # Safety
/// `index` must be an open index relation of this access method.
pub unsafe fn retrain_settings(index: pg_sys::Relation) -> (bool, Option<f64>) {
    options(index).map_or((true, None), |o| {
        let t = o.retrain_threshold;
        (o.retrain, (t >= 0.0).then_some(t))
    })
}

/// The percent of each run page a build or retrain fills: the `fillfactor`
/// reloption when set (at least 10); otherwise full pages, or
/// [`SCATTERED_FILLFACTOR`] when the entries merged in were `scattered`
/// among the run's rather than appended above it.
///
/// # Safety
/// `index` must be an open index relation of this access method.
pub unsafe fn fillfactor(index: pg_sys::Relation, scattered: bool) -> u32 {
    match options(index).map(|o| o.fillfactor) {
        Some(f) if f > 0 => (f as u32).max(10),
        _ if scattered => SCATTERED_FILLFACTOR,
        _ => 100,
    }
}
