//! The configuration's platform-neutral parts (DESIGN §3): how fields are read and reported
//! ([`fields`]), durations, sizes, `${VAR}` expansion, YAML parsing, the shared HTTP and `ssl`
//! settings, and the [`Problem`]s validation reports.
//!
//! The policy envelope (outputs, inputs, streams) is in [`crate::policy`]; each platform's
//! settings are in its `source::<platform>::config`. Every problem names its field
//! (`inputs[0].streams[1].batch_size`), and validation reports **every** problem at once.

pub(crate) mod duration;
pub(crate) mod env;
pub mod fields;
pub mod size;
pub(crate) mod yaml;

pub use duration::{DurationError, IocExpiration, format_duration, parse_duration};
pub use fields::FieldReader;

/// What every secret is replaced with wherever a configuration is shown (one marker for
/// configurations, traces and masked server text).
pub(crate) use crate::redact::REDACTED;

/// The pseudo-field of problems about the file as a whole (unreadable, not YAML).
pub(crate) const FILE_FIELD: &str = "<file>";

/// TLS settings shared by every HTTP client (Elastic's `ssl` block).
#[derive(Debug, Clone, Default)]
pub struct SslConfig {
    /// CA certificates: file paths or inline PEM.
    pub certificate_authorities: Vec<String>,
    /// How the server's certificate is checked.
    pub verification_mode: VerificationMode,
    /// Client certificate (file path or inline PEM), for mutual TLS.
    pub certificate: Option<String>,
    /// Client key (file path or inline PEM). Treated as a secret: never printed.
    pub key: Option<secrecy::SecretString>,
    /// `key_passphrase`: decrypts an encrypted PKCS#8 `key`. A secret.
    pub key_passphrase: Option<secrecy::SecretString>,
    /// `supported_protocols`; empty means TLSv1.2 and TLSv1.3.
    pub supported_protocols: Vec<TlsVersion>,
    /// `ca_trusted_fingerprint`: the SHA-256 of a CA certificate trusted when the server presents
    /// it in its chain (Beats' meaning).
    pub ca_trusted_fingerprint: Option<[u8; 32]>,
}

impl SslConfig {
    /// The `ssl` settings the OTLP client (tonic's TLS) cannot honour, as `(key, why)`; validation
    /// reports them on the output, so a config that validates is one the sink can open.
    pub(crate) fn otlp_limits(&self) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::new();
        if self.verification_mode != VerificationMode::Full {
            out.push((
                "verification_mode",
                "only `full` (or `strict`) is supported for otlp; give the collector's CA in \
                 `certificate_authorities` instead",
            ));
        }
        if !self.supported_protocols.is_empty() {
            out.push((
                "supported_protocols",
                "not supported for otlp (it negotiates TLSv1.2 or TLSv1.3); remove it",
            ));
        }
        if self.ca_trusted_fingerprint.is_some() {
            out.push((
                "ca_trusted_fingerprint",
                "not supported for otlp; give the collector's CA in `certificate_authorities`",
            ));
        }
        out
    }

    /// The client key, decrypted with `key_passphrase` when it is encrypted.
    pub(crate) fn private_key(
        &self,
    ) -> Option<Result<rustls::pki_types::PrivateKeyDer<'static>, crate::pem::PemError>> {
        use secrecy::ExposeSecret as _;
        let key = self.key.as_ref()?;
        let passphrase = self.key_passphrase.as_ref().map(|p| p.expose_secret());
        Some(crate::pem::private_key(key.expose_secret(), passphrase))
    }
}

impl PartialEq for SslConfig {
    fn eq(&self, other: &Self) -> bool {
        use secrecy::ExposeSecret as _;
        let exposed =
            |s: &Option<secrecy::SecretString>| s.as_ref().map(|k| k.expose_secret().to_owned());
        self.certificate_authorities == other.certificate_authorities
            && self.verification_mode == other.verification_mode
            && self.certificate == other.certificate
            && exposed(&self.key) == exposed(&other.key)
            && exposed(&self.key_passphrase) == exposed(&other.key_passphrase)
            && self.supported_protocols == other.supported_protocols
            && self.ca_trusted_fingerprint == other.ca_trusted_fingerprint
    }
}

/// A TLS version of `ssl.supported_protocols`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// `TLSv1.2`.
    Tls12,
    /// `TLSv1.3`.
    Tls13,
}

impl TlsVersion {
    /// The name Beats uses.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Tls12 => "TLSv1.2",
            Self::Tls13 => "TLSv1.3",
        }
    }
}

impl Eq for SslConfig {}

/// Elastic's `ssl.verification_mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VerificationMode {
    /// Chain and host name are verified (`full`, and Beats' `strict`, which adds the SAN checks
    /// rustls always makes).
    #[default]
    Full,
    /// Chain is verified, host name is not.
    Certificate,
    /// Nothing is verified (insecure; for tests only).
    None,
}

/// HTTP client settings every platform shares.
///
/// `Debug` is written by hand: a proxy URL may carry a password.
#[derive(Clone)]
pub struct HttpConfig {
    /// `http_client_timeout`: the whole-request timeout.
    pub timeout: std::time::Duration,
    /// `proxy_url`.
    pub proxy_url: Option<url::Url>,
    /// `ssl`.
    pub ssl: SslConfig,
    /// `enable_request_tracer`: write request/response NDJSON with secrets redacted.
    pub enable_request_tracer: bool,
    /// `max_response_size` (bytes): the largest page body read; a larger one fails the request.
    pub max_response_size: u64,
}

impl HttpConfig {
    /// The transport's secrets, masked like the platform's: the proxy URL's password (as
    /// written and percent-decoded) and `ssl.key_passphrase`.
    pub(crate) fn transport_secrets(&self) -> Vec<String> {
        use secrecy::ExposeSecret as _;
        let mut out = Vec::new();
        if let Some(encoded) = self.proxy_url.as_ref().and_then(|u| u.password()) {
            let decoded = percent_encoding::percent_decode_str(encoded).decode_utf8_lossy();
            out.extend([encoded.to_owned(), decoded.into_owned()]);
        }
        if let Some(passphrase) = &self.ssl.key_passphrase {
            out.push(passphrase.expose_secret().to_owned());
        }
        out
    }
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("timeout", &self.timeout)
            .field(
                "proxy_url",
                &self.proxy_url.as_ref().map(fields::redact_url),
            )
            .field("ssl", &self.ssl)
            .field("enable_request_tracer", &self.enable_request_tracer)
            .field("max_response_size", &self.max_response_size)
            .finish()
    }
}

/// The note every insecure-TLS stream carries in its logs and unit health.
pub(crate) const TLS_VERIFICATION_OFF: &str = "ssl.verification_mode is none: the server's certificate \
     is not checked, so anyone on the network path can impersonate the platform";

impl HttpConfig {
    /// What is insecure about these settings, one sentence each (logged as WARN at start, and
    /// shown in the unit's health message).
    pub fn security_notes(&self) -> Vec<&'static str> {
        let mut notes = Vec::new();
        if self.ssl.verification_mode == VerificationMode::None {
            notes.push(TLS_VERIFICATION_OFF);
        }
        notes
    }
}

/// One configuration problem, naming its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path to the field, e.g. `inputs[0].streams[1].batch_size`.
    pub field: String,
    /// What is wrong, with the offending value (never a secret's value).
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} configuration problem(s):\n{}", .0.len(), .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct Problems(pub Vec<Problem>);
