//! A tiny `tracing` subscriber for the monitor binary: warnings and errors (and the runtime
//! crate's info events) as one line each on stderr, which the agent points at
//! `<bundle>/monitor.log`. It also keeps the first error that libcontainer logged since
//! [`clear_first_error`]: its returned errors are often vague ("io error") while the first
//! logged error, the deepest one, names the file.
//!
//! `tracing-subscriber` would do this too, at a cost in binary size, and so in the memory of
//! every monitor.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Mutex;
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

use crate::logs::timestamp_string;

static FIRST_ERROR: Mutex<Option<String>> = Mutex::new(None);

/// Installs the subscriber for the whole process (once; later calls do nothing).
pub fn init() {
    // A private copy of the log descriptor: libcontainer's container init is a fork of this
    // process whose fd 2 becomes the container's stderr, and what libcontainer logs there
    // must go to monitor.log, not into the container's CRI log.
    if let Ok(fd) = std::os::fd::AsFd::as_fd(&std::io::stderr()).try_clone_to_owned() {
        init_with(std::fs::File::from(fd));
    }
    let _ = tracing::subscriber::set_global_default(StderrSubscriber);
}

/// [`init`] with the log written to `log` rather than stderr (the streaming exec helper,
/// whose stderr is the command's).
pub fn init_with(log: std::fs::File) {
    let _ = LOG.set(log);
    let _ = tracing::subscriber::set_global_default(StderrSubscriber);
}

static LOG: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();

/// Takes the first error event logged by libcontainer or libcgroups since the last call
/// (or [`clear_first_error`]), if any.
pub fn take_first_error() -> Option<String> {
    FIRST_ERROR.lock().ok().and_then(|mut first| first.take())
}

/// Forgets the error kept (before an operation whose errors we want to explain).
pub fn clear_first_error() {
    if let Ok(mut first) = FIRST_ERROR.lock() {
        *first = None;
    }
}

/// `message`, followed by the first error libcontainer logged if it adds something.
pub fn explain(message: String) -> String {
    match take_first_error() {
        Some(logged) if !message.contains(&logged) => format!("{message} (logged: {logged})"),
        _ => message,
    }
}

struct StderrSubscriber;

fn ours(target: &str) -> bool {
    target.starts_with("corral")
}

impl Subscriber for StderrSubscriber {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        let level = *metadata.level();
        let target = metadata.target();
        if ours(target) {
            level <= Level::INFO
        } else if target.starts_with("libcgroups") {
            // It warns about every v1 controller the host lacks, for every container.
            level == Level::ERROR
        } else {
            level <= Level::WARN
        }
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::INFO)
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let metadata = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let line = format!(
            "{} {} {}: {}{}\n",
            timestamp_string(SystemTime::now()),
            metadata.level(),
            metadata.target(),
            fields.message,
            fields.rest
        );
        match LOG.get() {
            Some(mut log) => {
                let _ = log.write_all(line.as_bytes());
            }
            None => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
        if *metadata.level() == Level::ERROR && !ours(metadata.target()) {
            if let Ok(mut first) = FIRST_ERROR.lock() {
                first.get_or_insert_with(|| format!("{}{}", fields.message, fields.rest));
            }
        }
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

/// The event's message and its other fields as ` key=value`.
#[derive(Default)]
struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_trace_keeps_first_libcontainer_error() {
        let dispatch = tracing::Dispatch::new(StderrSubscriber);
        tracing::dispatcher::with_default(&dispatch, || {
            clear_first_error();
            tracing::error!(target: "libcontainer::process", path = "/proc/self/oom_score_adj", "failed to write");
            tracing::error!(target: "libcontainer::container", "failed to create container");
            tracing::error!(target: "corral_runtime::monitor", "ours is not kept");
        });
        let first = take_first_error().unwrap();
        assert!(first.starts_with("failed to write"), "{first}");
        assert!(
            first.contains("path=\"/proc/self/oom_score_adj\""),
            "{first}"
        );
        assert_eq!(take_first_error(), None);
        assert_eq!(explain("io error".into()), "io error");
    }
}
