//! Where a generation's pages lie. Its run pages, then its NULL pages, then its
//! model pages are numbered from 0 and laid over a few extents of consecutive
//! blocks: a build writes one extent after the metapage; a retrain places the
//! next generation in extents earlier generations left free, and extends the
//! index for the rest. Pure Rust.

/// Consecutive blocks `[start, start + len)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Extent {
    pub start: u32,
    pub len: u32,
}

impl Extent {
    pub fn end(&self) -> u64 {
        self.start as u64 + self.len as u64
    }
}

/// Most extents a generation, or the free list, is made of (32 in formats
/// before 7). An append retrain adds one or two to the current generation
/// and a partial merge a few; when they run out the next retrain is a full
/// merge, which lays the run out afresh.
pub const MAX_EXTENTS: usize = 64;

/// A short list of extents, stored whole in the metapage.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Extents {
    pub n: u32,
    pub list: [Extent; MAX_EXTENTS],
}
const _: () = assert!(std::mem::size_of::<Extents>() == 4 + 8 * MAX_EXTENTS);

impl Default for Extents {
    fn default() -> Extents {
        Extents {
            n: 0,
            list: [Extent::default(); MAX_EXTENTS],
        }
    }
}

impl Extents {
    pub fn single(start: u32, len: u32) -> Extents {
        let mut e = Extents::default();
        e.push(Extent { start, len });
        e
    }

    /// The extents in use (an out-of-range count reads as none; the metapage
    /// check reports it).
    pub fn as_slice(&self) -> &[Extent] {
        &self.list[..(self.n as usize).min(MAX_EXTENTS)]
    }

    pub fn blocks(&self) -> u64 {
        self.as_slice().iter().map(|e| e.len as u64).sum()
    }

    /// The block of page `page`, numbered across the extents.
    pub fn block(&self, mut page: u32) -> Option<u32> {
        for e in self.as_slice() {
            if page < e.len {
                return Some(e.start + page);
            }
            page -= e.len;
        }
        None
    }

    /// The extents holding pages `[0, pages)`.
    pub fn head(&self, mut pages: u32) -> Extents {
        let mut out = Extents::default();
        for e in self.as_slice() {
            if pages == 0 {
                break;
            }
            let len = e.len.min(pages);
            out.push(Extent {
                start: e.start,
                len,
            });
            pages -= len;
        }
        out
    }

    /// The extents holding pages `[pages, blocks())`.
    pub fn tail(&self, mut pages: u32) -> Vec<Extent> {
        let mut out = Vec::new();
        for e in self.as_slice() {
            let skip = e.len.min(pages);
            pages -= skip;
            if skip < e.len {
                out.push(Extent {
                    start: e.start + skip,
                    len: e.len - skip,
                });
            }
        }
        out
    }

    /// The extents holding pages `[from, to)`.
    pub fn range(&self, from: u32, to: u32) -> Vec<Extent> {
        if from >= to {
            return Vec::new();
        }
        self.head(to).tail(from)
    }

    /// Appends `e`, joining it to the last extent when they touch. False when
    /// the list is full.
    pub fn push(&mut self, e: Extent) -> bool {
        if e.len == 0 {
            return true;
        }
        let n = self.as_slice().len();
        if n > 0 && self.list[n - 1].end() == e.start as u64 {
            self.list[n - 1].len += e.len;
            return true;
        }
        if n == MAX_EXTENTS {
            return false;
        }
        self.list[n] = e;
        self.n = n as u32 + 1;
        true
    }

    /// Moves up to `want` blocks from the front of this list to `out`, while
    /// `out` holds at most `room` extents; returns how many moved.
    pub fn take(&mut self, want: u32, out: &mut Extents, room: usize) -> u32 {
        let mut moved = 0;
        while moved < want && self.n > 0 {
            let first = self.list[0];
            let n = first.len.min(want - moved);
            let joins = out
                .as_slice()
                .last()
                .is_some_and(|l| l.end() == first.start as u64);
            if !joins && out.as_slice().len() >= room.min(MAX_EXTENTS) {
                break;
            }
            out.push(Extent {
                start: first.start,
                len: n,
            });
            moved += n;
            if n == first.len {
                self.list.copy_within(1..self.n as usize, 0);
                self.n -= 1;
                self.list[self.n as usize] = Extent::default();
            } else {
                self.list[0] = Extent {
                    start: first.start + n,
                    len: first.len - n,
                };
            }
        }
        moved
    }

    /// Moves up to `want` blocks to `out`, from the largest extents first,
    /// while `out` holds at most `room` extents; returns how many moved.
    /// Taking the small ones first (as [`Extents::take`] does) would spend
    /// the room on them.
    pub fn take_largest(&mut self, want: u32, out: &mut Extents, room: usize) -> u32 {
        let mut moved = 0;
        while moved < want && out.as_slice().len() < room.min(MAX_EXTENTS) {
            let Some(i) = (0..self.as_slice().len()).max_by_key(|&i| self.list[i].len) else {
                break;
            };
            let e = self.list[i];
            let n = e.len.min(want - moved);
            out.push(Extent {
                start: e.start,
                len: n,
            });
            moved += n;
            let rest = Extent {
                start: e.start + n,
                len: e.len - n,
            };
            let len = self.as_slice().len();
            if rest.len == 0 {
                self.list.copy_within(i + 1..len, i);
                self.n -= 1;
                self.list[len - 1] = Extent::default();
            } else {
                self.list[i] = rest;
            }
        }
        moved
    }

    /// Takes `want` blocks from the first extent that holds them all.
    pub fn take_whole(&mut self, want: u32) -> Option<Extent> {
        let n = self.as_slice().len();
        let i = (0..n).find(|&i| self.list[i].len >= want)?;
        let e = self.list[i];
        if e.len == want {
            self.list.copy_within(i + 1..n, i);
            self.n -= 1;
            self.list[n - 1] = Extent::default();
        } else {
            self.list[i] = Extent {
                start: e.start + want,
                len: e.len - want,
            };
        }
        Some(Extent {
            start: e.start,
            len: want,
        })
    }

    /// Adds `e` to a free list, kept sorted and coalesced. When it is full the
    /// smallest extent is dropped: its blocks stay unused until a REINDEX.
    pub fn free(&mut self, e: Extent) {
        if e.len == 0 {
            return;
        }
        let mut all: Vec<Extent> = self.as_slice().to_vec();
        all.push(e);
        all.sort_by_key(|x| x.start);
        let mut merged: Vec<Extent> = Vec::with_capacity(all.len());
        for x in all {
            match merged.last_mut() {
                Some(last) if last.end() == x.start as u64 => last.len += x.len,
                _ => merged.push(x),
            }
        }
        while merged.len() > MAX_EXTENTS {
            let smallest = (0..merged.len()).min_by_key(|&i| merged[i].len).unwrap();
            merged.remove(smallest);
        }
        *self = Extents::default();
        for x in merged {
            self.push(x);
        }
    }
}

/// Whether any block lies in both lists.
pub fn overlaps(x: &[Extent], y: &[Extent]) -> bool {
    x.iter().any(|a| {
        y.iter()
            .any(|b| (a.start as u64) < b.end() && (b.start as u64) < a.end())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(start: u32, len: u32) -> Extent {
        Extent { start, len }
    }

    #[test]
    fn pages_map_across_extents() {
        let mut x = Extents::single(10, 3);
        assert!(x.push(e(20, 2)));
        assert!(x.push(e(22, 1))); // joins the last one
        assert_eq!(x.n, 2);
        let blocks: Vec<Option<u32>> = (0..7).map(|p| x.block(p)).collect();
        assert_eq!(
            blocks,
            [
                Some(10),
                Some(11),
                Some(12),
                Some(20),
                Some(21),
                Some(22),
                None
            ]
        );
        assert_eq!(x.blocks(), 6);
    }

    #[test]
    fn head_and_tail_split_the_pages() {
        let mut x = Extents::single(10, 3);
        x.push(e(20, 4));
        assert_eq!(x.head(0).as_slice(), []);
        assert_eq!(x.head(2).as_slice(), [e(10, 2)]);
        assert_eq!(x.head(5).as_slice(), [e(10, 3), e(20, 2)]);
        assert_eq!(x.head(9).as_slice(), [e(10, 3), e(20, 4)]);
        assert_eq!(x.tail(0), [e(10, 3), e(20, 4)]);
        assert_eq!(x.tail(3), [e(20, 4)]);
        assert_eq!(x.tail(5), [e(22, 2)]);
        assert_eq!(x.tail(7), []);
        assert_eq!(x.range(2, 5), [e(12, 1), e(20, 2)]);
        assert_eq!(x.range(4, 6), [e(21, 2)]);
        assert_eq!(x.range(3, 3), []);
        assert_eq!(x.range(5, 3), []);
    }

    #[test]
    fn take_largest_takes_the_largest_extents_first() {
        let mut free = Extents::default();
        for x in [e(10, 2), e(20, 8), e(40, 3), e(60, 5)] {
            free.free(x);
        }
        let mut out = Extents::default();
        assert_eq!(free.take_largest(4, &mut out, 3), 4);
        assert_eq!(out.as_slice(), [e(20, 4)]);
        let mut out = Extents::default();
        assert_eq!(free.take_largest(12, &mut out, 2), 9);
        assert_eq!(out.as_slice(), [e(60, 5), e(24, 4)]);
        assert_eq!(free.as_slice(), [e(10, 2), e(40, 3)]);
        let mut out = Extents::default();
        assert_eq!(free.take_largest(9, &mut out, 0), 0);
    }

    #[test]
    fn take_splits_and_stops_when_full() {
        let mut free = Extents::default();
        free.free(e(50, 4));
        free.free(e(10, 5));
        free.free(e(15, 5)); // coalesces with 10..15
        assert_eq!(free.as_slice(), [e(10, 10), e(50, 4)]);
        let mut out = Extents::default();
        assert_eq!(free.take(12, &mut out, MAX_EXTENTS), 12);
        assert_eq!(out.as_slice(), [e(10, 10), e(50, 2)]);
        assert_eq!(free.as_slice(), [e(52, 2)]);
        let mut full = Extents::default();
        for i in 0..MAX_EXTENTS as u32 {
            full.push(e(100 + 10 * i, 1));
        }
        assert_eq!(free.take(2, &mut full, MAX_EXTENTS), 0);
        let mut one = Extents::default();
        assert_eq!(free.take(2, &mut one, 0), 0);
        assert_eq!(free.as_slice(), [e(52, 2)]);
    }

    #[test]
    fn take_whole_uses_one_extent_or_none() {
        let mut free = Extents::default();
        free.free(e(10, 2));
        free.free(e(20, 5));
        free.free(e(40, 3));
        assert_eq!(free.take_whole(3), Some(e(20, 3)));
        assert_eq!(free.as_slice(), [e(10, 2), e(23, 2), e(40, 3)]);
        assert_eq!(free.take_whole(3), Some(e(40, 3)));
        assert_eq!(free.as_slice(), [e(10, 2), e(23, 2)]);
        assert_eq!(free.take_whole(3), None);
        assert_eq!(free.as_slice(), [e(10, 2), e(23, 2)]);
    }

    #[test]
    fn a_full_free_list_drops_its_smallest() {
        let mut free = Extents::default();
        for i in 0..MAX_EXTENTS as u32 + 2 {
            free.free(e(1000 * i, 10 + i));
        }
        assert_eq!(free.n as usize, MAX_EXTENTS);
        assert!(free.as_slice().iter().all(|x| x.len >= 12));
        assert!(overlaps(free.as_slice(), &[e(2005, 1)]));
        assert!(!overlaps(free.as_slice(), &[e(20, 1)]));
    }
}
