//! Container exits, as they happen: the monitors write exit records atomically (rename) into
//! one directory; a dedicated thread follows it with inotify and tells the agent which
//! container exited. No polling, no per-request checks.

use std::path::{Path, PathBuf};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::sync::mpsc;

/// Starts following `dir`; each exited container's ID arrives on the returned channel.
pub fn watch_exits(dir: &Path) -> std::io::Result<mpsc::UnboundedReceiver<String>> {
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC).map_err(std::io::Error::from)?;
    inotify
        .add_watch(
            dir,
            AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CLOSE_WRITE,
        )
        .map_err(std::io::Error::from)?;
    let (sender, receiver) = mpsc::unbounded_channel();
    let dir: PathBuf = dir.to_path_buf();
    std::thread::Builder::new()
        .name("corral-exits".to_string())
        .spawn(move || follow(&inotify, &dir, &sender))?;
    Ok(receiver)
}

fn follow(inotify: &Inotify, dir: &Path, sender: &mpsc::UnboundedSender<String>) {
    loop {
        let events = match inotify.read_events() {
            Ok(events) => events,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(error) => {
                tracing::error!(dir = %dir.display(), %error, "exit watch failed");
                return;
            }
        };
        for event in events {
            let Some(name) = event.name.as_ref().and_then(|n| n.to_str()) else {
                continue;
            };
            if let Some(id) = exit_record_id(name) {
                if sender.send(id.to_string()).is_err() {
                    return; // the agent is shutting down
                }
            }
        }
    }
}

/// `<id>.json` names an exit record; temp files (`.<name>.tmp`) do not.
fn exit_record_id(name: &str) -> Option<&str> {
    if name.starts_with('.') {
        return None;
    }
    name.strip_suffix(".json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_exit_record_id() {
        assert_eq!(exit_record_id("abc.json"), Some("abc"));
        assert_eq!(exit_record_id(".abc.json.tmp"), None);
        assert_eq!(exit_record_id("abc.tmp"), None);
    }

    #[tokio::test]
    async fn test_watch_exits_reports_renamed_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut exits = watch_exits(dir.path()).unwrap();
        std::fs::write(dir.path().join(".c1.json.tmp"), b"{}").unwrap();
        std::fs::rename(dir.path().join(".c1.json.tmp"), dir.path().join("c1.json")).unwrap();
        let id = tokio::time::timeout(std::time::Duration::from_secs(5), exits.recv())
            .await
            .unwrap();
        assert_eq!(id.as_deref(), Some("c1"));
    }
}
