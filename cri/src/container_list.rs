//! `ListContainers` with the ID (or prefix), state, sandbox and label filters.

use k8s_cri::v1::{ContainerFilter, ListContainersRequest, ListContainersResponse};
use tonic::Status;

use crate::container_record::ContainerRecord;
use crate::service::CriService;

impl CriService {
    pub(crate) async fn container_list(
        &self,
        request: ListContainersRequest,
    ) -> Result<ListContainersResponse, Status> {
        let filter = request.filter.unwrap_or_default();
        let mut containers: Vec<_> = self
            .agent
            .containers
            .list()
            .iter()
            .filter(|record| matches(record, &filter))
            .map(ContainerRecord::to_cri)
            .collect();
        containers.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        Ok(ListContainersResponse { containers })
    }
}

fn matches(record: &ContainerRecord, filter: &ContainerFilter) -> bool {
    let container = record.to_cri();
    (filter.id.is_empty() || record.id.starts_with(&filter.id))
        && (filter.pod_sandbox_id.is_empty()
            || record.sandbox_id.starts_with(&filter.pod_sandbox_id))
        && filter
            .state
            .as_ref()
            .is_none_or(|s| s.state == container.state)
        && filter
            .label_selector
            .iter()
            .all(|(k, v)| record.labels.get(k) == Some(v))
}
