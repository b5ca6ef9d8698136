//! A real container registry for node tests, and a small client for its HTTP API v2.
//!
//! [`Registry`] runs Debian's `docker-registry` (CNCF distribution 2.8) on `127.0.0.1` with a
//! free port and its storage in a `corral-test-*` temporary directory. Dropping it kills the
//! process, waits for it and removes the directory.
//!
//! [`RegistryClient`] speaks the distribution API (blob upload, manifest put/get) with
//! `reqwest` and pushes images built by `images.rs` ([`RegistryClient::push_image`],
//! [`RegistryClient::push_index`]). It only talks to loopback addresses.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use reqwest::{StatusCode, Url, header};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::images::{BuiltImage, Format, ImageBuilder, Platform};

/// The binary from Debian's `docker-registry` package.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// How long one start attempt may take before the registry is declared broken.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How many fresh ports to try when the one picked was taken in the meantime.
const START_ATTEMPTS: usize = 5;

/// bcrypt cost of the htpasswd entry: the minimum, since the registry checks it per request.
const HTPASSWD_COST: u32 = 4;

/// Options for [`Registry::start_with`].
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Require HTTP basic auth with this `(user, password)` (an htpasswd file, bcrypt hash).
    pub basic_auth: Option<(String, String)>,
    /// Make the registry answer with relative `Location` headers (`http.relativeurls`).
    pub relative_urls: bool,
}

/// A running `docker-registry` process with its own storage; killed on drop.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    addr: String,
    log_path: PathBuf,
    /// Removed when dropped, which happens after `Drop::drop` has killed the process.
    dir: tempfile::TempDir,
}

impl Registry {
    /// Starts an open registry (no auth) on a free port of 127.0.0.1.
    pub fn start() -> Result<Registry> {
        Registry::start_with(RegistryOptions::default())
    }

    /// Starts a registry that requires HTTP basic auth as `user` with `password`.
    pub fn start_with_basic_auth(user: &str, password: &str) -> Result<Registry> {
        Registry::start_with(RegistryOptions {
            basic_auth: Some((user.to_owned(), password.to_owned())),
            ..RegistryOptions::default()
        })
    }

    /// Starts a registry with `options`, retrying on a fresh port if the chosen one was taken.
    ///
    /// Blocks (with short sleeps) until `GET /v2/` answers 200, or 401 when auth is on.
    pub fn start_with(options: RegistryOptions) -> Result<Registry> {
        ensure!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} is missing: install the Debian package `docker-registry` \
             (apt-get install docker-registry)"
        );
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match Registry::start_once(&options)? {
                Ok(registry) => return Ok(registry),
                Err(port_taken) => last_error = Some(port_taken),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("registry did not start"))).context(
            format!("registry failed to bind after {START_ATTEMPTS} attempts"),
        )
    }

    /// One start attempt. The outer error is fatal; the inner one means "port taken, retry".
    fn start_once(options: &RegistryOptions) -> Result<Result<Registry, anyhow::Error>> {
        let dir = tempfile::Builder::new()
            .prefix("corral-test-")
            .tempdir()
            .context("creating the registry temp dir")?;
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let storage = dir.path().join("storage");
        fs::create_dir(&storage).with_context(|| format!("creating {}", storage.display()))?;

        let auth = match &options.basic_auth {
            Some((user, password)) => {
                let htpasswd = dir.path().join("htpasswd");
                let hash = bcrypt::hash_with_result(password, HTPASSWD_COST)
                    .context("hashing the registry password")?
                    .format_for_version(bcrypt::Version::TwoY);
                fs::write(&htpasswd, format!("{user}:{hash}\n"))
                    .with_context(|| format!("writing {}", htpasswd.display()))?;
                format!(
                    "auth:\n  htpasswd:\n    realm: corral-test\n    path: {}\n",
                    yaml_str(&htpasswd)?
                )
            }
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: {addr_yaml}\n  secret: corral-test\n  relativeurls: {relative}\n  \
             headers:\n    X-Content-Type-Options: [nosniff]\n\
             {auth}",
            storage = yaml_str(&storage)?,
            addr_yaml = serde_json::to_string(&addr)?,
            relative = options.relative_urls,
        );
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config)
            .with_context(|| format!("writing {}", config_path.display()))?;

        let log_path = dir.path().join("registry.log");
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let mut command = Command::new(REGISTRY_BIN);
        command
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("cloning the log file handle")?)
            .stderr(log);
        // The registry lets REGISTRY_* variables override its config file; keep ours exact.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("REGISTRY_") {
                command.env_remove(key);
            }
        }
        let child = command
            .spawn()
            .with_context(|| format!("spawning {REGISTRY_BIN}"))?;
        let mut registry = Registry {
            child,
            addr,
            log_path,
            dir,
        };
        match registry.wait_ready(options.basic_auth.is_some()) {
            Ok(()) => Ok(Ok(registry)),
            Err(error) => {
                let log = registry.log();
                let error = error.context(format!("registry log:\n{log}"));
                if log.contains("address already in use") {
                    Ok(Err(error))
                } else {
                    Err(error)
                }
            }
        }
    }

    /// Waits until the registry logs that it listens on its port, then until `GET /v2/`
    /// gives the expected status; fails if the process dies or time is up.
    ///
    /// Checking the log first makes sure the answer comes from this process, not from
    /// whoever else may have taken the port in the meantime.
    fn wait_ready(&mut self, auth: bool) -> Result<()> {
        let expected = if auth { 401 } else { 200 };
        let listening = format!("listening on {}", self.addr);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().context("checking the registry")? {
                bail!("registry exited early with {status}");
            }
            let status = if self.log().contains(&listening) {
                probe_v2(&self.addr)
            } else {
                None
            };
            match status {
                Some(status) if status == expected => return Ok(()),
                Some(status) => bail!("GET /v2/ answered {status}, expected {expected}"),
                None if Instant::now() >= deadline => {
                    bail!(
                        "registry did not answer on {} within {START_TIMEOUT:?}",
                        self.addr
                    )
                }
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// The registry's address, `127.0.0.1:PORT` (the host part of image references).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The registry's base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The temporary directory holding the config, storage and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The registry process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the registry has logged so far (empty if the log cannot be read).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A client for this registry (no credentials).
    pub fn client(&self) -> Result<RegistryClient> {
        RegistryClient::new(&self.addr)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Errors here mean the process is already gone; nothing else to do in a destructor.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Picks a port that is free right now by binding port 0 and releasing it.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener
        .local_addr()
        .context("reading the bound address")?
        .port())
}

/// Quotes a path for the YAML config (a JSON string is a valid YAML scalar).
fn yaml_str(path: &Path) -> Result<String> {
    let path = path
        .to_str()
        .with_context(|| format!("non-UTF-8 path {}", path.display()))?;
    Ok(serde_json::to_string(path)?)
}

/// One plain HTTP/1.1 `GET /v2/`; the status code, or `None` if nothing answered.
fn probe_v2(addr: &str) -> Option<u16> {
    let socket: SocketAddr = addr.parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&socket, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET /v2/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let status_line = response.split(|&b| b == b'\n').next()?;
    let status = std::str::from_utf8(status_line).ok()?.split(' ').nth(1)?;
    status.trim().parse().ok()
}

/// `sha256:<hex>` of `data`, the OCI digest form.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A manifest (or index) as the registry returned it.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The exact bytes served.
    pub bytes: Vec<u8>,
    /// The `Content-Type` header.
    pub media_type: String,
    /// The `Docker-Content-Digest` header, if any.
    pub digest_header: Option<String>,
}

/// A client for the distribution HTTP API v2 of a loopback registry.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    base: Url,
    http: reqwest::Client,
    auth: Option<(String, String)>,
}

impl RegistryClient {
    /// A client for `registry` (`127.0.0.1:PORT`, `localhost:PORT` or `[::1]:PORT`), over HTTP.
    ///
    /// Refuses any other host: tests must never reach beyond this machine.
    pub fn new(registry: &str) -> Result<RegistryClient> {
        let base = Url::parse(&format!("http://{registry}/"))
            .with_context(|| format!("bad registry address {registry:?}"))?;
        let host = base.host_str().unwrap_or_default();
        ensure!(
            matches!(host, "127.0.0.1" | "localhost" | "[::1]"),
            "refusing non-loopback registry {registry:?}"
        );
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .context("building the HTTP client")?;
        Ok(RegistryClient {
            base,
            http,
            auth: None,
        })
    }

    /// Sends HTTP basic auth credentials with every request.
    pub fn with_basic_auth(mut self, user: &str, password: &str) -> RegistryClient {
        self.auth = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// The registry address this client talks to (`host:port`).
    pub fn registry(&self) -> String {
        match self.base.port() {
            Some(port) => format!("{}:{port}", self.base.host_str().unwrap_or_default()),
            None => self.base.host_str().unwrap_or_default().to_owned(),
        }
    }

    fn url(&self, path: &str) -> Result<Url> {
        self.base
            .join(path)
            .with_context(|| format!("bad registry path {path:?}"))
    }

    fn request(&self, method: reqwest::Method, url: Url) -> reqwest::RequestBuilder {
        let request = self.http.request(method, url);
        match &self.auth {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }

    /// `GET /v2/` and return the status code (200 when allowed, 401 when auth is missing).
    pub async fn ping(&self) -> Result<u16> {
        let response = self
            .request(reqwest::Method::GET, self.url("/v2/")?)
            .send()
            .await
            .context("GET /v2/")?;
        Ok(response.status().as_u16())
    }

    /// Whether blob `digest` already exists in `repo` (`HEAD /v2/<repo>/blobs/<digest>`).
    pub async fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"))?;
        let response = self
            .request(reqwest::Method::HEAD, url)
            .send()
            .await
            .with_context(|| format!("HEAD blob {digest} in {repo}"))?;
        match response.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            status => bail!("HEAD blob {digest} in {repo}: {status}"),
        }
    }

    /// Uploads `data` as blob `digest` to `repo` unless it is already there.
    ///
    /// Returns whether an upload happened. Uses a monolithic upload: `POST .../uploads/`, then
    /// `PUT <Location>&digest=...` with the whole blob.
    pub async fn push_blob(&self, repo: &str, digest: &str, data: &[u8]) -> Result<bool> {
        if self.blob_exists(repo, digest).await? {
            return Ok(false);
        }
        let start = self.url(&format!("/v2/{repo}/blobs/uploads/"))?;
        let response = self
            .request(reqwest::Method::POST, start)
            .header(header::CONTENT_LENGTH, 0)
            .send()
            .await
            .with_context(|| format!("starting upload of {digest} to {repo}"))?;
        let status = response.status();
        if status != StatusCode::ACCEPTED {
            let body = response.text().await.unwrap_or_default();
            bail!("starting upload of {digest} to {repo}: {status}: {body}");
        }
        let location = response
            .headers()
            .get(header::LOCATION)
            .context("upload start answered without a Location header")?
            .to_str()
            .context("non-ASCII upload Location header")?;
        let url = upload_url(&self.base, location, digest)?;
        let response = self
            .request(reqwest::Method::PUT, url)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, data.len())
            .body(data.to_vec())
            .send()
            .await
            .with_context(|| format!("uploading {digest} to {repo}"))?;
        let status = response.status();
        if status != StatusCode::CREATED {
            let body = response.text().await.unwrap_or_default();
            bail!("uploading {digest} to {repo}: {status}: {body}");
        }
        Ok(true)
    }

    /// `PUT /v2/<repo>/manifests/<reference>` with `media_type`; returns the digest.
    ///
    /// Fails if the registry reports a digest other than the sha256 of `bytes`.
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String> {
        let digest = sha256_digest(bytes);
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"))?;
        let response = self
            .request(reqwest::Method::PUT, url)
            .header(header::CONTENT_TYPE, media_type)
            .body(bytes.to_vec())
            .send()
            .await
            .with_context(|| format!("PUT manifest {repo}:{reference}"))?;
        let status = response.status();
        let served = header_string(&response, "docker-content-digest");
        if status != StatusCode::CREATED {
            let body = response.text().await.unwrap_or_default();
            bail!("PUT manifest {repo}:{reference}: {status}: {body}");
        }
        if let Some(served) = served {
            ensure!(
                served == digest,
                "registry stored {repo}:{reference} as {served}, expected {digest}"
            );
        }
        Ok(digest)
    }

    /// `GET /v2/<repo>/manifests/<reference>` with `Accept: <accept...>`.
    pub async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
        accept: &[&str],
    ) -> Result<FetchedManifest> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"))?;
        let response = self
            .request(reqwest::Method::GET, url)
            .header(header::ACCEPT, accept.join(", "))
            .send()
            .await
            .with_context(|| format!("GET manifest {repo}:{reference}"))?;
        let status = response.status();
        if status != StatusCode::OK {
            let body = response.text().await.unwrap_or_default();
            bail!("GET manifest {repo}:{reference}: {status}: {body}");
        }
        let media_type = header_string(&response, "content-type").unwrap_or_default();
        let digest_header = header_string(&response, "docker-content-digest");
        let bytes = response
            .bytes()
            .await
            .with_context(|| format!("reading manifest {repo}:{reference}"))?
            .to_vec();
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest_header,
        })
    }

    /// `GET /v2/<repo>/blobs/<digest>`; checks the bytes against `digest` (sha256 only).
    pub async fn get_blob(&self, repo: &str, digest: &str) -> Result<Vec<u8>> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"))?;
        let response = self
            .request(reqwest::Method::GET, url)
            .send()
            .await
            .with_context(|| format!("GET blob {digest} from {repo}"))?;
        let status = response.status();
        if status != StatusCode::OK {
            bail!("GET blob {digest} from {repo}: {status}");
        }
        let bytes = response
            .bytes()
            .await
            .with_context(|| format!("reading blob {digest} from {repo}"))?
            .to_vec();
        let actual = sha256_digest(&bytes);
        ensure!(
            actual == digest,
            "blob {digest} from {repo} hashes to {actual}"
        );
        Ok(bytes)
    }
}

/// The URL to `PUT` a monolithic upload to: `location` resolved against `base` (it may be
/// relative or absolute) with `digest=<digest>` appended to any existing query.
pub fn upload_url(base: &Url, location: &str, digest: &str) -> Result<Url> {
    let mut url = base
        .join(location)
        .with_context(|| format!("bad upload location {location:?}"))?;
    ensure!(
        url.host_str() == base.host_str() && url.port() == base.port(),
        "upload location {location:?} points away from the registry"
    );
    url.query_pairs_mut().append_pair("digest", digest);
    Ok(url)
}

fn header_string(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// An image as pushed.
#[derive(Debug, Clone)]
pub struct PushedImage {
    /// `registry/repo:tag`, or `registry/repo@digest` for an index entry.
    pub reference: String,
    /// `127.0.0.1:PORT`.
    pub registry: String,
    /// The repository, e.g. `corral-test/busybox`.
    pub repo: String,
    /// The manifest media type.
    pub media_type: String,
    /// sha256 of the manifest.
    pub manifest_digest: String,
    /// The manifest as pushed.
    pub manifest_bytes: Vec<u8>,
    /// sha256 of the config.
    pub config_digest: String,
    /// The config as pushed.
    pub config_bytes: Vec<u8>,
    /// sha256 of each (compressed) layer blob, bottom first.
    pub layer_digests: Vec<String>,
    /// Each layer's media type.
    pub layer_media_types: Vec<String>,
    /// sha256 of each uncompressed layer tar (`rootfs.diff_ids`).
    pub diff_ids: Vec<String>,
    /// Sum of the layer blob sizes (not counting config and manifest).
    pub total_compressed_size: u64,
    /// The platform in the config.
    pub platform: Platform,
}

impl PushedImage {
    /// `registry/repo@sha256:...`.
    pub fn digest_reference(&self) -> String {
        format!("{}/{}@{}", self.registry, self.repo, self.manifest_digest)
    }
}

/// A multi-platform index (or Docker manifest list) as pushed.
#[derive(Debug, Clone)]
pub struct PushedIndex {
    /// `registry/repo:tag`.
    pub reference: String,
    /// `127.0.0.1:PORT`.
    pub registry: String,
    /// The repository.
    pub repo: String,
    /// The index media type.
    pub media_type: String,
    /// sha256 of the index.
    pub manifest_digest: String,
    /// The index as pushed.
    pub manifest_bytes: Vec<u8>,
    /// The per-platform images, in index order.
    pub images: Vec<PushedImage>,
}

impl PushedIndex {
    /// The entry for `platform` (as [`Platform::name`], e.g. `linux/arm64/v8`), if any.
    pub fn image_for(&self, platform: &str) -> Option<&PushedImage> {
        self.images
            .iter()
            .find(|image| image.platform.name() == platform)
    }

    /// `registry/repo@sha256:...` of the index.
    pub fn digest_reference(&self) -> String {
        format!("{}/{}@{}", self.registry, self.repo, self.manifest_digest)
    }
}

// Pushing images built by `images.rs`.
impl RegistryClient {
    /// Pushes `image`'s layers and config (skipping blobs already there), then its manifest
    /// as `repo:reference` (a tag or the manifest digest).
    pub async fn push_image(
        &self,
        image: BuiltImage,
        repo: &str,
        reference: &str,
    ) -> Result<PushedImage> {
        for layer in &image.layers {
            self.push_blob(repo, &layer.digest, &layer.blob).await?;
        }
        self.push_blob(repo, &image.config_digest, &image.config_bytes)
            .await?;
        let media_type = image.format.manifest_media_type();
        self.push_manifest(repo, reference, media_type, &image.manifest_bytes)
            .await?;
        let registry = self.registry();
        let separator = if reference.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        Ok(PushedImage {
            reference: format!("{registry}/{repo}{separator}{reference}"),
            registry,
            repo: repo.to_owned(),
            media_type: media_type.to_owned(),
            manifest_digest: image.manifest_digest,
            manifest_bytes: image.manifest_bytes,
            config_digest: image.config_digest,
            config_bytes: image.config_bytes,
            layer_digests: image.layers.iter().map(|l| l.digest.clone()).collect(),
            layer_media_types: image.layers.iter().map(|l| l.media_type.clone()).collect(),
            diff_ids: image.layers.iter().map(|l| l.diff_id.clone()).collect(),
            total_compressed_size: image.layers.iter().map(|l| l.blob.len() as u64).sum(),
            platform: image.platform,
        })
    }

    /// Pushes `images` by digest, then an index of them in `format` (OCI index or Docker manifest
    /// list) as `repo:tag`, each entry carrying its image's platform.
    pub async fn push_index(
        &self,
        repo: &str,
        tag: &str,
        images: &[ImageBuilder],
        format: Format,
    ) -> Result<PushedIndex> {
        ensure!(!images.is_empty(), "an index needs at least one image");
        let mut pushed = Vec::with_capacity(images.len());
        for image in images {
            if format == Format::Docker && image.format != Format::Docker {
                bail!("a Docker manifest list can only hold Docker manifests");
            }
            let built = image.build()?;
            let digest = built.manifest_digest.clone();
            pushed.push(self.push_image(built, repo, &digest).await?);
        }
        let index = json!({
            "schemaVersion": 2,
            "mediaType": format.index_media_type(),
            "manifests": pushed.iter().map(|image| json!({
                "mediaType": image.media_type,
                "digest": image.manifest_digest,
                "size": image.manifest_bytes.len(),
                "platform": image.platform.to_json(),
            })).collect::<Vec<_>>(),
        });
        let manifest_bytes = serde_json::to_vec(&index).context("serializing the index")?;
        let media_type = format.index_media_type();
        let manifest_digest = self
            .push_manifest(repo, tag, media_type, &manifest_bytes)
            .await?;
        let registry = self.registry();
        Ok(PushedIndex {
            reference: format!("{registry}/{repo}:{tag}"),
            registry,
            repo: repo.to_owned(),
            media_type: media_type.to_owned(),
            manifest_digest,
            manifest_bytes,
            images: pushed,
        })
    }
}
