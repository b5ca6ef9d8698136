//! `PortForward`: checks the pod and answers a single-use URL on the streaming server, where
//! each forwarded connection is made from inside the pod's network namespace.

use k8s_cri::v1::{PortForwardRequest, PortForwardResponse};
use tonic::Status;

use crate::error::Error;
use crate::sandbox_record::SandboxState;
use crate::service::CriService;
use crate::streaming::PortForwardTarget;

impl CriService {
    pub(crate) async fn sandbox_port_forward(
        &self,
        request: PortForwardRequest,
    ) -> Result<PortForwardResponse, Status> {
        let sandbox = self
            .agent
            .sandboxes
            .get(&request.pod_sandbox_id)
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "pod sandbox {:?} not found",
                    request.pod_sandbox_id
                ))
            })?;
        if sandbox.state != SandboxState::Ready {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                sandbox.id
            ))
            .into());
        }
        if let Some(port) = request.port.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(Error::InvalidArgument(format!("port {port} is out of range")).into());
        }
        let server = self.streaming_server()?;
        let url = server
            .port_forward_url(PortForwardTarget {
                sandbox_id: sandbox.id,
                ports: request.port,
            })
            .map_err(Error::from)?;
        Ok(PortForwardResponse { url })
    }
}
