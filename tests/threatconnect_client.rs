//! Contract tests of the ThreatConnect client against wiremock: the exact request (fields,
//! paging, sorting, TQL), the HMAC headers recomputed per attempt, and the retry rules.

mod common;

use std::sync::Arc;
use std::time::Duration;
use ti_sidecar::error::Classify as _;

use common::mocks::serve_gets;
use secrecy::SecretString;
use ti_sidecar::config::{HttpConfig, IocExpiration, SslConfig};
use ti_sidecar::http::{ErrorKind, HttpClient, RetryPolicy};
use ti_sidecar::source::Source;
use ti_sidecar::source::threatconnect::auth;
use ti_sidecar::source::threatconnect::backfill::TcCursor;
use ti_sidecar::source::threatconnect::client::ThreatConnectSource;
use ti_sidecar::source::threatconnect::config::ThreatConnectConfig;
use ti_sidecar::source::threatconnect::sweep::SweepCursor;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const SECRET: &str = "aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789abcd";

fn config(url: &str) -> ThreatConnectConfig {
    ThreatConnectConfig {
        url: url.parse().unwrap(),
        access_id: "12345678901234567890".to_owned(),
        secret_key: SecretString::from(SECRET),
        http: HttpConfig {
            timeout: Duration::from_secs(5),
            proxy_url: None,
            ssl: SslConfig::default(),
            enable_request_tracer: false,
            max_response_size: ti_sidecar::config::size::default_max_response_size(),
        },
        interval: Duration::from_secs(3600),
        initial_interval: Duration::from_secs(168 * 3600),
        batch_size: 2000,
        backfill_concurrency: 1,
        tql: Some("typeName in (\"Address\")".to_owned()),
        include_attributes: true,
        include_group_assoc: true,
        include_group_assoc_attribs: false,
        include_indicator_assoc: false,
        ioc_expiration: Some(IocExpiration::parse("90d").unwrap()),
        tags: vec!["forwarded".into()],
        preserve_original_event: false,
    }
}

fn source(server: &MockServer) -> ThreatConnectSource {
    source_retrying(
        server,
        RetryPolicy {
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_secs(2),
            max_attempts: 4,
        },
    )
}

fn source_retrying(server: &MockServer, retry: RetryPolicy) -> ThreatConnectSource {
    let cfg = config(&server.uri());
    let http = HttpClient::build(&cfg.http, None, ti_sidecar::redact::Secrets::default())
        .unwrap()
        .with_retry(retry);
    ThreatConnectSource::new(Arc::new(cfg), http)
}

/// A source on `cfg` with default retries, and a clone of its HTTP client to look into.
fn source_with(cfg: ThreatConnectConfig) -> (ThreatConnectSource, HttpClient) {
    let http = HttpClient::build(&cfg.http, None, ti_sidecar::redact::Secrets::default()).unwrap();
    (ThreatConnectSource::new(Arc::new(cfg), http.clone()), http)
}

/// A page of two indicators.
fn two_items(next: bool) -> ResponseTemplate {
    page(
        r#"{"id":1,"lastModified":"2023-12-01T00:00:01Z"},{"id":2,"lastModified":"2023-12-01T00:00:02Z"}"#,
        next,
    )
}

fn cursor() -> TcCursor {
    SweepCursor::starting_at("2023-11-28T08:00:00Z".parse().unwrap()).into()
}

/// Checks a received request's HMAC exactly as ThreatConnect does: over the raw target.
fn assert_signed(req: &Request) {
    let ts: i64 = req
        .headers
        .get("Timestamp")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let target = auth::path_and_query(&req.url);
    let expected = auth::authorization(
        "12345678901234567890",
        SECRET.as_bytes(),
        &target,
        "GET",
        ts,
    );
    assert_eq!(
        req.headers.get("Authorization").unwrap().to_str().unwrap(),
        expected
    );
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 60);
}

fn page(items: &str, next: bool) -> ResponseTemplate {
    let next = if next {
        r#","next":"http://x/api/v3/indicators?resultStart=1""#
    } else {
        ""
    };
    ResponseTemplate::new(200).set_body_raw(
        format!(r#"{{"data":[{items}],"status":"Success"{next}}}"#),
        "application/json",
    )
}

#[tokio::test]
async fn request_is_exactly_what_elastic_sends_and_is_signed() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v3/indicators"))
        .respond_with(page(r#"{"id":9007199254918489,"lastModified":"2023-12-01T08:26:48Z","summary":"1.2.3.4","type":"Address","ip":"1.2.3.4"}"#, false))
        .expect(1)
        .mount(&server)
        .await;
    let mut src = source(&server);
    let page = src.fetch(&cursor()).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert!(!page.more);
    assert_eq!(
        page.cursor.sweep.watermark.to_rfc3339(),
        "2023-12-01T08:26:48+00:00"
    );
    assert!(page.cursor.sweep.seen.contains(&9_007_199_254_918_489));

    let reqs = server.received_requests().await.unwrap();
    let req = &reqs[0];
    assert_signed(req);
    assert_eq!(
        req.url.query().unwrap(),
        "fields=associatedGroups&fields=attributes&fields=securityLabels&fields=sightings&fields=tags&fields=threatAssess\
         &resultLimit=2000&resultStart=0&sorting=lastModified+asc\
         &tql=lastModified+GEQ+%222023-11-28T08%3A00%3A00Z%22+AND+typeName+in+%28%22Address%22%29"
    );
}

#[tokio::test]
async fn server_errors_are_retried_and_resigned() {
    let server = MockServer::start().await;
    serve_gets(
        &server,
        ResponseTemplate::new(503).set_body_string(r#"{"status":"Failure","message":"busy"}"#),
        Some(2),
    )
    .await;
    serve_gets(&server, page("", false), None).await;
    let mut src = source(&server);
    src.fetch(&cursor()).await.unwrap();
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 3);
    reqs.iter().for_each(assert_signed);
}

/// On the wire: the client reads a 429's `Retry-After` and waits that instead of its backoff.
/// Here the backoff is a minute and `Retry-After` is 0, so only a client that honours the
/// header answers within the bound. (How long a `Retry-After` of one second is waited, and its
/// cap, are unit tests of the retry loop on the paused clock, in `src/http`.)
#[tokio::test]
async fn rate_limit_honours_retry_after() {
    let server = MockServer::start().await;
    serve_gets(
        &server,
        ResponseTemplate::new(429).insert_header("Retry-After", "0"),
        Some(1),
    )
    .await;
    serve_gets(&server, page("", false), None).await;
    let mut src = source_retrying(
        &server,
        RetryPolicy {
            min_delay: Duration::from_secs(60),
            max_delay: Duration::from_secs(60),
            max_attempts: 2,
        },
    );
    tokio::time::timeout(Duration::from_secs(30), src.fetch(&cursor()))
        .await
        .expect("Retry-After: 0 replaced the minute of backoff")
        .unwrap();
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn unauthorized_is_not_retried_and_fails_the_input() {
    let server = MockServer::start().await;
    serve_gets(
        &server,
        ResponseTemplate::new(401)
            .set_body_string(r#"{"status":"Failure","message":"Access Denied"}"#),
        None,
    )
    .await;
    let mut src = source(&server);
    let err = src.fetch(&cursor()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Fail);
    assert!(err.to_string().contains("Access Denied"), "{err}");
    assert!(!err.to_string().contains(SECRET));
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn persistent_5xx_gives_a_retryable_error_after_the_attempts() {
    let server = MockServer::start().await;
    serve_gets(
        &server,
        ResponseTemplate::new(500).set_body_string(r#"{"status":"Failure","message":"boom"}"#),
        None,
    )
    .await;
    let mut src = source(&server);
    let err = src.fetch(&cursor()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Retry);
    assert_eq!(server.received_requests().await.unwrap().len(), 4);
}

/// Regression: a server that omits `next` must not end the sweep after one full page.
#[tokio::test]
async fn a_full_page_without_next_still_means_more() {
    let server = MockServer::start().await;
    serve_gets(&server, two_items(false), None).await;
    let mut cfg = config(&server.uri());
    cfg.batch_size = 2;
    let (mut src, _) = source_with(cfg);
    let page = src.fetch(&cursor()).await.unwrap();
    assert_eq!(page.items.len(), 2);
    assert!(page.more, "a full page asks for the next one");
}

/// A backfill page is tens of MB: its buffer is reused by the next page, not handed back to
/// the allocator and faulted in again; and nothing is kept once the sweep has caught up.
#[tokio::test]
async fn a_spent_page_buffer_serves_the_next_page_and_is_let_go_when_the_sweep_ends() {
    let server = MockServer::start().await;
    serve_gets(&server, two_items(true), None).await;
    let (mut src, probe) = source_with(config(&server.uri()));
    let first = src.fetch(&cursor()).await.unwrap();
    assert_eq!(
        probe.kept_page_buffers(),
        0,
        "the page's items still use it"
    );
    let next = first.cursor.clone();
    drop(first);
    assert_eq!(
        probe.kept_page_buffers(),
        1,
        "given back once the page is done with"
    );
    let second = src.fetch(&next).await.unwrap();
    assert_eq!(probe.kept_page_buffers(), 0, "the next page took it");
    drop(second);
    assert_eq!(probe.kept_page_buffers(), 1);
    src.end_sweep();
    assert_eq!(
        probe.kept_page_buffers(),
        0,
        "a resting stream keeps no page buffer"
    );
}

#[tokio::test]
async fn one_invalid_utf8_byte_costs_one_character_not_the_page() {
    let server = MockServer::start().await;
    let mut body = br#"{"data":[{"id":7,"summary":"1.2.3.4","description":"bad "#.to_vec();
    body.extend_from_slice(&[0xc3, 0x28]);
    body.extend_from_slice(
        br#" byte","lastModified":"2023-11-28T09:00:00Z"}],"status":"Success"}"#,
    );
    Mock::given(method("GET"))
        .and(path("/api/v3/indicators"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/json"))
        .mount(&server)
        .await;
    let mut src = source(&server);
    let page = src.fetch(&cursor()).await.expect("the page is decoded");
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.invalid_utf8, 1);
    let item: serde_json::Value = serde_json::from_str(page.items.get(0).unwrap()).unwrap();
    assert_eq!(item["description"], "bad \u{fffd}( byte");
    assert_eq!(
        page.cursor.sweep.watermark,
        "2023-11-28T09:00:00Z"
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap(),
        "the watermark moves past the page"
    );
}

/// Regression: a watermark committed from a future-stamped indicator (before they were kept out
/// of the watermark) made every sweep ask for `lastModified GEQ 2999-…` forever. Such a stored
/// cursor now starts again from the look-back; a future item in a page is delivered and counted,
/// but the watermark stays at the newest believable timestamp.
#[tokio::test]
async fn a_future_watermark_restarts_from_the_look_back_and_future_items_do_not_move_it() {
    let server = MockServer::start().await;
    let yesterday = (chrono::Utc::now() - chrono::TimeDelta::days(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    serve_gets(&server, page(
            &format!(
                r#"{{"id":1,"lastModified":"{yesterday}"}},{{"id":2,"lastModified":"2999-01-01T00:00:00Z"}}"#
            ),
            false,
        ), None).await;
    let mut src = source(&server);
    let poisoned = SweepCursor::starting_at("2999-01-01T00:00:00Z".parse().unwrap());
    let page = src.fetch(&poisoned.into()).await.unwrap();
    let reqs = server.received_requests().await.unwrap();
    let query = reqs[0].url.query().unwrap_or_default().to_owned();
    assert!(!query.contains("2999"), "asked from the look-back: {query}");
    assert_eq!(page.items.len(), 2, "both delivered");
    assert_eq!(page.future_timestamps, 1);
    assert_eq!(
        page.cursor
            .sweep
            .watermark
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string(),
        yesterday,
        "the future item did not become the watermark"
    );
}

/// The fetch error when every page request gets `answer`.
async fn page_failure(answer: ResponseTemplate) -> ti_sidecar::source::FetchError {
    let server = MockServer::start().await;
    serve_gets(&server, answer, None).await;
    source(&server).fetch(&cursor()).await.unwrap_err()
}

/// ~1.1 KiB: the 1 KiB of server text, its cut marker and our own words around it.
const BOUNDED: usize = 1126;

/// The attack: a 20 MB JSON `message` became three 20 MB log lines and a 20 MB unit message on
/// CheckinV2. Now the error text, and so the logs and health, hold at most 1 KiB of it.
#[tokio::test]
async fn a_20_mb_error_message_is_cut_to_1_kib_in_errors_and_health() {
    let message = "é".repeat(10 * 1024 * 1024);
    let err = page_failure(
        ResponseTemplate::new(400).set_body_json(serde_json::json!({ "message": message })),
    )
    .await;
    let text = err.to_string();
    assert!(text.len() <= BOUNDED, "{} bytes", text.len());
    assert!(text.contains("more bytes]"), "the cut is marked");
    let health = common::health_after_three_failures(&err);
    assert!(health.len() <= BOUNDED, "{} bytes", health.len());
}

/// The same through a 200: a 20 MB `status` string is cut too.
#[tokio::test]
async fn a_20_mb_status_in_a_200_is_cut_to_1_kib() {
    let status = "x".repeat(20 * 1024 * 1024);
    let err = page_failure(
        ResponseTemplate::new(200)
            .set_body_json(serde_json::json!({ "status": status, "data": [] })),
    )
    .await;
    let text = err.to_string();
    assert!(text.len() <= BOUNDED, "{} bytes", text.len());
    assert!(common::health_after_three_failures(&err).len() <= BOUNDED);
}

/// serde's decode errors quote the value they choke on; only kind and position are kept.
#[tokio::test]
async fn decode_errors_never_quote_the_response() {
    let err = page_failure(ResponseTemplate::new(200).set_body_raw(
        r#"{"data": "server-text-1234567890", "status": "Success"}"#,
        "application/json",
    ))
    .await;
    assert_eq!(
        err.to_string(),
        "invalid response from threatconnect: cannot decode indicators response: \
         unexpected JSON type or value at line 1 column 33"
    );
}
