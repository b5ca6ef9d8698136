//! The glue between a sandbox and CNI: the attach request (kubelet-style CNI_ARGS, port
//! mappings, bandwidth, pod annotations) and ADD/DEL on blocking threads.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use corral_cni::{AttachRequest, NetworkConfig, PortMapping, PortProtocol, Runner};
use serde_json::{Map, Value, json};

use crate::error::Error;
use crate::sandbox_record::{PortMappingRecord, SandboxRecord};

const INGRESS_BANDWIDTH: &str = "kubernetes.io/ingress-bandwidth";
const EGRESS_BANDWIDTH: &str = "kubernetes.io/egress-bandwidth";

/// Runs CNI plugins for pods.
#[derive(Debug, Clone)]
pub struct PodNetwork {
    runner: Arc<Runner>,
    loader: Arc<corral_cni::NetworkLoader>,
}

impl PodNetwork {
    /// Plugins from `bin_dirs`; ADD results cached under `cache_dir`.
    pub fn new(
        loader: Arc<corral_cni::NetworkLoader>,
        bin_dirs: Vec<PathBuf>,
        cache_dir: PathBuf,
    ) -> PodNetwork {
        PodNetwork {
            runner: Arc::new(Runner::new(bin_dirs, cache_dir)),
            loader,
        }
    }

    /// Attaches the pod to the current network; returns the network's name and the pod IPs
    /// (IPv4 first).
    pub async fn attach(&self, sandbox: &SandboxRecord) -> Result<(String, Vec<IpAddr>), Error> {
        let request = attach_request(sandbox)?;
        let (runner, loader) = (Arc::clone(&self.runner), Arc::clone(&self.loader));
        blocking(move || {
            let network: Arc<NetworkConfig> = loader
                .current()
                .map_err(|e| Error::FailedPrecondition(format!("pod network is not ready: {e}")))?;
            let result = runner.add(&network, &request).map_err(Error::Cni)?;
            Ok((network.name.clone(), result.pod_ips()))
        })
        .await
    }

    /// Detaches the pod (DEL, with the config and result cached at ADD). Nothing cached (never
    /// attached, or already detached) is fine.
    pub async fn detach(&self, sandbox: &SandboxRecord, network_name: &str) -> Result<(), Error> {
        let request = attach_request(sandbox)?;
        let runner = Arc::clone(&self.runner);
        let network_name = network_name.to_string();
        blocking(move || {
            runner
                .del_cached(&network_name, &request)
                .map(drop)
                .map_err(Error::Cni)
        })
        .await
    }
}

impl PodNetwork {
    /// Best-effort DEL after a failed ADD (nothing was cached): plugins that did part of
    /// their work release it. Errors are only logged.
    pub async fn detach_uncached(&self, sandbox: &SandboxRecord) {
        let Ok(request) = attach_request(sandbox) else {
            return;
        };
        let (runner, loader) = (Arc::clone(&self.runner), Arc::clone(&self.loader));
        let id = sandbox.id.clone();
        let result = tokio::task::spawn_blocking(move || {
            if let Ok(network) = loader.current() {
                if let Err(error) = runner.del(&network, &request) {
                    tracing::warn!(sandbox = %id, %error, "CNI DEL after a failed ADD failed");
                }
            }
        })
        .await;
        if let Err(error) = result {
            tracing::warn!(%error, "CNI cleanup task failed");
        }
    }

    /// The ADD result cached for a sandbox.
    pub async fn cached_result(&self, network_name: &str, sandbox_id: &str) -> Option<Value> {
        let runner = Arc::clone(&self.runner);
        let (network_name, sandbox_id) = (network_name.to_string(), sandbox_id.to_string());
        tokio::task::spawn_blocking(move || {
            runner
                .cached_result(&network_name, &sandbox_id, corral_cni::DEFAULT_IFNAME)
                .ok()
                .flatten()
                .map(|result| result.raw().clone())
        })
        .await
        .ok()
        .flatten()
    }
}

/// The CNI request for a sandbox.
fn attach_request(sandbox: &SandboxRecord) -> Result<AttachRequest, Error> {
    let netns = sandbox.netns.clone().unwrap_or_default();
    let mut request = AttachRequest::new(sandbox.id.clone(), netns);
    request.args =
        corral_cni::kubelet_args(&sandbox.namespace, &sandbox.name, &sandbox.id, &sandbox.uid);
    let mut capabilities = Map::new();
    let mappings: Vec<PortMapping> = sandbox
        .port_mappings
        .iter()
        .filter_map(|m| {
            Some(PortMapping {
                container_port: m.container_port,
                host_port: m.host_port,
                protocol: m.protocol.parse::<PortProtocol>().ok()?,
                host_ip: m.host_ip.clone(),
            })
        })
        .collect();
    if !mappings.is_empty() {
        capabilities.insert(
            "portMappings".to_string(),
            corral_cni::port_mappings_capability(&mappings),
        );
    }
    if let Some(bandwidth) = bandwidth_capability(&sandbox.annotations)? {
        capabilities.insert("bandwidth".to_string(), bandwidth);
    }
    capabilities.insert(
        "io.kubernetes.cri.pod-annotations".to_string(),
        json!(sandbox.annotations),
    );
    request.capability_args = capabilities;
    Ok(request)
}

/// The `bandwidth` capability from kubelet's bandwidth annotations (bits per second).
fn bandwidth_capability(annotations: &BTreeMap<String, String>) -> Result<Option<Value>, Error> {
    let rate = |key: &str| -> Result<Option<u64>, Error> {
        annotations
            .get(key)
            .map(|value| {
                parse_quantity(value).ok_or_else(|| {
                    Error::InvalidArgument(format!("annotation {key}: {value:?} is not a quantity"))
                })
            })
            .transpose()
    };
    let (ingress, egress) = (rate(INGRESS_BANDWIDTH)?, rate(EGRESS_BANDWIDTH)?);
    if ingress.is_none() && egress.is_none() {
        return Ok(None);
    }
    let mut value = Map::new();
    if let Some(rate) = ingress {
        value.insert("ingressRate".into(), json!(rate));
        value.insert("ingressBurst".into(), json!(u32::MAX));
    }
    if let Some(rate) = egress {
        value.insert("egressRate".into(), json!(rate));
        value.insert("egressBurst".into(), json!(u32::MAX));
    }
    Ok(Some(Value::Object(value)))
}

/// A Kubernetes quantity such as `10M`, `1Gi` or `500k` as a number.
fn parse_quantity(value: &str) -> Option<u64> {
    let value = value.trim();
    let split = value
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(value.len());
    let (number, suffix) = value.split_at(split);
    let number: f64 = number.parse().ok()?;
    let multiplier: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let result = number * multiplier;
    (result.is_finite() && result >= 0.0 && result < u64::MAX as f64).then_some(result as u64)
}

/// Port mappings of the request, checked.
pub fn port_mappings(
    mappings: &[k8s_cri::v1::PortMapping],
) -> Result<Vec<PortMappingRecord>, Error> {
    mappings
        .iter()
        .map(|m| {
            let port = |p: i32, what: &str| {
                u16::try_from(p).map_err(|_| Error::InvalidArgument(format!("invalid {what} {p}")))
            };
            let protocol = match k8s_cri::v1::Protocol::try_from(m.protocol) {
                Ok(k8s_cri::v1::Protocol::Tcp) => "tcp",
                Ok(k8s_cri::v1::Protocol::Udp) => "udp",
                Ok(k8s_cri::v1::Protocol::Sctp) => "sctp",
                Err(_) => {
                    return Err(Error::InvalidArgument(format!(
                        "invalid protocol {}",
                        m.protocol
                    )));
                }
            };
            Ok(PortMappingRecord {
                protocol: protocol.to_string(),
                container_port: port(m.container_port, "container port")?,
                host_port: port(m.host_port, "host port")?,
                host_ip: m.host_ip.clone(),
            })
        })
        .collect()
}

async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, Error> + Send + 'static,
) -> Result<R, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("network task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_quantity_suffixes() {
        assert_eq!(parse_quantity("10M"), Some(10_000_000));
        assert_eq!(parse_quantity("1Gi"), Some(1 << 30));
        assert_eq!(parse_quantity("1.5k"), Some(1500));
        assert_eq!(parse_quantity("100"), Some(100));
        assert_eq!(parse_quantity("10X"), None);
        assert_eq!(parse_quantity(""), None);
    }

    #[test]
    fn test_bandwidth_capability_from_annotations() {
        let mut annotations = BTreeMap::new();
        assert!(bandwidth_capability(&annotations).unwrap().is_none());
        annotations.insert(INGRESS_BANDWIDTH.to_string(), "1M".to_string());
        let value = bandwidth_capability(&annotations).unwrap().unwrap();
        assert_eq!(value["ingressRate"], 1_000_000);
        assert!(value.get("egressRate").is_none());
        annotations.insert(EGRESS_BANDWIDTH.to_string(), "lots".to_string());
        assert!(bandwidth_capability(&annotations).is_err());
    }
}
