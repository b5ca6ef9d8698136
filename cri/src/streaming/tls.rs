//! HTTPS for the streaming server (`[streaming] tls`): the certificate from the config's
//! files, or a self-signed one made at start for the listening address, `localhost` and the
//! node's name. The key of a generated certificate lives in memory only.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::{Config, Error};

/// The TLS acceptor for `config`, or `None` without `tls`.
pub(crate) fn acceptor(
    config: &Config,
    address: SocketAddr,
) -> Result<Option<tokio_rustls::TlsAcceptor>, Error> {
    if !config.tls {
        return Ok(None);
    }
    let (chain, key) = if config.tls_cert_file.is_empty() {
        self_signed(address)?
    } else {
        from_files(&config.tls_cert_file, &config.tls_key_file)?
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(format!("protocol versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| Error::Tls(format!("certificate and key: {e}")))?;
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(server))))
}

/// A new key pair and a certificate for the address (an unspecified address stands for
/// every address of the node: its hostname and localhost are named then).
fn self_signed(
    address: SocketAddr,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
    let mut names = vec!["localhost".to_string()];
    if !address.ip().is_unspecified() {
        names.push(address.ip().to_string());
    }
    if let Ok(host) = nix::unistd::gethostname()
        && let Some(host) = host.to_str()
        && !host.is_empty()
        && !names.iter().any(|n| n == host)
    {
        names.push(host.to_string());
    }
    let generated = rcgen::generate_simple_self_signed(names.clone())
        .map_err(|e| Error::Tls(format!("generate a self-signed certificate: {e}")))?;
    tracing::info!(?names, "streaming TLS with a self-signed certificate");
    let certificate = generated.cert.der().clone();
    let key = PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der());
    Ok((vec![certificate], PrivateKeyDer::Pkcs8(key)))
}

fn from_files(
    cert_file: &str,
    key_file: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
    let chain = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::Tls(format!("read {cert_file}: {e}")))?;
    if chain.is_empty() {
        return Err(Error::Tls(format!("no certificate in {cert_file}")));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| Error::Tls(format!("read {key_file}: {e}")))?;
    Ok((chain, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(tls: bool) -> Config {
        Config {
            tls,
            ..Config::default()
        }
    }

    #[test]
    fn test_no_tls_no_acceptor() {
        let address = "127.0.0.1:0".parse().unwrap();
        assert!(acceptor(&config(false), address).unwrap().is_none());
    }

    #[test]
    fn test_self_signed_and_files() {
        let address: SocketAddr = "127.0.0.1:0".parse().unwrap();
        assert!(acceptor(&config(true), address).unwrap().is_some());

        let dir = tempfile::tempdir().unwrap();
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        let files = Config {
            tls: true,
            tls_cert_file: cert.display().to_string(),
            tls_key_file: key.display().to_string(),
            ..Config::default()
        };
        assert!(acceptor(&files, address).unwrap().is_some());

        let swapped = Config {
            tls_cert_file: files.tls_key_file.clone(),
            tls_key_file: files.tls_cert_file.clone(),
            ..files
        };
        let err = acceptor(&swapped, address).err().unwrap();
        assert!(err.to_string().contains("no certificate"), "{err}");
    }
}
