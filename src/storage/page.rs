//! Layout shared by every page: the standard page header, our content area, and
//! an 8-byte special space that says what kind of page this is.

use pgrx::pg_sys;
use pgrx::prelude::*;

pub const BLCKSZ: usize = pg_sys::BLCKSZ as usize;
/// `SizeOfPageHeaderData`.
pub const PAGE_HEADER: usize = 24;
pub const SPECIAL: usize = 8;
/// Bytes between the page header and the special space.
pub const CONTENT: usize = BLCKSZ - PAGE_HEADER - SPECIAL;
const PAGE_MAGIC: u16 = 0x4C44; // "LD"

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

/// Formats a page of `kind` with `content_len` bytes of content in use.
///
/// # Safety
/// `page` must point to a writable page of `BLCKSZ` bytes.
pub unsafe fn init(page: pg_sys::Page, kind: PageKind, content_len: usize) {
    pg_sys::PageInit(page, BLCKSZ, SPECIAL);
    let special = (page as *mut u8).add(BLCKSZ - SPECIAL);
    special.cast::<u16>().write_unaligned(PAGE_MAGIC);
    special.add(2).write(kind as u8);
    special.add(3).write(0);
    special
        .add(4)
        .cast::<u32>()
        .write_unaligned(pg_sys::InvalidBlockNumber);
    set_content_len(page, content_len);
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

/// The `next` link kept in the special space (directory chains).
///
/// # Safety
/// `page` must be a page this module initialized.
pub unsafe fn next_link(page: pg_sys::Page) -> pg_sys::BlockNumber {
    (page as *const u8)
        .add(BLCKSZ - SPECIAL + 4)
        .cast::<u32>()
        .read_unaligned()
}

/// # Safety
/// `page` must be a writable page this module initialized.
pub unsafe fn set_next_link(page: pg_sys::Page, next: pg_sys::BlockNumber) {
    (page as *mut u8)
        .add(BLCKSZ - SPECIAL + 4)
        .cast::<u32>()
        .write_unaligned(next)
}

/// Pointer to the content area.
///
/// # Safety
/// `page` must point to a page of `BLCKSZ` bytes.
pub unsafe fn content(page: pg_sys::Page) -> *mut u8 {
    (page as *mut u8).add(PAGE_HEADER)
}

/// Checks that `page` (block `blk` of `rel`) is an initialized page of `kind`.
///
/// # Safety
/// `page` must point to a page of `BLCKSZ` bytes that stays valid (pinned, and
/// locked if others may write it) during the call.
pub unsafe fn check(
    rel: pg_sys::Relation,
    blk: pg_sys::BlockNumber,
    page: pg_sys::Page,
    kind: PageKind,
) {
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
    let special = (page as *const u8).add(BLCKSZ - SPECIAL);
    if special.cast::<u16>().read_unaligned() != PAGE_MAGIC {
        corrupt(rel, blk, "page magic number is wrong");
    }
    let found = special.add(2).read();
    if found != kind as u8 {
        corrupt(
            rel,
            blk,
            &format!("expected a {}, found page kind {found}", kind.name()),
        );
    }
}
