//! TLS for the daemon's TCP API (`--listen` with `--tls-cert`/`--tls-key`,
//! optionally `--tls-client-ca`) and for the typed client that talks to
//! it. A remote game-day host must not take rules from whoever can reach
//! its port: TLS authenticates the daemon (and, with a client CA, the
//! caller), and the bearer token is still required on top.
//!
//! PEM files only; errors name the file and what was wrong with it.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file that could not be read or held no certificate.
    #[error("could not read certificates from {path}: {detail}")]
    Certs { path: PathBuf, detail: String },
    /// A PEM file that could not be read or held no private key.
    #[error("could not read a private key from {path}: {detail}")]
    Key { path: PathBuf, detail: String },
    /// rustls refused the combination (key does not match the certificate...).
    #[error("TLS setup failed ({what}): {source}")]
    Config {
        what: &'static str,
        #[source]
        source: rustls::Error,
    },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |detail: String| TlsError::Certs {
        path: path.to_owned(),
        detail,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no `BEGIN CERTIFICATE` block in it".into()));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Key {
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|source| TlsError::Config {
            what: "a CA certificate",
            source,
        })?;
    }
    Ok(roots)
}

/// The daemon's side: its certificate chain and key, and, with
/// `client_ca`, a requirement that every client present a certificate
/// that CA signed.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Config {
            what: "protocol versions",
            source,
        })?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                    .build()
                    .map_err(|e| TlsError::Config {
                        what: "the client CA",
                        source: rustls::Error::General(e.to_string()),
                    })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|source| TlsError::Config {
            what: "the certificate and its key",
            source,
        })?;
    Ok(Arc::new(config))
}

/// The client's side: the CA that signed the daemon's certificate, and
/// optionally a client certificate and key.
pub fn client_config(
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Config {
            what: "protocol versions",
            source,
        })?
        .with_root_certificates(roots(ca)?);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|source| TlsError::Config {
                what: "the client certificate and its key",
                source,
            })?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_certificates_is_named() {
        let path = std::env::temp_dir().join(format!("fb-tls-empty-{}.pem", std::process::id()));
        std::fs::write(&path, "not a certificate\n").unwrap();
        let e = load_certs(&path).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains("BEGIN CERTIFICATE"), "{e}");
    }

    #[test]
    fn a_missing_key_file_is_named() {
        let e = load_key(Path::new("/nonexistent/fb.key"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/fb.key"), "{e}");
    }
}
