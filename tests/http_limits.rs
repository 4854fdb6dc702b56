//! What a server sends is bounded before it is trusted: page bodies by `max_response_size`,
//! token and error bodies by fixed 1 MiB caps.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use ti_sidecar::error::Classify as _;
use ti_sidecar::source::registry::StreamSettings as _;

use ti_sidecar::config::fields::FieldReader;
use ti_sidecar::config::size::MIB;
use ti_sidecar::config::{HttpConfig, SslConfig};
use ti_sidecar::http::{ErrorKind, HttpClient, HttpError, RetryPolicy};
use ti_sidecar::source::Source;
use ti_sidecar::source::threatq::client::ThreatQSource;
use ti_sidecar::source::threatq::config::ThreatQConfig;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn client(max_response_size: u64, attempts: usize) -> HttpClient {
    let cfg = HttpConfig {
        timeout: Duration::from_secs(30),
        proxy_url: None,
        ssl: SslConfig::default(),
        enable_request_tracer: false,
        max_response_size,
    };
    HttpClient::build(&cfg, None, ti_sidecar::redact::Secrets::default())
        .unwrap()
        .with_retry(RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
            max_attempts: attempts,
        })
}

async fn get(client: &HttpClient, url: &str) -> Result<Vec<u8>, HttpError> {
    client
        .send(|c| {
            c.get(url)
                .build()
                .map_err(|e| HttpError::Transport(e.to_string()))
        })
        .await
        .map(|r| r.body)
}

/// The attack: a server streaming without end. The whole body used to be read into memory
/// (2 GiB drove RSS past 3 GB); now the request fails once `max_response_size` is passed, and
/// is not hot-retried by the client (the same page would come back as large).
#[tokio::test]
async fn endless_page_body_fails_at_max_response_size() {
    let (url, served) = common::endless_body_server(200, usize::MAX, "").await;
    let err = get(&client(MIB, 3), &url).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "response body exceeds max_response_size (1 MiB)"
    );
    assert_eq!(err.kind(), ErrorKind::Retry, "the poll loop retries later");
    assert_eq!(
        served.load(Ordering::SeqCst),
        1,
        "not retried by the client"
    );
}

/// A `Content-Length` over the limit is refused before a byte of the body is read: this server
/// announces 4 GiB and then sends nothing, so reading would only end at the 30 s timeout.
#[tokio::test]
async fn announced_oversized_content_length_is_refused_before_reading() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = tcp.read(&mut buf).await;
        tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4294967296\r\n\r\n")
            .await
            .unwrap();
        // Hold the connection open, sending nothing more.
        let _ = tcp.read(&mut buf).await;
    });
    let started = std::time::Instant::now();
    let err = get(&client(8 * MIB, 1), &url).await.unwrap_err();
    assert!(matches!(err, HttpError::TooLarge { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(25), "did not wait");
}

/// A non-2xx body is only ever a source of a bounded message: it is cut at 1 MiB and the
/// answer keeps its meaning (a 500 is still a retryable server error).
#[tokio::test]
async fn endless_error_body_is_cut_and_still_classified() {
    let (url, served) = common::endless_body_server(500, usize::MAX, "").await;
    let err = get(&client(8 * MIB, 2), &url).await.unwrap_err();
    assert!(
        matches!(err, HttpError::Server { status: 500, .. }),
        "{err}"
    );
    assert!(
        err.to_string().len() < 1200,
        "{} bytes",
        err.to_string().len()
    );
    assert_eq!(
        served.load(Ordering::SeqCst),
        2,
        "5xx are retried as before"
    );
}

/// The token endpoint streaming without end: capped at 1 MiB whatever `max_response_size` is.
#[tokio::test]
async fn endless_token_response_fails_at_the_token_limit() {
    let (url, served) = common::endless_body_server(200, usize::MAX, "").await;
    let stream = serde_json::json!({
        "host": url,
        "client_id": "elastic",
        "client_secret": "tq-secret-value",
        "data_collection_id": "someid",
        "max_response_size": "1GiB",
    });
    let mut r = FieldReader::open("s", &stream).unwrap();
    let cfg = ThreatQConfig::from_fields(&mut r).unwrap();
    let http = HttpClient::build(&cfg.http, None, ti_sidecar::redact::Secrets::default()).unwrap();
    let mut src = ThreatQSource::new(Arc::new(cfg), http);
    let err = src.fetch(&"*".to_owned()).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("response body exceeds the token response limit (1 MiB)"),
        "{err}"
    );
    assert_eq!(served.load(Ordering::SeqCst), 1);
}
