//! `RemoveImage`: removes the named reference; the image and its layers go when nothing
//! references them. An unknown image is success.

use k8s_cri::v1::{RemoveImageRequest, RemoveImageResponse};
use tonic::Status;

use crate::error::Error;
use crate::service::CriService;

impl CriService {
    pub(crate) async fn image_remove(
        &self,
        request: RemoveImageRequest,
    ) -> Result<RemoveImageResponse, Status> {
        let name = request.image.map(|spec| spec.image).unwrap_or_default();
        if name.is_empty() {
            return Err(Error::InvalidArgument("image name is required".to_string()).into());
        }
        self.agent.images.remove(&name).await?;
        Ok(RemoveImageResponse {})
    }
}
