//! The disk usage cache: registered writable layers are measured by one background thread
//! every interval, and requests only read the last measurement.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::{DiskUsage, measure};
use crate::Error;

/// The last measurement of each registered path, kept fresh by a background thread.
///
/// The thread measures every registered path each interval, and newly registered paths
/// soon after registration. It stops when [`stop`](DiskUsageCache::stop) is called or the
/// cache is dropped; a walk in progress is abandoned at the next directory.
#[derive(Debug)]
pub struct DiskUsageCache {
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Signalled on registration and on stop.
    wake: Condvar,
    /// Read by walks in progress, so stopping does not wait for a whole tree.
    stopping: AtomicBool,
    interval: Duration,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// Some entry has never been measured: the worker should not wait for the interval.
    unmeasured: bool,
    stop: bool,
    next_generation: u64,
}

#[derive(Debug)]
struct Entry {
    path: PathBuf,
    /// Tells registrations of the same id apart, so a walk of a replaced path is not stored.
    generation: u64,
    measured: Option<Measured>,
}

#[derive(Clone, Copy, Debug)]
struct Measured {
    usage: DiskUsage,
    at: SystemTime,
    /// Orders measurements that overlap: an older walk finishing late is not stored.
    started: Instant,
}

/// What the worker measures in one pass, copied out of the lock.
struct Job {
    id: String,
    path: PathBuf,
    generation: u64,
}

impl DiskUsageCache {
    /// An empty cache whose background thread re-measures every registered path each
    /// `interval`.
    pub fn start(interval: Duration) -> Result<DiskUsageCache, Error> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            stopping: AtomicBool::new(false),
            interval,
        });
        let worker_shared = Arc::clone(&shared);
        let worker = std::thread::Builder::new()
            .name("corral-disk-usage".to_string())
            .spawn(move || run(&worker_shared))
            .map_err(|source| Error::SpawnThread {
                what: "disk usage",
                source,
            })?;
        Ok(DiskUsageCache {
            shared,
            worker: Mutex::new(Some(worker)),
        })
    }

    /// Tracks `path` under `id`. Registering the same id and path again keeps the last
    /// measurement; a different path replaces the entry (and forgets its measurement).
    pub fn register(&self, id: &str, path: &Path) {
        let mut state = self.shared.lock();
        if state
            .entries
            .get(id)
            .is_some_and(|entry| entry.path == path)
        {
            return;
        }
        state.next_generation += 1;
        let generation = state.next_generation;
        state.entries.insert(
            id.to_string(),
            Entry {
                path: path.to_path_buf(),
                generation,
                measured: None,
            },
        );
        state.unmeasured = true;
        drop(state);
        self.shared.wake.notify_all();
    }

    /// Stops tracking `id`.
    pub fn unregister(&self, id: &str) {
        self.shared.lock().entries.remove(id);
    }

    /// The last measurement of `id` and when it was taken (when its walk started); `None`
    /// when `id` is not registered or not measured yet. Never walks.
    pub fn get(&self, id: &str) -> Option<(DiskUsage, SystemTime)> {
        let state = self.shared.lock();
        let measured = state.entries.get(id)?.measured?;
        Some((measured.usage, measured.at))
    }

    /// Measures `id` now, on the calling thread (blocking), and stores the result.
    pub fn refresh_now(&self, id: &str) -> Result<DiskUsage, Error> {
        let job = {
            let state = self.shared.lock();
            let entry = state
                .entries
                .get(id)
                .ok_or_else(|| Error::NotRegistered { id: id.to_string() })?;
            Job {
                id: id.to_string(),
                path: entry.path.clone(),
                generation: entry.generation,
            }
        };
        // Not cancelled by stop: the caller asked for this one and waits for it.
        self.shared
            .measure_and_store(&job, &mut || false)
            .map(|usage| {
                // Some(_) always: the walk was not cancellable.
                usage.unwrap_or_default()
            })
    }

    /// Stops the background thread and waits for it to exit. Later calls do nothing; the
    /// cache still answers `get` and `refresh_now`, but no longer refreshes by itself.
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
        let worker = self
            .worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(worker) = worker {
            if worker.join().is_err() {
                tracing::warn!("disk usage thread panicked");
            }
        }
    }
}

impl Drop for DiskUsageCache {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Walks the job's path (no lock held) and stores the result if the entry is still the
    /// same registration and nothing newer was stored meanwhile. `Ok(None)` when cancelled.
    fn measure_and_store(
        &self,
        job: &Job,
        cancelled: &mut dyn FnMut() -> bool,
    ) -> Result<Option<DiskUsage>, Error> {
        let started = Instant::now();
        let at = SystemTime::now();
        let usage = match measure(&job.path, cancelled) {
            Ok(Some(usage)) => usage,
            Ok(None) => return Ok(None),
            Err(error) => {
                tracing::warn!(id = %job.id, path = %job.path.display(), %error,
                    "measuring writable layer failed");
                return Err(error);
            }
        };
        tracing::debug!(id = %job.id, bytes = usage.bytes, inodes = usage.inodes,
            elapsed_ms = started.elapsed().as_millis(), "measured writable layer");
        let mut state = self.lock();
        if let Some(entry) = state.entries.get_mut(&job.id) {
            let newer = entry
                .measured
                .is_none_or(|previous| previous.started <= started);
            if entry.generation == job.generation && newer {
                entry.measured = Some(Measured { usage, at, started });
            }
        }
        Ok(Some(usage))
    }
}

/// The background thread: a full pass every interval, and a pass over unmeasured entries
/// whenever something is registered.
fn run(shared: &Shared) {
    let mut next_full = Instant::now() + shared.interval;
    loop {
        let full = {
            let mut state = shared.lock();
            loop {
                if state.stop {
                    return;
                }
                let now = Instant::now();
                if now >= next_full {
                    break true;
                }
                if state.unmeasured {
                    state.unmeasured = false;
                    break false;
                }
                state = shared
                    .wake
                    .wait_timeout(state, next_full - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        };
        if full {
            next_full = Instant::now() + shared.interval;
        }
        let jobs: Vec<Job> = shared
            .lock()
            .entries
            .iter()
            .filter(|(_, entry)| full || entry.measured.is_none())
            .map(|(id, entry)| Job {
                id: id.clone(),
                path: entry.path.clone(),
                generation: entry.generation,
            })
            .collect();
        for job in &jobs {
            let mut cancelled = || shared.stopping.load(Ordering::Relaxed);
            if cancelled() {
                return;
            }
            // Failures are logged; the previous measurement stays.
            let _ = shared.measure_and_store(job, &mut cancelled);
        }
    }
}

#[cfg(test)]
mod tests;
