//! What the agent and the exec helper say to each other: the helper's command line, and the
//! report it writes on its stdout (a JSON line, then the captured output).

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The default cap on each captured stream (stdout, stderr); output beyond it is read and
/// dropped.
pub const DEFAULT_MAX_OUTPUT: usize = 16 * 1024 * 1024;
/// The longest report header line accepted (it holds lengths and an error message).
pub const MAX_HEADER: usize = 64 * 1024;

/// One exec: run `cmd` in the running container `id` whose libcontainer state lives in
/// `<state_root>/<id>`, for at most `timeout`.
///
/// On the helper's command line (after `exec`):
/// `[--timeout-ms N] [--max-output N] <state_root> <container-id> -- <cmd>...`
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
        }
    }

    /// The helper's arguments after `exec`.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::with_capacity(8 + self.cmd.len());
        if let Some(timeout) = self.timeout {
            args.push("--timeout-ms".into());
            // At least 1 ms: 0 would mean "no timeout" to nobody, but be explicit.
            let ms = timeout.as_millis().max(1);
            args.push(ms.to_string().into());
        }
        args.push("--max-output".into());
        args.push(self.max_output.to_string().into());
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
                }
                Some("--max-output") => {
                    let n = number("--max-output", rest.next())?;
                    max_output = usize::try_from(n).map_err(|_| "--max-output is too large")?;
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
        Ok(ExecRequest {
            state_root: PathBuf::from(state_root),
            id,
            cmd,
            timeout,
            max_output,
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
