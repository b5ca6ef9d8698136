//! `RemovePodSandbox`: stop if needed, unpin namespaces, delete files and the record;
//! idempotent, unknown IDs succeed.

use k8s_cri::v1::{RemovePodSandboxRequest, RemovePodSandboxResponse};
use tonic::Status;

use crate::service::CriService;

impl CriService {
    pub(crate) async fn sandbox_remove(
        &self,
        request: RemovePodSandboxRequest,
    ) -> Result<RemovePodSandboxResponse, Status> {
        if let Some(sandbox) = self.agent.sandboxes.get(&request.pod_sandbox_id) {
            self.agent
                .containers
                .remove_all_in(&sandbox.id, &self.agent.images)
                .await?;
        }
        self.agent.sandboxes.remove(&request.pod_sandbox_id).await?;
        Ok(RemovePodSandboxResponse {})
    }
}
