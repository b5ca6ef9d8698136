//! The process user: `run_as_username` / `run_as_user` (+ `run_as_group`) or the image's USER
//! (`uid`, `uid:gid`, `name`, `name:group`), resolved against the container's own
//! `/etc/passwd` and `/etc/group`, as containerd's `WithUser`, `WithAdditionalGIDs` and
//! `WithSupplementalGroups` do.
//!
//! The files are read from the mounted rootfs without ever leaving it: every path component
//! is checked with `lstat`, symlinks are resolved by hand with the rootfs as `/` (an absolute
//! or `..`-laden target cannot climb out), and the final open uses `O_NOFOLLOW`.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use k8s_cri::v1::{LinuxContainerSecurityContext, SupplementalGroupsPolicy};

use crate::Error;

/// The user the container process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Sorted, unique, and always holding `gid` (containerd does the same since
    /// CVE-2023-25173, so that a dropped primary group cannot be regained).
    pub additional_gids: Vec<u32>,
}

/// runc (and so containerd) refuse IDs above `i32::MAX`.
const MAX_ID: i64 = i32::MAX as i64;
/// A passwd or group file larger than this is not a real one.
const MAX_FILE: u64 = 16 << 20;
/// Linux's own limit on symlinks followed during one lookup.
const MAX_SYMLINKS: usize = 40;

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// The container's user database (either file may be missing).
struct UserDb {
    users: Vec<PasswdEntry>,
    groups: Vec<GroupEntry>,
}

pub(super) fn resolve(
    rootfs: &Path,
    sc: &LinuxContainerSecurityContext,
    image_user: &str,
) -> Result<ResolvedUser, Error> {
    let db = UserDb::load(rootfs)?;
    let requested = requested_user(sc)?;
    let userstr = requested.as_deref().unwrap_or(image_user);
    let (uid, gid) = if userstr.is_empty() {
        (0, 0)
    } else {
        parse_user(userstr, &db)?
    };

    let mut gids = BTreeSet::from([gid]);
    let policy =
        SupplementalGroupsPolicy::try_from(sc.supplemental_groups_policy).map_err(|_| {
            Error::InvalidArgument(format!(
                "unknown supplemental_groups_policy {}",
                sc.supplemental_groups_policy
            ))
        })?;
    if policy == SupplementalGroupsPolicy::Merge {
        // containerd looks groups up for the user part only ("0" when nothing is set).
        let member = if !sc.run_as_username.is_empty() {
            sc.run_as_username.clone()
        } else if let Some(uid) = &sc.run_as_user {
            uid.value.to_string()
        } else if !image_user.is_empty() {
            image_user.split(':').next().unwrap_or_default().to_string()
        } else {
            "0".to_string()
        };
        gids.extend(db.member_gids(&member));
    }
    for group in &sc.supplemental_groups {
        gids.insert(id(*group, "supplemental group")?);
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: gids.into_iter().collect(),
    })
}

/// containerd's `GenerateUserString`: the security context's user, with its group.
fn requested_user(sc: &LinuxContainerSecurityContext) -> Result<Option<String>, Error> {
    let user = if !sc.run_as_username.is_empty() {
        Some(sc.run_as_username.clone())
    } else {
        sc.run_as_user.as_ref().map(|u| u.value.to_string())
    };
    match (user, &sc.run_as_group) {
        (None, None) => Ok(None),
        (None, Some(group)) => Err(Error::InvalidArgument(format!(
            "run_as_group {} is set without run_as_user or run_as_username",
            group.value
        ))),
        (Some(user), None) => Ok(Some(user)),
        (Some(user), Some(group)) => Ok(Some(format!("{user}:{}", group.value))),
    }
}

fn parse_user(userstr: &str, db: &UserDb) -> Result<(u32, u32), Error> {
    let parts: Vec<&str> = userstr.split(':').collect();
    match parts.as_slice() {
        [user] => match numeric(user, "uid")? {
            // A uid without a passwd entry runs with gid 0.
            Some(uid) => Ok((uid, db.user_by_uid(uid).map_or(0, |u| u.gid))),
            None => {
                let entry = db.user_by_name(user)?;
                Ok((entry.uid, entry.gid))
            }
        },
        [user, group] => {
            let uid = match numeric(user, "uid")? {
                Some(uid) => uid,
                None => db.user_by_name(user)?.uid,
            };
            let gid = match numeric(group, "gid")? {
                Some(gid) => gid,
                None => db.group_by_name(group)?,
            };
            Ok((uid, gid))
        }
        _ => Err(Error::InvalidArgument(format!(
            "invalid user {userstr:?}: want uid, uid:gid, name or name:group"
        ))),
    }
}

/// `Some(id)` for a number in range, `None` for a name.
fn numeric(value: &str, what: &str) -> Result<Option<u32>, Error> {
    match value.parse::<i64>() {
        Ok(n) => id(n, what).map(Some),
        Err(_) => Ok(None),
    }
}

fn id(value: i64, what: &str) -> Result<u32, Error> {
    if (0..=MAX_ID).contains(&value) {
        Ok(value as u32)
    } else {
        Err(Error::InvalidArgument(format!(
            "{what} {value} is out of range (0..={MAX_ID})"
        )))
    }
}

impl UserDb {
    fn load(rootfs: &Path) -> Result<UserDb, Error> {
        let users = read_rootfs_file(rootfs, Path::new("/etc/passwd"))?
            .map(|text| parse_passwd(&text))
            .unwrap_or_default();
        let groups = read_rootfs_file(rootfs, Path::new("/etc/group"))?
            .map(|text| parse_group(&text))
            .unwrap_or_default();
        Ok(UserDb { users, groups })
    }

    fn user_by_uid(&self, uid: u32) -> Option<&PasswdEntry> {
        self.users.iter().find(|u| u.uid == uid)
    }

    fn user_by_name(&self, name: &str) -> Result<&PasswdEntry, Error> {
        self.users.iter().find(|u| u.name == name).ok_or_else(|| {
            Error::InvalidArgument(format!("no user {name:?} in the image's /etc/passwd"))
        })
    }

    fn group_by_name(&self, name: &str) -> Result<u32, Error> {
        self.groups
            .iter()
            .find(|g| g.name == name)
            .map(|g| g.gid)
            .ok_or_else(|| {
                Error::InvalidArgument(format!("no group {name:?} in the image's /etc/group"))
            })
    }

    /// The groups that list `user` (a name, or a uid looked up in passwd) as a member,
    /// except the group named like the user (containerd's filter).
    fn member_gids(&self, user: &str) -> Vec<u32> {
        let name = match user.parse::<u32>() {
            Ok(uid) => match self.user_by_uid(uid) {
                Some(entry) => entry.name.as_str(),
                None => return Vec::new(),
            },
            Err(_) => user,
        };
        self.groups
            .iter()
            .filter(|g| g.name != name && g.members.iter().any(|m| m == name))
            .map(|g| g.gid)
            .collect()
    }
}

fn records(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(['+', '-']))
        .map(|l| l.split(':').collect())
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    records(text)
        .filter_map(|f| {
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    records(text)
        .filter_map(|f| {
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Reads `path` (absolute inside the container) from `rootfs`, resolving symlinks with
/// `rootfs` as the root. `None` when it does not exist.
pub(super) fn read_rootfs_file(rootfs: &Path, path: &Path) -> Result<Option<String>, Error> {
    let shown = rootfs.join(path.strip_prefix("/").unwrap_or(path));
    let read = || -> io::Result<String> {
        let resolved = resolve_in_root(rootfs, path)?;
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(resolved)?;
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a regular file",
            ));
        }
        let mut text = String::new();
        file.take(MAX_FILE).read_to_string(&mut text)?;
        Ok(text)
    };
    match read() {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", &shown, e)),
    }
}

/// Resolves `path` under `root` the way the kernel would if `root` were `/`; the result has
/// no symlink left in any component that exists.
fn resolve_in_root(root: &Path, path: &Path) -> io::Result<PathBuf> {
    fn push_reversed(pending: &mut Vec<OsString>, path: &Path) {
        let parts: Vec<OsString> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(part) => Some(part.to_os_string()),
                Component::ParentDir => Some(OsString::from("..")),
                Component::CurDir | Component::RootDir | Component::Prefix(_) => None,
            })
            .collect();
        pending.extend(parts.into_iter().rev());
    }

    let mut resolved = PathBuf::new();
    let mut pending = Vec::new();
    push_reversed(&mut pending, path);
    let mut followed = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        let meta = fs::symlink_metadata(root.join(&candidate))?;
        if !meta.file_type().is_symlink() {
            resolved = candidate;
            continue;
        }
        followed += 1;
        if followed > MAX_SYMLINKS {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
        let target = fs::read_link(root.join(&candidate))?;
        if target.has_root() {
            resolved = PathBuf::new();
        }
        push_reversed(&mut pending, &target);
    }
    Ok(root.join(resolved))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::Int64Value;
    use std::os::unix::fs::symlink;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        # a comment\n\
        nginx:x:101:101:nginx:/var/cache/nginx:/sbin/nologin\n\
        app:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\n\
        bin:x:1:root,daemon\n\
        wheel:x:10:root\n\
        nginx:x:101:nginx\n\
        app:x:1000:\n\
        audio:x:29:app,nginx\n\
        video:x:44: app \n";

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("etc")).unwrap();
        fs::write(dir.path().join("etc/passwd"), PASSWD).unwrap();
        fs::write(dir.path().join("etc/group"), GROUP).unwrap();
        dir
    }

    fn sc() -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext::default()
    }

    fn user(uid: u32, gid: u32, gids: &[u32]) -> ResolvedUser {
        ResolvedUser {
            uid,
            gid,
            additional_gids: gids.to_vec(),
        }
    }

    #[test]
    fn test_user_default_is_root_with_its_groups() {
        let root = rootfs();
        assert_eq!(
            resolve(root.path(), &sc(), "").unwrap(),
            user(0, 0, &[0, 1, 10])
        );
    }

    #[test]
    fn test_user_image_uid_with_and_without_passwd_entry() {
        let root = rootfs();
        assert_eq!(
            resolve(root.path(), &sc(), "1000").unwrap(),
            user(1000, 1000, &[29, 44, 1000])
        );
        // No passwd entry: gid 0.
        assert_eq!(
            resolve(root.path(), &sc(), "4242").unwrap(),
            user(4242, 0, &[0])
        );
    }

    #[test]
    fn test_user_image_uid_gid_and_names() {
        let root = rootfs();
        assert_eq!(
            resolve(root.path(), &sc(), "1000:44").unwrap(),
            user(1000, 44, &[29, 44])
        );
        assert_eq!(
            resolve(root.path(), &sc(), "nginx").unwrap(),
            user(101, 101, &[29, 101])
        );
        assert_eq!(
            resolve(root.path(), &sc(), "nginx:audio").unwrap(),
            user(101, 29, &[29])
        );
        assert_eq!(
            resolve(root.path(), &sc(), "5:audio").unwrap(),
            user(5, 29, &[29])
        );
    }

    #[test]
    fn test_user_unknown_name_or_group_is_invalid() {
        let root = rootfs();
        for bad in ["nobody-here", "app:nogroup", "a:b:c", "-1", "4294967296"] {
            let err = resolve(root.path(), &sc(), bad).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn test_user_security_context_overrides_image() {
        let root = rootfs();
        let mut sc = sc();
        sc.run_as_user = Some(Int64Value { value: 101 });
        assert_eq!(
            resolve(root.path(), &sc, "app").unwrap(),
            user(101, 101, &[29, 101])
        );
        sc.run_as_group = Some(Int64Value { value: 2000 });
        assert_eq!(
            resolve(root.path(), &sc, "app").unwrap(),
            user(101, 2000, &[29, 2000])
        );
        sc.run_as_username = "app".into();
        assert_eq!(
            resolve(root.path(), &sc, "nginx").unwrap(),
            user(1000, 2000, &[29, 44, 2000])
        );
    }

    #[test]
    fn test_user_run_as_group_without_user_is_invalid() {
        let root = rootfs();
        let mut sc = sc();
        sc.run_as_group = Some(Int64Value { value: 5 });
        assert!(matches!(
            resolve(root.path(), &sc, "app"),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn test_user_supplemental_groups_merge_and_strict() {
        let root = rootfs();
        let mut sc = sc();
        sc.run_as_user = Some(Int64Value { value: 1000 });
        sc.supplemental_groups = vec![3000, 29];
        assert_eq!(
            resolve(root.path(), &sc, "").unwrap(),
            user(1000, 1000, &[29, 44, 1000, 3000])
        );
        sc.supplemental_groups_policy = SupplementalGroupsPolicy::Strict as i32;
        assert_eq!(
            resolve(root.path(), &sc, "").unwrap(),
            user(1000, 1000, &[29, 1000, 3000])
        );
        sc.supplemental_groups = vec![-3];
        assert!(resolve(root.path(), &sc, "").is_err());
    }

    #[test]
    fn test_user_missing_files_uid_only() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(resolve(root.path(), &sc(), "").unwrap(), user(0, 0, &[0]));
        assert_eq!(
            resolve(root.path(), &sc(), "7:8").unwrap(),
            user(7, 8, &[8])
        );
        assert!(resolve(root.path(), &sc(), "app").is_err());
    }

    #[test]
    fn test_user_symlinks_stay_inside_rootfs() {
        let outer = tempfile::tempdir().unwrap();
        // A passwd outside the rootfs that an escaping symlink would reach.
        fs::create_dir(outer.path().join("host")).unwrap();
        fs::write(outer.path().join("host/passwd"), "evil:x:0:0::/:/bin/sh\n").unwrap();
        let root = outer.path().join("rootfs");
        fs::create_dir_all(root.join("etc")).unwrap();
        symlink("../../host/passwd", root.join("etc/passwd")).unwrap();
        assert!(resolve(&root, &sc(), "evil").is_err());

        // An absolute symlink is taken relative to the rootfs.
        fs::remove_file(root.join("etc/passwd")).unwrap();
        fs::create_dir_all(root.join("usr/share")).unwrap();
        fs::write(
            root.join("usr/share/passwd"),
            "app:x:1000:1000::/:/bin/sh\n",
        )
        .unwrap();
        symlink("/usr/share/passwd", root.join("etc/passwd")).unwrap();
        assert_eq!(
            resolve(&root, &sc(), "app").unwrap(),
            user(1000, 1000, &[1000])
        );
    }

    #[test]
    fn test_resolve_in_root_symlink_loop_fails() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("etc")).unwrap();
        symlink("/etc/passwd", root.path().join("etc/passwd")).unwrap();
        let err = read_rootfs_file(root.path(), Path::new("/etc/passwd")).unwrap_err();
        assert!(err.to_string().contains("etc/passwd"), "{err}");
    }

    #[test]
    fn test_read_rootfs_file_refuses_directory() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("etc/passwd")).unwrap();
        assert!(read_rootfs_file(root.path(), Path::new("/etc/passwd")).is_err());
    }
}
