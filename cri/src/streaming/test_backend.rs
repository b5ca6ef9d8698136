//! A fake runtime for the streaming tests, and helpers to start a server on loopback.
//!
//! Exec commands (`cmd[0]`):
//! - `echo A B`: writes `A B\n` on stdout, exits 0;
//! - `stderr TEXT`: writes TEXT on stderr (on stdout when there is none: a tty), exits 0;
//! - `exit N`: writes `bye\n` on stderr, exits N;
//! - `cat`: copies stdin to stdout until stdin ends, exits 0;
//! - `resize N`: writes each of N terminal sizes as `WxH\n` on stdout, exits 0;
//! - `fail`: fails with "container C is not running";
//! - `sleep`: never ends.
//!
//! Attach copies stdin to stdout, or fails for container `missing`. Port forward connects to
//! 127.0.0.1:port and copies both ways.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    AttachTarget, BackendError, BackendFuture, Config, DuplexIo, ExecTarget, ExitStatus, RemoteIo,
    StreamingBackend, StreamingServer, TerminalSize,
};

pub(super) const WAIT: Duration = Duration::from_secs(10);

#[derive(Default)]
pub(super) struct FakeBackend {
    /// Backend calls running now.
    live: Arc<AtomicUsize>,
    /// What each exec was asked for.
    pub(super) execs: Mutex<Vec<(ExecTarget, IoShape)>>,
}

/// Which streams a call got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct IoShape {
    pub(super) stdin: bool,
    pub(super) stdout: bool,
    pub(super) stderr: bool,
    pub(super) resize: bool,
}

impl IoShape {
    fn of(io: &RemoteIo) -> IoShape {
        IoShape {
            stdin: io.stdin.is_some(),
            stdout: io.stdout.is_some(),
            stderr: io.stderr.is_some(),
            resize: io.resize.is_some(),
        }
    }
}

/// Counts a running backend call.
struct Live(Arc<AtomicUsize>);

impl Live {
    fn new(counter: &Arc<AtomicUsize>) -> Live {
        counter.fetch_add(1, Ordering::SeqCst);
        Live(counter.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl FakeBackend {
    pub(super) fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }
}

impl StreamingBackend for FakeBackend {
    fn exec(&self, target: ExecTarget, mut io: RemoteIo) -> BackendFuture<'_, ExitStatus> {
        let live = Live::new(&self.live);
        super::lock(&self.execs).push((target.clone(), IoShape::of(&io)));
        Box::pin(async move {
            let _live = live;
            let args = &target.cmd[1..];
            let out = |io: &mut RemoteIo| io.stdout.take();
            match target.cmd[0].as_str() {
                "echo" => {
                    write(out(&mut io), format!("{}\n", args.join(" "))).await;
                    Ok(ExitStatus::SUCCESS)
                }
                "stderr" => {
                    let writer = io.stderr.take().or_else(|| io.stdout.take());
                    write(writer, args.join(" ")).await;
                    Ok(ExitStatus::SUCCESS)
                }
                "exit" => {
                    write(io.stderr.take(), "bye\n".to_string()).await;
                    Ok(ExitStatus(args[0].parse().unwrap()))
                }
                "cat" => {
                    let (Some(mut stdin), Some(mut stdout)) = (io.stdin.take(), io.stdout.take())
                    else {
                        return Err(BackendError::Other("cat needs stdin and stdout".into()));
                    };
                    tokio::io::copy(&mut stdin, &mut stdout)
                        .await
                        .map_err(|source| BackendError::Io {
                            op: "copy".into(),
                            source,
                        })?;
                    Ok(ExitStatus::SUCCESS)
                }
                "resize" => {
                    let count: usize = args[0].parse().unwrap();
                    let mut sizes = io.resize.take().unwrap();
                    let mut text = String::new();
                    for _ in 0..count {
                        let TerminalSize { width, height } = sizes.recv().await.unwrap();
                        text.push_str(&format!("{width}x{height}\n"));
                    }
                    write(out(&mut io), text).await;
                    Ok(ExitStatus::SUCCESS)
                }
                "fail" => Err(BackendError::ContainerNotRunning {
                    container_id: target.container_id.clone(),
                }),
                "sleep" => std::future::pending().await,
                other => Err(BackendError::Other(format!("unknown command {other}"))),
            }
        })
    }

    fn attach(&self, target: AttachTarget, mut io: RemoteIo) -> BackendFuture<'_, ()> {
        let live = Live::new(&self.live);
        Box::pin(async move {
            let _live = live;
            if target.container_id == "missing" {
                return Err(BackendError::ContainerNotFound {
                    container_id: target.container_id,
                });
            }
            if let (Some(mut stdin), Some(mut stdout)) = (io.stdin.take(), io.stdout.take()) {
                let _ = tokio::io::copy(&mut stdin, &mut stdout).await;
            }
            Ok(())
        })
    }

    fn port_forward<'a>(
        &'a self,
        _sandbox_id: &'a str,
        port: u16,
        mut stream: DuplexIo,
    ) -> BackendFuture<'a, ()> {
        let live = Live::new(&self.live);
        Box::pin(async move {
            let _live = live;
            let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .map_err(|source| BackendError::Io {
                    op: format!("connect to port {port}"),
                    source,
                })?;
            tokio::io::copy_bidirectional(&mut stream, &mut tcp)
                .await
                .map_err(|source| BackendError::Io {
                    op: format!("copy to port {port}"),
                    source,
                })?;
            Ok(())
        })
    }
}

async fn write(writer: Option<super::RemoteWriter>, text: String) {
    if let Some(mut writer) = writer {
        writer.write_all(text.as_bytes()).await.unwrap();
        writer.shutdown().await.unwrap();
    }
}

/// A server on a free loopback port with the fake backend; `tweak` adjusts the config.
pub(super) async fn start(tweak: impl FnOnce(&mut Config)) -> (StreamingServer, Arc<FakeBackend>) {
    let mut config = Config::default();
    tweak(&mut config);
    let backend = Arc::new(FakeBackend::default());
    let server = StreamingServer::start(config, backend.clone())
        .await
        .unwrap();
    (server, backend)
}

pub(super) fn exec_target(cmd: &[&str], stdin: bool, tty: bool) -> ExecTarget {
    ExecTarget {
        container_id: "c1".into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    }
}

/// Waits until `check` holds (the server winds sessions down asynchronously).
pub(super) async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A TCP echo server on loopback; returns its port.
pub(super) async fn echo_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut read, mut write) = tcp.split();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = read.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        let _ = write.shutdown().await;
                        return;
                    }
                    if write.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}
