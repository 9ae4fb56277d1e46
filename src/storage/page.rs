//! Layout shared by every page: the standard page header, our content area, and
//! an 8-byte special space ([`Opaque`]) that says what kind of page this is and
//! which generation of the index wrote it.

use pgrx::pg_sys;
use pgrx::prelude::*;

pub const BLCKSZ: usize = pg_sys::BLCKSZ as usize;
/// `SizeOfPageHeaderData`.
pub const PAGE_HEADER: usize = 24;
pub const SPECIAL: usize = std::mem::size_of::<Opaque>();
/// Bytes between the page header and the special space.
pub const CONTENT: usize = BLCKSZ - PAGE_HEADER - SPECIAL;
const PAGE_MAGIC: u16 = 0x4C44; // "LD"

const _: () = assert!(PAGE_HEADER == std::mem::size_of::<pg_sys::PageHeaderData>());

/// The special space of every page.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Opaque {
    pub magic: u16,
    pub kind: u8,
    pub _pad: u8,
    /// The generation that wrote the page (section 3b of DESIGN.md): run, NULL
    /// and model pages belong to exactly one; delta pages to the one they were
    /// opened in, or an earlier one whose delta carried over.
    pub generation: u32,
}
const _: () = assert!(std::mem::size_of::<Opaque>() == 8);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PageKind {
    Meta = 1,
    Run = 2,
    Null = 3,
    Model = 4,
    DeltaDir = 5,
    Delta = 6,
}

impl PageKind {
    fn name(self) -> &'static str {
        match self {
            PageKind::Meta => "metapage",
            PageKind::Run => "run page",
            PageKind::Null => "null page",
            PageKind::Model => "model page",
            PageKind::DeltaDir => "delta directory page",
            PageKind::Delta => "delta page",
        }
    }
}

/// Raises the ERROR every reader raises on a page that is not what it should be.
pub fn corrupt(rel: pg_sys::Relation, blk: pg_sys::BlockNumber, what: &str) -> ! {
    // SAFETY: `rel` is an open relation for the duration of the callback.
    let name = unsafe { relation_name(rel) };
    ereport!(
        ERROR,
        PgSqlErrorCode::ERRCODE_INDEX_CORRUPTED,
        format!("learned index \"{name}\" is corrupted at block {blk}: {what}"),
        "Run REINDEX on the index."
    );
}

/// # Safety
/// `rel` must point to a valid, open relation.
pub unsafe fn relation_name(rel: pg_sys::Relation) -> String {
    let name = &(*(*rel).rd_rel).relname;
    std::ffi::CStr::from_ptr(name.data.as_ptr())
        .to_string_lossy()
        .into_owned()
}

/// Formats a page of `kind` and `generation` with `content_len` bytes of
/// content in use.
///
/// # Safety
/// `page` must point to a writable page of `BLCKSZ` bytes.
pub unsafe fn init(page: pg_sys::Page, kind: PageKind, generation: u32, content_len: usize) {
    pg_sys::PageInit(page, BLCKSZ, SPECIAL);
    opaque_ptr(page).write_unaligned(Opaque {
        magic: PAGE_MAGIC,
        kind: kind as u8,
        _pad: 0,
        generation,
    });
    set_content_len(page, content_len);
}

unsafe fn opaque_ptr(page: pg_sys::Page) -> *mut Opaque {
    (page as *mut u8).add(BLCKSZ - SPECIAL).cast()
}

/// The special space of a page.
///
/// # Safety
/// `page` must point to a page of `BLCKSZ` bytes.
pub unsafe fn opaque(page: pg_sys::Page) -> Opaque {
    opaque_ptr(page).read_unaligned()
}

/// Sets the generation in the special space of a writable page image.
///
/// # Safety
/// `page` must be a writable page image this module initialized.
pub unsafe fn set_generation(page: pg_sys::Page, generation: u32) {
    let mut o = opaque(page);
    o.generation = generation;
    opaque_ptr(page).write_unaligned(o);
}

/// Marks how much of the content area is in use. Generic WAL and full-page
/// images skip the hole after it, so everything meaningful must lie before it.
///
/// # Safety
/// `page` must point to an initialized, writable page.
pub unsafe fn set_content_len(page: pg_sys::Page, len: usize) {
    let header = page as *mut pg_sys::PageHeaderData;
    (*header).pd_lower = (PAGE_HEADER + len.min(CONTENT)) as u16;
}

/// Pointer to the content area.
///
/// # Safety
/// `page` must point to a page of `BLCKSZ` bytes.
pub unsafe fn content(page: pg_sys::Page) -> *mut u8 {
    (page as *mut u8).add(PAGE_HEADER)
}

/// Reads a `#[repr(C)]` header from the start of the content area.
///
/// # Safety
/// `page` must point to a page of `BLCKSZ` bytes and `T` fit in `CONTENT`.
pub unsafe fn read_header<T: Copy>(page: pg_sys::Page) -> T {
    content(page).cast::<T>().read_unaligned()
}

/// # Safety
/// `page` must be a writable page image and `T` fit in `CONTENT`.
pub unsafe fn write_header<T: Copy>(page: pg_sys::Page, h: &T) {
    content(page).cast::<T>().write_unaligned(*h)
}

/// Checks that `page` (block `blk` of `rel`) is an initialized page of `kind`;
/// returns its generation.
///
/// # Safety
/// `page` must point to a page of `BLCKSZ` bytes that stays valid (pinned, and
/// locked if others may write it) during the call.
pub unsafe fn check(
    rel: pg_sys::Relation,
    blk: pg_sys::BlockNumber,
    page: pg_sys::Page,
    kind: PageKind,
) -> u32 {
    let header = page as *const pg_sys::PageHeaderData;
    if (*header).pd_upper == 0 {
        corrupt(
            rel,
            blk,
            &format!("expected a {}, found an empty page", kind.name()),
        );
    }
    if (*header).pd_special as usize != BLCKSZ - SPECIAL {
        corrupt(rel, blk, "page special space has the wrong size");
    }
    let lower = (*header).pd_lower as usize;
    if !(PAGE_HEADER..=PAGE_HEADER + CONTENT).contains(&lower) {
        corrupt(rel, blk, "page header pd_lower is out of range");
    }
    let o = opaque(page);
    if o.magic != PAGE_MAGIC {
        corrupt(rel, blk, "page magic number is wrong");
    }
    if o.kind != kind as u8 {
        corrupt(
            rel,
            blk,
            &format!("expected a {}, found page kind {}", kind.name(), o.kind),
        );
    }
    o.generation
}

/// A page a scan expected to belong to its generation was reused by a newer
/// one: the scan must start over from the metapage (DESIGN.md section 3).
#[derive(Debug)]
pub struct Recycled;

/// Checks that `page` is a page of `kind` written by a generation in
/// `generations`: those of the section that holds it (an append retrain keeps
/// the full run pages of the generation it extends, with their tags). A valid
/// page of another kind or a newer generation where a scan expected this one
/// is not damage if the index has moved to a newer generation since the scan
/// read the metapage: the blocks of a retired generation are reused, and only
/// a query that outlived a retrain and the retirement after it (on a hot standby, where the primary
/// cannot see its snapshot) can meet them. That is `Err(Recycled)`; anything
/// else wrong is an ERROR.
///
/// # Safety
/// As for [`check`].
pub unsafe fn check_current(
    rel: pg_sys::Relation,
    blk: pg_sys::BlockNumber,
    page: pg_sys::Page,
    kind: PageKind,
    generations: std::ops::RangeInclusive<u32>,
) -> Result<(), Recycled> {
    let o = opaque(page);
    if o.magic == PAGE_MAGIC
        && (o.kind != kind as u8 || !generations.contains(&o.generation))
        && super::Meta::read(rel).generation != *generations.end()
    {
        return Err(Recycled);
    }
    let found = check(rel, blk, page, kind);
    if !generations.contains(&found) {
        corrupt(
            rel,
            blk,
            &format!(
                "{} belongs to generation {found}, outside the metapage's {}..={}",
                kind.name(),
                generations.start(),
                generations.end()
            ),
        );
    }
    Ok(())
}

/// The ERROR for a query that met a recycled page where it cannot start
/// over: a serialization failure to retry, as a recovery conflict would give.
pub fn recycled_error(rel: pg_sys::Relation) -> ! {
    pgrx::pg_sys::panic::ErrorReport::new(
        PgSqlErrorCode::ERRCODE_T_R_SERIALIZATION_FAILURE,
        format!(
            "learned index \"{}\" was retrained while this query ran, and blocks it was reading were reused",
            // SAFETY: `rel` is open.
            unsafe { relation_name(rel) }
        ),
        "learneddb",
    )
    .set_hint("Run the query again.")
    .report(PgLogLevel::ERROR);
    unreachable!("an ERROR does not return")
}
