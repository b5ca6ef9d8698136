//! The streaming server: a TCP listener, one task per connection, and the URLs the CRI
//! Exec, Attach and PortForward handlers hand out.
//!
//! Each connection task serves HTTP/1.1 requests; refusals close the connection (clients open
//! one per session). When the answer is `101`, the same task runs the SPDY or WebSocket
//! session on the upgraded connection, so a connection task lives exactly as long as its session and
//! [`StreamingServer::shutdown`] can wait for (or abort) every one of them.
//!
//! Keep-alive stays on in hyper: turned off, hyper answers the 101 with
//! `Connection: Upgrade, close`, and client-go (crictl, kubelet) then gives up on the
//! connection without a word. Checked against crictl 1.32.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming as HyperBody;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::backend::{AttachTarget, ExecTarget, PortForwardTarget, StreamingBackend};
use super::http::{Plan, route};
use super::session::{SessionContext, run_plan};
use super::tokens::{PendingRequest, TokenCache};
use super::{Config, Error};

/// How long a client may take to send a request head (hyper also closes a kept-alive
/// connection that sends nothing for this long).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`StreamingServer::shutdown`] lets sessions wind down before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The running server. Dropping it starts a shutdown without waiting for it.
pub struct StreamingServer {
    inner: Arc<Inner>,
    local_address: SocketAddr,
    base_url: String,
    accept_task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for StreamingServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingServer")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// What every connection task shares.
pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) tokens: TokenCache,
    pub(crate) backend: Arc<dyn StreamingBackend>,
    /// Flips to true once at shutdown.
    pub(crate) shutdown: watch::Sender<bool>,
    /// Connection tasks alive (sessions included).
    active: AtomicUsize,
    /// With `[streaming] tls`: the TLS handshake every connection starts with.
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// The running sessions by the container or pod sandbox they serve.
    sessions: SessionRegistry,
}

impl StreamingServer {
    /// Binds `config.address` and starts serving. With port 0 the system picks a free port;
    /// [`StreamingServer::base_url`] tells which.
    pub async fn start(
        config: Config,
        backend: Arc<dyn StreamingBackend>,
    ) -> Result<StreamingServer, Error> {
        config.validate()?;
        let address = config.socket_address()?;
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| Error::Bind { address, source })?;
        let local_address = listener.local_addr().map_err(Error::LocalAddress)?;
        let tls = super::tls::acceptor(&config, local_address)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base_url = format!("{scheme}://{local_address}");
        let inner = Arc::new(Inner {
            tls,
            tokens: TokenCache::new(config.token_ttl(), config.max_in_flight_requests),
            config,
            backend,
            shutdown: watch::Sender::new(false),
            active: AtomicUsize::new(0),
            sessions: SessionRegistry::default(),
        });
        tracing::info!(url = %base_url, "streaming server listening");
        let accept_task = tokio::spawn(accept_loop(listener, inner.clone()));
        Ok(StreamingServer {
            inner,
            local_address,
            base_url,
            accept_task: Mutex::new(Some(accept_task)),
        })
    }

    /// `http://<ip>:<port>` (`https://` with TLS), without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The address the server listens on.
    pub fn local_address(&self) -> SocketAddr {
        self.local_address
    }

    /// The URL for an Exec request: `<base>/exec/<token>`. Fails for a request kubelet's
    /// server refuses too (no container, tty with stderr, no stream at all) and when too many
    /// URLs are outstanding.
    pub fn exec_url(&self, target: ExecTarget) -> Result<String, Error> {
        check_stdio(
            &target.container_id,
            target.tty,
            target.stdin,
            target.stdout,
            target.stderr,
        )?;
        self.url(PendingRequest::Exec(target))
    }

    /// The URL for an Attach request: `<base>/attach/<token>`; checked like
    /// [`StreamingServer::exec_url`].
    pub fn attach_url(&self, target: AttachTarget) -> Result<String, Error> {
        check_stdio(
            &target.container_id,
            target.tty,
            target.stdin,
            target.stdout,
            target.stderr,
        )?;
        self.url(PendingRequest::Attach(target))
    }

    /// The URL for a PortForward request: `<base>/portforward/<token>`.
    pub fn port_forward_url(&self, target: PortForwardTarget) -> Result<String, Error> {
        if target.sandbox_id.is_empty() {
            return Err(Error::MissingSandboxId);
        }
        self.url(PendingRequest::PortForward(target))
    }

    /// Connections open now, upgraded sessions included.
    pub fn active_connections(&self) -> usize {
        self.inner.active.load(Ordering::SeqCst)
    }

    /// URLs handed out and not used yet (expired ones may count until the next URL is made).
    pub fn pending_requests(&self) -> usize {
        self.inner.tokens.len()
    }

    /// Ends the sessions serving the container or pod sandbox `id` (exec, attach or
    /// port-forward), as at shutdown: when it is removed, or a pod sandbox stopped.
    pub fn close_sessions(&self, id: &str) {
        let closed = self.inner.sessions.close(id);
        if closed > 0 {
            tracing::info!(
                target_id = id,
                sessions = closed,
                "streaming sessions closed"
            );
        }
    }

    /// Stops accepting, ends every session (GOAWAY to its client; backend calls are dropped)
    /// and waits for the connection tasks, aborting those still running after a few seconds.
    /// Calling it again does nothing.
    pub async fn shutdown(&self) {
        self.inner.begin_shutdown();
        let task = super::lock(&self.accept_task).take();
        if let Some(task) = task
            && let Err(error) = task.await
        {
            tracing::warn!(%error, "streaming accept task failed");
        }
    }

    fn url(&self, pending: PendingRequest) -> Result<String, Error> {
        let kind = pending.kind();
        let token = self.inner.tokens.insert(pending)?;
        Ok(format!("{}/{}/{}", self.base_url, kind.path(), token))
    }
}

impl Drop for StreamingServer {
    fn drop(&mut self) {
        self.inner.begin_shutdown();
    }
}

impl Inner {
    /// Flips the shutdown flag, which ends the accept loop and every session.
    fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
        self.sessions.close_all();
    }
}

/// The running sessions' close signals by target (container or pod sandbox id).
#[derive(Default)]
struct SessionRegistry {
    next: AtomicU64,
    by_target: Mutex<HashMap<String, HashMap<u64, watch::Sender<bool>>>>,
    /// Set by [`SessionRegistry::close_all`]: sessions registered later start closed.
    closed_all: std::sync::atomic::AtomicBool,
}

impl SessionRegistry {
    /// Registers a session for `target`; the receiver flips to true when it must end.
    fn register(&self, target: &str) -> (u64, watch::Receiver<bool>) {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let mut by_target = super::lock(&self.by_target);
        let (closer, closed) = watch::channel(self.closed_all.load(Ordering::SeqCst));
        by_target
            .entry(target.to_string())
            .or_default()
            .insert(key, closer);
        (key, closed)
    }

    fn unregister(&self, target: &str, key: u64) {
        let mut by_target = super::lock(&self.by_target);
        if let Some(sessions) = by_target.get_mut(target) {
            sessions.remove(&key);
            if sessions.is_empty() {
                by_target.remove(target);
            }
        }
    }

    /// Signals the sessions of `target`; returns how many.
    fn close(&self, target: &str) -> usize {
        let sessions = super::lock(&self.by_target).remove(target);
        let sessions = sessions.unwrap_or_default();
        for closer in sessions.values() {
            closer.send_replace(true);
        }
        sessions.len()
    }

    fn close_all(&self) {
        let mut by_target = super::lock(&self.by_target);
        self.closed_all.store(true, Ordering::SeqCst);
        for closer in by_target
            .drain()
            .flat_map(|(_, sessions)| sessions.into_values())
        {
            closer.send_replace(true);
        }
    }
}

/// Unregisters a session however its task ends.
struct Registered<'a> {
    registry: &'a SessionRegistry,
    target: String,
    key: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.registry.unregister(&self.target, self.key);
    }
}

/// The checks of kubelet's `validateExecRequest` / `validateAttachRequest`.
fn check_stdio(
    container_id: &str,
    tty: bool,
    stdin: bool,
    stdout: bool,
    stderr: bool,
) -> Result<(), Error> {
    if container_id.is_empty() {
        return Err(Error::MissingContainerId);
    }
    if tty && stderr {
        return Err(Error::TtyWithStderr);
    }
    if !stdin && !stdout && !stderr {
        return Err(Error::NoStreams);
    }
    Ok(())
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>) {
    let mut connections = JoinSet::new();
    let mut shutdown = inner.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = super::shutdown_requested(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    connections.spawn(serve_tcp(inner.clone(), tcp, peer));
                }
                Err(error) => {
                    // Out of file descriptors, typically: wait instead of spinning.
                    tracing::warn!(%error, "streaming server accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = joined {
                    tracing::error!(%error, "streaming connection task failed");
                }
            }
        }
    }
    drop(listener);
    let open = connections.len();
    tracing::info!(open, "streaming server shutting down");
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = connections.len(),
            "streaming sessions still running at shutdown, aborting them"
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
    tracing::info!("streaming server stopped");
}

/// Counts a connection task while it lives (however it ends).
struct Active(Arc<Inner>);

impl Active {
    fn new(inner: &Arc<Inner>) -> Active {
        inner.active.fetch_add(1, Ordering::SeqCst);
        Active(inner.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The session a request asked for, with the connection's pending upgrade.
type Upgrade = (hyper::upgrade::OnUpgrade, Plan);

/// Serves an accepted connection, after the TLS handshake with `[streaming] tls`.
async fn serve_tcp(inner: Arc<Inner>, tcp: TcpStream, peer: SocketAddr) {
    let _active = Active::new(&inner);
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(%error, %peer, "set TCP_NODELAY on a streaming connection");
    }
    let Some(acceptor) = inner.tls.clone() else {
        return serve_connection(inner, tcp, peer).await;
    };
    match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => serve_connection(inner, tls, peer).await,
        Ok(Err(error)) => tracing::debug!(%error, %peer, "streaming TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "streaming TLS handshake timed out"),
    }
}

async fn serve_connection<S>(inner: Arc<Inner>, io: S, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let upgrade: Arc<Mutex<Option<Upgrade>>> = Arc::default();
    let service = {
        let inner = inner.clone();
        let upgrade = upgrade.clone();
        service_fn(move |mut request: hyper::Request<HyperBody>| {
            let routed = route(&inner.tokens, &request);
            tracing::debug!(
                %peer,
                method = %request.method(),
                path = request.uri().path(),
                status = routed.response.status().as_u16(),
                "streaming request"
            );
            if let Some(plan) = routed.plan {
                let on_upgrade = hyper::upgrade::on(&mut request);
                *super::lock(&upgrade) = Some((on_upgrade, plan));
            }
            std::future::ready(Ok::<_, Infallible>(routed.response))
        })
    };
    let mut shutdown = inner.shutdown.subscribe();
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        _ = super::shutdown_requested(&mut shutdown) => {
            connection.as_mut().graceful_shutdown();
            connection.as_mut().await
        }
    };
    if let Err(error) = served {
        tracing::debug!(%error, %peer, "streaming connection ended with an error");
    }
    let pending = super::lock(&upgrade).take();
    let Some((on_upgrade, plan)) = pending else {
        return;
    };
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(error) => {
            tracing::debug!(%error, %peer, "streaming upgrade did not complete");
            return;
        }
    };
    let target = plan.target_id().to_string();
    let (key, closed) = inner.sessions.register(&target);
    let _registered = Registered {
        registry: &inner.sessions,
        target,
        key,
    };
    let context = SessionContext {
        backend: inner.backend.clone(),
        creation_timeout: inner.config.stream_creation_timeout(),
        idle_timeout: inner.config.stream_idle_timeout(),
        shutdown: closed,
        peer,
    };
    run_plan(context, TokioIo::new(upgraded), plan).await;
}
