//! An image record as the CRI `Image` message.

use corral_image_service::index::ImageRecord;
use k8s_cri::v1::{Image, ImageSpec, Int64Value};

/// The CRI view of an image; `pinned` comes from the configured pinned list.
pub fn to_cri_image(record: &ImageRecord, pinned: bool) -> Image {
    let user = record.config.user.split(':').next().unwrap_or_default();
    let (uid, username) = match user.parse::<i64>() {
        Ok(uid) => (Some(Int64Value { value: uid }), String::new()),
        Err(_) => (None, user.to_string()),
    };
    Image {
        id: record.id.clone(),
        repo_tags: record.repo_tags.clone(),
        repo_digests: record.repo_digests.clone(),
        size: record.size,
        uid,
        username,
        spec: Some(ImageSpec {
            image: record.id.clone(),
            ..ImageSpec::default()
        }),
        pinned,
    }
}

#[cfg(test)]
mod tests {
    use corral_image_service::manifest::ImageConfig;

    use super::*;

    fn record(user: &str) -> ImageRecord {
        ImageRecord {
            id: "sha256:ab".to_string(),
            repo_tags: vec!["docker.io/library/x:1".to_string()],
            repo_digests: Vec::new(),
            size: 10,
            manifest_digest: String::new(),
            config: ImageConfig {
                user: user.to_string(),
                ..ImageConfig::default()
            },
            layers: Vec::new(),
            layer_sizes: Vec::new(),
            chain_ids: Vec::new(),
            blobs: Vec::new(),
        }
    }

    #[test]
    fn test_to_cri_image_numeric_user_is_uid() {
        let image = to_cri_image(&record("1000:1000"), false);
        assert_eq!(image.uid, Some(Int64Value { value: 1000 }));
        assert!(image.username.is_empty());
    }

    #[test]
    fn test_to_cri_image_named_user_is_username() {
        let image = to_cri_image(&record("nobody"), true);
        assert_eq!(image.uid, None);
        assert_eq!(image.username, "nobody");
        assert!(image.pinned);
    }

    #[test]
    fn test_to_cri_image_no_user_is_root_unset() {
        let image = to_cri_image(&record(""), false);
        assert_eq!(image.uid, None);
        assert!(image.username.is_empty());
    }
}
