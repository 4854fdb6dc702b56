//! Standalone mode (`ti-sidecar run`): every stream of a validated configuration, each in its
//! own poll loop, into the configured outputs, with cursors in the state directory.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::config::{Config, SourceConfig, StreamConfig};
use crate::http::{HttpBuildError, HttpClient, RetryPolicy};
use crate::poll::{Outcome, PollError, Poller, Schedule};
use crate::sink::{AnySink, Sink, SinkError};
use crate::source::Source;
use crate::source::threatconnect::client::ThreatConnectSource;
use crate::source::threatq::client::ThreatQSource;
use crate::state::{StateError, StateStore, cursor_key};
use crate::telemetry::{CounterSnapshot, StreamCounters};

/// Why `run` could not start or did not finish cleanly.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The state directory could not be used.
    #[error(transparent)]
    State(#[from] StateError),
    /// An output could not be opened.
    #[error("output {name:?}: {source}")]
    Output {
        /// The output's name.
        name: String,
        /// Why.
        source: SinkError,
    },
    /// An output type this mode cannot write yet.
    #[error("output {name:?}: type {kind} is not supported by `run` yet (use ndjson)")]
    UnsupportedOutput {
        /// The output's name.
        name: String,
        /// Its type.
        kind: &'static str,
    },
    /// A stream's HTTP client could not be built (`ssl`, `proxy_url`).
    #[error("inputs[{input}].streams[{stream}]: {source}")]
    Http {
        /// Input id.
        input: String,
        /// Stream id.
        stream: String,
        /// Why.
        source: HttpBuildError,
    },
    /// One or more streams stopped with an error.
    #[error("{} stream(s) failed: {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Streams(Vec<PollError>),
}

/// Knobs of a standalone run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where cursors (and request traces) live.
    pub state_dir: PathBuf,
    /// Stop each stream once it has caught up.
    pub once: bool,
    /// Override of the HTTP retry schedule (tests use short delays).
    pub retry: Option<RetryPolicy>,
    /// Override of the poll loop's first retry delay (tests use short delays).
    pub poll_retry_delay: Option<Duration>,
}

/// What a run did, summed over every stream.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    /// Counters summed over streams.
    #[serde(flatten)]
    pub totals: CounterSnapshot,
    /// Streams run.
    pub streams: usize,
    /// Wall time.
    pub elapsed_seconds: f64,
    /// Indicators per second.
    pub rate_per_second: f64,
    /// Per-stream counters.
    pub per_stream: BTreeMap<String, CounterSnapshot>,
}

/// Runs every stream until `shutdown` (or, with `once`, until all have caught up).
pub async fn run(
    config: &Config,
    options: &RunOptions,
    shutdown: CancellationToken,
) -> Result<Summary, RunError> {
    let started = Instant::now();
    let state = StateStore::open(&options.state_dir)?;
    let mut sinks: BTreeMap<String, Arc<AnySink>> = BTreeMap::new();
    for (name, output) in &config.outputs {
        if !config.inputs.iter().any(|i| &i.use_output == name) {
            continue;
        }
        let sink = crate::sink::open(output)
            .await
            .map_err(|source| RunError::Output {
                name: name.clone(),
                source,
            })?;
        sinks.insert(name.clone(), Arc::new(sink));
    }

    let mut tasks = tokio::task::JoinSet::new();
    let mut task_streams = std::collections::HashMap::new();
    let mut counters = BTreeMap::new();
    for input in &config.inputs {
        let Some(sink) = sinks.get(&input.use_output).cloned() else {
            continue;
        };
        for stream in &input.streams {
            let stream_counters = Arc::new(StreamCounters::default());
            counters.insert(stream.identity.id.clone(), stream_counters.clone());
            let span = tracing::info_span!("stream", input.id = %input.id, stream.id = %stream.identity.id);
            let poller = StreamPoller {
                input_id: &input.id,
                stream,
                sink: sink.clone(),
                state: &state,
                options,
                counters: stream_counters,
            };
            let task = tasks.spawn(poller.into_loop(shutdown.clone())?.instrument(span));
            task_streams.insert(task.id(), stream.identity.id.clone());
        }
    }

    let mut failures = Vec::new();
    while let Some(joined) = tasks.join_next_with_id().await {
        let failure = match joined {
            Ok((_, Ok(Outcome { .. }))) => continue,
            Ok((_, Err(e))) => e,
            // Panics are caught inside the loop (`CatchPanic`); this is a task cancelled or
            // crashed some other way, and it is a failure all the same.
            Err(e) => PollError::Crashed {
                stream: task_streams.remove(&e.id()).unwrap_or_default(),
                message: join_error_text(e),
            },
        };
        tracing::error!("{failure}");
        failures.push(failure);
    }
    if !options.once && !failures.is_empty() && !shutdown.is_cancelled() {
        // A failed stream stays failed, visible in the logs, while the process lives on like a
        // supervised service: it never takes other streams (or the process) down with it.
        tracing::error!(
            failed = failures.len() as u64,
            "{} stream(s) failed for good and stay stopped; running until SIGTERM/SIGINT \
             (fix the cause, then restart)",
            failures.len()
        );
        shutdown.cancelled().await;
    }

    let mut summary = Summary {
        streams: counters.len(),
        ..Summary::default()
    };
    for (id, c) in counters {
        let snap = c.snapshot();
        summary.totals.indicators += snap.indicators;
        summary.totals.pages += snap.pages;
        summary.totals.error_documents += snap.error_documents;
        summary.totals.errors += snap.errors;
        summary.totals.duplicates_dropped += snap.duplicates_dropped;
        summary.totals.future_timestamps += snap.future_timestamps;
        summary.totals.invalid_utf8 += snap.invalid_utf8;
        summary.per_stream.insert(id, snap);
    }
    summary.elapsed_seconds = started.elapsed().as_secs_f64();
    summary.rate_per_second = if summary.elapsed_seconds > 0.0 {
        summary.totals.indicators as f64 / summary.elapsed_seconds
    } else {
        0.0
    };
    tracing::info!(
        indicators = summary.totals.indicators,
        pages = summary.totals.pages,
        errors = summary.totals.errors,
        error_documents = summary.totals.error_documents,
        duplicates_dropped = summary.totals.duplicates_dropped,
        future_timestamps = summary.totals.future_timestamps,
        invalid_utf8 = summary.totals.invalid_utf8,
        elapsed_seconds = summary.elapsed_seconds,
        rate_per_second = summary.rate_per_second,
        peak_rss_bytes = crate::telemetry::process_memory().map(|m| m.peak_rss_bytes),
        "summary"
    );
    if failures.is_empty() {
        Ok(summary)
    } else {
        Err(RunError::Streams(failures))
    }
}

/// Where a stream's request trace goes: always directly inside `<state_dir>/request-trace`,
/// whatever the ids hold (they come from the policy; see [`crate::fsutil::path_component`]).
pub fn trace_path(state_dir: &Path, input_id: &str, stream_id: &str) -> PathBuf {
    use crate::fsutil::path_component;
    state_dir.join("request-trace").join(format!(
        "{}--{}.ndjson",
        path_component(input_id),
        path_component(stream_id)
    ))
}

/// A stream's poll loop, ready to spawn (the platform's `Poller::run`).
pub type StreamLoop = Pin<Box<dyn Future<Output = Result<Outcome, PollError>> + Send + 'static>>;

/// A poll loop whose panic ends it with [`PollError::Crashed`] instead of unwinding out of the
/// task, where standalone mode would count it as success and a unit would never leave
/// CONFIGURING.
struct CatchPanic {
    stream: String,
    inner: StreamLoop,
}

impl Future for CatchPanic {
    type Output = Result<Outcome, PollError>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = &mut *self;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            this.inner.as_mut().poll(cx)
        })) {
            Ok(poll) => poll,
            // Ready ends the future: the panicked loop is never polled again.
            Err(payload) => std::task::Poll::Ready(Err(PollError::Crashed {
                stream: this.stream.clone(),
                message: crate::text::panic_text(&*payload),
            })),
        }
    }
}

/// Wraps a poll loop so that a panic inside it is a [`PollError::Crashed`] of `stream`.
pub fn catch_panic(stream: &str, inner: StreamLoop) -> StreamLoop {
    Box::pin(CatchPanic {
        stream: stream.to_owned(),
        inner,
    })
}

fn join_error_text(e: tokio::task::JoinError) -> String {
    if e.is_panic() {
        crate::text::panic_text(&*e.into_panic())
    } else {
        e.to_string()
    }
}

/// What every stream's poll loop needs, whatever its platform and sink. Shared by standalone
/// mode and the agent's input units.
pub struct StreamPoller<'a, K: Sink> {
    /// The input (or agent unit) the stream belongs to; first half of its cursor key.
    pub input_id: &'a str,
    /// The validated stream.
    pub stream: &'a StreamConfig,
    /// Where acknowledged batches go.
    pub sink: Arc<K>,
    /// Cursor store.
    pub state: &'a StateStore,
    /// State directory, retry overrides.
    pub options: &'a RunOptions,
    /// Counters shared with health and diagnostics.
    pub counters: Arc<StreamCounters>,
}

impl<K: Sink> StreamPoller<'_, K> {
    /// Builds the platform's source and HTTP client and returns the poll loop, which runs until
    /// `shutdown` (finishing and committing the batch in flight).
    pub fn into_loop(self, shutdown: CancellationToken) -> Result<StreamLoop, RunError> {
        for note in self.stream.source.http().security_notes() {
            self.counters.add_note(&self.stream.identity.id, note);
        }
        let stream = self.stream.identity.id.clone();
        let inner: StreamLoop = match &self.stream.source {
            SourceConfig::ThreatConnect(tc) => {
                let http = self.http()?;
                let source = ThreatConnectSource::new(Arc::new(tc.clone()), http);
                Box::pin(self.build(source, tc.interval).run(shutdown))
            }
            SourceConfig::ThreatQ(tq) => {
                let http = self.http()?;
                let source = ThreatQSource::new(Arc::new(tq.clone()), http);
                Box::pin(self.build(source, tq.interval).run(shutdown))
            }
        };
        Ok(catch_panic(&stream, inner))
    }

    /// The stream's HTTP client. The stream's secrets are masked in its request trace, its
    /// errors and, through the counters, in every log line and health message about it.
    fn http(&self) -> Result<HttpClient, RunError> {
        let secrets = self.stream.source.secrets();
        self.counters.mask_with(secrets.clone());
        let trace = trace_path(
            &self.options.state_dir,
            self.input_id,
            &self.stream.identity.id,
        );
        let http = HttpClient::build(self.stream.source.http(), Some(&trace), secrets).map_err(
            |source| RunError::Http {
                input: self.input_id.to_owned(),
                stream: self.stream.identity.id.clone(),
                source,
            },
        )?;
        Ok(match self.options.retry {
            Some(retry) => http.with_retry(retry),
            None => http,
        })
    }

    fn build<S: Source>(self, source: S, interval: Duration) -> Poller<S, K> {
        let mut schedule = Schedule::every(interval, self.options.once);
        if let Some(d) = self.options.poll_retry_delay {
            schedule.retry_delay = d;
        }
        Poller {
            source,
            sink: self.sink,
            state: self.state.clone(),
            cursor_key: cursor_key(self.input_id, &self.stream.identity.id),
            input_id: self.input_id.to_owned(),
            stream: self.stream.identity.clone(),
            schedule,
            counters: self.counters,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a panicking stream task was only logged, and `run --once` exited 0 with an
    /// empty summary. The panic is now the stream's failure.
    #[tokio::test]
    async fn a_panicking_stream_loop_is_a_failure_not_a_success() {
        let crashing: StreamLoop = Box::pin(async {
            tokio::task::yield_now().await;
            panic!("cursor arithmetic overflowed");
        });
        let joined = tokio::spawn(catch_panic("tc-indicator", crashing)).await;
        match joined.expect("the panic does not escape the task") {
            Err(PollError::Crashed { stream, message }) => {
                assert_eq!(stream, "tc-indicator");
                assert_eq!(message, "cursor arithmetic overflowed");
            }
            other => panic!("expected a crash, got {other:?}"),
        }
        let fine: StreamLoop = Box::pin(async { Ok(Outcome::default()) });
        assert!(catch_panic("s", fine).await.is_ok());
    }

    #[test]
    fn trace_path_stays_in_the_trace_directory_whatever_the_ids() {
        let state = Path::new("/var/lib/ti/state");
        for (input, stream) in [
            ("x", "x/../../escaped"),
            ("..", ".."),
            ("../../etc", "passwd"),
            ("a", "/abs"),
        ] {
            let path = trace_path(state, input, stream);
            assert_eq!(
                path.parent(),
                Some(state.join("request-trace").as_path()),
                "{input:?} {stream:?} -> {}",
                path.display()
            );
            assert!(
                path.components()
                    .all(|c| !matches!(c, std::path::Component::ParentDir)),
                "{}",
                path.display()
            );
        }
    }
}
