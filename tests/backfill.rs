//! Parallel time-window backfill, end to end: the real `ti-sidecar run` binary against the
//! in-process ThreatConnect simulator, with latency, data that changes during the sweep, 429
//! bursts and kill -9.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::Value;

use ti_sidecar::sim::threatconnect::{SimHandle, start};

const SECRET: &str = "Test$$Secret/Key+=";

fn messages(stderr: &str) -> Vec<String> {
    json_lines(stderr)
        .iter()
        .filter_map(|l| l["message"].as_str().map(str::to_owned))
        .collect()
}

/// The windows the run planned (from its `backfill planned` line), 0 when it planned none.
fn planned_windows(stderr: &str) -> u64 {
    json_lines(stderr)
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("backfill planned"))
        })
        .and_then(|l| l["windows"].as_u64())
        .unwrap_or(0)
}

/// A stream against `sim` with `backfill_concurrency: k` and pages of `batch`.
fn stream(sim: &SimHandle, k: u32, batch: u32) -> Stream {
    Stream::tc(
        sim,
        &format!("        batch_size: {batch}\n        backfill_concurrency: {k}\n"),
    )
}

/// One successful `run --once` of [`stream`]; the stream and the run's stderr.
async fn run_with(sim: &SimHandle, k: u32, batch: u32) -> (Stream, String) {
    let run = stream(sim, k, batch);
    let stderr = run
        .run_once_ok(SECRET, &format!("run with {k} windows failed"))
        .await;
    (run, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_indicator_arrives_with_1_4_and_16_windows() {
    let mut args = sim_args(3000);
    args.faults.latency_ms = 5;
    let sim = start(args).await.unwrap();
    for k in [1, 4, 16] {
        let (run, stderr) = run_with(&sim, k, 100).await;
        assert_eq!(
            delivered_ids(&run.events),
            sim_ids(&sim),
            "{k} windows: every indicator"
        );
        let planned = planned_windows(&stderr);
        if k == 1 {
            assert_eq!(planned, 0, "one window is today's single cursor");
        } else {
            assert!(
                planned >= 2 && planned <= u64::from(k),
                "{k}: planned {planned}"
            );
            assert!(
                messages(&stderr)
                    .iter()
                    .any(|m| m.starts_with("backfill done")),
                "{k}: the windows hand over to the single cursor"
            );
        }
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_during_a_4_window_backfill_skip_nothing() {
    let mut args = sim_args(2400);
    args.faults.mutate_per_page = 7;
    args.faults.latency_ms = 5;
    let sim = start(args).await.unwrap();
    let run = stream(&sim, 4, 100);
    let first = run.run_once_ok(SECRET, "first run failed").await;
    assert!(planned_windows(&first) >= 2, "{first}");
    assert!(
        sim.stats().mutations > 0,
        "indicators changed during the backfill"
    );
    // Changes after the last page belong to the next sweep: stop changing, then catch up.
    sim.set_mutate_per_page(0);
    let stderr = run.run_once_ok(SECRET, "catch-up run failed").await;
    let missing = never_delivered(&sim, &run.events);
    assert!(
        missing.is_empty(),
        "final versions never delivered: {missing:?}\n{first}\n{stderr}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dense_second_at_a_window_edge_is_delivered_whole() {
    // 900 of 1200 indicators share one second: every quantile falls inside it, so the edges
    // collapse onto it and the second lies in exactly one window.
    let mut args = sim_args(1200);
    args.same_second = 900;
    let sim = start(args).await.unwrap();
    let (run, stderr) = run_with(&sim, 4, 100).await;
    let delivered = delivered_versions(&read_events(&run.events));
    assert_eq!(delivered.len(), 1200, "every indicator: {stderr}");
    let repeated: usize = delivered.values().map(|n| n - 1).sum();
    assert!(
        repeated <= 100,
        "duplicates stay within one page: {repeated}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_bursts_halve_concurrency_which_then_recovers() {
    let mut args = sim_args(3000);
    args.faults.latency_ms = 20;
    args.faults.rate_limit = Some(15);
    let sim = start(args).await.unwrap();
    let (run, stderr) = run_with(&sim, 8, 50).await;
    assert_eq!(delivered_ids(&run.events), sim_ids(&sim), "every indicator");
    assert!(sim.stats().rate_limited > 0, "the simulator answered 429");
    let levels: Vec<u64> = json_lines(&stderr)
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("backfill concurrency"))
        })
        .filter_map(|l| l["concurrency"].as_u64())
        .collect();
    let lowest = levels
        .iter()
        .position(|l| *l == *levels.iter().min().unwrap_or(&8));
    assert!(
        lowest.is_some_and(|i| levels[..i].iter().all(|l| *l < 8)),
        "concurrency went down from 8: {levels:?}"
    );
    let low = lowest.unwrap();
    assert!(
        levels[low..].iter().any(|l| *l > levels[low]),
        "and grew back afterwards: {levels:?}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_4_window_backfill_then_resume() {
    let mut args = sim_args(3000);
    args.faults.latency_ms = 40;
    let sim = start(args).await.unwrap();
    let run = stream(&sim, 4, 50);
    let (c, s) = (run.config.clone(), run.state.clone());
    // A few window pages committed, then SIGKILL: no chance to clean up.
    blocking(move || {
        let mut child = spawn_run(&c, &s, SECRET, true);
        wait_for_logs(&mut child, "page delivered", 4);
        child.kill().unwrap();
        child.wait().unwrap();
    })
    .await;
    let partial = read_complete_events(&run.events).len();
    assert!(
        partial > 0 && partial < 3000,
        "killed mid-backfill after {partial}"
    );
    let stored = {
        let store = ti_sidecar::state::StateStore::open(&run.state).unwrap();
        store
            .load::<Value>("tc/tc-indicator")
            .unwrap()
            .expect("a committed cursor")
    };
    assert!(
        stored["backfill"]["windows"]
            .as_array()
            .is_some_and(|w| w.len() >= 2),
        "the windows were committed: {stored}"
    );

    let stderr = run.run_once_ok(SECRET, "resume failed").await;
    assert_eq!(
        planned_windows(&stderr),
        0,
        "the committed windows resume, no new plan"
    );
    assert_eq!(
        delivered_ids(&run.events),
        sim_ids(&sim),
        "both runs cover everything"
    );
    let docs = read_events(&run.events).len();
    assert!(
        docs <= 3000 + 4 * 50,
        "duplicates bounded by the pages in flight: {docs}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_single_cursor_state_is_continued_without_reset_or_gap() {
    let sim = start(sim_args(2000)).await.unwrap();
    let time = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap();
    let mut versions: Vec<(i64, String)> = sim.snapshot();
    versions.sort_by_key(|v| time(&v.1));
    // The state format before windows: a bare keyset cursor, half-way through the data.
    let (_, middle) = versions[versions.len() / 2].clone();
    let run = stream(&sim, 4, 100);
    {
        let store = ti_sidecar::state::StateStore::open(&run.state).unwrap();
        let old = serde_json::json!({"watermark": middle, "seen": []});
        store.commit("tc/tc-indicator", &old).unwrap();
    }
    run.run_once_ok(SECRET, "run failed").await;
    let delivered = delivered_ids(&run.events);
    let wanted: BTreeSet<i64> = versions
        .iter()
        .filter(|(_, lm)| time(lm) >= time(&middle))
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(
        delivered, wanted,
        "from the stored watermark on: no reset, no gap"
    );
    sim.shutdown().await;
}
