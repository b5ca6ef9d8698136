//! `PullImage`: fetch an image through the mirrors and the origin, with the request's
//! credentials; answers the image ID.

use base64::Engine as _;
use corral_image_service::pull::Credentials;
use k8s_cri::v1::{AuthConfig, PullImageRequest, PullImageResponse};
use tonic::Status;

use crate::error::Error;
use crate::service::CriService;

impl CriService {
    pub(crate) async fn image_pull(
        &self,
        request: PullImageRequest,
    ) -> Result<PullImageResponse, Status> {
        let name = request.image.map(|spec| spec.image).unwrap_or_default();
        if name.is_empty() {
            return Err(Error::InvalidArgument("image name is required".to_string()).into());
        }
        let credentials = credentials(request.auth.as_ref()).map_err(Error::InvalidArgument)?;
        let started = std::time::Instant::now();
        let image = self.agent.images.pull(&name, &credentials).await?;
        if let Some(metrics) = crate::agent_metrics::get() {
            metrics.image_pulled(image.size, started.elapsed().as_secs_f64());
        }
        Ok(PullImageResponse {
            image_ref: image.id,
        })
    }
}

/// Credentials from kubelet's AuthConfig: username/password, the `auth` field
/// (base64 `user:password`), or a registry/identity token sent as a bearer token.
fn credentials(auth: Option<&AuthConfig>) -> Result<Credentials, String> {
    let Some(auth) = auth else {
        return Ok(Credentials::Anonymous);
    };
    if !auth.username.is_empty() || !auth.password.is_empty() {
        return Ok(Credentials::Basic {
            username: auth.username.clone(),
            password: auth.password.clone(),
        });
    }
    if !auth.auth.is_empty() {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.auth.trim())
            .map_err(|e| format!("auth is not base64: {e}"))?;
        let decoded = String::from_utf8(decoded).map_err(|_| "auth is not UTF-8".to_string())?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| "auth must encode user:password".to_string())?;
        return Ok(Credentials::Basic {
            username: username.to_string(),
            password: password.to_string(),
        });
    }
    if !auth.registry_token.is_empty() {
        return Ok(Credentials::Token(auth.registry_token.clone()));
    }
    if !auth.identity_token.is_empty() {
        return Ok(Credentials::Token(auth.identity_token.clone()));
    }
    Ok(Credentials::Anonymous)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_credentials_from_auth_field() {
        let auth = AuthConfig {
            auth: base64::engine::general_purpose::STANDARD.encode("alice:s3:cret"),
            ..AuthConfig::default()
        };
        match credentials(Some(&auth)).unwrap() {
            Credentials::Basic { username, password } => {
                assert_eq!(username, "alice");
                assert_eq!(password, "s3:cret");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn test_credentials_bad_auth_field_rejected() {
        let auth = AuthConfig {
            auth: "!!!".to_string(),
            ..AuthConfig::default()
        };
        assert!(credentials(Some(&auth)).is_err());
    }

    #[test]
    fn test_credentials_none_is_anonymous() {
        assert!(matches!(credentials(None).unwrap(), Credentials::Anonymous));
        assert!(matches!(
            credentials(Some(&AuthConfig::default())).unwrap(),
            Credentials::Anonymous
        ));
    }
}
