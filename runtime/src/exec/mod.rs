//! Exec: running a command inside a running container (CRI `ExecSync`).
//!
//! The agent never forks itself (it is multi-threaded); each exec runs in a short-lived
//! helper process, `corral-monitor exec`, spawned from a blocking thread:
//!
//! ```text
//! corral-monitor exec [--timeout-ms N] [--max-output N] <state_root> <container-id> -- <cmd>...
//! ```
//!
//! The helper loads the container's libcontainer state and spec, and starts the command with
//! libcontainer's tenant builder: it joins all the container's namespaces and its cgroup,
//! with the spec's process settings (user, groups, capabilities, no_new_privs, env, cwd,
//! AppArmor, OOM score) and its seccomp filter, loaded as the container's init loaded it
//! (see `executor.rs`: libcontainer 0.7 drops the filter from a tenant's spec). The command's stdout and stderr are pipes
//! the helper reads, keeping up to `max-output` bytes of each (the rest is read and
//! dropped); stdin is /dev/null. The helper reaps the command (its child) for the real exit
//! status (128 + signal if killed). After the exit it reads the output for at most a second
//! more (background processes may hold the pipes).
//!
//! **Report.** The helper writes one JSON line on its stdout, then the captured bytes:
//!
//! ```text
//! {"ok":true,"exit_code":3,"stdout":6,"stderr":4}   then 6 bytes of stdout, 4 of stderr
//! {"ok":false,"kind":"state"|"invalid"|"timeout"|"failed","error":".."}
//! ```
//!
//! **Timeout.** At the deadline the helper sends SIGKILL to the command's process group
//! (the command leads its own session) and reports `timeout`. The agent gives the helper
//! [`HELPER_GRACE`] more, then SIGTERM (the helper kills the command and exits), then
//! SIGKILL. The helper also gets SIGTERM if the agent dies (parent-death signal).
//!
//! libcontainer leaves a `tenant-notify-<random>.sock` in the container's state directory
//! per exec. Helpers build one at a time per container (an `flock` on that directory, held
//! for the milliseconds of the build, not while the command runs), so each removes the one
//! that appeared during its build; any older than a minute (a helper killed mid-build) goes
//! too.

mod client;
mod console;
mod executor;
mod helper;
mod protocol;
mod relay;
mod stream;
mod stream_helper;
mod tenant;

pub use client::{ExecOutput, HELPER_GRACE, exec_sync};
pub use helper::run;
pub use protocol::{
    DEFAULT_MAX_OUTPUT, DecodedReport, ExecErrorKind, ExecReport, ExecRequest, MAX_HEADER,
    StreamOptions, TerminalSize, decode_report, encode_report,
};
pub use stream::{ExecExit, ExecStream, StreamExecRequest, spawn_exec_stream};
pub use stream_helper::{REPORT_FD, RESIZE_FD};
