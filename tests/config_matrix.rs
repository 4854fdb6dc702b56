//! Configuration validation, end to end: a matrix of bad configurations (each must be reported
//! with its field path and a useful message), several problems reported at once, a complete
//! valid file read back to typed values and defaults, `${VAR}` expansion that never mangles
//! secrets, and secrets that never leak through `Debug` or `redacted_json`.

use std::io::Write as _;
use std::time::Duration;

use secrecy::ExposeSecret as _;
use ti_sidecar::config::{self, Problem, VerificationMode};
use ti_sidecar::policy::{self, Config, OutputConfig, load_str};
use ti_sidecar::source::registry::SourceConfig;

const SECRET: &str = "TOPSECRET-hmac-key$$with-dollars";
const SSL_KEY_PEM: &str =
    "-----BEGIN PRIVATE KEY-----\nU1NMLUtFWS1TRUNSRVQtTUFURVJJQUw=\n-----END PRIVATE KEY-----\n";
const CERT_PEM: &str =
    "-----BEGIN CERTIFICATE-----\nQ0VSVElGSUNBVEUtREFUQQ==\n-----END CERTIFICATE-----\n";

fn env(name: &str) -> Option<String> {
    match name {
        "TC_SECRET_KEY" => Some(SECRET.to_owned()),
        "TC_ACCESS_ID" => Some("12345".to_owned()),
        "PART" => Some("x".to_owned()),
        _ => None,
    }
}

fn load(yaml: &str) -> Result<Config, Vec<Problem>> {
    load_str(yaml, &env).map_err(|p| p.0)
}

/// A file with one ThreatConnect stream whose body (after `id`, `access_id`, `secret_key`) is
/// `extra`, one line per field.
fn stream(extra: &str) -> String {
    let mut yaml = String::from(
        "outputs:\n  default: { type: ndjson }\ninputs:\n  - id: tc\n    type: ti_threatconnect\n    streams:\n      - id: s1\n        access_id: \"123\"\n        secret_key: ${TC_SECRET_KEY}\n",
    );
    for line in extra.lines() {
        yaml.push_str("        ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    yaml
}

/// A file whose single stream has exactly the given body (no default credentials).
fn bare_stream(body: &str) -> String {
    let mut yaml = String::from(
        "inputs:\n  - id: tc\n    type: ti_threatconnect\n    streams:\n      - id: s1\n",
    );
    for line in body.lines() {
        yaml.push_str("        ");
        yaml.push_str(line);
        yaml.push('\n');
    }
    yaml
}

fn manifest_file() -> String {
    format!("{}/Cargo.toml", env!("CARGO_MANIFEST_DIR"))
}

const S: &str = "inputs[0].streams[0]";

fn matrix() -> Vec<(String, String, &'static str)> {
    let s = |field: &str| format!("{S}.{field}");
    vec![
        // The envelope.
        (
            format!("bogus: 1\n{}", stream("")),
            "bogus".into(),
            "unknown field",
        ),
        ("- a\n- b\n".into(), "<root>".into(), "must be a map"),
        ("inputs: [\n".into(), "<file>".into(), "line"),
        (
            "outputs: {}\n".into(),
            "inputs".into(),
            "required field is missing",
        ),
        ("inputs: []\n".into(), "inputs".into(), "must not be empty"),
        (
            stream("").replace("type: ndjson", "type: file"),
            "outputs.default.type".into(),
            "unsupported output type \"file\" (supported: ndjson, otlp)",
        ),
        // The Agent's own outputs (monitoring) may be declared; only using one is refused.
        (
            stream("").replace("type: ndjson", "type: elasticsearch, hosts: [x]"),
            "inputs[0].use_output".into(),
            "output \"default\" has type \"elasticsearch\", which only the Agent writes; point \
             this input at an output of type ndjson or otlp",
        ),
        (
            stream("").replace("{ type: ndjson }", "{ type: otlp }"),
            "outputs.default.endpoint".into(),
            "required field is missing",
        ),
        (
            stream("").replace(
                "type: ti_threatconnect",
                "type: ti_threatconnect\n    use_output: es",
            ),
            "inputs[0].use_output".into(),
            "no output named \"es\" (declared outputs: default)",
        ),
        (
            stream("").replace("ti_threatconnect", "ti_misp"),
            "inputs[0].type".into(),
            "unsupported input type \"ti_misp\" (supported: ti_threatconnect, ti_threatq)",
        ),
        (
            stream("").replace("  - id: tc\n", "  - type_: x\n"),
            "inputs[0].id".into(),
            "required field is missing",
        ),
        (
            stream("").replace("    streams:\n", "    processors: []\n    streams:\n"),
            "inputs[0].processors".into(),
            "not supported",
        ),
        (
            bare_stream("").replace("    streams:\n      - id: s1\n", ""),
            "inputs[0].streams".into(),
            "required field is missing",
        ),
        (
            format!(
                "{}  - id: tc2\n    type: ti_threatconnect\n    streams:\n      - id: s1\n        access_id: \"1\"\n        secret_key: k\n",
                stream("")
            ),
            "inputs[1].streams[0].id".into(),
            "duplicate stream id \"s1\" (first declared at inputs[0].streams[0].id)",
        ),
        (
            format!(
                "{}  - id: tc\n    type: ti_threatconnect\n    streams:\n      - id: s2\n        access_id: \"1\"\n        secret_key: k\n",
                stream("")
            ),
            "inputs[1].id".into(),
            "duplicate input id \"tc\"",
        ),
        // Stream identity.
        (
            stream("data_stream: { type: metrics }"),
            s("data_stream.type"),
            "must be \"logs\", got string \"metrics\"",
        ),
        (
            stream("data_stream: { namespace: Prod }"),
            s("data_stream.namespace"),
            "must be lowercase",
        ),
        (
            stream("data_stream: { dataset: x, typo: 1 }"),
            s("data_stream.typo"),
            "unknown field",
        ),
        (
            stream("processors:\n  - add_fields: {}"),
            s("processors"),
            "not supported",
        ),
        // ThreatConnect variables.
        (
            stream("batch_sise: 100"),
            s("batch_sise"),
            "unknown field; did you mean `batch_size`?",
        ),
        (
            bare_stream("secret_key: k"),
            s("access_id"),
            "required field is missing",
        ),
        (
            bare_stream("access_id: 12345\nsecret_key: k"),
            s("access_id"),
            "quote it",
        ),
        (
            bare_stream("access_id: \"1\"\nsecret_key: \"\""),
            s("secret_key"),
            "must not be empty",
        ),
        (
            bare_stream("access_id: \"1\""),
            s("secret_key"),
            "required field is missing",
        ),
        (
            stream("batch_size: 0"),
            s("batch_size"),
            "must be an integer between 1 and 10000, got 0",
        ),
        (
            stream("batch_size: 10001"),
            s("batch_size"),
            "must be an integer between 1 and 10000, got 10001",
        ),
        (
            stream("batch_size: abc"),
            s("batch_size"),
            "got string \"abc\"",
        ),
        (
            stream("batch_size: \"500\""),
            s("batch_size"),
            "got string \"500\"",
        ),
        (
            stream("interval: 2M"),
            s("interval"),
            "unknown unit \"M\" in duration \"2M\"",
        ),
        (
            stream("interval: 10"),
            s("interval"),
            "must be a duration with a unit such as \"24h\" or \"90d\", got number 10",
        ),
        (
            stream("interval: \"10\""),
            s("interval"),
            "missing unit in duration \"10\"",
        ),
        (
            stream("interval: 0s"),
            s("interval"),
            "must be greater than zero, got \"0s\"",
        ),
        (
            stream("http_client_timeout: \"0\""),
            s("http_client_timeout"),
            "must be greater than zero",
        ),
        (
            stream("max_response_size: 8GiB"),
            s("max_response_size"),
            "must be between 1 KiB and 4 GiB, got string \"8GiB\"",
        ),
        (
            stream("max_response_size: 1048576"),
            s("max_response_size"),
            "must be a size with a unit such as \"256MiB\", got number 1048576",
        ),
        (
            stream("max_response_size: lots"),
            s("max_response_size"),
            "got string \"lots\"",
        ),
        (
            stream("initial_interval: 1 week"),
            s("initial_interval"),
            "duration \"1 week\"",
        ),
        (
            stream("ioc_expiration_duration: 1d12h"),
            s("ioc_expiration_duration"),
            "single unit",
        ),
        (
            stream("ioc_expiration_duration: 0d"),
            s("ioc_expiration_duration"),
            "greater than zero",
        ),
        (
            stream("url: ftp://tc.example.com"),
            s("url"),
            "must be an http or https URL, got scheme \"ftp\"",
        ),
        (stream("url: not a url"), s("url"), "is not a valid URL"),
        (
            stream("url: https://u:p@tc.example.com"),
            s("url"),
            "must not contain credentials",
        ),
        (
            stream("proxy_url: socks5://proxy:1080"),
            s("proxy_url"),
            "must be an http or https URL",
        ),
        (
            stream("include_attributes: \"yes\""),
            s("include_attributes"),
            "must be true or false, got string \"yes\"",
        ),
        (
            stream("enable_request_tracer: 1"),
            s("enable_request_tracer"),
            "must be true or false, got number 1",
        ),
        (
            stream("tags: [ok, 1]"),
            s("tags[1]"),
            "must be a string, got number 1",
        ),
        (
            stream("tags: forwarded"),
            s("tags"),
            "must be a list of strings",
        ),
        (stream("tql: [a]"), s("tql"), "must be a string, got a list"),
        (
            stream("tql: 'typeName = \"Host\" OR rating > 3'"),
            s("tql"),
            "a top-level OR would escape the lastModified filter",
        ),
        (
            stream("").replace("${TC_SECRET_KEY}", "${MISSING_VAR}"),
            s("secret_key"),
            "environment variable MISSING_VAR is not set",
        ),
        (stream("tql: \"${OPEN\""), s("tql"), "unterminated `${`"),
        // The ssl block.
        (
            stream("ssl: { verification_mode: sometimes }"),
            s("ssl.verification_mode"),
            "must be one of full, strict, certificate, none; got \"sometimes\"",
        ),
        (
            stream(&format!("ssl: {{ certificate: {} }}", manifest_file())),
            s("ssl.key"),
            "required when `certificate` is set",
        ),
        (
            stream(&format!("ssl: {{ key: {} }}", manifest_file())),
            s("ssl.certificate"),
            "required when `key` is set",
        ),
        (
            stream("ssl: { certificate_authorities: [/nonexistent/ca.pem] }"),
            s("ssl.certificate_authorities[0]"),
            "file \"/nonexistent/ca.pem\" does not exist",
        ),
        (
            stream("ssl: { certificate_authorities: \"-----BEGIN CERTIFICATE-----\" }"),
            s("ssl.certificate_authorities"),
            "must be a list of strings",
        ),
        (
            stream("ssl: { key_passphrase: x }"),
            s("ssl.key_passphrase"),
            "set without `key`: it decrypts the client key",
        ),
        (
            stream("ssl: { supported_protocols: [TLSv1.1, TLSv1.3] }"),
            s("ssl.supported_protocols[0]"),
            "TLSv1.1 is not supported (it is insecure, and rustls speaks TLSv1.2 and TLSv1.3 only)",
        ),
        (
            stream("ssl: { supported_protocols: [tls13] }"),
            s("ssl.supported_protocols[0]"),
            "must be TLSv1.2 or TLSv1.3, got \"tls13\"",
        ),
        (
            stream("ssl: { supported_protocols: [] }"),
            s("ssl.supported_protocols"),
            "must not be empty (omit it for TLSv1.2 and TLSv1.3)",
        ),
        (
            stream("ssl: { ca_trusted_fingerprint: abc123 }"),
            s("ssl.ca_trusted_fingerprint"),
            "must be the SHA-256 of a CA certificate as 64 hex digits (colons allowed), got 6 characters",
        ),
        (
            stream("ssl: { cipher_suites: [ECDHE-RSA-AES-128-GCM-SHA256] }"),
            s("ssl.cipher_suites"),
            "not supported: rustls negotiates only its safe suites",
        ),
        (
            stream("ssl: { curve_types: [P-256] }"),
            s("ssl.curve_types"),
            "not supported: rustls offers X25519, P-256 and P-384; remove it",
        ),
        (
            stream("ssl: { renegotiation: never }"),
            s("ssl.renegotiation"),
            "not supported: rustls never renegotiates",
        ),
        (
            stream("ssl: \"verification_mode: [\""),
            s("ssl"),
            "text is not valid YAML at line 2",
        ),
        (
            stream("ssl: \"just words\""),
            s("ssl"),
            "must be a map of ssl settings (or YAML text of one), got text holding a string",
        ),
        (
            "outputs:\n  default: { type: otlp, endpoint: 'https://c:4317', ssl: { supported_protocols: [TLSv1.3], verification_mode: none } }\ninputs:\n  - id: tc\n    type: ti_threatconnect\n    streams:\n      - id: s1\n        access_id: \"123\"\n        secret_key: ${TC_SECRET_KEY}\n".into(),
            "outputs.default.ssl.supported_protocols".into(),
            "not supported for otlp",
        ),
        (
            stream("ssl: true"),
            s("ssl"),
            "must be a map, got boolean true",
        ),
    ]
}

#[test]
fn bad_config_matrix() {
    let rows = matrix();
    assert!(rows.len() >= 20);
    let mut failures = Vec::new();
    for (yaml, field, fragment) in &rows {
        match load(yaml) {
            Ok(_) => failures.push(format!("accepted, expected {field}: {fragment}\n{yaml}")),
            Err(problems) => {
                if !problems
                    .iter()
                    .any(|p| &p.field == field && p.message.contains(fragment))
                {
                    failures.push(format!(
                        "expected {field}: …{fragment}…\n  got {problems:#?}\n{yaml}"
                    ));
                }
                if let Some(p) = problems.iter().find(|p| p.message.contains("TOPSECRET")) {
                    failures.push(format!("secret echoed in {p}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_problem_is_reported_at_once() {
    let yaml = "\
outputs:
  default: { type: kinesis }
inputs:
  - id: tc
    type: ti_threatconnect
    use_output: nowhere
    streams:
      - id: s1
        secret_key: \"\"
        batch_size: 0
        interval: 2M
        include_attributes: \"yes\"
        verbose: true
        ssl: { verification_mode: sometimes }
      - id: s1
        access_id: \"1\"
        secret_key: ${MISSING_VAR}
extra: 1
";
    let problems = load(yaml).expect_err("invalid");
    let mut fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "extra",
            "inputs[0].streams[0].access_id",
            "inputs[0].streams[0].batch_size",
            "inputs[0].streams[0].include_attributes",
            "inputs[0].streams[0].interval",
            "inputs[0].streams[0].secret_key",
            "inputs[0].streams[0].ssl.verification_mode",
            "inputs[0].streams[0].verbose",
            "inputs[0].streams[1].id",
            "inputs[0].streams[1].secret_key",
            "inputs[0].use_output",
            "outputs.default.type",
        ],
        "{problems:#?}"
    );
    // The Display form lists them all too.
    let text = config::Problems(problems).to_string();
    assert!(text.starts_with("12 configuration problem(s):"), "{text}");
}

#[test]
fn full_config_round_trips_to_typed_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, CERT_PEM).expect("write ca");
    let yaml = format!(
        "\
outputs:
  default: {{ type: ndjson, path: /tmp/events.ndjson }}
  agent: {{ type: otlp, endpoint: \"127.0.0.1:4317\" }}
inputs:
  - id: tc-prod
    type: ti_threatconnect
    name: ti_threatconnect-1
    revision: 3
    meta: {{ package: {{ name: ti_threatconnect, version: 2.1.1 }} }}
    package_policy_id: 0b5c
    policy: {{ revision: 3 }}
    use_output: agent
    data_stream: {{ namespace: prod }}
    streams:
      - id: tc-prod-indicator
        data_stream: {{ dataset: ti_threatconnect.indicator, type: logs }}
        url: https://tc.example.com/api/
        access_id: ${{TC_ACCESS_ID}}
        secret_key: ${{TC_SECRET_KEY}}
        proxy_url: http://user:proxy-pass@proxy.example.com:3128
        ssl:
          certificate_authorities:
            - {ca}
            - |
{cert}
          verification_mode: certificate
          certificate: |
{cert}
          key: |
{key}
        interval: 1h30m
        initial_interval: 720h
        batch_size: 10000
        http_client_timeout: 30s
        tql: '  typeName in (\"Host\", \"Address\")  '
        include_attributes: true
        include_group_assoc: false
        include_group_assoc_attribs: true
        include_indicator_assoc: true
        ioc_expiration_duration: 30d
        enable_request_tracer: true
        max_response_size: 64 MiB
        tags: [forwarded, tc]
        preserve_original_event: true
      - id: tc-defaults
        access_id: \"999\"
        secret_key: plain
        data_stream: {{ namespace: other }}
  - id: tc-lab
    type: ti_threatconnect
    streams:
      - id: tc-lab-indicator
        access_id: \"7\"
        secret_key: k
        tql: \"   \"
",
        ca = ca.display(),
        cert = indent(CERT_PEM, 14),
        key = indent(SSL_KEY_PEM, 14),
    );
    let config = load(&yaml).unwrap_or_else(|p| panic!("{p:#?}"));

    assert_eq!(
        config.outputs["default"],
        OutputConfig::Ndjson {
            path: "/tmp/events.ndjson".into()
        }
    );
    assert_eq!(
        config.outputs["agent"],
        OutputConfig::Otlp {
            endpoint: "127.0.0.1:4317".into(),
            ssl: None,
            retry_max_elapsed: ti_sidecar::policy::default_otlp_retry_max_elapsed(),
            batches_in_flight: ti_sidecar::policy::default_otlp_batches_in_flight(),
        }
    );
    assert_eq!(config.inputs.len(), 2);
    let prod = &config.inputs[0];
    assert_eq!(
        (prod.id.as_str(), prod.use_output.as_str()),
        ("tc-prod", "agent")
    );
    assert_eq!(config.inputs[1].use_output, "default");

    let full = &prod.streams[0];
    assert_eq!(full.identity.id, "tc-prod-indicator");
    assert_eq!(full.identity.dataset, "ti_threatconnect.indicator");
    assert_eq!(full.identity.namespace, "prod");
    let SourceConfig::ThreatConnect(tc) = &full.source else {
        panic!("expected a ThreatConnect stream")
    };
    assert_eq!(tc.url.as_str(), "https://tc.example.com/api");
    assert_eq!(tc.base_url(), "https://tc.example.com/api");
    assert_eq!(tc.access_id, "12345");
    assert_eq!(tc.secret_key.expose_secret(), SECRET);
    assert_eq!(
        tc.http.proxy_url.as_ref().map(url::Url::as_str),
        Some("http://user:proxy-pass@proxy.example.com:3128/")
    );
    let ssl = &tc.http.ssl;
    assert_eq!(ssl.certificate_authorities.len(), 2);
    assert_eq!(ssl.certificate_authorities[0], ca.display().to_string());
    assert!(ssl.certificate_authorities[1].starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(ssl.verification_mode, VerificationMode::Certificate);
    assert!(
        ssl.certificate
            .as_deref()
            .is_some_and(|c| c.contains("CERTIFICATE"))
    );
    assert_eq!(
        ssl.key.as_ref().map(|k| k.expose_secret()),
        Some(SSL_KEY_PEM)
    );
    assert_eq!(tc.interval, Duration::from_secs(5_400));
    assert_eq!(tc.initial_interval, Duration::from_secs(720 * 3_600));
    assert_eq!(tc.batch_size, 10_000);
    assert_eq!(tc.http.timeout, Duration::from_secs(30));
    assert_eq!(
        tc.tql.as_deref(),
        Some("typeName in (\"Host\", \"Address\")")
    );
    assert!(tc.include_attributes);
    assert!(!tc.include_group_assoc);
    assert!(tc.include_group_assoc_attribs);
    assert!(tc.include_indicator_assoc);
    let ioc = tc.ioc_expiration.as_ref().expect("always set");
    assert_eq!(
        (ioc.raw.as_str(), ioc.duration),
        ("30d", Duration::from_secs(30 * 86_400))
    );
    assert!(tc.http.enable_request_tracer);
    assert_eq!(tc.http.max_response_size, 64 * 1024 * 1024);
    assert_eq!(tc.tags, ["forwarded", "tc"]);
    assert!(tc.preserve_original_event);
    assert_eq!(
        tc.event_tags(),
        ["preserve_original_event", "forwarded", "tc"]
    );

    // Every default, exactly the integration's.
    let defaults = &prod.streams[1];
    assert_eq!(defaults.identity.dataset, "ti_threatconnect.indicator");
    assert_eq!(defaults.identity.namespace, "other");
    let SourceConfig::ThreatConnect(tc) = &defaults.source else {
        panic!("expected a ThreatConnect stream")
    };
    assert_eq!(tc.base_url(), "https://app.threatconnect.com");
    assert!(tc.http.proxy_url.is_none());
    assert!(tc.http.ssl.certificate_authorities.is_empty());
    assert_eq!(tc.http.ssl.verification_mode, VerificationMode::Full);
    assert!(tc.http.ssl.certificate.is_none() && tc.http.ssl.key.is_none());
    assert_eq!(tc.interval, Duration::from_secs(24 * 3_600));
    assert_eq!(tc.initial_interval, Duration::from_secs(168 * 3_600));
    assert_eq!(tc.batch_size, 2_000);
    assert_eq!(tc.http.timeout, Duration::from_secs(120));
    assert!(tc.tql.is_none());
    assert!(!tc.include_attributes && !tc.include_group_assoc);
    assert!(!tc.include_group_assoc_attribs && !tc.include_indicator_assoc);
    let ioc = tc.ioc_expiration.as_ref().expect("always set");
    assert_eq!(
        (ioc.raw.as_str(), ioc.duration),
        ("90d", Duration::from_secs(90 * 86_400))
    );
    assert!(!tc.http.enable_request_tracer);
    assert_eq!(tc.http.max_response_size, 256 * 1024 * 1024);
    assert_eq!(tc.tags, ["forwarded", "threatconnect-indicator"]);
    assert!(!tc.preserve_original_event);

    let lab = &config.inputs[1].streams[0];
    assert_eq!(lab.identity.namespace, "default");
    let SourceConfig::ThreatConnect(tc) = &lab.source else {
        panic!("expected a ThreatConnect stream")
    };
    assert!(tc.tql.is_none(), "blank TQL means none");

    // Secrets never leak through Debug ...
    let debug = format!("{config:?}");
    assert!(!debug.contains("TOPSECRET"), "{debug}");
    assert!(
        !debug.contains("U1NMLUtFWS1TRUNSRVQtTUFURVJJQUw"),
        "{debug}"
    );
    assert!(!debug.contains("proxy-pass"), "{debug}");
    assert!(!debug.contains("plain"), "{debug}");

    // ... nor through the redacted effective config.
    let redacted = config.redacted_json();
    let text = redacted.to_string();
    assert!(!text.contains("TOPSECRET"), "{text}");
    assert!(!text.contains("U1NMLUtFWS1TRUNSRVQtTUFURVJJQUw"), "{text}");
    assert!(!text.contains("proxy-pass"), "{text}");
    let stream = &redacted["inputs"][0]["streams"][0];
    assert_eq!(stream["secret_key"], "[REDACTED]");
    assert_eq!(stream["ssl"]["key"], "[REDACTED]");
    assert_eq!(
        stream["proxy_url"],
        "http://user:%5BREDACTED%5D@proxy.example.com:3128/"
    );
    assert_eq!(stream["interval"], "1h30m");
    assert_eq!(stream["max_response_size"], "64 MiB");
    assert_eq!(
        redacted["inputs"][0]["streams"][1]["max_response_size"],
        "256 MiB"
    );
    assert_eq!(stream["access_id"], "12345");
    assert_eq!(
        redacted["inputs"][0]["streams"][1]["secret_key"],
        "[REDACTED]"
    );
    assert_eq!(redacted["inputs"][0]["type"], "ti_threatconnect");
    assert_eq!(redacted["outputs"]["agent"]["endpoint"], "127.0.0.1:4317");
}

fn indent(text: &str, spaces: usize) -> String {
    let pad = " ".repeat(spaces);
    text.lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn dollars_inside_secrets_survive_expansion() {
    let yaml = bare_stream("access_id: \"1\"\nsecret_key: \"pa$$w$${literal}${PART}$rd$\"");
    let config = load(&yaml).unwrap_or_else(|p| panic!("{p:#?}"));
    let SourceConfig::ThreatConnect(tc) = &config.inputs[0].streams[0].source else {
        panic!("expected a ThreatConnect stream")
    };
    assert_eq!(tc.secret_key.expose_secret(), "pa$$w${literal}x$rd$");

    // A secret that arrives through a variable is not expanded again.
    let config = load(&stream("")).unwrap_or_else(|p| panic!("{p:#?}"));
    let SourceConfig::ThreatConnect(tc) = &config.inputs[0].streams[0].source else {
        panic!("expected a ThreatConnect stream")
    };
    assert_eq!(tc.secret_key.expose_secret(), SECRET);
}

#[test]
fn outputs_default_to_ndjson_on_stdout() {
    let config = load(&bare_stream("access_id: \"1\"\nsecret_key: k")).expect("valid");
    assert_eq!(
        config.outputs["default"],
        OutputConfig::Ndjson { path: "-".into() }
    );
}

#[test]
fn load_file_reads_expands_and_reports_file_problems() {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(
        stream("")
            .replace("${TC_SECRET_KEY}", "${TI_SIDECAR_TEST_SURELY_UNSET_VAR}")
            .as_bytes(),
    )
    .expect("write");
    let problems = policy::load_file(file.path())
        .expect_err("variable is unset")
        .0;
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].field, "inputs[0].streams[0].secret_key");
    assert!(
        problems[0]
            .message
            .contains("TI_SIDECAR_TEST_SURELY_UNSET_VAR")
    );

    let missing = policy::load_file(std::path::Path::new("/nonexistent/ti-sidecar.yml"))
        .expect_err("no file")
        .0;
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].field, "<file>");
    assert!(missing[0].message.contains("cannot read"), "{missing:?}");

    let mut bad = tempfile::NamedTempFile::new().expect("temp file");
    bad.write_all(b"inputs:\n  - id: a\n   type: b\n")
        .expect("write");
    let syntax = policy::load_file(bad.path()).expect_err("bad yaml").0;
    assert_eq!(syntax.len(), 1);
    assert_eq!(syntax[0].field, "<file>");
    assert!(syntax[0].message.contains("line 3"), "{syntax:?}");
}

#[test]
fn agent_unit_source_validates_alone() {
    let source = serde_json::json!({
        "id": "ti_threatconnect-abc",
        "type": "ti_threatconnect",
        "name": "ti_threatconnect-1",
        "revision": 1,
        "use_output": "default",
        "meta": { "package": { "name": "ti_threatconnect", "version": "2.1.1" } },
        "package_policy_id": "abc",
        "policy": { "revision": 2 },
        "data_stream": { "namespace": "default" },
        "streams": [{
            "id": "ti_threatconnect.indicator-abc",
            "data_stream": { "dataset": "ti_threatconnect.indicator", "type": "logs" },
            "access_id": "1",
            "secret_key": "k",
            "batch_size": 500,
        }],
    });
    let input = policy::input_from_value(&source).unwrap_or_else(|p| panic!("{p}"));
    assert_eq!(input.streams.len(), 1);

    let mut bad = source.clone();
    bad["streams"][0]["batch_size"] = serde_json::json!(0);
    let problems = policy::input_from_value(&bad).expect_err("invalid").0;
    assert_eq!(problems[0].field, "streams[0].batch_size");
}

#[test]
fn validate_never_echoes_a_literal_secret_that_looks_like_a_reference() {
    let problems = load(&bare_stream(
        "access_id: \"1\"\nsecret_key: \"ab${S3CR3T-PART}cd\"",
    ))
    .expect_err("an invalid reference");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].field, format!("{S}.secret_key"));
    assert!(problems[0].message.contains("invalid variable reference"));
    let shown = format!("{problems:?}");
    assert!(
        !shown.contains("S3CR3T") && !shown.contains("PART"),
        "{shown}"
    );
}

#[test]
fn duplicate_batch_size_is_refused_in_either_order() {
    for (first, second) in [("0", "2000"), ("2000", "0")] {
        let problems = load(&stream(&format!(
            "batch_size: {first}\nbatch_size: {second}"
        )))
        .expect_err("a duplicate key is an error");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].field, format!("{S}.batch_size"));
        assert!(
            problems[0]
                .message
                .contains("duplicate key at lines 10 and 11"),
            "{problems:?}"
        );
    }
}
