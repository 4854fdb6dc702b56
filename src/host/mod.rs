//! `ti-sidecar host`: a small Elastic Agent for tests, demos and users (DESIGN §2).
//!
//! It makes Agent-shaped certificates ([`certs`]), serves `proto.ElasticAgent` over mTLS
//! ([`server`]) and an OTLP logs receiver that writes NDJSON ([`receiver`]), both with
//! `grpc.health.v1`; it turns the policy file into expected units ([`policy`]), spawns
//! `ti-sidecar agent -E path.data=DIR` with the binary StartUpInfo on its stdin, restarts it when
//! it exits unexpectedly or misses three check-ins, and pushes a new policy when the file
//! changes. Unit state changes are printed on stdout, one line each.

pub mod certs;
pub mod policy;
pub mod receiver;
pub mod server;
mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use prost::Message as _;
use secrecy::ExposeSecret as _;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tracing::Instrument as _;

use crate::proto::elastic_agent_server::ElasticAgentServer;
use crate::proto::{
    AgentInfo, AgentManagedMode, ConnInfoServices, ConnectionSupports, StartUpInfo,
};
pub use server::UnitChange;
use server::{ControlPlane, HostEvent};

/// The Agent's default gRPC message limit (100 MiB).
pub(crate) const MAX_MESSAGE_SIZE: u32 = 100 * 1024 * 1024;

/// Why the host could not run.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The policy file is invalid.
    #[error("policy: {0}")]
    Policy(#[from] crate::config::Problems),
    /// Certificates could not be made.
    #[error(transparent)]
    Certs(#[from] certs::CertError),
    /// A socket, file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The gRPC server could not be set up.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HostError {
    let what = what.into();
    move |source| HostError::Io { what, source }
}

/// Settings of `ti-sidecar host`.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// The policy file (the `run --config` schema).
    pub policy: PathBuf,
    /// Where received events are appended as NDJSON (none: only counted).
    pub events: Option<PathBuf>,
    /// The component's `path.data`.
    pub data_dir: PathBuf,
    /// Ask for diagnostics once every unit is healthy, and save the files here.
    pub diagnostics: Option<PathBuf>,
    /// The component binary (normally this one).
    pub component: PathBuf,
    /// Delay before restarting an exited component (`command.timeouts.restart`).
    pub restart_delay: Duration,
    /// The check-in watchdog period (`command.timeouts.checkin`).
    pub checkin_period: Duration,
    /// Measure how fast the component's control plane answers: a diagnostics action this
    /// often (one at a time), its round trip summed up at the stop.
    pub control_probe: Option<Duration>,
}

/// What a running host tells an embedder (the demo) besides its console lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostReport {
    /// A unit's reported state or message changed.
    Unit(UnitChange),
    /// Records received so far per `data_stream.dataset`; sent when the count changed, at most
    /// once a second.
    Received(BTreeMap<String, u64>),
}

/// Prints one console line (unit states and host notices go to stdout).
fn say(line: &str) {
    if !crate::telemetry::to_log_file(line) {
        println!("{line}");
    }
}

/// Serves the OTLP receiver on 127.0.0.1 (plain gRPC, with health); returns its address.
async fn start_receiver(
    receiver: receiver::EventsReceiver,
    shutdown: CancellationToken,
) -> Result<SocketAddr, HostError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io("binding the OTLP receiver"))?;
    let addr = listener.local_addr().map_err(io("OTLP receiver address"))?;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<receiver::ExportService>().await;
    let service = receiver.service(MAX_MESSAGE_SIZE as usize);
    tokio::spawn(async move {
        let served = Server::builder()
            .initial_stream_window_size(Some(16 * 1024 * 1024))
            .initial_connection_window_size(Some(32 * 1024 * 1024))
            .add_service(health)
            .add_service(service)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                shutdown.cancelled_owned(),
            )
            .await;
        if let Err(e) = served {
            tracing::error!("OTLP receiver stopped: {e}");
        }
    });
    Ok(addr)
}

/// Accepts TCP connections on `listener` and completes their TLS handshakes with `config`;
/// streams the established connections (failed handshakes are logged and dropped).
pub fn tls_incoming(
    listener: tokio::net::TcpListener,
    config: rustls::ServerConfig,
    shutdown: CancellationToken,
) -> impl tokio_stream::Stream<
    Item = Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>,
> {
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => return,
                a = listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::warn!(%peer, "TLS handshake failed: {e}"),
                    Err(_) => tracing::warn!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Serves `proto.ElasticAgent` over mTLS on 127.0.0.1 (certificate chosen by SNI, as the
/// Agent does); returns its address.
async fn start_control(
    control: ControlPlane,
    authority: &certs::Authority,
    peer: &certs::PeerCert,
    shutdown: CancellationToken,
) -> Result<SocketAddr, HostError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io("binding the control server"))?;
    let addr = listener
        .local_addr()
        .map_err(io("control server address"))?;
    let tls = certs::server_tls_config(authority, &[peer])?;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<ElasticAgentServer<ControlPlane>>()
        .await;
    let service = ElasticAgentServer::new(control)
        .max_decoding_message_size(MAX_MESSAGE_SIZE as usize)
        .max_encoding_message_size(MAX_MESSAGE_SIZE as usize);
    let router = Server::builder().add_service(health).add_service(service);
    let incoming = tls_incoming(listener, tls, shutdown.clone());
    tokio::spawn(async move {
        let served = router
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!("control server stopped: {e}");
        }
    });
    Ok(addr)
}

/// The StartUpInfo bytes for a component.
pub(crate) fn startup_info(
    addr: SocketAddr,
    token: &str,
    authority: &certs::Authority,
    peer: &certs::PeerCert,
) -> Vec<u8> {
    StartUpInfo {
        addr: addr.to_string(),
        server_name: peer.server_name.clone(),
        token: token.to_owned(),
        ca_cert: authority.cert_pem().as_bytes().to_vec(),
        peer_cert: peer.cert_pem.as_bytes().to_vec(),
        peer_key: peer.key_pem.expose_secret().as_bytes().to_vec(),
        services: vec![ConnInfoServices::CheckinV2 as i32],
        supports: vec![ConnectionSupports::CheckinChunking as i32],
        max_message_size: MAX_MESSAGE_SIZE,
        agent_info: Some(AgentInfo {
            id: "ti-sidecar-host".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            snapshot: false,
            mode: AgentManagedMode::Standalone as i32,
            unprivileged: true,
        }),
    }
    .encode_to_vec()
}

/// Forwards a child's output lines to our log (stderr, or the `--log-file`).
fn forward<R: tokio::io::AsyncRead + Unpin + Send + 'static>(from: R) {
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(from).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            crate::telemetry::forward_line(&line);
        }
    });
}

/// Asks the child to stop (SIGTERM), then kills it after `grace`.
async fn stop_child(child: &mut tokio::process::Child, grace: Duration) {
    #[cfg(unix)]
    if let Some(pid) = child.id() {
        // `#![forbid(unsafe_code)]` rules out kill(2); the kill utility sends the SIGTERM.
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = grace;
    let _ = child.kill().await;
}

/// Runs the component under supervision until `shutdown`; `kill` forces a restart.
async fn supervise(
    options: HostOptions,
    startup: Vec<u8>,
    control: ControlPlane,
    kill: std::sync::Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) -> Result<(), HostError> {
    loop {
        control.process_started();
        let mut child = tokio::process::Command::new(&options.component)
            .arg("agent")
            .arg("-E")
            .arg(format!("path.data={}", options.data_dir.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(io(format!("starting {}", options.component.display())))?;
        if let Some(out) = child.stdout.take() {
            forward(out);
        }
        if let Some(err) = child.stderr.take() {
            forward(err);
        }
        let pid = child.id().unwrap_or_default();
        say(&format!("component started: pid {pid}"));
        let written = match child.stdin.take() {
            Some(mut stdin) => {
                let r = stdin.write_all(&startup).await;
                drop(stdin);
                r
            }
            None => Ok(()),
        };
        if let Err(e) = written {
            say(&format!(
                "cannot write StartUpInfo to pid {pid}: {e}; killing it"
            ));
            let _ = child.kill().await;
        }
        tokio::select! {
            status = child.wait() => {
                let code = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                say(&format!("component pid {pid} exited unexpectedly ({code}); restarting in {:?}", options.restart_delay));
            }
            () = kill.notified() => {
                say(&format!("component pid {pid} missed 3 check-ins: killing and restarting"));
                let _ = child.kill().await;
            }
            () = shutdown.cancelled() => {
                stop_child(&mut child, Duration::from_secs(25)).await;
                say(&format!("component pid {pid} stopped"));
                return Ok(());
            }
        }
        tokio::select! {
            () = tokio::time::sleep(options.restart_delay) => {}
            () = shutdown.cancelled() => return Ok(()),
        }
    }
}

/// Times the component's answers to diagnostics actions (`--probe-control-every`): if mapping
/// or file I/O ran on its async workers, these answers would wait behind them.
struct ControlProbe {
    every: Option<tokio::time::Interval>,
    outstanding: bool,
    answers: mpsc::UnboundedSender<Result<Duration, String>>,
    latencies: Vec<Duration>,
    failures: Vec<String>,
}

impl ControlProbe {
    /// The probe, and where its answers arrive (for [`record`](Self::record)).
    fn new(every: Option<Duration>) -> (Self, mpsc::UnboundedReceiver<Result<Duration, String>>) {
        let (answers, answered) = mpsc::unbounded_channel();
        let probe = Self {
            every: every.map(|d| {
                let mut i = tokio::time::interval(d);
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                i
            }),
            outstanding: false,
            answers,
            latencies: Vec::new(),
            failures: Vec::new(),
        };
        (probe, answered)
    }

    /// The next probe time (never, when probing is off).
    async fn tick(&mut self) {
        match &mut self.every {
            Some(i) => {
                i.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    /// Sends one diagnostics request, unless the last one is still unanswered.
    fn send(&mut self, control: &ControlPlane) {
        if self.outstanding || !control.actions_connected() {
            return;
        }
        self.outstanding = true;
        let control = control.clone();
        let answers = self.answers.clone();
        tokio::spawn(
            async move {
                let asked = tokio::time::Instant::now();
                let answer = control.request_diagnostics().await;
                let _ = answers.send(answer.map(|_| asked.elapsed()).map_err(|e| e.to_string()));
            }
            .in_current_span(),
        );
    }

    fn record(&mut self, answer: Result<Duration, String>) {
        self.outstanding = false;
        match answer {
            Ok(latency) => self.latencies.push(latency),
            Err(e) => {
                say(&format!("control probe failed: {e}"));
                self.failures.push(e);
            }
        }
    }

    /// `control probe: N answered, p50 … ms, p99 … ms, max … ms, F failed`.
    fn summary(&mut self) -> Option<String> {
        self.every.as_ref()?;
        self.latencies.sort();
        let ms = |q: f64| -> f64 {
            if self.latencies.is_empty() {
                return 0.0;
            }
            let i = ((self.latencies.len() - 1) as f64 * q).round() as usize;
            self.latencies[i].as_secs_f64() * 1000.0
        };
        Some(format!(
            "control probe: {} answered, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {} failed",
            self.latencies.len(),
            ms(0.5),
            ms(0.99),
            ms(1.0),
            self.failures.len()
        ))
    }
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Writes the diagnostics files of a response into `dir`; returns the paths.
fn save_diagnostics(
    dir: &Path,
    response: &crate::proto::ActionResponse,
) -> Result<Vec<PathBuf>, HostError> {
    crate::fsutil::create_missing_private_dirs(dir)
        .map_err(io(format!("creating {}", dir.display())))?;
    let mut saved = Vec::new();
    for (i, d) in response.diagnostic.iter().enumerate() {
        // The component names the file: keep only its last path segment.
        let name = Path::new(&d.filename).file_name().map_or_else(
            || format!("diagnostic-{i}"),
            |n| n.to_string_lossy().into_owned(),
        );
        let path = dir.join(name);
        // Diagnostics carry cursors, config and errors: 0600 whatever the umask.
        crate::fsutil::write_private(&path, &d.content)
            .map_err(io(format!("writing {}", path.display())))?;
        saved.push(path);
    }
    Ok(saved)
}

/// Runs the host until `shutdown`.
pub async fn run(options: HostOptions, shutdown: CancellationToken) -> Result<(), HostError> {
    run_reporting(options, shutdown, None).await
}

/// [`run`], also sending unit changes and per-dataset receive counts to `reports` (closing the
/// receiving side is harmless).
pub(crate) async fn run_reporting(
    options: HostOptions,
    shutdown: CancellationToken,
    reports: Option<mpsc::UnboundedSender<HostReport>>,
) -> Result<(), HostError> {
    let report = |r: HostReport| {
        if let Some(tx) = &reports {
            let _ = tx.send(r);
        }
    };
    let events = receiver::EventsReceiver::open(options.events.as_deref())
        .await
        .map_err(io("opening the events file"))?;
    let otlp_addr = start_receiver(events.clone(), shutdown.clone()).await?;
    let otlp_endpoint = format!("http://{otlp_addr}");
    let mut current = policy::load(&options.policy, &otlp_endpoint)?;
    say(&format!(
        "OTLP receiver on {otlp_addr}; component {} with {} unit(s)",
        current.component_id,
        current.units.len()
    ));

    let authority = certs::Authority::new()?;
    let peer = authority.issue(&certs::new_server_name())?;
    let token = certs::new_token();
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let control = ControlPlane::new(token.clone(), &current, events_tx);
    let control_addr = start_control(control.clone(), &authority, &peer, shutdown.clone()).await?;
    say(&format!(
        "control server on {control_addr} (server_name {})",
        peer.server_name
    ));
    let startup = startup_info(control_addr, &token, &authority, &peer);

    let kill = std::sync::Arc::new(tokio::sync::Notify::new());
    let supervisor = tokio::spawn(supervise(
        options.clone(),
        startup,
        control.clone(),
        kill.clone(),
        shutdown.clone(),
    ));

    let mut policy_tick = tokio::time::interval(Duration::from_secs(1));
    let (mut probe, mut probe_answers) = ControlProbe::new(options.control_probe);
    let mut watchdog = tokio::time::interval(options.checkin_period);
    watchdog.tick().await;
    let mut policy_mtime = modified(&options.policy);
    let mut diagnostics_done = options.diagnostics.is_none();
    let mut missed_before = 0u32;
    let mut reported_events = 0u64;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(event) = events_rx.recv() => match event {
                HostEvent::Unit(change) => {
                    say(&change.to_string());
                    report(HostReport::Unit(change));
                }
                HostEvent::Problem(p) => say(&p),
                HostEvent::Removed(unit) => say(&format!("unit {unit} removed")),
                HostEvent::AllHealthy if !diagnostics_done => {
                    diagnostics_done = true;
                    if let Some(dir) = options.diagnostics.clone() {
                        let control = control.clone();
                        tokio::spawn(async move {
                            control.actions_ready().await;
                            match control.request_diagnostics().await {
                                Ok(resp) => match save_diagnostics(&dir, &resp) {
                                    Ok(paths) => {
                                        for p in paths {
                                            say(&format!("diagnostics saved: {}", p.display()));
                                        }
                                    }
                                    Err(e) => say(&format!("diagnostics: {e}")),
                                },
                                Err(e) => say(&format!("diagnostics: {e}")),
                            }
                        });
                    }
                }
                HostEvent::AllHealthy => {}
            },
            _ = policy_tick.tick() => {
                // Progress, at most once a second.
                let received = events.received();
                if received != reported_events {
                    reported_events = received;
                    say(&format!("events received: {received}"));
                    report(HostReport::Received(events.received_per_dataset()));
                }
                let now = modified(&options.policy);
                if now != policy_mtime {
                    policy_mtime = now;
                    match policy::load(&options.policy, &otlp_endpoint) {
                        Ok(p) if p != current => {
                            say("policy changed: pushing it");
                            control.apply_policy(&p).await;
                            current = p;
                        }
                        Ok(_) => {}
                        Err(problems) => say(&format!("policy change ignored: {problems}")),
                    }
                }
            }
            () = probe.tick() => probe.send(&control),
            Some(answer) = probe_answers.recv() => probe.record(answer),
            _ = watchdog.tick() => {
                let since = control.last_checkin().elapsed();
                let missed = (since.as_secs_f64() / options.checkin_period.as_secs_f64()) as u32;
                if missed != missed_before {
                    match missed {
                        0 => say("component HEALTHY: checking in"),
                        1 | 2 => say(&format!("component DEGRADED: missed {missed} check-in(s)")),
                        _ => {
                            say(&format!("component FAILED: missed {missed} check-ins"));
                            kill.notify_one();
                        }
                    }
                    missed_before = missed.min(3);
                    if missed >= 3 {
                        missed_before = 0;
                    }
                }
            }
        }
    }
    match supervisor.await {
        Ok(result) => result?,
        Err(e) => tracing::error!("supervisor ended abnormally: {e}"),
    }
    if let Some(line) = probe.summary() {
        say(&line);
    }
    let (checkins, replies) = control.checkin_counts();
    say(&format!(
        "events received: {}; check-ins: {checkins}, expected messages sent in answer: {replies}",
        events.received()
    ));
    Ok(())
}
