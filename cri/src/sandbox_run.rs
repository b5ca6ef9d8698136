//! `RunPodSandbox`: pinned namespaces, sandbox files, /dev/shm, CNI ADD; all or nothing.

use k8s_cri::v1::{RunPodSandboxRequest, RunPodSandboxResponse};
use tonic::Status;

use crate::error::Error;
use crate::service::CriService;

impl CriService {
    pub(crate) async fn sandbox_run(
        &self,
        request: RunPodSandboxRequest,
    ) -> Result<RunPodSandboxResponse, Status> {
        let config = request
            .config
            .ok_or_else(|| Error::InvalidArgument("sandbox config is required".to_string()))?;
        let pod_sandbox_id = self
            .agent
            .sandboxes
            .run(config, request.runtime_handler)
            .await?;
        Ok(RunPodSandboxResponse { pod_sandbox_id })
    }
}
