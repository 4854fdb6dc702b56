//! Shared helpers for tests that drive the real `ti-sidecar` binary against the simulators.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use ti_sidecar::sim::faults::FaultArgs;

use serde_json::{Map, Value};
use ti_sidecar::ingest::{EcsEvent, MapOptions};
use ti_sidecar::sim::threatconnect::{SimArgs, SimHandle};

pub mod mocks;

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ti-sidecar")
}

/// A command running `program` under umask 022 (the usual default, which leaves new files
/// world-readable unless the program asks for tighter modes).
pub fn with_umask_022(program: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("umask 022 && exec \"$0\" \"$@\"")
        .arg(program);
    cmd
}

/// Runs `cmd` to completion and asserts it succeeded (showing its stderr otherwise).
pub fn output_ok(mut cmd: Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        cmd.get_args().collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The permission bits of `path`.
#[cfg(unix)]
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Simulator arguments with test defaults.
pub fn sim_args(indicators: usize) -> SimArgs {
    SimArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        indicators,
        seed: 7,
        access_id: "test-access-id".to_owned(),
        secret_key: "Test$$Secret/Key+=".to_owned(),
        faults: FaultArgs::default(),
        same_second: 0,
        id_base: 9_007_199_254_740_993,
    }
}

/// A test workspace: config file, state dir and events file in a temp dir.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    pub fn state_dir(&self) -> PathBuf {
        self.path("state")
    }

    /// Writes a ThreatConnect config pointing at `sim`, writing events to `events`.
    /// `extra` lines are appended to the stream (indented by the caller's convention: 8 spaces).
    /// The secret key is read from `TEST_TC_SECRET`, which [`run_once`] and [`spawn_run`] set.
    pub fn tc_config(&self, sim: &SimHandle, _secret: &str, events: &Path, extra: &str) -> PathBuf {
        self.tc_config_at(&sim.base_url(), events, extra)
    }

    /// [`tc_config`](Self::tc_config) for a ThreatConnect API at `url` (a test server).
    pub fn tc_config_at(&self, url: &str, events: &Path, extra: &str) -> PathBuf {
        self.config_with_input(
            events,
            &format!(
                r#"  - id: tc
    type: ti_threatconnect
    streams:
      - id: tc-indicator
        data_stream:
          dataset: ti_threatconnect.indicator
        url: {url}
        access_id: test-access-id
        secret_key: ${{TEST_TC_SECRET}}
        http_client_timeout: 10s
{extra}"#
            ),
        )
    }

    /// Writes `config.yml`: the NDJSON output to `events`, and `input` (one input's YAML, a
    /// list item indented by 2 spaces). Returns its path.
    pub fn config_with_input(&self, events: &Path, input: &str) -> PathBuf {
        let yaml = format!(
            "outputs:\n  default:\n    type: ndjson\n    path: {events:?}\ninputs:\n{input}",
            events = events.display().to_string(),
        );
        let path = self.path("config.yml");
        std::fs::write(&path, yaml).unwrap();
        path
    }
}

/// One stream's files in a new workspace: its config, events file and state directory.
pub struct Stream {
    pub ws: Workspace,
    pub events: PathBuf,
    pub config: PathBuf,
    pub state: PathBuf,
}

impl Stream {
    /// A stream whose config `write_config` writes, given the workspace and the events file.
    pub fn new(write_config: impl FnOnce(&Workspace, &Path) -> PathBuf) -> Self {
        let ws = Workspace::new();
        let events = ws.path("events.ndjson");
        let config = write_config(&ws, &events);
        let state = ws.state_dir();
        Self {
            ws,
            events,
            config,
            state,
        }
    }

    /// A ThreatConnect stream against `sim`, with `extra` stream lines (see
    /// [`Workspace::tc_config`]).
    pub fn tc(sim: &SimHandle, extra: &str) -> Self {
        Self::new(|ws, events| ws.tc_config_at(&sim.base_url(), events, extra))
    }

    /// `run --once` of this stream with `secret`, on the blocking pool: (success, stderr).
    pub async fn run_once(&self, secret: &str) -> (bool, String) {
        let (config, state, secret) = (self.config.clone(), self.state.clone(), secret.to_owned());
        blocking(move || run_once(&config, &state, &secret)).await
    }

    /// [`run_once`](Self::run_once), which must succeed; its stderr. `what` names the run in
    /// the failure.
    pub async fn run_once_ok(&self, secret: &str, what: &str) -> String {
        let (ok, stderr) = self.run_once(secret).await;
        assert!(ok, "{what}: {stderr}");
        stderr
    }

    /// [`kill_after_log`] of this stream, on the blocking pool.
    pub async fn kill_after_log(&self, secret: &str, once: bool, wanted: &str) {
        let (config, state) = (self.config.clone(), self.state.clone());
        let (secret, wanted) = (secret.to_owned(), wanted.to_owned());
        blocking(move || kill_after_log(&config, &state, &secret, once, &wanted)).await;
    }
}

/// The lines a child prints, read on a thread, with every line taken so far (shown when a
/// wait fails).
pub struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Lines {
    /// Starts reading `out` (a child's stdout) line by line.
    pub fn of(out: impl std::io::Read + Send + 'static) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            rx,
            seen: Vec::new(),
        }
    }

    /// The next line (panics after 90 s of silence, showing what was said).
    pub fn next(&mut self) -> String {
        match self.rx.recv_timeout(std::time::Duration::from_secs(90)) {
            Ok(line) => {
                self.seen.push(line.clone());
                line
            }
            Err(e) => panic!("silent ({e}); it said:\n{}", self.seen.join("\n")),
        }
    }

    /// Waits for a line containing `wanted`; returns it.
    pub fn wait(&mut self, wanted: &str) -> String {
        loop {
            let line = self.next();
            if line.contains(wanted) {
                return line;
            }
        }
    }

    /// Waits until every one of `wanted` has appeared in some line, in any order.
    pub fn wait_all(&mut self, wanted: &[&str]) {
        let mut missing: Vec<&str> = wanted.to_vec();
        while !missing.is_empty() {
            let line = self.next();
            missing.retain(|w| !line.contains(w));
        }
    }

    /// Takes the lines still to come once the child has exited (its last ones are already
    /// written), and returns every line.
    pub fn finish(mut self) -> Vec<String> {
        while let Ok(line) = self.rx.recv_timeout(std::time::Duration::from_secs(5)) {
            self.seen.push(line);
        }
        self.seen
    }
}

/// Runs `f` on the blocking pool (where the binary under test is waited for).
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// The JSON lines of a run's stderr (its logs), skipping any other line.
pub fn json_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The ids of the ThreatConnect indicators delivered to `events`.
pub fn delivered_ids(events: &Path) -> BTreeSet<i64> {
    read_events(events)
        .iter()
        .map(|d| original_key(d).0)
        .collect()
}

/// The ids of every indicator `sim` holds.
pub fn sim_ids(sim: &SimHandle) -> BTreeSet<i64> {
    sim.snapshot().into_iter().map(|(id, _)| id).collect()
}

/// Runs `ti-sidecar run --once` to completion; returns (success, stderr).
pub fn run_once(config: &Path, state_dir: &Path, secret: &str) -> (bool, String) {
    let out = Command::new(bin())
        .args(["run", "--once", "--config"])
        .arg(config)
        .arg("--state-dir")
        .arg(state_dir)
        .env("TEST_TC_SECRET", secret)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Spawns `ti-sidecar run` (not once) with piped stderr.
pub fn spawn_run(config: &Path, state_dir: &Path, secret: &str, once: bool) -> Child {
    let mut cmd = Command::new(bin());
    cmd.arg("run");
    if once {
        cmd.arg("--once");
    }
    cmd.arg("--config")
        .arg(config)
        .arg("--state-dir")
        .arg(state_dir)
        .env("TEST_TC_SECRET", secret)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Sends SIGTERM to `child` (the way a supervisor stops it).
pub fn sigterm(child: &Child) {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -TERM failed");
}

/// Runs `ti-sidecar run` until it logs a message starting with `wanted`, then SIGKILLs it: no
/// chance to clean up.
pub fn kill_after_log(config: &Path, state_dir: &Path, secret: &str, once: bool, wanted: &str) {
    let mut child = spawn_run(config, state_dir, secret, once);
    wait_for_log(&mut child, wanted);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Reads the child's stderr JSON lines until one has a `message` starting with `wanted`; returns
/// all lines read.
pub fn wait_for_log(child: &mut Child, wanted: &str) -> Vec<Value> {
    wait_for_logs(child, wanted, 1)
}

/// [`wait_for_log`] until `count` lines have matched.
pub fn wait_for_logs(child: &mut Child, wanted: &str, count: usize) -> Vec<Value> {
    let mut left = count;
    let stderr = child.stderr.take().expect("stderr piped");
    let mut reader = BufReader::new(stderr);
    let mut seen = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).unwrap();
        assert!(
            n > 0,
            "process ended before logging {wanted:?}; saw {seen:?}"
        );
        let v: Value = serde_json::from_str(line.trim()).unwrap_or(Value::String(line.clone()));
        let hit = v
            .get("message")
            .and_then(Value::as_str)
            .is_some_and(|m| m.starts_with(wanted));
        seen.push(v);
        left -= usize::from(hit);
        if left == 0 {
            // Keep draining stderr so the child never blocks on a full pipe.
            std::thread::spawn(move || {
                let mut sink = String::new();
                while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                    sink.clear();
                }
            });
            return seen;
        }
    }
}

/// The simulator's current (final) versions that never reached `events`.
pub fn never_delivered(sim: &SimHandle, events: &Path) -> Vec<(i64, String)> {
    let delivered = delivered_versions(&read_events(events));
    sim.snapshot()
        .into_iter()
        .filter(|(id, lm)| !delivered.contains_key(&(*id, lm.clone())))
        .collect()
}

/// Every document in an NDJSON events file.
pub fn read_events(path: &Path) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    parse_lines(&text)
}

/// The complete lines of an events file that a running process is still appending to, or
/// that a process killed with SIGKILL wrote: a write in progress leaves its last line cut short
/// (a reader can see part of a write; after a kill, the next open cuts it off, see
/// `ndjson::open_lines_for_append`); every line before it must be whole.
pub fn read_complete_events(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..=end]);
    parse_lines(complete)
}

fn parse_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad NDJSON line {l:?}: {e}")))
        .collect()
}

/// (id, lastModified) of a delivered document, read from its `event.original` (the raw object).
pub fn original_key(doc: &Value) -> (i64, String) {
    let raw = doc["event"]["original"].as_str().expect("event.original");
    let v: Value = serde_json::from_str(raw).expect("event.original is JSON");
    (
        v["id"].as_i64().expect("integer id"),
        v["lastModified"].as_str().expect("lastModified").to_owned(),
    )
}

/// Count of deliveries per (id, lastModified).
pub fn delivered_versions(docs: &[Value]) -> BTreeMap<(i64, String), usize> {
    let mut map = BTreeMap::new();
    for d in docs {
        *map.entry(original_key(d)).or_insert(0) += 1;
    }
    map
}

/// A platform's fixture directory: `$TI_FIXTURES/<platform>` or `../shared/fixtures/<platform>`;
/// `None` (with the reason printed) when it is absent, so fixture tests skip.
pub fn fixture_dir(platform: &str) -> Option<PathBuf> {
    let base = std::env::var_os("TI_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures"))
        });
    let dir = base.join(platform);
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "skipping: fixture directory {} not found (set TI_FIXTURES)",
            dir.display()
        );
        None
    }
}

/// A fixture file's text.
pub fn read_fixture(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("reading {name}: {e}"))
}

/// Golden parity: maps each line of the fixture `log` of `platform` with `map` and compares
/// the documents with those of the fixture `expected`, structurally and type-strictly. Skips
/// when the fixtures are absent.
pub fn assert_golden(platform: &str, log: &str, expected: &str, map: impl Fn(&str) -> Value) {
    let Some(dir) = fixture_dir(platform) else {
        return;
    };
    let input = read_fixture(&dir, log);
    let expected: Value =
        serde_json::from_str(&read_fixture(&dir, expected)).expect("expected file is JSON");
    let want = expected["expected"]
        .as_array()
        .expect("expected array")
        .clone();
    // Each line is one input (a file may have no trailing newline).
    let got: Vec<Value> = input.lines().filter(|l| !l.is_empty()).map(map).collect();
    assert_eq!(want.len(), got.len(), "{log}: number of documents");
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        assert_same(w, g, &format!("{log} document {i}"));
    }
}

/// A platform's `map_indicator`, for the helpers the golden tests of both platforms share.
pub type MapIndicator = fn(&str, &MapOptions) -> EcsEvent;

/// The fields of the document `map` makes of the JSON text of `v`.
pub fn map_json_with(map: MapIndicator, v: &Value, opts: &MapOptions) -> Map<String, Value> {
    map(&v.to_string(), opts).doc.into_map()
}

/// [`assert_golden`] of `platform`'s fixtures, mapped with `map` under `opts` (the platform's
/// pipeline-test options).
pub fn golden_with(
    platform: &str,
    map: MapIndicator,
    opts: &MapOptions,
    log: &str,
    expected: &str,
) {
    assert_golden(platform, log, expected, |l| {
        Value::Object(map(l, opts).doc.into_map())
    });
}

/// A platform's fixture `sample_event.json` and its `event.original` text; `None` (tests skip)
/// when the fixtures are absent.
pub fn sample_event(platform: &str) -> Option<(Value, String)> {
    let dir = fixture_dir(platform)?;
    let sample: Value =
        serde_json::from_str(&read_fixture(&dir, "sample_event.json")).expect("sample JSON");
    let raw = sample["event"]["original"]
        .as_str()
        .expect("event.original")
        .to_owned();
    Some((sample, raw))
}

/// Collects `path: expected vs got` lines for every difference (type-strict: `3.0` ≠ `3`).
pub fn json_diff(path: &str, expected: &Value, got: &Value, out: &mut Vec<String>) {
    match (expected, got) {
        (Value::Object(e), Value::Object(g)) => {
            for (k, ev) in e {
                let p = format!("{path}.{k}");
                match g.get(k) {
                    Some(gv) => json_diff(&p, ev, gv, out),
                    None => out.push(format!("{p}: expected {ev}, got <missing>")),
                }
            }
            for (k, gv) in g {
                if !e.contains_key(k) {
                    out.push(format!("{path}.{k}: expected <missing>, got {gv}"));
                }
            }
        }
        (Value::Array(e), Value::Array(g)) if e.len() == g.len() => {
            for (i, (ev, gv)) in e.iter().zip(g).enumerate() {
                json_diff(&format!("{path}[{i}]"), ev, gv, out);
            }
        }
        (e, g) if e == g => {}
        (e, g) => out.push(format!("{path}: expected {e}, got {g}")),
    }
}

/// Asserts structural, type-strict equality, printing a field-by-field diff otherwise.
pub fn assert_same(expected: &Value, got: &Value, what: &str) {
    let mut out = Vec::new();
    json_diff("", expected, got, &mut out);
    assert!(
        out.is_empty(),
        "{what}: {} difference(s):\n{}",
        out.len(),
        out.join("\n")
    );
}

/// A loopback HTTP server for bodies that never end: each of the first `endless` requests
/// gets `status` and 64 KiB chunks until the client hangs up; later ones get 200 and `then`.
/// Returns its base URL and the count of requests served.
pub async fn endless_body_server(
    status: u16,
    endless: usize,
    then: &'static str,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use axum::body::{Body, Bytes};
    use std::sync::atomic::Ordering;
    static CHUNK: [u8; 64 * 1024] = [b' '; 64 * 1024];
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = served.clone();
    let app = axum::Router::new().fallback(move || {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n < endless {
                let chunks =
                    std::iter::repeat_with(|| Ok::<_, std::io::Error>(Bytes::from_static(&CHUNK)));
                axum::http::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from_stream(tokio_stream::iter(chunks)))
                    .unwrap()
            } else {
                axum::http::Response::builder()
                    .header("content-type", "application/json")
                    .body(Body::from(then))
                    .unwrap()
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, served)
}

/// The unit health message after `err` failed a stream three times in a row: everything
/// server text can reach, the fetch error and the unit health built from it.
pub fn health_after_three_failures(err: &ti_sidecar::source::FetchError) -> String {
    let counters = ti_sidecar::telemetry::StreamCounters::default();
    for _ in 0..3 {
        ti_sidecar::telemetry::AttemptFailed {
            stream: "s",
            stage: ti_sidecar::telemetry::Stage::Fetch,
            error: err,
            retry_in: Some(std::time::Duration::ZERO),
        }
        .emit(&counters);
    }
    ti_sidecar::agent::health::derive(&[("s".to_owned(), counters.status())]).message
}
