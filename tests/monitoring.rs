//! The monitoring endpoint (`monitoring.http`): a real `ti-sidecar run` against the simulator,
//! scraped over loopback, its Prometheus text parsed by a Prometheus parser.

mod common;

use common::*;
use serde_json::Value;

use ti_sidecar::sim::threatconnect::start;

/// The simulator's key (see `sim_args`).
const SECRET: &str = "Test$$Secret/Key+=";

/// The address the endpoint logged it listens on.
fn listening_address(logs: &[Value]) -> String {
    logs.iter()
        .filter_map(|l| l["message"].as_str())
        .find_map(|m| m.strip_prefix("monitoring endpoint listening on http://"))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the endpoint logs its address")
        .to_owned()
}

/// Scrapes `/metrics`: the text, and the text parsed by a Prometheus parser.
async fn scrape(client: &reqwest::Client, base: &str) -> (String, prometheus_parse::Scrape) {
    let body = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    (body, parsed)
}

fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

/// Runs `ti-sidecar run` against a simulator of `indicators` with the endpoint on a free
/// loopback port, using `secret`, until it logs `wanted`; returns the process, the endpoint's
/// base URL and the workspace (kept alive).
async fn run_monitored(
    indicators: usize,
    secret: &'static str,
    wanted: &'static str,
) -> (
    std::process::Child,
    String,
    Workspace,
    ti_sidecar::sim::threatconnect::SimHandle,
) {
    let sim = start(sim_args(indicators)).await.unwrap();
    let ws = Workspace::new();
    let events = ws.path("events.ndjson");
    let config = ws.tc_config(&sim, secret, &events, "        batch_size: 200\n");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("monitoring:\n  http:\n    enabled: true\n    host: 127.0.0.1\n    port: 0\n");
    std::fs::write(&config, text).unwrap();
    let mut child = spawn_run(&config, &ws.state_dir(), secret, false);
    let (child, logs) = tokio::task::spawn_blocking(move || {
        let logs = wait_for_log(&mut child, wanted);
        (child, logs)
    })
    .await
    .unwrap();
    let base = format!("http://{}", listening_address(&logs));
    (child, base, ws, sim)
}

async fn stop(child: std::process::Child) -> std::process::ExitStatus {
    sigterm(&child);
    tokio::task::spawn_blocking(move || {
        let mut child = child;
        child.wait().unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_stats_and_healthz_are_served_and_count_what_was_delivered() {
    let (child, base, _ws, _sim) = run_monitored(700, SECRET, "caught up").await;
    let client = reqwest::Client::new();

    let (body, scrape) = scrape(&client, &base).await;
    let stream = [
        ("platform", "threatconnect"),
        ("input", "tc"),
        ("stream", "tc-indicator"),
    ];
    assert_eq!(
        sample(&scrape, "ti_sidecar_indicators_total", &stream),
        Some(700.0),
        "{body}"
    );
    assert!(sample(&scrape, "ti_sidecar_pages_total", &stream).is_some_and(|p| p >= 4.0));
    assert_eq!(
        sample(&scrape, "ti_sidecar_fetch_failures_total", &stream),
        Some(0.0)
    );
    assert_eq!(
        sample(&scrape, "ti_sidecar_consecutive_failures", &stream),
        Some(0.0)
    );
    assert!(
        sample(&scrape, "ti_sidecar_cursor_lag_seconds", &stream).is_some_and(|l| l >= 0.0),
        "caught up, so the lag is known"
    );
    assert!(
        sample(
            &scrape,
            "ti_sidecar_http_requests_total",
            &[("platform", "threatconnect"), ("class", "2xx")]
        )
        .is_some_and(|n| n >= 4.0),
        "{body}"
    );
    assert!(
        body.contains("ti_sidecar_http_request_duration_seconds_bucket{"),
        "latency histogram: {body}"
    );
    assert!(!body.contains(SECRET));
    // Every label is bounded: nothing but these names appears.
    for s in &scrape.samples {
        for key in s.labels.keys() {
            assert!(
                ["platform", "input", "stream", "class", "outcome", "le"].contains(&key.as_str()),
                "unexpected label {key} on {}",
                s.metric
            );
        }
    }

    let stats: Value = client
        .get(format!("{base}/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tc = &stats["streams"][0];
    assert_eq!(tc["stream"], "tc-indicator");
    assert_eq!(tc["indicators"], 700, "{stats}");
    assert!(
        tc["lag"]
            .as_str()
            .is_some_and(|l| l.starts_with("caught up")),
        "{stats}"
    );
    assert!(stats["process"]["http"]["threatconnect"]["requests"]["2xx"].as_u64() >= Some(4));

    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        client
            .get(format!("{base}/nope"))
            .send()
            .await
            .unwrap()
            .status()
            == 404
    );

    assert!(stop(child).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_fails_once_a_stream_stopped_for_good() {
    // A wrong key: the platform answers 401, which stops the stream for good. Regression: the
    // failure used to be logged before it was recorded, so `/healthz` could still say ok.
    let (child, base, _ws, _sim) = run_monitored(10, "wrong-key", "fetch failed").await;
    let client = reqwest::Client::new();
    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 503);
    let body: Value = health.json().await.unwrap();
    assert_eq!(body["failed_streams"][0], "tc-indicator");
    let (body, scrape) = scrape(&client, &base).await;
    let stream = [("stream", "tc-indicator")];
    assert_eq!(
        sample(&scrape, "ti_sidecar_fetch_failures_total", &stream),
        Some(1.0)
    );
    assert!(
        sample(
            &scrape,
            "ti_sidecar_http_requests_total",
            &[("class", "4xx")]
        )
        .is_some(),
        "{body}"
    );
    assert!(!body.contains("wrong-key"));
    stop(child).await;
}

#[test]
fn a_remote_bind_needs_allow_remote() {
    let ws = Workspace::new();
    let events = ws.path("events.ndjson");
    let config = ws.tc_config_at("https://tc.example", &events, "");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("monitoring:\n  http:\n    enabled: true\n    host: 0.0.0.0\n");
    std::fs::write(&config, &text).unwrap();
    let problems = ti_sidecar::policy::load_file_with_env(&config, &|_| Some("x".into()))
        .expect_err("refused");
    let shown = problems.to_string();
    assert!(shown.contains("monitoring.http.host"), "{shown}");
    assert!(shown.contains("allow_remote"), "{shown}");

    std::fs::write(&config, format!("{text}    allow_remote: true\n")).unwrap();
    let loaded =
        ti_sidecar::policy::load_file_with_env(&config, &|_| Some("x".into())).expect("allowed");
    let m = loaded.monitoring.expect("enabled");
    assert_eq!(m.host.to_string(), "0.0.0.0");
    assert_eq!(m.port, 5066, "the Beats default port");

    std::fs::write(
        &config,
        format!("{text}    allow_remote: true\n    port: 70000\n"),
    )
    .unwrap();
    let problems = ti_sidecar::policy::load_file_with_env(&config, &|_| Some("x".into()))
        .expect_err("port out of range");
    assert!(
        problems.to_string().contains("monitoring.http.port"),
        "{problems}"
    );
}
