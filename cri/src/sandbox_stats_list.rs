//! `ListPodSandboxStats` with the ID (or prefix) and label filters.

use k8s_cri::v1::{ListPodSandboxStatsRequest, ListPodSandboxStatsResponse, PodSandboxStatsFilter};
use tonic::Status;

use crate::error::Error;
use crate::sandbox_record::SandboxRecord;
use crate::service::CriService;

impl CriService {
    pub(crate) async fn sandbox_stats_list(
        &self,
        request: ListPodSandboxStatsRequest,
    ) -> Result<ListPodSandboxStatsResponse, Status> {
        let filter = request.filter.unwrap_or_default();
        let sandboxes: Vec<SandboxRecord> = self
            .agent
            .sandboxes
            .list()
            .into_iter()
            .filter(|sandbox| matches(sandbox, &filter))
            .collect();
        let containers = self.agent.containers.list();
        let agent = std::sync::Arc::clone(&self.agent);
        let stats =
            tokio::task::spawn_blocking(move || agent.stats.sandboxes(&sandboxes, &containers))
                .await
                .map_err(|e| Error::Internal(format!("stats task failed: {e}")))?;
        Ok(ListPodSandboxStatsResponse { stats })
    }
}

fn matches(sandbox: &SandboxRecord, filter: &PodSandboxStatsFilter) -> bool {
    (filter.id.is_empty() || sandbox.id.starts_with(&filter.id))
        && filter
            .label_selector
            .iter()
            .all(|(k, v)| sandbox.labels.get(k) == Some(v))
}
