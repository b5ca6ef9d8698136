//! The Prometheus endpoint: `GET /metrics` answers the cAdvisor-named metrics of running
//! containers and pods (read when scraped, in one blocking task), gauges of the agent's
//! pods and containers, and the agent's own request, pull and container counters.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use corral_metrics::exposition::{Family, Kind};

use crate::agent::Agent;
use crate::container_record::ContainerPhase;
use crate::sandbox_record::SandboxState;

/// The text format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds the configured address (`None` when the endpoint is off).
pub async fn bind(
    config: &corral_metrics::Config,
) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    if !config.enabled {
        return Ok(None);
    }
    let address = config.socket_address()?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("bind the metrics endpoint on {address} ([metrics] address)"))?;
    Ok(Some(listener))
}

/// Serves `/metrics` on `listener` until the task is dropped or aborted.
pub async fn serve(listener: tokio::net::TcpListener, agent: Arc<Agent>) {
    let address = listener.local_addr().ok();
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .with_state(agent);
    tracing::info!(address = ?address, "metrics endpoint serving /metrics");
    if let Err(error) = axum::serve(listener, app).await {
        tracing::error!(%error, "metrics endpoint failed");
    }
}

async fn metrics(State(agent): State<Arc<Agent>>) -> Response {
    let sandboxes = agent.sandboxes.list();
    let containers = agent.containers.list();
    let mut out = String::with_capacity(64 * 1024);
    write_inventory(&mut out, &sandboxes, &containers);
    let scrape = Arc::clone(&agent);
    let cadvisor =
        tokio::task::spawn_blocking(move || scrape.stats.prometheus(&sandboxes, &containers)).await;
    match cadvisor {
        Ok(text) => out.push_str(&text),
        Err(error) => {
            tracing::warn!(%error, "metrics scrape task failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "scrape failed\n").into_response();
        }
    }
    if let Some(own) = crate::agent_metrics::get() {
        own.encode(&mut out);
    }
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], out).into_response()
}

/// Gauges of what the agent holds: pods by state, containers by state.
fn write_inventory(
    out: &mut String,
    sandboxes: &[crate::sandbox_record::SandboxRecord],
    containers: &[crate::container_record::ContainerRecord],
) {
    let ready = sandboxes
        .iter()
        .filter(|s| s.state == SandboxState::Ready)
        .count();
    let mut pods = Family::start(out, "corral_pods", Kind::Gauge, "Pod sandboxes by state.");
    pods.sample(&[("state", "ready")], ready as f64);
    pods.sample(&[("state", "notready")], (sandboxes.len() - ready) as f64);
    let count = |phase| containers.iter().filter(|c| c.phase == phase).count() as f64;
    let mut family = Family::start(
        out,
        "corral_containers",
        Kind::Gauge,
        "Containers by state.",
    );
    family.sample(&[("state", "created")], count(ContainerPhase::Created));
    family.sample(&[("state", "running")], count(ContainerPhase::Running));
    family.sample(&[("state", "exited")], count(ContainerPhase::Exited));
}

/// The address a listener got (for the log and `crictl info`).
pub fn local_address(listener: &tokio::net::TcpListener) -> Option<SocketAddr> {
    listener.local_addr().ok()
}
