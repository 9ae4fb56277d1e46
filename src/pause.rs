//! A testing aid: points where a retrain, an insert or VACUUM waits for an advisory
//! lock the test holds, so that tests order sessions deterministically around
//! the retrain's stages (tests/crash.rs, tests/insert_area.rs,
//! tests/interleavings.rs).

use pgrx::prelude::*;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;

static PAUSE_AT: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// The advisory lock a pause point waits for.
pub const PAUSE_LOCK: i64 = 7_390_001;

/// Defines the testing GUC. Called from `_PG_init`.
pub fn init() {
    GucRegistry::define_string_guc(
        c"learneddb.debug_pause",
        c"Testing aid: where this session waits for an advisory lock.",
        c"A retrain's stage (freeze, write, switch, switched, recycle; freeze_bounded: between two bounded delta pages it closes to merge them; carry: between two delta pages it carries over to the next generation), or insert_routed: an insert, after it read the metapage and routed its key to the delta, before adding it there; or vacuum_relock: VACUUM, between finding a run page's dead entries under a share lock and taking its cleanup lock; or vacuum_delta: VACUUM, after it read the delta directory, before it removes dead delta entries. The session takes pg_advisory_xact_lock(7390001) at that point, so a test holding that lock stops it there.",
        &PAUSE_AT,
        GucContext::Suset,
        GucFlags::NO_SHOW_ALL,
    );
}

/// Waits for [`PAUSE_LOCK`] if `learneddb.debug_pause` names `point`.
/// Called where the session holds no buffer lock.
pub fn pause_point(point: &str) {
    if PAUSE_AT
        .get()
        .is_some_and(|s| s.to_bytes() == point.as_bytes())
    {
        let sql = format!("SELECT pg_advisory_xact_lock({PAUSE_LOCK})");
        if let Err(e) = Spi::run(&sql) {
            error!("learneddb: pausing at {point} failed: {e}");
        }
    }
}
