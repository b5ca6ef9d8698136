//! `ImageFsInfo`: what the image store and the containers' writable layers use.

use std::time::{SystemTime, UNIX_EPOCH};

use k8s_cri::v1::{
    FilesystemIdentifier, FilesystemUsage, ImageFsInfoRequest, ImageFsInfoResponse, UInt64Value,
};
use tonic::Status;

use crate::service::CriService;

impl CriService {
    pub(crate) async fn image_fs_info(
        &self,
        _request: ImageFsInfoRequest,
    ) -> Result<ImageFsInfoResponse, Status> {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        let usage = self.agent.images.usage();
        let image_fs = FilesystemUsage {
            timestamp,
            fs_id: Some(FilesystemIdentifier {
                mountpoint: self.agent.images.root().display().to_string(),
            }),
            used_bytes: Some(UInt64Value { value: usage.bytes }),
            inodes_used: Some(UInt64Value {
                value: usage.inodes,
            }),
        };
        // Containers arrive with the container issue; until then their writable layers use
        // nothing, and the directory they will live in is reported as such.
        let container_fs = FilesystemUsage {
            timestamp,
            fs_id: Some(FilesystemIdentifier {
                mountpoint: self
                    .agent
                    .config
                    .root
                    .join("containers")
                    .display()
                    .to_string(),
            }),
            used_bytes: Some(UInt64Value { value: 0 }),
            inodes_used: Some(UInt64Value { value: 0 }),
        };
        Ok(ImageFsInfoResponse {
            image_filesystems: vec![image_fs],
            container_filesystems: vec![container_fs],
        })
    }
}
