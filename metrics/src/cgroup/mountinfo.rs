//! Finding the cgroup hierarchies from `/proc/self/mountinfo`.

use std::path::PathBuf;

use super::Hierarchy;

/// Mount options of a v1 cgroup mount that are not controllers.
const NON_CONTROLLER_OPTIONS: &[&str] = &[
    "rw",
    "ro",
    "noprefix",
    "clone_children",
    "xattr",
    "cpuset_v2_mode",
    "favordynmods",
];

impl Hierarchy {
    /// The cgroup hierarchies mounted according to `mountinfo` (the text of
    /// `/proc/self/mountinfo`), in mount order: `cgroup` mounts with the controllers of their
    /// super options (`cpu`, `cpuacct`, `name=systemd`, ...), `cgroup2` mounts with none
    /// (the reader asks the hierarchy itself). Mounts of a subtree (root other than `/`) are
    /// kept: their paths are then relative to that subtree, as inside a cgroup namespace.
    pub fn from_mountinfo(mountinfo: &str) -> Vec<Hierarchy> {
        mountinfo.lines().filter_map(parse_line).collect()
    }
}

/// One mountinfo line: `id parent major:minor root mountpoint options [optional...] -
/// fstype source superoptions`.
fn parse_line(line: &str) -> Option<Hierarchy> {
    let fields: Vec<&str> = line.split_ascii_whitespace().collect();
    let separator = fields.iter().skip(6).position(|field| *field == "-")? + 6;
    let fstype = *fields.get(separator + 1)?;
    let mountpoint = PathBuf::from(unescape(fields.get(4)?));
    match fstype {
        "cgroup2" => Some(Hierarchy {
            path: mountpoint,
            v2: true,
            controllers: Vec::new(),
        }),
        "cgroup" => {
            let options = fields.get(separator + 3).copied().unwrap_or("");
            let controllers = options
                .split(',')
                .filter(|option| !option.is_empty() && !NON_CONTROLLER_OPTIONS.contains(option))
                .filter(|option| !option.contains('=') || option.starts_with("name="))
                .map(str::to_string)
                .collect();
            Some(Hierarchy {
                path: mountpoint,
                v2: false,
                controllers,
            })
        }
        _ => None,
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\134` for a backslash, ...).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 4)
            .filter(|_| bytes[i] == b'\\')
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .and_then(|digits| u8::from_str_radix(digits, 8).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const HYBRID: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,release_agent=/x,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn test_from_mountinfo_hybrid() {
        let hierarchies = Hierarchy::from_mountinfo(HYBRID);
        let expected = vec![
            Hierarchy {
                path: "/sys/fs/cgroup/cpu,cpuacct".into(),
                v2: false,
                controllers: vec!["cpu".into(), "cpuacct".into()],
            },
            Hierarchy {
                path: "/sys/fs/cgroup/memory".into(),
                v2: false,
                controllers: vec!["memory".into()],
            },
            Hierarchy {
                path: "/sys/fs/cgroup/systemd".into(),
                v2: false,
                controllers: vec!["name=systemd".into()],
            },
            Hierarchy {
                path: "/sys/fs/cgroup/unified".into(),
                v2: true,
                controllers: vec![],
            },
        ];
        assert_eq!(hierarchies, expected);
    }

    #[test]
    fn test_from_mountinfo_escaped_mountpoint_and_garbage() {
        let text = "50 1 0:40 / /mnt/my\\040cgroup rw - cgroup2 none rw\nshort line\n\n";
        let hierarchies = Hierarchy::from_mountinfo(text);
        assert_eq!(hierarchies.len(), 1);
        assert_eq!(hierarchies[0].path, PathBuf::from("/mnt/my cgroup"));
        assert!(hierarchies[0].v2);
    }

    #[test]
    fn test_unescape_leaves_bad_escapes() {
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("a\\9xy"), "a\\9xy");
        assert_eq!(unescape("end\\04"), "end\\04");
    }
}
