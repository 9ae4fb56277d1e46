//! What a backend keeps per index between calls, in the index's relcache entry
//! (`rd_amcache`, allocated in `rd_indexcxt` and freed by PostgreSQL whenever
//! the entry is rebuilt, as after `REINDEX`): the current generation's model
//! and run page directory, and the delta page this backend last inserted into. Both are hints checked
//! against the pages they describe before use.

use pgrx::pg_sys;

/// An open delta page as the metapage lists it: its block and its directory
/// entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct OpenPage {
    pub blk: pg_sys::BlockNumber,
    pub dir_blk: pg_sys::BlockNumber,
    pub slot: u32,
}

const NO_PAGE: OpenPage = OpenPage {
    blk: pg_sys::InvalidBlockNumber,
    dir_blk: pg_sys::InvalidBlockNumber,
    slot: 0,
};

#[repr(C)]
pub struct AmCache {
    /// The storage these hints describe (checked as well as relied on being
    /// freed with the relcache entry).
    relfilenode: u32,
    /// The model of generation `model_generation`: `model_len` bytes in
    /// `rd_indexcxt`, or null.
    pub model_generation: u32,
    pub model: *mut u8,
    pub model_len: usize,
    /// Its run's page directory (`search::Directory`): `starts_len` u64s in
    /// `rd_indexcxt`, or null.
    pub starts: *mut u64,
    pub starts_len: usize,
    /// Where this backend last inserted a key above the run, and where it
    /// last inserted anything else (`blk` invalid for none).
    pub append: OpenPage,
    pub open: OpenPage,
    /// What this backend last read of the metapage to route inserts.
    pub route: Route,
}

/// The metapage fields an insert routes by, as read by this backend: valid
/// while an open delta page tagged `generation` is still open (the retrain
/// that would change them closes every open page first).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Route {
    /// False until read, and while a retrain runs.
    pub valid: bool,
    pub generation: u32,
    /// The run's last (key, TID); `None` for an empty run.
    pub run_last: Option<(u64, u64)>,
}

/// This backend's cache for `rel`, created empty on first use.
///
/// # Safety
/// `rel` must be an open index of this access method, and the reference must
/// not be kept across anything that can rebuild its relcache entry (that is,
/// process invalidation messages) or across another call of this function.
pub unsafe fn get<'a>(rel: pg_sys::Relation) -> &'a mut AmCache {
    let node = relfilenode(rel);
    let mut c = (*rel).rd_amcache as *mut AmCache;
    if !c.is_null() && (*c).relfilenode != node {
        if !(*c).model.is_null() {
            pg_sys::pfree((*c).model.cast());
        }
        if !(*c).starts.is_null() {
            pg_sys::pfree((*c).starts.cast());
        }
        pg_sys::pfree(c.cast());
        c = std::ptr::null_mut();
    }
    if c.is_null() {
        c = pg_sys::MemoryContextAlloc((*rel).rd_indexcxt, std::mem::size_of::<AmCache>()).cast();
        c.write(AmCache {
            relfilenode: node,
            model_generation: 0,
            model: std::ptr::null_mut(),
            model_len: 0,
            starts: std::ptr::null_mut(),
            starts_len: 0,
            append: NO_PAGE,
            open: NO_PAGE,
            route: Route {
                valid: false,
                generation: 0,
                run_last: None,
            },
        });
        (*rel).rd_amcache = c.cast();
    }
    &mut *c
}

/// # Safety
/// `rel` must be an open relation.
unsafe fn relfilenode(rel: pg_sys::Relation) -> u32 {
    // PostgreSQL 16 renamed relfilenodes to relfilelocators.
    #[cfg(feature = "pg15")]
    {
        (*rel).rd_node.relNode.into()
    }
    #[cfg(not(feature = "pg15"))]
    {
        (*rel).rd_locator.relNumber.into()
    }
}
