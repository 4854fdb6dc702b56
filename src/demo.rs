//! `ti-sidecar demo`: the whole standalone pipeline against the in-process ThreatConnect and
//! ThreatQ simulators, with no account and no configuration. It writes the events as NDJSON and
//! prints a summary.

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use crate::config;
use crate::runner::{self, RunOptions, Summary};
use crate::sim::threatconnect::{self as tc_sim, SimArgs};
use crate::sim::threatq as tq_sim;

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The simulator could not start.
    #[error("simulator: {0}")]
    Simulator(#[from] std::io::Error),
    /// The generated configuration was refused (a bug).
    #[error("demo configuration: {0}")]
    Config(#[from] config::Problems),
    /// The pipeline failed.
    #[error(transparent)]
    Run(#[from] runner::RunError),
}

/// What the demo did.
#[derive(Debug)]
pub struct DemoSummary {
    /// The run's counters.
    pub run: Summary,
    /// Where the events went.
    pub events: PathBuf,
    /// Indicators the simulator held.
    pub served: usize,
}

impl std::fmt::Display for DemoSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "ti-sidecar demo")?;
        writeln!(
            f,
            "  simulators: ThreatConnect {n} indicators, ThreatQ {n} indicators",
            n = self.served
        )?;
        for (stream, c) in &self.run.per_stream {
            writeln!(
                f,
                "  {stream}: {} documents in {} pages",
                c.indicators, c.pages
            )?;
        }
        writeln!(
            f,
            "  delivered: {} documents in {} pages ({} with error.message, {} duplicates dropped, {} retried errors)",
            self.run.totals.indicators,
            self.run.totals.pages,
            self.run.totals.error_documents,
            self.run.totals.duplicates_dropped,
            self.run.totals.errors
        )?;
        writeln!(
            f,
            "  elapsed: {:.2} s ({:.0} indicators/s)",
            self.run.elapsed_seconds, self.run.rate_per_second
        )?;
        write!(f, "  events: {}", self.events.display())
    }
}

/// Starts the simulator, runs the pipeline once to completion, writes `events`.
pub async fn run(
    indicators: usize,
    events: &Path,
    shutdown: CancellationToken,
) -> Result<DemoSummary, DemoError> {
    let args = SimArgs {
        listen: "127.0.0.1:0"
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?,
        indicators,
        seed: 1,
        access_id: "ti-sidecar-demo".to_owned(),
        secret_key: "ti-sidecar-demo-secret".to_owned(),
        latency_ms: 0,
        error_rate: 0.0,
        rate_limit: None,
        mutate_per_page: 0,
        same_second: 0,
        id_base: 9_007_199_254_740_993,
    };
    let sim = tc_sim::start(args.clone()).await?;
    let tq_args = tq_sim::SimArgs {
        indicators,
        client_secret: "ti-sidecar-demo-tq-secret".to_owned(),
        ..tq_sim::SimArgs::default()
    };
    let tq = tq_sim::start(tq_args.clone()).await?;
    let dir = tempfile::tempdir()?;
    // A fresh file each time: the demo shows one complete run.
    match std::fs::remove_file(events) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let yaml = format!(
        r#"outputs:
  default: {{ type: ndjson, path: {events:?} }}
inputs:
  - id: demo-threatconnect
    type: ti_threatconnect
    streams:
      - id: demo-threatconnect-indicator
        data_stream: {{ dataset: ti_threatconnect.indicator }}
        url: {url}
        access_id: {access_id}
        secret_key: {secret}
        batch_size: 500
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
"#,
        events = events.display().to_string(),
        url = sim.base_url(),
        access_id = args.access_id,
        secret = args.secret_key,
        tq_host = tq.base_url(),
        tq_client = tq_args.client_id,
        tq_secret = tq_args.client_secret,
        tq_collection = tq_args.collection,
    );
    let config_path = dir.path().join("demo.yml");
    std::fs::write(&config_path, yaml)?;
    let cfg = config::load_file(&config_path)?;
    let options = RunOptions {
        state_dir: dir.path().join("state"),
        once: true,
        retry: None,
        poll_retry_delay: None,
    };
    let run = runner::run(&cfg, &options, shutdown).await;
    sim.shutdown().await;
    tq.shutdown().await;
    Ok(DemoSummary {
        run: run?,
        events: events.to_owned(),
        served: indicators,
    })
}
