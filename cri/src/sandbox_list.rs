//! `ListPodSandbox` with the ID (or prefix), state and label selector filters.

use k8s_cri::v1::{ListPodSandboxRequest, ListPodSandboxResponse, PodSandboxFilter};
use tonic::Status;

use crate::sandbox_record::SandboxRecord;
use crate::service::CriService;

impl CriService {
    pub(crate) async fn sandbox_list(
        &self,
        request: ListPodSandboxRequest,
    ) -> Result<ListPodSandboxResponse, Status> {
        let filter = request.filter.unwrap_or_default();
        let mut items: Vec<_> = self
            .agent
            .sandboxes
            .list()
            .iter()
            .filter(|record| matches(record, &filter))
            .map(SandboxRecord::to_cri)
            .collect();
        items.sort_by_key(|item| std::cmp::Reverse(item.created_at));
        Ok(ListPodSandboxResponse { items })
    }
}

fn matches(record: &SandboxRecord, filter: &PodSandboxFilter) -> bool {
    let sandbox = record.to_cri();
    (filter.id.is_empty() || record.id.starts_with(&filter.id))
        && filter
            .state
            .as_ref()
            .is_none_or(|s| s.state == sandbox.state)
        && filter
            .label_selector
            .iter()
            .all(|(k, v)| record.labels.get(k) == Some(v))
}
