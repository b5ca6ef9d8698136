//! Pod cgroup parents (cgroupfs driver): kubelet creates them and names them in the request;
//! the runtime only checks the name before putting containers under it.

use crate::Error;

/// Checks a cgroupfs cgroup parent such as `/kubepods/besteffort/pod<uid>`: absolute (or
/// empty for none), plain components, no `..`.
pub fn validate_cgroup_parent(parent: &str) -> Result<(), Error> {
    if parent.is_empty() {
        return Ok(());
    }
    let invalid = |why: &str| Error::InvalidArgument(format!("cgroup_parent {parent:?}: {why}"));
    if !parent.starts_with('/') {
        return Err(invalid("must be an absolute cgroupfs path"));
    }
    if parent.ends_with(".slice") {
        return Err(invalid(
            "is a systemd slice; the configured cgroup driver is cgroupfs",
        ));
    }
    for component in parent.split('/').filter(|c| !c.is_empty()) {
        if component == "." || component == ".." || component.contains('\0') {
            return Err(invalid("has a . or .. component"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_validate_cgroup_parent_accepts_kubepods() {
        validate_cgroup_parent("").unwrap();
        validate_cgroup_parent("/kubepods/besteffort/pod1234").unwrap();
    }

    #[test]
    fn test_validate_cgroup_parent_rejects_bad_paths() {
        for bad in ["kubepods", "/a/../b", "/kubepods.slice/x.slice"] {
            assert!(validate_cgroup_parent(bad).is_err(), "{bad}");
        }
    }
}
