//! `corral serve`: the gRPC server on the unix socket, and an orderly shutdown.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
use tokio::signal::unix::{SignalKind, signal};
use tokio_stream::wrappers::UnixListenerStream;

use crate::agent::Agent;
use crate::config::Config;
use crate::metrics_server;
use crate::request_log::RequestLogLayer;
use crate::service::CriService;
use crate::socket;

/// kubelet's gRPC message limit; tonic's default is 4 MiB.
pub const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// Serves until SIGTERM or SIGINT, then stops accepting, lets in-flight requests finish for
/// at most `shutdown_timeout_seconds`, removes the socket and returns. Containers are never
/// touched here.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let grace = Duration::from_secs(config.shutdown_timeout_seconds);
    let socket_path = config.socket.clone();
    let agent = Arc::new(Agent::open(config).await?);
    let metrics = match metrics_server::bind(&agent.config.metrics).await? {
        Some(listener) => {
            if let Some(address) = metrics_server::local_address(&listener) {
                let _ = agent.metrics_address.set(address);
            }
            Some(tokio::spawn(metrics_server::serve(
                listener,
                Arc::clone(&agent),
            )))
        }
        None => None,
    };
    let bound = tokio::task::spawn_blocking(move || socket::bind(&socket_path))
        .await
        .context("bind task failed")??;
    let listener = tokio::net::UnixListener::from_std(
        bound
            .listener
            .try_clone()
            .context("duplicate socket listener")?,
    )
    .context("register socket with the runtime")?;

    let mut terminate = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("install SIGINT handler")?;

    if let Some(mut exits) = agent.containers.take_exit_events() {
        let agent = Arc::clone(&agent);
        tokio::spawn(async move {
            while let Some(id) = exits.recv().await {
                if let Err(error) = agent.containers.collect_exit(&id).await {
                    tracing::warn!(container = %id, %error, "could not record exit");
                }
            }
        });
    }
    let backend = Arc::new(crate::streaming_backend::RuntimeBackend::new(
        Arc::downgrade(&agent),
    ));
    let streaming =
        crate::streaming::StreamingServer::start(agent.config.streaming.clone(), backend)
            .await
            .context("start the streaming server ([streaming] address)")?;
    tracing::info!(url = %streaming.base_url(), "streaming server listening");
    let _ = agent.streaming.set(streaming);
    let service = CriService::new(Arc::clone(&agent));
    let runtime_service = RuntimeServiceServer::new(service.clone())
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);
    let image_service = ImageServiceServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .layer(RequestLogLayer)
        .add_service(runtime_service)
        .add_service(image_service)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
            let _ = stop_rx.await;
        });
    tokio::pin!(server);
    tracing::info!(socket = %bound.path.display(), version = env!("CARGO_PKG_VERSION"),
        "corral is serving");

    let result = tokio::select! {
        result = &mut server => result.context("gRPC server failed"),
        signal_name = async {
            tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            }
        } => {
            tracing::info!(signal = signal_name, "shutting down: no new requests");
            let _ = stop_tx.send(());
            match tokio::time::timeout(grace, &mut server).await {
                Ok(result) => result.context("gRPC server failed"),
                Err(_) => {
                    tracing::warn!(grace_seconds = grace.as_secs(),
                        "in-flight requests did not finish in time; exiting anyway");
                    Ok(())
                }
            }
        }
    };
    // Removed containers whose cleanup still runs: finish it (bounded by the grace time).
    if tokio::time::timeout(grace, agent.containers.settle(None))
        .await
        .is_err()
    {
        tracing::warn!("container teardowns still running at exit; the next start sweeps them");
    }
    if let Some(streaming) = agent.streaming.get() {
        streaming.shutdown().await;
    }
    bound.remove_file();
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    tracing::info!("corral stopped");
    result
}
