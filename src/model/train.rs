//! Streaming training: keys arrive once, in sorted order, and leave behind only
//! leaf parameters, so a build trains in memory proportional to one segment, not
//! to the run.
//!
//! Keys are collected per distinct value ("groups": first position and count),
//! cut into segments of at most [`SEGMENT_POSITIONS`] positions, and each segment
//! is fitted by least squares and split in halves until its error window is
//! within the target, or the leaf holds one value. Long runs of duplicates
//! get a leaf of their own only where they bend the fit: evenly repeated
//! values (a hundred rows a key) fit one line, and a leaf per value would make
//! the model as large as the packed run. Routing is by key, so all copies of
//! one value always land in one leaf.

use super::layout::{encode, leaf_predict, root_predict, Leaf, Root};
use super::ModelView;

/// Upper bound on the positions one leaf covers before it is fitted: large
/// enough that smooth data gets few leaves, small enough to keep memory flat.
const SEGMENT_POSITIONS: u64 = 1 << 16;

#[derive(Clone, Copy, Debug)]
struct Group {
    key: u64,
    first: u64,
    count: u64,
}

pub struct Trainer {
    target_window: u64,
    segment: Vec<Group>,
    segment_positions: u64,
    leaves: Vec<Leaf>,
    nkeys: u64,
    /// Leaves predict from their own start (see `layout::VERSION`); a
    /// trainer resuming a model of version 1 goes on in its form.
    from_start: bool,
}

impl Trainer {
    /// `target_window`: the widest `err_lo + err_hi` a leaf may have unless it
    /// holds a single value.
    pub fn new(target_window: u32) -> Trainer {
        Trainer {
            target_window: target_window.max(2) as u64,
            segment: Vec::new(),
            segment_positions: 0,
            leaves: Vec::new(),
            nkeys: 0,
            from_start: true,
        }
    }

    /// A trainer of leaves in the form of version 1, which predict from the
    /// run's start: the models of earlier builds.
    #[cfg(test)]
    pub fn from_run_start(target_window: u32) -> Trainer {
        Trainer {
            from_start: false,
            ..Trainer::new(target_window)
        }
    }

    /// Continues training `old` for a run that grew at its end: the keys from
    /// position `old.last_leaf_start()` on (the old last leaf's, then the
    /// appended ones) are pushed again; [`Trainer::finish_after`] keeps the
    /// other leaves as they are. Their error bounds still hold: a leaf's
    /// bounds depend only on its own positions and the start of the next.
    ///
    /// `keep` leaves stay (at most all but the last): the keys from
    /// `old.leaf_start(keep)` on are pushed again.
    pub fn resume(target_window: u32, old: &ModelView, keep: usize) -> Trainer {
        let mut t = Trainer::new(target_window);
        t.nkeys = old.leaf_start(keep.min(old.nleaves() - 1));
        t.from_start = old.from_start();
        t
    }

    /// The last key pushed.
    pub fn last_key(&self) -> Option<u64> {
        self.segment.last().map(|g| g.key)
    }

    /// Adds the next key of the run. Keys must come in non-decreasing order.
    pub fn push(&mut self, key: u64) {
        match self.segment.last_mut() {
            Some(g) if g.key == key => g.count += 1,
            Some(g) => {
                assert!(g.key < key, "keys must be pushed in sorted order");
                if self.segment_positions >= SEGMENT_POSITIONS {
                    self.flush();
                }
                self.segment.push(Group {
                    key,
                    first: self.nkeys,
                    count: 1,
                });
            }
            None => self.segment.push(Group {
                key,
                first: self.nkeys,
                count: 1,
            }),
        }
        self.nkeys += 1;
        self.segment_positions = self.nkeys - self.segment[0].first;
    }

    fn flush(&mut self) {
        let segment = std::mem::take(&mut self.segment);
        if !segment.is_empty() {
            self.fit_and_split(&segment);
        }
        self.segment_positions = 0;
    }

    fn fit_and_split(&mut self, groups: &[Group]) {
        let leaf = fit(groups, self.from_start);
        let end = groups.last().map(|g| g.first + g.count).unwrap();
        if groups.len() == 1 || (leaf.err_lo as u64 + leaf.err_hi as u64) <= self.target_window {
            self.leaves.push(leaf);
            return;
        }
        // Split at the group that holds the middle position.
        let middle = (groups[0].first + end) / 2;
        let cut = groups
            .partition_point(|g| g.first + g.count <= middle)
            .clamp(1, groups.len() - 1);
        self.fit_and_split(&groups[..cut]);
        self.fit_and_split(&groups[cut..]);
    }

    /// Finishes training and returns the stored form of the model.
    pub fn finish(mut self) -> Vec<u8> {
        self.flush();
        finish_leaves(self.leaves, self.nkeys, self.from_start)
    }

    /// Finishes a trainer made by [`Trainer::resume`]: `old`'s leaves but its
    /// last, then the leaves trained here.
    pub fn finish_after(mut self, old: &ModelView, keep: usize) -> Vec<u8> {
        self.flush();
        let keep = keep.min(old.nleaves() - 1);
        let mut leaves: Vec<Leaf> = (0..keep).map(|i| old.leaf(i)).collect();
        debug_assert!(self
            .leaves
            .first()
            .is_none_or(|l| l.start == old.leaf_start(keep)));
        leaves.append(&mut self.leaves);
        finish_leaves(leaves, self.nkeys, self.from_start)
    }

    /// Finishes a trainer made by [`Trainer::resume`] whose keys end where
    /// `old`'s leaf `from` begins in the new run: `old`'s leaves before
    /// `keep`, the leaves trained here, then `old`'s leaves from `from` on,
    /// moved to where their positions now begin. A leaf predicts from its
    /// own start, so a moved leaf's predictions move with it and its error
    /// bounds (which depend only on its positions and the next leaf's
    /// start) still hold. The caller keeps the keys in order: leaf `from`'s
    /// first key lies above every key pushed here.
    pub fn finish_between(mut self, old: &ModelView, keep: usize, from: usize) -> Vec<u8> {
        assert!(
            old.from_start() && from > keep && from < old.nleaves(),
            "leaves that predict from their start, after those trained"
        );
        debug_assert!(self.last_key().is_none_or(|k| k < old.leaf(from).first_key));
        self.flush();
        let mut leaves: Vec<Leaf> = (0..keep).map(|i| old.leaf(i)).collect();
        leaves.append(&mut self.leaves);
        let (old_at, new_at) = (old.leaf_start(from), self.nkeys);
        for i in from..old.nleaves() {
            let mut leaf = old.leaf(i);
            leaf.start = leaf.start - old_at + new_at;
            leaves.push(leaf);
        }
        finish_leaves(leaves, old.nkeys() - old_at + new_at, true)
    }
}

/// Fits the root over the leaves and encodes the model.
fn finish_leaves(mut leaves: Vec<Leaf>, nkeys: u64, from_start: bool) -> Vec<u8> {
    if leaves.is_empty() {
        leaves.push(Leaf {
            first_key: 0,
            start: 0,
            slope: 0.0,
            intercept: 0.0,
            err_lo: 0,
            err_hi: 0,
            from_start,
        });
    }
    let root = fit_root(&leaves);
    let (mut max_window, mut weighted) = (0u32, 0f64);
    for (i, leaf) in leaves.iter().enumerate() {
        let end = leaves.get(i + 1).map_or(nkeys, |n| n.start);
        let w = leaf.err_lo + leaf.err_hi;
        max_window = max_window.max(w);
        weighted += w as f64 * (end - leaf.start) as f64;
    }
    let mean_window = if nkeys == 0 {
        0.0
    } else {
        (weighted / nkeys as f64) as f32
    };
    encode(nkeys, &root, &leaves, max_window, mean_window)
}

/// Least-squares line through (key, first position) of each group, shifted so the
/// error is balanced, with exact integer error bounds computed by the same
/// prediction function lookups use. `from_start`: positions count from the
/// leaf's start, else from the run's (the leaf's form, `Leaf::from_start`).
fn fit(groups: &[Group], from_start: bool) -> Leaf {
    let first_key = groups[0].key;
    let start = groups[0].first;
    let end = groups.last().map(|g| g.first + g.count).unwrap();
    let origin = if from_start { start } else { 0 };
    let x = |g: &Group| (g.key - first_key) as f64;
    let y = |g: &Group| (g.first - origin) as f64;
    let n = groups.len() as f64;
    // One value: a step from its first position to the position after its
    // copies at the next ordinal, so both lower bounds are exact.
    let (mut slope, mut intercept) = (groups[0].count as f64, (start - origin) as f64);
    if groups.len() > 1 {
        let mx = groups.iter().map(x).sum::<f64>() / n;
        let my = groups.iter().map(y).sum::<f64>() / n;
        let (mut sxy, mut sxx) = (0.0, 0.0);
        for g in groups {
            let dx = x(g) - mx;
            sxy += dx * (y(g) - my);
            sxx += dx * dx;
        }
        slope = if sxx > 0.0 { (sxy / sxx).max(0.0) } else { 0.0 };
        if !slope.is_finite() {
            slope = 0.0;
        }
        intercept = my - slope * mx;
        // Balance the window between the two sides it must reach (see the
        // error bounds below).
        let (mut above, mut below) = (f64::MIN, f64::MIN);
        for g in groups {
            let p = intercept + slope * x(g);
            below = below.max(p - y(g));
            above = above.max(y(g) - p).max(y(g) + g.count as f64 - (p + slope));
        }
        intercept += (above - below) / 2.0;
    }
    let mut leaf = Leaf {
        first_key,
        start,
        slope,
        intercept,
        err_lo: 0,
        err_hi: 0,
        from_start,
    };
    // Ordinals are integers: a key of the run has its first position as
    // lower bound, and every absent key above it, up to the next one, the
    // position after its copies. Predictions grow with the key, so the window
    // must reach `first` from the key's prediction, and `first + count` from
    // the prediction of the next ordinal, the smallest of those absent keys.
    // (Measuring both from the key's own prediction would make the window of
    // a value repeated n times at least n wide, and a leaf per such value.)
    let (mut lo, mut hi) = (0u64, 0u64);
    for g in groups {
        let p = leaf_predict(&leaf, end, g.key);
        lo = lo.max(p.saturating_sub(g.first));
        hi = hi.max(g.first.saturating_sub(p));
        if let Some(next) = g.key.checked_add(1) {
            let q = leaf_predict(&leaf, end, next);
            hi = hi.max((g.first + g.count).saturating_sub(q));
        }
    }
    leaf.err_lo = lo.min(u32::MAX as u64) as u32;
    leaf.err_hi = hi.min(u32::MAX as u64) as u32;
    if lo > u32::MAX as u64 || hi > u32::MAX as u64 {
        // Errors this large only come from billions of duplicates; a flat
        // prediction at the leaf start with the whole leaf as window is exact.
        leaf.slope = 0.0;
        leaf.intercept = (start - origin) as f64;
        leaf.err_lo = 0;
        leaf.err_hi = (end - start).min(u32::MAX as u64) as u32;
    }
    leaf
}

/// The root predicts a leaf index from a key. Keys in `[first_key[i],
/// first_key[i+1])` belong to leaf `i`; the prediction is monotone, so checking
/// both ends of every such interval bounds the error for every key.
fn fit_root(leaves: &[Leaf]) -> Root {
    let l = leaves.len();
    let key_min = leaves[0].first_key;
    let mut root = Root {
        key_min,
        slope: 0.0,
        intercept: 0.0,
        err_lo: 0,
        err_hi: 0,
    };
    if l > 1 {
        let x = |f: &Leaf| (f.first_key - key_min) as f64;
        let n = l as f64;
        let mx = leaves.iter().map(x).sum::<f64>() / n;
        let my = (n - 1.0) / 2.0;
        let (mut sxy, mut sxx) = (0.0, 0.0);
        for (i, f) in leaves.iter().enumerate() {
            let dx = x(f) - mx;
            sxy += dx * (i as f64 - my);
            sxx += dx * dx;
        }
        let slope = if sxx > 0.0 { (sxy / sxx).max(0.0) } else { 0.0 };
        root.slope = if slope.is_finite() { slope } else { 0.0 };
        root.intercept = my - root.slope * mx;
    }
    let (mut lo, mut hi) = (0u64, 0u64);
    for (i, f) in leaves.iter().enumerate() {
        let last_key = leaves.get(i + 1).map_or(u64::MAX, |n| n.first_key - 1);
        let at_start = root_predict(&root, l as u64, f.first_key);
        let at_end = root_predict(&root, l as u64, last_key);
        hi = hi.max((i as u64).saturating_sub(at_start));
        lo = lo.max(at_end.saturating_sub(i as u64));
    }
    root.err_lo = lo.min(u32::MAX as u64) as u32;
    root.err_hi = hi.min(u32::MAX as u64) as u32;
    root
}
