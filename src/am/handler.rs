//! `learned_handler`: what the access method can do, and its callbacks.

use pgrx::pg_sys;
use pgrx::prelude::*;

/// Build phases shown in `pg_stat_progress_create_index.phase`.
pub const PHASE_SCAN: i64 = 2;
pub const PHASE_SORT: i64 = 3;
pub const PHASE_WRITE: i64 = 4;

#[no_mangle]
pub extern "C" fn pg_finfo_learned_handler() -> &'static pg_sys::Pg_finfo_record {
    const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
    &V1
}

#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn learned_handler(
    _fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: makeNode-style allocation in the caller's memory context; every
    // field is set below and the node tag identifies the struct.
    let am = pg_sys::palloc0(std::mem::size_of::<pg_sys::IndexAmRoutine>())
        as *mut pg_sys::IndexAmRoutine;
    (*am).type_ = pg_sys::NodeTag::T_IndexAmRoutine;
    (*am).amstrategies = 5;
    (*am).amsupport = 0;
    (*am).amoptsprocnum = 0;
    (*am).amcanorder = true;
    (*am).amcanorderbyop = false;
    // Scans change direction at any point (FETCH BACKWARD, scrollable cursors).
    (*am).amcanbackward = true;
    (*am).amcanunique = false;
    (*am).amcanmulticol = false;
    (*am).amoptionalkey = true;
    (*am).amsearcharray = true;
    (*am).amsearchnulls = true;
    (*am).amstorage = false;
    (*am).amclusterable = false;
    (*am).ampredlocks = false;
    (*am).amcanparallel = false;
    (*am).amcaninclude = false;
    (*am).amusemaintenanceworkmem = false;
    (*am).amparallelvacuumoptions = pg_sys::VACUUM_OPTION_NO_PARALLEL as u8;
    (*am).amkeytype = pg_sys::InvalidOid;
    // PostgreSQL 16: a summarizing index (BRIN) lets an UPDATE stay HOT; ours
    // points at every row version, as btree does.
    #[cfg(not(feature = "pg15"))]
    {
        (*am).amsummarizing = false;
    }
    // PostgreSQL 17: nothing to clean up after a batch of inserts (the
    // per-backend insert state lives in rd_amcache, storage/amcache.rs), and
    // builds may run in parallel (am/parallel.rs); 15 offers that to btree only.
    #[cfg(any(feature = "pg17", feature = "pg18"))]
    {
        (*am).aminsertcleanup = None;
        (*am).amcanbuildparallel = true;
    }
    // PostgreSQL 18: our operator families are btree's, strategy for
    // strategy, so equality and ordering mean the same as btree's across the
    // types of a family; the planner maps strategies through
    // amtranslatestrategy (ORDER BY on the index, merge joins). No hashing.
    #[cfg(feature = "pg18")]
    {
        (*am).amcanhash = false;
        (*am).amconsistentequality = true;
        (*am).amconsistentordering = true;
        (*am).amgettreeheight = Some(amgettreeheight);
        (*am).amtranslatestrategy = Some(amtranslatestrategy);
        (*am).amtranslatecmptype = Some(amtranslatecmptype);
    }

    (*am).ambuild = Some(super::build::ambuild);
    (*am).ambuildempty = Some(super::build::ambuildempty);
    (*am).aminsert = Some(super::insert::aminsert);
    (*am).ambulkdelete = Some(super::vacuum::ambulkdelete);
    (*am).amvacuumcleanup = Some(super::vacuum::amvacuumcleanup);
    (*am).amcanreturn = Some(super::scan::amcanreturn);
    (*am).amcostestimate = Some(super::cost::amcostestimate);
    (*am).amoptions = Some(super::options::amoptions);
    (*am).amproperty = None;
    (*am).ambuildphasename = Some(ambuildphasename);
    (*am).amvalidate = Some(super::validate::amvalidate);
    (*am).amadjustmembers = None;
    (*am).ambeginscan = Some(super::scan::ambeginscan);
    (*am).amrescan = Some(super::scan::amrescan);
    (*am).amgettuple = Some(super::scan::amgettuple);
    (*am).amgetbitmap = Some(super::scan::amgetbitmap);
    (*am).amendscan = Some(super::scan::amendscan);
    (*am).ammarkpos = None;
    (*am).amrestrpos = None;
    (*am).amestimateparallelscan = None;
    (*am).aminitparallelscan = None;
    (*am).amparallelrescan = None;
    pg_sys::Datum::from(am)
}

#[pg_guard]
unsafe extern "C-unwind" fn ambuildphasename(phase: i64) -> *mut std::ffi::c_char {
    let name: &std::ffi::CStr = match phase {
        PHASE_SCAN => c"scanning table",
        PHASE_SORT => c"sorting",
        PHASE_WRITE => c"writing run and training model",
        _ => return std::ptr::null_mut(),
    };
    name.as_ptr() as *mut _
}

/// PostgreSQL 18: the height of the index above its leaves, for costing.
/// A lookup goes from the model (cached in the backend) to one run page, as
/// a btree whose root is a leaf: 0.
#[cfg(feature = "pg18")]
#[pg_guard]
unsafe extern "C-unwind" fn amgettreeheight(_rel: pg_sys::Relation) -> std::ffi::c_int {
    0
}

/// Our strategy numbers are btree's (1 `<` .. 5 `>`).
#[cfg(feature = "pg18")]
const STRATEGY_COMPARE: [pg_sys::CompareType::Type; 5] = [
    pg_sys::CompareType::COMPARE_LT,
    pg_sys::CompareType::COMPARE_LE,
    pg_sys::CompareType::COMPARE_EQ,
    pg_sys::CompareType::COMPARE_GE,
    pg_sys::CompareType::COMPARE_GT,
];

/// PostgreSQL 18: strategy number to comparison type, as `bttranslatestrategy`.
#[cfg(feature = "pg18")]
#[pg_guard]
unsafe extern "C-unwind" fn amtranslatestrategy(
    strategy: pg_sys::StrategyNumber,
    _opfamily: pg_sys::Oid,
) -> pg_sys::CompareType::Type {
    match strategy {
        1..=5 => STRATEGY_COMPARE[strategy as usize - 1],
        _ => pg_sys::CompareType::COMPARE_INVALID,
    }
}

/// PostgreSQL 18: comparison type to strategy number, as `bttranslatecmptype`.
#[cfg(feature = "pg18")]
#[pg_guard]
unsafe extern "C-unwind" fn amtranslatecmptype(
    cmptype: pg_sys::CompareType::Type,
    _opfamily: pg_sys::Oid,
) -> pg_sys::StrategyNumber {
    STRATEGY_COMPARE
        .iter()
        .position(|&c| c == cmptype)
        .map_or(
            0, /* InvalidStrategy */
            |i| i as pg_sys::StrategyNumber + 1,
        )
}
