//! The HTTP server both vendor simulators run on.
//!
//! A simulator is a [`Platform`]: its authentication scheme, query parameters, store and page
//! rendering. Everything around that is the same for ThreatConnect and ThreatQ and lives here:
//! checking the arguments and binding the address ([`bind`]), the serve loop with graceful
//! shutdown and the [`SimHandle`] that tests and the CLI hold, the request counters
//! ([`Server`]), the added latency of every request, the end of every page (`--mutate-per-page`,
//! the page counter) and the debug line of every answer ([`Request::respond`]).

use std::fmt::Display;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, MutexGuard};

use axum::Router;
use axum::extract::{FromRequest, OriginalUri, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::sim::faults::{self, FaultArgs, Faults};
use crate::sim::mutation::MutableStore;
use crate::sim::page;

/// Mixed into `--seed` for the fault injector's own random streams.
const FAULT_SEED: u64 = 0x0066_6175_6c74;

/// A count of something the simulator did.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Counts `n` more.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one more.
    pub(crate) fn bump(&self) {
        self.add(1);
    }

    /// The count so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Counters of what the simulator did, for tests and for the shutdown log line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimStats {
    /// Requests received (any path, any outcome).
    pub requests: u64,
    /// Successful `200` pages served.
    pub pages_served: u64,
    /// Requests answered 401 for their credentials.
    pub auth_rejected: u64,
    /// Requests answered with an injected 500/502/503.
    pub errors_injected: u64,
    /// Requests answered 429.
    pub rate_limited: u64,
    /// Indicators modified by `--mutate-per-page`.
    pub mutations: u64,
}

/// What every simulator shares at run time: fault injection, the `--mutate-per-page` rate and
/// the request counters.
pub struct Server {
    /// Latency, rate limit and injected errors (`--latency-ms`, `--rate-limit`, `--error-rate`).
    pub faults: Faults,
    mutate_per_page: AtomicUsize,
    requests: Counter,
    pages_served: Counter,
    auth_rejected: Counter,
    mutations: Counter,
}

impl Server {
    fn new(faults: Faults, mutate_per_page: usize) -> Self {
        Self {
            faults,
            mutate_per_page: AtomicUsize::new(mutate_per_page),
            requests: Counter::default(),
            pages_served: Counter::default(),
            auth_rejected: Counter::default(),
            mutations: Counter::default(),
        }
    }

    /// Counts a request answered 401 for its credentials.
    pub(crate) fn count_auth_rejected(&self) {
        self.auth_rejected.bump();
    }

    /// Finishes a page whose indicators are `page` (indices into `store`): records them as
    /// served, applies `--mutate-per-page` after a non-empty page, releases the store, counts
    /// the page and answers it `200` with `body`.
    pub(crate) fn serve_page<S: MutableStore>(
        &self,
        mut store: MutexGuard<'_, S>,
        page: &[usize],
        body: Vec<u8>,
    ) -> Response {
        store.mutation().record(page);
        let k = self.mutate_per_page.load(Ordering::SeqCst);
        if k > 0 && !page.is_empty() {
            let n = store.mutate(k, Utc::now());
            self.mutations.add(n as u64);
        }
        drop(store);
        self.pages_served.bump();
        page::json_bytes(StatusCode::OK, body)
    }

    /// The counters every simulator keeps.
    pub fn stats(&self) -> SimStats {
        SimStats {
            requests: self.requests.get(),
            pages_served: self.pages_served.get(),
            auth_rejected: self.auth_rejected.get(),
            errors_injected: self.faults.errors_injected(),
            rate_limited: self.faults.rate_limited(),
            mutations: self.mutations.get(),
        }
    }
}

/// One vendor API as the simulator serves it: what differs between ThreatConnect and ThreatQ.
pub trait Platform: Sized + Send + Sync + 'static {
    /// The lower-case name in log lines (`threatconnect simulator request`).
    const NAME: &'static str;
    /// What the platform takes of a request body: [`axum::body::Body`] leaves it unread,
    /// [`axum::body::Bytes`] reads it whole.
    type Body: FromRequest<Arc<Self>> + Send;
    /// The platform's counters.
    type Stats;

    /// The shared server state the platform was built with ([`Binding::serve`]).
    fn server(&self) -> &Server;

    /// Answers one request; the server has counted it and added its latency already.
    fn answer(&self, request: &Request, body: Self::Body) -> Response;

    /// The server's counters and the platform's own.
    fn stats(&self) -> Self::Stats;
}

/// The parts of a request every platform looks at.
#[derive(Debug)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The request target exactly as received.
    pub uri: Uri,
    /// The headers.
    pub headers: HeaderMap,
}

/// An error answer of a platform: its status, its message for the log, and its body.
pub trait Failure: Display + IntoResponse {
    /// The HTTP status of the answer.
    fn status(&self) -> StatusCode;
}

impl Request {
    /// Logs the outcome at debug level (`<platform> simulator request`, with the error when there
    /// is one) and answers it.
    pub(crate) fn respond<E: Failure>(
        &self,
        platform: &str,
        outcome: Result<Response, E>,
    ) -> Response {
        let (method, path) = (&self.method, self.uri.path());
        match outcome {
            Ok(response) => {
                tracing::debug!(%method, path, status = 200, "{platform} simulator request");
                response
            }
            Err(e) => {
                let status = e.status().as_u16();
                tracing::debug!(%method, path, status, error = %e, "{platform} simulator request");
                e.into_response()
            }
        }
    }
}

/// Every request: counted, delayed by `--latency-ms` (and jitter), then answered by the platform.
async fn handle<P: Platform>(
    State(platform): State<Arc<P>>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: P::Body,
) -> Response {
    let server = platform.server();
    server.requests.bump();
    server.faults.delay().await;
    let request = Request {
        method,
        uri,
        headers,
    };
    platform.answer(&request, body)
}

/// The problems with the fault flags, each naming its flag.
pub(crate) fn fault_problems(faults: &FaultArgs) -> Vec<String> {
    faults::validate(faults)
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// The problem with ids `id_base..id_base + indicators` when they do not fit an `i64`.
pub(crate) fn id_overflow(id_base: i64, indicators: usize) -> Option<String> {
    i64::try_from(indicators)
        .ok()
        .and_then(|n| id_base.checked_add(n))
        .is_none()
        .then(|| {
            format!("--id-base {id_base} plus --indicators {indicators} overflows a 64-bit id")
        })
}

/// The problems with the credentials a simulator accepts: an id (`id_flag`) that is empty or
/// holds a `:`, an empty secret (`secret_flag`).
pub(crate) fn credential_problems(
    (id_flag, id): (&str, &str),
    (secret_flag, secret): (&str, &str),
) -> Vec<String> {
    let mut p = Vec::new();
    if id.is_empty() || id.contains(':') {
        p.push(format!(
            "{id_flag} must be non-empty and must not contain ':'"
        ));
    }
    if secret.is_empty() {
        p.push(format!("{secret_flag} must not be empty"));
    }
    p
}

/// A page-size parameter: an integer from 1 to `max` (surrounding blanks allowed).
pub fn page_size(value: &str, max: usize) -> Option<usize> {
    value
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=max).contains(n))
}

/// A simulator whose address is bound but which does not serve yet: the platform builds its
/// data in between, knowing the address its clients will use.
pub struct Binding {
    listener: TcpListener,
    addr: SocketAddr,
    server: Server,
}

/// The first half of a simulator's `start`: refuses `problems` (every problem with the
/// arguments, each naming its flag) as [`io::ErrorKind::InvalidInput`], seeds fault injection
/// from `seed`, and binds `listen`.
pub async fn bind(
    listen: SocketAddr,
    seed: u64,
    faults: &FaultArgs,
    problems: Vec<String>,
) -> io::Result<Binding> {
    if !problems.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            problems.join("; "),
        ));
    }
    let injector = Faults::new(faults, seed ^ FAULT_SEED)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    Ok(Binding {
        listener,
        addr,
        server: Server::new(injector, faults.mutate_per_page),
    })
}

impl Binding {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The second half of `start`: builds the platform on the shared server state and serves it
    /// until the handle shuts it down (or is dropped).
    pub fn serve<P: Platform>(self, platform: impl FnOnce(Server) -> P) -> SimHandle<P> {
        let platform = Arc::new(platform(self.server));
        let router = Router::new()
            .fallback(handle::<P>)
            .with_state(platform.clone());
        let token = CancellationToken::new();
        let stop = token.clone().cancelled_owned();
        let listener = self.listener;
        let task = tokio::spawn(
            async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(stop)
                    .await
            }
            .in_current_span(),
        );
        let addr = self.addr;
        tracing::debug!(%addr, "{} simulator started", P::NAME);
        SimHandle {
            addr,
            platform,
            token,
            task,
        }
    }
}

/// A running simulator.
pub struct SimHandle<P> {
    addr: SocketAddr,
    platform: Arc<P>,
    token: CancellationToken,
    task: tokio::task::JoinHandle<io::Result<()>>,
}

impl<P: Platform> SimHandle<P> {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`: the base URL a client is configured with.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The platform being served, for its own handle methods.
    pub(crate) fn platform(&self) -> &P {
        &self.platform
    }

    /// Changes the mutation rate at run time (tests turn mutation off before a final catch-up run).
    pub fn set_mutate_per_page(&self, k: usize) {
        self.platform
            .server()
            .mutate_per_page
            .store(k, Ordering::SeqCst);
    }

    /// Counters; see the platform's `SimStats`.
    pub fn stats(&self) -> P::Stats {
        self.platform.stats()
    }

    /// Stops accepting requests, lets in-flight ones finish, and waits for the server task.
    pub async fn shutdown(mut self) {
        self.token.cancel();
        match (&mut self.task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "{} simulator stopped with an error", P::NAME),
            Err(e) => tracing::warn!(error = %e, "{} simulator task failed", P::NAME),
        }
    }

    /// The CLI's part of `run`: prints the bound address (`127.0.0.1:PORT`, nothing else) as the
    /// FIRST line of stdout and flushes, calls `listening` (the platform's log line), serves until
    /// SIGINT/SIGTERM, shuts down, and returns the final counters.
    pub(crate) async fn serve_until_signal(
        self,
        listening: impl FnOnce(&Self),
    ) -> io::Result<P::Stats> {
        // Handlers first: a client may signal as soon as it reads the address.
        let stop = crate::signal::shutdown_token();
        crate::signal::announce_address(self.addr)?;
        listening(&self);
        stop.cancelled().await;
        let stats = self.stats();
        self.shutdown().await;
        Ok(stats)
    }
}

impl<P> Drop for SimHandle<P> {
    fn drop(&mut self) {
        // A handle dropped without `shutdown` must not leave a server running.
        self.token.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argument_problems_name_their_flags() {
        assert_eq!(id_overflow(1, 10), None);
        let overflow = id_overflow(i64::MAX - 5, 10).unwrap_or_default();
        assert!(overflow.contains("--id-base") && overflow.contains("--indicators"));
        assert!(credential_problems(("--id", "a"), ("--secret", "s")).is_empty());
        let p = credential_problems(("--id", "a:b"), ("--secret", ""));
        assert_eq!(
            p,
            vec![
                "--id must be non-empty and must not contain ':'".to_owned(),
                "--secret must not be empty".to_owned()
            ]
        );
        assert!(fault_problems(&FaultArgs::default()).is_empty());
    }

    #[test]
    fn page_sizes_are_bounded() {
        assert_eq!(page_size(" 10 ", 10), Some(10));
        for bad in ["0", "11", "-1", "x", ""] {
            assert_eq!(page_size(bad, 10), None, "{bad}");
        }
    }
}
