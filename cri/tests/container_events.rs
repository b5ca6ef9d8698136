//! Node test of GetContainerEvents: two subscribers see a container's created, started,
//! stopped and deleted events in order, with the pod's status and its containers' statuses.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use std::time::Duration;

use common::agent::TestAgent;
use common::pod::pod;
use k8s_cri::v1::{
    ContainerEventResponse, ContainerEventType, ContainerState, GetEventsRequest,
    RemoveContainerRequest, StopContainerRequest,
};
use tokio_stream::StreamExt;

async fn next_for(
    stream: &mut tonic::Streaming<ContainerEventResponse>,
    id: &str,
) -> ContainerEventResponse {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("no event within 20 s")
            .expect("stream ended")
            .expect("stream error");
        if event.container_id == id {
            return event;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_events_arrive_in_order_for_create_start_stop_remove() {
    let pod = pod(TestAgent::start().await.unwrap(), "events-pod").await;
    let mut client = pod.agent.client().await.unwrap();
    let mut first = client
        .runtime
        .get_container_events(GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut second = pod
        .agent
        .client()
        .await
        .unwrap()
        .runtime
        .get_container_events(GetEventsRequest {})
        .await
        .unwrap()
        .into_inner();

    let id = pod.run(pod.config("watched", &["sleep", "1000"])).await;
    client
        .runtime
        .stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .unwrap();
    client
        .runtime
        .remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();

    for stream in [&mut first, &mut second] {
        let created = next_for(stream, &id).await;
        assert_eq!(
            created.container_event_type,
            ContainerEventType::ContainerCreatedEvent as i32
        );
        assert_eq!(
            created.pod_sandbox_status.as_ref().unwrap().id,
            pod.sandbox_id
        );
        assert!(created.containers_statuses.iter().any(|s| s.id == id));
        let started = next_for(stream, &id).await;
        assert_eq!(
            started.container_event_type,
            ContainerEventType::ContainerStartedEvent as i32
        );
        assert!(started.created_at >= created.created_at);
        let stopped = next_for(stream, &id).await;
        assert_eq!(
            stopped.container_event_type,
            ContainerEventType::ContainerStoppedEvent as i32
        );
        let status = stopped
            .containers_statuses
            .iter()
            .find(|s| s.id == id)
            .expect("the stopped container's status");
        assert_eq!(status.state, ContainerState::ContainerExited as i32);
        let deleted = next_for(stream, &id).await;
        assert_eq!(
            deleted.container_event_type,
            ContainerEventType::ContainerDeletedEvent as i32
        );
        assert!(!deleted.containers_statuses.iter().any(|s| s.id == id));
    }
    drop(first);
    drop(second);
    pod.tear_down().await;
}
