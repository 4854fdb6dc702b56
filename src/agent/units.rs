//! The unit manager (spec §5.4, §5.5): turns each reassembled `CheckinExpected` into running
//! work and reports every unit's observed state.
//!
//! It is a small reconciler. Each unit keeps its *desired* state (run or stop, last config) and
//! its *actual* state (poll loops running with some config and some sink, or draining); every
//! change — an expected message, an output opened, a unit drained — re-runs
//! [`reconcile`](Table::reconcile_inputs) and wakes the check-in loop through a [`Notify`].
//!
//! * Input units (`ti_threatconnect`, `ti_threatq`): `config.source` is validated with
//!   [`config::input_from_value`]; each stream runs as a [`crate::poll::Poller`] under the
//!   unit's `CancellationToken` and `TaskTracker`, with its cursor at
//!   `cursor_key(unit_id, stream_id)` in `path.data`. A reconfigure stops the old loops (the
//!   batch in flight is finished and committed) before new ones start, so two loops never
//!   share a cursor.
//! * Exactly one output unit: its config (`{type: otlp, endpoint, ssl?}`) opens the sink that every
//!   input unit writes to; a second output unit, or an unusable one, is FAILED.
//! * The config index is acknowledged as soon as the config is received and validated, even
//!   when it is invalid (then the unit is FAILED naming the field), never later.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use super::health;
use super::logging::UnitLevels;
use super::structs::{json_to_struct, struct_to_json};
use crate::config::{self, InputConfig, OutputConfig};
use crate::proto::{
    AgentInfo, CheckinExpected, State, UnitExpected, UnitLogLevel, UnitObserved, UnitType,
};
use crate::runner::{RunOptions, StreamPoller};
use crate::sink::AnySink;
use crate::sink::ndjson::NdjsonSink;
use crate::sink::otlp::{OtlpOptions, OtlpSink};
use crate::state::{StateError, StateStore};
use crate::telemetry::{StreamCounters, StreamStatus};

/// Input types this component implements.
pub const INPUT_TYPES: [&str; 2] = ["ti_threatconnect", "ti_threatq"];

/// What the output unit asks for: a validated output block (`{type: otlp, endpoint, ssl?}`;
/// `ndjson` to a file also works, for tests and debugging).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec(pub OutputConfig);

impl OutputSpec {
    /// Reads an output unit's `config.source`; the error names every bad field.
    pub fn parse(source: &Value) -> Result<Self, String> {
        let config = config::output_from_value(source).map_err(|problems| {
            problems
                .0
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })?;
        if let OutputConfig::Ndjson { path } = &config
            && path.as_os_str() == "-"
        {
            // stdout is the Agent's log channel (spec §2.2).
            return Err("path: \"-\" (stdout) is the Agent's log channel; use a file path".into());
        }
        Ok(Self(config))
    }

    /// The spec as shown in diagnostics, secrets (`ssl.key`, endpoint credentials) redacted.
    pub fn redacted_json(&self) -> Value {
        match &self.0 {
            OutputConfig::Ndjson { path } => json!({"type": "ndjson", "path": path}),
            OutputConfig::Otlp { endpoint, ssl, .. } => {
                let shown = url::Url::parse(endpoint)
                    .map(|u| crate::config::fields::redact_url(&u))
                    .unwrap_or_else(|_| endpoint.clone());
                let mut v = json!({"type": "otlp", "endpoint": shown});
                if let Some(ssl) = ssl {
                    v["ssl"] = crate::config::fields::ssl_to_json(ssl);
                }
                v
            }
        }
    }

    /// Opens the sink every input unit writes to.
    pub async fn open(&self) -> Result<AnySink, String> {
        for note in self.0.security_notes() {
            tracing::warn!("output: {note}");
        }
        match &self.0 {
            OutputConfig::Ndjson { path } => NdjsonSink::open(path)
                .await
                .map(AnySink::Ndjson)
                .map_err(|e| e.to_string()),
            OutputConfig::Otlp {
                endpoint,
                ssl,
                retry_max_elapsed,
            } => {
                let options = OtlpOptions {
                    give_up_after: *retry_max_elapsed,
                    ..OtlpOptions::default()
                };
                OtlpSink::new(endpoint, ssl.as_ref(), options)
                    .map(AnySink::Otlp)
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// A unit's key: (type, id), as the Agent keys it.
type UnitKey = (i32, String);

/// A validated unit config.
#[derive(Debug, Clone)]
enum UnitConfig {
    Input(InputConfig),
    Output(OutputSpec),
}

/// Where a unit is in its lifecycle (what is reported, apart from a running input's health).
#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Starting(String),
    Configuring(String),
    /// Input: poll loops running (health derived from the streams). Output: sink open.
    Running,
    Failed(String),
    Stopping,
    Stopped,
}

/// Poll loops of one input unit.
struct Running {
    config_gen: u64,
    sink_gen: u64,
    cancel: CancellationToken,
    tracker: TaskTracker,
    streams: Vec<(String, Arc<StreamCounters>)>,
}

struct Unit {
    id: String,
    kind: UnitType,
    acked_idx: u64,
    log_level: UnitLogLevel,
    want_run: bool,
    config: Option<Result<UnitConfig, String>>,
    config_gen: u64,
    phase: Phase,
    running: Option<Running>,
    draining: bool,
    /// Counters of the last run, kept for diagnostics after a stop.
    last_streams: Vec<(String, Arc<StreamCounters>)>,
}

/// The open output.
struct ActiveOutput {
    unit: UnitKey,
    spec: OutputSpec,
    sink: Arc<AnySink>,
    sink_gen: u64,
}

#[derive(Default)]
struct Table {
    units: BTreeMap<UnitKey, Unit>,
    output: Option<ActiveOutput>,
    /// The output spec being opened, if any.
    opening: Option<(UnitKey, OutputSpec)>,
    sink_gen: u64,
    features_idx: u64,
    component_idx: u64,
    agent_info: Option<AgentInfo>,
}

/// What to put in the next `CheckinObserved`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// Every known unit.
    pub units: Vec<UnitObserved>,
    /// Echo of the last applied `features_idx`.
    pub features_idx: u64,
    /// Echo of the last applied `component_idx`.
    pub component_idx: u64,
}

impl Observed {
    /// What counts as a change worth an immediate check-in (payload counters do not).
    pub fn change_key(&self) -> Vec<(String, i32, u64, i32, String)> {
        let mut key: Vec<_> = self
            .units
            .iter()
            .map(|u| {
                (
                    u.id.clone(),
                    u.r#type,
                    u.config_state_idx,
                    u.state,
                    u.message.clone(),
                )
            })
            .collect();
        key.push((String::new(), -1, self.features_idx, 0, String::new()));
        key.push((String::new(), -2, self.component_idx, 0, String::new()));
        key
    }
}

struct Shared {
    table: Mutex<Table>,
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
    pub fn with_state(
        state: Result<StateStore, StateError>,
        options: RunOptions,
        levels: UnitLevels,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                table: Mutex::new(Table::default()),
                changed: Notify::new(),
                state: Mutex::new(state),
                options,
                levels,
                root: CancellationToken::new(),
                tracker: TaskTracker::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock would be a bug; keep serving rather than cascade.
        self.shared
            .table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Resolves when something reportable may have changed (coalesced: many changes, one wake).
    pub async fn changed(&self) {
        self.shared.changed.notified().await;
    }

    fn notify(&self) {
        self.shared.changed.notify_one();
    }

    /// The latest agent info the Agent sent.
    pub fn agent_info(&self) -> Option<AgentInfo> {
        self.lock().agent_info.clone()
    }

    /// Applies a complete (reassembled) expected state.
    pub fn apply(&self, expected: CheckinExpected) {
        let mut table = self.lock();
        if expected.agent_info.is_some() {
            table.agent_info = expected.agent_info;
        }
        // Features (FQDN) and component limits do not change how we poll: apply = acknowledge.
        if expected.features.is_some() || expected.features_idx != table.features_idx {
            table.features_idx = expected.features_idx;
        }
        if expected.component.is_some() || expected.component_idx != table.component_idx {
            table.component_idx = expected.component_idx;
        }

        let mut seen = std::collections::HashSet::new();
        for unit in expected.units {
            let key = (unit.r#type, unit.id.clone());
            seen.insert(key.clone());
            self.update_unit(&mut table, key, unit);
        }
        let removed: Vec<UnitKey> = table
            .units
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for key in removed {
            if let Some(mut unit) = table.units.remove(&key) {
                tracing::info!(unit.id = %unit.id, "unit removed");
                if let Some(running) = unit.running.take() {
                    // Its loops finish their batch in the background (tracked for shutdown).
                    running.cancel.cancel();
                    running.tracker.close();
                }
                self.shared.levels.remove(&unit.id);
            }
        }
        self.reconcile_output(&mut table);
        self.reconcile_inputs(&mut table);
        drop(table);
        self.notify();
    }

    fn update_unit(&self, table: &mut Table, key: UnitKey, expected: UnitExpected) {
        let kind = expected.r#type();
        let unit = table.units.entry(key).or_insert_with(|| {
            tracing::info!(unit.id = %expected.id, unit.type = kind.as_str_name(), "unit added");
            Unit {
                id: expected.id.clone(),
                kind,
                acked_idx: 0,
                log_level: expected.log_level(),
                want_run: true,
                config: None,
                config_gen: 0,
                phase: Phase::Starting("Starting".to_owned()),
                running: None,
                draining: false,
                last_streams: Vec::new(),
            }
        });
        unit.log_level = expected.log_level();
        self.shared.levels.set(&unit.id, unit.log_level);
        unit.want_run = expected.state() != State::Stopped;
        if let Some(config) = expected.config
            && (expected.config_state_idx != unit.acked_idx || unit.config.is_none())
        {
            let source = config
                .source
                .as_ref()
                .map(struct_to_json)
                .unwrap_or(Value::Null);
            let parsed = match kind {
                UnitType::Input => validate_input(&source).map(UnitConfig::Input),
                UnitType::Output => OutputSpec::parse(&source).map(UnitConfig::Output),
            };
            match &parsed {
                Ok(_) => {
                    tracing::info!(unit.id = %unit.id, config_state_idx = expected.config_state_idx, "unit configuration accepted")
                }
                Err(e) => {
                    tracing::error!(unit.id = %unit.id, config_state_idx = expected.config_state_idx, "unit configuration rejected: {e}")
                }
            }
            unit.config = Some(parsed);
            unit.config_gen += 1;
            unit.acked_idx = expected.config_state_idx;
        }
    }

    /// Picks the one output unit, opens its sink when its config changed.
    fn reconcile_output(&self, table: &mut Table) {
        let active_key = table.output.as_ref().map(|o| o.unit.clone());
        let mut candidates: Vec<UnitKey> = table
            .units
            .iter()
            .filter(|(_, u)| u.kind == UnitType::Output && u.want_run)
            .map(|(k, _)| k.clone())
            .collect();
        // The Agent names the output unit after the component and each input unit
        // `<component id>-<input id>`: prefer the output that owns our inputs, then the lowest id.
        let owns_inputs = |id: &str| {
            table
                .units
                .values()
                .any(|u| u.kind == UnitType::Input && u.id.starts_with(&format!("{id}-")))
        };
        candidates.sort_by_key(|k| (!owns_inputs(&k.1), k.1.clone()));
        let chosen = active_key
            .filter(|k| candidates.contains(k))
            .or_else(|| candidates.first().cloned());
        for (key, unit) in table.units.iter_mut() {
            if unit.kind != UnitType::Output {
                continue;
            }
            if !unit.want_run {
                unit.phase = Phase::Stopped;
            } else if Some(key) != chosen.as_ref() {
                unit.phase = Phase::Failed(format!(
                    "only one output unit is supported per component ({} is in use)",
                    chosen.as_ref().map_or("", |k| k.1.as_str())
                ));
            }
        }
        let Some(chosen) = chosen else {
            if table.output.take().is_some() {
                tracing::info!("output closed: no output unit expected");
            }
            table.opening = None;
            return;
        };
        let config = table.units.get(&chosen).and_then(|u| u.config.clone());
        match config {
            None => {
                set_phase(
                    table,
                    &chosen,
                    Phase::Starting("Starting: waiting for configuration".into()),
                );
            }
            Some(Err(message)) => {
                table.output = None;
                table.opening = None;
                set_phase(
                    table,
                    &chosen,
                    Phase::Failed(format!("invalid output configuration: {message}")),
                );
            }
            Some(Ok(UnitConfig::Input(_))) => {}
            Some(Ok(UnitConfig::Output(spec))) => {
                let current = table
                    .output
                    .as_ref()
                    .is_some_and(|o| o.unit == chosen && o.spec == spec);
                let pending = table
                    .opening
                    .as_ref()
                    .is_some_and(|(k, s)| *k == chosen && *s == spec);
                if current {
                    set_phase(table, &chosen, Phase::Running);
                } else if !pending {
                    table.opening = Some((chosen.clone(), spec.clone()));
                    set_phase(
                        table,
                        &chosen,
                        Phase::Configuring("Configuring: opening the output".into()),
                    );
                    let manager = self.clone();
                    tokio::spawn(
                        async move {
                            let opened = spec.open().await;
                            manager.output_opened(chosen, spec, opened);
                        }
                        .in_current_span(),
                    );
                }
            }
        }
    }

    fn output_opened(&self, key: UnitKey, spec: OutputSpec, opened: Result<AnySink, String>) {
        let mut table = self.lock();
        if table.opening.as_ref() != Some(&(key.clone(), spec.clone())) {
            return; // superseded by a newer config
        }
        table.opening = None;
        match opened {
            Ok(sink) => {
                tracing::info!(unit.id = %key.1, "output ready");
                table.sink_gen += 1;
                let sink_gen = table.sink_gen;
                table.output = Some(ActiveOutput {
                    unit: key.clone(),
                    spec,
                    sink: Arc::new(sink),
                    sink_gen,
                });
                set_phase(&mut table, &key, Phase::Running);
            }
            Err(message) => {
                tracing::error!(unit.id = %key.1, "output unusable: {message}");
                table.output = None;
                set_phase(
                    &mut table,
                    &key,
                    Phase::Failed(format!("output unusable: {message}")),
                );
            }
        }
        self.reconcile_inputs(&mut table);
        drop(table);
        self.notify();
    }

    /// Brings every input unit's running loops in line with its desired state.
    fn reconcile_inputs(&self, table: &mut Table) {
        let sink = table.output.as_ref().map(|o| (o.sink.clone(), o.sink_gen));
        let keys: Vec<UnitKey> = table
            .units
            .iter()
            .filter(|(_, u)| u.kind == UnitType::Input)
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            if let Some(unit) = table.units.get_mut(&key) {
                self.reconcile_input(unit, sink.clone());
            }
        }
    }

    fn reconcile_input(&self, unit: &mut Unit, sink: Option<(Arc<AnySink>, u64)>) {
        if !unit.want_run {
            if unit.running.is_some() {
                self.drain(unit);
            }
            unit.phase = if unit.draining {
                Phase::Stopping
            } else {
                Phase::Stopped
            };
            return;
        }
        let config = match &unit.config {
            None => {
                unit.phase = Phase::Starting("Starting: waiting for configuration".into());
                return;
            }
            Some(Err(message)) => {
                let message = format!("invalid configuration: {message}");
                if unit.running.is_some() {
                    self.drain(unit);
                }
                unit.phase = Phase::Failed(message);
                return;
            }
            Some(Ok(UnitConfig::Output(_))) => return,
            Some(Ok(UnitConfig::Input(config))) => config.clone(),
        };
        let Some((sink, sink_gen)) = sink else {
            if unit.running.is_some() {
                self.drain(unit);
            }
            unit.phase = Phase::Configuring("Configuring: waiting for the output unit".into());
            return;
        };
        if let Some(running) = &unit.running {
            if running.config_gen == unit.config_gen && running.sink_gen == sink_gen {
                return;
            }
            // Reconfigure: stop the old loops first; the drain completion starts the new ones.
            self.drain(unit);
        }
        if unit.draining {
            unit.phase = Phase::Configuring("Configuring: applying the new configuration".into());
            return;
        }
        match self.start(unit, &config, sink, sink_gen) {
            Ok(running) => {
                unit.last_streams = running.streams.clone();
                unit.running = Some(running);
                unit.phase = Phase::Running;
            }
            Err(message) => unit.phase = Phase::Failed(message),
        }
    }

    /// Cancels a unit's loops and reconciles it again once they have finished their batch.
    fn drain(&self, unit: &mut Unit) {
        let Some(running) = unit.running.take() else {
            return;
        };
        tracing::info!(unit.id = %unit.id, "stopping the unit's streams");
        running.cancel.cancel();
        running.tracker.close();
        unit.draining = true;
        let manager = self.clone();
        let key = (unit.kind as i32, unit.id.clone());
        let tracker = running.tracker;
        tokio::spawn(
            async move {
                tracker.wait().await;
                let mut table = manager.lock();
                if let Some(unit) = table.units.get_mut(&key) {
                    unit.draining = false;
                    tracing::info!(unit.id = %unit.id, "unit's streams stopped");
                }
                manager.reconcile_inputs(&mut table);
                drop(table);
                manager.notify();
            }
            .in_current_span(),
        );
    }

    /// The cursor store; a store that failed to open is tried again (the user may have moved
    /// a damaged file aside).
    fn state(&self) -> Result<StateStore, String> {
        let mut slot = self
            .shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_err() {
            *slot = StateStore::open(&self.shared.options.state_dir);
        }
        slot.clone().map_err(|e| e.to_string())
    }

    fn start(
        &self,
        unit: &Unit,
        config: &InputConfig,
        sink: Arc<AnySink>,
        sink_gen: u64,
    ) -> Result<Running, String> {
        let state = self.state()?;
        let cancel = self.shared.root.child_token();
        let tracker = TaskTracker::new();
        let mut streams = Vec::new();
        let mut loops = Vec::new();
        for stream in &config.streams {
            let counters = Arc::new(StreamCounters::default());
            let poller = StreamPoller {
                input_id: &unit.id,
                stream,
                sink: sink.clone(),
                state: &state,
                options: &self.shared.options,
                counters: counters.clone(),
            };
            let run = poller
                .into_loop(cancel.clone())
                .map_err(|e| e.to_string())?;
            loops.push((stream.identity.id.clone(), run, counters.clone()));
            streams.push((stream.identity.id.clone(), counters));
        }
        for (stream_id, run, counters) in loops {
            let span = tracing::info_span!("unit", unit.id = %unit.id, stream.id = %stream_id);
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
        tracing::info!(unit.id = %unit.id, streams = streams.len() as u64, "unit started");
        Ok(Running {
            config_gen: unit.config_gen,
            sink_gen,
            cancel,
            tracker,
            streams,
        })
    }

    /// The observed state of every unit, for the next check-in.
    pub fn observed(&self) -> Observed {
        let table = self.lock();
        let units = table
            .units
            .values()
            .map(|unit| {
                let (state, message, payload) = match (&unit.phase, &unit.running) {
                    (Phase::Running, Some(running)) => {
                        let h = health::derive(&statuses(&running.streams));
                        (h.state, h.message, Some(json_to_struct(&h.payload)))
                    }
                    (Phase::Running, None) => (State::Healthy, "Healthy".to_owned(), None),
                    (Phase::Starting(m), _) => (State::Starting, m.clone(), None),
                    (Phase::Configuring(m), _) => (State::Configuring, m.clone(), None),
                    (Phase::Failed(m), _) => (State::Failed, m.clone(), None),
                    (Phase::Stopping, _) => (State::Stopping, "Stopping".to_owned(), None),
                    (Phase::Stopped, _) => (State::Stopped, "Stopped".to_owned(), None),
                };
                UnitObserved {
                    id: unit.id.clone(),
                    r#type: unit.kind as i32,
                    config_state_idx: unit.acked_idx,
                    state: state as i32,
                    message,
                    payload,
                }
            })
            .collect();
        Observed {
            units,
            features_idx: table.features_idx,
            component_idx: table.component_idx,
        }
    }

    /// Diagnostics of every unit (component level): state, redacted config, stream status.
    pub fn diagnostics_all(&self) -> Value {
        let observed = self.observed();
        let table = self.lock();
        let units: Vec<Value> = table
            .units
            .values()
            .map(|u| unit_diagnostics(u, &observed))
            .collect();
        json!({
            "units": units,
            "features_idx": table.features_idx,
            "component_idx": table.component_idx,
            "output": table.output.as_ref().map(|o| o.spec.redacted_json()),
        })
    }

    /// Diagnostics of one unit, if it exists.
    pub fn diagnostics_unit(&self, id: &str, kind: i32) -> Option<Value> {
        let observed = self.observed();
        let table = self.lock();
        table
            .units
            .get(&(kind, id.to_owned()))
            .map(|u| unit_diagnostics(u, &observed))
    }

    /// Whether a unit with this key exists.
    pub fn has_unit(&self, id: &str, kind: i32) -> bool {
        self.lock().units.contains_key(&(kind, id.to_owned()))
    }

    /// Stops every unit (each finishes or drops its batch in flight and commits), waiting at
    /// most `grace`. Returns whether everything stopped in time.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.shared.root.cancel();
        {
            let mut table = self.lock();
            for unit in table.units.values_mut() {
                if unit.running.is_some() || unit.draining {
                    unit.phase = Phase::Stopping;
                }
            }
        }
        self.notify();
        self.shared.tracker.close();
        tokio::time::timeout(grace, self.shared.tracker.wait())
            .await
            .is_ok()
    }
}

fn set_phase(table: &mut Table, key: &UnitKey, phase: Phase) {
    if let Some(unit) = table.units.get_mut(key) {
        unit.phase = phase;
    }
}

fn statuses(streams: &[(String, Arc<StreamCounters>)]) -> Vec<(String, StreamStatus)> {
    streams
        .iter()
        .map(|(id, c)| (id.clone(), c.status()))
        .collect()
}

fn unit_diagnostics(unit: &Unit, observed: &Observed) -> Value {
    let seen = observed
        .units
        .iter()
        .find(|o| o.id == unit.id && o.r#type == unit.kind as i32);
    let config = match &unit.config {
        None => Value::Null,
        Some(Err(message)) => json!({ "invalid": message }),
        Some(Ok(UnitConfig::Output(spec))) => spec.redacted_json(),
        Some(Ok(UnitConfig::Input(input))) => json!({
            "id": input.id,
            "streams": input.streams.iter().map(|s| {
                let mut v = s.source.redacted_json();
                if let Value::Object(o) = &mut v {
                    o.insert("id".into(), Value::from(s.identity.id.clone()));
                    o.insert("data_stream".into(), json!({
                        "dataset": s.identity.dataset,
                        "namespace": s.identity.namespace,
                    }));
                }
                v
            }).collect::<Vec<_>>(),
        }),
    };
    let streams: serde_json::Map<String, Value> = unit
        .last_streams
        .iter()
        .map(|(id, c)| {
            let status = c.status();
            let mut value = serde_json::to_value(&status).unwrap_or(Value::Null);
            if let Value::Object(fields) = &mut value {
                fields.insert("lag".into(), Value::from(status.lag(chrono::Utc::now())));
            }
            (id.clone(), value)
        })
        .collect();
    json!({
        "id": unit.id,
        "type": unit.kind.as_str_name(),
        "state": seen.map(|o| o.state().as_str_name()),
        "message": seen.map(|o| o.message.clone()),
        "config_state_idx": unit.acked_idx,
        "log_level": unit.log_level.as_str_name(),
        "config": config,
        "streams": streams,
    })
}

/// Validates an input unit's `config.source`: one of our input types, then the shared config
/// validation. The message lists every problem, each naming its field.
pub fn validate_input(source: &Value) -> Result<InputConfig, String> {
    if !source.is_object() {
        return Err("config.source: missing (expected the policy input)".to_owned());
    }
    let kind = source.get("type").and_then(Value::as_str).unwrap_or("");
    if !INPUT_TYPES.contains(&kind) {
        return Err(format!(
            "type: input type {kind:?} is not supported (supported: {})",
            INPUT_TYPES.join(", ")
        ));
    }
    config::input_from_value(source).map_err(|problems| {
        problems
            .0
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::UnitExpectedConfig;
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
        assert!(
            OutputSpec::parse(&json!({"type": "kafka"}))
                .expect_err("kafka")
                .starts_with("type:")
        );
        assert!(OutputSpec::parse(&json!({"type": "ndjson", "path": "-"})).is_err());
        let otlp = OutputSpec::parse(&json!({"type": "otlp", "endpoint": "127.0.0.1:4317"}))
            .expect("otlp");
        assert_eq!(otlp.redacted_json()["endpoint"], "127.0.0.1:4317");
        assert!(
            OutputSpec::parse(&json!({"type": "otlp"}))
                .expect_err("no endpoint")
                .contains("endpoint")
        );
    }
}
