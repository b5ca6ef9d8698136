//! A container's root filesystem: an overlay of the image's unpacked layers (read-only) and
//! one writable upper directory per container.
//!
//! The lower directories are given by their short links (`<images>/l/<short id>`), so even
//! images with many layers fit the kernel's one-page limit on mount options; a list that
//! still does not fit is refused with a clear error rather than truncated.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::Error;

/// The kernel's limit on the mount option string (one page).
const MAX_MOUNT_OPTIONS: usize = 4096;

/// What to mount where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayRootfs {
    /// Image layers, topmost first.
    pub lower: Vec<PathBuf>,
    /// The container's writable layer.
    pub upper: PathBuf,
    /// Overlay's work directory (same filesystem as `upper`).
    pub work: PathBuf,
    /// Where the merged root appears.
    pub target: PathBuf,
}

impl OverlayRootfs {
    /// The `-o` options of the overlay mount.
    pub fn options(&self) -> Result<String, Error> {
        if self.lower.is_empty() {
            return Err(Error::InvalidArgument(
                "an image needs at least one layer".into(),
            ));
        }
        for path in self.lower.iter().chain([&self.upper, &self.work]) {
            let text = path.to_string_lossy();
            if text.contains(',') || text.contains(':') {
                return Err(Error::InvalidArgument(format!(
                    "overlay path {text} contains ',' or ':'"
                )));
            }
        }
        let lower: Vec<String> = self.lower.iter().map(|p| p.display().to_string()).collect();
        let options = format!(
            "lowerdir={},upperdir={},workdir={},index=off",
            lower.join(":"),
            self.upper.display(),
            self.work.display()
        );
        if options.len() >= MAX_MOUNT_OPTIONS {
            return Err(Error::InvalidArgument(format!(
                "{} layers do not fit one overlay mount ({} bytes of options)",
                self.lower.len(),
                options.len()
            )));
        }
        Ok(options)
    }

    /// Creates the upper, work and target directories and mounts the overlay. Blocking.
    pub fn mount(&self) -> Result<(), Error> {
        let options = self.options()?;
        for dir in [&self.upper, &self.work, &self.target] {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("create dir", dir, e))?;
        }
        mount(
            Some("overlay"),
            &self.target,
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(|errno| Error::io("mount overlay", &self.target, std::io::Error::from(errno)))
    }
}

/// Unmounts a container rootfs; not mounted is fine. Blocking.
pub fn unmount(target: &Path) -> Result<(), Error> {
    match umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(errno) => Err(Error::io("unmount", target, std::io::Error::from(errno))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs(layers: usize) -> OverlayRootfs {
        OverlayRootfs {
            lower: (0..layers)
                .map(|i| PathBuf::from(format!("/var/lib/corral/images/l/{i:020}")))
                .collect(),
            upper: PathBuf::from("/var/lib/corral/containers/c1/upper"),
            work: PathBuf::from("/var/lib/corral/containers/c1/work"),
            target: PathBuf::from("/run/corral/containers/c1/rootfs"),
        }
    }

    #[test]
    fn test_overlay_options_top_layer_first() {
        let options = rootfs(2).options().unwrap();
        assert!(options.starts_with(
            "lowerdir=/var/lib/corral/images/l/00000000000000000000:/var/lib/corral/images/l/00000000000000000001,"
        ));
        assert!(options.contains(",upperdir=/var/lib/corral/containers/c1/upper,"));
    }

    #[test]
    fn test_overlay_options_many_layers_fit_with_short_links() {
        assert!(rootfs(60).options().is_ok());
    }

    #[test]
    fn test_overlay_options_refuses_what_does_not_fit() {
        let err = rootfs(200).options().unwrap_err().to_string();
        assert!(err.contains("do not fit"), "{err}");
    }

    #[test]
    fn test_overlay_options_refuses_separators_in_paths() {
        let mut bad = rootfs(1);
        bad.upper = PathBuf::from("/a:b");
        assert!(bad.options().is_err());
    }
}
