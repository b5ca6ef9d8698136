//! CPU usage rates from cumulative counters: the `usage_nano_cores` of the CRI stats.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The shortest window a kept sample opens: a sample closer than this to the last kept one
/// is measured against the one before (two calls a few milliseconds apart, `crictl stats`
/// then `crictl stats -o json`, would otherwise give a rate over those milliseconds).
const MIN_WINDOW: Duration = Duration::from_secs(1);

/// One previous observation of a counter.
#[derive(Clone, Copy, Debug)]
struct Sample {
    usage_ns: u64,
    at: Instant,
}

/// The kept samples of one id: the last one, and the one before it.
#[derive(Clone, Copy, Debug)]
struct Samples {
    before: Option<Sample>,
    last: Sample,
}

/// Turns cumulative CPU usage samples into a rate, per id (a container or pod id). Safe to
/// share between threads; each call holds the lock only for one map lookup.
#[derive(Debug, Default)]
pub struct CpuRate {
    samples: Mutex<HashMap<String, Samples>>,
}

impl CpuRate {
    /// An empty tracker.
    pub fn new() -> CpuRate {
        CpuRate::default()
    }

    /// Records `usage_ns` (cumulative CPU time) of `id` seen at `at`, and returns the usage
    /// in nanocores (CPU-nanoseconds per second) since the last kept sample of that id, or
    /// since the one before when the last is less than [`MIN_WINDOW`] old (the new sample is
    /// then not kept, so the next call still gets a full window).
    ///
    /// `None` on the first sample, when `at` is not after the last kept sample (the sample
    /// is then ignored), or when the counter went backwards (the cgroup was recreated: the
    /// new value becomes the base for the next call).
    pub fn observe(&self, id: &str, usage_ns: u64, at: Instant) -> Option<u64> {
        let sample = Sample { usage_ns, at };
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(slot) = samples.get_mut(id) else {
            samples.insert(
                id.to_string(),
                Samples {
                    before: None,
                    last: sample,
                },
            );
            return None;
        };
        if at <= slot.last.at {
            return None;
        }
        if usage_ns < slot.last.usage_ns {
            *slot = Samples {
                before: None,
                last: sample,
            };
            return None;
        }
        if at.duration_since(slot.last.at) >= MIN_WINDOW {
            let previous = slot.last;
            *slot = Samples {
                before: Some(previous),
                last: sample,
            };
            return rate(previous, sample);
        }
        rate(slot.before.unwrap_or(slot.last), sample)
    }

    /// Drops the samples of `id` (the container or pod is gone).
    pub fn forget(&self, id: &str) {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    /// How many ids have a sample.
    pub fn len(&self) -> usize {
        self.samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no id has a sample.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Nanocores between two samples, or `None` when time did not advance or the counter went
/// backwards.
fn rate(previous: Sample, current: Sample) -> Option<u64> {
    let elapsed_ns = current.at.checked_duration_since(previous.at)?.as_nanos();
    let used_ns = current.usage_ns.checked_sub(previous.usage_ns)?;
    if elapsed_ns == 0 {
        return None;
    }
    let nano_cores = u128::from(used_ns) * 1_000_000_000 / elapsed_ns;
    Some(u64::try_from(nano_cores).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn test_observe_first_sample_is_none() {
        let rate = CpuRate::new();
        assert_eq!(rate.observe("a", 1_000, Instant::now()), None);
        assert_eq!(rate.len(), 1);
    }

    #[test]
    fn test_observe_half_a_core() {
        let rate = CpuRate::new();
        let t0 = Instant::now();
        rate.observe("a", 1_000_000_000, t0);
        // 0.5 s of CPU in 1 s: half a core, 5 * 10^8 nanocores.
        let got = rate.observe("a", 1_500_000_000, t0 + Duration::from_secs(1));
        assert_eq!(got, Some(500_000_000));
        // 250 ms later is too short a window: measured from the sample before (t0), 1 s of
        // CPU in 1.25 s.
        let got = rate.observe("a", 2_000_000_000, t0 + Duration::from_millis(1250));
        assert_eq!(got, Some(800_000_000));
        // That sample was not kept: a second after the last kept one (t0 + 1 s) is a full
        // window from it, 1.5 s of CPU in 1 s.
        let got = rate.observe("a", 3_000_000_000, t0 + Duration::from_secs(2));
        assert_eq!(got, Some(1_500_000_000));
    }

    #[test]
    fn test_observe_ids_are_independent() {
        let rate = CpuRate::new();
        let t0 = Instant::now();
        rate.observe("a", 0, t0);
        assert_eq!(rate.observe("b", 0, t0 + Duration::from_secs(1)), None);
        assert_eq!(
            rate.observe("a", 1_000_000_000, t0 + Duration::from_secs(1)),
            Some(1_000_000_000)
        );
    }

    #[test]
    fn test_observe_time_not_advancing_is_none_and_ignored() {
        let rate = CpuRate::new();
        let t0 = Instant::now();
        rate.observe("a", 100, t0 + Duration::from_secs(1));
        assert_eq!(rate.observe("a", 200, t0 + Duration::from_secs(1)), None);
        assert_eq!(rate.observe("a", 300, t0), None);
        // The base is still the first sample (usage 100 at t0 + 1 s).
        assert_eq!(
            rate.observe("a", 100 + 1_000_000, t0 + Duration::from_secs(2)),
            Some(1_000_000)
        );
    }

    #[test]
    fn test_observe_counter_reset_rebases() {
        let rate = CpuRate::new();
        let t0 = Instant::now();
        rate.observe("a", 5_000_000_000, t0);
        assert_eq!(rate.observe("a", 10, t0 + Duration::from_secs(1)), None);
        assert_eq!(
            rate.observe("a", 10 + 250_000_000, t0 + Duration::from_secs(2)),
            Some(250_000_000)
        );
    }

    #[test]
    fn test_observe_huge_values_saturate() {
        let rate = CpuRate::new();
        let t0 = Instant::now();
        rate.observe("a", 0, t0);
        assert_eq!(
            rate.observe("a", u64::MAX, t0 + Duration::from_nanos(1)),
            Some(u64::MAX)
        );
    }

    #[test]
    fn test_forget_drops_base() {
        let rate = CpuRate::new();
        let t0 = Instant::now();
        rate.observe("a", 0, t0);
        rate.forget("a");
        assert!(rate.is_empty());
        assert_eq!(rate.observe("a", 10, t0 + Duration::from_secs(1)), None);
    }

    #[test]
    fn test_observe_from_many_threads() {
        let rate = Arc::new(CpuRate::new());
        let t0 = Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|n| {
                let rate = Arc::clone(&rate);
                std::thread::spawn(move || {
                    let id = format!("c{n}");
                    rate.observe(&id, 0, t0);
                    (1..=100u64)
                        .filter_map(|i| {
                            rate.observe(&id, i * 1_000_000, t0 + Duration::from_millis(i))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for thread in threads {
            let rates = thread.join().unwrap();
            // 1 ms of CPU per 1 ms: one core, every time.
            assert_eq!(rates, vec![1_000_000_000; 100]);
        }
        assert_eq!(rate.len(), 4);
    }
}
