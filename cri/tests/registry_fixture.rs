//! Tests of the test fixtures themselves: the local registry and the test images.
//!
//! They start Debian's `docker-registry` on 127.0.0.1, push the standard images and read them
//! back over the distribution API exactly as a pull would (Accept headers, digests, blobs).
//! They need no root.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use common::images::{
    BUSYBOX_APPLETS, Compression, Format, HOST_BUSYBOX, ImageBuilder, LAYER_MTIME, Layer, Platform,
    push_manifest_list, push_test_images, whiteout_layers,
};
use common::registry::{
    PushedImage, PushedIndex, Registry, RegistryClient, RegistryOptions, sha256_digest, upload_url,
};
use serde_json::Value;

/// One tar entry as read back: type, mode, owner, link target and content.
#[derive(Debug, Clone, PartialEq)]
struct TarEntry {
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    link: Option<String>,
    data: Vec<u8>,
}

/// Reads a tar into (path without trailing `/`, entry) pairs, in archive order.
#[allow(clippy::unwrap_used)] // test helper: a failure is a test failure
fn read_tar(tar: &[u8]) -> Vec<(String, TarEntry)> {
    let mut archive = tar::Archive::new(tar);
    let mut entries = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches('/')
            .to_owned();
        let header = entry.header().clone();
        let link = entry
            .link_name()
            .unwrap()
            .map(|link| link.to_string_lossy().into_owned());
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        let tar_entry = TarEntry {
            kind: header.entry_type(),
            mode: header.mode().unwrap(),
            uid: header.uid().unwrap(),
            gid: header.gid().unwrap(),
            mtime: header.mtime().unwrap(),
            link,
            data,
        };
        entries.push((path, tar_entry));
    }
    entries
}

/// Undoes the compression a layer media type names.
#[allow(clippy::unwrap_used)] // test helper: a failure is a test failure
fn decompress(media_type: &str, blob: &[u8]) -> Vec<u8> {
    let mut tar = Vec::new();
    if media_type.ends_with("gzip") {
        flate2::read::GzDecoder::new(blob)
            .read_to_end(&mut tar)
            .unwrap();
    } else if media_type.ends_with("zstd") {
        tar = zstd::decode_all(blob).unwrap();
    } else {
        assert!(
            media_type.ends_with(".tar"),
            "unknown layer type {media_type}"
        );
        tar = blob.to_vec();
    }
    tar
}

/// Reads `image` back by tag and by digest and checks manifest, config and every layer.
#[allow(clippy::unwrap_used)] // test helper: a failure is a test failure
async fn check_image(client: &RegistryClient, name: &str, image: &PushedImage) {
    // The tag, or the digest for an index entry.
    let reference = match image.reference.split_once('@') {
        Some((_, digest)) => digest.to_owned(),
        None => image.reference.rsplit_once(':').unwrap().1.to_owned(),
    };
    for by in [reference.as_str(), image.manifest_digest.as_str()] {
        let fetched = client
            .get_manifest(&image.repo, by, &[&image.media_type])
            .await
            .unwrap_or_else(|e| panic!("{name}: GET manifest {by}: {e:#}"));
        assert_eq!(fetched.bytes, image.manifest_bytes, "{name} by {by}");
        assert_eq!(
            sha256_digest(&fetched.bytes),
            image.manifest_digest,
            "{name}"
        );
        assert_eq!(fetched.media_type, image.media_type, "{name} by {by}");
        assert_eq!(
            fetched.digest_header.as_deref(),
            Some(image.manifest_digest.as_str())
        );
    }

    let manifest: Value = serde_json::from_slice(&image.manifest_bytes).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["mediaType"], image.media_type.as_str());
    assert_eq!(manifest["config"]["digest"], image.config_digest.as_str());
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), image.layer_digests.len(), "{name}");

    let config_bytes = client
        .get_blob(&image.repo, &image.config_digest)
        .await
        .unwrap();
    assert_eq!(config_bytes, image.config_bytes, "{name}");
    let config: Value = serde_json::from_slice(&config_bytes).unwrap();
    let diff_ids: Vec<&str> = config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(diff_ids, image.diff_ids, "{name}");
    assert_eq!(config["architecture"], image.platform.architecture.as_str());
    let layer_history = config["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["empty_layer"] != true)
        .count();
    assert_eq!(
        layer_history,
        layers.len(),
        "{name}: one history entry per layer"
    );

    let mut total = 0;
    for (i, layer) in layers.iter().enumerate() {
        let digest = layer["digest"].as_str().unwrap();
        let media_type = layer["mediaType"].as_str().unwrap();
        assert_eq!(digest, image.layer_digests[i]);
        assert_eq!(media_type, image.layer_media_types[i]);
        // get_blob checks the sha256 of the blob against its digest.
        let blob = client.get_blob(&image.repo, digest).await.unwrap();
        assert_eq!(layer["size"], blob.len());
        total += blob.len() as u64;
        let tar = decompress(media_type, &blob);
        assert_eq!(
            sha256_digest(&tar),
            image.diff_ids[i],
            "{name}: diff_id of layer {i}"
        );
    }
    assert_eq!(total, image.total_compressed_size, "{name}");
}

/// Reads `index` back and checks both platforms and their `/platform` marker files.
#[allow(clippy::unwrap_used)] // test helper: a failure is a test failure
async fn check_multiarch(client: &RegistryClient, index: &PushedIndex) {
    let fetched = client
        .get_manifest(&index.repo, "latest", &[&index.media_type])
        .await
        .unwrap();
    assert_eq!(
        fetched.media_type,
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(fetched.bytes, index.manifest_bytes);
    assert_eq!(sha256_digest(&fetched.bytes), index.manifest_digest);
    assert_eq!(
        fetched.digest_header.as_deref(),
        Some(index.manifest_digest.as_str())
    );

    let parsed: Value = serde_json::from_slice(&fetched.bytes).unwrap();
    let entries = parsed["manifests"].as_array().unwrap();
    let platforms: Vec<String> = entries
        .iter()
        .map(|entry| {
            let p = &entry["platform"];
            let (os, arch) = (
                p["os"].as_str().unwrap(),
                p["architecture"].as_str().unwrap(),
            );
            match p["variant"].as_str() {
                Some(variant) => format!("{os}/{arch}/{variant}"),
                None => format!("{os}/{arch}"),
            }
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64/v8"]);

    for (entry, platform) in entries.iter().zip(&platforms) {
        let image = index.image_for(platform).unwrap();
        assert_eq!(entry["digest"], image.manifest_digest.as_str());
        assert_eq!(
            entry["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        check_image(client, platform, image).await;
        let marker = image.layer_digests.last().unwrap();
        let blob = client.get_blob(&index.repo, marker).await.unwrap();
        let tar = decompress(image.layer_media_types.last().unwrap(), &blob);
        let files = read_tar(&tar);
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].0, "platform");
        assert_eq!(String::from_utf8_lossy(&files[0].1.data), *platform);
    }
}

#[tokio::test]
async fn test_registry_serves_pushed_test_images() {
    let registry = Registry::start().unwrap();
    let images = push_test_images(registry.addr()).await.unwrap();
    let client = registry.client().unwrap();

    for (name, image) in images.images() {
        assert!(image.reference.starts_with(registry.addr()), "{name}");
        check_image(&client, name, image).await;
    }
    check_multiarch(&client, &images.multiarch).await;

    let oci_gzip = "application/vnd.oci.image.layer.v1.tar+gzip";
    assert_eq!(
        images.busybox.reference,
        format!("{}/corral-test/busybox:latest", registry.addr())
    );
    assert_eq!(
        images.busybox.media_type,
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(images.busybox.layer_media_types, [oci_gzip]);
    assert_eq!(
        images.busybox_zstd.layer_media_types,
        ["application/vnd.oci.image.layer.v1.tar+zstd"]
    );
    assert_eq!(
        images.busybox_uncompressed.layer_media_types,
        ["application/vnd.oci.image.layer.v1.tar"]
    );
    assert_eq!(
        images.busybox_docker.media_type,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        images.busybox_docker.layer_media_types,
        ["application/vnd.docker.image.rootfs.diff.tar.gzip"]
    );
    let docker_manifest: Value =
        serde_json::from_slice(&images.busybox_docker.manifest_bytes).unwrap();
    assert_eq!(
        docker_manifest["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );

    // The same content in every busybox variant; only the compression differs.
    let diff_id = &images.busybox.diff_ids;
    assert_eq!(&images.busybox_zstd.diff_ids, diff_id);
    assert_eq!(&images.busybox_uncompressed.diff_ids, diff_id);
    assert_eq!(&images.busybox_docker.diff_ids, diff_id);
    assert_ne!(
        images.busybox_zstd.layer_digests,
        images.busybox.layer_digests
    );

    // shared:latest reuses busybox's base layer blob byte for byte.
    assert_eq!(images.shared_base.layer_digests.len(), 2);
    assert_eq!(
        images.shared_base.layer_digests[0],
        images.busybox.layer_digests[0]
    );
    for image in &images.multiarch.images {
        assert_eq!(image.layer_digests[0], images.busybox.layer_digests[0]);
    }

    // The whiteout image's upper layer carries the markers.
    let whiteout = &images.whiteout;
    let upper = client
        .get_blob(&whiteout.repo, &whiteout.layer_digests[1])
        .await
        .unwrap();
    let paths: Vec<String> = read_tar(&decompress(oci_gzip, &upper))
        .into_iter()
        .map(|(path, _)| path)
        .collect();
    assert_eq!(
        paths,
        [
            "data",
            "data/.wh.remove",
            "data/opaque",
            "data/opaque/.wh..wh..opq",
            "data/opaque/new",
            "data/added"
        ]
    );

    // Blobs already present are not uploaded again.
    let base = client
        .get_blob("corral-test/busybox", &images.busybox.layer_digests[0])
        .await
        .unwrap();
    let uploaded = client
        .push_blob(
            "corral-test/busybox",
            &images.busybox.layer_digests[0],
            &base,
        )
        .await
        .unwrap();
    assert!(!uploaded);

    let config: Value = serde_json::from_slice(&images.busybox.config_bytes).unwrap();
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(config["os"], "linux");
}

#[tokio::test]
async fn test_registry_basic_auth_requires_credentials() {
    let registry = Registry::start_with_basic_auth("corral", "s3cret-pass").unwrap();
    let anonymous = registry.client().unwrap();
    let wrong = registry
        .client()
        .unwrap()
        .with_basic_auth("corral", "wrong");
    let authed = registry
        .client()
        .unwrap()
        .with_basic_auth("corral", "s3cret-pass");

    assert_eq!(anonymous.ping().await.unwrap(), 401);
    assert_eq!(wrong.ping().await.unwrap(), 401);
    assert_eq!(authed.ping().await.unwrap(), 200);

    let image = ImageBuilder::busybox(Compression::Gzip).unwrap();
    let denied = image
        .push(registry.addr(), "corral-test/private", "latest")
        .await;
    let error = format!("{:#}", denied.unwrap_err());
    assert!(error.contains("401"), "{error}");

    let pushed = image
        .push_to(&authed, "corral-test/private", "latest")
        .await
        .unwrap();
    check_image(&authed, "private", &pushed).await;
    let media_type = pushed.media_type.as_str();
    let error = anonymous
        .get_manifest("corral-test/private", "latest", &[media_type])
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("401"), "{error:#}");
}

#[tokio::test]
async fn test_push_handles_relative_and_absolute_upload_locations() {
    for relative_urls in [false, true] {
        let registry = Registry::start_with(RegistryOptions {
            relative_urls,
            ..RegistryOptions::default()
        })
        .unwrap();

        // What the registry hands out as the upload location.
        let response = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .post(format!(
                "{}/v2/corral-test/tiny/blobs/uploads/",
                registry.url()
            ))
            .header("content-length", "0")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        assert_eq!(location.starts_with("/v2/"), relative_urls, "{location}");

        let image = ImageBuilder::new()
            .layer(
                Layer::new().file("/hello", "hello\n", 0o644),
                Compression::Gzip,
            )
            .cmd(&["/hello"]);
        let pushed = image
            .push(registry.addr(), "corral-test/tiny", "v1")
            .await
            .unwrap();
        check_image(&registry.client().unwrap(), "tiny", &pushed).await;
    }
}

#[tokio::test]
async fn test_registry_serves_docker_manifest_list() {
    let registry = Registry::start().unwrap();
    let images: Vec<ImageBuilder> = [
        Platform::new("linux", "amd64", None),
        Platform::new("linux", "arm64", Some("v8")),
    ]
    .into_iter()
    .map(|platform| {
        let marker = Layer::new().file("/platform", platform.name(), 0o644);
        ImageBuilder::new()
            .format(Format::Docker)
            .platform(platform)
            .layer(marker, Compression::Gzip)
    })
    .collect();
    let list = push_manifest_list(registry.addr(), "corral-test/list", "latest", &images)
        .await
        .unwrap();
    let list_type = "application/vnd.docker.distribution.manifest.list.v2+json";
    assert_eq!(list.media_type, list_type);

    let client = registry.client().unwrap();
    let fetched = client
        .get_manifest("corral-test/list", "latest", &[list_type])
        .await
        .unwrap();
    assert_eq!(fetched.media_type, list_type);
    assert_eq!(sha256_digest(&fetched.bytes), list.manifest_digest);
    let parsed: Value = serde_json::from_slice(&fetched.bytes).unwrap();
    let entries = parsed["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1]["platform"]["variant"], "v8");
    for (entry, image) in entries.iter().zip(&list.images) {
        assert_eq!(
            entry["mediaType"],
            "application/vnd.docker.distribution.manifest.v2+json"
        );
        check_image(&client, &image.platform.name(), image).await;
    }

    let oci = images[0].clone().format(Format::Oci);
    let mixed = push_manifest_list(registry.addr(), "corral-test/list", "mixed", &[oci]).await;
    assert!(
        mixed.is_err(),
        "an OCI manifest in a Docker list must be refused"
    );
}

#[tokio::test]
async fn test_registry_drop_kills_process_and_removes_dir() {
    let registry = Registry::start().unwrap();
    let pid = registry.pid();
    let dir = registry.dir().to_owned();
    let proc_dir = format!("/proc/{pid}");
    assert!(Path::new(&proc_dir).exists());
    assert!(
        dir.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("corral-test-")
    );
    assert!(dir.join("registry.log").exists());

    drop(registry);

    // Killed and reaped (no zombie left), storage gone.
    assert!(
        !Path::new(&proc_dir).exists(),
        "registry {pid} still exists"
    );
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

#[test]
fn test_busybox_layer_is_deterministic_and_complete() {
    let layer = Layer::busybox().unwrap();
    let tar = layer.tar().unwrap();
    assert_eq!(
        tar,
        layer.tar().unwrap(),
        "the same layer must give the same bytes"
    );
    assert_eq!(
        Compression::Gzip.compress(&tar).unwrap(),
        Compression::Gzip.compress(&tar).unwrap()
    );

    let entries: BTreeMap<String, TarEntry> = read_tar(&tar).into_iter().collect();
    let busybox = &entries["bin/busybox"];
    assert_eq!(busybox.kind, tar::EntryType::Regular);
    assert_eq!(busybox.mode, 0o755);
    assert_eq!(busybox.data, std::fs::read(HOST_BUSYBOX).unwrap());
    for applet in BUSYBOX_APPLETS {
        let entry = &entries[&format!("bin/{applet}")];
        assert_eq!(entry.kind, tar::EntryType::Link, "{applet}");
        assert_eq!(entry.link.as_deref(), Some("bin/busybox"), "{applet}");
    }
    assert_eq!(entries["usr/bin/env"].kind, tar::EntryType::Symlink);
    assert_eq!(entries["usr/bin/env"].link.as_deref(), Some("/bin/busybox"));
    assert_eq!(entries["tmp"].kind, tar::EntryType::Directory);
    assert_eq!(entries["tmp"].mode, 0o1777);
    for dir in [
        "bin", "etc", "root", "proc", "sys", "dev", "var", "usr", "usr/bin",
    ] {
        assert_eq!(entries[dir].kind, tar::EntryType::Directory, "{dir}");
    }
    let home = &entries["home/corral"];
    assert_eq!((home.uid, home.gid), (1000, 1000));

    let passwd = String::from_utf8(entries["etc/passwd"].data.clone()).unwrap();
    assert!(passwd.starts_with("root:x:0:0:root:/root:/bin/sh\n"));
    assert!(passwd.contains("nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"));
    assert!(passwd.contains("corral:x:1000:1000:corral:/home/corral:/bin/sh\n"));
    let group = String::from_utf8(entries["etc/group"].data.clone()).unwrap();
    assert!(group.contains("extra:x:2000:corral\n"));

    for (path, entry) in &entries {
        assert_eq!(entry.mtime, LAYER_MTIME, "{path}");
        if !path.starts_with("home/corral") {
            assert_eq!((entry.uid, entry.gid), (0, 0), "{path}");
        }
    }
}

#[test]
fn test_whiteout_layers_use_oci_markers() {
    let (lower, upper) = whiteout_layers().unwrap();
    let lower: BTreeMap<String, TarEntry> = read_tar(&lower.tar().unwrap()).into_iter().collect();
    for file in ["data/keep", "data/remove", "data/dir/a", "data/opaque/old"] {
        assert_eq!(lower[file].kind, tar::EntryType::Regular, "{file}");
    }
    let upper = read_tar(&upper.tar().unwrap());
    let marker = &upper
        .iter()
        .find(|(p, _)| p == "data/.wh.remove")
        .unwrap()
        .1;
    assert_eq!(marker.kind, tar::EntryType::Regular);
    assert!(marker.data.is_empty());

    let top = read_tar(&Layer::new().whiteout("/gone").opaque("/d/").tar().unwrap());
    let paths: Vec<&str> = top.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, [".wh.gone", "d/.wh..wh..opq"]);
}

#[test]
fn test_image_config_carries_builder_fields() {
    let image = ImageBuilder::new()
        .layer(Layer::new().file("/a", "a", 0o644), Compression::None)
        .layer(Layer::new().file("/b", "b", 0o644), Compression::Zstd)
        .entrypoint(&["/bin/sh", "-c"])
        .cmd(&["echo hi"])
        .env("PATH", "/bin")
        .env("GREETING", "hi")
        .user("1000:1000")
        .working_dir("/work")
        .label("org.example", "yes")
        .stop_signal("SIGUSR1")
        .volume("/data")
        .expose("8080/tcp")
        .platform(Platform::new("linux", "arm64", Some("v8")))
        .annotation("org.opencontainers.image.ref.name", "t")
        .build()
        .unwrap();

    let config: Value = serde_json::from_slice(&image.config_bytes).unwrap();
    let c = &config["config"];
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(c["Cmd"], serde_json::json!(["echo hi"]));
    assert_eq!(c["Env"], serde_json::json!(["PATH=/bin", "GREETING=hi"]));
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["WorkingDir"], "/work");
    assert_eq!(c["Labels"]["org.example"], "yes");
    assert_eq!(c["StopSignal"], "SIGUSR1");
    assert_eq!(c["Volumes"], serde_json::json!({ "/data": {} }));
    assert_eq!(c["ExposedPorts"], serde_json::json!({ "8080/tcp": {} }));
    assert_eq!(config["architecture"], "arm64");
    assert_eq!(config["variant"], "v8");
    assert_eq!(config["history"].as_array().unwrap().len(), 3);

    let a_tar = Layer::new().file("/a", "a", 0o644).tar().unwrap();
    assert_eq!(image.layers[0].diff_id, sha256_digest(&a_tar));
    assert_eq!(
        image.layers[0].digest, image.layers[0].diff_id,
        "uncompressed blob"
    );
    assert_ne!(image.layers[1].digest, image.layers[1].diff_id, "zstd blob");
    assert_eq!(image.config_digest, sha256_digest(&image.config_bytes));
    assert_eq!(image.manifest_digest, sha256_digest(&image.manifest_bytes));
    let manifest: Value = serde_json::from_slice(&image.manifest_bytes).unwrap();
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.ref.name"],
        "t"
    );
    assert_eq!(
        manifest["layers"][1]["mediaType"],
        Compression::Zstd.oci_media_type()
    );
}

#[test]
fn test_upload_url_appends_digest_to_any_location() {
    let base = reqwest::Url::parse("http://127.0.0.1:5000/").unwrap();
    let digest = "sha256:abc";
    let with_query = upload_url(&base, "/v2/r/blobs/uploads/u?_state=x", digest).unwrap();
    assert_eq!(
        with_query.as_str(),
        "http://127.0.0.1:5000/v2/r/blobs/uploads/u?_state=x&digest=sha256%3Aabc"
    );
    let bare = upload_url(&base, "/v2/r/blobs/uploads/u", digest).unwrap();
    assert_eq!(
        bare.as_str(),
        "http://127.0.0.1:5000/v2/r/blobs/uploads/u?digest=sha256%3Aabc"
    );
    let absolute = upload_url(
        &base,
        "http://127.0.0.1:5000/v2/r/blobs/uploads/u?a=b",
        digest,
    )
    .unwrap();
    assert_eq!(absolute.query(), Some("a=b&digest=sha256%3Aabc"));
    assert!(upload_url(&base, "http://example.com/v2/x", digest).is_err());
    assert!(RegistryClient::new("example.com:5000").is_err());
}
