//! Small test images built from the host's busybox-static, pushed over the registry HTTP API.
//!
//! A [`Layer`] is a list of tar entries written deterministically (fixed mtime, owner 0:0 unless
//! asked, entries in the order added), so the same layer always has the same digest and two
//! images can share a base layer. An [`ImageBuilder`] stacks layers, each with its
//! [`Compression`], writes the image config (with `rootfs.diff_ids`, the sha256 of each
//! uncompressed tar) and the manifest, in OCI or Docker schema 2 media types ([`Format`]).
//! [`push_test_images`] pushes the standard set the node tests pull.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use super::registry::{PushedImage, PushedIndex, RegistryClient, sha256_digest};

/// The statically linked busybox from Debian's `busybox-static` package.
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// The mtime of every tar entry (2023-11-14T22:13:20Z).
pub const LAYER_MTIME: u64 = 1_700_000_000;

/// The `created` time written in image configs and history, the same instant as [`LAYER_MTIME`].
pub const CREATED: &str = "2023-11-14T22:13:20Z";

/// The default `PATH` of an image's environment.
pub const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The applets [`Layer::busybox`] links to `/bin/busybox` in `/bin`.
#[rustfmt::skip]
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "sleep", "true", "false", "id", "env", "pwd", "ps", "mkdir", "rm",
    "touch", "wc", "head", "tail", "grep", "hostname", "stat", "dd", "top", "kill", "nc", "ping",
    "ip", "mount", "readlink", "test", "[", "sed", "awk", "yes", "seq", "tr", "date", "whoami",
    "dmesg", "printf", "md5sum", "sha256sum", "stty", "tty", "nslookup", "wget", "uname", "find",
    "du", "df", "chmod", "chown", "cp", "mv", "ln", "mkfifo", "mknod", "timeout", "sync", "nproc",
    "free", "cut", "sort", "uniq", "xargs", "basename", "dirname", "usleep",
];

/// `/etc/passwd` of the busybox layer.
pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
    nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n\
    corral:x:1000:1000:corral:/home/corral:/bin/sh\n";

/// `/etc/group` of the busybox layer.
pub const GROUP: &str = "root:x:0:\nnogroup:x:65534:\ncorral:x:1000:\nextra:x:2000:corral\n";

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (the common case).
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// The OCI layer media type for this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// Compresses `tar` (deterministically: no timestamps or names in the gzip header).
    pub fn compress(self, tar: &[u8]) -> Result<Vec<u8>> {
        match self {
            Compression::None => Ok(tar.to_vec()),
            Compression::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                encoder.write_all(tar).context("gzip-compressing a layer")?;
                encoder.finish().context("finishing a gzip layer")
            }
            Compression::Zstd => zstd::encode_all(tar, 3).context("zstd-compressing a layer"),
        }
    }
}

/// Which family of media types an image (manifest, config, layers, index) uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OCI image spec media types.
    Oci,
    /// Docker image manifest v2 schema 2 media types.
    Docker,
}

impl Format {
    /// The manifest media type.
    pub fn manifest_media_type(self) -> &'static str {
        match self {
            Format::Oci => "application/vnd.oci.image.manifest.v1+json",
            Format::Docker => "application/vnd.docker.distribution.manifest.v2+json",
        }
    }

    /// The config media type.
    pub fn config_media_type(self) -> &'static str {
        match self {
            Format::Oci => "application/vnd.oci.image.config.v1+json",
            Format::Docker => "application/vnd.docker.container.image.v1+json",
        }
    }

    /// The index (OCI) or manifest list (Docker) media type.
    pub fn index_media_type(self) -> &'static str {
        match self {
            Format::Oci => "application/vnd.oci.image.index.v1+json",
            Format::Docker => "application/vnd.docker.distribution.manifest.list.v2+json",
        }
    }

    /// The layer media type. Docker has no registered zstd type; this uses the
    /// `...diff.tar.zstd` spelling containerd recognises.
    pub fn layer_media_type(self, compression: Compression) -> &'static str {
        match (self, compression) {
            (Format::Oci, compression) => compression.oci_media_type(),
            (Format::Docker, Compression::None) => "application/vnd.docker.image.rootfs.diff.tar",
            (Format::Docker, Compression::Gzip) => {
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            }
            (Format::Docker, Compression::Zstd) => {
                "application/vnd.docker.image.rootfs.diff.tar.zstd"
            }
        }
    }
}

/// The platform an image is for, as written in its config and in index entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `os`, e.g. `linux`.
    pub os: String,
    /// `architecture` in GOARCH spelling, e.g. `amd64`, `arm64`.
    pub architecture: String,
    /// `variant`, e.g. `v8` for arm64.
    pub variant: Option<String>,
}

impl Platform {
    /// A platform from its parts.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.map(str::to_owned),
        }
    }

    /// This machine's platform (the Rust architecture name mapped to GOARCH).
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            other => (other, None),
        };
        Platform::new("linux", architecture, variant)
    }

    /// `os/architecture[/variant]`, e.g. `linux/arm64/v8`.
    pub fn name(&self) -> String {
        match &self.variant {
            Some(variant) => format!("{}/{}/{variant}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }

    /// The OCI `platform` object of an index entry.
    pub fn to_json(&self) -> Value {
        let mut platform = json!({ "architecture": self.architecture, "os": self.os });
        if let Some(variant) = &self.variant {
            platform["variant"] = json!(variant);
        }
        platform
    }
}

#[derive(Debug, Clone)]
enum EntryKind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    Hardlink(String),
}

#[derive(Debug, Clone)]
struct Entry {
    path: String,
    kind: EntryKind,
    mode: u32,
    uid: u64,
    gid: u64,
    /// Written byte for byte into the header (no normalisation, no `..` check): for
    /// hostile layers that a well-behaved tar writer would refuse to produce.
    raw: bool,
}

/// One image layer: tar entries in the order added. Paths may start with `/`; they are stored
/// relative (`bin/sh`), as in image layers.
#[derive(Debug, Clone, Default)]
pub struct Layer {
    entries: Vec<Entry>,
    comment: Option<String>,
}

impl Layer {
    /// An empty layer.
    pub fn new() -> Layer {
        Layer::default()
    }

    /// Sets the `created_by` text of this layer's history entry.
    pub fn comment(mut self, comment: &str) -> Layer {
        self.comment = Some(comment.to_owned());
        self
    }

    fn push(mut self, path: &str, kind: EntryKind, mode: u32, uid: u64, gid: u64) -> Layer {
        let path = path.trim_matches('/').to_owned();
        self.entries.push(Entry {
            path,
            kind,
            mode,
            uid,
            gid,
            raw: false,
        });
        self
    }

    /// A hostile regular file whose name is stored exactly as given (`../escape`,
    /// `/etc/x`), as an attacker's tar would.
    pub fn raw_file(mut self, name: &str, data: impl Into<Vec<u8>>) -> Layer {
        self.entries.push(Entry {
            path: name.to_owned(),
            kind: EntryKind::File(data.into()),
            mode: 0o644,
            uid: 0,
            gid: 0,
            raw: true,
        });
        self
    }

    /// A hostile symlink or hard link stored exactly as given.
    pub fn raw_link(mut self, name: &str, target: &str, hard: bool) -> Layer {
        let kind = if hard {
            EntryKind::Hardlink(target.to_owned())
        } else {
            EntryKind::Symlink(target.to_owned())
        };
        self.entries.push(Entry {
            path: name.to_owned(),
            kind,
            mode: 0o777,
            uid: 0,
            gid: 0,
            raw: true,
        });
        self
    }

    /// A directory owned by root.
    pub fn dir(self, path: &str, mode: u32) -> Layer {
        self.push(path, EntryKind::Dir, mode, 0, 0)
    }

    /// A directory owned by `uid:gid`.
    pub fn dir_owned(self, path: &str, mode: u32, uid: u64, gid: u64) -> Layer {
        self.push(path, EntryKind::Dir, mode, uid, gid)
    }

    /// A regular file owned by root.
    pub fn file(self, path: &str, data: impl Into<Vec<u8>>, mode: u32) -> Layer {
        self.push(path, EntryKind::File(data.into()), mode, 0, 0)
    }

    /// A regular file owned by `uid:gid`.
    pub fn file_owned(
        self,
        path: &str,
        data: impl Into<Vec<u8>>,
        mode: u32,
        uid: u64,
        gid: u64,
    ) -> Layer {
        self.push(path, EntryKind::File(data.into()), mode, uid, gid)
    }

    /// A symbolic link to `target` (kept verbatim, absolute or relative).
    pub fn symlink(self, path: &str, target: &str) -> Layer {
        self.push(path, EntryKind::Symlink(target.to_owned()), 0o777, 0, 0)
    }

    /// A hard link to `target`, an earlier entry of this layer (a leading `/` is dropped).
    pub fn hardlink(self, path: &str, target: &str) -> Layer {
        let target = target.trim_start_matches('/').to_owned();
        self.push(path, EntryKind::Hardlink(target), 0o644, 0, 0)
    }

    /// A whiteout deleting `path` from lower layers: the entry `<parent>/.wh.<name>`.
    pub fn whiteout(self, path: &str) -> Layer {
        let path = path.trim_matches('/');
        let marker = match path.rsplit_once('/') {
            Some((parent, name)) => format!("{parent}/.wh.{name}"),
            None => format!(".wh.{path}"),
        };
        self.push(&marker, EntryKind::File(Vec::new()), 0o644, 0, 0)
    }

    /// An opaque marker hiding everything lower layers put in `dir`: `<dir>/.wh..wh..opq`.
    pub fn opaque(self, dir: &str) -> Layer {
        let marker = format!("{}/.wh..wh..opq", dir.trim_matches('/'));
        self.push(&marker, EntryKind::File(Vec::new()), 0o644, 0, 0)
    }

    /// A minimal root filesystem: the host's static busybox with its applets, and users.
    ///
    /// Directories `/bin /etc /tmp (1777) /root /proc /sys /dev /var /usr /usr/bin /home
    /// /home/corral (1000:1000)`; `/bin/busybox` (0755) with a hard link per applet of
    /// [`BUSYBOX_APPLETS`] in `/bin`; `/usr/bin/env` a symlink to `/bin/busybox` (for
    /// shebangs); `/etc/passwd` ([`PASSWD`]) and `/etc/group` ([`GROUP`]).
    pub fn busybox() -> Result<Layer> {
        let busybox = std::fs::read(HOST_BUSYBOX).with_context(|| {
            format!("reading {HOST_BUSYBOX}: install the Debian package `busybox-static`")
        })?;
        let mut layer = Layer::new().comment("corral-test: busybox rootfs");
        for dir in ["/bin", "/etc"] {
            layer = layer.dir(dir, 0o755);
        }
        layer = layer.dir("/tmp", 0o1777).dir("/root", 0o700);
        for dir in ["/proc", "/sys", "/dev", "/var", "/usr", "/usr/bin", "/home"] {
            layer = layer.dir(dir, 0o755);
        }
        layer =
            layer
                .dir_owned("/home/corral", 0o755, 1000, 1000)
                .file("/bin/busybox", busybox, 0o755);
        for applet in BUSYBOX_APPLETS {
            layer = layer.hardlink(&format!("/bin/{applet}"), "/bin/busybox");
        }
        Ok(layer
            .symlink("/usr/bin/env", "/bin/busybox")
            .file("/etc/passwd", PASSWD, 0o644)
            .file("/etc/group", GROUP, 0o644))
    }

    /// The uncompressed tar of this layer.
    pub fn tar(&self) -> Result<Vec<u8>> {
        let mut builder = tar::Builder::new(Vec::new());
        for entry in &self.entries {
            ensure!(!entry.path.is_empty(), "layer entry with an empty path");
            let mut header = tar::Header::new_gnu();
            header.set_mtime(LAYER_MTIME);
            header.set_uid(entry.uid);
            header.set_gid(entry.gid);
            header.set_mode(entry.mode);
            let path = entry.path.as_str();
            if entry.raw {
                append_raw(&mut builder, &mut header, entry)
                    .with_context(|| format!("writing raw layer entry {path}"))?;
                continue;
            }
            let written = match &entry.kind {
                EntryKind::Dir => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    builder.append_data(&mut header, path, std::io::empty())
                }
                EntryKind::File(data) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(data.len() as u64);
                    builder.append_data(&mut header, path, data.as_slice())
                }
                EntryKind::Symlink(target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_size(0);
                    builder.append_link(&mut header, path, target)
                }
                EntryKind::Hardlink(target) => {
                    header.set_entry_type(tar::EntryType::Link);
                    header.set_size(0);
                    builder.append_link(&mut header, path, target)
                }
            };
            written.with_context(|| format!("writing layer entry {path}"))?;
        }
        builder.into_inner().context("finishing a layer tar")
    }

    fn history_comment(&self, index: usize) -> String {
        self.comment
            .clone()
            .unwrap_or_else(|| format!("corral-test: layer {index}"))
    }
}

/// Appends an entry whose name and link target go into the header unchecked.
fn append_raw(
    builder: &mut tar::Builder<Vec<u8>>,
    header: &mut tar::Header,
    entry: &Entry,
) -> Result<()> {
    let copy_into = |field: &mut [u8], value: &str| -> Result<()> {
        ensure!(value.len() < field.len(), "raw name {value:?} too long");
        field[..value.len()].copy_from_slice(value.as_bytes());
        Ok(())
    };
    let data: &[u8] = match &entry.kind {
        EntryKind::File(data) => {
            header.set_entry_type(tar::EntryType::Regular);
            data
        }
        EntryKind::Symlink(target) => {
            header.set_entry_type(tar::EntryType::Symlink);
            copy_into(&mut header.as_old_mut().linkname, target)?;
            &[]
        }
        EntryKind::Hardlink(target) => {
            header.set_entry_type(tar::EntryType::Link);
            copy_into(&mut header.as_old_mut().linkname, target)?;
            &[]
        }
        EntryKind::Dir => {
            header.set_entry_type(tar::EntryType::Directory);
            &[]
        }
    };
    header.set_size(data.len() as u64);
    copy_into(&mut header.as_old_mut().name, &entry.path)?;
    header.set_cksum();
    builder.append(header, data)?;
    Ok(())
}

/// A layer blob ready to push.
#[derive(Debug, Clone)]
pub struct BuiltLayer {
    /// The layer media type.
    pub media_type: String,
    /// sha256 of the (compressed) blob.
    pub digest: String,
    /// sha256 of the uncompressed tar.
    pub diff_id: String,
    /// The blob bytes.
    pub blob: Vec<u8>,
}

/// An image's blobs and manifest, built but not pushed.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// The media types used.
    pub format: Format,
    /// The platform in the config.
    pub platform: Platform,
    /// The layers, bottom first.
    pub layers: Vec<BuiltLayer>,
    /// The image config JSON.
    pub config_bytes: Vec<u8>,
    /// sha256 of the config.
    pub config_digest: String,
    /// The manifest JSON.
    pub manifest_bytes: Vec<u8>,
    /// sha256 of the manifest.
    pub manifest_digest: String,
}

/// Builds one image: layers (each with its compression) and the config fields.
///
/// Fields are public for tests that want to tweak them; the methods chain.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    /// OCI or Docker media types.
    pub format: Format,
    /// The platform in the config (and in an index entry).
    pub platform: Platform,
    /// Layers, bottom first.
    pub layers: Vec<(Layer, Compression)>,
    /// `config.Entrypoint`.
    pub entrypoint: Option<Vec<String>>,
    /// `config.Cmd`.
    pub cmd: Option<Vec<String>>,
    /// `config.Env` (`NAME=value`), by default [`DEFAULT_PATH_ENV`].
    pub env: Vec<String>,
    /// `config.User`.
    pub user: Option<String>,
    /// `config.WorkingDir`.
    pub working_dir: Option<String>,
    /// `config.Labels`.
    pub labels: BTreeMap<String, String>,
    /// `config.StopSignal`.
    pub stop_signal: Option<String>,
    /// `config.Volumes` (paths).
    pub volumes: Vec<String>,
    /// `config.ExposedPorts` (`80/tcp`).
    pub exposed_ports: Vec<String>,
    /// Manifest annotations.
    pub annotations: BTreeMap<String, String>,
}

impl Default for ImageBuilder {
    fn default() -> ImageBuilder {
        ImageBuilder::new()
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| (*item).to_owned()).collect()
}

impl ImageBuilder {
    /// An OCI image for the host platform with no layers and the default `PATH`.
    pub fn new() -> ImageBuilder {
        ImageBuilder {
            format: Format::Oci,
            platform: Platform::host(),
            layers: Vec::new(),
            entrypoint: None,
            cmd: None,
            env: vec![DEFAULT_PATH_ENV.to_owned()],
            user: None,
            working_dir: None,
            labels: BTreeMap::new(),
            stop_signal: None,
            volumes: Vec::new(),
            exposed_ports: Vec::new(),
            annotations: BTreeMap::new(),
        }
    }

    /// [`Layer::busybox`] compressed with `compression`, and `cmd ["sh"]`.
    pub fn busybox(compression: Compression) -> Result<ImageBuilder> {
        Ok(ImageBuilder::new()
            .layer(Layer::busybox()?, compression)
            .cmd(&["sh"]))
    }

    /// Uses OCI or Docker media types.
    pub fn format(mut self, format: Format) -> ImageBuilder {
        self.format = format;
        self
    }

    /// Sets the platform.
    pub fn platform(mut self, platform: Platform) -> ImageBuilder {
        self.platform = platform;
        self
    }

    /// Adds a layer on top.
    pub fn layer(mut self, layer: Layer, compression: Compression) -> ImageBuilder {
        self.layers.push((layer, compression));
        self
    }

    /// Sets the entrypoint.
    pub fn entrypoint(mut self, entrypoint: &[&str]) -> ImageBuilder {
        self.entrypoint = Some(strings(entrypoint));
        self
    }

    /// Sets the command.
    pub fn cmd(mut self, cmd: &[&str]) -> ImageBuilder {
        self.cmd = Some(strings(cmd));
        self
    }

    /// Sets `name=value` in the environment, replacing an earlier value of `name`.
    pub fn env(mut self, name: &str, value: &str) -> ImageBuilder {
        let prefix = format!("{name}=");
        self.env.retain(|entry| !entry.starts_with(&prefix));
        self.env.push(format!("{name}={value}"));
        self
    }

    /// Sets the user (`name`, `uid`, `uid:gid`, ...).
    pub fn user(mut self, user: &str) -> ImageBuilder {
        self.user = Some(user.to_owned());
        self
    }

    /// Sets the working directory.
    pub fn working_dir(mut self, dir: &str) -> ImageBuilder {
        self.working_dir = Some(dir.to_owned());
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: &str, value: &str) -> ImageBuilder {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Sets the stop signal (`SIGTERM`, ...).
    pub fn stop_signal(mut self, signal: &str) -> ImageBuilder {
        self.stop_signal = Some(signal.to_owned());
        self
    }

    /// Declares a volume.
    pub fn volume(mut self, path: &str) -> ImageBuilder {
        self.volumes.push(path.to_owned());
        self
    }

    /// Declares an exposed port (`8080/tcp`).
    pub fn expose(mut self, port: &str) -> ImageBuilder {
        self.exposed_ports.push(port.to_owned());
        self
    }

    /// Adds a manifest annotation.
    pub fn annotation(mut self, key: &str, value: &str) -> ImageBuilder {
        self.annotations.insert(key.to_owned(), value.to_owned());
        self
    }

    /// The `config` object of the image config.
    fn runtime_config(&self) -> Value {
        let mut config = json!({ "Env": self.env });
        if let Some(entrypoint) = &self.entrypoint {
            config["Entrypoint"] = json!(entrypoint);
        }
        if let Some(cmd) = &self.cmd {
            config["Cmd"] = json!(cmd);
        }
        if let Some(user) = &self.user {
            config["User"] = json!(user);
        }
        if let Some(dir) = &self.working_dir {
            config["WorkingDir"] = json!(dir);
        }
        if !self.labels.is_empty() {
            config["Labels"] = json!(self.labels);
        }
        if let Some(signal) = &self.stop_signal {
            config["StopSignal"] = json!(signal);
        }
        let set = |items: &[String]| -> Value {
            Value::Object(items.iter().map(|item| (item.clone(), json!({}))).collect())
        };
        if !self.volumes.is_empty() {
            config["Volumes"] = set(&self.volumes);
        }
        if !self.exposed_ports.is_empty() {
            config["ExposedPorts"] = set(&self.exposed_ports);
        }
        config
    }

    /// Builds the layer blobs, the config and the manifest.
    pub fn build(&self) -> Result<BuiltImage> {
        ensure!(!self.layers.is_empty(), "an image needs at least one layer");
        let mut layers = Vec::with_capacity(self.layers.len());
        let mut history = Vec::with_capacity(self.layers.len() + 1);
        for (index, (layer, compression)) in self.layers.iter().enumerate() {
            let tar = layer.tar()?;
            let blob = compression.compress(&tar)?;
            layers.push(BuiltLayer {
                media_type: self.format.layer_media_type(*compression).to_owned(),
                digest: sha256_digest(&blob),
                diff_id: sha256_digest(&tar),
                blob,
            });
            history.push(json!({ "created": CREATED, "created_by": layer.history_comment(index) }));
        }
        history.push(json!({
            "created": CREATED,
            "created_by": "corral-test: image config",
            "empty_layer": true,
        }));
        let mut config = json!({
            "created": CREATED,
            "architecture": self.platform.architecture,
            "os": self.platform.os,
            "config": self.runtime_config(),
            "rootfs": {
                "type": "layers",
                "diff_ids": layers.iter().map(|layer| layer.diff_id.as_str()).collect::<Vec<_>>(),
            },
            "history": history,
        });
        if let Some(variant) = &self.platform.variant {
            config["variant"] = json!(variant);
        }
        let config_bytes = serde_json::to_vec(&config).context("serializing the image config")?;
        let config_digest = sha256_digest(&config_bytes);

        let mut manifest = json!({
            "schemaVersion": 2,
            "mediaType": self.format.manifest_media_type(),
            "config": {
                "mediaType": self.format.config_media_type(),
                "digest": config_digest,
                "size": config_bytes.len(),
            },
            "layers": layers.iter().map(|layer| json!({
                "mediaType": layer.media_type,
                "digest": layer.digest,
                "size": layer.blob.len(),
            })).collect::<Vec<_>>(),
        });
        if !self.annotations.is_empty() {
            manifest["annotations"] = json!(self.annotations);
        }
        let manifest_bytes = serde_json::to_vec(&manifest).context("serializing the manifest")?;
        Ok(BuiltImage {
            format: self.format,
            platform: self.platform.clone(),
            manifest_digest: sha256_digest(&manifest_bytes),
            manifest_bytes,
            config_digest,
            config_bytes,
            layers,
        })
    }

    /// Builds the image and pushes it as `registry/repo:tag` without credentials.
    pub async fn push(&self, registry: &str, repo: &str, tag: &str) -> Result<PushedImage> {
        self.push_to(&RegistryClient::new(registry)?, repo, tag)
            .await
    }

    /// Builds the image and pushes it to `repo` under `reference` (a tag or the digest) with
    /// `client` (which may carry credentials).
    pub async fn push_to(
        &self,
        client: &RegistryClient,
        repo: &str,
        reference: &str,
    ) -> Result<PushedImage> {
        client.push_image(self.build()?, repo, reference).await
    }
}

/// Pushes `images` by digest and an OCI image index of them as `registry/repo:tag`.
pub async fn push_index(
    registry: &str,
    repo: &str,
    tag: &str,
    images: &[ImageBuilder],
) -> Result<PushedIndex> {
    let client = RegistryClient::new(registry)?;
    client.push_index(repo, tag, images, Format::Oci).await
}

/// Like [`push_index`] with a Docker manifest list; `images` must use [`Format::Docker`].
pub async fn push_manifest_list(
    registry: &str,
    repo: &str,
    tag: &str,
    images: &[ImageBuilder],
) -> Result<PushedIndex> {
    let client = RegistryClient::new(registry)?;
    client.push_index(repo, tag, images, Format::Docker).await
}

/// The standard images of the node tests, as pushed by [`push_test_images`].
#[derive(Debug, Clone)]
pub struct TestImages {
    /// `corral-test/busybox:latest`: one gzip busybox layer, `cmd ["sh"]`.
    pub busybox: PushedImage,
    /// `corral-test/busybox:zstd`: the same content as a zstd layer.
    pub busybox_zstd: PushedImage,
    /// `corral-test/busybox:uncompressed`: the same content as a plain tar layer.
    pub busybox_uncompressed: PushedImage,
    /// `corral-test/busybox:docker`: Docker schema 2 media types, gzip layer.
    pub busybox_docker: PushedImage,
    /// `corral-test/multiarch:latest`: an OCI index of linux/amd64 and linux/arm64/v8, each the
    /// busybox layer plus a layer with `/platform` holding the platform name (e.g.
    /// `linux/amd64`). Both carry the host's busybox binary, so only the host's runs.
    pub multiarch: PushedIndex,
    /// `corral-test/whiteout:latest`: layer 1 is busybox plus `/data/keep`, `/data/remove`,
    /// `/data/dir/a`, `/data/opaque/old`; layer 2 whites out `/data/remove`, makes
    /// `/data/opaque` opaque with `/data/opaque/new`, and adds `/data/added`.
    pub whiteout: PushedImage,
    /// `corral-test/shared:latest`: the same busybox base layer as `busybox`, plus a layer with
    /// `/shared` (`shared layer\n`).
    pub shared_base: PushedImage,
}

impl TestImages {
    /// Every single-manifest image with its field name (the index entries not included).
    pub fn images(&self) -> Vec<(&'static str, &PushedImage)> {
        vec![
            ("busybox", &self.busybox),
            ("busybox_zstd", &self.busybox_zstd),
            ("busybox_uncompressed", &self.busybox_uncompressed),
            ("busybox_docker", &self.busybox_docker),
            ("whiteout", &self.whiteout),
            ("shared_base", &self.shared_base),
        ]
    }
}

/// The two layers of the `whiteout` test image.
pub fn whiteout_layers() -> Result<(Layer, Layer)> {
    let lower = Layer::busybox()?
        .comment("corral-test: busybox rootfs and /data")
        .dir("/data", 0o755)
        .file("/data/keep", "keep\n", 0o644)
        .file("/data/remove", "remove\n", 0o644)
        .dir("/data/dir", 0o755)
        .file("/data/dir/a", "a\n", 0o644)
        .dir("/data/opaque", 0o755)
        .file("/data/opaque/old", "old\n", 0o644);
    let upper = Layer::new()
        .comment("corral-test: whiteouts")
        .dir("/data", 0o755)
        .whiteout("/data/remove")
        .dir("/data/opaque", 0o755)
        .opaque("/data/opaque")
        .file("/data/opaque/new", "new\n", 0o644)
        .file("/data/added", "added\n", 0o644);
    Ok((lower, upper))
}

/// Pushes the standard test images (see [`TestImages`]) to `registry` without credentials.
pub async fn push_test_images(registry: &str) -> Result<TestImages> {
    push_test_images_to(&RegistryClient::new(registry)?).await
}

/// Pushes the standard test images with `client` (which may carry credentials).
pub async fn push_test_images_to(client: &RegistryClient) -> Result<TestImages> {
    let busybox_repo = "corral-test/busybox";
    let busybox = ImageBuilder::busybox(Compression::Gzip)?
        .push_to(client, busybox_repo, "latest")
        .await?;
    let busybox_zstd = ImageBuilder::busybox(Compression::Zstd)?
        .push_to(client, busybox_repo, "zstd")
        .await?;
    let busybox_uncompressed = ImageBuilder::busybox(Compression::None)?
        .push_to(client, busybox_repo, "uncompressed")
        .await?;
    let busybox_docker = ImageBuilder::busybox(Compression::Gzip)?
        .format(Format::Docker)
        .push_to(client, busybox_repo, "docker")
        .await?;

    let mut platforms = Vec::new();
    for platform in [
        Platform::new("linux", "amd64", None),
        Platform::new("linux", "arm64", Some("v8")),
    ] {
        let marker = Layer::new().comment("corral-test: platform marker").file(
            "/platform",
            platform.name(),
            0o644,
        );
        platforms.push(
            ImageBuilder::busybox(Compression::Gzip)?
                .platform(platform)
                .layer(marker, Compression::Gzip),
        );
    }
    let multiarch = client
        .push_index("corral-test/multiarch", "latest", &platforms, Format::Oci)
        .await?;

    let (lower, upper) = whiteout_layers()?;
    let whiteout = ImageBuilder::new()
        .layer(lower, Compression::Gzip)
        .layer(upper, Compression::Gzip)
        .cmd(&["sh"])
        .push_to(client, "corral-test/whiteout", "latest")
        .await?;

    let shared =
        Layer::new()
            .comment("corral-test: shared extra")
            .file("/shared", "shared layer\n", 0o644);
    let shared_base = ImageBuilder::busybox(Compression::Gzip)?
        .layer(shared, Compression::Gzip)
        .push_to(client, "corral-test/shared", "latest")
        .await?;

    Ok(TestImages {
        busybox,
        busybox_zstd,
        busybox_uncompressed,
        busybox_docker,
        multiarch,
        whiteout,
        shared_base,
    })
}
