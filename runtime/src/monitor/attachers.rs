//! The monitor's side of attach (see [`super::attach`] for the wire format): the connected
//! attachers with their buffers, and the container's stdin they write to.
//!
//! Nothing here blocks. Output for an attacher is queued and written when its socket can
//! take it; an attacher that falls more than [`MAX_QUEUED`] behind is disconnected, so a slow
//! client never stalls the container or its log. Stdin from the attacher that owns it is
//! written when the container's stdin can take it; until then that attacher is not read
//! (the back-pressure reaches the client through its socket).

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::errno::Errno;
use nix::poll::PollFlags;

use super::attach::{FrameKind, MAX_PAYLOAD, decode_size, push_frame, take_frame};
use crate::exec::{TerminalSize, eof_char, set_window_size};
use crate::logs::Stream;

/// Attachers connected at once; more are refused.
pub(super) const MAX_ATTACHERS: usize = 16;
/// Output queued for one attacher before it is disconnected.
const MAX_QUEUED: usize = 1024 * 1024;
/// Bytes read from an attacher per readiness.
const READ_CHUNK: usize = 16 * 1024;

/// What an attacher asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Wants {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

struct Attacher {
    stream: UnixStream,
    stdout: bool,
    stderr: bool,
    /// Its stdin frames go to the container.
    owns_stdin: bool,
    /// Received bytes not yet parsed into frames.
    input: Vec<u8>,
    /// Frames not yet written to it.
    output: Vec<u8>,
    /// Close once `output` is written (the container exited).
    closing: bool,
    /// Disconnected or to be disconnected; removed by [`Attachers::sweep`].
    gone: bool,
}

/// The attachers and the container's stdin.
pub(super) struct Attachers {
    list: Vec<Attacher>,
    /// Where stdin goes: the pipe's write end, or a duplicate of the terminal's master.
    stdin: Option<OwnedFd>,
    /// The terminal's master (a duplicate), for resizes.
    terminal: Option<OwnedFd>,
    stdin_once: bool,
    /// Bytes for the container's stdin not written yet.
    pending: Vec<u8>,
    /// `stdin_once` took effect: no attacher gets stdin any more, and `stdin` is closed
    /// once `pending` is written.
    stdin_done: bool,
}

impl Attachers {
    /// `stdin` is the container's stdin (nonblocking), if it has one; `terminal` its
    /// terminal's master, if it has one.
    pub(super) fn new(
        stdin: Option<OwnedFd>,
        terminal: Option<OwnedFd>,
        stdin_once: bool,
    ) -> Attachers {
        Attachers {
            list: Vec::new(),
            stdin,
            terminal,
            stdin_once,
            pending: Vec::new(),
            stdin_done: false,
        }
    }

    /// Adds an attacher on `stream` (already answered). Refused when the limit is reached or
    /// it wants stdin that another attacher owns. Asking for stdin when the container has
    /// none (or `stdin_once` closed it) attaches without stdin.
    pub(super) fn add(&mut self, stream: UnixStream, wants: Wants) -> Result<(), String> {
        self.check(wants)?;
        stream
            .set_nonblocking(true)
            .map_err(|err| format!("set the attach connection nonblocking: {err}"))?;
        let owns_stdin = wants.stdin && self.stdin_available();
        self.list.push(Attacher {
            stream,
            stdout: wants.stdout,
            stderr: wants.stderr,
            owns_stdin,
            input: Vec::new(),
            output: Vec::new(),
            closing: false,
            gone: false,
        });
        Ok(())
    }

    /// Whether an attacher asking for `wants` would be accepted.
    pub(super) fn check(&self, wants: Wants) -> Result<(), String> {
        let live = self.list.iter().filter(|a| !a.gone);
        if live.clone().count() >= MAX_ATTACHERS {
            return Err(format!("too many attachers (at most {MAX_ATTACHERS})"));
        }
        if wants.stdin && self.stdin_available() && live.clone().any(|a| a.owns_stdin) {
            return Err("the container's stdin is attached by another client".to_string());
        }
        Ok(())
    }

    fn stdin_available(&self) -> bool {
        self.stdin.is_some() && !self.stdin_done
    }

    /// The attachers' descriptors and the events to wait for, by index.
    pub(super) fn poll_entries(&self) -> impl Iterator<Item = (usize, BorrowedFd<'_>, PollFlags)> {
        let stdin_busy = !self.pending.is_empty();
        self.list
            .iter()
            .enumerate()
            .filter(|(_, a)| !a.gone)
            .map(move |(i, a)| {
                let mut flags = PollFlags::empty();
                if !(a.owns_stdin && stdin_busy) {
                    flags |= PollFlags::POLLIN;
                }
                if !a.output.is_empty() {
                    flags |= PollFlags::POLLOUT;
                }
                (i, a.stream.as_fd(), flags)
            })
    }

    /// The container's stdin, when there is something to write to it.
    pub(super) fn stdin_poll_entry(&self) -> Option<BorrowedFd<'_>> {
        match &self.stdin {
            Some(fd) if !self.pending.is_empty() => Some(fd.as_fd()),
            _ => None,
        }
    }

    /// Attacher `i` is ready (`revents`).
    pub(super) fn ready(&mut self, i: usize, revents: PollFlags) {
        if self.list.get(i).is_none_or(|a| a.gone) {
            return;
        }
        if revents.intersects(PollFlags::POLLOUT | PollFlags::POLLERR | PollFlags::POLLHUP) {
            self.flush(i);
        }
        if revents.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
            self.read(i);
        }
    }

    /// The container's stdin can take more.
    pub(super) fn stdin_writable(&mut self) {
        self.write_stdin();
    }

    /// Queues output of the container for every attacher that wants it (a terminal's
    /// output is `Stdout`).
    pub(super) fn broadcast(&mut self, stream: Stream, data: &[u8]) {
        let kind = match stream {
            Stream::Stdout => FrameKind::Stdout,
            Stream::Stderr => FrameKind::Stderr,
        };
        for i in 0..self.list.len() {
            let attacher = &mut self.list[i];
            let wanted = match stream {
                Stream::Stdout => attacher.stdout,
                Stream::Stderr => attacher.stderr,
            };
            if attacher.gone || !wanted {
                continue;
            }
            for piece in data.chunks(MAX_PAYLOAD) {
                push_frame(&mut attacher.output, kind, piece);
            }
            self.flush(i);
            let attacher = &mut self.list[i];
            if !attacher.gone && attacher.output.len() > MAX_QUEUED {
                tracing::warn!(
                    queued = attacher.output.len(),
                    "an attacher does not keep up with the output, disconnecting it"
                );
                self.detach(i);
            }
        }
    }

    /// The container exited and its output was drained: every attacher is closed once its
    /// queued output is written.
    pub(super) fn close_all(&mut self) {
        for i in 0..self.list.len() {
            self.list[i].closing = true;
            self.flush(i);
        }
    }

    /// Removes the attachers that are gone.
    pub(super) fn sweep(&mut self) {
        self.list.retain(|a| !a.gone);
    }

    /// Writes what attacher `i` has queued; closes it when done and closing.
    fn flush(&mut self, i: usize) {
        let attacher = &mut self.list[i];
        while !attacher.output.is_empty() {
            match attacher.stream.write(&attacher.output) {
                Ok(0) => break,
                Ok(n) => {
                    attacher.output.drain(..n);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.detach(i);
                    return;
                }
            }
        }
        let attacher = &mut self.list[i];
        if attacher.output.is_empty() {
            attacher.output = Vec::new();
            if attacher.closing {
                self.detach(i);
            }
        }
    }

    /// Reads what attacher `i` sent and acts on its frames.
    fn read(&mut self, i: usize) {
        let mut chunk = [0u8; READ_CHUNK];
        let attacher = &mut self.list[i];
        let ended = match attacher.stream.read(&mut chunk) {
            Ok(0) => true,
            Ok(n) => {
                attacher.input.extend_from_slice(&chunk[..n]);
                false
            }
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return;
            }
            Err(_) => true,
        };
        loop {
            match take_frame(&mut self.list[i].input) {
                Ok(Some((kind, payload))) => self.frame(i, kind, payload),
                Ok(None) => break,
                Err(err) => {
                    tracing::warn!(error = %err, "bad frame from an attacher, disconnecting it");
                    self.detach(i);
                    return;
                }
            }
        }
        if ended {
            self.detach(i);
        }
    }

    fn frame(&mut self, i: usize, kind: FrameKind, payload: Vec<u8>) {
        match kind {
            FrameKind::Stdin if self.list[i].owns_stdin && self.stdin.is_some() => {
                self.pending.extend_from_slice(&payload);
                self.write_stdin();
            }
            FrameKind::StdinEnd => self.release_stdin(i),
            FrameKind::Resize => {
                let (Some((width, height)), Some(fd)) = (decode_size(&payload), &self.terminal)
                else {
                    return;
                };
                if width == 0 || height == 0 {
                    return;
                }
                let size = TerminalSize { width, height };
                if let Err(err) = set_window_size(std::os::fd::AsRawFd::as_raw_fd(fd), size) {
                    tracing::debug!(error = %err, "cannot resize the terminal");
                }
            }
            // Stdin of an attacher without it, or output kinds.
            FrameKind::Stdin | FrameKind::Stdout | FrameKind::Stderr => {}
        }
    }

    /// Attacher `i` is done: its stdin (if it owned it) ends, and it is removed at the next
    /// sweep (closing its connection).
    fn detach(&mut self, i: usize) {
        self.release_stdin(i);
        let attacher = &mut self.list[i];
        attacher.gone = true;
        attacher.output = Vec::new();
        attacher.input = Vec::new();
    }

    /// The stdin of attacher `i` ended: with `stdin_once`, the container's stdin ends too.
    fn release_stdin(&mut self, i: usize) {
        if !std::mem::take(&mut self.list[i].owns_stdin) {
            return;
        }
        if !self.stdin_once || self.stdin.is_none() {
            return;
        }
        self.stdin_done = true;
        if let Some(terminal) = &self.terminal {
            // A terminal stays open for output: its end-of-file character ends the input.
            self.pending.push(eof_char(terminal));
        }
        self.write_stdin();
    }

    /// Writes pending stdin until the container's stdin would block.
    fn write_stdin(&mut self) {
        let Some(fd) = &self.stdin else {
            self.pending = Vec::new();
            return;
        };
        while !self.pending.is_empty() {
            match nix::unistd::write(fd, &self.pending) {
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => {}
                Err(err) => {
                    // EPIPE: the container closed its stdin; nothing more can go there.
                    tracing::debug!(error = %err, "container stdin closed");
                    self.pending = Vec::new();
                    self.stdin = None;
                    return;
                }
            }
        }
        self.pending = Vec::new();
        if self.stdin_done {
            self.stdin = None;
        }
    }
}
