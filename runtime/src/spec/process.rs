//! The container process: arguments (Kubernetes' command/args over the image's
//! ENTRYPOINT/CMD), environment and working directory.

use std::path::PathBuf;

use k8s_cri::v1::ContainerConfig;

use super::ImageInfo;
use crate::Error;

/// The `PATH` a container gets when neither the image nor the request sets one (containerd's
/// `defaultUnixEnv`).
pub(super) const DEFAULT_PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Kubernetes semantics: `command` replaces the image's ENTRYPOINT (and drops its CMD), `args`
/// replaces CMD; with neither the image's ENTRYPOINT + CMD run. An image ENTRYPOINT of `[""]`
/// means "none" (docker's `--entrypoint ""`), as in containerd.
pub(super) fn args(config: &ContainerConfig, image: &ImageInfo) -> Result<Vec<String>, Error> {
    let mut command = config.command.clone();
    let mut args = config.args.clone();
    if command.is_empty() {
        if args.is_empty() {
            args = image.cmd.clone();
        }
        let no_entrypoint = image.entrypoint.len() == 1 && image.entrypoint[0].is_empty();
        if !no_entrypoint {
            command = image.entrypoint.clone();
        }
    }
    command.extend(args);
    if command.is_empty() {
        return Err(Error::InvalidArgument("no command specified".to_string()));
    }
    Ok(command)
}

/// containerd's order: the default `PATH`, `TERM=xterm` with a tty, `HOSTNAME`, then the
/// image's variables, then the request's; a later value replaces an earlier one of the same
/// name in place, and an image entry without `=` unsets the name.
pub(super) fn env(image: &ImageInfo, config: &ContainerConfig, hostname: &str) -> Vec<String> {
    let mut env = vec![DEFAULT_PATH_ENV.to_string()];
    if config.tty {
        env.push("TERM=xterm".to_string());
    }
    env.push(format!("HOSTNAME={hostname}"));
    let requested = config
        .envs
        .iter()
        .filter(|kv| !kv.key.is_empty())
        .map(|kv| format!("{}={}", kv.key, kv.value));
    replace_or_append(env, image.env.iter().cloned().chain(requested))
}

/// The request's working directory, else the image's, else `/`; relative paths are taken
/// from `/`.
pub(super) fn cwd(config: &ContainerConfig, image: &ImageInfo) -> PathBuf {
    let dir = [&config.working_dir, &image.working_dir]
        .into_iter()
        .find(|d| !d.is_empty())
        .map_or("/", String::as_str);
    PathBuf::from("/").join(dir)
}

fn replace_or_append(base: Vec<String>, overrides: impl Iterator<Item = String>) -> Vec<String> {
    let key = |entry: &str| entry.split('=').next().unwrap_or_default().to_string();
    let mut entries: Vec<Option<String>> = base.into_iter().map(Some).collect();
    for value in overrides {
        let name = key(&value);
        let slot = entries
            .iter()
            .position(|e| e.as_deref().is_some_and(|e| key(e) == name));
        match (value.contains('='), slot) {
            (true, Some(i)) => entries[i] = Some(value),
            (true, None) => entries.push(Some(value)),
            (false, Some(i)) => entries[i] = None,
            (false, None) => {}
        }
    }
    entries.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::KeyValue;

    fn image() -> ImageInfo {
        ImageInfo {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["cmd1".into(), "cmd2".into()],
            ..Default::default()
        }
    }

    fn config(command: &[&str], args: &[&str]) -> ContainerConfig {
        ContainerConfig {
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn test_args_command_replaces_entrypoint_and_cmd() {
        let got = args(&config(&["/bin/sh", "-c"], &["echo hi"]), &image()).unwrap();
        assert_eq!(got, ["/bin/sh", "-c", "echo hi"]);
        let got = args(&config(&["/bin/true"], &[]), &image()).unwrap();
        assert_eq!(got, ["/bin/true"]);
    }

    #[test]
    fn test_args_only_args_keeps_entrypoint() {
        let got = args(&config(&[], &["a", "b"]), &image()).unwrap();
        assert_eq!(got, ["/entry", "a", "b"]);
    }

    #[test]
    fn test_args_neither_uses_entrypoint_and_cmd() {
        let got = args(&config(&[], &[]), &image()).unwrap();
        assert_eq!(got, ["/entry", "cmd1", "cmd2"]);
    }

    #[test]
    fn test_args_empty_is_invalid() {
        let err = args(&config(&[], &[]), &ImageInfo::default()).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(ref m) if m == "no command specified"));
    }

    #[test]
    fn test_args_blank_entrypoint_means_none() {
        let image = ImageInfo {
            entrypoint: vec![String::new()],
            cmd: vec!["sh".into()],
            ..Default::default()
        };
        assert_eq!(args(&config(&[], &[]), &image).unwrap(), ["sh"]);
    }

    #[test]
    fn test_env_request_overrides_image_and_defaults_path() {
        let image = ImageInfo {
            env: vec!["A=image".into(), "B=image".into()],
            ..Default::default()
        };
        let mut config = config(&[], &[]);
        config.envs = vec![
            KeyValue {
                key: "B".into(),
                value: "request".into(),
            },
            KeyValue {
                key: "C".into(),
                value: "x=y".into(),
            },
        ];
        let env = env(&image, &config, "pod-host");
        assert_eq!(
            env,
            [
                DEFAULT_PATH_ENV,
                "HOSTNAME=pod-host",
                "A=image",
                "B=request",
                "C=x=y"
            ]
        );
    }

    #[test]
    fn test_env_image_path_replaces_default_and_tty_sets_term() {
        let image = ImageInfo {
            env: vec!["PATH=/custom".into(), "HOSTNAME".into()],
            ..Default::default()
        };
        let mut config = config(&[], &[]);
        config.tty = true;
        let env = env(&image, &config, "h");
        assert_eq!(env, ["PATH=/custom", "TERM=xterm"]);
    }

    #[test]
    fn test_cwd_request_then_image_then_root() {
        let mut image = ImageInfo::default();
        let mut config = config(&[], &[]);
        assert_eq!(cwd(&config, &image), PathBuf::from("/"));
        image.working_dir = "/srv".into();
        assert_eq!(cwd(&config, &image), PathBuf::from("/srv"));
        config.working_dir = "/work".into();
        assert_eq!(cwd(&config, &image), PathBuf::from("/work"));
        config.working_dir = "rel".into();
        assert_eq!(cwd(&config, &image), PathBuf::from("/rel"));
    }
}
