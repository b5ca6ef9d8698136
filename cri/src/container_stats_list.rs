//! `ListContainerStats` with the ID (or prefix), sandbox and label filters: the stats of
//! every matching container, read in one blocking task.

use k8s_cri::v1::{ContainerStatsFilter, ListContainerStatsRequest, ListContainerStatsResponse};
use tonic::Status;

use crate::container_record::ContainerRecord;
use crate::error::Error;
use crate::service::CriService;

impl CriService {
    pub(crate) async fn container_stats_list(
        &self,
        request: ListContainerStatsRequest,
    ) -> Result<ListContainerStatsResponse, Status> {
        let filter = request.filter.unwrap_or_default();
        let records: Vec<ContainerRecord> = self
            .agent
            .containers
            .list()
            .into_iter()
            .filter(|record| matches(record, &filter))
            .collect();
        let agent = std::sync::Arc::clone(&self.agent);
        let stats = tokio::task::spawn_blocking(move || agent.stats.containers(&records))
            .await
            .map_err(|e| Error::Internal(format!("stats task failed: {e}")))?;
        Ok(ListContainerStatsResponse { stats })
    }
}

fn matches(record: &ContainerRecord, filter: &ContainerStatsFilter) -> bool {
    (filter.id.is_empty() || record.id.starts_with(&filter.id))
        && (filter.pod_sandbox_id.is_empty()
            || record.sandbox_id.starts_with(&filter.pod_sandbox_id))
        && filter
            .label_selector
            .iter()
            .all(|(k, v)| record.labels.get(k) == Some(v))
}
