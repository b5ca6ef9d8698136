//! `PodSandboxStatus`: state, IPs, namespace options; `verbose` adds the namespace paths and
//! the CNI result.

use std::collections::HashMap;

use k8s_cri::v1::{PodSandboxStatusRequest, PodSandboxStatusResponse};
use serde_json::json;
use tonic::Status;

use crate::service::CriService;

impl CriService {
    pub(crate) async fn sandbox_status(
        &self,
        request: PodSandboxStatusRequest,
    ) -> Result<PodSandboxStatusResponse, Status> {
        let record = self
            .agent
            .sandboxes
            .get(&request.pod_sandbox_id)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "pod sandbox {:?} not found",
                    request.pod_sandbox_id
                ))
            })?;
        let mut info = HashMap::new();
        if request.verbose {
            let cni_result = self.agent.sandboxes.network_result(&record).await;
            let details = json!({
                "id": record.id,
                "sandboxDir": record.dir,
                "netns": record.netns,
                "ipcns": record.ipcns,
                "utsns": record.utsns,
                "pidns": record.pidns,
                "podInitPid": record.pid_init,
                "shm": record.shm,
                "hostname": record.hostname,
                "cgroupParent": record.cgroup_parent,
                "network": record.network_name,
                "cniResult": cni_result,
                "portMappings": record.port_mappings,
            });
            info.insert("info".to_string(), details.to_string());
        }
        Ok(PodSandboxStatusResponse {
            status: Some(record.to_cri_status()),
            info,
            containers_statuses: Vec::new(),
            timestamp: 0,
        })
    }
}
