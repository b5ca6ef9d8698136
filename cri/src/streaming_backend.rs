//! The runtime behind the streaming server: Exec through a `corral-monitor exec --stream`
//! helper connected to the client's streams, PortForward through a TCP connection made from
//! inside the pod's network namespace, Attach through the container's monitor, which serves
//! the container's own stdio.

use std::sync::Weak;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, copy, copy_bidirectional_with_sizes};

use crate::agent::Agent;
use crate::error::Error;
use crate::sandbox_record::SandboxState;
use crate::streaming::{
    AttachTarget, BackendError, BackendFuture, DuplexIo, ExecTarget, ExitStatus, RemoteIo,
    StreamingBackend,
};

/// How long output is still copied after the command exited (background processes it
/// left may hold its stdout open).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);
/// The copy buffer of each direction of a forwarded port: one SPDY DATA frame per read
/// (tokio's default of 8 KiB makes eight frames, queue sends and wakeups of every 64 KiB).
const PORT_FORWARD_BUFFER: usize = 64 * 1024;

/// The agent as a streaming backend (weak: the agent owns the server that owns this).
pub struct RuntimeBackend {
    agent: Weak<Agent>,
}

impl RuntimeBackend {
    pub fn new(agent: Weak<Agent>) -> RuntimeBackend {
        RuntimeBackend { agent }
    }

    fn agent(&self) -> Result<std::sync::Arc<Agent>, BackendError> {
        self.agent
            .upgrade()
            .ok_or_else(|| BackendError::Other("the agent is shutting down".to_string()))
    }
}

fn backend_error(container_id: &str, error: Error) -> BackendError {
    match error {
        Error::NotFound(_) => BackendError::ContainerNotFound {
            container_id: container_id.to_string(),
        },
        Error::FailedPrecondition(_) => BackendError::ContainerNotRunning {
            container_id: container_id.to_string(),
        },
        other => BackendError::Other(other.to_string()),
    }
}

impl StreamingBackend for RuntimeBackend {
    fn exec(&self, target: ExecTarget, io: RemoteIo) -> BackendFuture<'_, ExitStatus> {
        Box::pin(async move {
            let agent = self.agent()?;
            let mut stream = agent
                .containers
                .exec_stream(
                    &target.container_id,
                    target.cmd.clone(),
                    target.tty,
                    io.stdin.is_some(),
                )
                .map_err(|e| backend_error(&target.container_id, e))?;
            let RemoteIo {
                stdin,
                stdout,
                stderr,
                resize,
            } = io;
            if let (Some(mut remote), Some(mut local)) = (stdin, stream.stdin.take()) {
                tokio::spawn(async move {
                    let _ = copy(&mut remote, &mut local).await;
                    let _ = local.shutdown().await;
                });
            }
            if let (Some(mut sizes), Ok(resizer)) = (resize, stream.resizer()) {
                tokio::spawn(async move {
                    while let Some(size) = sizes.recv().await {
                        if size.width == 0 || size.height == 0 {
                            continue;
                        }
                        if resizer.resize(size.width, size.height).is_err() {
                            break;
                        }
                    }
                });
            }
            let out = output_task(stream.stdout.take(), stdout);
            let err = output_task(stream.stderr.take(), stderr);
            let exit = stream.wait().await;
            for task in [out, err].into_iter().flatten() {
                if tokio::time::timeout(DRAIN_AFTER_EXIT, task).await.is_err() {
                    tracing::debug!(container = %target.container_id, "exec output still open after exit");
                }
            }
            match exit {
                Ok(exit) => Ok(ExitStatus(exit.exit_code)),
                Err(corral_runtime::Error::ContainerState { .. }) => {
                    Err(BackendError::ContainerNotRunning {
                        container_id: target.container_id.clone(),
                    })
                }
                Err(error) => Err(BackendError::Other(error.to_string())),
            }
        })
    }

    fn attach(&self, target: AttachTarget, io: RemoteIo) -> BackendFuture<'_, ()> {
        Box::pin(async move {
            use corral_runtime::monitor::{self, AttachIo, AttachOptions};
            let agent = self.agent()?;
            let options = AttachOptions {
                stdin: io.stdin.is_some(),
                stdout: io.stdout.is_some(),
                stderr: io.stderr.is_some(),
            };
            let connection = agent
                .containers
                .attach(&target.container_id, options)
                .await
                .map_err(|e| attach_error(&target.container_id, e))?;
            let RemoteIo {
                stdin,
                stdout,
                stderr,
                resize,
            } = io;
            let resize = resize.map(terminal_sizes);
            let io = AttachIo {
                stdin: stdin.map(|s| s as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
                stdout: stdout.map(|s| s as Box<dyn tokio::io::AsyncWrite + Send + Unpin>),
                stderr: stderr.map(|s| s as Box<dyn tokio::io::AsyncWrite + Send + Unpin>),
                resize,
            };
            monitor::relay_attach(connection, io)
                .await
                .map_err(|e| BackendError::Other(e.to_string()))
        })
    }

    fn port_forward<'a>(
        &'a self,
        sandbox_id: &'a str,
        port: u16,
        mut stream: DuplexIo,
    ) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            let agent = self.agent()?;
            let sandbox =
                agent
                    .sandboxes
                    .get(sandbox_id)
                    .ok_or_else(|| BackendError::SandboxNotFound {
                        sandbox_id: sandbox_id.to_string(),
                    })?;
            if sandbox.state != SandboxState::Ready {
                return Err(BackendError::SandboxNotReady {
                    sandbox_id: sandbox_id.to_string(),
                });
            }
            let netns = sandbox.netns.clone();
            let connected = tokio::task::spawn_blocking(move || {
                corral_pod_sandbox::namespaces::connect_in_netns(netns.as_deref(), port)
            })
            .await
            .map_err(|e| BackendError::Other(format!("connect task failed: {e}")))?
            .map_err(|source| BackendError::Io {
                op: format!("connect to port {port}"),
                source,
            })?;
            connected
                .set_nonblocking(true)
                .map_err(|source| BackendError::Io {
                    op: "set the connection nonblocking".to_string(),
                    source,
                })?;
            let mut connection =
                tokio::net::TcpStream::from_std(connected).map_err(|source| BackendError::Io {
                    op: "register the connection".to_string(),
                    source,
                })?;
            copy_bidirectional_with_sizes(
                &mut stream,
                &mut connection,
                PORT_FORWARD_BUFFER,
                PORT_FORWARD_BUFFER,
            )
            .await
            .map_err(|source| BackendError::Io {
                op: format!("copy port {port} data"),
                source,
            })?;
            Ok(())
        })
    }
}

/// An attach refused by the monitor: a second stdin, too many attachers, a stopped container.
fn attach_error(container_id: &str, error: Error) -> BackendError {
    match error {
        Error::Runtime(corral_runtime::Error::ContainerState { message, .. }) => {
            BackendError::Other(format!("attach to container {container_id}: {message}"))
        }
        other => backend_error(container_id, other),
    }
}

/// The client's terminal sizes as the runtime's.
fn terminal_sizes(
    mut sizes: tokio::sync::mpsc::Receiver<crate::streaming::TerminalSize>,
) -> tokio::sync::mpsc::Receiver<corral_runtime::exec::TerminalSize> {
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        while let Some(size) = sizes.recv().await {
            let size = corral_runtime::exec::TerminalSize {
                width: size.width,
                height: size.height,
            };
            if sender.send(size).await.is_err() {
                return;
            }
        }
    });
    receiver
}

/// Copies one output of the command to the client, then ends the client's stream.
fn output_task<R>(
    local: Option<R>,
    remote: Option<crate::streaming::RemoteWriter>,
) -> Option<tokio::task::JoinHandle<()>>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let mut local = local?;
    Some(tokio::spawn(async move {
        match remote {
            Some(mut remote) => {
                let _ = copy(&mut local, &mut remote).await;
                let _ = remote.shutdown().await;
            }
            // Nobody reads it: drain so the command never blocks on a full pipe.
            None => {
                let _ = copy(&mut local, &mut tokio::io::sink()).await;
            }
        }
    }))
}
