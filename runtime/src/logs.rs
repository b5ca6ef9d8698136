//! Container logs in the CRI format, the format kubelet and `crictl logs` read:
//!
//! ```text
//! 2024-05-01T10:20:30.123456789Z stdout F a full line
//! 2024-05-01T10:20:30.123457000Z stderr P the first 16 KiB of a longer line
//! ```
//!
//! One record per line: an RFC 3339 timestamp in UTC with nanoseconds, the stream, a tag and
//! the content. `F` marks a full line; `P` a partial one: a line longer than `max_line_bytes`
//! is cut into `P` records followed by an `F` record with the rest, and output that ends
//! without a newline (the stream closed) is written as a final `P` record. This follows
//! containerd's CRI logger (`internal/cri/io/logger.go`): a `\r\n` ending is stripped like
//! `\n`, and an empty line is an `F` record with empty content. Unlike Go's RFC3339Nano we
//! always print nine fraction digits (a fixed width; kubelet parses both).
//!
//! kubelet rotates a log by renaming the file and then asking for a reopen; [`LogWriter::reopen`]
//! opens a new file at the same path. Writes use `O_APPEND` and one `writev` per record, and
//! nothing is fsynced per line.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::Error;

/// The default longest line written as one record (kubelet and containerd use 16 KiB).
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 * 1024;

/// A partial line buffer larger than this is released once its line is written, so a
/// monitor that once saw a long line does not keep the memory.
const KEEP_BUFFER_BYTES: usize = 4096;

/// Length of a timestamp written by [`format_timestamp`]: `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
pub const TIMESTAMP_LEN: usize = 30;

/// The stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The container's standard output (and a terminal's output).
    Stdout,
    /// The container's standard error.
    Stderr,
}

impl Stream {
    /// The name written in the log line.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// Writes a container's output to a CRI log file.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    file: File,
    max_line_bytes: usize,
    /// The start of a line that has not ended yet, per stream.
    pending: [Vec<u8>; 2],
}

impl LogWriter {
    /// Opens (creating if needed) the log file at `path` for appending. A `max_line_bytes` of
    /// 0 means [`DEFAULT_MAX_LINE_BYTES`].
    pub fn open(path: &Path, max_line_bytes: usize) -> Result<Self, Error> {
        let max_line_bytes = if max_line_bytes == 0 {
            DEFAULT_MAX_LINE_BYTES
        } else {
            max_line_bytes
        };
        Ok(LogWriter {
            path: path.to_path_buf(),
            file: open_log(path)?,
            max_line_bytes,
            pending: [Vec::new(), Vec::new()],
        })
    }

    /// The path of the log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens a new file at the same path, after kubelet renamed the old one. A partial line
    /// that was pending goes to the new file.
    pub fn reopen(&mut self) -> Result<(), Error> {
        self.file = open_log(&self.path)?;
        Ok(())
    }

    /// Takes output read from `stream`: writes every line it completes and keeps the start
    /// of an unfinished line (at most `max_line_bytes`) for the next call. A failed write
    /// loses that record only; the first error is returned after the rest was tried.
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> Result<(), Error> {
        let mut result = Ok(());
        let mut rest = data;
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            result = result.and(self.segment(stream, &rest[..newline], true));
            rest = &rest[newline + 1..];
        }
        if !rest.is_empty() {
            result = result.and(self.segment(stream, rest, false));
        }
        result
    }

    /// The stream reached its end: writes an unfinished line as a partial record.
    pub fn finish(&mut self, stream: Stream) -> Result<(), Error> {
        let pending = std::mem::take(&mut self.pending[stream.index()]);
        if pending.is_empty() {
            return Ok(());
        }
        self.record(stream, b'P', &pending, &[])
    }

    /// Adds a piece of a line; `ends_line` when a newline followed it.
    fn segment(&mut self, stream: Stream, data: &[u8], ends_line: bool) -> Result<(), Error> {
        let mut pending = std::mem::take(&mut self.pending[stream.index()]);
        let mut data = data;
        if ends_line {
            // "...\r\n" ends a line like "...\n" (containerd strips the '\r' too).
            if let Some(stripped) = data.strip_suffix(b"\r") {
                data = stripped;
            } else if data.is_empty() && pending.last() == Some(&b'\r') {
                pending.pop();
            }
        }
        let mut result = Ok(());
        while pending.len() + data.len() > self.max_line_bytes {
            let take = self.max_line_bytes.saturating_sub(pending.len());
            let (head, tail) = data.split_at(take);
            result = result.and(self.record(stream, b'P', &pending, head));
            pending.clear();
            data = tail;
        }
        if ends_line {
            result = result.and(self.record(stream, b'F', &pending, data));
            pending.clear();
        } else {
            pending.extend_from_slice(data);
        }
        if pending.is_empty() && pending.capacity() > KEEP_BUFFER_BYTES {
            pending = Vec::new();
        }
        self.pending[stream.index()] = pending;
        result
    }

    /// Writes one record whose content is `first` followed by `second`.
    fn record(
        &mut self,
        stream: Stream,
        tag: u8,
        first: &[u8],
        second: &[u8],
    ) -> Result<(), Error> {
        let mut header = [0u8; TIMESTAMP_LEN + 10];
        header[..TIMESTAMP_LEN].copy_from_slice(&format_timestamp(SystemTime::now()));
        let mut len = TIMESTAMP_LEN;
        for part in [b" ", stream.as_str().as_bytes(), b" ", &[tag], b" "] {
            header[len..len + part.len()].copy_from_slice(part);
            len += part.len();
        }
        let mut slices = [
            IoSlice::new(&header[..len]),
            IoSlice::new(first),
            IoSlice::new(second),
            IoSlice::new(b"\n"),
        ];
        write_all_vectored(&mut self.file, &mut slices).map_err(|source| Error::WriteLog {
            path: self.path.clone(),
            source,
        })
    }
}

fn open_log(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|source| Error::OpenLog {
            path: path.to_path_buf(),
            source,
        })
}

/// `Write::write_all_vectored` is not stable yet.
fn write_all_vectored(file: &mut File, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(written) => IoSlice::advance_slices(&mut slices, written),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Formats `time` as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (UTC, RFC 3339 with nanoseconds).
/// Times before 1970 are written as the epoch.
pub fn format_timestamp(time: SystemTime) -> [u8; TIMESTAMP_LEN] {
    let mut out = [0u8; TIMESTAMP_LEN];
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let second_of_day = secs % 86_400;
    let fields: [(u64, usize, u8); 7] = [
        (year, 4, b'-'),
        (month, 2, b'-'),
        (day, 2, b'T'),
        (second_of_day / 3600, 2, b':'),
        (second_of_day / 60 % 60, 2, b':'),
        (second_of_day % 60, 2, b'.'),
        (u64::from(since.subsec_nanos()), 9, b'Z'),
    ];
    let mut at = 0;
    for (value, width, separator) in fields {
        let mut value = value;
        for slot in out[at..at + width].iter_mut().rev() {
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
        out[at + width] = separator;
        at += width + 1;
    }
    out
}

/// The timestamp of `time` as a string (see [`format_timestamp`]).
pub fn timestamp_string(time: SystemTime) -> String {
    String::from_utf8_lossy(&format_timestamp(time)).into_owned()
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    /// The records of a log file without their timestamps, checking each timestamp's shape.
    fn records(path: &Path) -> Vec<String> {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
        text.lines()
            .map(|line| {
                let (ts, rest) = line.split_at(TIMESTAMP_LEN);
                let b = ts.as_bytes();
                assert_eq!(
                    (b[4], b[10], b[19], b[29]),
                    (b'-', b'T', b'.', b'Z'),
                    "{ts}"
                );
                assert!(rest.starts_with(' '), "{line:?}");
                rest[1..].to_string()
            })
            .collect()
    }

    fn writer(max: usize) -> (tempfile::TempDir, LogWriter) {
        let dir = tempfile::tempdir().unwrap();
        let log = LogWriter::open(&dir.path().join("0.log"), max).unwrap();
        (dir, log)
    }

    #[test]
    fn test_format_timestamp_epoch_and_known_dates() {
        assert_eq!(timestamp_string(at(0, 0)), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            timestamp_string(at(951_782_400, 5)),
            "2000-02-29T00:00:00.000000005Z"
        );
        assert_eq!(
            timestamp_string(at(1_700_000_000, 123_456_789)),
            "2023-11-14T22:13:20.123456789Z"
        );
        assert_eq!(
            timestamp_string(at(4_102_444_799, 999_999_999)),
            "2099-12-31T23:59:59.999999999Z"
        );
    }

    #[test]
    fn test_format_timestamp_before_epoch_is_epoch() {
        let before = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(timestamp_string(before), "1970-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn test_civil_from_days_matches_day_by_day_count() {
        // Walk 400 years day by day (a full Gregorian cycle) against a simple calendar.
        let (mut y, mut m, mut d) = (1970u64, 1u64, 1u64);
        for days in 0..146_097u64 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
            d += 1;
            if d > len[(m - 1) as usize] {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn test_log_full_lines_and_streams() {
        let (_dir, mut log) = writer(0);
        log.write(Stream::Stdout, b"out\n\nsecond\r\n").unwrap();
        log.write(Stream::Stderr, b"err\n").unwrap();
        assert_eq!(
            records(log.path()),
            [
                "stdout F out",
                "stdout F ",
                "stdout F second",
                "stderr F err"
            ]
        );
    }

    #[test]
    fn test_log_line_across_writes_is_one_record() {
        let (_dir, mut log) = writer(0);
        log.write(Stream::Stdout, b"hel").unwrap();
        log.write(Stream::Stderr, b"e1").unwrap();
        log.write(Stream::Stdout, b"lo\nwor").unwrap();
        log.write(Stream::Stderr, b"\n").unwrap();
        log.write(Stream::Stdout, b"ld\r").unwrap();
        log.write(Stream::Stdout, b"\n").unwrap();
        assert_eq!(
            records(log.path()),
            ["stdout F hello", "stderr F e1", "stdout F world"]
        );
    }

    #[test]
    fn test_log_long_line_split_into_partials() {
        let (_dir, mut log) = writer(4);
        log.write(Stream::Stdout, b"abcdefghij\nabcd\nab").unwrap();
        log.write(Stream::Stdout, b"cdef\n").unwrap();
        assert_eq!(
            records(log.path()),
            [
                "stdout P abcd",
                "stdout P efgh",
                "stdout F ij",
                "stdout F abcd",
                "stdout P abcd",
                "stdout F ef"
            ]
        );
    }

    #[test]
    fn test_log_crlf_at_limit_is_one_full_record() {
        let (_dir, mut log) = writer(4);
        log.write(Stream::Stdout, b"abcd\r\n").unwrap();
        assert_eq!(records(log.path()), ["stdout F abcd"]);
    }

    #[test]
    fn test_log_unterminated_tail_is_partial_at_finish() {
        let (_dir, mut log) = writer(0);
        log.write(Stream::Stderr, b"done\nno newline").unwrap();
        log.finish(Stream::Stderr).unwrap();
        log.finish(Stream::Stdout).unwrap();
        assert_eq!(
            records(log.path()),
            ["stderr F done", "stderr P no newline"]
        );
    }

    #[test]
    fn test_log_reopen_writes_new_file_after_rename() {
        let (dir, mut log) = writer(0);
        log.write(Stream::Stdout, b"before\nhalf").unwrap();
        let rotated = dir.path().join("0.log.1");
        std::fs::rename(log.path(), &rotated).unwrap();
        log.reopen().unwrap();
        log.write(Stream::Stdout, b" line\nafter\n").unwrap();
        assert_eq!(records(&rotated), ["stdout F before"]);
        assert_eq!(
            records(log.path()),
            ["stdout F half line", "stdout F after"]
        );
    }

    #[test]
    fn test_log_appends_to_existing_file() {
        let (_dir, mut log) = writer(0);
        log.write(Stream::Stdout, b"one\n").unwrap();
        let mut second = LogWriter::open(log.path(), 0).unwrap();
        second.write(Stream::Stdout, b"two\n").unwrap();
        log.write(Stream::Stdout, b"three\n").unwrap();
        assert_eq!(
            records(log.path()),
            ["stdout F one", "stdout F two", "stdout F three"]
        );
    }

    #[test]
    fn test_log_long_line_buffer_released() {
        let (_dir, mut log) = writer(0);
        log.write(Stream::Stdout, &[b'x'; 10_000]).unwrap();
        log.write(Stream::Stdout, b"\n").unwrap();
        assert_eq!(log.pending[0].capacity(), 0);
    }

    #[test]
    fn test_log_open_missing_dir_is_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = LogWriter::open(&dir.path().join("no/such/0.log"), 0).unwrap_err();
        assert!(matches!(err, Error::OpenLog { .. }), "{err}");
    }
}
