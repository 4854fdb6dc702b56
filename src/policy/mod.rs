//! The policy envelope: one schema, two ways in (DESIGN §3).
//!
//! The standalone YAML file (`run --config`) has the shape of an `elastic-agent.yml` policy, and
//! the same input and stream variables arrive from the Agent as a unit's `config.source`. Both are
//! turned into a `serde_json::Value` first and then validated by the same code ([`read`]), which
//! reports **every** problem at once, each naming its field (`inputs[0].streams[1].batch_size`).
//! The neutral pieces (field reading, durations, `ssl`, problems) are in [`crate::config`]; each
//! stream's platform settings come from [`crate::source::registry`].

pub(crate) mod read;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{
    FieldReader, Problems, SslConfig, TLS_VERIFICATION_OFF, VerificationMode, env, yaml,
};
use crate::source::registry::SourceConfig;

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
        /// `sending_queue.num_consumers`: batches on their way to the receiver at once (the
        /// collector exporter's name).
        batches_in_flight: usize,
    },
}

/// The default of `retry_on_failure.max_elapsed_time` of an `otlp` output.
pub fn default_otlp_retry_max_elapsed() -> Duration {
    Duration::from_secs(30)
}

/// The default of `sending_queue.num_consumers` of an `otlp` output.
pub fn default_otlp_batches_in_flight() -> usize {
    8
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
        read::config_to_json(self)
    }
}

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
pub(crate) fn from_value(value: &serde_json::Value) -> Result<Config, Problems> {
    read::read_config(value).map_err(Problems)
}

/// Validates a single input (an Agent unit's `config.source`), whose `use_output` is not checked
/// against any outputs. Problem paths start at the input (`streams[0].batch_size`).
pub fn input_from_value(value: &serde_json::Value) -> Result<InputConfig, Problems> {
    read::read_single_input(value).map_err(Problems)
}

/// Validates a `monitoring` block on its own (an Agent input unit's `config.source.monitoring`);
/// `None` unless `http.enabled` is true. Problem paths start at `monitoring`.
pub(crate) fn monitoring_from_value(
    value: &serde_json::Value,
) -> Result<Option<MonitoringConfig>, Problems> {
    let wrapped = serde_json::json!({ "monitoring": value });
    let mut root = FieldReader::open("", &wrapped).map_err(|p| Problems(vec![p]))?;
    let config = read::read_monitoring(&mut root);
    let problems = root.finish();
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(Problems(problems))
    }
}

/// Validates a single output (an Agent output unit's `config.source`: `{type, endpoint, ssl}`).
/// Problem paths start at the output (`ssl.key`).
pub(crate) fn output_from_value(value: &serde_json::Value) -> Result<OutputConfig, Problems> {
    read::read_single_output(value).map_err(Problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::MAX_CONFIG_BYTES;
    use crate::config::{FILE_FIELD, REDACTED};
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

    #[test]
    fn deeply_nested_flow_collections_are_refused_at_once() {
        let text = format!("a: {}", "[".repeat(100_000));
        let problems = load_str(&text, &|_| None).expect_err("too deep").0;
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, FILE_FIELD);
        assert!(
            problems[0].message.contains("deeper than 64"),
            "{problems:?}"
        );
        // Without the linear pre-check the YAML parser spends minutes on this input.
        let text = format!("a: {}", "{a: ".repeat(65));
        assert!(load_str(&text, &|_| None).is_err());
    }

    #[test]
    fn oversized_config_files_are_refused_without_reading_them_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.yml");
        let mut text = String::from("inputs: []\n");
        while text.len() <= MAX_CONFIG_BYTES {
            text.push_str("# padding padding padding padding padding padding padding\n");
        }
        std::fs::write(&path, &text).unwrap();
        let problems = load_file_with_env(&path, &|_| None).expect_err("too big").0;
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].message.contains("larger than 1024 KiB"),
            "{problems:?}"
        );
    }
}
