//! The Actions stream (spec §4.2, §6): the `init` response first, then every request is answered
//! concurrently. DIAGNOSTICS returns JSON files (build and version, the effective config with
//! secrets redacted, per-unit cursor, counters and last error); CUSTOM actions are not defined
//! by this component and fail with a JSON error body.

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::checkin::{Reconnect, Session, StreamLost, status_text, version_info};
use super::connection::AgentClient;
use super::units::UnitManager;
use crate::proto::action_request::{Level, Type};
use crate::proto::action_response::Status;
use crate::proto::{ActionDiagnosticUnitResult, ActionRequest, ActionResponse};

/// The Actions side of the component.
pub(crate) struct ActionsLoop {
    client: AgentClient,
    token: String,
    units: UnitManager,
    reconnect: Reconnect,
    /// Finished responses, kept across reconnects until a stream takes them.
    done_tx: mpsc::UnboundedSender<ActionResponse>,
    done_rx: mpsc::UnboundedReceiver<ActionResponse>,
}

impl ActionsLoop {
    /// A loop on `client` that authenticates with `token` (a secret: never logged).
    pub fn new(
        client: AgentClient,
        token: String,
        units: UnitManager,
        reconnect: Reconnect,
    ) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Self {
            client,
            token,
            units,
            reconnect,
            done_tx,
            done_rx,
        }
    }
}

/// A FAILED response body, as the Agent parses it.
fn error_body(message: &str) -> Vec<u8> {
    json!({ "error": message }).to_string().into_bytes()
}

fn json_file(
    name: &str,
    filename: &str,
    description: &str,
    content: &Value,
) -> ActionDiagnosticUnitResult {
    let now = std::time::SystemTime::now();
    ActionDiagnosticUnitResult {
        name: name.to_owned(),
        filename: filename.to_owned(),
        description: description.to_owned(),
        content_type: "application/json".to_owned(),
        content: serde_json::to_vec_pretty(content).unwrap_or_default(),
        generated: Some(prost_types::Timestamp::from(now)),
    }
}

/// Answers one request (without the token, added by the caller).
pub fn handle(units: &UnitManager, request: &ActionRequest) -> ActionResponse {
    let mut response = ActionResponse {
        id: request.id.clone(),
        ..Default::default()
    };
    let fail = |mut r: ActionResponse, message: &str| {
        r.status = Status::Failed as i32;
        r.result = error_body(message);
        r
    };
    match Type::try_from(request.r#type) {
        Ok(Type::Diagnostics) => {
            let level = Level::try_from(request.level).unwrap_or(Level::All);
            if matches!(level, Level::All | Level::Component) {
                let info = version_info();
                response.diagnostic.push(json_file(
                    "version",
                    "ti-sidecar-version.json",
                    "ti-sidecar build and version",
                    &json!({
                        "name": info.name,
                        "version": env!("CARGO_PKG_VERSION"),
                        "build": info.meta,
                        "build_hash": info.build_hash,
                        "pid": std::process::id(),
                        "agent": units.agent_info().map(|a| json!({
                            "id": a.id, "version": a.version, "snapshot": a.snapshot,
                        })),
                    }),
                ));
                response.diagnostic.push(json_file(
                    "units",
                    "ti-sidecar-units.json",
                    "every unit: state, effective configuration (secrets redacted), stream status",
                    &units.diagnostics_all(),
                ));
            }
            if matches!(level, Level::All | Level::Unit) && !request.unit_id.is_empty() {
                match units.diagnostics_unit(&request.unit_id, request.unit_type) {
                    Some(unit) => response.diagnostic.push(json_file(
                        "unit",
                        &format!(
                            "ti-sidecar-unit-{}.json",
                            crate::fsutil::path_component(&request.unit_id)
                        ),
                        "this unit: state, effective configuration (secrets redacted), cursor, counters, last error",
                        &unit,
                    )),
                    None if level == Level::Unit => return fail(response, "action unit not found"),
                    None => {}
                }
            }
            response
        }
        Ok(Type::Custom) => {
            if !units.has_unit(&request.unit_id, request.unit_type) {
                return fail(response, "action unit not found");
            }
            if !request.params.is_empty()
                && !matches!(
                    serde_json::from_slice::<Value>(&request.params),
                    Ok(Value::Object(_))
                )
            {
                return fail(response, "action params failed to be un-marshaled");
            }
            fail(response, "action undefined")
        }
        Err(_) => fail(response, "action type unknown"),
    }
}

impl ActionsLoop {
    /// Runs until `shutdown`, or fails after the stream stayed down for `give_up_after`.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), StreamLost> {
        let reconnect = self.reconnect;
        reconnect.drive(&mut self, &shutdown).await
    }

    /// One stream: returns whether it got established, and why it ended.
    async fn open_session(&mut self) -> (bool, String) {
        let (tx, rx) = mpsc::channel::<ActionResponse>(64);
        let init = ActionResponse {
            token: self.token.clone(),
            id: "init".to_owned(),
            status: Status::Success as i32,
            result: b"{}".to_vec(),
            diagnostic: Vec::new(),
        };
        if tx.send(init).await.is_err() {
            return (false, "internal: outbound queue closed".into());
        }
        let mut client = self.client.clone();
        let call = client.actions(ReceiverStream::new(rx));
        tokio::pin!(call);
        let mut inbound: Option<tonic::Streaming<ActionRequest>> = None;
        let mut established = false;
        loop {
            tokio::select! {
                // The Agent may send no header until its first request: never wait on it to
                // flush responses.
                r = &mut call, if inbound.is_none() => match r {
                    Ok(response) => {
                        established = true;
                        tracing::info!("Actions stream established");
                        inbound = Some(response.into_inner());
                    }
                    Err(status) => return (established, status_text(&status)),
                },
                msg = next_request(&mut inbound), if inbound.is_some() => match msg {
                    Ok(Some(request)) => self.dispatch(request),
                    Ok(None) => return (established, "closed by the Agent".into()),
                    Err(status) => return (established, status_text(&status)),
                },
                Some(response) = self.done_rx.recv() => {
                    // Responses finished while a previous stream was down go out now.
                    if tx.send(response).await.is_err() {
                        return (established, "outbound responses are not being sent".into());
                    }
                }
            }
        }
    }

    /// Answers one request on its own task (diagnostics must not hold up other requests); the
    /// response joins the queue that survives reconnects.
    fn dispatch(&self, request: ActionRequest) {
        if request.unit_id.is_empty() {
            tracing::info!(action.id = %request.id, action.type = request.r#type, "action received");
        } else {
            tracing::info!(action.id = %request.id, action.type = request.r#type, unit.id = %request.unit_id, "action received");
        }
        let units = self.units.clone();
        let token = self.token.clone();
        let done = self.done_tx.clone();
        tokio::spawn(
            async move {
                let id = request.id.clone();
                let mut response = tokio::task::spawn_blocking(move || handle(&units, &request))
                    .await
                    .unwrap_or_else(|_| ActionResponse {
                        id,
                        status: Status::Failed as i32,
                        result: error_body("internal error"),
                        ..Default::default()
                    });
                response.token = token;
                let _ = done.send(response);
            }
            .in_current_span(),
        );
    }
}

async fn next_request(
    inbound: &mut Option<tonic::Streaming<ActionRequest>>,
) -> Result<Option<ActionRequest>, tonic::Status> {
    match inbound {
        Some(s) => s.message().await,
        None => std::future::pending().await,
    }
}

impl Session for ActionsLoop {
    const NAME: &'static str = "Actions";

    fn session(&mut self) -> impl std::future::Future<Output = (bool, String)> + Send {
        self.open_session()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::RunOptions;
    use crate::proto::{CheckinExpected, State, UnitExpected, UnitExpectedConfig, UnitType};
    use crate::state::StateStore;
    use std::time::Duration;

    fn manager(dir: &std::path::Path) -> UnitManager {
        UnitManager::new(
            StateStore::open(dir).expect("state"),
            RunOptions {
                state_dir: dir.to_owned(),
                once: false,
                retry: None,
                poll_retry_delay: None,
            },
            super::super::logging::UnitLevels::new(tracing::level_filters::LevelFilter::INFO),
        )
    }

    #[tokio::test]
    async fn diagnostics_redact_secrets_and_custom_actions_fail_with_json() {
        let dir = tempfile::tempdir().expect("dir");
        let units = manager(dir.path());
        let source = json!({"id": "tc", "type": "ti_threatconnect", "streams": [{
            "id": "s", "access_id": "1", "secret_key": "hmac-SECRET-value", "url": "http://127.0.0.1:9"}]});
        let Value::Object(o) = source else {
            unreachable!()
        };
        units.apply(CheckinExpected {
            units: vec![UnitExpected {
                id: "in-1".into(),
                r#type: UnitType::Input as i32,
                state: State::Healthy as i32,
                config_state_idx: 1,
                config: Some(UnitExpectedConfig {
                    source: Some(super::super::structs::json_to_struct(&o)),
                    ..Default::default()
                }),
                log_level: 2,
            }],
            ..Default::default()
        });
        let all = handle(
            &units,
            &ActionRequest {
                id: "d1".into(),
                r#type: Type::Diagnostics as i32,
                level: Level::All as i32,
                unit_id: "in-1".into(),
                ..Default::default()
            },
        );
        assert_eq!(all.status, Status::Success as i32);
        assert_eq!(all.diagnostic.len(), 3);
        for file in &all.diagnostic {
            let text = String::from_utf8_lossy(&file.content);
            assert!(!text.contains("hmac-SECRET-value"), "{text}");
        }
        let unit_text = String::from_utf8_lossy(&all.diagnostic[2].content);
        assert!(unit_text.contains("[REDACTED]"), "{unit_text}");

        let custom = handle(
            &units,
            &ActionRequest {
                id: "c1".into(),
                name: "ti_threatconnect".into(),
                unit_id: "in-1".into(),
                ..Default::default()
            },
        );
        assert_eq!(custom.status, Status::Failed as i32);
        let body: Value = serde_json::from_slice(&custom.result).expect("json");
        assert_eq!(body["error"], "action undefined");

        let missing = handle(
            &units,
            &ActionRequest {
                id: "c2".into(),
                unit_id: "nope".into(),
                ..Default::default()
            },
        );
        let body: Value = serde_json::from_slice(&missing.result).expect("json");
        assert_eq!(body["error"], "action unit not found");
        units.shutdown(Duration::from_secs(5)).await;
    }
}
