//! `CreateContainer`: rootfs, OCI spec and a monitor that has created the container and
//! waits for StartContainer.

use k8s_cri::v1::{CreateContainerRequest, CreateContainerResponse};
use tonic::Status;

use crate::error::Error;
use crate::sandbox_record::SandboxState;
use crate::service::CriService;

impl CriService {
    pub(crate) async fn container_create(
        &self,
        request: CreateContainerRequest,
    ) -> Result<CreateContainerResponse, Status> {
        let config = request
            .config
            .ok_or_else(|| Error::InvalidArgument("container config is required".to_string()))?;
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
        if sandbox.state != SandboxState::Ready {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                sandbox.id
            ))
            .into());
        }
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if image_name.is_empty() {
            return Err(Error::InvalidArgument("container image is required".to_string()).into());
        }
        let image = self
            .agent
            .images
            .resolve(&image_name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("image {image_name:?} not found")))?;
        let container_id = self
            .agent
            .containers
            .create(&sandbox, config, image, &self.agent.images)
            .await?;
        Ok(CreateContainerResponse { container_id })
    }
}
