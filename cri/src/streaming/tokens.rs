//! Single-use tokens: the last path segment of a streaming URL, standing for the Exec, Attach
//! or PortForward request it was made for.
//!
//! As in kubelet's streaming library (`request_cache.go`): a token lives for a TTL (1 minute by
//! default), is removed when used (used or expired, a second request gets 404), and at most a
//! fixed number are outstanding, so a caller that asks for URLs it never uses cannot grow the
//! table without bound. Ours are 128 random bits (kubelet's are 48).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::Error;
use super::backend::{AttachTarget, ExecTarget, PortForwardTarget};

/// Random bytes per token (22 characters in URL-safe base64).
const TOKEN_BYTES: usize = 16;

/// Which endpoint a request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestKind {
    Exec,
    Attach,
    PortForward,
}

impl RequestKind {
    /// The first path segment of its URL.
    pub(crate) fn path(self) -> &'static str {
        match self {
            RequestKind::Exec => "exec",
            RequestKind::Attach => "attach",
            RequestKind::PortForward => "portforward",
        }
    }

    /// The kind whose URLs start with `/<segment>/`.
    pub(crate) fn from_path(segment: &str) -> Option<RequestKind> {
        match segment {
            "exec" => Some(RequestKind::Exec),
            "attach" => Some(RequestKind::Attach),
            "portforward" => Some(RequestKind::PortForward),
            _ => None,
        }
    }
}

/// A request waiting for its client to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PendingRequest {
    Exec(ExecTarget),
    Attach(AttachTarget),
    PortForward(PortForwardTarget),
}

impl PendingRequest {
    pub(crate) fn kind(&self) -> RequestKind {
        match self {
            PendingRequest::Exec(_) => RequestKind::Exec,
            PendingRequest::Attach(_) => RequestKind::Attach,
            PendingRequest::PortForward(_) => RequestKind::PortForward,
        }
    }
}

/// The outstanding tokens.
pub(crate) struct TokenCache {
    ttl: Duration,
    max: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_token: HashMap<String, Entry>,
    /// The same entries by expiry (and insertion order), for removing the expired ones.
    by_expiry: BTreeMap<(Instant, u64), String>,
    next_seq: u64,
}

struct Entry {
    key: (Instant, u64),
    request: PendingRequest,
}

impl TokenCache {
    /// Tokens valid for `ttl`, at most `max` outstanding.
    pub(crate) fn new(ttl: Duration, max: usize) -> TokenCache {
        TokenCache {
            ttl,
            max,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Stores `request` and returns its new token; fails when `max` tokens are outstanding.
    pub(crate) fn insert(&self, request: PendingRequest) -> Result<String, Error> {
        let now = Instant::now();
        let mut inner = super::lock(&self.inner);
        inner.remove_expired(now);
        if inner.by_token.len() >= self.max {
            tracing::warn!(max = self.max, "too many in-flight streaming requests");
            return Err(Error::TooManyInFlight { max: self.max });
        }
        let token = loop {
            let token = random_token()?;
            if !inner.by_token.contains_key(&token) {
                break token;
            }
        };
        let key = (now + self.ttl, inner.next_seq);
        inner.next_seq += 1;
        inner.by_expiry.insert(key, token.clone());
        inner.by_token.insert(token.clone(), Entry { key, request });
        Ok(token)
    }

    /// Takes the request of `token` out: `None` if it is unknown, used or expired.
    pub(crate) fn consume(&self, token: &str) -> Option<PendingRequest> {
        let now = Instant::now();
        let mut inner = super::lock(&self.inner);
        let entry = inner.by_token.remove(token)?;
        inner.by_expiry.remove(&entry.key);
        (now < entry.key.0).then_some(entry.request)
    }

    /// Tokens outstanding (expired ones included until the next insert).
    pub(crate) fn len(&self) -> usize {
        super::lock(&self.inner).by_token.len()
    }
}

impl Inner {
    fn remove_expired(&mut self, now: Instant) {
        while let Some(entry) = self.by_expiry.first_entry() {
            if entry.key().0 > now {
                return;
            }
            let token = entry.remove();
            self.by_token.remove(&token);
        }
    }
}

fn random_token() -> Result<String, Error> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(Error::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(container_id: &str) -> PendingRequest {
        PendingRequest::Exec(ExecTarget {
            container_id: container_id.into(),
            cmd: vec!["true".into()],
            tty: false,
            stdin: false,
            stdout: true,
            stderr: false,
        })
    }

    #[test]
    fn test_tokens_are_single_use() {
        let cache = TokenCache::new(Duration::from_secs(60), 10);
        let token = cache.insert(exec("a")).unwrap();
        assert_eq!(token.len(), 22);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(cache.consume(&token), Some(exec("a")));
        assert_eq!(cache.consume(&token), None);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn test_tokens_are_distinct() {
        let cache = TokenCache::new(Duration::from_secs(60), 1000);
        let tokens: std::collections::HashSet<String> =
            (0..500).map(|_| cache.insert(exec("a")).unwrap()).collect();
        assert_eq!(tokens.len(), 500);
    }

    #[test]
    fn test_tokens_unknown_is_none() {
        let cache = TokenCache::new(Duration::from_secs(60), 10);
        assert_eq!(cache.consume("nope"), None);
        assert_eq!(cache.consume(""), None);
    }

    #[test]
    fn test_tokens_expire() {
        let cache = TokenCache::new(Duration::from_millis(30), 10);
        let token = cache.insert(exec("a")).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.consume(&token), None);
    }

    #[test]
    fn test_tokens_cap_then_room_after_use_and_expiry() {
        let cache = TokenCache::new(Duration::from_millis(50), 3);
        let first = cache.insert(exec("1")).unwrap();
        cache.insert(exec("2")).unwrap();
        cache.insert(exec("3")).unwrap();
        let err = cache.insert(exec("4")).unwrap_err();
        assert!(matches!(err, Error::TooManyInFlight { max: 3 }), "{err}");
        assert_eq!(
            err.to_string(),
            "too many in-flight streaming requests (at most 3)"
        );
        // Using one makes room.
        cache.consume(&first).unwrap();
        cache.insert(exec("5")).unwrap();
        // Expired ones are dropped at the next insert.
        std::thread::sleep(Duration::from_millis(80));
        for i in 0..3 {
            cache.insert(exec(&i.to_string())).unwrap();
        }
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn test_request_kind_paths_round_trip() {
        for kind in [
            RequestKind::Exec,
            RequestKind::Attach,
            RequestKind::PortForward,
        ] {
            assert_eq!(RequestKind::from_path(kind.path()), Some(kind));
        }
        assert_eq!(RequestKind::from_path("logs"), None);
    }
}
