//! The model's bytes and the run's page directory (each run page's entry
//! count, a little-endian `u16`, after the model), split over consecutive
//! pages, and the per-backend cache of both in `rd_amcache`, keyed by the
//! index generation.

use super::extents::Extents;
use super::meta::META_BLOCK;
use super::page::{self, corrupt, recycled_error, PageKind, Recycled, CONTENT};
use super::search::{self, Directory};
use super::{amcache, Buf, Meta};
use crate::model::ModelView;
use pgrx::pg_sys;

/// Header of a model page: how many of the model's bytes follow.
#[derive(Clone, Copy)]
#[repr(C)]
struct ModelHeader {
    len: u32,
    _pad: u32,
}
const HEADER: usize = std::mem::size_of::<ModelHeader>();
const _: () = assert!(HEADER == 8);
pub const PAYLOAD: usize = CONTENT - HEADER;

/// Pages a model of `model_len` bytes and the directory of `run_pages` take.
pub fn pages_for(model_len: usize, run_pages: u32) -> u32 {
    model_len
        .saturating_add(2 * run_pages as usize)
        .div_ceil(PAYLOAD)
        .min(u32::MAX as usize) as u32
}

/// Writes the model and the directory of run pages holding `counts` entries
/// into pages `first..` of `place` (a build or a retrain, before anything
/// points at them); returns the number of pages.
pub fn write(
    rel: pg_sys::Relation,
    (place, first): (Extents, u32),
    generation: u32,
    (model, counts): (&[u8], &[u16]),
    need_lock: bool,
) -> u32 {
    let mut bytes = Vec::with_capacity(model.len() + 2 * counts.len());
    bytes.extend_from_slice(model);
    for c in counts {
        bytes.extend_from_slice(&c.to_le_bytes());
    }
    let mut pages = 0;
    for chunk in bytes.chunks(PAYLOAD) {
        let blk = place
            .block(first + pages)
            .expect("the extents hold the model's pages");
        // SAFETY: the relation is open by the caller.
        let nblocks = unsafe {
            pg_sys::RelationGetNumberOfBlocksInFork(rel, pg_sys::ForkNumber::MAIN_FORKNUM)
        };
        let buf = if blk < nblocks {
            Buf::overwrite(rel, blk)
        } else {
            Buf::extend(rel, need_lock)
        };
        assert_eq!(
            buf.blkno(),
            blk,
            "extents past the end are written in order"
        );
        // SAFETY: pinned and exclusive-locked; the chunk fits the payload area.
        unsafe {
            let page = buf.page();
            init_page(page, generation, chunk);
            pg_sys::MarkBufferDirty(buf.buffer());
        }
        pages += 1;
    }
    debug_assert_eq!(pages, pages_for(model.len(), counts.len() as u32));
    pages
}

/// Formats a model page holding `chunk`.
///
/// # Safety
/// `page` must be a writable page image; `chunk` at most `PAYLOAD` bytes.
pub unsafe fn init_page(page: pg_sys::Page, generation: u32, chunk: &[u8]) {
    assert!(chunk.len() <= PAYLOAD);
    page::init(page, PageKind::Model, generation, HEADER + chunk.len());
    page::write_header(
        page,
        &ModelHeader {
            len: chunk.len() as u32,
            _pad: 0,
        },
    );
    std::ptr::copy_nonoverlapping(chunk.as_ptr(), page::content(page).add(HEADER), chunk.len());
}

/// The current generation's model and run page directory.
pub struct Loaded<'a> {
    pub model: ModelView<'a>,
    pub dir: Directory<'a>,
}

/// The model and directory of generation `meta.generation`, from this
/// backend's cache or read from the model pages (and then cached). The
/// returned views live in the index's relcache memory and stay valid until
/// the relcache entry is rebuilt, which cannot happen while the caller holds
/// the index open and locked without processing invalidations, or the next
/// generation's model is loaded; callers copy nothing out of them across
/// such points. `Err` when a model page was reused by a newer generation.
pub fn load<'a>(rel: pg_sys::Relation, meta: &Meta) -> Result<Loaded<'a>, Recycled> {
    // SAFETY: the cache references are used only inside this function; the
    // views returned point into the cache's chunk, which is replaced only
    // when a model or the bounded pages are cached anew, as documented.
    unsafe {
        let cache = amcache::get(rel);
        if cache.model_generation == meta.generation && meta.generation != 0 {
            return Ok(cached(cache));
        }
        let (bytes, starts) = try_read(rel, meta)?;
        amcache::set_model(rel, meta.generation, &bytes, &starts);
        Ok(cached(amcache::get(rel)))
    }
}

/// # Safety
/// The cache must hold a model; the views must not outlive its chunk.
unsafe fn cached<'a>(cache: &amcache::AmCache) -> Loaded<'a> {
    let (bytes, starts) = cache.model();
    let (bytes, starts): (&'a [u8], &'a [u64]) = (
        std::slice::from_raw_parts(bytes.as_ptr(), bytes.len()),
        std::slice::from_raw_parts(starts.as_ptr(), starts.len()),
    );
    Loaded {
        model: ModelView::open(bytes).expect("cached model was validated when loaded"),
        dir: Directory::new(starts),
    }
}

/// Reads and validates the model's bytes and the directory's starts from
/// the model pages.
pub fn read(rel: pg_sys::Relation, meta: &Meta) -> (Vec<u8>, Vec<u64>) {
    try_read(rel, meta).unwrap_or_else(|_| recycled_error(rel))
}

/// As [`read`], for a scan that starts over when a model page was reused.
fn try_read(rel: pg_sys::Relation, meta: &Meta) -> Result<(Vec<u8>, Vec<u64>), Recycled> {
    let total = meta.model_bytes as usize + 2 * meta.run_pages as usize;
    let mut bytes = Vec::with_capacity(total);
    for i in 0..meta.model_pages {
        let Some(blk) = meta.model_block(i) else {
            corrupt(rel, META_BLOCK, "a model page lies beyond its extents");
        };
        let buf = Buf::read_shared(rel, blk);
        // SAFETY: pinned and share-locked; the chunk length is checked against
        // the payload area before copying.
        unsafe {
            let page = buf.page();
            page::check_current(
                rel,
                blk,
                page,
                PageKind::Model,
                meta.generation..=meta.generation,
            )?;
            let base = page::content(page);
            let len = page::read_header::<ModelHeader>(page).len as usize;
            if len > PAYLOAD {
                corrupt(rel, blk, "model page length is out of range");
            }
            bytes.extend_from_slice(std::slice::from_raw_parts(base.add(HEADER), len));
        }
    }
    if bytes.len() != total {
        corrupt(
            rel,
            META_BLOCK,
            &format!(
                "model pages hold {} bytes, the metapage says {total}",
                bytes.len(),
            ),
        );
    }
    let counts = bytes[meta.model_bytes as usize..]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]));
    let starts = search::starts(counts)
        .filter(|s| s[s.len() - 1] == meta.run_entries)
        .unwrap_or_else(|| {
            corrupt(
                rel,
                META_BLOCK,
                "the run page directory does not add up to the run's entries",
            )
        });
    bytes.truncate(meta.model_bytes as usize);
    let view = ModelView::open(&bytes).and_then(|v| v.verify_checksum().map(|_| v));
    match view {
        Ok(v) if v.nkeys() == meta.run_entries => {}
        Ok(v) => corrupt(
            rel,
            META_BLOCK,
            &format!(
                "model covers {} keys, the run has {}",
                v.nkeys(),
                meta.run_entries
            ),
        ),
        Err(e) => corrupt(rel, META_BLOCK, &e.to_string()),
    }
    Ok((bytes, starts))
}
