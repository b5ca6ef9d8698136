//! The agent's own metrics (`prometheus` crate): per-RPC request counts and latency by
//! method and code, image pull bytes and durations, containers created, started and
//! OOM-killed. One process-wide registry: the request layer records into it without a
//! handle on the agent.

use std::sync::OnceLock;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

/// The registered metrics.
pub struct AgentMetrics {
    registry: Registry,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    pull_bytes: IntCounter,
    pull_seconds: Histogram,
    containers_created: IntCounter,
    containers_started: IntCounter,
    containers_oom_killed: IntCounter,
}

/// Request latency buckets: 0.5 ms .. 60 s.
const REQUEST_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];
/// Pull duration buckets: 0.1 s .. 10 min.
const PULL_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

static METRICS: OnceLock<Option<AgentMetrics>> = OnceLock::new();

/// The process's metrics (`None` only if registering failed, which is a programming error
/// reported once in the log).
pub fn get() -> Option<&'static AgentMetrics> {
    METRICS
        .get_or_init(|| match AgentMetrics::new() {
            Ok(metrics) => Some(metrics),
            Err(error) => {
                tracing::error!(%error, "agent metrics could not be registered");
                None
            }
        })
        .as_ref()
}

impl AgentMetrics {
    fn new() -> Result<AgentMetrics, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "corral_grpc_requests_total",
                "CRI requests handled, by method and gRPC code.",
            ),
            &["method", "code"],
        )?;
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "corral_grpc_request_duration_seconds",
                "Time to answer a CRI request, by method.",
            )
            .buckets(REQUEST_BUCKETS.to_vec()),
            &["method"],
        )?;
        let pull_bytes = IntCounter::new(
            "corral_image_pull_bytes_total",
            "Compressed size (layers and config) of the images successful PullImage requests \
             answered with, including content already in the store.",
        )?;
        let pull_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "corral_image_pull_duration_seconds",
                "Time of PullImage requests that succeeded.",
            )
            .buckets(PULL_BUCKETS.to_vec()),
        )?;
        let containers_created =
            IntCounter::new("corral_containers_created_total", "Containers created.")?;
        let containers_started =
            IntCounter::new("corral_containers_started_total", "Containers started.")?;
        let containers_oom_killed = IntCounter::new(
            "corral_containers_oom_killed_total",
            "Containers whose exit was an out-of-memory kill.",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_seconds.clone()))?;
        registry.register(Box::new(pull_bytes.clone()))?;
        registry.register(Box::new(pull_seconds.clone()))?;
        registry.register(Box::new(containers_created.clone()))?;
        registry.register(Box::new(containers_started.clone()))?;
        registry.register(Box::new(containers_oom_killed.clone()))?;
        Ok(AgentMetrics {
            registry,
            requests,
            request_seconds,
            pull_bytes,
            pull_seconds,
            containers_created,
            containers_started,
            containers_oom_killed,
        })
    }

    /// One answered CRI request.
    pub fn request(&self, method: &str, code: tonic::Code, seconds: f64) {
        self.requests
            .with_label_values(&[method, code_name(code)])
            .inc();
        self.request_seconds
            .with_label_values(&[method])
            .observe(seconds);
    }

    /// One successful pull.
    pub fn image_pulled(&self, bytes: u64, seconds: f64) {
        self.pull_bytes.inc_by(bytes);
        self.pull_seconds.observe(seconds);
    }

    pub fn container_created(&self) {
        self.containers_created.inc();
    }

    pub fn container_started(&self) {
        self.containers_started.inc();
    }

    pub fn container_oom_killed(&self) {
        self.containers_oom_killed.inc();
    }

    /// Appends the registry in the text format.
    pub fn encode(&self, out: &mut String) {
        if let Err(error) = prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), out)
        {
            tracing::warn!(%error, "encoding the agent metrics failed");
        }
    }
}

/// The gRPC code as its canonical upper-case name (`OK`, `NOT_FOUND`, ...).
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_agent_metrics_encode_requests_by_method_and_code() {
        let metrics = get().unwrap();
        metrics.request("Version", tonic::Code::Ok, 0.002);
        metrics.request("Version", tonic::Code::NotFound, 0.001);
        metrics.container_created();
        let mut out = String::new();
        metrics.encode(&mut out);
        assert!(out.contains("corral_grpc_requests_total{code=\"OK\",method=\"Version\"}"));
        assert!(out.contains("corral_grpc_requests_total{code=\"NOT_FOUND\",method=\"Version\"}"));
        assert!(out.contains(
            "corral_grpc_request_duration_seconds_bucket{method=\"Version\",le=\"0.0025\"}"
        ));
        assert!(out.contains("# TYPE corral_containers_created_total counter"));
    }
}
