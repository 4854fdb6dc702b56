//! The configuration: one schema, two ways in (DESIGN §3).
//!
//! The standalone YAML file (`run --config`) has the shape of an `elastic-agent.yml` policy, and
//! the same input and stream variables arrive from the Agent as a unit's `config.source`. Both are
//! turned into a `serde_json::Value` first and then validated by the same code, which reports
//! **every** problem at once, each naming its field (`inputs[0].streams[1].batch_size`).

pub mod duration;
pub mod env;
pub mod fields;
pub mod policy;
pub mod size;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub use duration::{DurationError, IocExpiration, format_duration, parse_duration};
pub use fields::FieldReader;

/// What every secret is replaced with wherever a configuration is shown (one marker for
/// configurations, traces and masked server text).
pub use crate::redact::REDACTED;

/// The pseudo-field of problems about the file as a whole (unreadable, not YAML).
pub const FILE_FIELD: &str = "<file>";

pub use crate::source::registry::SourceConfig;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Named outputs; inputs pick one with `use_output` (default `default`).
    pub outputs: BTreeMap<String, OutputConfig>,
    /// The inputs, in file order.
    pub inputs: Vec<InputConfig>,
    /// `monitoring.http`, when enabled: where `/metrics`, `/stats` and `/healthz` are served.
    pub monitoring: Option<MonitoringConfig>,
}

/// `monitoring.http` (the Beats convention), when `enabled: true`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonitoringConfig {
    /// `host` (default `127.0.0.1`): an IP address; a non-loopback one needs `allow_remote`.
    pub host: std::net::IpAddr,
    /// `port` (default 5066; 0 picks a free port, logged at start).
    pub port: u16,
}

/// Where events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputConfig {
    /// Newline-delimited JSON to a file, or to stdout when `path` is `-`.
    Ndjson {
        /// File path, or `-` for stdout.
        path: PathBuf,
    },
    /// OTLP logs over gRPC.
    Otlp {
        /// `host:port` or a URL (`http://`, or `https://` for TLS).
        endpoint: String,
        /// Optional TLS (`ssl` block): CA, client certificate and key. Its presence turns TLS on
        /// for a bare `host:port` endpoint.
        ssl: Option<SslConfig>,
        /// `retry_on_failure.max_elapsed_time`: how long one batch's transient export failures
        /// are retried before the poll loop sees the error (the collector exporter's name).
        retry_max_elapsed: Duration,
    },
}

/// The default of `retry_on_failure.max_elapsed_time` of an `otlp` output.
pub fn default_otlp_retry_max_elapsed() -> Duration {
    Duration::from_secs(30)
}

/// One input (one integration policy).
#[derive(Debug, Clone)]
pub struct InputConfig {
    /// Unique input id.
    pub id: String,
    /// Name of the output the events go to.
    pub use_output: String,
    /// The input's streams.
    pub streams: Vec<StreamConfig>,
}

/// What every stream carries, whatever its platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamIdentity {
    /// Unique stream id; also the key of its cursor in the state store.
    pub id: String,
    /// `data_stream.dataset`.
    pub dataset: String,
    /// `data_stream.namespace` (default `default`).
    pub namespace: String,
}

/// One stream: a platform and its validated settings.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Ids and data-stream naming.
    pub identity: StreamIdentity,
    /// The platform-specific settings.
    pub source: SourceConfig,
}

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
    pub fn otlp_limits(&self) -> Vec<(&'static str, &'static str)> {
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
    pub fn private_key(
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
    pub fn name(self) -> &'static str {
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
    pub fn transport_secrets(&self) -> Vec<String> {
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
pub const TLS_VERIFICATION_OFF: &str = "ssl.verification_mode is none: the server's certificate \
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

impl OutputConfig {
    /// What is insecure about this output (logged as WARN when it is opened).
    pub fn security_notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Self::Otlp { endpoint, ssl, .. } = self {
            if let Ok(uri) = crate::sink::otlp::endpoint_uri(endpoint, ssl.is_some())
                && uri.starts_with("http://")
                && !is_loopback_uri(&uri)
            {
                notes.push(
                    "the OTLP endpoint is plaintext (http) to a non-loopback address: events can \
                     be read and altered on the network path; use https:// or an ssl block"
                        .to_owned(),
                );
            }
            if ssl
                .as_ref()
                .is_some_and(|s| s.verification_mode == VerificationMode::None)
            {
                notes.push(TLS_VERIFICATION_OFF.to_owned());
            }
        }
        notes
    }
}

/// Whether a URI's host is a loopback address (`localhost`, 127.0.0.0/8, `::1`).
fn is_loopback_uri(uri: &str) -> bool {
    match url::Url::parse(uri).ok().as_ref().and_then(url::Url::host) {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => {
            name.eq_ignore_ascii_case("localhost")
                || name.to_ascii_lowercase().ends_with(".localhost")
        }
        None => false,
    }
}

impl Config {
    /// Every insecure setting, as (where, what): streams with TLS verification off, outputs
    /// sending in plaintext off the machine. `run` logs each as a WARN at start; `validate`
    /// prints them.
    pub fn security_notes(&self) -> Vec<(String, String)> {
        let mut notes = Vec::new();
        for (name, output) in &self.outputs {
            for note in output.security_notes() {
                notes.push((format!("outputs.{name}"), note));
            }
        }
        for input in &self.inputs {
            for stream in &input.streams {
                for note in stream.source.http().security_notes() {
                    notes.push((
                        format!("input {} stream {}", input.id, stream.identity.id),
                        note.to_owned(),
                    ));
                }
            }
        }
        notes
    }

    /// The effective configuration (defaults filled in) under the file's key names, with every
    /// secret (`secret_key`, `ssl.key`, a proxy password) replaced by `"[REDACTED]"`.
    pub fn redacted_json(&self) -> serde_json::Value {
        policy::config_to_json(self)
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

/// Loads and validates a YAML configuration file, expanding `${VAR}` from the environment.
///
/// An unreadable file or a YAML syntax error is a single problem whose field is `<file>`.
pub fn load_file(path: &std::path::Path) -> Result<Config, Problems> {
    load_file_with_env(path, &env::process_env)
}

/// [`load_file`] with a custom variable lookup (tests, or a host that passes variables).
pub fn load_file_with_env(
    path: &std::path::Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Problems> {
    let text = yaml::read_file(path).map_err(|p| Problems(vec![p]))?;
    load_str(&text, lookup)
}

/// Parses YAML text, expands `${VAR}` with `lookup`, and validates the result.
pub fn load_str(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Config, Problems> {
    let value = yaml::parse(text).map_err(Problems)?;
    let (expanded, mut problems) = env::expand_tree(&value, lookup);
    match from_value(&expanded) {
        Ok(config) if problems.is_empty() => Ok(config),
        Ok(_) => Err(Problems(problems)),
        Err(Problems(more)) => {
            // A field whose variable is missing would also be reported as empty or invalid;
            // the missing variable is the cause, so only it is shown for that field.
            let expanded_fields: std::collections::HashSet<String> =
                problems.iter().map(|p| p.field.clone()).collect();
            problems.extend(
                more.into_iter()
                    .filter(|p| !expanded_fields.contains(&p.field)),
            );
            Err(Problems(problems))
        }
    }
}

/// Validates an already-parsed configuration tree (the YAML file, or an Agent unit's source).
///
/// No `${VAR}` expansion happens here: [`load_file`] does it before calling this.
pub fn from_value(value: &serde_json::Value) -> Result<Config, Problems> {
    policy::read_config(value).map_err(Problems)
}

/// Validates a single input (an Agent unit's `config.source`), whose `use_output` is not checked
/// against any outputs. Problem paths start at the input (`streams[0].batch_size`).
pub fn input_from_value(value: &serde_json::Value) -> Result<InputConfig, Problems> {
    policy::read_single_input(value).map_err(Problems)
}

/// Validates a `monitoring` block on its own (an Agent input unit's `config.source.monitoring`);
/// `None` unless `http.enabled` is true. Problem paths start at `monitoring`.
pub fn monitoring_from_value(
    value: &serde_json::Value,
) -> Result<Option<MonitoringConfig>, Problems> {
    let wrapped = serde_json::json!({ "monitoring": value });
    let mut root = fields::FieldReader::open("", &wrapped).map_err(|p| Problems(vec![p]))?;
    let config = policy::read_monitoring(&mut root);
    let problems = root.finish();
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(Problems(problems))
    }
}

/// Validates a single output (an Agent output unit's `config.source`: `{type, endpoint, ssl}`).
/// Problem paths start at the output (`ssl.key`).
pub fn output_from_value(value: &serde_json::Value) -> Result<OutputConfig, Problems> {
    policy::read_single_output(value).map_err(Problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY_PEM: &str =
        "-----BEGIN PRIVATE KEY-----\nS0VZLU1BVEVSSUFMLVNFQ1JFVA==\n-----END PRIVATE KEY-----\n";
    const CERT_PEM: &str =
        "-----BEGIN CERTIFICATE-----\nQ0VSVElGSUNBVEU=\n-----END CERTIFICATE-----\n";

    fn config() -> Config {
        let tree = json!({
            "inputs": [{
                "id": "tc",
                "type": "ti_threatconnect",
                "streams": [{
                    "id": "s",
                    "access_id": "42",
                    "secret_key": "hmac-SECRET-value",
                    "proxy_url": "http://u:proxy-SECRET@proxy:3128",
                    "ssl": { "certificate": CERT_PEM, "key": KEY_PEM },
                }],
            }],
        });
        from_value(&tree).unwrap_or_else(|p| panic!("{p}"))
    }

    #[test]
    fn debug_never_shows_secrets() {
        let debug = format!("{:?}", config());
        assert!(!debug.contains("hmac-SECRET-value"), "{debug}");
        assert!(!debug.contains("S0VZLU1BVEVSSUFMLVNFQ1JFVA"), "{debug}");
        assert!(!debug.contains("proxy-SECRET"), "{debug}");
        assert!(debug.contains("42"), "non-secrets stay visible: {debug}");
    }

    #[test]
    fn redacted_json_hides_every_secret() {
        let json = config().redacted_json();
        let text = json.to_string();
        for secret in [
            "hmac-SECRET-value",
            "S0VZLU1BVEVSSUFMLVNFQ1JFVA",
            "proxy-SECRET",
        ] {
            assert!(!text.contains(secret), "{text}");
        }
        let stream = &json["inputs"][0]["streams"][0];
        assert_eq!(stream["secret_key"], REDACTED);
        assert_eq!(stream["ssl"]["key"], REDACTED);
        assert_eq!(stream["batch_size"], 2000);
        assert_eq!(stream["ioc_expiration_duration"], "90d");
        assert_eq!(stream["interval"], "1d");
        assert_eq!(
            stream["data_stream"]["dataset"],
            "ti_threatconnect.indicator"
        );
        assert_eq!(json["outputs"]["default"]["path"], "-");
    }

    #[test]
    fn insecure_settings_are_noted() {
        let tree = json!({
            "outputs": {
                "local": { "type": "otlp", "endpoint": "127.0.0.1:4317" },
                "named": { "type": "otlp", "endpoint": "http://localhost:4317" },
                "remote": { "type": "otlp", "endpoint": "collector.example.com:4317" },
                "remote6": { "type": "otlp", "endpoint": "http://[2001:db8::1]:4317" },
                "tls": { "type": "otlp", "endpoint": "https://collector.example.com:4317" },
            },
            "inputs": [{
                "id": "tc",
                "type": "ti_threatconnect",
                "use_output": "local",
                "streams": [
                    { "id": "safe", "access_id": "1", "secret_key": "k" },
                    {
                        "id": "off", "access_id": "1", "secret_key": "k",
                        "ssl": { "verification_mode": "none" },
                    },
                ],
            }],
        });
        let notes = from_value(&tree)
            .unwrap_or_else(|p| panic!("{p}"))
            .security_notes();
        let places: Vec<&str> = notes.iter().map(|(w, _)| w.as_str()).collect();
        assert_eq!(
            places,
            ["outputs.remote", "outputs.remote6", "input tc stream off"],
            "{notes:?}"
        );
        assert!(notes[0].1.contains("plaintext"));
        assert_eq!(notes[2].1, TLS_VERIFICATION_OFF);
    }

    #[test]
    fn yaml_errors_are_one_file_problem() {
        let problems = load_str("a: [", &|_| None).expect_err("bad").0;
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, FILE_FIELD);
        let problems = load_str("", &|_| None).expect_err("empty").0;
        assert_eq!(problems[0].message, "the file is empty");
    }
}
