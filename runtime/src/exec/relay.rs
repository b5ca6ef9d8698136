//! The streaming helper's terminal relay (its stdin to the pty master, the master to its
//! stdout) and its resize reader (fd 3). Nonblocking descriptors driven by the helper's
//! poll loop; each direction holds at most one chunk in flight, so a slow reader on one
//! side slows the writer on the other (no unbounded buffering).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::poll::PollFlags;

use super::console::eof_char;
use super::executor::set_window_size;
use super::protocol::TerminalSize;
use super::tenant::set_nonblocking;

/// Bytes moved per `read`.
const CHUNK: usize = 32 * 1024;
/// The longest resize line accepted; longer garbage is dropped.
const MAX_RESIZE_LINE: usize = 64;

/// A relay descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The pty master.
    Master,
    /// The helper's stdin (from the agent).
    Input,
    /// The helper's stdout (to the agent).
    Output,
}

/// Bytes read, not yet all written.
#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    pos: usize,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.is_empty() {
            self.clear();
        }
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.pos = 0;
    }

    /// One read from `fd` into the buffer: `Ok(0)` at EOF.
    fn fill(&mut self, fd: &OwnedFd) -> nix::Result<usize> {
        let start = self.buf.len();
        self.buf.resize(start + CHUNK, 0);
        let result = nix::unistd::read(fd, &mut self.buf[start..]);
        self.buf.truncate(start + *result.as_ref().unwrap_or(&0));
        result
    }
}

/// Copies between the agent's pipes and the pty master.
pub(crate) struct Relay {
    /// `None` once the terminal's output ended (EIO: no process holds the slave).
    master: Option<OwnedFd>,
    /// `None` without `--stdin`, after EOF, or once input stopped.
    input: Option<OwnedFd>,
    /// `None` once the agent closed it (the output is then read and dropped).
    output: Option<OwnedFd>,
    to_master: Pending,
    to_output: Pending,
    /// Stdin ended: this EOF character is still to be written to the master.
    eof: Option<u8>,
}

impl Relay {
    pub(crate) fn new(
        master: OwnedFd,
        input: Option<OwnedFd>,
        output: OwnedFd,
    ) -> std::io::Result<Relay> {
        set_nonblocking(&master)?;
        set_nonblocking(&output)?;
        if let Some(input) = &input {
            set_nonblocking(input)?;
        }
        Ok(Relay {
            master: Some(master),
            input,
            output: Some(output),
            to_master: Pending::default(),
            to_output: Pending::default(),
            eof: None,
        })
    }

    pub(crate) fn master(&self) -> Option<BorrowedFd<'_>> {
        self.master.as_ref().map(AsFd::as_fd)
    }

    /// What to poll for now.
    pub(crate) fn interest(&self) -> Vec<(Role, BorrowedFd<'_>, PollFlags)> {
        let mut wanted = Vec::with_capacity(3);
        if let Some(master) = &self.master {
            let mut events = PollFlags::empty();
            if self.to_output.is_empty() {
                events |= PollFlags::POLLIN;
            }
            if !self.to_master.is_empty() || self.eof.is_some() {
                events |= PollFlags::POLLOUT;
            }
            if !events.is_empty() {
                wanted.push((Role::Master, master.as_fd(), events));
            }
            if let Some(input) = &self.input {
                if self.to_master.is_empty() && self.eof.is_none() {
                    wanted.push((Role::Input, input.as_fd(), PollFlags::POLLIN));
                }
            }
        }
        if let Some(output) = &self.output {
            if !self.to_output.is_empty() {
                wanted.push((Role::Output, output.as_fd(), PollFlags::POLLOUT));
            }
        }
        wanted
    }

    /// Moves what `role`'s readiness allows.
    pub(crate) fn on_ready(&mut self, role: Role, revents: PollFlags) {
        match role {
            Role::Master => {
                if revents.intersects(PollFlags::POLLOUT | PollFlags::POLLERR) {
                    self.write_master();
                }
                if revents.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                    self.read_master();
                }
            }
            Role::Input => self.read_input(),
            Role::Output => self.write_output(),
        }
    }

    /// The command exited: no more input.
    pub(crate) fn stop_input(&mut self) {
        self.input = None;
        self.to_master.clear();
        self.eof = None;
    }

    /// The terminal's output ended and all of it was written (or dropped).
    pub(crate) fn finished(&self) -> bool {
        self.master.is_none() && self.to_output.is_empty()
    }

    fn read_input(&mut self) {
        let Some(input) = &self.input else {
            return;
        };
        match self.to_master.fill(input) {
            Ok(0) => {
                // The client closed stdin: EOF on the terminal, as typing ^D at the start
                // of a line gives it (closing the master would hang the terminal up and
                // lose the command's remaining output).
                self.input = None;
                self.eof = self.master.as_ref().map(eof_char);
            }
            Ok(_) => self.write_master(),
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(err) => {
                tracing::warn!(error = %err, "reading the exec's stdin failed");
                self.input = None;
                self.eof = self.master.as_ref().map(eof_char);
            }
        }
    }

    fn write_master(&mut self) {
        let Some(master) = &self.master else {
            return;
        };
        while !self.to_master.is_empty() {
            match nix::unistd::write(master, self.to_master.data()) {
                Ok(n) => self.to_master.consume(n),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return,
                Err(err) => {
                    tracing::debug!(error = %err, "writing to the terminal failed");
                    self.stop_input();
                    return;
                }
            }
        }
        if let Some(eof) = self.eof {
            match nix::unistd::write(master, &[eof]) {
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                _ => self.eof = None,
            }
        }
    }

    fn read_master(&mut self) {
        let Some(master) = &self.master else {
            return;
        };
        if !self.to_output.is_empty() {
            return;
        }
        match self.to_output.fill(master) {
            // EIO: no process holds the slave any more.
            Ok(0) | Err(Errno::EIO) => {
                self.master = None;
                self.stop_input();
            }
            Ok(_) => {
                if self.output.is_none() {
                    self.to_output.clear();
                } else {
                    self.write_output();
                }
            }
            Err(Errno::EAGAIN | Errno::EINTR) => {}
            Err(err) => {
                tracing::warn!(error = %err, "reading the terminal failed");
                self.master = None;
                self.stop_input();
            }
        }
    }

    fn write_output(&mut self) {
        let Some(output) = &self.output else {
            self.to_output.clear();
            return;
        };
        while !self.to_output.is_empty() {
            match nix::unistd::write(output, self.to_output.data()) {
                Ok(n) => self.to_output.consume(n),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return,
                Err(err) => {
                    // EPIPE: the agent closed stdout; the terminal is still drained.
                    tracing::debug!(error = %err, "writing the exec's stdout failed");
                    self.output = None;
                    self.to_output.clear();
                    return;
                }
            }
        }
    }
}

/// Reads `<width> <height>\n` lines from the resize pipe and applies them to the terminal.
pub(crate) struct ResizeReader {
    fd: OwnedFd,
    line: Vec<u8>,
}

impl ResizeReader {
    pub(crate) fn new(fd: OwnedFd) -> ResizeReader {
        if let Err(err) = set_nonblocking(&fd) {
            tracing::warn!(error = %err, "resize pipe stays blocking");
        }
        ResizeReader {
            fd,
            line: Vec::new(),
        }
    }

    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Reads what is there and applies each complete line to `master` (without a terminal,
    /// resizes are read and ignored). `false` once the pipe ended.
    pub(crate) fn read_and_apply(&mut self, master: Option<BorrowedFd<'_>>) -> bool {
        let mut chunk = [0u8; 512];
        let n = match nix::unistd::read(&self.fd, &mut chunk) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(Errno::EAGAIN | Errno::EINTR) => return true,
            Err(err) => {
                tracing::warn!(error = %err, "reading the resize pipe failed");
                return false;
            }
        };
        self.line.extend_from_slice(&chunk[..n]);
        for size in take_sizes(&mut self.line) {
            if let Some(master) = master {
                if let Err(err) = set_window_size(master.as_raw_fd(), size) {
                    tracing::warn!(error = %err, %size, "resizing the terminal failed");
                }
            }
        }
        true
    }
}

/// Takes the complete lines out of `buf` and parses them; bad lines, and a partial line
/// longer than any size line, are dropped with a warning.
fn take_sizes(buf: &mut Vec<u8>) -> Vec<TerminalSize> {
    let mut sizes = Vec::new();
    while let Some(end) = buf.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = buf.drain(..=end).collect();
        let text = String::from_utf8_lossy(&line[..end]);
        match TerminalSize::parse_line(&text) {
            Some(size) => sizes.push(size),
            None => tracing::warn!(line = %text, "bad resize line ignored"),
        }
    }
    if buf.len() > MAX_RESIZE_LINE {
        tracing::warn!("overlong resize line dropped");
        buf.clear();
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(width: u16, height: u16) -> TerminalSize {
        TerminalSize { width, height }
    }

    #[test]
    fn test_take_sizes_parses_complete_lines() {
        let mut buf = b"100 40\nbogus\n120 50\n80 ".to_vec();
        assert_eq!(take_sizes(&mut buf), [size(100, 40), size(120, 50)]);
        assert_eq!(buf, b"80 ");
        buf.extend_from_slice(b"24\n");
        assert_eq!(take_sizes(&mut buf), [size(80, 24)]);
        assert!(buf.is_empty());
        let mut long = vec![b'1'; 100];
        assert!(take_sizes(&mut long).is_empty());
        assert!(long.is_empty());
    }

    /// Through a real pty: input reaches the terminal, its echo comes back on the output,
    /// and EOF on input is sent as the terminal's EOF character.
    #[test]
    fn test_relay_copies_both_ways_and_sends_eof() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let (input_read, input_write) = nix::unistd::pipe().unwrap();
        let (output_read, output_write) = nix::unistd::pipe().unwrap();
        let mut relay = Relay::new(pty.master, Some(input_read), output_write).unwrap();
        nix::unistd::write(&input_write, b"hi\n").unwrap();
        drop(input_write);
        for _ in 0..100 {
            let ready: Vec<_> = relay
                .interest()
                .into_iter()
                .map(|(role, _, events)| (role, events))
                .collect();
            for (role, events) in ready {
                relay.on_ready(role, events);
            }
            if relay.input.is_none() && relay.eof.is_none() {
                break;
            }
        }
        assert!(relay.input.is_none() && relay.eof.is_none(), "eof sent");
        // The slave (canonical mode) reads the line, then EOF (a read of 0).
        let mut buf = [0u8; 16];
        let n = nix::unistd::read(&pty.slave, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hi\n");
        assert_eq!(nix::unistd::read(&pty.slave, &mut buf).unwrap(), 0);
        // The echo went to the output; then the slave closes and the output ends.
        drop(pty.slave);
        for _ in 0..100 {
            relay.on_ready(Role::Master, PollFlags::POLLIN);
            relay.on_ready(Role::Output, PollFlags::POLLOUT);
            if relay.finished() {
                break;
            }
        }
        assert!(relay.finished());
        drop(relay);
        let mut echoed = Vec::new();
        let mut file = std::fs::File::from(output_read);
        std::io::Read::read_to_end(&mut file, &mut echoed).unwrap();
        assert!(echoed.starts_with(b"hi\r\n"), "{echoed:?}");
    }
}
