//! Container lifecycle changes for `GetContainerEvents` (kubelet's evented PLEG).
//!
//! The container manager publishes a small [`ContainerChange`] on a broadcast channel at
//! each transition (created, started, stopped, deleted); publishing never waits. Each
//! subscriber turns the changes into full events with the pod's status and its containers'
//! statuses when it takes them. A subscriber that falls more than [`CAPACITY`] changes
//! behind loses the oldest ones (it is told in the log); the runtime is never held up by it.

use k8s_cri::v1::ContainerEventType;
use tokio::sync::broadcast;

/// Changes kept for a subscriber that has not taken them yet.
pub const CAPACITY: usize = 4096;

/// One container state transition.
#[derive(Debug, Clone)]
pub struct ContainerChange {
    pub container_id: String,
    pub sandbox_id: String,
    pub kind: ContainerEventType,
    /// Unix nanoseconds.
    pub at: i64,
}

/// The publishing side, shared by the container manager.
#[derive(Debug, Clone)]
pub struct ContainerChanges {
    sender: broadcast::Sender<ContainerChange>,
}

impl Default for ContainerChanges {
    fn default() -> Self {
        ContainerChanges {
            sender: broadcast::channel(CAPACITY).0,
        }
    }
}

impl ContainerChanges {
    /// Publishes a change (dropped when nobody subscribes).
    pub fn publish(&self, container_id: &str, sandbox_id: &str, kind: ContainerEventType, at: i64) {
        if self.sender.receiver_count() == 0 {
            return;
        }
        let _ = self.sender.send(ContainerChange {
            container_id: container_id.to_string(),
            sandbox_id: sandbox_id.to_string(),
            kind,
            at,
        });
    }

    /// A new subscriber: it sees the changes published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ContainerChange> {
        self.sender.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn test_changes_reach_every_subscriber_in_order() {
        let changes = ContainerChanges::default();
        let mut first = changes.subscribe();
        let mut second = changes.subscribe();
        changes.publish("c1", "s1", ContainerEventType::ContainerCreatedEvent, 1);
        changes.publish("c1", "s1", ContainerEventType::ContainerStartedEvent, 2);
        for receiver in [&mut first, &mut second] {
            assert_eq!(
                receiver.recv().await.unwrap().kind,
                ContainerEventType::ContainerCreatedEvent
            );
            assert_eq!(
                receiver.recv().await.unwrap().kind,
                ContainerEventType::ContainerStartedEvent
            );
        }
    }

    #[tokio::test]
    async fn test_slow_subscriber_lags_without_blocking_publisher() {
        let changes = ContainerChanges::default();
        let mut slow = changes.subscribe();
        for i in 0..(CAPACITY + 10) {
            changes.publish(
                "c",
                "s",
                ContainerEventType::ContainerStartedEvent,
                i as i64,
            );
        }
        assert!(matches!(
            slow.recv().await,
            Err(broadcast::error::RecvError::Lagged(10))
        ));
        assert_eq!(slow.recv().await.unwrap().at, 10);
    }
}
