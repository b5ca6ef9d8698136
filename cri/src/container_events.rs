//! `GetContainerEvents`: a stream of container lifecycle events, each with the pod's status
//! and the statuses of the pod's containers (taken when the event is sent).

use std::sync::Arc;

use k8s_cri::v1::{ContainerEventResponse, GetEventsRequest};
use tokio::sync::broadcast::error::RecvError;
use tonic::Status;

use crate::agent::Agent;
use crate::events::ContainerChange;
use crate::service::{CriService, EventStream};

impl CriService {
    pub(crate) fn container_events(&self, _request: GetEventsRequest) -> EventStream {
        let mut changes = self.agent.containers.subscribe();
        let agent = Arc::clone(&self.agent);
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let change = match changes.recv().await {
                    Ok(change) => change,
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "container event subscriber fell behind");
                        continue;
                    }
                    Err(RecvError::Closed) => return,
                };
                let event = event(&agent, change);
                if sender.send(Ok::<_, Status>(event)).await.is_err() {
                    return; // the client went away
                }
            }
        });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver))
    }
}

fn event(agent: &Agent, change: ContainerChange) -> ContainerEventResponse {
    let containers_statuses = agent
        .containers
        .list()
        .iter()
        .filter(|c| c.sandbox_id == change.sandbox_id)
        .map(|c| c.to_cri_status())
        .collect();
    ContainerEventResponse {
        container_id: change.container_id,
        container_event_type: change.kind as i32,
        created_at: change.at,
        pod_sandbox_status: agent
            .sandboxes
            .get(&change.sandbox_id)
            .map(|s| s.to_cri_status()),
        containers_statuses,
    }
}
