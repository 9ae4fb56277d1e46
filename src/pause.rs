//! A testing aid: points where a retrain, an insert, VACUUM or learned_verify waits for an advisory
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
        c"A retrain's stage (freeze, write, switch, switched, recycle; freeze_bounded: between two bounded delta pages it closes to merge them; carry: between two delta pages it carries over to the next generation), or insert_routed: an insert, after it read the metapage and routed its key to the delta, before adding it there; or split: a bounded delta page's split, between its two records (the halves written, not yet listed; the metapage stays locked exclusive); or vacuum_relock: VACUUM, between finding a run page's dead entries under a share lock and taking its cleanup lock; or vacuum_delta: VACUUM, after it read the delta directory, before it removes dead delta entries; or verify_delta: learned_verify, after it checked the run, before it reads the delta pages. The session takes pg_advisory_xact_lock(7390001) at that point (7390001 + n for 'point:n'), so a test holding that lock stops it there; with a trailing '!' it then raises an ERROR.",
        &PAUSE_AT,
        GucContext::Suset,
        GucFlags::NO_SHOW_ALL,
    );
}

/// Waits for [`PAUSE_LOCK`] if `learneddb.debug_pause` names `point`.
/// Called where the session holds no buffer lock, but for `split`, which
/// holds the metapage's.
pub fn pause_point(point: &str) {
    let Some((lock, fail)) = PAUSE_AT.get().and_then(|s| parse(s.to_bytes(), point)) else {
        return;
    };
    let sql = format!("SELECT pg_advisory_xact_lock({lock})");
    // A read-only query: `Spi::run` would assign a transaction id, which a
    // standby cannot (learned_verify pauses there too).
    if let Err(e) = Spi::connect(|c| c.select(&sql, None, &[]).map(|_| ())) {
        error!("learneddb: pausing at {point} failed: {e}");
    }
    if fail {
        error!("learneddb: failing at {point}, as learneddb.debug_pause asks");
    }
}

/// What a session whose `learneddb.debug_pause` is `setting` does at
/// `point`: nothing, or wait for an advisory lock, [`PAUSE_LOCK`] (`point`),
/// or `PAUSE_LOCK + n` (`point:n`, so that a test can let sessions paused at
/// once go one at a time), then raise an ERROR if the setting ends in `!`.
fn parse(setting: &[u8], point: &str) -> Option<(i64, bool)> {
    let setting = std::str::from_utf8(setting).ok()?;
    let (setting, fail) = match setting.strip_suffix('!') {
        Some(s) => (s, true),
        None => (setting, false),
    };
    let (name, offset) = match setting.split_once(':') {
        Some((name, n)) => (name, n.parse::<i64>().ok()?),
        None => (setting, 0),
    };
    (name == point).then_some((PAUSE_LOCK + offset, fail))
}
