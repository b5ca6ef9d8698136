//! The rtnetlink socket opened inside a network namespace, and link dumps over it.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, connect, recv,
    send, setsockopt, sockopt,
};
use nix::sys::time::TimeVal;

use super::InterfaceStats;
use super::netlink::{Progress, link_dump_request, parse_datagram};
use crate::Error;

/// Receive buffer. Kernel dump datagrams are at most 32 KiB; a larger one is reported as
/// truncated rather than read wrong.
const RECV_BUFFER: usize = 64 * 1024;
/// How long one receive may wait for the kernel before the read fails.
const RECV_TIMEOUT_SECS: i64 = 5;
/// Datagrams read before a request to finish an abandoned dump, at most.
const MAX_DRAIN: usize = 4096;

/// Interface counters of one network namespace, read over a netlink socket that lives in
/// it. Opening enters the namespace on a short-lived thread; reading works from any thread
/// without entering it. The socket keeps the namespace alive while this value lives.
#[derive(Debug)]
pub struct NetnsCounters {
    path: PathBuf,
    socket: Mutex<Socket>,
}

#[derive(Debug)]
struct Socket {
    fd: OwnedFd,
    seq: u32,
    buffer: Vec<u8>,
}

impl NetnsCounters {
    /// Opens a rtnetlink socket inside the network namespace at `netns_path` (a pinned
    /// namespace file or `/proc/<pid>/ns/net`). A helper thread opens the file, `setns`
    /// into it, creates the socket and exits: no other thread changes namespace. Needs
    /// CAP_SYS_ADMIN.
    pub fn open(netns_path: &Path) -> Result<NetnsCounters, Error> {
        let path = netns_path.to_path_buf();
        let thread_path = path.clone();
        let thread = std::thread::Builder::new()
            .name("corral-netns-socket".to_string())
            .spawn(move || socket_in_netns(&thread_path))
            .map_err(|source| Error::SpawnThread {
                what: "netns socket",
                source,
            })?;
        let fd = thread.join().map_err(|_| Error::ThreadPanicked {
            what: "netns socket",
        })??;
        tracing::debug!(netns = %path.display(), "opened netlink socket in network namespace");
        Ok(NetnsCounters {
            path,
            socket: Mutex::new(Socket {
                fd,
                seq: 0,
                buffer: vec![0; RECV_BUFFER],
            }),
        })
    }

    /// The namespace file this was opened from.
    pub fn netns_path(&self) -> &Path {
        &self.path
    }

    /// Dumps the namespace's links and returns the counters of each, `lo` included.
    /// Blocking (one netlink round trip per ~32 KiB of reply); concurrent calls take turns.
    pub fn read(&self) -> Result<Vec<InterfaceStats>, Error> {
        let mut socket = self.socket.lock().unwrap_or_else(PoisonError::into_inner);
        let socket = &mut *socket;
        // A dump abandoned by an earlier failed read would make the kernel refuse a new one
        // (EBUSY) until its replies are read: read them off first.
        drain(&socket.fd, &mut socket.buffer)?;
        socket.seq = socket.seq.wrapping_add(1);
        let seq = socket.seq;
        let request = link_dump_request(seq);
        let sent = retry_eintr(|| send(socket.fd.as_raw_fd(), &request, MsgFlags::empty()))
            .map_err(|source| Error::Netlink { op: "send", source })?;
        if sent != request.len() {
            return Err(Error::NetlinkMalformed {
                reason: format!("sent {sent} of {} request bytes", request.len()),
            });
        }
        let mut links = Vec::new();
        loop {
            let len = retry_eintr(|| {
                recv(
                    socket.fd.as_raw_fd(),
                    &mut socket.buffer,
                    MsgFlags::MSG_TRUNC,
                )
            })
            .map_err(|source| Error::Netlink { op: "recv", source })?;
            let datagram = socket
                .buffer
                .get(..len)
                .ok_or_else(|| Error::NetlinkMalformed {
                    reason: format!("reply of {len} bytes does not fit {RECV_BUFFER}"),
                })?;
            if parse_datagram(datagram, seq, &mut links)? == Progress::Done {
                return Ok(links);
            }
        }
    }
}

/// Runs on the helper thread: enter the namespace, create the socket there.
fn socket_in_netns(path: &Path) -> Result<OwnedFd, Error> {
    let netns = File::open(path).map_err(|source| Error::OpenNetns {
        path: path.to_path_buf(),
        source,
    })?;
    setns(&netns, CloneFlags::CLONE_NEWNET).map_err(|source| Error::Setns {
        path: path.to_path_buf(),
        source,
    })?;
    let netlink = |op| move |source| Error::Netlink { op, source };
    let fd = nix::sys::socket::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .map_err(netlink("socket"))?;
    let kernel = NetlinkAddr::new(0, 0);
    // Port id 0: the kernel picks one.
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(netlink("bind"))?;
    // Connected to the kernel, the socket takes no unicast from other processes, so every
    // reply read is the kernel's.
    connect(fd.as_raw_fd(), &kernel).map_err(netlink("connect"))?;
    setsockopt(
        &fd,
        sockopt::ReceiveTimeout,
        &TimeVal::new(RECV_TIMEOUT_SECS, 0),
    )
    .map_err(netlink("set receive timeout"))?;
    Ok(fd)
}

/// Reads and drops whatever is queued, without waiting.
fn drain(fd: &OwnedFd, buffer: &mut [u8]) -> Result<(), Error> {
    for _ in 0..MAX_DRAIN {
        match recv(fd.as_raw_fd(), buffer, MsgFlags::MSG_DONTWAIT) {
            Ok(len) => tracing::debug!(len, "dropping leftover netlink reply"),
            Err(Errno::EAGAIN) => return Ok(()),
            // ENOBUFS: replies were dropped for lack of room; what is left is still stale.
            Err(Errno::EINTR | Errno::ENOBUFS) => {}
            Err(source) => {
                return Err(Error::Netlink {
                    op: "drain",
                    source,
                });
            }
        }
    }
    Err(Error::NetlinkMalformed {
        reason: format!("more than {MAX_DRAIN} leftover replies"),
    })
}

fn retry_eintr<T>(mut call: impl FnMut() -> nix::Result<T>) -> nix::Result<T> {
    loop {
        match call() {
            Err(Errno::EINTR) => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests;
