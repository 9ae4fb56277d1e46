//! Property tests: for every key of many generated distributions, and for the
//! insertion point of absent keys around them, the true lower bound lies inside
//! the predicted window.

use super::{ModelView, Trainer, Window};
use crate::key::{ord_from_f64, ord_from_i64};

/// splitmix64: small, seedable, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit().max(1e-300), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

pub(crate) fn distributions(n: usize, seed: u64) -> Vec<(&'static str, Vec<u64>)> {
    let mut r = Rng(seed);
    let mut out: Vec<(&'static str, Vec<u64>)> = vec![
        ("sequential", (0..n as i64).map(ord_from_i64).collect()),
        ("gapped", {
            let mut v = 0i64;
            (0..n)
                .map(|_| {
                    v += 1 + (r.next() % 10) as i64;
                    ord_from_i64(v)
                })
                .collect()
        }),
        ("uniform", (0..n).map(|_| r.next()).collect()),
        (
            "uniform_small",
            (0..n)
                .map(|_| ord_from_i64((r.next() % (4 * n as u64)) as i64))
                .collect(),
        ),
        (
            "normal",
            (0..n).map(|_| ord_from_f64(r.normal() * 1000.0)).collect(),
        ),
        (
            "lognormal",
            (0..n)
                .map(|_| ord_from_f64((r.normal() * 2.0).exp()))
                .collect(),
        ),
        (
            "zipf_duplicates",
            (0..n)
                .map(|_| {
                    let u = r.unit();
                    ord_from_i64((1.0 / (u * u + 1e-9)) as i64)
                })
                .collect(),
        ),
        (
            "clustered",
            (0..n)
                .map(|_| {
                    let c = (r.next() % 8) as i64 * 1_000_000_000_000;
                    ord_from_i64(c + (r.next() % 5000) as i64)
                })
                .collect(),
        ),
        (
            "outliers",
            (0..n)
                .map(|i| {
                    if i % 997 == 0 {
                        ord_from_i64(i64::MAX - (r.next() % 1000) as i64)
                    } else {
                        ord_from_i64(i as i64)
                    }
                })
                .collect(),
        ),
        ("all_equal", vec![ord_from_i64(42); n]),
        (
            "adversarial_steps",
            (0..n)
                .map(|i| {
                    // Dense plateaus separated by huge jumps: worst case for a line.
                    let step = (i / 64) as i64;
                    ord_from_i64(step * step * step * 1_000_003 + (i % 64) as i64 / 8)
                })
                .collect(),
        ),
        ("timestamps_jitter", {
            let base = 800_000_000_000_000i64;
            (0..n)
                .map(|i| ord_from_i64(base + i as i64 * 1_000_000 + (r.next() % 5_000_000) as i64))
                .collect()
        }),
        (
            "extremes",
            (0..n)
                .map(|i| match i % 4 {
                    0 => 0,
                    1 => u64::MAX,
                    2 => u64::MAX / 2,
                    _ => r.next(),
                })
                .collect(),
        ),
    ];
    for (_, v) in out.iter_mut() {
        v.sort_unstable();
    }
    out
}

fn train(keys: &[u64], target: u32) -> Vec<u8> {
    let mut t = Trainer::new(target);
    keys.iter().for_each(|&k| t.push(k));
    t.finish()
}

fn assert_contains(name: &str, m: &ModelView, keys: &[u64], probe: u64) {
    let lb = keys.partition_point(|&k| k < probe) as u64;
    let Window { lo, hi, pred } = m.window(probe);
    assert!(
        lo <= pred && pred <= hi,
        "{name}: pred {pred} outside [{lo}, {hi}]"
    );
    assert!(
        lo <= lb && lb <= hi,
        "{name}: key {probe:#x} has lower bound {lb}, window [{lo}, {hi}]"
    );
}

fn check_all(name: &str, keys: &[u64], target: u32) -> (u32, usize) {
    let bytes = train(keys, target);
    let m = ModelView::open(&bytes).unwrap();
    m.verify_checksum().unwrap();
    assert_eq!(m.nkeys(), keys.len() as u64);
    let mut probes = vec![0, 1, u64::MAX, u64::MAX - 1];
    for w in keys.windows(2) {
        probes.push(w[0]);
        if w[1] - w[0] > 1 {
            probes.extend([w[0] + 1, w[1] - 1, w[0] + (w[1] - w[0]) / 2]);
        }
    }
    if let Some(&last) = keys.last() {
        probes.extend([last, last.saturating_add(1)]);
    }
    for p in probes {
        assert_contains(name, &m, keys, p);
    }
    (m.max_window(), m.nleaves())
}

#[test]
fn every_key_and_gap_lies_in_its_window() {
    for seed in 1..=3 {
        for (name, keys) in distributions(20_000, seed) {
            check_all(name, &keys, 64);
        }
    }
}

#[test]
fn windows_hold_for_many_targets_and_sizes() {
    for n in [0usize, 1, 2, 3, 10, 100, 1000, 70_000] {
        for target in [2u32, 8, 64, 1024] {
            for (name, keys) in distributions(n, n as u64 + target as u64) {
                check_all(name, &keys, target);
            }
        }
    }
}

#[test]
fn smooth_data_meets_the_target_window() {
    for (name, keys) in distributions(50_000, 7) {
        if [
            "sequential",
            "gapped",
            "uniform",
            "timestamps_jitter",
            "normal",
            "lognormal",
        ]
        .contains(&name)
        {
            let (max_window, _) = check_all(name, &keys, 64);
            assert!(max_window <= 64, "{name}: max window {max_window}");
        }
    }
}

#[test]
fn sequential_keys_need_few_leaves() {
    let keys: Vec<u64> = (0..1_000_000i64).map(|i| ord_from_i64(i * 3)).collect();
    let (max_window, leaves) = check_all("sequential", &keys, 64);
    assert!(max_window <= 2, "max window {max_window}");
    assert!(leaves <= 32, "{leaves} leaves");
}

#[test]
fn duplicate_runs_do_not_widen_their_neighbours() {
    let mut keys: Vec<u64> = (0..10_000i64).map(ord_from_i64).collect();
    keys.extend(std::iter::repeat_n(ord_from_i64(10_000), 100_000));
    keys.extend((10_001..20_000i64).map(ord_from_i64));
    let bytes = train(&keys, 64);
    let m = ModelView::open(&bytes).unwrap();
    for probe in [
        ord_from_i64(9_999),
        ord_from_i64(10_001),
        ord_from_i64(15_000),
    ] {
        let w = m.window(probe);
        assert!(w.hi - w.lo <= 64, "window {w:?} for {probe:#x}");
        assert_contains("dups", &m, &keys, probe);
    }
}

#[test]
fn damaged_models_are_rejected() {
    let keys: Vec<u64> = (0..5000i64).map(ord_from_i64).collect();
    let bytes = train(&keys, 64);
    assert!(ModelView::open(&bytes[..10]).is_err());
    let mut bad = bytes.clone();
    bad[0] ^= 1;
    assert!(ModelView::open(&bad).is_err());
    let mut bad = bytes.clone();
    bad[16] = 0xff; // leaf count
    assert!(ModelView::open(&bad).is_err());
    let mut bad = bytes.clone();
    let n = bad.len();
    bad[n - 3] ^= 0x40;
    assert!(ModelView::open(&bad).unwrap().verify_checksum().is_err());
}

/// Extends a model trained on `keys[..split]` with `keys[split..]`, which lie
/// at or above the keys before, as an append retrain does.
fn extend(keys: &[u64], split: usize, target: u32) -> Vec<u8> {
    let old_bytes = train(&keys[..split], target);
    let old = ModelView::open(&old_bytes).unwrap();
    let keep = old.nleaves() - 1;
    let mut t = Trainer::resume(target, &old, keep);
    keys[old.last_leaf_start() as usize..]
        .iter()
        .for_each(|&k| t.push(k));
    t.finish_after(&old, keep)
}

#[test]
fn an_extended_model_holds_every_window() {
    for (name, keys) in distributions(30_000, 11) {
        for split in [1usize, 100, 15_000, 29_999] {
            let bytes = extend(&keys, split, 64);
            let m = ModelView::open(&bytes).unwrap();
            m.verify_checksum().unwrap();
            assert_eq!(m.nkeys(), keys.len() as u64, "{name}");
            let mut probes = vec![0, u64::MAX];
            for w in keys.windows(2) {
                probes.extend([w[0], w[0].saturating_add(1), w[1].saturating_sub(1)]);
            }
            for p in probes {
                assert_contains(name, &m, &keys, p);
            }
        }
    }
}

/// An append retrain that also sorts inserted keys into the run's last page:
/// the keys from position `from` on change, and training resumes at the leaf
/// holding position `from - 1`.
#[test]
fn a_model_extended_over_a_rewritten_tail_holds_every_window() {
    for (name, keys) in distributions(20_000, 5) {
        for (split, from) in [(15_000usize, 14_500usize), (20_000, 19_990), (500, 1)] {
            let old_bytes = train(&keys[..split], 64);
            let old = ModelView::open(&old_bytes).unwrap();
            // Keys inserted among those from `from` on, then appended ones.
            let mut tail: Vec<u64> = keys[from..split].to_vec();
            let gaps = keys[from..split].windows(2).step_by(3);
            tail.extend(gaps.filter(|w| w[1] - w[0] > 1).map(|w| w[0] + 1));
            tail.sort_unstable();
            let mut all: Vec<u64> = keys[..from].to_vec();
            all.extend(tail);
            all.extend(keys[split..].iter().copied());
            let keep = old.leaf_at_position(from as u64 - 1);
            let mut t = Trainer::resume(64, &old, keep);
            all[old.leaf_start(keep.min(old.nleaves() - 1)) as usize..]
                .iter()
                .for_each(|&k| t.push(k));
            let bytes = t.finish_after(&old, keep);
            let m = ModelView::open(&bytes).unwrap();
            assert_eq!(m.nkeys(), all.len() as u64, "{name}");
            let mut probes = vec![0, u64::MAX];
            for w in all.windows(2).step_by(7) {
                probes.extend([w[0], w[0].saturating_add(1), w[1].saturating_sub(1)]);
            }
            for p in probes {
                assert_contains(name, &m, &all, p);
            }
        }
    }
}

#[test]
fn repeated_extensions_keep_leaves_and_windows() {
    // Sequential keys appended 1% at a time, 50 times: the leaves stay as
    // few as one training would give, and the windows as narrow.
    let keys: Vec<u64> = (0..200_000i64).map(|i| ord_from_i64(i * 7)).collect();
    let mut n = 100_000;
    let mut bytes = train(&keys[..n], 64);
    for _ in 0..50 {
        let old = ModelView::open(&bytes).unwrap();
        let m = (n + 2_000).min(keys.len());
        let keep = old.nleaves() - 1;
        let mut t = Trainer::resume(64, &old, keep);
        keys[old.last_leaf_start() as usize..m]
            .iter()
            .for_each(|&k| t.push(k));
        bytes = t.finish_after(&old, keep);
        n = m;
    }
    let m = ModelView::open(&bytes).unwrap();
    assert_eq!(m.nkeys(), keys.len() as u64);
    assert!(m.max_window() <= 2, "max window {}", m.max_window());
    let fresh = ModelView::open(&train(&keys, 64)).unwrap().nleaves();
    assert!(
        m.nleaves() <= fresh + 2,
        "{} leaves, fresh {fresh}",
        m.nleaves()
    );
    for &k in keys.iter().step_by(97) {
        assert_contains("sequential", &m, &keys, k);
    }
}

/// Models of version 1 (leaves predict from the run's start) are read as
/// they are, and a trainer resuming one goes on in its form.
#[test]
fn version_1_models_hold_every_window_and_stay_version_1() {
    for (name, keys) in distributions(20_000, 17) {
        let mut t = Trainer::from_run_start(64);
        keys[..15_000].iter().for_each(|&k| t.push(k));
        let old_bytes = t.finish();
        assert_eq!(old_bytes[4], 1, "{name}: version");
        let old = ModelView::open(&old_bytes).unwrap();
        assert!(!old.from_start());
        for &k in keys[..15_000].iter().step_by(13) {
            assert_contains(name, &old, &keys[..15_000], k);
        }
        let keep = old.nleaves() - 1;
        let mut t = Trainer::resume(64, &old, keep);
        keys[old.last_leaf_start() as usize..]
            .iter()
            .for_each(|&k| t.push(k));
        let bytes = t.finish_after(&old, keep);
        assert_eq!(bytes[4], 1, "{name}: version after an append");
        let m = ModelView::open(&bytes).unwrap();
        for &k in keys.iter().step_by(11) {
            assert_contains(name, &m, &keys, k);
            assert_contains(name, &m, &keys, k.saturating_add(1));
        }
    }
}

/// A partial merge rewrites positions `[from, to)` of the run (rows
/// inserted among them) and moves the leaves after them: training resumes
/// at the leaf holding `from - 1`, goes over the new stretch and on to the
/// first old leaf that begins at or after `to` above every key pushed, and
/// the leaves from there on are kept, moved. Every key and gap of the new
/// run lies in its window, for leaves moved forward and, after deletes,
/// backward.
#[test]
fn leaves_moved_after_a_rewritten_stretch_hold_every_window() {
    for (name, keys) in distributions(30_000, 23) {
        for (from, to, inserted_every, deleted_every) in [
            (10_000usize, 14_000usize, 3usize, 0usize),
            (1, 20_000, 2, 0),
            (12_000, 13_000, 0, 4),
            (5_000, 25_000, 5, 7),
        ] {
            let old_bytes = train(&keys, 64);
            let old = ModelView::open(&old_bytes).unwrap();
            assert!(old.from_start());
            // The stretch, with keys inserted in its gaps and some deleted.
            let mut stretch: Vec<u64> = keys[from..to]
                .iter()
                .enumerate()
                .filter(|(i, _)| deleted_every == 0 || i % deleted_every != 1)
                .map(|(_, &k)| k)
                .collect();
            if inserted_every > 0 {
                let gaps = keys[from..to].windows(2).step_by(inserted_every);
                stretch.extend(gaps.filter(|w| w[1] - w[0] > 1).map(|w| w[0] + 1));
            }
            stretch.sort_unstable();
            let mut all: Vec<u64> = keys[..from].to_vec();
            all.extend(&stretch);
            let new_to = all.len();
            all.extend(&keys[to..]);
            let keep = old.leaf_at_position(from as u64 - 1);
            let mut t = Trainer::resume(64, &old, keep);
            all[old.leaf_start(keep) as usize..new_to]
                .iter()
                .for_each(|&k| t.push(k));
            // On to the first old leaf at or after `to` whose first key lies
            // above those pushed.
            let mut next = old.leaf_at_position(to as u64);
            let mut at = to;
            let bytes = loop {
                let behind = old.leaf_start(next) < to as u64
                    || t.last_key().is_some_and(|k| k >= old.leaf(next).first_key);
                if !behind {
                    break t.finish_between(&old, keep, next);
                }
                next += 1;
                if next == old.nleaves() {
                    keys[at..].iter().for_each(|&k| t.push(k));
                    break t.finish_after(&old, keep);
                }
                let end = old.leaf_start(next) as usize;
                keys[at..end].iter().for_each(|&k| t.push(k));
                at = end;
            };
            let m = ModelView::open(&bytes).unwrap();
            m.verify_checksum().unwrap();
            assert_eq!(m.nkeys(), all.len() as u64, "{name}");
            let mut probes = vec![0, u64::MAX];
            for w in all.windows(2).step_by(5) {
                probes.extend([w[0], w[0].saturating_add(1), w[1].saturating_sub(1)]);
            }
            for p in probes {
                assert_contains(name, &m, &all, p);
            }
        }
    }
}

/// `linear_floor` without `f64::floor` answers as the floor did, for every
/// bound a position can have (below 2^53) and any value, odd ones included.
#[test]
fn linear_floor_matches_the_floor() {
    fn with_floor(v: f64, lo: u64, hi: u64) -> u64 {
        let y = v.floor();
        if y.is_nan() || y <= lo as f64 {
            lo
        } else if y >= hi as f64 {
            hi
        } else {
            (y as u64).max(lo).min(hi)
        }
    }
    let mut r = Rng(7);
    let specials = [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        0.0,
        0.5,
        -0.5,
        1.0 - f64::EPSILON,
        1e300,
        -1e300,
        (1u64 << 53) as f64,
    ];
    for i in 0..200_000 {
        let lo = if i % 3 == 0 {
            0
        } else {
            r.next() % (1 << (r.next() % 54))
        };
        let hi = lo + r.next() % (1 << (r.next() % 40)).max(1);
        let hi = hi.min((1 << 53) - 1).max(lo);
        let v = match i % 4 {
            0 => specials[(r.next() % specials.len() as u64) as usize],
            // Near the bounds, where floor and truncation could part.
            1 => lo as f64 + (r.unit() * 4.0 - 2.0),
            2 => hi as f64 + (r.unit() * 4.0 - 2.0),
            _ => (r.unit() - 0.25) * (hi as f64 * 1.5 + 10.0),
        };
        let (slope, intercept, x) = (r.unit(), v, 0.0);
        assert_eq!(
            super::layout::linear_floor(slope, intercept, x, lo, hi),
            with_floor(intercept + slope * x, lo, hi),
            "v {v} lo {lo} hi {hi}"
        );
    }
}
