//! `amcostestimate`: the generic estimate of matching entries and the pages
//! they fill, plus what a learned index really does per lookup: evaluate the
//! model (CPU only, it is cached), read about one run page, and read the
//! delta pages that may match. With an empty delta that is cheaper than a
//! btree descent, so the planner prefers the learned index; with a large
//! unsorted delta it is not, and the planner notices.

use super::options::DEFAULT_TARGET_WINDOW;
use crate::storage::buffer::nblocks;
use crate::storage::delta::DELTA_CAPACITY;
use crate::storage::Meta;
use pgrx::pg_sys;
use pgrx::prelude::*;

/// CPU charged per page visited, in units of `cpu_operator_cost`, as btree does.
const PAGE_CPU: f64 = 50.0;

#[pg_guard]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C-unwind" fn amcostestimate(
    root: *mut pg_sys::PlannerInfo,
    path: *mut pg_sys::IndexPath,
    loop_count: f64,
    index_startup_cost: *mut pg_sys::Cost,
    index_total_cost: *mut pg_sys::Cost,
    index_selectivity: *mut pg_sys::Selectivity,
    index_correlation: *mut f64,
    index_pages: *mut f64,
) {
    let info = (*path).indexinfo;
    let mut costs = pg_sys::GenericCosts::default();
    pg_sys::genericcostestimate(root, path, loop_count, &mut costs);

    let shape = index_shape(info);
    let op = pg_sys::cpu_operator_cost;
    let lookups = costs.num_sa_scans.max(1.0);
    // Model: root search over leaves, then a binary search in one run page.
    let search = ((shape.model_leaves.max(1.0)).log2() + (shape.run_capacity).log2()) * op;
    let descent = search + PAGE_CPU * op;
    // Delta pages are read once per execution: the open ones always, closed
    // ones whose key range may hold what the scan selects.
    let delta_pages = shape.delta_pages(costs.indexSelectivity);
    let delta_cpu = delta_pages * (PAGE_CPU + DELTA_CAPACITY as f64) * op;
    let delta_io = delta_pages * costs.spc_random_page_cost / loop_count.max(1.0);
    costs.indexStartupCost += descent + delta_cpu + delta_io;
    costs.indexTotalCost += lookups * descent + delta_cpu + delta_io;

    costs.indexCorrelation = column_correlation(root, info);

    *index_startup_cost = costs.indexStartupCost;
    *index_total_cost = costs.indexTotalCost;
    *index_selectivity = costs.indexSelectivity;
    *index_correlation = costs.indexCorrelation;
    *index_pages = costs.numIndexPages;
}

/// What the cost depends on: from the metapage of a real index; from the
/// catalog's estimates for a hypothetical one (HypoPG and the like: it has no
/// pages, and no relation to open) or one with no pages yet.
struct Shape {
    model_leaves: f64,
    run_capacity: f64,
    meta: Option<Meta>,
}

impl Shape {
    fn delta_pages(&self, selectivity: f64) -> f64 {
        self.meta
            .as_ref()
            // Spilled rows: one open bounded page besides the closed ones.
            .map_or(0.0, |m| {
                m.n_open as f64 + (m.spilled != 0) as u8 as f64 + m.closed_pages_read(selectivity)
            })
    }
}

unsafe fn index_shape(info: *mut pg_sys::IndexOptInfo) -> Shape {
    let meta = if (*info).hypothetical {
        None
    } else {
        // The planner holds a lock on the index already.
        let rel = pg_sys::index_open((*info).indexoid, pg_sys::NoLock as i32);
        let meta = (nblocks(rel) > 0).then(|| Meta::read(rel));
        pg_sys::index_close(rel, pg_sys::NoLock as i32);
        meta
    };
    match meta {
        Some(m) => Shape {
            model_leaves: m.model_leaves as f64,
            run_capacity: (m.run_entries as f64 / m.run_pages.max(1) as f64).max(1.0),
            meta: Some(m),
        },
        None => Shape {
            model_leaves: (*info).tuples / DEFAULT_TARGET_WINDOW as f64,
            // Unpacked 4-byte keys: what a page holds when nothing packs.
            run_capacity: 800.0,
            meta: None,
        },
    }
}

/// The heap column's order correlation from `pg_statistic`, as btree reads it:
/// it decides how much the heap fetches of a range scan cost.
unsafe fn column_correlation(
    root: *mut pg_sys::PlannerInfo,
    info: *mut pg_sys::IndexOptInfo,
) -> f64 {
    let key = *(*info).indexkeys;
    let (relid, colnum, inh) = if key != 0 {
        let rte = *(*root).simple_rte_array.add((*(*info).rel).relid as usize);
        ((*rte).relid, key as i16, (*rte).inh)
    } else {
        ((*info).indexoid, 1i16, false)
    };
    let tuple = pg_sys::SearchSysCache3(
        pg_sys::SysCacheIdentifier::STATRELATTINH as i32,
        pg_sys::Datum::from(relid),
        pg_sys::Datum::from(colnum),
        pg_sys::Datum::from(inh),
    );
    if tuple.is_null() {
        return 0.0;
    }
    let mut corr = 0.0;
    let opcintype = *(*info).opcintype;
    let sortop = pg_sys::get_opfamily_member(*(*info).opfamily, opcintype, opcintype, 1);
    let mut slot = pg_sys::AttStatsSlot::default();
    if sortop != pg_sys::InvalidOid
        && pg_sys::get_attstatsslot(
            &mut slot,
            tuple,
            pg_sys::STATISTIC_KIND_CORRELATION as i32,
            sortop,
            pg_sys::ATTSTATSSLOT_NUMBERS as i32,
        )
    {
        if slot.nnumbers > 0 {
            corr = *slot.numbers as f64;
        }
        pg_sys::free_attstatsslot(&mut slot);
    }
    pg_sys::ReleaseSysCache(tuple);
    corr
}
