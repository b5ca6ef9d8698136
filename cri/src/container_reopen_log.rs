//! `ReopenContainerLog`: after kubelet renamed the log file, the monitor opens a new one at
//! the same path.

use k8s_cri::v1::{ReopenContainerLogRequest, ReopenContainerLogResponse};
use tonic::Status;

use crate::error::Error;
use crate::service::CriService;

impl CriService {
    pub(crate) async fn container_reopen_log(
        &self,
        request: ReopenContainerLogRequest,
    ) -> Result<ReopenContainerLogResponse, Status> {
        let record = self.agent.containers.running(&request.container_id)?;
        let socket = record.socket();
        tokio::task::spawn_blocking(move || corral_runtime::monitor::reopen_log(&socket))
            .await
            .map_err(|e| Error::Internal(format!("container task failed: {e}")))?
            .map_err(Error::Runtime)?;
        Ok(ReopenContainerLogResponse {})
    }
}
