//! Fake CNI plugins for tests: shell scripts that record their environment and stdin and
//! print a canned answer.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Writes an executable `#!/bin/sh` script `name` with `body` into `dir`.
pub fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A plugin that records `<COMMAND>.<name>.stdin` and `<COMMAND>.<name>.env` into `record`,
/// appends "<COMMAND> <name>" to `record/calls`, and prints `add_result` on ADD.
pub fn recording_plugin(bin: &Path, name: &str, record: &Path, add_result: &str) -> PathBuf {
    let rec = record.display();
    write_script(
        bin,
        name,
        &format!(
            r#"cat > "{rec}/$CNI_COMMAND.{name}.stdin"
env > "{rec}/$CNI_COMMAND.{name}.env"
echo "$CNI_COMMAND {name}" >> "{rec}/calls"
if [ "$CNI_COMMAND" = ADD ]; then
cat <<'CANNED'
{add_result}
CANNED
fi
"#
        ),
    )
}

/// The lines of `record/calls`.
pub fn calls(record: &Path) -> Vec<String> {
    std::fs::read_to_string(record.join("calls"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// What the plugin `name` read on stdin for `command`, as JSON.
pub fn stdin_of(record: &Path, command: &str, name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(record.join(format!("{command}.{name}.stdin"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The environment the plugin `name` saw for `command`, as (key, value) pairs.
pub fn env_of(record: &Path, command: &str, name: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(record.join(format!("{command}.{name}.env")))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The value of `key` in an environment from [`env_of`].
pub fn env_var<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}
