//! The streaming helper's end of libcontainer's console socket: a unix socket it listens
//! on, through which the command's process sends the master of the pseudo-terminal it
//! made in the container (SCM_RIGHTS), before it runs the command.
//!
//! libcontainer links `<state dir>/tenant-tty-<random>.sock` to the console socket path it
//! is given and connects through that link, from the helper itself, before it forks. The
//! helper's socket is `<state dir>/corral-exec-tty-<pid>.sock` and libcontainer gets the
//! relative name, so the link resolves in the state directory whatever its length (a unix
//! socket address holds 107 bytes; the helper binds through `/proc/self/fd/<dir fd>/`).

use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};

use super::tenant::{CONSOLE_SOCKET_PREFIX, Failure, failed};

/// How long the master may take to arrive once the command runs (it was sent before).
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(2);
/// The EOF character when the terminal's settings cannot be read (^D).
const DEFAULT_EOF: u8 = 0x04;

/// A console socket bound in a container's state directory; its file is removed on drop.
pub(crate) struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
    name: String,
}

impl ConsoleSocket {
    /// Binds and listens on `<container_dir>/corral-exec-tty-<pid>.sock`.
    pub(crate) fn bind(container_dir: &Path) -> Result<ConsoleSocket, Failure> {
        let name = format!("{CONSOLE_SOCKET_PREFIX}{}.sock", std::process::id());
        let path = container_dir.join(&name);
        // Left by an earlier helper with our pid that was killed before it removed it.
        let _ = std::fs::remove_file(&path);
        let dir = std::fs::File::open(container_dir)
            .map_err(|err| failed(format!("open {}: {err}", container_dir.display())))?;
        let short = format!("/proc/self/fd/{}/{name}", dir.as_raw_fd());
        let listener = UnixListener::bind(&short)
            .map_err(|err| failed(format!("bind console socket {}: {err}", path.display())))?;
        listener
            .set_nonblocking(true)
            .map_err(|err| failed(format!("console socket: {err}")))?;
        Ok(ConsoleSocket {
            listener,
            path,
            name,
        })
    }

    /// The path to give libcontainer (relative to the state directory).
    pub(crate) fn relative_path(&self) -> PathBuf {
        PathBuf::from(&self.name)
    }

    /// Removes the socket's file (the listener keeps its queued connection).
    pub(crate) fn unlink(&self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// Takes the connection libcontainer made and the terminal master sent on it. Called
    /// once the command runs: both were made before.
    pub(crate) fn receive_master(&self) -> Result<OwnedFd, Failure> {
        let (stream, _) = self.listener.accept().map_err(|err| {
            failed(format!(
                "no connection on the console socket {}: {err}",
                self.path.display()
            ))
        })?;
        receive_fd(&stream).map_err(|err| failed(format!("receive the terminal: {err}")))
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        self.unlink();
    }
}

/// Receives one descriptor sent with SCM_RIGHTS (close-on-exec); others are closed.
fn receive_fd(stream: &UnixStream) -> io::Result<OwnedFd> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(RECEIVE_TIMEOUT))?;
    let mut data = [0u8; 64];
    let mut iov = [IoSliceMut::new(&mut data)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let message = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let mut received: Vec<OwnedFd> = Vec::new();
    for cmsg in message.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for fd in fds {
                // SAFETY: the kernel installed this descriptor for us; nothing else owns it.
                received.push(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) });
            }
        }
    }
    let mut received = received.into_iter();
    let master = received
        .next()
        .ok_or_else(|| io::Error::other("no descriptor in the console message"))?;
    if !received.as_slice().is_empty() {
        tracing::warn!("extra descriptors on the console socket closed");
    }
    Ok(master)
}

/// The terminal's end-of-file character (VEOF, ^D unless the command changed it).
pub(crate) fn eof_char(master: &impl AsFd) -> u8 {
    // SAFETY: an all-zero termios is a valid value to be overwritten by tcgetattr.
    let mut termios: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: tcgetattr writes into a live termios; a bad fd only fails.
    if unsafe { libc::tcgetattr(master.as_fd().as_raw_fd(), &mut termios) } != 0 {
        return DEFAULT_EOF;
    }
    match termios.c_cc[libc::VEOF] {
        0 => DEFAULT_EOF,
        c => c,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn test_console_socket_receives_a_terminal_master() {
        // A long directory: the socket is bound through /proc/self/fd, under the limit.
        let dir = tempfile::tempdir().unwrap();
        let long = dir.path().join("d".repeat(100));
        std::fs::create_dir(&long).unwrap();
        let socket = ConsoleSocket::bind(&long).unwrap();
        let path = long.join(socket.relative_path());
        assert!(path.exists());

        // What libcontainer does: connect through a link (by a short path: it moves into
        // the directory), send the master, close.
        let link = long.join("tenant-tty-1234.sock");
        std::os::unix::fs::symlink(socket.relative_path(), &link).unwrap();
        let dir_fd = std::fs::File::open(&long).unwrap();
        let short = format!("/proc/self/fd/{}/tenant-tty-1234.sock", dir_fd.as_raw_fd());
        let peer = UnixStream::connect(short).unwrap();
        let pty = nix::pty::openpty(None, None).unwrap();
        let fds = [pty.master.as_raw_fd()];
        let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
        let iov = [io::IoSlice::new(b"/dev/ptmx")];
        nix::sys::socket::sendmsg::<()>(peer.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
            .unwrap();
        drop(peer);

        socket.unlink();
        assert!(!path.exists());
        let master = socket.receive_master().unwrap();
        assert_eq!(eof_char(&master), 0x04);
        // The received master drives the same terminal.
        super::super::executor::set_window_size(
            master.as_raw_fd(),
            crate::exec::TerminalSize {
                width: 120,
                height: 50,
            },
        )
        .unwrap();
        let mut size = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes a winsize into a live value.
        let rc = unsafe { libc::ioctl(pty.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
        assert_eq!(rc, 0);
        assert_eq!((size.ws_col, size.ws_row), (120, 50));
        drop(socket);
    }

    #[test]
    fn test_console_socket_without_a_master_fails() {
        let dir = tempfile::tempdir().unwrap();
        let socket = ConsoleSocket::bind(dir.path()).unwrap();
        let (_, message) = socket.receive_master().unwrap_err();
        assert!(message.contains("no connection"), "{message}");
        let peer = UnixStream::connect(dir.path().join(socket.relative_path())).unwrap();
        drop(peer);
        let (_, message) = socket.receive_master().unwrap_err();
        assert!(message.contains("receive the terminal"), "{message}");
        drop(socket);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
