//! `Exec`: checks the container and answers a single-use URL on the streaming server, where
//! the client's SPDY session runs the command (`streaming_backend.rs`).

use k8s_cri::v1::{ExecRequest, ExecResponse};
use tonic::Status;

use crate::error::Error;
use crate::service::CriService;
use crate::streaming::ExecTarget;

impl CriService {
    pub(crate) async fn container_exec(
        &self,
        request: ExecRequest,
    ) -> Result<ExecResponse, Status> {
        if request.cmd.is_empty() {
            return Err(Error::InvalidArgument("exec needs a command".into()).into());
        }
        let record = self.agent.containers.running(&request.container_id)?;
        let server = self.streaming_server()?;
        let mut target = ExecTarget::from(request);
        target.container_id = record.id;
        let url = server.exec_url(target).map_err(Error::from)?;
        Ok(ExecResponse { url })
    }
}
