//! `RemoveContainer`: kill if running, delete, unmount, remove files, end its exec and
//! attach sessions; idempotent.

use k8s_cri::v1::{RemoveContainerRequest, RemoveContainerResponse};
use tonic::Status;

use crate::service::CriService;

impl CriService {
    pub(crate) async fn container_remove(
        &self,
        request: RemoveContainerRequest,
    ) -> Result<RemoveContainerResponse, Status> {
        let id = self
            .agent
            .containers
            .get(&request.container_id)
            .map(|r| r.id);
        self.agent
            .containers
            .remove(&request.container_id, &self.agent.images)
            .await?;
        if let Some(id) = id {
            self.agent.stats.forget_container(&id);
            self.close_streaming_sessions(&id);
        }
        Ok(RemoveContainerResponse {})
    }
}
