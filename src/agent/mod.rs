//! `ti-sidecar agent`: the Elastic Agent V2 component (spec §2–§8, DESIGN §1, §5).
//!
//! The Agent launches us with `-E path.data=DIR` and writes a `StartUpInfo` to stdin; we dial
//! its gRPC server over mTLS and keep two streams open: CheckinV2 (expected units in, observed
//! unit states out) and Actions (diagnostics). Each input unit runs its streams through the
//! shared poll loop into the sink chosen by the output unit, with cursors in `path.data`.
//!
//! One file per concern: [`launch`] (arguments, StartUpInfo), [`connection`] (mTLS channel),
//! [`checkin`] (the CheckinV2 loop and chunk reassembly), [`units`] (the unit manager),
//! [`actions`] (Actions and diagnostics), [`health`] (unit state derivation), [`logging`]
//! (per-unit log levels), [`structs`] (protobuf `Struct` ⇄ JSON).

pub(crate) mod actions;
pub(crate) mod checkin;
pub mod connection;
pub mod health;
pub(crate) mod launch;
pub(crate) mod logging;
pub mod structs;
pub mod units;

use std::time::Duration;
use tracing::Instrument as _;

use tokio_util::sync::CancellationToken;

use crate::pipeline::RunOptions;
use crate::proto::StartUpInfo;
use crate::state::StateStore;
use checkin::Session as _;

pub use checkin::Reconnect;
pub use launch::{LaunchArgs, LaunchError, parse_args, read_start_up_info};
pub use logging::UnitLevels;

/// How long units get to finish their batch and commit on SIGTERM (the Agent waits 25 s).
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(20);

/// Why the component exits with an error (the Agent then restarts it).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The launch contract was not met.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// `path.data` could not be created.
    #[error("path.data {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The channel could not be configured.
    #[error(transparent)]
    Connection(#[from] connection::ConnectionError),
    /// A control stream stayed down.
    #[error(transparent)]
    StreamLost(#[from] checkin::StreamLost),
    /// A control stream's task panicked (a bug): reported as such, not as a lost stream.
    #[error("the {stream} task crashed: {message}")]
    TaskPanicked {
        /// `CheckinV2` or `Actions`.
        stream: &'static str,
        /// The panic's message.
        message: String,
    },
}

/// Knobs of an agent run (tests shorten the reconnect bounds).
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The state directory (`-E path.data`).
    pub path_data: std::path::PathBuf,
    /// Reconnect pacing of both streams.
    pub reconnect: Reconnect,
    /// Per-unit log levels (shared with the log filter).
    pub levels: UnitLevels,
    /// Override of the HTTP retry schedule of every stream (tests use short delays).
    pub retry: Option<crate::http::RetryPolicy>,
    /// Override of the poll loop's first retry delay (tests use short delays).
    pub poll_retry_delay: Option<Duration>,
}

impl AgentOptions {
    /// The production settings for `path_data`.
    pub fn new(path_data: std::path::PathBuf, levels: UnitLevels) -> Self {
        Self {
            path_data,
            reconnect: Reconnect::default(),
            levels,
            retry: None,
            poll_retry_delay: None,
        }
    }
}

/// Runs the component until `shutdown` (SIGTERM: every unit stops and commits, then `Ok`), or
/// until a control stream cannot be re-established (`Err`: exit non-zero so the Agent restarts
/// us).
pub async fn run(
    info: StartUpInfo,
    options: AgentOptions,
    shutdown: CancellationToken,
) -> Result<(), AgentError> {
    crate::fsutil::create_private_dir_all(&options.path_data).map_err(|source| {
        AgentError::DataDir {
            path: options.path_data.display().to_string(),
            source,
        }
    })?;
    // A damaged store must not keep the component from connecting: its input units report
    // FAILED with the reason, which the Agent shows, instead of a silent restart loop.
    let state = StateStore::open(&options.path_data);
    if let Err(e) = &state {
        tracing::error!("path.data: {e}");
    }
    let run_options = RunOptions {
        state_dir: options.path_data.clone(),
        once: false,
        retry: options.retry,
        poll_retry_delay: options.poll_retry_delay,
    };
    let units = units::UnitManager::with_state(state, run_options, options.levels.clone());
    let channel = connection::channel_lazy(&info)?;
    tracing::info!(
        addr = %info.addr,
        server_name = %info.server_name,
        max_message_size = connection::max_message_size(&info) as u64,
        path_data = %options.path_data.display(),
        "connecting to the Agent"
    );
    let streams_stop = CancellationToken::new();
    let checkin = checkin::CheckinLoop {
        client: connection::client(channel.clone(), &info),
        token: info.token.clone(),
        units: units.clone(),
        reconnect: options.reconnect,
    };
    let actions = actions::ActionsLoop::new(
        connection::client(channel, &info),
        info.token.clone(),
        units.clone(),
        options.reconnect,
    );
    let mut checkin_task = tokio::spawn(checkin.run(streams_stop.clone()).in_current_span());
    let mut actions_task = tokio::spawn(actions.run(streams_stop.clone()).in_current_span());

    // Which stream task already finished (a JoinHandle must not be polled twice).
    let (outcome, checkin_done, actions_done) = tokio::select! {
        () = shutdown.cancelled() => {
            tracing::info!("shutdown requested: stopping every unit");
            (Ok(()), false, false)
        }
        r = &mut checkin_task => (flatten(r, checkin::CheckinLoop::NAME), true, false),
        r = &mut actions_task => (flatten(r, actions::ActionsLoop::NAME), false, true),
    };
    // Units stop (batch in flight finished, cursor committed) while the streams still report
    // STOPPING; then the streams close.
    if !units.shutdown(STOP_GRACE).await {
        tracing::warn!("some streams did not stop within {STOP_GRACE:?}");
    }
    streams_stop.cancel();
    if !checkin_done {
        let _ = checkin_task.await;
    }
    if !actions_done {
        let _ = actions_task.await;
    }
    // The caller logs an error, whichever step it came from.
    outcome
}

/// A control stream's end; a crashed stream task is reported as the crash it is.
fn flatten(
    joined: Result<Result<(), checkin::StreamLost>, tokio::task::JoinError>,
    stream: &'static str,
) -> Result<(), AgentError> {
    match joined {
        Ok(r) => r.map_err(AgentError::from),
        Err(e) => Err(AgentError::TaskPanicked {
            stream,
            message: if e.is_panic() {
                panic_message(e.into_panic())
            } else {
                "cancelled".to_owned()
            },
        }),
    }
}

/// The text a panic was raised with (bounded), or a placeholder for a non-text payload.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(a non-text panic payload)".to_owned());
    crate::text::bound_owned(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panicking control-stream task used to surface as `StreamLost { stream: "control" }`
    /// ("stayed down"): it is reported as the crash it is, with the panic's message.
    #[tokio::test]
    async fn a_panicked_stream_task_is_reported_as_a_crash() {
        let task = tokio::spawn(async {
            if std::hint::black_box(true) {
                panic!("unit table poisoned");
            }
            Ok::<(), checkin::StreamLost>(())
        });
        let err = flatten(task.await, "CheckinV2").unwrap_err();
        assert!(
            matches!(&err, AgentError::TaskPanicked { stream: "CheckinV2", message } if message == "unit table poisoned"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "the CheckinV2 task crashed: unit table poisoned"
        );
    }
}
