//! `UpdateContainerResources`: new CPU/memory/hugepage/unified limits for a live container.

use k8s_cri::v1::{UpdateContainerResourcesRequest, UpdateContainerResourcesResponse};
use tonic::Status;

use crate::error::Error;
use crate::service::CriService;

impl CriService {
    pub(crate) async fn container_update_resources(
        &self,
        request: UpdateContainerResourcesRequest,
    ) -> Result<UpdateContainerResourcesResponse, Status> {
        if request.container_id.is_empty() {
            return Err(Error::InvalidArgument("container_id is required".into()).into());
        }
        let Some(linux) = request.linux else {
            // Nothing for Linux to change (a Windows-only update).
            return Ok(UpdateContainerResourcesResponse {});
        };
        self.agent
            .containers
            .update_resources(&request.container_id, linux)
            .await?;
        Ok(UpdateContainerResourcesResponse {})
    }
}
