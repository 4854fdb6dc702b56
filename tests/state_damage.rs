//! A damaged `state.redb` against the real `ti-sidecar run --once` binary and the ThreatConnect
//! simulator. Regression: redb panicked on a corrupt file, and `run --once` exited 0 with a
//! zero summary (or 101 with a backtrace); a 0-byte file silently reset every cursor.
//!
//! Every damage (truncation, flipped bytes) must end either in a clear error naming the file
//! (exit 1) or in a recovery that really delivered; never a panic, never "success, nothing done".

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use ti_sidecar::sim::threatconnect::start;
use ti_sidecar::source::threatconnect::sweep::SweepCursor;
use ti_sidecar::state::{FILE_NAME, StateStore};

const SECRET: &str = "Test$$Secret/Key+=";

/// A store holding a ThreatConnect cursor a week back (the simulator's data is younger, so an
/// intact cursor delivers everything) and other streams' cursors, committed many times.
fn pristine_store(dir: &Path) -> Vec<u8> {
    let store = StateStore::open(dir).unwrap();
    let week_ago = chrono::Utc::now() - chrono::TimeDelta::days(7);
    for i in 0..40 {
        let cursor = SweepCursor::starting_at(week_ago + chrono::TimeDelta::seconds(i));
        store.commit("tc/tc-indicator", &cursor).unwrap();
        store
            .commit(
                &format!("tq/stream-{i}"),
                &format!("AoJ9z5LKnvwCJjEwNjk2Nw-{i}"),
            )
            .unwrap();
    }
    drop(store);
    std::fs::read(dir.join(FILE_NAME)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_state_file_is_a_clear_error_or_a_real_recovery_never_a_crash() {
    let sim = start(sim_args(40)).await.unwrap();
    let Stream {
        ws, events, config, ..
    } = Stream::tc(&sim, "        batch_size: 100\n");
    let pristine = pristine_store(&ws.path("pristine"));
    let len = pristine.len();
    assert!(len > 8192, "a store of several pages: {len}");

    let mut cases: Vec<(String, Vec<u8>)> = [0, 1, 512, 4096, len / 2, len - 1]
        .into_iter()
        .map(|n| (format!("truncated to {n} bytes"), pristine[..n].to_vec()))
        .collect();
    for k in 0..12 {
        let offset = 3 + k * (len / 12);
        let mut bytes = pristine.clone();
        bytes[offset] ^= 0xff;
        cases.push((format!("byte {offset} flipped"), bytes));
    }

    let mut errors = 0;
    let mut recoveries = 0;
    for (i, (case, bytes)) in cases.into_iter().enumerate() {
        let state = ws.path(&format!("state-{i}"));
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(state.join(FILE_NAME), &bytes).unwrap();
        let _ = std::fs::remove_file(&events);
        let (c, s) = (config.clone(), state.clone());
        let out = blocking(move || {
            Command::new(bin())
                .args(["run", "--once", "--config"])
                .arg(&c)
                .arg("--state-dir")
                .arg(&s)
                .env("TEST_TC_SECRET", SECRET)
                .env_remove("RUST_LOG")
                .env_remove("RUST_BACKTRACE")
                .output()
                .unwrap()
        })
        .await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
            "{case}: a panic reached stderr:\n{stderr}"
        );
        let delivered = read_events(&events).len();
        match out.status.code() {
            Some(0) => {
                assert!(
                    delivered > 0,
                    "{case}: exit 0 but nothing delivered:\n{stderr}"
                );
                recoveries += 1;
            }
            Some(1) => {
                let file = state.join(FILE_NAME).display().to_string();
                assert!(
                    stderr.contains(&file),
                    "{case}: the error names {file}:\n{stderr}"
                );
                assert!(
                    stderr.contains(".damaged"),
                    "{case}: the error says how to recover:\n{stderr}"
                );
                errors += 1;
            }
            other => panic!("{case}: exit {other:?}:\n{stderr}"),
        }
    }
    eprintln!("{errors} errors, {recoveries} recoveries");
    assert!(errors >= 6, "every truncation is refused ({errors} errors)");
    assert!(
        recoveries + errors == 18,
        "{recoveries} recoveries, {errors} errors"
    );
    sim.shutdown().await;
}

/// A 0-byte `state.redb` is not a database: it is refused, and left as it is, instead of
/// silently starting every stream again from its look-back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_state_file_is_refused_instead_of_resetting_every_cursor() {
    let sim = start(sim_args(10)).await.unwrap();
    let run = Stream::tc(&sim, "");
    std::fs::create_dir_all(&run.state).unwrap();
    std::fs::write(run.state.join(FILE_NAME), b"").unwrap();
    let (ok, stderr) = run.run_once(SECRET).await;
    assert!(!ok, "refused");
    assert!(stderr.contains("0 bytes"), "{stderr}");
    assert!(read_events(&run.events).is_empty(), "nothing re-delivered");
    assert_eq!(
        std::fs::metadata(run.state.join(FILE_NAME)).unwrap().len(),
        0
    );
    sim.shutdown().await;
}
