//! Block 0: what the index is and where everything lives.

use super::extents::{Extent, Extents, MAX_EXTENTS};
use super::page::{self, corrupt, PageKind};
use super::wal::Wal;
use super::Buf;
use crate::key::KeyKind;
use pgrx::pg_sys;

pub const META_BLOCK: pg_sys::BlockNumber = 0;
const META_MAGIC: u32 = 0x4C52_4E44; // "LRND"
/// 2: pages carry their generation; directory pages keep their link in their header.
/// 3: generations may share run pages (append retrains); 32 extents per list.
/// 4: run pages have an insert area and a fence, and a per-generation count
/// of entries per page; the metapage keeps the run's last entry.
/// 5: run and NULL pages are packed (src/storage/packed.rs), each holding as
/// many entries as fit; the model pages keep a page directory after the model.
/// 6: a run page's insert area may hold packed entries (`RunHeader::packed_ins`).
/// Version 5 reads as 6 with none; a retrain's switch moves an index to 6.
/// 7: the metapage's extent lists hold `MAX_EXTENTS` extents (32 before).
/// Versions 5 and 6 keep their narrow lists until a retrain's switch, or
/// until a list outgrows them (their pages are 7's).
/// 8: a full bounded delta page may be split: its entries are copied into two
/// pages for the halves of its bounds, and its directory entry says `SPLIT`
/// (src/storage/delta/insert.rs). Older indexes move to 8 at a retrain's
/// switch, and do not split until then.
/// 9: a run page's insert area may end with a fingerprint of its raw keys
/// (src/storage/run.rs). Older indexes move to 9 at a retrain's switch, and
/// their pages gain one as their insert areas start over or are packed.
pub const FORMAT_VERSION: u32 = 9;
/// The oldest format this build reads.
pub const OLDEST_READABLE_VERSION: u32 = 5;
/// The first format whose run pages may pack their insert area.
pub const PACKED_INSERTS_VERSION: u32 = 6;
/// The first format whose metapage lists hold `MAX_EXTENTS` extents.
const WIDE_LISTS_VERSION: u32 = 7;
/// The first format whose delta directory may hold `SPLIT` entries.
pub const SPLIT_VERSION: u32 = 8;
/// The first format whose run pages may have a fingerprint.
pub const FINGERPRINT_VERSION: u32 = 9;
/// Extents a list of an older metapage holds.
const NARROW_EXTENTS: usize = 32;
/// The generation a build writes.
pub const FIRST_GENERATION: u32 = 1;
/// Delta pages that take inserts at once; more only open under contention.
pub const MAX_OPEN: usize = 4;

/// The metapage content. Plain old data: read and written whole.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Meta {
    pub magic: u32,
    pub version: u32,
    pub key_kind: u8,
    /// 1 while VACUUM removes dead entries from the delta: full bounded
    /// pages are then closed rather than split, since VACUUM would not visit
    /// the pages a split copies entries into after it read the directory.
    /// Cleared when that pass ends, or by the next retrain's switch if it
    /// failed (a retrain excludes VACUUM). 0 in metapages from before it.
    pub vacuuming: u8,
    pub _pad: [u8; 2],
    pub target_window: u32,
    /// The current generation: its run, NULL and model pages carry this number,
    /// and it includes every delta page whose generation is smaller.
    pub generation: u32,
    /// The generation new delta pages are tagged with: the current one, or
    /// the next while a retrain has frozen the delta (`src/retrain.rs`).
    pub insert_generation: u32,
    /// The sorted run: entries with a key.
    pub run_pages: u32,
    pub run_entries: u64,
    /// Run entries VACUUM has tombstoned; a merge drops them.
    pub run_dead: u64,
    /// The oldest generation whose run pages the current run still uses: an
    /// append retrain keeps the full pages of the run it extends.
    pub run_base: u32,
    /// How many leading run pages the current and previous generations
    /// share (the same blocks).
    pub shared_pages: u32,
    /// TIDs of rows whose key is NULL.
    pub null_pages: u32,
    pub null_entries: u64,
    pub model_pages: u32,
    pub model_bytes: u64,
    pub model_leaves: u32,
    pub max_window: u32,
    pub mean_window: f32,
    /// Open delta pages, and where each one's directory entry is.
    pub n_open: u32,
    pub open: [u32; MAX_OPEN],
    pub open_dir: [u32; MAX_OPEN],
    pub open_slot: [u32; MAX_OPEN],
    /// The chain of delta directory pages.
    pub dir_head: u32,
    pub dir_tail: u32,
    /// Delta pages ever allocated (each has a directory entry).
    pub delta_pages: u32,
    /// Delta pages closed so far, and the sum of their key ranges' widths:
    /// how many of them a point lookup overlaps on average, for the planner.
    pub closed_pages: u32,
    pub closed_width: f64,
    /// Smallest and largest key in the run and closed delta pages.
    pub key_lo: u64,
    pub key_hi: u64,
    pub built_at: i64,
    pub retrained_at: i64,
    pub retrain_count: u64,
    /// Microseconds the last retrain took.
    pub retrain_us: u64,
    /// The generation before the current one, 0 if none: scans that began
    /// before the switch may still read its run and NULL pages, so VACUUM
    /// keeps them free of dead entries until no snapshot is that old.
    pub prev_generation: u32,
    pub prev_run_base: u32,
    pub prev_run_pages: u32,
    pub prev_run_entries: u64,
    pub prev_null_pages: u32,
    pub prev_null_entries: u64,
    pub prev_model_pages: u32,
    /// The transaction that switched away from it.
    pub prev_retired: u64,
    /// Nonzero once an entry whose place is inside the run went to the delta
    /// in this generation (its page had no room, or a retrain was running):
    /// scans then read the delta pages for every key, not only for keys above
    /// the run's last entry.
    pub spilled: u32,
    /// The run's last (key, TID), when it has entries: inserts above it go
    /// to the delta, those at or below it to the run page that owns them.
    pub run_last_key: u64,
    pub run_last_tid: u64,
    // The extent lists come last, so the fields above keep their offsets if
    // the lists grow.
    /// Where the current generation's pages are: its run pages, then its
    /// NULL pages, then its model pages.
    pub place: Extents,
    /// Where the previous generation's pages are, in the same order.
    pub prev_place: Extents,
    /// Blocks of retired generations, for the next ones.
    pub free: Extents,
    /// Blocks the retrain under way took for the next generation, written
    /// with each metapage record that takes them. The switch clears the
    /// list; if the retrain ended without it (an ERROR, a cancel, a crash),
    /// the next retrain, VACUUM or worker visit returns them to `free`.
    /// (Last: a metapage from before it reads it as empty.)
    pub pending: Extents,
    /// How many trailing run pages the current and previous generations
    /// share: a partial merge keeps the pages after the stretch it rewrites,
    /// as it keeps the `shared_pages` before it. (After `pending`, for the
    /// same reason: 0 in a metapage from before it.)
    pub shared_tail: u32,
    /// While a partial merge runs, the current generation's run pages
    /// `[rewrite_first, rewrite_end)` it rewrites: the others carry over to
    /// the next generation as they are, so entries go on into their insert
    /// areas; entries of these go to the delta. Empty (both 0) when no
    /// retrain runs or the retrain has not said (a whole merge, an append,
    /// a retrain before it chose its stretch): every entry inside the run
    /// then goes to the delta while `insert_generation` is ahead. Set after
    /// the freeze, cleared by the switch and by the next freeze. (Last:
    /// `rewrite_end` is 0 in a metapage from before them, and `rewrite_first`
    /// lies in the padding older builds copied, so only `first < end` says
    /// there is a stretch. The narrow layout of formats before 7 does not
    /// keep them: such an index's first retrain rewrites every page.)
    pub rewrite_first: u32,
    pub rewrite_end: u32,
}

impl Meta {
    pub fn new(kind: KeyKind, target_window: u32) -> Meta {
        Meta {
            magic: META_MAGIC,
            version: FORMAT_VERSION,
            key_kind: kind as u8,
            vacuuming: 0,
            _pad: [0; 2],
            target_window,
            generation: FIRST_GENERATION,
            insert_generation: FIRST_GENERATION,
            run_pages: 0,
            run_entries: 0,
            run_dead: 0,
            run_base: FIRST_GENERATION,
            shared_pages: 0,
            null_pages: 0,
            null_entries: 0,
            model_pages: 0,
            model_bytes: 0,
            model_leaves: 0,
            max_window: 0,
            mean_window: 0.0,
            n_open: 0,
            open: [pg_sys::InvalidBlockNumber; MAX_OPEN],
            open_dir: [pg_sys::InvalidBlockNumber; MAX_OPEN],
            open_slot: [0; MAX_OPEN],
            dir_head: pg_sys::InvalidBlockNumber,
            dir_tail: pg_sys::InvalidBlockNumber,
            delta_pages: 0,
            closed_pages: 0,
            closed_width: 0.0,
            key_lo: u64::MAX,
            key_hi: 0,
            // SAFETY: reads the clock; no preconditions.
            built_at: unsafe { pg_sys::GetCurrentTimestamp() },
            retrained_at: 0,
            retrain_count: 0,
            retrain_us: 0,
            prev_generation: 0,
            prev_run_base: 0,
            prev_run_pages: 0,
            prev_run_entries: 0,
            prev_null_pages: 0,
            prev_null_entries: 0,
            prev_model_pages: 0,
            prev_retired: 0,
            spilled: 0,
            run_last_key: 0,
            run_last_tid: 0,
            place: Extents::default(),
            prev_place: Extents::default(),
            free: Extents::default(),
            pending: Extents::default(),
            shared_tail: 0,
            rewrite_first: 0,
            rewrite_end: 0,
        }
    }

    /// Whether an entry may go into the insert area of run page `i` of the
    /// current generation: always, unless a retrain runs, and then only if
    /// the page carries over to the next generation as it is.
    pub fn takes_inserts(&self, i: u32) -> bool {
        self.insert_generation == self.generation
            || (self.rewrite_first < self.rewrite_end
                && !(self.rewrite_first..self.rewrite_end).contains(&i))
    }

    pub fn kind(&self) -> KeyKind {
        KeyKind::from_u8(self.key_kind).expect("validated on read")
    }

    /// Reads the metapage content from a locked page and validates it.
    ///
    /// # Safety
    /// `page` must be block 0 of `rel`, pinned and locked.
    pub unsafe fn from_page(rel: pg_sys::Relation, page: pg_sys::Page) -> Meta {
        let generation = page::check(rel, META_BLOCK, page, PageKind::Meta);
        let mut m: Meta = page::read_header(page);
        if m.version < WIDE_LISTS_VERSION {
            NarrowLists::read(page).widen(&mut m);
        }
        m.validate(rel);
        if m.generation != generation {
            corrupt(
                rel,
                META_BLOCK,
                "metapage generation differs from its page's",
            );
        }
        m
    }

    /// # Safety
    /// `page` must be a writable image of block 0.
    pub unsafe fn to_page(&self, page: pg_sys::Page) {
        // An older format keeps its layout while its lists fit it, so that
        // the builds that wrote it can still read it.
        if self.version < WIDE_LISTS_VERSION {
            if let Some(narrow) = NarrowLists::of(self) {
                page::write_header(page, self);
                narrow.write(page);
                page::set_content_len(page, NarrowLists::END);
                return;
            }
        }
        let mut m = *self;
        m.version = m.version.max(WIDE_LISTS_VERSION);
        page::write_header(page, &m);
        // A metapage from a build that had fewer fields marks less in use,
        // and WAL would drop the rest.
        page::set_content_len(page, META_LEN);
    }

    /// Formats `page` as the metapage holding `self`.
    ///
    /// # Safety
    /// `page` must be a writable image of block 0.
    pub unsafe fn init_page(&self, page: pg_sys::Page) {
        page::init(page, PageKind::Meta, self.generation, META_LEN);
        self.to_page(page);
    }

    /// Whether a scan that read generation `g` from an earlier copy of this
    /// metapage can still read it: the current generation, or the previous
    /// one before it is retired.
    pub fn readable(&self, g: u32) -> bool {
        self.generation == g || (self.prev_generation != 0 && self.prev_generation == g)
    }

    /// The run's last (key, TID), `None` for an empty run.
    pub fn run_last(&self) -> Option<(u64, u64)> {
        (self.run_entries > 0).then_some((self.run_last_key, self.run_last_tid))
    }

    /// Takes delta page `blk` off the open list; false if it is not on it.
    pub fn remove_open(&mut self, blk: pg_sys::BlockNumber) -> bool {
        let n = self.n_open as usize;
        let Some(s) = self.open[..n].iter().position(|&b| b == blk) else {
            return false;
        };
        self.open.copy_within(s + 1..n, s);
        self.open_dir.copy_within(s + 1..n, s);
        self.open_slot.copy_within(s + 1..n, s);
        self.open[n - 1] = pg_sys::InvalidBlockNumber;
        self.open_dir[n - 1] = pg_sys::InvalidBlockNumber;
        self.open_slot[n - 1] = 0;
        self.n_open -= 1;
        true
    }

    /// Reads the metapage under a short share lock.
    pub fn read(rel: pg_sys::Relation) -> Meta {
        let b = Buf::read_shared(rel, META_BLOCK);
        // SAFETY: block 0, pinned and share-locked for the duration.
        unsafe { Meta::from_page(rel, b.page()) }
    }

    fn validate(&self, rel: pg_sys::Relation) {
        let bad = |what: &str| corrupt(rel, META_BLOCK, what);
        if self.magic != META_MAGIC {
            bad("metapage magic number is wrong");
        }
        if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&self.version) {
            // Not damage: the index was written by another build of learneddb
            // (nbtree says "version mismatch" in the same place).
            // SAFETY: `rel` is open for the duration of the call.
            let name = unsafe { page::relation_name(rel) };
            pgrx::ereport!(
                ERROR,
                pgrx::PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                format!(
                    "learned index \"{name}\" has on-disk format version {}, and this build of learneddb reads versions {OLDEST_READABLE_VERSION} to {FORMAT_VERSION}",
                    self.version
                ),
                format!("Run REINDEX INDEX on \"{name}\" to rebuild it in the current format.")
            );
        }
        if KeyKind::from_u8(self.key_kind).is_none() {
            bad(&format!("unknown key type {}", self.key_kind));
        }
        // Every page holds at least one entry and at most MAX_COUNT.
        let plausible = |pages: u32, entries: u64| {
            pages as u64 <= entries && entries <= pages as u64 * super::packed::MAX_COUNT as u64
        };
        if !plausible(self.run_pages, self.run_entries)
            || !plausible(self.null_pages, self.null_entries)
        {
            bad("a section's page count does not match its entry count");
        }
        if self.prev_generation != 0
            && (!plausible(self.prev_run_pages, self.prev_run_entries)
                || !plausible(self.prev_null_pages, self.prev_null_entries))
        {
            bad("the previous generation's page counts do not match its entry counts");
        }
        for list in [&self.place, &self.prev_place, &self.free, &self.pending] {
            if list.n as usize > MAX_EXTENTS
                || list
                    .as_slice()
                    .iter()
                    .any(|e| e.start == META_BLOCK || e.end() > u32::MAX as u64)
            {
                bad("an extent of the index has an impossible location");
            }
        }
        let pages = self.run_pages as u64 + self.null_pages as u64 + self.model_pages as u64;
        if self.place.blocks() < pages {
            bad("the current generation has more pages than its extents hold");
        }
        if self.model_pages
            != super::model_pages::pages_for(self.model_bytes as usize, self.run_pages)
        {
            bad("model size does not match its pages");
        }
        if self.n_open as usize > MAX_OPEN {
            bad("too many open delta pages");
        }
        if self.insert_generation < self.generation
            || self.run_base > self.generation
            || (self.prev_generation != 0
                && (self.prev_generation >= self.generation
                    || self.prev_run_base > self.prev_generation))
        {
            bad("generation numbers are out of order");
        }
        let shared = self.shared_pages as u64 + self.shared_tail as u64;
        if self.run_dead > self.run_entries
            || (shared != 0
                && (self.prev_generation == 0
                    || shared > self.run_pages.min(self.prev_run_pages) as u64))
        {
            bad("the run's entry counts are inconsistent");
        }
    }

    /// Expected number of closed delta pages a scan must read when it
    /// selects a fraction `selectivity` of the keys: those whose range holds
    /// the point searched, plus those inside the range.
    pub fn closed_pages_read(&self, selectivity: f64) -> f64 {
        let closed = self.closed_pages as f64;
        let domain = self.key_hi.saturating_sub(self.key_lo).max(1) as f64;
        (self.closed_width / domain + selectivity * closed).min(closed)
    }

    /// The previous generation's blocks the current one does not use: its
    /// run pages but the leading and trailing ones they share, then its NULL
    /// and model pages.
    pub fn prev_own(&self) -> Vec<Extent> {
        let shared_end = self.prev_run_pages.saturating_sub(self.shared_tail);
        let mut own = self.prev_place.range(self.shared_pages, shared_end);
        own.extend(self.prev_place.tail(self.prev_run_pages));
        own
    }

    /// The block of model page `i`.
    pub fn model_block(&self, i: u32) -> Option<pg_sys::BlockNumber> {
        self.place.block(self.run_pages + self.null_pages + i)
    }

    /// Writes `self` to the metapage in one WAL record with whatever else `wal`
    /// already holds. The caller holds the metapage exclusive-locked in `buf`.
    pub fn write(&self, wal: &mut Wal, buf: &Buf) {
        let page = wal.page(buf, false);
        // SAFETY: `page` is the WAL image of the locked metapage.
        unsafe {
            self.to_page(page);
            page::set_generation(page, self.generation);
        }
    }
}

/// Content length of the metapage, for `pd_lower`.
pub const META_LEN: usize = std::mem::size_of::<Meta>();

/// An extent list of a metapage before format 7.
#[derive(Clone, Copy)]
#[repr(C)]
struct NarrowExtents {
    n: u32,
    list: [Extent; NARROW_EXTENTS],
}

/// The end of a metapage before format 7: the same fields as [`Meta`] up to
/// its lists, then these.
#[derive(Clone, Copy)]
#[repr(C)]
struct NarrowLists {
    lists: [NarrowExtents; 4],
    shared_tail: u32,
}

impl NarrowLists {
    const AT: usize = std::mem::offset_of!(Meta, place);
    const END: usize = Self::AT + std::mem::size_of::<NarrowLists>();

    /// # Safety
    /// `page` must point to a page of `BLCKSZ` bytes.
    unsafe fn read(page: pg_sys::Page) -> NarrowLists {
        page::content(page)
            .add(Self::AT)
            .cast::<NarrowLists>()
            .read_unaligned()
    }

    /// # Safety
    /// `page` must be a writable page image.
    unsafe fn write(&self, page: pg_sys::Page) {
        page::content(page)
            .add(Self::AT)
            .cast::<NarrowLists>()
            .write_unaligned(*self)
    }

    /// `m`'s lists, if each fits the narrow layout.
    fn of(m: &Meta) -> Option<NarrowLists> {
        let narrow = |x: &Extents| {
            let s = x.as_slice();
            (s.len() <= NARROW_EXTENTS).then(|| {
                let mut list = [Extent::default(); NARROW_EXTENTS];
                list[..s.len()].copy_from_slice(s);
                NarrowExtents {
                    n: s.len() as u32,
                    list,
                }
            })
        };
        Some(NarrowLists {
            lists: [
                narrow(&m.place)?,
                narrow(&m.prev_place)?,
                narrow(&m.free)?,
                narrow(&m.pending)?,
            ],
            shared_tail: m.shared_tail,
        })
    }

    /// Sets `m`'s lists from these; a count out of range stays out of range,
    /// for the metapage check to report.
    fn widen(&self, m: &mut Meta) {
        let wide = |x: &NarrowExtents| {
            let mut out = Extents::default();
            let n = (x.n as usize).min(NARROW_EXTENTS);
            out.list[..n].copy_from_slice(&x.list[..n]);
            out.n = if x.n as usize > NARROW_EXTENTS {
                u32::MAX
            } else {
                x.n
            };
            out
        };
        m.place = wide(&self.lists[0]);
        m.prev_place = wide(&self.lists[1]);
        m.free = wide(&self.lists[2]);
        m.pending = wide(&self.lists[3]);
        m.shared_tail = self.shared_tail;
        (m.rewrite_first, m.rewrite_end) = (0, 0);
    }
}
const _: () = assert!(NarrowLists::END <= META_LEN);
const _: () = assert!(META_LEN <= page::CONTENT);

#[cfg(test)]
mod tests {
    use super::*;

    fn e(start: u32, len: u32) -> Extent {
        Extent { start, len }
    }

    fn zeroed() -> Meta {
        // SAFETY: `Meta` is plain old data (integers, floats and arrays of
        // them), for which all zeroes is a valid value.
        unsafe { std::mem::zeroed() }
    }

    #[test]
    fn narrow_lists_keep_every_extent_or_are_refused() {
        let mut m = zeroed();
        for i in 0..NARROW_EXTENTS as u32 {
            assert!(m.place.push(e(10 + 3 * i, 2)));
        }
        m.prev_place.push(e(500, 7));
        m.free.push(e(600, 1));
        m.free.push(e(700, 2));
        m.pending.push(e(800, 3));
        m.shared_tail = 9;
        let narrow = NarrowLists::of(&m).expect("every list fits");
        let mut back = zeroed();
        narrow.widen(&mut back);
        for (a, b) in [
            (&m.place, &back.place),
            (&m.prev_place, &back.prev_place),
            (&m.free, &back.free),
            (&m.pending, &back.pending),
        ] {
            assert_eq!(a.as_slice(), b.as_slice());
        }
        assert_eq!(back.shared_tail, 9);
        // One more extent than the old layout holds: written wide.
        for i in 0..NARROW_EXTENTS as u32 - 1 {
            assert!(m.free.push(e(2000 + 3 * i, 1)));
        }
        assert_eq!(m.free.as_slice().len(), NARROW_EXTENTS + 1);
        assert!(NarrowLists::of(&m).is_none());
        // A damaged count stays out of range, for the metapage check.
        let mut bad = narrow;
        bad.lists[2].n = NARROW_EXTENTS as u32 + 1;
        bad.widen(&mut back);
        assert!(back.free.n as usize > MAX_EXTENTS);
    }
}
