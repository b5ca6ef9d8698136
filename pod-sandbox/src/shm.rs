//! The pod's /dev/shm: a tmpfs of its own, shared by the pod's containers.

use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::Error;

/// Mounts a tmpfs of `size_bytes` at `path` (created if missing).
pub fn mount_shm(path: &Path, size_bytes: u64) -> Result<(), Error> {
    std::fs::create_dir_all(path).map_err(|e| Error::sys("create dir", path, e))?;
    let options = format!("mode=1777,size={size_bytes}");
    mount(
        Some("shm"),
        path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(options.as_str()),
    )
    .map_err(|errno| Error::sys("mount shm", path, errno))
}

/// Unmounts the pod's /dev/shm if it is mounted; a missing mount is fine.
pub fn unmount_shm(path: &Path) -> Result<(), Error> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(errno) => Err(Error::sys("unmount shm", path, errno)),
    }
}
