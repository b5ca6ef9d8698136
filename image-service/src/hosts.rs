//! Registry host configuration in containerd's `certs.d` format (containerd `docs/hosts.md`,
//! `core/remotes/docker/config/hosts.go`).
//!
//! For a registry host `h` (as written in the reference: `docker.io`, `localhost:5000`) the
//! first directory that exists among `<certs_dir>/<h with ":port" as "_port_">` (only when `h`
//! has a port), `<certs_dir>/<h>` and `<certs_dir>/_default` is used. In it, `hosts.toml`:
//!
//! ```toml
//! server = "https://registry-1.docker.io"   # the origin; optional
//! [host."http://127.0.0.1:5000"]            # mirrors, tried first, in file order
//!   capabilities = ["pull", "resolve"]      # absent or empty: pull, resolve and push
//!   skip_verify = true
//!   ca = "/etc/certs/ca.pem"                # a path or a list; relative to the directory
//!   client = [["client.cert", "client.key"]]
//!   override_path = false
//!   dial_timeout = "5s"
//!   [host."http://127.0.0.1:5000".header]
//!     x-custom = "v"                        # a string or a list of strings
//! ```
//!
//! The top-level `capabilities`, `ca`, `client`, `skip_verify`, `header`, `override_path` and
//! `dial_timeout` apply to the origin. Unknown keys are ignored, as containerd does, with a
//! warning. A directory without `hosts.toml` (or with an empty one) falls back to Docker's
//! certificate layout: `*.crt` are CA files, `*.cert` (+ `*.key`) client pairs, for the origin.
//!
//! Without `server`, the origin is the default one: `https://registry-1.docker.io` for
//! `docker.io`, `https://<host>` otherwise. For a loopback registry (`localhost`, `127.0.0.1`,
//! `[::1]`, any port) containerd still starts with HTTPS but skips certificate verification,
//! and, unless the port is 443 or absent, falls back to plain HTTP when the TLS handshake
//! fails: such an endpoint has `skip_verify` and `http_fallback` set, and the caller does
//! the fallback. Port 80 means plain HTTP.
//!
//! Deviations from containerd: a hosts.toml that cannot be parsed is an error here (containerd
//! logs it and falls back to the certificate files), and a mirror written as `http://` keeps
//! plain HTTP even when it sets `ca`, `client` or `skip_verify` (containerd then tries HTTPS
//! first).

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::Error;
use crate::reference::ImageRef;

/// The file name of a host configuration inside its directory.
pub const HOSTS_FILE: &str = "hosts.toml";
/// The directory used when a registry host has none of its own.
pub const DEFAULT_HOST_DIR: &str = "_default";
const DOCKER_HUB_HOST: &str = "docker.io";
const DOCKER_HUB_ORIGIN: &str = "registry-1.docker.io";
const HOST_KEYS: [&str; 7] = [
    "capabilities",
    "ca",
    "client",
    "skip_verify",
    "header",
    "override_path",
    "dial_timeout",
];

/// How an endpoint is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an endpoint may be used for. `pull`: fetch blobs and manifests by digest; `resolve`:
/// turn a tag into a digest (fetch a manifest by tag); `push`: upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub pull: bool,
    pub resolve: bool,
    pub push: bool,
}

impl Capabilities {
    /// What an endpoint can do when its configuration does not say.
    pub const ALL: Capabilities = Capabilities {
        pull: true,
        resolve: true,
        push: true,
    };
}

/// A TLS client certificate and, when it is a separate file, its key.
pub type ClientCert = (PathBuf, Option<PathBuf>);

/// One place to pull from: a mirror or the origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryEndpoint {
    pub scheme: Scheme,
    /// `host[:port]`, e.g. `registry-1.docker.io`, `127.0.0.1:5000`, `[::1]:5000`.
    pub host: String,
    /// The URL path before `/v2` (`""`, or `/docker` for `https://mirror/docker/v2`). With
    /// `override_path` it is the whole API root, and no `/v2` is added.
    pub path_prefix: String,
    pub capabilities: Capabilities,
    /// Do not verify the server's certificate chain and name.
    pub skip_verify: bool,
    /// Extra CA certificates (PEM), absolute paths.
    pub ca_files: Vec<PathBuf>,
    /// Client certificates for TLS: the certificate and, when separate, its key.
    pub client_certs: Vec<ClientCert>,
    /// The URL path is the API root (for registries without the `/v2` prefix).
    pub override_path: bool,
    /// Extra headers sent with every request, in name order.
    pub headers: Vec<(String, String)>,
    /// Connect timeout, when configured.
    pub dial_timeout: Option<Duration>,
    /// Retry over plain HTTP when the HTTPS handshake fails (default loopback origins only).
    pub http_fallback: bool,
    /// A `[host."..."]` entry rather than the origin.
    pub is_mirror: bool,
}

impl RegistryEndpoint {
    /// The distribution API root: `/v2`, `/docker/v2`, or the path itself with `override_path`.
    pub fn api_root(&self) -> String {
        if self.override_path {
            self.path_prefix.clone()
        } else {
            format!("{}/v2", self.path_prefix)
        }
    }

    /// `scheme://host` + [`Self::api_root`], e.g. `https://registry-1.docker.io/v2`.
    pub fn base_url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.host, self.api_root())
    }

    /// The repository to ask this endpoint for. Mirrors serve the origin's repository path,
    /// `library/busybox` for `docker.io/library/busybox`, with or without `override_path`
    /// (containerd joins it under the API root either way).
    pub fn repository_path(&self, image: &ImageRef) -> String {
        image.path.clone()
    }

    /// The URL under which `manifests/<ref>` and `blobs/<digest>` live, e.g.
    /// `http://127.0.0.1:5000/v2/library/busybox`.
    pub fn repository_url(&self, image: &ImageRef) -> String {
        format!("{}/{}", self.base_url(), self.repository_path(image))
    }

    /// The `registry` to give `oci_client`, which always builds `<registry>/v2/...`: the host
    /// followed by the path prefix. `None` for an `override_path` root that does not end in
    /// `/v2`, which `oci_client` cannot address. The scheme is not part of it: configure the
    /// client's protocol from [`Self::scheme`].
    pub fn oci_registry(&self) -> Option<String> {
        let prefix = if self.override_path {
            self.path_prefix.strip_suffix("/v2")?
        } else {
            &self.path_prefix
        };
        Some(format!("{}{prefix}", self.host))
    }

    /// An `oci_client` reference to `image` on this endpoint (see [`Self::oci_registry`]).
    pub fn oci_reference(&self, image: &ImageRef) -> Option<oci_client::Reference> {
        let registry = self.oci_registry()?;
        Some(image.to_oci(&registry, &self.repository_path(image)))
    }

    fn default_origin(registry_host: &str) -> Self {
        let mut endpoint = RegistryEndpoint {
            scheme: Scheme::Https,
            host: registry_host.to_string(),
            path_prefix: String::new(),
            capabilities: Capabilities::ALL,
            skip_verify: false,
            ca_files: Vec::new(),
            client_certs: Vec::new(),
            override_path: false,
            headers: Vec::new(),
            dial_timeout: None,
            http_fallback: false,
            is_mirror: false,
        };
        endpoint.set_default_location(registry_host);
        endpoint
    }

    /// containerd's defaults for an origin without `server`.
    fn set_default_location(&mut self, registry_host: &str) {
        self.path_prefix = String::new();
        self.override_path = false;
        self.capabilities = Capabilities::ALL;
        self.http_fallback = false;
        if registry_host == DOCKER_HUB_HOST {
            self.scheme = Scheme::Https;
            self.host = DOCKER_HUB_ORIGIN.to_string();
            return;
        }
        self.host = registry_host.to_string();
        self.scheme = Scheme::Https;
        let Some(port) = loopback_port(registry_host) else {
            return;
        };
        match port {
            Some("80") => self.scheme = Scheme::Http,
            None | Some("443") => self.skip_verify = true,
            Some(_) => {
                self.skip_verify = true;
                self.http_fallback = true;
            }
        }
    }
}

/// The directories looked at for `registry_host`, in order; the first that exists is used.
pub fn host_dir_candidates(certs_dir: &Path, registry_host: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::with_capacity(3);
    if let Some(i) = registry_host.rfind(':').filter(|&i| i > 0) {
        dirs.push(certs_dir.join(format!(
            "{}_{}_",
            &registry_host[..i],
            &registry_host[i + 1..]
        )));
    }
    dirs.push(certs_dir.join(registry_host));
    dirs.push(certs_dir.join(DEFAULT_HOST_DIR));
    dirs
}

/// Whether `registry_host` has a host directory (its own or `_default`), i.e. whether
/// [`resolve_endpoints`] reads configuration rather than using containerd's defaults alone.
pub fn has_host_config(certs_dir: &Path, registry_host: &str) -> bool {
    find_host_dir(certs_dir, registry_host).is_ok_and(|dir| dir.is_some())
}

/// The repository `endpoint` serves `image` under; see [`RegistryEndpoint::repository_path`].
pub fn repository_path(endpoint: &RegistryEndpoint, image: &ImageRef) -> String {
    endpoint.repository_path(image)
}

/// The endpoints to pull `registry_host`'s images from, in the order to try them: the mirrors
/// in file order, then the origin. Endpoints without the `pull` capability are left out; the
/// caller checks `capabilities.resolve` before asking an endpoint for a manifest by tag.
pub fn resolve_endpoints(
    certs_dir: &Path,
    registry_host: &str,
) -> Result<Vec<RegistryEndpoint>, Error> {
    if registry_host.is_empty()
        || registry_host == "."
        || registry_host == ".."
        || registry_host.contains(['/', '\\', '\0'])
    {
        return Err(Error::InvalidReference {
            reference: registry_host.to_string(),
            reason: "not a registry host".to_string(),
        });
    }
    let mut endpoints = match find_host_dir(certs_dir, registry_host)? {
        Some(dir) => load_host_dir(&dir, registry_host)?,
        None => vec![RegistryEndpoint::default_origin(registry_host)],
    };
    endpoints.retain(|endpoint| {
        if !endpoint.capabilities.pull {
            tracing::debug!(
                registry = registry_host,
                endpoint = %endpoint.base_url(),
                "skipping registry endpoint without the pull capability"
            );
        }
        endpoint.capabilities.pull
    });
    Ok(endpoints)
}

fn find_host_dir(certs_dir: &Path, registry_host: &str) -> Result<Option<PathBuf>, Error> {
    for dir in host_dir_candidates(certs_dir, registry_host) {
        match fs::metadata(&dir) {
            Ok(meta) if meta.is_dir() => return Ok(Some(dir)),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(Error::Io {
                    op: "stat",
                    path: dir,
                    source,
                });
            }
        }
    }
    Ok(None)
}

fn load_host_dir(dir: &Path, registry_host: &str) -> Result<Vec<RegistryEndpoint>, Error> {
    let file = dir.join(HOSTS_FILE);
    tracing::debug!(registry = registry_host, path = %file.display(), "loading registry host config");
    let text = match fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            return Err(Error::InvalidHostsConfig {
                path: file,
                reason: "not valid UTF-8".to_string(),
            });
        }
        Err(source) => {
            return Err(Error::Io {
                op: "read",
                path: file,
                source,
            });
        }
    };
    if text.is_empty() {
        let mut origin = RegistryEndpoint::default_origin(registry_host);
        (origin.ca_files, origin.client_certs) = load_cert_files(dir)?;
        return Ok(vec![origin]);
    }
    parse_hosts_file(&text, dir, registry_host)
        .map_err(|reason| Error::InvalidHostsConfig { path: file, reason })
}

/// Docker's layout: `*.crt` are CA files, `*.cert` client certificates with an optional
/// `*.key` of the same stem.
fn load_cert_files(dir: &Path) -> Result<(Vec<PathBuf>, Vec<ClientCert>), Error> {
    let io_err = |source| Error::Io {
        op: "read directory",
        path: dir.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        if entry.file_type().map_err(io_err)?.is_dir() {
            continue;
        }
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    let mut ca_files = Vec::new();
    let mut client_certs = Vec::new();
    for name in &names {
        if name.ends_with(".crt") {
            ca_files.push(dir.join(name));
        } else if let Some(stem) = name.strip_suffix(".cert") {
            let key = format!("{stem}.key");
            let key = names.contains(&key).then(|| dir.join(key));
            client_certs.push((dir.join(name), key));
        }
    }
    Ok((ca_files, client_certs))
}

/// The settings a `[host."..."]` table and the top level share.
#[derive(Debug, Default, Deserialize)]
struct HostFields {
    capabilities: Option<Vec<String>>,
    ca: Option<toml::Value>,
    client: Option<toml::Value>,
    skip_verify: Option<bool>,
    header: Option<toml::Table>,
    #[serde(default)]
    override_path: bool,
    dial_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
struct HostsFile {
    server: Option<String>,
    /// Spanned keys give the file order, which a map loses.
    host: Option<BTreeMap<Spanned<String>, HostFields>>,
    capabilities: Option<Vec<String>>,
    ca: Option<toml::Value>,
    client: Option<toml::Value>,
    skip_verify: Option<bool>,
    header: Option<toml::Table>,
    #[serde(default)]
    override_path: bool,
    dial_timeout: Option<String>,
}

fn parse_hosts_file(
    text: &str,
    dir: &Path,
    registry_host: &str,
) -> Result<Vec<RegistryEndpoint>, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| toml_reason(text, &e))?;
    warn_unknown_keys(&table, &dir.join(HOSTS_FILE));
    let file: HostsFile = toml::from_str(text).map_err(|e| toml_reason(text, &e))?;

    let mut mirrors: Vec<_> = file.host.unwrap_or_default().into_iter().collect();
    mirrors.sort_by_key(|(url, _)| url.span().start);
    let mut endpoints = Vec::with_capacity(mirrors.len() + 1);
    for (url, fields) in mirrors {
        let url = url.into_inner();
        let endpoint = endpoint_from(Some(&url), fields, dir, true)
            .map_err(|reason| format!("host {url:?}: {reason}"))?;
        endpoints.push(endpoint);
    }

    let origin_fields = HostFields {
        capabilities: file.capabilities,
        ca: file.ca,
        client: file.client,
        skip_verify: file.skip_verify,
        header: file.header,
        override_path: file.override_path,
        dial_timeout: file.dial_timeout,
    };
    let server = file.server.filter(|s| !s.is_empty());
    let mut origin = endpoint_from(server.as_deref(), origin_fields, dir, false).map_err(
        |reason| match &server {
            Some(server) => format!("server {server:?}: {reason}"),
            None => reason,
        },
    )?;
    if server.is_none() {
        origin.set_default_location(registry_host);
    }
    endpoints.push(origin);
    Ok(endpoints)
}

fn endpoint_from(
    url: Option<&str>,
    fields: HostFields,
    dir: &Path,
    is_mirror: bool,
) -> Result<RegistryEndpoint, String> {
    let (scheme, host, path_prefix) = match url {
        Some(url) => parse_location(url, fields.override_path)?,
        None => (Scheme::Https, String::new(), String::new()),
    };
    let capabilities = match fields.capabilities.as_deref() {
        None | Some([]) => Capabilities::ALL,
        Some(list) => {
            let mut caps = Capabilities {
                pull: false,
                resolve: false,
                push: false,
            };
            for cap in list {
                match cap.to_ascii_lowercase().as_str() {
                    "pull" => caps.pull = true,
                    "resolve" => caps.resolve = true,
                    "push" => caps.push = true,
                    _ => return Err(format!("unknown capability {cap:?}")),
                }
            }
            caps
        }
    };
    let ca_files = match fields.ca {
        None => Vec::new(),
        Some(toml::Value::String(path)) => vec![absolute(dir, &path)],
        Some(toml::Value::Array(paths)) => paths
            .iter()
            .map(|p| p.as_str().map(|p| absolute(dir, p)))
            .collect::<Option<_>>()
            .ok_or("\"ca\": expected a path or a list of paths")?,
        Some(_) => return Err("\"ca\": expected a path or a list of paths".to_string()),
    };
    let client_certs = match fields.client {
        None => Vec::new(),
        Some(value) => client_pairs(&value, dir).ok_or(
            "\"client\": expected a path, a list of paths or a list of [certificate, key] pairs",
        )?,
    };
    let mut headers = Vec::new();
    for (name, value) in fields.header.unwrap_or_default() {
        if !is_header_name(&name) {
            return Err(format!("invalid header name {name:?}"));
        }
        let values = match &value {
            toml::Value::String(v) => vec![v.as_str()],
            toml::Value::Array(vs) => vs
                .iter()
                .map(toml::Value::as_str)
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    format!("header {name:?}: expected a string or a list of strings")
                })?,
            _ => {
                return Err(format!(
                    "header {name:?}: expected a string or a list of strings"
                ));
            }
        };
        for v in values {
            if v.contains(['\r', '\n', '\0']) {
                return Err(format!(
                    "header {name:?}: value contains a line break or NUL"
                ));
            }
            headers.push((name.clone(), v.to_string()));
        }
    }
    let dial_timeout = match fields.dial_timeout.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            parse_go_duration(s)
                .ok_or_else(|| format!("\"dial_timeout\": invalid duration {s:?}"))?,
        ),
    };
    Ok(RegistryEndpoint {
        scheme,
        host,
        path_prefix,
        capabilities,
        skip_verify: fields.skip_verify.unwrap_or(false),
        ca_files,
        client_certs,
        override_path: fields.override_path,
        headers,
        dial_timeout,
        http_fallback: false,
        is_mirror,
    })
}

/// Splits `[scheme://]host[:port][/path]` (https when no scheme, as containerd does) into the
/// scheme, the host and the path prefix (see [`RegistryEndpoint::path_prefix`]).
fn parse_location(url: &str, override_path: bool) -> Result<(Scheme, String, String), String> {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
            "http" => (Scheme::Http, rest),
            "https" => (Scheme::Https, rest),
            _ => return Err(format!("unsupported scheme {scheme:?}: use http or https")),
        },
        None => (Scheme::Https, url),
    };
    if rest.contains(['?', '#']) {
        return Err("a query or fragment is not supported".to_string());
    }
    let (host, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if host.is_empty() {
        return Err("missing host".to_string());
    }
    if host.contains('@') {
        return Err("credentials in the URL are not supported".to_string());
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._:[]%".contains(&b))
    {
        return Err(format!("invalid host {host:?}"));
    }
    let port = match host.rsplit_once(']') {
        Some((_, after)) => after.strip_prefix(':'),
        None => host.split_once(':').map(|(_, port)| port),
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("invalid port in {host:?}"));
    }
    let path = clean_path(path);
    let path_prefix = if override_path {
        path
    } else {
        match path.strip_suffix("/v2") {
            Some(prefix) => prefix.to_string(),
            None => path,
        }
    };
    Ok((scheme, host.to_string(), path_prefix))
}

/// Like Go's `path.Clean` for an absolute path, but `""` for the root.
fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    parts.iter().map(|p| format!("/{p}")).collect()
}

fn absolute(dir: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        dir.join(path)
    }
}

/// `"c"`, `["c1", "c2"]` (certificate and key in one file) or `[["cert", "key"], ...]`.
fn client_pairs(value: &toml::Value, dir: &Path) -> Option<Vec<ClientCert>> {
    let pair = |value: &toml::Value| match value {
        toml::Value::String(p) => Some((absolute(dir, p), None)),
        toml::Value::Array(pair) => match pair.as_slice() {
            [cert, key] => Some((
                absolute(dir, cert.as_str()?),
                Some(absolute(dir, key.as_str()?)),
            )),
            _ => None,
        },
        _ => None,
    };
    match value {
        toml::Value::String(p) => Some(vec![(absolute(dir, p), None)]),
        toml::Value::Array(items) => items.iter().map(pair).collect(),
        _ => None,
    }
}

/// An HTTP token (RFC 9110).
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Go's `time.ParseDuration` for non-negative values: `300ms`, `1.5s`, `1m30s`, `0`.
fn parse_go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() {
        return None;
    }
    let mut seconds = 0f64;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..end].parse().ok()?;
        rest = &rest[end..];
        let end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..end] {
            "ns" => 1e-9,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        seconds += number * scale;
        rest = &rest[end..];
    }
    Duration::try_from_secs_f64(seconds).ok()
}

/// `Some(port)` (`None` inside: no port) when `host` is `localhost` or a loopback address.
fn loopback_port(host: &str) -> Option<Option<&str>> {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        (addr, after.strip_prefix(':'))
    } else if host.matches(':').count() > 1 {
        (host, None)
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    let loopback = name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    loopback.then_some(port)
}

fn warn_unknown_keys(table: &toml::Table, file: &Path) {
    for key in table.keys() {
        if key != "server" && key != "host" && !HOST_KEYS.contains(&key.as_str()) {
            tracing::warn!(path = %file.display(), key = %key, "ignoring unknown key in registry host config");
        }
    }
    let Some(toml::Value::Table(hosts)) = table.get("host") else {
        return;
    };
    for (host, value) in hosts {
        let toml::Value::Table(fields) = value else {
            continue;
        };
        for key in fields.keys() {
            if !HOST_KEYS.contains(&key.as_str()) {
                tracing::warn!(
                    path = %file.display(),
                    host = %host,
                    key = %key,
                    "ignoring unknown key in registry host config"
                );
            }
        }
    }
}

/// `line L column C: message` for a TOML error, on one line.
fn toml_reason(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().trim_end_matches('.');
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line} column {column}: {message}")
        }
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_hosts(certs: &Path, host_dir: &str, text: &str) -> PathBuf {
        let dir = certs.join(host_dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(HOSTS_FILE), text).unwrap();
        dir
    }

    fn urls(endpoints: &[RegistryEndpoint]) -> Vec<String> {
        endpoints.iter().map(RegistryEndpoint::base_url).collect()
    }

    #[test]
    fn test_resolve_endpoints_no_config_docker_hub() {
        let certs = tempfile::tempdir().unwrap();
        assert!(!has_host_config(certs.path(), "docker.io"));
        let endpoints = resolve_endpoints(certs.path(), "docker.io").unwrap();
        assert_eq!(endpoints.len(), 1);
        let origin = &endpoints[0];
        assert_eq!(origin.scheme, Scheme::Https);
        assert_eq!(origin.host, "registry-1.docker.io");
        assert_eq!(origin.base_url(), "https://registry-1.docker.io/v2");
        assert_eq!(origin.capabilities, Capabilities::ALL);
        assert!(!origin.is_mirror && !origin.skip_verify && !origin.http_fallback);

        let image = ImageRef::parse("busybox").unwrap();
        assert_eq!(
            origin.repository_url(&image),
            "https://registry-1.docker.io/v2/library/busybox"
        );
        let oci = origin.oci_reference(&image).unwrap();
        assert_eq!(oci.whole(), "registry-1.docker.io/library/busybox:latest");
    }

    #[test]
    fn test_resolve_endpoints_missing_certs_dir() {
        let certs = tempfile::tempdir().unwrap();
        let endpoints = resolve_endpoints(&certs.path().join("absent"), "quay.io").unwrap();
        assert_eq!(urls(&endpoints), ["https://quay.io/v2"]);
    }

    #[test]
    fn test_resolve_endpoints_no_config_loopback_defaults() {
        let certs = tempfile::tempdir().unwrap();
        let origin = &resolve_endpoints(certs.path(), "localhost:5000").unwrap()[0];
        assert_eq!(origin.base_url(), "https://localhost:5000/v2");
        assert!(origin.skip_verify && origin.http_fallback);

        let origin = &resolve_endpoints(certs.path(), "127.0.0.1:80").unwrap()[0];
        assert_eq!(origin.base_url(), "http://127.0.0.1:80/v2");
        assert!(!origin.skip_verify && !origin.http_fallback);

        let origin = &resolve_endpoints(certs.path(), "[::1]:443").unwrap()[0];
        assert_eq!(origin.base_url(), "https://[::1]:443/v2");
        assert!(origin.skip_verify && !origin.http_fallback);

        let origin = &resolve_endpoints(certs.path(), "registry.local:5000").unwrap()[0];
        assert!(!origin.skip_verify && !origin.http_fallback);
    }

    #[test]
    fn test_resolve_endpoints_mirrors_keep_file_order() {
        let certs = tempfile::tempdir().unwrap();
        write_hosts(
            certs.path(),
            "docker.io",
            r#"
server = "https://registry-1.docker.io"

[host."https://zz-mirror.example"]
  capabilities = ["pull", "resolve"]

[host."http://aa-mirror.example:8080/docker"]
  capabilities = ["pull"]
"#,
        );
        let endpoints = resolve_endpoints(certs.path(), "docker.io").unwrap();
        assert_eq!(
            urls(&endpoints),
            [
                "https://zz-mirror.example/v2",
                "http://aa-mirror.example:8080/docker/v2",
                "https://registry-1.docker.io/v2",
            ]
        );
        assert!(endpoints[0].is_mirror && endpoints[1].is_mirror && !endpoints[2].is_mirror);
        assert!(endpoints[0].capabilities.resolve);
        assert!(!endpoints[1].capabilities.resolve);
        assert_eq!(endpoints[2].capabilities, Capabilities::ALL);

        let image = ImageRef::parse("busybox:1.36").unwrap();
        assert_eq!(endpoints[1].repository_path(&image), "library/busybox");
        assert_eq!(
            endpoints[1].oci_reference(&image).unwrap().whole(),
            "aa-mirror.example:8080/docker/library/busybox:1.36"
        );
    }

    #[test]
    fn test_resolve_endpoints_http_mirror_for_registry_k8s_io() {
        let certs = tempfile::tempdir().unwrap();
        write_hosts(
            certs.path(),
            "registry.k8s.io",
            r#"
[host."http://127.0.0.1:5000"]
  capabilities = ["pull", "resolve"]
  skip_verify = true
  [host."http://127.0.0.1:5000".header]
    x-custom = "v"
    x-multi = ["a", "b"]
"#,
        );
        let endpoints = resolve_endpoints(certs.path(), "registry.k8s.io").unwrap();
        assert_eq!(
            urls(&endpoints),
            ["http://127.0.0.1:5000/v2", "https://registry.k8s.io/v2"]
        );
        let mirror = &endpoints[0];
        assert_eq!(mirror.scheme, Scheme::Http);
        assert_eq!(mirror.host, "127.0.0.1:5000");
        assert!(mirror.skip_verify && !mirror.http_fallback);
        assert_eq!(
            mirror.headers,
            [
                ("x-custom".to_string(), "v".to_string()),
                ("x-multi".to_string(), "a".to_string()),
                ("x-multi".to_string(), "b".to_string()),
            ]
        );
        let image = ImageRef::parse("registry.k8s.io/pause:3.10").unwrap();
        assert_eq!(repository_path(mirror, &image), "pause");
        assert_eq!(
            mirror.repository_url(&image),
            "http://127.0.0.1:5000/v2/pause"
        );
        assert_eq!(
            mirror.oci_reference(&image).unwrap().whole(),
            "127.0.0.1:5000/pause:3.10"
        );
    }

    #[test]
    fn test_resolve_endpoints_default_dir_fallback() {
        let certs = tempfile::tempdir().unwrap();
        write_hosts(
            certs.path(),
            DEFAULT_HOST_DIR,
            "[host.\"https://mirror.example\"]\n",
        );
        assert!(has_host_config(certs.path(), "quay.io"));
        let endpoints = resolve_endpoints(certs.path(), "quay.io").unwrap();
        assert_eq!(
            urls(&endpoints),
            ["https://mirror.example/v2", "https://quay.io/v2"]
        );

        // A host's own directory wins over _default, even without hosts.toml.
        fs::create_dir(certs.path().join("ghcr.io")).unwrap();
        let endpoints = resolve_endpoints(certs.path(), "ghcr.io").unwrap();
        assert_eq!(urls(&endpoints), ["https://ghcr.io/v2"]);
    }

    #[test]
    fn test_resolve_endpoints_port_dir_names() {
        let certs = tempfile::tempdir().unwrap();
        write_hosts(
            certs.path(),
            "localhost:5000",
            "server = \"http://localhost:5000\"\n",
        );
        let endpoints = resolve_endpoints(certs.path(), "localhost:5000").unwrap();
        assert_eq!(urls(&endpoints), ["http://localhost:5000/v2"]);
        assert!(!endpoints[0].http_fallback);

        // containerd's escaped form is looked at first.
        write_hosts(
            certs.path(),
            "localhost_5000_",
            "server = \"https://localhost:5000\"\n",
        );
        let endpoints = resolve_endpoints(certs.path(), "localhost:5000").unwrap();
        assert_eq!(urls(&endpoints), ["https://localhost:5000/v2"]);
        assert_eq!(
            host_dir_candidates(Path::new("/c"), "localhost:5000"),
            [
                PathBuf::from("/c/localhost_5000_"),
                PathBuf::from("/c/localhost:5000"),
                PathBuf::from("/c/_default"),
            ]
        );
    }

    #[test]
    fn test_resolve_endpoints_ca_string_and_list() {
        let certs = tempfile::tempdir().unwrap();
        let dir = write_hosts(
            certs.path(),
            "quay.io",
            r#"
ca = "origin-ca.pem"
[host."https://one.example"]
  ca = "/etc/certs/ca.pem"
[host."https://two.example"]
  ca = ["a.pem", "/abs/b.pem"]
"#,
        );
        let endpoints = resolve_endpoints(certs.path(), "quay.io").unwrap();
        assert_eq!(endpoints[0].ca_files, [PathBuf::from("/etc/certs/ca.pem")]);
        assert_eq!(
            endpoints[1].ca_files,
            [dir.join("a.pem"), PathBuf::from("/abs/b.pem")]
        );
        assert_eq!(endpoints[2].ca_files, [dir.join("origin-ca.pem")]);
    }

    #[test]
    fn test_resolve_endpoints_client_and_dial_timeout() {
        let certs = tempfile::tempdir().unwrap();
        let dir = write_hosts(
            certs.path(),
            "quay.io",
            r#"
[host."https://one.example"]
  client = [["c.cert", "c.key"], "both.pem"]
  dial_timeout = "1m30s"
"#,
        );
        let endpoints = resolve_endpoints(certs.path(), "quay.io").unwrap();
        assert_eq!(
            endpoints[0].client_certs,
            [
                (dir.join("c.cert"), Some(dir.join("c.key"))),
                (dir.join("both.pem"), None),
            ]
        );
        assert_eq!(endpoints[0].dial_timeout, Some(Duration::from_secs(90)));
    }

    #[test]
    fn test_resolve_endpoints_docker_cert_files_without_hosts_toml() {
        let certs = tempfile::tempdir().unwrap();
        let dir = certs.path().join("quay.io");
        fs::create_dir(&dir).unwrap();
        for name in ["ca.crt", "client.cert", "client.key", "other.txt"] {
            fs::write(dir.join(name), "x").unwrap();
        }
        let endpoints = resolve_endpoints(certs.path(), "quay.io").unwrap();
        assert_eq!(urls(&endpoints), ["https://quay.io/v2"]);
        assert_eq!(endpoints[0].ca_files, [dir.join("ca.crt")]);
        assert_eq!(
            endpoints[0].client_certs,
            [(dir.join("client.cert"), Some(dir.join("client.key")))]
        );
    }

    #[test]
    fn test_resolve_endpoints_skips_hosts_without_pull() {
        let certs = tempfile::tempdir().unwrap();
        write_hosts(
            certs.path(),
            "quay.io",
            r#"
[host."https://push-only.example"]
  capabilities = ["push"]
[host."https://all.example"]
  capabilities = []
"#,
        );
        let endpoints = resolve_endpoints(certs.path(), "quay.io").unwrap();
        assert_eq!(
            urls(&endpoints),
            ["https://all.example/v2", "https://quay.io/v2"]
        );
    }

    #[test]
    fn test_resolve_endpoints_paths_and_override_path() {
        let certs = tempfile::tempdir().unwrap();
        write_hosts(
            certs.path(),
            "quay.io",
            r#"
server = "quay.example:8443"
[host."https://a.example/v2/"]
[host."https://b.example/x/./y/../v2"]
[host."https://c.example/api/docker"]
  override_path = true
[host."https://d.example/api/v2"]
  override_path = true
"#,
        );
        let endpoints = resolve_endpoints(certs.path(), "quay.io").unwrap();
        assert_eq!(
            urls(&endpoints),
            [
                "https://a.example/v2",
                "https://b.example/x/v2",
                "https://c.example/api/docker",
                "https://d.example/api/v2",
                "https://quay.example:8443/v2",
            ]
        );
        let image = ImageRef::parse("quay.io/org/app:1").unwrap();
        assert_eq!(
            endpoints[2].repository_url(&image),
            "https://c.example/api/docker/org/app"
        );
        assert_eq!(endpoints[2].oci_registry(), None);
        assert_eq!(
            endpoints[3].oci_registry().as_deref(),
            Some("d.example/api")
        );
        assert_eq!(endpoints[1].oci_registry().as_deref(), Some("b.example/x"));
    }

    #[test]
    fn test_resolve_endpoints_unknown_keys_tolerated() {
        let certs = tempfile::tempdir().unwrap();
        write_hosts(
            certs.path(),
            "quay.io",
            r#"
future_option = 1
[host."https://m.example"]
  also_new = "x"
"#,
        );
        let endpoints = resolve_endpoints(certs.path(), "quay.io").unwrap();
        assert_eq!(
            urls(&endpoints),
            ["https://m.example/v2", "https://quay.io/v2"]
        );
    }

    fn invalid_reason(text: &str) -> String {
        let certs = tempfile::tempdir().unwrap();
        let dir = write_hosts(certs.path(), "quay.io", text);
        match resolve_endpoints(certs.path(), "quay.io") {
            Err(Error::InvalidHostsConfig { path, reason }) => {
                assert_eq!(path, dir.join(HOSTS_FILE));
                reason
            }
            other => panic!("expected InvalidHostsConfig for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn test_resolve_endpoints_bad_toml_names_file_and_line() {
        let reason = invalid_reason("server = \"https://x\"\n[host.\"https://m\"\n");
        assert!(reason.starts_with("line 2 column"), "{reason}");

        let certs = tempfile::tempdir().unwrap();
        write_hosts(certs.path(), "quay.io", "server = [");
        let message = resolve_endpoints(certs.path(), "quay.io")
            .unwrap_err()
            .to_string();
        assert!(message.contains("quay.io/hosts.toml"), "{message}");
    }

    #[test]
    fn test_resolve_endpoints_invalid_values() {
        let cases = [
            ("skip_verify = \"yes\"", "line 1"),
            (
                "[host.\"https://m\"]\ncapabilities = [\"fetch\"]",
                "unknown capability",
            ),
            ("[host.\"https://m\"]\nca = 1", "\"ca\""),
            ("[host.\"https://m\"]\nca = [1]", "\"ca\""),
            ("[host.\"ftp://m\"]", "unsupported scheme"),
            ("[host.\"https://u:p@m\"]", "credentials"),
            ("[host.\"https://m:x\"]", "invalid port"),
            ("[host.\"https://m?a=b\"]", "query"),
            ("[host.\"https://\"]", "missing host"),
            (
                "[host.\"https://m\"]\ndial_timeout = \"soon\"",
                "dial_timeout",
            ),
            (
                "[host.\"https://m\".header]\n\"bad name\" = \"v\"",
                "header name",
            ),
            ("[host.\"https://m\".header]\nx = 1", "header \"x\""),
            ("[host.\"https://m\"]\nclient = [[\"a\"]]", "\"client\""),
            ("server = \"gopher://x\"", "server \"gopher://x\""),
        ];
        for (text, expected) in cases {
            let reason = invalid_reason(text);
            assert!(reason.contains(expected), "{text:?}: {reason}");
        }
    }

    #[test]
    fn test_resolve_endpoints_rejects_path_like_host() {
        let certs = tempfile::tempdir().unwrap();
        for host in ["", "..", "a/b"] {
            assert!(matches!(
                resolve_endpoints(certs.path(), host),
                Err(Error::InvalidReference { .. })
            ));
        }
    }

    #[test]
    fn test_parse_go_duration_forms() {
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_go_duration("10"), None);
        assert_eq!(parse_go_duration("-1s"), None);
        assert_eq!(parse_go_duration(""), None);
    }
}
