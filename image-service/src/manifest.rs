//! Manifests, indexes and image configs: just the fields a pull and a container need, read
//! from both OCI and Docker schema 2 documents.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Error;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The manifest media types a pull accepts, in order of preference.
pub const ACCEPTED_MANIFEST_TYPES: [&str; 4] = [
    OCI_INDEX,
    DOCKER_MANIFEST_LIST,
    OCI_MANIFEST,
    DOCKER_MANIFEST,
];

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

/// A platform as written in an index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// A manifest document: an image manifest or an index of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
    Index {
        manifests: Vec<Descriptor>,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    #[serde(default)]
    schema_version: Option<i64>,
    #[serde(default)]
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
}

impl Manifest {
    /// Parses a manifest; `content_type` is the registry's Content-Type header, if any.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Manifest, Error> {
        let raw: RawManifest = serde_json::from_slice(bytes)
            .map_err(|e| Error::InvalidManifest(format!("not a manifest: {e}")))?;
        if raw.schema_version == Some(1) {
            return Err(Error::InvalidManifest(
                "docker schema 1 manifests are not supported".to_string(),
            ));
        }
        let media_type = raw
            .media_type
            .as_deref()
            .or(content_type)
            .unwrap_or_default();
        let is_index = matches!(media_type, OCI_INDEX | DOCKER_MANIFEST_LIST)
            || (raw.manifests.is_some() && raw.config.is_none());
        if is_index {
            let manifests = raw
                .manifests
                .ok_or_else(|| Error::InvalidManifest("index without manifests".to_string()))?;
            return Ok(Manifest::Index { manifests });
        }
        match (raw.config, raw.layers) {
            (Some(config), Some(layers)) => Ok(Manifest::Image { config, layers }),
            _ => Err(Error::InvalidManifest(
                "manifest without config or layers".to_string(),
            )),
        }
    }
}

/// The platform this node runs (the Go names registries use).
pub fn node_platform() -> Platform {
    let (architecture, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        "powerpc64" => ("ppc64le", None),
        "s390x" => ("s390x", None),
        "riscv64" => ("riscv64", None),
        other => (other, None),
    };
    Platform {
        architecture: architecture.to_string(),
        os: "linux".to_string(),
        variant: variant.map(str::to_string),
    }
}

/// Picks the entry of an index for `platform`: same OS and architecture; among those, the
/// one whose variant matches (arm64's `v8` and no variant are the same), else the first.
pub fn select_platform<'a>(
    manifests: &'a [Descriptor],
    platform: &Platform,
) -> Option<&'a Descriptor> {
    let normalise = |arch: &str, variant: Option<&str>| -> Option<String> {
        match (arch, variant) {
            ("arm64", Some("v8")) | (_, Some("")) | (_, None) => None,
            (_, Some(v)) => Some(v.to_string()),
        }
    };
    let wanted_variant = normalise(&platform.architecture, platform.variant.as_deref());
    let candidates: Vec<&Descriptor> = manifests
        .iter()
        .filter(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.os == platform.os && p.architecture == platform.architecture)
        })
        .collect();
    candidates
        .iter()
        .find(|m| {
            let p = m.platform.as_ref();
            p.map(|p| normalise(&p.architecture, p.variant.as_deref()))
                == Some(wanted_variant.clone())
        })
        .or(candidates.first())
        .copied()
}

/// An image config (the parts a container needs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub user: String,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub stop_signal: String,
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub exposed_ports: Vec<String>,
}

/// What a pull needs from the config blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedConfig {
    pub config: ImageConfig,
    pub diff_ids: Vec<String>,
    pub os: String,
    pub architecture: String,
}

#[derive(Deserialize)]
struct RawConfigFile {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    config: Option<RawRunConfig>,
    rootfs: RawRootfs,
}

#[derive(Deserialize)]
struct RawRootfs {
    diff_ids: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawRunConfig {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    stop_signal: Option<String>,
    #[serde(default)]
    volumes: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
}

/// Parses an image config blob.
pub fn parse_config(bytes: &[u8]) -> Result<ParsedConfig, Error> {
    let raw: RawConfigFile = serde_json::from_slice(bytes)
        .map_err(|e| Error::InvalidManifest(format!("invalid image config: {e}")))?;
    let run = raw.config;
    let config = match run {
        None => ImageConfig::default(),
        Some(run) => ImageConfig {
            user: run.user.unwrap_or_default(),
            env: run.env.unwrap_or_default(),
            entrypoint: run.entrypoint.unwrap_or_default(),
            cmd: run.cmd.unwrap_or_default(),
            working_dir: run.working_dir.unwrap_or_default(),
            stop_signal: run.stop_signal.unwrap_or_default(),
            volumes: run.volumes.unwrap_or_default().into_keys().collect(),
            labels: run.labels.unwrap_or_default(),
            exposed_ports: run.exposed_ports.unwrap_or_default().into_keys().collect(),
        },
    };
    Ok(ParsedConfig {
        config,
        diff_ids: raw.rootfs.diff_ids,
        os: raw.os,
        architecture: raw.architecture,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(arch: &str, variant: Option<&str>, digest_char: char) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.to_string(),
            digest: format!("sha256:{}", digest_char.to_string().repeat(64)),
            size: 1,
            platform: Some(Platform {
                architecture: arch.to_string(),
                os: "linux".to_string(),
                variant: variant.map(str::to_string),
            }),
            urls: Vec::new(),
        }
    }

    #[test]
    fn test_select_platform_picks_architecture() {
        let list = [entry("arm64", Some("v8"), 'a'), entry("amd64", None, 'b')];
        let amd64 = Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: None,
        };
        assert_eq!(
            select_platform(&list, &amd64).unwrap().digest,
            list[1].digest
        );
        let arm64 = Platform {
            architecture: "arm64".into(),
            os: "linux".into(),
            variant: None,
        };
        assert_eq!(
            select_platform(&list, &arm64).unwrap().digest,
            list[0].digest
        );
    }

    #[test]
    fn test_select_platform_prefers_matching_variant() {
        let list = [entry("arm", Some("v6"), 'a'), entry("arm", Some("v7"), 'b')];
        let arm_v7 = Platform {
            architecture: "arm".into(),
            os: "linux".into(),
            variant: Some("v7".into()),
        };
        assert_eq!(
            select_platform(&list, &arm_v7).unwrap().digest,
            list[1].digest
        );
    }

    #[test]
    fn test_select_platform_none_for_other_os() {
        let list = [entry("s390x", None, 'a')];
        assert!(
            select_platform(&list, &node_platform()).is_none() || std::env::consts::ARCH == "s390x"
        );
    }

    #[test]
    fn test_manifest_parse_kinds() {
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert!(matches!(
            Manifest::parse(index, None).unwrap(),
            Manifest::Index { .. }
        ));
        let image = br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:00","size":1},"layers":[]}"#;
        assert!(matches!(
            Manifest::parse(image, Some(DOCKER_MANIFEST)).unwrap(),
            Manifest::Image { .. }
        ));
        let v1 = br#"{"schemaVersion":1,"fsLayers":[]}"#;
        assert!(Manifest::parse(v1, None).is_err());
    }

    #[test]
    fn test_parse_config_reads_run_config() {
        let blob = br#"{"os":"linux","architecture":"amd64","config":{"User":"1000:1000",
            "Env":["PATH=/bin"],"Cmd":["sh"],"WorkingDir":"/w","StopSignal":"SIGINT",
            "Volumes":{"/data":{}},"Labels":{"a":"b"}},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]}}"#;
        let parsed = parse_config(blob).unwrap();
        assert_eq!(parsed.config.user, "1000:1000");
        assert_eq!(parsed.config.cmd, vec!["sh".to_string()]);
        assert_eq!(parsed.config.volumes, vec!["/data".to_string()]);
        assert_eq!(parsed.config.stop_signal, "SIGINT");
        assert_eq!(parsed.diff_ids, vec!["sha256:aa".to_string()]);
    }
}
