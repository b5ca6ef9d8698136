//! The gRPC service: `RuntimeService` and `ImageService` dispatch each RPC to its own file
//! (`<object>_<verb>.rs`) or answer `UNIMPLEMENTED` for what is not built yet.

use std::pin::Pin;
use std::sync::Arc;

use k8s_cri::v1;
use k8s_cri::v1::image_service_server::ImageService;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::agent::Agent;
use crate::error::unimplemented;

/// The CRI server: one value shared by both services.
#[derive(Debug, Clone)]
pub struct CriService {
    pub(crate) agent: Arc<Agent>,
}

impl CriService {
    /// A service over the agent's state.
    pub fn new(agent: Arc<Agent>) -> CriService {
        CriService { agent }
    }

    /// The streaming server that Exec, Attach and PortForward hand out URLs of.
    pub(crate) fn streaming_server(
        &self,
    ) -> Result<&crate::streaming::StreamingServer, crate::error::Error> {
        self.agent.streaming.get().ok_or_else(|| {
            crate::error::Error::Internal("the streaming server is not running".into())
        })
    }

    /// Ends the exec, attach or port-forward sessions of a container or pod sandbox that
    /// goes away.
    pub(crate) fn close_streaming_sessions(&self, id: &str) {
        if let Some(server) = self.agent.streaming.get() {
            server.close_sessions(id);
        }
    }
}

pub(crate) type EventStream =
    Pin<Box<dyn Stream<Item = Result<v1::ContainerEventResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RuntimeService for CriService {
    async fn version(
        &self,
        request: Request<v1::VersionRequest>,
    ) -> Result<Response<v1::VersionResponse>, Status> {
        self.runtime_version(request.into_inner())
            .await
            .map(Response::new)
    }
    async fn run_pod_sandbox(
        &self,
        request: Request<v1::RunPodSandboxRequest>,
    ) -> Result<Response<v1::RunPodSandboxResponse>, Status> {
        self.sandbox_run(request.into_inner())
            .await
            .map(Response::new)
    }
    async fn stop_pod_sandbox(
        &self,
        request: Request<v1::StopPodSandboxRequest>,
    ) -> Result<Response<v1::StopPodSandboxResponse>, Status> {
        self.sandbox_stop(request.into_inner())
            .await
            .map(Response::new)
    }
    async fn remove_pod_sandbox(
        &self,
        request: Request<v1::RemovePodSandboxRequest>,
    ) -> Result<Response<v1::RemovePodSandboxResponse>, Status> {
        self.sandbox_remove(request.into_inner())
            .await
            .map(Response::new)
    }
    async fn pod_sandbox_status(
        &self,
        request: Request<v1::PodSandboxStatusRequest>,
    ) -> Result<Response<v1::PodSandboxStatusResponse>, Status> {
        self.sandbox_status(request.into_inner())
            .await
            .map(Response::new)
    }
    async fn list_pod_sandbox(
        &self,
        request: Request<v1::ListPodSandboxRequest>,
    ) -> Result<Response<v1::ListPodSandboxResponse>, Status> {
        self.sandbox_list(request.into_inner())
            .await
            .map(Response::new)
    }
    async fn create_container(
        &self,
        request: Request<v1::CreateContainerRequest>,
    ) -> Result<Response<v1::CreateContainerResponse>, Status> {
        self.container_create(request.into_inner())
            .await
            .map(Response::new)
    }
    async fn start_container(
        &self,
        request: Request<v1::StartContainerRequest>,
    ) -> Result<Response<v1::StartContainerResponse>, Status> {
        self.container_start(request.into_inner())
            .await
            .map(Response::new)
    }
    async fn stop_container(
        &self,
        request: Request<v1::StopContainerRequest>,
    ) -> Result<Response<v1::StopContainerResponse>, Status> {
        self.container_stop(request.into_inner())
            .await
            .map(Response::new)
    }
    async fn remove_container(
        &self,
        request: Request<v1::RemoveContainerRequest>,
    ) -> Result<Response<v1::RemoveContainerResponse>, Status> {
        self.container_remove(request.into_inner())
            .await
            .map(Response::new)
    }
    async fn list_containers(
        &self,
        request: Request<v1::ListContainersRequest>,
    ) -> Result<Response<v1::ListContainersResponse>, Status> {
        self.container_list(request.into_inner())
            .await
            .map(Response::new)
    }
    async fn container_status(
        &self,
        request: Request<v1::ContainerStatusRequest>,
    ) -> Result<Response<v1::ContainerStatusResponse>, Status> {
        self.container_status(request.into_inner())
            .await
            .map(Response::new)
    }
    async fn update_container_resources(
        &self,
        request: Request<v1::UpdateContainerResourcesRequest>,
    ) -> Result<Response<v1::UpdateContainerResourcesResponse>, Status> {
        self.container_update_resources(request.into_inner())
            .await
            .map(Response::new)
    }
    async fn reopen_container_log(
        &self,
        request: Request<v1::ReopenContainerLogRequest>,
    ) -> Result<Response<v1::ReopenContainerLogResponse>, Status> {
        self.container_reopen_log(request.into_inner())
            .await
            .map(Response::new)
    }
    async fn exec_sync(
        &self,
        request: Request<v1::ExecSyncRequest>,
    ) -> Result<Response<v1::ExecSyncResponse>, Status> {
        self.container_exec_sync(request.into_inner())
            .await
            .map(Response::new)
    }
    async fn exec(
        &self,
        request: Request<v1::ExecRequest>,
    ) -> Result<Response<v1::ExecResponse>, Status> {
        self.container_exec(request.into_inner())
            .await
            .map(Response::new)
    }
    async fn attach(
        &self,
        request: Request<v1::AttachRequest>,
    ) -> Result<Response<v1::AttachResponse>, Status> {
        self.container_attach(request.into_inner())
            .await
            .map(Response::new)
    }
    async fn port_forward(
        &self,
        request: Request<v1::PortForwardRequest>,
    ) -> Result<Response<v1::PortForwardResponse>, Status> {
        self.sandbox_port_forward(request.into_inner())
            .await
            .map(Response::new)
    }
    async fn container_stats(
        &self,
        request: Request<v1::ContainerStatsRequest>,
    ) -> Result<Response<v1::ContainerStatsResponse>, Status> {
        self.container_stats(request.into_inner())
            .await
            .map(Response::new)
    }
    async fn list_container_stats(
        &self,
        request: Request<v1::ListContainerStatsRequest>,
    ) -> Result<Response<v1::ListContainerStatsResponse>, Status> {
        self.container_stats_list(request.into_inner())
            .await
            .map(Response::new)
    }
    async fn pod_sandbox_stats(
        &self,
        request: Request<v1::PodSandboxStatsRequest>,
    ) -> Result<Response<v1::PodSandboxStatsResponse>, Status> {
        self.sandbox_stats(request.into_inner())
            .await
            .map(Response::new)
    }
    async fn list_pod_sandbox_stats(
        &self,
        request: Request<v1::ListPodSandboxStatsRequest>,
    ) -> Result<Response<v1::ListPodSandboxStatsResponse>, Status> {
        self.sandbox_stats_list(request.into_inner())
            .await
            .map(Response::new)
    }
    async fn update_runtime_config(
        &self,
        request: Request<v1::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<v1::UpdateRuntimeConfigResponse>, Status> {
        self.runtime_config_update(request.into_inner())
            .await
            .map(Response::new)
    }
    async fn status(
        &self,
        request: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        self.runtime_status(request.into_inner())
            .await
            .map(Response::new)
    }
    async fn checkpoint_container(
        &self,
        _request: Request<v1::CheckpointContainerRequest>,
    ) -> Result<Response<v1::CheckpointContainerResponse>, Status> {
        Err(unimplemented("CheckpointContainer"))
    }
    async fn list_metric_descriptors(
        &self,
        _request: Request<v1::ListMetricDescriptorsRequest>,
    ) -> Result<Response<v1::ListMetricDescriptorsResponse>, Status> {
        Err(unimplemented("ListMetricDescriptors"))
    }
    async fn list_pod_sandbox_metrics(
        &self,
        _request: Request<v1::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<v1::ListPodSandboxMetricsResponse>, Status> {
        Err(unimplemented("ListPodSandboxMetrics"))
    }
    async fn runtime_config(
        &self,
        request: Request<v1::RuntimeConfigRequest>,
    ) -> Result<Response<v1::RuntimeConfigResponse>, Status> {
        self.runtime_config_get(request.into_inner())
            .await
            .map(Response::new)
    }
    type GetContainerEventsStream = EventStream;

    async fn get_container_events(
        &self,
        request: Request<v1::GetEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        Ok(Response::new(self.container_events(request.into_inner())))
    }
}

#[tonic::async_trait]
impl ImageService for CriService {
    async fn list_images(
        &self,
        request: Request<v1::ListImagesRequest>,
    ) -> Result<Response<v1::ListImagesResponse>, Status> {
        self.image_list(request.into_inner())
            .await
            .map(Response::new)
    }
    async fn image_status(
        &self,
        request: Request<v1::ImageStatusRequest>,
    ) -> Result<Response<v1::ImageStatusResponse>, Status> {
        self.image_status(request.into_inner())
            .await
            .map(Response::new)
    }
    async fn pull_image(
        &self,
        request: Request<v1::PullImageRequest>,
    ) -> Result<Response<v1::PullImageResponse>, Status> {
        self.image_pull(request.into_inner())
            .await
            .map(Response::new)
    }
    async fn remove_image(
        &self,
        request: Request<v1::RemoveImageRequest>,
    ) -> Result<Response<v1::RemoveImageResponse>, Status> {
        self.image_remove(request.into_inner())
            .await
            .map(Response::new)
    }
    async fn image_fs_info(
        &self,
        request: Request<v1::ImageFsInfoRequest>,
    ) -> Result<Response<v1::ImageFsInfoResponse>, Status> {
        self.image_fs_info(request.into_inner())
            .await
            .map(Response::new)
    }
}
