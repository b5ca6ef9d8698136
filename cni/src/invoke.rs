//! Running one CNI plugin executable: the command and attachment parameters go in `CNI_*`
//! environment variables, the plugin's request configuration on stdin, the result (or a CNI
//! error) comes back on stdout.
//!
//! The API is blocking (`std::process`): the caller runs it on a blocking thread. The plugin
//! runs in its own process group with a clean environment (only `PATH` is kept). Helper
//! threads feed stdin and drain stdout and stderr, so a chatty plugin never blocks on a full
//! pipe; the calling thread waits for stdout to close, then for the exit, until a deadline.
//! A plugin still running at the deadline is killed with its whole process group (SIGKILL)
//! before it is reaped, so the group id cannot have been reused. A descendant that left the
//! group (setsid) and keeps a pipe open can leave a drain thread blocked until it exits; the
//! call itself still returns at the deadline.

use std::fmt;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, ChildStderr, ChildStdout, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use crate::Error;

/// How long one plugin execution may take unless the caller says otherwise.
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// `PATH` for plugins when the agent itself has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The most stdout we accept from a plugin (results are a few KiB).
const MAX_STDOUT: u64 = 8 << 20;

/// How much of stderr (and of unparsable stdout) an error keeps.
const TAIL_BYTES: usize = 4096;

/// How long to wait for the end of stderr once stdout closed and the plugin exited.
const STDERR_GRACE: Duration = Duration::from_millis(200);

/// Attempts to start a plugin whose binary is being written ("text file busy").
const SPAWN_ATTEMPTS: u32 = 6;

/// The CNI operation, passed as `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    /// The value of `CNI_COMMAND`.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `CNI_*` parameters of one execution besides `CNI_COMMAND`. Empty strings are passed as
/// empty variables, as libcni does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginEnv {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`: the network namespace path.
    pub netns: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`: `KEY=VALUE` pairs joined by `;`.
    pub args: String,
    /// `CNI_PATH`: the plugin directories joined by `:`.
    pub path: String,
}

/// The CNI error object a failing plugin prints.
#[derive(Debug, Deserialize)]
struct CniError {
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

/// The answer to VERSION.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct VersionResult {
    supported_versions: Vec<String>,
}

/// What a drain thread hands back.
enum Output {
    Stdout(std::io::Result<Vec<u8>>),
    Stderr(Vec<u8>),
}

/// Runs `binary` with `command`, the parameters in `env` and `stdin` as its standard input,
/// and returns what it printed on stdout. A non-zero exit becomes [`Error::PluginFailed`]
/// when the plugin printed a CNI error (on stdout, or else on stderr), otherwise
/// [`Error::PluginExited`]; a plugin still running after `timeout` is killed with its process
/// group and becomes [`Error::PluginTimeout`].
pub fn exec_plugin(
    binary: &Path,
    command: Command,
    env: &PluginEnv,
    stdin: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, Error> {
    let plugin = plugin_name(binary);
    let started = Instant::now();
    let deadline = started + timeout;
    let mut child = spawn(binary, &plugin, command, env, deadline)?;

    let (tx, rx) = mpsc::channel();
    if let Err(source) = start_io_threads(&mut child, stdin.to_vec(), tx) {
        kill_group(&mut child, &plugin);
        return Err(Error::PluginIo {
            plugin,
            command,
            source,
        });
    }

    // Both pipes close when the plugin exits (unless something it started keeps them).
    let mut stdout = None;
    let mut stderr = None;
    while stdout.is_none() {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Output::Stdout(out)) => stdout = Some(out),
            Ok(Output::Stderr(err)) => stderr = Some(err),
            Err(_) => break,
        }
    }
    let (status, stdout) = match (wait_until(&mut child, deadline), stdout) {
        (Ok(Some(status)), Some(stdout)) => (status, stdout),
        (Err(source), _) => {
            kill_group(&mut child, &plugin);
            return Err(Error::PluginIo {
                plugin,
                command,
                source,
            });
        }
        // Still running, or exited while something it started holds stdout open.
        _ => {
            kill_group(&mut child, &plugin);
            tracing::warn!(plugin = %plugin, command = %command, ?timeout, "cni plugin timed out, killed");
            return Err(Error::PluginTimeout {
                plugin,
                command,
                timeout,
            });
        }
    };
    let stdout = stdout.map_err(|source| Error::PluginIo {
        plugin: plugin.clone(),
        command,
        source,
    })?;
    if stderr.is_none() {
        // Only for the error message: give it a moment, not the whole timeout.
        let until = deadline.min(Instant::now() + STDERR_GRACE);
        if let Ok(Output::Stderr(err)) =
            rx.recv_timeout(until.saturating_duration_since(Instant::now()))
        {
            stderr = Some(err);
        }
    }
    let stderr = tail(&stderr.unwrap_or_default());
    tracing::debug!(
        plugin = %plugin,
        command = %command,
        elapsed_ms = started.elapsed().as_millis() as u64,
        status = %status,
        stderr = %stderr,
        "cni plugin finished"
    );
    if status.success() {
        return Ok(stdout);
    }
    Err(plugin_error(plugin, command, status, &stdout, stderr))
}

/// Asks a plugin which CNI spec versions it supports (`VERSION`).
pub fn plugin_versions(
    binary: &Path,
    cni_version: &str,
    cni_path: &str,
    timeout: Duration,
) -> Result<Vec<String>, Error> {
    let env = PluginEnv {
        path: cni_path.to_string(),
        ..PluginEnv::default()
    };
    let stdin = serde_json::json!({ "cniVersion": cni_version }).to_string();
    let out = exec_plugin(binary, Command::Version, &env, stdin.as_bytes(), timeout)?;
    let parsed: VersionResult =
        serde_json::from_slice(&out).map_err(|e| Error::InvalidPluginOutput {
            plugin: plugin_name(binary),
            command: Command::Version,
            reason: e.to_string(),
        })?;
    Ok(parsed.supported_versions)
}

/// Parses a plugin's stdout as a JSON object (the result of ADD).
pub(crate) fn parse_json_output(
    binary: &Path,
    command: Command,
    stdout: &[u8],
) -> Result<Value, Error> {
    let invalid = |reason: String| Error::InvalidPluginOutput {
        plugin: plugin_name(binary),
        command,
        reason,
    };
    match serde_json::from_slice::<Value>(stdout) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err(invalid("not a json object".into())),
        Err(e) if stdout.iter().all(u8::is_ascii_whitespace) => {
            Err(invalid(format!("no output ({e})")))
        }
        Err(e) => Err(invalid(format!("{e}: {}", tail(stdout)))),
    }
}

/// The plugin's name for messages: its file name.
pub(crate) fn plugin_name(binary: &Path) -> String {
    binary
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| binary.display().to_string())
}

fn spawn(
    binary: &Path,
    plugin: &str,
    command: Command,
    env: &PluginEnv,
    deadline: Instant,
) -> Result<Child, Error> {
    let path_var = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    let mut attempt = 0;
    loop {
        attempt += 1;
        let spawned = std::process::Command::new(binary)
            .env_clear()
            .env("PATH", &path_var)
            .env("CNI_COMMAND", command.as_str())
            .env("CNI_CONTAINERID", &env.container_id)
            .env("CNI_NETNS", &env.netns)
            .env("CNI_IFNAME", &env.ifname)
            .env("CNI_ARGS", &env.args)
            .env("CNI_PATH", &env.path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout kills whatever it started too.
            .process_group(0)
            .spawn();
        match spawned {
            Ok(child) => return Ok(child),
            // The binary is being written (an upgrade, or a fork elsewhere in this process
            // still holds a write descriptor): wait a little and try again, as libcni does.
            Err(e)
                if e.raw_os_error() == Some(nix::errno::Errno::ETXTBSY as i32)
                    && attempt < SPAWN_ATTEMPTS
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20 * u64::from(attempt)));
            }
            Err(source) => {
                return Err(Error::SpawnPlugin {
                    plugin: plugin.to_string(),
                    command,
                    path: binary.to_path_buf(),
                    source,
                });
            }
        }
    }
}

/// Starts the helper threads: one writes the request to the plugin's stdin and closes it (a
/// plugin that exits without reading makes the write fail with EPIPE, which is ignored: the
/// exit status tells what happened); two read stdout (up to [`MAX_STDOUT`]) and stderr (its
/// last [`TAIL_BYTES`]) to their ends and send them on `tx`.
fn start_io_threads(
    child: &mut Child,
    input: Vec<u8>,
    tx: mpsc::Sender<Output>,
) -> std::io::Result<()> {
    let thread = |name: &str| std::thread::Builder::new().name(format!("cni-{name}"));
    if let Some(mut pipe) = child.stdin.take() {
        thread("stdin").spawn(move || {
            let _ = pipe.write_all(&input);
        })?;
    }
    let stdout = child.stdout.take();
    let stdout_tx = tx.clone();
    thread("stdout").spawn(move || {
        let result = match stdout {
            Some(pipe) => read_capped(pipe),
            None => Ok(Vec::new()),
        };
        let _ = stdout_tx.send(Output::Stdout(result));
    })?;
    let stderr = child.stderr.take();
    thread("stderr").spawn(move || {
        let tail = match stderr {
            Some(pipe) => read_tail(pipe),
            None => Vec::new(),
        };
        let _ = tx.send(Output::Stderr(tail));
    })?;
    Ok(())
}

/// Reads `pipe` to its end, keeping only the last [`TAIL_BYTES`].
fn read_tail(mut pipe: ChildStderr) -> Vec<u8> {
    let mut kept = Vec::with_capacity(TAIL_BYTES);
    let mut chunk = [0u8; 4096];
    loop {
        match pipe.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                kept.extend_from_slice(&chunk[..n]);
                if kept.len() > TAIL_BYTES {
                    kept.drain(..kept.len() - TAIL_BYTES);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    kept
}

fn read_capped(mut pipe: ChildStdout) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    (&mut pipe).take(MAX_STDOUT + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_STDOUT {
        // Keep draining so the plugin does not block on a full pipe.
        let _ = std::io::copy(&mut pipe, &mut std::io::sink());
        return Err(std::io::Error::other(format!(
            "plugin wrote more than {MAX_STDOUT} bytes to stdout"
        )));
    }
    Ok(buf)
}

/// Waits for the child to exit until `deadline`. The output pipes are closed by now in the
/// usual case, so the first look normally finds the exit status; otherwise look again with a
/// short, growing pause.
fn wait_until(child: &mut Child, deadline: Instant) -> std::io::Result<Option<ExitStatus>> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Kills the plugin's process group, then reaps the plugin. The plugin leads the group and
/// is normally not reaped yet, so the group id is still ours. (When it already exited while
/// something it started holds stdout open, that is normally a member of its group, which
/// keeps the id from being reused.)
fn kill_group(child: &mut Child, plugin: &str) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let group = nix::unistd::Pid::from_raw(pid);
        if let Err(errno) = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL) {
            tracing::debug!(plugin = %plugin, pid, %errno, "kill cni plugin process group");
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn plugin_error(
    plugin: String,
    command: Command,
    status: ExitStatus,
    stdout: &[u8],
    stderr: String,
) -> Error {
    // The spec says stdout; some plugins print the error object on stderr.
    let parsed = serde_json::from_slice::<CniError>(stdout)
        .ok()
        .or_else(|| serde_json::from_str::<CniError>(stderr.trim()).ok());
    match parsed {
        Some(err) => Error::PluginFailed {
            plugin,
            command,
            code: err.code,
            msg: err.msg,
            details: err.details,
            stderr,
        },
        None => Error::PluginExited {
            plugin,
            command,
            status: describe_status(status),
            stdout: tail(stdout),
            stderr,
        },
    }
}

fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// The last [`TAIL_BYTES`] of `bytes` as text.
fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(TAIL_BYTES);
    String::from_utf8_lossy(&bytes[start..]).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{env_of, env_var, write_script};

    fn env() -> PluginEnv {
        PluginEnv {
            container_id: "c1".into(),
            netns: "/run/netns/pod".into(),
            ifname: "eth0".into(),
            args: "IgnoreUnknown=1;K8S_POD_NAME=web".into(),
            path: "/opt/cni/bin:/usr/lib/cni".into(),
        }
    }

    #[test]
    fn test_exec_plugin_clean_env_and_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let rec = dir.path().display();
        let plugin = write_script(
            dir.path(),
            "echoer",
            &format!(
                "env > {rec}/ADD.echoer.env\necho \"[$(cat)]\" >&2\ncat <<'X'\n{{\"cniVersion\":\"1.0.0\"}}\nX\n"
            ),
        );
        let out = exec_plugin(
            &plugin,
            Command::Add,
            &env(),
            b"{}",
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(
            parse_json_output(&plugin, Command::Add, &out).unwrap()["cniVersion"],
            "1.0.0"
        );
        let seen = env_of(dir.path(), "ADD", "echoer");
        assert_eq!(env_var(&seen, "CNI_COMMAND"), Some("ADD"));
        assert_eq!(env_var(&seen, "CNI_CONTAINERID"), Some("c1"));
        assert_eq!(env_var(&seen, "CNI_NETNS"), Some("/run/netns/pod"));
        assert_eq!(env_var(&seen, "CNI_IFNAME"), Some("eth0"));
        assert_eq!(
            env_var(&seen, "CNI_ARGS"),
            Some("IgnoreUnknown=1;K8S_POD_NAME=web")
        );
        assert_eq!(
            env_var(&seen, "CNI_PATH"),
            Some("/opt/cni/bin:/usr/lib/cni")
        );
        assert!(env_var(&seen, "PATH").is_some());
        // Only PATH, the CNI variables and what the shell sets for itself.
        for (key, _) in &seen {
            assert!(
                key.starts_with("CNI_")
                    || ["PATH", "PWD", "SHLVL", "_", "OLDPWD"].contains(&key.as_str()),
                "unexpected variable {key} in the plugin environment"
            );
        }
    }

    #[test]
    fn test_exec_plugin_cni_error_is_typed() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = write_script(
            dir.path(),
            "failer",
            "cat >/dev/null\necho 'some log line' >&2\n\
             echo '{\"cniVersion\":\"1.0.0\",\"code\":7,\"msg\":\"invalid network config\",\"details\":\"subnet too small\"}'\nexit 1\n",
        );
        let err = exec_plugin(
            &plugin,
            Command::Add,
            &env(),
            b"{}",
            Duration::from_secs(10),
        )
        .unwrap_err();
        match &err {
            Error::PluginFailed {
                plugin,
                command,
                code,
                msg,
                details,
                stderr,
            } => {
                assert_eq!(plugin, "failer");
                assert_eq!(*command, Command::Add);
                assert_eq!(*code, 7);
                assert_eq!(msg, "invalid network config");
                assert_eq!(details, "subnet too small");
                assert_eq!(stderr, "some log line");
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert_eq!(err.plugin_code(), Some(7));
        assert!(err.to_string().contains("invalid network config"), "{err}");
    }

    #[test]
    fn test_exec_plugin_crash_without_error_json() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = write_script(dir.path(), "crasher", "echo 'panic: oops' >&2\nexit 2\n");
        let err = exec_plugin(
            &plugin,
            Command::Del,
            &env(),
            b"{}",
            Duration::from_secs(10),
        )
        .unwrap_err();
        match &err {
            Error::PluginExited { status, stderr, .. } => {
                assert_eq!(status, "exit status 2");
                assert_eq!(stderr, "panic: oops");
            }
            other => panic!("unexpected error {other:?}"),
        }
    }

    #[test]
    fn test_exec_plugin_timeout_kills_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("sleeper.pid");
        let plugin = write_script(
            dir.path(),
            "sleeper",
            &format!("sleep 30 &\necho $! > {}\nwait\n", pid_file.display()),
        );
        let timeout = Duration::from_millis(500);
        let started = Instant::now();
        let err = exec_plugin(&plugin, Command::Add, &env(), b"{}", timeout).unwrap_err();
        let elapsed = started.elapsed();
        assert!(matches!(err, Error::PluginTimeout { .. }), "{err:?}");
        assert!(
            elapsed >= timeout,
            "returned before the timeout: {elapsed:?}"
        );
        assert!(
            elapsed < timeout + Duration::from_secs(3),
            "took {elapsed:?}"
        );
        // The plugin's own child (same process group) is gone too.
        let pid = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .to_string();
        let stat = format!("/proc/{pid}/stat");
        let gone = (0..100).any(|_| {
            let alive = std::fs::read_to_string(&stat).is_ok_and(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
            });
            if alive {
                std::thread::sleep(Duration::from_millis(20));
            }
            !alive
        });
        assert!(gone, "the plugin's child {pid} survived the timeout");
    }

    #[test]
    fn test_exec_plugin_child_holding_stderr_does_not_delay() {
        let dir = tempfile::tempdir().unwrap();
        // Ignores a large stdin, leaves a background child holding stderr, exits 0.
        let plugin = write_script(
            dir.path(),
            "leaver",
            "sleep 2 >/dev/null </dev/null &\necho '{}'\n",
        );
        let big = vec![b' '; 1 << 20];
        let started = Instant::now();
        let out =
            exec_plugin(&plugin, Command::Del, &env(), &big, Duration::from_secs(10)).unwrap();
        assert_eq!(String::from_utf8_lossy(&out).trim(), "{}");
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn test_exec_plugin_missing_binary() {
        let err = exec_plugin(
            Path::new("/nonexistent/corral-plugin"),
            Command::Add,
            &env(),
            b"{}",
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(err, Error::SpawnPlugin { .. }), "{err:?}");
    }

    #[test]
    fn test_plugin_versions_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = write_script(
            dir.path(),
            "versioned",
            "[ \"$CNI_COMMAND\" = VERSION ] || exit 9\ncat >/dev/null\n\
             echo '{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[\"0.4.0\",\"1.0.0\"]}'\n",
        );
        let versions =
            plugin_versions(&plugin, "1.0.0", "/opt/cni/bin", Duration::from_secs(10)).unwrap();
        assert_eq!(versions, vec!["0.4.0", "1.0.0"]);
    }
}
