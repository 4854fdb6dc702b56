//! The HTTP machinery every platform shares: TLS (`ssl`), proxy, timeout, retries with jittered
//! backoff (this file), the `ssl` settings as rustls configuration (`tls.rs`) and the request
//! tracer (`trace.rs`).
//!
//! Platforms hand [`HttpClient::send`] a closure that builds a fresh request per attempt (so a
//! ThreatConnect signature is recomputed with a fresh timestamp every time) and get back the whole
//! response, or a classified [`HttpError`]: 429 honours `Retry-After`; 5xx, timeouts and
//! connection errors are retried; 401/403 and other 4xx are not.

mod pool;
mod tls;
mod trace;

pub use pool::{BodyPool, PageText};

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use reqwest::header::HeaderMap;

use tls::tls_config;
pub(crate) use trace::{RequestTracer, TraceRequest};

use crate::config::HttpConfig;
use crate::config::size::{MIB, format_size};
use crate::pem::PemError;
use crate::redact::Secrets;
use crate::telemetry::{HttpRequested, HttpRetried};
use crate::text::bound_owned;

/// A problem turning `ssl`/`proxy_url` settings into a client. Names the field.
#[derive(Debug, thiserror::Error)]
pub enum HttpBuildError {
    /// A PEM file or inline PEM could not be read or holds nothing usable.
    #[error("ssl.{field}: {source}")]
    Pem {
        /// `certificate_authorities`, `certificate` or `key`.
        field: &'static str,
        /// What went wrong (a path at most, never key material).
        source: PemError,
    },
    /// The PEM parsed, but TLS cannot use it (a CA rustls refuses, a key that does not match).
    #[error("ssl.{field}: {message}")]
    Tls {
        /// `certificate_authorities` or `key`.
        field: &'static str,
        /// rustls' reason (never key material).
        message: String,
    },
    /// The proxy URL was refused.
    #[error("proxy_url: {0}")]
    Proxy(String),
    /// TLS or client construction failed.
    #[error("http client: {0}")]
    Client(String),
    /// The request tracer file could not be opened.
    #[error("enable_request_tracer: cannot open {path}: {source}")]
    Tracer {
        /// The trace file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

pub use crate::error::{Classify, ErrorKind};

/// A request that did not produce a 2xx response, after the retries allowed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HttpError {
    /// 401 or 403: credentials or permissions were refused. Never retried.
    #[error("{status}: credentials rejected: {message}")]
    Unauthorized {
        /// HTTP status.
        status: u16,
        /// The server's explanation.
        message: String,
    },
    /// 429 on the last attempt.
    #[error("rate limited (429), retry after {retry_after:?}: {message}")]
    RateLimited {
        /// The server's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
        /// The server's explanation.
        message: String,
    },
    /// 5xx on the last attempt.
    #[error("server error {status}: {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The server's explanation.
        message: String,
    },
    /// Another 4xx: the request itself is wrong (bad TQL, unknown collection). Never retried.
    #[error("request refused {status}: {message}")]
    Client {
        /// HTTP status.
        status: u16,
        /// The server's explanation.
        message: String,
    },
    /// Timeout, connection refused, TLS failure...
    #[error("request failed: {0}")]
    Transport(String),
    /// The body grew past its limit (or its `Content-Length` announced that it would). Not
    /// retried here: the same page comes back as large; the poll loop's backoff tries later.
    #[error("response body exceeds {limit}")]
    TooLarge {
        /// HTTP status of the oversized answer.
        status: u16,
        /// The limit that was hit.
        limit: BodyLimit,
    },
    /// A 3xx that was not followed: the token exchange follows none, and other requests only
    /// those that stay on their origin. Never retried.
    #[error("redirect ({status}) to {target} refused: {reason}")]
    Redirect {
        /// The 3xx status.
        status: u16,
        /// The target's origin, `scheme://host:port` (never its path or query).
        target: String,
        /// Which rule refused it.
        reason: &'static str,
    },
}

impl Classify for HttpError {
    /// Retry later, or fail the input.
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Unauthorized { .. } | Self::Client { .. } | Self::Redirect { .. } => {
                ErrorKind::Fail
            }
            Self::RateLimited { .. }
            | Self::Server { .. }
            | Self::Transport(_)
            | Self::TooLarge { .. } => ErrorKind::Retry,
        }
    }
}

impl HttpError {
    /// The HTTP status, when there was a response.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Unauthorized { status, .. }
            | Self::Server { status, .. }
            | Self::Client { status, .. }
            | Self::Redirect { status, .. }
            | Self::TooLarge { status, .. } => Some(*status),
            Self::RateLimited { .. } => Some(429),
            Self::Transport(_) => None,
        }
    }

    /// The same error with `secrets` masked in every text that came from the server.
    pub(crate) fn masked(self, secrets: &Secrets) -> Self {
        let mask = |m: String| secrets.mask_owned(m);
        match self {
            Self::Unauthorized { status, message } => Self::Unauthorized {
                status,
                message: mask(message),
            },
            Self::RateLimited {
                retry_after,
                message,
            } => Self::RateLimited {
                retry_after,
                message: mask(message),
            },
            Self::Server { status, message } => Self::Server {
                status,
                message: mask(message),
            },
            Self::Client { status, message } => Self::Client {
                status,
                message: mask(message),
            },
            Self::Transport(message) => Self::Transport(mask(message)),
            other @ (Self::TooLarge { .. } | Self::Redirect { .. }) => other,
        }
    }

    /// Whether [`HttpClient`] itself retries this failure (429, 5xx, transport), rather than
    /// leaving it to the caller: a refused redirect answers the same way every time.
    fn retried_by_client(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. } | Self::Server { .. } | Self::Transport(_)
        )
    }
}

/// How large a response body may grow, and which setting says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit {
    /// Bytes.
    pub max: u64,
    /// What the limit is called in messages (`max_response_size`).
    pub name: &'static str,
}

impl std::fmt::Display for BodyLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, format_size(self.max))
    }
}

/// The token endpoint's answer: a few hundred bytes in practice.
pub(crate) const TOKEN_RESPONSE_LIMIT: BodyLimit = BodyLimit {
    max: MIB,
    name: "the token response limit",
};

/// The most of a non-2xx body that is read; the rest is dropped (only a bounded message is
/// taken from it).
pub(crate) const ERROR_BODY_LIMIT: u64 = MIB;

/// A successful response, fully read.
#[derive(Debug)]
pub struct Response {
    /// HTTP status (2xx).
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Vec<u8>,
}

/// Retry schedule for one request: exponential with full jitter.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// First delay.
    pub min_delay: Duration,
    /// Upper bound of a delay (also caps `Retry-After`).
    pub max_delay: Duration,
    /// Attempts in total, including the first.
    pub max_attempts: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(60),
            max_attempts: 5,
        }
    }
}

impl RetryPolicy {
    /// How long to wait after `error` before the next attempt: the server's `Retry-After` of
    /// a 429 (capped at `max_delay`) in place of the backoff's `backoff`.
    pub(crate) fn wait(&self, error: &HttpError, backoff: Duration) -> Duration {
        match error {
            HttpError::RateLimited {
                retry_after: Some(after),
                ..
            } => (*after).min(self.max_delay),
            _ => backoff,
        }
    }

    fn backoff(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_attempts.saturating_sub(1))
            .with_jitter()
            .build()
    }
}

/// An HTTP client built once from the stream's settings.
#[derive(Clone)]
pub struct HttpClient {
    /// API requests: redirects are followed only within their origin.
    client: reqwest::Client,
    /// Requests that carry credentials in their body (the OAuth2 token exchange): reqwest
    /// re-sends a body on 307/308, so no redirect is followed at all.
    credentials: reqwest::Client,
    /// `max_response_size`, for API pages.
    page_limit: BodyLimit,
    retry: RetryPolicy,
    tracer: Option<Arc<RequestTracer>>,
    secrets: Secrets,
    /// Retryable failures met (429, 5xx, transport), over every clone of this client: the
    /// pushback signal that adaptive concurrency reads.
    pushback: Arc<std::sync::atomic::AtomicU64>,
    /// The platform's short name, labelling this client's requests in the metrics.
    platform: &'static str,
    /// Spent page bodies, reused by the next pages of a sweep.
    bodies: Arc<BodyPool>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("page_limit", &self.page_limit)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// Builds the client: TLS per `ssl`, `proxy_url`, `http_client_timeout`, and the tracer
    /// (writing to `trace_path` when `enable_request_tracer` is on). `secrets` are masked in
    /// every trace line (in addition to the headers and fields that are always redacted) and
    /// in the client's own log lines; the stream's source masks its errors with them too.
    pub fn build(
        cfg: &HttpConfig,
        trace_path: Option<&Path>,
        secrets: Secrets,
    ) -> Result<Self, HttpBuildError> {
        let tls = tls_config(&cfg.ssl)?;
        let client = reqwest_client(cfg, tls.clone(), same_origin_redirects())?;
        let credentials = reqwest_client(cfg, tls, reqwest::redirect::Policy::none())?;
        let tracer = match (cfg.enable_request_tracer, trace_path) {
            (true, Some(path)) => Some(Arc::new(RequestTracer::open(path, secrets.clone())?)),
            _ => None,
        };
        Ok(Self {
            client,
            credentials,
            page_limit: BodyLimit {
                max: cfg.max_response_size,
                name: "max_response_size",
            },
            retry: RetryPolicy::default(),
            tracer,
            secrets,
            pushback: Arc::default(),
            platform: "unknown",
            bodies: Arc::new(BodyPool::new(
                usize::try_from(cfg.max_response_size).unwrap_or(usize::MAX),
            )),
        })
    }

    /// The stream's secrets, masked in the tracer, in this client's logs and (by the source)
    /// in every error of the stream. A fetched access token is added here.
    pub(crate) fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// Labels this client's requests with the platform's short name in the metrics.
    pub(crate) fn with_platform(mut self, platform: &'static str) -> Self {
        self.platform = platform;
        self
    }

    /// Replaces the retry schedule (tests use short delays).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Where page texts give their buffers back, for the next pages to reuse once every item
    /// of a page is done with it.
    pub(crate) fn page_pool(&self) -> Arc<BodyPool> {
        Arc::clone(&self.bodies)
    }

    /// Drops the page buffers kept for reuse (the stream has caught up and rests).
    pub(crate) fn release_page_buffers(&self) {
        self.bodies.release();
    }

    /// How many spent page buffers this client and its clones keep for the next pages.
    pub fn kept_page_buffers(&self) -> usize {
        self.bodies.kept()
    }

    /// How many retryable failures (429, 5xx, transport) this client and its clones have met.
    pub(crate) fn pushback(&self) -> u64 {
        self.pushback.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sends the request that `build` makes, retrying transient failures with jittered
    /// exponential backoff. `build` runs once per attempt. Any non-2xx answer is an error.
    /// Redirects are followed only within the request's origin.
    pub async fn send<F>(&self, build: F) -> Result<Response, HttpError>
    where
        F: FnMut(&reqwest::Client) -> Result<reqwest::Request, HttpError>,
    {
        let response = self.send_with(Exchange::Api, build).await?;
        if (200..300).contains(&response.status) {
            Ok(response)
        } else {
            Err(classify(
                response.status,
                &response.headers,
                &response.body,
                &self.secrets,
            ))
        }
    }

    /// Sends a request that carries credentials in its body (the OAuth2 token exchange): no
    /// redirect is followed (a 3xx is [`HttpError::Redirect`]), and a non-retryable answer
    /// (anything but 429 and 5xx) is returned as it is, for protocols that read error bodies
    /// themselves.
    pub(crate) async fn send_credentials<F>(&self, build: F) -> Result<Response, HttpError>
    where
        F: FnMut(&reqwest::Client) -> Result<reqwest::Request, HttpError>,
    {
        self.send_with(Exchange::Credentials, build).await
    }

    async fn send_with<F>(&self, exchange: Exchange, mut build: F) -> Result<Response, HttpError>
    where
        F: FnMut(&reqwest::Client) -> Result<reqwest::Request, HttpError>,
    {
        let client = match exchange {
            Exchange::Api => &self.client,
            Exchange::Credentials => &self.credentials,
        };
        self.retrying(|| {
            let request = build(client);
            async move {
                let request = request?;
                let started = std::time::Instant::now();
                let answer = self.attempt(client, exchange, request).await;
                HttpRequested {
                    platform: self.platform,
                    status: answer.as_ref().ok().map(|r| r.status),
                    elapsed: started.elapsed(),
                }
                .emit();
                Ok(answer)
            }
        })
        .await
    }

    /// The retry loop of [`send`](Self::send), apart from the network: `attempt` makes one
    /// try, until an answer is not retried (neither 429 nor 5xx), an error is not retried by
    /// the client, or the policy's attempts are spent. Between tries it sleeps, on
    /// `tokio::time`, [`RetryPolicy::wait`]. An `Err` of `attempt` itself (a request that could
    /// not be built) ends the loop at once.
    async fn retrying<A, Fut>(&self, mut attempt: A) -> Result<Response, HttpError>
    where
        A: FnMut() -> Fut,
        Fut: Future<Output = Result<Result<Response, HttpError>, HttpError>>,
    {
        let mut delays = self.retry.backoff();
        loop {
            let error = match attempt().await? {
                Ok(resp) if !is_retryable_status(resp.status) => return Ok(resp),
                Ok(resp) => classify(resp.status, &resp.headers, &resp.body, &self.secrets),
                Err(e) if !e.retried_by_client() => return Err(e),
                Err(e) => e,
            };
            self.pushback
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(backoff) = delays.next() else {
                return Err(error);
            };
            let delay = self.retry.wait(&error, backoff);
            HttpRetried {
                platform: self.platform,
                retry_in: delay,
                error: &self.secrets.mask(&error.to_string()),
            }
            .emit();
            // An API that fails may stay down for hours: the stream keeps no spare page
            // buffer while it waits.
            self.bodies.release();
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(
        &self,
        client: &reqwest::Client,
        exchange: Exchange,
        request: reqwest::Request,
    ) -> Result<Response, HttpError> {
        let url = request.url().clone();
        let trace = self.tracer.as_ref().map(|t| t.request_line(&request));
        let fail = |trace: Option<TraceRequest>, err: HttpError| {
            if let (Some(t), Some(line)) = (&self.tracer, trace) {
                t.write(line, None, None, Some(&err.to_string()));
            }
            Err(err)
        };
        let response = match client.execute(request).await {
            Ok(r) => r,
            Err(e) => {
                return fail(
                    trace,
                    refused_redirect(&e)
                        .unwrap_or_else(|| HttpError::Transport(describe_reqwest_error(&e))),
                );
            }
        };
        let status = response.status().as_u16();
        if exchange == Exchange::Credentials && response.status().is_redirection() {
            let target = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| url.join(l).ok())
                .map_or_else(|| "(no Location header)".to_owned(), |u| origin(&u));
            return fail(
                trace,
                HttpError::Redirect {
                    status,
                    target,
                    reason: "this request carries credentials and follows no redirect",
                },
            );
        }
        let headers = response.headers().clone();
        let (limit, pool) = match exchange {
            Exchange::Api => (self.page_limit, Some(&*self.bodies)),
            Exchange::Credentials => (TOKEN_RESPONSE_LIMIT, None),
        };
        let body = match read_body(response, limit, pool).await {
            Ok(b) => b,
            Err(e) => return fail(trace, e),
        };
        if let (Some(t), Some(line)) = (&self.tracer, trace) {
            t.write(line, Some((status, &headers)), Some(&body), None);
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// Reads a body chunk by chunk. A 2xx body over `limit` fails (early when its `Content-Length`
/// says so); a non-2xx body is cut at [`ERROR_BODY_LIMIT`]. The buffer never grows past its
/// limit, whatever the server streams. A 2xx body goes into a spent buffer of `pool` when it
/// has one.
async fn read_body(
    mut response: reqwest::Response,
    limit: BodyLimit,
    pool: Option<&BodyPool>,
) -> Result<Vec<u8>, HttpError> {
    let status = response.status().as_u16();
    let success = response.status().is_success();
    let max = if success { limit.max } else { ERROR_BODY_LIMIT };
    let too_large = || HttpError::TooLarge { status, limit };
    if success && response.content_length().is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    // A declared length (already checked against the limit) sizes the buffer once: growing it
    // by doubling would hold a page nearly twice while it is copied. Pages are touched only as
    // bytes arrive, so a length the server then does not send costs address space, not memory.
    let expected = match response.content_length() {
        Some(n) if success => usize::try_from(n).unwrap_or(max),
        Some(n) => usize::try_from(n).unwrap_or(0).min(MIB as usize),
        None => 0,
    };
    let mut body = match pool {
        Some(pool) if success => pool.take(expected.min(max)),
        _ => Vec::with_capacity(expected.min(max)),
    };
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| HttpError::Transport(describe_reqwest_error(&e)))?
    {
        let room = max - body.len();
        if chunk.len() > room {
            if success {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk[..room]);
            break;
        }
        if body.capacity() - body.len() < chunk.len() {
            // Double, as Vec would, but never past the limit.
            let target = (body.capacity() * 2).max(body.len() + chunk.len()).min(max);
            body.reserve_exact(target - body.len());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// What a request is, which decides the redirects it may follow and how large its answer may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exchange {
    /// An API page: redirects within its origin (scheme, host and port), at most
    /// [`MAX_REDIRECTS`]; a body up to `max_response_size`.
    Api,
    /// Credentials in the body (the token exchange): no redirect; a body up to
    /// [`TOKEN_RESPONSE_LIMIT`].
    Credentials,
}

/// The most same-origin redirects one request follows.
const MAX_REDIRECTS: usize = 10;

/// One reqwest client for `cfg`: TLS, proxy, timeouts and the given redirect policy.
fn reqwest_client(
    cfg: &HttpConfig,
    tls: rustls::ClientConfig,
    redirects: reqwest::redirect::Policy,
) -> Result<reqwest::Client, HttpBuildError> {
    let builder = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(redirects)
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout.min(Duration::from_secs(30)))
        .user_agent(concat!("ti-sidecar/", env!("CARGO_PKG_VERSION")));
    let builder = match &cfg.proxy_url {
        Some(url) => builder.proxy(
            reqwest::Proxy::all(url.as_str()).map_err(|e| HttpBuildError::Proxy(e.to_string()))?,
        ),
        // Like Beats: without proxy_url, the environment's HTTP(S)_PROXY still applies.
        None => builder,
    };
    builder
        .build()
        .map_err(|e| HttpBuildError::Client(e.to_string()))
}

/// Follows a redirect only when it stays on the origin it comes from: a request's headers
/// (Authorization, a signature) never reach another host, and https never drops to http.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let target = attempt.url();
        let from = attempt.previous().last();
        let refusal = if from.is_some_and(|f| f.scheme() == "https" && target.scheme() == "http") {
            Some("https never drops to http")
        } else if from.is_none_or(|f| f.origin() != target.origin()) {
            Some("only redirects within the same origin are followed")
        } else if attempt.previous().len() > MAX_REDIRECTS {
            Some("more than 10 redirects")
        } else {
            None
        };
        match refusal {
            None => attempt.follow(),
            Some(reason) => {
                let refused = RefusedRedirect {
                    status: attempt.status().as_u16(),
                    target: origin(target),
                    reason,
                };
                attempt.error(refused)
            }
        }
    })
}

/// The redirect policy's refusal, carried through reqwest's error to [`refused_redirect`].
#[derive(Debug, thiserror::Error)]
#[error("redirect ({status}) to {target} refused: {reason}")]
struct RefusedRedirect {
    status: u16,
    target: String,
    reason: &'static str,
}

/// The [`HttpError::Redirect`] a reqwest error stands for, if the redirect policy refused.
fn refused_redirect(e: &reqwest::Error) -> Option<HttpError> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<RefusedRedirect>() {
            return Some(HttpError::Redirect {
                status: r.status,
                target: r.target.clone(),
                reason: r.reason,
            });
        }
        source = s.source();
    }
    None
}

/// `scheme://host:port` of a URL: where it goes, without the path or query that could carry
/// a token.
pub(crate) fn origin(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port_or_known_default() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

fn is_retryable_status(status: u16) -> bool {
    status == 429 || (500..=599).contains(&status)
}

/// The error a non-2xx answer means; `secrets` are masked in the server's text.
fn classify(status: u16, headers: &HeaderMap, body: &[u8], secrets: &Secrets) -> HttpError {
    let message = error_message(body, status, secrets);
    match status {
        401 | 403 => HttpError::Unauthorized { status, message },
        429 => HttpError::RateLimited {
            retry_after: retry_after(headers),
            message,
        },
        500..=599 => HttpError::Server { status, message },
        _ => HttpError::Client { status, message },
    }
}

/// reqwest's error text, with its source chain, but never the URL's query (which can carry tokens
/// on some platforms).
fn describe_reqwest_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "transport error"
    };
    let mut text = kind.to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    if let Some(url) = e.url() {
        text.push_str(&format!(
            " ({}://{}{})",
            url.scheme(),
            url.host_str().unwrap_or(""),
            url.path()
        ));
    }
    // The chain can quote what the peer sent (a malformed header, a TLS alert text).
    bound_owned(text)
}

/// The platform's explanation: `message` of a JSON error body, else the body text, cut to
/// [`crate::text::MAX_SERVER_TEXT`]. A server can echo what it was sent: `secrets` are masked
/// before the cut, so no piece of one is left at the edge.
fn error_message(body: &[u8], status: u16, secrets: &Secrets) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        for key in ["message", "error_description", "error"] {
            if let Some(m) = v.get(key).and_then(|m| m.as_str()) {
                return secrets.mask_bounded(m);
            }
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        format!("HTTP {status}")
    } else {
        secrets.mask_bounded(text)
    }
}

/// `Retry-After` as seconds or an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The server's clock from the `Date` header, if it sent one.
pub(crate) fn server_date(headers: &HeaderMap) -> Option<chrono::DateTime<chrono::Utc>> {
    let value = headers.get(reqwest::header::DATE)?.to_str().ok()?;
    httpdate::parse_http_date(value)
        .ok()
        .map(chrono::DateTime::<chrono::Utc>::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_date() {
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
    }

    /// A client whose retries start at 10 ms and are capped at 2 s, over 4 attempts.
    fn retrying_client() -> HttpClient {
        let cfg = HttpConfig {
            timeout: Duration::from_secs(5),
            proxy_url: None,
            ssl: crate::config::SslConfig::default(),
            enable_request_tracer: false,
            max_response_size: crate::config::size::default_max_response_size(),
        };
        HttpClient::build(&cfg, None, Secrets::default())
            .unwrap()
            .with_retry(RetryPolicy {
                min_delay: Duration::from_millis(10),
                max_delay: Duration::from_secs(2),
                max_attempts: 4,
            })
    }

    fn answer(status: u16, retry_after: Option<&str>) -> Response {
        let mut headers = HeaderMap::new();
        if let Some(after) = retry_after {
            headers.insert(reqwest::header::RETRY_AFTER, after.parse().unwrap());
        }
        Response {
            status,
            headers,
            body: Vec::new(),
        }
    }

    /// Runs the retry loop over `answers` (in memory, on the paused clock); returns the final
    /// status (or error) and when each attempt was made, from the start.
    async fn attempts_over(answers: Vec<Response>) -> (Result<u16, HttpError>, Vec<Duration>) {
        let (result, asked) = attempts_with(&retrying_client(), answers).await;
        (result, asked.into_iter().map(|(at, _)| at).collect())
    }

    /// [`attempts_over`] on `client`, with the spare page buffers it kept at each attempt.
    async fn attempts_with(
        client: &HttpClient,
        answers: Vec<Response>,
    ) -> (Result<u16, HttpError>, Vec<(Duration, usize)>) {
        let start = tokio::time::Instant::now();
        let mut answers = answers.into_iter();
        let mut asked = Vec::new();
        let result = client
            .retrying(|| {
                asked.push((start.elapsed(), client.kept_page_buffers()));
                let next = answers.next().expect("an answer for every attempt");
                async move { Ok(Ok(next)) }
            })
            .await;
        (result.map(|r| r.status), asked)
    }

    /// `at` is within the millisecond the paused clock rounds a timer to.
    fn about(at: Duration, expected: Duration) -> bool {
        at >= expected && at < expected + Duration::from_millis(2)
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_waits_its_retry_after_instead_of_the_backoff() {
        let (result, asked) = attempts_over(vec![answer(429, Some("1")), answer(200, None)]).await;
        assert_eq!(result.unwrap(), 200);
        assert_eq!(asked.len(), 2);
        // The backoff alone would wait 10 to 20 ms; Retry-After says one second.
        assert!(about(asked[1], Duration::from_secs(1)), "{asked:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_capped_at_the_longest_delay() {
        let (result, asked) =
            attempts_over(vec![answer(429, Some("3600")), answer(200, None)]).await;
        assert_eq!(result.unwrap(), 200);
        assert!(about(asked[1], Duration::from_secs(2)), "{asked:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn without_retry_after_the_jittered_backoff_doubles_until_the_attempts_are_spent() {
        let (result, asked) = attempts_over(vec![
            answer(503, None),
            answer(429, None),
            answer(500, None),
            answer(502, None),
        ])
        .await;
        assert!(
            matches!(result, Err(HttpError::Server { status: 502, .. })),
            "{result:?}"
        );
        assert_eq!(asked.len(), 4, "max_attempts in all");
        let waits: Vec<Duration> = asked.windows(2).map(|w| w[1] - w[0]).collect();
        // Each delay is its doubling step plus up to as much jitter: 10, 20, 40 ms.
        for (wait, step) in waits.iter().zip([10, 20, 40]) {
            let step = Duration::from_millis(step);
            assert!(
                *wait >= step && *wait <= 2 * step + Duration::from_millis(2),
                "{waits:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn spare_page_buffers_are_let_go_while_a_failing_api_is_waited_for() {
        let client = retrying_client();
        client.bodies.give(Vec::with_capacity(1 << 20));
        let (result, asked) =
            attempts_with(&client, vec![answer(503, None), answer(200, None)]).await;
        assert_eq!(result.unwrap(), 200);
        let kept: Vec<usize> = asked.iter().map(|(_, kept)| *kept).collect();
        assert_eq!(kept, [1, 0], "kept until the first failure, then let go");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_cannot_be_built_is_not_retried() {
        let client = retrying_client();
        let mut calls = 0;
        let err = client
            .retrying(|| {
                calls += 1;
                async { Err(HttpError::Transport("no request".into())) }
            })
            .await
            .unwrap_err();
        assert!(matches!(err, HttpError::Transport(_)), "{err}");
        assert_eq!(calls, 1);
    }

    #[test]
    fn origins_have_an_explicit_port_and_no_path_or_query() {
        let o = |u: &str| origin(&url::Url::parse(u).unwrap());
        assert_eq!(o("https://[::1]/a?token=x"), "https://[::1]:443");
        assert_eq!(
            o("http://user:pw@h.example:8080/a#f"),
            "http://h.example:8080"
        );
    }

    #[test]
    fn error_kinds() {
        assert_eq!(
            HttpError::Unauthorized {
                status: 401,
                message: String::new()
            }
            .kind(),
            ErrorKind::Fail
        );
        assert_eq!(
            HttpError::Server {
                status: 503,
                message: String::new()
            }
            .kind(),
            ErrorKind::Retry
        );
        assert_eq!(
            HttpError::RateLimited {
                retry_after: None,
                message: String::new()
            }
            .kind(),
            ErrorKind::Retry
        );
    }
}
