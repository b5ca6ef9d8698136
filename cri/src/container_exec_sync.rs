//! `ExecSync`: runs a command in a running container and returns its output and exit code.

use std::time::Duration;

use k8s_cri::v1::{ExecSyncRequest, ExecSyncResponse};
use tonic::Status;

use crate::error::Error;
use crate::service::CriService;

impl CriService {
    pub(crate) async fn container_exec_sync(
        &self,
        request: ExecSyncRequest,
    ) -> Result<ExecSyncResponse, Status> {
        if request.cmd.is_empty() {
            return Err(
                Error::InvalidArgument("exec needs a command (cmd is empty)".into()).into(),
            );
        }
        let output = self
            .agent
            .containers
            .exec_sync(
                &request.container_id,
                request.cmd,
                exec_timeout(request.timeout),
            )
            .await?;
        Ok(ExecSyncResponse {
            stdout: output.stdout,
            stderr: output.stderr,
            exit_code: output.exit_code,
        })
    }
}

/// The request's timeout in seconds; 0 (or negative) means none, as in containerd.
fn exec_timeout(seconds: i64) -> Option<Duration> {
    u64::try_from(seconds)
        .ok()
        .filter(|&s| s > 0)
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_exec_timeout_zero_and_negative_mean_none() {
        assert_eq!(exec_timeout(0), None);
        assert_eq!(exec_timeout(-5), None);
        assert_eq!(exec_timeout(3), Some(Duration::from_secs(3)));
    }
}
