//! `corral-monitor <config.json>`: the per-container monitor (see `corral_runtime::monitor`).
//! Started by the agent through `spawn_monitor`; not meant to be run by hand.
//!
//! `corral-monitor exec [options] <state_root> <container-id> -- <cmd>...`: the short-lived
//! exec helper (see `corral_runtime::exec`), started by the agent for each `ExecSync`, and
//! with `--stream` for each streaming `Exec` (its pipes on fds 0-4 are the agent's).

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|mode| mode == "exec") {
        let code = corral_runtime::exec::run(&args[2..]);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let [_, config] = args.as_slice() else {
        eprintln!("usage: corral-monitor <monitor config path>");
        eprintln!(
            "       corral-monitor exec [--timeout-ms N] [--max-output N] <state_root> <container-id> -- <cmd>..."
        );
        eprintln!(
            "       corral-monitor exec --stream [--tty] [--stdin] [--size WxH] [--log PATH] <state_root> <container-id> -- <cmd>..."
        );
        return ExitCode::from(2);
    };
    let code = corral_runtime::monitor::process::run(Path::new(config));
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
