//! A faithful fake of the ThreatQ REST API as the `ti_threatq` integration uses it: the OAuth2
//! client-credentials token endpoint (`POST /api/token`) and the data-collection query
//! (`GET /api/indicators/query/hash/{collection}`) with Solr-style `cursorMark` paging.
//!
//! It exists so that users can try the product without a ThreatQ instance
//! (`ti-sidecar simulate threatq`) and so that integration tests can drive the real client
//! through what goes wrong in production: tokens that expire or are revoked mid-run, a wrong
//! secret, an unknown collection, 429 and 5xx answers, and paging while indicators change.
//! Behaviour follows `shared/spec/threatq-api.md`; data is deterministic from `--seed`.
//!
//! Choices where the spec leaves room (all documented on the items below):
//! * the end of the data is answered with `"data": {}` (an empty *object*, as the real API and
//!   Elastic's mock do) and `nextCursorMark` equal to the mark sent (the Solr contract; the mock
//!   sends a new value, clients must accept both);
//! * `updated_at` is served at second precision, but changes made within one second are ordered
//!   by a hidden sub-second part, so a cursor never skips an indicator changed after it was
//!   issued (see [`SortKey`]).
//!
//! Pages are written from per-indicator renders cached in a [`RenderCache`] (see
//! `sim/page.rs`) and selected through an index ordered by [`SortKey`], so a page costs a copy
//! of its indicators, not a scan of the collection and a DOM. The HTTP server around it is
//! shared with the ThreatConnect simulator (`sim/server.rs`).

pub mod data;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, TimeDelta, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::sim::faults::{Fault, FaultArgs};
use crate::sim::lock;
use crate::sim::mutation::{self, MutableStore, Mutation};
use crate::sim::page::{self, JsonArray, Members, RenderCache};
use crate::sim::server::{self, Counter, Failure, Platform, Request, Server};
use data::Indicator;

/// The OAuth2 token endpoint.
const TOKEN_PATH: &str = "/api/token";
/// The data-collection query; the collection id (hash) follows.
const COLLECTION_PREFIX: &str = "/api/indicators/query/hash/";
/// The documented maximum page size (`limit`).
const MAX_LIMIT: usize = 1000;
/// The page size when `limit` is absent.
const DEFAULT_LIMIT: usize = 100;
/// The cursor that starts from the beginning.
const START_MARK: &str = "*";

/// Command-line arguments of `ti-sidecar simulate threatq`.
#[derive(Clone, clap::Args)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Number of indicators in the collection.
    #[arg(long, default_value_t = 1000)]
    pub indicators: usize,
    /// Seed for the deterministic data, tokens and fault injection.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// OAuth2 client id the simulator accepts.
    #[arg(long, default_value = "ti-sidecar-sim")]
    pub client_id: String,
    /// OAuth2 client secret the simulator accepts.
    #[arg(
        long,
        env = "TI_SIM_TQ_CLIENT_SECRET",
        default_value = "ti-sidecar-sim-secret",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub client_secret: String,
    /// The data collection id (hash) served; any other → 404.
    #[arg(long, default_value = "sim-collection")]
    pub collection: String,
    /// Lifetime of issued access tokens, in seconds (`expires_in`).
    #[arg(long, default_value_t = 3600)]
    pub token_ttl: u64,
    /// Fault injection and data size: `--latency-ms`, `--latency-jitter-ms`, `--error-rate`,
    /// `--rate-limit`, `--mutate-per-page`, `--rich-context`.
    #[command(flatten)]
    pub faults: FaultArgs,
    /// First indicator id.
    #[arg(long, default_value_t = 1)]
    pub id_base: i64,
}

/// Hand-written so that printing the arguments never shows the client secret.
impl std::fmt::Debug for SimArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimArgs")
            .field("listen", &self.listen)
            .field("indicators", &self.indicators)
            .field("seed", &self.seed)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
            .field("collection", &self.collection)
            .field("token_ttl", &self.token_ttl)
            .field("faults", &self.faults)
            .field("id_base", &self.id_base)
            .finish()
    }
}

impl Default for SimArgs {
    /// The command-line defaults (ignoring the environment).
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            indicators: 1000,
            seed: 1,
            client_id: "ti-sidecar-sim".into(),
            client_secret: "ti-sidecar-sim-secret".into(),
            collection: "sim-collection".into(),
            token_ttl: 3600,
            faults: FaultArgs::default(),
            id_base: 1,
        }
    }
}

impl SimArgs {
    /// Every problem with the arguments at once, each naming its flag.
    fn problems(&self) -> Vec<String> {
        let mut p = server::fault_problems(&self.faults);
        if self.id_base < 0 {
            p.push(format!(
                "--id-base must not be negative, got {}",
                self.id_base
            ));
        } else {
            p.extend(server::id_overflow(self.id_base, self.indicators));
        }
        p.extend(server::credential_problems(
            ("--client-id", &self.client_id),
            ("--client-secret", &self.client_secret),
        ));
        if self.collection.is_empty() || self.collection.contains('/') {
            p.push("--collection must be non-empty and must not contain '/'".into());
        }
        if self.token_ttl == 0 {
            p.push("--token-ttl must be at least 1 second".into());
        }
        p
    }
}

/// Counters of what the simulator did, for tests and for the shutdown log line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimStats {
    /// Requests received (any path, any outcome).
    pub requests: u64,
    /// Access tokens issued by `POST /api/token`.
    pub tokens_issued: u64,
    /// API requests answered 401 because the bearer token was missing, malformed, unknown,
    /// expired or revoked.
    pub token_rejected: u64,
    /// Token requests answered 401 `invalid_client` (wrong or missing client credentials).
    pub auth_rejected: u64,
    /// Successful `200` indicator pages served (including the final empty one).
    pub pages_served: u64,
    /// Requests answered with an injected 500/502/503.
    pub errors_injected: u64,
    /// Requests answered 429.
    pub rate_limited: u64,
    /// Indicators modified by `--mutate-per-page`.
    pub mutations: u64,
}

/// Why an API request's bearer token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum TokenRejected {
    #[error("The request has no Authorization header.")]
    Missing,
    #[error("The Authorization header does not use the Bearer scheme.")]
    Scheme,
    #[error("The access token is invalid or has been revoked.")]
    Unknown,
    #[error("The access token has expired.")]
    Expired,
}

/// Issued access tokens and their expiry instants (on `tokio::time`, so tests can pause time).
struct TokenStore {
    tokens: HashMap<String, Instant>,
    rng: ChaCha8Rng,
}

impl TokenStore {
    fn new(seed: u64) -> Self {
        Self {
            tokens: HashMap::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    fn random_token(&mut self, bytes: usize) -> String {
        let raw: Vec<u8> = (0..bytes).map(|_| self.rng.random()).collect();
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Issues `(access_token, refresh_token)` valid from `now` for `ttl`.
    fn issue(&mut self, now: Instant, ttl: Duration) -> (String, String) {
        // Forget expired tokens so a long-running simulator does not grow without bound.
        self.tokens.retain(|_, exp| *exp > now);
        let access = self.random_token(30);
        let refresh = self.random_token(30);
        // A huge --token-ttl saturates at a century instead of overflowing.
        let expiry = now
            .checked_add(ttl)
            .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
            .unwrap_or(now);
        self.tokens.insert(access.clone(), expiry);
        (access, refresh)
    }

    /// Accepts `token` at `now` if it was issued, not revoked, and has not reached its expiry.
    fn check(&self, token: &str, now: Instant) -> Result<(), TokenRejected> {
        match self.tokens.get(token) {
            None => Err(TokenRejected::Unknown),
            Some(expiry) if now >= *expiry => Err(TokenRejected::Expired),
            Some(_) => Ok(()),
        }
    }

    fn revoke_all(&mut self) {
        self.tokens.clear();
    }
}

/// The position of an indicator in the `sort=updated_at` order: `(updated_at, id)`.
///
/// `updated_at` is kept in microseconds. Generated data has whole seconds, so ties go by id;
/// a mutation sets `updated_at` to `max(now, newest key + 1 µs)`, so a changed indicator always
/// sorts after every cursor ever issued and is returned again (nothing is skipped, even when
/// the cursor points into the same second).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct SortKey {
    micros: i64,
    id: i64,
}

impl SortKey {
    fn of(ind: &Indicator) -> Self {
        Self {
            micros: ind.updated_at.timestamp_micros(),
            id: ind.id,
        }
    }

    /// The opaque `cursorMark`: standard base64 (with `+`, `/`, `=`, like Solr's marks, so a
    /// client must URL-encode it) of `<micros>|<id>`.
    fn to_mark(self) -> String {
        STANDARD.encode(format!("{}|{}", self.micros, self.id))
    }

    fn from_mark(mark: &str) -> Option<Self> {
        let raw = STANDARD.decode(mark.as_bytes()).ok()?;
        let text = std::str::from_utf8(&raw).ok()?;
        let (micros, id) = text.split_once('|')?;
        Some(Self {
            micros: micros.parse().ok()?,
            id: id.parse().ok()?,
        })
    }
}

/// The indicator store, its sort index and render cache, and the bookkeeping that mutation
/// needs.
struct Store {
    indicators: Vec<Indicator>,
    /// Every indicator's `(SortKey, index)`, in cursor order.
    by_key: BTreeSet<(SortKey, usize)>,
    /// What has been served, for `--mutate-per-page`.
    mutation: Mutation,
    /// The newest `updated_at` in the store; mutations go strictly after it.
    newest: DateTime<Utc>,
    /// Rendered [`Block`]s by indicator index, for the `fields` in `render_fields`.
    renders: RenderCache,
    /// The `fields` selection the cached renders were made for.
    render_fields: Option<Fields>,
}

impl Store {
    fn new(indicators: Vec<Indicator>, now: DateTime<Utc>, mutation_rng: ChaCha8Rng) -> Self {
        Self {
            by_key: indicators
                .iter()
                .enumerate()
                .map(|(i, ind)| (SortKey::of(ind), i))
                .collect(),
            mutation: Mutation::new(indicators.len(), mutation_rng),
            newest: indicators.iter().map(|i| i.updated_at).max().unwrap_or(now),
            renders: RenderCache::new(indicators.len(), Block::COUNT),
            render_fields: None,
            indicators,
        }
    }

    /// The indices of up to `limit` indicators strictly after `after`, in sort order.
    fn select_page(&self, after: Option<SortKey>, limit: usize) -> Vec<usize> {
        let from = match after {
            // Keys are unique per indicator, so `(after, MAX)` is past `after` itself.
            Some(a) => Bound::Excluded((a, usize::MAX)),
            None => Bound::Unbounded,
        };
        self.by_key
            .range((from, Bound::Unbounded))
            .take(limit)
            .map(|&(_, i)| i)
            .collect()
    }
}

impl MutableStore for Store {
    fn mutation(&mut self) -> &mut Mutation {
        &mut self.mutation
    }

    /// A new version whose key sorts after every existing one (hence after every cursor issued
    /// so far).
    fn change(&mut self, idx: usize, now: DateTime<Utc>) {
        let at = now.max(self.newest + TimeDelta::microseconds(1));
        self.newest = at;
        if let Some(ind) = self.indicators.get_mut(idx) {
            self.by_key.remove(&(SortKey::of(ind), idx));
            ind.mutate(at, self.mutation.rng());
            self.by_key.insert((SortKey::of(ind), idx));
            self.renders.invalidate(idx);
        }
    }
}

/// The simulated ThreatQ API: the client it accepts, the tokens it issued, and its collection.
pub struct ThreatQ {
    server: Server,
    client_id: String,
    client_secret: String,
    collection: String,
    token_ttl: Duration,
    tokens: Mutex<TokenStore>,
    store: Mutex<Store>,
    /// Access tokens issued.
    tokens_issued: Counter,
    /// API requests refused for their bearer token.
    token_rejected: Counter,
}

/// A running ThreatQ simulator.
pub type SimHandle = server::SimHandle<ThreatQ>;

impl SimHandle {
    /// `http://<addr>/api/token`: what a client puts in `token_url`.
    pub fn token_url(&self) -> String {
        format!("http://{}{TOKEN_PATH}", self.addr())
    }

    /// Current version of every indicator: (id, updated_at text as served), sorted by id.
    pub fn snapshot(&self) -> Vec<(i64, String)> {
        let store = lock(&self.platform().store);
        let mut v: Vec<(i64, String)> = store
            .indicators
            .iter()
            .map(|i| (i.id, i.updated_at_text()))
            .collect();
        v.sort_by_key(|(id, _)| *id);
        v
    }

    /// Invalidates every issued token now (the next API call gets 401), to test re-authentication.
    pub fn revoke_tokens(&self) {
        lock(&self.platform().tokens).revoke_all();
    }
}

/// Binds `args.listen`, spawns the server, returns at once.
pub async fn start(args: SimArgs) -> std::io::Result<SimHandle> {
    let binding = server::bind(args.listen, args.seed, &args.faults, args.problems()).await?;
    let now = Utc::now();
    let indicators = data::generate(args.indicators, args.seed, args.id_base, now);
    let rich = args.faults.rich_context;
    let mut store = Store::new(
        indicators
            .into_iter()
            .map(|i| i.with_rich_context(rich))
            .collect(),
        now,
        mutation::seeded_rng(args.seed),
    );
    // Render what ti-sidecar requests by default now, so that a first pass is as fast as later
    // ones; any other `fields` is rendered on first request.
    let fields = Fields::parse(&crate::source::threatq::config::default_threat_library_fields())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let store = tokio::task::spawn_blocking(move || {
        let inds = &store.indicators;
        store
            .renders
            .prerender(&Block::ALL.map(|b| b as usize), |i, b| {
                Block::ALL[b].render(&inds[i], &fields)
            });
        store.render_fields = Some(fields);
        store
    })
    .await?;
    Ok(binding.serve(|server| ThreatQ {
        server,
        client_id: args.client_id,
        client_secret: args.client_secret,
        collection: args.collection,
        token_ttl: Duration::from_secs(args.token_ttl),
        tokens: Mutex::new(TokenStore::new(args.seed ^ 0x746f_6b65_6e73)),
        store: Mutex::new(store),
        tokens_issued: Counter::default(),
        token_rejected: Counter::default(),
    }))
}

/// CLI entry: start, print the bound address (`127.0.0.1:PORT`) as the FIRST stdout line and
/// flush, log the base URL, token URL, collection and client id (never the secret), serve until
/// SIGINT/SIGTERM.
pub async fn run(args: SimArgs) -> std::io::Result<()> {
    let client_id = args.client_id.clone();
    let collection = args.collection.clone();
    let indicators = args.indicators;
    let stats = start(args)
        .await?
        .serve_until_signal(|handle| {
            tracing::info!(
                url = %handle.base_url(),
                token_url = %handle.token_url(),
                collection = %collection,
                client_id = %client_id,
                indicators = indicators as u64,
                "ThreatQ simulator listening; the client secret is --client-secret / TI_SIM_TQ_CLIENT_SECRET"
            );
        })
        .await?;
    tracing::info!(
        requests = stats.requests,
        tokens_issued = stats.tokens_issued,
        token_rejected = stats.token_rejected,
        auth_rejected = stats.auth_rejected,
        pages_served = stats.pages_served,
        errors_injected = stats.errors_injected,
        rate_limited = stats.rate_limited,
        mutations = stats.mutations,
        "ThreatQ simulator stopped"
    );
    Ok(())
}

/// Why a token request failed; rendered in the OAuth2 error shape (RFC 6749 §5.2).
#[derive(Debug, thiserror::Error)]
enum TokenError {
    #[error("Client authentication failed")]
    InvalidClient {
        /// The client tried HTTP Basic, so the answer carries `WWW-Authenticate: Basic`.
        basic: bool,
    },
    #[error("The authorization grant type \"{0}\" is not supported by the authorization server.")]
    UnsupportedGrantType(String),
    #[error("The request is missing a required parameter: grant_type")]
    MissingGrantType,
    #[error("Unsupported Content-Type \"{0}\": send application/x-www-form-urlencoded")]
    ContentType(String),
    #[error("The token endpoint only accepts POST, got {0}")]
    Method(String),
}

impl TokenError {
    fn code(&self) -> &'static str {
        match self {
            Self::InvalidClient { .. } => "invalid_client",
            Self::UnsupportedGrantType(_) => "unsupported_grant_type",
            Self::MissingGrantType | Self::ContentType(_) | Self::Method(_) => "invalid_request",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::InvalidClient { .. } => StatusCode::UNAUTHORIZED,
            Self::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for TokenError {
    fn into_response(self) -> Response {
        let mut resp = page::json_value(
            self.status(),
            &json!({"error": self.code(), "error_description": self.to_string()}),
        );
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if matches!(self, Self::InvalidClient { basic: true }) {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"ThreatQ\""),
            );
        }
        resp
    }
}

/// Why an API request failed.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("{0}")]
    Unauthorized(TokenRejected),
    #[error("No data collection with id \"{0}\"")]
    CollectionNotFound(String),
    #[error("Resource not found: {method} {path}")]
    NotFound { method: String, path: String },
    #[error("Method {0} is not allowed on this resource")]
    Method(String),
    #[error("Not acceptable: send \"Accept: application/json\", got {0:?}")]
    NotAcceptable(String),
    #[error("Invalid limit value \"{0}\": must be an integer from 1 to 1000")]
    Limit(String),
    #[error("Invalid sort value \"{0}\": only updated_at is supported with cursorMark")]
    Sort(String),
    #[error("Invalid cursorMark value \"{0}\"")]
    CursorMark(String),
    #[error("Invalid fields value \"{0}\"")]
    Field(String),
    #[error(transparent)]
    Fault(#[from] Fault),
}

impl Failure for ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::CollectionNotFound(_) | Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            Self::Limit(_) | Self::Sort(_) | Self::CursorMark(_) | Self::Field(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::Fault(f) => f.status(),
        }
    }
}

/// Echoed request values are cut short so that a huge parameter cannot blow up an error body.
fn echo(v: &str) -> String {
    v.chars().take(200).collect()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            // The resource server's OAuth2 shape; everything else uses ThreatQ's `errors` member.
            Self::Unauthorized(_) => {
                json!({"error": "access_denied", "error_description": self.to_string()})
            }
            _ => json!({"errors": [self.to_string()]}),
        };
        let mut resp = page::json_value(status, &body);
        match self {
            Self::Unauthorized(r) => {
                let v = if r == TokenRejected::Missing {
                    "Bearer realm=\"ThreatQ\""
                } else {
                    "Bearer realm=\"ThreatQ\", error=\"invalid_token\""
                };
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(v));
            }
            Self::Fault(f) => f.add_headers(&mut resp),
            _ => {}
        }
        resp
    }
}

impl Platform for ThreatQ {
    const NAME: &'static str = "threatq";
    /// Token requests carry their parameters in the body.
    type Body = Bytes;
    type Stats = SimStats;

    fn server(&self) -> &Server {
        &self.server
    }

    fn answer(&self, request: &Request, body: Bytes) -> Response {
        let Request { method, uri, .. } = request;
        // Faults hit before routing, as they would from a load balancer in front of ThreatQ.
        if let Err(f) = self.server.faults.check_request() {
            tracing::debug!(%method, path = uri.path(), status = f.status().as_u16(), "threatq simulator fault");
            return ApiError::Fault(f).into_response();
        }
        // Never log the query or body of a token request, nor any Authorization header.
        if uri.path() == TOKEN_PATH {
            return match token(self, request, &body) {
                Ok(resp) => {
                    tracing::debug!(
                        path = TOKEN_PATH,
                        status = 200,
                        "threatq simulator token issued"
                    );
                    resp
                }
                Err(e) => {
                    if matches!(e, TokenError::InvalidClient { .. }) {
                        self.server.count_auth_rejected();
                    }
                    tracing::debug!(path = TOKEN_PATH, status = e.status().as_u16(), error = %e, "threatq simulator token request");
                    e.into_response()
                }
            };
        }
        let outcome = indicators(self, request);
        if matches!(outcome, Err(ApiError::Unauthorized(_))) {
            self.token_rejected.bump();
        }
        request.respond(Self::NAME, outcome)
    }

    fn stats(&self) -> SimStats {
        let shared = self.server.stats();
        SimStats {
            requests: shared.requests,
            tokens_issued: self.tokens_issued.get(),
            token_rejected: self.token_rejected.get(),
            auth_rejected: shared.auth_rejected,
            pages_served: shared.pages_served,
            errors_injected: shared.errors_injected,
            rate_limited: shared.rate_limited,
            mutations: shared.mutations,
        }
    }
}

/// Compares without an early exit, so response timing does not reveal how much of a
/// guessed secret was right.
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `application/x-www-form-urlencoded` decoding of one component (`+` is a space).
fn form_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// Client credentials from `Authorization: Basic`. RFC 6749 §2.3.1 form-encodes id and secret
/// before base64 (Go's `oauth2` does); clients that do not are accepted too.
fn basic_credentials(value: &str) -> Option<Vec<(String, String)>> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = STANDARD.decode(rest.trim().as_bytes()).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some(vec![
        (id.to_owned(), secret.to_owned()),
        (form_decode(id), form_decode(secret)),
    ])
}

/// `POST /api/token`: OAuth2 client credentials with Basic or form-field client authentication.
fn token(s: &ThreatQ, request: &Request, body: &[u8]) -> Result<Response, TokenError> {
    let Request {
        method,
        uri,
        headers,
    } = request;
    if method != Method::POST {
        return Err(TokenError::Method(method.to_string()));
    }
    // Parameters from the query string first, then the body, whose values win.
    let mut params: HashMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    if !body.is_empty() {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        if mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            params.extend(url::form_urlencoded::parse(body).into_owned());
        } else if mime.eq_ignore_ascii_case("application/json") {
            // ThreatQ also takes JSON bodies (its password grant is documented that way).
            if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) {
                params.extend(
                    m.into_iter()
                        .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_owned()))),
                );
            }
        } else {
            return Err(TokenError::ContentType(echo(ct)));
        }
    }
    match params.get("grant_type").map(String::as_str) {
        None | Some("") => return Err(TokenError::MissingGrantType),
        Some("client_credentials") => {}
        Some(other) => return Err(TokenError::UnsupportedGrantType(echo(other))),
    }
    let authz = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""));
    let candidates = match authz {
        Some(v) => basic_credentials(v).ok_or(TokenError::InvalidClient { basic: true })?,
        None => match (params.get("client_id"), params.get("client_secret")) {
            (Some(id), Some(secret)) => vec![(id.clone(), secret.clone())],
            _ => return Err(TokenError::InvalidClient { basic: false }),
        },
    };
    let ok = candidates
        .iter()
        .any(|(id, secret)| id == &s.client_id && same_secret(secret, &s.client_secret));
    if !ok {
        return Err(TokenError::InvalidClient {
            basic: authz.is_some(),
        });
    }
    let (access, refresh) = lock(&s.tokens).issue(Instant::now(), s.token_ttl);
    s.tokens_issued.bump();
    // Written by hand to keep the real key order: access_token, token_type, expires_in,
    // refresh_token.
    let body = format!(
        "{{\"access_token\":{},\"token_type\":\"Bearer\",\"expires_in\":{},\"refresh_token\":{}}}",
        Value::String(access),
        s.token_ttl.as_secs(),
        Value::String(refresh)
    );
    let mut resp = page::json_bytes(StatusCode::OK, body.into_bytes());
    // RFC 6749 §5.1: token responses must not be cached.
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

/// `GET /api/indicators/query/hash/{collection}`: routing → bearer token → collection →
/// `Accept` → parameters → page.
fn indicators(s: &ThreatQ, request: &Request) -> Result<Response, ApiError> {
    let Request {
        method,
        uri,
        headers,
    } = request;
    let not_found = || ApiError::NotFound {
        method: method.to_string(),
        path: echo(uri.path()),
    };
    let raw_collection = uri
        .path()
        .strip_prefix(COLLECTION_PREFIX)
        .ok_or_else(not_found)?;
    if method != Method::GET {
        return Err(ApiError::Method(method.to_string()));
    }
    check_bearer(s, headers)?;
    let collection = form_decode(&raw_collection.replace('+', "%2B"));
    if collection != s.collection {
        return Err(ApiError::CollectionNotFound(echo(&collection)));
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !accept.to_ascii_lowercase().contains("application/json") {
        return Err(ApiError::NotAcceptable(echo(accept)));
    }
    let params = Params::parse(uri.query().unwrap_or(""))?;
    Ok(page(s, &params))
}

/// `Authorization: Bearer <token>`, with the scheme capitalised exactly (ThreatQ rejects
/// `bearer`, see API spec §1).
fn check_bearer(s: &ThreatQ, headers: &HeaderMap) -> Result<(), ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(ApiError::Unauthorized(TokenRejected::Missing))?
        .to_str()
        .map_err(|_| ApiError::Unauthorized(TokenRejected::Scheme))?;
    let token = value
        .strip_prefix("Bearer ")
        .ok_or(ApiError::Unauthorized(TokenRejected::Scheme))?
        .trim();
    lock(&s.tokens)
        .check(token, Instant::now())
        .map_err(ApiError::Unauthorized)
}

/// Top-level keys `fields` may name (besides `*` and the nested `sources`/`attributes`).
const BASE_FIELDS: [&str; 23] = [
    "id",
    "type_id",
    "type",
    "status_id",
    "status",
    "class",
    "hash",
    "value",
    "description",
    "score",
    "generated_score",
    "manual_score",
    "created_at",
    "updated_at",
    "touched_at",
    "published_at",
    "expires_at",
    "expired_at",
    "expires_calculated_at",
    "uuid",
    "tags",
    "adversaries",
    "indicator_id",
];

/// Keys of a source object that `sources.<key>` may name.
const SOURCE_FIELDS: [&str; 19] = [
    "id",
    "indicator_id",
    "source_id",
    "creator_source_id",
    "reference_id",
    "indicator_status_id",
    "indicator_type_id",
    "name",
    "source_type",
    "source_score",
    "source_expire_days",
    "tlp_id",
    "tlp_name",
    "provider",
    "created_at",
    "updated_at",
    "published_at",
    "creator_source_name",
    "creator_source_type",
];

/// Keys of an attribute object that `attributes.<key>` may name.
const ATTRIBUTE_FIELDS: [&str; 8] = [
    "id",
    "attribute_id",
    "indicator_id",
    "name",
    "value",
    "created_at",
    "updated_at",
    "touched_at",
];

/// A nested block requested with `fields`: `None` = absent; `Some(empty)` = whole objects;
/// `Some(keys)` = objects trimmed to those keys (`attributes.name,attributes.value`).
type Nested = Option<BTreeSet<String>>;

/// What `fields` selects. ThreatQ 6.12+ leaves `sources` and `attributes` out of `*`.
#[derive(Debug, Clone, PartialEq)]
struct Fields {
    all_base: bool,
    base: BTreeSet<String>,
    sources: Nested,
    attributes: Nested,
}

impl Fields {
    fn parse(text: &str) -> Result<Self, ApiError> {
        let mut f = Fields {
            all_base: false,
            ..Fields::default()
        };
        let bad = |name: &str| ApiError::Field(echo(name));
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let nested = |slot: &mut Nested, sub: Option<&str>, known: &[&str]| {
                let keys = slot.get_or_insert_with(BTreeSet::new);
                match sub {
                    None => Ok(()),
                    Some(k) if known.contains(&k) => {
                        keys.insert(k.to_owned());
                        Ok(())
                    }
                    Some(_) => Err(bad(name)),
                }
            };
            let (head, sub) = match name.split_once('.') {
                Some((h, s)) => (h, Some(s)),
                None => (name, None),
            };
            match head {
                "*" if sub.is_none() => f.all_base = true,
                "sources" => nested(&mut f.sources, sub, &SOURCE_FIELDS)?,
                "attributes" => nested(&mut f.attributes, sub, &ATTRIBUTE_FIELDS)?,
                h if sub.is_none()
                    && (BASE_FIELDS.contains(&h)
                        || (h.starts_with("related_") && h.ends_with("_count"))) =>
                {
                    f.base.insert(h.to_owned());
                }
                _ => return Err(bad(name)),
            }
        }
        Ok(f)
    }
}

impl Default for Fields {
    /// No `fields` parameter: the default field set `*`.
    fn default() -> Self {
        Self {
            all_base: true,
            base: BTreeSet::new(),
            sources: None,
            attributes: None,
        }
    }
}

/// The parsed query string.
#[derive(Debug)]
struct Params {
    limit: usize,
    /// `None` = start (`*`).
    after: Option<SortKey>,
    /// The mark exactly as sent, echoed as `nextCursorMark` at the end of the data.
    mark: String,
    fields: Fields,
}

impl Params {
    /// Absent `sort` means `updated_at` and absent `cursorMark` means `*`: the simulator only
    /// serves the cursor paging the integration uses.
    fn parse(raw: &str) -> Result<Self, ApiError> {
        let mut p = Params {
            limit: DEFAULT_LIMIT,
            after: None,
            mark: START_MARK.to_owned(),
            fields: Fields::default(),
        };
        for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
            match k.as_ref() {
                // `updated_at` is the only sort; any other key would break the cursor contract.
                "sort" if v.trim() != "updated_at" => return Err(ApiError::Sort(echo(&v))),
                "limit" => {
                    p.limit = server::page_size(&v, MAX_LIMIT)
                        .ok_or_else(|| ApiError::Limit(echo(&v)))?;
                }
                "cursorMark" => {
                    p.after = if v == START_MARK {
                        None
                    } else {
                        Some(SortKey::from_mark(&v).ok_or_else(|| ApiError::CursorMark(echo(&v)))?)
                    };
                    p.mark = v.into_owned();
                }
                "fields" => p.fields = Fields::parse(&v)?,
                // `with`, `offset` and the like are accepted and ignored.
                _ => {}
            }
        }
        Ok(p)
    }
}

fn trim_objects(objects: Vec<Map<String, Value>>, keys: &BTreeSet<String>) -> Value {
    Value::Array(
        objects
            .into_iter()
            .map(|mut o| {
                if !keys.is_empty() {
                    o.retain(|k, _| keys.contains(k));
                }
                Value::Object(o)
            })
            .collect(),
    )
}

/// The parts of an indicator rendered and cached separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    /// The top-level keys `fields` selects (all of `*`, or the named ones).
    Base,
    /// `sources`, whole or trimmed, when requested.
    Sources,
    /// `attributes`, whole or trimmed, when requested.
    Attributes,
}

impl Block {
    const COUNT: usize = 3;
    const ALL: [Block; Self::COUNT] = [Self::Base, Self::Sources, Self::Attributes];

    fn render(self, ind: &Indicator, f: &Fields) -> Members {
        match self {
            Self::Base => {
                let mut m = ind.base_json();
                if !f.all_base {
                    m.retain(|k, _| f.base.contains(k));
                }
                page::members(&m)
            }
            Self::Sources => f.sources.as_ref().map_or_else(Members::default, |keys| {
                page::member("sources", &trim_objects(ind.sources(), keys))
            }),
            Self::Attributes => f.attributes.as_ref().map_or_else(Members::default, |keys| {
                page::member("attributes", &trim_objects(ind.attributes(), keys))
            }),
        }
    }
}

/// Selects one page, writes it from cached renders, then applies `--mutate-per-page`.
fn page(s: &ThreatQ, p: &Params) -> Response {
    let mut guard = lock(&s.store);
    let store = &mut *guard;
    if store.render_fields.as_ref() != Some(&p.fields) {
        store.renders.clear();
        store.render_fields = Some(p.fields.clone());
    }
    let slice = store.select_page(p.after, p.limit);
    let total = store.indicators.len();
    for &i in &slice {
        let ind = &store.indicators[i];
        for b in Block::ALL {
            store
                .renders
                .fill(i, b as usize, || b.render(ind, &p.fields));
        }
    }
    let capacity = store
        .renders
        .page_capacity(&slice, Block::ALL.map(|b| b as usize), 256);
    // Written by hand to keep the real envelope's key order: total, data, nextCursorMark, limit.
    let mut body = Vec::with_capacity(capacity);
    body.extend_from_slice(format!("{{\"total\":{total},\"data\":").as_bytes());
    let next = match slice.last() {
        // Solr contract: nothing after the mark → the same mark back. `data` is `{}`, as the
        // real API and Elastic's mock answer at the end of the data.
        None => {
            body.extend_from_slice(b"{}");
            p.mark.clone()
        }
        Some(&last) => {
            let mut arr = JsonArray::open(&mut body);
            for &i in &slice {
                arr.object(&Block::ALL.map(|b| store.renders.get(i, b as usize)));
            }
            arr.finish();
            SortKey::of(&store.indicators[last]).to_mark()
        }
    };
    page::write_key(&mut body, "nextCursorMark", true);
    page::write_str(&mut body, &next);
    page::write_key(&mut body, "limit", true);
    body.extend_from_slice(format!("{}}}", p.limit).as_bytes());
    s.server.serve_page(guard, &slice, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_expiry_uses_the_given_instant() {
        let mut store = TokenStore::new(1);
        let t0 = Instant::now();
        let (access, refresh) = store.issue(t0, Duration::from_secs(1));
        assert_ne!(access, refresh);
        assert_eq!(store.check(&access, t0), Ok(()));
        assert_eq!(
            store.check(&access, t0 + Duration::from_millis(999)),
            Ok(())
        );
        assert_eq!(
            store.check(&access, t0 + Duration::from_secs(1)),
            Err(TokenRejected::Expired)
        );
        assert_eq!(store.check("nope", t0), Err(TokenRejected::Unknown));
        store.revoke_all();
        assert_eq!(store.check(&access, t0), Err(TokenRejected::Unknown));
        // A later issue forgets expired tokens.
        let (a2, _) = store.issue(t0, Duration::from_secs(1));
        let (_, _) = store.issue(t0 + Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(
            store.check(&a2, t0 + Duration::from_secs(5)),
            Err(TokenRejected::Unknown)
        );
        // An absurd TTL does not overflow.
        let (a3, _) = store.issue(t0, Duration::from_secs(u64::MAX));
        assert_eq!(store.check(&a3, t0 + Duration::from_secs(86_400)), Ok(()));
    }

    #[test]
    fn cursor_marks_round_trip_and_reject_garbage() {
        let k = SortKey {
            micros: 1_700_000_000_123_456,
            id: 42,
        };
        assert_eq!(SortKey::from_mark(&k.to_mark()), Some(k));
        for bad in [
            "",
            "!!!",
            "AoJ9z5LKnvwCJjEwNjk2Nw==",
            &STANDARD.encode("1|x"),
        ] {
            assert_eq!(SortKey::from_mark(bad), None, "{bad}");
        }
        assert!(matches!(
            Params::parse("cursorMark=%%%"),
            Err(ApiError::CursorMark(_))
        ));
        let p = Params::parse("cursorMark=*&sort=updated_at&limit=1000").unwrap();
        assert_eq!((p.after, p.limit, p.mark.as_str()), (None, 1000, "*"));
    }

    #[test]
    fn params_reject_bad_values() {
        assert!(matches!(Params::parse("limit=1001"), Err(ApiError::Limit(v)) if v == "1001"));
        assert!(matches!(Params::parse("limit=0"), Err(ApiError::Limit(_))));
        assert!(matches!(Params::parse("limit=x"), Err(ApiError::Limit(_))));
        assert!(matches!(
            Params::parse("sort=-updated_at"),
            Err(ApiError::Sort(_))
        ));
        assert!(matches!(Params::parse("sort=id"), Err(ApiError::Sort(_))));
        assert!(matches!(
            Params::parse("fields=bogus"),
            Err(ApiError::Field(_))
        ));
        assert!(matches!(
            Params::parse("fields=attributes.bogus"),
            Err(ApiError::Field(_))
        ));
        assert_eq!(Params::parse("").unwrap().limit, DEFAULT_LIMIT);
    }

    #[test]
    fn fields_parse_the_integration_default() {
        let f = Fields::parse("*,sources,attributes,attributes.name,attributes.value").unwrap();
        assert!(f.all_base);
        assert_eq!(f.sources, Some(BTreeSet::new()));
        let want: BTreeSet<String> = ["name".to_owned(), "value".to_owned()].into();
        assert_eq!(f.attributes, Some(want));
        let g = Fields::parse("id,value,related_indicator_count").unwrap();
        assert!(!g.all_base && g.sources.is_none() && g.base.len() == 3);
    }

    /// The case a second-precision key would get wrong: the cursor sits on an indicator changed
    /// in the current second, then another indicator with a smaller id changes in that second.
    #[test]
    fn a_change_in_the_cursor_second_is_not_skipped() {
        let now = Utc::now();
        let indicators = data::generate(10, 3, 1, now);
        let mut store = Store::new(indicators, now, ChaCha8Rng::seed_from_u64(1));
        store.mutation = Mutation::new(10, ChaCha8Rng::seed_from_u64(1));
        store.mutation.record(&[9]);
        // Indicator id 10 changes "now"; a client reads it and holds a cursor on it.
        assert_eq!(store.mutate(1, now), 1);
        let mark = SortKey::of(&store.indicators[9]);
        assert!(store.select_page(Some(mark), 100).is_empty());
        // Indicator id 1 changes within the same wall-clock second.
        store.mutation = Mutation::new(10, ChaCha8Rng::seed_from_u64(1));
        store.mutation.record(&[0]);
        store.mutate(1, now);
        assert_eq!(
            store.indicators[0].updated_at_text(),
            store.indicators[9].updated_at_text()
        );
        assert_eq!(store.select_page(Some(mark), 100), vec![0]);
    }

    #[test]
    fn select_page_orders_by_updated_at_then_id() {
        let now = Utc::now();
        let store = Store::new(
            data::generate(200, 5, 1, now),
            now,
            ChaCha8Rng::seed_from_u64(1),
        );
        let inds = &store.indicators;
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store.select_page(after, 7);
            let Some(&last) = page.last() else { break };
            seen.extend(page.iter().map(|&i| SortKey::of(&inds[i])));
            after = Some(SortKey::of(&inds[last]));
        }
        assert_eq!(seen.len(), 200);
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn basic_credentials_accept_raw_and_form_encoded() {
        let enc = STANDARD.encode("my%20id:s%2Bcret");
        let c = basic_credentials(&format!("Basic {enc}")).unwrap();
        assert!(c.contains(&("my id".to_owned(), "s+cret".to_owned())));
        assert!(basic_credentials("Bearer abc").is_none());
        assert!(basic_credentials("Basic !!!").is_none());
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("a", "ab"));
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimArgs,
    }

    #[test]
    fn clap_defaults_match_default_and_debug_hides_the_secret() {
        use clap::Parser as _;
        let parsed = Cli::try_parse_from(["sim"]).unwrap().args;
        let d = SimArgs::default();
        assert_eq!(parsed.listen, d.listen);
        assert_eq!(parsed.indicators, d.indicators);
        assert_eq!(parsed.client_id, d.client_id);
        assert_eq!(parsed.collection, d.collection);
        assert_eq!(parsed.token_ttl, d.token_ttl);
        assert_eq!(parsed.id_base, d.id_base);
        let shown = format!("{:?}", SimArgs::default());
        assert!(!shown.contains("ti-sidecar-sim-secret"), "{shown}");
        assert!(shown.contains("[REDACTED]"));
        let bad = SimArgs {
            faults: FaultArgs {
                error_rate: 2.0,
                ..FaultArgs::default()
            },
            token_ttl: 0,
            collection: String::new(),
            ..SimArgs::default()
        };
        let msg = bad.problems().join("; ");
        for flag in ["--error-rate", "--token-ttl", "--collection"] {
            assert!(msg.contains(flag), "{msg}");
        }
    }
}
