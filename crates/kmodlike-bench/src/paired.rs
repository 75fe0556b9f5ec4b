//! Paired measurement: run ours and the baseline alternately, so that load on a shared machine
//! (other builds and tests) hits both alike.
//!
//! Criterion measures one function at a time: on a busy machine a burst of load during one
//! benchmark and not the other skews their ratio. So both benchmarks of a pair run both
//! workloads, interleaved in small chunks, and each reports only its own side's time: the two
//! medians are then taken under the same conditions, and their ratio holds.

use std::time::{Duration, Instant};

/// Which side of a pair a benchmark reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// kmodlike.
    Ours,
    /// What it is compared with.
    Baseline,
}

/// Run `ours` and `baseline` alternately, `chunk` iterations at a time (each closure is given
/// the number of iterations to run), until each has run `iters` iterations; return the time
/// spent in `side`. For criterion's `iter_custom`.
pub fn paired(
    iters: u64,
    chunk: u64,
    side: Side,
    mut ours: impl FnMut(u64),
    mut baseline: impl FnMut(u64),
) -> Duration {
    let chunk = chunk.max(1);
    let mut mine = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = chunk.min(iters - done);
        let t0 = Instant::now();
        ours(n);
        let t1 = Instant::now();
        baseline(n);
        let t2 = Instant::now();
        mine += match side {
            Side::Ours => t1 - t0,
            Side::Baseline => t2 - t1,
        };
        done += n;
    }
    mine
}

/// [`paired`] for more than two workloads: run every one of `all` in turn, `chunk` iterations
/// at a time, until each has run `iters` iterations; return the time spent in `all[timed]`.
pub fn interleaved(
    iters: u64,
    chunk: u64,
    timed: usize,
    all: &mut [&mut dyn FnMut(u64)],
) -> Duration {
    let chunk = chunk.max(1);
    let mut mine = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = chunk.min(iters - done);
        for (i, w) in all.iter_mut().enumerate() {
            let t0 = Instant::now();
            w(n);
            if i == timed {
                mine += t0.elapsed();
            }
        }
        done += n;
    }
    mine
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_run_every_iteration_and_only_one_is_timed() {
        let (mut a, mut b) = (0u64, 0u64);
        let slow = |n: u64| std::thread::sleep(Duration::from_millis(2 * n));
        let t = paired(
            5,
            2,
            Side::Baseline,
            |n| a += n,
            |n| {
                b += n;
                slow(n)
            },
        );
        assert_eq!((a, b), (5, 5));
        assert!(t >= Duration::from_millis(10), "the baseline's sleeps are counted: {t:?}");

        let (mut a, mut b) = (0u64, 0u64);
        let t = paired(
            5,
            2,
            Side::Ours,
            |n| a += n,
            |n| {
                b += n;
                slow(n)
            },
        );
        assert_eq!((a, b), (5, 5));
        assert!(t < Duration::from_millis(10), "the baseline's sleeps are not counted: {t:?}");
    }
}
