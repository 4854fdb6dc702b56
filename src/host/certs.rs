//! Certificates shaped like Elastic Agent's (agent-protocol.md §3.2): a per-run self-signed CA
//! (RSA-2048, CN `localhost`, CA flag, certSign, EKU serverAuth/clientAuth) and, per component,
//! one RSA-2048 leaf whose CN and DNS SAN are the component's `server_name`, KU digitalSignature
//! only, EKU serverAuth and clientAuth, serial 1658. The same pair is the component's client
//! identity and the certificate the host's server presents for that `server_name`; its key is
//! handed over as PKCS#1 (`RSA PRIVATE KEY`) PEM, as the Agent does.
//!
//! rcgen (ring backend) cannot generate RSA keys, so the `rsa` crate makes them and rcgen signs
//! with them through their PKCS#8 encoding.

use rand::Rng as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::EncodePrivateKey as _;
use secrecy::{ExposeSecret as _, SecretString};

/// The serial number every Agent leaf certificate carries.
pub(crate) const LEAF_SERIAL: u64 = 1658;

/// Making a certificate failed.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// RSA key generation or encoding failed.
    #[error("RSA key: {0}")]
    Key(String),
    /// rcgen refused the parameters or the key.
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused a certificate or key.
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// The per-run certificate authority.
pub struct Authority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

/// A component's certificate and key (also the server's certificate for its `server_name`).
#[derive(Clone)]
pub struct PeerCert {
    /// The TLS server name: 32 lowercase hex characters.
    pub server_name: String,
    /// PEM certificate.
    pub cert_pem: String,
    /// PKCS#1 PEM private key (secret).
    pub key_pem: SecretString,
}

impl std::fmt::Debug for PeerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerCert")
            .field("server_name", &self.server_name)
            .field("key_pem", &crate::config::REDACTED)
            .finish_non_exhaustive()
    }
}

/// A fresh RSA-2048 key: the rcgen signing key and its PKCS#1 PEM.
fn rsa_key() -> Result<(KeyPair, SecretString), CertError> {
    let mut rng = rsa::rand_core::OsRng;
    let key = rsa::RsaPrivateKey::new(&mut rng, 2048).map_err(|e| CertError::Key(e.to_string()))?;
    let pkcs8 = key
        .to_pkcs8_der()
        .map_err(|e| CertError::Key(e.to_string()))?;
    let pkcs1 = key
        .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
        .map_err(|e| CertError::Key(e.to_string()))?;
    let der = rustls::pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_bytes());
    let pair = KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_RSA_SHA256)?;
    Ok((pair, SecretString::from(pkcs1.to_string())))
}

/// A random UUIDv4 as 32 lowercase hex characters (the Agent's `server_name`). Never all
/// digits, which webpki would refuse as a DNS name.
pub fn new_server_name() -> String {
    loop {
        let mut b: [u8; 16] = rand::rng().random();
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let name: String = b.iter().map(|x| format!("{x:02x}")).collect();
        if name.bytes().any(|c| c.is_ascii_alphabetic()) {
            return name;
        }
    }
}

/// A random UUIDv4 in its dashed form (the Agent's component token).
pub(crate) fn new_token() -> String {
    let hex = new_server_name();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

impl Authority {
    /// Makes the CA: RSA-2048, CN `localhost`.
    pub fn new() -> Result<Self, CertError> {
        let (key, _) = rsa_key()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "localhost");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues the certificate of the component whose TLS name is `server_name`.
    pub fn issue(&self, server_name: &str) -> Result<PeerCert, CertError> {
        let (key, key_pem) = rsa_key()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = vec![SanType::DnsName(server_name.try_into()?)];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, server_name);
        params.distinguished_name = dn;
        params.serial_number = Some(SerialNumber::from(LEAF_SERIAL));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(PeerCert {
            server_name: server_name.to_owned(),
            cert_pem: cert.pem(),
            key_pem,
        })
    }
}

/// The server's TLS configuration, as the Agent's (agent-protocol.md §3.2): TLS 1.2+, client
/// certificates required and verified against the CA, and the server certificate chosen by the
/// ClientHello's SNI among `peers` (each component's own pair). A handshake without a matching
/// SNI fails, as with the Agent ("no supported TLS certificate").
pub fn server_tls_config(
    authority: &Authority,
    peers: &[&PeerCert],
) -> Result<rustls::ServerConfig, CertError> {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject as _;
    let tls = |e: rustls::Error| CertError::Tls(e.to_string());
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls::pki_types::CertificateDer::pem_slice_iter(authority.cert_pem().as_bytes()) {
        roots
            .add(ca.map_err(|e| CertError::Tls(e.to_string()))?)
            .map_err(tls)?;
    }
    let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| CertError::Tls(e.to_string()))?;
    let mut resolver = rustls::server::ResolvesServerCertUsingSni::new();
    for peer in peers {
        let chain = rustls::pki_types::CertificateDer::pem_slice_iter(peer.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CertError::Tls(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(peer.key_pem.expose_secret().as_bytes())
            .map_err(|e| CertError::Tls(e.to_string()))?;
        let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(tls)?;
        resolver
            .add(
                &peer.server_name,
                rustls::sign::CertifiedKey::new(chain, signer),
            )
            .map_err(tls)?;
    }
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(tls)?
        .with_client_cert_verifier(client_verifier)
        .with_cert_resolver(std::sync::Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tokens_have_the_agent_shape() {
        let n = new_server_name();
        assert_eq!(n.len(), 32);
        assert!(
            n.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        let t = new_token();
        assert_eq!(t.len(), 36);
        assert_eq!(t.matches('-').count(), 4);
    }
}
