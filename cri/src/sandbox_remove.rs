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
            let containers: Vec<String> = self
                .agent
                .containers
                .list()
                .into_iter()
                .filter(|c| c.sandbox_id == sandbox.id)
                .map(|c| c.id)
                .collect();
            self.agent
                .containers
                .remove_all_in(&sandbox.id, &self.agent.images)
                .await?;
            for id in containers {
                self.agent.stats.forget_container(&id);
                self.close_streaming_sessions(&id);
            }
            self.agent.stats.forget_sandbox(&sandbox.id);
            self.close_streaming_sessions(&sandbox.id);
        }
        self.agent.sandboxes.remove(&request.pod_sandbox_id).await?;
        Ok(RemovePodSandboxResponse {})
    }
}
