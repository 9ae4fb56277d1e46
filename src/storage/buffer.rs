//! A pinned buffer that releases itself. On the error path it does nothing:
//! PostgreSQL's abort processing releases content locks and pins, and calling
//! back into PostgreSQL while an error unwinds is not safe.

use pgrx::pg_sys;

/// Small: a run page view holds one and must stay within 128 bytes (the
/// assertion after `RunPage`).
pub struct Buf {
    buf: pg_sys::Buffer,
    locked: bool,
    /// Known when the block is read: asking PostgreSQL is a guarded call.
    blk: pg_sys::BlockNumber,
}

/// A buffer access strategy (a ring of buffers) for reads that walk the whole
/// index, so that VACUUM, `learned_verify` and the statistics do not evict
/// the cache. Null means the default strategy.
#[derive(Clone, Copy)]
pub struct Strategy(pub pg_sys::BufferAccessStrategy);

impl Strategy {
    pub const DEFAULT: Strategy = Strategy(std::ptr::null_mut());
}

/// A bulk-read ring owned by the caller, freed on drop.
pub struct BulkRead(Strategy);

impl BulkRead {
    #[allow(clippy::new_without_default)] // allocates: not a plain default
    pub fn new() -> BulkRead {
        // SAFETY: allocates a strategy object in the current memory context.
        BulkRead(Strategy(unsafe {
            pg_sys::GetAccessStrategy(pg_sys::BufferAccessStrategyType::BAS_BULKREAD)
        }))
    }

    pub fn get(&self) -> Strategy {
        self.0
    }
}

impl Drop for BulkRead {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // SAFETY: allocated by GetAccessStrategy in `new`, not freed since.
            unsafe { pg_sys::FreeAccessStrategy(self.0 .0) };
        }
    }
}

/// Blocks in the main fork of `rel` now.
pub fn nblocks(rel: pg_sys::Relation) -> pg_sys::BlockNumber {
    // SAFETY: `rel` is an open relation.
    unsafe { pg_sys::RelationGetNumberOfBlocksInFork(rel, pg_sys::ForkNumber::MAIN_FORKNUM) }
}

impl Buf {
    /// Pins block `blk` of the main fork.
    pub fn read(rel: pg_sys::Relation, blk: pg_sys::BlockNumber) -> Buf {
        Buf::read_with(rel, blk, Strategy::DEFAULT)
    }

    /// Pins block `blk` of the main fork through `strategy`.
    pub fn read_with(rel: pg_sys::Relation, blk: pg_sys::BlockNumber, strategy: Strategy) -> Buf {
        // PostgreSQL's own checks (an invalid page header, a failed read) name
        // only the file: re-raise them naming the index and block.
        let buf = crate::error::pg_call(
            || {
                // SAFETY: `rel` is an open relation; ReadBufferExtended raises
                // an ERROR rather than returning an invalid buffer.
                unsafe {
                    pg_sys::ReadBufferExtended(
                        rel,
                        pg_sys::ForkNumber::MAIN_FORKNUM,
                        blk,
                        pg_sys::ReadBufferMode::RBM_NORMAL,
                        strategy.0,
                    )
                }
            },
            || {
                // SAFETY: `rel` is still open.
                let name = unsafe { super::page::relation_name(rel) };
                Some(format!("block {blk} of learned index \"{name}\""))
            },
        );
        Buf {
            buf,
            locked: false,
            blk,
        }
    }

    /// Pins and share-locks block `blk`.
    pub fn read_shared(rel: pg_sys::Relation, blk: pg_sys::BlockNumber) -> Buf {
        let mut b = Buf::read(rel, blk);
        b.lock(pg_sys::BUFFER_LOCK_SHARE);
        b
    }

    /// Pins and exclusive-locks block `blk`.
    pub fn read_exclusive(rel: pg_sys::Relation, blk: pg_sys::BlockNumber) -> Buf {
        let mut b = Buf::read(rel, blk);
        b.lock(pg_sys::BUFFER_LOCK_EXCLUSIVE);
        b
    }

    /// Pins and exclusive-locks block `blk` to write it whole, without
    /// reading it: a block a retrain takes from the free list or added
    /// earlier may hold anything, down to a page torn by an operating system
    /// crash (nothing WAL-logged it) that a read would refuse, every retrain
    /// then failing on it.
    pub fn overwrite(rel: pg_sys::Relation, blk: pg_sys::BlockNumber) -> Buf {
        // SAFETY: `rel` is an open relation and `blk` below its end;
        // RBM_ZERO_AND_LOCK returns the buffer pinned and exclusive-locked,
        // zeroed unless it was in shared buffers already.
        let buf = unsafe {
            pg_sys::ReadBufferExtended(
                rel,
                pg_sys::ForkNumber::MAIN_FORKNUM,
                blk,
                pg_sys::ReadBufferMode::RBM_ZERO_AND_LOCK,
                std::ptr::null_mut(),
            )
        };
        Buf {
            buf,
            locked: true,
            blk,
        }
    }

    /// Adds a new block at the end of the relation, pinned and exclusive-locked.
    /// Takes the relation extension lock unless `rel` is new to this transaction
    /// (a build), where nobody else can see it.
    pub fn extend(rel: pg_sys::Relation, need_lock: bool) -> Buf {
        // SAFETY: `rel` is open; the extension lock serializes P_NEW against
        // concurrent extenders as PostgreSQL 15 requires.
        unsafe {
            if need_lock {
                pg_sys::LockRelationForExtension(rel, pg_sys::ExclusiveLock as i32);
            }
            let buf = pg_sys::ReadBufferExtended(
                rel,
                pg_sys::ForkNumber::MAIN_FORKNUM,
                pg_sys::InvalidBlockNumber, // P_NEW
                pg_sys::ReadBufferMode::RBM_NORMAL,
                std::ptr::null_mut(),
            );
            pg_sys::LockBuffer(buf, pg_sys::BUFFER_LOCK_EXCLUSIVE as i32);
            if need_lock {
                pg_sys::UnlockRelationForExtension(rel, pg_sys::ExclusiveLock as i32);
            }
            Buf {
                buf,
                locked: true,
                blk: pg_sys::BufferGetBlockNumber(buf),
            }
        }
    }

    fn lock(&mut self, mode: u32) {
        debug_assert!(!self.locked);
        // SAFETY: the buffer is pinned by us and not locked yet.
        unsafe { pg_sys::LockBuffer(self.buf, mode as i32) };
        self.locked = true;
    }

    pub fn lock_shared(&mut self) {
        self.lock(pg_sys::BUFFER_LOCK_SHARE);
    }

    /// Exclusive lock once no other backend holds a pin: what VACUUM takes
    /// before it removes entries, so that it waits for scans that still hold
    /// copies of this page's entries (DESIGN.md section 3a).
    pub fn lock_for_cleanup(&mut self) {
        debug_assert!(!self.locked);
        // SAFETY: the buffer is pinned by us (exactly once) and not locked.
        unsafe { pg_sys::LockBufferForCleanup(self.buf) };
        self.locked = true;
    }

    /// Tries to exclusive-lock without waiting.
    pub fn try_lock_exclusive(&mut self) -> bool {
        // SAFETY: the buffer is pinned by us and not locked yet.
        self.locked = unsafe { pg_sys::ConditionalLockBuffer(self.buf) };
        self.locked
    }

    /// Releases the content lock and keeps the pin.
    pub fn unlock(&mut self) {
        if self.locked {
            // SAFETY: we hold the content lock we are releasing.
            unsafe { pg_sys::LockBuffer(self.buf, pg_sys::BUFFER_LOCK_UNLOCK as i32) };
            self.locked = false;
        }
    }

    pub fn buffer(&self) -> pg_sys::Buffer {
        self.buf
    }

    #[inline]
    pub fn blkno(&self) -> pg_sys::BlockNumber {
        self.blk
    }

    /// The page in shared memory. Read it only while locked.
    pub fn page(&self) -> pg_sys::Page {
        // SAFETY: the buffer is pinned, so its page stays in place.
        unsafe { pg_sys::BufferGetPage(self.buf) }
    }
}

impl Buf {
    /// Keeps the pin beyond this callback (a scan's position): see [`HeldPin`].
    pub fn into_held(mut self) -> HeldPin {
        self.unlock();
        let held = HeldPin(self.buf);
        std::mem::forget(self);
        held
    }
}

/// A pin a scan keeps between calls. Unlike [`Buf`] it does nothing when
/// dropped: the scan releases it with [`HeldPin::release`] when it moves on
/// or ends, and when the transaction or portal aborts instead, the resource
/// owner has already released it by the time the scan's memory goes away;
/// releasing it again then would be an error.
#[must_use = "release it, or let abort processing do so"]
pub struct HeldPin(pg_sys::Buffer);

impl HeldPin {
    pub fn release(self) {
        // SAFETY: the pin was taken by this backend in this scan and has not
        // been released (a HeldPin is released at most once, by value).
        unsafe { pg_sys::ReleaseBuffer(self.0) };
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        // SAFETY: we hold exactly one pin, and the content lock if `locked`.
        unsafe {
            if self.locked {
                pg_sys::UnlockReleaseBuffer(self.buf);
            } else {
                pg_sys::ReleaseBuffer(self.buf);
            }
        }
    }
}
