//! What the agent and the exec helper say to each other: the helper's command line, and the
//! report it writes (ExecSync: on its stdout, a JSON line, then the captured output;
//! streaming: on fd 4, the JSON line alone).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The default cap on each captured stream (stdout, stderr); output beyond it is read and
/// dropped.
pub const DEFAULT_MAX_OUTPUT: usize = 16 * 1024 * 1024;
/// The longest report header line accepted (it holds lengths and an error message).
pub const MAX_HEADER: usize = 64 * 1024;

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalSize {
    /// Columns.
    pub width: u16,
    /// Rows.
    pub height: u16,
}

impl TerminalSize {
    /// Parses `WxH` (the `--size` option).
    pub fn parse_option(text: &str) -> Option<TerminalSize> {
        let (width, height) = text.split_once('x')?;
        Some(TerminalSize {
            width: width.parse().ok()?,
            height: height.parse().ok()?,
        })
    }

    /// Parses one resize line without its newline: `<width> <height>`.
    pub fn parse_line(line: &str) -> Option<TerminalSize> {
        let mut fields = line.split_ascii_whitespace();
        let size = TerminalSize {
            width: fields.next()?.parse().ok()?,
            height: fields.next()?.parse().ok()?,
        };
        fields.next().is_none().then_some(size)
    }

    /// The resize line the agent writes on the helper's fd 3.
    pub fn to_line(self) -> String {
        format!("{} {}\n", self.width, self.height)
    }
}

/// `WxH`, as `--size` takes it.
impl fmt::Display for TerminalSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// The options of a streaming exec (`--stream`): see the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamOptions {
    /// `--tty`: the command gets a pseudo-terminal; the helper relays it.
    pub tty: bool,
    /// `--stdin`: the command reads the helper's stdin (else /dev/null, or no input on the
    /// terminal).
    pub stdin: bool,
    /// `--size WxH`: the terminal's size when the command starts.
    pub size: Option<TerminalSize>,
    /// `--log PATH`: where the helper appends its own log (else it is discarded: its stdout
    /// and stderr belong to the command).
    pub log: Option<PathBuf>,
}

/// One exec: run `cmd` in the running container `id` whose libcontainer state lives in
/// `<state_root>/<id>`, for at most `timeout`.
///
/// On the helper's command line (after `exec`):
/// `[--timeout-ms N] [--max-output N] <state_root> <container-id> -- <cmd>...`, or for a
/// streaming exec
/// `--stream [--tty] [--stdin] [--size WxH] [--log PATH] <state_root> <container-id> -- <cmd>...`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// libcontainer's state root (the monitor config's `state_root`).
    pub state_root: PathBuf,
    /// The container id.
    pub id: String,
    /// The command and its arguments (at least one element).
    pub cmd: Vec<String>,
    /// Kill the command after this long; `None` waits as long as it runs.
    pub timeout: Option<Duration>,
    /// The cap on each captured stream.
    pub max_output: usize,
    /// A streaming exec (no timeout, no capture: `timeout` and `max_output` are unused).
    pub stream: Option<StreamOptions>,
}

impl ExecRequest {
    /// A request with no timeout and the default output cap.
    pub fn new(state_root: impl Into<PathBuf>, id: &str, cmd: Vec<String>) -> ExecRequest {
        ExecRequest {
            state_root: state_root.into(),
            id: id.to_string(),
            cmd,
            timeout: None,
            max_output: DEFAULT_MAX_OUTPUT,
            stream: None,
        }
    }

    /// The helper's arguments after `exec`.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::with_capacity(10 + self.cmd.len());
        if let Some(stream) = &self.stream {
            args.push("--stream".into());
            if stream.tty {
                args.push("--tty".into());
            }
            if stream.stdin {
                args.push("--stdin".into());
            }
            if let Some(size) = stream.size {
                args.push("--size".into());
                args.push(size.to_string().into());
            }
            if let Some(log) = &stream.log {
                args.push("--log".into());
                args.push(log.clone().into_os_string());
            }
        } else {
            if let Some(timeout) = self.timeout {
                args.push("--timeout-ms".into());
                // At least 1 ms: 0 would mean "no timeout" to nobody, but be explicit.
                let ms = timeout.as_millis().max(1);
                args.push(ms.to_string().into());
            }
            args.push("--max-output".into());
            args.push(self.max_output.to_string().into());
        }
        args.push(self.state_root.clone().into_os_string());
        args.push(self.id.clone().into());
        args.push("--".into());
        args.extend(self.cmd.iter().map(OsString::from));
        args
    }

    /// Parses the helper's arguments after `exec`.
    pub fn parse(args: &[OsString]) -> Result<ExecRequest, String> {
        let mut timeout = None;
        let mut max_output = DEFAULT_MAX_OUTPUT;
        // Sync-only and stream-only options seen, to reject mixes.
        let mut sync_option = None;
        let mut stream_option = None;
        let mut is_stream = false;
        let mut stream = StreamOptions::default();
        let mut positional: Vec<&OsStr> = Vec::new();
        let mut rest = args.iter();
        let number = |flag: &str, value: Option<&OsString>| -> Result<u64, String> {
            value
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| format!("{flag} needs a number"))
        };
        let mut cmd = Vec::new();
        while let Some(arg) = rest.next() {
            match arg.to_str() {
                Some("--timeout-ms") => {
                    let ms = number("--timeout-ms", rest.next())?;
                    timeout = (ms > 0).then(|| Duration::from_millis(ms));
                    sync_option = Some("--timeout-ms");
                }
                Some("--max-output") => {
                    let n = number("--max-output", rest.next())?;
                    max_output = usize::try_from(n).map_err(|_| "--max-output is too large")?;
                    sync_option = Some("--max-output");
                }
                Some("--stream") => is_stream = true,
                Some("--tty") => {
                    stream.tty = true;
                    stream_option = Some("--tty");
                }
                Some("--stdin") => {
                    stream.stdin = true;
                    stream_option = Some("--stdin");
                }
                Some("--size") => {
                    let size = rest
                        .next()
                        .and_then(|v| v.to_str())
                        .and_then(TerminalSize::parse_option)
                        .ok_or("--size needs <width>x<height>")?;
                    stream.size = Some(size);
                    stream_option = Some("--size");
                }
                Some("--log") => {
                    let path = rest.next().ok_or("--log needs a path")?;
                    stream.log = Some(PathBuf::from(path));
                    stream_option = Some("--log");
                }
                Some("--") => {
                    for arg in rest.by_ref() {
                        let arg = arg
                            .to_str()
                            .ok_or_else(|| format!("command argument {arg:?} is not UTF-8"))?;
                        cmd.push(arg.to_string());
                    }
                }
                Some(flag) if flag.starts_with("--") => {
                    return Err(format!("unknown option {flag}"));
                }
                _ => positional.push(arg),
            }
        }
        let [state_root, id] = positional.as_slice() else {
            return Err("expected <state_root> <container-id> -- <cmd>...".to_string());
        };
        let id = id
            .to_str()
            .ok_or_else(|| format!("container id {id:?} is not UTF-8"))?
            .to_string();
        if cmd.is_empty() {
            return Err("no command after --".to_string());
        }
        match (is_stream, sync_option, stream_option) {
            (true, Some(option), _) => {
                return Err(format!("{option} does not apply to --stream"));
            }
            (false, _, Some(option)) => return Err(format!("{option} needs --stream")),
            _ => {}
        }
        Ok(ExecRequest {
            state_root: PathBuf::from(state_root),
            id,
            cmd,
            timeout,
            max_output,
            stream: is_stream.then_some(stream),
        })
    }
}

/// Why an exec failed, in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecErrorKind {
    /// The container does not exist or is not running.
    State,
    /// The request was unusable (bad arguments).
    Invalid,
    /// The command ran past its timeout and was killed.
    Timeout,
    /// Starting the command failed (libcontainer's error), or the helper was told to stop.
    Failed,
    /// The command was not found in the container (not on its `PATH`, or no such file).
    /// Only streaming execs report it; ExecSync reports `failed`.
    NotFound,
}

/// The first line the helper writes on its stdout:
///
/// ```text
/// {"ok":true,"exit_code":0,"stdout":6,"stderr":0}      then 6 bytes of stdout, 0 of stderr
/// {"ok":false,"kind":"state","error":"container abc is stopped"}
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecReport {
    /// The command ran and exited.
    pub ok: bool,
    /// On failure: what kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ExecErrorKind>,
    /// On failure: the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The command's exit status; 128 + the signal number if a signal killed it.
    #[serde(default)]
    pub exit_code: i32,
    /// How many bytes of stdout follow the line.
    #[serde(default)]
    pub stdout: usize,
    /// How many bytes of stderr follow stdout.
    #[serde(default)]
    pub stderr: usize,
    /// Stdout went past the cap; the rest was dropped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdout_truncated: bool,
    /// Stderr went past the cap; the rest was dropped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stderr_truncated: bool,
}

impl ExecReport {
    /// A failure report.
    pub fn failed(kind: ExecErrorKind, message: impl Into<String>) -> ExecReport {
        ExecReport {
            ok: false,
            kind: Some(kind),
            error: Some(message.into()),
            ..ExecReport::default()
        }
    }
}

/// The whole report: the header line, stdout, stderr.
pub fn encode_report(report: &ExecReport, stdout: &[u8], stderr: &[u8]) -> Vec<u8> {
    let mut header = report.clone();
    header.stdout = stdout.len();
    header.stderr = stderr.len();
    // Plain struct: serializing cannot fail; fall back to a valid failure line all the same.
    let mut out = serde_json::to_vec(&header)
        .unwrap_or_else(|_| br#"{"ok":false,"kind":"failed","error":"encode"}"#.to_vec());
    out.push(b'\n');
    out.reserve(stdout.len() + stderr.len());
    out.extend_from_slice(stdout);
    out.extend_from_slice(stderr);
    out
}

/// A decoded report with its output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedReport {
    pub report: ExecReport,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Splits what the helper wrote into the header and the two outputs.
pub fn decode_report(mut data: Vec<u8>) -> Result<DecodedReport, String> {
    let end = data
        .iter()
        .take(MAX_HEADER)
        .position(|&b| b == b'\n')
        .ok_or_else(|| {
            if data.is_empty() {
                "no report".to_string()
            } else {
                "report without a header line".to_string()
            }
        })?;
    let report: ExecReport =
        serde_json::from_slice(&data[..end]).map_err(|err| format!("bad report: {err}"))?;
    let body = end + 1;
    let want = report
        .stdout
        .checked_add(report.stderr)
        .ok_or("bad report lengths")?;
    if data.len() - body != want {
        return Err(format!(
            "report announces {want} bytes of output, {} follow",
            data.len() - body
        ));
    }
    let stderr = data.split_off(body + report.stdout);
    data.drain(..body);
    Ok(DecodedReport {
        report,
        stdout: data,
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn test_exec_request_args_roundtrip() {
        let mut request = ExecRequest::new(
            "/run/corral/libcontainer",
            "abc",
            vec!["sh".into(), "-c".into(), "echo --; exit 3".into()],
        );
        assert_eq!(ExecRequest::parse(&request.to_args()).unwrap(), request);
        request.timeout = Some(Duration::from_secs(2));
        request.max_output = 10;
        let args = request.to_args();
        assert_eq!(
            args,
            os(&[
                "--timeout-ms",
                "2000",
                "--max-output",
                "10",
                "/run/corral/libcontainer",
                "abc",
                "--",
                "sh",
                "-c",
                "echo --; exit 3"
            ])
        );
        assert_eq!(ExecRequest::parse(&args).unwrap(), request);
    }

    #[test]
    fn test_exec_request_parse_rejects_bad_args() {
        let cases = [
            (vec!["/s", "id", "--"], "no command"),
            (vec!["/s", "--", "true"], "expected"),
            (
                vec!["--timeout-ms", "x", "/s", "id", "--", "true"],
                "number",
            ),
            (vec!["--bogus", "/s", "id", "--", "true"], "unknown option"),
        ];
        for (args, want) in cases {
            let err = ExecRequest::parse(&os(&args)).unwrap_err();
            assert!(err.contains(want), "{args:?}: {err}");
        }
        let zero = ExecRequest::parse(&os(&["--timeout-ms", "0", "/s", "id", "--", "true"]));
        assert_eq!(zero.unwrap().timeout, None);
    }

    #[test]
    fn test_stream_request_args_roundtrip() {
        let mut request = ExecRequest::new("/s", "abc", vec!["sh".into()]);
        request.stream = Some(StreamOptions::default());
        let args = request.to_args();
        assert_eq!(args, os(&["--stream", "/s", "abc", "--", "sh"]));
        assert_eq!(ExecRequest::parse(&args).unwrap(), request);
        request.stream = Some(StreamOptions {
            tty: true,
            stdin: true,
            size: Some(TerminalSize {
                width: 100,
                height: 40,
            }),
            log: Some(PathBuf::from("/b/monitor.log")),
        });
        let args = request.to_args();
        assert_eq!(
            args,
            os(&[
                "--stream",
                "--tty",
                "--stdin",
                "--size",
                "100x40",
                "--log",
                "/b/monitor.log",
                "/s",
                "abc",
                "--",
                "sh"
            ])
        );
        assert_eq!(ExecRequest::parse(&args).unwrap(), request);
    }

    #[test]
    fn test_stream_request_parse_rejects_mixed_and_bad_options() {
        let cases = [
            (
                vec!["--tty", "/s", "id", "--", "sh"],
                "--tty needs --stream",
            ),
            (
                vec!["--stdin", "/s", "id", "--", "sh"],
                "--stdin needs --stream",
            ),
            (
                vec!["--stream", "--timeout-ms", "5", "/s", "id", "--", "sh"],
                "--timeout-ms does not apply",
            ),
            (
                vec!["--max-output", "5", "--stream", "/s", "id", "--", "sh"],
                "--max-output does not apply",
            ),
            (
                vec!["--stream", "--size", "100", "/s", "id", "--", "sh"],
                "--size",
            ),
            (
                vec!["--stream", "--size", "0x", "/s", "id", "--", "sh"],
                "--size",
            ),
            (vec!["--stream", "/s", "id", "--log"], "--log needs a path"),
        ];
        for (args, want) in cases {
            let err = ExecRequest::parse(&os(&args)).unwrap_err();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }

    #[test]
    fn test_terminal_size_parsing() {
        let size = TerminalSize {
            width: 120,
            height: 50,
        };
        assert_eq!(TerminalSize::parse_option("120x50"), Some(size));
        assert_eq!(size.to_string(), "120x50");
        assert_eq!(size.to_line(), "120 50\n");
        assert_eq!(TerminalSize::parse_line(" 120 50 "), Some(size));
        for bad in ["", "120", "120 50 1", "-1 50", "70000 50", "a b"] {
            assert_eq!(TerminalSize::parse_line(bad), None, "{bad:?}");
        }
        assert_eq!(TerminalSize::parse_option("120 50"), None);
    }

    #[test]
    fn test_exec_report_roundtrip_with_output() {
        let report = ExecReport {
            ok: true,
            exit_code: 3,
            stderr_truncated: true,
            ..ExecReport::default()
        };
        let data = encode_report(&report, b"out\n{\"x\":1}\n", b"err\n");
        let text = String::from_utf8_lossy(&data);
        assert!(
            text.starts_with(
                r#"{"ok":true,"exit_code":3,"stdout":12,"stderr":4,"stderr_truncated":true}"#
            ),
            "{text}"
        );
        let decoded = decode_report(data).unwrap();
        assert_eq!(decoded.stdout, b"out\n{\"x\":1}\n");
        assert_eq!(decoded.stderr, b"err\n");
        assert_eq!(decoded.report.exit_code, 3);
        assert!(decoded.report.stderr_truncated && !decoded.report.stdout_truncated);
    }

    #[test]
    fn test_exec_report_failure_and_broken_reports() {
        let data = encode_report(
            &ExecReport::failed(ExecErrorKind::State, "container x is stopped"),
            b"",
            b"",
        );
        assert_eq!(
            data,
            b"{\"ok\":false,\"kind\":\"state\",\"error\":\"container x is stopped\",\"exit_code\":0,\"stdout\":0,\"stderr\":0}\n"
        );
        let decoded = decode_report(data).unwrap();
        assert_eq!(decoded.report.kind, Some(ExecErrorKind::State));

        assert!(decode_report(Vec::new()).unwrap_err().contains("no report"));
        assert!(decode_report(b"{\"ok\":true".to_vec()).is_err());
        let short = b"{\"ok\":true,\"stdout\":5,\"stderr\":0}\nabc".to_vec();
        assert!(decode_report(short).unwrap_err().contains("announces 5"));
    }
}
