//! Name reservation for sandboxes and containers. kubelet retries a create after its own
//! timeout with the same name; the retry waits for the first attempt and then gets its
//! result (the same ID), or tries afresh if the first attempt failed. A name is never stuck
//! "reserved".

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

enum Slot {
    /// A create for this name is running; the sender is dropped when it ends.
    Creating(watch::Receiver<()>),
    Owned(String),
}

/// Names in use, by key.
#[derive(Default)]
pub struct NameRegistry {
    slots: Mutex<HashMap<String, Slot>>,
}

impl std::fmt::Debug for NameRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NameRegistry").finish_non_exhaustive()
    }
}

/// The outcome of a reservation.
#[derive(Debug)]
pub enum Reservation<'a> {
    /// The name belongs to this object already.
    Existing(String),
    /// The name is ours to create; finish the guard with the result.
    Reserved(NameGuard<'a>),
}

/// A reserved name; released unless finished with an ID.
pub struct NameGuard<'a> {
    registry: &'a NameRegistry,
    key: String,
    _done: watch::Sender<()>,
    owned: bool,
}

impl std::fmt::Debug for NameGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NameGuard").field("key", &self.key).finish()
    }
}

impl NameRegistry {
    /// Records an existing object's name (recovery).
    pub fn insert(&self, key: String, id: String) {
        self.lock().insert(key, Slot::Owned(id));
    }

    /// Reserves `key`, waiting for a create of the same name that is still running.
    pub async fn reserve(&self, key: &str) -> Reservation<'_> {
        loop {
            let mut waiting = {
                let mut slots = self.lock();
                match slots.get(key) {
                    Some(Slot::Owned(id)) => return Reservation::Existing(id.clone()),
                    Some(Slot::Creating(receiver)) => receiver.clone(),
                    None => {
                        let (sender, receiver) = watch::channel(());
                        slots.insert(key.to_string(), Slot::Creating(receiver));
                        return Reservation::Reserved(NameGuard {
                            registry: self,
                            key: key.to_string(),
                            _done: sender,
                            owned: false,
                        });
                    }
                }
            };
            // Returns when the running create ends (its sender is dropped).
            while waiting.changed().await.is_ok() {}
        }
    }

    /// Frees the name of a removed object.
    pub fn release(&self, key: &str) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl NameGuard<'_> {
    /// The create succeeded: the name now belongs to `id`.
    pub fn finish(mut self, id: &str) {
        self.registry
            .lock()
            .insert(self.key.clone(), Slot::Owned(id.to_string()));
        self.owned = true;
    }
}

impl Drop for NameGuard<'_> {
    fn drop(&mut self) {
        if !self.owned {
            self.registry.lock().remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn test_reserve_then_existing() {
        let names = NameRegistry::default();
        match names.reserve("a").await {
            Reservation::Reserved(guard) => guard.finish("id-1"),
            Reservation::Existing(_) => panic!("fresh name"),
        }
        assert!(matches!(names.reserve("a").await, Reservation::Existing(id) if id == "id-1"));
        names.release("a");
        assert!(matches!(names.reserve("a").await, Reservation::Reserved(_)));
    }

    #[tokio::test]
    async fn test_failed_create_frees_the_name() {
        let names = NameRegistry::default();
        let guard = names.reserve("a").await;
        drop(guard);
        assert!(matches!(names.reserve("a").await, Reservation::Reserved(_)));
    }

    #[tokio::test]
    async fn test_retry_waits_for_running_create() {
        let names = std::sync::Arc::new(NameRegistry::default());
        let Reservation::Reserved(guard) = names.reserve("a").await else {
            panic!("fresh name");
        };
        let waiter = {
            let names = std::sync::Arc::clone(&names);
            tokio::spawn(async move {
                match names.reserve("a").await {
                    Reservation::Existing(id) => id,
                    Reservation::Reserved(_) => "reserved".to_string(),
                }
            })
        };
        tokio::task::yield_now().await;
        guard.finish("id-1");
        assert_eq!(waiter.await.unwrap(), "id-1");
    }
}
