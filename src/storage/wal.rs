//! Generic WAL records: register up to four buffers, change the returned page
//! images, finish. Crash recovery and replicas replay these without any custom
//! resource manager.

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
