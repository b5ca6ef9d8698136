#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

/// Polls `get` until `done` says yes, up to 10 s.
fn wait_for(
    cache: &DiskUsageCache,
    id: &str,
    done: impl Fn(&DiskUsage) -> bool,
) -> Option<(DiskUsage, SystemTime)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(found) = cache.get(id) {
            if done(&found.0) {
                return Some(found);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[test]
fn test_cache_refresh_now_then_get() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), vec![0u8; 10_000]).unwrap();
    let cache = DiskUsageCache::start(Duration::from_secs(3600)).unwrap();
    assert_eq!(cache.get("c1"), None);
    cache.register("c1", dir.path());
    let before = SystemTime::now();
    let usage = cache.refresh_now("c1").unwrap();
    assert_eq!(usage, super::super::dir_usage(dir.path()).unwrap());
    let (cached, at) = cache.get("c1").unwrap();
    assert_eq!(cached, usage);
    assert!(at >= before && at <= SystemTime::now());
}

#[test]
fn test_cache_measures_new_registration_in_background() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f"), b"data").unwrap();
    // An interval far beyond the test: only the registration wake-up can measure it.
    let cache = DiskUsageCache::start(Duration::from_secs(3600)).unwrap();
    cache.register("c1", dir.path());
    let (usage, _) = wait_for(&cache, "c1", |_| true).expect("measured after registration");
    assert_eq!(usage.inodes, 2);
}

#[test]
fn test_cache_remeasures_every_interval() {
    let dir = tempfile::tempdir().unwrap();
    let cache = DiskUsageCache::start(Duration::from_millis(20)).unwrap();
    cache.register("c1", dir.path());
    let (first, first_at) = wait_for(&cache, "c1", |_| true).unwrap();
    std::fs::write(dir.path().join("grown"), vec![1u8; 100_000]).unwrap();
    let (later, later_at) =
        wait_for(&cache, "c1", |usage| usage.inodes == first.inodes + 1).unwrap();
    assert!(later.bytes >= first.bytes + 100_000);
    assert!(later_at > first_at);
}

#[test]
fn test_cache_unregister_forgets() {
    let dir = tempfile::tempdir().unwrap();
    let cache = DiskUsageCache::start(Duration::from_secs(3600)).unwrap();
    cache.register("c1", dir.path());
    cache.refresh_now("c1").unwrap();
    cache.unregister("c1");
    assert_eq!(cache.get("c1"), None);
    let error = cache.refresh_now("c1").unwrap_err();
    assert!(matches!(error, Error::NotRegistered { ref id } if id == "c1"));
}

#[test]
fn test_cache_register_new_path_drops_old_measurement() {
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    std::fs::write(second.path().join("f"), b"x").unwrap();
    let cache = DiskUsageCache::start(Duration::from_secs(3600)).unwrap();
    cache.stop(); // No background pass: only refresh_now measures.
    cache.register("c1", first.path());
    let old = cache.refresh_now("c1").unwrap();
    // Same path again: the measurement stays.
    cache.register("c1", first.path());
    assert_eq!(cache.get("c1").map(|(usage, _)| usage), Some(old));
    cache.register("c1", second.path());
    assert_eq!(cache.get("c1"), None);
    assert_eq!(cache.refresh_now("c1").unwrap().inodes, 2);
}

#[test]
fn test_cache_missing_path_keeps_previous_value() {
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("layer");
    std::fs::create_dir(&layer).unwrap();
    let cache = DiskUsageCache::start(Duration::from_secs(3600)).unwrap();
    cache.register("c1", &layer);
    let measured = cache.refresh_now("c1").unwrap();
    std::fs::remove_dir(&layer).unwrap();
    assert!(matches!(cache.refresh_now("c1"), Err(Error::Walk { .. })));
    assert_eq!(cache.get("c1").map(|(usage, _)| usage), Some(measured));
}

#[test]
fn test_cache_stop_joins_thread() {
    let cache = DiskUsageCache::start(Duration::from_millis(5)).unwrap();
    assert_eq!(Arc::strong_count(&cache.shared), 2);
    cache.stop();
    // The worker's clone of the shared state is gone: the thread has exited.
    assert_eq!(Arc::strong_count(&cache.shared), 1);
    cache.stop(); // Idempotent.
}

#[test]
fn test_cache_drop_stops_thread() {
    let dir = tempfile::tempdir().unwrap();
    let cache = DiskUsageCache::start(Duration::from_millis(1)).unwrap();
    cache.register("c1", dir.path());
    let weak = Arc::downgrade(&cache.shared);
    drop(cache);
    assert!(weak.upgrade().is_none());
}
