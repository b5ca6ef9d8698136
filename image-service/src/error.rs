use std::path::PathBuf;

/// Errors of the image service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `[images]` section of the config file is invalid.
    #[error("invalid images config: {0}")]
    InvalidConfig(String),
    /// An image reference that cannot be parsed or normalised.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    /// A `hosts.toml` registry host configuration that cannot be used.
    #[error("invalid registry host config {path}: {reason}")]
    InvalidHostsConfig { path: PathBuf, reason: String },
    /// A layer archive that would write outside its directory or is otherwise refused.
    #[error("refused layer entry {entry:?}: {reason}")]
    HostileLayer { entry: String, reason: String },
    /// A layer archive that cannot be read.
    #[error("read layer archive: {0}")]
    LayerArchive(#[source] std::io::Error),
    /// A digest string that is not `sha256:<64 lowercase hex>`.
    #[error("invalid digest {0:?}")]
    InvalidDigest(String),
    /// Content did not hash to the digest that named it.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    /// Content did not have the size its descriptor said.
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        digest: String,
        expected: u64,
        actual: u64,
    },
    /// A manifest, index or image config that cannot be used.
    #[error("invalid manifest: {0}")]
    InvalidManifest(String),
    /// The registry has no such image (or tag).
    #[error("image {image} not found")]
    NotFound { image: String },
    /// The registry refused our credentials (or their absence).
    #[error("pull {image}: unauthorized: {message}")]
    Unauthorized { image: String, message: String },
    /// The registry failed in another way.
    #[error("pull {image}: {message}")]
    Registry { image: String, message: String },
    /// The image has no manifest for this node's platform.
    #[error("image {image} has no manifest for platform {platform}")]
    NoMatchingPlatform { image: String, platform: String },
    /// A download received nothing for too long.
    #[error("pull {image}: no progress for {seconds} seconds")]
    PullStalled { image: String, seconds: u64 },
    /// Another layer of the same pull failed first.
    #[error("pull cancelled")]
    Cancelled,
    /// A blocking task died.
    #[error("image task failed: {0}")]
    Task(String),
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}
