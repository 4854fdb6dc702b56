//! The poll pipeline's contract, with a scripted source and a recording sink: chunks arrive in
//! order, a page's cursor is committed only once every chunk of it is acknowledged, a failed
//! chunk leaves its page uncommitted, mapping runs on the blocking pool, and what is held in
//! memory stays bounded (one page fetched ahead, a fixed number of chunks in flight).
//!
//! The bounds are checked where they could be broken (at each fetch, at each mapped chunk),
//! not by timing. The loop's own timers (retry backoff, the interval between sweeps) are
//! checked on tokio's paused clock: the fakes are in memory, so those are the only timers.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::ThreadId;
use std::time::Duration;

use serde_json::value::RawValue;
use ti_sidecar::http::{HttpError, PageText};
use ti_sidecar::ingest::EcsEvent;
use ti_sidecar::policy::StreamIdentity;
use ti_sidecar::poll::{CHUNK_ITEMS, Outcome, PollError, Poller, Schedule, chunks_in_flight};
use ti_sidecar::sink::{Sink, SinkError};
use ti_sidecar::source::{FetchError, Mapper, Page, RawItems, Source};
use ti_sidecar::state::StateStore;
use ti_sidecar::telemetry::StreamCounters;
use tokio_util::sync::CancellationToken;

/// What the fakes observed, shared with the test.
#[derive(Default)]
struct Observed {
    /// Page bodies handed out, to count those still alive.
    bodies: Mutex<Vec<Weak<PageText>>>,
    /// The most earlier page bodies alive when a fetch started.
    max_bodies_alive_at_fetch: AtomicUsize,
    /// Chunks mapped so far, and sent so far.
    mapped: AtomicUsize,
    sent: AtomicUsize,
    /// The most chunks mapped but not yet sent.
    max_mapped_ahead: AtomicUsize,
    /// Threads the mapper ran on.
    map_threads: Mutex<Vec<ThreadId>>,
    /// Items in the order the sink acknowledged them, with the committed cursor at each send.
    delivered: Mutex<Vec<u64>>,
    committed_at_send: Mutex<Vec<(u64, Option<u64>)>>,
    /// When each fetch, and each send attempt, was made (on `tokio::time`).
    fetched_at: Mutex<Vec<tokio::time::Instant>>,
    sent_at: Mutex<Vec<tokio::time::Instant>>,
    /// The fetches made when each sweep was told it had ended.
    sweeps_ended_after: Mutex<Vec<usize>>,
    /// Sends under way now, and the most at once.
    sending: AtomicUsize,
    max_sending: AtomicUsize,
    /// The items acknowledged when each `make_durable` was called (before each commit).
    acked_at_durable: Mutex<Vec<Vec<u64>>>,
}

/// The waits between consecutive instants.
fn gaps(at: &Mutex<Vec<tokio::time::Instant>>) -> Vec<Duration> {
    at.lock().unwrap().windows(2).map(|w| w[1] - w[0]).collect()
}

/// Asserts the waits of a jittered backoff from 1 s doubling: each in the upper half of its
/// step (1, 2, 4 s), give or take the millisecond the paused clock rounds a timer to.
fn assert_backoff_from_one_second(waits: &[Duration]) {
    let mut step = Duration::from_secs(1);
    for wait in waits {
        assert!(
            *wait >= step / 2 && *wait <= step + Duration::from_millis(2),
            "{wait:?} for a step of {step:?}: {waits:?}"
        );
        step *= 2;
    }
}

/// `pages` pages of `per_page` items `{"n":N}`; the cursor is the number of pages delivered.
/// The first `failing_fetches` fetches fail with a 503; `stop` cancels its token at that fetch.
struct ScriptedSource {
    pages: u64,
    per_page: u64,
    observed: Arc<Observed>,
    failing_fetches: usize,
    stop: Option<(usize, CancellationToken)>,
}

impl Source for ScriptedSource {
    type Cursor = u64;

    fn platform(&self) -> &'static str {
        "scripted"
    }

    fn initial_cursor(&self) -> u64 {
        0
    }

    async fn fetch(&mut self, cursor: &u64) -> Result<Page<u64>, FetchError> {
        let fetches = {
            let mut at = self.observed.fetched_at.lock().unwrap();
            at.push(tokio::time::Instant::now());
            at.len()
        };
        if let Some((_, stop)) = self.stop.as_ref().filter(|(at, _)| *at == fetches) {
            stop.cancel();
        }
        if self.failing_fetches > 0 {
            self.failing_fetches -= 1;
            return Err(FetchError::Http(HttpError::Server {
                status: 503,
                message: "scripted failure".to_owned(),
            }));
        }
        let alive = {
            let mut bodies = self.observed.bodies.lock().unwrap();
            bodies.retain(|b| b.strong_count() > 0);
            bodies.len()
        };
        self.observed
            .max_bodies_alive_at_fetch
            .fetch_max(alive, Ordering::SeqCst);
        let first = cursor * self.per_page;
        let items: Vec<String> = (first..first + self.per_page)
            .map(|n| format!(r#"{{"n":{n}}}"#))
            .collect();
        let body = Arc::new(PageText::from(format!("[{}]", items.join(","))));
        self.observed
            .bodies
            .lock()
            .unwrap()
            .push(Arc::downgrade(&body));
        let raw: Vec<&RawValue> = serde_json::from_str(&body).unwrap();
        let items = RawItems::new(Arc::clone(&body), &raw);
        Ok(Page {
            items,
            cursor: cursor + 1,
            more: cursor + 1 < self.pages,
            duplicates_dropped: 0,
            future_timestamps: 0,
            invalid_utf8: 0,
        })
    }

    fn end_sweep(&mut self) {
        let fetches = self.observed.fetched_at.lock().unwrap().len();
        self.observed
            .sweeps_ended_after
            .lock()
            .unwrap()
            .push(fetches);
    }

    fn mapper(&self) -> Mapper {
        let observed = Arc::clone(&self.observed);
        Arc::new(move |raw: &str| {
            observed
                .map_threads
                .lock()
                .unwrap()
                .push(std::thread::current().id());
            let doc: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(raw).unwrap();
            EcsEvent {
                id: None,
                timestamp: None,
                doc: doc.into(),
            }
        })
    }
}

/// Records what it is sent; fails the sends listed in `fail` (by 1-based send number).
struct RecordingSink {
    observed: Arc<Observed>,
    state: StateStore,
    fail: Mutex<VecDeque<usize>>,
    /// Time each send takes, so that upstream stages have every chance to run ahead.
    send_time: Duration,
    /// Time each `make_durable` takes (a file's fsync).
    durable_time: Duration,
    /// Sends it takes at once.
    in_flight: usize,
    /// A chunk starting at this item is refused, every time.
    refuse: Option<u64>,
    /// A chunk starting at this item takes this long instead of `send_time`.
    slow: Option<(u64, Duration)>,
}

impl Sink for RecordingSink {
    type Encoded = Vec<u64>;

    fn encode_each(
        &self,
        _: &str,
        _: &StreamIdentity,
        events: impl Iterator<Item = EcsEvent>,
    ) -> Vec<u64> {
        let mapped = self.observed.mapped.fetch_add(1, Ordering::SeqCst) + 1;
        let ahead = mapped - self.observed.sent.load(Ordering::SeqCst);
        self.observed
            .max_mapped_ahead
            .fetch_max(ahead, Ordering::SeqCst);
        events
            .map(|e| e.doc.to_map()["n"].as_u64().unwrap())
            .collect()
    }

    async fn make_durable(&self) -> Result<(), SinkError> {
        let acked = self.observed.delivered.lock().unwrap().clone();
        self.observed.acked_at_durable.lock().unwrap().push(acked);
        tokio::time::sleep(self.durable_time).await;
        Ok(())
    }

    fn sends_in_flight(&self) -> usize {
        self.in_flight
    }

    async fn send_encoded(&self, items: &Vec<u64>) -> Result<(), SinkError> {
        self.observed
            .sent_at
            .lock()
            .unwrap()
            .push(tokio::time::Instant::now());
        let now = self.observed.sending.fetch_add(1, Ordering::SeqCst) + 1;
        self.observed.max_sending.fetch_max(now, Ordering::SeqCst);
        let time = match self.slow {
            Some((first, time)) if first == items[0] => time,
            _ => self.send_time,
        };
        tokio::time::sleep(time).await;
        self.observed.sending.fetch_sub(1, Ordering::SeqCst);
        if self.refuse == Some(items[0]) {
            return Err(SinkError::Io {
                target: "recording".to_owned(),
                source: std::io::Error::other("scripted refusal"),
            });
        }
        let attempt = self.observed.sent.load(Ordering::SeqCst) + 1;
        let committed = self.state.load::<u64>("k").unwrap();
        {
            let mut fail = self.fail.lock().unwrap();
            if fail.front() == Some(&attempt) {
                fail.pop_front();
                return Err(SinkError::Io {
                    target: "recording".to_owned(),
                    source: std::io::Error::other("scripted failure"),
                });
            }
        }
        self.observed.sent.fetch_add(1, Ordering::SeqCst);
        self.observed
            .committed_at_send
            .lock()
            .unwrap()
            .push((items[0], committed));
        self.observed
            .delivered
            .lock()
            .unwrap()
            .extend_from_slice(items);
        Ok(())
    }
}

struct Run {
    observed: Arc<Observed>,
    state: StateStore,
    result: Result<Outcome, PollError>,
}

impl Run {
    /// Asserts the run gave up sending, with page 1 committed and page 2 not.
    fn assert_gave_up_sending_at_page_2(&self) {
        assert!(
            matches!(
                self.result,
                Err(PollError::GaveUp {
                    stage: ti_sidecar::telemetry::Stage::Send,
                    ..
                })
            ),
            "{:?}",
            self.result.as_ref().err()
        );
        assert_eq!(
            self.state.load::<u64>("k").unwrap(),
            Some(1),
            "page 1 committed, page 2 not"
        );
    }

    /// Asserts the sink acknowledged items `0..n`: all, once, in order.
    fn assert_delivered(&self, n: u64) {
        assert_eq!(
            *self.observed.delivered.lock().unwrap(),
            (0..n).collect::<Vec<_>>(),
            "all, once, in order"
        );
    }
}

/// What a run is given: the scripted source and sink, and the loop's pacing.
struct Script {
    pages: u64,
    per_page: u64,
    /// Sends that fail, by 1-based number of the send being attempted.
    fail: Vec<usize>,
    send_time: Duration,
    durable_time: Duration,
    failing_fetches: usize,
    /// Shut down at this fetch (1-based).
    stop_at_fetch: Option<usize>,
    schedule: Schedule,
    /// Sends the sink takes at once.
    in_flight: usize,
    /// The chunk starting at this item is refused, every time.
    refuse: Option<u64>,
    /// The chunk starting at this item takes this long to send.
    slow: Option<(u64, Duration)>,
}

impl Script {
    /// `pages` pages of `per_page` items, once, giving up at the first failure, retrying
    /// after 1 ms otherwise.
    fn new(pages: u64, per_page: u64) -> Self {
        let mut schedule = Schedule::every(Duration::from_secs(3600), true);
        schedule.retry_delay = Duration::from_millis(1);
        schedule.once_max_attempts = 1;
        Self {
            pages,
            per_page,
            fail: Vec::new(),
            send_time: Duration::ZERO,
            durable_time: Duration::ZERO,
            failing_fetches: 0,
            stop_at_fetch: None,
            schedule,
            in_flight: 1,
            refuse: None,
            slow: None,
        }
    }

    /// Retries after 1 s doubling, and gives up only after 5 attempts.
    fn retrying_from_one_second(mut self) -> Self {
        self.schedule.retry_delay = Duration::from_secs(1);
        self.schedule.once_max_attempts = 5;
        self
    }

    async fn run(self, state: StateStore) -> Run {
        let observed = Arc::new(Observed::default());
        let sink = Arc::new(RecordingSink {
            observed: Arc::clone(&observed),
            state: state.clone(),
            fail: Mutex::new(self.fail.into_iter().collect()),
            send_time: self.send_time,
            durable_time: self.durable_time,
            in_flight: self.in_flight,
            refuse: self.refuse,
            slow: self.slow,
        });
        let shutdown = CancellationToken::new();
        let poller = Poller {
            source: ScriptedSource {
                pages: self.pages,
                per_page: self.per_page,
                observed: Arc::clone(&observed),
                failing_fetches: self.failing_fetches,
                stop: self.stop_at_fetch.map(|n| (n, shutdown.clone())),
            },
            sink,
            state: state.clone(),
            cursor_key: "k".to_owned(),
            input_id: "input".to_owned(),
            stream: StreamIdentity {
                id: "stream".to_owned(),
                dataset: "ti.test".to_owned(),
                namespace: "default".to_owned(),
            },
            schedule: self.schedule,
            counters: Arc::new(StreamCounters::default()),
        };
        let result = poller.run(shutdown).await;
        Run {
            observed,
            state,
            result,
        }
    }
}

async fn run(
    state: StateStore,
    pages: u64,
    per_page: u64,
    fail: &[usize],
    send_time: Duration,
) -> Run {
    Script {
        fail: fail.to_vec(),
        send_time,
        ..Script::new(pages, per_page)
    }
    .run(state)
    .await
}

fn store() -> (tempfile::TempDir, StateStore) {
    let dir = tempfile::tempdir().unwrap();
    let state = StateStore::open(dir.path()).unwrap();
    (dir, state)
}

#[tokio::test(start_paused = true)]
async fn chunks_arrive_in_order_and_a_page_commits_only_after_its_last_chunk() {
    let (_dir, state) = store();
    let per_page = CHUNK_ITEMS as u64 * 2 + 200;
    let r = run(state, 3, per_page, &[], Duration::ZERO).await;
    r.result.unwrap();
    let delivered = r.observed.delivered.lock().unwrap().clone();
    assert_eq!(
        delivered,
        (0..3 * per_page).collect::<Vec<_>>(),
        "all, once, in order"
    );
    // Three chunks a page (500, 500, 200); at each send, never the page being sent is
    // committed, and at most the page before it is not yet (it is committed while this one is
    // sent).
    let at_send = r.observed.committed_at_send.lock().unwrap().clone();
    assert_eq!(at_send.len(), 9);
    for (first, committed) in at_send {
        let page = first / per_page;
        let committed = committed.unwrap_or(0);
        assert!(
            committed <= page && committed + 1 >= page,
            "chunk starting at {first}: {committed} pages committed"
        );
    }
    assert_eq!(r.state.load::<u64>("k").unwrap(), Some(3));
}

#[tokio::test(start_paused = true)]
async fn a_page_is_made_durable_and_committed_while_the_next_one_is_sent() {
    let (_dir, state) = store();
    let per_page = CHUNK_ITEMS as u64 * 2;
    // An fsync much slower than a send: waiting for it would hold every next chunk back.
    let r = Script {
        send_time: Duration::from_millis(1),
        durable_time: Duration::from_millis(50),
        ..Script::new(4, per_page)
    }
    .run(state)
    .await;
    r.assert_delivered(4 * per_page);
    assert_eq!(
        r.state.load::<u64>("k").unwrap(),
        Some(4),
        "every page committed"
    );
    let at_send = r.observed.committed_at_send.lock().unwrap().clone();
    // Page p's chunks go out while page p - 1 is still being made durable, never further ahead.
    for (first, committed) in &at_send {
        let page = first / per_page;
        assert_eq!(
            committed.unwrap_or(0),
            page.saturating_sub(1),
            "chunk starting at {first}"
        );
    }
    // So the sends did not wait for the fsyncs: from the first send to the last, two fsyncs
    // and a few sends (waiting for each would have been three fsyncs).
    let sent = r.observed.sent_at.lock().unwrap().clone();
    let span = sent[sent.len() - 1] - sent[0];
    assert!(
        span < Duration::from_millis(2 * 50 + 25),
        "sends took {span:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_chunk_that_fails_leaves_its_page_uncommitted_and_a_rerun_resumes_at_that_page() {
    let (_dir, state) = store();
    let per_page = CHUNK_ITEMS as u64 * 2;
    // Send 4 is page 2's second chunk (pages of two chunks); `once` gives up at once.
    let first = run(state.clone(), 3, per_page, &[4], Duration::ZERO).await;
    // Page 2's first chunk was acknowledged, its second not.
    first.assert_gave_up_sending_at_page_2();
    let again = run(state, 3, per_page, &[], Duration::ZERO).await;
    again.result.unwrap();
    let resent = again.observed.delivered.lock().unwrap().clone();
    assert_eq!(
        resent,
        (per_page..3 * per_page).collect::<Vec<_>>(),
        "no gap: the rerun starts at page 2; the only repeats are page 2's acknowledged chunk"
    );
}

#[tokio::test(start_paused = true)]
async fn chunks_travel_several_at_once_and_a_page_commits_only_behind_all_of_its_chunks() {
    let (_dir, state) = store();
    let per_page = CHUNK_ITEMS as u64 * 2;
    // The first chunk answers last: the chunks after it, page 2's included, are acknowledged
    // while it travels.
    let r = Script {
        send_time: Duration::from_millis(5),
        slow: Some((0, Duration::from_millis(50))),
        in_flight: 3,
        ..Script::new(4, per_page)
    }
    .run(state)
    .await;
    r.result.as_ref().unwrap();
    assert_eq!(
        r.observed.max_sending.load(Ordering::SeqCst),
        3,
        "three sends at once, never more"
    );
    let mut delivered = r.observed.delivered.lock().unwrap().clone();
    assert_ne!(delivered[0], 0, "a later chunk was acknowledged first");
    delivered.sort_unstable();
    assert_eq!(
        delivered,
        (0..4 * per_page).collect::<Vec<_>>(),
        "all, once"
    );
    assert_eq!(r.state.load::<u64>("k").unwrap(), Some(4));
    // Page p is made durable and committed only once every item of pages 1..=p is
    // acknowledged, whichever answered first.
    let at_durable = r.observed.acked_at_durable.lock().unwrap().clone();
    assert_eq!(at_durable.len(), 4, "one commit a page");
    for (page, acked) in (1..).zip(at_durable) {
        let mut acked = acked;
        acked.sort_unstable();
        let through = page * per_page;
        assert!(
            acked.iter().take_while(|&&n| n < through).count() as u64 == through,
            "page {page} committed before all of its items were acknowledged"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_refused_chunk_among_several_in_flight_leaves_its_page_uncommitted_and_a_rerun_resumes_there()
 {
    let (_dir, state) = store();
    let per_page = CHUNK_ITEMS as u64 * 2;
    // Page 2's first chunk is refused; `once` gives up at once, while the chunks behind it
    // may already be acknowledged.
    let first = Script {
        send_time: Duration::from_millis(5),
        in_flight: 3,
        refuse: Some(per_page),
        ..Script::new(3, per_page)
    }
    .run(state.clone())
    .await;
    first.assert_gave_up_sending_at_page_2();
    // Duplicates are bounded by what was in flight beside the refused chunk.
    let past = first
        .observed
        .delivered
        .lock()
        .unwrap()
        .iter()
        .filter(|&&n| n >= per_page)
        .count();
    assert!(
        past <= 2 * CHUNK_ITEMS,
        "{past} items acknowledged past the refusal"
    );
    let again = run(state, 3, per_page, &[], Duration::ZERO).await;
    again.result.unwrap();
    assert_eq!(
        *again.observed.delivered.lock().unwrap(),
        (per_page..3 * per_page).collect::<Vec<_>>(),
        "no gap: the rerun starts at page 2"
    );
}

#[test]
fn mapping_never_runs_on_the_async_worker() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let worker = std::thread::current().id();
    let (_dir, state) = store();
    let r = runtime.block_on(run(state, 2, 1000, &[], Duration::ZERO));
    r.result.unwrap();
    let threads = r.observed.map_threads.lock().unwrap().clone();
    assert_eq!(threads.len(), 2000);
    assert!(
        threads.iter().all(|t| *t != worker),
        "every item was mapped off the thread that runs the async tasks"
    );
}

#[tokio::test(start_paused = true)]
async fn one_page_is_fetched_ahead_and_chunks_in_flight_are_bounded() {
    let (_dir, state) = store();
    // A slow sink: on the paused clock, its 5 ms pass only once every other stage is stuck
    // (mapping on the blocking pool holds the clock), so upstream stages run as far ahead as
    // the pipeline lets them, every time.
    let r = run(
        state,
        8,
        CHUNK_ITEMS as u64 * 3,
        &[],
        Duration::from_millis(5),
    )
    .await;
    r.result.unwrap();
    assert_eq!(
        r.observed.delivered.lock().unwrap().len(),
        8 * 3 * CHUNK_ITEMS
    );
    // When a fetch starts, only the page being mapped is held: the one before it was mapped
    // whole (and freed) before that page was taken. Never more, however slow the sink.
    let bodies = r.observed.max_bodies_alive_at_fetch.load(Ordering::SeqCst);
    assert_eq!(bodies, 1, "earlier pages alive when a fetch started");
    // Mapped ahead of the sink: the queue's slots plus the chunk being sent.
    let ahead = r.observed.max_mapped_ahead.load(Ordering::SeqCst);
    assert!(
        ahead <= chunks_in_flight() + 1,
        "{ahead} chunks mapped ahead of the sink (bound {})",
        chunks_in_flight() + 1
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_fetch_is_retried_after_the_jittered_backoff() {
    let (_dir, state) = store();
    let r = Script {
        failing_fetches: 3,
        ..Script::new(1, 10).retrying_from_one_second()
    }
    .run(state)
    .await;
    r.result.as_ref().unwrap();
    r.assert_delivered(10);
    let waits = gaps(&r.observed.fetched_at);
    assert_eq!(waits.len(), 3, "three failures, then the page");
    assert_backoff_from_one_second(&waits);
}

#[tokio::test(start_paused = true)]
async fn a_refused_send_is_retried_after_the_jittered_backoff_and_nothing_is_lost() {
    let (_dir, state) = store();
    let r = Script {
        // The first chunk is refused three times.
        fail: vec![1, 1, 1],
        ..Script::new(2, 10).retrying_from_one_second()
    }
    .run(state)
    .await;
    r.result.as_ref().unwrap();
    r.assert_delivered(20);
    assert_eq!(r.state.load::<u64>("k").unwrap(), Some(2));
    let waits = gaps(&r.observed.sent_at);
    assert_eq!(waits.len(), 4, "three refusals, then both pages");
    assert_backoff_from_one_second(&waits[..3]);
    assert!(waits[3] < Duration::from_millis(2), "the next page at once");
}

#[tokio::test(start_paused = true)]
async fn without_once_the_next_sweep_starts_one_interval_after_catching_up() {
    let (_dir, state) = store();
    let mut script = Script::new(2, 10);
    script.schedule.once = false;
    // Sweep 1 fetches pages 1 and 2; sweep 2 fetches page 3, and shutdown comes with it.
    script.stop_at_fetch = Some(3);
    let r = script.run(state).await;
    assert_eq!(
        *r.result.as_ref().unwrap(),
        Outcome {
            sweeps: 1,
            interrupted: true
        }
    );
    let waits = gaps(&r.observed.fetched_at);
    assert_eq!(waits.len(), 2);
    // The source lets go of the sweep's buffers as it catches up, not when the next one starts;
    // the interrupted sweep never ended.
    assert_eq!(*r.observed.sweeps_ended_after.lock().unwrap(), [2]);
    assert!(waits[0] < Duration::from_millis(2), "{waits:?}");
    assert!(
        waits[1] >= Duration::from_secs(3600)
            && waits[1] < Duration::from_secs(3600) + Duration::from_millis(2),
        "the interval: {waits:?}"
    );
    // The page fetched as shutdown came is still delivered and committed.
    r.assert_delivered(30);
    assert_eq!(r.state.load::<u64>("k").unwrap(), Some(3));
}
