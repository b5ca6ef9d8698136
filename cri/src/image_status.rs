//! `ImageStatus`: one image, or none when it is not here (not an error); `verbose` adds the
//! manifest, the config and the layers.

use std::collections::HashMap;

use k8s_cri::v1::{ImageStatusRequest, ImageStatusResponse};
use serde_json::json;
use tonic::Status;

use crate::error::Error;
use crate::image_convert::to_cri_image;
use crate::service::CriService;

impl CriService {
    pub(crate) async fn image_status(
        &self,
        request: ImageStatusRequest,
    ) -> Result<ImageStatusResponse, Status> {
        let name = request.image.map(|spec| spec.image).unwrap_or_default();
        if name.is_empty() {
            return Err(Error::InvalidArgument("image name is required".to_string()).into());
        }
        let Some(record) = self.agent.images.resolve(&name).await? else {
            return Ok(ImageStatusResponse::default());
        };
        let mut info = HashMap::new();
        if request.verbose {
            let (manifest, config) = self.agent.images.blobs(&record).await;
            let parse = |bytes: Option<Vec<u8>>| {
                bytes
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .unwrap_or(serde_json::Value::Null)
            };
            let details = json!({
                "id": record.id,
                "manifestDigest": record.manifest_digest,
                "manifest": parse(manifest),
                "config": parse(config),
                "layers": record.layers,
                "chainIDs": record.chain_ids,
            });
            info.insert("info".to_string(), details.to_string());
        }
        Ok(ImageStatusResponse {
            image: Some(to_cri_image(&record, self.agent.images.is_pinned(&record))),
            info,
        })
    }
}
