//! `PodSandboxStats`: a pod's CPU, memory, network and process count, with its containers'.

use k8s_cri::v1::{PodSandboxStatsRequest, PodSandboxStatsResponse};
use tonic::Status;

use crate::error::Error;
use crate::service::CriService;

impl CriService {
    pub(crate) async fn sandbox_stats(
        &self,
        request: PodSandboxStatsRequest,
    ) -> Result<PodSandboxStatsResponse, Status> {
        let sandbox = self
            .agent
            .sandboxes
            .get(&request.pod_sandbox_id)
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "pod sandbox {:?} not found",
                    request.pod_sandbox_id
                ))
            })?;
        let containers = self.agent.containers.list();
        let agent = std::sync::Arc::clone(&self.agent);
        let mut stats = tokio::task::spawn_blocking(move || {
            agent
                .stats
                .sandboxes(std::slice::from_ref(&sandbox), &containers)
        })
        .await
        .map_err(|e| Error::Internal(format!("stats task failed: {e}")))?;
        Ok(PodSandboxStatsResponse { stats: stats.pop() })
    }
}
