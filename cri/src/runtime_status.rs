//! `Status`: the RuntimeReady and NetworkReady conditions kubelet gates the node on, and the
//! verbose info `crictl info` prints.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_cri::v1::{
    RuntimeCondition, RuntimeFeatures, RuntimeHandler, RuntimeHandlerFeatures, RuntimeStatus,
    StatusRequest, StatusResponse,
};
use serde_json::json;
use tonic::Status;

use crate::agent::NODE_RECORD_ID;
use crate::service::CriService;

/// Condition type strings kubelet matches on.
const RUNTIME_READY: &str = "RuntimeReady";
const NETWORK_READY: &str = "NetworkReady";
/// The reason kubelet and operators know from containerd and CRI-O.
const NETWORK_PLUGIN_NOT_READY: &str = "NetworkPluginNotReady";
const HOST_PREREQUISITE_MISSING: &str = "HostPrerequisiteMissing";

type Network = Result<Arc<corral_cni::NetworkConfig>, Arc<corral_cni::Error>>;

impl CriService {
    pub(crate) async fn runtime_status(
        &self,
        request: StatusRequest,
    ) -> Result<StatusResponse, Status> {
        let loader = Arc::clone(&self.agent.network);
        let network = tokio::task::spawn_blocking(move || loader.current())
            .await
            .map_err(|e| Status::internal(format!("network check failed: {e}")))?;

        let conditions = vec![self.runtime_condition(), network_condition(&network)];
        let info = if request.verbose {
            self.verbose_info(&network)
        } else {
            HashMap::new()
        };
        Ok(StatusResponse {
            status: Some(RuntimeStatus { conditions }),
            info,
            runtime_handlers: vec![RuntimeHandler {
                // The default handler has an empty name.
                name: String::new(),
                features: Some(RuntimeHandlerFeatures {
                    recursive_read_only_mounts: false,
                    user_namespaces: false,
                }),
            }],
            features: Some(RuntimeFeatures {
                supplemental_groups_policy: false,
            }),
        })
    }

    fn runtime_condition(&self) -> RuntimeCondition {
        let missing = &self.agent.host.missing;
        RuntimeCondition {
            r#type: RUNTIME_READY.to_string(),
            status: missing.is_empty(),
            reason: if missing.is_empty() {
                String::new()
            } else {
                HOST_PREREQUISITE_MISSING.to_string()
            },
            message: missing.join("; "),
        }
    }

    fn verbose_info(&self, network: &Network) -> HashMap<String, String> {
        let node = self.agent.node.get(NODE_RECORD_ID).unwrap_or_default();
        let network_info = match network {
            Ok(network) => json!({
                "ready": true,
                "configFile": network.path,
                "name": network.name,
                "cniVersion": network.cni_version,
                "plugins": network.plugin_binaries,
            }),
            Err(error) => json!({"ready": false, "error": error.to_string()}),
        };
        let mut info = HashMap::new();
        info.insert("config".to_string(), self.agent.config.to_json());
        info.insert("network".to_string(), network_info.to_string());
        info.insert("podCIDRs".to_string(), json!(node.pod_cidrs).to_string());
        info.insert(
            "hostPrerequisitesMissing".to_string(),
            json!(self.agent.host.missing).to_string(),
        );
        if let Some(address) = self.agent.metrics_address.get() {
            info.insert(
                "metricsAddress".to_string(),
                json!(address.to_string()).to_string(),
            );
        }
        info
    }
}

fn network_condition(network: &Network) -> RuntimeCondition {
    match network {
        Ok(_) => RuntimeCondition {
            r#type: NETWORK_READY.to_string(),
            status: true,
            reason: String::new(),
            message: String::new(),
        },
        Err(error) => RuntimeCondition {
            r#type: NETWORK_READY.to_string(),
            status: false,
            reason: NETWORK_PLUGIN_NOT_READY.to_string(),
            message: format!("Network plugin returns error: {error}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn test_network_condition_not_ready_has_reason_and_message() {
        let error = corral_cni::Error::NoNetworkConfig {
            dirs: vec![PathBuf::from("/etc/cni/net.d")],
        };
        let condition = network_condition(&Err(Arc::new(error)));
        assert_eq!(condition.r#type, "NetworkReady");
        assert!(!condition.status);
        assert_eq!(condition.reason, "NetworkPluginNotReady");
        assert!(
            condition.message.contains("/etc/cni/net.d"),
            "{}",
            condition.message
        );
    }
}
