//! Network operations on a plugin chain (a conflist), as section 3 of the CNI spec describes
//! them: ADD runs the plugins in order, each getting the previous one's result as
//! `prevResult`, and the final result is cached on disk; CHECK runs them in order with the
//! cached result; DEL runs them in reverse with the cached result and the cached
//! configuration; STATUS and GC (spec 1.1.0) run them in order without attachment parameters.
//!
//! Each plugin gets its own entry plus `name` and `cniVersion`, and for ADD/DEL/CHECK a
//! `runtimeConfig` holding only the capability arguments its `capabilities` map declares
//! (`capabilities` itself is removed, as the spec says).
//!
//! One deliberate difference from the spec's "halt on error" for DEL: DEL is best effort, so
//! a failing plugin does not stop the plugins before it in the chain (an IPAM release still
//! runs when portmap fails); every error is returned together, and the cache record is kept so
//! that a retry runs the whole chain again (plugins must accept repeated DELs).
//!
//! Everything here blocks (plugins are processes): call it from a blocking thread. ADD does
//! not undo a half-made chain itself: like every CNI runtime, the caller runs DEL when ADD
//! fails (push the DEL onto the rollback stack before calling ADD).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::cache::{self, CacheRecord, CachedConfig};
use crate::invoke::{self, Command, PluginEnv};
use crate::network::find_plugin;
use crate::{CniResult, Error, NetworkConfig};

/// The interface name kubelet asks for.
pub const DEFAULT_IFNAME: &str = "eth0";

/// One attachment of a container to a network: the attachment parameters of the spec.
#[derive(Debug, Clone, PartialEq)]
pub struct AttachRequest {
    /// `CNI_CONTAINERID`: for pods, the sandbox id.
    pub container_id: String,
    /// `CNI_NETNS`: the pinned network namespace. For DEL it may be empty or gone.
    pub netns_path: PathBuf,
    /// `CNI_IFNAME`, [`DEFAULT_IFNAME`] unless said otherwise.
    pub ifname: String,
    /// `CNI_ARGS` pairs, in order (see [`kubelet_args`]).
    pub args: Vec<(String, String)>,
    /// Capability arguments (`portMappings`, `bandwidth`, `io.kubernetes.cri.pod-annotations`,
    /// ...); each plugin gets those its config declares in `capabilities`.
    pub capability_args: Map<String, Value>,
}

impl AttachRequest {
    /// An attachment on [`DEFAULT_IFNAME`] with no arguments.
    pub fn new(container_id: impl Into<String>, netns_path: impl Into<PathBuf>) -> AttachRequest {
        AttachRequest {
            container_id: container_id.into(),
            netns_path: netns_path.into(),
            ifname: DEFAULT_IFNAME.to_string(),
            args: Vec::new(),
            capability_args: Map::new(),
        }
    }

    /// The container id and interface name must be valid (they also name the cache file).
    pub fn validate(&self) -> Result<(), Error> {
        cache::validate_name("container id", &self.container_id)?;
        cache::validate_ifname(&self.ifname)?;
        format_cni_args(&self.args).map(|_| ())
    }
}

/// The `CNI_ARGS` kubelet's CNI integration passes for a pod, in its order:
/// `IgnoreUnknown=1;K8S_POD_NAMESPACE=..;K8S_POD_NAME=..;K8S_POD_INFRA_CONTAINER_ID=..;K8S_POD_UID=..`.
pub fn kubelet_args(
    namespace: &str,
    name: &str,
    infra_container_id: &str,
    uid: &str,
) -> Vec<(String, String)> {
    [
        ("IgnoreUnknown", "1"),
        ("K8S_POD_NAMESPACE", namespace),
        ("K8S_POD_NAME", name),
        ("K8S_POD_INFRA_CONTAINER_ID", infra_container_id),
        ("K8S_POD_UID", uid),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Joins `CNI_ARGS` pairs as `K=V;K=V`. Plugins split on `;` and then on `=`, so neither may
/// appear inside a key or value.
pub fn format_cni_args(args: &[(String, String)]) -> Result<String, Error> {
    let mut pairs = Vec::with_capacity(args.len());
    for (key, value) in args {
        let bad = |s: &str| s.contains(';') || s.contains('=');
        if key.is_empty() || bad(key) || bad(value) {
            return Err(Error::InvalidAttachment(format!(
                "CNI_ARGS pair {key:?}={value:?} must have a key and no ';' or '='"
            )));
        }
        pairs.push(format!("{key}={value}"));
    }
    Ok(pairs.join(";"))
}

/// The transport protocol of a port mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortProtocol {
    Tcp,
    Udp,
    Sctp,
}

impl PortProtocol {
    /// The lowercase name the `portMappings` capability uses.
    pub fn as_str(self) -> &'static str {
        match self {
            PortProtocol::Tcp => "tcp",
            PortProtocol::Udp => "udp",
            PortProtocol::Sctp => "sctp",
        }
    }
}

impl FromStr for PortProtocol {
    type Err = Error;

    /// Accepts any case (`TCP` as CRI spells it, `tcp` as CNI does).
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(PortProtocol::Tcp),
            "udp" => Ok(PortProtocol::Udp),
            "sctp" => Ok(PortProtocol::Sctp),
            _ => Err(Error::InvalidAttachment(format!(
                "port protocol {s:?} is not tcp, udp or sctp"
            ))),
        }
    }
}

/// One pod port published on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub container_port: u16,
    /// 0 means "not published" and the mapping is left out, as containerd does.
    pub host_port: u16,
    pub protocol: PortProtocol,
    /// The host address to bind; empty for all.
    pub host_ip: String,
}

/// The value of the `portMappings` capability argument (read by the portmap plugin):
/// `[{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":"127.0.0.1"}]`.
pub fn port_mappings_capability(mappings: &[PortMapping]) -> Value {
    let entries = mappings
        .iter()
        .filter(|m| m.host_port != 0)
        .map(|m| {
            let mut entry = json!({
                "hostPort": m.host_port,
                "containerPort": m.container_port,
                "protocol": m.protocol.as_str(),
            });
            if !m.host_ip.is_empty() {
                entry["hostIP"] = Value::String(m.host_ip.clone());
            }
            entry
        })
        .collect();
    Value::Array(entries)
}

/// An attachment that is still in use, for GC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
}

/// Runs network operations: where the plugins are, where ADD results are cached, and how
/// long one plugin execution may take.
#[derive(Debug, Clone)]
pub struct Runner {
    bin_dirs: Vec<PathBuf>,
    cache_dir: PathBuf,
    timeout: Duration,
}

/// A plugin chain to run: a loaded network or one from the cache.
struct Chain<'a> {
    path: &'a Path,
    name: &'a str,
    cni_version: &'a str,
    plugins: &'a [Value],
    /// Resolved executables, when known; others are looked up by `type`.
    binaries: &'a [PathBuf],
}

impl<'a> Chain<'a> {
    fn of_network(network: &'a NetworkConfig) -> Chain<'a> {
        Chain {
            path: &network.path,
            name: &network.name,
            cni_version: &network.cni_version,
            plugins: &network.plugins,
            binaries: &network.plugin_binaries,
        }
    }

    fn of_cache(config: &'a CachedConfig) -> Chain<'a> {
        Chain {
            path: &config.path,
            name: &config.name,
            cni_version: &config.cni_version,
            plugins: &config.plugins,
            binaries: &[],
        }
    }

    fn invalid(&self, reason: String) -> Error {
        Error::InvalidNetworkConfig {
            path: self.path.to_path_buf(),
            reason,
        }
    }

    fn at_least(&self, min: (u32, u32, u32)) -> Result<bool, Error> {
        parse_version(self.cni_version)
            .map(|v| v >= min)
            .ok_or_else(|| self.invalid(format!("cniVersion {:?} is not x.y.z", self.cni_version)))
    }

    fn require(
        &self,
        command: Command,
        min: (u32, u32, u32),
        needs: &'static str,
    ) -> Result<(), Error> {
        if self.at_least(min)? {
            return Ok(());
        }
        Err(Error::UnsupportedByVersion {
            command,
            network: self.name.to_string(),
            cni_version: self.cni_version.to_string(),
            needs,
        })
    }

    fn binary(&self, index: usize, bin_dirs: &[PathBuf]) -> Result<PathBuf, Error> {
        if let Some(known) = self.binaries.get(index) {
            return Ok(known.clone());
        }
        let plugin_type = self.plugins[index]
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        find_plugin(plugin_type, bin_dirs).ok_or_else(|| Error::PluginNotFound {
            plugin: plugin_type.to_string(),
            network: self.name.to_string(),
            dirs: bin_dirs.to_vec(),
        })
    }

    /// The plugin's entry plus `name` and `cniVersion`.
    fn plugin_config(&self, index: usize) -> Result<Map<String, Value>, Error> {
        let mut config = match &self.plugins[index] {
            Value::Object(entry) => entry.clone(),
            _ => return Err(self.invalid(format!("plugin {index} is not a json object"))),
        };
        config.insert("name".into(), Value::String(self.name.to_string()));
        config.insert(
            "cniVersion".into(),
            Value::String(self.cni_version.to_string()),
        );
        Ok(config)
    }

    /// The stdin of an ADD, DEL or CHECK.
    fn attachment_config(
        &self,
        index: usize,
        prev_result: Option<&Value>,
        capability_args: &Map<String, Value>,
    ) -> Result<Vec<u8>, Error> {
        let mut config = self.plugin_config(index)?;
        let runtime_config = runtime_config(config.remove("capabilities"), capability_args);
        if !runtime_config.is_empty() {
            config.insert("runtimeConfig".into(), Value::Object(runtime_config));
        }
        match prev_result {
            Some(prev) => config.insert("prevResult".into(), prev.clone()),
            None => config.remove("prevResult"),
        };
        to_bytes(&config)
    }
}

impl Runner {
    /// A runner for plugins in `bin_dirs` (also passed as `CNI_PATH`), caching ADD results in
    /// `cache_dir`, with [`invoke::DEFAULT_PLUGIN_TIMEOUT`] per plugin execution.
    pub fn new(bin_dirs: Vec<PathBuf>, cache_dir: PathBuf) -> Runner {
        Runner {
            bin_dirs,
            cache_dir,
            timeout: invoke::DEFAULT_PLUGIN_TIMEOUT,
        }
    }

    /// The same runner with another per-plugin timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Runner {
        self.timeout = timeout;
        self
    }

    /// The directory of the result cache.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// Attaches the container to `network`: ADD through the chain, then caches the result.
    pub fn add(&self, network: &NetworkConfig, req: &AttachRequest) -> Result<CniResult, Error> {
        let chain = Chain::of_network(network);
        cache::validate_name("network name", chain.name)?;
        req.validate()?;
        if req.netns_path.as_os_str().is_empty() {
            return Err(Error::InvalidAttachment(
                "ADD needs a network namespace path".into(),
            ));
        }
        let env = self.env(req, path_string(&req.netns_path), &req.args)?;
        let mut prev: Option<Value> = None;
        for index in 0..chain.plugins.len() {
            let binary = chain.binary(index, &self.bin_dirs)?;
            let stdin = chain.attachment_config(index, prev.as_ref(), &req.capability_args)?;
            let out = invoke::exec_plugin(&binary, Command::Add, &env, &stdin, self.timeout)?;
            prev = Some(invoke::parse_json_output(&binary, Command::Add, &out)?);
        }
        let raw = prev.ok_or_else(|| chain.invalid("no plugins".into()))?;
        let result = CniResult::from_json(raw.clone())?;
        cache::store(
            &self.cache_dir,
            &CacheRecord {
                kind: cache::CACHE_KIND.to_string(),
                network_name: network.name.clone(),
                container_id: req.container_id.clone(),
                ifname: req.ifname.clone(),
                netns_path: req.netns_path.clone(),
                cni_args: req.args.clone(),
                capability_args: req.capability_args.clone(),
                config: CachedConfig::from_network(network),
                result: raw,
            },
        )?;
        tracing::info!(
            network = %network.name,
            container = %req.container_id,
            ifname = %req.ifname,
            ips = ?result.pod_ips(),
            "cni add done"
        );
        Ok(result)
    }

    /// Checks the attachment (spec 0.4.0 and later): CHECK through the chain with the cached
    /// ADD result. `CNI_ARGS` and capability arguments are those of the ADD.
    pub fn check(&self, network: &NetworkConfig, req: &AttachRequest) -> Result<(), Error> {
        let chain = Chain::of_network(network);
        chain.require(Command::Check, (0, 4, 0), "0.4.0")?;
        req.validate()?;
        let record = cache::load(&self.cache_dir, chain.name, &req.container_id, &req.ifname)?
            .ok_or_else(|| Error::NoCachedResult {
                network: network.name.clone(),
                container_id: req.container_id.clone(),
                ifname: req.ifname.clone(),
            })?;
        let netns = if req.netns_path.as_os_str().is_empty() {
            &record.netns_path
        } else {
            &req.netns_path
        };
        let env = self.env(req, path_string(netns), &record.cni_args)?;
        for index in 0..chain.plugins.len() {
            let binary = chain.binary(index, &self.bin_dirs)?;
            let stdin =
                chain.attachment_config(index, Some(&record.result), &record.capability_args)?;
            invoke::exec_plugin(&binary, Command::Check, &env, &stdin, self.timeout)?;
        }
        Ok(())
    }

    /// Detaches the container from `network`. When the ADD is cached, DEL sends what the ADD
    /// was made with (configuration, `CNI_ARGS`, capability arguments) and its result as
    /// `prevResult`, even if the conf file changed since; otherwise it uses `network` as it
    /// is now, without `prevResult`. A missing network namespace is passed as an empty
    /// `CNI_NETNS`. The cache record is removed once every plugin succeeded.
    pub fn del(&self, network: &NetworkConfig, req: &AttachRequest) -> Result<(), Error> {
        cache::validate_name("network name", &network.name)?;
        req.validate()?;
        match self.load_for_del(&network.name, req)? {
            Some(record) => self.del_with(&Chain::of_cache(&record.config), req, Some(&record)),
            None => self.del_with(&Chain::of_network(network), req, None),
        }
    }

    /// Detaches the container from the network named `network_name` using only the cached
    /// ADD (for when its conf file is gone). `Ok(false)` when nothing is cached, so there is
    /// nothing known to delete.
    pub fn del_cached(&self, network_name: &str, req: &AttachRequest) -> Result<bool, Error> {
        cache::validate_name("network name", network_name)?;
        req.validate()?;
        match self.load_for_del(network_name, req)? {
            Some(record) => self
                .del_with(&Chain::of_cache(&record.config), req, Some(&record))
                .map(|()| true),
            None => Ok(false),
        }
    }

    /// The cached ADD result of one attachment, if any.
    pub fn cached_result(
        &self,
        network_name: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<CniResult>, Error> {
        match cache::load(&self.cache_dir, network_name, container_id, ifname)? {
            Some(record) => CniResult::from_json(record.result).map(Some),
            None => Ok(None),
        }
    }

    /// Asks every plugin whether it can serve ADD (STATUS, spec 1.1.0 and later); the first
    /// error is returned (codes 50 and 51 mean "not available").
    pub fn status(&self, network: &NetworkConfig) -> Result<(), Error> {
        let chain = Chain::of_network(network);
        chain.require(Command::Status, (1, 1, 0), "1.1.0")?;
        let env = self.bare_env();
        for index in 0..chain.plugins.len() {
            let binary = chain.binary(index, &self.bin_dirs)?;
            let stdin = to_bytes(&chain.plugin_config(index)?)?;
            invoke::exec_plugin(&binary, Command::Status, &env, &stdin, self.timeout)?;
        }
        Ok(())
    }

    /// Lets every plugin clean up what belongs to attachments not in `valid` (GC, spec 1.1.0
    /// and later). Runs every plugin even when one fails, and returns all errors. The caller
    /// must not run ADD or DEL on this network meanwhile, and still owes every attachment a
    /// DEL (GC does not replace it).
    pub fn gc(&self, network: &NetworkConfig, valid: &[Attachment]) -> Result<(), Error> {
        let chain = Chain::of_network(network);
        chain.require(Command::Gc, (1, 1, 0), "1.1.0")?;
        let attachments: Vec<Value> = valid
            .iter()
            .map(|a| json!({"containerID": a.container_id, "ifname": a.ifname}))
            .collect();
        let env = self.bare_env();
        let mut errors = Vec::new();
        for index in 0..chain.plugins.len() {
            let run = || {
                let binary = chain.binary(index, &self.bin_dirs)?;
                let mut config = chain.plugin_config(index)?;
                config.insert(
                    "cni.dev/valid-attachments".into(),
                    Value::Array(attachments.clone()),
                );
                // The name an earlier spec text used; libcni sends both.
                config.insert(
                    "cni.dev/attachments".into(),
                    Value::Array(attachments.clone()),
                );
                invoke::exec_plugin(
                    &binary,
                    Command::Gc,
                    &env,
                    &to_bytes(&config)?,
                    self.timeout,
                )
            };
            if let Err(error) = run() {
                tracing::warn!(network = %chain.name, plugin = index, %error, "cni gc failed");
                errors.push(error);
            }
        }
        chain_outcome(Command::Gc, chain.name, errors)
    }

    /// The cached record for a DEL; an unreadable one is ignored (and replaced by nothing
    /// once the DEL succeeds), as libcni does.
    fn load_for_del(
        &self,
        network: &str,
        req: &AttachRequest,
    ) -> Result<Option<CacheRecord>, Error> {
        match cache::load(&self.cache_dir, network, &req.container_id, &req.ifname) {
            Ok(record) => Ok(record),
            Err(error @ Error::InvalidCacheRecord { .. }) => {
                tracing::warn!(network = %network, container = %req.container_id, %error,
                    "ignoring unreadable cni cache record");
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    fn del_with(
        &self,
        chain: &Chain<'_>,
        req: &AttachRequest,
        record: Option<&CacheRecord>,
    ) -> Result<(), Error> {
        let args = record.map_or(&req.args, |r| &r.cni_args);
        let capability_args = record.map_or(&req.capability_args, |r| &r.capability_args);
        let netns = del_netns(req, record);
        let env = self.env(req, netns, args)?;
        // prevResult on DEL came with spec 0.4.0.
        let prev = match record {
            Some(r) if chain.at_least((0, 4, 0))? => Some(&r.result),
            _ => None,
        };
        let mut errors = Vec::new();
        for index in (0..chain.plugins.len()).rev() {
            let run = || {
                let binary = chain.binary(index, &self.bin_dirs)?;
                let stdin = chain.attachment_config(index, prev, capability_args)?;
                invoke::exec_plugin(&binary, Command::Del, &env, &stdin, self.timeout)
            };
            if let Err(error) = run() {
                tracing::warn!(network = %chain.name, container = %req.container_id,
                    plugin = index, %error, "cni del failed");
                errors.push(error);
            }
        }
        chain_outcome(Command::Del, chain.name, errors)?;
        cache::remove(&self.cache_dir, chain.name, &req.container_id, &req.ifname)?;
        tracing::info!(network = %chain.name, container = %req.container_id,
            ifname = %req.ifname, cached = record.is_some(), "cni del done");
        Ok(())
    }

    fn env(
        &self,
        req: &AttachRequest,
        netns: String,
        args: &[(String, String)],
    ) -> Result<PluginEnv, Error> {
        Ok(PluginEnv {
            container_id: req.container_id.clone(),
            netns,
            ifname: req.ifname.clone(),
            args: format_cni_args(args)?,
            path: self.cni_path(),
        })
    }

    fn bare_env(&self) -> PluginEnv {
        PluginEnv {
            path: self.cni_path(),
            ..PluginEnv::default()
        }
    }

    fn cni_path(&self) -> String {
        let dirs: Vec<String> = self.bin_dirs.iter().map(|d| path_string(d)).collect();
        dirs.join(":")
    }
}

/// The namespace for DEL: the request's, else the cached one, if it still exists; else empty,
/// which the spec allows for DEL (containerd does the same for a closed namespace).
fn del_netns(req: &AttachRequest, record: Option<&CacheRecord>) -> String {
    let candidates = [Some(&req.netns_path), record.map(|r| &r.netns_path)];
    candidates
        .into_iter()
        .flatten()
        .find(|p| !p.as_os_str().is_empty() && p.exists())
        .map(|p| path_string(p))
        .unwrap_or_default()
}

/// The union of what the plugin declares in `capabilities` (with `true`) and what the runtime
/// offers.
fn runtime_config(capabilities: Option<Value>, offered: &Map<String, Value>) -> Map<String, Value> {
    let mut config = Map::new();
    if let Some(Value::Object(declared)) = capabilities {
        for (name, enabled) in declared {
            if enabled == Value::Bool(true) {
                if let Some(value) = offered.get(&name) {
                    config.insert(name, value.clone());
                }
            }
        }
    }
    config
}

fn chain_outcome(command: Command, network: &str, errors: Vec<Error>) -> Result<(), Error> {
    if errors.is_empty() {
        return Ok(());
    }
    Err(Error::ChainFailed {
        command,
        network: network.to_string(),
        errors,
    })
}

fn to_bytes(config: &Map<String, Value>) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(config).map_err(|e| Error::InvalidAttachment(e.to_string()))
}

fn path_string(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// `"1.0.0"` as (1, 0, 0); missing parts count as 0.
fn parse_version(version: &str) -> Option<(u32, u32, u32)> {
    let mut parts = version.split('.').map(|p| p.parse::<u32>());
    let major = parts.next()?.ok()?;
    let minor = parts.next().unwrap_or(Ok(0)).ok()?;
    let patch = parts.next().unwrap_or(Ok(0)).ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some((major, minor, patch))
}
#[cfg(test)]
mod tests;
