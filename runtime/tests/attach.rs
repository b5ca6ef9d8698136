//! Node tests of attach (root): real busybox containers run by the monitor, attached to
//! through `monitor::attach` and `monitor::relay_attach`, as the streaming server uses them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use std::time::{Duration, Instant};

use common::{Bundle, read_to_end, read_until, require_root};
use corral_runtime::Error;
use corral_runtime::exec::TerminalSize;
use corral_runtime::monitor::{self, AttachIo, AttachOptions, Started};
use serde_json::json;
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

/// A script that echoes each line of its stdin to stdout and stderr, and says `bye` and
/// exits 3 at the end of its input.
const ECHO_LINES: &str =
    "while read line; do echo \"got $line\"; echo \"err $line\" >&2; done; echo bye; exit 3";

/// The client's side of one attachment.
struct Attached {
    stdin: Option<DuplexStream>,
    stdout: Option<DuplexStream>,
    stderr: Option<DuplexStream>,
    resize: Option<mpsc::Sender<TerminalSize>>,
    relay: tokio::task::JoinHandle<Result<(), Error>>,
}

async fn attach(bundle: &Bundle, options: AttachOptions, tty: bool) -> Result<Attached, Error> {
    let socket = bundle.socket().to_path_buf();
    let connection = tokio::task::spawn_blocking(move || monitor::attach(&socket, options))
        .await
        .unwrap()?;
    let pair = |wanted: bool| {
        if wanted {
            let (ours, theirs) = tokio::io::duplex(64 * 1024);
            (Some(ours), Some(theirs))
        } else {
            (None, None)
        }
    };
    let (stdin, stdin_remote) = pair(options.stdin);
    let (stdout, stdout_remote) = pair(options.stdout);
    let (stderr, stderr_remote) = pair(options.stderr);
    let (resize, resizes) = if tty {
        let (sender, receiver) = mpsc::channel(4);
        (Some(sender), Some(receiver))
    } else {
        (None, None)
    };
    let io = AttachIo {
        stdin: stdin_remote.map(|s| Box::new(s) as _),
        stdout: stdout_remote.map(|s| Box::new(s) as _),
        stderr: stderr_remote.map(|s| Box::new(s) as _),
        resize: resizes,
    };
    let relay = tokio::spawn(monitor::relay_attach(connection, io));
    Ok(Attached {
        stdin,
        stdout,
        stderr,
        resize,
        relay,
    })
}

impl Attached {
    async fn send(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(text.as_bytes()).await.unwrap();
    }

    /// Ends the client's stdin.
    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for the relay to end (the monitor closed the stream); returns the rest of
    /// stdout and stderr.
    async fn finish(mut self) -> (String, String) {
        let stdout = read_to_end(self.stdout.take()).await;
        let stderr = read_to_end(self.stderr.take()).await;
        tokio::time::timeout(WAIT, self.relay)
            .await
            .expect("the attachment did not end")
            .unwrap()
            .unwrap();
        (stdout, stderr)
    }
}

fn start(bundle: &Bundle) -> Started {
    let started = bundle.spawn().unwrap();
    monitor::start(bundle.socket()).unwrap();
    started
}

fn finish(bundle: Bundle, started: Started) {
    monitor::signal(bundle.socket(), libc::SIGKILL, true).unwrap();
    bundle.wait_exit_record();
    monitor::delete(bundle.socket()).unwrap();
    bundle.assert_nothing_left(Some(started));
}

const ALL: AttachOptions = AttachOptions {
    stdin: true,
    stdout: true,
    stderr: true,
};
const OUTPUT_ONLY: AttachOptions = AttachOptions {
    stdin: false,
    stdout: true,
    stderr: false,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_attach_stdin_once_output_to_several_and_one_stdin() {
    require_root();
    let bundle = Bundle::with(&["sh", "-c", ECHO_LINES], true, |_, config| {
        config.stdin = true;
        config.stdin_once = true;
    });
    let started = start(&bundle);

    let mut first = attach(&bundle, ALL, false).await.unwrap();
    first.send("one\n").await;
    read_until(first.stdout.as_mut().unwrap(), "got one").await;
    read_until(first.stderr.as_mut().unwrap(), "err one").await;

    // A second attacher sees the output from now on; stdin stays with the first.
    let mut second = attach(&bundle, OUTPUT_ONLY, false).await.unwrap();
    let err = attach(&bundle, ALL, false).await.err().unwrap();
    assert!(
        matches!(&err, Error::ContainerState { op: "attach", message } if message.contains("stdin")),
        "{err}"
    );
    first.send("two\n").await;
    read_until(first.stdout.as_mut().unwrap(), "got two").await;
    read_until(second.stdout.as_mut().unwrap(), "got two").await;

    // The end of the first attacher's stdin ends the container's (stdin_once): the script
    // says bye and exits, and both attachments end.
    first.close_stdin();
    let (rest, _) = first.finish().await;
    assert!(rest.contains("bye"), "{rest:?}");
    let (rest, _) = second.finish().await;
    assert!(rest.contains("bye"), "{rest:?}");
    assert_eq!(bundle.wait_exit_record().exit_code, 3);
    assert_eq!(
        bundle.log_records(),
        [
            "stdout F got one",
            "stderr F err one",
            "stdout F got two",
            "stderr F err two",
            "stdout F bye"
        ]
    );

    // Nothing to attach to once it exited.
    let err = attach(&bundle, OUTPUT_ONLY, false).await.err().unwrap();
    assert!(matches!(err, Error::ContainerState { .. }), "{err}");
    monitor::delete(bundle.socket()).unwrap();
    bundle.assert_nothing_left(Some(started));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_attach_without_stdin_once_keeps_stdin_open_across_attachers() {
    require_root();
    let bundle = Bundle::with(&["sh", "-c", ECHO_LINES], true, |_, config| {
        config.stdin = true;
    });
    let started = start(&bundle);

    let mut first = attach(&bundle, ALL, false).await.unwrap();
    first.send("one\n").await;
    read_until(first.stdout.as_mut().unwrap(), "got one").await;
    // Its stdin ends and it detaches: the container's stdin stays open.
    first.close_stdin();
    first.relay.abort();
    drop(first.stdout.take());

    // The next attacher gets stdin once the monitor saw the first go.
    let deadline = Instant::now() + WAIT;
    let mut second = loop {
        match attach(&bundle, ALL, false).await {
            Ok(attached) => break attached,
            Err(Error::ContainerState { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(err) => panic!("{err}"),
        }
    };
    second.send("two\n").await;
    read_until(second.stdout.as_mut().unwrap(), "got two").await;
    finish(bundle, started);
    let (_, _) = second.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_attach_terminal_input_resize_and_exit() {
    require_root();
    let bundle = Bundle::with(&["sh"], true, |spec, config| {
        spec["process"]["terminal"] = json!(true);
        spec["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/dev/pts", "type": "devpts", "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]
        }));
        config.tty = true;
        config.stdin = true;
    });
    bundle.add_applets(&["stty"]);
    let started = start(&bundle);
    let options = AttachOptions {
        stdin: true,
        stdout: true,
        stderr: false,
    };
    let mut attached = attach(&bundle, options, true).await.unwrap();
    let resize = attached.resize.clone().unwrap();
    resize
        .send(TerminalSize {
            width: 101,
            height: 33,
        })
        .await
        .unwrap();
    // The resize and the input travel in order on one connection.
    attached.send("stty size\n").await;
    read_until(attached.stdout.as_mut().unwrap(), "33 101").await;
    resize
        .send(TerminalSize {
            width: 77,
            height: 20,
        })
        .await
        .unwrap();
    attached.send("stty size; exit 5\n").await;
    let (rest, _) = attached.finish().await;
    assert!(rest.contains("20 77"), "{rest:?}");
    assert_eq!(bundle.wait_exit_record().exit_code, 5);
    monitor::delete(bundle.socket()).unwrap();
    bundle.assert_nothing_left(Some(started));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_attacher_that_does_not_read_never_stalls_the_container() {
    require_root();
    // 8 MiB of output, far more than an attacher may fall behind.
    let bundle = Bundle::with(
        &[
            "sh",
            "-c",
            "sleep 0.5; i=0; while [ $i -lt 8192 ]; do printf '%01023d\\n' $i; i=$((i+1)); done; exit 0",
        ],
        true,
        |_, _| {},
    );
    let started = start(&bundle);
    let stuck = attach(&bundle, OUTPUT_ONLY, false).await.unwrap();
    // The container finishes although the attacher reads nothing, and its log is whole.
    assert_eq!(bundle.wait_exit_record().exit_code, 0);
    assert_eq!(bundle.log_records().len(), 8192);
    // The attacher was cut off: its relay ends once what it had is read.
    let (stdout, _) = stuck.finish().await;
    assert!(stdout.len() < 8 * 1024 * 1024, "{}", stdout.len());
    monitor::delete(bundle.socket()).unwrap();
    bundle.assert_nothing_left(Some(started));
}
