//! Exec: running a command inside a running container (CRI `ExecSync`, and the streaming
//! `Exec` behind kubectl exec).
//!
//! The agent never forks itself (it is multi-threaded); each exec runs in a short-lived
//! helper process, `corral-monitor exec`:
//!
//! ```text
//! corral-monitor exec [--timeout-ms N] [--max-output N] <state_root> <container-id> -- <cmd>...
//! corral-monitor exec --stream [--tty] [--stdin] [--size WxH] [--log PATH] <state_root> <container-id> -- <cmd>...
//! ```
//!
//! The helper loads the container's libcontainer state and spec, and starts the command with
//! libcontainer's tenant builder (`tenant.rs`): it joins all the container's namespaces and
//! its cgroup, with the spec's process settings (user, groups, capabilities, no_new_privs,
//! env, cwd, AppArmor, OOM score) and its seccomp filter, loaded as the container's init
//! loaded it (see `executor.rs`: libcontainer 0.7 drops the filter from a tenant's spec).
//! The command leads its own session (libcontainer's init calls `setsid`) and is the
//! helper's child: the helper reaps it for the real exit status (128 + signal if killed).
//!
//! # ExecSync ([`exec_sync`], from a blocking thread)
//!
//! The command's stdout and stderr are pipes the helper reads, keeping up to `max-output`
//! bytes of each (the rest is read and dropped); stdin is /dev/null. After the exit it reads
//! the output for at most a second more (background processes may hold the pipes).
//!
//! **Report.** The helper writes one JSON line on its stdout, then the captured bytes:
//!
//! ```text
//! {"ok":true,"exit_code":3,"stdout":6,"stderr":4}   then 6 bytes of stdout, 4 of stderr
//! {"ok":false,"kind":"state"|"invalid"|"timeout"|"failed","error":".."}
//! ```
//!
//! **Timeout.** At the deadline the helper sends SIGKILL to the command's process group
//! and reports `timeout`. The agent gives the helper [`HELPER_GRACE`] more, then SIGTERM
//! (the helper kills the command and exits), then SIGKILL. The helper also gets SIGTERM if
//! the agent dies (parent-death signal).
//!
//! # Streaming exec ([`spawn_exec_stream`], from any Tokio task)
//!
//! The helper's descriptors, all pipes from the agent ([`ExecStream`] holds the other ends):
//!
//! | fd | without `--tty` | with `--tty` |
//! |----|-----------------|--------------|
//! | 0  | the command's stdin with `--stdin`, else unused (the command reads /dev/null) | relayed to the terminal with `--stdin`; EOF there sends the terminal's EOF character |
//! | 1  | the command's stdout | the terminal's output (stdout and stderr merged, as Kubernetes has it) |
//! | 2  | the command's stderr | unused: closed at once |
//! | 3  | resize lines, read and ignored | resize lines `<width> <height>\n`, applied with TIOCSWINSZ |
//! | 4  | the report, written once | the report, written once |
//!
//! Without a terminal the command gets the agent's pipes themselves: the helper copies
//! nothing and closes its own ends, so each stream ends when the command (and whatever it
//! left holding it) closes it. With `--tty` libcontainer makes a pseudo-terminal in the
//! container, the command's controlling terminal, and sends its master to a console socket
//! the helper listens on (`console.rs`); `--size` sizes it before the command runs; the
//! helper relays it (`relay.rs`) in a single-threaded poll loop until the command exited
//! and the terminal's output ended (at most a second more: background processes may hold
//! the terminal).
//!
//! **End of input with a terminal.** When the agent closes stdin, the helper writes the
//! terminal's EOF character (VEOF, normally ^D) to the master: at the start of a line it
//! makes the reader's `read` return 0, as a user typing ^D does; a program in raw mode sees
//! the byte. Closing the master instead would hang up the terminal and lose the command's
//! remaining output.
//!
//! **Report.** One JSON line on fd 4 (the ExecSync report shape, no bytes follow), once
//! the command exited or could not be started:
//!
//! ```text
//! {"ok":true,"exit_code":3,"stdout":0,"stderr":0}          128 + signal if a signal killed it
//! {"ok":false,"kind":"not_found","error":".."}              the command is not in the container
//! {"ok":false,"kind":"state"|"invalid"|"failed","error":".."}
//! ```
//!
//! `not_found` is libcontainer's check that the executable exists in the container (on
//! its `PATH`, or at the path given), which fails the start: [`ExecStream::wait`] returns
//! [`crate::Error::ExecCommandNotFound`] for it, the streaming server's "executable not
//! found" (CRI runtimes answer it as an error, kubectl prints it). No command runs then,
//! so there is no exit code: 127 would be a shell's convention for the same case.
//!
//! **Stopping.** SIGTERM (or SIGINT, SIGHUP) to the helper ([`ExecStream::kill`]), or the
//! agent's end of fd 4 closing (the agent died, or dropped the [`ExecStream`]: poll reports
//! POLLERR on the helper's end), makes the helper SIGKILL the command's session: its
//! process group and every process left in its session (an interactive shell puts each job
//! in a process group of its own); the report is then `failed` ("stopped"), or none when
//! the agent is gone. There is no parent-death signal here: it follows the thread that
//! spawned the helper, and a stream outlives the call that spawned it. After a normal exit
//! nothing is killed: what the command left in the background stays, as with ExecSync.
//!
//! **Log.** The helper's stdout and stderr belong to the command, so its own log goes to
//! `--log PATH` (appended), or nowhere.
//!
//! # State directory
//!
//! libcontainer leaves a `tenant-notify-<random>.sock` in the container's state directory
//! per exec, and with a terminal a `tenant-tty-<random>.sock` link to the console socket.
//! Helpers build one at a time per container (an `flock` on that directory, held for the
//! milliseconds of the build, not while the command runs), so each removes the ones that
//! appeared during its build; any older than a minute (a helper killed mid-build) go too,
//! as do the streaming helpers' own `corral-exec-tty-<pid>.sock` console sockets (bound
//! before the lock; each helper removes its own right after the build).

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
pub(crate) use console::eof_char;
pub(crate) use executor::set_window_size;
pub use helper::run;
pub use protocol::{
    DEFAULT_MAX_OUTPUT, DecodedReport, ExecErrorKind, ExecReport, ExecRequest, MAX_HEADER,
    StreamOptions, TerminalSize, decode_report, encode_report,
};
pub use stream::{ExecExit, ExecStream, Resizer, StreamExecRequest, spawn_exec_stream};
pub use stream_helper::{REPORT_FD, RESIZE_FD};
