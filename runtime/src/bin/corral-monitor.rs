//! `corral-monitor <config.json>`: the per-container monitor (see `corral_runtime::monitor`).
//! Started by the agent through `spawn_monitor`; not meant to be run by hand.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let [_, config] = args.as_slice() else {
        eprintln!("usage: corral-monitor <monitor config path>");
        return ExitCode::from(2);
    };
    let code = corral_runtime::monitor::process::run(Path::new(config));
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
