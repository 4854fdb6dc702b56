//! The host's side of the V2 control protocol: `proto.ElasticAgent` CheckinV2 and Actions.
//!
//! [`Reconciler`] is the pure part: the expected and observed unit tables and the rules of
//! agent-protocol.md §5.4 (when a `CheckinExpected` is sent, when `config` is attached, how
//! missing, unknown and stopped units are treated). [`ControlPlane`] is the gRPC service around
//! it: token checks (§4.2), one stream of each kind at a time, policy pushes, diagnostics
//! requests, and the time of the last check-in for the watchdog.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::policy::{Policy, UnitSpec};
use crate::proto::State;
use crate::proto::elastic_agent_server::ElasticAgent;
use crate::proto::{
    ActionRequest, ActionResponse, AgentInfo, AgentManagedMode, CheckinExpected, CheckinObserved,
    Component, ComponentLimits, Features, FqdnFeature, StateExpected, StateObserved, UnitExpected,
    UnitObserved, UnitType, action_request,
};

/// A unit's key: (type, id).
type UnitKey = (i32, String);

#[derive(Debug, Clone)]
struct Expected {
    spec: UnitSpec,
    state: State,
    config_state_idx: u64,
}

/// A unit whose reported state or message changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitChange {
    /// Unit id.
    pub id: String,
    /// INPUT or OUTPUT.
    pub unit_type: UnitType,
    /// The new state.
    pub state: State,
    /// The unit's message.
    pub message: String,
}

impl std::fmt::Display for UnitChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unit {} {} {} {:?}",
            self.id,
            self.unit_type.as_str_name(),
            self.state.as_str_name(),
            self.message
        )
    }
}

/// What the host makes of one `CheckinObserved`.
#[derive(Debug, Default)]
pub struct Observation {
    /// The `CheckinExpected` to send back, when the rules call for one.
    pub reply: Option<CheckinExpected>,
    /// Units whose state or message changed.
    pub changes: Vec<UnitChange>,
    /// Agent-side unit errors (missing or unknown units), as the Agent would show them.
    pub problems: Vec<String>,
    /// Units removed from the policy that reported STOPPED and left both tables (`"<id> <TYPE>"`).
    pub removed: Vec<String>,
}

/// The expected and observed tables of one component (agent-protocol.md §5.4).
#[derive(Debug)]
pub struct Reconciler {
    expected: BTreeMap<UnitKey, Expected>,
    observed: BTreeMap<UnitKey, UnitObserved>,
    features_idx: u64,
    component_idx: u64,
    observed_features_idx: u64,
    observed_component_idx: u64,
    answer_next: bool,
}

fn key(unit_type: UnitType, id: &str) -> UnitKey {
    (unit_type as i32, id.to_owned())
}

impl Reconciler {
    /// The tables for a freshly started component running `policy`.
    pub fn new(policy: &Policy) -> Self {
        let expected = policy
            .units
            .iter()
            .map(|u| {
                (
                    key(u.unit_type, &u.id),
                    Expected {
                        spec: u.clone(),
                        state: State::Healthy,
                        config_state_idx: 1,
                    },
                )
            })
            .collect();
        Self {
            expected,
            observed: BTreeMap::new(),
            // The Agent starts its counters at 1 and bumps them on the first model sync.
            features_idx: 2,
            component_idx: 2,
            observed_features_idx: 0,
            observed_component_idx: 0,
            answer_next: true,
        }
    }

    /// A new process: nothing is observed yet, and its first check-in is answered (trigger 1).
    pub fn process_started(&mut self) {
        self.observed.clear();
        self.observed_features_idx = 0;
        self.observed_component_idx = 0;
        self.answer_next = true;
    }

    /// A new policy: changed configs get a new `config_state_idx`, new units start at 1,
    /// removed units are expected STOPPED until the component reports them stopped. Returns
    /// the message to push when anything changed (trigger 3).
    pub fn apply_policy(&mut self, policy: &Policy) -> Option<CheckinExpected> {
        let mut changed = false;
        let wanted: BTreeMap<UnitKey, &UnitSpec> = policy
            .units
            .iter()
            .map(|u| (key(u.unit_type, &u.id), u))
            .collect();
        for (k, spec) in &wanted {
            match self.expected.get_mut(k) {
                Some(e) => {
                    if e.spec.config != spec.config || e.state != State::Healthy {
                        e.config_state_idx += 1;
                        e.state = State::Healthy;
                        changed = true;
                    }
                    if e.spec.log_level != spec.log_level {
                        changed = true;
                    }
                    e.spec = (*spec).clone();
                }
                None => {
                    self.expected.insert(
                        k.clone(),
                        Expected {
                            spec: (*spec).clone(),
                            state: State::Healthy,
                            config_state_idx: 1,
                        },
                    );
                    changed = true;
                }
            }
        }
        for (k, e) in &mut self.expected {
            if !wanted.contains_key(k) && e.state != State::Stopped {
                e.state = State::Stopped;
                changed = true;
            }
        }
        changed.then(|| self.expected_message())
    }

    /// Takes a check-in: records it, reports changes and agent-side errors, and says whether
    /// to answer (trigger 1: first check-in of a process; trigger 2: tables unsettled).
    pub fn observe(&mut self, msg: &CheckinObserved) -> Observation {
        let mut out = Observation::default();
        let mut reported = BTreeMap::new();
        for unit in &msg.units {
            let unit_type = UnitType::try_from(unit.r#type).unwrap_or(UnitType::Input);
            let state = State::try_from(unit.state).unwrap_or(State::Failed);
            let k = key(unit_type, &unit.id);
            let before = self.observed.get(&k);
            if before.is_none_or(|b| b.state != unit.state || b.message != unit.message) {
                out.changes.push(UnitChange {
                    id: unit.id.clone(),
                    unit_type,
                    state,
                    message: unit.message.clone(),
                });
            }
            if !self.expected.contains_key(&k) && state != State::Stopped {
                out.problems.push(format!(
                    "unit {} {}: FAILED: reported unit is unknown",
                    unit.id,
                    unit_type.as_str_name()
                ));
            }
            reported.insert(k, unit.clone());
        }
        for (k, e) in &self.expected {
            if reported.contains_key(k) {
                continue;
            }
            let last = self.observed.get(k).map(|o| o.state);
            // A unit the Agent never saw counts as STARTING.
            let quiet =
                last.is_none_or(|s| s == State::Starting as i32 || s == State::Stopped as i32);
            if !quiet {
                out.problems.push(format!(
                    "unit {} {}: FAILED: not reported in check-in",
                    e.spec.id,
                    e.spec.unit_type.as_str_name()
                ));
            }
        }
        self.observed = reported;
        self.observed_features_idx = msg.features_idx;
        self.observed_component_idx = msg.component_idx;
        // Expected-STOPPED units that reported STOPPED are done: drop them from both tables.
        let done: Vec<UnitKey> = self
            .expected
            .iter()
            .filter(|(k, e)| {
                e.state == State::Stopped
                    && self
                        .observed
                        .get(*k)
                        .is_some_and(|o| o.state == State::Stopped as i32)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in &done {
            if let Some(e) = self.expected.remove(k) {
                out.removed
                    .push(format!("{} {}", e.spec.id, e.spec.unit_type.as_str_name()));
            }
        }
        if self.answer_next || !self.settled() {
            self.answer_next = false;
            out.reply = Some(self.expected_message());
        }
        out
    }

    /// Whether the tables agree (agent-protocol.md §5.4 trigger 2).
    pub fn settled(&self) -> bool {
        self.expected.len() == self.observed.len()
            && self.observed_features_idx == self.features_idx
            && self.observed_component_idx == self.component_idx
            && self.expected.iter().all(|(k, e)| {
                self.observed.get(k).is_some_and(|o| {
                    o.config_state_idx == e.config_state_idx && o.state == e.state as i32
                })
            })
    }

    /// Every expected unit reports HEALTHY.
    pub fn all_healthy(&self) -> bool {
        !self.expected.is_empty()
            && self.expected.keys().all(|k| {
                self.observed
                    .get(k)
                    .is_some_and(|o| o.state == State::Healthy as i32)
            })
    }

    /// The full expected state; `config` only on units whose index is not acknowledged.
    pub(crate) fn expected_message(&self) -> CheckinExpected {
        let units = self
            .expected
            .iter()
            .map(|(k, e)| {
                let acked = self
                    .observed
                    .get(k)
                    .is_some_and(|o| o.config_state_idx == e.config_state_idx);
                UnitExpected {
                    id: e.spec.id.clone(),
                    r#type: e.spec.unit_type as i32,
                    state: e.state as i32,
                    config_state_idx: e.config_state_idx,
                    config: (!acked).then(|| e.spec.config.clone()),
                    log_level: e.spec.log_level as i32,
                }
            })
            .collect();
        CheckinExpected {
            units,
            agent_info: Some(AgentInfo {
                id: "ti-sidecar-host".to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                snapshot: false,
                mode: AgentManagedMode::Standalone as i32,
                unprivileged: true,
            }),
            features: Some(Features {
                source: None,
                fqdn: Some(FqdnFeature { enabled: false }),
            }),
            features_idx: self.features_idx,
            component: Some(Component {
                limits: Some(ComponentLimits {
                    source: None,
                    go_max_procs: 0,
                }),
                apm_config: None,
            }),
            component_idx: self.component_idx,
            units_timestamp: None,
        }
    }
}

/// Something the control plane saw, for the host's console.
#[derive(Debug, Clone)]
pub(crate) enum HostEvent {
    /// A unit's state or message changed.
    Unit(UnitChange),
    /// An agent-side unit error.
    Problem(String),
    /// Every unit reports HEALTHY.
    AllHealthy,
    /// A unit removed from the policy has stopped and is gone (`"<id> <TYPE>"`).
    Removed(String),
}

type Outbound<T> = mpsc::Sender<Result<T, Status>>;

/// The `proto.ElasticAgent` service of the host.
#[derive(Clone)]
pub(crate) struct ControlPlane {
    inner: Arc<Inner>,
}

struct Inner {
    token: String,
    reconciler: Mutex<Reconciler>,
    checkin: Mutex<Option<Outbound<CheckinExpected>>>,
    actions: Mutex<Option<Outbound<ActionRequest>>>,
    actions_up: watch::Sender<bool>,
    pending: Mutex<HashMap<String, oneshot::Sender<ActionResponse>>>,
    last_checkin: Mutex<tokio::time::Instant>,
    checkins: std::sync::atomic::AtomicU64,
    replies: std::sync::atomic::AtomicU64,
    events: mpsc::UnboundedSender<HostEvent>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How long the first message of a stream may take (agent-protocol.md §4.2).
const FIRST_MESSAGE: Duration = Duration::from_secs(5);

/// A diagnostics request could not be completed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ActionError {
    /// No Actions stream is open.
    #[error("the component has no Actions stream open")]
    NoStream,
    /// No answer in time.
    #[error("no answer to action {0} within {1:?}")]
    Timeout(String, Duration),
}

impl ControlPlane {
    /// A control plane for the component identified by `token`, expecting `policy`.
    pub fn new(token: String, policy: &Policy, events: mpsc::UnboundedSender<HostEvent>) -> Self {
        Self {
            inner: Arc::new(Inner {
                token,
                reconciler: Mutex::new(Reconciler::new(policy)),
                checkin: Mutex::new(None),
                actions: Mutex::new(None),
                actions_up: watch::channel(false).0,
                pending: Mutex::new(HashMap::new()),
                last_checkin: Mutex::new(tokio::time::Instant::now()),
                checkins: std::sync::atomic::AtomicU64::new(0),
                replies: std::sync::atomic::AtomicU64::new(0),
                events,
            }),
        }
    }

    /// The component process was (re)started.
    pub fn process_started(&self) {
        lock(&self.inner.reconciler).process_started();
        *lock(&self.inner.last_checkin) = tokio::time::Instant::now();
    }

    /// Time of the last `CheckinObserved`.
    pub(crate) fn last_checkin(&self) -> tokio::time::Instant {
        *lock(&self.inner.last_checkin)
    }

    /// Check-ins received and expected messages sent in answer, since start.
    pub(crate) fn checkin_counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.inner.checkins.load(Relaxed),
            self.inner.replies.load(Relaxed),
        )
    }

    /// Pushes a new policy on the open CheckinV2 stream (if anything changed).
    pub async fn apply_policy(&self, policy: &Policy) {
        let msg = lock(&self.inner.reconciler).apply_policy(policy);
        let tx = lock(&self.inner.checkin).clone();
        if let (Some(msg), Some(tx)) = (msg, tx) {
            let _ = tx.send(Ok(msg)).await;
        }
    }

    /// Whether an Actions stream is open now.
    pub(crate) fn actions_connected(&self) -> bool {
        *self.inner.actions_up.borrow()
    }

    /// Waits until an Actions stream is open.
    pub(crate) async fn actions_ready(&self) {
        let mut rx = self.inner.actions_up.subscribe();
        let _ = rx.wait_for(|up| *up).await;
    }

    /// Sends a DIAGNOSTICS request (level ALL) and waits for the answer (20 s, as the Agent).
    pub(crate) async fn request_diagnostics(&self) -> Result<ActionResponse, ActionError> {
        let id = super::certs::new_token();
        let request = ActionRequest {
            id: id.clone(),
            r#type: action_request::Type::Diagnostics as i32,
            level: action_request::Level::All as i32,
            ..ActionRequest::default()
        };
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.pending).insert(id.clone(), tx);
        let out = lock(&self.inner.actions)
            .clone()
            .ok_or(ActionError::NoStream)?;
        out.send(Ok(request))
            .await
            .map_err(|_| ActionError::NoStream)?;
        let wait = Duration::from_secs(20);
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(_)) => Err(ActionError::NoStream),
            Err(_) => {
                lock(&self.inner.pending).remove(&id);
                Err(ActionError::Timeout(id, wait))
            }
        }
    }

    fn observe(&self, msg: &CheckinObserved) -> Option<CheckinExpected> {
        use std::sync::atomic::Ordering::Relaxed;
        *lock(&self.inner.last_checkin) = tokio::time::Instant::now();
        self.inner.checkins.fetch_add(1, Relaxed);
        let (obs, healthy) = {
            let mut r = lock(&self.inner.reconciler);
            let obs = r.observe(msg);
            (obs, r.all_healthy())
        };
        let had_changes = !obs.changes.is_empty();
        for c in obs.changes {
            let _ = self.inner.events.send(HostEvent::Unit(c));
        }
        for p in obs.problems {
            let _ = self.inner.events.send(HostEvent::Problem(p));
        }
        for r in obs.removed {
            let _ = self.inner.events.send(HostEvent::Removed(r));
        }
        if had_changes && healthy {
            let _ = self.inner.events.send(HostEvent::AllHealthy);
        }
        if obs.reply.is_some() {
            self.inner.replies.fetch_add(1, Relaxed);
        }
        obs.reply
    }
}

/// Takes the first message of a stream, within [`FIRST_MESSAGE`].
async fn first<T>(inbound: &mut Streaming<T>) -> Result<T, Status> {
    match tokio::time::timeout(FIRST_MESSAGE, inbound.message()).await {
        Err(_) => Err(Status::deadline_exceeded(
            "never sent initial observed message",
        )),
        Ok(Err(status)) => Err(status),
        Ok(Ok(None)) => Err(Status::cancelled("stream closed before its first message")),
        Ok(Ok(Some(m))) => Ok(m),
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl ElasticAgent for ControlPlane {
    type CheckinV2Stream = BoxStream<CheckinExpected>;
    type ActionsStream = BoxStream<ActionRequest>;
    type CheckinStream = BoxStream<StateExpected>;

    async fn checkin_v2(
        &self,
        request: Request<Streaming<CheckinObserved>>,
    ) -> Result<Response<Self::CheckinV2Stream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        {
            let mut slot = lock(&self.inner.checkin);
            if slot.as_ref().is_some_and(|s| !s.is_closed()) {
                return Err(Status::already_exists("a CheckinV2 stream is already open"));
            }
            *slot = Some(tx.clone());
        }
        let this = self.clone();
        tokio::spawn(async move {
            let result: Result<(), Status> = async {
                let msg = first(&mut inbound).await?;
                if msg.token != this.inner.token {
                    return Err(Status::permission_denied("invalid token"));
                }
                let mut next = Some(msg);
                loop {
                    let Some(msg) = next.take() else {
                        match inbound.message().await? {
                            Some(m) => next = Some(m),
                            None => return Ok(()),
                        }
                        continue;
                    };
                    if let Some(reply) = this.observe(&msg)
                        && tx.send(Ok(reply)).await.is_err()
                    {
                        return Ok(());
                    }
                }
            }
            .await;
            if let Err(status) = result {
                let _ = tx.send(Err(status)).await;
            }
            *lock(&this.inner.checkin) = None;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn actions(
        &self,
        request: Request<Streaming<ActionResponse>>,
    ) -> Result<Response<Self::ActionsStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(16);
        {
            let slot = lock(&self.inner.actions);
            if slot.as_ref().is_some_and(|s| !s.is_closed()) {
                return Err(Status::already_exists("an Actions stream is already open"));
            }
        }
        let this = self.clone();
        tokio::spawn(async move {
            let result: Result<(), Status> = async {
                let init = first(&mut inbound).await?;
                if init.id != "init" {
                    return Err(Status::invalid_argument("initial response must be init"));
                }
                if init.token != this.inner.token {
                    return Err(Status::permission_denied("invalid token"));
                }
                *lock(&this.inner.actions) = Some(tx.clone());
                this.inner.actions_up.send_replace(true);
                while let Some(response) = inbound.message().await? {
                    if let Some(waiter) = lock(&this.inner.pending).remove(&response.id) {
                        let _ = waiter.send(response);
                    }
                }
                Ok(())
            }
            .await;
            this.inner.actions_up.send_replace(false);
            *lock(&this.inner.actions) = None;
            if let Err(status) = result {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn checkin(
        &self,
        _request: Request<Streaming<StateObserved>>,
    ) -> Result<Response<Self::CheckinStream>, Status> {
        Err(Status::unavailable("removed; upgrade to V2"))
    }
}
