#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::MetadataExt;

use super::*;

fn allocated(path: &Path) -> u64 {
    std::fs::symlink_metadata(path).unwrap().blocks() * 512
}

#[test]
fn test_dir_usage_counts_files_and_dirs() {
    let root = tempfile::tempdir().unwrap();
    let sub = root.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(root.path().join("a"), vec![1u8; 10_000]).unwrap();
    std::fs::write(sub.join("b"), vec![2u8; 70_000]).unwrap();
    std::fs::write(sub.join("empty"), b"").unwrap();
    let expected_bytes: u64 = [
        root.path().to_path_buf(),
        sub.clone(),
        root.path().join("a"),
        sub.join("b"),
        sub.join("empty"),
    ]
    .iter()
    .map(|path| allocated(path))
    .sum();
    let usage = dir_usage(root.path()).unwrap();
    assert_eq!(usage.inodes, 5);
    assert_eq!(usage.bytes, expected_bytes);
    assert!(usage.bytes >= 80_000, "{usage:?}");
}

#[test]
fn test_dir_usage_hard_links_counted_once() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("file");
    std::fs::write(&file, vec![3u8; 64 * 1024]).unwrap();
    let before = dir_usage(root.path()).unwrap();
    std::fs::create_dir(root.path().join("d")).unwrap();
    std::fs::hard_link(&file, root.path().join("d").join("link1")).unwrap();
    std::fs::hard_link(&file, root.path().join("link2")).unwrap();
    let after = dir_usage(root.path()).unwrap();
    // Only the new directory is new.
    assert_eq!(after.inodes, before.inodes + 1);
    assert_eq!(
        after.bytes,
        before.bytes + allocated(&root.path().join("d"))
    );
}

#[test]
fn test_dir_usage_symlinks_not_followed() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("big"), vec![4u8; 256 * 1024]).unwrap();
    let root = tempfile::tempdir().unwrap();
    let link = root.path().join("to-big");
    std::os::unix::fs::symlink(outside.path().join("big"), &link).unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("to-dir")).unwrap();
    let usage = dir_usage(root.path()).unwrap();
    assert_eq!(usage.inodes, 3);
    assert!(usage.bytes < 256 * 1024, "{usage:?}");
    // A symlink as the root is the symlink alone.
    let alone = dir_usage(&link).unwrap();
    assert_eq!(alone.inodes, 1);
    assert_eq!(alone.bytes, allocated(&link));
}

#[test]
fn test_dir_usage_missing_root_is_error() {
    let root = tempfile::tempdir().unwrap();
    let error = dir_usage(&root.path().join("nope")).unwrap_err();
    assert!(matches!(error, Error::Walk { ref path, .. } if path.ends_with("nope")));
}

#[test]
fn test_dir_usage_deep_tree_small_stack() {
    let root = tempfile::tempdir().unwrap();
    let depth = 1500;
    let mut deepest = root.path().to_path_buf();
    for _ in 0..depth {
        deepest.push("d");
    }
    std::fs::create_dir_all(&deepest).unwrap();
    std::fs::write(deepest.join("leaf"), b"x").unwrap();
    let path = root.path().to_path_buf();
    // A recursive walk needs far more than 64 KiB for 1500 levels; an iterative one does not.
    let usage = std::thread::Builder::new()
        .stack_size(64 * 1024)
        .spawn(move || dir_usage(&path))
        .unwrap()
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(usage.inodes, depth + 2);
}

#[test]
fn test_measure_skips_entries_vanishing_mid_walk() {
    let root = tempfile::tempdir().unwrap();
    let doomed = root.path().join("doomed");
    std::fs::create_dir(&doomed).unwrap();
    std::fs::write(doomed.join("f1"), vec![5u8; 8192]).unwrap();
    std::fs::write(doomed.join("f2"), vec![5u8; 8192]).unwrap();
    let mut calls = 0;
    // Removes `doomed` after it was listed in the root but before it is read itself.
    let mut remove_on_second_dir = || {
        calls += 1;
        if calls == 2 {
            std::fs::remove_dir_all(&doomed).unwrap();
        }
        false
    };
    let usage = measure(root.path(), &mut remove_on_second_dir)
        .unwrap()
        .unwrap();
    assert_eq!(calls, 2);
    // The root and the (now gone) directory's own inode, none of its files.
    assert_eq!(usage.inodes, 2);
}

#[test]
fn test_measure_cancelled_returns_none() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("a")).unwrap();
    assert_eq!(measure(root.path(), &mut || true).unwrap(), None);
}

#[test]
fn test_vanished_kinds() {
    assert!(vanished(&io::Error::from_raw_os_error(libc::ENOENT)));
    assert!(vanished(&io::Error::from_raw_os_error(libc::ENOTDIR)));
    assert!(vanished(&io::Error::from_raw_os_error(libc::ESTALE)));
    assert!(!vanished(&io::Error::from_raw_os_error(libc::EACCES)));
}

/// A tmpfs mounted inside the tree is skipped (`du -x`). Needs root; the mount lives in a
/// private mount namespace of a helper thread, so nothing outside sees it or needs cleanup.
#[test]
fn test_dir_usage_skips_other_mounts() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mountpoint = root.path().join("mnt");
    std::fs::create_dir(&mountpoint).unwrap();
    let before = dir_usage(root.path()).unwrap();
    let path = root.path().to_path_buf();
    let inside = std::thread::spawn(move || {
        use nix::mount::{MsFlags, mount};
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .unwrap();
        mount(
            Some("tmpfs"),
            &mountpoint,
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        std::fs::write(mountpoint.join("hidden"), vec![6u8; 128 * 1024]).unwrap();
        std::fs::create_dir(mountpoint.join("dir")).unwrap();
        dir_usage(&path).unwrap()
    })
    .join()
    .unwrap();
    // The tmpfs root (mount point) and what is in it are not counted at all.
    assert_eq!(inside.inodes, before.inodes - 1);
    assert_eq!(
        inside.bytes,
        before.bytes - allocated(&root.path().join("mnt"))
    );
}
