//! The client's connection to a streaming URL: TCP for `http://`, TLS over TCP for
//! `https://`. Like crictl without `--tls-ca`, the server's certificate is not verified (the
//! runtime's streaming server usually has a self-signed one).

use std::sync::Arc;

use http::Uri;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::ClientError;

/// A connection to the server, plain or TLS.
pub trait Connection: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Connection for T {}

/// Where a URL points: the `host:port` to connect to and its `Host` header.
pub(crate) struct Target {
    pub(crate) address: String,
    pub(crate) authority: String,
    pub(crate) path: String,
    tls: bool,
}

/// Parses an `http://` or `https://` URL.
pub(crate) fn target(url: &str) -> Result<Target, ClientError> {
    let invalid = |reason| ClientError::InvalidUrl {
        url: url.to_string(),
        reason,
    };
    let uri: Uri = url.parse().map_err(|_| invalid("not a uri"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(invalid("only http:// and https:// are supported")),
    };
    let authority = uri.authority().ok_or_else(|| invalid("no host"))?.clone();
    let address = match authority.port_u16() {
        Some(_) => authority.to_string(),
        None if tls => format!("{authority}:443"),
        None => format!("{authority}:80"),
    };
    let path = uri
        .path_and_query()
        .map(|path| path.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    Ok(Target {
        address,
        authority: authority.to_string(),
        path,
        tls,
    })
}

/// Connects to the target: TCP with `TCP_NODELAY`, then the TLS handshake for `https://`.
pub(crate) async fn connect(target: &Target) -> Result<Box<dyn Connection>, ClientError> {
    let failed = |source| ClientError::Connect {
        address: target.address.clone(),
        source,
    };
    let tcp = TcpStream::connect(&target.address).await.map_err(failed)?;
    let _ = tcp.set_nodelay(true);
    if !target.tls {
        return Ok(Box::new(tcp));
    }
    let host = target
        .authority
        .rsplit_once(':')
        .map_or(target.authority.as_str(), |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = ServerName::try_from(host.to_string()).map_err(|_| ClientError::InvalidUrl {
        url: target.authority.clone(),
        reason: "not a valid TLS server name",
    })?;
    let connector = tokio_rustls::TlsConnector::from(insecure_client_config()?);
    let tls = connector.connect(name, tcp).await.map_err(failed)?;
    Ok(Box::new(tls))
}

fn insecure_client_config() -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| ClientError::Connect {
            address: String::new(),
            source: std::io::Error::other(error),
        })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Accepts any certificate; handshake signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
