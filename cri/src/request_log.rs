//! One span per gRPC request with the RPC's name, its outcome (the gRPC code) and its
//! duration; the one place every request passes through.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tower::{Layer, Service};
use tracing::Instrument;
use tracing::instrument::Instrumented;

/// Wraps a gRPC service so that every request is logged.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestLogLayer;

impl<S> Layer<S> for RequestLogLayer {
    type Service = RequestLog<S>;

    fn layer(&self, inner: S) -> RequestLog<S> {
        RequestLog { inner }
    }
}

/// The service [`RequestLogLayer`] makes.
#[derive(Debug, Clone)]
pub struct RequestLog<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RequestLog<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Error: std::fmt::Display,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<Logged<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let method = rpc_name(request.uri().path()).to_string();
        let span = tracing::info_span!("rpc", method = %method);
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Logged {
            inner: future,
            started: Instant::now(),
            method,
        }
        .instrument(span)
    }
}

pin_project_lite::pin_project! {
    /// The inner service's future, logging the outcome when it completes.
    pub struct Logged<F> {
        #[pin]
        inner: F,
        started: Instant,
        method: String,
    }
}

impl<F, ResBody, E> Future for Logged<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    E: std::fmt::Display,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let duration_ms = this.started.elapsed().as_secs_f64() * 1000.0;
        match &result {
            Ok(response) => {
                let (code, message) = grpc_outcome(response.headers());
                if let Some(metrics) = crate::agent_metrics::get() {
                    metrics.request(this.method, code, duration_ms / 1000.0);
                }
                if code == tonic::Code::Ok {
                    tracing::debug!(code = ?code, duration_ms, "request done");
                } else {
                    tracing::info!(code = ?code, message = %message, duration_ms, "request failed");
                }
            }
            Err(error) => {
                tracing::warn!(error = %error, duration_ms, "request failed in transport");
            }
        }
        Poll::Ready(result)
    }
}

/// `/runtime.v1.RuntimeService/Version` -> `Version`.
fn rpc_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The gRPC code of a unary response. Errors travel in the headers (a trailers-only
/// response); a response without `grpc-status` in its headers carries a successful body.
fn grpc_outcome(headers: &http::HeaderMap) -> (tonic::Code, String) {
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32);
    let message = headers
        .get("grpc-message")
        .map(|v| percent_decode(v.as_bytes()))
        .unwrap_or_default();
    (code, message)
}

/// gRPC percent-encodes `grpc-message`; logs should read as plain text.
fn percent_decode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_rpc_name_from_path() {
        assert_eq!(rpc_name("/runtime.v1.RuntimeService/Version"), "Version");
        assert_eq!(rpc_name("weird"), "weird");
    }

    #[test]
    fn test_grpc_outcome_reads_error_headers() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(grpc_outcome(&headers).0, tonic::Code::Ok);
        headers.insert("grpc-status", http::HeaderValue::from_static("12"));
        headers.insert("grpc-message", http::HeaderValue::from_static("not%20yet%"));
        assert_eq!(
            grpc_outcome(&headers),
            (tonic::Code::Unimplemented, "not yet%".to_string())
        );
    }
}
