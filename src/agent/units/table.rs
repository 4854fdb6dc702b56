//! The unit table: what the Agent expects of each unit, what runs, and the decisions that bring
//! one in line with the other. It is pure: no tasks, no I/O, no clock. Every entry point takes
//! an event (an expected state arrived, an output opened, a unit's streams drained, a start
//! failed) and returns the [`Effect`]s the runtime must carry out, which keeps every rule of
//! spec §5.4/§5.5 testable synchronously, as the host's `Reconciler` is.
//!
//! The sink an input writes to is a type parameter (`S`): the runtime uses the opened sink, the
//! tests use a plain value.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use super::output::OutputSpec;
use super::{UnitError, UnitInput, validate_input};
use crate::agent::structs::struct_to_json;
use crate::policy::{InputConfig, MonitoringConfig};
use crate::proto::{AgentInfo, CheckinExpected, State, UnitExpected, UnitLogLevel, UnitType};
use crate::telemetry::StreamCounters;

/// A unit's key: (type, id), as the Agent keys it.
pub(super) type UnitKey = (i32, String);

/// One stream's counters, by stream id.
pub(super) type Streams = Vec<(String, Arc<StreamCounters>)>;

/// A validated unit config.
#[derive(Debug, Clone)]
pub(super) enum UnitConfig {
    Input(UnitInput),
    Output(OutputSpec),
}

/// Where a unit is in its lifecycle (what is reported, apart from a running input's health).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Phase {
    Starting(String),
    Configuring(String),
    /// Input: streams running (health derived from them). Output: sink open.
    Running,
    Failed(String),
    Stopping,
    Stopped,
}

/// What the runtime must do.
#[derive(Debug)]
pub(super) enum Effect<S> {
    /// Apply a unit's log level to its log lines.
    LogLevel { id: String, level: UnitLogLevel },
    /// Forget a removed unit's log level.
    ForgetLogLevel { id: String },
    /// Open `spec`, then report with [`Table::output_opened`].
    OpenOutput { unit: UnitKey, spec: OutputSpec },
    /// Start the input unit's streams into `sink`; report a failure with
    /// [`Table::start_failed`], success with [`Table::started`].
    Start {
        unit: UnitKey,
        config: InputConfig,
        sink: S,
    },
    /// Cancel the unit's streams (each finishes its batch in flight). With `report`, call
    /// [`Table::drained`] once they have stopped.
    Stop { unit: UnitKey, report: bool },
    /// Serve the monitoring endpoint with these settings (stopping any other), or stop it.
    Monitoring(Option<MonitoringConfig>),
}

/// Which config and sink an input unit's streams run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    config_gen: u64,
    sink_gen: u64,
}

/// One unit.
#[derive(Debug)]
pub(super) struct Unit {
    pub(super) id: String,
    pub(super) kind: UnitType,
    /// The last acknowledged `config_state_idx`.
    pub(super) acked_idx: u64,
    pub(super) log_level: UnitLogLevel,
    want_run: bool,
    pub(super) config: Option<Result<UnitConfig, UnitError>>,
    config_gen: u64,
    pub(super) phase: Phase,
    run: Option<Run>,
    draining: bool,
    /// Counters of the current or last run (kept for diagnostics after a stop).
    pub(super) streams: Streams,
}

impl Unit {
    /// Whether the unit's streams run now.
    pub(super) fn is_running(&self) -> bool {
        self.run.is_some()
    }
}

/// The open output.
#[derive(Debug)]
pub(super) struct ActiveOutput<S> {
    unit: UnitKey,
    pub(super) spec: OutputSpec,
    sink: S,
    sink_gen: u64,
}

/// Every unit, the output, and the component-level indexes.
#[derive(Debug)]
pub(super) struct Table<S> {
    pub(super) units: BTreeMap<UnitKey, Unit>,
    pub(super) output: Option<ActiveOutput<S>>,
    /// The output spec being opened, if any.
    opening: Option<(UnitKey, OutputSpec)>,
    sink_gen: u64,
    pub(super) features_idx: u64,
    pub(super) component_idx: u64,
    pub(super) agent_info: Option<AgentInfo>,
    /// The monitoring endpoint's settings, as last asked of the runtime.
    monitoring: Option<MonitoringConfig>,
}

impl<S> Default for Table<S> {
    fn default() -> Self {
        Self {
            units: BTreeMap::new(),
            output: None,
            opening: None,
            sink_gen: 0,
            features_idx: 0,
            component_idx: 0,
            agent_info: None,
            monitoring: None,
        }
    }
}

impl<S: Clone> Table<S> {
    /// Applies a complete (reassembled) expected state.
    pub(super) fn apply(&mut self, expected: CheckinExpected) -> Vec<Effect<S>> {
        let mut effects = Vec::new();
        if expected.agent_info.is_some() {
            self.agent_info = expected.agent_info;
        }
        // Features (FQDN) and component limits do not change how we poll: apply = acknowledge.
        if expected.features.is_some() || expected.features_idx != self.features_idx {
            self.features_idx = expected.features_idx;
        }
        if expected.component.is_some() || expected.component_idx != self.component_idx {
            self.component_idx = expected.component_idx;
        }

        let mut seen = HashSet::new();
        for unit in expected.units {
            let key = (unit.r#type, unit.id.clone());
            seen.insert(key.clone());
            self.update_unit(key, unit, &mut effects);
        }
        let removed: Vec<UnitKey> = self
            .units
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for key in removed {
            if let Some(unit) = self.units.remove(&key) {
                tracing::info!(unit.id = %unit.id, "unit removed");
                if unit.run.is_some() {
                    // Its streams finish their batch in the background (tracked for shutdown).
                    effects.push(Effect::Stop {
                        unit: key,
                        report: false,
                    });
                }
                effects.push(Effect::ForgetLogLevel { id: unit.id });
            }
        }
        self.reconcile_output(&mut effects);
        self.reconcile_inputs(&mut effects);
        self.reconcile_monitoring(&mut effects);
        effects
    }

    /// The endpoint follows the first running input unit (by id) whose config enables it.
    fn reconcile_monitoring(&mut self, effects: &mut Vec<Effect<S>>) {
        let wanted = self.units.values().find_map(|u| match &u.config {
            Some(Ok(UnitConfig::Input(input))) if u.want_run => input.monitoring,
            _ => None,
        });
        if wanted != self.monitoring {
            self.monitoring = wanted;
            effects.push(Effect::Monitoring(wanted));
        }
    }

    fn update_unit(&mut self, key: UnitKey, expected: UnitExpected, effects: &mut Vec<Effect<S>>) {
        let kind = expected.r#type();
        let unit = self.units.entry(key).or_insert_with(|| {
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
                run: None,
                draining: false,
                streams: Vec::new(),
            }
        });
        unit.log_level = expected.log_level();
        effects.push(Effect::LogLevel {
            id: unit.id.clone(),
            level: unit.log_level,
        });
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
                    tracing::info!(unit.id = %unit.id, config_state_idx = expected.config_state_idx, "unit configuration accepted");
                }
                Err(e) => {
                    tracing::error!(unit.id = %unit.id, config_state_idx = expected.config_state_idx, "unit configuration rejected: {e}");
                }
            }
            unit.config = Some(parsed);
            unit.config_gen += 1;
            unit.acked_idx = expected.config_state_idx;
        }
    }

    /// Picks the one output unit and opens its sink when its config changed.
    fn reconcile_output(&mut self, effects: &mut Vec<Effect<S>>) {
        let active_key = self.output.as_ref().map(|o| o.unit.clone());
        let mut candidates: Vec<UnitKey> = self
            .units
            .iter()
            .filter(|(_, u)| u.kind == UnitType::Output && u.want_run)
            .map(|(k, _)| k.clone())
            .collect();
        // The Agent names the output unit after the component and each input unit
        // `<component id>-<input id>`: prefer the output that owns our inputs, then the lowest id.
        let owns_inputs = |id: &str| {
            self.units
                .values()
                .any(|u| u.kind == UnitType::Input && u.id.starts_with(&format!("{id}-")))
        };
        candidates.sort_by_key(|k| (!owns_inputs(&k.1), k.1.clone()));
        let chosen = active_key
            .filter(|k| candidates.contains(k))
            .or_else(|| candidates.first().cloned());
        for (key, unit) in &mut self.units {
            if unit.kind != UnitType::Output {
                continue;
            }
            if !unit.want_run {
                unit.phase = Phase::Stopped;
            } else if Some(key) != chosen.as_ref() {
                unit.phase = Phase::Failed(
                    UnitError::SecondOutput {
                        in_use: chosen.as_ref().map_or_else(String::new, |k| k.1.clone()),
                    }
                    .to_string(),
                );
            }
        }
        let Some(chosen) = chosen else {
            if self.output.take().is_some() {
                tracing::info!("output closed: no output unit expected");
            }
            self.opening = None;
            return;
        };
        let config = self.units.get(&chosen).and_then(|u| u.config.clone());
        match config {
            None => self.set_phase(
                &chosen,
                Phase::Starting("Starting: waiting for configuration".into()),
            ),
            Some(Err(e)) => {
                self.output = None;
                self.opening = None;
                self.set_phase(
                    &chosen,
                    Phase::Failed(format!("invalid output configuration: {e}")),
                );
            }
            Some(Ok(UnitConfig::Input(_))) => {}
            Some(Ok(UnitConfig::Output(spec))) => {
                let current = self
                    .output
                    .as_ref()
                    .is_some_and(|o| o.unit == chosen && o.spec == spec);
                let pending = self
                    .opening
                    .as_ref()
                    .is_some_and(|(k, s)| *k == chosen && *s == spec);
                if current {
                    self.set_phase(&chosen, Phase::Running);
                } else if !pending {
                    self.opening = Some((chosen.clone(), spec.clone()));
                    self.set_phase(
                        &chosen,
                        Phase::Configuring("Configuring: opening the output".into()),
                    );
                    effects.push(Effect::OpenOutput { unit: chosen, spec });
                }
            }
        }
    }

    /// The output `spec` of unit `key` opened (or not).
    pub(super) fn output_opened(
        &mut self,
        key: UnitKey,
        spec: OutputSpec,
        opened: Result<S, UnitError>,
    ) -> Vec<Effect<S>> {
        let mut effects = Vec::new();
        if self.opening.as_ref() != Some(&(key.clone(), spec.clone())) {
            return effects; // superseded by a newer config
        }
        self.opening = None;
        match opened {
            Ok(sink) => {
                tracing::info!(unit.id = %key.1, "output ready");
                self.sink_gen += 1;
                self.output = Some(ActiveOutput {
                    unit: key.clone(),
                    spec,
                    sink,
                    sink_gen: self.sink_gen,
                });
                self.set_phase(&key, Phase::Running);
            }
            Err(e) => {
                tracing::error!(unit.id = %key.1, "{e}");
                self.output = None;
                self.set_phase(&key, Phase::Failed(e.to_string()));
            }
        }
        self.reconcile_inputs(&mut effects);
        effects
    }

    /// The streams of unit `key` have stopped after an [`Effect::Stop`] with `report`.
    pub(super) fn drained(&mut self, key: &UnitKey) -> Vec<Effect<S>> {
        if let Some(unit) = self.units.get_mut(key) {
            unit.draining = false;
            tracing::info!(unit.id = %unit.id, "unit's streams stopped");
        }
        let mut effects = Vec::new();
        self.reconcile_inputs(&mut effects);
        effects
    }

    /// The unit's streams started; `streams` are their counters.
    pub(super) fn started(&mut self, key: &UnitKey, streams: Streams) {
        if let Some(unit) = self.units.get_mut(key) {
            unit.streams = streams;
        }
    }

    /// An [`Effect::Start`] failed: nothing runs, and the unit says why. The next change
    /// tries again.
    pub(super) fn start_failed(&mut self, key: &UnitKey, error: &UnitError) {
        if let Some(unit) = self.units.get_mut(key) {
            unit.run = None;
            unit.phase = Phase::Failed(error.to_string());
        }
    }

    /// Every running or draining unit is now stopping (the component is shutting down).
    pub(super) fn shutting_down(&mut self) {
        for unit in self.units.values_mut() {
            if unit.run.is_some() || unit.draining {
                unit.phase = Phase::Stopping;
            }
        }
    }

    /// Brings every input unit's streams in line with its desired state.
    fn reconcile_inputs(&mut self, effects: &mut Vec<Effect<S>>) {
        let sink = self.output.as_ref().map(|o| (o.sink.clone(), o.sink_gen));
        for (key, unit) in &mut self.units {
            if unit.kind == UnitType::Input {
                reconcile_input(key, unit, sink.as_ref(), effects);
            }
        }
    }

    fn set_phase(&mut self, key: &UnitKey, phase: Phase) {
        if let Some(unit) = self.units.get_mut(key) {
            unit.phase = phase;
        }
    }
}

fn reconcile_input<S: Clone>(
    key: &UnitKey,
    unit: &mut Unit,
    sink: Option<&(S, u64)>,
    effects: &mut Vec<Effect<S>>,
) {
    if !unit.want_run {
        drain(key, unit, effects);
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
        Some(Err(e)) => {
            let message = format!("invalid configuration: {e}");
            drain(key, unit, effects);
            unit.phase = Phase::Failed(message);
            return;
        }
        Some(Ok(UnitConfig::Output(_))) => return,
        Some(Ok(UnitConfig::Input(config))) => config.input.clone(),
    };
    let Some((sink, sink_gen)) = sink else {
        drain(key, unit, effects);
        unit.phase = Phase::Configuring("Configuring: waiting for the output unit".into());
        return;
    };
    let wanted = Run {
        config_gen: unit.config_gen,
        sink_gen: *sink_gen,
    };
    if unit.run == Some(wanted) {
        return;
    }
    // Reconfigure: stop the old streams first; their drain starts the new ones.
    drain(key, unit, effects);
    if unit.draining {
        unit.phase = Phase::Configuring("Configuring: applying the new configuration".into());
        return;
    }
    effects.push(Effect::Start {
        unit: key.clone(),
        config,
        sink: sink.clone(),
    });
    unit.run = Some(wanted);
    unit.phase = Phase::Running;
}

/// Stops a unit's streams, if any, and reconciles it again once they have finished their batch.
fn drain<S>(key: &UnitKey, unit: &mut Unit, effects: &mut Vec<Effect<S>>) {
    if unit.run.take().is_none() {
        return;
    }
    tracing::info!(unit.id = %unit.id, "stopping the unit's streams");
    unit.draining = true;
    effects.push(Effect::Stop {
        unit: key.clone(),
        report: true,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::structs::json_to_struct;
    use crate::proto::UnitExpectedConfig;
    use serde_json::json;

    /// The sink the tests "open": its name.
    type Sink = &'static str;

    fn unit(id: &str, kind: UnitType, idx: u64, state: State, source: Value) -> UnitExpected {
        let Value::Object(o) = source else {
            unreachable!("a unit config is an object")
        };
        UnitExpected {
            id: id.into(),
            r#type: kind as i32,
            state: state as i32,
            config_state_idx: idx,
            config: Some(UnitExpectedConfig {
                source: Some(json_to_struct(&o)),
                ..Default::default()
            }),
            log_level: UnitLogLevel::Info as i32,
        }
    }

    fn input(idx: u64, state: State) -> UnitExpected {
        unit(
            "comp-in",
            UnitType::Input,
            idx,
            state,
            json!({"id": "tc", "type": "ti_threatconnect", "streams": [{
                "id": "s", "access_id": "1", "secret_key": "k",
                "url": "http://127.0.0.1:9", "interval": "1h", "batch_size": 100 + idx,
            }]}),
        )
    }

    fn output(id: &str, path: &str) -> UnitExpected {
        unit(
            id,
            UnitType::Output,
            1,
            State::Healthy,
            json!({"type": "ndjson", "path": path}),
        )
    }

    fn expected(units: Vec<UnitExpected>) -> CheckinExpected {
        CheckinExpected {
            units,
            ..Default::default()
        }
    }

    /// Applies the input unit at config index `idx` and the `comp` output to `/tmp/a`.
    fn apply(table: &mut Table<Sink>, idx: u64, state: State) -> Vec<Effect<Sink>> {
        table.apply(expected(vec![input(idx, state), output("comp", "/tmp/a")]))
    }

    fn phase(table: &Table<Sink>, kind: UnitType, id: &str) -> Phase {
        table.units[&(kind as i32, id.to_owned())].phase.clone()
    }

    /// The effects other than log levels, as short labels.
    fn labels(effects: &[Effect<Sink>]) -> Vec<String> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::LogLevel { .. } | Effect::ForgetLogLevel { .. } => None,
                Effect::Monitoring(m) => Some(format!("monitoring {m:?}")),
                Effect::OpenOutput { unit, .. } => Some(format!("open {}", unit.1)),
                Effect::Start { unit, sink, .. } => Some(format!("start {} into {sink}", unit.1)),
                Effect::Stop { unit, report } => Some(format!("stop {} report={report}", unit.1)),
            })
            .collect()
    }

    fn opened(table: &mut Table<Sink>, id: &str, path: &str, sink: Sink) -> Vec<Effect<Sink>> {
        let Some(Ok(UnitConfig::Output(spec))) = table.units
            [&(UnitType::Output as i32, id.to_owned())]
            .config
            .clone()
        else {
            unreachable!("the output's config is valid")
        };
        assert_eq!(
            spec,
            OutputSpec::parse(&json!({"type": "ndjson", "path": path})).unwrap()
        );
        table.output_opened((UnitType::Output as i32, id.to_owned()), spec, Ok(sink))
    }

    #[test]
    fn inputs_wait_for_the_output_then_start_into_it() {
        let mut t = Table::<Sink>::default();
        let effects = apply(&mut t, 1, State::Healthy);
        assert_eq!(labels(&effects), ["open comp"]);
        assert_eq!(
            phase(&t, UnitType::Input, "comp-in"),
            Phase::Configuring("Configuring: waiting for the output unit".into())
        );
        assert_eq!(
            phase(&t, UnitType::Output, "comp"),
            Phase::Configuring("Configuring: opening the output".into())
        );
        let effects = opened(&mut t, "comp", "/tmp/a", "sink-a");
        assert_eq!(labels(&effects), ["start comp-in into sink-a"]);
        assert_eq!(phase(&t, UnitType::Input, "comp-in"), Phase::Running);
        assert_eq!(phase(&t, UnitType::Output, "comp"), Phase::Running);
        // The same expected state again changes nothing.
        let effects = apply(&mut t, 1, State::Healthy);
        assert!(labels(&effects).is_empty(), "{:?}", labels(&effects));
    }

    #[test]
    fn a_reconfigure_drains_before_it_starts_again() {
        let mut t = Table::<Sink>::default();
        apply(&mut t, 1, State::Healthy);
        opened(&mut t, "comp", "/tmp/a", "sink-a");
        let effects = apply(&mut t, 2, State::Healthy);
        assert_eq!(labels(&effects), ["stop comp-in report=true"]);
        assert_eq!(
            phase(&t, UnitType::Input, "comp-in"),
            Phase::Configuring("Configuring: applying the new configuration".into())
        );
        // Another check-in while draining starts nothing: two runs never share a cursor.
        let effects = apply(&mut t, 2, State::Healthy);
        assert!(labels(&effects).is_empty(), "{:?}", labels(&effects));
        let effects = t.drained(&(UnitType::Input as i32, "comp-in".into()));
        assert_eq!(labels(&effects), ["start comp-in into sink-a"]);
        assert_eq!(
            t.units[&(UnitType::Input as i32, "comp-in".into())].acked_idx,
            2
        );
    }

    #[test]
    fn stop_then_removal() {
        let mut t = Table::<Sink>::default();
        apply(&mut t, 1, State::Healthy);
        opened(&mut t, "comp", "/tmp/a", "sink-a");
        let effects = apply(&mut t, 1, State::Stopped);
        assert_eq!(labels(&effects), ["stop comp-in report=true"]);
        assert_eq!(phase(&t, UnitType::Input, "comp-in"), Phase::Stopping);
        t.drained(&(UnitType::Input as i32, "comp-in".into()));
        assert_eq!(phase(&t, UnitType::Input, "comp-in"), Phase::Stopped);
        // A running unit the Agent no longer lists is stopped without a report.
        let mut t = Table::<Sink>::default();
        apply(&mut t, 1, State::Healthy);
        opened(&mut t, "comp", "/tmp/a", "sink-a");
        let effects = t.apply(expected(vec![output("comp", "/tmp/a")]));
        assert_eq!(labels(&effects), ["stop comp-in report=false"]);
        assert!(
            effects
                .iter()
                .any(|e| matches!(e, Effect::ForgetLogLevel { id } if id == "comp-in"))
        );
        assert!(
            !t.units
                .contains_key(&(UnitType::Input as i32, "comp-in".into()))
        );
    }

    #[test]
    fn a_new_output_restarts_inputs_into_it_and_a_stale_open_is_ignored() {
        let mut t = Table::<Sink>::default();
        apply(&mut t, 1, State::Healthy);
        let stale = match t.units[&(UnitType::Output as i32, "comp".into())]
            .config
            .clone()
        {
            Some(Ok(UnitConfig::Output(spec))) => spec,
            _ => unreachable!("valid output"),
        };
        // The output changes before the first open finished: that open's result is dropped.
        let mut changed = output("comp", "/tmp/b");
        changed.config_state_idx = 2;
        let effects = t.apply(expected(vec![input(1, State::Healthy), changed.clone()]));
        assert_eq!(labels(&effects), ["open comp"]);
        let effects = t.output_opened(
            (UnitType::Output as i32, "comp".into()),
            stale,
            Ok("sink-a"),
        );
        assert!(labels(&effects).is_empty(), "a superseded open is ignored");
        let effects = opened(&mut t, "comp", "/tmp/b", "sink-b");
        assert_eq!(labels(&effects), ["start comp-in into sink-b"]);
        // A third output config: the input drains, then starts into the new sink.
        let mut third = output("comp", "/tmp/c");
        third.config_state_idx = 3;
        t.apply(expected(vec![input(1, State::Healthy), third]));
        let effects = opened(&mut t, "comp", "/tmp/c", "sink-c");
        assert_eq!(labels(&effects), ["stop comp-in report=true"]);
        let effects = t.drained(&(UnitType::Input as i32, "comp-in".into()));
        assert_eq!(labels(&effects), ["start comp-in into sink-c"]);
    }

    #[test]
    fn one_output_per_component_and_failures_are_named() {
        let mut t = Table::<Sink>::default();
        t.apply(expected(vec![
            input(1, State::Healthy),
            output("zzz", "/tmp/z"),
            output("comp", "/tmp/a"),
        ]));
        // The output that owns the inputs (`comp` for `comp-in`) wins over the lower id.
        assert_eq!(
            phase(&t, UnitType::Output, "zzz"),
            Phase::Failed(
                "only one output unit is supported per component (comp is in use)".into()
            )
        );
        let key = (UnitType::Output as i32, "comp".to_owned());
        let Some(Ok(UnitConfig::Output(spec))) = t.units[&key].config.clone() else {
            unreachable!("valid output")
        };
        let error = UnitError::OutputUnusable(Arc::new(crate::sink::SinkError::Io {
            target: "/tmp/a".into(),
            source: std::io::Error::other("no space left"),
        }));
        t.output_opened(key, spec, Err(error));
        assert_eq!(
            phase(&t, UnitType::Output, "comp"),
            Phase::Failed("output unusable: cannot write events to /tmp/a: no space left".into())
        );
        // A start that fails leaves nothing running and says why; the next change retries.
        let mut t = Table::<Sink>::default();
        apply(&mut t, 1, State::Healthy);
        opened(&mut t, "comp", "/tmp/a", "sink-a");
        let key = (UnitType::Input as i32, "comp-in".to_owned());
        let locked = crate::state::StateError::Locked {
            path: "/data/state.redb".into(),
        };
        t.start_failed(&key, &UnitError::State(locked.clone()));
        assert_eq!(
            phase(&t, UnitType::Input, "comp-in"),
            Phase::Failed(locked.to_string())
        );
        assert!(!t.units[&key].is_running());
        let effects = apply(&mut t, 1, State::Healthy);
        assert_eq!(labels(&effects), ["start comp-in into sink-a"]);
    }

    #[test]
    fn invalid_config_is_acknowledged_and_stops_what_ran() {
        let mut t = Table::<Sink>::default();
        apply(&mut t, 1, State::Healthy);
        opened(&mut t, "comp", "/tmp/a", "sink-a");
        let bad = unit(
            "comp-in",
            UnitType::Input,
            7,
            State::Healthy,
            json!({"id": "tc", "type": "ti_threatconnect", "streams": [{"id": "s", "access_id": "1", "secret_key": "hmac-SECRET", "batch_size": "lots"}]}),
        );
        let effects = t.apply(expected(vec![bad, output("comp", "/tmp/a")]));
        assert_eq!(labels(&effects), ["stop comp-in report=true"]);
        let unit = &t.units[&(UnitType::Input as i32, "comp-in".into())];
        assert_eq!(unit.acked_idx, 7);
        let Phase::Failed(message) = &unit.phase else {
            unreachable!("{:?}", unit.phase)
        };
        assert!(message.starts_with("invalid configuration: "), "{message}");
        assert!(message.contains("batch_size"), "{message}");
        assert!(!message.contains("hmac-SECRET"), "{message}");
    }

    #[test]
    fn the_monitoring_endpoint_follows_the_unit_config() {
        let mut t = Table::<Sink>::default();
        let with = |idx: u64, monitoring: Value| {
            let mut source = json!({"id": "tc", "type": "ti_threatconnect", "streams": [{
                "id": "s", "access_id": "1", "secret_key": "k",
                "url": "http://127.0.0.1:9", "interval": "1h",
            }]});
            source["monitoring"] = monitoring;
            unit("comp-in", UnitType::Input, idx, State::Healthy, source)
        };
        let enabled = json!({"http": {"enabled": true, "port": 0}});
        let effects = t.apply(expected(vec![with(1, enabled.clone())]));
        let wanted: Vec<String> = labels(&effects)
            .into_iter()
            .filter(|l| l.starts_with("monitoring"))
            .collect();
        assert_eq!(
            wanted,
            ["monitoring Some(MonitoringConfig { host: 127.0.0.1, port: 0 })"]
        );
        // Unchanged: nothing to do. Disabled: stopped.
        assert!(labels(&t.apply(expected(vec![with(1, enabled)]))).is_empty());
        let effects = t.apply(expected(vec![with(2, json!({"http": {"enabled": false}}))]));
        assert!(labels(&effects).contains(&"monitoring None".to_owned()));
        // A remote bind without allow_remote is a config error naming the field.
        t.apply(expected(vec![with(
            3,
            json!({"http": {"enabled": true, "host": "0.0.0.0"}}),
        )]));
        let Phase::Failed(message) = phase(&t, UnitType::Input, "comp-in") else {
            unreachable!("refused")
        };
        assert!(message.contains("monitoring.http.host"), "{message}");
    }
}
