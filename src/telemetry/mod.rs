//! Logs and counters.
//!
//! Logs go to stderr as one JSON object per line with `@timestamp`, `log.level` and `message`
//! (plus the event's own fields, e.g. `unit.id`, `indicators`), the shape Elastic Agent reads
//! from a component. Observable events are small structs whose `emit()` both logs and counts, so
//! the summary, health and diagnostics read the same numbers the logs show.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::redact::Secrets;

mod events;
pub(crate) mod metrics;
pub mod server;

pub use events::{
    AttemptFailed, ExportFinished, ExportRetried, HttpRequested, HttpRetried, PageDelivered, Stage,
    TokenRefreshed,
};

/// Formats each event as one ECS-style JSON line.
struct EcsJsonFormat;

#[derive(Default)]
struct JsonVisitor(Map<String, Value>);

impl Visit for JsonVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.0.insert(field.name().to_owned(), Value::from(text));
    }
}

impl<S, N> FormatEvent<S, N> for EcsJsonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut line = Map::new();
        line.insert(
            "@timestamp".into(),
            Value::from(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        line.insert(
            "log.level".into(),
            Value::from(event.metadata().level().as_str().to_ascii_lowercase()),
        );
        // Span fields (e.g. `unit.id`, `input.id`) first, so event fields win on conflict.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    for (k, v) in &fields.0 {
                        line.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        let mut visitor = JsonVisitor::default();
        event.record(&mut visitor);
        let message = visitor.0.remove("message").unwrap_or(Value::from(""));
        line.insert("message".into(), message);
        line.insert("log.logger".into(), Value::from(event.metadata().target()));
        line.extend(visitor.0);
        let text = serde_json::to_string(&line).map_err(|_| std::fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

/// Span fields captured as JSON, so logs inside a span carry e.g. `stream.id`.
struct SpanFields(Map<String, Value>);

/// Records span attributes into the span's extensions.
struct SpanFieldsLayer;

impl<S> tracing_subscriber::Layer<S> for SpanFieldsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut visitor = JsonVisitor::default();
        attrs.record(&mut visitor);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(visitor.0));
        }
    }
}

/// Installs the JSON-lines stderr logger. `default_level` applies unless `RUST_LOG` is set.
pub fn init(default_level: &str) {
    use tracing_subscriber::prelude::*;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .event_format(EcsJsonFormat);
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(SpanFieldsLayer)
        .with(fmt)
        .try_init();
}

/// The log file of `--log-file`, once opened.
static LOG_FILE: std::sync::OnceLock<std::sync::Mutex<std::fs::File>> = std::sync::OnceLock::new();

/// Where a log line goes.
#[derive(Debug, Clone, Copy)]
enum Destination {
    /// The `--log-file`.
    File,
    /// The terminal, above the live display.
    Terminal,
}

/// One formatted log line, written where it goes when dropped.
struct LogLine(Destination, Vec<u8>);

impl std::io::Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.1.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if self.1.is_empty() {
            return;
        }
        match self.0 {
            Destination::File => {
                if let Some(Ok(mut file)) = LOG_FILE.get().map(std::sync::Mutex::lock) {
                    use std::io::Write as _;
                    let _ = file.write_all(&self.1);
                }
            }
            Destination::Terminal => {
                crate::console::print_above(String::from_utf8_lossy(&self.1).trim_end());
            }
        }
    }
}

struct To(Destination);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for To {
    type Writer = LogLine;
    fn make_writer(&'a self) -> LogLine {
        LogLine(self.0, Vec::new())
    }
}

/// Where the logs of `run` and `demo` go.
#[derive(Debug, Clone, Copy)]
pub struct LogTargets<'a> {
    /// The level (unless `RUST_LOG` is set).
    pub level: &'a str,
    /// `--log-file`: every log line, as JSON, goes there (created 0600, appended to).
    pub file: Option<&'a std::path::Path>,
    /// A live display is shown: the terminal gets warnings and errors as plain text.
    pub console: bool,
}

/// Installs the loggers for `targets`. Without a file and a display this is [`init`]: JSON lines
/// on stderr. With a file, the terminal keeps warnings and errors (JSON lines, or plain text
/// above the live display).
pub fn init_targets(targets: LogTargets<'_>) -> std::io::Result<()> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::prelude::*;
    if targets.file.is_none() && !targets.console {
        init(targets.level);
        return Ok(());
    }
    let file_layer = match targets.file {
        Some(path) => {
            let file = crate::fsutil::open_private_append_creating_dirs(path)?;
            let _ = LOG_FILE.set(std::sync::Mutex::new(file));
            let filter =
                EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(targets.level));
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(To(Destination::File))
                    .event_format(EcsJsonFormat)
                    .with_filter(filter),
            )
        }
        None => None,
    };
    let warnings = tracing_subscriber::filter::LevelFilter::WARN;
    let terminal_layer = if targets.console {
        tracing_subscriber::fmt::layer()
            .with_writer(To(Destination::Terminal))
            .without_time()
            .with_target(false)
            .compact()
            .with_filter(warnings)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .event_format(EcsJsonFormat)
            .with_filter(warnings)
            .boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(SpanFieldsLayer)
        .with(file_layer)
        .with(terminal_layer)
        .try_init();
    Ok(())
}

/// Writes `line` to the `--log-file`, if there is one; returns whether it did.
pub fn to_log_file(line: &str) -> bool {
    match LOG_FILE.get().map(std::sync::Mutex::lock) {
        Some(Ok(mut file)) => {
            use std::io::Write as _;
            let _ = writeln!(file, "{line}");
            true
        }
        _ => false,
    }
}

/// Passes on a log line of a child process (the demo's component): to the `--log-file` when
/// there is one, else to stderr (above the live display, warnings and errors only).
pub fn forward_line(line: &str) {
    if to_log_file(line) {
        return;
    }
    if crate::console::is_active() {
        let level = serde_json::from_str::<Value>(line).ok().and_then(|v| {
            v.get("log.level")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        if matches!(level.as_deref(), Some("warn" | "error")) {
            crate::console::print_above(line);
        }
        return;
    }
    eprintln!("{line}");
}

/// Installs the JSON-lines stderr logger with a per-event filter instead of a fixed level (the
/// agent's per-unit levels). `RUST_LOG`, when set, still wins.
pub fn init_with_filter<F>(filter: F)
where
    F: tracing_subscriber::layer::Filter<tracing_subscriber::Registry> + Send + Sync + 'static,
{
    use tracing_subscriber::prelude::*;
    if let Ok(env) = EnvFilter::try_from_default_env() {
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .event_format(EcsJsonFormat);
        let _ = tracing_subscriber::registry()
            .with(env)
            .with(SpanFieldsLayer)
            .with(fmt)
            .try_init();
        return;
    }
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .event_format(EcsJsonFormat)
        .with_filter(filter);
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(SpanFieldsLayer)
        .try_init();
}

/// Counters and status of one stream, shared by its poll loop, the summary, unit health and
/// diagnostics.
#[derive(Debug, Default)]
pub struct StreamCounters {
    /// Failed attempts since the last success (fetch or send); drives DEGRADED.
    pub consecutive_failures: AtomicU64,
    /// The last error, already free of secrets.
    pub last_error: std::sync::Mutex<Option<String>>,
    /// The stream stopped for good (credentials rejected, bad request): drives FAILED.
    pub fatal: std::sync::Mutex<Option<String>>,
    /// The last committed cursor, rendered for humans.
    pub cursor: std::sync::Mutex<Option<String>>,
    /// While a backfill runs: items delivered and items estimated in all.
    pub backfill_progress: std::sync::Mutex<Option<BackfillProgress>>,
    /// When the stream last caught up, and when it polls next (none with `--once`).
    pub schedule: std::sync::Mutex<Option<Caught>>,
    /// Standing warnings about the stream's settings (TLS verification off), for health.
    pub notes: std::sync::Mutex<Vec<String>>,
    /// Documents acknowledged by the sink.
    pub indicators: AtomicU64,
    /// Pages fetched and acknowledged.
    pub pages: AtomicU64,
    /// Documents that carry `error.message`.
    pub error_documents: AtomicU64,
    /// Failed fetch or send attempts (after the HTTP client's own retries).
    pub errors: AtomicU64,
    /// Of `errors`, failed fetches.
    pub fetch_failures: AtomicU64,
    /// Of `errors`, failed sends (the sink did not acknowledge).
    pub send_failures: AtomicU64,
    /// When the sweep in progress started.
    sweep_started: std::sync::Mutex<Option<std::time::Instant>>,
    /// How long the last complete sweep took, in milliseconds.
    pub last_sweep_ms: AtomicU64,
    /// Duplicates dropped by the paging logic.
    pub duplicates_dropped: AtomicU64,
    /// Delivered items stamped later than the platform's clock allows (they did not move the
    /// cursor).
    pub future_timestamps: AtomicU64,
    /// Invalid UTF-8 sequences in responses, replaced with U+FFFD.
    pub invalid_utf8: AtomicU64,
    /// The stream's secrets: masked in every error text stored here or logged through
    /// [`AttemptFailed`], whatever produced it.
    secrets: std::sync::OnceLock<Secrets>,
}

/// When a stream last caught up and when its next sweep starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Caught {
    /// The end of the last complete sweep.
    pub at: chrono::DateTime<chrono::Utc>,
    /// The start of the next one, when there is one.
    pub next_poll: Option<chrono::DateTime<chrono::Utc>>,
}

impl StreamCounters {
    /// A sweep starts now.
    pub(crate) fn sweep_started(&self) {
        if let Ok(mut s) = self.sweep_started.lock() {
            *s = Some(std::time::Instant::now());
        }
    }

    /// The stream caught up at `at`; it polls again after `interval` (none with `--once`).
    pub(crate) fn caught_up(
        &self,
        at: chrono::DateTime<chrono::Utc>,
        interval: Option<std::time::Duration>,
    ) {
        if let Some(started) = self.sweep_started.lock().ok().and_then(|mut s| s.take()) {
            let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last_sweep_ms.store(ms, Ordering::Relaxed);
        }
        let next_poll = interval
            .and_then(|i| chrono::TimeDelta::from_std(i).ok())
            .and_then(|i| at.checked_add_signed(i));
        if let Ok(mut s) = self.schedule.lock() {
            *s = Some(Caught { at, next_poll });
        }
    }

    /// Masks `secrets` in every error this stream's counters store or log (set once, when the
    /// stream is built).
    pub(crate) fn mask_with(&self, secrets: Secrets) {
        let _ = self.secrets.set(secrets);
    }

    /// `text` with the stream's secrets masked, if it has any.
    fn masked(&self, text: String) -> String {
        match self.secrets.get() {
            Some(secrets) => secrets.mask_owned(text),
            None => text,
        }
    }

    /// Records a fatal stop.
    pub(crate) fn set_fatal(&self, message: String) {
        let message = self.masked(message);
        if let Ok(mut f) = self.fatal.lock() {
            *f = Some(message);
        }
    }

    /// Logs a standing warning about stream `stream`'s settings once and keeps it for health.
    pub(crate) fn add_note(&self, stream: &str, note: &str) {
        tracing::warn!(stream.id = stream, "stream {stream}: {note}");
        if let Ok(mut notes) = self.notes.lock() {
            notes.push(note.to_owned());
        }
    }

    /// The stream's status for health and diagnostics.
    pub fn status(&self) -> StreamStatus {
        let read = |m: &std::sync::Mutex<Option<String>>| m.lock().ok().and_then(|g| g.clone());
        StreamStatus {
            notes: self.notes.lock().map(|n| n.clone()).unwrap_or_default(),
            counters: self.snapshot(),
            consecutive_failures: self.consecutive_failures.load(Ordering::Relaxed),
            last_error: read(&self.last_error),
            fatal: read(&self.fatal),
            cursor: read(&self.cursor),
            backfill_progress: self.backfill_progress.lock().ok().and_then(|p| *p),
            caught_up: self.schedule.lock().ok().and_then(|s| *s),
        }
    }

    /// A consistent-enough snapshot for reporting.
    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            indicators: self.indicators.load(Ordering::Relaxed),
            pages: self.pages.load(Ordering::Relaxed),
            error_documents: self.error_documents.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            duplicates_dropped: self.duplicates_dropped.load(Ordering::Relaxed),
            future_timestamps: self.future_timestamps.load(Ordering::Relaxed),
            invalid_utf8: self.invalid_utf8.load(Ordering::Relaxed),
        }
    }
}

/// A stream's status: counters, cursor, last error. Never holds a secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StreamStatus {
    /// The counters.
    #[serde(flatten)]
    pub counters: CounterSnapshot,
    /// Failed attempts since the last success.
    pub consecutive_failures: u64,
    /// The last error.
    pub last_error: Option<String>,
    /// Why the stream stopped for good, if it did.
    pub fatal: Option<String>,
    /// The last committed cursor.
    pub cursor: Option<String>,
    /// While a backfill runs: items done out of items estimated.
    pub backfill_progress: Option<BackfillProgress>,
    /// When the stream last caught up and when it polls next.
    pub caught_up: Option<Caught>,
    /// Standing warnings about the stream's settings.
    pub notes: Vec<String>,
}

impl StreamStatus {
    /// Where the stream stands, in words that change only when it does (a sweep ends, a backfill
    /// page lands), for the unit's health message: `caught up at 2026-12-05T10:00:00Z; next poll
    /// at 2026-12-05T11:00:00Z`, `backfilling: 40 % (estimated)`, or `first sweep in progress`.
    /// A relative "12 s ago" would change the message every second and flood the check-ins.
    pub(crate) fn standing(&self) -> String {
        const FORMAT: &str = "%Y-%m-%dT%H:%M:%SZ";
        self.sweeping(|caught| match caught.next_poll {
            Some(next) => format!(
                "caught up at {}; next poll at {}",
                caught.at.format(FORMAT),
                next.format(FORMAT)
            ),
            None => format!("caught up at {}", caught.at.format(FORMAT)),
        })
    }

    /// How far behind the stream is, for humans: `caught up 12 s ago; next poll in 58 m`,
    /// `backfilling: 40 % (estimated)`, or `first sweep in progress`.
    pub(crate) fn lag(&self, now: chrono::DateTime<chrono::Utc>) -> String {
        self.sweeping(|caught| {
            let ago = roughly(now.signed_duration_since(caught.at));
            match caught.next_poll {
                Some(next) if next > now => format!(
                    "caught up {ago} ago; next poll in {}",
                    roughly(next.signed_duration_since(now))
                ),
                Some(_) => format!("caught up {ago} ago; polling now"),
                None => format!("caught up {ago} ago"),
            }
        })
    }

    /// The backfill or first sweep in progress, or else `caught` rendered.
    fn sweeping(&self, caught: impl FnOnce(Caught) -> String) -> String {
        if let Some(p) = self.backfill_progress {
            return format!("backfilling: {} % (estimated)", p.percent());
        }
        match self.caught_up {
            Some(c) => caught(c),
            None => "first sweep in progress".to_owned(),
        }
    }
}

/// A span of time in its largest whole unit: `12 s`, `58 m`, `3 h`, `2 d`.
fn roughly(span: chrono::TimeDelta) -> String {
    let secs = span.num_seconds().max(0);
    match secs {
        0..=119 => format!("{secs} s"),
        120..=7_199 => format!("{} m", secs / 60),
        7_200..=172_799 => format!("{} h", secs / 3_600),
        _ => format!("{} d", secs / 86_400),
    }
}

/// A backfill's progress: items delivered out of the estimate made when it was planned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BackfillProgress {
    /// Items the windows delivered.
    pub done: u64,
    /// Items estimated in all (from `count` probes; changes during the backfill move it).
    pub estimated: u64,
}

impl BackfillProgress {
    /// Completion in percent of the estimate, 0–100 (0 while nothing is estimated).
    pub(crate) fn percent(&self) -> u64 {
        if self.estimated == 0 {
            return 0;
        }
        (self.done.saturating_mul(100) / self.estimated).min(100)
    }

    /// Completion as a share of the estimate, 0–1 (0 while nothing is estimated).
    #[allow(clippy::cast_precision_loss)]
    pub fn ratio(&self) -> f64 {
        if self.estimated == 0 {
            return 0.0;
        }
        (self.done as f64 / self.estimated as f64).min(1.0)
    }
}

/// Plain copy of [`StreamCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CounterSnapshot {
    /// Documents acknowledged by the sink.
    pub indicators: u64,
    /// Pages fetched and acknowledged.
    pub pages: u64,
    /// Documents that carry `error.message`.
    pub error_documents: u64,
    /// Failed fetch or send attempts.
    pub errors: u64,
    /// Duplicates dropped by paging.
    pub duplicates_dropped: u64,
    /// Delivered items stamped in the future (they did not move the cursor).
    pub future_timestamps: u64,
    /// Invalid UTF-8 sequences in responses, replaced with U+FFFD.
    pub invalid_utf8: u64,
}

/// The process's resident memory now and at its peak, in bytes (`VmRSS`, `VmHWM`), where the
/// system tells it (Linux); `None` elsewhere.
pub(crate) fn process_memory() -> Option<ProcessMemory> {
    process_memory_of("self")
}

/// [`process_memory`] of process `pid` (a number, or `self`).
pub fn process_memory_of(pid: &str) -> Option<ProcessMemory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        let value = line[key.len()..].trim().trim_end_matches("kB").trim();
        value.parse::<u64>().ok()?.checked_mul(1024)
    };
    Some(ProcessMemory {
        rss_bytes: kib("VmRSS:")?,
        peak_rss_bytes: kib("VmHWM:")?,
    })
}

/// See [`process_memory`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProcessMemory {
    /// Resident now.
    pub rss_bytes: u64,
    /// The most resident at any time.
    pub peak_rss_bytes: u64,
}
