//! `ContainerStatus`: state, times, exit code and reason, image, mounts, log path;
//! `verbose` adds the bundle and rootfs.

use std::collections::HashMap;

use k8s_cri::v1::{ContainerStatusRequest, ContainerStatusResponse};
use serde_json::json;
use tonic::Status;

use crate::service::CriService;

impl CriService {
    pub(crate) async fn container_status(
        &self,
        request: ContainerStatusRequest,
    ) -> Result<ContainerStatusResponse, Status> {
        let record = self
            .agent
            .containers
            .get(&request.container_id)
            .ok_or_else(|| {
                Status::not_found(format!("container {:?} not found", request.container_id))
            })?;
        let mut info = HashMap::new();
        if request.verbose {
            let details = json!({
                "id": record.id,
                "sandboxID": record.sandbox_id,
                "bundle": record.bundle,
                "rootfs": record.rootfs(),
                "layerDir": record.layer_dir,
                "chainIDs": record.chain_ids,
                "stopSignal": record.stop_signal,
                "pid": record.pid,
                "cgroupsPath": record.cgroups_path,
                "logPath": record.log_path,
            });
            info.insert("info".to_string(), details.to_string());
        }
        Ok(ContainerStatusResponse {
            status: Some(record.to_cri_status()),
            info,
        })
    }
}
