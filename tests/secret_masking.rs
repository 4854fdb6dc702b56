//! Secret masking: a server that echoes a secret back, in whatever encoding, never gets it into
//! an error, a log line, a health message or a request trace.
//!
//! The attack each test reproduces: a hostile or careless platform answers with the secret it
//! was sent (raw, JSON-escaped, percent-encoded, Base64, or inside the `Basic` header's pair).
//! Before, only the raw form was masked, and only in the tracer; errors built from the answer
//! reached stderr and CheckinV2 health unmasked.

mod common;

use std::sync::Arc;
use std::time::Duration;
use ti_sidecar::source::registry::StreamSettings as _;

use base64::Engine as _;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use ti_sidecar::config::fields::FieldReader;
use ti_sidecar::http::{HttpClient, RetryPolicy};
use ti_sidecar::source::threatconnect::client::ThreatConnectSource;
use ti_sidecar::source::threatconnect::config::ThreatConnectConfig;
use ti_sidecar::source::threatconnect::sweep::SweepCursor;
use ti_sidecar::source::threatq::client::ThreatQSource;
use ti_sidecar::source::threatq::config::ThreatQConfig;
use ti_sidecar::source::{FetchError, Source};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Every character class an encoder touches: a quote, slashes, a space, `+`, `=`, non-ASCII.
const SECRET: &str = "Zq7\"Se/cret\\ key+ü=42";
/// What a leak of the secret's first characters looks like.
const SECRET_HEAD: &str = "Zq7";

/// The forms a server could echo the secret in.
fn forms(secret: &str) -> Vec<(&'static str, String)> {
    let json = serde_json::to_string(secret).unwrap();
    let json = json[1..json.len() - 1].to_owned();
    let json_twice = serde_json::to_string(&json).unwrap();
    let percent = utf8_percent_encode(secret, NON_ALPHANUMERIC).to_string();
    let form: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let b64 = base64::engine::general_purpose::STANDARD;
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    vec![
        ("raw", secret.to_owned()),
        ("JSON-escaped", json.clone()),
        (
            "JSON-escaped twice",
            json_twice[1..json_twice.len() - 1].to_owned(),
        ),
        ("JSON-escaped with \\/", json.replace('/', "\\/")),
        ("percent-encoded", percent.clone()),
        ("percent-encoded, lower-case hex", lower_hex(&percent)),
        ("form-urlencoded", form),
        ("Base64", b64.encode(secret)),
        ("URL-safe Base64", b64url.encode(secret)),
    ]
}

/// `%XX` escapes with lower-case hex digits.
fn lower_hex(text: &str) -> String {
    let mut out = String::new();
    let mut hex = 0;
    for c in text.chars() {
        match (c, hex) {
            ('%', _) => {
                hex = 2;
                out.push(c);
            }
            (_, 1..) => {
                hex -= 1;
                out.push(c.to_ascii_lowercase());
            }
            _ => out.push(c),
        }
    }
    out
}

/// The echo a hostile server sends: every form, one per line.
fn echo(secret: &str) -> String {
    forms(secret)
        .iter()
        .map(|(name, form)| format!("{name}: {form}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Fails naming the form that leaked into `text` (`what` says where it was).
fn assert_masked(text: &str, secret: &str, what: &str) {
    for (name, form) in forms(secret) {
        assert!(
            !text.contains(&form),
            "the {name} secret leaked into {what}: {text}"
        );
    }
}

fn fast_retries(http: HttpClient) -> HttpClient {
    http.with_retry(RetryPolicy {
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        max_attempts: 2,
    })
}

fn threatconnect(server: &MockServer) -> ThreatConnectSource {
    let stream = serde_json::json!({
        "url": server.uri(),
        "access_id": "test-access-id",
        "secret_key": SECRET,
    });
    let mut r = FieldReader::open("s", &stream).unwrap();
    let cfg = ThreatConnectConfig::from_fields(&mut r).unwrap();
    let http = HttpClient::build(&cfg.http, None, cfg.secrets()).unwrap();
    ThreatConnectSource::new(Arc::new(cfg), fast_retries(http))
}

fn threatq(server: &MockServer) -> ThreatQSource {
    let stream = serde_json::json!({
        "host": server.uri(),
        "client_id": "elastic",
        "client_secret": SECRET,
        "data_collection_id": "someid",
        "client_auth_style": "basic",
    });
    let mut r = FieldReader::open("s", &stream).unwrap();
    let cfg = ThreatQConfig::from_fields(&mut r).unwrap();
    let http = HttpClient::build(&cfg.http, None, cfg.secrets()).unwrap();
    ThreatQSource::new(Arc::new(cfg), fast_retries(http))
}

/// The ThreatConnect fetch error when every page request gets `answer`.
async fn threatconnect_failure(answer: ResponseTemplate) -> FetchError {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(answer)
        .mount(&server)
        .await;
    let cursor = SweepCursor::starting_at("2023-11-28T08:00:00Z".parse().unwrap());
    threatconnect(&server)
        .fetch(&cursor.into())
        .await
        .unwrap_err()
}

#[tokio::test]
async fn a_secret_key_echoed_in_any_encoding_is_masked_in_errors_and_health() {
    for answer in [
        ResponseTemplate::new(400).set_body_raw(echo(SECRET), "text/plain"),
        ResponseTemplate::new(400).set_body_json(serde_json::json!({ "message": echo(SECRET) })),
        // 5xx goes through the client's retries and their log line.
        ResponseTemplate::new(503).set_body_raw(echo(SECRET), "text/plain"),
    ] {
        let err = threatconnect_failure(answer).await;
        let text = err.to_string();
        assert_masked(&text, SECRET, "the fetch error");
        assert!(text.contains("raw: [REDACTED]"), "{text}");
        assert!(text.contains("Base64: [REDACTED]"), "{text}");
        assert_masked(
            &common::health_after_three_failures(&err),
            SECRET,
            "the health message",
        );
    }
}

/// Masked before the 1 KiB cut: cutting first left the secret's first bytes at the edge.
#[tokio::test]
async fn a_secret_straddling_the_1_kib_cut_leaves_no_piece_behind() {
    let message = format!("{}{SECRET}", "x".repeat(1020));
    let err = threatconnect_failure(
        ResponseTemplate::new(400).set_body_json(serde_json::json!({ "message": message })),
    )
    .await;
    let text = err.to_string();
    assert!(!text.contains(SECRET_HEAD), "{text}");
    assert!(text.contains("more bytes]"), "still cut: {text}");
}

/// The token endpoint quotes the client secret, the form body and the `Basic` header back.
#[tokio::test]
async fn a_client_secret_echoed_by_the_token_endpoint_is_masked() {
    let server = MockServer::start().await;
    let form: String = url::form_urlencoded::byte_serialize(SECRET.as_bytes()).collect();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("elastic:{form}"));
    let basic_raw = base64::engine::general_purpose::STANDARD.encode(format!("elastic:{SECRET}"));
    Mock::given(method("POST"))
        .and(path("/api/token"))
        .respond_with(ResponseTemplate::new(401).set_body_json(serde_json::json!({
            "error": format!("invalid_client {SECRET}"),
            "error_description": format!(
                "{}\nAuthorization: Basic {basic}\nBasic {basic_raw}",
                echo(SECRET)
            ),
        })))
        .mount(&server)
        .await;
    let err = threatq(&server).fetch(&"*".to_owned()).await.unwrap_err();
    let text = err.to_string();
    assert_masked(&text, SECRET, "the token error");
    assert!(!text.contains(&basic), "the Basic pair leaked: {text}");
    assert!(!text.contains(&basic_raw), "the Basic pair leaked: {text}");
    assert!(text.contains("invalid_client [REDACTED]"), "{text}");
    assert_masked(
        &common::health_after_three_failures(&err),
        SECRET,
        "the health message",
    );
}

/// The API quotes the access token it was given (the token came from the token endpoint, so
/// it is masked from the moment it is issued).
#[tokio::test]
async fn an_access_token_echoed_by_the_api_is_masked() {
    const TOKEN: &str = "tq-access/TOKEN+0123456789=";
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": TOKEN, "token_type": "Bearer", "expires_in": 3600
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "message": format!("Bearer token not allowed here:\n{}", echo(TOKEN)),
        })))
        .mount(&server)
        .await;
    let err = threatq(&server).fetch(&"*".to_owned()).await.unwrap_err();
    let text = err.to_string();
    assert_masked(&text, TOKEN, "the API error");
    assert!(text.contains("raw: [REDACTED]"), "{text}");
}

/// The whole binary: `run --once` against a server echoing the secret key, with the request
/// tracer on. Neither stderr (every log line and the exit message) nor the trace file holds
/// any form of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_never_shows_an_echoed_secret_in_stderr_or_the_trace() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(400).set_body_raw(echo(SECRET), "text/plain"))
        .mount(&server)
        .await;
    let ws = common::Workspace::new();
    let config = ws.tc_config_at(
        &server.uri(),
        &ws.path("events.ndjson"),
        "        enable_request_tracer: true\n",
    );
    let state = ws.state_dir();
    let (ok, stderr) = {
        let (config, state) = (config.clone(), state.clone());
        tokio::task::spawn_blocking(move || common::run_once(&config, &state, SECRET))
            .await
            .unwrap()
    };
    assert!(!ok, "a 400 fails the stream: {stderr}");
    assert!(
        stderr.contains("[REDACTED]"),
        "the echo is logged, masked: {stderr}"
    );
    assert_masked(&stderr, SECRET, "stderr");

    let trace = std::fs::read_to_string(state.join("request-trace/tc--tc-indicator.ndjson"))
        .expect("the request tracer wrote its file");
    assert!(trace.contains("[REDACTED]"), "{trace}");
    assert_masked(&trace, SECRET, "the request trace");
}
