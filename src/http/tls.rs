//! The `ssl` settings as a rustls client configuration: CAs (configured ones replace the
//! built-in roots, as in Beats), `verification_mode`, `supported_protocols`,
//! `ca_trusted_fingerprint`, and the client certificate with an optionally encrypted key.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::Digest as _;

use super::HttpBuildError;
use crate::config::{SslConfig, TlsVersion, VerificationMode};
use crate::pem::{self, PemSource};

/// [`pem::certificates`] with the field named in the error.
fn certificates(
    field: &'static str,
    value: &str,
) -> Result<Vec<CertificateDer<'static>>, HttpBuildError> {
    pem::certificates(value).map_err(|source| HttpBuildError::Pem { field, source })
}

pub(super) fn tls_config(ssl: &SslConfig) -> Result<rustls::ClientConfig, HttpBuildError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    if ssl.certificate_authorities.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    } else {
        // Like Beats: configured CAs replace the defaults.
        for ca in &ssl.certificate_authorities {
            for cert in certificates("certificate_authorities", ca)? {
                roots.add(cert).map_err(|e| HttpBuildError::Tls {
                    field: "certificate_authorities",
                    message: format!("unusable CA in {}: {e}", PemSource::classify(ca).origin()),
                })?;
            }
        }
    }
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        if ssl.supported_protocols.is_empty() {
            rustls::DEFAULT_VERSIONS.to_vec()
        } else {
            ssl.supported_protocols
                .iter()
                .map(|v| match v {
                    TlsVersion::Tls12 => &rustls::version::TLS12,
                    TlsVersion::Tls13 => &rustls::version::TLS13,
                })
                .collect()
        };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| HttpBuildError::Client(e.to_string()))?;
    let builder = if ssl.verification_mode == VerificationMode::Full
        && ssl.ca_trusted_fingerprint.is_none()
    {
        builder.with_root_certificates(roots)
    } else {
        let verifier = ConfiguredVerifier::new(ssl, roots, provider)?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
    };
    let config = match (&ssl.certificate, ssl.private_key()) {
        (Some(cert), Some(key)) => {
            let chain = certificates("certificate", cert)?;
            let key = key.map_err(|source| HttpBuildError::Pem {
                field: "key",
                source,
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| HttpBuildError::Tls {
                    field: "key",
                    message: format!("key does not match certificate: {e}"),
                })?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// The server check for everything but plain `full`: `verification_mode: certificate` (chain
/// checked, host name not), `none` (nothing checked), and `ca_trusted_fingerprint` (Beats: a CA
/// certificate in the presented chain whose SHA-256 is the fingerprint is trusted as a root for
/// this handshake; without a match, the configured roots decide).
#[derive(Debug)]
struct ConfiguredVerifier {
    roots: Arc<rustls::RootCertStore>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    base: Arc<rustls::client::WebPkiServerVerifier>,
    mode: VerificationMode,
    trusted_fingerprint: Option<[u8; 32]>,
}

impl ConfiguredVerifier {
    fn new(
        ssl: &SslConfig,
        roots: rustls::RootCertStore,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Self, HttpBuildError> {
        let roots = Arc::new(roots);
        Ok(Self {
            base: webpki_verifier(roots.clone(), provider.clone())?,
            roots,
            provider,
            mode: ssl.verification_mode,
            trusted_fingerprint: ssl.ca_trusted_fingerprint,
        })
    }

    /// The verifier for this chain: the base one, or one that also trusts the presented CA
    /// certificate matching `ca_trusted_fingerprint`.
    fn for_chain(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<Arc<rustls::client::WebPkiServerVerifier>, rustls::Error> {
        let Some(fingerprint) = &self.trusted_fingerprint else {
            return Ok(self.base.clone());
        };
        let pinned = std::iter::once(end_entity)
            .chain(intermediates)
            .find(|cert| sha2::Sha256::digest(cert.as_ref()).as_slice() == fingerprint);
        let Some(pinned) = pinned.filter(|cert| is_ca(cert)) else {
            return Ok(self.base.clone());
        };
        let mut roots = (*self.roots).clone();
        roots
            .add(pinned.clone().into_owned())
            .map_err(|e| rustls::Error::General(format!("ca_trusted_fingerprint: {e}")))?;
        webpki_verifier(Arc::new(roots), self.provider.clone())
            .map_err(|e| rustls::Error::General(e.to_string()))
    }
}

fn webpki_verifier(
    roots: Arc<rustls::RootCertStore>,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<rustls::client::WebPkiServerVerifier>, HttpBuildError> {
    rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
        .build()
        .map_err(|e| HttpBuildError::Client(e.to_string()))
}

/// Whether a certificate is a CA (basic constraints `cA: true`), as Beats requires of the
/// certificate `ca_trusted_fingerprint` names.
fn is_ca(cert: &CertificateDer<'_>) -> bool {
    x509_parser::parse_x509_certificate(cert.as_ref())
        .ok()
        .and_then(|(_, parsed)| {
            parsed
                .basic_constraints()
                .ok()
                .flatten()
                .map(|bc| bc.value.ca)
        })
        .unwrap_or(false)
}

impl ServerCertVerifier for ConfiguredVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.mode == VerificationMode::None {
            return Ok(ServerCertVerified::assertion());
        }
        let verifier = self.for_chain(end_entity, intermediates)?;
        match verifier.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(ok) => Ok(ok),
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) if self.mode == VerificationMode::Certificate => Ok(ServerCertVerified::assertion()),
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.base.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.base.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.base.supported_verify_schemes()
    }
}
