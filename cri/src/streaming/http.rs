//! The HTTP/1.1 half of a streaming request: route, token, subprotocol negotiation and the
//! `101 Switching Protocols` answer. A request with `Upgrade: websocket` is handed to
//! `websocket/handshake.rs` once its token is consumed; every other one is a SPDY upgrade,
//! answered here. What follows the upgrade is in `remote_command.rs` and `port_forward.rs`
//! (SPDY) and `websocket/` (WebSocket).
//!
//! Behaviour taken from kubelet's streaming library (`server.go`) and apimachinery's
//! `httpstream.Handshake` and `spdy.UpgradeResponse`:
//! - `/exec/{token}`, `/attach/{token}`, `/portforward/{token}`, for GET and POST (WebSocket:
//!   GET only);
//! - the token is consumed first: unknown, used or expired (or made for another endpoint)
//!   answers `404` with Go's `404 page not found`, and a request that fails later still used it;
//! - no common subprotocol answers `403` with one `X-Accepted-Stream-Protocol-Versions` header
//!   per protocol the server speaks and the message `unable to upgrade: unable to negotiate
//!   protocol: client supports [..], server accepts [..]`;
//! - `Connection` must contain `upgrade` and `Upgrade` must contain `spdy/3.1` (both compared
//!   without case), else `400 unable to upgrade: missing upgrade headers in request`;
//! - the answer is `101` with `Connection: Upgrade`, `Upgrade: SPDY/3.1` and the chosen
//!   `X-Stream-Protocol-Version`.
//!
//! One deviation: a SPDY request without `X-Stream-Protocol-Version` gets `400` with kubelet's
//! message (kubelet logs it and answers an empty 200, which clients report badly).

use http::header::{CONNECTION, CONTENT_TYPE, HeaderMap, HeaderValue, UPGRADE};
use http::{Method, Request, Response, StatusCode};

use super::backend::{AttachTarget, ExecTarget, PortForwardTarget};
use super::protocol::{
    HEADER_ACCEPTED_PROTOCOL_VERSIONS, HEADER_PROTOCOL_VERSION, PORT_FORWARD_PROTOCOL,
    RemoteCommandProtocol, UPGRADE_SPDY,
};
use super::tokens::{PendingRequest, RequestKind, TokenCache};
use super::websocket::{self, WebSocketPlan};

/// What to run on the connection once it is upgraded.
#[derive(Debug)]
pub(crate) enum Plan {
    Exec(ExecTarget, RemoteCommandProtocol),
    Attach(AttachTarget, RemoteCommandProtocol),
    PortForward(PortForwardTarget),
    /// Any of the three over WebSocket.
    WebSocket(WebSocketPlan),
}

impl Plan {
    /// The container (exec, attach) or pod sandbox (port-forward) the session serves.
    pub(crate) fn target_id(&self) -> &str {
        match self {
            Plan::Exec(target, _) => &target.container_id,
            Plan::Attach(target, _) => &target.container_id,
            Plan::PortForward(target) => &target.sandbox_id,
            Plan::WebSocket(plan) => plan.target_id(),
        }
    }

    /// The endpoint, for logs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Plan::Exec(..) => RequestKind::Exec.path(),
            Plan::Attach(..) => RequestKind::Attach.path(),
            Plan::PortForward(_) => RequestKind::PortForward.path(),
            Plan::WebSocket(plan) => plan.kind(),
        }
    }
}

/// The answer to a request, and the session to run if it is a 101.
pub(crate) struct Routed {
    pub(crate) response: Response<String>,
    pub(crate) plan: Option<Plan>,
}

/// Answers `request`: an error, or `101` and the session to run after the upgrade.
pub(crate) fn route<B>(tokens: &TokenCache, request: &Request<B>) -> Routed {
    let path = request.uri().path();
    let Some((kind, token)) = parse_path(path) else {
        return refuse(StatusCode::NOT_FOUND, "404 page not found");
    };
    if request.method() != Method::GET && request.method() != Method::POST {
        return refuse(StatusCode::METHOD_NOT_ALLOWED, "405: Method Not Allowed");
    }
    let pending = match tokens.consume(token) {
        Some(pending) if pending.kind() == kind => pending,
        other => {
            tracing::debug!(
                endpoint = kind.path(),
                used_for_another = other.is_some(),
                "streaming token unknown, used or expired"
            );
            return refuse(StatusCode::NOT_FOUND, "404 page not found");
        }
    };
    if websocket::handshake::is_websocket(request) {
        return websocket::handshake::upgrade(pending, request);
    }
    let headers = request.headers();
    let offered = offered_protocols(headers, HEADER_PROTOCOL_VERSION);
    if offered.is_empty() {
        return refuse(
            StatusCode::BAD_REQUEST,
            &format!("unable to upgrade: {HEADER_PROTOCOL_VERSION} is required"),
        );
    }
    let accepted: Vec<&'static str> = match kind {
        RequestKind::PortForward => vec![PORT_FORWARD_PROTOCOL],
        RequestKind::Exec | RequestKind::Attach => RemoteCommandProtocol::ALL
            .iter()
            .map(|protocol| protocol.name())
            .collect(),
    };
    let Some(chosen) = negotiate(&offered, &accepted) else {
        let message = format!(
            "unable to upgrade: unable to negotiate protocol: client supports [{}], server accepts [{}]",
            offered.join(" "),
            accepted.join(" ")
        );
        tracing::debug!(offered = ?offered, "no common streaming protocol");
        let mut routed = refuse(StatusCode::FORBIDDEN, &message);
        for protocol in accepted {
            routed.response.headers_mut().append(
                HEADER_ACCEPTED_PROTOCOL_VERSIONS,
                HeaderValue::from_static(protocol),
            );
        }
        return routed;
    };
    if !has_token(headers, CONNECTION, "upgrade") || !has_token(headers, UPGRADE, "spdy/3.1") {
        return refuse(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request",
        );
    }
    let plan = match pending {
        PendingRequest::Exec(target) => Plan::Exec(target, remote_command_protocol(chosen)),
        PendingRequest::Attach(target) => Plan::Attach(target, remote_command_protocol(chosen)),
        PendingRequest::PortForward(target) => Plan::PortForward(target),
    };
    let mut response = Response::new(String::new());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let answer = response.headers_mut();
    answer.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    answer.insert(UPGRADE, HeaderValue::from_static(UPGRADE_SPDY));
    answer.insert(HEADER_PROTOCOL_VERSION, HeaderValue::from_static(chosen));
    Routed {
        response,
        plan: Some(plan),
    }
}

/// `/<kind>/<token>`, nothing more.
fn parse_path(path: &str) -> Option<(RequestKind, &str)> {
    let rest = path.strip_prefix('/')?;
    let (kind, token) = rest.split_once('/')?;
    if token.is_empty() || token.contains('/') {
        return None;
    }
    Some((RequestKind::from_path(kind)?, token))
}

/// Every protocol in the `header` headers (`X-Stream-Protocol-Version`, or WebSocket's
/// `Sec-WebSocket-Protocol`), in order, split at commas.
pub(crate) fn offered_protocols(headers: &HeaderMap, header: &str) -> Vec<String> {
    headers
        .get_all(header)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|protocol| !protocol.is_empty())
        .map(str::to_string)
        .collect()
}

/// The first protocol of the client's (its preference order) that the server accepts.
pub(crate) fn negotiate(offered: &[String], accepted: &[&'static str]) -> Option<&'static str> {
    offered
        .iter()
        .find_map(|protocol| accepted.iter().copied().find(|a| a == protocol))
}

fn remote_command_protocol(name: &str) -> RemoteCommandProtocol {
    // `name` came out of `RemoteCommandProtocol::ALL`.
    RemoteCommandProtocol::from_name(name).unwrap_or(RemoteCommandProtocol::V1)
}

/// Whether a header of `name` contains `token` (ASCII case-insensitive substring, as Go does).
pub(super) fn has_token(headers: &HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .to_str()
            .map(|value| value.to_ascii_lowercase().contains(token))
            .unwrap_or(false)
    })
}

/// A plain-text error answer, as Go's `http.Error` writes it, that also closes the connection
/// (a client gets one request per connection; the 101 must not say `close`, see `server.rs`).
pub(super) fn refuse(status: StatusCode, message: &str) -> Routed {
    let mut response = Response::new(format!("{message}\n"));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        "X-Content-Type-Options",
        HeaderValue::from_static("nosniff"),
    );
    Routed {
        response,
        plan: None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn cache_with(pending: PendingRequest) -> (TokenCache, String) {
        let cache = TokenCache::new(Duration::from_secs(60), 10);
        let token = cache.insert(pending).unwrap();
        (cache, token)
    }

    fn exec() -> PendingRequest {
        PendingRequest::Exec(ExecTarget {
            container_id: "c1".into(),
            cmd: vec!["ls".into()],
            tty: false,
            stdin: false,
            stdout: true,
            stderr: true,
        })
    }

    fn spdy_request(path: &str, protocols: &[&str]) -> Request<()> {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(CONNECTION, "Upgrade")
            .header(UPGRADE, "SPDY/3.1");
        for protocol in protocols {
            builder = builder.header(HEADER_PROTOCOL_VERSION, *protocol);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn test_route_upgrades_with_client_preference() {
        let (cache, token) = cache_with(exec());
        let request = spdy_request(
            &format!("/exec/{token}"),
            &["v2.channel.k8s.io, v4.channel.k8s.io", "channel.k8s.io"],
        );
        let routed = route(&cache, &request);
        assert_eq!(routed.response.status(), StatusCode::SWITCHING_PROTOCOLS);
        let headers = routed.response.headers();
        assert_eq!(headers[UPGRADE], "SPDY/3.1");
        // Exactly this: client-go drops a 101 whose Connection also says `close`.
        assert_eq!(headers.get_all(CONNECTION).iter().count(), 1);
        assert_eq!(headers[CONNECTION], "Upgrade");
        assert_eq!(headers[HEADER_PROTOCOL_VERSION], "v2.channel.k8s.io");
        assert!(matches!(
            routed.plan,
            Some(Plan::Exec(_, RemoteCommandProtocol::V2))
        ));
    }

    #[test]
    fn test_route_unknown_token_and_path_are_404() {
        let (cache, token) = cache_with(exec());
        for path in [
            "/exec/nope".to_string(),
            "/".to_string(),
            "/logs/x".to_string(),
            format!("/exec/{token}/more"),
            format!("/attach/{token}"),
        ] {
            let routed = route(&cache, &spdy_request(&path, &["v4.channel.k8s.io"]));
            assert_eq!(routed.response.status(), StatusCode::NOT_FOUND, "{path}");
            assert_eq!(routed.response.body(), "404 page not found\n");
            assert!(routed.plan.is_none());
        }
        // The attach request above used the exec token up.
        let again = spdy_request(&format!("/exec/{token}"), &["v4.channel.k8s.io"]);
        assert_eq!(
            route(&cache, &again).response.status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn test_route_wrong_method_is_405() {
        let (cache, token) = cache_with(exec());
        let mut request = spdy_request(&format!("/exec/{token}"), &["v4.channel.k8s.io"]);
        *request.method_mut() = Method::PUT;
        let routed = route(&cache, &request);
        assert_eq!(routed.response.status(), StatusCode::METHOD_NOT_ALLOWED);
        // The token was not used by a request that could not be routed.
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn test_route_no_common_protocol_is_403_with_accepted_list() {
        let (cache, token) = cache_with(exec());
        let request = spdy_request(&format!("/exec/{token}"), &["v9.channel.k8s.io"]);
        let routed = route(&cache, &request);
        assert_eq!(routed.response.status(), StatusCode::FORBIDDEN);
        let accepted: Vec<_> = routed
            .response
            .headers()
            .get_all(HEADER_ACCEPTED_PROTOCOL_VERSIONS)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        assert_eq!(
            accepted,
            [
                "v4.channel.k8s.io",
                "v3.channel.k8s.io",
                "v2.channel.k8s.io",
                "channel.k8s.io"
            ]
        );
        assert!(
            routed.response.body().starts_with(
                "unable to upgrade: unable to negotiate protocol: client supports [v9.channel.k8s.io]"
            ),
            "{}",
            routed.response.body()
        );
    }

    #[test]
    fn test_route_missing_headers_are_400() {
        let (cache, token) = cache_with(exec());
        let request = Request::builder()
            .uri(format!("/exec/{token}"))
            .body(())
            .unwrap();
        let routed = route(&cache, &request);
        assert_eq!(routed.response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            routed.response.body(),
            "unable to upgrade: X-Stream-Protocol-Version is required\n"
        );

        let (cache, token) = cache_with(exec());
        let request = Request::builder()
            .uri(format!("/exec/{token}"))
            .header(HEADER_PROTOCOL_VERSION, "v4.channel.k8s.io")
            .body(())
            .unwrap();
        let routed = route(&cache, &request);
        assert_eq!(routed.response.status(), StatusCode::BAD_REQUEST);
        assert!(routed.response.body().contains("missing upgrade headers"));
    }

    #[test]
    fn test_route_port_forward_protocol() {
        let pending = PendingRequest::PortForward(PortForwardTarget {
            sandbox_id: "s1".into(),
            ports: vec![80],
        });
        let (cache, token) = cache_with(pending);
        let request = spdy_request(&format!("/portforward/{token}"), &[PORT_FORWARD_PROTOCOL]);
        let routed = route(&cache, &request);
        assert_eq!(routed.response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            routed.response.headers()[HEADER_PROTOCOL_VERSION],
            PORT_FORWARD_PROTOCOL
        );
        assert!(matches!(routed.plan, Some(Plan::PortForward(_))));
    }

    #[test]
    fn test_route_websocket_upgrades_after_the_token() {
        let (cache, token) = cache_with(exec());
        let request = || {
            Request::builder()
                .uri(format!("/exec/{token}"))
                .header(CONNECTION, "Upgrade")
                .header(UPGRADE, "WebSocket")
                .header("Sec-WebSocket-Version", "13")
                .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
                .header("Sec-WebSocket-Protocol", "v5.channel.k8s.io")
                .body(())
                .unwrap()
        };
        let routed = route(&cache, &request());
        assert_eq!(routed.response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(routed.response.headers()[UPGRADE], "websocket");
        assert!(matches!(routed.plan, Some(Plan::WebSocket(_))));
        // Single use, like SPDY.
        let again = route(&cache, &request());
        assert_eq!(again.response.status(), StatusCode::NOT_FOUND);
    }
}
