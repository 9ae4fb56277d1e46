//! External sort of `(u64, u64)` pairs within `maintenance_work_mem`.
//!
//! Pairs are collected in memory up to the budget, sorted, and written as a
//! run to a PostgreSQL temporary file (`BufFile`: it honours
//! `temp_tablespaces` and is removed by the resource owner if the transaction
//! aborts). The last run stays in memory. Reading merges the runs with a heap
//! and can start over, which the build uses when it must rewrite the run with
//! wider keys. Sorting plain integers in Rust avoids PostgreSQL's per-tuple
//! datum copies: index builds on unsorted data are several times faster.

use pgrx::pg_sys;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

type Pair = (u64, u64);
/// Index entries travel through the sort as (ordinal, TID) pairs, and NULL
/// keys as `(u64::MAX, NULL_MARK | TID)`: TIDs use 48 bits, so NULLs sort
/// after every key, in TID order.
const NULL_MARK: u64 = 1 << 63;
const PAIR: usize = std::mem::size_of::<Pair>();
/// Pairs read from a run per refill while merging.
const READ_CHUNK: usize = 4096;

pub struct Sorter {
    mem: Vec<Pair>,
    /// Most pairs held in memory before a run is spilled.
    cap: usize,
    file: *mut pg_sys::BufFile,
    /// Runs on file: where each starts, and its length in pairs.
    runs: Vec<(i32, i64, usize)>,
}

/// The `maintenance_work_mem` budget in bytes.
pub fn maintenance_budget() -> usize {
    // SAFETY: reads a GUC.
    unsafe { pg_sys::maintenance_work_mem as usize * 1024 }
}

/// Raises PostgreSQL's out-of-memory ERROR for a request Rust's allocator
/// refused: an ERROR aborts the transaction, where a Rust allocation failure
/// would abort the backend and restart the whole cluster.
pub fn out_of_memory(bytes: usize, what: &str) -> ! {
    pgrx::ereport!(
        ERROR,
        pgrx::PgSqlErrorCode::ERRCODE_OUT_OF_MEMORY,
        "out of memory",
        format!("Failed on request of size {bytes} in {what}.")
    );
}

/// Reserves room for `extra` more items in `v`, or raises the ERROR.
pub fn try_grow<T>(v: &mut Vec<T>, extra: usize, what: &str) {
    if v.try_reserve_exact(extra).is_err() {
        out_of_memory(extra.saturating_mul(std::mem::size_of::<T>()), what);
    }
}

impl Sorter {
    /// A sorter holding at most `budget` bytes of pairs in memory. Memory is
    /// taken as pairs arrive, so a small build of a large budget stays small.
    pub fn new(budget: usize) -> Sorter {
        let mut s = Sorter {
            mem: Vec::new(),
            cap: READ_CHUNK,
            file: std::ptr::null_mut(),
            runs: Vec::new(),
        };
        s.set_budget(budget);
        s
    }

    /// Changes the budget; what is held beyond it is spilled at the next put.
    pub fn set_budget(&mut self, budget: usize) {
        self.cap = (budget / PAIR).max(READ_CHUNK);
    }

    /// Adds an index entry: its key (`None` for NULL) and TID.
    pub fn put_entry(&mut self, key: Option<u64>, tid: u64) {
        match key {
            Some(k) => self.put(k, tid),
            None => self.put(u64::MAX, NULL_MARK | tid),
        }
    }

    pub fn put(&mut self, a: u64, b: u64) {
        if self.mem.len() >= self.cap {
            self.spill();
        }
        if self.mem.len() == self.mem.capacity() {
            // Double, up to the budget: growing through realloc moves large
            // blocks with mremap, so the peak stays near the budget.
            let want = self
                .mem
                .capacity()
                .max(READ_CHUNK)
                .min(self.cap - self.mem.len());
            try_grow(&mut self.mem, want, "learned index sort");
        }
        self.mem.push((a, b));
    }

    fn spill(&mut self) {
        self.mem.sort_unstable();
        // SAFETY: the BufFile is created once, in the current resource owner,
        // and written sequentially; the slice covers initialized pairs only.
        unsafe {
            if self.file.is_null() {
                self.file = pg_sys::BufFileCreateTemp(false);
            }
            // Runs are written one after another and only read after the last,
            // so the file position is the end.
            let (mut fileno, mut offset) = (0, 0);
            pg_sys::BufFileTell(self.file, &mut fileno, &mut offset);
            for chunk in self.mem.chunks(READ_CHUNK) {
                pg_sys::BufFileWrite(
                    self.file,
                    chunk.as_ptr() as *mut std::ffi::c_void,
                    chunk.len() * PAIR,
                );
            }
            self.runs.push((fileno, offset, self.mem.len()));
        }
        self.mem.clear();
        pgrx::check_for_interrupts!();
    }

    /// Sorts what is left and returns the merged order.
    pub fn finish(mut self) -> Sorted {
        self.mem.sort_unstable();
        let mut s = Sorted {
            mem: std::mem::take(&mut self.mem),
            file: self.file,
            runs: self
                .runs
                .iter()
                .map(|&(fileno, offset, len)| RunReader {
                    file: self.file,
                    fileno,
                    offset,
                    len,
                    read: 0,
                    buf: Vec::new(),
                    at: 0,
                })
                .collect(),
            others: Vec::new(),
            heap: BinaryHeap::new(),
            mem_at: 0,
            peeked: None,
        };
        self.file = std::ptr::null_mut();
        s.rewind();
        s
    }
}

struct RunReader {
    file: *mut pg_sys::BufFile,
    fileno: i32,
    offset: i64,
    len: usize,
    read: usize,
    buf: Vec<Pair>,
    at: usize,
}

impl RunReader {
    fn next(&mut self) -> Option<Pair> {
        let file = self.file;
        if self.at == self.buf.len() {
            let n = (self.len - self.read).min(READ_CHUNK);
            if n == 0 {
                return None;
            }
            self.buf.resize(n, (0, 0));
            // SAFETY: the run was written at (fileno, offset) with `len` pairs;
            // the buffer holds exactly the `n` pairs read.
            unsafe {
                pg_sys::BufFileSeek(
                    file,
                    self.fileno,
                    (self.offset + (self.read * PAIR) as i64) as _,
                    0, /* SEEK_SET */
                );
                let got = pg_sys::BufFileRead(
                    file,
                    self.buf.as_mut_ptr() as *mut std::ffi::c_void,
                    n * PAIR,
                );
                if got != n * PAIR {
                    pgrx::ereport!(
                        ERROR,
                        pgrx::PgSqlErrorCode::ERRCODE_IO_ERROR,
                        format!(
                            "could not read sort run from temporary file: read {got} of {} bytes",
                            n * PAIR
                        )
                    );
                }
            }
            self.read += n;
            self.at = 0;
        }
        self.at += 1;
        Some(self.buf[self.at - 1])
    }
}

/// Sorted pairs, merged from the runs.
pub struct Sorted {
    mem: Vec<Pair>,
    /// The sorter's own temporary file, if it spilled.
    file: *mut pg_sys::BufFile,
    runs: Vec<RunReader>,
    /// Files of runs sorted elsewhere (a parallel build's workers).
    others: Vec<*mut pg_sys::BufFile>,
    /// Next pair of each file run, with its run number.
    heap: BinaryHeap<Reverse<(Pair, usize)>>,
    mem_at: usize,
    peeked: Option<Option<Pair>>,
}

impl Sorted {
    /// Starts reading from the beginning again.
    pub fn rewind(&mut self) {
        self.peeked = None;
        self.mem_at = 0;
        self.heap.clear();
        for (i, r) in self.runs.iter_mut().enumerate() {
            r.read = 0;
            r.at = 0;
            r.buf.clear();
            if let Some(p) = r.next() {
                self.heap.push(Reverse((p, i)));
            }
        }
    }

    /// The next entry with a key, or `None` once only NULLs are left.
    pub fn next_key(&mut self) -> Option<(u64, u64)> {
        let (key, tid) = self.peek()?;
        if tid & NULL_MARK != 0 {
            return None;
        }
        self.next();
        Some((key, tid))
    }

    /// The key of the next entry, if it has one.
    pub fn peek_key(&mut self) -> Option<u64> {
        self.peek()
            .filter(|&(_, tid)| tid & NULL_MARK == 0)
            .map(|(key, _)| key)
    }

    /// The next entry put with [`Sorter::put_entry`]: key (`None` for NULL)
    /// and TID.
    pub fn next_entry(&mut self) -> Option<(Option<u64>, u64)> {
        self.next().map(|(a, b)| match b & NULL_MARK {
            0 => (Some(a), b),
            _ => (None, b & !NULL_MARK),
        })
    }

    /// The pair `next` returns next, without taking it.
    pub fn peek(&mut self) -> Option<Pair> {
        let p = match self.peeked {
            Some(p) => p,
            None => self.pull(),
        };
        self.peeked = Some(p);
        p
    }

    #[allow(clippy::should_implement_trait)] // also rewinds; not an Iterator
    pub fn next(&mut self) -> Option<Pair> {
        match self.peeked.take() {
            Some(p) => p,
            None => self.pull(),
        }
    }

    fn pull(&mut self) -> Option<Pair> {
        let from_mem = self.mem.get(self.mem_at).copied();
        match (self.heap.peek(), from_mem) {
            (None, None) => None,
            (Some(Reverse((p, _))), Some(m)) if m <= *p => {
                self.mem_at += 1;
                Some(m)
            }
            (None, Some(m)) => {
                self.mem_at += 1;
                Some(m)
            }
            (Some(_), _) => {
                let Reverse((p, i)) = self.heap.pop().unwrap();
                if let Some(n) = self.runs[i].next() {
                    self.heap.push(Reverse((n, i)));
                }
                Some(p)
            }
        }
    }

    /// Adds a whole file of sorted pairs as one more run; [`Sorted::rewind`]
    /// before reading on.
    ///
    /// # Safety
    /// `file` must be an open BufFile holding exactly sorted pairs; it is
    /// closed by [`Sorted::end`].
    pub unsafe fn add_file_run(&mut self, file: *mut pg_sys::BufFile) {
        let len = pg_sys::BufFileSize(file) as usize / PAIR;
        self.others.push(file);
        self.runs.push(RunReader {
            file,
            fileno: 0,
            offset: 0,
            len,
            read: 0,
            buf: Vec::new(),
            at: 0,
        });
    }

    /// Writes every pair, in order, to `file`; returns how many.
    ///
    /// # Safety
    /// `file` must be a BufFile open for writing.
    pub unsafe fn write_all(&mut self, file: *mut pg_sys::BufFile) -> u64 {
        let mut chunk: Vec<Pair> = Vec::with_capacity(READ_CHUNK);
        let mut n = 0u64;
        loop {
            let p = self.next();
            if let Some(p) = p {
                chunk.push(p);
            }
            if chunk.len() == READ_CHUNK || (p.is_none() && !chunk.is_empty()) {
                pg_sys::BufFileWrite(
                    file,
                    chunk.as_ptr() as *mut std::ffi::c_void,
                    chunk.len() * PAIR,
                );
                n += chunk.len() as u64;
                chunk.clear();
                pgrx::check_for_interrupts!();
            }
            if p.is_none() {
                return n;
            }
        }
    }

    /// Closes the temporary files now rather than at the end of the
    /// transaction.
    pub fn end(mut self) {
        for f in std::mem::take(&mut self.others)
            .into_iter()
            .chain(std::iter::once(self.file))
            .filter(|f| !f.is_null())
        {
            // SAFETY: each file is open and owned by this sorter.
            unsafe { pg_sys::BufFileClose(f) };
        }
        self.file = std::ptr::null_mut();
    }
}
