//! The poll pipeline's contract, with a scripted source and a recording sink: chunks arrive in
//! order, a page's cursor is committed only once every chunk of it is acknowledged, a failed
//! chunk leaves its page uncommitted, mapping runs on the blocking pool, and what is held in
//! memory stays bounded (one page fetched ahead, a fixed number of chunks in flight).
//!
//! The bounds are checked where they could be broken (at each fetch, at each mapped chunk),
//! not by timing.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::ThreadId;
use std::time::Duration;

use serde_json::value::RawValue;
use ti_sidecar::config::StreamIdentity;
use ti_sidecar::ingest::EcsEvent;
use ti_sidecar::poll::{CHUNK_ITEMS, PollError, Poller, Schedule, chunks_in_flight};
use ti_sidecar::sink::{Batch, Sink, SinkError};
use ti_sidecar::source::{FetchError, Mapper, Page, RawItems, Source};
use ti_sidecar::state::StateStore;
use ti_sidecar::telemetry::StreamCounters;
use tokio_util::sync::CancellationToken;

/// What the fakes observed, shared with the test.
#[derive(Default)]
struct Observed {
    /// Page bodies handed out, to count those still alive.
    bodies: Mutex<Vec<Weak<String>>>,
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
}

/// `pages` pages of `per_page` items `{"n":N}`; the cursor is the number of pages delivered.
struct ScriptedSource {
    pages: u64,
    per_page: u64,
    observed: Arc<Observed>,
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
        let body = Arc::new(format!("[{}]", items.join(",")));
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
}

impl Sink for RecordingSink {
    type Encoded = Vec<u64>;

    fn encode(&self, batch: Batch<'_>) -> Vec<u64> {
        let mapped = self.observed.mapped.fetch_add(1, Ordering::SeqCst) + 1;
        let ahead = mapped - self.observed.sent.load(Ordering::SeqCst);
        self.observed
            .max_mapped_ahead
            .fetch_max(ahead, Ordering::SeqCst);
        batch
            .events
            .iter()
            .map(|e| e.doc.to_map()["n"].as_u64().unwrap())
            .collect()
    }

    async fn send_encoded(&self, items: &Vec<u64>) -> Result<(), SinkError> {
        tokio::time::sleep(self.send_time).await;
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
    result: Result<(), PollError>,
}

async fn run(
    state: StateStore,
    pages: u64,
    per_page: u64,
    fail: &[usize],
    send_time: Duration,
) -> Run {
    let observed = Arc::new(Observed::default());
    let sink = Arc::new(RecordingSink {
        observed: Arc::clone(&observed),
        state: state.clone(),
        fail: Mutex::new(fail.iter().copied().collect()),
        send_time,
    });
    let mut schedule = Schedule::every(Duration::from_secs(3600), true);
    schedule.retry_delay = Duration::from_millis(1);
    schedule.once_max_attempts = 1;
    let poller = Poller {
        source: ScriptedSource {
            pages,
            per_page,
            observed: Arc::clone(&observed),
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
        schedule,
        counters: Arc::new(StreamCounters::default()),
    };
    let result = poller.run(CancellationToken::new()).await.map(|_| ());
    Run {
        observed,
        state,
        result,
    }
}

fn store() -> (tempfile::TempDir, StateStore) {
    let dir = tempfile::tempdir().unwrap();
    let state = StateStore::open(dir.path()).unwrap();
    (dir, state)
}

#[tokio::test]
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
    // Three chunks a page (500, 500, 200); at each send, exactly the earlier pages are
    // committed: never the page being sent, never less than every page before it.
    let at_send = r.observed.committed_at_send.lock().unwrap().clone();
    assert_eq!(at_send.len(), 9);
    for (first, committed) in at_send {
        let page = first / per_page;
        assert_eq!(
            committed,
            (page > 0).then_some(page),
            "chunk starting at {first}"
        );
    }
    assert_eq!(r.state.load::<u64>("k").unwrap(), Some(3));
}

#[tokio::test]
async fn a_chunk_that_fails_leaves_its_page_uncommitted_and_a_rerun_resumes_at_that_page() {
    let (_dir, state) = store();
    let per_page = CHUNK_ITEMS as u64 * 2;
    // Send 4 is page 2's second chunk (pages of two chunks); `once` gives up at once.
    let first = run(state.clone(), 3, per_page, &[4], Duration::ZERO).await;
    assert!(
        matches!(
            first.result,
            Err(PollError::GaveUp {
                stage: ti_sidecar::telemetry::Stage::Send,
                ..
            })
        ),
        "{:?}",
        first.result.err()
    );
    assert_eq!(
        first.state.load::<u64>("k").unwrap(),
        Some(1),
        "page 1 committed, page 2 not (its first chunk was acknowledged, its second not)"
    );
    let again = run(state, 3, per_page, &[], Duration::ZERO).await;
    again.result.unwrap();
    let resent = again.observed.delivered.lock().unwrap().clone();
    assert_eq!(
        resent,
        (per_page..3 * per_page).collect::<Vec<_>>(),
        "no gap: the rerun starts at page 2; the only repeats are page 2's acknowledged chunk"
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_page_is_fetched_ahead_and_chunks_in_flight_are_bounded() {
    let (_dir, state) = store();
    // A slow sink: upstream stages run as far ahead as the pipeline lets them.
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
