//! A stack of labelled undo steps for multi-step creations: a failure at step 5 undoes
//! 4..1; success disarms it.

type UndoStep = (&'static str, Box<dyn FnOnce() + Send>);

/// Undo steps, run newest first unless disarmed.
#[derive(Default)]
pub struct Rollback {
    steps: Vec<UndoStep>,
}

impl std::fmt::Debug for Rollback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let labels: Vec<&str> = self.steps.iter().map(|(label, _)| *label).collect();
        f.debug_struct("Rollback").field("steps", &labels).finish()
    }
}

impl Rollback {
    /// An empty stack.
    pub fn new() -> Rollback {
        Rollback::default()
    }

    /// Adds the undo of a step that just succeeded.
    pub fn push(&mut self, label: &'static str, undo: impl FnOnce() + Send + 'static) {
        self.steps.push((label, Box::new(undo)));
    }

    /// Keeps everything: the creation succeeded.
    pub fn disarm(mut self) {
        self.steps.clear();
    }

    /// Undoes every step now, newest first.
    pub fn run(mut self) {
        self.unwind();
    }

    fn unwind(&mut self) {
        while let Some((label, undo)) = self.steps.pop() {
            tracing::debug!(step = label, "rolling back");
            undo();
        }
    }
}

impl Drop for Rollback {
    fn drop(&mut self) {
        self.unwind();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn test_rollback_runs_newest_first_on_drop() {
        let log = Arc::new(Mutex::new(Vec::new()));
        {
            let mut rollback = Rollback::new();
            for step in ["one", "two", "three"] {
                let log = Arc::clone(&log);
                rollback.push(step, move || log.lock().unwrap().push(step));
            }
        }
        assert_eq!(*log.lock().unwrap(), vec!["three", "two", "one"]);
    }

    #[test]
    fn test_rollback_disarmed_runs_nothing() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut rollback = Rollback::new();
        let inner = Arc::clone(&log);
        rollback.push("one", move || inner.lock().unwrap().push("one"));
        rollback.disarm();
        assert!(log.lock().unwrap().is_empty());
    }
}
