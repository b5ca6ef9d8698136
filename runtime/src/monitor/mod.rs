//! The per-container monitor (`corral-monitor`) and the agent's client for it.
//!
//! One monitor runs per container: a small single-threaded process that creates the container
//! with youki's libcontainer, is the subreaper of its init, copies its output into the CRI
//! log, records how it exited and serves a few requests. It outlives the agent, so restarting
//! or upgrading `corral serve` never touches a container (conmon's and the containerd shim's
//! reason to exist).
//!
//! # Protocol
//!
//! **Start.** The agent writes a [`MonitorConfig`] as JSON to `<bundle>/monitor.json` and
//! calls [`spawn_monitor`], which runs `corral-monitor <config path>` with stdout on a pipe
//! and stderr appended to `monitor.log` next to the config. The monitor moves the pipe off
//! stdout, starts a new session and forks; the first process exits at once (the agent reaps
//! it), the second is the monitor, adopted by init. It binds its socket, creates the
//! container and writes one JSON line (a [`ReadyReport`]) on the pipe:
//!
//! ```text
//! {"ok":true,"pid":<init pid>,"monitor_pid":<monitor pid>}
//! {"ok":false,"error":"<why>"}        (after removing all it made, then it exits)
//! ```
//!
//! If nobody reads the line (the agent timed out or died), the monitor removes the container
//! and exits.
//!
//! **Requests.** On the unix socket `config.socket`, one request per connection: a JSON line
//! ([`Request`]), answered by a JSON line ([`Response`]), then the monitor closes it (an
//! accepted attach keeps it open for the attach stream, see [`attach`]):
//!
//! ```text
//! {"op":"start"}                          -> {"ok":true}       once the process runs
//! {"op":"signal","signal":15,"all":false} -> {"ok":true}       init, or every process of the cgroup
//! {"op":"reopen_log"}                     -> {"ok":true}
//! {"op":"state"}                          -> {"ok":true,"state":{"status":"running","pid":42,
//!                                             "created_at":<ns>,"started_at":<ns>,"exit":{..}}}
//! {"op":"delete"}                         -> {"ok":true}       then the monitor exits
//! {"op":"attach","stdin":true,            -> {"ok":true}       then the connection stays open
//!  "stdout":true,"stderr":true}                                 for the attach stream
//! failures                                -> {"ok":false,"kind":"state"|"invalid"|"failed","error":".."}
//! ```
//!
//! `delete` is refused while running (`kind: state`); a created container is killed first.
//! It deletes libcontainer's state and the container's cgroups, including parents that the
//! creation made (never one that existed before). Signalling a stopped container's init is
//! a no-op success (its pid may belong to someone else by then).
//!
//! **Exit.** When the init exits, the monitor reaps it, drains the output (up to 2 s), and
//! writes an [`ExitRecord`] atomically to `config.exit_file`: exit code (128 + signal when
//! killed), signal, start and finish times, and whether the memory cgroup saw an OOM kill.
//! It keeps serving `state` and `delete` until deleted.
//!
//! The client functions ([`start`], [`signal`], [`reopen_log`], [`state`], [`delete`],
//! [`attach()`]) block with timeouts: call them from `spawn_blocking`. [`relay_attach`] is
//! async.

pub mod attach;
mod attach_client;
mod attachers;
pub mod cgroups;
mod client;
mod config;
mod create;
mod exit;
pub mod process;
mod protocol;
pub mod trace;

pub use attach_client::{AttachIo, AttachOptions, attach, relay_attach};
pub use client::{
    MONITOR_LOG, REQUEST_TIMEOUT, SPAWN_TIMEOUT, Started, delete, reopen_log, request, signal,
    spawn_monitor, spawn_monitor_with_timeout, start, state,
};
pub use config::{CONFIG_FILE, MonitorConfig};
pub use exit::{ExitRecord, read_exit_record, unix_nanos, unix_nanos_now, write_exit_record};
pub use protocol::{
    ContainerState, ErrorKind, MAX_LINE, ReadyReport, Request, Response, Status, decode, encode,
};

/// An error and its sources as one line ("create container: io error: permission denied").
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        let text = err.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = err.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_error_chain_joins_sources_once() {
        let inner = std::io::Error::other("permission denied");
        let outer = crate::Error::io("write", std::path::Path::new("/proc/x"), inner);
        assert_eq!(error_chain(&outer), "write /proc/x: permission denied");
    }
}
