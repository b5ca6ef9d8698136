//! Node tests of the streaming exec (root): a real busybox container run by the monitor,
//! execs through `spawn_exec_stream` and the helper (`corral-monitor exec --stream`), as
//! the streaming server will use them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Bundle, MONITOR, process_gone, read_to_end, read_until, require_root};
use corral_runtime::Error;
use corral_runtime::exec::{
    ExecExit, ExecStream, StreamExecRequest, TerminalSize, spawn_exec_stream,
};
use corral_runtime::monitor::{self, Started, Status};
use serde_json::json;
use tokio::io::AsyncWriteExt;

const WAIT: Duration = Duration::from_secs(10);

/// A running container (`sleep 1000`, in its own PID namespace, with /dev/pts), deleted
/// by [`Running::finish`] (or by the bundle's drop if the test fails).
struct Running {
    bundle: Bundle,
    started: Started,
}

impl Running {
    fn start() -> Running {
        Running::start_with(|_| {})
    }

    fn start_with(change: impl FnOnce(&mut serde_json::Value)) -> Running {
        require_root();
        let bundle = Bundle::with(&["sleep", "1000"], true, |spec, _| {
            spec["mounts"].as_array_mut().unwrap().push(json!({
                "destination": "/dev/pts", "type": "devpts", "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]
            }));
            change(spec);
        });
        bundle.add_applets(&["stty", "id"]);
        let started = bundle.spawn().unwrap();
        monitor::start(bundle.socket()).unwrap();
        assert_eq!(
            monitor::state(bundle.socket()).unwrap().status,
            Status::Running
        );
        Running { bundle, started }
    }

    fn request(&self, cmd: &[&str]) -> StreamExecRequest {
        StreamExecRequest::new(
            &self.bundle.config.state_root,
            &self.bundle.config.id,
            cmd.iter().map(|s| s.to_string()).collect(),
        )
    }

    fn exec(&self, request: &StreamExecRequest) -> ExecStream {
        spawn_exec_stream(Path::new(MONITOR), request).unwrap()
    }

    /// The container's processes that are alive (the exec'd ones included), from its
    /// cgroup.
    fn cgroup_processes(&self) -> Vec<i32> {
        let dir = &self.bundle.cgroup_dirs()[0];
        let procs = std::fs::read_to_string(dir.join("ctr/cgroup.procs")).unwrap();
        procs
            .lines()
            .map(|l| l.parse().unwrap())
            .filter(|&pid| !process_gone(pid))
            .collect()
    }

    /// Stops and deletes the container; asserts that nothing is left, and that no exec
    /// left a socket in its state directory.
    fn finish(self) {
        let state_dir = self.bundle.config.state_root.join(&self.bundle.config.id);
        let left: Vec<String> = std::fs::read_dir(&state_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.starts_with("tenant-") || name.starts_with("corral-exec-"))
            .collect();
        assert_eq!(left, Vec::<String>::new(), "exec sockets left");
        monitor::signal(self.bundle.socket(), libc::SIGKILL, true).unwrap();
        self.bundle.wait_exit_record();
        monitor::delete(self.bundle.socket()).unwrap();
        self.bundle.assert_nothing_left(Some(self.started));
    }
}

/// Reads both outputs to their end and waits for the exit.
async fn finish_stream(mut stream: ExecStream) -> (String, String, Result<ExecExit, Error>) {
    let (stdout, stderr) = tokio::join!(
        read_to_end(stream.stdout.take()),
        read_to_end(stream.stderr.take())
    );
    let exit = tokio::time::timeout(WAIT, stream.wait())
        .await
        .expect("no exit");
    (stdout, stderr, exit)
}

/// Host pids of live processes whose command line is `args`.
fn processes(args: &[&str]) -> Vec<i32> {
    let want = args.join("\0") + "\0";
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want.as_bytes())
                && !process_gone(*pid)
        })
        .collect()
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_exec_stream_separates_outputs_and_reports_exit_code() {
    let running = Running::start();
    let request = running.request(&["sh", "-c", "echo out; echo err >&2; exit 3"]);
    let stream = running.exec(&request);
    assert!(stream.stdin.is_none(), "no stdin asked");
    let (stdout, stderr, exit) = finish_stream(stream).await;
    assert_eq!((stdout.as_str(), stderr.as_str()), ("out\n", "err\n"));
    assert_eq!(exit.unwrap(), ExecExit { exit_code: 3 });

    // Without --stdin the command reads /dev/null; a signal's death is 128 + signal.
    let request = running.request(&["sh", "-c", "cat; kill -9 $$"]);
    let (stdout, _, exit) = finish_stream(running.exec(&request)).await;
    assert_eq!((stdout.as_str(), exit.unwrap().exit_code), ("", 137));
    running.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_exec_stream_stdin_reaches_the_command_until_closed() {
    let running = Running::start();
    let mut request = running.request(&["cat"]);
    request.stdin = true;
    let mut stream = running.exec(&request);
    let mut stdin = stream.stdin.take().unwrap();
    let mut stdout = stream.stdout.take().unwrap();
    stdin.write_all(b"hello\n").await.unwrap();
    assert_eq!(read_until(&mut stdout, "hello\n").await, "hello\n");
    stdin.write_all(b"world\n").await.unwrap();
    drop(stdin);
    assert_eq!(read_to_end(Some(stdout)).await, "world\n");
    let (_, stderr, exit) = finish_stream(stream).await;
    assert_eq!((stderr.as_str(), exit.unwrap().exit_code), ("", 0));
    running.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_exec_stream_tty_size_resize_and_eof() {
    let running = Running::start();
    // The terminal stays in canonical mode throughout (no line editor switching modes), so
    // the EOF character sent when stdin closes is an EOF to whichever read comes next.
    let script = "stty size; read line; stty size; readlink /proc/self/fd/2; cat; echo cat-done";
    let mut request = running.request(&["sh", "-c", script]);
    request.tty = true;
    request.stdin = true;
    request.size = Some(TerminalSize {
        width: 100,
        height: 40,
    });
    let mut stream = running.exec(&request);
    let mut stdin = stream.stdin.take().unwrap();
    let mut stdout = stream.stdout.take().unwrap();
    // Stderr is merged into the terminal: its pipe ends at once, empty.
    assert_eq!(read_to_end(stream.stderr.take()).await, "");

    let seen = read_until(&mut stdout, "40 100\r\n").await;
    assert_eq!(seen, "40 100\r\n");
    stream.resize(120, 50).unwrap();
    stdin.write_all(b"go\n").await.unwrap();
    let seen = read_until(&mut stdout, "/dev/pts/").await;
    assert!(seen.contains("go\r\n50 120\r\n"), "{seen:?}");
    stdin.write_all(b"abc\n").await.unwrap();
    // The terminal's echo, then cat's copy.
    read_until(&mut stdout, "abc\r\nabc\r\n").await;
    // Closing stdin sends ^D: cat reads EOF and ends, then the shell.
    drop(stdin);
    let rest = read_to_end(Some(stdout)).await;
    assert!(rest.ends_with("cat-done\r\n"), "{rest:?}");
    let exit = tokio::time::timeout(WAIT, stream.wait()).await.unwrap();
    assert_eq!(exit.unwrap().exit_code, 0);
    running.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_exec_stream_tty_merges_stderr() {
    let running = Running::start();
    let mut request = running.request(&[
        "sh",
        "-c",
        "echo out; echo err >&2; test -t 0 && test -t 2 && echo tty; exit 5",
    ]);
    request.tty = true;
    let stream = running.exec(&request);
    assert!(stream.stdin.is_none());
    let (stdout, stderr, exit) = finish_stream(stream).await;
    // The terminal turns \n into \r\n.
    assert_eq!(stdout, "out\r\nerr\r\ntty\r\n");
    assert_eq!(stderr, "");
    assert_eq!(exit.unwrap().exit_code, 5);
    running.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_exec_stream_reports_missing_command_and_container() {
    let running = Running::start();
    for tty in [false, true] {
        let mut request = running.request(&["no-such-command", "arg"]);
        request.tty = tty;
        request.stdin = true;
        let (stdout, stderr, exit) = finish_stream(running.exec(&request)).await;
        let err = exit.unwrap_err();
        assert!(
            matches!(err, Error::ExecCommandNotFound { .. }),
            "tty {tty}: {err:?}"
        );
        assert!(err.to_string().contains("no-such-command"), "{err}");
        assert_eq!((stdout.as_str(), stderr.as_str()), ("", ""), "tty {tty}");
    }
    let mut request = running.request(&["true"]);
    request.id = "corral-test-no-such-container".to_string();
    let (_, _, exit) = finish_stream(running.exec(&request)).await;
    let err = exit.unwrap_err();
    assert!(matches!(err, Error::ContainerState { .. }), "{err:?}");
    running.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_exec_stream_kill_leaves_no_process() {
    let running = Running::start();
    // An interactive shell: each job in its own process group, all in the exec's session.
    let mut request = running.request(&["sh"]);
    request.tty = true;
    request.stdin = true;
    let mut stream = running.exec(&request);
    let helper = stream.pid() as i32;
    let mut stdin = stream.stdin.take().unwrap();
    let mut stdout = stream.stdout.take().unwrap();
    stdin
        .write_all(b"sleep 4242 &\nsleep 4343 &\nsleep 4444\n")
        .await
        .unwrap();
    wait_for("the sleeps", || {
        ["4242", "4343", "4444"]
            .iter()
            .all(|n| processes(&["sleep", n]).len() == 1)
    })
    .await;
    let init = running.started.container_pid;
    assert_eq!(running.cgroup_processes().len(), 5, "init, sh, 3 sleeps");

    stream.kill().unwrap();
    let err = tokio::time::timeout(WAIT, stream.wait())
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::Exec { .. }), "{err:?}");
    assert!(err.to_string().contains("stopped"), "{err}");
    // wait() reaped the helper.
    assert!(!Path::new(&format!("/proc/{helper}")).exists());
    for n in ["4242", "4343", "4444"] {
        assert_eq!(processes(&["sleep", n]), Vec::<i32>::new(), "sleep {n}");
    }
    assert_eq!(running.cgroup_processes(), [init]);
    read_to_end(Some(&mut stdout)).await;
    running.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_exec_stream_drop_stops_the_command() {
    let running = Running::start();
    let stream = running.exec(&running.request(&["sh", "-c", "sleep 4545; echo done"]));
    let helper = stream.pid();
    wait_for("the sleep", || processes(&["sleep", "4545"]).len() == 1).await;
    drop(stream);
    wait_for("the command's end", || {
        processes(&["sleep", "4545"]).is_empty()
    })
    .await;
    // Reaped in the background.
    wait_for("the helper's end", || {
        !Path::new(&format!("/proc/{helper}")).exists()
    })
    .await;
    assert_eq!(running.cgroup_processes(), [running.started.container_pid]);
    running.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_exec_stream_concurrent_tty_execs() {
    let running = Running::start();
    let streams: Vec<_> = (0..4)
        .map(|i| {
            let mut request = running.request(&["sh", "-c", &format!("echo exec-{i}")]);
            request.tty = true;
            running.exec(&request)
        })
        .collect();
    for (i, stream) in streams.into_iter().enumerate() {
        let (stdout, _, exit) = finish_stream(stream).await;
        assert_eq!(stdout, format!("exec-{i}\r\n"));
        assert_eq!(exit.unwrap().exit_code, 0);
    }
    // finish() checks that no console or notify socket was left.
    running.finish();
}

/// The agent dies: its end of the report pipe closes, the helper kills the command.
#[test]
fn test_exec_stream_helper_kills_the_command_when_the_agent_is_gone() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let running = Running::start();
    let (report_read, report_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let report_raw = report_write.as_raw_fd();
    let mut command = std::process::Command::new(MONITOR);
    command
        .arg("exec")
        .args(running.request(&["sleep", "4747"]).to_request().to_args())
        .current_dir("/");
    // SAFETY: only dup2 in the forked child (async-signal-safe).
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(report_raw, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut helper = command.spawn().unwrap();
    drop(report_write);
    let deadline = Instant::now() + WAIT;
    while processes(&["sleep", "4747"]).is_empty() {
        assert!(Instant::now() < deadline, "no sleep");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(report_read);
    // No report to write: the helper exits 1 once the command is dead.
    assert_eq!(helper.wait().unwrap().code(), Some(1));
    assert_eq!(processes(&["sleep", "4747"]), Vec::<i32>::new());
    running.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_exec_stream_has_the_container_identity() {
    let running = Running::start_with(|spec| {
        spec["process"]["user"] = json!({"uid": 1234, "gid": 2345});
    });
    let script = "id -u; id -g; echo $$; cat /proc/1/cmdline; echo; cat /proc/self/cgroup";
    let (stdout, stderr, exit) =
        finish_stream(running.exec(&running.request(&["sh", "-c", script]))).await;
    assert_eq!((stderr.as_str(), exit.unwrap().exit_code), ("", 0));
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("1234"));
    assert_eq!(lines.next(), Some("2345"));
    // In the container's PID namespace: a small pid, and its pid 1 is the container's init.
    let pid: i32 = lines.next().unwrap().parse().unwrap();
    assert!(pid > 1 && pid < 100, "pid {pid}");
    assert_eq!(lines.next(), Some("sleep\x001000\x00"));
    // In the container's cgroups (no cgroup namespace: the paths are the host's).
    let init = running.started.container_pid;
    let host = std::fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap();
    assert_eq!(lines.collect::<Vec<_>>().join("\n") + "\n", host);
    running.finish();
}
