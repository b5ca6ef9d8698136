#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::mpsc;

use super::*;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn own_netns() -> PathBuf {
    std::fs::read_link("/proc/thread-self/ns/net").unwrap()
}

fn lo(links: &[InterfaceStats]) -> &InterfaceStats {
    links
        .iter()
        .find(|link| link.name == "lo")
        .unwrap_or_else(|| panic!("no lo in {links:?}"))
}

#[test]
fn test_open_missing_netns_is_error() {
    let dir = tempfile::tempdir().unwrap();
    let error = NetnsCounters::open(&dir.path().join("gone")).unwrap_err();
    assert!(matches!(error, Error::OpenNetns { .. }), "{error:?}");
}

#[test]
fn test_open_non_netns_file_is_error() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let error = NetnsCounters::open(file.path()).unwrap_err();
    assert!(matches!(error, Error::Setns { .. }), "{error:?}");
}

/// The host namespace through `/proc/self/ns/net`: `lo` is there, its counters only grow
/// compared with `/proc/net/dev` read just before, reads work from other threads and the
/// caller's own namespace is untouched.
#[test]
fn test_read_host_netns_has_lo() {
    if !is_root() {
        return;
    }
    let before = own_netns();
    let proc_lo =
        super::super::parse_proc_net_dev(&std::fs::read_to_string("/proc/net/dev").unwrap())
            .into_iter()
            .find(|link| link.name == "lo")
            .unwrap();
    let counters = Arc::new(NetnsCounters::open(Path::new("/proc/self/ns/net")).unwrap());
    assert_eq!(own_netns(), before);
    let links = counters.read().unwrap();
    let netlink_lo = lo(&links);
    assert!(netlink_lo.rx_packets >= proc_lo.rx_packets);
    assert!(netlink_lo.tx_bytes >= proc_lo.tx_bytes);
    let shared = Arc::clone(&counters);
    let from_thread = std::thread::spawn(move || shared.read().unwrap())
        .join()
        .unwrap();
    assert!(from_thread.iter().any(|link| link.name == "lo"));
    // A second read on the same socket works too (sequence numbers move on).
    assert!(!counters.read().unwrap().is_empty());
}

/// A fresh namespace made by a thread's `unshare`, read after that thread has exited: only
/// the socket keeps it alive, and its `lo` (down) has seen no traffic, unlike the host's.
#[test]
fn test_read_fresh_netns_outlives_its_thread() {
    if !is_root() {
        return;
    }
    let (tid_tx, tid_rx) = mpsc::channel();
    let (exit_tx, exit_rx) = mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET).unwrap();
        tid_tx.send(nix::unistd::gettid()).unwrap();
        let _ = exit_rx.recv();
    });
    let tid = tid_rx.recv().unwrap();
    let path = PathBuf::from(format!("/proc/self/task/{tid}/ns/net"));
    let opened = NetnsCounters::open(&path);
    exit_tx.send(()).unwrap();
    holder.join().unwrap();
    let counters = opened.unwrap();
    let links = counters.read().unwrap();
    let fresh_lo = lo(&links);
    assert_eq!(fresh_lo.rx_packets, 0, "{links:?}");
    assert_eq!(fresh_lo.tx_packets, 0, "{links:?}");
    assert_eq!(counters.netns_path(), path);
}

/// A dump request whose replies were never read (as after a read that failed half-way)
/// does not break the next read.
#[test]
fn test_read_after_abandoned_dump() {
    if !is_root() {
        return;
    }
    let counters = NetnsCounters::open(Path::new("/proc/self/ns/net")).unwrap();
    {
        let socket = counters.socket.lock().unwrap();
        let request = link_dump_request(0xdead);
        send(socket.fd.as_raw_fd(), &request, MsgFlags::empty()).unwrap();
    }
    let links = counters.read().unwrap();
    assert!(links.iter().any(|link| link.name == "lo"));
}
