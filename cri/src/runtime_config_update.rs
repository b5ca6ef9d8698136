//! `UpdateRuntimeConfig`: kubelet hands over the node's pod CIDR for the CNI layer.

use std::net::IpAddr;

use k8s_cri::v1::{UpdateRuntimeConfigRequest, UpdateRuntimeConfigResponse};
use tonic::Status;

use crate::agent::{NODE_RECORD_ID, NodeRecord};
use crate::error::Error;
use crate::service::CriService;

impl CriService {
    pub(crate) async fn runtime_config_update(
        &self,
        request: UpdateRuntimeConfigRequest,
    ) -> Result<UpdateRuntimeConfigResponse, Status> {
        let pod_cidr = request
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        let pod_cidrs = parse_pod_cidrs(&pod_cidr).map_err(Error::InvalidArgument)?;
        let current = self.agent.node.get(NODE_RECORD_ID).unwrap_or_default();
        if current.pod_cidrs != pod_cidrs {
            tracing::info!(pod_cidrs = ?pod_cidrs, "pod CIDR updated");
            self.agent
                .node
                .put(NODE_RECORD_ID, NodeRecord { pod_cidrs })
                .await
                .map_err(Error::from)?;
        }
        Ok(UpdateRuntimeConfigResponse {})
    }
}

/// Splits kubelet's comma-separated pod CIDR list (one per IP family) and checks each entry
/// is an `address/prefix`. An empty string clears the list.
fn parse_pod_cidrs(value: &str) -> Result<Vec<String>, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(Vec::new());
    }
    value
        .split(',')
        .map(|cidr| {
            let cidr = cidr.trim();
            let invalid = || format!("pod_cidr {cidr:?} is not a CIDR (address/prefix)");
            let (address, prefix) = cidr.split_once('/').ok_or_else(invalid)?;
            let address: IpAddr = address.parse().map_err(|_| invalid())?;
            let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
            let max = if address.is_ipv4() { 32 } else { 128 };
            if prefix > max {
                return Err(invalid());
            }
            Ok(cidr.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_pod_cidrs_dual_stack() {
        assert_eq!(
            parse_pod_cidrs("10.244.1.0/24, fd00:10:244:1::/64").unwrap(),
            vec![
                "10.244.1.0/24".to_string(),
                "fd00:10:244:1::/64".to_string()
            ]
        );
    }

    #[test]
    fn test_parse_pod_cidrs_empty_clears() {
        assert!(parse_pod_cidrs("").unwrap().is_empty());
    }

    #[test]
    fn test_parse_pod_cidrs_rejects_garbage() {
        for bad in ["10.0.0.0", "10.0.0.0/33", "nope/8", "::/129", "10.0.0.0/x"] {
            assert!(parse_pod_cidrs(bad).is_err(), "{bad}");
        }
    }
}
