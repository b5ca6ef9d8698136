//! Pulling an image: resolve the reference through the configured mirrors and the origin,
//! pick the node's platform, then download every missing layer (several at once) straight
//! into the content store and the unpacker, so each layer is unpacked while it arrives.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use futures::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;

use crate::content::ContentStore;
use crate::digest::{Digest, chain_ids};
use crate::hosts::{self, RegistryEndpoint, Scheme};
use crate::index::ImageRecord;
use crate::keyed_lock::KeyedLocks;
use crate::layers::{LayerInfo, LayerStore};
use crate::manifest::{self, ACCEPTED_MANIFEST_TYPES, Descriptor, Manifest};
use crate::reference::ImageRef;
use crate::unpack::{LayerCompression, unpack_layer};
use crate::{Config, Error};

/// How often a running pull logs its progress.
const PROGRESS_LOG_INTERVAL: Duration = Duration::from_secs(5);
/// Downloaded chunks buffered between the network and the unpacker, per layer.
const CHUNKS_IN_FLIGHT: usize = 64;

/// Credentials for a pull, from the CRI request's AuthConfig.
#[derive(Debug, Clone, Default)]
pub enum Credentials {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    /// An identity or registry token presented as a bearer token.
    Token(String),
}

impl Credentials {
    /// Tells credentials apart without keeping them readable (a hash).
    fn fingerprint(&self) -> String {
        let text = match self {
            Credentials::Anonymous => return "anonymous".to_string(),
            Credentials::Basic { username, password } => format!("basic\0{username}\0{password}"),
            Credentials::Token(token) => format!("token\0{token}"),
        };
        Digest::of(text.as_bytes()).hex()[..16].to_string()
    }

    fn registry_auth(&self) -> RegistryAuth {
        match self {
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Credentials::Token(token) => RegistryAuth::Bearer(token.clone()),
        }
    }
}

/// Pulls images into the content and layer stores.
pub struct Puller {
    config: Config,
    content: Arc<ContentStore>,
    layers: Arc<LayerStore>,
    clients: Mutex<HashMap<String, oci_client::Client>>,
    /// Loopback registries that answered over plain HTTP: skip the HTTPS attempt next time.
    plain_http_hosts: Mutex<HashSet<String>>,
    layer_locks: KeyedLocks,
}

impl std::fmt::Debug for Puller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Puller")
            .field("config", &self.config)
            .field("content", &self.content)
            .field("layers", &self.layers)
            .finish_non_exhaustive()
    }
}

/// A manifest resolved at one endpoint.
struct Resolved {
    endpoint: RegistryEndpoint,
    client: oci_client::Client,
    /// The image at this endpoint (its host, path prefix and repository).
    oci_ref: oci_client::Reference,
    top_digest: Digest,
    top_bytes: Bytes,
    image_manifest: Option<(Digest, Bytes)>,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

/// Where the layers of one pull come from, and what they share.
struct LayerSource<'a> {
    client: &'a oci_client::Client,
    oci_ref: &'a oci_client::Reference,
    progress: &'a Progress,
    /// Turns true when another layer of the pull failed.
    cancelled: tokio::sync::watch::Receiver<bool>,
}

/// Counters shared by the layers of one pull.
#[derive(Debug, Default)]
struct Progress {
    bytes: AtomicU64,
    layers_done: AtomicUsize,
}

impl Puller {
    /// Opens the stores under `root` (blocking: call at start-up) and cleans up what an
    /// interrupted pull left behind.
    pub fn open(root: &Path, config: Config) -> Result<Puller, Error> {
        Ok(Puller {
            content: Arc::new(ContentStore::open(&root.join("content"))?),
            layers: Arc::new(LayerStore::open(root)?),
            clients: Mutex::new(HashMap::new()),
            plain_http_hosts: Mutex::new(HashSet::new()),
            layer_locks: KeyedLocks::default(),
            config,
        })
    }

    /// The content store.
    pub fn content(&self) -> &Arc<ContentStore> {
        &self.content
    }

    /// The layer store.
    pub fn layers(&self) -> &Arc<LayerStore> {
        &self.layers
    }

    /// Pulls `image` and returns its record (not yet persisted: the caller does that).
    pub async fn pull(
        &self,
        image: &ImageRef,
        credentials: &Credentials,
    ) -> Result<ImageRecord, Error> {
        let started = Instant::now();
        let auth = credentials.registry_auth();
        let resolved = self.resolve(image, credentials, &auth).await?;
        let oci_ref = resolved.oci_ref.clone();

        let config_bytes = self
            .fetch_small_blob(&resolved.client, &oci_ref, &resolved.config)
            .await?;
        let parsed = manifest::parse_config(&config_bytes)?;
        if parsed.diff_ids.len() != resolved.layers.len() {
            return Err(Error::InvalidManifest(format!(
                "config lists {} layers, manifest {}",
                parsed.diff_ids.len(),
                resolved.layers.len()
            )));
        }
        let diff_ids = parsed
            .diff_ids
            .iter()
            .map(|d| Digest::parse(d))
            .collect::<Result<Vec<_>, _>>()?;
        let chain = chain_ids(&diff_ids);

        let progress = Arc::new(Progress::default());
        let reporter = spawn_progress_log(
            image.to_string(),
            resolved.layers.len(),
            Arc::clone(&progress),
        );
        let jobs: Vec<(Descriptor, Digest, Digest)> = resolved
            .layers
            .iter()
            .cloned()
            .zip(diff_ids.iter().cloned().zip(chain.iter().cloned()))
            .map(|(layer, (diff_id, chain_id))| (layer, diff_id, chain_id))
            .collect();
        // The first failure cancels the other layers, and every layer task is awaited, so a
        // failed pull has cleaned up after itself before it answers.
        let (cancel, cancelled) = tokio::sync::watch::channel(false);
        let cancel_ref = &cancel;
        let fetches = jobs.into_iter().map(|(layer, diff_id, chain_id)| {
            let source = LayerSource {
                client: &resolved.client,
                oci_ref: &oci_ref,
                progress: &progress,
                cancelled: cancelled.clone(),
            };
            async move {
                let result = self.fetch_layer(source, &layer, &diff_id, &chain_id).await;
                if result.is_err() {
                    let _ = cancel_ref.send(true);
                }
                result
            }
        });
        let results: Vec<Result<(), Error>> = futures::stream::iter(fetches)
            .buffer_unordered(self.config.max_concurrent_downloads)
            .collect()
            .await;
        reporter.abort();
        let mut errors = results.into_iter().filter_map(Result::err);
        if let Some(first) = errors.next() {
            let cause = std::iter::once(first)
                .chain(errors)
                .find(|e| !matches!(e, Error::Cancelled))
                .unwrap_or(Error::Cancelled);
            return Err(cause);
        }

        // Manifests and config last: a blob in the store means its layers are there too.
        let content = Arc::clone(&self.content);
        let config_digest = Digest::parse(&resolved.config.digest)?;
        let (top_digest, top_bytes, image_manifest) = (
            resolved.top_digest.clone(),
            resolved.top_bytes.clone(),
            resolved.image_manifest.clone(),
        );
        let config_for_store = config_bytes.clone();
        blocking(move || {
            content.put(&config_digest, &config_for_store)?;
            if let Some((digest, bytes)) = image_manifest {
                content.put(&digest, &bytes)?;
            }
            content.put(&top_digest, &top_bytes)
        })
        .await?;

        let size = resolved
            .layers
            .iter()
            .map(|l| l.size.max(0) as u64)
            .sum::<u64>()
            + config_bytes.len() as u64;
        let bytes = progress.bytes.load(Ordering::Relaxed);
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(
            image = %image,
            endpoint = %resolved.endpoint.host,
            layers = resolved.layers.len(),
            downloaded_bytes = bytes,
            seconds,
            mb_per_second = bytes as f64 / 1e6 / seconds.max(1e-9),
            "image pulled"
        );
        Ok(ImageRecord {
            id: resolved.config.digest.clone(),
            repo_tags: image.tagged().into_iter().collect(),
            repo_digests: vec![format!("{}@{}", image.name(), resolved.top_digest)],
            size,
            manifest_digest: resolved.top_digest.to_string(),
            config: parsed.config,
            layers: resolved.layers.iter().map(|l| l.digest.clone()).collect(),
            layer_sizes: resolved
                .layers
                .iter()
                .map(|l| l.size.max(0) as u64)
                .collect(),
            chain_ids: chain.iter().map(ToString::to_string).collect(),
            blobs: std::iter::once(resolved.top_digest.to_string())
                .chain(resolved.image_manifest.as_ref().map(|(d, _)| d.to_string()))
                .chain(std::iter::once(resolved.config.digest.clone()))
                .chain(resolved.layers.iter().map(|l| l.digest.clone()))
                .collect(),
        })
    }

    /// Tries every endpoint in order (mirrors, then the origin) until one serves the
    /// manifest; an index is resolved to the node's platform at the same endpoint. An
    /// endpoint allowed to fall back to plain HTTP (an unconfigured loopback registry, as in
    /// containerd) is tried over HTTPS first, unless it already answered over HTTP.
    async fn resolve(
        &self,
        image: &ImageRef,
        credentials: &Credentials,
        auth: &RegistryAuth,
    ) -> Result<Resolved, Error> {
        let mut last_error = None;
        for endpoint in self.endpoints(&image.domain)? {
            if image.digest.is_none() && !endpoint.capabilities.resolve {
                continue;
            }
            match self.resolve_at(image, credentials, auth, &endpoint).await {
                Ok(resolved) => {
                    if endpoint.http_fallback && endpoint.scheme == Scheme::Http {
                        self.plain_http_hosts
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(endpoint.host.clone());
                    }
                    return Ok(resolved);
                }
                Err(error) if endpoint.http_fallback && endpoint.scheme == Scheme::Https => {
                    tracing::debug!(image = %image, endpoint = %endpoint.host, %error,
                        "https failed, falling back to plain http");
                    last_error = Some(error);
                }
                Err(error) => {
                    tracing::warn!(image = %image, endpoint = %endpoint.host, %error,
                        "registry endpoint failed, trying the next one");
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Error::Registry {
            image: image.to_string(),
            message: "no registry endpoint may resolve this reference".to_string(),
        }))
    }

    /// The endpoints to try for a registry host, with HTTP fallbacks expanded.
    fn endpoints(&self, registry_host: &str) -> Result<Vec<RegistryEndpoint>, Error> {
        let known_http = self
            .plain_http_hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut endpoints = Vec::new();
        for endpoint in hosts::resolve_endpoints(&self.config.certs_dir, registry_host)? {
            if !endpoint.headers.is_empty() || !endpoint.client_certs.is_empty() {
                tracing::warn!(endpoint = %endpoint.host,
                    "hosts.toml headers and client certificates are not supported; ignored");
            }
            if endpoint.http_fallback && endpoint.scheme == Scheme::Https {
                let mut plain = endpoint.clone();
                plain.scheme = Scheme::Http;
                if !known_http.contains(&endpoint.host) {
                    endpoints.push(endpoint);
                }
                endpoints.push(plain);
            } else {
                endpoints.push(endpoint);
            }
        }
        Ok(endpoints)
    }

    async fn resolve_at(
        &self,
        image: &ImageRef,
        credentials: &Credentials,
        auth: &RegistryAuth,
        endpoint: &RegistryEndpoint,
    ) -> Result<Resolved, Error> {
        let client = self.client_for(endpoint, credentials)?;
        let top_ref = endpoint
            .oci_reference(image)
            .ok_or_else(|| Error::Registry {
                image: image.to_string(),
                message: format!(
                    "endpoint {} has a path oci-client cannot address",
                    endpoint.base_url()
                ),
            })?;
        let (top_bytes, _) = client
            .pull_manifest_raw(&top_ref, auth, &ACCEPTED_MANIFEST_TYPES)
            .await
            .map_err(|e| registry_error(image, e))?;
        let top_digest = Digest::of(&top_bytes);
        if let Some(wanted) = &image.digest {
            if wanted != top_digest.as_str() {
                return Err(Error::DigestMismatch {
                    expected: wanted.clone(),
                    actual: top_digest.to_string(),
                });
            }
        }
        let (image_manifest, config, layers) = match Manifest::parse(&top_bytes, None)? {
            Manifest::Image { config, layers } => (None, config, layers),
            Manifest::Index { manifests } => {
                let platform = manifest::node_platform();
                let entry = manifest::select_platform(&manifests, &platform).ok_or_else(|| {
                    Error::NoMatchingPlatform {
                        image: image.to_string(),
                        platform: format!("{}/{}", platform.os, platform.architecture),
                    }
                })?;
                let digest = Digest::parse(&entry.digest)?;
                let oci_ref = top_ref.clone_with_digest(digest.to_string());
                let (bytes, _) = client
                    .pull_manifest_raw(&oci_ref, auth, &ACCEPTED_MANIFEST_TYPES)
                    .await
                    .map_err(|e| registry_error(image, e))?;
                if Digest::of(&bytes) != digest {
                    return Err(Error::DigestMismatch {
                        expected: digest.to_string(),
                        actual: Digest::of(&bytes).to_string(),
                    });
                }
                match Manifest::parse(&bytes, None)? {
                    Manifest::Image { config, layers } => (Some((digest, bytes)), config, layers),
                    Manifest::Index { .. } => {
                        return Err(Error::InvalidManifest("nested index".to_string()));
                    }
                }
            }
        };
        Ok(Resolved {
            endpoint: endpoint.clone(),
            client,
            oci_ref: top_ref,
            top_digest,
            top_bytes,
            image_manifest,
            config,
            layers,
        })
    }

    async fn fetch_small_blob(
        &self,
        client: &oci_client::Client,
        oci_ref: &oci_client::Reference,
        descriptor: &Descriptor,
    ) -> Result<Vec<u8>, Error> {
        let digest = Digest::parse(&descriptor.digest)?;
        if self.content.contains(&digest) {
            let content = Arc::clone(&self.content);
            return blocking(move || content.read(&digest)).await;
        }
        let mut bytes = Vec::with_capacity(descriptor.size.clamp(0, 1 << 20) as usize);
        client
            .pull_blob(oci_ref, &oci_descriptor(descriptor), &mut bytes)
            .await
            .map_err(|e| Error::Registry {
                image: oci_ref.whole(),
                message: e.to_string(),
            })?;
        let actual = Digest::of(&bytes);
        if actual != digest {
            return Err(Error::DigestMismatch {
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }

    /// Downloads one layer into the content store and unpacks it at the same time; the
    /// layer appears under its chain ID only when both digests checked out.
    async fn fetch_layer(
        &self,
        source: LayerSource<'_>,
        layer: &Descriptor,
        diff_id: &Digest,
        chain_id: &Digest,
    ) -> Result<(), Error> {
        let LayerSource {
            client,
            oci_ref,
            progress,
            mut cancelled,
        } = source;
        let _guard = self.layer_locks.lock(chain_id.as_str()).await;
        if *cancelled.borrow() {
            return Err(Error::Cancelled);
        }
        if self.layers.contains(chain_id) {
            progress.layers_done.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let compression =
            LayerCompression::from_media_type(&layer.media_type).ok_or_else(|| {
                Error::InvalidManifest(format!(
                    "unsupported layer media type {:?}",
                    layer.media_type
                ))
            })?;
        let blob_digest = Digest::parse(&layer.digest)?;
        let blob_size = u64::try_from(layer.size).ok();
        let stream = client
            .pull_blob_stream(oci_ref, &oci_descriptor(layer))
            .await
            .map_err(|e| Error::Registry {
                image: oci_ref.whole(),
                message: e.to_string(),
            })?;

        let (sender, receiver) =
            tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(CHUNKS_IN_FLIGHT);
        let (content, layers) = (Arc::clone(&self.content), Arc::clone(&self.layers));
        let (diff_id, chain_id) = (diff_id.clone(), chain_id.clone());
        let unpacker = tokio::task::spawn_blocking(move || {
            unpack_streamed(
                &content,
                &layers,
                receiver,
                compression,
                &blob_digest,
                blob_size,
                &diff_id,
                &chain_id,
            )
        });

        let timeout = Duration::from_secs(self.config.pull_progress_timeout_seconds);
        let mut stream = stream.stream;
        let mut download_error = None;
        loop {
            let next = tokio::select! {
                biased;
                _ = cancelled.changed() => {
                    download_error = Some(Error::Cancelled);
                    break;
                }
                next = tokio::time::timeout(timeout, stream.next()) => next,
            };
            match next {
                Ok(None) => break,
                Ok(Some(Ok(chunk))) => {
                    progress
                        .bytes
                        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    if sender.send(Ok(chunk)).await.is_err() {
                        break; // the unpacker stopped; its error explains why
                    }
                }
                Ok(Some(Err(error))) => {
                    download_error = Some(Error::Registry {
                        image: oci_ref.whole(),
                        message: error.to_string(),
                    });
                    break;
                }
                Err(_) => {
                    download_error = Some(Error::PullStalled {
                        image: oci_ref.whole(),
                        seconds: timeout.as_secs(),
                    });
                    break;
                }
            }
        }
        if download_error.is_some() {
            let _ = sender
                .send(Err(std::io::Error::other("download failed")))
                .await;
        }
        drop(sender);
        let unpacked = unpacker.await.map_err(|e| Error::Task(e.to_string()))?;
        if let Some(error) = download_error {
            return Err(error);
        }
        unpacked?;
        progress.layers_done.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// A client per endpoint and credentials: oci-client remembers the first credentials it
    /// saw for a registry, so different credentials (or none) must not share a client.
    fn client_for(
        &self,
        endpoint: &RegistryEndpoint,
        credentials: &Credentials,
    ) -> Result<oci_client::Client, Error> {
        let key = format!(
            "{}://{}|{}|{:?}|{:?}|{}",
            endpoint.scheme,
            endpoint.host,
            endpoint.skip_verify,
            endpoint.ca_files,
            endpoint.dial_timeout,
            credentials.fingerprint()
        );
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let mut extra_root_certificates = Vec::new();
        for path in &endpoint.ca_files {
            let data = std::fs::read(path).map_err(|source| Error::Io {
                op: "read CA certificate",
                path: path.clone(),
                source,
            })?;
            extra_root_certificates.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        let config = ClientConfig {
            protocol: match endpoint.scheme {
                Scheme::Http => ClientProtocol::Http,
                Scheme::Https => ClientProtocol::Https,
            },
            accept_invalid_certificates: endpoint.skip_verify,
            extra_root_certificates,
            max_concurrent_download: self.config.max_concurrent_downloads,
            connect_timeout: Some(endpoint.dial_timeout.unwrap_or(Duration::from_secs(30))),
            ..ClientConfig::default()
        };
        let client = oci_client::Client::new(config);
        clients.insert(key, client.clone());
        Ok(client)
    }
}

fn oci_descriptor(descriptor: &Descriptor) -> OciDescriptor {
    OciDescriptor {
        media_type: descriptor.media_type.clone(),
        digest: descriptor.digest.clone(),
        size: descriptor.size,
        urls: None,
        annotations: None,
        artifact_type: None,
    }
}

fn registry_error(image: &ImageRef, error: OciDistributionError) -> Error {
    match error {
        OciDistributionError::ImageManifestNotFoundError(_) => Error::NotFound {
            image: image.to_string(),
        },
        OciDistributionError::RegistryError { ref envelope, .. }
            if envelope.errors.iter().any(|e| {
                format!("{:?}", e.code).contains("ManifestUnknown")
                    || format!("{:?}", e.code).contains("NameUnknown")
            }) =>
        {
            Error::NotFound {
                image: image.to_string(),
            }
        }
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => Error::Unauthorized {
            image: image.to_string(),
            message: error.to_string(),
        },
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => Error::Unauthorized {
            image: image.to_string(),
            message: error.to_string(),
        },
        OciDistributionError::ServerError { code: 404, .. } => Error::NotFound {
            image: image.to_string(),
        },
        other => Error::Registry {
            image: image.to_string(),
            message: other.to_string(),
        },
    }
}

/// The blocking half of a layer fetch: chunks from the network are written to the content
/// store and fed to the unpacker in one pass.
#[allow(clippy::too_many_arguments)]
fn unpack_streamed(
    content: &ContentStore,
    layers: &LayerStore,
    receiver: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    compression: LayerCompression,
    blob_digest: &Digest,
    blob_size: Option<u64>,
    diff_id: &Digest,
    chain_id: &Digest,
) -> Result<(), Error> {
    let pending = layers.begin()?;
    let mut blob = content.writer()?;
    let mut tee = TeeReader {
        receiver,
        current: Bytes::new(),
        blob: &mut blob,
        write_error: None,
    };
    let unpacked = unpack_layer(&mut tee, compression, &pending.diff_path());
    // Whatever the unpacker did not need (trailing padding) still belongs to the blob.
    let drained = std::io::copy(&mut tee, &mut std::io::sink());
    if let Some(error) = tee.write_error.take() {
        return Err(error);
    }
    let stats = unpacked?;
    drained.map_err(Error::LayerArchive)?;
    blob.commit(blob_digest, blob_size)?;
    if stats.diff_id != diff_id.as_str() {
        return Err(Error::DigestMismatch {
            expected: diff_id.to_string(),
            actual: stats.diff_id,
        });
    }
    layers.commit(
        pending,
        &LayerInfo {
            chain_id: chain_id.to_string(),
            diff_id: diff_id.to_string(),
            uncompressed_bytes: stats.uncompressed_bytes,
            entries: stats.entries,
        },
    )
}

/// Reads the downloaded chunks and copies each into the blob being stored.
struct TeeReader<'a, 'b> {
    receiver: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
    blob: &'a mut crate::content::BlobWriter<'b>,
    write_error: Option<Error>,
}

impl Read for TeeReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.receiver.blocking_recv() {
                Some(Ok(chunk)) => {
                    if let Err(error) = self.blob.write(&chunk) {
                        self.write_error = Some(error);
                        return Err(std::io::Error::other("storing the blob failed"));
                    }
                    self.current = chunk;
                }
                Some(Err(error)) => return Err(error),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

fn spawn_progress_log(
    image: String,
    layers: usize,
    progress: Arc<Progress>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(PROGRESS_LOG_INTERVAL);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            tracing::info!(
                image = %image,
                downloaded_bytes = progress.bytes.load(Ordering::Relaxed),
                layers_done = progress.layers_done.load(Ordering::Relaxed),
                layers_total = layers,
                "pull progress"
            );
        }
    })
}

async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, Error> + Send + 'static,
) -> Result<R, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_credentials_fingerprint_differs_per_secret() {
        let basic = |password: &str| Credentials::Basic {
            username: "alice".into(),
            password: password.into(),
        };
        assert_ne!(basic("a").fingerprint(), basic("b").fingerprint());
        assert_eq!(basic("a").fingerprint(), basic("a").fingerprint());
        assert_ne!(
            Credentials::Anonymous.fingerprint(),
            basic("").fingerprint()
        );
        assert!(!basic("secret").fingerprint().contains("secret"));
    }
}
