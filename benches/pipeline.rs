//! The data path end to end, measured as a user would run it, every row in one run:
//!
//! - **fetch only**: the same pages pulled by the sidecar's own client (same requests, keyset
//!   paging and page decoding), mapping and sending nothing: the bound any poller pays. The
//!   simulator is warmed first (every block rendered once), so that no row pays its rendering;
//! - **`run --once` to NDJSON**: wall time, indicators/s and peak RSS (GNU `time`'s maximum
//!   resident set), at page 2000 and 10000, with and without the optional blocks
//!   (attributes, group and indicator associations), next to the fetch-only time;
//! - **through `host` and OTLP** (also alone, with `cargo bench --bench pipeline -- host`): the
//!   same stream as an agent unit of the host harness;
//! - **idle RSS**: a `run` without `--once`, 5 s after it has caught up;
//! - **latency bound**: with `--latency-ms 250` and page 2000, the rate against
//!   page_size / (latency + the simulator's own serve time per page).
//!
//! - **parallel backfill** (also alone, with `cargo bench --bench pipeline -- backfill`): at
//!   `--latency-ms 500` and page 2000, `run --once` with `backfill_concurrency` 1, 2, 4, 8 and
//!   16, as speed-up over 1.
//!
//! `cargo bench --bench pipeline`. Environment:
//! - `TI_BENCH_INDICATORS` (default 200000): indicators the simulator serves;
//! - `TI_BENCH_BASELINE=/path/to/ti-sidecar`: also run every `run` row with that binary, side
//!   by side (for before/after tables). The simulator is always this build's. The NDJSON and
//!   host rows then run each binary twice, in the order this build, baseline, baseline, this
//!   build; a row shows each binary's mean and its runs.
//!
//! Requires Linux (`/proc`) and GNU time at `/usr/bin/time`.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use ti_sidecar::source::registry::StreamSettings as _;

use std::sync::Arc;

use ti_sidecar::config::fields::FieldReader;
use ti_sidecar::http::HttpClient;
use ti_sidecar::source::Source;
use ti_sidecar::source::threatconnect::client::ThreatConnectSource;
use ti_sidecar::source::threatconnect::config::ThreatConnectConfig;

const ACCESS_ID: &str = "ti-sidecar-sim";
const SECRET: &str = "ti-sidecar-sim-secret";
const ALL_BLOCKS: [&str; 3] = [
    "include_attributes: true",
    "include_group_assoc: true",
    "include_indicator_assoc: true",
];

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let ours = PathBuf::from(env!("CARGO_BIN_EXE_ti-sidecar"));
    let baseline = std::env::var_os("TI_BENCH_BASELINE").map(PathBuf::from);
    let indicators: usize = std::env::var("TI_BENCH_INDICATORS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    let work = tempfile::tempdir().expect("a temporary directory");
    let mut binaries = vec![("this build", ours.clone())];
    if let Some(b) = baseline {
        binaries.push(("baseline", b));
    }
    if std::env::args().any(|a| a == "backfill") {
        backfill_speedup(&ours, indicators, work.path());
        return;
    }
    if std::env::args().any(|a| a == "host") {
        let sim = Simulator::start(&ours, indicators, 0);
        fetch_only(&sim.url, 10_000, false);
        host_rows(&binaries, &sim.url, indicators, work.path());
        return;
    }

    println!(
        "pipeline benchmark: {indicators} ThreatConnect indicators, simulator from this build"
    );
    let sim = Simulator::start(&ours, indicators, 0);
    // The simulator renders the optional blocks on first request and keeps them. Measured cold,
    // the first fetch-only pass with blocks (page 2000) paid that rendering once, and the runs
    // after it did not: a bound of 5.3 s against 2.3 s warm. One unmeasured pass warms it.
    fetch_only(&sim.url, 10_000, true);
    println!();
    println!(
        "| page | blocks | binary | wall s | indicators/s | peak RSS MiB | fetch-only s | wall / fetch-only | runs, wall s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for page in [2000u32, 10_000] {
        for blocks in [false, true] {
            let fetch = fetch_only(&sim.url, page, blocks);
            // Unmeasured: the first run after the fetch-only pass was up to 15% slower than
            // the same binary's next run (see `run_order`).
            run_once(&binaries[0].1, &sim.url, page, blocks, work.path(), "");
            let runs = runs_of(&binaries, |name, bin| {
                let r = run_once(bin, &sim.url, page, blocks, work.path(), "");
                assert_eq!(
                    r.indicators, indicators,
                    "{name}: every indicator delivered"
                );
                r
            });
            for ((name, _), runs) in binaries.iter().zip(&runs) {
                let wall = mean_wall(runs);
                let peak_rss = runs.iter().map(|r| r.peak_rss).max().unwrap_or(0);
                let each: Vec<String> = runs
                    .iter()
                    .map(|r| format!("{:.2}", r.wall.as_secs_f64()))
                    .collect();
                println!(
                    "| {page} | {} | {name} | {:.2} | {:.0} | {:.0} | {:.2} | {:.2} | {} |",
                    if blocks { "all" } else { "none" },
                    wall,
                    indicators as f64 / wall,
                    peak_rss as f64 / (1024.0 * 1024.0),
                    fetch.elapsed.as_secs_f64(),
                    wall / fetch.elapsed.as_secs_f64(),
                    each.join(", "),
                );
            }
            if page == 10_000 {
                println!(
                    "|  | | (largest raw page: {:.1} MiB) | | | | | | |",
                    fetch.largest_page as f64 / (1024.0 * 1024.0)
                );
            }
        }
    }

    host_rows(&binaries, &sim.url, indicators, work.path());

    println!();
    println!("| idle (caught up, 5 s later) | RSS MiB |");
    println!("|---|---|");
    for (name, bin) in &binaries {
        let rss = idle_rss(bin, &sim.url, work.path());
        println!("| {name} | {:.1} |", rss as f64 / (1024.0 * 1024.0));
    }
    drop(sim);

    // Latency bound: 20 pages of 2000 at 250 ms each.
    let latency = Duration::from_millis(250);
    let slow = Simulator::start(&ours, 40_000, latency.as_millis() as u64);
    let serve = fetch_only(&slow.url, 2000, false);
    let serve_per_page = serve.elapsed / serve.pages as u32;
    println!();
    println!(
        "| latency 250 ms, page 2000 | wall s | indicators/s | bound page/(latency+serve) | ratio |"
    );
    println!("|---|---|---|---|---|");
    // The simulator's own time per page, without the latency it adds.
    let own = serve_per_page.saturating_sub(latency);
    let bound = 2000.0 / (latency + own).as_secs_f64();
    for (name, bin) in &binaries {
        let r = run_once(bin, &slow.url, 2000, false, work.path(), "");
        let rate = r.indicators as f64 / r.wall.as_secs_f64();
        println!(
            "| {name} | {:.2} | {rate:.0} | {bound:.0} | {:.2} |",
            r.wall.as_secs_f64(),
            rate / bound
        );
    }
    drop(slow);
    backfill_speedup(&ours, indicators, work.path());
}

/// A `ti-sidecar simulate threatconnect` process.
struct Simulator {
    child: Child,
    url: String,
}

impl Simulator {
    fn start(bin: &Path, indicators: usize, latency_ms: u64) -> Self {
        let mut child = Command::new(bin)
            .args(["simulate", "threatconnect", "--listen", "127.0.0.1:0"])
            .args(["--indicators", &indicators.to_string()])
            .args(["--latency-ms", &latency_ms.to_string()])
            .args(["--access-id", ACCESS_ID])
            .env("TI_SIM_TC_SECRET_KEY", SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the simulator starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the simulator prints its address");
        let addr = line.trim().trim_start_matches("http://").to_owned();
        Self {
            child,
            url: format!("http://{addr}"),
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Fetched {
    elapsed: Duration,
    pages: usize,
    largest_page: usize,
}

/// Parallel backfill against a slow API: `--latency-ms 500`, page 2000, `run --once` with
/// `backfill_concurrency` K = 1, 2, 4, 8, 16 side by side, as speed-up over K = 1.
fn backfill_speedup(ours: &Path, indicators: usize, dir: &Path) {
    let slow = Simulator::start(ours, indicators, 500);
    println!();
    println!(
        "| latency 500 ms, page 2000, {indicators} indicators | wall s | indicators/s | speed-up over K = 1 | speed-up / K | duplicates |"
    );
    println!("|---|---|---|---|---|---|");
    let mut single = None;
    for k in [1u32, 2, 4, 8, 16] {
        let r = run_once(
            ours,
            &slow.url,
            2000,
            false,
            dir,
            &format!("backfill_concurrency: {k}"),
        );
        // At least once: without changes each should arrive once; duplicates are shown.
        assert!(
            r.indicators >= indicators,
            "K = {k}: every indicator delivered"
        );
        let wall = r.wall.as_secs_f64();
        let base = *single.get_or_insert(wall);
        println!(
            "| K = {k} | {wall:.2} | {:.0} | {:.2} | {:.2} | {} |",
            r.indicators as f64 / wall,
            base / wall,
            base / wall / f64::from(k),
            r.indicators - indicators
        );
    }
}

/// Pulls every page with the sidecar's own ThreatConnect client (the same requests, keyset
/// paging and decoding as `run`), mapping and sending nothing.
fn fetch_only(base: &str, page: u32, blocks: bool) -> Fetched {
    let mut stream = serde_json::json!({
        "url": base,
        "access_id": ACCESS_ID,
        "secret_key": SECRET,
        "batch_size": page,
        "initial_interval": "87600h",
    });
    if blocks {
        for key in [
            "include_attributes",
            "include_group_assoc",
            "include_indicator_assoc",
        ] {
            stream[key] = true.into();
        }
    }
    let mut reader = FieldReader::open("s", &stream).expect("a stream");
    let cfg = ThreatConnectConfig::from_fields(&mut reader).expect("a valid stream");
    let http = HttpClient::build(&cfg.http, None, cfg.secrets()).expect("a client");
    let mut source = ThreatConnectSource::new(Arc::new(cfg), http);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let mut cursor = source.initial_cursor();
        let started = Instant::now();
        let (mut pages, mut largest) = (0, 0);
        loop {
            let p = source.fetch(&cursor).await.expect("a page");
            pages += 1;
            largest = largest.max(p.items.body_len());
            cursor = p.cursor;
            if !p.more {
                break;
            }
        }
        Fetched {
            elapsed: started.elapsed(),
            pages,
            largest_page: largest,
        }
    })
}

fn config(dir: &Path, url: &str, page: u32, blocks: bool, events: &Path, more: &str) -> PathBuf {
    let mut extra = if blocks {
        ALL_BLOCKS.map(|b| format!("        {b}\n")).concat()
    } else {
        String::new()
    };
    if !more.is_empty() {
        extra.push_str(&format!("        {more}\n"));
    }
    let yaml = format!(
        r#"outputs:
  default:
    type: ndjson
    path: {events:?}
inputs:
  - id: tc
    type: ti_threatconnect
    streams:
      - id: tc-indicator
        data_stream:
          dataset: ti_threatconnect.indicator
        url: {url}
        access_id: {ACCESS_ID}
        secret_key: {SECRET}
        batch_size: {page}
        initial_interval: 87600h
{extra}"#
    );
    let path = dir.join("bench.yml");
    std::fs::write(&path, yaml).expect("writing the config");
    path
}

struct RunResult {
    wall: Duration,
    indicators: usize,
    peak_rss: u64,
}

/// `run --once` to an NDJSON file under GNU time; `more` is one more stream setting, if any.
fn run_once(bin: &Path, url: &str, page: u32, blocks: bool, dir: &Path, more: &str) -> RunResult {
    let events = dir.join("events.ndjson");
    let state = dir.join("state");
    let _ = std::fs::remove_file(&events);
    let _ = std::fs::remove_dir_all(&state);
    let config = config(dir, url, page, blocks, &events, more);
    let times = dir.join("time.txt");
    let started = Instant::now();
    let status = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(&times)
        .arg(bin)
        .args(["--log-level", "warn", "run", "--once", "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(&state)
        .stdout(Stdio::null())
        .status()
        .expect("GNU time at /usr/bin/time");
    let wall = started.elapsed();
    assert!(status.success(), "{} run --once failed", bin.display());
    let peak_kib: u64 = std::fs::read_to_string(&times)
        .ok()
        .and_then(|t| t.lines().last()?.trim().parse().ok())
        .unwrap_or(0);
    RunResult {
        wall,
        indicators: count_lines(&events),
        peak_rss: peak_kib * 1024,
    }
}

fn count_lines(path: &Path) -> usize {
    LineCounter::default().count(path)
}

/// Counts the lines of a growing file, reading only what was appended since the last count.
/// Reading the whole file every 50 ms while the host wrote 700 MB into it cost the benchmark a
/// core of its own (the same two cores the run is measured on).
#[derive(Default)]
struct LineCounter {
    read: u64,
    lines: usize,
}

impl LineCounter {
    fn count(&mut self, path: &Path) -> usize {
        use std::io::{Read as _, Seek as _, SeekFrom};
        let Ok(mut f) = std::fs::File::open(path) else {
            return self.lines;
        };
        if f.seek(SeekFrom::Start(self.read)).is_err() {
            return self.lines;
        }
        let mut buf = vec![0u8; 1 << 20];
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            self.read += n as u64;
            self.lines += buf[..n].iter().filter(|&&c| c == b'\n').count();
        }
        self.lines
    }
}

/// `run` without `--once`: its resident set 5 s after it logged "caught up".
fn idle_rss(bin: &Path, url: &str, dir: &Path) -> u64 {
    let events = dir.join("events.ndjson");
    let state = dir.join("state");
    let _ = std::fs::remove_file(&events);
    let _ = std::fs::remove_dir_all(&state);
    let config = config(dir, url, 10_000, false, &events, "");
    let mut child = Command::new(bin)
        .args(["run", "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(&state)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run starts");
    let stderr = BufReader::new(child.stderr.take().expect("stderr"));
    for line in stderr.lines() {
        if line.is_ok_and(|l| l.contains("caught up")) {
            break;
        }
    }
    std::thread::sleep(Duration::from_secs(5));
    let rss = ti_sidecar::telemetry::process_memory_of(&child.id().to_string())
        .map_or(0, |m| m.rss_bytes);
    let _ = child.kill();
    let _ = child.wait();
    rss
}

/// The host + OTLP table (also alone, with `cargo bench --bench pipeline -- host`).
fn host_rows(binaries: &[(&str, PathBuf)], url: &str, indicators: usize, dir: &Path) {
    println!();
    println!(
        "| through host + OTLP (page 10000, no blocks) | wall s | indicators/s | control plane (diagnostics action every 100 ms) |"
    );
    println!("|---|---|---|---|");
    let runs = runs_of(binaries, |_, bin| through_host(bin, url, indicators, dir));
    for ((name, _), runs) in binaries.iter().zip(&runs) {
        for (wall, n, probe) in runs {
            println!(
                "| {name} | {:.2} | {:.0} | {probe} |",
                wall.as_secs_f64(),
                *n as f64 / wall.as_secs_f64()
            );
        }
    }
}

/// A row's runs, each binary's in a list of its own, run in [`run_order`].
fn runs_of<T>(binaries: &[(&str, PathBuf)], mut run: impl FnMut(&str, &Path) -> T) -> Vec<Vec<T>> {
    let mut runs: Vec<Vec<T>> = binaries.iter().map(|_| Vec::new()).collect();
    for i in run_order(binaries.len()) {
        let (name, bin) = &binaries[i];
        runs[i].push(run(name, bin));
    }
    runs
}

/// The order in which the binaries of a row run. One binary runs once. With a baseline, each
/// runs twice, this build first and last (A B B A), which cancels a steady drift of the
/// machine. In two full runs of this benchmark with one run each, the binary that ran first
/// came out 3–5% slower in every row, while by hand, in interleaved runs with the order
/// swapped, the same two binaries measured the same; with A B B A, each row's first run was
/// 0–15% slower than the same binary's last. So each NDJSON row also starts with one
/// unmeasured run.
fn run_order(binaries: usize) -> Vec<usize> {
    match binaries {
        2 => vec![0, 1, 1, 0],
        n => (0..n).collect(),
    }
}

/// The mean wall time of a row's runs, in seconds.
fn mean_wall(runs: &[RunResult]) -> f64 {
    runs.iter().map(|r| r.wall.as_secs_f64()).sum::<f64>() / runs.len().max(1) as f64
}

/// The stream as an agent unit under `host`, its events over OTLP into the host's file: time
/// until every indicator has arrived, and the host's control-plane probe summary.
fn through_host(bin: &Path, url: &str, indicators: usize, dir: &Path) -> (Duration, usize, String) {
    let events = dir.join("host-events.ndjson");
    let data = dir.join("host-data");
    let _ = std::fs::remove_file(&events);
    let _ = std::fs::remove_dir_all(&data);
    // The run config is the policy; the host points the output at its own receiver.
    let policy = config(dir, url, 10_000, false, Path::new("-"), "");
    let console = dir.join("host.out");
    // Older builds have no probe.
    let help = Command::new(bin).args(["host", "--help"]).output();
    let probe: &[&str] = if help
        .is_ok_and(|h| String::from_utf8_lossy(&h.stdout).contains("--probe-control-every"))
    {
        &["--probe-control-every", "100ms"]
    } else {
        &[]
    };
    let started = Instant::now();
    let mut child = Command::new(bin)
        .args(["--log-level", "warn", "host", "--policy"])
        .arg(&policy)
        .arg("--events")
        .arg(&events)
        .arg("--data-dir")
        .arg(&data)
        .args(probe)
        .stdout(std::fs::File::create(&console).expect("the host's console file"))
        .stderr(Stdio::null())
        .spawn()
        .expect("host starts");
    let deadline = started + Duration::from_secs(600);
    let mut n = 0;
    let mut counter = LineCounter::default();
    while Instant::now() < deadline {
        n = counter.count(&events);
        if n >= indicators {
            break;
        }
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let wall = started.elapsed();
    // SIGTERM, so the host stops its component too.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let probe = std::fs::read_to_string(&console)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("control probe: ").map(str::to_owned))
        .unwrap_or_else(|| "(no probe: this binary's host has none)".to_owned());
    (wall, n, probe)
}
