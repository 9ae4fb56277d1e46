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

/// An open delta page for spilled keys within `[lo, hi]`, tagged with
/// `generation` when it was listed.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BoundedPage {
    pub page: OpenPage,
    pub lo: u64,
    pub hi: u64,
    pub generation: u32,
}

const NO_PAGE: OpenPage = OpenPage {
    blk: pg_sys::InvalidBlockNumber,
    dir_blk: pg_sys::InvalidBlockNumber,
    slot: 0,
};

/// The cache: this header, then in the same chunk (PostgreSQL frees
/// `rd_amcache` as one chunk when it resets the relcache entry, so nothing
/// may hang off it) the model's bytes, the run's page directory and the
/// known bounded pages, each at an 8-byte aligned offset. Replacing the model
/// or the bounded pages allocates a new chunk; views into the old one must
/// not be kept across that.
#[repr(C)]
pub struct AmCache {
    /// The storage these hints describe (checked as well as relied on being
    /// freed with the relcache entry).
    relfilenode: u32,
    /// The generation whose model and page directory follow (0 for none).
    pub model_generation: u32,
    model_len: usize,
    /// The run's page directory (`search::Directory`), `starts_len` u64s.
    starts_len: usize,
    /// The open bounded pages as this backend last read the directory, by
    /// `lo`, read while new delta pages carried `bounded_generation` and the
    /// current generation was `bounded_current`.
    bounded_len: usize,
    bounded_generation: u32,
    bounded_current: u32,
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
        pg_sys::pfree(c.cast());
        (*rel).rd_amcache = std::ptr::null_mut();
        c = std::ptr::null_mut();
    }
    if c.is_null() {
        let empty = AmCache {
            relfilenode: node,
            model_generation: 0,
            model_len: 0,
            starts_len: 0,
            bounded_len: 0,
            bounded_generation: 0,
            bounded_current: 0,
            append: NO_PAGE,
            open: NO_PAGE,
            route: Route {
                valid: false,
                generation: 0,
                run_last: None,
            },
        };
        c = install(rel, empty, (&[], &[]), &[]);
    }
    &mut *c
}

/// Rounds `n` up to a multiple of 8.
fn aligned(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// Allocates a chunk holding `header` and the three arrays (their lengths
/// set from them), frees the old one and makes the new one `rd_amcache`.
///
/// # Safety
/// `rel` must be an open index; the arrays must not point into the old chunk
/// unless they were copied out first.
unsafe fn install(
    rel: pg_sys::Relation,
    mut header: AmCache,
    (model, starts): (&[u8], &[u64]),
    bounded: &[BoundedPage],
) -> *mut AmCache {
    header.model_len = model.len();
    header.starts_len = starts.len();
    header.bounded_len = bounded.len();
    let (m, s, b) = header.offsets();
    let bytes = b + std::mem::size_of_val(bounded);
    let c: *mut AmCache = pg_sys::MemoryContextAlloc((*rel).rd_indexcxt, bytes).cast();
    let base = c.cast::<u8>();
    std::ptr::copy_nonoverlapping(model.as_ptr(), base.add(m), model.len());
    std::ptr::copy_nonoverlapping(starts.as_ptr(), base.add(s).cast(), starts.len());
    std::ptr::copy_nonoverlapping(bounded.as_ptr(), base.add(b).cast(), bounded.len());
    c.write(header);
    let old = (*rel).rd_amcache;
    (*rel).rd_amcache = c.cast();
    if !old.is_null() {
        pg_sys::pfree(old);
    }
    c
}

impl AmCache {
    /// Where the model, the page directory and the bounded pages begin.
    fn offsets(&self) -> (usize, usize, usize) {
        let m = aligned(std::mem::size_of::<AmCache>());
        let s = m + aligned(self.model_len);
        let b = s + 8 * self.starts_len;
        (m, s, b)
    }

    /// The cached model's bytes and page directory (empty for none).
    pub fn model(&self) -> (&[u8], &[u64]) {
        let (m, s, _) = self.offsets();
        let base = (self as *const AmCache).cast::<u8>();
        // SAFETY: `install` laid both out at these offsets of this chunk
        // with these lengths; `s` is 8-byte aligned in a palloc'd chunk.
        unsafe {
            (
                std::slice::from_raw_parts(base.add(m), self.model_len),
                std::slice::from_raw_parts(base.add(s).cast(), self.starts_len),
            )
        }
    }

    fn bounded_pages(&self) -> &[BoundedPage] {
        let (_, _, b) = self.offsets();
        // SAFETY: as in `model`.
        unsafe {
            std::slice::from_raw_parts(
                (self as *const AmCache).cast::<u8>().add(b).cast(),
                self.bounded_len,
            )
        }
    }

    /// A known open bounded page whose bounds hold `key`, if the pages were
    /// read while the metapage's `(insert_generation, generation)` were
    /// `generations` (any, for `None`): read again after each freeze and
    /// each switch. A page listed may have been merged and reused since, as
    /// a split's half, written open with its bounds by the split's first
    /// record but taking no key until its last; an entry added to it would
    /// be lost with the half if the split failed in between (an ERROR). Its
    /// reuse gives it the tag of new pages, but a page opened while a
    /// retrain ran and absorbed by it had that tag lowered to the current
    /// generation's, then raised back by its reuse after the switch; within
    /// one pair of generations no page listed is reused (`alloc_pair` takes
    /// pages tagged before every readable generation; an open page is
    /// tagged at least the current one, and absorb lowers a tag only to it).
    /// The inserter checks the tag on the page as well as the bounds.
    pub fn bounded_for(&self, key: u64, generations: Option<(u32, u32)>) -> Option<BoundedPage> {
        if generations.is_some_and(|g| g != (self.bounded_generation, self.bounded_current)) {
            return None;
        }
        let pages = self.bounded_pages();
        // Bounds of different slices of the run meet at most in one key; two
        // pages opened for one slice by backends racing have the same.
        let after = pages.partition_point(|b| b.lo <= key);
        pages[..after].iter().rev().find(|b| key <= b.hi).copied()
    }
}

/// Replaces the cached model and page directory with those of `generation`.
///
/// # Safety
/// `rel` must be an open index of this access method; no view into its cache
/// may be kept across this call.
pub unsafe fn set_model(rel: pg_sys::Relation, generation: u32, model: &[u8], starts: &[u64]) {
    let c = get(rel);
    let bounded = c.bounded_pages().to_vec();
    let header = AmCache {
        model_generation: generation,
        ..std::ptr::read(c)
    };
    install(rel, header, (model, starts), &bounded);
}

/// Replaces the known bounded pages with `pages`, read while the metapage's
/// `(insert_generation, generation)` were `(generation, current)`.
///
/// # Safety
/// As for [`set_model`].
pub unsafe fn set_bounded(
    rel: pg_sys::Relation,
    mut pages: Vec<BoundedPage>,
    (generation, current): (u32, u32),
) {
    pages.sort_by_key(|b| b.lo);
    let c = get(rel);
    let (model, starts) = c.model();
    let (model, starts) = (model.to_vec(), starts.to_vec());
    let header = AmCache {
        bounded_generation: generation,
        bounded_current: current,
        ..std::ptr::read(c)
    };
    install(rel, header, (&model, &starts), &pages);
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
