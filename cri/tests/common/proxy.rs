//! A TCP proxy on 127.0.0.1 in front of the registry fixture that slows or stalls the
//! registry's answers: for pulls that must still be running when the test acts.

use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the proxy treats the registry's answers.
#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// At most this many bytes per second per connection.
    Throttle { bytes_per_second: u64 },
    /// Forwards this many answer bytes per connection, then nothing more (the connection
    /// stays open).
    StallAfter { bytes: u64 },
}

/// A running proxy; stopped when dropped.
#[derive(Debug)]
pub struct SlowProxy {
    addr: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SlowProxy {
    /// Starts a proxy to `target` (`127.0.0.1:PORT`) on a free loopback port, on a thread of
    /// its own (so it works from inside any test runtime).
    pub fn start(target: &str, behaviour: Behaviour) -> anyhow::Result<SlowProxy> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?.to_string();
        let target = target.to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = TcpListener::from_std(listener) else {
                    return;
                };
                let accept = async {
                    while let Ok((client, _)) = listener.accept().await {
                        let target = target.clone();
                        tokio::spawn(async move {
                            if let Ok(upstream) = TcpStream::connect(&target).await {
                                let _ = relay(client, upstream, behaviour).await;
                            }
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped => {}
                }
            });
            // Dropping the runtime here ends every relay task.
        });
        Ok(SlowProxy {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn relay(client: TcpStream, upstream: TcpStream, behaviour: Behaviour) -> anyhow::Result<()> {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let requests = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut upstream_write).await;
    });
    let mut buffer = vec![0u8; 16 * 1024];
    let mut forwarded: u64 = 0;
    loop {
        let n = upstream_read
            .read(&mut buffer)
            .await
            .context("read upstream")?;
        if n == 0 {
            break;
        }
        match behaviour {
            Behaviour::Throttle { bytes_per_second } => {
                client_write.write_all(&buffer[..n]).await?;
                let pause = Duration::from_secs_f64(n as f64 / bytes_per_second.max(1) as f64);
                tokio::time::sleep(pause).await;
            }
            Behaviour::StallAfter { bytes } => {
                let allowed = bytes.saturating_sub(forwarded).min(n as u64) as usize;
                client_write.write_all(&buffer[..allowed]).await?;
                if allowed < n {
                    // Hold the connection open and silent until the test ends.
                    std::future::pending::<()>().await;
                }
            }
        }
        forwarded += n as u64;
    }
    requests.abort();
    Ok(())
}
