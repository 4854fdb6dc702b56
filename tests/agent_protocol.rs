//! `ti-sidecar agent` against an in-test gRPC server that plays the Elastic Agent (spec §2–§8):
//! mTLS with an Agent-shaped CA and a leaf whose DNS SAN and CN are a 32-hex `server_name`,
//! CheckinV2 and Actions served from our generated stubs, and the ThreatConnect simulator as the
//! vendor API. Every wait is on a message or a condition, never a sleep.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use ti_sidecar::sim::faults::FaultArgs;

use prost_types::{Struct, value::Kind};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream, UnixListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

use ti_sidecar::agent::{self, AgentOptions, Reconnect, UnitLevels};
use ti_sidecar::proto::action_request::{Level, Type};
use ti_sidecar::proto::action_response::Status as ActionStatus;
use ti_sidecar::proto::elastic_agent_server::{ElasticAgent, ElasticAgentServer};
use ti_sidecar::proto::{
    ActionRequest, ActionResponse, CheckinExpected, CheckinObserved, ConnInfoServices,
    ConnectionSupports, StartUpInfo, State, StateExpected, StateObserved, UnitExpected,
    UnitExpectedConfig, UnitObserved, UnitType,
};
use ti_sidecar::sim::threatconnect::{SimArgs, SimHandle, start};

const TOKEN: &str = "6d9a5c1c-2b0e-4b8f-9c1e-6f2f7c3a1d55";
const SECRET: &str = "Test$$Secret/Key+=";
const WAIT: Duration = Duration::from_secs(60);

/// The sending half of a server stream, set when the component opens it.
type Outbound<T> = Arc<Mutex<Option<mpsc::Sender<Result<T, Status>>>>>;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Certificates shaped like the Agent's (spec §3.2): a CA with CN `localhost`, one leaf for the
/// component's `server_name` with EKU serverAuth + clientAuth, used by both sides.
struct Pki {
    ca_pem: String,
    leaf_pem: String,
    leaf_key: String,
}

impl Pki {
    fn new(server_name: &str) -> Self {
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "localhost");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let issuer = CertifiedIssuer::self_signed(ca, ca_key).expect("ca");
        let leaf_key = KeyPair::generate().expect("leaf key");
        let mut leaf = CertificateParams::new(vec![server_name.to_owned()]).expect("leaf");
        leaf.distinguished_name
            .push(DnType::CommonName, server_name);
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("sign");
        Self {
            ca_pem: issuer.pem(),
            leaf_pem: leaf_cert.pem(),
            leaf_key: leaf_key.serialize_pem(),
        }
    }
}

fn server_name() -> String {
    // 32 lowercase hex characters, as the Agent renders a UUIDv4 (never all digits here).
    format!("a{:031x}", rand::random::<u128>() >> 4)
}

/// What the fake Agent saw and how the test talks to the component.
#[derive(Clone, Default)]
struct AgentState {
    observed: Arc<Mutex<Option<mpsc::UnboundedSender<CheckinObserved>>>>,
    expected: Outbound<CheckinExpected>,
    responses: Arc<Mutex<Option<mpsc::UnboundedSender<ActionResponse>>>>,
    requests: Outbound<ActionRequest>,
}

#[tonic::async_trait]
impl ElasticAgent for AgentState {
    type CheckinV2Stream = BoxStream<CheckinExpected>;
    type ActionsStream = BoxStream<ActionRequest>;
    type CheckinStream = BoxStream<StateExpected>;

    async fn checkin_v2(
        &self,
        request: Request<Streaming<CheckinObserved>>,
    ) -> Result<Response<Self::CheckinV2Stream>, Status> {
        let mut inbound = request.into_inner();
        let sink = self.observed.lock().unwrap().clone();
        // The outbound half is in place before any observed message reaches the test, so a test
        // that answers the first check-in always finds the stream open.
        let (tx, rx) = mpsc::channel(16);
        *self.expected.lock().unwrap() = Some(tx);
        tokio::spawn(async move {
            while let Ok(Some(msg)) = inbound.message().await {
                if let Some(s) = &sink {
                    let _ = s.send(msg);
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn actions(
        &self,
        request: Request<Streaming<ActionResponse>>,
    ) -> Result<Response<Self::ActionsStream>, Status> {
        let mut inbound = request.into_inner();
        let sink = self.responses.lock().unwrap().clone();
        tokio::spawn(async move {
            while let Ok(Some(msg)) = inbound.message().await {
                if let Some(s) = &sink {
                    let _ = s.send(msg);
                }
            }
        });
        let (tx, rx) = mpsc::channel(16);
        *self.requests.lock().unwrap() = Some(tx);
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn checkin(
        &self,
        _request: Request<Streaming<StateObserved>>,
    ) -> Result<Response<Self::CheckinStream>, Status> {
        Err(Status::unavailable("removed; upgrade to V2"))
    }
}

/// A running fake Agent with the receiving ends of its channels.
struct FakeAgent {
    state: AgentState,
    observed: mpsc::UnboundedReceiver<CheckinObserved>,
    responses: mpsc::UnboundedReceiver<ActionResponse>,
    info: StartUpInfo,
    stop: CancellationToken,
}

impl FakeAgent {
    async fn start() -> Self {
        let name = server_name();
        let pki = Pki::new(&name);
        Self::start_on(None, name, pki).await
    }

    /// Serves on a Unix socket at `socket` (`addr = unix://...`) instead of TCP, with `pki`.
    async fn start_on(socket: Option<&std::path::Path>, name: String, pki: Pki) -> Self {
        let (otx, observed) = mpsc::unbounded_channel();
        let (rtx, responses) = mpsc::unbounded_channel();
        let state = AgentState::default();
        *state.observed.lock().unwrap() = Some(otx);
        *state.responses.lock().unwrap() = Some(rtx);
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(&pki.leaf_pem, &pki.leaf_key))
            .client_ca_root(Certificate::from_pem(&pki.ca_pem));
        let stop = CancellationToken::new();
        let router = Server::builder()
            .tls_config(tls)
            .expect("tls")
            .add_service(ElasticAgentServer::new(state.clone()));
        let addr = match socket {
            Some(path) => {
                let listener = tokio::net::UnixListener::bind(path).expect("bind unix");
                tokio::spawn(router.serve_with_incoming_shutdown(
                    UnixListenerStream::new(listener),
                    stop.clone().cancelled_owned(),
                ));
                format!("unix://{}", path.display())
            }
            None => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let port = listener.local_addr().expect("addr").port();
                tokio::spawn(router.serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener),
                    stop.clone().cancelled_owned(),
                ));
                format!("localhost:{port}")
            }
        };
        let info = StartUpInfo {
            addr,
            server_name: name,
            token: TOKEN.to_owned(),
            ca_cert: pki.ca_pem.into_bytes(),
            peer_cert: pki.leaf_pem.into_bytes(),
            peer_key: pki.leaf_key.into_bytes(),
            services: vec![ConnInfoServices::CheckinV2 as i32],
            supports: vec![ConnectionSupports::CheckinChunking as i32],
            max_message_size: 100 * 1024 * 1024,
            agent_info: None,
        };
        Self {
            state,
            observed,
            responses,
            info,
            stop,
        }
    }

    async fn next_observed(&mut self) -> CheckinObserved {
        tokio::time::timeout(WAIT, self.observed.recv())
            .await
            .expect("an observed message in time")
            .expect("observed channel open")
    }

    /// Waits for a check-in in which `pred` holds for the unit `id`.
    async fn wait_unit(
        &mut self,
        id: &str,
        pred: impl FnMut(&UnitObserved) -> bool,
    ) -> (UnitObserved, Vec<i32>) {
        let (unit, states, _) = self.wait_unit_msg(id, pred).await;
        (unit, states)
    }

    /// [`Self::wait_unit`], also returning the whole check-in.
    async fn wait_unit_msg(
        &mut self,
        id: &str,
        mut pred: impl FnMut(&UnitObserved) -> bool,
    ) -> (UnitObserved, Vec<i32>, CheckinObserved) {
        let mut states = Vec::new();
        loop {
            let msg = self.next_observed().await;
            assert_eq!(msg.token, TOKEN, "every check-in carries the token");
            if let Some(u) = msg.units.iter().find(|u| u.id == id) {
                if states.last() != Some(&u.state) {
                    states.push(u.state);
                }
                if pred(u) {
                    return (u.clone(), states, msg.clone());
                }
            }
        }
    }

    async fn send_expected(&self, expected: CheckinExpected) {
        let tx = self
            .state
            .expected
            .lock()
            .unwrap()
            .clone()
            .expect("checkin stream open");
        tx.send(Ok(expected)).await.expect("send expected");
    }

    /// Expects [`tc_units`] (config idx 1) and waits until the input is HEALTHY.
    async fn run_tc_input(&mut self, sim: &SimHandle, dir: &std::path::Path) -> UnitObserved {
        self.send_expected(CheckinExpected {
            units: tc_units(sim, dir),
            ..Default::default()
        })
        .await;
        let (healthy, _) = self
            .wait_unit(INPUT, |u| u.state == State::Healthy as i32)
            .await;
        healthy
    }

    async fn send_action(&mut self, request: ActionRequest) -> ActionResponse {
        let id = request.id.clone();
        // The Actions stream may open a moment after CheckinV2: wait for its init.
        loop {
            let tx = self.state.requests.lock().unwrap().clone();
            if let Some(tx) = tx {
                tx.send(Ok(request)).await.expect("send action");
                break;
            }
            let init = tokio::time::timeout(WAIT, self.responses.recv())
                .await
                .expect("init in time")
                .expect("open");
            assert_eq!(init.id, "init");
        }
        loop {
            let r = tokio::time::timeout(WAIT, self.responses.recv())
                .await
                .expect("response in time")
                .expect("open");
            if r.id == id {
                return r;
            }
        }
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn to_struct(v: Value) -> Struct {
    fn conv(v: &Value) -> prost_types::Value {
        let kind = match v {
            Value::Null => Kind::NullValue(0),
            Value::Bool(b) => Kind::BoolValue(*b),
            Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
            Value::String(s) => Kind::StringValue(s.clone()),
            Value::Array(a) => Kind::ListValue(prost_types::ListValue {
                values: a.iter().map(conv).collect(),
            }),
            Value::Object(o) => Kind::StructValue(Struct {
                fields: o.iter().map(|(k, v)| (k.clone(), conv(v))).collect(),
            }),
        };
        prost_types::Value { kind: Some(kind) }
    }
    match conv(&v).kind {
        Some(Kind::StructValue(s)) => s,
        _ => Struct::default(),
    }
}

fn unit(id: &str, kind: UnitType, idx: u64, source: Option<Value>) -> UnitExpected {
    UnitExpected {
        id: id.to_owned(),
        r#type: kind as i32,
        state: State::Healthy as i32,
        config_state_idx: idx,
        config: source.map(|s| UnitExpectedConfig {
            source: Some(to_struct(s)),
            ..Default::default()
        }),
        log_level: 2,
    }
}

fn sim_args() -> SimArgs {
    SimArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        indicators: 300,
        seed: 7,
        access_id: "test-access-id".to_owned(),
        secret_key: SECRET.to_owned(),
        faults: FaultArgs::default(),
        same_second: 0,
        id_base: 9_007_199_254_740_993,
    }
}

fn tc_source(sim: &SimHandle) -> Value {
    json!({
        "id": "tc-1",
        "type": "ti_threatconnect",
        "streams": [{
            "id": "tc-1-indicator",
            "data_stream": {"dataset": "ti_threatconnect.indicator"},
            "url": sim.base_url(),
            "access_id": "test-access-id",
            "secret_key": SECRET,
            "batch_size": 100,
        }],
    })
}

fn output_source(dir: &std::path::Path) -> Value {
    json!({"type": "ndjson", "path": dir.join("events.ndjson")})
}

const INPUT: &str = "ti_threatconnect-default-tc-1";
const OUTPUT: &str = "ti_threatconnect-default";

fn options(dir: &std::path::Path) -> AgentOptions {
    AgentOptions::new(
        dir.to_owned(),
        UnitLevels::new(tracing::level_filters::LevelFilter::INFO),
    )
}

/// The ThreatConnect input against `sim` and the NDJSON output into `dir`, at config idx 1.
fn tc_units(sim: &SimHandle, dir: &std::path::Path) -> Vec<UnitExpected> {
    vec![
        unit(INPUT, UnitType::Input, 1, Some(tc_source(sim))),
        unit(OUTPUT, UnitType::Output, 1, Some(output_source(dir))),
    ]
}

/// The component running in-process against a fake Agent, past its first check-in.
struct Component {
    fake: FakeAgent,
    dir: tempfile::TempDir,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), agent::AgentError>>,
    /// Its first `CheckinObserved`.
    first: CheckinObserved,
}

impl Component {
    /// Runs the component with `options` against `fake`, its data in `dir`, and reads its first
    /// check-in.
    async fn run(mut fake: FakeAgent, dir: tempfile::TempDir, options: AgentOptions) -> Self {
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(agent::run(fake.info.clone(), options, shutdown.clone()));
        let first = fake.next_observed().await;
        Self {
            fake,
            dir,
            shutdown,
            handle,
            first,
        }
    }

    /// [`run`](Self::run) against a new fake Agent, with the default options and a new data
    /// directory.
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let options = options(dir.path());
        Self::run(FakeAgent::start().await, dir, options).await
    }

    /// [`FakeAgent::run_tc_input`] with the output in this component's directory.
    async fn run_tc_input(&mut self, sim: &SimHandle) -> UnitObserved {
        self.fake.run_tc_input(sim, self.dir.path()).await
    }

    /// Stops the component, which must end cleanly.
    async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.expect("join").expect("clean stop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_observed_carries_version_info_and_supports_then_units_run() {
    let sim = start(sim_args()).await.expect("sim");
    let mut c = Component::start().await;

    let first = &c.first;
    assert_eq!(first.token, TOKEN);
    let version = first
        .version_info
        .as_ref()
        .expect("version_info on the first message");
    assert_eq!(version.name, "ti-sidecar");
    assert_eq!(
        first.supports,
        vec![ConnectionSupports::CheckinChunking as i32]
    );
    assert!(first.units.is_empty());

    c.fake
        .send_expected(CheckinExpected {
            units: tc_units(&sim, c.dir.path()),
            features_idx: 2,
            component_idx: 2,
            ..Default::default()
        })
        .await;
    let (healthy, states, later) = c
        .fake
        .wait_unit_msg(INPUT, |u| u.state == State::Healthy as i32)
        .await;
    assert_eq!(healthy.config_state_idx, 1, "config idx echoed");
    assert!(
        !states.contains(&(State::Failed as i32)),
        "never failed on the way: {states:?}"
    );
    let payload = serde_json::to_string(&format!("{:?}", healthy.payload)).unwrap();
    assert!(payload.contains("tc-1-indicator"), "{payload}");
    assert!(!payload.contains(SECRET), "{payload}");

    // Later check-ins echo features/component idx and omit version_info.
    assert!(later.version_info.is_none());
    assert_eq!((later.features_idx, later.component_idx), (2, 2));

    // Events went to the output unit's sink; the cursor lives under path.data.
    let events = std::fs::read_to_string(c.dir.path().join("events.ndjson")).expect("events");
    assert!(events.lines().count() > 0);

    // Expected STOPPED → STOPPING (while the batch finishes) → STOPPED, idx kept.
    let mut stopping = unit(INPUT, UnitType::Input, 1, None);
    stopping.state = State::Stopped as i32;
    c.fake
        .send_expected(CheckinExpected {
            units: vec![stopping, unit(OUTPUT, UnitType::Output, 1, None)],
            features_idx: 2,
            component_idx: 2,
            ..Default::default()
        })
        .await;
    let (stopped, states) = c
        .fake
        .wait_unit(INPUT, |u| u.state == State::Stopped as i32)
        .await;
    assert_eq!(stopped.config_state_idx, 1);
    assert!(
        !states.contains(&(State::Healthy as i32)) || states.len() >= 2,
        "{states:?}"
    );

    // Removed: no longer reported.
    c.fake
        .send_expected(CheckinExpected {
            units: vec![unit(OUTPUT, UnitType::Output, 1, None)],
            features_idx: 2,
            component_idx: 2,
            ..Default::default()
        })
        .await;
    loop {
        let msg = c.fake.next_observed().await;
        if msg.units.iter().all(|u| u.id != INPUT) {
            break;
        }
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_is_acknowledged_and_failed_naming_the_field() {
    let mut c = Component::start().await;
    let (fake, dir) = (&mut c.fake, c.dir.path());
    let source = json!({
        "id": "tc-1",
        "type": "ti_threatconnect",
        "streams": [{"id": "s", "access_id": "a", "secret_key": "hmac-SECRET-value", "batch_size": "lots"}],
    });
    fake.send_expected(CheckinExpected {
        units: vec![
            unit(INPUT, UnitType::Input, 4, Some(source)),
            unit(OUTPUT, UnitType::Output, 1, Some(output_source(dir))),
            unit(
                "second-output",
                UnitType::Output,
                1,
                Some(json!({"type": "otlp", "endpoint": "x:1"})),
            ),
        ],
        ..Default::default()
    })
    .await;
    let (failed, _) = fake
        .wait_unit(INPUT, |u| u.state == State::Failed as i32)
        .await;
    assert_eq!(
        failed.config_state_idx, 4,
        "an invalid config is still acknowledged"
    );
    assert!(failed.message.contains("batch_size"), "{}", failed.message);
    assert!(!failed.message.contains("hmac-SECRET-value"));
    let (second, _) = fake
        .wait_unit("second-output", |u| u.state == State::Failed as i32)
        .await;
    assert!(second.message.contains("one output"), "{}", second.message);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnostics_carry_status_but_no_secret_and_custom_actions_fail() {
    let sim = start(sim_args()).await.expect("sim");
    let mut c = Component::start().await;
    c.run_tc_input(&sim).await;
    let fake = &mut c.fake;

    for (level, files) in [(Level::Component, 2), (Level::Unit, 1), (Level::All, 3)] {
        let response = fake
            .send_action(ActionRequest {
                id: format!("diag-{level:?}"),
                r#type: Type::Diagnostics as i32,
                level: level as i32,
                unit_id: INPUT.to_owned(),
                unit_type: UnitType::Input as i32,
                ..Default::default()
            })
            .await;
        assert_eq!(response.token, TOKEN);
        assert_eq!(response.status, ActionStatus::Success as i32);
        assert_eq!(response.diagnostic.len(), files, "{level:?}");
        for file in &response.diagnostic {
            let text = String::from_utf8_lossy(&file.content);
            assert!(!text.contains(SECRET), "{}: {text}", file.filename);
            assert!(!text.contains(TOKEN), "{}: {text}", file.filename);
            let _: Value = serde_json::from_str(&text).expect("JSON file");
        }
        if level == Level::Unit {
            let unit: Value = serde_json::from_slice(&response.diagnostic[0].content).unwrap();
            let stream = &unit["streams"]["tc-1-indicator"];
            assert!(stream["cursor"].is_string(), "{unit}");
            assert!(stream["indicators"].as_u64().unwrap_or(0) > 0, "{unit}");
            assert_eq!(unit["config"]["streams"][0]["secret_key"], "[REDACTED]");
        }
    }
    let custom = fake
        .send_action(ActionRequest {
            id: "custom-1".into(),
            name: "ti_threatconnect".into(),
            unit_id: INPUT.to_owned(),
            ..Default::default()
        })
        .await;
    assert_eq!(custom.status, ActionStatus::Failed as i32);
    let body: Value = serde_json::from_slice(&custom.result).expect("JSON error body");
    assert!(body["error"].is_string());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_or_wrong_sni_is_refused() {
    let fake = FakeAgent::start().await;
    agent::connection::connect(&fake.info)
        .await
        .expect("the right CA and SNI connect");

    let mut wrong_sni = fake.info.clone();
    wrong_sni.server_name = server_name();
    assert!(agent::connection::connect(&wrong_sni).await.is_err());

    let other = Pki::new(&fake.info.server_name);
    let mut wrong_ca = fake.info.clone();
    wrong_ca.ca_cert = other.ca_pem.into_bytes();
    assert!(agent::connection::connect(&wrong_ca).await.is_err());

    let mut wrong_client = fake.info.clone();
    wrong_client.peer_cert = other.leaf_pem.into_bytes();
    wrong_client.peer_key = other.leaf_key.into_bytes();
    let refused = match agent::connection::connect(&wrong_client).await {
        Err(_) => true,
        // TLS 1.3 reports a rejected client certificate on first use.
        Ok(channel) => {
            let mut client =
                ti_sidecar::proto::elastic_agent_client::ElasticAgentClient::new(channel);
            client
                .checkin_v2(tokio_stream::iter(vec![CheckinObserved::default()]))
                .await
                .is_err()
        }
    };
    assert!(refused, "a client certificate from another CA is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_happy_path_and_sigterm() {
    use std::process::{Command, Stdio};

    let sim = start(sim_args()).await.expect("sim");
    let mut fake = FakeAgent::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("run").join("ti_threatconnect-default");
    let child = spawn_binary_agent(
        &fake.info,
        &[
            "-E",
            "setup.ilm.enabled=false",
            "--unknown-flag",
            "-E",
            &format!("path.data={}", data.display()),
        ],
        Stdio::piped(),
    );
    let first = fake.next_observed().await;
    assert_eq!(first.version_info.expect("version").name, "ti-sidecar");
    let healthy = fake.run_tc_input(&sim, dir.path()).await;
    assert_eq!(healthy.config_state_idx, 1);
    assert!(data.join("state.redb").exists(), "state under path.data");

    let pid = child.id().to_string();
    let started = std::time::Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    assert!(
        output.status.success(),
        "exit 0 on SIGTERM: {:?}",
        output.status
    );
    assert!(started.elapsed() < Duration::from_secs(25));
    assert!(output.stdout.is_empty(), "stdout is reserved for the Agent");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains(TOKEN), "the token is never logged");
    assert!(!stderr.contains(SECRET), "the secret key is never logged");
    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("JSON log line: {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["unit.id"] == INPUT),
        "unit logs carry unit.id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_resending_version_info_while_units_keep_running() {
    let sim = start(sim_args()).await.expect("sim");
    let mut c = Component::start().await;
    c.run_tc_input(&sim).await;
    let fake = &mut c.fake;

    // The Agent ends the stream; it stays silent after the reconnect (settled state).
    drop(fake.state.expected.lock().unwrap().take());
    let reopened = loop {
        let msg = fake.next_observed().await;
        if msg.version_info.is_some() {
            break msg;
        }
    };
    assert_eq!(
        reopened.supports,
        vec![ConnectionSupports::CheckinChunking as i32]
    );
    let input = reopened
        .units
        .iter()
        .find(|u| u.id == INPUT)
        .expect("units survive the reconnect");
    assert_eq!(input.state, State::Healthy as i32);
    assert_eq!(input.config_state_idx, 1);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_address_is_dialled_with_tls() {
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("agent.sock");
    let name = server_name();
    let pki = Pki::new(&name);
    let fake = FakeAgent::start_on(Some(&socket), name, pki).await;
    assert!(fake.info.addr.starts_with("unix://"));
    let options = options(dir.path());
    let c = Component::run(fake, dir, options).await;
    let version = c.first.version_info.as_ref().expect("version");
    assert_eq!(version.name, "ti-sidecar");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gives_up_when_the_agent_stays_unreachable() {
    let fake = FakeAgent::start().await;
    let mut info = fake.info.clone();
    // A port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    info.addr = format!("127.0.0.1:{}", listener.local_addr().expect("addr").port());
    drop(listener);
    let dir = tempfile::tempdir().expect("dir");
    let mut options = options(dir.path());
    // Gives up after the first refused attempt: the pacing and the bound of the reconnects are
    // unit tests of `Reconnect::drive` on the paused clock (`src/agent/checkin.rs`).
    options.reconnect = Reconnect {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(40),
        give_up_after: Duration::ZERO,
    };
    let result = tokio::time::timeout(WAIT, agent::run(info, options, CancellationToken::new()))
        .await
        .expect("gives up in time");
    let err = result.expect_err("persistent failure is an error");
    assert!(
        err.to_string().contains("could not be re-established"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_failures_degrade_and_rejected_credentials_fail() {
    let mut args = sim_args();
    args.faults.error_rate = 1.0;
    let failing = start(args).await.expect("sim");
    let healthy = start(sim_args()).await.expect("sim");
    let dir = tempfile::tempdir().expect("dir");
    let mut options = options(dir.path());
    options.retry = Some(ti_sidecar::http::RetryPolicy {
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        max_attempts: 1,
    });
    options.poll_retry_delay = Some(Duration::from_millis(20));
    let mut c = Component::run(FakeAgent::start().await, dir, options).await;
    let (fake, dir) = (&mut c.fake, c.dir.path());
    let mut bad_key = tc_source(&healthy);
    bad_key["streams"][0]["secret_key"] = Value::from("wrong-secret");
    fake.send_expected(CheckinExpected {
        units: vec![
            unit(
                "degraded-unit",
                UnitType::Input,
                1,
                Some(tc_source(&failing)),
            ),
            unit("rejected-unit", UnitType::Input, 1, Some(bad_key)),
            unit(OUTPUT, UnitType::Output, 1, Some(output_source(dir))),
        ],
        ..Default::default()
    })
    .await;
    let (degraded, _) = fake
        .wait_unit("degraded-unit", |u| u.state == State::Degraded as i32)
        .await;
    assert!(
        degraded.message.contains("tc-1-indicator"),
        "{}",
        degraded.message
    );
    assert!(
        degraded.message.contains("consecutive failures"),
        "{}",
        degraded.message
    );
    let (failed, _) = fake
        .wait_unit("rejected-unit", |u| u.state == State::Failed as i32)
        .await;
    assert!(
        !failed.message.contains("wrong-secret"),
        "{}",
        failed.message
    );
    assert!(!failed.message.is_empty());
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_unit_log_levels_filter_and_change_live() {
    use std::io::BufRead as _;
    use std::process::{Command, Stdio};

    let mut args = sim_args();
    args.faults.error_rate = 1.0;
    let failing = start(args).await.expect("sim");
    let mut fake = FakeAgent::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let data = format!("path.data={}", dir.path().join("data").display());
    let mut child = spawn_binary_agent(&fake.info, &["-E", &data], Stdio::null());
    let stderr = child.stderr.take().expect("stderr");
    let (line_tx, mut lines) = mpsc::unbounded_channel::<Value>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = line_tx.send(v);
            }
        }
    });
    let _ = fake.next_observed().await;
    let mut debug_unit = unit("debug-unit", UnitType::Input, 1, Some(tc_source(&failing)));
    debug_unit.log_level = 3; // DEBUG
    let info_unit = unit("info-unit", UnitType::Input, 1, Some(tc_source(&failing)));
    let output = unit(OUTPUT, UnitType::Output, 1, Some(output_source(dir.path())));
    fake.send_expected(CheckinExpected {
        units: vec![debug_unit.clone(), info_unit.clone(), output.clone()],
        ..Default::default()
    })
    .await;
    // The debug unit logs its HTTP retries at debug; the info unit's only show once they are
    // exhausted (a warning), and none of its debug lines gets through.
    let mut seen = Vec::new();
    let (mut debug_seen, mut info_warned) = (false, false);
    while !(debug_seen && info_warned) {
        let line = tokio::time::timeout(WAIT, lines.recv())
            .await
            .expect("a log line in time")
            .expect("stderr open");
        debug_seen |= line["unit.id"] == "debug-unit" && line["log.level"] == "debug";
        info_warned |= line["unit.id"] == "info-unit" && line["log.level"] == "warn";
        seen.push(line);
    }
    assert!(
        !seen
            .iter()
            .any(|l| l["unit.id"] == "info-unit" && l["log.level"] == "debug"),
        "the info unit's debug lines are filtered"
    );
    // A log level change without a config applies live.
    let mut info_now_debug = info_unit.clone();
    info_now_debug.config = None;
    info_now_debug.log_level = 3;
    let mut d = debug_unit.clone();
    d.config = None;
    let mut o = output.clone();
    o.config = None;
    fake.send_expected(CheckinExpected {
        units: vec![d, info_now_debug, o],
        ..Default::default()
    })
    .await;
    loop {
        let line = tokio::time::timeout(WAIT, lines.recv())
            .await
            .expect("a log line in time")
            .expect("stderr open");
        if line["unit.id"] == "info-unit" && line["log.level"] == "debug" {
            break;
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_shaped_rsa_pkcs1_certificates_connect() {
    use secrecy::ExposeSecret as _;
    // The host harness makes certificates exactly like the Agent's: RSA-2048, PKCS#1 keys,
    // CA with EKU, leaf KU digitalSignature only, serial 1658, DNS SAN = server_name.
    let authority = ti_sidecar::host::certs::Authority::new().expect("ca");
    let name = ti_sidecar::host::certs::new_server_name();
    let peer = authority.issue(&name).expect("leaf");
    assert!(
        peer.key_pem
            .expose_secret()
            .contains("BEGIN RSA PRIVATE KEY")
    );
    let pki = Pki {
        ca_pem: authority.cert_pem().to_owned(),
        leaf_pem: peer.cert_pem.clone(),
        leaf_key: peer.key_pem.expose_secret().to_owned(),
    };
    let fake = FakeAgent::start_on(None, name, pki).await;
    let dir = tempfile::tempdir().expect("dir");
    let options = options(dir.path());
    let c = Component::run(fake, dir, options).await;
    assert_eq!(c.first.token, TOKEN);
    c.stop().await;
}

#[test]
fn binary_refuses_a_v1_only_agent() {
    let info = StartUpInfo {
        addr: "localhost:6789".into(),
        server_name: server_name(),
        token: TOKEN.into(),
        ca_cert: b"x".to_vec(),
        peer_cert: b"x".to_vec(),
        peer_key: b"x".to_vec(),
        services: vec![ConnInfoServices::Checkin as i32],
        ..Default::default()
    };
    let (ok, lines) = run_binary_agent(&info, std::path::Path::new("/nonexistent/never-created"));
    assert!(!ok);
    let stderr = serde_json::to_string(&lines).unwrap();
    assert!(stderr.contains("CheckinV2"), "{stderr}");
    assert!(!stderr.contains(TOKEN), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_expected_messages_are_reassembled() {
    let mut c = Component::start().await;
    let (fake, dir) = (&mut c.fake, c.dir.path());
    let ts = Some(prost_types::Timestamp {
        seconds: 1_700_000_000,
        nanos: 5,
    });
    let bad = json!({"id": "x", "type": "ti_threatconnect", "streams": [{"id": "s", "access_id": "a", "secret_key": "k", "interval": "soon"}]});
    // Chunk 1 carries the message-level fields, chunk 2 only units, the last one no unit.
    fake.send_expected(CheckinExpected {
        units: vec![unit(OUTPUT, UnitType::Output, 1, Some(output_source(dir)))],
        features_idx: 3,
        component_idx: 5,
        units_timestamp: ts,
        ..Default::default()
    })
    .await;
    fake.send_expected(CheckinExpected {
        units: vec![unit(INPUT, UnitType::Input, 2, Some(bad))],
        units_timestamp: ts,
        ..Default::default()
    })
    .await;
    fake.send_expected(CheckinExpected {
        units_timestamp: ts,
        ..Default::default()
    })
    .await;
    let msg = loop {
        let msg = fake.next_observed().await;
        if msg.units.len() == 2 {
            break msg;
        }
    };
    assert_eq!((msg.features_idx, msg.component_idx), (3, 5));
    let input = msg.units.iter().find(|u| u.id == INPUT).expect("input");
    assert_eq!(input.config_state_idx, 2);
    let (failed, _) = fake
        .wait_unit(INPUT, |u| u.state == State::Failed as i32)
        .await;
    assert!(failed.message.contains("interval"), "{}", failed.message);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_expected_messages_do_not_ping_pong() {
    let mut c = Component::start().await;
    let fake = &mut c.fake;
    let bad = json!({"id": "x", "type": "ti_threatconnect", "streams": [{"id": "s", "access_id": "a", "secret_key": "k", "batch_size": -1}]});
    fake.send_expected(CheckinExpected {
        units: vec![unit(INPUT, UnitType::Input, 1, Some(bad))],
        ..Default::default()
    })
    .await;
    fake.wait_unit(INPUT, |u| u.state == State::Failed as i32)
        .await;
    // The unit stays FAILED (unsettled): a real Agent answers every check-in. Same state again
    // and again must not be answered each time.
    let mut same = unit(INPUT, UnitType::Input, 1, None);
    same.config = None;
    for _ in 0..20 {
        fake.send_expected(CheckinExpected {
            units: vec![same.clone()],
            ..Default::default()
        })
        .await;
    }
    // A real change (a new unit) is answered; count the check-ins until then.
    fake.send_expected(CheckinExpected {
        units: vec![same, unit("another", UnitType::Input, 1, None)],
        ..Default::default()
    })
    .await;
    let mut count = 0;
    loop {
        let msg = fake.next_observed().await;
        count += 1;
        if msg.units.iter().any(|u| u.id == "another") {
            break;
        }
    }
    assert!(
        count <= 3,
        "{count} check-ins in answer to 20 unchanged expected messages"
    );
    c.stop().await;
}

/// Spawns `ti-sidecar agent <args>` with `stdout`, its stderr piped, and hands it `info` on
/// stdin (then closed, as the Agent does).
fn spawn_binary_agent(
    info: &StartUpInfo,
    args: &[&str],
    stdout: std::process::Stdio,
) -> std::process::Child {
    use prost::Message as _;
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    let mut child = Command::new(env!("CARGO_BIN_EXE_ti-sidecar"))
        .arg("agent")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&info.encode_to_vec())
        .expect("write StartUpInfo");
    child
}

/// Runs `ti-sidecar agent` with `info` on stdin and returns (exit success, stderr lines as JSON).
fn run_binary_agent(info: &StartUpInfo, data: &std::path::Path) -> (bool, Vec<Value>) {
    let data = format!("path.data={}", data.display());
    let child = spawn_binary_agent(info, &["-E", &data], std::process::Stdio::piped());
    let out = child.wait_with_output().expect("wait");
    let lines = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    (out.status.success(), lines)
}

#[test]
fn agent_that_cannot_start_logs_why_as_a_json_error_line() {
    let pki = Pki::new(&server_name());
    let dir = tempfile::tempdir().unwrap();
    let good = StartUpInfo {
        addr: "127.0.0.1:1".into(),
        server_name: server_name(),
        token: TOKEN.into(),
        ca_cert: pki.ca_pem.clone().into_bytes(),
        peer_cert: pki.leaf_pem.clone().into_bytes(),
        peer_key: pki.leaf_key.clone().into_bytes(),
        services: vec![ConnInfoServices::CheckinV2 as i32],
        ..Default::default()
    };
    let cases = [
        (
            "bad address",
            StartUpInfo {
                addr: "npipe://\\\\.\\pipe\\agent".into(),
                ..good.clone()
            },
            "StartUpInfo.addr",
        ),
        (
            "bad key",
            StartUpInfo {
                peer_key: b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"
                    .to_vec(),
                ..good.clone()
            },
            "TLS setup",
        ),
    ];
    for (what, info, expected) in cases {
        let (ok, lines) = run_binary_agent(&info, dir.path());
        assert!(!ok, "{what}: must exit non-zero");
        let errors: Vec<&Value> = lines.iter().filter(|l| l["log.level"] == "error").collect();
        assert_eq!(errors.len(), 1, "{what}: exactly one error line: {lines:?}");
        let message = errors[0]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{what}: {message}");
        assert!(errors[0]["@timestamp"].is_string(), "{what}");
        let all = serde_json::to_string(&lines).unwrap();
        assert!(!all.contains(TOKEN), "{what}: the token leaked: {all}");
        assert!(!all.contains("bm90IGEga2V5"), "{what}: key material leaked");
    }
}
