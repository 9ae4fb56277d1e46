//! What a backend keeps per index between calls, in the index's relcache entry
//! (`rd_amcache`, allocated in `rd_indexcxt` and freed by PostgreSQL whenever
//! the entry is rebuilt, as after `REINDEX`): the current generation's model
//! and run page directory, the delta page this backend last inserted into,
//! and the open pages for spilled keys it knows of. All are hints checked
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

/// An open delta page for spilled keys within `[lo, hi]`.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BoundedPage {
    pub page: OpenPage,
    pub lo: u64,
    pub hi: u64,
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
    /// The open bounded pages as this backend last read the directory, by
    /// `lo`: `bounded_len` of them in `rd_indexcxt`, or null.
    bounded: *mut BoundedPage,
    bounded_len: usize,
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
        if !(*c).bounded.is_null() {
            pg_sys::pfree((*c).bounded.cast());
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
            bounded: std::ptr::null_mut(),
            bounded_len: 0,
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

impl AmCache {
    /// A known open bounded page whose bounds hold `key`.
    pub fn bounded_for(&self, key: u64) -> Option<BoundedPage> {
        let pages = self.bounded_pages();
        // Bounds of different slices of the run meet at most in one key; two
        // pages opened for one slice by backends racing have the same.
        let after = pages.partition_point(|b| b.lo <= key);
        pages[..after].iter().rev().find(|b| key <= b.hi).copied()
    }

    fn bounded_pages(&self) -> &[BoundedPage] {
        if self.bounded.is_null() {
            return &[];
        }
        // SAFETY: `bounded` holds `bounded_len` initialized entries,
        // allocated in `rd_indexcxt` with this cache.
        unsafe { std::slice::from_raw_parts(self.bounded, self.bounded_len) }
    }

    /// Replaces the known bounded pages with `pages`.
    ///
    /// # Safety
    /// `rel` must be the index this cache belongs to.
    pub unsafe fn set_bounded(&mut self, rel: pg_sys::Relation, mut pages: Vec<BoundedPage>) {
        pages.sort_by_key(|b| b.lo);
        if !self.bounded.is_null() {
            pg_sys::pfree(self.bounded.cast());
            self.bounded = std::ptr::null_mut();
            self.bounded_len = 0;
        }
        if pages.is_empty() {
            return;
        }
        let bytes = std::mem::size_of_val(pages.as_slice());
        let p: *mut BoundedPage = pg_sys::MemoryContextAlloc((*rel).rd_indexcxt, bytes).cast();
        std::ptr::copy_nonoverlapping(pages.as_ptr(), p, pages.len());
        self.bounded = p;
        self.bounded_len = pages.len();
    }
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
