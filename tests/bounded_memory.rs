//! The real binary's memory stays bounded against a server that streams without end.
//!
//! Alone in its test binary: the peak is read with `getrusage(RUSAGE_CHILDREN)` (the largest
//! resident set of any child waited for), which another test's children would blur.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;

use nix::sys::resource::{UsageWho, getrusage};
use ti_sidecar::config::size::MIB;

/// The attack: a page streaming forever (2 GiB drove RSS past 3 GB). With `max_response_size:
/// 8MiB` the first page fails at the limit, the poll loop retries after its backoff, the
/// second answer is a normal empty page, and the process never holds more than the cap plus
/// 64 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_server_never_raises_rss_above_the_cap_plus_64_mib() {
    let (url, served) =
        common::endless_body_server(200, 1, r#"{"status":"Success","data":[]}"#).await;
    let ws = common::Workspace::new();
    let yaml = format!(
        r#"outputs:
  default: {{ type: ndjson, path: {events:?} }}
inputs:
  - id: tc
    type: ti_threatconnect
    streams:
      - id: tc-indicator
        url: {url}
        access_id: test-access-id
        secret_key: test-secret
        http_client_timeout: 20s
        max_response_size: 8MiB
"#,
        events = ws.path("events.ndjson").display().to_string(),
    );
    let config = ws.path("config.yml");
    std::fs::write(&config, yaml).unwrap();
    let state = ws.state_dir();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(common::bin())
            .args(["run", "--once", "--config"])
            .arg(&config)
            .arg("--state-dir")
            .arg(&state)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("response body exceeds max_response_size (8 MiB)"),
        "{stderr}"
    );
    assert_eq!(
        served.load(Ordering::SeqCst),
        2,
        "one oversized, one normal"
    );

    // ru_maxrss is in KiB on Linux: the child's VmHWM when it exited.
    let peak = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap().max_rss() as u64 * 1024;
    eprintln!(
        "peak RSS of `run --once`: {:.1} MiB",
        peak as f64 / MIB as f64
    );
    assert!(
        peak <= 8 * MIB + 64 * MIB,
        "peak RSS {peak} bytes is above the 8 MiB cap plus 64 MiB"
    );
}
