//! End-to-end: the real `ti-sidecar run` binary against the in-process ThreatConnect simulator.
//!
//! Tests of the single cursor's pipeline (kill, SIGTERM, prefetch) set `backfill_concurrency: 1`;
//! the parallel windows have their own tests in `tests/backfill.rs`.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::Value;

use ti_sidecar::sim::threatconnect::{SimHandle, start};

const SECRET: &str = "Test$$Secret/Key+=";

/// The stream line that turns the request tracer on.
const TRACER: &str = "        enable_request_tracer: true\n";

/// The stream lines of a single cursor (no parallel windows) paging by 50, and by 100.
const SINGLE_CURSOR_BY_50: &str = "        batch_size: 50\n        backfill_concurrency: 1\n";
const SINGLE_CURSOR_BY_100: &str = "        batch_size: 100\n        backfill_concurrency: 1\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_every_indicator_with_exact_large_ids() {
    let sim = start(sim_args(1500)).await.unwrap();
    let run = Stream::tc(&sim, "        batch_size: 200\n");
    let stderr = run.run_once_ok(SECRET, "run failed").await;

    let docs = read_events(&run.events);
    let expected = sim_ids(&sim);
    assert_eq!(
        delivered_ids(&run.events),
        expected,
        "every indicator exactly once"
    );
    assert_eq!(docs.len(), 1500, "no duplicates without changes");
    // Ids above 2^53 stay exact all the way: in the raw text and in the mapped id.
    let big = *expected.iter().next().unwrap();
    assert!(big > 1 << 53);
    let doc = docs.iter().find(|d| original_key(d).0 == big).unwrap();
    assert!(
        doc["event"]["original"]
            .as_str()
            .unwrap()
            .contains(&big.to_string())
    );
    assert_eq!(
        doc["threat_connect"]["indicator"]["id"],
        Value::from(big.to_string())
    );
    assert!(
        doc["@metadata"]["_id"]
            .as_str()
            .is_some_and(|id| id.len() == 28),
        "fingerprint _id"
    );
    assert_eq!(doc["data_stream"]["dataset"], "ti_threatconnect.indicator");
    // Progress: one JSON log line per page plus a final summary.
    let logs = json_lines(&stderr);
    assert!(
        logs.iter()
            .all(|l| l.get("@timestamp").is_some() && l.get("log.level").is_some())
    );
    let pages = logs
        .iter()
        .filter(|l| l["message"] == "page delivered")
        .count();
    assert!(pages >= 8, "expected a log line per page, got {pages}");
    let summary = logs
        .iter()
        .find(|l| l["message"] == "summary")
        .expect("summary line");
    assert_eq!(summary["indicators"], 1500);
    assert!(summary["rate_per_second"].as_f64().unwrap() > 0.0);
    sim.shutdown().await;
}

/// A successful first `run --once` against `sim`, paging by 100; returns the stream and the
/// run's stderr.
async fn first_run_by_100(sim: &SimHandle) -> (Stream, String) {
    let run = Stream::tc(sim, "        batch_size: 100\n");
    let stderr = run.run_once_ok(SECRET, "first run failed").await;
    (run, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_during_the_sweep_skip_nothing() {
    let mut args = sim_args(1200);
    args.faults.mutate_per_page = 7;
    let sim = start(args).await.unwrap();
    let (run, _) = first_run_by_100(&sim).await;
    assert!(
        sim.stats().mutations > 0,
        "the simulator changed indicators during the sweep"
    );
    // Changes after the last page belong to the next sweep: stop changing, then catch up.
    sim.set_mutate_per_page(0);
    run.run_once_ok(SECRET, "catch-up run failed").await;

    let missing = never_delivered(&sim, &run.events);
    assert!(
        missing.is_empty(),
        "final versions never delivered: {missing:?}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_holding_more_than_a_page_is_delivered_whole() {
    let mut args = sim_args(600);
    args.same_second = 350;
    let sim = start(args).await.unwrap();
    let (run, _) = first_run_by_100(&sim).await;
    let delivered = delivered_versions(&read_events(&run.events));
    assert_eq!(delivered.len(), 600, "every indicator");
    assert!(delivered.values().all(|n| *n == 1), "and none twice");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_server_errors_are_retried_without_loss() {
    let mut args = sim_args(800);
    args.faults.error_rate = 0.3;
    args.faults.rate_limit = Some(4);
    let sim = start(args).await.unwrap();
    let (run, _) = first_run_by_100(&sim).await;
    let stats = sim.stats();
    assert!(
        stats.errors_injected > 0 && stats.rate_limited > 0,
        "faults were injected: {stats:?}"
    );
    assert_eq!(delivered_ids(&run.events).len(), 800);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_then_restart_covers_everything() {
    let mut args = sim_args(2000);
    args.faults.latency_ms = 40;
    let sim = start(args).await.unwrap();
    let run = Stream::tc(&sim, SINGLE_CURSOR_BY_50);
    // Wait for real progress (a committed page), then SIGKILL: no chance to clean up.
    run.kill_after_log(SECRET, true, "page delivered").await;
    let partial = read_events(&run.events).len();
    assert!(
        partial > 0 && partial < 2000,
        "killed mid-run after {partial} documents"
    );

    run.run_once_ok(SECRET, "restart failed").await;
    assert_eq!(
        delivered_ids(&run.events),
        sim_ids(&sim),
        "the union of both runs covers everything"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_batch_commits_and_exits_0() {
    let mut args = sim_args(2000);
    args.faults.latency_ms = 40;
    let sim = start(args).await.unwrap();
    let run = Stream::tc(&sim, SINGLE_CURSOR_BY_50);
    let (c, s) = (run.config.clone(), run.state.clone());
    let status = blocking(move || {
        let mut child = spawn_run(&c, &s, SECRET, false);
        wait_for_log(&mut child, "page delivered");
        sigterm(&child);
        child.wait().unwrap()
    })
    .await;
    assert!(status.success(), "SIGTERM must exit 0, got {status:?}");
    let first = read_events(&run.events).len();
    assert!(first > 0 && first < 2000);
    // The committed cursor matches what was written: a restart delivers the rest, with at most
    // one page of overlap.
    run.run_once_ok(SECRET, "restart failed").await;
    let docs = read_events(&run.events);
    assert_eq!(delivered_ids(&run.events).len(), 2000);
    assert!(
        docs.len() <= 2000 + 50,
        "duplicates bounded by the batch in flight: {}",
        docs.len()
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_fails_clearly_and_secrets_never_leak() {
    let sim = start(sim_args(50)).await.unwrap();
    let run = Stream::tc(&sim, TRACER);
    let wrong = "Wrong-Secret-Value-123";
    let (ok, stderr) = run.run_once(wrong).await;
    assert!(!ok, "a rejected key must fail the run");
    assert!(
        stderr.contains("credentials rejected"),
        "clear message: {stderr}"
    );
    assert!(
        stderr.contains("Signature Data Did Not Match"),
        "the platform's reason: {stderr}"
    );
    assert!(!stderr.contains(wrong), "the secret must not be logged");

    // A good run with the tracer on: the trace exists, and holds no secret.
    let stderr = run.run_once_ok(SECRET, "traced run failed").await;
    assert!(!stderr.contains(SECRET) && !stderr.contains(wrong));
    let trace_dir = run.state.join("request-trace");
    let trace: String = std::fs::read_dir(&trace_dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(
        trace.contains("\"http.response.status_code\":200"),
        "trace has the exchanges"
    );
    assert!(trace.contains("\"authorization\":\"[REDACTED]\""));
    assert!(
        !trace.contains(SECRET) && !trace.contains(wrong),
        "no secret in the trace"
    );
    assert!(
        !trace.contains("TC test-access-id:"),
        "no signature in the trace"
    );
    sim.shutdown().await;
}

/// Regression: SIGTERM while the output keeps refusing a batch must not hang in the send retry
/// loop; the unacknowledged batch is dropped (its cursor not committed) and delivered after a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_the_output_refuses_exits_0_and_loses_nothing() {
    let sim = start(sim_args(300)).await.unwrap();
    let run = Stream::tc(&sim, "        batch_size: 100\n");
    // A port nobody listens on: every OTLP export is refused.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let text = std::fs::read_to_string(&run.config).unwrap().replace(
        &format!("    type: ndjson\n    path: {:?}\n", run.events.display().to_string()),
        &format!("    type: otlp\n    endpoint: \"{dead}\"\n    retry_on_failure:\n      max_elapsed_time: 1s\n"),
    );
    assert!(text.contains("type: otlp"), "{text}");
    let otlp_config = run.ws.path("otlp.yml");
    std::fs::write(&otlp_config, text).unwrap();
    let (c, s) = (otlp_config, run.state.clone());
    let status = blocking(move || {
        let mut child = spawn_run(&c, &s, SECRET, false);
        wait_for_log(&mut child, "send failed, will retry");
        sigterm(&child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(child.wait().unwrap()));
        rx.recv_timeout(std::time::Duration::from_secs(20))
            .expect("exited after SIGTERM instead of retrying the send forever")
    })
    .await;
    assert!(status.success(), "{status:?}");
    // Nothing was acknowledged, so nothing was committed: a restart delivers everything.
    run.run_once_ok(SECRET, "restart failed").await;
    assert_eq!(delivered_ids(&run.events).len(), 300);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verification_off_is_warned_at_start_and_by_validate() {
    let sim = start(sim_args(10)).await.unwrap();
    let run = Stream::tc(&sim, "        ssl:\n          verification_mode: none\n");
    let validated = std::process::Command::new(bin())
        .args(["validate", "--config"])
        .arg(&run.config)
        .env("TEST_TC_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(validated.status.success());
    let printed = String::from_utf8_lossy(&validated.stdout);
    assert!(
        printed.contains("warning: input tc stream tc-indicator: ssl.verification_mode is none"),
        "{printed}"
    );
    let stderr = run.run_once_ok(SECRET, "run failed").await;
    let warnings: Vec<Value> = json_lines(&stderr)
        .into_iter()
        .filter(|l| l["log.level"] == "warn")
        .collect();
    assert_eq!(warnings.len(), 1, "one WARN at start: {warnings:?}");
    assert!(
        warnings[0]["message"]
            .as_str()
            .unwrap()
            .contains("verification_mode is none"),
        "{warnings:?}"
    );
    assert_eq!(warnings[0]["stream.id"], "tc-indicator");
    assert_eq!(read_events(&run.events).len(), 10, "the stream still runs");
    sim.shutdown().await;
}

/// Regression: one indicator stamped `lastModified` 2999-01-01 moved the committed watermark
/// there, and every later sweep delivered nothing while reporting "caught up". It is now
/// delivered and counted, reported once, and later changes still arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn future_last_modified_does_not_move_the_watermark() {
    let sim = start(sim_args(300)).await.unwrap();
    let ids: Vec<i64> = sim.snapshot().into_iter().map(|(id, _)| id).collect();
    let far_future = "2999-01-01T00:00:00Z".parse().unwrap();
    assert!(sim.stamp(ids[0], far_future));
    let (run, stderr) = first_run_by_100(&sim).await;
    let delivered = delivered_versions(&read_events(&run.events));
    assert_eq!(
        delivered.len(),
        300,
        "the future-stamped indicator is delivered too"
    );
    assert!(delivered.contains_key(&(ids[0], "2999-01-01T00:00:00Z".to_owned())));
    let logs = json_lines(&stderr);
    let reports = logs
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("do not move the watermark"))
        })
        .count();
    assert_eq!(reports, 1, "reported once per stream, not per item or page");
    let summary = logs.iter().find(|l| l["message"] == "summary").unwrap();
    assert_eq!(summary["future_timestamps"], 1);

    // An analyst changes another indicator now: the next sweep must see it.
    let now = chrono::Utc::now();
    assert!(sim.stamp(ids[1], now));
    let stderr = run.run_once_ok(SECRET, "next sweep failed").await;
    let delivered = delivered_versions(&read_events(&run.events));
    let changed = (ids[1], now.format("%Y-%m-%dT%H:%M:%SZ").to_string());
    assert!(
        delivered.contains_key(&changed),
        "the change after the future-stamped one was delivered: {stderr}"
    );
    sim.shutdown().await;
}

/// Regression: a page's cursor was committed only once the next page's fetch had returned, so
/// a SIGKILL during a slow fetch replayed a page that was already written and acknowledged.
/// Now the commit follows the acknowledgement at once: kill -9 during the stalled prefetch, and
/// the restart re-delivers nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_a_stalled_prefetch_does_not_replay_the_acknowledged_page() {
    let mut args = sim_args(200);
    // Every request takes 1.5 s: after page 1 is acknowledged, page 2's fetch stalls.
    args.faults.latency_ms = 1500;
    let sim = start(args).await.unwrap();
    let run = Stream::tc(&sim, SINGLE_CURSOR_BY_100);
    // "page delivered" is logged once the page is committed; page 2 is still being fetched.
    run.kill_after_log(SECRET, true, "page delivered").await;
    // The commit of page 1 did not wait for page 2: when it was reported, page 2 was still
    // being served (the simulator counts a page once its latency has passed).
    assert_eq!(
        sim.stats().pages_served,
        1,
        "page 1 was committed only after page 2 arrived"
    );
    assert_eq!(
        read_events(&run.events).len(),
        100,
        "killed during page 2's fetch"
    );

    run.run_once_ok(SECRET, "restart failed").await;
    let versions = delivered_versions(&read_events(&run.events));
    let replayed = versions.values().filter(|n| **n > 1).count();
    assert_eq!(replayed, 0, "the acknowledged page was delivered again");
    assert_eq!(versions.len(), 200, "and nothing is missing");
    sim.shutdown().await;
}

/// Regression: state, events and their directories were created world-readable (0644/0755
/// under umask 022). Events can hold TLP:RED indicators; cursors reveal what was fetched.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_and_events_files_are_private_whatever_the_umask() {
    let sim = start(sim_args(30)).await.unwrap();
    let ws = Workspace::new();
    let events = ws.path("out/nested/events.ndjson");
    let config = ws.tc_config(&sim, SECRET, &events, "");
    let state = ws.state_dir();
    let s = state.clone();
    blocking(move || {
        let mut cmd = with_umask_022(bin());
        cmd.args(["run", "--once", "--config"])
            .arg(&config)
            .arg("--state-dir")
            .arg(&s)
            .env("TEST_TC_SECRET", SECRET);
        output_ok(cmd)
    })
    .await;
    assert_eq!(read_events(&events).len(), 30);
    assert_eq!(mode(&state), 0o700, "state directory");
    assert_eq!(mode(&state.join("state.redb")), 0o600, "state file");
    assert_eq!(mode(&events), 0o600, "events file");
    assert_eq!(mode(&ws.path("out")), 0o700, "created output directory");
    assert_eq!(mode(&ws.path("out/nested")), 0o700);
    sim.shutdown().await;
}

/// Regression: a stream id such as `x/../../escaped` was joined into the request-trace path
/// as it was, so a policy could make the sidecar write files outside its state directory. Ids
/// are encoded: the traces land inside `<state>/request-trace/`, and nothing else is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_ids_cannot_write_outside_the_state_directory() {
    let sim = start(sim_args(20)).await.unwrap();
    let root = tempfile::tempdir().unwrap();
    let ws = Workspace {
        dir: tempfile::tempdir_in(root.path()).unwrap(),
    };
    let events = ws.path("events.ndjson");
    let config = ws.tc_config(&sim, SECRET, &events, TRACER);
    let text = std::fs::read_to_string(&config).unwrap();
    let stream = text
        .split_once("    streams:\n")
        .map(|(_, s)| s.to_owned())
        .unwrap();
    let hostile = format!(
        "{}{}",
        stream.replace("- id: tc-indicator", "- id: \"x/../../escaped\""),
        stream.replace("- id: tc-indicator", "- id: \"../../../../escaped-too\"")
    );
    std::fs::write(&config, text.replace(&stream, &hostile)).unwrap();
    let state = ws.state_dir();
    let (c, s) = (config.clone(), state.clone());
    let (ok, stderr) = blocking(move || run_once(&c, &s, SECRET)).await;
    assert!(ok, "{stderr}");

    let mut traces: Vec<String> = std::fs::read_dir(state.join("request-trace"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    traces.sort();
    assert_eq!(
        traces,
        [
            "tc--%2E.%2F..%2F..%2F..%2Fescaped-too.ndjson",
            "tc--x%2F..%2F..%2Fescaped.ndjson"
        ]
    );
    let names = |dir: &std::path::Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(
        names(&state),
        ["request-trace", "state.redb"].map(String::from).into(),
        "nothing else in the state directory"
    );
    assert_eq!(
        names(ws.dir.path()),
        ["config.yml", "events.ndjson", "state"]
            .map(String::from)
            .into(),
        "nothing beside it"
    );
    assert_eq!(names(root.path()).len(), 1, "nothing above it");
    sim.shutdown().await;
}

/// Regression: a SIGKILL between two pieces of a batch's write left half a line at the end of
/// the events file, and the restarted process appended its first line to it
/// (`…"Credential Acc{"@metadata":…`). The file is left exactly as such a kill leaves it; the
/// restart cuts the fragment, every line parses, and nothing is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_a_kill_mid_line_cuts_the_fragment_instead_of_gluing_onto_it() {
    let sim = start(sim_args(300)).await.unwrap();
    let run = Stream::tc(&sim, SINGLE_CURSOR_BY_100);
    run.run_once_ok(SECRET, "first run failed").await;
    // The next batch's first piece reached the file, the rest did not (its cursor was never
    // committed, so the restart delivers that batch again).
    let changed = sim.snapshot()[0].0;
    assert!(sim.stamp(changed, chrono::Utc::now() - chrono::TimeDelta::seconds(60)));
    let mut fragment = std::fs::OpenOptions::new()
        .append(true)
        .open(&run.events)
        .unwrap();
    std::io::Write::write_all(
        &mut fragment,
        br#"{"@metadata":{"_id":"x","input_id":"tc"},"threat":{"indicator":{"description":"Credential Acc"#,
    )
    .unwrap();
    drop(fragment);

    let stderr = run.run_once_ok(SECRET, "restart failed").await;
    assert!(
        stderr.contains("ended in a partial line"),
        "the cut is logged: {stderr}"
    );
    let text = std::fs::read_to_string(&run.events).unwrap();
    assert!(text.ends_with('\n'));
    for (n, line) in text.lines().enumerate() {
        serde_json::from_str::<Value>(line)
            .unwrap_or_else(|e| panic!("line {} does not parse ({e}): {line}", n + 1));
    }
    let versions = delivered_versions(&read_events(&run.events));
    let ids: BTreeSet<i64> = versions.keys().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), 300, "nothing is missing");
    assert!(
        versions.keys().filter(|(id, _)| *id == changed).count() == 2,
        "the changed indicator's new version arrived after the cut"
    );
    sim.shutdown().await;
}

/// Regression: without `--once`, a stream that failed for good (rejected credentials) ended the
/// whole process. It now stays failed, said in the logs, while the process runs on until it is
/// stopped; the exit code then still says a stream failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_stream_does_not_end_the_process_without_once() {
    let sim = start(sim_args(10)).await.unwrap();
    let run = Stream::tc(&sim, "");
    let (config, state) = (run.config.clone(), run.state.clone());
    let status = blocking(move || {
        let mut child = spawn_run(&config, &state, "a-wrong-secret", false);
        let seen = wait_for_log(&mut child, "1 stream(s) failed for good");
        assert!(
            seen.iter().any(|l| l["message"]
                .as_str()
                .is_some_and(|m| m.contains("credentials rejected"))),
            "{seen:?}"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the process is still running"
        );
        sigterm(&child);
        child.wait().unwrap()
    })
    .await;
    assert_eq!(status.code(), Some(1), "a failed stream is still a failure");
    sim.shutdown().await;
}
