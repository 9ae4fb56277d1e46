//! Reloptions: `CREATE INDEX ... USING learned (col) WITH (target_window = 32)`.

use pgrx::pg_sys;
use std::sync::atomic::{AtomicU32, Ordering};

pub const DEFAULT_TARGET_WINDOW: i32 = 64;

static RELOPT_KIND: AtomicU32 = AtomicU32::new(0);

#[repr(C)]
struct Options {
    vl_len_: i32,
    target_window: i32,
}

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
        RELOPT_KIND.store(kind, Ordering::Relaxed);
    }
}

#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn amoptions(
    reloptions: pg_sys::Datum,
    validate: bool,
) -> *mut pg_sys::bytea {
    let tab = [pg_sys::relopt_parse_elt {
        optname: c"target_window".as_ptr(),
        opttype: pg_sys::relopt_type::RELOPT_TYPE_INT,
        offset: std::mem::offset_of!(Options, target_window) as i32,
    }];
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
    let opts = (*index).rd_options as *const Options;
    if opts.is_null() {
        DEFAULT_TARGET_WINDOW as u32
    } else {
        (*opts).target_window as u32
    }
}
