//! `ti-sidecar demo`: everything wired together on loopback, the way Elastic Agent runs us.
//!
//! It starts the in-process ThreatConnect and ThreatQ simulators, writes a policy with one
//! `ti_threatconnect` and one `ti_threatq` input, and runs the host harness ([`crate::host`]),
//! which spawns `ti-sidecar agent` and collects its OTLP logs into an NDJSON file. Unit state
//! changes and receive counts show on stdout as they happen; once every simulator indicator of
//! both inputs has arrived (and both input units are HEALTHY), the host is stopped (the
//! component gets SIGTERM) and a summary is returned.

use crate::sim::faults::FaultArgs;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::host::{self, HostOptions, HostReport};
use crate::proto::{State, UnitType};
use crate::sim::threatconnect::{self as tc_sim, SimArgs};
use crate::sim::threatq as tq_sim;

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A simulator could not start, or a file could not be written.
    #[error("demo setup: {0}")]
    Setup(#[from] std::io::Error),
    /// The host harness failed.
    #[error(transparent)]
    Host(#[from] host::HostError),
    /// The host ended before both inputs had caught up.
    #[error("the host stopped before every indicator arrived")]
    Incomplete,
}

/// Settings of `ti-sidecar demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Indicators each simulator serves.
    pub indicators: usize,
    /// The NDJSON events file (replaced).
    pub events: PathBuf,
    /// The `ti-sidecar` binary the host launches in agent mode (normally the running one).
    pub component: PathBuf,
    /// The live display, when stderr is a terminal: one line per input instead of progress
    /// lines.
    pub console: Option<std::sync::Arc<crate::console::Console>>,
}

/// One demo input: its policy id, unit, dataset and what it delivered.
#[derive(Debug, Clone)]
pub struct InputSummary {
    /// The policy input id.
    pub input_id: String,
    /// The dataset its documents carry.
    pub dataset: String,
    /// Indicators its simulator held.
    pub served: usize,
    /// Documents received by the host's OTLP receiver.
    pub received: u64,
    /// Whether its unit reported HEALTHY at the end.
    pub healthy: bool,
    /// From the start of the demo until the last of its indicators arrived.
    pub elapsed: Duration,
}

impl InputSummary {
    /// Documents per second over [`Self::elapsed`].
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.received as f64 / secs
        } else {
            0.0
        }
    }
}

/// What the demo did.
#[derive(Debug)]
pub struct DemoSummary {
    /// Per input, in policy order.
    pub inputs: Vec<InputSummary>,
    /// Where the events went.
    pub events: PathBuf,
    /// From start until both inputs had caught up.
    pub elapsed: Duration,
}

impl std::fmt::Display for DemoSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "ti-sidecar demo (host harness + `ti-sidecar agent`, OTLP)"
        )?;
        let mut total = 0u64;
        for i in &self.inputs {
            total += i.received;
            writeln!(
                f,
                "  {}: {} of {} documents received, unit {}, {:.1} s, {:.0} docs/s",
                i.input_id,
                i.received,
                i.served,
                if i.healthy { "HEALTHY" } else { "not HEALTHY" },
                i.elapsed.as_secs_f64(),
                i.rate()
            )?;
        }
        let secs = self.elapsed.as_secs_f64();
        writeln!(
            f,
            "  delivered: {total} documents in {secs:.1} s ({:.0} docs/s)",
            if secs > 0.0 { total as f64 / secs } else { 0.0 }
        )?;
        write!(f, "  events: {}", self.events.display())
    }
}

/// Progress of one input while the demo runs.
struct Tracked {
    summary: InputSummary,
    /// The unit's last reported state.
    state: &'static str,
    unit_id: String,
    caught_up: bool,
}

/// Runs the demo until both inputs have caught up (or `shutdown`).
pub async fn run(
    options: DemoOptions,
    shutdown: CancellationToken,
) -> Result<DemoSummary, DemoError> {
    let started = Instant::now();
    let tc_args = SimArgs {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        indicators: options.indicators,
        seed: 1,
        access_id: "ti-sidecar-demo".to_owned(),
        secret_key: "ti-sidecar-demo-secret".to_owned(),
        faults: FaultArgs::default(),
        same_second: 0,
        id_base: 9_007_199_254_740_993,
    };
    let tc = tc_sim::start(tc_args.clone()).await?;
    let tq_args = tq_sim::SimArgs {
        indicators: options.indicators,
        client_secret: "ti-sidecar-demo-tq-secret".to_owned(),
        ..tq_sim::SimArgs::default()
    };
    let tq = tq_sim::start(tq_args.clone()).await?;
    let dir = tempfile::tempdir()?;
    // A fresh file each time: the demo shows one complete run (the receiver appends).
    match std::fs::remove_file(&options.events) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    // No `outputs`: the host points the component's output unit at its own OTLP receiver.
    let yaml = format!(
        r#"inputs:
  - id: demo-threatconnect
    type: ti_threatconnect
    streams:
      - id: demo-threatconnect-indicator
        data_stream: {{ dataset: ti_threatconnect.indicator }}
        url: {url}
        access_id: {access_id}
        secret_key: {secret}
        batch_size: 500
        interval: 1h
        include_attributes: true
        include_group_assoc: true
        include_indicator_assoc: true
  - id: demo-threatq
    type: ti_threatq
    streams:
      - id: demo-threatq-threat
        data_stream: {{ dataset: ti_threatq.threat }}
        host: {tq_host}
        client_id: {tq_client}
        client_secret: {tq_secret}
        data_collection_id: {tq_collection}
        page_size: 500
        interval: 1h
"#,
        url = tc.base_url(),
        access_id = tc_args.access_id,
        secret = tc_args.secret_key,
        tq_host = tq.base_url(),
        tq_client = tq_args.client_id,
        tq_secret = tq_args.client_secret,
        tq_collection = tq_args.collection,
    );
    let policy = dir.path().join("policy.yml");
    // The policy holds the simulators' secrets.
    crate::fsutil::write_private(&policy, yaml.as_bytes())?;
    let host_options = HostOptions {
        policy,
        events: Some(options.events.clone()),
        data_dir: dir.path().join("data"),
        diagnostics: None,
        component: options.component.clone(),
        restart_delay: Duration::from_secs(1),
        checkin_period: Duration::from_secs(30),
        control_probe: None,
    };

    let mut inputs: Vec<Tracked> = [
        ("demo-threatconnect", "ti_threatconnect.indicator"),
        ("demo-threatq", "ti_threatq.threat"),
    ]
    .into_iter()
    .map(|(input_id, dataset)| Tracked {
        unit_id: format!("ti-sidecar-default-{input_id}"),
        state: "STARTING",
        caught_up: false,
        summary: InputSummary {
            input_id: input_id.to_owned(),
            dataset: dataset.to_owned(),
            served: options.indicators,
            received: 0,
            healthy: false,
            elapsed: Duration::ZERO,
        },
    })
    .collect();

    let stop_host = shutdown.child_token();
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    let mut host_task = tokio::spawn(host::run_reporting(
        host_options,
        stop_host.clone(),
        Some(reports_tx),
    ));
    let mut host_result = None;
    let mut done = false;
    while !done {
        tokio::select! {
            r = &mut host_task => {
                host_result = Some(r);
                break;
            }
            report = reports.recv() => match report {
                Some(HostReport::Unit(change)) if change.unit_type == UnitType::Input => {
                    if let Some(t) = inputs.iter_mut().find(|t| t.unit_id == change.id) {
                        t.summary.healthy = change.state == State::Healthy;
                        t.state = change.state.as_str_name();
                    }
                    show(options.console.as_deref(), &inputs, started);
                }
                Some(HostReport::Unit(_)) => {}
                Some(HostReport::Received(per_dataset)) => {
                    progress(&mut inputs, &per_dataset, started, options.console.as_deref());
                }
                None => {}
            },
        }
        done = inputs.iter().all(|t| t.caught_up && t.summary.healthy);
    }
    let elapsed = started.elapsed();
    // The SIGTERM path: the host asks the component to stop and waits for it.
    stop_host.cancel();
    let host_result = match host_result {
        Some(r) => r,
        None => host_task.await,
    };
    tc.shutdown().await;
    tq.shutdown().await;
    match host_result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => {
            tracing::error!("host task ended abnormally: {e}");
            return Err(DemoError::Incomplete);
        }
    }
    if !done {
        return Err(DemoError::Incomplete);
    }
    Ok(DemoSummary {
        inputs: inputs.into_iter().map(|t| t.summary).collect(),
        events: options.events,
        elapsed,
    })
}

/// Updates the per-input counts and prints one progress line.
fn progress(
    inputs: &mut [Tracked],
    per_dataset: &BTreeMap<String, u64>,
    started: Instant,
    console: Option<&crate::console::Console>,
) {
    let mut parts = Vec::new();
    for t in inputs.iter_mut() {
        let n = per_dataset.get(&t.summary.dataset).copied().unwrap_or(0);
        t.summary.received = n;
        if !t.caught_up && n >= t.summary.served as u64 {
            t.caught_up = true;
            t.summary.elapsed = started.elapsed();
        }
        parts.push(format!("{} {n}/{}", t.summary.input_id, t.summary.served));
    }
    if console.is_some() {
        show(console, inputs, started);
    } else {
        println!("progress: {}", parts.join(", "));
    }
}

/// One display line per input: unit state, documents received of served, rate.
fn show(console: Option<&crate::console::Console>, inputs: &[Tracked], started: Instant) {
    let Some(console) = console else {
        return;
    };
    let secs = started.elapsed().as_secs_f64().max(0.001);
    for t in inputs {
        #[allow(clippy::cast_precision_loss)]
        let rate = t.summary.received as f64 / secs;
        console.line(
            &t.summary.input_id,
            format!(
                "{:<20} {:<12} {:>7} of {:>7} documents {:>8.0}/s{}",
                t.summary.input_id,
                t.state,
                t.summary.received,
                t.summary.served,
                rate,
                if t.caught_up { "  caught up" } else { "" }
            ),
        );
    }
}

/// What to try after the demo.
pub fn next_steps(log_file: Option<&std::path::Path>) -> String {
    let mut out = String::from(
        "What you just saw: two simulated platforms (ThreatConnect and ThreatQ) polled by \
         `ti-sidecar agent`, launched and driven by the host harness as Elastic Agent would, \
         the documents mapped to ECS and delivered over OTLP.\nNext:\n",
    );
    out.push_str("  look at one document:   head -1 demo-events.ndjson | jq .\n");
    out.push_str(
        "  the ThreatConnect ones: jq -c 'select(.data_stream.dataset == \"ti_threatconnect.indicator\")' demo-events.ndjson | head -3\n",
    );
    if let Some(log) = log_file {
        out.push_str(&format!(
            "  the component's logs:   {} (JSON lines)\n",
            log.display()
        ));
    }
    out.push_str("  a real tenant:          put your URL and keys in a config (README, \"Quick start\"), then\n");
    out.push_str("                          ti-sidecar validate --config my.yml && ti-sidecar run --config my.yml");
    out
}
