//! Standalone mode (`ti-sidecar run`): every stream of a validated configuration, each in its
//! own poll loop, into the configured outputs, with cursors in the state directory.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::pipeline::{BuildError, StreamPoller};
use crate::policy::Config;
use crate::poll::{Outcome, PollError};
use crate::sink::{AnySink, SinkError};
use crate::state::{StateError, StateStore};
use crate::telemetry::{CounterSnapshot, StreamCounters};

pub use crate::pipeline::RunOptions;

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
    /// The monitoring endpoint could not start.
    #[error(transparent)]
    Monitoring(#[from] crate::telemetry::server::MonitoringError),
    /// A stream could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// One or more streams stopped with an error.
    #[error("{} stream(s) failed: {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Streams(Vec<PollError>),
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
    if let Some(monitoring) = &config.monitoring {
        crate::telemetry::server::serve(monitoring, shutdown.clone()).await?;
    }
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

fn join_error_text(e: tokio::task::JoinError) -> String {
    if e.is_panic() {
        crate::text::panic_text(&*e.into_panic())
    } else {
        e.to_string()
    }
}
