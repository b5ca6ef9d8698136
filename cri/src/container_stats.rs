//! `ContainerStats`: one container's CPU, memory, swap and writable layer usage.

use k8s_cri::v1::{ContainerStatsRequest, ContainerStatsResponse};
use tonic::Status;

use crate::error::Error;
use crate::service::CriService;

impl CriService {
    pub(crate) async fn container_stats(
        &self,
        request: ContainerStatsRequest,
    ) -> Result<ContainerStatsResponse, Status> {
        let record = self
            .agent
            .containers
            .get(&request.container_id)
            .ok_or_else(|| {
                Error::NotFound(format!("container {:?} not found", request.container_id))
            })?;
        let agent = std::sync::Arc::clone(&self.agent);
        let stats = tokio::task::spawn_blocking(move || agent.stats.container(&record))
            .await
            .map_err(|e| Error::Internal(format!("stats task failed: {e}")))?;
        Ok(ContainerStatsResponse { stats: Some(stats) })
    }
}
