//! What the units report: their observed state for the next check-in, and the diagnostics the
//! Actions `diagnostics` call returns. Both read the table; neither changes it.

use std::sync::Arc;

use serde_json::{Value, json};

use super::UnitInput;
use super::table::{Phase, Table, Unit, UnitConfig};
use crate::agent::health;
use crate::agent::structs::json_to_struct;
use crate::proto::{State, UnitObserved};
use crate::telemetry::{StreamCounters, StreamStatus};

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
    pub(crate) fn change_key(&self) -> Vec<(String, i32, u64, i32, String)> {
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

/// The observed state of every unit of `table`.
pub(super) fn observe<S>(table: &Table<S>) -> Observed {
    let units = table.units.values().map(observe_unit).collect();
    Observed {
        units,
        features_idx: table.features_idx,
        component_idx: table.component_idx,
    }
}

fn observe_unit(unit: &Unit) -> UnitObserved {
    let (state, message, payload) = match &unit.phase {
        Phase::Running if unit.is_running() => {
            let h = health::derive(&statuses(&unit.streams));
            (h.state, h.message, Some(json_to_struct(&h.payload)))
        }
        Phase::Running => (State::Healthy, "Healthy".to_owned(), None),
        Phase::Starting(m) => (State::Starting, m.clone(), None),
        Phase::Configuring(m) => (State::Configuring, m.clone(), None),
        Phase::Failed(m) => (State::Failed, m.clone(), None),
        Phase::Stopping => (State::Stopping, "Stopping".to_owned(), None),
        Phase::Stopped => (State::Stopped, "Stopped".to_owned(), None),
    };
    UnitObserved {
        id: unit.id.clone(),
        r#type: unit.kind as i32,
        config_state_idx: unit.acked_idx,
        state: state as i32,
        message,
        payload,
    }
}

fn statuses(streams: &[(String, Arc<StreamCounters>)]) -> Vec<(String, StreamStatus)> {
    streams
        .iter()
        .map(|(id, c)| (id.clone(), c.status()))
        .collect()
}

/// Diagnostics of every unit (component level): state, redacted config, stream status.
pub(super) fn component<S>(table: &Table<S>) -> Value {
    let units: Vec<Value> = table.units.values().map(unit).collect();
    json!({
        "units": units,
        "features_idx": table.features_idx,
        "component_idx": table.component_idx,
        "output": table.output.as_ref().map(|o| o.spec.redacted_json()),
    })
}

/// Diagnostics of one unit.
pub(super) fn unit(unit: &Unit) -> Value {
    let seen = observe_unit(unit);
    let config = match &unit.config {
        None => Value::Null,
        Some(Err(e)) => json!({ "invalid": e.to_string() }),
        Some(Ok(UnitConfig::Output(spec))) => spec.redacted_json(),
        Some(Ok(UnitConfig::Input(UnitInput { input, monitoring }))) => json!({
            "monitoring": monitoring.map(|m| json!({"host": m.host.to_string(), "port": m.port})),
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
        .streams
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
        "state": seen.state().as_str_name(),
        "message": seen.message,
        "config_state_idx": unit.acked_idx,
        "log_level": unit.log_level.as_str_name(),
        "config": config,
        "streams": streams,
    })
}
