//! Contract tests of the ThreatQ client against wiremock: OAuth2 client credentials (both
//! credential styles, caching, refresh, one re-authentication on 401) and cursorMark paging.

#[path = "common/mocks.rs"]
mod mocks;

use std::sync::Arc;
use std::time::Duration;
use ti_sidecar::error::Classify as _;
use ti_sidecar::source::registry::StreamSettings as _;

use mocks::serve_gets;
use ti_sidecar::config::fields::FieldReader;
use ti_sidecar::http::{ErrorKind, HttpClient, RetryPolicy};
use ti_sidecar::source::Source;
use ti_sidecar::source::threatq::client::ThreatQSource;
use ti_sidecar::source::threatq::config::ThreatQConfig;
use wiremock::matchers::{body_string_contains, header, header_exists, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SECRET: &str = "tq-secret-value";

fn source(server: &MockServer, style: &str) -> ThreatQSource {
    let stream = serde_json::json!({
        "host": server.uri(),
        "client_id": "elastic",
        "client_secret": SECRET,
        "data_collection_id": "someid",
        "client_auth_style": style,
        "page_size": 2,
    });
    let mut r = FieldReader::open("s", &stream).unwrap();
    let cfg = ThreatQConfig::from_fields(&mut r).unwrap();
    let http = HttpClient::build(&cfg.http, None, ti_sidecar::redact::Secrets::default())
        .unwrap()
        .with_retry(RetryPolicy {
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
            max_attempts: 3,
        });
    ThreatQSource::new(Arc::new(cfg), http)
}

fn token(expires_in: u64) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(serde_json::json!({
        "access_token": "tok-abc", "token_type": "Bearer", "expires_in": expires_in, "refresh_token": "r"
    }))
}

fn page(data: &str, next: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(
        format!(r#"{{"total":3,"data":{data},"nextCursorMark":"{next}","limit":2}}"#),
        "application/json",
    )
}

/// The token endpoint's requests.
fn token_endpoint() -> wiremock::MockBuilder {
    Mock::given(method("POST")).and(path("/api/token"))
}

/// A server whose token endpoint issues tokens that live an hour.
async fn with_tokens() -> MockServer {
    let server = MockServer::start().await;
    serve_tokens(&server, 3600).await;
    server
}

/// Mounts a token endpoint issuing tokens that live `expires_in` seconds.
async fn serve_tokens(server: &MockServer, expires_in: u64) {
    token_endpoint()
        .respond_with(token(expires_in))
        .mount(server)
        .await;
}

async fn token_requests(server: &MockServer) -> usize {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/api/token")
        .count()
}

#[tokio::test]
async fn basic_auth_token_then_cursor_mark_paging() {
    let server = MockServer::start().await;
    // "elastic:tq-secret-value"
    token_endpoint()
        .and(header(
            "authorization",
            "Basic ZWxhc3RpYzp0cS1zZWNyZXQtdmFsdWU=",
        ))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string_contains("grant_type=client_credentials"))
        .respond_with(token(3600))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/indicators/query/hash/someid"))
        .and(query_param("cursorMark", "*"))
        .and(query_param("sort", "updated_at"))
        .and(query_param("limit", "2"))
        .and(query_param(
            "fields",
            "*,sources,attributes,attributes.name,attributes.value",
        ))
        .and(header("authorization", "Bearer tok-abc"))
        .and(header("accept", "application/json"))
        .respond_with(page(r#"[{"id":1},{"id":2}]"#, "MARK1"))
        .mount(&server)
        .await;
    mount_pages(
        &server,
        &[
            ("MARK1", r#"[{"id":3}]"#, "MARK2"),
            ("MARK2", "{}", "MARK3"),
        ],
    )
    .await;

    let mut src = source(&server, "basic");
    let p1 = src.fetch(&src.initial_cursor()).await.unwrap();
    assert_eq!(
        (p1.items.len(), p1.cursor.as_str(), p1.more),
        (2, "MARK1", true)
    );
    let p2 = src.fetch(&p1.cursor).await.unwrap();
    assert_eq!(
        (p2.items.len(), p2.cursor.as_str(), p2.more),
        (1, "MARK2", true)
    );
    let p3 = src.fetch(&p2.cursor).await.unwrap();
    // `data: {}` ends the sweep; the new mark is kept verbatim for the next interval.
    assert_eq!(
        (p3.items.len(), p3.cursor.as_str(), p3.more),
        (0, "MARK3", false)
    );
    assert_eq!(token_requests(&server).await, 1, "the token is cached");
}

#[tokio::test]
async fn body_credentials_style_sends_the_secret_as_form_fields() {
    let server = MockServer::start().await;
    token_endpoint()
        .and(body_string_contains("client_id=elastic"))
        .and(body_string_contains("client_secret=tq-secret-value"))
        .respond_with(token(3600))
        .mount(&server)
        .await;
    serve_gets(&server, page("{}", "M"), None).await;
    let mut src = source(&server, "body");
    src.fetch(&"*".to_owned()).await.unwrap();
    let reqs = server.received_requests().await.unwrap();
    assert!(
        reqs[0].headers.get("authorization").is_none(),
        "no Basic header in body style"
    );
}

#[tokio::test]
async fn auto_style_falls_back_to_body_credentials_once() {
    let server = MockServer::start().await;
    token_endpoint()
        .and(header_exists("authorization"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(serde_json::json!({"error":"invalid_client"})),
        )
        .mount(&server)
        .await;
    token_endpoint()
        .and(body_string_contains("client_secret="))
        .respond_with(token(3600))
        .mount(&server)
        .await;
    serve_gets(&server, page("{}", "M"), None).await;
    let mut src = source(&server, "auto");
    src.fetch(&"*".to_owned()).await.unwrap();
    src.fetch(&"*".to_owned()).await.unwrap();
    assert_eq!(
        token_requests(&server).await,
        2,
        "Basic refused, body accepted, then cached"
    );
}

#[tokio::test]
async fn token_is_refreshed_before_it_expires() {
    let server = MockServer::start().await;
    serve_tokens(&server, 0).await;
    serve_gets(&server, page("{}", "M"), None).await;
    let mut src = source(&server, "basic");
    src.fetch(&"*".to_owned()).await.unwrap();
    src.fetch(&"*".to_owned()).await.unwrap();
    assert_eq!(
        token_requests(&server).await,
        2,
        "an expired token is never used"
    );
}

#[tokio::test]
async fn a_401_gets_exactly_one_reauthentication_and_retry() {
    let server = with_tokens().await;
    serve_gets(&server, ResponseTemplate::new(401), Some(1)).await;
    serve_gets(&server, page(r#"[{"id":1}]"#, "M1"), None).await;
    let mut src = source(&server, "basic");
    let p = src.fetch(&"*".to_owned()).await.unwrap();
    assert_eq!(p.items.len(), 1);
    assert_eq!(token_requests(&server).await, 2);
}

/// Regression: the token was revoked (401), we re-authenticated (200) and retried, the retry
/// stalled, and the new short-lived token had expired by then (401 "expired token"): the stream
/// stopped for good with "credentials rejected". A 401 on a token the endpoint just issued is
/// transient: the fetch fails retryably, and the next attempt gets a new token and goes on.
#[tokio::test]
async fn a_401_on_a_freshly_issued_token_is_retried_with_a_new_token_not_fatal() {
    let server = with_tokens().await;
    serve_gets(
        &server,
        ResponseTemplate::new(401).set_body_json(serde_json::json!({"message": "expired token"})),
        Some(2),
    )
    .await;
    serve_gets(&server, page(r#"[{"id":1}]"#, "NEXT"), None).await;
    let mut src = source(&server, "basic");
    let err = src.fetch(&"*".to_owned()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Retry, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("refused a freshly issued access token") && text.contains("expired token"),
        "{text}"
    );
    assert!(!text.contains("credentials rejected"), "{text}");
    assert_eq!(
        token_requests(&server).await,
        2,
        "one re-authentication per fetch"
    );
    let api_calls = server.received_requests().await.unwrap().len() - 2;
    assert_eq!(api_calls, 2, "one retry inside the fetch, no more");
    // The poll loop's next attempt: a new token, and the page.
    let page = src.fetch(&"*".to_owned()).await.expect("a new token works");
    assert_eq!(page.items.len(), 1);
    assert_eq!(
        token_requests(&server).await,
        3,
        "the refused token is never reused"
    );
}

#[tokio::test]
async fn refused_credentials_are_a_clear_non_secret_failure() {
    let server = MockServer::start().await;
    token_endpoint()
        .respond_with(ResponseTemplate::new(401).set_body_json(
            serde_json::json!({"error":"invalid_client","error_description":"Client authentication failed"}),
        ))
        .mount(&server)
        .await;
    let mut src = source(&server, "auto");
    let err = src.fetch(&"*".to_owned()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Fail);
    let text = err.to_string();
    assert!(
        text.contains("invalid_client") && text.contains("Client authentication failed"),
        "{text}"
    );
    assert!(!text.contains(SECRET));
}

#[tokio::test]
async fn the_same_mark_coming_back_ends_the_sweep() {
    let server = with_tokens().await;
    serve_gets(&server, page(r#"[{"id":1}]"#, "SAME"), None).await;
    let mut src = source(&server, "basic");
    let p = src.fetch(&"SAME".to_owned()).await.unwrap();
    assert!(
        !p.more,
        "Solr contract: the same mark means no more results"
    );
}

#[tokio::test]
async fn one_invalid_utf8_byte_costs_one_character_not_the_page() {
    let server = with_tokens().await;
    let mut body = br#"{"data":[{"id":1,"value":"evil"#.to_vec();
    body.push(0xff);
    body.extend_from_slice(br#".example","updated_at":"2024-01-01 00:00:00"},{"id":2,"value":"ok.example"}],"nextCursorMark":"m2"}"#);
    Mock::given(method("GET"))
        .and(path("/api/indicators/query/hash/someid"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/json"))
        .mount(&server)
        .await;
    let mut src = source(&server, "basic");
    let page = src
        .fetch(&"*".to_owned())
        .await
        .expect("the page is decoded");
    assert_eq!(page.items.len(), 2, "no item is lost");
    assert_eq!(page.invalid_utf8, 1);
    let first: serde_json::Value = serde_json::from_str(page.items.get(0).unwrap()).unwrap();
    assert_eq!(first["value"], "evil\u{fffd}.example");
    assert_eq!(page.cursor, "m2", "the sweep moves on");
}

/// The attack: a token endpoint answering 3xx with a `Location` on another origin. reqwest's
/// default policy re-sent the form body (`client_secret=...`) there on 307/308, even over http.
/// Now the exchange follows no redirect: the other server hears nothing, in every credential
/// style, and the error names only the target's origin.
async fn token_exchange_refuses_a_cross_origin(status: u16) {
    for style in ["body", "auto", "basic"] {
        let server = MockServer::start().await;
        let elsewhere = MockServer::start().await;
        token_endpoint()
            .respond_with(ResponseTemplate::new(status).insert_header(
                "location",
                format!("{}/collect?leak=1", elsewhere.uri()).as_str(),
            ))
            .mount(&server)
            .await;
        Mock::given(wiremock::matchers::any())
            .respond_with(token(3600))
            .mount(&elsewhere)
            .await;

        let mut src = source(&server, style);
        let err = src.fetch(&"*".to_owned()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Fail, "{style} {status}: {err}");
        let text = err.to_string();
        let target = format!("redirect ({status}) to {} refused", elsewhere.uri());
        assert!(text.contains(&target), "{style} {status}: {text}");
        assert!(
            !text.contains("collect") && !text.contains("leak"),
            "{text}"
        );
        assert!(
            elsewhere.received_requests().await.unwrap().is_empty(),
            "{style} {status}: the other origin received the credentials"
        );
        assert_eq!(
            token_requests(&server).await,
            1,
            "{style} {status}: a redirect is not a refusal, auto does not try again"
        );
    }
}

#[tokio::test]
async fn token_exchange_does_not_follow_a_cross_origin_307() {
    token_exchange_refuses_a_cross_origin(307).await;
}

#[tokio::test]
async fn token_exchange_does_not_follow_a_cross_origin_308() {
    token_exchange_refuses_a_cross_origin(308).await;
}

#[tokio::test]
async fn token_exchange_does_not_follow_a_cross_origin_302() {
    token_exchange_refuses_a_cross_origin(302).await;
}

#[tokio::test]
async fn token_exchange_does_not_follow_even_a_same_origin_redirect() {
    let server = MockServer::start().await;
    token_endpoint()
        .respond_with(ResponseTemplate::new(307).insert_header("location", "/api/token2"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/token2"))
        .respond_with(token(3600))
        .mount(&server)
        .await;
    let mut src = source(&server, "body");
    let err = src.fetch(&"*".to_owned()).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("carries credentials and follows no redirect"),
        "{err}"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

/// An API page redirecting to another origin: the bearer token must not follow it.
#[tokio::test]
async fn api_page_does_not_follow_a_cross_origin_redirect() {
    for status in [302, 307, 308] {
        let server = MockServer::start().await;
        let elsewhere = MockServer::start().await;
        serve_tokens(&server, 3600).await;
        serve_gets(
            &server,
            ResponseTemplate::new(status)
                .insert_header("location", format!("{}/page?x=1", elsewhere.uri()).as_str()),
            None,
        )
        .await;
        Mock::given(wiremock::matchers::any())
            .respond_with(page(r#"[{"id":1}]"#, "M"))
            .mount(&elsewhere)
            .await;
        let mut src = source(&server, "basic");
        let err = src.fetch(&"*".to_owned()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Fail, "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!(
                "redirect ({status}) to {} refused",
                elsewhere.uri()
            )) && text.contains("same origin"),
            "{text}"
        );
        assert!(elsewhere.received_requests().await.unwrap().is_empty());
        let pages = server.received_requests().await.unwrap().len() - 1;
        assert_eq!(pages, 1, "a refused redirect is not retried");
    }
}

#[tokio::test]
async fn api_page_follows_a_redirect_within_its_origin() {
    let server = with_tokens().await;
    Mock::given(method("GET"))
        .and(path("/api/indicators/query/hash/someid"))
        .respond_with(ResponseTemplate::new(301).insert_header("location", "/moved"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/moved"))
        .and(header("authorization", "Bearer tok-abc"))
        .respond_with(page(r#"[{"id":1}]"#, "M"))
        .mount(&server)
        .await;
    let mut src = source(&server, "basic");
    assert_eq!(src.fetch(&"*".to_owned()).await.unwrap().items.len(), 1);
}

/// Mounts one GET answer per `(cursorMark asked for, data, nextCursorMark)`.
async fn mount_pages(server: &MockServer, pages: &[(&str, &str, &str)]) {
    for (asked, data, next) in pages {
        Mock::given(method("GET"))
            .and(query_param("cursorMark", *asked))
            .respond_with(page(data, next))
            .mount(server)
            .await;
    }
}

/// Regression: a 100 kB `nextCursorMark` was committed, and every later fetch failed, across
/// restarts. Through the whole pipeline (poll loop, NDJSON sink, state store): the page after
/// it fails with an error naming the field and its length (never echoing it), and the stored
/// cursor stays the last good mark.
#[tokio::test]
async fn oversized_next_cursor_mark_is_refused_and_never_committed() {
    use ti_sidecar::runner::{self, RunError, RunOptions};
    use ti_sidecar::state::StateStore;
    let server = with_tokens().await;
    let huge = "A".repeat(100_000);
    mount_pages(
        &server,
        &[
            ("*", r#"[{"id":1},{"id":2}]"#, "MARK1"),
            ("MARK1", r#"[{"id":3}]"#, &huge),
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    let yaml = format!(
        "outputs:\n  default: {{type: ndjson, path: {events:?}}}\ninputs:\n  - id: tq\n    type: ti_threatq\n    streams:\n      - id: tq-threat\n        host: {host}\n        client_id: elastic\n        client_secret: {SECRET}\n        data_collection_id: someid\n        page_size: 2\n",
        events = events.display().to_string(),
        host = server.uri(),
    );
    let config = ti_sidecar::policy::load_str(&yaml, &|_| None).unwrap();
    let options = RunOptions {
        state_dir: dir.path().join("state"),
        once: true,
        retry: Some(RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            max_attempts: 1,
        }),
        poll_retry_delay: Some(Duration::from_millis(1)),
    };
    let err = runner::run(
        &config,
        &options,
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RunError::Streams(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("nextCursorMark") && text.contains("100000 bytes"),
        "{text}"
    );
    assert!(
        text.len() < 1024,
        "the mark is not echoed: {} bytes",
        text.len()
    );
    let store = StateStore::open(&options.state_dir).unwrap();
    assert_eq!(
        store.load::<String>("tq/tq-threat").unwrap().as_deref(),
        Some("MARK1"),
        "the stored cursor is the last good mark"
    );
    assert_eq!(
        std::fs::read_to_string(&events).unwrap().lines().count(),
        2,
        "the first page was delivered, the refused one was not"
    );
}

#[tokio::test]
async fn a_control_character_in_next_cursor_mark_is_refused() {
    let server = with_tokens().await;
    serve_gets(&server, page(r#"[{"id":1}]"#, r"M\u0000ARK"), None).await;
    let mut src = source(&server, "basic");
    let err = src.fetch(&"*".to_owned()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Retry);
    let text = err.to_string();
    assert!(
        text.contains("nextCursorMark") && text.contains("at byte 1"),
        "{text}"
    );
}

/// A mark committed before marks were checked: the stream fails with a way out instead of
/// failing every request forever.
#[tokio::test]
async fn a_stored_oversized_cursor_mark_fails_the_stream_naming_the_reset_command() {
    let server = with_tokens().await;
    let mut src = source(&server, "basic");
    let err = src.fetch(&"B".repeat(100_000)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Fail, "retrying cannot help");
    let text = err.to_string();
    assert!(
        text.contains("state reset") && text.contains("100000 bytes"),
        "{text}"
    );
    assert!(text.len() < 1024);
    assert!(
        server.received_requests().await.unwrap().is_empty(),
        "nothing sent"
    );
}

/// Regression: `expires_in: 18446744073709551615` panicked (`Instant + Duration` overflow),
/// killing the stream. The lifetime is clamped (24 h) and the token is used.
#[tokio::test]
async fn huge_expires_in_is_clamped_instead_of_panicking() {
    let server = MockServer::start().await;
    token_endpoint()
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"access_token":"tok-abc","token_type":"Bearer","expires_in":18446744073709551615}"#,
            "application/json",
        ))
        .mount(&server)
        .await;
    mount_pages(&server, &[("*", r#"[{"id":1}]"#, "M1"), ("M1", "{}", "M1")]).await;
    let mut src = source(&server, "basic");
    let p = src.fetch(&"*".to_owned()).await.unwrap();
    assert_eq!(p.items.len(), 1);
    src.fetch(&"M1".to_owned()).await.unwrap();
    assert_eq!(
        token_requests(&server).await,
        1,
        "the clamped token is cached"
    );
    assert_eq!(
        ti_sidecar::source::threatq::client::token_lifetime(Some(Duration::MAX)),
        ti_sidecar::source::threatq::client::MAX_TOKEN_LIFETIME
    );
}

/// The fetch error when the token endpoint answers `answer`.
async fn token_failure(answer: ResponseTemplate) -> ti_sidecar::source::FetchError {
    let server = MockServer::start().await;
    token_endpoint().respond_with(answer).mount(&server).await;
    source(&server, "basic")
        .fetch(&"*".to_owned())
        .await
        .unwrap_err()
}

/// OAuth2 error fields are server text like any other: cut to 1 KiB each.
#[tokio::test]
async fn a_huge_oauth2_error_description_is_cut_to_1_kib() {
    let err = token_failure(ResponseTemplate::new(401).set_body_json(serde_json::json!({
        "error": "e".repeat(300 * 1024),
        "error_description": "d".repeat(600 * 1024),
    })))
    .await;
    assert_eq!(err.kind(), ErrorKind::Fail);
    let text = err.to_string();
    assert!(text.len() <= 2 * 1024 + 200, "{} bytes", text.len());
    assert_eq!(text.matches("more bytes]").count(), 2, "{text}");
}

/// The attack: `{"access_token":123456789}` made the parse error print
/// ``invalid type: integer `123456789` `` (the token itself). Only the field and the kind of
/// problem are reported now.
#[tokio::test]
async fn a_numeric_access_token_is_never_printed_in_the_parse_error() {
    let err = token_failure(ResponseTemplate::new(200).set_body_raw(
        r#"{"access_token":123456789,"token_type":"Bearer","expires_in":3600}"#,
        "application/json",
    ))
    .await;
    let text = err.to_string();
    assert!(!text.contains("123456789"), "{text}");
    assert_eq!(
        text,
        "invalid response from threatq: token response: field access_token: \
         unexpected JSON type or value at line 1 column 25"
    );
}
