//! `RuntimeConfig`: the cgroup driver kubelet must use.

use k8s_cri::v1::{
    CgroupDriver, LinuxRuntimeConfiguration, RuntimeConfigRequest, RuntimeConfigResponse,
};
use tonic::Status;

use crate::service::CriService;

impl CriService {
    pub(crate) async fn runtime_config_get(
        &self,
        _request: RuntimeConfigRequest,
    ) -> Result<RuntimeConfigResponse, Status> {
        let driver = match self.agent.config.runtime.cgroup_driver {
            corral_runtime::CgroupDriver::Cgroupfs => CgroupDriver::Cgroupfs,
            corral_runtime::CgroupDriver::Systemd => CgroupDriver::Systemd,
        };
        Ok(RuntimeConfigResponse {
            linux: Some(LinuxRuntimeConfiguration {
                cgroup_driver: driver as i32,
            }),
        })
    }
}
