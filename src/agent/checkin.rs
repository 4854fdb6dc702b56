//! The CheckinV2 stream (spec §4.2, §5.4, §5.6, §5.7).
//!
//! Each stream opens with a `CheckinObserved` carrying the token, `version_info` and
//! `supports = [CheckinChunking]`, queued before the call so it goes out at once. Then a full
//! snapshot of all units is sent whenever something reportable changes (coalesced through the
//! unit manager's `Notify`) and at least every [`CHECKIN_INTERVAL`]. Expected messages are
//! reassembled from chunks and applied. The loop never waits for an expected message: the Agent
//! may stay silent after a reconnect when it considers the state settled.
//!
//! On a break it reopens with backoff (1 s doubling to 30 s, reset after a round that lasted at
//! least a second); units keep running meanwhile. If no stream could be established for
//! `give_up_after`, it returns an error so the process exits and the Agent restarts it with a
//! fresh expected state.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::connection::{AgentClient, error_chain};
use super::units::UnitManager;
use crate::backoff::Backoff;
use crate::proto::{
    CheckinExpected, CheckinObserved, CheckinObservedVersionInfo, ConnectionSupports,
};

/// The longest gap between two check-ins (the Agent's watchdog period is 30 s).
pub(crate) const CHECKIN_INTERVAL: Duration = Duration::from_secs(25);

/// How often health is re-derived to spot DEGRADED/HEALTHY transitions.
const HEALTH_POLL: Duration = Duration::from_secs(1);

/// Reconnect pacing and the give-up bound.
#[derive(Debug, Clone, Copy)]
pub struct Reconnect {
    /// First delay.
    pub initial: Duration,
    /// Cap of the doubling delay.
    pub max: Duration,
    /// Exit after this long without an established stream.
    pub give_up_after: Duration,
}

impl Default for Reconnect {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            give_up_after: Duration::from_secs(300),
        }
    }
}

/// The stream could not be re-established for too long.
#[derive(Debug, thiserror::Error)]
#[error("{stream} stream could not be re-established for {elapsed:?}; last error: {last}")]
pub struct StreamLost {
    /// `CheckinV2` or `Actions`.
    pub stream: &'static str,
    /// How long it has been down.
    pub elapsed: Duration,
    /// The last error.
    pub last: String,
}

/// One long-lived gRPC stream that [`Reconnect::drive`] keeps reopening.
pub trait Session {
    /// The stream's name for logs and errors (`CheckinV2`, `Actions`).
    const NAME: &'static str;

    /// Runs one stream: returns whether it got established, and why it ended.
    fn session(&mut self) -> impl std::future::Future<Output = (bool, String)> + Send;
}

impl Reconnect {
    /// Runs `stream` until `shutdown`, reopening it after 1 s doubling to the cap; fails after
    /// it stayed down for `give_up_after`. The timer runs from when an attempt started (spec
    /// §5.6), and a stream that stayed up resets the delay.
    pub async fn drive<S: Session>(
        &self,
        stream: &mut S,
        shutdown: &CancellationToken,
    ) -> Result<(), StreamLost> {
        let mut backoff = Backoff::clamped(self.initial, self.max, false);
        let mut down_since: Option<Instant> = None;
        loop {
            let started = Instant::now();
            let (established, error) = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                r = stream.session() => r,
            };
            // Down since this attempt started, or, when the stream was up, since it ended.
            let since = if established || started.elapsed() >= Duration::from_secs(10) {
                *down_since.insert(Instant::now())
            } else {
                *down_since.get_or_insert(started)
            };
            // A round that lasted longer than its delay (the stream was up) starts over.
            if started.elapsed() >= backoff.peek() + Duration::from_secs(1) {
                backoff.reset();
            }
            let delay = backoff.next_delay();
            tracing::warn!(
                retry_in_ms = delay.as_millis() as u64,
                "{} stream ended: {error}",
                S::NAME
            );
            if since.elapsed() >= self.give_up_after {
                return Err(StreamLost {
                    stream: S::NAME,
                    elapsed: since.elapsed(),
                    last: error,
                });
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep_until(started + delay) => {}
            }
        }
    }
}

/// Reassembles chunked `CheckinExpected` messages (spec §5.7).
#[derive(Debug, Default)]
pub(crate) struct ChunkAssembler {
    pending: Option<CheckinExpected>,
}

fn ts_key(t: &prost_types::Timestamp) -> (i64, i32) {
    (t.seconds, t.nanos)
}

impl ChunkAssembler {
    /// Feeds one received message; returns a complete expected state when there is one.
    pub fn push(&mut self, msg: CheckinExpected) -> Option<CheckinExpected> {
        let Some(ts) = msg.units_timestamp else {
            // Not chunked: complete as is; any partial set is discarded.
            self.pending = None;
            return Some(msg);
        };
        match &mut self.pending {
            Some(first) => {
                let current = first
                    .units_timestamp
                    .as_ref()
                    .map(ts_key)
                    .unwrap_or_default();
                let key = ts_key(&ts);
                if key < current {
                    return None; // a chunk of an older set
                }
                if key > current {
                    // A newer set restarts reassembly.
                    return self.start(msg);
                }
                if msg.units.is_empty() {
                    let mut done = self.pending.take()?;
                    done.units_timestamp = None;
                    return Some(done);
                }
                first.units.extend(msg.units);
                None
            }
            None => self.start(msg),
        }
    }

    fn start(&mut self, msg: CheckinExpected) -> Option<CheckinExpected> {
        if msg.units.is_empty() {
            // A set with no units at all is a first-and-final chunk.
            let mut done = msg;
            done.units_timestamp = None;
            self.pending = None;
            return Some(done);
        }
        self.pending = Some(msg);
        None
    }
}

/// The `version_info` we send on the first message of each stream.
pub fn version_info() -> CheckinObservedVersionInfo {
    let mut meta = BTreeMap::new();
    meta.insert("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned());
    if let Some(commit) = option_env!("TI_SIDECAR_COMMIT") {
        meta.insert("commit".to_owned(), commit.to_owned());
    }
    meta.insert(
        "build_profile".to_owned(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
        .to_owned(),
    );
    CheckinObservedVersionInfo {
        name: "ti-sidecar".to_owned(),
        meta: meta.into_iter().collect(),
        build_hash: option_env!("TI_SIDECAR_COMMIT").unwrap_or("").to_owned(),
    }
}

/// The CheckinV2 side of the component.
pub(crate) struct CheckinLoop {
    /// The client (shared channel).
    pub client: AgentClient,
    /// The component token (a secret: never logged).
    pub token: String,
    /// Units to report and to drive.
    pub units: UnitManager,
    /// Reconnect pacing.
    pub reconnect: Reconnect,
}

impl CheckinLoop {
    fn observed(&self, first: bool) -> CheckinObserved {
        let snapshot = self.units.observed();
        CheckinObserved {
            token: self.token.clone(),
            units: snapshot.units,
            version_info: first.then(version_info),
            features_idx: snapshot.features_idx,
            component_idx: snapshot.component_idx,
            units_timestamp: None,
            supports: if first {
                vec![ConnectionSupports::CheckinChunking as i32]
            } else {
                Vec::new()
            },
            pid: u64::from(std::process::id()),
        }
    }

    /// Runs until `shutdown`, or fails after the stream stayed down for `give_up_after`.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), StreamLost> {
        let reconnect = self.reconnect;
        reconnect.drive(&mut self, &shutdown).await
    }

    /// One stream: returns whether it got established, and why it ended.
    async fn open_session(&mut self) -> (bool, String) {
        let (tx, rx) = mpsc::channel::<CheckinObserved>(16);
        let first = self.observed(true);
        let mut last_key = self.units.observed().change_key();
        if tx.send(first).await.is_err() {
            return (false, "internal: outbound queue closed".into());
        }
        let mut last_sent = Instant::now();
        let mut assembler = ChunkAssembler::default();
        let mut client = self.client.clone();
        let call = client.checkin_v2(ReceiverStream::new(rx));
        tokio::pin!(call);
        let mut inbound = None;
        let mut established = false;
        let mut health_tick = tokio::time::interval(HEALTH_POLL);
        health_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut send_now = false;
            tokio::select! {
                r = &mut call, if inbound.is_none() => match r {
                    Ok(response) => {
                        established = true;
                        tracing::info!("CheckinV2 stream established");
                        inbound = Some(response.into_inner());
                    }
                    Err(status) => return (established, format!("{}: {}", status.code(), status.message())),
                },
                msg = next_message(&mut inbound), if inbound.is_some() => match msg {
                    Ok(Some(expected)) => {
                        established = true;
                        if let Some(complete) = assembler.push(expected) {
                            tracing::debug!(units = complete.units.len() as u64, "expected state received");
                            self.units.apply(complete);
                            // Answer only when the report changed (an idx to acknowledge, a
                            // state): the Agent answers every check-in while any unit is not
                            // HEALTHY, so answering every expected message would ping-pong.
                            send_now = self.units.observed().change_key() != last_key;
                        }
                    }
                    Ok(None) => return (established, "closed by the Agent".into()),
                    Err(status) => return (established, format!("{}: {}", status.code(), status.message())),
                },
                () = self.units.changed() => {
                    send_now = self.units.observed().change_key() != last_key;
                }
                _ = health_tick.tick() => {
                    send_now = self.units.observed().change_key() != last_key;
                }
                () = tokio::time::sleep_until(last_sent + CHECKIN_INTERVAL) => send_now = true,
            }
            if send_now {
                let msg = self.observed(false);
                last_key = self.units.observed().change_key();
                // A full queue means the transport is stuck: give up on this stream.
                if tx.try_send(msg).is_err() {
                    return (established, "outbound check-ins are not being sent".into());
                }
                last_sent = Instant::now();
            }
        }
    }
}

async fn next_message(
    inbound: &mut Option<tonic::Streaming<CheckinExpected>>,
) -> Result<Option<CheckinExpected>, tonic::Status> {
    match inbound {
        Some(s) => s.message().await,
        None => std::future::pending().await,
    }
}

/// Used by the actions loop too: the error text of a failed call.
pub(crate) fn status_text(status: &tonic::Status) -> String {
    let mut text = format!("{}: {}", status.code(), status.message());
    if let Some(source) = std::error::Error::source(status) {
        text.push_str(": ");
        text.push_str(&error_chain(source));
    }
    text
}

impl Session for CheckinLoop {
    const NAME: &'static str = "CheckinV2";

    fn session(&mut self) -> impl std::future::Future<Output = (bool, String)> + Send {
        self.open_session()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::UnitExpected;
    use prost_types::Timestamp;

    fn unit(id: &str) -> UnitExpected {
        UnitExpected {
            id: id.into(),
            ..Default::default()
        }
    }

    fn chunk(ts: i64, units: &[&str]) -> CheckinExpected {
        CheckinExpected {
            units: units.iter().map(|u| unit(u)).collect(),
            units_timestamp: Some(Timestamp {
                seconds: ts,
                nanos: 0,
            }),
            features_idx: if units.first() == Some(&"a") { 7 } else { 0 },
            ..Default::default()
        }
    }

    fn ids(m: &CheckinExpected) -> Vec<&str> {
        m.units.iter().map(|u| u.id.as_str()).collect()
    }

    #[test]
    fn unchunked_passes_through_and_discards_partial() {
        let mut a = ChunkAssembler::default();
        assert!(a.push(chunk(5, &["a"])).is_none());
        let plain = CheckinExpected {
            units: vec![unit("x")],
            ..Default::default()
        };
        assert_eq!(ids(&a.push(plain).expect("complete")), vec!["x"]);
        // The partial set was discarded: its final chunk completes nothing with "a".
        assert!(a.push(chunk(5, &[])).is_some_and(|m| m.units.is_empty()));
    }

    #[test]
    fn chunks_reassemble_in_order_keeping_first_chunk_fields() {
        let mut a = ChunkAssembler::default();
        assert!(a.push(chunk(5, &["a", "b"])).is_none());
        assert!(a.push(chunk(5, &["c"])).is_none());
        assert!(a.push(chunk(4, &["old"])).is_none(), "older chunk ignored");
        let done = a.push(chunk(5, &[])).expect("final chunk completes");
        assert_eq!(ids(&done), vec!["a", "b", "c"]);
        assert_eq!(done.features_idx, 7);
        assert!(done.units_timestamp.is_none());
    }

    #[test]
    fn newer_set_restarts() {
        let mut a = ChunkAssembler::default();
        assert!(a.push(chunk(5, &["a"])).is_none());
        assert!(a.push(chunk(6, &["n"])).is_none());
        assert!(
            a.push(chunk(5, &[])).is_none(),
            "final chunk of the old set"
        );
        assert_eq!(ids(&a.push(chunk(6, &[])).expect("done")), vec!["n"]);
    }

    /// A stream scripted in memory: each round lasts its time and is established or not; once
    /// the script is spent, every round fails at once. Records when each round was opened.
    struct Scripted {
        rounds: std::collections::VecDeque<(Duration, bool)>,
        start: Instant,
        opened: Vec<Duration>,
    }

    impl Scripted {
        fn new(rounds: &[(u64, bool)]) -> Self {
            Self {
                rounds: rounds
                    .iter()
                    .map(|(secs, up)| (Duration::from_secs(*secs), *up))
                    .collect(),
                start: Instant::now(),
                opened: Vec::new(),
            }
        }

        /// When each round was opened, in whole seconds from the start.
        fn opened_secs(&self) -> Vec<u64> {
            self.opened.iter().map(Duration::as_secs).collect()
        }
    }

    impl Session for Scripted {
        const NAME: &'static str = "Scripted";

        fn session(&mut self) -> impl std::future::Future<Output = (bool, String)> + Send {
            self.opened.push(self.start.elapsed());
            let (lasts, established) = self.rounds.pop_front().unwrap_or_default();
            async move {
                tokio::time::sleep(lasts).await;
                (established, "refused".to_owned())
            }
        }
    }

    fn reconnect(give_up_after: u64) -> Reconnect {
        Reconnect {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(4),
            give_up_after: Duration::from_secs(give_up_after),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn reopens_with_doubling_delays_and_gives_up_after_the_bound() {
        let mut stream = Scripted::new(&[]);
        let lost = reconnect(20)
            .drive(&mut stream, &CancellationToken::new())
            .await
            .expect_err("never established");
        // 1 s doubling to the 4 s cap; the round at 23 s is the first past 20 s down.
        assert_eq!(stream.opened_secs(), [0, 1, 3, 7, 11, 15, 19, 23]);
        assert_eq!(lost.stream, "Scripted");
        assert_eq!(lost.elapsed, Duration::from_secs(23));
        assert_eq!(lost.last, "refused");
    }

    /// Regression: after a round that stayed up longer than `give_up_after`, the down time was
    /// counted from that round's start, so the first break gave up at once (with the default
    /// 300 s, a CheckinV2 stream that had run five minutes ended the process when the Agent
    /// closed it). It now counts from the break, and the delay starts again from `initial`.
    #[tokio::test(start_paused = true)]
    async fn a_round_that_stayed_up_restarts_the_delay_and_the_down_time() {
        let mut stream = Scripted::new(&[(0, false), (0, false), (60, true)]);
        let lost = reconnect(5)
            .drive(&mut stream, &CancellationToken::new())
            .await
            .expect_err("down again for good");
        // Up from 3 s to 63 s, reopened at once (its delay ran from its start); then 2 s and
        // 4 s, and 6 s down since the break is past the bound.
        assert_eq!(stream.opened_secs(), [0, 1, 3, 63, 65, 69]);
        assert_eq!(lost.elapsed, Duration::from_secs(6));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_wait_between_rounds() {
        let mut stream = Scripted::new(&[]);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            stop.cancel();
        });
        let started = Instant::now();
        reconnect(300)
            .drive(&mut stream, &shutdown)
            .await
            .expect("a shutdown is not a lost stream");
        assert_eq!(stream.opened_secs(), [0, 1]);
        assert_eq!(started.elapsed(), Duration::from_millis(2500));
    }

    #[test]
    fn version_info_names_us() {
        let v = version_info();
        assert_eq!(v.name, "ti-sidecar");
        assert_eq!(
            v.meta.get("version").map(String::as_str),
            Some(env!("CARGO_PKG_VERSION"))
        );
    }
}
