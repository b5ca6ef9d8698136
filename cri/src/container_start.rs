//! `StartContainer`: the monitor starts the created container.

use k8s_cri::v1::{StartContainerRequest, StartContainerResponse};
use tonic::Status;

use crate::service::CriService;

impl CriService {
    pub(crate) async fn container_start(
        &self,
        request: StartContainerRequest,
    ) -> Result<StartContainerResponse, Status> {
        self.agent.containers.start(&request.container_id).await?;
        Ok(StartContainerResponse {})
    }
}
