//! What `/metrics` and `/stats` serve (see [`super::server`]).
//!
//! Two sources, both written only by the events of [`super::events`]:
//! * per stream, the [`StreamCounters`] that health and diagnostics read too. Streams are
//!   registered once built ([`register_stream`]); a scrape reads their counters as they stand.
//! * process-wide, [`ProcessMetrics`]: HTTP requests by platform and status class with their
//!   latency, retries, token refreshes, and OTLP exports with their latency, retries and
//!   rejected records.
//!
//! Labels are bounded: platform, input and stream ids (from the configuration), stage, status
//! class and export outcome. Never a message, a URL or a value from a response.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use super::StreamCounters;

/// Which stream a series belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, EncodeLabelSet)]
pub(crate) struct StreamLabels {
    /// The platform's short name (`threatconnect`).
    pub platform: String,
    /// The input (standalone) or unit (agent) id.
    pub input: String,
    /// The stream id.
    pub stream: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PlatformLabels {
    platform: &'static str,
}

/// How an OTLP export ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ExportOutcome {
    /// Accepted in full.
    Ok,
    /// Answered OK with rejected records (`partial_success`).
    Rejected,
    /// Failed (a gRPC error).
    Failed,
}

impl ExportOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
        }
    }
}

type Histograms = Family<PlatformLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 5 ms … ~41 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// Counters of the whole process.
#[derive(Debug)]
pub struct ProcessMetrics {
    http_requests: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    http_retries: Mutex<BTreeMap<&'static str, u64>>,
    http_duration: Histograms,
    token_refreshes: Mutex<BTreeMap<&'static str, u64>>,
    exports: Mutex<BTreeMap<ExportOutcome, u64>>,
    export_retries: AtomicU64,
    rejected_records: AtomicU64,
    export_duration: Histogram,
}

/// The status class label of an HTTP answer (`2xx`, …), or `error` when none came.
pub(crate) fn status_class(status: Option<u16>) -> &'static str {
    match status {
        Some(100..=199) => "1xx",
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        Some(_) => "other",
        None => "error",
    }
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    if let Ok(mut m) = map.lock() {
        *m.entry(key).or_default() += 1;
    }
}

fn read<K: Ord + Clone>(map: &Mutex<BTreeMap<K, u64>>) -> Vec<(K, u64)> {
    map.lock()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
        .unwrap_or_default()
}

impl ProcessMetrics {
    fn new() -> Self {
        Self {
            http_requests: Mutex::default(),
            http_retries: Mutex::default(),
            http_duration: Family::new_with_constructor(latency_histogram),
            token_refreshes: Mutex::default(),
            exports: Mutex::default(),
            export_retries: AtomicU64::new(0),
            rejected_records: AtomicU64::new(0),
            export_duration: latency_histogram(),
        }
    }

    pub(super) fn http_requested(&self, platform: &'static str, status: Option<u16>, d: Duration) {
        bump(&self.http_requests, (platform, status_class(status)));
        self.http_duration
            .get_or_create(&PlatformLabels { platform })
            .observe(d.as_secs_f64());
    }

    pub(super) fn http_retried(&self, platform: &'static str) {
        bump(&self.http_retries, platform);
    }

    pub(super) fn token_refreshed(&self, platform: &'static str) {
        bump(&self.token_refreshes, platform);
    }

    pub(super) fn export_finished(&self, outcome: ExportOutcome, rejected: u64, d: Duration) {
        bump(&self.exports, outcome);
        self.rejected_records.fetch_add(rejected, Ordering::Relaxed);
        self.export_duration.observe(d.as_secs_f64());
    }

    pub(super) fn export_retried(&self) {
        self.export_retries.fetch_add(1, Ordering::Relaxed);
    }

    /// The process-wide counters as JSON (the `process` part of `/stats`).
    fn stats(&self) -> Value {
        let mut http: BTreeMap<&str, Value> = BTreeMap::new();
        for ((platform, class), n) in read(&self.http_requests) {
            http.entry(platform).or_insert_with(|| json!({}))["requests"][class] = json!(n);
        }
        for (platform, n) in read(&self.http_retries) {
            http.entry(platform).or_insert_with(|| json!({}))["retries"] = json!(n);
        }
        for (platform, n) in read(&self.token_refreshes) {
            http.entry(platform).or_insert_with(|| json!({}))["token_refreshes"] = json!(n);
        }
        let exports: BTreeMap<&str, u64> = read(&self.exports)
            .into_iter()
            .map(|(o, n)| (o.as_str(), n))
            .collect();
        json!({
            "http": http,
            "otlp": {
                "exports": exports,
                "retries": self.export_retries.load(Ordering::Relaxed),
                "rejected_records": self.rejected_records.load(Ordering::Relaxed),
            },
        })
    }
}

/// The process's metrics.
pub(crate) fn process() -> &'static ProcessMetrics {
    static PROCESS: LazyLock<ProcessMetrics> = LazyLock::new(ProcessMetrics::new);
    &PROCESS
}

/// The registered streams.
type Registered = Mutex<Vec<(StreamLabels, Weak<StreamCounters>)>>;

/// Streams built in this process, newest registration per label set.
fn streams() -> &'static Registered {
    static STREAMS: LazyLock<Registered> = LazyLock::new(Mutex::default);
    &STREAMS
}

/// Makes a built stream's counters visible to `/metrics` and `/stats`. A stream rebuilt under
/// the same labels (an agent unit reconfigured) replaces the old registration, so a series
/// never appears twice; a stream whose counters are dropped disappears.
pub(crate) fn register_stream(labels: StreamLabels, counters: &Arc<StreamCounters>) {
    if let Ok(mut all) = streams().lock() {
        all.retain(|(l, c)| *l != labels && c.strong_count() > 0);
        all.push((labels, Arc::downgrade(counters)));
        all.sort_by(|a, b| a.0.cmp(&b.0));
    }
}

/// The registered streams that still exist.
fn live_streams() -> Vec<(StreamLabels, Arc<StreamCounters>)> {
    streams()
        .lock()
        .map(|all| {
            all.iter()
                .filter_map(|(l, c)| c.upgrade().map(|c| (l.clone(), c)))
                .collect()
        })
        .unwrap_or_default()
}

/// Every registered stream's status, in label order (the console's lines).
pub(crate) fn stream_statuses() -> Vec<(StreamLabels, super::StreamStatus)> {
    live_streams()
        .into_iter()
        .map(|(labels, c)| (labels, c.status()))
        .collect()
}

/// Reads the streams' and the process's counters on each scrape.
#[derive(Debug)]
struct Scrape;

/// One per-stream series: name, help, whether it is a counter, and its value.
type StreamSeries = (&'static str, &'static str, bool, fn(&StreamCounters) -> f64);

#[allow(clippy::cast_precision_loss)]
const STREAM_SERIES: &[StreamSeries] = &[
    (
        "indicators",
        "Documents acknowledged by the sink.",
        true,
        |c| c.indicators.load(Ordering::Relaxed) as f64,
    ),
    (
        "pages",
        "Pages fetched, acknowledged and committed.",
        true,
        |c| c.pages.load(Ordering::Relaxed) as f64,
    ),
    (
        "error_documents",
        "Documents that carry error.message.",
        true,
        |c| c.error_documents.load(Ordering::Relaxed) as f64,
    ),
    (
        "duplicates_dropped",
        "Objects dropped by paging as already delivered.",
        true,
        |c| c.duplicates_dropped.load(Ordering::Relaxed) as f64,
    ),
    ("fetch_failures", "Failed fetch attempts.", true, |c| {
        c.fetch_failures.load(Ordering::Relaxed) as f64
    }),
    (
        "send_failures",
        "Failed attempts to hand a batch to the sink.",
        true,
        |c| c.send_failures.load(Ordering::Relaxed) as f64,
    ),
    (
        "consecutive_failures",
        "Failed attempts since the last success.",
        false,
        |c| c.consecutive_failures.load(Ordering::Relaxed) as f64,
    ),
    (
        "sweep_duration_seconds",
        "Duration of the last complete sweep.",
        false,
        |c| c.last_sweep_ms.load(Ordering::Relaxed) as f64 / 1000.0,
    ),
];

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let streams = live_streams();
        for (name, help, counter, value) in STREAM_SERIES {
            let kind = if *counter {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for (labels, c) in &streams {
                let encoder = family.encode_family(labels)?;
                if *counter {
                    ConstCounter::new(value(c)).encode(encoder)?;
                } else {
                    ConstGauge::new(value(c)).encode(encoder)?;
                }
            }
        }
        let now = chrono::Utc::now();
        let statuses: Vec<_> = streams.iter().map(|(l, c)| (l, c.status())).collect();
        let mut family = encoder.encode_descriptor(
            "cursor_lag_seconds",
            "Seconds since the stream last caught up (absent before its first complete sweep).",
            None,
            MetricType::Gauge,
        )?;
        for (labels, status) in &statuses {
            if let Some(caught) = status.caught_up {
                #[allow(clippy::cast_precision_loss)]
                let lag = (now - caught.at).num_milliseconds().max(0) as f64 / 1000.0;
                ConstGauge::new(lag).encode(family.encode_family(*labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "backfill_progress_ratio",
            "Estimated share of a running backfill that is delivered (0 to 1).",
            None,
            MetricType::Gauge,
        )?;
        for (labels, status) in &statuses {
            if let Some(p) = status.backfill_progress {
                ConstGauge::new(p.ratio()).encode(family.encode_family(*labels)?)?;
            }
        }
        encode_process(&mut encoder, process())
    }
}

#[derive(Debug, EncodeLabelSet)]
struct HttpLabels {
    platform: &'static str,
    class: &'static str,
}

#[derive(Debug, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

fn encode_process(
    encoder: &mut DescriptorEncoder<'_>,
    p: &ProcessMetrics,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        "http_requests",
        "HTTP requests to the platforms, by status class (error: no answer).",
        None,
        MetricType::Counter,
    )?;
    for ((platform, class), n) in read(&p.http_requests) {
        ConstCounter::new(n).encode(family.encode_family(&HttpLabels { platform, class })?)?;
    }
    let mut family = encoder.encode_descriptor(
        "http_retries",
        "HTTP requests retried after a transient failure (429, 5xx, transport).",
        None,
        MetricType::Counter,
    )?;
    for (platform, n) in read(&p.http_retries) {
        ConstCounter::new(n).encode(family.encode_family(&PlatformLabels { platform })?)?;
    }
    let mut family = encoder.encode_descriptor(
        "token_refreshes",
        "OAuth2 access tokens issued.",
        None,
        MetricType::Counter,
    )?;
    for (platform, n) in read(&p.token_refreshes) {
        ConstCounter::new(n).encode(family.encode_family(&PlatformLabels { platform })?)?;
    }
    let mut family = encoder.encode_descriptor(
        "otlp_exports",
        "OTLP Export calls, by outcome.",
        None,
        MetricType::Counter,
    )?;
    for (outcome, n) in read(&p.exports) {
        let labels = OutcomeLabels {
            outcome: outcome.as_str(),
        };
        ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
    }
    for (name, help, value) in [
        (
            "otlp_export_retries",
            "OTLP exports retried after a transient failure.",
            &p.export_retries,
        ),
        (
            "otlp_rejected_records",
            "Log records the OTLP receiver rejected.",
            &p.rejected_records,
        ),
    ] {
        let family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        ConstCounter::new(value.load(Ordering::Relaxed)).encode(family)?;
    }
    Ok(())
}

fn registry() -> &'static Registry {
    static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
        let mut registry = Registry::with_prefix("ti_sidecar");
        let p = process();
        registry.register(
            "http_request_duration_seconds",
            "Latency of HTTP requests to the platforms, to the end of the body.",
            p.http_duration.clone(),
        );
        registry.register(
            "otlp_export_duration_seconds",
            "Latency of OTLP Export calls.",
            p.export_duration.clone(),
        );
        registry.register_collector(Box::new(Scrape));
        registry
    });
    &REGISTRY
}

/// The Prometheus text exposition (OpenMetrics) of every series.
pub fn render() -> String {
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry());
    text
}

/// `/stats`: every stream's status (the same counters) and the process-wide counters.
pub fn stats() -> Value {
    let now = chrono::Utc::now();
    let streams: Vec<Value> = live_streams()
        .into_iter()
        .map(|(labels, c)| {
            let status = c.status();
            let mut v = serde_json::to_value(&status).unwrap_or(Value::Null);
            if let Value::Object(fields) = &mut v {
                fields.insert("platform".into(), Value::from(labels.platform));
                fields.insert("input".into(), Value::from(labels.input));
                fields.insert("stream".into(), Value::from(labels.stream));
                fields.insert(
                    "fetch_failures".into(),
                    json!(c.fetch_failures.load(Ordering::Relaxed)),
                );
                fields.insert(
                    "send_failures".into(),
                    json!(c.send_failures.load(Ordering::Relaxed)),
                );
                fields.insert("lag".into(), Value::from(status.lag(now)));
            }
            v
        })
        .collect();
    json!({ "streams": streams, "process": process().stats() })
}

/// The registered streams that stopped for good (`/healthz` then answers 503).
pub fn failed_streams() -> Vec<String> {
    live_streams()
        .into_iter()
        .filter(|(_, c)| c.status().fatal.is_some())
        .map(|(l, _)| l.stream)
        .collect()
}
