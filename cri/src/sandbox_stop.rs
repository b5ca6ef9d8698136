//! `StopPodSandbox`: CNI DEL and release of what the pod holds (its port-forward sessions
//! end); idempotent, unknown IDs succeed.

use k8s_cri::v1::{StopPodSandboxRequest, StopPodSandboxResponse};
use tonic::Status;

use crate::service::CriService;

impl CriService {
    pub(crate) async fn sandbox_stop(
        &self,
        request: StopPodSandboxRequest,
    ) -> Result<StopPodSandboxResponse, Status> {
        if let Some(sandbox) = self.agent.sandboxes.get(&request.pod_sandbox_id) {
            self.agent.containers.stop_all_in(&sandbox.id).await?;
            self.close_streaming_sessions(&sandbox.id);
        }
        self.agent.sandboxes.stop(&request.pod_sandbox_id).await?;
        Ok(StopPodSandboxResponse {})
    }
}
