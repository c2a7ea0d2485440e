//! Which certificates the agent trusts for its collector, and how a certificate it does not
//! trust is reported.
//!
//! By default the collector's certificate is verified against the system's roots (through
//! `rustls-platform-verifier`, as reqwest does). With `ca_file`, only the CA certificates in
//! that PEM file are trusted and the system's roots are not: the agent is pinned to the fleet's
//! own CA, so a certificate from any public CA for the collector's name is refused.

use std::error::Error;
use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::config::ConfigError;

/// The roots the collector's certificate is verified against.
#[derive(Debug, Clone)]
pub enum Trust {
    /// The system's roots.
    System,
    /// Only the certificates of `ca_file`.
    Pinned {
        path: PathBuf,
        roots: Vec<CertificateDer<'static>>,
    },
}

impl Trust {
    /// The trust `ca_file` asks for: the system's roots without one, only its certificates
    /// with one. A file that cannot be read, is not PEM, or holds no usable CA certificate is a
    /// configuration error naming the file.
    pub fn load(ca_file: Option<&Path>) -> Result<Trust, ConfigError> {
        let Some(path) = ca_file else {
            return Ok(Trust::System);
        };
        let invalid = |message: String| ConfigError::CaFile {
            path: path.to_owned(),
            message,
        };
        let pem = std::fs::read(path).map_err(|e| invalid(format!("cannot be read: {e}")))?;
        let mut roots = Vec::new();
        for (index, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
            let cert = cert.map_err(|e| invalid(format!("is not a valid PEM file: {e}")))?;
            // What reqwest will do with it; checked here so that a bad certificate is a
            // configuration error at start rather than a failure at the first send.
            rustls::RootCertStore::empty()
                .add(cert.clone())
                .map_err(|e| {
                    invalid(format!(
                        "certificate {} cannot be used as a CA: {e}",
                        index + 1
                    ))
                })?;
            roots.push(cert);
        }
        if roots.is_empty() {
            return Err(invalid(
                "holds no certificate (expected PEM blocks starting with \
                 `-----BEGIN CERTIFICATE-----`)"
                    .to_owned(),
            ));
        }
        Ok(Trust::Pinned {
            path: path.to_owned(),
            roots,
        })
    }

    /// The `ca_file` in use, if any.
    pub fn ca_file(&self) -> Option<&Path> {
        match self {
            Trust::System => None,
            Trust::Pinned { path, .. } => Some(path),
        }
    }

    /// Applies this trust to a reqwest client.
    pub fn configure(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        match self {
            Trust::System => builder,
            Trust::Pinned { roots, .. } => builder.tls_certs_only(
                roots
                    .iter()
                    .filter_map(|der| reqwest::Certificate::from_der(der).ok()),
            ),
        }
    }

    /// The message for a collector certificate this trust does not accept.
    pub fn untrusted_message(&self, refused: &Refused) -> String {
        let detail = &refused.detail;
        match (self, refused.unknown_issuer) {
            (Trust::System, true) => format!(
                "the collector's certificate is not trusted ({detail}): no CA in this system's \
                 trust store signed it; set ca_file to a PEM file holding the CA that did, or \
                 add that CA to the system's store"
            ),
            (Trust::Pinned { path, .. }, true) => format!(
                "the collector's certificate is not trusted ({detail}): no CA in ca_file {} \
                 signed it; check that ca_file holds the CA that signed the collector's \
                 certificate",
                path.display()
            ),
            (trust, false) => format!(
                "the collector's certificate is not trusted ({detail}): check the certificate \
                 the collector serves (its validity dates, and that the server URL's host is \
                 one of the names it is valid for); trusted CAs: {}",
                match trust {
                    Trust::System => "the system's (ca_file is not set)".to_owned(),
                    Trust::Pinned { path, .. } => format!("ca_file {}", path.display()),
                }
            ),
        }
    }
}

/// Why rustls refused the collector's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// rustls's words: "invalid peer certificate: UnknownIssuer".
    pub detail: String,
    /// No trusted CA signed it (rather than expired, or issued for another name).
    pub unknown_issuer: bool,
}

/// The rustls certificate error somewhere in `error`'s chain, if any: why the collector's
/// certificate was refused. rustls's error travels inside an `io::Error` (tokio-rustls), itself
/// inside another (hyper-rustls), and an `io::Error`'s `source()` skips the error it wraps, so
/// each `io::Error`'s inner error is followed too.
pub fn certificate_error(error: &(dyn Error + 'static)) -> Option<Refused> {
    let mut pending = vec![error];
    // Bounded, should some error's chain loop.
    for _ in 0..64 {
        let error = pending.pop()?;
        if let Some(e @ rustls::Error::InvalidCertificate(kind)) =
            error.downcast_ref::<rustls::Error>()
        {
            return Some(Refused {
                detail: e.to_string(),
                unknown_issuer: matches!(kind, rustls::CertificateError::UnknownIssuer),
            });
        }
        if let Some(source) = error.source() {
            pending.push(source);
        }
        if let Some(inner) = error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            pending.push(inner);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str = include_str!("../fixtures/tls/ca.pem");

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn load_error(text: &str) -> String {
        let (_dir, path) = write(text);
        let err = Trust::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("ca_file") && err.contains("ca.pem"), "{err}");
        err
    }

    #[test]
    fn no_ca_file_means_the_system_roots() {
        assert!(matches!(Trust::load(None), Ok(Trust::System)));
    }

    #[test]
    fn a_ca_file_pins_its_certificates() {
        let (_dir, path) = write(&format!("# the fleet CA\n{CA}\n{CA}"));
        let trust = Trust::load(Some(&path)).unwrap();
        let Trust::Pinned { roots, .. } = &trust else {
            panic!("{trust:?}")
        };
        assert_eq!(roots.len(), 2);
        assert_eq!(trust.ca_file(), Some(path.as_path()));
    }

    #[test]
    fn unusable_ca_files_are_configuration_errors() {
        assert!(load_error("").contains("holds no certificate"));
        assert!(load_error("just text\n").contains("holds no certificate"));
        let key_only = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(load_error(key_only).contains("holds no certificate"));
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(load_error(garbage).contains("cannot be used as a CA"));
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.pem");
        let err = Trust::load(Some(&missing)).unwrap_err().to_string();
        assert!(
            err.contains("absent.pem") && err.contains("cannot be read"),
            "{err}"
        );
    }

    #[test]
    fn a_certificate_error_is_found_inside_an_io_error() {
        let rustls_error =
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        // As tokio-rustls and then hyper-rustls wrap it.
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls_error);
        let io = std::io::Error::other(io);
        #[derive(Debug, thiserror::Error)]
        #[error("error sending request")]
        struct Outer(#[source] std::io::Error);
        let refused = certificate_error(&Outer(io)).unwrap();
        assert_eq!(refused.detail, "invalid peer certificate: UnknownIssuer");
        assert!(refused.unknown_issuer);
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(certificate_error(&plain), None);
        let expired = rustls::Error::InvalidCertificate(rustls::CertificateError::Expired);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, expired);
        assert!(!certificate_error(&io).unwrap().unknown_issuer);
    }

    #[test]
    fn every_untrusted_message_says_so_and_names_ca_file() {
        let (_dir, path) = write(CA);
        let pinned = Trust::load(Some(&path)).unwrap();
        for unknown_issuer in [true, false] {
            let refused = Refused {
                detail: "invalid peer certificate: X".to_owned(),
                unknown_issuer,
            };
            for trust in [&Trust::System, &pinned] {
                let text = trust.untrusted_message(&refused);
                assert!(
                    text.starts_with("the collector's certificate is not trusted"),
                    "{text}"
                );
                assert!(text.contains("ca_file") && text.contains("X"), "{text}");
                if trust.ca_file().is_some() {
                    assert!(text.contains(&path.display().to_string()), "{text}");
                }
            }
        }
    }
}
