//! The command-line contract (DESIGN §2): `validate`, `map`, `simulate` and `demo` as a user
//! runs them.

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};

use common::bin;
use serde_json::Value;

/// `ti-sidecar validate` of a config file holding `yaml`, with `SECRET_FOR_TEST` set.
fn validate(yaml: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yml");
    std::fs::write(&path, yaml).unwrap();
    Command::new(bin())
        .args(["validate", "--config"])
        .arg(&path)
        .env("SECRET_FOR_TEST", "x")
        .output()
        .unwrap()
}

#[test]
fn validate_reports_every_problem_with_its_field_and_exits_2() {
    let out = validate(
        r#"inputs:
  - id: tc
    type: ti_threatconnect
    streams:
      - id: s1
        access_id: "1"
        secret_key: "do-not-print-me"
        batch_size: 20000
        interval: 2M
        bogus: 1
"#,
    );
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for field in [
        "inputs[0].streams[0].batch_size",
        "inputs[0].streams[0].interval",
        "inputs[0].streams[0].bogus",
    ] {
        assert!(stdout.contains(field), "{field} missing from:\n{stdout}");
    }
    assert!(
        stdout.contains("20000") && stdout.contains("2M"),
        "values are named:\n{stdout}"
    );
    assert!(
        !stdout.contains("do-not-print-me")
            && !String::from_utf8_lossy(&out.stderr).contains("do-not-print-me")
    );
}

#[test]
fn validate_accepts_a_good_file() {
    let out = validate(
        "inputs:\n  - id: tc\n    type: ti_threatconnect\n    streams:\n      - id: s1\n        access_id: \"1\"\n        secret_key: ${SECRET_FOR_TEST}\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `ti-sidecar map` with `args`, fed `input` from a thread (so a large input never blocks on a
/// full pipe); asserts it succeeded and returns the documents it printed.
fn map(args: &[&str], input: Vec<u8>) -> Vec<Value> {
    let mut child = Command::new(bin())
        .arg("map")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let writer = {
        let mut stdin = child.stdin.take().unwrap();
        std::thread::spawn(move || stdin.write_all(&input).unwrap())
    };
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `map --source <platform> <args>` over each `(log, expected)` of Elastic's fixtures for
/// `platform` reproduces the expected documents (compared structurally).
fn assert_map_reproduces_fixtures(platform: &str, args: &[&str], fixtures: [(&str, &str); 2]) {
    let Some(fx) = common::fixture_dir("") else {
        return;
    };
    let args: Vec<&str> = ["--source", platform].iter().chain(args).copied().collect();
    for (log, expected) in fixtures {
        let input = std::fs::read(fx.join(platform).join(log)).unwrap();
        let got = map(&args, input);
        let want: Value =
            serde_json::from_slice(&std::fs::read(fx.join(platform).join(expected)).unwrap())
                .unwrap();
        assert_eq!(Value::Array(got), want["expected"], "{log}");
    }
}

/// `map` on Elastic's own fixtures reproduces the expected documents.
#[test]
fn map_reproduces_elastic_fixtures_through_the_binary() {
    assert_map_reproduces_fixtures(
        "threatconnect",
        &["--preserve-original"],
        [
            (
                "test-indicator.log",
                "test-indicator.log-expected.2x-derived.json",
            ),
            (
                "test-with-associated-groups-and-attributes.log",
                "test-with-associated-groups-and-attributes.log-expected.json",
            ),
        ],
    );
}

/// `map --ioc-expiration-duration` and a configured stream follow one rule: what the ingest
/// pipeline accepts (`30s` and `1d12h` used to pass here while the stream refused them).
#[test]
fn map_takes_the_expiration_forms_a_stream_takes() {
    for refused in ["30s", "1d12h"] {
        let out = Command::new(bin())
            .args([
                "map",
                "--source",
                "threatconnect",
                "--ioc-expiration-duration",
                refused,
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{refused} refused");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("as the ingest pipeline requires"),
            "{refused}: {stderr}"
        );
    }
    let out = Command::new(bin())
        .args([
            "map",
            "--source",
            "threatconnect",
            "--ioc-expiration-duration",
            "12h",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn map_turns_a_non_json_line_into_an_error_document_and_keeps_going() {
    let docs = map(
        &["--source", "threatconnect"],
        b"not json\n{\"id\":1,\"type\":\"Host\",\"hostName\":\"a.example\",\"summary\":\"a.example\",\"lastModified\":\"2024-01-01T00:00:00Z\"}\n".to_vec(),
    );
    assert_eq!(docs.len(), 2);
    assert!(docs[0]["error"]["message"].is_array() || docs[0]["error"]["message"].is_string());
    assert_eq!(docs[0]["event"]["original"], "not json");
    assert_eq!(
        docs[1]["threat_connect"]["indicator"]["host_name"],
        "a.example"
    );
    assert!(docs[1].get("error").is_none());
}

#[test]
fn map_gives_an_invalid_utf8_line_an_error_document_and_keeps_going() {
    let mut input = b"{\"id\":1,\"value\":\"bad\xff.example\"}\n".to_vec();
    input.extend_from_slice(b"{\"id\":2,\"value\":\"ok.example\"}\n");
    let docs = map(&["--source", "threatq"], input);
    assert_eq!(docs.len(), 2, "the run goes on past the bad line");
    let errors = docs[0]["error"]["message"].to_string();
    assert!(errors.contains("line 1 is not valid UTF-8"), "{errors}");
    assert!(
        docs[0].to_string().contains("bad\u{fffd}.example"),
        "{}",
        docs[0]
    );
    assert!(docs[1].get("error").is_none(), "{}", docs[1]);
}

/// `map` maps blocks of lines on every core: the output must still be in input order, one
/// document per line, with blank lines skipped and line numbers counted across blocks.
#[test]
fn map_keeps_input_order_across_blocks_and_cores() {
    let mut input = Vec::new();
    for id in 1..=10_000u64 {
        input
            .extend_from_slice(format!("{{\"id\":{id},\"value\":\"h{id}.example\"}}\n").as_bytes());
        if id % 3000 == 0 {
            input.extend_from_slice(b"\n");
        }
    }
    // Line 10004 (after three blank lines) is not UTF-8.
    input.extend_from_slice(b"{\"id\":10001,\"value\":\"\xff\"}\n");
    let docs = map(&["--source", "threatq"], input);
    assert_eq!(docs.len(), 10_001);
    for (i, doc) in docs.iter().take(10_000).enumerate() {
        assert_eq!(
            doc["threatq"]["id"].as_i64(),
            Some(i as i64 + 1),
            "document {i} is out of order: {doc}"
        );
    }
    let last = docs[10_000]["error"]["message"].to_string();
    assert!(last.contains("line 10004 is not valid UTF-8"), "{last}");
}

/// `ti-sidecar simulate <platform>` of `indicators` on a free loopback port; the running
/// simulator and the first line it printed.
fn simulate(platform: &str, indicators: &str) -> (std::process::Child, String) {
    let mut child = Command::new(bin())
        .args(["simulate", platform, "--listen", "127.0.0.1:0"])
        .args(["--indicators", indicators])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    (child, first)
}

#[test]
fn simulate_prints_its_address_first_and_enforces_auth() {
    let (mut child, first) = simulate("threatconnect", "10");
    let addr: std::net::SocketAddr = first
        .trim()
        .parse()
        .expect("first stdout line is the bound address");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(async {
        reqwest::get(format!("http://{addr}/api/v3/indicators"))
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status.as_u16(), 401, "unsigned requests are refused");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn demo_writes_the_events_file_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::with_umask_022(bin())
        .args(["demo", "--indicators", "300"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("delivered: 600 documents"), "{stdout}");
    let events = std::fs::read_to_string(dir.path().join("demo-events.ndjson")).unwrap();
    assert_eq!(events.lines().count(), 600);
    #[cfg(unix)]
    assert_eq!(
        common::mode(&dir.path().join("demo-events.ndjson")),
        0o600,
        "the demo's events are private whatever the umask"
    );
}

/// `--log-file`: every log line (ours, the host's narration, the component's) goes to the file,
/// private; stderr keeps only warnings and errors, and the summary ends with what to try next.
#[test]
fn demo_with_a_log_file_keeps_the_terminal_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("logs/demo.log");
    let out = common::with_umask_022(bin())
        .args(["demo", "--indicators", "200", "--log-file"])
        .arg(&log)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for line in stderr.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        assert!(
            matches!(v["log.level"].as_str(), Some("warn" | "error")),
            "only warnings reach stderr: {line}"
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("delivered: 400 documents"), "{stdout}");
    assert!(
        !stdout.contains("component started"),
        "narration goes to the log: {stdout}"
    );
    assert!(
        stdout.contains("head -1 demo-events.ndjson | jq ."),
        "{stdout}"
    );
    assert!(stdout.contains(&log.display().to_string()), "{stdout}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("component started"), "the host's narration");
    let component_lines = logged
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "page delivered")
        .count();
    assert!(component_lines >= 2, "the component's JSON logs: {logged}");
    #[cfg(unix)]
    assert_eq!(common::mode(&log), 0o600);
}

/// `map --source threatq` on Elastic's fixtures reproduces the current expected documents.
#[test]
fn map_threatq_reproduces_elastic_fixtures_through_the_binary() {
    assert_map_reproduces_fixtures(
        "threatq",
        &[
            "--preserve-original",
            "--tag",
            "preserve_duplicate_custom_fields",
        ],
        [
            (
                "test-threatq-sample-ndjson.log",
                "test-threatq-sample-ndjson.log-expected.current-derived.json",
            ),
            (
                "test-threatq-no-preserve-ndjson.log",
                "test-threatq-no-preserve-ndjson.log-expected.current-derived.json",
            ),
        ],
    );
}

/// Regression guard: signal handlers used to be installed by a spawned task, or only after the
/// address was announced, so a SIGTERM arriving early took the default action and killed the
/// process (seen as a rare `agent` SIGTERM test failure under load). Handlers are now in place
/// before anything is announced: a SIGTERM sent the moment the address appears ends it cleanly.
#[test]
fn sigterm_right_after_start_is_a_clean_exit() {
    let (mut child, first) = simulate("threatq", "5");
    assert!(
        first.trim().parse::<std::net::SocketAddr>().is_ok(),
        "{first:?}"
    );
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "killed by the signal instead of stopping: {status:?}"
    );
}

/// `state show` prints every cursor as JSON (key → cursor), `--stream` narrows it by key or by
/// bare stream id, `state reset` deletes one cursor and says so, and an unknown stream exits 2
/// naming the known keys.
#[test]
fn state_show_prints_cursors_and_reset_deletes_one() {
    use ti_sidecar::source::threatconnect::sweep::SweepCursor;
    use ti_sidecar::state::StateStore;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let tc = SweepCursor::starting_at("2024-05-01T10:00:00Z".parse().unwrap());
    {
        let store = StateStore::open(&state).unwrap();
        store.commit("tc/tc-indicator", &tc).unwrap();
        store
            .commit("tq/tq-threat", &"AoJ9z5LKnvwCJjEwNjk2Nw==")
            .unwrap();
    }
    let cli = |args: &[&str]| {
        let out = Command::new(bin())
            .arg("state")
            .args(args)
            .arg("--state-dir")
            .arg(&state)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let (code, stdout, stderr) = cli(&["show"]);
    assert_eq!(code, Some(0), "{stderr}");
    let shown: Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    assert_eq!(
        shown["tc/tc-indicator"]["watermark"],
        "2024-05-01T10:00:00Z"
    );
    assert_eq!(shown["tq/tq-threat"], "AoJ9z5LKnvwCJjEwNjk2Nw==");

    let (code, stdout, _) = cli(&["show", "--stream", "tc-indicator"]);
    assert_eq!(code, Some(0));
    let one: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(one.as_object().unwrap().len(), 1);
    assert!(one.get("tc/tc-indicator").is_some());

    let (code, stdout, stderr) = cli(&["reset", "--stream", "tq/tq-threat"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("reset tq/tq-threat") && stdout.contains("initial look-back"),
        "{stdout}"
    );
    let (_, stdout, _) = cli(&["show"]);
    let after: Value = serde_json::from_str(&stdout).unwrap();
    assert!(after.get("tq/tq-threat").is_none(), "{after}");
    assert!(
        after.get("tc/tc-indicator").is_some(),
        "the other stream is untouched"
    );

    let (code, _, stderr) = cli(&["reset", "--stream", "no-such-stream"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("no-such-stream") && stderr.contains("tc/tc-indicator"),
        "names the known keys: {stderr}"
    );
    let (code, _, _) = cli(&["show", "--stream", "no-such-stream"]);
    assert_eq!(code, Some(2));
}

/// `state` never creates a store: a mistyped directory is an error, not an empty answer.
#[test]
fn state_show_on_a_directory_without_a_store_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("typo");
    let out = Command::new(bin())
        .args(["state", "show", "--state-dir"])
        .arg(&missing)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no state store"));
    assert!(!missing.exists());
}
