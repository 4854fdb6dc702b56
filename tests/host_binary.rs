//! `ti-sidecar host` end to end: the real binary hosts the real `ti-sidecar agent` against the
//! ThreatConnect simulator. Events arrive over OTLP in the host's NDJSON file with their
//! `_id`, units report HEALTHY, diagnostics come back over the Actions stream, a killed
//! component is restarted, editing the policy pushes a new configuration, and SIGTERM stops
//! everything.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use serde_json::Value;
use ti_sidecar::sim::threatconnect::start;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_runs_the_sidecar_and_collects_its_events() {
    let sim = start(common::sim_args(150)).await.expect("simulator");
    let ws = common::Workspace::new();
    let policy = ws.path("policy.yml");
    let write_policy = |interval: &str| {
        let yaml = format!(
            r#"inputs:
  - id: tc
    type: ti_threatconnect
    streams:
      - id: tc-indicator
        data_stream: {{ dataset: ti_threatconnect.indicator }}
        url: {url}
        access_id: test-access-id
        secret_key: ${{TEST_TC_SECRET}}
        interval: {interval}
"#,
            url = sim.base_url(),
        );
        std::fs::write(&policy, yaml).expect("policy");
    };
    write_policy("1h");
    let events = ws.path("events.ndjson");
    let diag = ws.path("diag");
    let mut host = Command::new(common::bin())
        .args(["host", "--policy"])
        .arg(&policy)
        .arg("--events")
        .arg(&events)
        .arg("--data-dir")
        .arg(ws.state_dir())
        .arg("--diagnostics")
        .arg(&diag)
        .args(["--restart-delay", "1s"])
        .env("TEST_TC_SECRET", "Test$$Secret/Key+=")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("host");
    let mut lines = common::Lines::of(host.stdout.take().expect("stdout"));
    lines.wait_all(&[
        "unit ti-sidecar-default OUTPUT HEALTHY",
        "unit ti-sidecar-default-tc INPUT HEALTHY",
        "events received: 150",
        "diagnostics saved:",
    ]);

    let docs: Vec<Value> = std::fs::read_to_string(&events)
        .expect("events file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let ids: BTreeSet<&str> = docs
        .iter()
        .filter_map(|d| d["@metadata"]["_id"].as_str())
        .collect();
    assert_eq!(ids.len(), 150, "every indicator arrives with its _id");
    assert!(
        docs.iter()
            .all(|d| d["data_stream"]["dataset"] == "ti_threatconnect.indicator")
    );
    assert!(
        std::fs::read_dir(&diag).expect("diagnostics dir").count() > 0,
        "diagnostics files saved"
    );

    // The component dies: the host restarts it (after --restart-delay), which resumes from its
    // committed cursor: no indicator is missing afterwards.
    let pid = lines
        .seen
        .iter()
        .find_map(|l| l.strip_prefix("component started: pid "))
        .expect("pid line")
        .to_owned();
    let _ = Command::new("kill").args(["-KILL", &pid]).status();
    lines.wait(&format!("component pid {pid} exited unexpectedly"));
    lines.wait("component started: pid");
    lines.wait("unit ti-sidecar-default-tc INPUT HEALTHY");

    // Editing the policy pushes it; the unit takes the new configuration.
    write_policy("2h");
    lines.wait("policy changed: pushing it");
    lines.wait("unit ti-sidecar-default-tc INPUT HEALTHY");

    let _ = Command::new("kill")
        .args(["-TERM", &host.id().to_string()])
        .status();
    lines.wait("stopped");
    let status = host.wait().expect("host exits");
    assert!(status.success(), "{status}");
}
