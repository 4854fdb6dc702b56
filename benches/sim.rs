//! Serve rate of the vendor simulators, in indicators per second.
//!
//! Each case starts a simulator on its own single-threaded tokio runtime (one OS thread, so at
//! most one core serves) and fetches every page of its data set with a plain `reqwest` client on
//! another thread, with real authentication: HMAC-signed requests for ThreatConnect, an OAuth2
//! token for ThreatQ. The client reads each body as bytes and only looks for what paging needs,
//! so the number is what the simulator can serve, not what a mapper can parse.
//!
//! Page sizes are the largest each API allows (ThreatConnect `resultLimit=10000`, ThreatQ
//! `limit=1000`); the `fields` are the ones ti-sidecar requests by default, and, for the
//! `rich_context` cases, every optional block against `--rich-context` data.
//!
//! Before the timed runs, each case prints the rate of its first pass (`cold`): that one renders
//! every indicator, as a one-shot `ti-sidecar run --once` against a fresh simulator does; the
//! timed runs serve from the render cache.
//!
//! `cargo bench --bench sim`; `TI_SIM_BENCH_INDICATORS` (default 200000) and
//! `TI_SIM_BENCH_RICH_INDICATORS` (default 5000) change the data set sizes. To measure the
//! release binary instead (e.g. pinned with `taskset -c 0`), start it with the same
//! `--indicators` (and `--rich-context` for the rich cases) and pass its address in
//! `TI_SIM_BENCH_TC_ADDR` / `TI_SIM_BENCH_TQ_ADDR`, and name the one case to run in
//! `TI_SIM_BENCH_ONLY` (e.g. `threatconnect`); `benches/sim_binary.sh` does all of that.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ti_sidecar::sim::{threatconnect as tc, threatq as tq};
use ti_sidecar::source::threatconnect::auth;
use tokio::sync::oneshot;

const TC_SECRET: &str = "ti-sidecar-sim-secret";
const TQ_SECRET: &str = "ti-sidecar-sim-secret";
const CLIENT_ID: &str = "ti-sidecar-sim";

fn env_size(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A simulator serving on one dedicated thread (or an external one); dropping it stops the
/// in-process simulator.
struct OneCoreSim {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OneCoreSim {
    /// The simulator at `TI_SIM_BENCH_<platform>_ADDR`, if set.
    fn external(var: &str) -> Option<Self> {
        let addr = std::env::var(var).ok()?.parse().expect("a socket address");
        Some(Self {
            addr,
            stop: None,
            thread: None,
        })
    }

    /// Runs `start` (which starts a simulator and returns its address and a shutdown future)
    /// on a current-thread runtime in a new thread.
    fn spawn<F, Fut, H>(start: F, addr_of: fn(&H) -> SocketAddr) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = H>,
        H: Send + 'static,
    {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let handle = start().await;
                addr_tx.send(addr_of(&handle)).expect("bench alive");
                let _ = stop_rx.await;
                drop(handle);
            });
        });
        let addr = addr_rx.recv().expect("simulator started");
        Self {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for OneCoreSim {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .expect("client")
}

/// Fetches every ThreatConnect page with offset paging; returns the bytes read.
async fn fetch_all_tc(http: &reqwest::Client, addr: SocketAddr, n: usize, fields: &str) -> usize {
    const LIMIT: usize = 10_000;
    let mut bytes = 0;
    let mut start = 0;
    while start < n {
        let pq = format!(
            "/api/v3/indicators?{fields}resultLimit={LIMIT}&resultStart={start}&sorting=lastModified+asc"
        );
        let ts = chrono::Utc::now().timestamp();
        let authz = auth::authorization(CLIENT_ID, TC_SECRET.as_bytes(), &pq, "GET", ts);
        let resp = http
            .get(format!("http://{addr}{pq}"))
            .header("Timestamp", ts.to_string())
            .header("Authorization", authz)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
        bytes += resp.bytes().await.expect("body").len();
        start += LIMIT;
    }
    bytes
}

async fn tq_token(http: &reqwest::Client, addr: SocketAddr) -> String {
    let v: serde_json::Value = http
        .post(format!("http://{addr}/api/token"))
        .basic_auth(CLIENT_ID, Some(TQ_SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("token request")
        .json()
        .await
        .expect("token json");
    v["access_token"].as_str().expect("access_token").to_owned()
}

/// The `nextCursorMark` of a page, found without parsing the page.
fn next_mark(body: &[u8]) -> String {
    const KEY: &[u8] = b"\"nextCursorMark\":\"";
    let at = body
        .windows(KEY.len())
        .rposition(|w| w == KEY)
        .expect("nextCursorMark")
        + KEY.len();
    let end = body[at..]
        .iter()
        .position(|&b| b == b'"')
        .expect("closing quote");
    String::from_utf8(body[at..at + end].to_vec()).expect("ascii mark")
}

/// Fetches every ThreatQ page with cursor paging; returns the bytes read.
async fn fetch_all_tq(
    http: &reqwest::Client,
    addr: SocketAddr,
    token: &str,
    fields: &str,
) -> usize {
    let mut bytes = 0;
    let mut mark = "*".to_owned();
    loop {
        let url = format!(
            "http://{addr}/api/indicators/query/hash/sim-collection?sort=updated_at&limit=1000&cursorMark={}&fields={}",
            url::form_urlencoded::byte_serialize(mark.as_bytes()).collect::<String>(),
            url::form_urlencoded::byte_serialize(fields.as_bytes()).collect::<String>(),
        );
        let resp = http
            .get(url)
            .bearer_auth(token)
            .header("Accept", "application/json")
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
        let body = resp.bytes().await.expect("body");
        bytes += body.len();
        let next = next_mark(&body);
        if next == mark {
            return bytes;
        }
        mark = next;
    }
}

/// ti-sidecar's default ThreatConnect fields, and every include_* block on top.
const TC_DEFAULT_FIELDS: &str =
    "fields=securityLabels&fields=sightings&fields=tags&fields=threatAssess&";
const TC_ALL_FIELDS: &str = "fields=associatedGroups&fields=associatedGroups.attributes&fields=associatedIndicators&fields=attributes&fields=securityLabels&fields=sightings&fields=tags&fields=threatAssess&";
/// ti-sidecar's default ThreatQ `threat_library_fields`, and every block in full.
const TQ_DEFAULT_FIELDS: &str = "*,sources,attributes,attributes.name,attributes.value";
const TQ_ALL_FIELDS: &str = "*,sources,attributes";

/// One measured case: a name, a data set size, and how to fetch it all once.
fn measure<F, Fut>(c: &mut Criterion, name: &str, n: usize, fetch: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let t0 = Instant::now();
    let bytes = rt.block_on(fetch());
    let cold = t0.elapsed();
    eprintln!(
        "sim/{name}: cold pass {n} indicators in {cold:.2?} = {:.0} indicators/s, {:.1} KiB/indicator",
        n as f64 / cold.as_secs_f64(),
        bytes as f64 / n as f64 / 1024.0
    );
    let mut g = c.benchmark_group("sim");
    g.throughput(Throughput::Elements(n as u64));
    g.sample_size(10);
    g.bench_function(name, |b| b.iter(|| rt.block_on(fetch())));
    g.finish();
}

fn selected(name: &str) -> bool {
    std::env::var("TI_SIM_BENCH_ONLY").map_or(true, |only| name == only)
}

fn bench_threatconnect(c: &mut Criterion, name: &str, n: usize, rich: bool, fields: &'static str) {
    if !selected(name) {
        return;
    }
    let sim = OneCoreSim::external("TI_SIM_BENCH_TC_ADDR").unwrap_or_else(|| {
        OneCoreSim::spawn(
            move || async move {
                let mut args = tc::SimArgs {
                    indicators: n,
                    ..tc::SimArgs::default()
                };
                args.faults.rich_context = rich;
                tc::start(args).await.expect("threatconnect simulator")
            },
            tc::SimHandle::addr,
        )
    });
    let http = client();
    measure(c, name, n, || fetch_all_tc(&http, sim.addr, n, fields));
}

fn bench_threatq(c: &mut Criterion, name: &str, n: usize, rich: bool, fields: &'static str) {
    if !selected(name) {
        return;
    }
    let sim = OneCoreSim::external("TI_SIM_BENCH_TQ_ADDR").unwrap_or_else(|| {
        OneCoreSim::spawn(
            move || async move {
                let mut args = tq::SimArgs {
                    indicators: n,
                    ..tq::SimArgs::default()
                };
                args.faults.rich_context = rich;
                tq::start(args).await.expect("threatq simulator")
            },
            tq::SimHandle::addr,
        )
    });
    let http = client();
    let token = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(tq_token(&http, sim.addr));
    measure(c, name, n, || fetch_all_tq(&http, sim.addr, &token, fields));
}

fn simulators(c: &mut Criterion) {
    let n = env_size("TI_SIM_BENCH_INDICATORS", 200_000);
    let rich = env_size("TI_SIM_BENCH_RICH_INDICATORS", 5_000);
    bench_threatconnect(c, "threatconnect", n, false, TC_DEFAULT_FIELDS);
    bench_threatq(c, "threatq", n, false, TQ_DEFAULT_FIELDS);
    bench_threatconnect(c, "threatconnect_rich_context", rich, true, TC_ALL_FIELDS);
    bench_threatq(c, "threatq_rich_context", rich, true, TQ_ALL_FIELDS);
}

criterion_group!(benches, simulators);
criterion_main!(benches);
