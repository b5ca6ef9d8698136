//! `Attach`: checks the container and answers a single-use URL on the streaming server, where
//! the client's session is connected to the container's own stdio through its monitor
//! (`streaming_backend.rs`).

use k8s_cri::v1::{AttachRequest, AttachResponse};
use tonic::Status;

use crate::error::Error;
use crate::service::CriService;
use crate::streaming::AttachTarget;

impl CriService {
    pub(crate) async fn container_attach(
        &self,
        request: AttachRequest,
    ) -> Result<AttachResponse, Status> {
        let record = self.agent.containers.running(&request.container_id)?;
        let server = self.streaming_server()?;
        let mut target = AttachTarget::from(request);
        target.container_id = record.id;
        let url = server.attach_url(target).map_err(Error::from)?;
        Ok(AttachResponse { url })
    }
}
