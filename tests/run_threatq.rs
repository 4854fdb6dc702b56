//! End-to-end: the real `ti-sidecar run` binary against the in-process ThreatQ simulator.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;
use ti_sidecar::sim::threatq::{SimArgs, SimHandle, start};

const SECRET: &str = "tq-Client$$Secret";

fn args(indicators: usize) -> SimArgs {
    SimArgs {
        indicators,
        client_secret: SECRET.to_owned(),
        collection: "sim-collection".to_owned(),
        ..SimArgs::default()
    }
}

fn tq_config(ws: &Workspace, sim: &SimHandle, events: &Path, extra: &str) -> PathBuf {
    ws.config_with_input(
        events,
        &format!(
            r#"  - id: tq
    type: ti_threatq
    streams:
      - id: tq-threat
        host: {host}
        client_id: ti-sidecar-sim
        client_secret: ${{TEST_TC_SECRET}}
        data_collection_id: sim-collection
        http_client_timeout: 10s
{extra}"#,
            host = sim.base_url(),
        ),
    )
}

/// A ThreatQ stream against `sim`, with `extra` stream lines.
fn tq_stream(sim: &SimHandle, extra: &str) -> Stream {
    Stream::new(|ws, events| tq_config(ws, sim, events, extra))
}

/// The ids of the ThreatQ objects delivered to `events`.
fn tq_ids(events: &Path) -> BTreeSet<i64> {
    read_events(events).iter().map(|d| tq_key(d).0).collect()
}

/// (id, updated_at) of a delivered document, from its raw `event.original`.
fn tq_key(doc: &Value) -> (i64, String) {
    let raw = doc["event"]["original"].as_str().expect("event.original");
    let v: Value = serde_json::from_str(raw).expect("event.original is JSON");
    (
        v["id"].as_i64().expect("id"),
        v["updated_at"].as_str().unwrap_or_default().to_owned(),
    )
}

/// A first successful `run --once` over `sim` paging by 100; returns the stream.
async fn first_run_paged_by_100(sim: &SimHandle) -> Stream {
    let run = tq_stream(sim, "        page_size: 100\n");
    run.run_once_ok(SECRET, "run failed").await;
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_every_indicator_and_resumes_from_the_cursor_mark() {
    let sim = start(args(700)).await.unwrap();
    let run = first_run_paged_by_100(&sim).await;
    let docs = read_events(&run.events);
    let expected: BTreeSet<i64> = sim.snapshot().into_iter().map(|(id, _)| id).collect();
    assert_eq!(tq_ids(&run.events), expected);
    assert_eq!(docs.len(), 700, "each exactly once");
    assert!(
        docs.iter().all(|d| d["threatq"].is_object()),
        "mapped under threatq"
    );

    // A second run resumes from the persisted mark: nothing new, nothing repeated.
    run.run_once_ok(SECRET, "second run failed").await;
    assert_eq!(read_events(&run.events).len(), 700);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiring_mid_run_is_renewed_without_loss() {
    let mut a = args(900);
    a.token_ttl = 1;
    a.faults.latency_ms = 150;
    let sim = start(a).await.unwrap();
    let run = first_run_paged_by_100(&sim).await;
    let stats = sim.stats();
    assert!(
        stats.tokens_issued >= 2,
        "the token was renewed during the run: {stats:?}"
    );
    assert_eq!(tq_ids(&run.events).len(), 900);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_client_secret_fails_clearly_without_printing_it() {
    let sim = start(args(10)).await.unwrap();
    let run = tq_stream(&sim, "        enable_request_tracer: true\n");
    let wrong = "Not-The-Right-Secret-42";
    let (ok, stderr) = run.run_once(wrong).await;
    assert!(!ok);
    assert!(
        stderr.contains("refused the client credentials"),
        "{stderr}"
    );
    assert!(stderr.contains("invalid_client"), "{stderr}");
    assert!(!stderr.contains(wrong) && !stderr.contains(SECRET));
    let trace: String = std::fs::read_dir(run.state.join("request-trace"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(trace.contains("/api/token"), "the token exchange is traced");
    assert!(
        !trace.contains(wrong) && !trace.contains(SECRET),
        "no secret in the trace"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_collection_fails_with_404() {
    let sim = start(args(10)).await.unwrap();
    let run = tq_stream(&sim, "");
    let text = std::fs::read_to_string(&run.config).unwrap().replace(
        "data_collection_id: sim-collection",
        "data_collection_id: no-such-collection",
    );
    std::fs::write(&run.config, text).unwrap();
    let (ok, stderr) = run.run_once(SECRET).await;
    assert!(!ok);
    assert!(stderr.contains("404"), "{stderr}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_server_errors_are_retried_without_loss() {
    let mut a = args(500);
    a.faults.error_rate = 0.3;
    a.faults.rate_limit = Some(4);
    let sim = start(a).await.unwrap();
    let run = first_run_paged_by_100(&sim).await;
    let stats = sim.stats();
    assert!(
        stats.errors_injected > 0 && stats.rate_limited > 0,
        "{stats:?}"
    );
    assert_eq!(tq_ids(&run.events).len(), 500);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_then_restart_resumes_from_the_persisted_mark_with_no_gap() {
    let mut a = args(1500);
    a.faults.latency_ms = 40;
    let sim = start(a).await.unwrap();
    let run = tq_stream(&sim, "        page_size: 50\n");
    run.kill_after_log(SECRET, true, "page delivered").await;
    let partial = read_events(&run.events).len();
    assert!(
        partial > 0 && partial < 1500,
        "killed mid-run after {partial}"
    );
    run.run_once_ok(SECRET, "restart failed").await;
    let docs = read_events(&run.events);
    assert_eq!(tq_ids(&run.events).len(), 1500, "no gap");
    assert!(
        docs.len() <= 1500 + 50,
        "resumed from the mark, not from the start: {}",
        docs.len()
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_during_the_sweep_reach_every_final_version() {
    let mut a = args(600);
    a.faults.mutate_per_page = 5;
    let sim = start(a).await.unwrap();
    let run = tq_stream(&sim, "        page_size: 50\n");
    let (config, state) = (run.config.clone(), run.state.clone());
    // Indicators change while the sweep runs; the churn then stops and the sweep catches up.
    // (Under endless churn a cursorMark sweep never ends: every page re-surfaces changes.)
    let mut child = blocking(move || {
        let mut child = spawn_run(&config, &state, SECRET, true);
        wait_for_log(&mut child, "page delivered");
        child
    })
    .await;
    let mutated = sim.stats().mutations;
    sim.set_mutate_per_page(0);
    let status = blocking(move || child.wait().unwrap()).await;
    assert!(status.success());
    assert!(mutated > 0, "indicators changed during the sweep");
    let delivered: BTreeSet<(i64, String)> = read_events(&run.events).iter().map(tq_key).collect();
    let missing: Vec<_> = sim
        .snapshot()
        .into_iter()
        .filter(|k| !delivered.contains(k))
        .collect();
    assert!(
        missing.is_empty(),
        "final versions never delivered: {missing:?}"
    );
    sim.shutdown().await;
}

/// `state reset` deletes the stream's cursorMark: the next run starts again from the start of
/// the collection (a user's way out of a cursor the platform no longer accepts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_reset_makes_the_stream_start_again_from_the_beginning() {
    let sim = start(args(150)).await.unwrap();
    let run = first_run_paged_by_100(&sim).await;
    assert_eq!(read_events(&run.events).len(), 150);

    let s = run.state.clone();
    let out = blocking(move || {
        let mut cmd = std::process::Command::new(bin());
        cmd.args(["state", "reset", "--stream", "tq-threat", "--state-dir"])
            .arg(&s);
        output_ok(cmd)
    })
    .await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("reset tq/tq-threat"));

    run.run_once_ok(SECRET, "run after the reset failed").await;
    assert_eq!(
        read_events(&run.events).len(),
        300,
        "everything again, from the start"
    );
    sim.shutdown().await;
}
