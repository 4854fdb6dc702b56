//! [`UnitManager`]: the table under a lock, and the effects it decides carried out.
//!
//! Effects run while the lock is held; they only spawn or cancel, never wait. Every task
//! (an output being opened, a stream, the wait for a unit's streams to drain) is spawned in
//! the manager's `TaskTracker`, inside the caller's span, so shutdown waits for all of them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use super::diagnostics;
use super::table::{Effect, Streams, Table, UnitKey};
use super::{OutputSpec, UnitError};
use crate::agent::logging::UnitLevels;
use crate::pipeline::{RunOptions, StreamPoller};
use crate::policy::{InputConfig, MonitoringConfig};
use crate::proto::{AgentInfo, CheckinExpected};
use crate::sink::AnySink;
use crate::state::{StateError, StateStore};
use crate::telemetry::StreamCounters;

pub use super::diagnostics::Observed;

/// The streams of one running input unit.
struct Run {
    cancel: CancellationToken,
    tracker: TaskTracker,
}

/// The table and the tasks it runs.
struct Inner {
    table: Table<Arc<AnySink>>,
    runs: BTreeMap<UnitKey, Run>,
    /// Stops the monitoring endpoint being served, if any.
    monitoring: Option<CancellationToken>,
}

struct Shared {
    inner: Mutex<Inner>,
    changed: Notify,
    /// The cursor store, or why `path.data` cannot hold one (input units then report FAILED
    /// with that reason; every start tries to open it again).
    state: Mutex<Result<StateStore, StateError>>,
    options: RunOptions,
    levels: UnitLevels,
    root: CancellationToken,
    tracker: TaskTracker,
}

/// Runs the units the Agent expects and reports their observed state.
#[derive(Clone)]
pub struct UnitManager {
    shared: Arc<Shared>,
}

impl UnitManager {
    /// A manager with no units. `options.state_dir` is `path.data`.
    pub fn new(state: StateStore, options: RunOptions, levels: UnitLevels) -> Self {
        Self::with_state(Ok(state), options, levels)
    }

    /// A manager whose state store may have failed to open: the control plane still runs, and
    /// input units report FAILED with the store's error (naming the file and the recovery)
    /// instead of the component exiting before it could say why.
    pub(crate) fn with_state(
        state: Result<StateStore, StateError>,
        options: RunOptions,
        levels: UnitLevels,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner {
                    table: Table::default(),
                    runs: BTreeMap::new(),
                    monitoring: None,
                }),
                changed: Notify::new(),
                state: Mutex::new(state),
                options,
                levels,
                root: CancellationToken::new(),
                tracker: TaskTracker::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock would be a bug; keep serving rather than cascade.
        self.shared
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Resolves when something reportable may have changed (coalesced: many changes, one wake).
    pub async fn changed(&self) {
        self.shared.changed.notified().await;
    }

    /// The latest agent info the Agent sent.
    pub fn agent_info(&self) -> Option<AgentInfo> {
        self.lock().table.agent_info.clone()
    }

    /// Applies a complete (reassembled) expected state.
    pub(crate) fn apply(&self, expected: CheckinExpected) {
        self.update(|table| table.apply(expected));
    }

    /// Runs `event` on the table, carries out its effects, and wakes the check-in loop.
    fn update(&self, event: impl FnOnce(&mut Table<Arc<AnySink>>) -> Vec<Effect<Arc<AnySink>>>) {
        let mut inner = self.lock();
        let effects = event(&mut inner.table);
        self.carry_out(&mut inner, effects);
        drop(inner);
        self.shared.changed.notify_one();
    }

    fn carry_out(&self, inner: &mut Inner, effects: Vec<Effect<Arc<AnySink>>>) {
        for effect in effects {
            match effect {
                Effect::LogLevel { id, level } => self.shared.levels.set(&id, level),
                Effect::ForgetLogLevel { id } => self.shared.levels.remove(&id),
                Effect::OpenOutput { unit, spec } => self.open_output(unit, spec),
                Effect::Start { unit, config, sink } => match self.start(&unit.1, &config, sink) {
                    Ok((run, streams)) => {
                        inner.runs.insert(unit.clone(), run);
                        inner.table.started(&unit, streams);
                    }
                    Err(e) => inner.table.start_failed(&unit, &e),
                },
                Effect::Stop { unit, report } => {
                    if let Some(run) = inner.runs.remove(&unit) {
                        self.stop(unit, run, report);
                    }
                }
                Effect::Monitoring(wanted) => self.monitoring(inner, wanted),
            }
        }
    }

    /// Stops the endpoint being served, then serves `wanted` (until it changes or shutdown).
    fn monitoring(&self, inner: &mut Inner, wanted: Option<MonitoringConfig>) {
        if let Some(stop) = inner.monitoring.take() {
            stop.cancel();
        }
        let Some(config) = wanted else {
            return;
        };
        let stop = self.shared.root.child_token();
        inner.monitoring = Some(stop.clone());
        self.shared.tracker.spawn(
            async move {
                if let Err(e) = crate::telemetry::server::serve(&config, stop).await {
                    tracing::error!("{e}");
                }
            }
            .in_current_span(),
        );
    }

    fn open_output(&self, unit: UnitKey, spec: OutputSpec) {
        let manager = self.clone();
        self.shared.tracker.spawn(
            async move {
                let opened = spec.open().await.map(Arc::new);
                manager.update(|table| table.output_opened(unit, spec, opened));
            }
            .in_current_span(),
        );
    }

    /// Cancels a unit's streams (each finishes its batch in flight and commits); with
    /// `report`, tells the table once they have stopped.
    fn stop(&self, unit: UnitKey, run: Run, report: bool) {
        run.cancel.cancel();
        run.tracker.close();
        if !report {
            return;
        }
        let manager = self.clone();
        self.shared.tracker.spawn(
            async move {
                run.tracker.wait().await;
                manager.update(|table| table.drained(&unit));
            }
            .in_current_span(),
        );
    }

    /// The cursor store; a store that failed to open is tried again (the user may have moved
    /// a damaged file aside).
    fn state(&self) -> Result<StateStore, StateError> {
        let mut slot = self
            .shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_err() {
            *slot = StateStore::open(&self.shared.options.state_dir);
        }
        slot.clone()
    }

    /// Starts one poll loop per stream of input unit `unit_id`.
    fn start(
        &self,
        unit_id: &str,
        config: &InputConfig,
        sink: Arc<AnySink>,
    ) -> Result<(Run, Streams), UnitError> {
        let state = self.state()?;
        let cancel = self.shared.root.child_token();
        let tracker = TaskTracker::new();
        let mut streams = Vec::new();
        let mut loops = Vec::new();
        for stream in &config.streams {
            let counters = Arc::new(StreamCounters::default());
            let poller = StreamPoller {
                input_id: unit_id,
                stream,
                sink: sink.clone(),
                state: &state,
                options: &self.shared.options,
                counters: counters.clone(),
            };
            let run = poller
                .into_loop(cancel.clone())
                .map_err(|e| UnitError::Stream(Arc::new(e)))?;
            loops.push((stream.identity.id.clone(), run, counters.clone()));
            streams.push((stream.identity.id.clone(), counters));
        }
        for (stream_id, run, counters) in loops {
            let span = tracing::info_span!("unit", unit.id = %unit_id, stream.id = %stream_id);
            let task = async move {
                match run.await {
                    Ok(_) => tracing::info!("stream stopped"),
                    Err(e) => {
                        tracing::error!("stream failed: {e}");
                        if counters.status().fatal.is_none() {
                            counters.set_fatal(e.to_string());
                        }
                    }
                }
            };
            self.shared
                .tracker
                .spawn(tracker.track_future(task).instrument(span));
        }
        tracing::info!(unit.id = %unit_id, streams = streams.len() as u64, "unit started");
        Ok((Run { cancel, tracker }, streams))
    }

    /// The observed state of every unit, for the next check-in.
    pub fn observed(&self) -> Observed {
        diagnostics::observe(&self.lock().table)
    }

    /// Diagnostics of every unit (component level): state, redacted config, stream status.
    pub(crate) fn diagnostics_all(&self) -> Value {
        diagnostics::component(&self.lock().table)
    }

    /// Diagnostics of one unit, if it exists.
    pub(crate) fn diagnostics_unit(&self, id: &str, kind: i32) -> Option<Value> {
        let inner = self.lock();
        inner
            .table
            .units
            .get(&(kind, id.to_owned()))
            .map(diagnostics::unit)
    }

    /// Whether a unit with this key exists.
    pub(crate) fn has_unit(&self, id: &str, kind: i32) -> bool {
        self.lock().table.units.contains_key(&(kind, id.to_owned()))
    }

    /// Stops every unit (each finishes or drops its batch in flight and commits), waiting at
    /// most `grace`. Returns whether everything stopped in time.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.shared.root.cancel();
        self.lock().table.shutting_down();
        self.shared.changed.notify_one();
        self.shared.tracker.close();
        tokio::time::timeout(grace, self.shared.tracker.wait())
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::structs::json_to_struct;
    use crate::proto::UnitExpectedConfig;
    use crate::proto::{State, UnitExpected, UnitLogLevel, UnitObserved, UnitType};
    use serde_json::json;
    use tracing::level_filters::LevelFilter;

    fn manager(dir: &std::path::Path) -> UnitManager {
        let options = RunOptions {
            state_dir: dir.to_owned(),
            once: false,
            retry: None,
            poll_retry_delay: None,
        };
        UnitManager::new(
            StateStore::open(dir).expect("state"),
            options,
            UnitLevels::new(LevelFilter::INFO),
        )
    }

    fn input_unit(idx: u64, source: Value) -> UnitExpected {
        let Value::Object(o) = source else {
            unreachable!()
        };
        UnitExpected {
            id: "in-1".into(),
            r#type: UnitType::Input as i32,
            state: State::Healthy as i32,
            config_state_idx: idx,
            config: Some(UnitExpectedConfig {
                source: Some(json_to_struct(&o)),
                ..Default::default()
            }),
            log_level: UnitLogLevel::Info as i32,
        }
    }

    #[tokio::test]
    async fn invalid_config_is_acknowledged_and_failed_naming_the_field() {
        let dir = tempfile::tempdir().expect("dir");
        let m = manager(dir.path());
        m.apply(CheckinExpected {
            units: vec![input_unit(
                3,
                json!({"id": "tc", "type": "ti_threatconnect", "streams": [{"id": "s", "access_id": "1", "secret_key": "hmac-SECRET", "batch_size": "lots"}]}),
            )],
            features_idx: 2,
            component_idx: 4,
            ..Default::default()
        });
        let observed = m.observed();
        assert_eq!(observed.features_idx, 2);
        assert_eq!(observed.component_idx, 4);
        let unit = &observed.units[0];
        assert_eq!(
            unit.config_state_idx, 3,
            "an invalid config is still acknowledged"
        );
        assert_eq!(unit.state(), State::Failed);
        assert!(unit.message.contains("batch_size"), "{}", unit.message);
        assert!(!unit.message.contains("hmac-SECRET"), "{}", unit.message);

        // Without config (already acknowledged), the idx stays echoed.
        let mut again = input_unit(3, json!({}));
        again.config = None;
        m.apply(CheckinExpected {
            units: vec![again],
            ..Default::default()
        });
        assert_eq!(m.observed().units[0].config_state_idx, 3);

        // A unit gone from the expected state is dropped.
        m.apply(CheckinExpected::default());
        assert!(m.observed().units.is_empty());
    }

    /// A ThreatConnect input whose vendor is `url`.
    fn tc_source(url: &str) -> Value {
        json!({"id": "tc", "type": "ti_threatconnect", "streams": [{
            "id": "s", "access_id": "1", "secret_key": "k", "url": url}]})
    }

    /// An output unit `id` with `source` as its config.
    fn output_unit(id: &str, source: Value) -> UnitExpected {
        let Value::Object(o) = source else {
            unreachable!()
        };
        UnitExpected {
            id: id.into(),
            r#type: UnitType::Output as i32,
            state: State::Healthy as i32,
            config_state_idx: 1,
            config: Some(UnitExpectedConfig {
                source: Some(json_to_struct(&o)),
                ..Default::default()
            }),
            log_level: 2,
        }
    }

    /// The output unit: NDJSON into `dir`.
    fn ndjson_output(dir: &std::path::Path) -> UnitExpected {
        output_unit(
            "out",
            json!({"type": "ndjson", "path": dir.join("e.ndjson")}),
        )
    }

    async fn wait_state(m: &UnitManager, id: &str, state: State, text: &str) -> UnitObserved {
        loop {
            if let Some(u) = m.observed().units.into_iter().find(|u| u.id == id)
                && u.state() == state
                && u.message.contains(text)
            {
                return u;
            }
            m.changed().await;
        }
    }

    #[tokio::test]
    async fn stop_goes_through_stopping_and_reconfigure_restarts_only_that_unit() {
        let dir = tempfile::tempdir().expect("dir");
        let m = manager(dir.path());
        let source = tc_source;
        let output = ndjson_output(dir.path());
        m.apply(CheckinExpected {
            units: vec![input_unit(1, source("http://127.0.0.1:9")), output.clone()],
            ..Default::default()
        });
        // Running: CONFIGURING until the first page (the vendor is unreachable here).
        wait_state(&m, "in-1", State::Configuring, "first poll").await;

        // Reconfigure: new idx acknowledged at once.
        m.apply(CheckinExpected {
            units: vec![input_unit(2, source("http://127.0.0.1:10")), output.clone()],
            ..Default::default()
        });
        assert_eq!(m.observed().units[0].config_state_idx, 2);
        wait_state(&m, "in-1", State::Configuring, "first poll").await;

        // Stop: STOPPING right away (the loops drain in the background), then STOPPED.
        let mut stop = input_unit(2, json!({}));
        stop.config = None;
        stop.state = State::Stopped as i32;
        m.apply(CheckinExpected {
            units: vec![stop, output],
            ..Default::default()
        });
        assert_eq!(m.observed().units[0].state(), State::Stopping);
        let stopped = wait_state(&m, "in-1", State::Stopped, "").await;
        assert_eq!(stopped.config_state_idx, 2);
        assert!(m.shutdown(Duration::from_secs(5)).await);
    }

    /// Regression: a damaged `state.redb` made redb panic inside the stream task, and the unit
    /// stayed CONFIGURING forever. It is now FAILED, naming the file and how to recover, and
    /// starts once the file has been moved aside.
    #[tokio::test]
    async fn damaged_state_store_fails_input_units_naming_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("state.redb"), b"").expect("damage");
        let options = RunOptions {
            state_dir: dir.path().to_owned(),
            once: false,
            retry: None,
            poll_retry_delay: None,
        };
        let state = StateStore::open(dir.path());
        assert!(state.is_err());
        let m = UnitManager::with_state(state, options, UnitLevels::new(LevelFilter::INFO));
        let output = ndjson_output(dir.path());
        m.apply(CheckinExpected {
            units: vec![
                input_unit(1, tc_source("http://127.0.0.1:9")),
                output.clone(),
            ],
            ..Default::default()
        });
        let failed = wait_state(&m, "in-1", State::Failed, "state.redb").await;
        assert!(failed.message.contains(".damaged"), "{}", failed.message);

        std::fs::rename(
            dir.path().join("state.redb"),
            dir.path().join("state.redb.damaged"),
        )
        .expect("move aside");
        m.apply(CheckinExpected {
            units: vec![input_unit(2, tc_source("http://127.0.0.1:10")), output],
            ..Default::default()
        });
        wait_state(&m, "in-1", State::Configuring, "first poll").await;
        assert!(m.shutdown(Duration::from_secs(5)).await);
    }

    #[tokio::test]
    async fn second_output_and_unknown_output_type_fail() {
        let dir = tempfile::tempdir().expect("dir");
        let m = manager(dir.path());
        let output = output_unit;
        let path = dir.path().join("events.ndjson");
        m.apply(CheckinExpected {
            units: vec![
                output("out-a", json!({"type": "ndjson", "path": path})),
                output("out-b", json!({"type": "kafka"})),
            ],
            ..Default::default()
        });
        let observed = m.observed();
        let b = observed.units.iter().find(|u| u.id == "out-b").expect("b");
        assert_eq!(b.state(), State::Failed);
        assert!(b.message.contains("only one output"), "{}", b.message);
        assert_eq!(b.config_state_idx, 1);
    }
}
