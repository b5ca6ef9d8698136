//! Node tests of the image service against a real docker-registry: pulls of every layer and
//! manifest kind, overlay-ready layers with whiteouts, shared layers, auth, mirrors, corrupt
//! and hostile content, removal, fs usage and restart safety.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::agent::TestAgent;
use common::images::{Compression, ImageBuilder, Layer, TestImages, push_test_images};
use common::proxy::{Behaviour, SlowProxy};
use common::registry::Registry;
use k8s_cri::v1::{
    AuthConfig, Image, ImageFilter, ImageFsInfoRequest, ImageSpec, ImageStatusRequest,
    ListImagesRequest, PullImageRequest, RemoveImageRequest,
};

fn spec(name: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: name.to_string(),
        ..ImageSpec::default()
    })
}

async fn pull(agent: &TestAgent, name: &str) -> Result<String, tonic::Status> {
    pull_with(agent, name, None).await
}

async fn pull_with(
    agent: &TestAgent,
    name: &str,
    auth: Option<AuthConfig>,
) -> Result<String, tonic::Status> {
    let mut client = agent.client().await.unwrap();
    let request = PullImageRequest {
        image: spec(name),
        auth,
        sandbox_config: None,
    };
    Ok(client
        .image
        .pull_image(request)
        .await?
        .into_inner()
        .image_ref)
}

async fn status(agent: &TestAgent, name: &str) -> Option<Image> {
    let mut client = agent.client().await.unwrap();
    let request = ImageStatusRequest {
        image: spec(name),
        verbose: false,
    };
    client
        .image
        .image_status(request)
        .await
        .unwrap()
        .into_inner()
        .image
}

async fn list(agent: &TestAgent) -> Vec<Image> {
    let mut client = agent.client().await.unwrap();
    client
        .image
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images
}

async fn remove(agent: &TestAgent, name: &str) {
    let mut client = agent.client().await.unwrap();
    client
        .image
        .remove_image(RemoveImageRequest { image: spec(name) })
        .await
        .unwrap();
}

fn images_root(agent: &TestAgent) -> PathBuf {
    agent.root.join("images")
}

/// Names of the unpacked layer directories (chain ID hex), sorted.
fn layer_dirs(agent: &TestAgent) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(images_root(agent).join("layers"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn layer_diff(agent: &TestAgent, chain_id: &str) -> PathBuf {
    images_root(agent)
        .join("layers")
        .join(chain_id.trim_start_matches("sha256:"))
        .join("diff")
}

fn dir_entries(path: &Path) -> usize {
    std::fs::read_dir(path).map(|e| e.count()).unwrap_or(0)
}

/// Nothing half-made: no interrupted download, no temp layer, no record without layers.
fn assert_no_partial_state(agent: &TestAgent) {
    let ingest = images_root(agent).join("content/ingest");
    assert_eq!(
        dir_entries(&ingest),
        0,
        "interrupted downloads left in {ingest:?}"
    );
    for name in layer_dirs(agent) {
        assert!(!name.starts_with(".tmp"), "temp layer {name} left behind");
    }
}

/// The chain IDs of an image's layers (bottom first), from its diff IDs.
fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    use sha2::{Digest, Sha256};
    let mut chain: Vec<String> = Vec::new();
    for diff_id in diff_ids {
        let next = match chain.last() {
            None => diff_id.clone(),
            Some(parent) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{parent} {diff_id}").as_bytes()))
            ),
        };
        chain.push(next);
    }
    chain
}

struct Setup {
    registry: Registry,
    images: TestImages,
    agent: TestAgent,
}

async fn setup() -> Setup {
    let registry = Registry::start().unwrap();
    let images = push_test_images(registry.addr()).await.unwrap();
    let agent = TestAgent::start().await.unwrap();
    Setup {
        registry,
        images,
        agent,
    }
}

fn name(setup: &Setup, repo_and_tag: &str) -> String {
    format!("{}/{repo_and_tag}", setup.registry.addr())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_pull_single_arch_lists_and_reports_status() {
    let s = setup().await;
    let reference = name(&s, "corral-test/busybox:latest");
    let id = pull(&s.agent, &reference).await.unwrap();
    assert_eq!(id, s.images.busybox.config_digest);

    let listed = list(&s.agent).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    assert_eq!(listed[0].repo_tags, vec![reference.clone()]);
    assert_eq!(
        listed[0].repo_digests,
        vec![s.images.busybox.digest_reference()]
    );
    assert!(listed[0].size >= s.images.busybox.total_compressed_size);

    for name in [
        reference.as_str(),
        id.as_str(),
        &s.images.busybox.digest_reference(),
    ] {
        let image = status(&s.agent, name)
            .await
            .unwrap_or_else(|| panic!("status of {name}"));
        assert_eq!(image.id, id, "{name}");
    }
    assert!(
        status(&s.agent, &name(&s, "corral-test/busybox:absent"))
            .await
            .is_none()
    );

    let mut client = s.agent.client().await.unwrap();
    let verbose = client
        .image
        .image_status(ImageStatusRequest {
            image: spec(&reference),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&verbose.info["info"]).unwrap();
    assert_eq!(info["config"]["config"]["Cmd"][0], "sh");
    assert_eq!(info["manifestDigest"], s.images.busybox.manifest_digest);

    let filtered = client
        .image
        .list_images(ListImagesRequest {
            filter: Some(ImageFilter {
                image: spec(&reference),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(filtered.len(), 1);

    let chain = chain_ids(&s.images.busybox.diff_ids);
    let busybox = layer_diff(&s.agent, &chain[0]).join("bin/busybox");
    assert!(busybox.is_file(), "{busybox:?} unpacked");
    assert_no_partial_state(&s.agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_pull_zstd_uncompressed_and_docker_layers() {
    for tag in ["zstd", "uncompressed", "docker"] {
        let s = setup().await;
        let pushed = match tag {
            "zstd" => &s.images.busybox_zstd,
            "uncompressed" => &s.images.busybox_uncompressed,
            _ => &s.images.busybox_docker,
        };
        let id = pull(&s.agent, &name(&s, &format!("corral-test/busybox:{tag}")))
            .await
            .unwrap_or_else(|e| panic!("pull {tag}: {e}"));
        assert_eq!(id, pushed.config_digest, "{tag}");
        let chain = chain_ids(&pushed.diff_ids);
        assert!(
            layer_diff(&s.agent, &chain[0])
                .join("bin/busybox")
                .is_file(),
            "{tag}"
        );
        assert_no_partial_state(&s.agent);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_pull_multi_arch_picks_node_platform() {
    let s = setup().await;
    let id = pull(&s.agent, &name(&s, "corral-test/multiarch:latest"))
        .await
        .unwrap();
    let amd64 = s.images.multiarch.image_for("linux/amd64").unwrap();
    assert_eq!(id, amd64.config_digest);
    let chain = chain_ids(&amd64.diff_ids);
    let platform =
        std::fs::read_to_string(layer_diff(&s.agent, &chain[1]).join("platform")).unwrap();
    assert_eq!(platform.trim(), "linux/amd64");
    let image = status(&s.agent, &id).await.unwrap();
    assert_eq!(
        image.repo_digests,
        vec![s.images.multiarch.digest_reference()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_pull_by_digest_records_digest_only() {
    let s = setup().await;
    let by_digest = s.images.busybox.digest_reference();
    let id = pull(&s.agent, &by_digest).await.unwrap();
    let image = status(&s.agent, &by_digest).await.unwrap();
    assert_eq!(image.id, id);
    assert!(image.repo_tags.is_empty());
    assert_eq!(image.repo_digests, vec![by_digest]);
}

/// Unmounts on drop, so a failing assertion leaves no mount behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_whiteout_layers_merge_right_under_overlay() {
    let s = setup().await;
    pull(&s.agent, &name(&s, "corral-test/whiteout:latest"))
        .await
        .unwrap();
    let chain = chain_ids(&s.images.whiteout.diff_ids);
    let (lower, upper) = (
        layer_diff(&s.agent, &chain[0]),
        layer_diff(&s.agent, &chain[1]),
    );
    let merged = s.agent.dir.path().join("merged");
    std::fs::create_dir_all(&merged).unwrap();
    let options = format!("lowerdir={}:{}", upper.display(), lower.display());
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(options.as_str()),
    )
    .unwrap();
    let _mounted = Mounted(merged.clone());
    let data = merged.join("data");
    assert!(data.join("keep").is_file());
    assert!(data.join("dir/a").is_file());
    assert!(data.join("added").is_file());
    assert!(!data.join("remove").exists(), "whited-out file is hidden");
    assert!(data.join("opaque/new").is_file());
    assert!(
        !data.join("opaque/old").exists(),
        "opaque dir hides the lower layer"
    );
    assert!(merged.join("bin/busybox").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_shared_base_layer_stored_once() {
    let s = setup().await;
    pull(&s.agent, &name(&s, "corral-test/busybox:latest"))
        .await
        .unwrap();
    assert_eq!(layer_dirs(&s.agent).len(), 1);
    pull(&s.agent, &name(&s, "corral-test/shared:latest"))
        .await
        .unwrap();
    let shared_chain = chain_ids(&s.images.shared_base.diff_ids);
    let busybox_chain = chain_ids(&s.images.busybox.diff_ids);
    assert_eq!(shared_chain[0], busybox_chain[0]);
    assert_eq!(layer_dirs(&s.agent).len(), 2, "base layer unpacked once");

    // Removing one image keeps the layer the other still uses.
    remove(&s.agent, &name(&s, "corral-test/busybox:latest")).await;
    assert_eq!(layer_dirs(&s.agent).len(), 2);
    assert!(
        layer_diff(&s.agent, &shared_chain[0])
            .join("bin/busybox")
            .is_file()
    );
    remove(&s.agent, &name(&s, "corral-test/shared:latest")).await;
    assert!(layer_dirs(&s.agent).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_concurrent_pulls_share_the_work() {
    let s = setup().await;
    let a = name(&s, "corral-test/busybox:latest");
    let b = name(&s, "corral-test/shared:latest");
    let (ra, rb, rc) = tokio::join!(pull(&s.agent, &a), pull(&s.agent, &b), pull(&s.agent, &a));
    assert_eq!(ra.unwrap(), rc.unwrap());
    rb.unwrap();
    assert_eq!(layer_dirs(&s.agent).len(), 2);
    assert_eq!(list(&s.agent).await.len(), 2);
    assert_no_partial_state(&s.agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_remove_by_tag_keeps_other_tags() {
    let s = setup().await;
    let client = s.registry.client().unwrap();
    let builder = ImageBuilder::busybox(Compression::Gzip).unwrap();
    builder
        .push_to(&client, "corral-test/tagged", "one")
        .await
        .unwrap();
    builder
        .push_to(&client, "corral-test/tagged", "two")
        .await
        .unwrap();
    let one = name(&s, "corral-test/tagged:one");
    let two = name(&s, "corral-test/tagged:two");
    let id = pull(&s.agent, &one).await.unwrap();
    assert_eq!(pull(&s.agent, &two).await.unwrap(), id);
    let image = status(&s.agent, &id).await.unwrap();
    assert_eq!(image.repo_tags, vec![one.clone(), two.clone()]);

    remove(&s.agent, &one).await;
    assert!(status(&s.agent, &one).await.is_none());
    let image = status(&s.agent, &two).await.expect("other tag kept");
    assert_eq!(image.repo_tags, vec![two.clone()]);
    assert_eq!(layer_dirs(&s.agent).len(), 1);

    remove(&s.agent, &two).await;
    assert!(list(&s.agent).await.is_empty());
    assert!(
        layer_dirs(&s.agent).is_empty(),
        "layers go with the last image"
    );
    let blobs = images_root(&s.agent).join("content/blobs/sha256");
    assert_eq!(dir_entries(&blobs), 0, "blobs go with the last image");
    remove(&s.agent, &two).await; // unknown now: still success
    remove(
        &s.agent,
        "sha256:0000000000000000000000000000000000000000000000000000000000000000",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_image_fs_info_follows_pull_and_remove() {
    let s = setup().await;
    let used = |agent: &TestAgent| {
        let agent_socket = agent.socket.clone();
        async move {
            let mut client = corral::client::CriClient::connect(&agent_socket)
                .await
                .unwrap();
            let info = client
                .image
                .image_fs_info(ImageFsInfoRequest::default())
                .await
                .unwrap()
                .into_inner();
            assert_eq!(info.container_filesystems.len(), 1);
            let fs = &info.image_filesystems[0];
            (fs.used_bytes.unwrap().value, fs.inodes_used.unwrap().value)
        }
    };
    let (empty_bytes, _) = used(&s.agent).await;
    assert_eq!(empty_bytes, 0);
    let reference = name(&s, "corral-test/busybox:latest");
    pull(&s.agent, &reference).await.unwrap();
    let (bytes, inodes) = used(&s.agent).await;
    assert!(bytes > s.images.busybox.total_compressed_size, "{bytes}");
    assert!(inodes > 10, "{inodes}");
    remove(&s.agent, &reference).await;
    assert_eq!(used(&s.agent).await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_pull_missing_image_is_not_found() {
    let s = setup().await;
    let err = pull(&s.agent, &name(&s, "corral-test/nope:latest"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let err = pull(&s.agent, "Not A Reference").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(list(&s.agent).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_basic_auth_with_and_without_credentials() {
    let registry = Registry::start_with_basic_auth("alice", "s3cret").unwrap();
    let client = registry
        .client()
        .unwrap()
        .with_basic_auth("alice", "s3cret");
    ImageBuilder::busybox(Compression::Gzip)
        .unwrap()
        .push_to(&client, "corral-test/private", "latest")
        .await
        .unwrap();
    let agent = TestAgent::start().await.unwrap();
    let reference = format!("{}/corral-test/private:latest", registry.addr());

    let err = pull(&agent, &reference).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(list(&agent).await.is_empty());
    assert!(layer_dirs(&agent).is_empty());
    assert_no_partial_state(&agent);

    let wrong = AuthConfig {
        username: "alice".into(),
        password: "wrong".into(),
        ..AuthConfig::default()
    };
    assert!(pull_with(&agent, &reference, Some(wrong)).await.is_err());

    let right = AuthConfig {
        username: "alice".into(),
        password: "s3cret".into(),
        ..AuthConfig::default()
    };
    pull_with(&agent, &reference, Some(right)).await.unwrap();
    assert_eq!(list(&agent).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_mirror_serves_names_with_fallback_when_first_is_down() {
    let s = setup().await;
    // A port nothing listens on: the first mirror is down.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    s.agent
        .write_hosts_toml(
            "example.test",
            &format!(
                "server = \"https://example.test\"\n\
                 [host.\"http://{dead}\"]\n  capabilities = [\"pull\", \"resolve\"]\n\
                 [host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
                s.registry.addr()
            ),
        )
        .unwrap();
    let id = pull(&s.agent, "example.test/corral-test/busybox:latest")
        .await
        .unwrap();
    assert_eq!(id, s.images.busybox.config_digest);
    let image = status(&s.agent, "example.test/corral-test/busybox:latest")
        .await
        .unwrap();
    assert_eq!(
        image.repo_tags,
        vec!["example.test/corral-test/busybox:latest".to_string()]
    );
    assert!(s.agent.log().contains("trying the next one"));
}

/// The path of a blob in the registry fixture's storage.
fn registry_blob(registry: &Registry, digest: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    registry
        .dir()
        .join("storage/docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_corrupted_blob_fails_and_leaves_nothing() {
    let s = setup().await;
    let layer = registry_blob(&s.registry, &s.images.shared_base.layer_digests[1]);
    assert!(layer.is_file(), "registry storage layout: {layer:?}");
    let mut bytes = std::fs::read(&layer).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&layer, bytes).unwrap();

    let err = pull(&s.agent, &name(&s, "corral-test/shared:latest"))
        .await
        .unwrap_err();
    assert!(
        err.message().contains("mismatch") || err.message().contains("digest"),
        "{err:?}"
    );
    assert!(list(&s.agent).await.is_empty());
    let shared_chain = chain_ids(&s.images.shared_base.diff_ids);
    assert!(
        !layer_diff(&s.agent, &shared_chain[1]).exists(),
        "corrupt layer not kept"
    );
    assert!(
        !images_root(&s.agent)
            .join("content/blobs/sha256")
            .join(s.images.shared_base.layer_digests[1].trim_start_matches("sha256:"))
            .exists()
    );
    assert_no_partial_state(&s.agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_hostile_layers_refused_without_writing_outside() {
    let s = setup().await;
    let client = s.registry.client().unwrap();
    let hostile: [(&str, Layer); 4] = [
        (
            "dotdot",
            Layer::new().raw_file("../../../corral-escape", "pwned"),
        ),
        (
            "nested-dotdot",
            Layer::new()
                .dir("/a", 0o755)
                .raw_file("a/../../corral-escape", "pwned"),
        ),
        (
            "symlink",
            Layer::new()
                .raw_link("evil", s.agent.dir.path().to_str().unwrap(), false)
                .raw_file("evil/corral-escape", "pwned"),
        ),
        (
            "hardlink",
            Layer::new().raw_link("hard", "../../../../etc/passwd", true),
        ),
    ];
    for (tag, layer) in hostile {
        ImageBuilder::new()
            .layer(layer, Compression::Gzip)
            .push_to(&client, "corral-test/hostile", tag)
            .await
            .unwrap();
        let err = pull(&s.agent, &name(&s, &format!("corral-test/hostile:{tag}")))
            .await
            .unwrap_err();
        assert!(err.message().contains("refused"), "{tag}: {err:?}");
        assert!(list(&s.agent).await.is_empty(), "{tag}");
        assert!(layer_dirs(&s.agent).is_empty(), "{tag}");
        assert_no_partial_state(&s.agent);
        for dir in [
            s.agent.dir.path().to_path_buf(),
            s.agent.root.clone(),
            images_root(&s.agent),
            images_root(&s.agent).join("layers"),
        ] {
            assert!(
                !dir.join("corral-escape").exists(),
                "{tag}: escaped into {dir:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_kill9_mid_pull_leaves_no_corrupt_image_and_retry_succeeds() {
    let registry = Registry::start().unwrap();
    // A layer big enough to still be downloading when the agent dies.
    let noise: Vec<u8> = (0..4_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let pushed = ImageBuilder::busybox(Compression::Gzip)
        .unwrap()
        .layer(Layer::new().file("/noise", noise, 0o644), Compression::Gzip)
        .push(registry.addr(), "corral-test/big", "latest")
        .await
        .unwrap();
    let proxy = SlowProxy::start(
        registry.addr(),
        Behaviour::Throttle {
            bytes_per_second: 400_000,
        },
    )
    .unwrap();
    let mut agent = TestAgent::start().await.unwrap();
    let slow_name = format!("{}/corral-test/big:latest", proxy.addr());
    let socket = agent.socket.clone();
    let pulling = tokio::spawn(async move {
        let mut client = corral::client::CriClient::connect(&socket).await.unwrap();
        client
            .image
            .pull_image(PullImageRequest {
                image: spec(&slow_name),
                ..PullImageRequest::default()
            })
            .await
    });
    // Wait until the download is under way, then crash the agent.
    let ingest = images_root(&agent).join("content/ingest");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while dir_entries(&ingest) == 0 {
        assert!(std::time::Instant::now() < deadline, "pull never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    agent.kill9().await.unwrap();
    assert!(
        pulling.await.unwrap().is_err(),
        "the pull died with the agent"
    );
    assert!(
        dir_entries(&ingest) > 0 || !layer_dirs(&agent).is_empty(),
        "the crash left debris"
    );

    agent.spawn().await.unwrap();
    assert!(
        list(&agent).await.is_empty(),
        "no half-pulled image is listed"
    );
    assert_no_partial_state(&agent);

    let direct = format!("{}/corral-test/big:latest", registry.addr());
    assert_eq!(pull(&agent, &direct).await.unwrap(), pushed.config_digest);
    assert_no_partial_state(&agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_stalled_pull_times_out_and_cleans_up() {
    let registry = Registry::start().unwrap();
    let images = push_test_images(registry.addr()).await.unwrap();
    let proxy =
        SlowProxy::start(registry.addr(), Behaviour::StallAfter { bytes: 64 * 1024 }).unwrap();
    let agent = TestAgent::start_with_images("pull_progress_timeout_seconds = 2")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let err = pull(
        &agent,
        &format!("{}/corral-test/busybox:latest", proxy.addr()),
    )
    .await
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(err.message().contains("no progress"), "{err:?}");
    assert!(list(&agent).await.is_empty());
    assert!(layer_dirs(&agent).is_empty());
    assert_no_partial_state(&agent);
    drop(images);
}
