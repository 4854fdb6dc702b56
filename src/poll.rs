//! The shared fetch → split → map → send → ack → commit pipeline, for every platform.
//!
//! One [`Poller`] runs one stream. It resumes from the stream's committed cursor (or the
//! source's initial one) and runs each sweep as three concurrent stages joined by bounded
//! channels (ARCHITECTURE.md draws them):
//!
//! 1. **fetch**: pages in cursor order. A page is fetched only once the previous one has been
//!    taken by the next stage, so at most one page waits fetched ahead (the prefetch).
//! 2. **split + map**: each page is cut into chunks ([`CHUNK_ITEMS`] items or [`CHUNK_BYTES`]),
//!    which are mapped and encoded for the sink on the blocking pool, never on the async
//!    workers. At most [`chunks_in_flight`] chunks are being mapped or wait to be sent, and
//!    the next page is taken once the current one is mapped whole (its body is freed then).
//! 3. **send + commit**: chunks in order; after the last chunk of a page is acknowledged, the
//!    sink makes it durable and the page's cursor is committed, while the next page's chunks
//!    are sent (one page commits at a time, in order). Acknowledgements only ever travel
//!    forward to the commit: nothing feeds back into the fetch.
//!
//! Memory is bounded by the page being mapped, the prefetched page (and the one being
//! downloaded behind it) and the encoded chunks in flight, whatever the page or document size.
//! Delivery stays at least once with no gap; a crash repeats at most the chunks sent since the
//! last committed page: the page being committed and the part of the next one already sent.
//!
//! Shutdown (SIGINT/SIGTERM, or a unit stop) stops fetching at once and no new page is started;
//! the page already being sent is finished and its cursor committed, so a restart neither
//! skips nor repeats it (unless the sink keeps refusing it: then it is abandoned, uncommitted).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use futures_util::stream::FuturesOrdered;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::size::MIB;
use crate::error::{Classify as _, ErrorKind};
use crate::ingest::EcsEvent;
use crate::policy::StreamIdentity;
use crate::sink::{Sink, SinkError};
use crate::source::{FetchError, Mapper, Page, RawItems, Source, joined};
use crate::state::{StateError, StateStore};
use crate::telemetry::{AttemptFailed, BackfillProgress, PageDelivered, Stage, StreamCounters};

/// A chunk holds at most this many items...
pub const CHUNK_ITEMS: usize = 500;
/// ...and, unless one item alone is larger, at most this many bytes of raw JSON. A mapped
/// document tree is several times its raw size, and a few chunks are mapped at once: 1 MiB keeps
/// that small when indicators carry every association (tens of KB each), and still holds
/// hundreds of plain indicators.
pub(crate) const CHUNK_BYTES: usize = MIB as usize;

/// How many chunks may be mapped, or wait mapped to be sent, at once (beyond the one being
/// sent): one per core to keep every core mapping, plus one so that the sender never waits
/// for the mapper when the mapping keeps up.
pub fn chunks_in_flight() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from) + 1
}

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
    #[error("stream {stream}: giving up after {attempts} failed attempts to {}: {last}", stage.as_str())]
    GaveUp {
        /// Stream id.
        stream: String,
        /// Where it failed.
        stage: Stage,
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
    /// The backoff between failed attempts of one stage: `retry_delay` doubling to
    /// `max_retry_delay`, jittered so that streams failing together spread their retries.
    fn backoff(&self) -> Backoff {
        Backoff::clamped(self.retry_delay, self.max_retry_delay, true)
    }

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

/// How a sweep ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SweepEnd {
    /// Every page up to "no more right now" is delivered and committed.
    CaughtUp,
    /// Shutdown came first.
    Stopped,
}

impl<S: Source, K: Sink> Poller<S, K> {
    /// Runs until `shutdown` is cancelled, or (with `once`) until the stream has caught up.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<Outcome, PollError> {
        let mut outcome = Outcome::default();
        loop {
            let cursor = self.load_cursor()?;
            tracing::info!(stream.id = %self.stream.id, cursor = %self.source.describe(&cursor), "sweep starting");
            self.source.begin_sweep();
            self.counters.sweep_started();
            if self.sweep(cursor, &shutdown).await? == SweepEnd::Stopped {
                return Ok(Outcome {
                    interrupted: true,
                    ..outcome
                });
            }
            outcome.sweeps += 1;
            self.source.end_sweep();
            tracing::info!(stream.id = %self.stream.id, "caught up");
            self.counters.caught_up(
                chrono::Utc::now(),
                (!self.schedule.once).then_some(self.schedule.interval),
            );
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

    /// One sweep from `start`: the three stages, run concurrently until the platform has
    /// nothing more, a stage fails, or shutdown.
    async fn sweep(
        &mut self,
        start: S::Cursor,
        shutdown: &CancellationToken,
    ) -> Result<SweepEnd, PollError> {
        // Cancelled by shutdown, or by the sender when it stops early (an error), so that a
        // fetch waiting out a backoff does not hold the sweep open.
        let halt = shutdown.child_token();
        let (pages_tx, pages_rx) = mpsc::channel(1);
        let (chunks_tx, chunks_rx) = mpsc::channel(chunks_in_flight());
        let job = MapJob {
            mapper: self.source.mapper(),
            sink: Arc::clone(&self.sink),
            input_id: Arc::from(self.input_id.as_str()),
            stream: Arc::new(self.stream.clone()),
        };
        let fetch = Fetcher {
            stream: &self.stream,
            schedule: &self.schedule,
            counters: &self.counters,
            halt: &halt,
            shutdown,
        };
        let deliver = Deliverer {
            sink: self.sink.as_ref(),
            state: &self.state,
            cursor_key: &self.cursor_key,
            stream: &self.stream,
            schedule: &self.schedule,
            counters: &self.counters,
            shutdown,
            platform: self.source.platform(),
        };
        let ((), (), delivered) = tokio::join!(
            fetch.run(&mut self.source, start, pages_tx),
            split_and_map(pages_rx, chunks_tx, job, shutdown),
            async {
                let _halt_on_exit = halt.clone().drop_guard();
                deliver.run(chunks_rx).await
            },
        );
        match delivered? {
            Delivery::Abandoned => Ok(SweepEnd::Stopped),
            Delivery::Acked if shutdown.is_cancelled() => Ok(SweepEnd::Stopped),
            Delivery::Acked => Ok(SweepEnd::CaughtUp),
        }
    }
}

/// A fetched page with its cursor as reported (rendered for the log, and a backfill's
/// progress), or why fetching stopped for good.
type Fetched<C> = Result<(Page<C>, Reported), PollError>;

/// A page's cursor as logs, health and diagnostics show it.
struct Reported {
    described: String,
    progress: Option<BackfillProgress>,
}

/// The fetch stage.
struct Fetcher<'a> {
    stream: &'a StreamIdentity,
    schedule: &'a Schedule,
    counters: &'a StreamCounters,
    /// Stop now (shutdown, or the sender is gone).
    halt: &'a CancellationToken,
    shutdown: &'a CancellationToken,
}

impl Fetcher<'_> {
    /// Fetches pages from `cursor` on until the platform has nothing more, passing each on.
    /// A slot in `pages` is reserved *before* each fetch, so one page at most waits fetched
    /// ahead of the mapper.
    async fn run<S: Source>(
        self,
        source: &mut S,
        mut cursor: S::Cursor,
        pages: mpsc::Sender<Fetched<S::Cursor>>,
    ) {
        loop {
            let Ok(slot) = pages.reserve().await else {
                return;
            };
            match self.fetch(source, &cursor).await {
                Ok(Some(page)) => {
                    let more = page.more && !self.shutdown.is_cancelled();
                    cursor = page.cursor.clone();
                    let reported = Reported {
                        described: source.describe(&cursor),
                        progress: source.progress(&cursor),
                    };
                    slot.send(Ok((page, reported)));
                    if !more {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    slot.send(Err(e));
                    return;
                }
            }
        }
    }

    /// Fetches the page after `cursor`, retrying transient failures with backoff; `None` when
    /// halted first.
    async fn fetch<S: Source>(
        &self,
        source: &mut S,
        cursor: &S::Cursor,
    ) -> Result<Option<Page<S::Cursor>>, PollError> {
        let mut backoff = self.schedule.backoff();
        let mut attempts = 0;
        loop {
            let result = tokio::select! {
                () = self.halt.cancelled() => return Ok(None),
                r = source.fetch(cursor) => r,
            };
            let error = match result {
                Ok(page) => {
                    self.counters
                        .consecutive_failures
                        .store(0, std::sync::atomic::Ordering::Relaxed);
                    return Ok(Some(page));
                }
                Err(e) => e,
            };
            self.check_fatal(&error)?;
            attempts += 1;
            if self.schedule.once && attempts >= self.schedule.once_max_attempts {
                AttemptFailed {
                    stream: &self.stream.id,
                    stage: Stage::Fetch,
                    error: &error,
                    retry_in: None,
                }
                .emit(self.counters);
                return Err(PollError::GaveUp {
                    stream: self.stream.id.clone(),
                    stage: Stage::Fetch,
                    attempts,
                    last: error.to_string(),
                });
            }
            let delay = backoff.next_delay();
            AttemptFailed {
                stream: &self.stream.id,
                stage: Stage::Fetch,
                error: &error,
                retry_in: Some(delay),
            }
            .emit(self.counters);
            tokio::select! {
                () = self.halt.cancelled() => return Ok(None),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    fn check_fatal(&self, e: &FetchError) -> Result<(), PollError> {
        if e.kind() == ErrorKind::Fail {
            // Recorded before the failure is logged: whoever reads the log line (a supervisor,
            // a test) finds the stream already FAILED in health and `/healthz`.
            self.counters.set_fatal(e.to_string());
            AttemptFailed {
                stream: &self.stream.id,
                stage: Stage::Fetch,
                error: e,
                retry_in: None,
            }
            .emit(self.counters);
            return Err(PollError::Fatal {
                stream: self.stream.id.clone(),
                source: e.clone(),
            });
        }
        Ok(())
    }
}

/// What mapping a chunk needs, shareable with the blocking pool.
struct MapJob<K> {
    mapper: Mapper,
    sink: Arc<K>,
    input_id: Arc<str>,
    stream: Arc<StreamIdentity>,
}

impl<K> Clone for MapJob<K> {
    fn clone(&self) -> Self {
        Self {
            mapper: Arc::clone(&self.mapper),
            sink: Arc::clone(&self.sink),
            input_id: Arc::clone(&self.input_id),
            stream: Arc::clone(&self.stream),
        }
    }
}

impl<K: Sink> MapJob<K> {
    /// Maps and encodes one chunk (on the blocking pool). The documents' trees live only
    /// here, one at a time where the sink encodes document by document
    /// ([`Sink::encode_each`]): what leaves is the sink's wire form.
    fn map(&self, items: RawItems, now: chrono::DateTime<chrono::Utc>) -> MappedChunk<K::Encoded> {
        let (mut indicators, mut error_documents) = (0, 0);
        let events = items.iter().map(|raw| {
            let event = with_agent_timestamp((self.mapper)(raw), now);
            indicators += 1;
            error_documents += usize::from(has_error(&event));
            event
        });
        let encoded = self.sink.encode_each(&self.input_id, &self.stream, events);
        // The chunk's hold on the page body ends here.
        drop(items);
        MappedChunk {
            encoded,
            indicators,
            error_documents,
        }
    }
}

/// A chunk in the sink's wire form.
struct MappedChunk<E> {
    encoded: E,
    indicators: usize,
    error_documents: usize,
}

/// What a page's last chunk carries to the commit.
struct PageEnd<C> {
    cursor: C,
    reported: Reported,
    duplicates_dropped: usize,
    future_timestamps: usize,
    invalid_utf8: usize,
    started: Instant,
}

/// One entry of the send queue, in order.
enum Queued<C, E> {
    /// A chunk being mapped; the page's last one carries the page's end.
    Chunk {
        mapped: JoinHandle<MappedChunk<E>>,
        end: Option<PageEnd<C>>,
    },
    /// Fetching stopped for good, after every chunk ahead of this.
    Failed(PollError),
}

/// The split + map stage: cuts each page into chunks and starts mapping each on the blocking
/// pool as soon as a slot in the send queue is free, so chunks in flight stay bounded. After
/// shutdown no new page is started.
async fn split_and_map<C: Send + 'static, K: Sink>(
    mut pages: mpsc::Receiver<Fetched<C>>,
    queue: mpsc::Sender<Queued<C, K::Encoded>>,
    job: MapJob<K>,
    shutdown: &CancellationToken,
) {
    while let Some(fetched) = pages.recv().await {
        let (page, reported) = match fetched {
            Ok(p) => p,
            Err(e) => {
                let _ = queue.send(Queued::Failed(e)).await;
                return;
            }
        };
        let started = Instant::now();
        let now = chrono::Utc::now();
        let chunks = page.items.chunks(CHUNK_ITEMS, CHUNK_BYTES);
        let mut end = Some(PageEnd {
            cursor: page.cursor,
            reported,
            duplicates_dropped: page.duplicates_dropped,
            future_timestamps: page.future_timestamps,
            invalid_utf8: page.invalid_utf8,
            started,
        });
        let last = chunks.len() - 1;
        // Each chunk holds a sender until it is mapped; the receiver sees the channel close
        // once every chunk of the page has been.
        let (chunk_mapping, mut page_mapped) = mpsc::channel::<()>(1);
        for (i, items) in chunks.into_iter().enumerate() {
            let Ok(slot) = queue.reserve().await else {
                return;
            };
            let job = job.clone();
            let mapping = chunk_mapping.clone();
            slot.send(Queued::Chunk {
                mapped: tokio::task::spawn_blocking(move || {
                    let mapped = job.map(items, now);
                    drop(mapping);
                    mapped
                }),
                end: if i == last { end.take() } else { None },
            });
        }
        drop(chunk_mapping);
        // The next page is taken only once this one is mapped whole, so its body is freed
        // first: at most the page being mapped and the one fetched ahead are held.
        let _ = page_mapped.recv().await;
        if shutdown.is_cancelled() {
            return;
        }
    }
}

/// The send + commit stage.
struct Deliverer<'a, K> {
    sink: &'a K,
    state: &'a StateStore,
    cursor_key: &'a str,
    stream: &'a StreamIdentity,
    schedule: &'a Schedule,
    counters: &'a StreamCounters,
    shutdown: &'a CancellationToken,
    platform: &'static str,
}

/// A page's durability and cursor commit, running beside the sending of the next page.
type Committing<'a> = Pin<Box<dyn Future<Output = Result<Delivery, PollError>> + Send + 'a>>;

/// One queue entry on its way: a chunk from the wait for its mapping to its acknowledgement,
/// or the fetch failure that ends the queue. `Err` ends the delivery with that outcome.
type Sending<'a, C> = Pin<Box<dyn Future<Output = Result<Sent<C>, Ended>> + Send + 'a>>;

/// How the send stage ends.
type Ended = Result<Delivery, PollError>;

/// An acknowledged chunk: its counts, and the page's end when it was the page's last.
struct Sent<C> {
    indicators: usize,
    error_documents: usize,
    end: Option<PageEnd<C>>,
}

/// What the send stage waits for next.
enum Next<C, E> {
    Committed(Ended),
    Sent(Result<Sent<C>, Ended>),
    Queued(Option<Queued<C, E>>),
}

impl<K: Sink> Deliverer<'_, K> {
    /// Sends the queued chunks, up to [`Sink::sends_in_flight`] at once, and takes their
    /// acknowledgements in queue order. Once a page's last chunk is acknowledged (so every chunk
    /// before it is too), the page is made durable, its cursor committed and the page reported,
    /// while the next chunks are sent: one page at a time, in order (the previous page's commit
    /// is awaited before the next one starts). Waiting for the fsync and the commit stalled the
    /// sender, and with it the mapping behind it, for about a fifth of a page-10 000 run; and
    /// one `Export` at a time left the host idle while each request travelled.
    async fn run<C: serde::Serialize + Clone + Send + Sync + 'static>(
        &self,
        mut queue: mpsc::Receiver<Queued<C, K::Encoded>>,
    ) -> Ended {
        let depth = self.sink.sends_in_flight().max(1);
        let (mut indicators, mut error_documents) = (0, 0);
        let mut committing: Option<Committing<'_>> = None;
        let mut sending: FuturesOrdered<Sending<'_, C>> = FuturesOrdered::new();
        let mut open = true;
        let outcome = loop {
            if !open && sending.is_empty() {
                break Ok(Delivery::Acked);
            }
            let next = tokio::select! {
                biased;
                done = maybe(committing.as_mut()) => Next::Committed(done),
                Some(sent) = sending.next(), if !sending.is_empty() => Next::Sent(sent),
                queued = queue.recv(), if open && sending.len() < depth => Next::Queued(queued),
            };
            match next {
                Next::Committed(done) => {
                    committing = None;
                    if let Err(outcome) = acked(done) {
                        break outcome;
                    }
                }
                Next::Queued(None) => open = false,
                Next::Queued(Some(Queued::Failed(e))) => {
                    // Fetching stopped for good: the chunks ahead of it are delivered first.
                    open = false;
                    sending.push_back(Box::pin(std::future::ready(Err(Err(e)))));
                }
                Next::Queued(Some(Queued::Chunk { mapped, end })) => {
                    sending.push_back(Box::pin(self.send_chunk(mapped, end)));
                }
                Next::Sent(Err(outcome)) => break outcome,
                Next::Sent(Ok(sent)) => {
                    indicators += sent.indicators;
                    error_documents += sent.error_documents;
                    let Some(end) = sent.end else { continue };
                    if let Some(previous) = committing.take()
                        && let Err(outcome) = acked(previous.await)
                    {
                        return outcome;
                    }
                    let counts = (
                        std::mem::take(&mut indicators),
                        std::mem::take(&mut error_documents),
                    );
                    committing = Some(Box::pin(self.commit_page(end, counts)));
                }
            }
        };
        // Whatever ended the loop, the page already acknowledged whole is still committed.
        // Chunks still in flight are dropped unacknowledged (only a sink that may abandon a
        // send has more than one): their page is sent again after a restart.
        drop(sending);
        if let Some(last) = committing
            && let Err(failed) = acked(last.await)
        {
            return failed;
        }
        outcome
    }

    /// Waits for a chunk to be mapped and sends it, retrying until it is acknowledged.
    async fn send_chunk<C>(
        &self,
        mapped: JoinHandle<MappedChunk<K::Encoded>>,
        end: Option<PageEnd<C>>,
    ) -> Result<Sent<C>, Ended> {
        let mapped = joined(mapped).await;
        if mapped.indicators > 0 {
            match self
                .retry(Stage::Send, || self.sink.send_encoded(&mapped.encoded))
                .await
            {
                Ok(Delivery::Acked) => {}
                // Stopping while the sink refuses (the page was never acknowledged whole, so
                // its cursor stays where it was and it is fetched again on restart).
                other => return Err(other),
            }
        }
        Ok(Sent {
            indicators: mapped.indicators,
            error_documents: mapped.error_documents,
            end,
        })
    }

    /// Makes an acknowledged page durable, commits its cursor and reports it.
    async fn commit_page<C: serde::Serialize + Clone + Send + 'static>(
        &self,
        end: PageEnd<C>,
        (indicators, error_documents): (usize, usize),
    ) -> Result<Delivery, PollError> {
        if self.retry(Stage::Send, || self.sink.make_durable()).await? == Delivery::Abandoned {
            return Ok(Delivery::Abandoned);
        }
        commit(self.state, self.cursor_key, &self.stream.id, &end.cursor).await?;
        PageDelivered {
            stream: &self.stream.id,
            platform: self.platform,
            indicators,
            error_documents,
            duplicates_dropped: end.duplicates_dropped,
            future_timestamps: end.future_timestamps,
            invalid_utf8: end.invalid_utf8,
            elapsed: end.started.elapsed(),
            cursor: &end.reported.described,
            backfill_progress: end.reported.progress,
        }
        .emit(self.counters);
        Ok(Delivery::Acked)
    }

    /// Runs one sink operation until it succeeds, retrying failures with backoff. Nothing is
    /// ever dropped: with `once`, the loop gives up (the cursor stays put) after
    /// `once_max_attempts`; on shutdown an abandon-safe sink's attempt is abandoned.
    async fn retry<F, Fut>(&self, stage: Stage, mut attempt: F) -> Result<Delivery, PollError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), SinkError>>,
    {
        let mut backoff = self.schedule.backoff();
        let mut attempts = 0;
        loop {
            let outcome = if self.sink.abandon_safe() {
                tokio::select! {
                    r = attempt() => Some(r),
                    () = self.shutdown.cancelled() => None,
                }
            } else {
                Some(attempt().await)
            };
            let error = match outcome {
                Some(Ok(())) => return Ok(Delivery::Acked),
                Some(Err(e)) => e,
                None => return Ok(Delivery::Abandoned),
            };
            attempts += 1;
            if self.schedule.once && attempts >= self.schedule.once_max_attempts {
                return Err(PollError::GaveUp {
                    stream: self.stream.id.clone(),
                    stage,
                    attempts,
                    last: error.to_string(),
                });
            }
            let delay = backoff.next_delay();
            AttemptFailed {
                stream: &self.stream.id,
                stage,
                error: &error,
                retry_in: Some(delay),
            }
            .emit(self.counters);
            tokio::select! {
                () = self.shutdown.cancelled() => return Ok(Delivery::Abandoned),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
}

/// The running commit's outcome when it ends; never, when none is running.
async fn maybe(committing: Option<&mut Committing<'_>>) -> Ended {
    match committing {
        Some(commit) => commit.await,
        None => std::future::pending().await,
    }
}

/// `Ok` when a page's commit succeeded; otherwise the outcome that ends the delivery.
fn acked(outcome: Ended) -> Result<(), Ended> {
    match outcome {
        Ok(Delivery::Acked) => Ok(()),
        other => Err(other),
    }
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

/// What became of a page (or a sweep) handed to the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// The sink acknowledged it: commit its cursor.
    Acked,
    /// Shutdown came while the sink kept refusing it: do not commit.
    Abandoned,
}

/// The Agent stamps every event with its publish time; the pipelines overwrite it when the
/// indicator has a usable timestamp. Do the same for documents the mapping left without one.
fn with_agent_timestamp(mut event: EcsEvent, now: chrono::DateTime<chrono::Utc>) -> EcsEvent {
    if !event.doc.contains_key("@timestamp") {
        let text = now.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
        event
            .doc
            .insert("@timestamp", serde_json::Value::from(text));
        event.timestamp = Some(now);
    }
    event
}

fn has_error(event: &EcsEvent) -> bool {
    event.doc.contains_path(&["error", "message"])
}
