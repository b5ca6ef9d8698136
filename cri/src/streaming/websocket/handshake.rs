//! The WebSocket opening handshake (RFC 6455 section 4.2) on a streaming URL, after the token
//! has been consumed, with subprotocol negotiation as kubelet's `wsstream` does it:
//!
//! - the client's `Sec-WebSocket-Protocol` list is read in its order of preference and the
//!   first one the endpoint accepts wins; an exec or attach request without the header gets
//!   the unnamed binary v1 protocol, as kubelet's `""` entry does;
//! - exec and attach accept the `channel.k8s.io` family ([`ChannelProtocol::NAMED`]);
//!   port-forward accepts `SPDY/3.1+portforward.k8s.io` (SPDY tunnelled in binary messages,
//!   what crictl 1.32's `--transport websocket` dials), and kubelet's channel pairs on
//!   `v4.channel.k8s.io`, `v4.base64.channel.k8s.io` or no subprotocol;
//! - no common subprotocol answers `403` (as `golang.org/x/net/websocket` does when the
//!   handshake hook fails), listing what is accepted;
//! - not GET: `405`; no `Connection: upgrade`, a `Sec-WebSocket-Version` other than 13 (then
//!   with `Sec-WebSocket-Version: 13`) or a `Sec-WebSocket-Key` that is not 16 bytes in base64:
//!   `400`;
//! - the answer is `101` with `Upgrade: websocket`, `Connection: Upgrade`,
//!   `Sec-WebSocket-Accept` and the chosen `Sec-WebSocket-Protocol` (none for the unnamed one).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::header::{
    CONNECTION, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{Method, Request, Response, StatusCode};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::super::http::{Plan, Routed, has_token, negotiate, offered_protocols, refuse};
use super::super::protocol::{
    ChannelProtocol, HEADER_ACCEPTED_PROTOCOL_VERSIONS, PORT_FORWARD_TUNNEL_PROTOCOL,
    UPGRADE_WEBSOCKET,
};
use super::super::tokens::PendingRequest;
use super::WebSocketPlan;

/// Answers a WebSocket upgrade request for `pending` (its token already consumed).
pub(crate) fn upgrade<B>(pending: PendingRequest, request: &Request<B>) -> Routed {
    let headers = request.headers();
    if request.method() != Method::GET {
        return refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "unable to upgrade: websocket requires GET",
        );
    }
    if !has_token(headers, CONNECTION, "upgrade") {
        return refuse(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request",
        );
    }
    if headers
        .get(SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        let mut routed = refuse(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: unsupported Sec-WebSocket-Version (want 13)",
        );
        routed
            .response
            .headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return routed;
    }
    let Some(key) = headers.get(SEC_WEBSOCKET_KEY).filter(|key| valid_key(key)) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing or invalid Sec-WebSocket-Key",
        );
    };
    let offered = offered_protocols(headers, SEC_WEBSOCKET_PROTOCOL.as_str());
    let accepted: Vec<&'static str> = match pending {
        PendingRequest::PortForward(_) => vec![
            PORT_FORWARD_TUNNEL_PROTOCOL,
            ChannelProtocol::V4.name(),
            ChannelProtocol::V4Base64.name(),
        ],
        PendingRequest::Exec(_) | PendingRequest::Attach(_) => {
            ChannelProtocol::NAMED.iter().map(|p| p.name()).collect()
        }
    };
    let chosen = match negotiate(&offered, &accepted) {
        Some(chosen) => chosen,
        None if offered.is_empty() => "",
        None => {
            let message = format!(
                "unable to upgrade: unable to negotiate protocol: client supports [{}], server accepts [{}]",
                offered.join(" "),
                accepted.join(" ")
            );
            tracing::debug!(offered = ?offered, "no common websocket subprotocol");
            let mut routed = refuse(StatusCode::FORBIDDEN, &message);
            for protocol in accepted {
                routed.response.headers_mut().append(
                    HEADER_ACCEPTED_PROTOCOL_VERSIONS,
                    HeaderValue::from_static(protocol),
                );
            }
            return routed;
        }
    };
    let channels = ChannelProtocol::from_name(chosen).unwrap_or(ChannelProtocol::Unnamed);
    let plan = match pending {
        PendingRequest::Exec(target) => WebSocketPlan::Exec(target, channels),
        PendingRequest::Attach(target) => WebSocketPlan::Attach(target, channels),
        PendingRequest::PortForward(target) if chosen == PORT_FORWARD_TUNNEL_PROTOCOL => {
            WebSocketPlan::PortForward(target)
        }
        PendingRequest::PortForward(target) => WebSocketPlan::PortForwardChannels(target, channels),
    };
    let accept = derive_accept_key(key.as_bytes());
    let mut response = Response::new(String::new());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let answer = response.headers_mut();
    answer.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    answer.insert(UPGRADE, HeaderValue::from_static(UPGRADE_WEBSOCKET));
    match HeaderValue::from_str(&accept) {
        Ok(value) => answer.insert(SEC_WEBSOCKET_ACCEPT, value),
        // Base64 text is always a valid header value.
        Err(_) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, "websocket accept key"),
    };
    if !chosen.is_empty() {
        answer.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(chosen));
    }
    Routed {
        response,
        plan: Some(Plan::WebSocket(plan)),
    }
}

/// Whether this is a WebSocket upgrade request (`Upgrade: websocket`, any case).
pub(crate) fn is_websocket<B>(request: &Request<B>) -> bool {
    request.headers().get_all(UPGRADE).iter().any(|value| {
        value
            .as_bytes()
            .eq_ignore_ascii_case(UPGRADE_WEBSOCKET.as_bytes())
    })
}

/// A key is the base64 of 16 bytes (RFC 6455 section 4.2.1).
fn valid_key(key: &HeaderValue) -> bool {
    BASE64
        .decode(key.as_bytes())
        .map(|bytes| bytes.len() == 16)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::super::super::backend::{ExecTarget, PortForwardTarget};
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

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

    fn request(protocols: &[&str]) -> http::request::Builder {
        let mut builder = Request::builder()
            .method(Method::GET)
            .uri("/exec/t")
            .header(CONNECTION, "Upgrade")
            .header(UPGRADE, "websocket")
            .header(SEC_WEBSOCKET_VERSION, "13")
            .header(SEC_WEBSOCKET_KEY, KEY);
        for protocol in protocols {
            builder = builder.header(SEC_WEBSOCKET_PROTOCOL, *protocol);
        }
        builder
    }

    #[test]
    fn test_upgrade_answers_rfc_accept_and_client_preference() {
        let routed = upgrade(
            exec(),
            &request(&[
                "v9.channel.k8s.io, v4.base64.channel.k8s.io",
                "v5.channel.k8s.io",
            ])
            .body(())
            .unwrap(),
        );
        assert_eq!(routed.response.status(), StatusCode::SWITCHING_PROTOCOLS);
        let headers = routed.response.headers();
        // RFC 6455's own example key and answer.
        assert_eq!(
            headers[SEC_WEBSOCKET_ACCEPT],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(headers[UPGRADE], "websocket");
        assert_eq!(headers[CONNECTION], "Upgrade");
        assert_eq!(headers[SEC_WEBSOCKET_PROTOCOL], "v4.base64.channel.k8s.io");
        assert!(matches!(
            routed.plan,
            Some(Plan::WebSocket(WebSocketPlan::Exec(
                _,
                ChannelProtocol::V4Base64
            )))
        ));
    }

    #[test]
    fn test_upgrade_without_subprotocol_is_unnamed_v1() {
        let routed = upgrade(exec(), &request(&[]).body(()).unwrap());
        assert_eq!(routed.response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert!(
            routed
                .response
                .headers()
                .get(SEC_WEBSOCKET_PROTOCOL)
                .is_none()
        );
        assert!(matches!(
            routed.plan,
            Some(Plan::WebSocket(WebSocketPlan::Exec(
                _,
                ChannelProtocol::Unnamed
            )))
        ));
    }

    #[test]
    fn test_upgrade_no_common_subprotocol_is_403() {
        let routed = upgrade(exec(), &request(&["v3.channel.k8s.io"]).body(()).unwrap());
        assert_eq!(routed.response.status(), StatusCode::FORBIDDEN);
        assert!(routed.plan.is_none());
        assert_eq!(
            routed
                .response
                .headers()
                .get_all(HEADER_ACCEPTED_PROTOCOL_VERSIONS)
                .iter()
                .count(),
            5
        );
        // Port-forward: the SPDY tunnel or kubelet's v4 channel pairs, not v5.
        let forward = PendingRequest::PortForward(PortForwardTarget {
            sandbox_id: "s".into(),
            ports: vec![],
        });
        let routed = upgrade(forward, &request(&["v5.channel.k8s.io"]).body(()).unwrap());
        assert_eq!(routed.response.status(), StatusCode::FORBIDDEN);
        assert!(
            routed
                .response
                .body()
                .contains("SPDY/3.1+portforward.k8s.io")
        );
    }

    #[test]
    fn test_upgrade_port_forward_tunnel() {
        let forward = PendingRequest::PortForward(PortForwardTarget {
            sandbox_id: "s".into(),
            ports: vec![],
        });
        let routed = upgrade(
            forward,
            &request(&[PORT_FORWARD_TUNNEL_PROTOCOL]).body(()).unwrap(),
        );
        assert_eq!(routed.response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            routed.response.headers()[SEC_WEBSOCKET_PROTOCOL],
            PORT_FORWARD_TUNNEL_PROTOCOL
        );
        assert!(matches!(
            routed.plan,
            Some(Plan::WebSocket(WebSocketPlan::PortForward(_)))
        ));
        // Channel pairs: named v4, or no subprotocol at all (binary).
        for (offered, protocol) in [
            (&["v4.base64.channel.k8s.io"][..], ChannelProtocol::V4Base64),
            (&[][..], ChannelProtocol::Unnamed),
        ] {
            let forward = PendingRequest::PortForward(PortForwardTarget {
                sandbox_id: "s".into(),
                ports: vec![80],
            });
            let routed = upgrade(forward, &request(offered).body(()).unwrap());
            assert_eq!(routed.response.status(), StatusCode::SWITCHING_PROTOCOLS);
            match routed.plan {
                Some(Plan::WebSocket(WebSocketPlan::PortForwardChannels(_, chosen))) => {
                    assert_eq!(chosen, protocol);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn test_upgrade_bad_requests() {
        let post = request(&[]).method(Method::POST).body(()).unwrap();
        assert_eq!(
            upgrade(exec(), &post).response.status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        let mut old = request(&[]).body(()).unwrap();
        old.headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        let routed = upgrade(exec(), &old);
        assert_eq!(routed.response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(routed.response.headers()[SEC_WEBSOCKET_VERSION], "13");
        let mut bad_key = request(&[]).body(()).unwrap();
        bad_key
            .headers_mut()
            .insert(SEC_WEBSOCKET_KEY, HeaderValue::from_static("c2hvcnQ="));
        let routed = upgrade(exec(), &bad_key);
        assert_eq!(routed.response.status(), StatusCode::BAD_REQUEST);
        assert!(routed.response.body().contains("Sec-WebSocket-Key"));
        let mut no_connection = request(&[]).body(()).unwrap();
        no_connection.headers_mut().remove(CONNECTION);
        assert_eq!(
            upgrade(exec(), &no_connection).response.status(),
            StatusCode::BAD_REQUEST
        );
        assert!(is_websocket(&request(&[]).body(()).unwrap()));
    }
}
