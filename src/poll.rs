//! The shared fetch → map → send → ack → commit loop, for every platform.
//!
//! One [`Poller`] runs one stream. It resumes from the stream's committed cursor (or the
//! source's initial one), fetches a page, maps it, sends it, and commits the page's cursor only
//! after the sink acknowledged the batch. While page N is being sent, page N+1 is fetched — never
//! further ahead — so memory stays bounded by two pages whatever the backlog.
//!
//! Shutdown (SIGINT/SIGTERM, or a unit stop) stops fetching at once; a batch already handed to
//! the sink is finished and its cursor committed, so a restart neither skips nor repeats it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::StreamIdentity;
use crate::http::ErrorKind;
use crate::ingest::EcsEvent;
use crate::sink::{Batch, Sink, SinkError};
use crate::source::{FetchError, Page, Source};
use crate::state::{StateError, StateStore};
use crate::telemetry::{AttemptFailed, PageDelivered, StreamCounters};

/// Why a stream stopped before its work was done.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The platform refused us in a way retrying cannot fix (credentials, bad request).
    #[error("stream {stream}: {source}")]
    Fatal {
        /// Stream id.
        stream: String,
        /// The refusal.
        source: FetchError,
    },
    /// `--once` gave up after repeated transient failures.
    #[error("stream {stream}: giving up after {attempts} failed attempts to {stage}: {last}")]
    GaveUp {
        /// Stream id.
        stream: String,
        /// `fetch` or `send`.
        stage: &'static str,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: String,
    },
    /// The cursor store failed.
    #[error("stream {stream}: {source}")]
    State {
        /// Stream id.
        stream: String,
        /// The store error.
        source: StateError,
    },
    /// The poll loop panicked (a bug): the stream stopped, its cursor where it was.
    #[error("stream {stream}: the poll loop crashed: {message}")]
    Crashed {
        /// Stream id.
        stream: String,
        /// The panic's message.
        message: String,
    },
}

/// How the loop paces itself.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Wait between sweeps once caught up.
    pub interval: Duration,
    /// Stop after the first sweep has caught up (`run --once`).
    pub once: bool,
    /// First delay after a failed fetch or send (doubles up to `max_retry_delay`).
    pub retry_delay: Duration,
    /// Cap of the delay between failed attempts.
    pub max_retry_delay: Duration,
    /// With `once`, give up after this many consecutive failures of one stage.
    pub once_max_attempts: u32,
}

impl Schedule {
    /// The default pacing for `interval`.
    pub fn every(interval: Duration, once: bool) -> Self {
        Self {
            interval,
            once,
            retry_delay: Duration::from_secs(1),
            max_retry_delay: Duration::from_secs(300).min(interval.max(Duration::from_secs(1))),
            once_max_attempts: 5,
        }
    }
}

/// What a stream did, for the final summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Sweeps completed (caught up).
    pub sweeps: u64,
    /// Stopped by shutdown rather than by `--once` completion.
    pub interrupted: bool,
}

/// Runs one stream of one platform into one sink.
pub struct Poller<S: Source, K: Sink> {
    /// The platform.
    pub source: S,
    /// The destination, shared with other streams.
    pub sink: Arc<K>,
    /// Cursor store.
    pub state: StateStore,
    /// Key of this stream's cursor.
    pub cursor_key: String,
    /// The input the stream belongs to.
    pub input_id: String,
    /// The stream's ids and data-stream naming.
    pub stream: StreamIdentity,
    /// Pacing.
    pub schedule: Schedule,
    /// Counters shared with the summary and health.
    pub counters: Arc<StreamCounters>,
}

enum Attempt<T> {
    Done(T),
    Stopped,
}

impl<S: Source, K: Sink> Poller<S, K> {
    /// Runs until `shutdown` is cancelled, or (with `once`) until the stream has caught up.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<Outcome, PollError> {
        let mut outcome = Outcome::default();
        loop {
            let cursor = self.load_cursor()?;
            tracing::info!(stream.id = %self.stream.id, cursor = %self.source.describe(&cursor), "sweep starting");
            let mut page = match self.fetch(&cursor, &shutdown).await? {
                Attempt::Done(p) => p,
                Attempt::Stopped => {
                    return Ok(Outcome {
                        interrupted: true,
                        ..outcome
                    });
                }
            };
            loop {
                let started = Instant::now();
                let more = page.more && !shutdown.is_cancelled();
                let Page {
                    items,
                    cursor,
                    duplicates_dropped,
                    future_timestamps,
                    invalid_utf8,
                    ..
                } = page;
                let now = chrono::Utc::now();
                let events: Vec<EcsEvent> = items
                    .iter()
                    .map(|raw| with_agent_timestamp(self.source.map(raw.get()), now))
                    .collect();
                let error_documents = events.iter().filter(|e| has_error(e)).count();
                let indicators = events.len();
                // Page N is sent and, once acknowledged, committed at once, while page N+1 is
                // fetched from N's cursor: the commit never waits for a slow fetch (a kill during
                // it must not replay an acknowledged page). If the send fails, the prefetched
                // page is still the right next one.
                let described = self.source.describe(&cursor);
                let delivery = deliver(
                    Destination {
                        sink: self.sink.as_ref(),
                        state: &self.state,
                        cursor_key: &self.cursor_key,
                        input_id: &self.input_id,
                        stream: &self.stream,
                        schedule: &self.schedule,
                        counters: &self.counters,
                        shutdown: &shutdown,
                    },
                    events,
                    &cursor,
                    PageDelivered {
                        stream: &self.stream.id,
                        platform: self.source.platform(),
                        indicators,
                        error_documents,
                        duplicates_dropped,
                        future_timestamps,
                        invalid_utf8,
                        elapsed: Duration::ZERO,
                        cursor: &described,
                    },
                    started,
                );
                let (delivered, prefetched) = if more {
                    // A stop abandons the prefetch (nothing of it is committed yet).
                    let prefetch = async {
                        tokio::select! {
                            r = self.source.fetch(&cursor) => Some(r),
                            () = shutdown.cancelled() => None,
                        }
                    };
                    tokio::join!(delivery, prefetch)
                } else {
                    (delivery.await, None)
                };
                if delivered? == Delivery::Abandoned {
                    // Stopping while the sink refuses: the batch was never acknowledged, so the
                    // cursor stays where it was and the batch is fetched again on restart.
                    return Ok(Outcome {
                        interrupted: true,
                        ..outcome
                    });
                }
                if shutdown.is_cancelled() {
                    return Ok(Outcome {
                        interrupted: true,
                        ..outcome
                    });
                }
                let Some(prefetched) = prefetched else { break };
                page = match prefetched {
                    Ok(p) => p,
                    Err(e) => {
                        self.check_fatal(&e)?;
                        AttemptFailed {
                            stream: &self.stream.id,
                            stage: "fetch",
                            error: &e,
                            retry_in: Some(Duration::ZERO),
                        }
                        .emit(&self.counters);
                        match self.fetch(&cursor, &shutdown).await? {
                            Attempt::Done(p) => p,
                            Attempt::Stopped => {
                                return Ok(Outcome {
                                    interrupted: true,
                                    ..outcome
                                });
                            }
                        }
                    }
                };
            }
            outcome.sweeps += 1;
            tracing::info!(stream.id = %self.stream.id, "caught up");
            if self.schedule.once {
                return Ok(outcome);
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(Outcome { interrupted: true, ..outcome }),
                () = tokio::time::sleep(self.schedule.interval) => {}
            }
        }
    }

    fn load_cursor(&self) -> Result<S::Cursor, PollError> {
        let stored = self
            .state
            .load::<S::Cursor>(&self.cursor_key)
            .map_err(|source| PollError::State {
                stream: self.stream.id.clone(),
                source,
            })?;
        Ok(stored.unwrap_or_else(|| self.source.initial_cursor()))
    }

    fn check_fatal(&self, e: &FetchError) -> Result<(), PollError> {
        if e.kind() == ErrorKind::Fail {
            AttemptFailed {
                stream: &self.stream.id,
                stage: "fetch",
                error: e,
                retry_in: None,
            }
            .emit(&self.counters);
            self.counters.set_fatal(e.to_string());
            return Err(PollError::Fatal {
                stream: self.stream.id.clone(),
                source: e.clone(),
            });
        }
        Ok(())
    }

    /// Fetches the page after `cursor`, retrying transient failures with backoff.
    async fn fetch(
        &mut self,
        cursor: &S::Cursor,
        shutdown: &CancellationToken,
    ) -> Result<Attempt<Page<S::Cursor>>, PollError> {
        let mut delay = self.schedule.retry_delay;
        let mut attempts = 0;
        loop {
            let result = tokio::select! {
                () = shutdown.cancelled() => return Ok(Attempt::Stopped),
                r = self.source.fetch(cursor) => r,
            };
            let error = match result {
                Ok(page) => {
                    self.counters
                        .consecutive_failures
                        .store(0, std::sync::atomic::Ordering::Relaxed);
                    return Ok(Attempt::Done(page));
                }
                Err(e) => e,
            };
            self.check_fatal(&error)?;
            attempts += 1;
            if self.schedule.once && attempts >= self.schedule.once_max_attempts {
                AttemptFailed {
                    stream: &self.stream.id,
                    stage: "fetch",
                    error: &error,
                    retry_in: None,
                }
                .emit(&self.counters);
                return Err(PollError::GaveUp {
                    stream: self.stream.id.clone(),
                    stage: "fetch",
                    attempts,
                    last: error.to_string(),
                });
            }
            AttemptFailed {
                stream: &self.stream.id,
                stage: "fetch",
                error: &error,
                retry_in: Some(delay),
            }
            .emit(&self.counters);
            tokio::select! {
                () = shutdown.cancelled() => return Ok(Attempt::Stopped),
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(self.schedule.max_retry_delay);
        }
    }
}

/// Where an acknowledged batch's cursor goes, and what its delivery reports to.
struct Destination<'a, K> {
    sink: &'a K,
    state: &'a StateStore,
    cursor_key: &'a str,
    input_id: &'a str,
    stream: &'a StreamIdentity,
    schedule: &'a Schedule,
    counters: &'a StreamCounters,
    shutdown: &'a CancellationToken,
}

/// Sends one page's events, then, as soon as the sink acknowledged them, commits the page's
/// cursor and reports the page (`report`, whose `elapsed` is measured from `started`).
async fn deliver<K: Sink, C: serde::Serialize + Clone + Send + 'static>(
    to: Destination<'_, K>,
    events: Vec<EcsEvent>,
    cursor: &C,
    mut report: PageDelivered<'_>,
    started: Instant,
) -> Result<Delivery, PollError> {
    let sent = send(
        to.sink,
        to.input_id,
        to.stream,
        events,
        to.schedule,
        to.counters,
        to.shutdown,
    )
    .await?;
    if sent == Delivery::Acked {
        commit(to.state, to.cursor_key, &to.stream.id, cursor).await?;
        report.elapsed = started.elapsed();
        report.emit(to.counters);
    }
    Ok(sent)
}

/// Durably stores `cursor` under `key`, off the async worker threads (one fsync).
async fn commit<C: serde::Serialize + Clone + Send + 'static>(
    state: &StateStore,
    key: &str,
    stream: &str,
    cursor: &C,
) -> Result<(), PollError> {
    let store = state.clone();
    let owned_key = key.to_owned();
    let cursor = cursor.clone();
    tokio::task::spawn_blocking(move || store.commit(&owned_key, &cursor))
        .await
        .unwrap_or_else(|e| {
            Err(StateError::Io {
                path: state.path().to_owned(),
                op: "commit",
                key: key.to_owned(),
                message: e.to_string(),
            })
        })
        .map_err(|source| PollError::State {
            stream: stream.to_owned(),
            source,
        })
}

/// What became of a batch handed to [`send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// The sink acknowledged it: commit its cursor.
    Acked,
    /// Shutdown came while the sink kept refusing it: do not commit.
    Abandoned,
}

/// Sends one batch, retrying sink failures with backoff. The batch is never dropped: with
/// `once`, the loop gives up (the cursor stays put) after `once_max_attempts`.
async fn send<K: Sink>(
    sink: &K,
    input_id: &str,
    stream: &StreamIdentity,
    events: Vec<EcsEvent>,
    schedule: &Schedule,
    counters: &StreamCounters,
    shutdown: &CancellationToken,
) -> Result<Delivery, PollError> {
    let batch = Batch {
        input_id,
        stream,
        events,
    };
    let mut delay = schedule.retry_delay;
    let mut attempts = 0;
    loop {
        let attempt = async {
            if sink.abandon_safe() {
                tokio::select! {
                    r = sink.send(&batch) => Some(r),
                    () = shutdown.cancelled() => None,
                }
            } else {
                Some(sink.send(&batch).await)
            }
        };
        let error: SinkError = match attempt.await {
            Some(Ok(())) => return Ok(Delivery::Acked),
            Some(Err(e)) => e,
            None => return Ok(Delivery::Abandoned),
        };
        attempts += 1;
        if schedule.once && attempts >= schedule.once_max_attempts {
            return Err(PollError::GaveUp {
                stream: stream.id.clone(),
                stage: "send",
                attempts,
                last: error.to_string(),
            });
        }
        AttemptFailed {
            stream: &stream.id,
            stage: "send",
            error: &error,
            retry_in: Some(delay),
        }
        .emit(counters);
        tokio::select! {
            () = shutdown.cancelled() => return Ok(Delivery::Abandoned),
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(schedule.max_retry_delay);
    }
}

/// The Agent stamps every event with its publish time; the pipelines overwrite it when the
/// indicator has a usable timestamp. Do the same for documents the mapping left without one.
fn with_agent_timestamp(mut event: EcsEvent, now: chrono::DateTime<chrono::Utc>) -> EcsEvent {
    if !event.doc.contains_key("@timestamp") {
        let text = now.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
        event
            .doc
            .insert("@timestamp".into(), serde_json::Value::from(text));
        event.timestamp = Some(now);
    }
    event
}

fn has_error(event: &EcsEvent) -> bool {
    event
        .doc
        .get("error")
        .and_then(|e| e.get("message"))
        .is_some()
}
