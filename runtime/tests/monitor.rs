//! Node tests of `corral-monitor` (root): real containers from a busybox rootfs, driven
//! through the agent-side client exactly as the agent does.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Bundle, MONITOR, require_root, status_field};
use corral_runtime::Error;
use corral_runtime::monitor::{self, Status};
use serde_json::json;

fn oom_score_adj(pid: i32) -> i32 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap();
    text.trim().parse().unwrap()
}

#[test]
fn test_monitor_runs_container_logs_and_exit_code() {
    require_root();
    let bundle = Bundle::new(
        &["sh", "-c", "echo out; echo err >&2; printf tail; exit 3"],
        true,
    );
    let started = bundle.spawn().unwrap();
    assert_eq!(status_field(started.monitor_pid, "Threads:"), "1");
    let state = monitor::state(bundle.socket()).unwrap();
    assert_eq!(
        (state.status, state.pid),
        (Status::Created, started.container_pid)
    );
    assert!(
        !bundle.cgroup_dirs().is_empty(),
        "the container has cgroups"
    );

    monitor::start(bundle.socket()).unwrap();
    let record = bundle.wait_exit_record();
    assert_eq!(
        (record.exit_code, record.signal, record.oom_killed),
        (3, None, false)
    );
    assert!(record.started_at > 0 && record.finished_at >= record.started_at);

    let state = monitor::state(bundle.socket()).unwrap();
    assert_eq!(state.status, Status::Stopped);
    assert_eq!(state.exit, Some(record));
    // The two streams interleave as the monitor reads them; each keeps its own order, and
    // output without a final newline ends as a partial record.
    let records = bundle.log_records();
    let stdout: Vec<_> = records.iter().filter(|r| r.starts_with("stdout")).collect();
    let stderr: Vec<_> = records.iter().filter(|r| r.starts_with("stderr")).collect();
    assert_eq!(stdout, ["stdout F out", "stdout P tail"], "{records:?}");
    assert_eq!(stderr, ["stderr F err"], "{records:?}");
    assert_eq!(records.len(), 3, "{records:?}");
    let err = monitor::start(bundle.socket()).unwrap_err();
    assert!(matches!(err, Error::ContainerState { .. }), "{err}");

    monitor::delete(bundle.socket()).unwrap();
    bundle.assert_nothing_left(Some(started));
    let err = monitor::state(bundle.socket()).unwrap_err();
    assert!(matches!(err, Error::MonitorUnavailable { .. }), "{err}");
}

#[test]
fn test_monitor_ends_the_rest_of_a_container_sharing_a_pid_namespace() {
    require_root();
    // The host's PID namespace: the init's exit leaves its background child alive, holding
    // the output pipe, unless the monitor ends it.
    let bundle = Bundle::new(&["sh", "-c", "sleep 1000 & echo started; exit 2"], false);
    let started = bundle.spawn().unwrap();
    monitor::start(bundle.socket()).unwrap();
    let record = bundle.wait_exit_record();
    assert_eq!(record.exit_code, 2);
    let procs = bundle.cgroup_dirs()[0].join("ctr/cgroup.procs");
    let left = std::fs::read_to_string(&procs).unwrap_or_default();
    assert_eq!(left.trim(), "", "processes left in {procs:?}");
    assert_eq!(bundle.log_records(), ["stdout F started"]);
    monitor::delete(bundle.socket()).unwrap();
    bundle.assert_nothing_left(Some(started));
}

#[test]
fn test_monitor_signal_sigterm_records_signal() {
    require_root();
    // No pid namespace: as pid 1 of its own namespace, sleep would ignore SIGTERM.
    // The process must not inherit ignored signals (Rust's SIGPIPE, whatever the agent's
    // environment ignores) nor the monitor's blocked SIGCHLD.
    let script = "grep -E '^Sig(Ign|Blk)' /proc/self/status; exec sleep 1000";
    let bundle = Bundle::new(&["sh", "-c", script], false);
    let started = bundle.spawn().unwrap();
    monitor::start(bundle.socket()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while bundle.log_records().len() < 2 {
        assert!(Instant::now() < deadline, "no signal masks logged");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        bundle.log_records(),
        [
            "stdout F SigBlk:\t0000000000000000",
            "stdout F SigIgn:\t0000000000000000"
        ]
    );
    assert_eq!(
        monitor::state(bundle.socket()).unwrap().status,
        Status::Running
    );
    let err = monitor::delete(bundle.socket()).unwrap_err();
    assert!(matches!(err, Error::ContainerState { .. }), "{err}");

    monitor::signal(bundle.socket(), libc::SIGTERM, false).unwrap();
    let record = bundle.wait_exit_record();
    assert_eq!((record.exit_code, record.signal), (143, Some(15)));
    // Signalling the exited init again is a harmless no-op.
    monitor::signal(bundle.socket(), libc::SIGKILL, false).unwrap();
    let err = monitor::signal(bundle.socket(), 12345, false).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");

    monitor::delete(bundle.socket()).unwrap();
    bundle.assert_nothing_left(Some(started));
}

#[test]
fn test_monitor_is_daemonized_and_deletes_created_container() {
    require_root();
    let bundle = Bundle::with(&["sleep", "1000"], true, |spec, _| {
        spec["process"]["oomScoreAdj"] = json!(500);
    });
    let started = bundle.spawn().unwrap();
    // The init has the spec's oom_score_adj; the monitor went back to the agent's.
    assert_eq!(oom_score_adj(started.container_pid), 500);
    assert_eq!(
        oom_score_adj(started.monitor_pid),
        oom_score_adj(std::process::id() as i32)
    );
    // The process we spawned has exited (spawn_monitor reaped it); the monitor lives on in
    // its own session, adopted by someone else.
    let parent: i32 = status_field(started.monitor_pid, "PPid:").parse().unwrap();
    assert_ne!(parent, std::process::id() as i32);
    let monitor_sid = nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(started.monitor_pid)));
    assert_ne!(monitor_sid.unwrap(), nix::unistd::getsid(None).unwrap());
    assert_eq!(
        monitor::state(bundle.socket()).unwrap().status,
        Status::Created
    );
    monitor::reopen_log(bundle.socket()).unwrap();

    // A created, never started container can be deleted: killed and recorded first.
    monitor::delete(bundle.socket()).unwrap();
    let record = monitor::read_exit_record(&bundle.config.exit_file).unwrap();
    assert_eq!(
        (record.exit_code, record.signal, record.started_at),
        (137, Some(9), 0)
    );
    bundle.assert_nothing_left(Some(started));
}

#[test]
fn test_monitor_failed_create_leaves_nothing() {
    require_root();
    let bundle = Bundle::new(&["/bin/no-such-binary"], true);
    let err = bundle.spawn().unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::MonitorCreate { .. }), "{message}");
    assert!(message.contains("no-such-binary"), "{message}");
    bundle.assert_nothing_left(None);
    assert!(!bundle.config.exit_file.exists());
}

#[test]
fn test_monitor_reopen_log_after_rotation() {
    require_root();
    let bundle = Bundle::with(
        &["sh", "-c", "echo one; read line; echo two"],
        true,
        |_, c| {
            c.stdin = true;
        },
    );
    let started = bundle.spawn().unwrap();
    monitor::start(bundle.socket()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while bundle.log_records().is_empty() {
        assert!(Instant::now() < deadline, "no first line");
        std::thread::sleep(Duration::from_millis(20));
    }
    let rotated = bundle.config.log_path.with_extension("log.1");
    std::fs::rename(&bundle.config.log_path, &rotated).unwrap();
    monitor::reopen_log(bundle.socket()).unwrap();
    // stdin is a pipe held open by the monitor: `read` blocks until the container is
    // signalled, so the second line never comes; the process stays alive until killed.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        monitor::state(bundle.socket()).unwrap().status,
        Status::Running
    );
    monitor::signal(bundle.socket(), libc::SIGKILL, true).unwrap();
    let record = bundle.wait_exit_record();
    assert_eq!(record.exit_code, 137);
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.ends_with(" stdout F one\n"), "{old}");
    assert_eq!(
        std::fs::read_to_string(&bundle.config.log_path).unwrap(),
        ""
    );
    monitor::delete(bundle.socket()).unwrap();
    bundle.assert_nothing_left(Some(started));
}

#[test]
fn test_monitor_records_oom_kill() {
    require_root();
    let grow = "x=0123456789abcdef; while true; do x=$x$x; done";
    let bundle = Bundle::with(&["sh", "-c", grow], true, |spec, _| {
        spec["linux"]["resources"]["memory"]["limit"] = json!(16 * 1024 * 1024);
    });
    let started = bundle.spawn().unwrap();
    monitor::start(bundle.socket()).unwrap();
    let record = bundle.wait_exit_record();
    assert_eq!(
        (record.exit_code, record.signal),
        (137, Some(9)),
        "{record:?}"
    );
    assert!(record.oom_killed, "{record:?}");
    monitor::delete(bundle.socket()).unwrap();
    bundle.assert_nothing_left(Some(started));
}

#[test]
fn test_monitor_clamps_negative_oom_score_adj() {
    require_root();
    let bundle = Bundle::with(&["sleep", "1000"], true, |spec, _| {
        spec["process"]["oomScoreAdj"] = json!(-997);
    });
    let started = bundle.spawn().unwrap();
    // Without CAP_SYS_RESOURCE the monitor clamps to what it may set (its current value).
    let ours = oom_score_adj(std::process::id() as i32);
    let init = oom_score_adj(started.container_pid);
    assert!(init == -997 || init == ours, "init {init}, ours {ours}");
    monitor::delete(bundle.socket()).unwrap();
    bundle.assert_nothing_left(Some(started));
}

#[test]
fn test_monitor_tty_output_goes_to_log() {
    require_root();
    let bundle = Bundle::with(
        &["sh", "-c", "echo hi; test -t 1 && echo tty; exit 7"],
        true,
        |spec, config| {
            spec["process"]["terminal"] = json!(true);
            spec["mounts"].as_array_mut().unwrap().push(json!({
                "destination": "/dev/pts", "type": "devpts", "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]
            }));
            config.tty = true;
        },
    );
    let started = bundle.spawn().unwrap();
    monitor::start(bundle.socket()).unwrap();
    let record = bundle.wait_exit_record();
    assert_eq!(record.exit_code, 7);
    assert_eq!(bundle.log_records(), ["stdout F hi", "stdout F tty"]);
    monitor::delete(bundle.socket()).unwrap();
    bundle.assert_nothing_left(Some(started));
}

/// Memory of a process in KiB from `smaps_rollup`: (Private_Clean, Private_Dirty, Rss).
fn private_kib(pid: i32) -> (u64, u64, u64) {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let field = |name: &str| -> u64 {
        rollup
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (
        field("Private_Clean:"),
        field("Private_Dirty:"),
        field("Rss:"),
    )
}

/// The mappings with private memory, largest first: (clean KiB, dirty KiB, mapping).
fn private_by_mapping(pid: i32) -> Vec<(u64, u64, String)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut out = Vec::new();
    let mut current: Option<(u64, u64, String)> = None;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            out.extend(current.take().filter(|(c, d, _)| c + d > 0));
            let fields: Vec<_> = line.split_whitespace().collect();
            let name = format!(
                "{} {}",
                fields[1],
                fields.get(5).copied().unwrap_or("[anon]")
            );
            current = Some((0, 0, name));
        } else if let Some((clean, dirty, _)) = &mut current {
            let kib = |v: &str| {
                v.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0)
            };
            if let Some(v) = line.strip_prefix("Private_Clean:") {
                *clean += kib(v);
            } else if let Some(v) = line.strip_prefix("Private_Dirty:") {
                *dirty += kib(v);
            }
        }
    }
    out.extend(current.filter(|(c, d, _)| c + d > 0));
    out.sort_by_key(|m| std::cmp::Reverse(m.0 + m.1));
    out
}

fn print_memory(label: &str, pid: i32) {
    let (clean, dirty, rss) = private_kib(pid);
    println!(
        "{label}: USS {} KiB = Private_Clean {clean} + Private_Dirty {dirty} (Rss {rss} KiB)",
        clean + dirty
    );
}

/// Prints the idle memory of a monitor (benchmark-style: numbers, no assertion).
/// `CORRAL_MONITOR=target/monitor/corral-monitor cargo test -p corral-runtime --test monitor
/// -- --ignored --nocapture` measures the size-optimized build. A second monitor runs
/// alongside, so the binary's clean text pages count as shared, as on a node.
#[test]
#[ignore = "measurement; run with --ignored --nocapture"]
fn test_monitor_idle_memory() {
    require_root();
    let binary = std::env::var_os("CORRAL_MONITOR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(MONITOR));
    println!("binary: {}", binary.display());
    let bundles: Vec<_> = (0..2)
        .map(|_| Bundle::new(&["sh", "-c", "echo hello; exec sleep 1000"], true))
        .collect();
    let started: Vec<_> = bundles
        .iter()
        .map(|b| b.spawn_binary(&binary).unwrap())
        .collect();
    let pid = started[0].monitor_pid;
    print_memory("created, 2 monitors", pid);
    println!("threads: {}", status_field(pid, "Threads:"));
    monitor::start(bundles[0].socket()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..20 {
        monitor::state(bundles[0].socket()).unwrap();
    }
    print_memory("running, 1 created alongside", pid);
    monitor::start(bundles[1].socket()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    print_memory("running, 2 running monitors", pid);
    for (clean, dirty, mapping) in private_by_mapping(pid).iter().take(10) {
        println!("  clean {clean:>5} KiB  dirty {dirty:>5} KiB  {mapping}");
    }
    for (bundle, started) in bundles.iter().zip(started) {
        monitor::signal(bundle.socket(), libc::SIGKILL, true).unwrap();
        bundle.wait_exit_record();
        monitor::delete(bundle.socket()).unwrap();
        bundle.assert_nothing_left(Some(started));
    }
}
