//! `StopContainer`: the stop signal, then SIGKILL after the timeout; idempotent.

use std::time::Duration;

use k8s_cri::v1::{StopContainerRequest, StopContainerResponse};
use tonic::Status;

use crate::service::CriService;

impl CriService {
    pub(crate) async fn container_stop(
        &self,
        request: StopContainerRequest,
    ) -> Result<StopContainerResponse, Status> {
        let timeout = Duration::from_secs(u64::try_from(request.timeout).unwrap_or(0));
        self.agent
            .containers
            .stop(&request.container_id, timeout)
            .await?;
        Ok(StopContainerResponse {})
    }
}
