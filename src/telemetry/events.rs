//! One struct per observable event. Each `emit()` logs the event and counts it where health,
//! diagnostics, `/stats` and `/metrics` read it: a stream's [`StreamCounters`], or the
//! process-wide [`metrics`]. Labels are enums or `&'static str` names, never
//! free text.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::metrics::{self, ExportOutcome};
use super::{BackfillProgress, StreamCounters};

/// The poll loop's stage an attempt failed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Fetching a page from the platform.
    Fetch,
    /// Handing a batch to the sink (and making it durable).
    Send,
}

impl Stage {
    /// The stage's name in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fetch => "fetch",
            Self::Send => "send",
        }
    }
}

/// A page was mapped, acknowledged by the sink, and its cursor committed.
pub struct PageDelivered<'a> {
    /// Stream id.
    pub stream: &'a str,
    /// Platform name (`threatconnect`).
    pub platform: &'static str,
    /// Documents in the page.
    pub indicators: usize,
    /// Of which carry `error.message`.
    pub error_documents: usize,
    /// Duplicates dropped while paging.
    pub duplicates_dropped: usize,
    /// Delivered items stamped in the future (they did not move the cursor).
    pub future_timestamps: usize,
    /// Invalid UTF-8 sequences replaced with U+FFFD in the page's responses.
    pub invalid_utf8: usize,
    /// Fetch + map + send + commit time.
    pub elapsed: Duration,
    /// The committed cursor, rendered for humans.
    pub cursor: &'a str,
    /// A backfill's progress at the committed cursor: items delivered, items estimated.
    pub backfill_progress: Option<BackfillProgress>,
}

impl PageDelivered<'_> {
    /// Logs the event and adds it to `counters`.
    pub fn emit(&self, counters: &StreamCounters) {
        for (counter, n) in [
            (&counters.indicators, self.indicators),
            (&counters.pages, 1),
            (&counters.error_documents, self.error_documents),
            (&counters.duplicates_dropped, self.duplicates_dropped),
            (&counters.future_timestamps, self.future_timestamps),
            (&counters.invalid_utf8, self.invalid_utf8),
        ] {
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
        if self.invalid_utf8 > 0 {
            tracing::warn!(
                stream.id = self.stream,
                platform = self.platform,
                invalid_utf8 = self.invalid_utf8 as u64,
                "the response held invalid UTF-8; each invalid sequence was replaced with U+FFFD"
            );
        }
        // A delivered page is a success: health and diagnostics read these.
        counters.consecutive_failures.store(0, Ordering::Relaxed);
        if let Ok(mut c) = counters.cursor.lock() {
            *c = Some(self.cursor.to_owned());
        }
        if let Ok(mut p) = counters.backfill_progress.lock() {
            *p = self.backfill_progress;
        }
        tracing::info!(
            stream.id = self.stream,
            platform = self.platform,
            indicators = self.indicators as u64,
            error_documents = self.error_documents as u64,
            duplicates_dropped = self.duplicates_dropped as u64,
            future_timestamps = self.future_timestamps as u64,
            elapsed_ms = self.elapsed.as_millis() as u64,
            cursor = self.cursor,
            "page delivered"
        );
    }
}

/// A fetch or send attempt failed; the loop will retry (or stop if the error is fatal).
pub struct AttemptFailed<'a> {
    /// Stream id.
    pub stream: &'a str,
    /// Where it failed.
    pub stage: Stage,
    /// The error (masked with the stream's secrets before it is logged or stored).
    pub error: &'a dyn std::fmt::Display,
    /// Delay before the next attempt, if any.
    pub retry_in: Option<Duration>,
}

impl AttemptFailed<'_> {
    /// Logs the failure and counts it.
    pub fn emit(&self, counters: &StreamCounters) {
        counters.errors.fetch_add(1, Ordering::Relaxed);
        match self.stage {
            Stage::Fetch => &counters.fetch_failures,
            Stage::Send => &counters.send_failures,
        }
        .fetch_add(1, Ordering::Relaxed);
        counters
            .consecutive_failures
            .fetch_add(1, Ordering::Relaxed);
        let error = counters.masked(self.error.to_string());
        match self.retry_in {
            Some(d) => tracing::warn!(
                stream.id = self.stream,
                stage = self.stage.as_str(),
                retry_in_ms = d.as_millis() as u64,
                "{} failed, will retry: {error}",
                self.stage.as_str(),
            ),
            None => tracing::error!(
                stream.id = self.stream,
                stage = self.stage.as_str(),
                "{} failed: {error}",
                self.stage.as_str(),
            ),
        }
        if let Ok(mut e) = counters.last_error.lock() {
            *e = Some(format!("{}: {error}", self.stage.as_str()));
        }
    }
}

/// One HTTP request to a platform got an answer (or failed to).
pub struct HttpRequested {
    /// The platform's short name.
    pub platform: &'static str,
    /// The status, or `None` when no answer came (transport error, body too large).
    pub status: Option<u16>,
    /// From sending to the end of the body.
    pub elapsed: Duration,
}

impl HttpRequested {
    /// Counts the request by status class and records its latency.
    pub fn emit(&self) {
        metrics::process().http_requested(self.platform, self.status, self.elapsed);
    }
}

/// The HTTP client retries a request after a transient failure (429, 5xx, transport).
pub struct HttpRetried<'a> {
    /// The platform's short name.
    pub platform: &'static str,
    /// Delay before the next attempt.
    pub retry_in: Duration,
    /// The failure, already masked with the stream's secrets.
    pub error: &'a str,
}

impl HttpRetried<'_> {
    /// Logs (at debug: the poll loop reports the attempt that finally fails) and counts.
    pub fn emit(&self) {
        metrics::process().http_retried(self.platform);
        tracing::debug!(
            platform = self.platform,
            retry_in_ms = u64::try_from(self.retry_in.as_millis()).unwrap_or(u64::MAX),
            "request failed, retrying: {}",
            self.error
        );
    }
}

/// An OAuth2 access token was issued.
pub struct TokenRefreshed {
    /// The platform's short name.
    pub platform: &'static str,
    /// How long the token is valid, as the server said.
    pub expires_in: Option<Duration>,
}

impl TokenRefreshed {
    /// Logs and counts.
    pub fn emit(&self) {
        metrics::process().token_refreshed(self.platform);
        tracing::debug!(
            platform = self.platform,
            expires_in_s = self.expires_in.map(|d| d.as_secs()),
            "access token issued"
        );
    }
}

/// One OTLP `Export` call finished.
pub struct ExportFinished {
    /// How it ended.
    pub outcome: ExportOutcome,
    /// Of which the receiver rejected (`partial_success`).
    pub rejected: u64,
    /// Time of the call.
    pub elapsed: Duration,
}

impl ExportFinished {
    /// Counts the export, its latency and its rejected records.
    pub fn emit(&self) {
        metrics::process().export_finished(self.outcome, self.rejected, self.elapsed);
    }
}

/// An OTLP export is retried after a transient failure.
pub struct ExportRetried<'a> {
    /// The receiver (without credentials).
    pub endpoint: &'a str,
    /// The gRPC status code's description.
    pub code: &'a str,
    /// Delay before the next attempt.
    pub retry_in: Duration,
    /// The receiver's message.
    pub message: &'a str,
}

impl ExportRetried<'_> {
    /// Logs and counts.
    pub fn emit(&self) {
        metrics::process().export_retried();
        tracing::warn!(
            endpoint = self.endpoint,
            code = self.code,
            retry_in_ms = u64::try_from(self.retry_in.as_millis()).unwrap_or(u64::MAX),
            "OTLP export failed, retrying: {}",
            self.message
        );
    }
}
