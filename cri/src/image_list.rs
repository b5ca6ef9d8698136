//! `ListImages`: every image, or the one the filter names.

use k8s_cri::v1::{ListImagesRequest, ListImagesResponse};
use tonic::Status;

use crate::image_convert::to_cri_image;
use crate::service::CriService;

impl CriService {
    pub(crate) async fn image_list(
        &self,
        request: ListImagesRequest,
    ) -> Result<ListImagesResponse, Status> {
        let wanted = request
            .filter
            .and_then(|f| f.image)
            .map(|spec| spec.image)
            .filter(|name| !name.is_empty());
        let records = match wanted {
            Some(name) => self
                .agent
                .images
                .resolve(&name)
                .await?
                .into_iter()
                .collect(),
            None => self.agent.images.list().await,
        };
        let images = records
            .iter()
            .map(|record| to_cri_image(record, self.agent.images.is_pinned(record)))
            .collect();
        Ok(ListImagesResponse { images })
    }
}
