//! The last-mile search over a run split into pages, free of
//! pgrx so that it is tested with plain `cargo test` against arbitrary, also
//! wrong, model windows.
//!
//! The window only guides which page to read (inside a page, the page's own
//! group table finds the key): every
//! answer is proven from the keys themselves (the entry before is smaller, the
//! entry at it is not smaller, or the run ends). A wrong or damaged model
//! costs page reads, never rows.

use crate::model::Window;

/// One page of a run, as the search reads it.
pub trait SortedPage {
    fn count(&self) -> usize;
    /// The first slot whose key is `>= key`, or `count()`; `near` is where
    /// the model expects it (any slot: a wrong one costs time, not rows).
    fn lower_bound(&self, key: u64, near: usize) -> usize;
}

/// Where each page of a run begins: page `i` holds positions
/// `[starts[i], starts[i + 1])`, and the last element is the run's length.
/// Pages hold different numbers of entries (they are packed), so this, not
/// arithmetic, turns a position into a page: a binary search over a few
/// thousand integers, cached with the model.
#[derive(Clone, Copy, Debug)]
pub struct Directory<'a> {
    starts: &'a [u64],
}

impl<'a> Directory<'a> {
    /// `starts` must begin at 0, grow strictly and hold one more element
    /// than there are pages ([`starts`] builds it).
    pub fn new(starts: &'a [u64]) -> Directory<'a> {
        debug_assert!(starts.first() == Some(&0) && starts.windows(2).all(|w| w[0] < w[1]));
        Directory { starts }
    }

    pub fn pages(&self) -> u32 {
        (self.starts.len() - 1) as u32
    }

    pub fn entries(&self) -> u64 {
        self.starts[self.starts.len() - 1]
    }

    /// Positions `[first, end)` held by page `i`.
    pub fn span(&self, i: u32) -> (u64, u64) {
        (self.starts[i as usize], self.starts[i as usize + 1])
    }

    /// The page holding position `pos`; the last page for positions past
    /// the end.
    pub fn page_of(&self, pos: u64) -> u32 {
        let s = self.starts;
        let last = s.len().saturating_sub(2);
        if pos >= self.entries() {
            return last as u32;
        }
        // Pages hold similar numbers of entries: start where an even split
        // puts `pos` and widen the window in doubling steps until it holds
        // the page (a few cache lines, not the whole array, however far
        // merges and insert areas made the pages drift from even).
        let guess = (pos as u128 * (last as u128 + 1) / self.entries() as u128) as usize;
        // The answer is the last page `i` with `s[i] <= pos`, in `[a, b)`.
        let (mut a, mut b) = (guess, guess + 1);
        let mut step = 1;
        if s[guess] <= pos {
            while b <= last && s[b] <= pos {
                a = b;
                b = (b + step).min(last + 1);
                step *= 2;
            }
        } else {
            while s[a] > pos {
                b = a;
                a = a.saturating_sub(step);
                step *= 2;
            }
        }
        (a + s[a + 1..b].partition_point(|&x| x <= pos)) as u32
    }
}

/// A directory's starts from each page's entry count (each at least 1);
/// `None` if a count is 0.
pub fn starts(counts: impl IntoIterator<Item = u16>) -> Option<Vec<u64>> {
    let mut out = vec![0u64];
    let mut at = 0u64;
    for c in counts {
        if c == 0 {
            return None;
        }
        at += c as u64;
        out.push(at);
    }
    Some(out)
}

/// Finds the lower bound of `key` (the position of the first entry `>= key`)
/// in a run laid out as `dir` says, starting at the page of the model's
/// prediction. `read(i)` reads page `i`, or fails, which ends the search.
/// Returns the answer and, when it lies on a page, that page as read.
pub fn lower_bound<P: SortedPage, E>(
    dir: Directory,
    key: u64,
    hint: Window,
    mut read: impl FnMut(u32) -> Result<P, E>,
) -> Result<(u64, Option<P>), E> {
    let n = dir.entries();
    if n == 0 {
        return Ok((0, None));
    }
    let (mut lo, mut hi) = (0u64, n); // the answer lies in [lo, hi]
    let mut target = hint.pred.min(n - 1);
    let mut reads = 0;
    loop {
        let i = dir.page_of(target);
        let page = read(i)?;
        let (ps, pe) = dir.span(i);
        let near = target.saturating_sub(ps) as usize;
        let r = ps + page.lower_bound(key, near) as u64;
        if r > ps {
            lo = lo.max(r);
        }
        if r < pe {
            hi = hi.min(r);
        }
        if lo >= hi {
            return Ok(if r == lo && r < pe {
                (r, Some(page))
            } else if lo == n {
                (n, None)
            } else {
                drop(page);
                (lo, Some(read(dir.page_of(lo))?))
            });
        }
        drop(page);
        reads += 1;
        // Next: the neighbouring page first, then bisect what is left,
        // preferring the part the model's window allows.
        target = if reads == 1 {
            if hi <= ps {
                ps - 1
            } else {
                pe
            }
        } else {
            let (a, b) = (lo.max(hint.lo), hi.min(hint.hi));
            let (a, b) = if a < b { (a, b) } else { (lo, hi) };
            a + (b - a) / 2
        };
        target = target.clamp(lo, hi - 1).min(n - 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::{prop_assert, prop_assert_eq, prop_oneof, proptest, ProptestConfig};

    struct VecPage<'a>(&'a [u64]);

    impl SortedPage for VecPage<'_> {
        fn count(&self) -> usize {
            self.0.len()
        }
        fn lower_bound(&self, key: u64, _near: usize) -> usize {
            self.0.partition_point(|&k| k < key)
        }
    }

    /// Pages of the sizes `sizes` repeat (the last one shorter).
    fn layout(n: usize, sizes: &[usize]) -> Vec<u64> {
        let mut counts = Vec::new();
        let mut left = n;
        for &c in sizes.iter().cycle() {
            if left == 0 {
                break;
            }
            counts.push(c.min(left) as u16);
            left -= c.min(left);
        }
        starts(counts).unwrap()
    }

    fn run(keys: &[u64], starts: &[u64], key: u64, hint: Window) -> (u64, usize) {
        let dir = Directory::new(starts);
        let mut reads = 0;
        let found = lower_bound(dir, key, hint, |i| {
            reads += 1;
            let (s, e) = dir.span(i);
            Ok::<_, std::convert::Infallible>(VecPage(&keys[s as usize..e as usize]))
        });
        let Ok((pos, page)) = found;
        if let Some(p) = page {
            // The page returned holds the answer.
            let (first, _) = dir.span(dir.page_of(pos));
            assert_eq!(p.0.as_ptr(), keys[first as usize..].as_ptr());
        } else {
            assert_eq!(pos as usize, keys.len());
        }
        (pos, reads)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// A position's page is the one whose span holds it, however uneven
        /// the pages (the even-split guess is only where the search starts).
        #[test]
        fn page_of_finds_the_span(counts in prop_oneof![vec(1u16..3000, 1..200), vec(1000u16..1010, 1..200)],
                                  at in 0u64..700_000) {
            let starts = starts(counts).unwrap();
            let dir = Directory::new(&starts);
            let pos = at % (dir.entries() + 5);
            let i = dir.page_of(pos);
            if pos < dir.entries() {
                let (a, b) = dir.span(i);
                prop_assert!(a <= pos && pos < b, "{} not in page {} [{}, {})", pos, i, a, b);
            } else {
                prop_assert_eq!(i, dir.pages() - 1);
            }
        }

        /// Any window, however wrong, still gives the exact lower bound.
        #[test]
        fn exact_for_any_hint(mut keys in vec(0u64..200, 0..300), sizes in vec(1usize..20, 1..5),
                              probe in 0u64..210, lo in 0u64..400, width in 0u64..400, pred in 0u64..400) {
            keys.sort_unstable();
            let hint = Window { lo, hi: lo + width, pred };
            let (pos, _) = run(&keys, &layout(keys.len(), &sizes), probe, hint);
            prop_assert_eq!(pos as usize, keys.partition_point(|&k| k < probe));
        }

        /// A correct window costs one page read, unless the answer is the first
        /// entry of a page: proving that takes the entry before it, on the
        /// previous page, and the answer's page is read again.
        #[test]
        fn one_read_with_a_true_window(mut keys in vec(0u64..1000, 1..500), sizes in vec(8usize..64, 1..5),
                                       probe in 0u64..1000) {
            keys.sort_unstable();
            let starts = layout(keys.len(), &sizes);
            let lb = keys.partition_point(|&k| k < probe) as u64;
            let hint = Window { lo: lb, hi: lb, pred: lb.min(keys.len() as u64 - 1) };
            let (pos, reads) = run(&keys, &starts, probe, hint);
            prop_assert_eq!(pos, lb);
            let at_page_start = starts.contains(&lb) && lb > 0 && lb < keys.len() as u64;
            prop_assert!(reads == 1 || (at_page_start && reads == 3), "{} reads", reads);
        }
    }
}
