//! The partial merge: rows inserted among the run's entries (random keys)
//! are merged one stretch of the run at a time. The run is cut into
//! segments of whole slices, about a sixteenth of it each; the retrain
//! merges the segment, or the two neighbouring ones, that own the most
//! frozen delta pages with those pages and keeps the pages before and after
//! them where they are, shared with the previous generation (as an append
//! keeps the pages before the run's last). The other frozen pages carry
//! over as delta pages of the new generation.
//!
//! A whole merge writes the next generation beside the current one, so the
//! index holds two copies of the run until the old one is retired, and the
//! blocks freed then stay in the file: after scattered inserts an index
//! stayed at about twice a fresh build's size. A partial merge writes and
//! frees about an eighth of the run (more only into free blocks), and the
//! next one reuses those blocks. The old copy of what the last merge
//! rewrote stays in the file as free blocks: with a quarter of the run per
//! merge, a random stream ended at 1.40-1.66x a fresh build's size, with an
//! eighth at 1.27-1.34x (benches/README.md).
//!
//! The model keeps its leaves up to the one holding the last position before
//! the segment and is trained again from there over the segment's new keys,
//! up to the first old leaf after it; the leaves from there on are kept,
//! moved by as many positions as the segment grew or shrank (a leaf
//! predicts from its own start). So a partial merge reads and writes the
//! segment, a leaf on either side, the NULL pages and the model, not the
//! rest of the run. (A model of an earlier build, whose leaves predict from
//! the run's start, is trained again over the rest of the run.)

use super::{
    allocate, page_counts, push_keys, put_delta, put_nulls, resume_training, write_nulls, Fit,
    Path, Written,
};
use crate::am::insert::SLICE_PAGES;
use crate::am::sort::{maintenance_budget, Sorter};
use crate::model::{ModelView, Trainer};
use crate::storage::buffer::Strategy;
use crate::storage::delta::{self, DeltaPage, DirEntry, OPEN};
use crate::storage::extents::MAX_EXTENTS;
use crate::storage::meta::META_BLOCK;
use crate::storage::run::{PageCounter, Section, SectionWriter, Tid};
use crate::storage::search::Directory;
use crate::storage::wal::Wal;
use crate::storage::{model_pages, Buf, Meta};
use pgrx::pg_sys;

/// Run pages a segment holds at the least (four slices): a run shorter than
/// two segments is merged whole.
const MIN_SEGMENT_PAGES: u32 = 4 * SLICE_PAGES;
/// About how many segments a run is cut into.
const SEGMENTS: u32 = 16;
/// Extents a partial merge leaves free at the least, for the appends after
/// it; past that the retrain merges the whole run, which lays it out afresh.
const SPARE_EXTENTS: usize = 4;
/// Most neighbouring segments one partial merge takes into new blocks,
/// an eighth of the run: when the rows that spilled are spread over it
/// (random keys into a run built full), each merge gives room to an eighth
/// of it rather than a sixteenth. The old blocks stay until the generation
/// is retired, so this bounds how much the index grows for a merge. It
/// takes more segments as far as free blocks (those earlier merges left)
/// hold them: the file does not grow for those.
const MAX_WINDOW: usize = 2;
/// How much larger a segment comes out of a merge, at the least: merges of
/// scattered inserts leave a fifth of each page free (`fillfactor` 80).
const GROWTH: f64 = 1.25;

/// Where the segments of a run of `pages` pages begin, then its end: whole
/// slices, about `1 / SEGMENTS` of the run each. Empty when the run is too
/// short to cut.
fn segment_bounds(pages: u32) -> Vec<u32> {
    let len = pages
        .div_ceil(SEGMENTS)
        .max(MIN_SEGMENT_PAGES)
        .next_multiple_of(SLICE_PAGES);
    if pages < 2 * len {
        return Vec::new();
    }
    let mut bounds: Vec<u32> = (0..pages).step_by(len as usize).collect();
    // A last segment shorter than half of one joins the one before.
    if pages - bounds[bounds.len() - 1] < len / 2 {
        bounds.pop();
    }
    bounds.push(pages);
    bounds
}

/// The segments that may hold the keys `[min, max]`, first and last, given
/// the keys of the fences between segments (each segment owns the pairs
/// above its first page's fence, up to the next segment's fence). A key
/// equal to a fence's may lie on either side of it, depending on its TID.
fn segments_of(fence_keys: &[u64], min: u64, max: u64) -> (usize, usize) {
    let lo = fence_keys.partition_point(|&f| f < min);
    let hi = fence_keys.partition_point(|&f| f <= max);
    (lo, hi)
}

/// The segments a frozen page's keys may lie in ([`segments_of`]). The
/// keys an open bounded page may still take run from one fence to the next
/// (of its slice, or of the halves of one), and so seem to span the segments
/// on both sides of a fence: only a key equal to a bound can lie beyond it,
/// so its keys between the bounds decide (the page is closed before its
/// keys are merged, and its range then says where they lie).
fn segments_of_page(fence_keys: &[u64], d: &DirEntry) -> (usize, usize) {
    let (min, max) = if d.state == OPEN && d.min.checked_add(2).is_some_and(|m| m <= d.max) {
        (d.min + 1, d.max - 1)
    } else {
        (d.min, d.max)
    };
    segments_of(fence_keys, min, max)
}

/// How many neighbouring segments a partial merge may take: at most
/// `MAX_WINDOW` and about a quarter of them (two of seven or more, an eighth
/// of a run cut in sixteen) in new blocks, or as many as `free` blocks hold
/// once merged, whichever is more.
fn widest(segments: usize, segment_pages: u32, free: u64) -> usize {
    let in_new_blocks = ((segments + 1) / 4).clamp(1, MAX_WINDOW);
    let in_free_blocks = (free as f64 / (segment_pages.max(1) as f64 * GROWTH)) as usize;
    in_new_blocks.max(in_free_blocks).min(segments)
}

/// The stretch of at most `widest` neighbouring segments that owns the most
/// of `pages` (each page's first and last segment), the shorter on a tie, as
/// `[first, end)`; `None` when no stretch owns any page, or when more pages
/// span too many segments for any stretch than lie within as many.
fn window(pages: &[(usize, usize)], segments: usize, widest: usize) -> Option<(usize, usize)> {
    let placeable = pages.iter().filter(|&&(lo, hi)| hi - lo < widest).count();
    if placeable * 2 < pages.len() {
        return None;
    }
    let owned = |a: usize, b: usize| pages.iter().filter(|&&(lo, hi)| a <= lo && hi < b).count();
    let mut best = (0, (0, 0));
    for width in 1..=widest {
        for a in 0..=segments - width {
            let n = owned(a, a + width);
            if n > best.0 {
                best = (n, (a, a + width));
            }
        }
    }
    (best.0 > 0).then_some(best.1)
}

/// Says which run pages of the current generation this merge rewrites,
/// `[first, end)` (`Meta::rewrite_first`), or, with `None`, that it may
/// rewrite them all: until the switch, inserts go on into the insert areas
/// of the others, which carry over as they are, rather than spill into
/// every slice of the run while the merge runs. Under the metapage's
/// exclusive lock, which waits for inserts that read it before (they add to
/// a run page under its share lock), so that no entry reaches a page the
/// merge reads after this.
fn announce(idx: pg_sys::Relation, stretch: Option<(u32, u32)>) {
    let meta_buf = Buf::read_exclusive(idx, META_BLOCK);
    // SAFETY: block 0, pinned and exclusive-locked.
    let mut m = unsafe { Meta::from_page(idx, meta_buf.page()) };
    (m.rewrite_first, m.rewrite_end) = stretch.unwrap_or((0, 0));
    let mut wal = Wal::start(idx);
    m.write(&mut wal, &meta_buf);
    wal.finish();
}

/// The partial merge (see the module). Returns the generation written and
/// the frozen pages it leaves to the delta; `None`, before anything is
/// written, when the whole run must be merged instead: the run is too short
/// to cut, or a fifth dead (only a whole merge drops every tombstone), most
/// frozen pages span segments, the extents would run out, or the stretch
/// would not end where the pages kept after it begin (or, ending the run,
/// holds nothing live).
pub(super) fn partial(
    idx: pg_sys::Relation,
    meta: &Meta,
    frozen: &[DirEntry],
    next: u32,
    strategy: Strategy,
) -> Option<(Written, Vec<DirEntry>)> {
    if meta.run_entries == 0 || meta.run_dead * 5 > meta.run_entries {
        return None;
    }
    let bounds = segment_bounds(meta.run_pages);
    if bounds.is_empty() {
        return None;
    }
    let (model_bytes, starts) = model_pages::read(idx, meta);
    let run = Section::run(meta).with(Directory::new(&starts));
    // The fence of each segment's first page but the first.
    let fences: Vec<(u64, Tid)> = bounds[1..bounds.len() - 1]
        .iter()
        .map(|&i| {
            run.read_with(idx, i, strategy)
                .fence()
                .expect("run pages after the first have a fence")
        })
        .collect();
    let fence_keys: Vec<u64> = fences.iter().map(|f| f.0).collect();
    let segments = bounds.len() - 1;
    let ranges: Vec<(usize, usize)> = frozen
        .iter()
        .filter(|d| d.min <= d.max)
        .map(|d| segments_of_page(&fence_keys, d))
        .collect();
    // The new pages go into at most `SPARE_EXTENTS` free extents, the
    // largest first (`Fit::Largest` below).
    let mut free: Vec<u32> = meta.free.as_slice().iter().map(|e| e.len).collect();
    free.sort_unstable_by(|x, y| y.cmp(x));
    let usable = free.iter().take(SPARE_EXTENTS).map(|&n| n as u64).sum();
    let widest = widest(segments, meta.run_pages / segments as u32, usable);
    let (a, b) = window(&ranges, segments, widest)?;
    let (p0, p1) = (bounds[a], bounds[b]);
    let lower = (a > 0).then(|| fences[a - 1]);
    let upper = (b < segments).then(|| fences[b - 1]);
    let inside =
        |pair: (u64, Tid)| lower.is_none_or(|f| pair > f) && upper.is_none_or(|f| pair <= f);
    let in_window = |d: &DirEntry| {
        let (lo, hi) = segments_of_page(&fence_keys, d);
        a <= lo && hi < b
    };
    // The open pages of the window are closed, and then go by the keys they
    // hold; the others stay open, carried over.
    let (to_close, mut frozen): (Vec<DirEntry>, Vec<DirEntry>) =
        frozen.iter().partition(|d| d.state == OPEN && in_window(d));
    frozen.extend(delta::close_bounded(idx, &to_close));
    // Pages of NULLs only go into the NULL pages, which every retrain
    // writes anew.
    let (merged_pages, carried): (Vec<DirEntry>, Vec<DirEntry>) = frozen
        .into_iter()
        .partition(|d| d.state != OPEN && (d.min > d.max || in_window(d)));
    // The directory's ranges say where each page's keys lie; the pairs
    // themselves decide, before anything is sorted or written.
    for d in &merged_pages {
        let page = DeltaPage::read(idx, d.blk, strategy);
        if page.entries().any(|e| !e.null && !inside((e.key, e.tid))) {
            return None;
        }
    }
    let head = meta.place.head(p0);
    let tail = meta.place.range(p1, meta.run_pages);
    let used = head.as_slice().len() + tail.len();
    if used + 2 + SPARE_EXTENTS > MAX_EXTENTS {
        return None;
    }
    announce(idx, Some((p0, p1)));

    let mut sorter = Sorter::new(maintenance_budget());
    let mut merged = put_delta(idx, &merged_pages, &mut sorter, strategy);
    // The segment's live and inserted entries. Its last entry is the fence
    // of the kept page after it, so it stays even if VACUUM tombstoned it.
    let (mut dead, mut fence_dead) = (0u64, None);
    for i in p0..p1 {
        let page = run.read_with(idx, i, strategy);
        for s in 0..page.len() {
            let (key, tid) = page.entry(s);
            if !page.dead(s) {
                sorter.put_entry(Some(key), tid);
                continue;
            }
            dead += 1;
            if i + 1 == p1 && s + 1 == page.len() && upper.is_some() {
                fence_dead = Some((key, tid));
            }
        }
        for (key, tid) in page.inserted_all() {
            sorter.put_entry(Some(key), tid);
            merged += 1;
        }
        super::interrupts();
    }
    let dropped_nulls = put_nulls(idx, meta, &mut sorter, strategy);
    let mut sorted = sorter.finish();

    // First pass: the model and the pages' shape.
    let (seg_from, seg_to) = (starts[p0 as usize], starts[p1 as usize]);
    let old = ModelView::open(&model_bytes).expect("validated by read");
    let (mut trainer, keep) = resume_training(idx, (&run, &old), seg_from, meta, strategy);
    // SAFETY: the index is open.
    let fillfactor = unsafe { crate::am::options::fillfactor(idx, true) };
    let mut run_counter = PageCounter::new(Some(fillfactor));
    let mut null_counter = PageCounter::new(None);
    let (mut written, mut last) = (0u64, None);
    while let Some((key, tid)) = sorted.next_entry() {
        let Some(key) = key else {
            null_counter.push(0, tid, false);
            continue;
        };
        trainer.push(key);
        run_counter.push(key, tid, false);
        last = Some((key, tid));
        written += 1;
        if written.is_multiple_of(65536) {
            super::interrupts();
        }
    }
    // A live entry inserted with the tombstoned fence's pair (a heap TID
    // VACUUM freed and a new row reused) ends the segment in its place.
    let fence_dead = fence_dead.filter(|&f| last != Some(f));
    if let Some((key, tid)) = fence_dead {
        trainer.push(key);
        run_counter.push(key, tid, true);
        last = Some((key, tid));
    }
    // The stretch must end where the kept pages after it begin; one that
    // ends the run must leave it a last entry (none when every row of it
    // was deleted: the whole merge drops what is dead throughout).
    if last.is_none() || (upper.is_some() && last != upper) {
        sorted.end();
        announce(idx, None);
        return None;
    }
    let model = if upper.is_some() && old.from_start() {
        train_to_kept_leaves(idx, (&run, &old), trainer, keep, seg_to, strategy)
    } else {
        push_keys(idx, &run, (seg_to, run.entries), &mut trainer, strategy);
        trainer.finish_after(&old, keep)
    };
    let new_counts = run_counter.finish();
    let new_pages = new_counts.len() as u32;
    let run_pages = p0 + new_pages + (meta.run_pages - p1);
    let null_pages = null_counter.finish().len() as u32;
    let model_pages = model_pages::pages_for(model.len(), run_pages);

    // The segment's pages in a few extents, then the kept pages after it,
    // then the NULL and model pages.
    let run_room = (MAX_EXTENTS - used - 1).min(SPARE_EXTENTS);
    let run_part = allocate(idx, new_pages, Fit::Largest(run_room));
    let rest_room = MAX_EXTENTS - used - run_part.as_slice().len();
    let rest = allocate(idx, null_pages + model_pages, Fit::UpTo(rest_room));
    let mut place = head;
    for e in run_part
        .as_slice()
        .iter()
        .chain(&tail)
        .chain(rest.as_slice())
    {
        assert!(place.push(*e), "the extents were counted");
    }
    sorted.rewind();
    let mut writer = SectionWriter::new(idx, (place, p0), Some(fillfactor), next).after(lower);
    while let Some((key, tid)) = sorted.next_key() {
        writer.push(key, tid);
    }
    if let Some((key, tid)) = fence_dead {
        writer.push_dead(key, tid);
    }
    let first_written = writer.key_range.map(|r| r.0);
    let segment_counts = writer.finish();
    assert!(
        segment_counts == new_counts,
        "the first pass packed the pages as they were written"
    );
    let (written_nulls, null_entries) = write_nulls(idx, (place, run_pages), &mut sorted, next);
    debug_assert_eq!(written_nulls, null_pages);
    sorted.end();
    let mut counts: Vec<u16> = page_counts(&starts[..=p0 as usize]).collect();
    counts.extend_from_slice(&new_counts);
    counts.extend(page_counts(&starts[p1 as usize..]));
    let written_model = model_pages::write(
        idx,
        (place, run_pages + null_pages),
        next,
        (&model, &counts),
        true,
    );
    debug_assert_eq!(written_model, model_pages);
    let run_last = if upper.is_some() {
        meta.run_last()
    } else {
        last
    };
    let first = if p0 > 0 {
        Some(run.read_with(idx, 0, strategy).key(0))
    } else {
        first_written
    };
    let kept_fence = fence_dead.is_some() as u64;
    Some((
        Written {
            path: Path::Partial,
            place,
            counts,
            run_last,
            run_pages,
            run_entries: seg_from + written + kept_fence + (meta.run_entries - seg_to),
            run_dead: meta.run_dead.saturating_sub(dead) + kept_fence,
            run_base: meta.run_base,
            shared_pages: p0,
            shared_tail: meta.run_pages - p1,
            rewritten: (lower.map(|f| f.0), upper.map(|f| f.0)),
            null_pages,
            null_entries,
            model,
            model_pages,
            key_range: first.zip(run_last.map(|(k, _)| k)),
            pages_written: new_pages + null_pages + model_pages,
            merged,
            dropped: dead - kept_fence + dropped_nulls,
        },
        carried,
    ))
}

/// The model once `trainer` has the keys of the run up to old position
/// `seg_to`: the old leaves after it are kept, moved
/// ([`Trainer::finish_between`]), from the first that begins at or after
/// `seg_to` with a first key above every key pushed (a leaf begins where its
/// first key does, and the stretch rewritten may end with that key); the
/// keys before that leaf are pushed. A model of version 1 cannot move its
/// leaves: the caller trains it over the rest of the run.
fn train_to_kept_leaves(
    idx: pg_sys::Relation,
    (run, old): (&Section, &ModelView),
    mut trainer: Trainer,
    keep: usize,
    seg_to: u64,
    strategy: Strategy,
) -> Vec<u8> {
    let mut from = old.leaf_at_position(seg_to);
    let mut at = seg_to;
    loop {
        let behind = old.leaf_start(from) < seg_to
            || trainer
                .last_key()
                .is_some_and(|k| k >= old.leaf(from).first_key);
        if !behind {
            return trainer.finish_between(old, keep, from);
        }
        from += 1;
        if from == old.nleaves() {
            push_keys(idx, run, (at, run.entries), &mut trainer, strategy);
            return trainer.finish_after(old, keep);
        }
        let end = old.leaf_start(from);
        push_keys(idx, run, (at, end), &mut trainer, strategy);
        at = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_whole_slices_of_about_a_sixteenth() {
        assert!(segment_bounds(0).is_empty());
        assert!(segment_bounds(2 * MIN_SEGMENT_PAGES - 1).is_empty());
        assert_eq!(segment_bounds(2 * MIN_SEGMENT_PAGES), [0, 64, 128]);
        // A short last segment joins the one before.
        assert_eq!(segment_bounds(200), [0, 64, 128, 200]);
        assert_eq!(segment_bounds(230), [0, 64, 128, 192, 230]);
        let b = segment_bounds(5_000);
        assert_eq!(b.len() - 1, 16);
        assert!(b[..b.len() - 1].iter().all(|&p| p % SLICE_PAGES == 0));
        assert_eq!(*b.last().unwrap(), 5_000);
    }

    #[test]
    fn a_page_lies_in_every_segment_a_fence_key_may_split_it_into() {
        let fences = [10, 20, 20, 30];
        assert_eq!(segments_of(&fences, 0, 9), (0, 0));
        assert_eq!(segments_of(&fences, 11, 19), (1, 1));
        assert_eq!(segments_of(&fences, 31, 99), (4, 4));
        // A fence's own key may lie on either side of it.
        assert_eq!(segments_of(&fences, 5, 10), (0, 1));
        assert_eq!(segments_of(&fences, 10, 15), (0, 1));
        assert_eq!(segments_of(&fences, 20, 20), (1, 3));
        assert_eq!(segments_of(&fences, 21, 29), (3, 3));
        assert_eq!(segments_of(&fences, 5, 25), (0, 3));
    }

    #[test]
    fn the_window_takes_the_most_pages_in_at_most_two_segments() {
        // Pages in one segment: that segment alone.
        assert_eq!(window(&[(3, 3), (3, 3), (5, 5)], 8, 2), Some((3, 4)));
        // Spread: two segments take more, and the pages between them.
        assert_eq!(
            window(&[(0, 0), (2, 2), (2, 3), (3, 3), (6, 6)], 8, 2),
            Some((2, 4))
        );
        // A tie between one segment and two: the one.
        assert_eq!(
            window(&[(1, 1), (1, 1), (4, 4), (5, 5)], 8, 2),
            Some((1, 2))
        );
        // The last segments.
        assert_eq!(window(&[(6, 7), (7, 7)], 8, 2), Some((6, 8)));
        // Most pages span more than two segments, or none at all.
        assert_eq!(window(&[(0, 3), (1, 5), (2, 2)], 8, 2), None);
        assert_eq!(window(&[], 8, 2), None);
        // One at a time.
        assert_eq!(window(&[(0, 1), (1, 1)], 2, 1), Some((1, 2)));
        assert_eq!(window(&[(2, 2), (2, 3), (3, 3)], 6, 1), Some((2, 3)));
        // Wider: spread pages are taken as far as the stretch goes.
        assert_eq!(
            window(&[(0, 0), (1, 2), (2, 2), (3, 3), (5, 5)], 8, 4),
            Some((0, 4))
        );
    }

    #[test]
    fn merges_take_a_quarter_in_new_blocks_or_as_much_as_free_blocks_hold() {
        // No free blocks: one segment of six, two of seven or more.
        assert_eq!(widest(6, 100, 0), 1);
        assert_eq!(widest(7, 100, 0), 2);
        assert_eq!(widest(8, 100, 0), 2);
        // Free blocks for three merged segments (each 125 pages or more).
        assert_eq!(widest(8, 100, 375), 3);
        assert_eq!(widest(8, 100, 374), 2);
        // Never more than the run.
        assert_eq!(widest(8, 100, 100_000), 8);
        assert_eq!(widest(2, 0, 0), 1);
    }
}
