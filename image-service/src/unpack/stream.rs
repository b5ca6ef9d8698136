//! Moving the uncompressed tar stream from the thread that decompresses it through the thread
//! that hashes it to the thread that writes its entries, in recycled chunks.

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};

use sha2::{Digest, Sha256};

/// Size of one chunk of the uncompressed stream.
const CHUNK: usize = 512 * 1024;
/// Chunks decompressed ahead of the writer.
const AHEAD: usize = 3;

/// What the decompressing side saw of the whole stream.
pub(super) struct Pumped {
    /// sha256 of the uncompressed stream.
    pub(super) digest: [u8; 32],
    pub(super) bytes: u64,
}

enum Msg {
    /// A chunk and the length of its valid prefix.
    Data(Vec<u8>, usize),
    /// The stream could not be read; the reason goes to the caller from the pumping side.
    Failed,
}

/// Runs a three-stage pipeline: this thread reads `source`, a scoped thread hashes and counts
/// the stream, and another runs `consume` over it. `consume` must read to the end of the
/// stream (or fail) for the digest to cover it all. Returns the pumping result and what
/// `consume` returned; a panic of a stage is resumed here.
pub(super) fn pipeline<S: Read, T: Send>(
    mut source: S,
    consume: impl FnOnce(ChunkReader) -> T + Send,
) -> io::Result<(io::Result<Pumped>, T)> {
    let (read_tx, read_rx) = sync_channel(AHEAD);
    let (hashed_tx, hashed_rx) = sync_channel(AHEAD);
    let (free_tx, free_rx) = sync_channel(2 * AHEAD + 2);
    std::thread::scope(|scope| {
        let reader = ChunkReader {
            full: hashed_rx,
            free: free_tx,
            chunk: Vec::new(),
            len: 0,
            pos: 0,
        };
        let consumer = std::thread::Builder::new()
            .name("layer-write".to_owned())
            .spawn_scoped(scope, move || consume(reader))?;
        let hasher = std::thread::Builder::new()
            .name("layer-hash".to_owned())
            .spawn_scoped(scope, move || hash(&read_rx, &hashed_tx))?;
        let pumped = pump(&mut source, &read_tx, &free_rx);
        // Closing the channel is the end of the stream, or for a failed pump, its failure.
        drop(read_tx);
        let hashed = hasher.join();
        let consumed = consumer.join();
        let (hashed, consumed) = match (hashed, consumed) {
            (Ok(hashed), Ok(consumed)) => (hashed, consumed),
            (Err(panic), _) | (_, Err(panic)) => std::panic::resume_unwind(panic),
        };
        Ok((pumped.map(|()| hashed), consumed))
    })
}

/// Reads `source` into chunks until its end, or until the next stage is gone.
fn pump(
    source: &mut impl Read,
    full: &SyncSender<Msg>,
    free: &Receiver<Vec<u8>>,
) -> io::Result<()> {
    loop {
        let mut chunk = match free.try_recv() {
            Ok(chunk) => chunk,
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => vec![0; CHUNK],
        };
        let mut len = 0;
        while len < chunk.len() {
            match source.read(&mut chunk[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    // The consumer may already be gone; the error is ours to report either way.
                    let _ = full.send(Msg::Failed);
                    return Err(err);
                }
            }
        }
        let end = len < chunk.len();
        if len > 0 && full.send(Msg::Data(chunk, len)).is_err() {
            // The consumer stopped early: it failed, and its error is the one to report.
            return Ok(());
        }
        if end {
            return Ok(());
        }
    }
}

/// Hashes and counts the chunks on their way from the pump to the consumer.
fn hash(from: &Receiver<Msg>, to: &SyncSender<Msg>) -> Pumped {
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    while let Ok(msg) = from.recv() {
        if let Msg::Data(chunk, len) = &msg {
            hasher.update(&chunk[..*len]);
            bytes += *len as u64;
        }
        if to.send(msg).is_err() {
            break;
        }
    }
    Pumped {
        digest: hasher.finalize().into(),
        bytes,
    }
}

/// The consuming side: reads the chunks in order and hands emptied ones back for reuse.
pub(super) struct ChunkReader {
    full: Receiver<Msg>,
    free: SyncSender<Vec<u8>>,
    chunk: Vec<u8>,
    len: usize,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.len {
            match self.full.recv() {
                Ok(Msg::Data(chunk, len)) => {
                    let done = std::mem::replace(&mut self.chunk, chunk);
                    if !done.is_empty() {
                        let _ = self.free.try_send(done);
                    }
                    self.len = len;
                    self.pos = 0;
                }
                Ok(Msg::Failed) => {
                    return Err(io::Error::other("layer stream failed"));
                }
                // The sender is dropped after the last chunk.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.len - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
