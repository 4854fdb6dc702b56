//! End to end through the real binaries: `ti-sidecar host` launches `ti-sidecar agent`, which
//! polls the in-process ThreatConnect and ThreatQ simulators and ships OTLP logs. Everything is
//! synchronised on the host's stdout lines (unit state changes, `events received`, removal and
//! stop notices) or on records reaching an in-test OTLP receiver; nothing sleeps.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use ti_sidecar::sim::faults::FaultArgs;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use serde_json::Value;
use tonic::{Request, Response, Status};

use ti_sidecar::host::receiver::render;
use ti_sidecar::sim::threatconnect as tc_sim;
use ti_sidecar::sim::threatq as tq_sim;

const TC_SECRET: &str = "Test$$Secret/Key+=";
const TQ_SECRET: &str = "tq-client-secret-e2e";
const TC_UNIT: &str = "unit ti-sidecar-default-tc INPUT";
const TQ_UNIT: &str = "unit ti-sidecar-default-tq INPUT";

/// A running `ti-sidecar host` and its stdout lines.
struct Host {
    child: Child,
    lines: Option<common::Lines>,
}

impl Host {
    fn spawn(policy: &Path, events: &Path, data: &Path, extra: &[&str]) -> Self {
        // Under umask 022, so that the file-mode test below means something.
        let mut child = common::with_umask_022(common::bin())
            .args(["host", "--policy"])
            .arg(policy)
            .arg("--events")
            .arg(events)
            .arg("--data-dir")
            .arg(data)
            .args(["--restart-delay", "1s"])
            // A short watchdog unless the test sets its own.
            .args(if extra.contains(&"--checkin-period") {
                &[][..]
            } else {
                &["--checkin-period", "5s"][..]
            })
            .args(extra)
            .env("TEST_TC_SECRET", TC_SECRET)
            .env("TEST_TQ_SECRET", TQ_SECRET)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("host");
        let stdout = child.stdout.take().expect("stdout");
        Self {
            child,
            lines: Some(common::Lines::of(stdout)),
        }
    }

    /// The host's stdout lines.
    fn lines(&mut self) -> &mut common::Lines {
        self.lines.as_mut().expect("lines until terminated")
    }

    /// Every stdout line so far.
    fn seen(&self) -> &[String] {
        self.lines.as_ref().map_or(&[], |l| &l.seen)
    }

    /// The next stdout line (panics after 90 s of silence, showing what the host said).
    fn next(&mut self) -> String {
        self.lines().next()
    }

    /// Waits for a line containing `wanted`; returns it.
    fn wait(&mut self, wanted: &str) -> String {
        self.lines().wait(wanted)
    }

    /// Waits until every one of `wanted` has appeared in some line, in any order.
    fn wait_all(&mut self, wanted: &[&str]) {
        self.lines().wait_all(wanted);
    }

    /// Waits for `events received` notices until `done(events)` holds. The host may be writing
    /// a request's lines as the file is read: only complete lines count.
    fn wait_events(&mut self, events: &Path, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        loop {
            let docs = common::read_complete_events(events);
            if done(&docs) {
                return docs;
            }
            self.wait("events received:");
        }
    }

    /// The pid of the most recently started component.
    fn component_pid(&self) -> String {
        self.seen()
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("component started: pid "))
            .expect("a component started")
            .to_owned()
    }

    /// SIGKILLs the current component and waits until the host has seen it exit and started
    /// another. Returns the killed one's pid.
    fn kill_component(&mut self) -> String {
        let pid = self.component_pid();
        signal("-KILL", &pid);
        self.wait(&format!("component pid {pid} exited unexpectedly"));
        self.wait("component started: pid");
        pid
    }

    /// SIGTERM to the host: the component must stop within 25 s and both exit 0. Returns every
    /// line the host printed.
    fn terminate(mut self) -> Vec<String> {
        let pid = self.component_pid();
        let asked = Instant::now();
        signal("-TERM", &self.child.id().to_string());
        self.wait(&format!("component pid {pid} stopped"));
        let status = self.child.wait().expect("host exits");
        assert!(
            asked.elapsed() < Duration::from_secs(25),
            "stopped after {:?}",
            asked.elapsed()
        );
        assert!(status.success(), "host exit: {status}");
        // The component has exited (the host waited for it): signal 0 finds no process.
        let alive = Command::new("kill")
            .args(["-0", &pid])
            .stderr(Stdio::null())
            .status()
            .expect("kill -0");
        assert!(!alive.success(), "component pid {pid} still running");
        // The host has exited: its last lines are all in the channel.
        self.lines.take().expect("lines").finish()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Only when a test failed half-way: the host kills its component on drop of its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(sig: &str, pid: &str) {
    let status = Command::new("kill")
        .args([sig, pid])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {sig} {pid}");
}

/// The ThreatConnect input block of a policy.
fn tc_input(sim: &tc_sim::SimHandle, extra: &str) -> String {
    format!(
        r#"  - id: tc
    type: ti_threatconnect
    streams:
      - id: tc-indicator
        data_stream: {{ dataset: ti_threatconnect.indicator }}
        url: {url}
        access_id: test-access-id
        secret_key: ${{TEST_TC_SECRET}}
        interval: 1h
{extra}"#,
        url = sim.base_url()
    )
}

/// The ThreatQ input block of a policy.
fn tq_input(sim: &tq_sim::SimHandle, extra: &str) -> String {
    format!(
        r#"  - id: tq
    type: ti_threatq
    streams:
      - id: tq-threat
        data_stream: {{ dataset: ti_threatq.threat }}
        host: {host}
        client_id: ti-sidecar-sim
        client_secret: ${{TEST_TQ_SECRET}}
        data_collection_id: sim-collection
        interval: 1h
{extra}"#,
        host = sim.base_url()
    )
}

fn tq_args(indicators: usize) -> tq_sim::SimArgs {
    tq_sim::SimArgs {
        indicators,
        client_secret: TQ_SECRET.to_owned(),
        ..tq_sim::SimArgs::default()
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write policy");
}

fn of_dataset<'a>(docs: &'a [Value], dataset: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|d| d["data_stream"]["dataset"] == dataset)
        .collect()
}

/// Distinct `@metadata._id`s of ThreatConnect documents.
fn tc_ids(docs: &[Value]) -> BTreeSet<String> {
    of_dataset(docs, "ti_threatconnect.indicator")
        .iter()
        .filter_map(|d| d["@metadata"]["_id"].as_str().map(str::to_owned))
        .collect()
}

/// Distinct `threatq.id`s of ThreatQ documents (the pipeline sets no `_id` for them).
fn tq_ids(docs: &[Value]) -> BTreeSet<i64> {
    of_dataset(docs, "ti_threatq.threat")
        .iter()
        .filter_map(|d| d["threatq"]["id"].as_i64())
        .collect()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("diagnostics dir")
        .map(|e| e.expect("entry").path())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_inputs_deliver_every_indicator_and_diagnostics_hold_no_secret() {
    let tc = tc_sim::start(common::sim_args(120)).await.expect("tc sim");
    let tq = tq_sim::start(tq_args(90)).await.expect("tq sim");
    let ws = common::Workspace::new();
    let policy = ws.path("policy.yml");
    write(
        &policy,
        &format!("inputs:\n{}{}", tc_input(&tc, ""), tq_input(&tq, "")),
    );
    let events = ws.path("events.ndjson");
    let diag = ws.path("diag");
    let mut host = Host::spawn(
        &policy,
        &events,
        &ws.state_dir(),
        &["--diagnostics", diag.to_str().expect("utf-8 path")],
    );
    host.wait_all(&[
        "unit ti-sidecar-default OUTPUT HEALTHY",
        &format!("{TC_UNIT} HEALTHY"),
        &format!("{TQ_UNIT} HEALTHY"),
        "diagnostics saved:",
    ]);
    let docs = host.wait_events(&events, |d| tc_ids(d).len() >= 120 && tq_ids(d).len() >= 90);

    // ThreatConnect documents carry the pipeline's `_id`; ThreatQ ones have none (the pipeline
    // sets none), so the receiver writes `@metadata` without `_id` and they are told apart by
    // `threatq.id`.
    assert_eq!(
        tc_ids(&docs).len(),
        120,
        "every TC indicator, each with its _id"
    );
    let tq_docs = of_dataset(&docs, "ti_threatq.threat");
    assert!(
        tq_docs.iter().all(|d| d["@metadata"].get("_id").is_none()
            && d["@metadata"]["input_id"] == "ti-sidecar-default-tq"
            && d["@metadata"]["stream_id"] == "tq-threat"),
        "ThreatQ documents carry no _id, and their unit and stream ids"
    );
    assert_eq!(
        tq_ids(&docs),
        (1..=90).collect::<BTreeSet<i64>>(),
        "every TQ indicator"
    );

    // Diagnostics: files came back, none holds a secret, the agent token or the peer key.
    let files = files_under(&diag);
    assert!(!files.is_empty(), "diagnostics files saved");
    let token_shape = regex_free_token_shape;
    for f in &files {
        let text = String::from_utf8_lossy(&std::fs::read(f).expect("read")).into_owned();
        for secret in [TC_SECRET, TQ_SECRET, "PRIVATE KEY"] {
            assert!(
                !text.contains(secret),
                "{} contains {secret:?}",
                f.display()
            );
        }
        assert!(
            !token_shape(&text),
            "{} contains a token-shaped string",
            f.display()
        );
    }
    host.terminate();
}

/// Regression: the host's events file, saved diagnostics and the component's `path.data` were
/// created world-readable. Under umask 022 they are now 0600 files in 0700 directories.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_events_diagnostics_and_data_dir_are_private_whatever_the_umask() {
    let tc = tc_sim::start(common::sim_args(20)).await.expect("tc sim");
    let ws = common::Workspace::new();
    let policy = ws.path("policy.yml");
    write(&policy, &format!("inputs:\n{}", tc_input(&tc, "")));
    let events = ws.path("received/events.ndjson");
    let diag = ws.path("diag");
    let data = ws.path("data");
    let mut host = Host::spawn(
        &policy,
        &events,
        &data,
        &["--diagnostics", diag.to_str().expect("utf-8 path")],
    );
    host.wait_all(&[&format!("{TC_UNIT} HEALTHY"), "diagnostics saved:"]);
    host.wait_events(&events, |d| tc_ids(d).len() >= 20);
    assert_eq!(common::mode(&events), 0o600, "events file");
    assert_eq!(common::mode(&ws.path("received")), 0o700);
    assert_eq!(common::mode(&diag), 0o700, "diagnostics directory");
    for f in files_under(&diag) {
        assert_eq!(common::mode(&f), 0o600, "{}", f.display());
    }
    assert_eq!(common::mode(&data), 0o700, "path.data");
    assert_eq!(common::mode(&data.join("state.redb")), 0o600);
    host.terminate();
}

/// Whether `text` holds a string shaped like the host's agent token (8-4-4-4-12 hex groups).
fn regex_free_token_shape(text: &str) -> bool {
    let groups = [8usize, 4, 4, 4, 12];
    let bytes = text.as_bytes();
    let total: usize = groups.iter().sum::<usize>() + groups.len() - 1;
    (0..bytes.len().saturating_sub(total - 1)).any(|start| {
        let mut i = start;
        for (n, len) in groups.iter().enumerate() {
            if n > 0 {
                if bytes.get(i) != Some(&b'-') {
                    return false;
                }
                i += 1;
            }
            for _ in 0..*len {
                if !bytes.get(i).is_some_and(u8::is_ascii_hexdigit) {
                    return false;
                }
                i += 1;
            }
        }
        true
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_push_reconfigures_a_unit_and_removing_an_input_stops_its_unit() {
    let tc = tc_sim::start(common::sim_args(60)).await.expect("tc sim");
    let tq = tq_sim::start(tq_args(60)).await.expect("tq sim");
    let ws = common::Workspace::new();
    let policy = ws.path("policy.yml");
    let events = ws.path("events.ndjson");
    write(
        &policy,
        &format!(
            "inputs:\n{}{}",
            tc_input(&tc, "        batch_size: 50\n"),
            tq_input(&tq, "")
        ),
    );
    let mut host = Host::spawn(&policy, &events, &ws.state_dir(), &[]);
    host.wait_all(&[&format!("{TC_UNIT} HEALTHY"), &format!("{TQ_UNIT} HEALTHY")]);

    // A changed batch_size: the unit takes the new config (restarting its stream) and reports
    // HEALTHY again; the host only moves on once the config index is acknowledged.
    write(
        &policy,
        &format!(
            "inputs:\n{}{}",
            tc_input(&tc, "        batch_size: 20\n"),
            tq_input(&tq, "")
        ),
    );
    host.wait("policy changed: pushing it");
    let mut left_healthy = false;
    loop {
        let line = host.next();
        assert!(!line.contains(TQ_UNIT), "untouched unit changed: {line}");
        if line.contains(TC_UNIT) {
            if line.contains(&format!("{TC_UNIT} HEALTHY")) {
                if left_healthy {
                    break;
                }
            } else {
                left_healthy = true;
            }
        }
        assert!(!line.contains("FAILED"), "{line}");
    }
    assert!(left_healthy, "the pushed config went through CONFIGURING");

    // Removing the ThreatQ input: its unit is STOPPING, then STOPPED, then gone, while the
    // ThreatConnect unit keeps running.
    write(
        &policy,
        &format!("inputs:\n{}", tc_input(&tc, "        batch_size: 20\n")),
    );
    host.wait("policy changed: pushing it");
    let mut states = Vec::new();
    loop {
        let line = host.next();
        assert!(!line.contains(TC_UNIT), "the other unit changed: {line}");
        if line.contains("unit ti-sidecar-default-tq INPUT removed") {
            break;
        }
        if line.contains(TQ_UNIT) {
            states.push(line.clone());
        }
    }
    assert!(
        states.iter().any(|l| l.contains(" STOPPING ")),
        "STOPPING reported: {states:?}"
    );
    assert!(
        states.last().is_some_and(|l| l.contains(" STOPPED ")),
        "STOPPED last: {states:?}"
    );

    // The ThreatConnect unit still answers: a new push reaches it and it is HEALTHY again.
    write(
        &policy,
        &format!("inputs:\n{}", tc_input(&tc, "        batch_size: 30\n")),
    );
    host.wait("policy changed: pushing it");
    host.wait(&format!("{TC_UNIT} HEALTHY"));
    assert!(
        !host
            .seen()
            .iter()
            .any(|l| l.contains(TC_UNIT) && (l.contains("STOPP") || l.contains("FAILED"))),
        "{:#?}",
        host.seen()
    );
    let docs = common::read_events(&events);
    assert_eq!(tc_ids(&docs).len(), 60);
    assert_eq!(tq_ids(&docs).len(), 60);
    host.terminate();
}

/// An OTLP receiver the test controls: answers UNAVAILABLE while `refuse` is set, otherwise
/// accepts and forwards every record (rendered as the host renders it).
struct SwitchableReceiver {
    refuse: Arc<AtomicBool>,
    accepted: tokio::sync::mpsc::UnboundedSender<Value>,
    refused: tokio::sync::mpsc::UnboundedSender<()>,
}

#[tonic::async_trait]
impl LogsService for SwitchableReceiver {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        if self.refuse.load(Ordering::SeqCst) {
            let _ = self.refused.send(());
            return Err(Status::unavailable("test receiver is down"));
        }
        for rl in &request.get_ref().resource_logs {
            for sl in &rl.scope_logs {
                for record in &sl.log_records {
                    let _ = self.accepted.send(Value::Object(render(record)));
                }
            }
        }
        Ok(Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_receiver_outage_degrades_then_recovers_without_loss() {
    const N: usize = 160;
    let mut args = common::sim_args(N);
    args.faults.latency_ms = 150;
    let tc = tc_sim::start(args).await.expect("tc sim");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let refuse = Arc::new(AtomicBool::new(false));
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    let (refused_tx, mut refused) = tokio::sync::mpsc::unbounded_channel();
    let stop = tokio_util::sync::CancellationToken::new();
    let service = LogsServiceServer::new(SwitchableReceiver {
        refuse: refuse.clone(),
        accepted: accepted_tx,
        refused: refused_tx,
    });
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                stop.clone().cancelled_owned(),
            ),
    );

    let ws = common::Workspace::new();
    let policy = ws.path("policy.yml");
    write(
        &policy,
        &format!(
            "outputs:\n  default:\n    type: otlp\n    endpoint: http://{addr}\n    retry_on_failure: {{ max_elapsed_time: 1s }}\ninputs:\n{}",
            tc_input(&tc, "        batch_size: 10\n")
        ),
    );
    let events = ws.path("events.ndjson");
    let mut host = Host::spawn(&policy, &events, &ws.state_dir(), &[]);
    host.wait(&format!("{TC_UNIT} HEALTHY"));

    // Down: every export is refused until the unit reports DEGRADED.
    refuse.store(true, Ordering::SeqCst);
    let degraded = host.wait(&format!("{TC_UNIT} DEGRADED"));
    assert!(
        degraded.contains("tc-indicator"),
        "names the stream: {degraded}"
    );
    assert!(refused.try_recv().is_ok(), "exports were refused");

    // Up again: the unit recovers and every indicator arrives.
    refuse.store(false, Ordering::SeqCst);
    host.wait(&format!("{TC_UNIT} HEALTHY"));
    let mut ids = BTreeSet::new();
    let mut body_ids = BTreeSet::new();
    while ids.len() < N || body_ids.len() < N {
        let doc = tokio::time::timeout(Duration::from_secs(90), accepted.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of {N} ids arrived; host said:\n{}",
                    ids.len(),
                    host.seen().join("\n")
                )
            })
            .expect("receiver running");
        if let Some(id) = doc["@metadata"]["_id"].as_str() {
            ids.insert(id.to_owned());
        }
        body_ids.insert(common::original_key(&doc).0);
    }
    assert_eq!((ids.len(), body_ids.len()), (N, N), "nothing lost");
    assert!(
        common::read_events(&events).is_empty(),
        "the policy's output, not the host's receiver, got the events"
    );
    host.terminate();
    stop.cancel();
    let _ = server.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_threatq_component_is_restarted_without_a_gap() {
    const N: usize = 150;
    let tq = tq_sim::start(tq_sim::SimArgs {
        faults: FaultArgs {
            latency_ms: 100,
            ..FaultArgs::default()
        },
        ..tq_args(N)
    })
    .await
    .expect("tq sim");
    let ws = common::Workspace::new();
    let policy = ws.path("policy.yml");
    write(
        &policy,
        &format!("inputs:\n{}", tq_input(&tq, "        page_size: 10\n")),
    );
    let events = ws.path("events.ndjson");
    let mut host = Host::spawn(&policy, &events, &ws.state_dir(), &[]);
    host.wait(&format!("{TQ_UNIT} HEALTHY"));

    // Mid-sweep (15 pages at 100 ms each): SIGKILL the component.
    let pid = host.kill_component();
    assert_ne!(host.component_pid(), pid, "a new process");
    let docs = host.wait_events(&events, |d| tq_ids(d).len() >= N);
    assert_eq!(
        tq_ids(&docs),
        (1..=N as i64).collect::<BTreeSet<i64>>(),
        "no gap after the restart"
    );
    host.terminate();
}

/// A component killed while a page's chunks are on their way to the host (pages of two chunks,
/// up to eight `Export` requests in flight, answered in any order) is restarted and delivers
/// every indicator: no page was committed ahead of a chunk the host had not acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_threatconnect_component_with_requests_in_flight_is_restarted_without_a_gap() {
    const N: usize = 6000;
    let tc = tc_sim::start(tc_sim::SimArgs {
        faults: FaultArgs {
            latency_ms: 100,
            ..FaultArgs::default()
        },
        ..common::sim_args(N)
    })
    .await
    .expect("tc sim");
    let ws = common::Workspace::new();
    let policy = ws.path("policy.yml");
    write(
        &policy,
        &format!(
            "inputs:\n{}",
            tc_input(
                &tc,
                "        batch_size: 1000\n        backfill_concurrency: 1\n"
            )
        ),
    );
    let events = ws.path("events.ndjson");
    let mut host = Host::spawn(&policy, &events, &ws.state_dir(), &[]);
    host.wait(&format!("{TC_UNIT} HEALTHY"));
    // Mid-sweep (six pages at 100 ms each), once a page and a half has arrived.
    host.wait_events(&events, |d| tc_ids(d).len() >= 1500);
    host.kill_component();
    let docs = host.wait_events(&events, |d| tc_ids(d).len() >= N);
    assert_eq!(tc_ids(&docs).len(), N, "no gap after the restart");
    host.terminate();
}

/// Mapping and file I/O never run on the component's async workers: during a backfill of
/// 10 000-item pages, the control plane keeps answering (a diagnostics action every 100 ms, and
/// the check-ins, every 25 s or on change, under the Agent's 30 s watchdog), no check-in is
/// missed and the unit never turns DEGRADED or FAILED. How fast it answers is the pipeline
/// benchmark's business; here every probe must be answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_of_10000_item_pages_never_starves_the_control_plane() {
    const N: usize = 20_000;
    let tc = tc_sim::start(common::sim_args(N)).await.expect("tc sim");
    let ws = common::Workspace::new();
    let policy = ws.path("policy.yml");
    write(
        &policy,
        &format!(
            "outputs:\n  default:\n    type: ndjson\n    path: \"-\"\ninputs:\n{}",
            tc_input(&tc, "        batch_size: 10000\n")
        ),
    );
    let events = ws.path("events.ndjson");
    let mut host = Host::spawn(
        &policy,
        &events,
        &ws.state_dir(),
        &["--probe-control-every", "100ms", "--checkin-period", "30s"],
    );
    let docs = host.wait_events(&events, |d| d.len() >= N);
    assert_eq!(tc_ids(&docs).len(), N, "every indicator arrived");
    let lines = host.terminate();
    let said = lines.join("\n");
    for bad in [
        "missed",
        &format!("{TC_UNIT} DEGRADED"),
        &format!("{TC_UNIT} FAILED"),
        "control probe failed",
    ] {
        assert!(!said.contains(bad), "the host said {bad:?}:\n{said}");
    }
    let probe = lines
        .iter()
        .find(|l| l.starts_with("control probe:"))
        .unwrap_or_else(|| panic!("no probe summary:\n{said}"));
    eprintln!("{probe}");
    assert!(probe.ends_with(", 0 failed"), "{probe}");
    let answered: usize = probe
        .trim_start_matches("control probe: ")
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        answered > 0,
        "the control plane answered during the backfill: {probe}"
    );
}
