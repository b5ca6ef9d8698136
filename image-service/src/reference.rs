//! Image references, normalised exactly as kubelet and containerd do it (docker/distribution's
//! "normalized named" rules, `reference.ParseNormalizedNamed` + `TagNameOnly`):
//!
//! - no domain -> `docker.io`; `index.docker.io` -> `docker.io`;
//! - on `docker.io`, a one-component path gets the `library/` prefix;
//! - the first component is a domain iff it contains `.` or `:`, is `localhost`, or has an
//!   uppercase letter (which the domain grammar allows and the path grammar does not);
//! - no tag and no digest -> tag `latest`; a digest alone gets no default tag; `name:tag@digest`
//!   keeps both (containerd's `ParseDockerRef` would drop the tag: pull by [`ImageRef::digested`]).
//!
//! The grammar is distribution's: path components are lowercase alphanumerics joined by `.`,
//! `_`, `__` or a run of `-`; the domain is DNS labels or a bracketed IPv6 address with an
//! optional port; a tag is `[\w][\w.-]{0,127}`; a digest is `algorithm:hex` as go-digest checks
//! it (sha256, sha384, sha512, lowercase hex of the exact length); the name is at most 255
//! characters. A 64-hex image id, bare or as `sha256:<hex>`, is not a reference: see
//! [`is_image_id`].

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// The registry of references that name none.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The tag of references that carry neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
const NAME_TOTAL_LENGTH_MAX: usize = 255;
const TAG_LENGTH_MAX: usize = 128;

/// A fully normalised image reference, e.g. `docker.io/library/busybox:latest`.
///
/// [`ImageRef::parse`] always yields a tag, a digest, or both.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// The registry host as written in the reference, with its port: `docker.io`,
    /// `registry.k8s.io`, `localhost:5000`, `[::1]:5000`.
    pub domain: String,
    /// The repository path inside the registry: `library/busybox`, `e2e-test-images/agnhost`.
    pub path: String,
    /// The tag, without the `:`.
    pub tag: Option<String>,
    /// The digest, `algorithm:hex`.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses and normalises a reference as kubelet and containerd do.
    pub fn parse(s: &str) -> Result<Self, Error> {
        parse(s).map_err(|reason| Error::InvalidReference {
            reference: s.to_string(),
            reason,
        })
    }

    /// `domain/path`, e.g. `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// `name:tag`, when there is a tag.
    pub fn tagged(&self) -> Option<String> {
        self.tag
            .as_ref()
            .map(|tag| format!("{}:{tag}", self.name()))
    }

    /// `name@digest`, when there is a digest.
    pub fn digested(&self) -> Option<String> {
        self.digest
            .as_ref()
            .map(|digest| format!("{}@{digest}", self.name()))
    }

    /// The same reference pinned to `digest` (the tag, if any, is kept).
    pub fn with_digest(&self, digest: &str) -> Result<Self, Error> {
        validate_digest(digest).map_err(|reason| Error::InvalidReference {
            reference: format!("{}@{digest}", self.name()),
            reason,
        })?;
        Ok(ImageRef {
            digest: Some(digest.to_string()),
            ..self.clone()
        })
    }

    /// An `oci_client` reference to the same tag and digest in `repository` on `registry`,
    /// e.g. a mirror (`127.0.0.1:5000`) or the origin (`registry-1.docker.io`). `registry` may
    /// carry a path prefix (`mirror.example/docker`): `oci_client` puts `/v2/` after it.
    ///
    /// A reference with neither tag nor digest (only possible when built by hand) gets
    /// [`DEFAULT_TAG`].
    pub fn to_oci(&self, registry: &str, repository: &str) -> oci_client::Reference {
        let (registry, repository) = (registry.to_string(), repository.to_string());
        match (&self.tag, &self.digest) {
            (Some(tag), Some(digest)) => oci_client::Reference::with_tag_and_digest(
                registry,
                repository,
                tag.clone(),
                digest.clone(),
            ),
            (None, Some(digest)) => {
                oci_client::Reference::with_digest(registry, repository, digest.clone())
            }
            (Some(tag), None) => oci_client::Reference::with_tag(registry, repository, tag.clone()),
            (None, None) => {
                oci_client::Reference::with_tag(registry, repository, DEFAULT_TAG.to_string())
            }
        }
    }
}

impl fmt::Display for ImageRef {
    /// The fully normalised reference: `name:tag`, `name@digest` or `name:tag@digest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageRef {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

/// Returns the normalised image id `sha256:<hex>` when `s` is an image id rather than a
/// reference: `sha256:<64 lowercase hex>` or a bare `<64 lowercase hex>`.
pub fn is_image_id(s: &str) -> Option<String> {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    (hex.len() == 64 && is_lower_hex(hex)).then(|| format!("sha256:{hex}"))
}

fn parse(s: &str) -> Result<ImageRef, String> {
    if s.is_empty() {
        return Err("reference is empty".to_string());
    }
    if is_image_id(s).is_some() {
        return Err("an image id is not a reference".to_string());
    }
    let (domain, remainder) = split_docker_domain(s);
    let remote_name = remainder.split(':').next().unwrap_or_default();
    if remote_name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!("repository name {remote_name:?} must be lowercase"));
    }

    let (rest, digest) = match remainder.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (remainder.as_str(), None),
    };
    let (path, tag) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };

    validate_domain(&domain)?;
    validate_path(path)?;
    let name_len = domain.len() + 1 + path.len();
    if name_len > NAME_TOTAL_LENGTH_MAX {
        return Err(format!(
            "repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters, got {name_len}"
        ));
    }
    if let Some(tag) = tag {
        validate_tag(tag)?;
    }
    if let Some(digest) = digest {
        validate_digest(digest)?;
    }

    let tag = match (tag, digest) {
        (None, None) => Some(DEFAULT_TAG.to_string()),
        (tag, _) => tag.map(str::to_string),
    };
    Ok(ImageRef {
        domain,
        path: path.to_string(),
        tag,
        digest: digest.map(str::to_string),
    })
}

/// distribution's `splitDockerDomain`: returns the domain and the rest (path, tag, digest).
fn split_docker_domain(s: &str) -> (String, String) {
    let (mut domain, mut remainder) = match s.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), s.to_string()),
    };
    if domain == LEGACY_DEFAULT_DOMAIN {
        domain = DEFAULT_DOMAIN.to_string();
    }
    if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
        remainder = format!("{OFFICIAL_REPO_PREFIX}{remainder}");
    }
    (domain, remainder)
}

/// `host[:port]` where host is DNS labels (`[a-zA-Z0-9]` and inner `-`, joined by `.`) or a
/// bracketed IPv6 address.
fn validate_domain(domain: &str) -> Result<(), String> {
    let (host_ok, port) = if let Some(rest) = domain.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else {
            return Err(format!("invalid domain {domain:?}: unclosed '['"));
        };
        let addr_ok = !addr.is_empty() && addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return Err(format!("invalid domain {domain:?}")),
            },
        };
        (addr_ok, port)
    } else {
        let (host, port) = match domain.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (domain, None),
        };
        (
            !host.is_empty() && host.split('.').all(is_domain_label),
            port,
        )
    };
    if !host_ok {
        return Err(format!("invalid domain {domain:?}"));
    }
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("invalid port in domain {domain:?}"));
    }
    Ok(())
}

fn is_domain_label(label: &str) -> bool {
    !label.is_empty()
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

fn validate_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("repository name is empty".to_string());
    }
    match path.split('/').find(|c| !is_path_component(c)) {
        Some(component) => Err(format!(
            "invalid repository path component {component:?}: lowercase alphanumerics \
             separated by '.', '_', '__' or '-'"
        )),
        None => Ok(()),
    }
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && (b[i].is_ascii_lowercase() || b[i].is_ascii_digit()) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if b.get(i) == Some(&b'_') {
                    i += 1;
                }
            }
            b'-' => {
                while b.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// `[\w][\w.-]{0,127}`
fn validate_tag(tag: &str) -> Result<(), String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let ok = match tag.as_bytes() {
        [] => false,
        [first, rest @ ..] => {
            word(*first)
                && rest.iter().all(|&b| word(b) || b == b'.' || b == b'-')
                && tag.len() <= TAG_LENGTH_MAX
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid tag {tag:?}: 1 to {TAG_LENGTH_MAX} of [A-Za-z0-9_.-], not starting with '.' or '-'"
        ))
    }
}

/// distribution's digest grammar, then go-digest's validation of known algorithms.
fn validate_digest(digest: &str) -> Result<(), String> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(format!("invalid digest {digest:?}: expected algorithm:hex"));
    };
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.split(['-', '_', '+', '.']).all(|part| {
            part.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
                && part.bytes().all(|b| b.is_ascii_alphanumeric())
        });
    if !algorithm_ok {
        return Err(format!("invalid digest {digest:?}: bad algorithm"));
    }
    let expected = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => {
            return Err(format!(
                "invalid digest {digest:?}: unsupported algorithm {algorithm:?}"
            ));
        }
    };
    if !is_lower_hex(hex) {
        return Err(format!(
            "invalid digest {digest:?}: the hex part must be lowercase hexadecimal"
        ));
    }
    if hex.len() != expected {
        return Err(format!(
            "invalid digest {digest:?}: {algorithm} needs {expected} hex characters, got {}",
            hex.len()
        ));
    }
    Ok(())
}

fn is_lower_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn normalised(s: &str) -> String {
        match ImageRef::parse(s) {
            Ok(r) => r.to_string(),
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    fn assert_invalid(s: &str) {
        match ImageRef::parse(s) {
            Ok(r) => panic!("{s:?} should be invalid, parsed as {r}"),
            Err(Error::InvalidReference { reference, reason }) => {
                assert_eq!(reference, s);
                assert!(!reason.is_empty());
            }
            Err(e) => panic!("{s:?}: unexpected error {e}"),
        }
    }

    #[test]
    fn test_parse_official_image_gets_library_and_latest() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(r.domain, "docker.io");
        assert_eq!(r.path, "library/busybox");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(r.digest, None);
        assert_eq!(r.name(), "docker.io/library/busybox");
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
    }

    #[test]
    fn test_parse_docker_hub_forms() {
        assert_eq!(normalised("ubuntu:22.04"), "docker.io/library/ubuntu:22.04");
        assert_eq!(normalised("foo/bar"), "docker.io/foo/bar:latest");
        assert_eq!(
            normalised("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normalised("docker.io/library/busybox:1.36"),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(
            normalised("index.docker.io/library/nginx"),
            "docker.io/library/nginx:latest"
        );
        assert_eq!(
            normalised("index.docker.io/nginx"),
            "docker.io/library/nginx:latest"
        );
    }

    #[test]
    fn test_parse_other_registries() {
        assert_eq!(normalised("quay.io/foo/bar"), "quay.io/foo/bar:latest");
        assert_eq!(normalised("quay.io/bar"), "quay.io/bar:latest");
        assert_eq!(
            normalised("registry.k8s.io/pause:3.10"),
            "registry.k8s.io/pause:3.10"
        );
        assert_eq!(normalised("localhost/foo"), "localhost/foo:latest");
        assert_eq!(normalised("localhost:5000/x/y:z"), "localhost:5000/x/y:z");
        let r = ImageRef::parse("127.0.0.1:5000/e2e-test-images/busybox:1.29-2").unwrap();
        assert_eq!(r.domain, "127.0.0.1:5000");
        assert_eq!(r.path, "e2e-test-images/busybox");
        assert_eq!(r.tag.as_deref(), Some("1.29-2"));
    }

    #[test]
    fn test_parse_ipv6_host() {
        let r = ImageRef::parse("[::1]:5000/foo").unwrap();
        assert_eq!(r.domain, "[::1]:5000");
        assert_eq!(r.path, "foo");
        assert_eq!(r.to_string(), "[::1]:5000/foo:latest");
        assert_eq!(normalised("[fe80::1]/a/b:c"), "[fe80::1]/a/b:c");
    }

    #[test]
    fn test_parse_uppercase_first_component_is_a_domain() {
        // distribution treats an uppercase first component as a domain, which its grammar
        // allows: `Foo/bar` is repository `bar` on host `Foo`.
        let r = ImageRef::parse("Foo/bar").unwrap();
        assert_eq!(r.domain, "Foo");
        assert_eq!(r.path, "bar");
    }

    #[test]
    fn test_parse_port_without_slash_is_a_tag() {
        assert_eq!(
            normalised("localhost:5000"),
            "docker.io/library/localhost:5000"
        );
    }

    #[test]
    fn test_parse_digest_only_has_no_tag() {
        let r = ImageRef::parse(&format!("docker.io/busybox@sha256:{HEX}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest, Some(format!("sha256:{HEX}")));
        assert_eq!(
            r.to_string(),
            format!("docker.io/library/busybox@sha256:{HEX}")
        );
        assert_eq!(r.tagged(), None);
        assert_eq!(
            r.digested(),
            Some(format!("docker.io/library/busybox@sha256:{HEX}"))
        );
    }

    #[test]
    fn test_parse_tag_and_digest_keeps_both() {
        let r = ImageRef::parse(&format!("gcr.io/a/b:t@sha256:{HEX}")).unwrap();
        assert_eq!(r.domain, "gcr.io");
        assert_eq!(r.path, "a/b");
        assert_eq!(r.tag.as_deref(), Some("t"));
        assert_eq!(r.to_string(), format!("gcr.io/a/b:t@sha256:{HEX}"));
        assert_eq!(r.tagged().as_deref(), Some("gcr.io/a/b:t"));
        assert_eq!(r.digested(), Some(format!("gcr.io/a/b@sha256:{HEX}")));
    }

    #[test]
    fn test_parse_sha512_digest() {
        let hex = "a".repeat(128);
        let r = ImageRef::parse(&format!("busybox@sha512:{hex}")).unwrap();
        assert_eq!(r.digest, Some(format!("sha512:{hex}")));
    }

    #[test]
    fn test_parse_separators() {
        assert_eq!(
            normalised("foo/a.b_c__d---e"),
            "docker.io/foo/a.b_c__d---e:latest"
        );
        assert_eq!(
            normalised("a.b_c__d---e"),
            "docker.io/library/a.b_c__d---e:latest"
        );
        assert_eq!(
            normalised("busybox:_x.Y-1"),
            "docker.io/library/busybox:_x.Y-1"
        );
    }

    #[test]
    fn test_parse_invalid_references() {
        for s in [
            "",
            "Busybox",
            "busybox:",
            "busybox@",
            ":tag",
            "@sha256:abc",
            "a//b",
            "a/",
            "/a",
            "-a",
            "a-",
            "a..b",
            "a___b",
            "a._b",
            "busybox:.tag",
            "busybox:-tag",
            "busybox:a/b",
            "busybox:tag:more",
            "foo/Bar",
            "docker.io/Library/busybox",
            "a b",
            "localhost:/foo",
            "localhost:50a/foo",
            "-host.io/foo",
            // distribution would accept this as a domain-less path, which no registry serves.
            "host_x.io/foo",
            "[::1/foo",
            "[::1]x/foo",
            "[zz]/foo",
        ] {
            assert_invalid(s);
        }
    }

    #[test]
    fn test_parse_invalid_digests() {
        assert_invalid("busybox@sha256:abc");
        assert_invalid(&format!("busybox@sha256:{}", HEX.to_uppercase()));
        assert_invalid(&format!("busybox@sha256:{HEX}0"));
        assert_invalid(&format!("busybox@md5:{HEX}"));
        assert_invalid(&format!("busybox@sha512:{HEX}"));
        assert_invalid(&format!("busybox@sha256:{HEX}@sha256:{HEX}"));
        assert_invalid(&format!("busybox@1sha:{HEX}"));
    }

    #[test]
    fn test_parse_tag_length_limit() {
        let long = "t".repeat(128);
        assert!(ImageRef::parse(&format!("busybox:{long}")).is_ok());
        assert_invalid(&format!("busybox:{long}t"));
    }

    #[test]
    fn test_parse_name_length_limit() {
        // "docker.io/" is 10 characters and counts towards the 255.
        let path = format!("a/{}", "b".repeat(243));
        assert_eq!(normalised(&path).len(), 255 + ":latest".len());
        assert_invalid(&format!("{path}b"));
    }

    #[test]
    fn test_parse_image_id_is_not_a_reference() {
        assert_invalid(HEX);
        assert_invalid(&format!("sha256:{HEX}"));
        // Not 64 hex characters: an ordinary repository name.
        assert_eq!(normalised("abcdef"), "docker.io/library/abcdef:latest");
    }

    #[test]
    fn test_parse_from_str() {
        let r: ImageRef = "registry.k8s.io/pause:3.10".parse().unwrap();
        assert_eq!(r.name(), "registry.k8s.io/pause");
    }

    #[test]
    fn test_is_image_id_forms() {
        let id = format!("sha256:{HEX}");
        assert_eq!(is_image_id(HEX), Some(id.clone()));
        assert_eq!(is_image_id(&id), Some(id));
        assert_eq!(is_image_id(&HEX.to_uppercase()), None);
        assert_eq!(is_image_id(&HEX[1..]), None);
        assert_eq!(is_image_id(&format!("sha512:{HEX}")), None);
        assert_eq!(is_image_id("busybox"), None);
        assert_eq!(is_image_id("sha256:"), None);
    }

    #[test]
    fn test_with_digest_keeps_tag() {
        let r = ImageRef::parse("busybox:1.36").unwrap();
        let pinned = r.with_digest(&format!("sha256:{HEX}")).unwrap();
        assert_eq!(
            pinned.to_string(),
            format!("docker.io/library/busybox:1.36@sha256:{HEX}")
        );
        assert!(r.with_digest("sha256:abc").is_err());
    }

    #[test]
    fn test_to_oci_carries_tag_and_digest() {
        let r = ImageRef::parse("busybox:1.36").unwrap();
        let oci = r.to_oci("127.0.0.1:5000", &r.path);
        assert_eq!(oci.registry(), "127.0.0.1:5000");
        assert_eq!(oci.repository(), "library/busybox");
        assert_eq!(oci.tag(), Some("1.36"));
        assert_eq!(oci.digest(), None);

        let r = ImageRef::parse(&format!("gcr.io/a/b:t@sha256:{HEX}")).unwrap();
        let oci = r.to_oci("gcr.io", &r.path);
        assert_eq!(oci.tag(), Some("t"));
        assert_eq!(oci.digest(), Some(format!("sha256:{HEX}").as_str()));

        let r = ImageRef::parse(&format!("busybox@sha256:{HEX}")).unwrap();
        let oci = r.to_oci("registry-1.docker.io", &r.path);
        assert_eq!(oci.tag(), None);
        assert_eq!(
            oci.whole(),
            format!("registry-1.docker.io/library/busybox@sha256:{HEX}")
        );
    }
}
