//! The unit manager (spec §5.4, §5.5): turns each reassembled `CheckinExpected` into running
//! work and reports every unit's observed state.
//!
//! Two halves:
//! * [`table`] is the pure reconciler. Each unit keeps its *desired* state (run or stop, last
//!   config) and what *runs* (streams with some config and some sink, or draining). Every event
//!   (an expected message, an output opened, a unit drained) goes through the table, which
//!   returns the effects to carry out. No tokio, tested synchronously.
//! * [`runtime`] ([`UnitManager`]) holds the table under a lock, carries the effects out (opens
//!   the output, starts and cancels poll loops in `TaskTracker`s, inside the caller's span),
//!   feeds their outcome back into the table and wakes the check-in loop.
//!
//! [`output`] reads and opens the output unit's config; [`diagnostics`] renders what the
//! Actions `diagnostics` call returns.
//!
//! * Input units (`ti_threatconnect`, `ti_threatq`): `config.source` is validated with
//!   [`policy::input_from_value`]; each stream runs as a [`crate::poll::Poller`] under the
//!   unit's `CancellationToken` and `TaskTracker`, with its cursor at
//!   `cursor_key(unit_id, stream_id)` in `path.data`. A reconfigure stops the old loops (the
//!   batch in flight is finished and committed) before new ones start, so two loops never
//!   share a cursor.
//! * Exactly one output unit: its config (`{type: otlp, endpoint, ssl?}`) opens the sink that
//!   every input unit writes to; a second output unit, or an unusable one, is FAILED.
//! * The config index is acknowledged as soon as the config is received and validated, even
//!   when it is invalid (then the unit is FAILED naming the field), never later.

mod diagnostics;
mod output;
mod runtime;
mod table;

use std::sync::Arc;

use serde_json::Value;

use crate::config::Problems;
use crate::pipeline::BuildError;
use crate::policy::read::SUPPORTED_INPUT_TYPES;
use crate::policy::{self, InputConfig, MonitoringConfig};
use crate::sink::SinkError;
use crate::state::StateError;

pub(crate) use output::OutputSpec;
pub use runtime::{Observed, UnitManager};

/// Why a unit cannot run. What the unit's health message says (never a secret).
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum UnitError {
    /// The unit has no `config.source`.
    #[error("config.source: missing (expected the policy input)")]
    MissingSource,
    /// The input type is not one of ours.
    #[error("type: input type {0:?} is not supported (supported: {list})", list = SUPPORTED_INPUT_TYPES.join(", "))]
    UnsupportedInputType(String),
    /// An `ndjson` output to stdout, which is the Agent's log channel (spec §2.2).
    #[error("path: \"-\" (stdout) is the Agent's log channel; use a file path")]
    StdoutOutput,
    /// The config has problems, each naming its field.
    #[error("{}", .0.0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Problems),
    /// Another output unit is already in use.
    #[error("only one output unit is supported per component ({in_use} is in use)")]
    SecondOutput {
        /// The output unit in use.
        in_use: String,
    },
    /// The output could not be opened.
    #[error("output unusable: {0}")]
    OutputUnusable(Arc<SinkError>),
    /// The cursor store cannot be used.
    #[error(transparent)]
    State(#[from] StateError),
    /// A stream could not be built (`ssl`, `proxy_url`).
    #[error(transparent)]
    Stream(Arc<BuildError>),
}

/// An input unit's validated config.
#[derive(Debug, Clone)]
pub(crate) struct UnitInput {
    /// The input and its streams.
    pub input: InputConfig,
    /// `monitoring.http`, when the unit enables it: the component then serves `/metrics`,
    /// `/stats` and `/healthz` (the standalone `monitoring` block, in the unit's config).
    pub monitoring: Option<MonitoringConfig>,
}

/// Validates an input unit's `config.source`: one of our input types, then the shared config
/// validation. The error lists every problem, each naming its field.
pub(crate) fn validate_input(source: &Value) -> Result<UnitInput, UnitError> {
    let Value::Object(fields) = source else {
        return Err(UnitError::MissingSource);
    };
    let kind = source.get("type").and_then(Value::as_str).unwrap_or("");
    if !SUPPORTED_INPUT_TYPES.contains(&kind) {
        return Err(UnitError::UnsupportedInputType(kind.to_owned()));
    }
    let mut input = fields.clone();
    let monitoring = match input.remove("monitoring") {
        None => None,
        Some(block) => policy::monitoring_from_value(&block).map_err(UnitError::Invalid)?,
    };
    let input = policy::input_from_value(&Value::Object(input)).map_err(UnitError::Invalid)?;
    Ok(UnitInput { input, monitoring })
}
