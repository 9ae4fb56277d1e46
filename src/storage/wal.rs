//! Generic WAL records: register up to four buffers, change the returned page
//! images, finish. Crash recovery and replicas replay these without any custom
//! resource manager.
//!
//! The hot path, adding one entry to a delta page, uses [`write_ranges`]
//! instead: the same record format, built from the byte ranges the change
//! writes, so that its cost follows the entry rather than the page.

use super::Buf;
use pgrx::pg_sys;

pub struct Wal {
    state: *mut pg_sys::GenericXLogState,
}

impl Wal {
    pub fn start(rel: pg_sys::Relation) -> Wal {
        // SAFETY: `rel` is open; the state is palloc'd in the current context.
        Wal {
            state: unsafe { pg_sys::GenericXLogStart(rel) },
        }
    }

    /// Registers `buf` (which must be exclusive-locked) and returns the image of
    /// its page to modify. `new_page`: the page is (re)initialized from scratch,
    /// so log a full image instead of a difference.
    pub fn page(&mut self, buf: &Buf, new_page: bool) -> pg_sys::Page {
        let flags = if new_page {
            pg_sys::GENERIC_XLOG_FULL_IMAGE as i32
        } else {
            0
        };
        // SAFETY: the state is live (not finished); the buffer is pinned and locked.
        unsafe { pg_sys::GenericXLogRegisterBuffer(self.state, buf.buffer(), flags) }
    }

    /// Applies the changes to the buffers and writes the record.
    pub fn finish(mut self) {
        // SAFETY: the state is live; finish consumes it.
        unsafe { pg_sys::GenericXLogFinish(self.state) };
        self.state = std::ptr::null_mut();
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        if !self.state.is_null() && !std::thread::panicking() {
            // SAFETY: the state was started and not finished.
            unsafe { pg_sys::GenericXLogAbort(self.state) };
        }
    }
}

/// What [`write_ranges`] logs at most, fragment headers included.
const MAX_RANGES_BYTES: usize = 256;

/// Writes `ranges` (offset in the page, bytes; at most [`MAX_RANGES_BYTES`]
/// with a 4-byte header each) into the exclusive-locked page
/// of `buf` and logs them as one Generic WAL record.
///
/// `GenericXLogFinish` would produce the same record: its redo
/// (`generic_redo` in generic_xlog.c, unchanged since 9.6) applies fragments
/// of (offset u16, length u16, bytes) to the page and zeroes the hole between
/// `pd_lower` and `pd_upper`. But it gets there by allocating 64 kB of state,
/// copying the page, comparing it whole with the original and copying it back,
/// which costs more than the insert it logs. The ranges must lie outside the
/// page's new hole (below `pd_lower`, at or above `pd_upper`, or the header
/// fields themselves) and the hole must be zero already, as every other
/// change, made through [`Wal`], leaves it.
pub fn write_ranges(rel: pg_sys::Relation, buf: &Buf, ranges: &[(usize, &[u8])]) {
    // On the stack: this runs for every inserted row.
    let mut delta = [0u8; MAX_RANGES_BYTES];
    let mut len = 0;
    for &(offset, bytes) in ranges {
        assert!(offset + bytes.len() <= super::page::BLCKSZ);
        assert!(len + 4 + bytes.len() <= MAX_RANGES_BYTES);
        delta[len..len + 2].copy_from_slice(&(offset as u16).to_ne_bytes());
        delta[len + 2..len + 4].copy_from_slice(&(bytes.len() as u16).to_ne_bytes());
        delta[len + 4..len + 4 + bytes.len()].copy_from_slice(bytes);
        len += 4 + bytes.len();
    }
    let logged = needs_wal(rel);
    let page = buf.page() as *mut u8;
    // SAFETY: the buffer is pinned and exclusive-locked by the caller, the
    // ranges lie inside the page (asserted above), and the critical section
    // is entered and left as START_CRIT_SECTION/END_CRIT_SECTION do: nothing
    // between them can fail except XLogInsert, whose ERROR PostgreSQL turns
    // into a PANIC there, as it must once the page has changed.
    unsafe {
        if logged {
            pg_sys::XLogBeginInsert();
        }
        pg_sys::CritSectionCount += 1;
        for &(offset, bytes) in ranges {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), page.add(offset), bytes.len());
        }
        pg_sys::MarkBufferDirty(buf.buffer());
        if logged {
            pg_sys::XLogRegisterBuffer(0, buf.buffer(), pg_sys::REGBUF_STANDARD as u8);
            pg_sys::XLogRegisterBufData(0, delta.as_mut_ptr().cast(), len as _);
            let lsn = pg_sys::XLogInsert(pg_sys::RmgrIds::RM_GENERIC_ID as _, 0);
            (*page.cast::<pg_sys::PageHeaderData>()).pd_lsn = pg_sys::PageXLogRecPtr {
                xlogid: (lsn >> 32) as u32,
                xrecoff: lsn as u32,
            };
        }
        pg_sys::CritSectionCount -= 1;
    }
}

/// `RelationNeedsWAL`: a permanent relation, unless `wal_level = minimal` and
/// its storage was created in this transaction (then it is synced at commit).
fn needs_wal(rel: pg_sys::Relation) -> bool {
    // SAFETY: `rel` is open; `wal_level` is a GUC variable read in this backend.
    unsafe {
        if (*(*rel).rd_rel).relpersistence as u8 != pg_sys::RELPERSISTENCE_PERMANENT {
            return false;
        }
        if pg_sys::wal_level >= pg_sys::WalLevel::WAL_LEVEL_REPLICA as i32 {
            return true;
        }
        // PostgreSQL 16 renamed relfilenodes to relfilelocators.
        #[cfg(feature = "pg15")]
        let first = (*rel).rd_firstRelfilenodeSubid;
        #[cfg(not(feature = "pg15"))]
        let first = (*rel).rd_firstRelfilelocatorSubid;
        // InvalidSubTransactionId is 0 (c.h).
        (*rel).rd_createSubid == 0 && first == 0
    }
}

/// Blocks logged between two flushes by [`log_new_blocks`]: 4 MB of WAL.
const FLUSH_EVERY: u32 = 512;

/// WAL-logs blocks `[start, end)` of `rel` as full page images
/// (`log_newpage_range`), flushing the WAL after every [`FLUSH_EVERY`]
/// blocks. A retrain or build writes the whole of a generation at once;
/// without the flushes, the first transaction to commit afterwards would
/// wait while its commit record's flush writes all of it. With them, the
/// writer pays for its own WAL and a commit waits for at most one chunk.
pub fn log_new_blocks(rel: pg_sys::Relation, start: pg_sys::BlockNumber, end: pg_sys::BlockNumber) {
    let mut at = start;
    while at < end {
        let to = end.min(at.saturating_add(FLUSH_EVERY));
        // SAFETY: the caller wrote blocks [at, to) of the open relation and
        // holds them against concurrent change (nothing points at them yet).
        // The flush goes to the end of this backend's last record, as a
        // commit's does: not to the insert position, which at a WAL page
        // boundary lies past the page header, beyond anything written, and
        // XLogFlush would refuse it with an ERROR.
        unsafe {
            pg_sys::log_newpage_range(rel, pg_sys::ForkNumber::MAIN_FORKNUM, at, to, true);
            pg_sys::XLogFlush(pg_sys::XactLastRecEnd);
        }
        at = to;
    }
}

/// Flushes the WAL to the end of this backend's last record. A retrain
/// writes its pages without WAL until it logs them whole, and a page with no
/// LSN may be written out at any time: before one goes into a block taken
/// from the free list, the records that freed and took that block (and, WAL
/// being sequential, the switch of any earlier retrain that committed
/// asynchronously) must be on disk, or a crash could replay a state in which
/// the block still belongs to a generation a scan reads.
pub fn flush_own_records() {
    // SAFETY: flushes to a position this backend has inserted up to (see
    // `log_new_blocks`); a no-op when it has inserted nothing.
    unsafe { pg_sys::XLogFlush(pg_sys::XactLastRecEnd) };
}
