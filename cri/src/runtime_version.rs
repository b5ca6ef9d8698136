//! `Version`: who we are and which CRI API we speak.

use k8s_cri::v1::{VersionRequest, VersionResponse};
use tonic::Status;

use crate::service::CriService;

/// The name kubelet and crictl show for this runtime.
pub const RUNTIME_NAME: &str = "corral";
/// The CRI API version served.
pub const RUNTIME_API_VERSION: &str = "v1";
/// The version field kubelet expects for the kubelet <-> runtime API (a fixed string).
const KUBELET_API_VERSION: &str = "0.1.0";

impl CriService {
    pub(crate) async fn runtime_version(
        &self,
        _request: VersionRequest,
    ) -> Result<VersionResponse, Status> {
        Ok(VersionResponse {
            version: KUBELET_API_VERSION.to_string(),
            runtime_name: RUNTIME_NAME.to_string(),
            runtime_version: env!("CARGO_PKG_VERSION").to_string(),
            runtime_api_version: RUNTIME_API_VERSION.to_string(),
        })
    }
}
