//! A faithful fake of ThreatConnect's V3 indicators API (`GET /api/v3/indicators`).
//!
//! It exists so that users can try the product without a ThreatConnect account
//! (`ti-sidecar simulate threatconnect`) and so that integration tests can drive the real client
//! through what goes wrong in production: offset paging while data changes, crowded
//! `lastModified` seconds, 429 and 5xx answers, HMAC signatures over the exact wire bytes, and
//! ids above 2^53. Behaviour follows `shared/spec/threatconnect-api.md`; data is deterministic
//! from `--seed`.
//!
//! Pages are written from per-indicator renders cached in a [`RenderCache`] (see
//! `sim/page.rs`), and the filtered, sorted order of a query is kept until the data changes, so
//! that offset paging through a large data set costs a copy per page, not a sort and a DOM.
//! The HTTP server around it is shared with the ThreatQ simulator (`sim/server.rs`).

pub mod data;
pub(crate) mod tql;

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SubsecRound as _, Utc};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value, json};

use crate::sim::faults::{Fault, FaultArgs};
use crate::sim::lock;
use crate::sim::mutation::{self, MutableStore, Mutation};
use crate::sim::page::{self, JsonArray, Members, RenderCache};
use crate::sim::server::{self, Failure, Platform, Request, Server};
use crate::source::threatconnect::auth;
use data::Indicator;

pub use crate::sim::server::SimStats;

/// The only collection the simulator serves.
const INDICATORS_PATH: &str = "/api/v3/indicators";
/// The API's documented maximum page size.
const MAX_RESULT_LIMIT: usize = 10_000;
/// The API's default page size.
const DEFAULT_RESULT_LIMIT: usize = 100;
/// Accepted clock skew of the `Timestamp` header (five minutes).
const MAX_SKEW_SECS: i64 = 300;

/// Command-line arguments of `ti-sidecar simulate threatconnect`.
#[derive(Clone, clap::Args)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Number of indicators.
    #[arg(long, default_value_t = 1000)]
    pub indicators: usize,
    /// Seed for the deterministic data and fault injection.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Access id the simulator accepts.
    #[arg(long, default_value = "ti-sidecar-sim")]
    pub access_id: String,
    /// Secret key the simulator accepts.
    #[arg(
        long,
        env = "TI_SIM_TC_SECRET_KEY",
        default_value = "ti-sidecar-sim-secret",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub secret_key: String,
    /// Fault injection and data size: `--latency-ms`, `--latency-jitter-ms`, `--error-rate`,
    /// `--rate-limit`, `--mutate-per-page`, `--rich-context`.
    #[command(flatten)]
    pub faults: FaultArgs,
    /// Put this many indicators into one single lastModified second (a crowded second).
    #[arg(long, default_value_t = 0)]
    pub same_second: usize,
    /// First indicator id (default above 2^53, so every run exercises exact ids).
    #[arg(long, default_value_t = 9_007_199_254_740_993)]
    pub id_base: i64,
}

/// Hand-written so that printing the arguments never shows the secret key.
impl std::fmt::Debug for SimArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimArgs")
            .field("listen", &self.listen)
            .field("indicators", &self.indicators)
            .field("seed", &self.seed)
            .field("access_id", &self.access_id)
            .field("secret_key", &"[REDACTED]")
            .field("faults", &self.faults)
            .field("same_second", &self.same_second)
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
            access_id: "ti-sidecar-sim".into(),
            secret_key: "ti-sidecar-sim-secret".into(),
            faults: FaultArgs::default(),
            same_second: 0,
            id_base: 9_007_199_254_740_993,
        }
    }
}

impl SimArgs {
    /// Every problem with the arguments at once, each naming its flag.
    fn problems(&self) -> Vec<String> {
        let mut p = server::fault_problems(&self.faults);
        if self.same_second > self.indicators {
            p.push(format!(
                "--same-second {} exceeds --indicators {}",
                self.same_second, self.indicators
            ));
        }
        if self.id_base < 1 {
            p.push(format!("--id-base must be positive, got {}", self.id_base));
        } else {
            p.extend(server::id_overflow(self.id_base, self.indicators));
        }
        p.extend(server::credential_problems(
            ("--access-id", &self.access_id),
            ("--secret-key", &self.secret_key),
        ));
        p
    }
}

/// The indicator store, its render cache and the bookkeeping that mutation needs.
struct Store {
    indicators: Vec<Indicator>,
    /// What has been served, for `--mutate-per-page`.
    mutation: Mutation,
    /// Rendered [`Block`]s by indicator index.
    renders: RenderCache,
    /// The base URL (`http://<Host>`) the cached renders embed in `webLink` and `legacyLink`.
    render_base: String,
    /// Bumped whenever an indicator changes, which invalidates `order`.
    generation: u64,
    /// The matching indicators of the last query, in its order.
    order: Option<QueryOrder>,
    /// Every indicator in the last `sorting` asked for: a query filters it instead of sorting.
    sorted: Option<QueryOrder>,
}

impl Store {
    fn new(indicators: Vec<Indicator>, mutation_rng: ChaCha8Rng) -> Self {
        Self {
            mutation: Mutation::new(indicators.len(), mutation_rng),
            renders: RenderCache::new(indicators.len(), Block::COUNT),
            render_base: String::new(),
            generation: 0,
            order: None,
            sorted: None,
            indicators,
        }
    }

    /// Records that indicator `idx` changed: its renders and every cached order are stale.
    fn changed(&mut self, idx: usize) {
        self.renders.invalidate(idx);
        self.generation += 1;
    }

    /// The indices of the indicators matching `p.tql`, in `p.sorting` order. Consecutive pages
    /// of one query share the result until the data changes.
    fn order(&mut self, p: &Params) -> Arc<[usize]> {
        if let Some(o) = &self.order
            && o.generation == self.generation
            && o.tql == p.tql
            && o.sorting == p.sorting
        {
            return o.indices.clone();
        }
        // The order is total (ties go by id), so filtering the sorted whole is sorting the
        // filtered part: each keyset page (a new `tql`) costs one pass, not a sort. The pass
        // covers only the run of the sorted whole that the query's `lastModified` bounds leave.
        let sorted = self.sorted(&p.sorting);
        let inds = &self.indicators;
        let indices: Arc<[usize]> = match &p.tql {
            None => sorted,
            Some(e) => {
                let run = last_modified_run(e, &p.sorting, &sorted, inds);
                sorted[run]
                    .iter()
                    .copied()
                    .filter(|&i| e.matches(&inds[i]))
                    .collect()
            }
        };
        self.order = Some(QueryOrder {
            tql: p.tql.clone(),
            sorting: p.sorting.clone(),
            generation: self.generation,
            indices: indices.clone(),
        });
        indices
    }

    /// Every indicator's index, in `sorting` order (cached until the data changes).
    fn sorted(&mut self, sorting: &[(SortKey, bool)]) -> Arc<[usize]> {
        if let Some(o) = &self.sorted
            && o.generation == self.generation
            && o.sorting == sorting
        {
            return o.indices.clone();
        }
        let inds = &self.indicators;
        let mut order: Vec<usize> = (0..inds.len()).collect();
        order.sort_unstable_by(|&a, &b| compare(&inds[a], &inds[b], sorting));
        let indices: Arc<[usize]> = order.into();
        self.sorted = Some(QueryOrder {
            tql: None,
            sorting: sorting.to_vec(),
            generation: self.generation,
            indices: indices.clone(),
        });
        indices
    }
}

impl MutableStore for Store {
    fn mutation(&mut self) -> &mut Mutation {
        &mut self.mutation
    }

    /// A new rating, confidence and description, and `lastModified` = `now`.
    fn change(&mut self, idx: usize, now: DateTime<Utc>) {
        if let Some(ind) = self.indicators.get_mut(idx) {
            ind.mutate(now, self.mutation.rng());
            self.changed(idx);
        }
    }
}

/// The result order of one query at one data generation.
struct QueryOrder {
    tql: Option<tql::Expr>,
    sorting: Vec<(SortKey, bool)>,
    generation: u64,
    indices: Arc<[usize]>,
}

/// The simulated ThreatConnect API: the credentials it accepts and its indicators.
pub struct ThreatConnect {
    server: Server,
    access_id: String,
    secret_key: String,
    /// The bound address, the base of links when a request has no `Host`.
    addr: SocketAddr,
    store: Mutex<Store>,
}

/// A running ThreatConnect simulator.
pub type SimHandle = server::SimHandle<ThreatConnect>;

impl SimHandle {
    /// The current version of every indicator: (id, lastModified text exactly as served), sorted by id.
    pub fn snapshot(&self) -> Vec<(i64, String)> {
        let store = lock(&self.platform().store);
        let mut v: Vec<(i64, String)> = store
            .indicators
            .iter()
            .map(|i| (i.id, i.last_modified_text()))
            .collect();
        v.sort_by_key(|(id, _)| *id);
        v
    }

    /// Sets one indicator's `lastModified` (second precision), as a bad record or a platform
    /// bug would, e.g. far in the future. Returns whether the id exists.
    pub fn stamp(&self, id: i64, last_modified: DateTime<Utc>) -> bool {
        let mut store = lock(&self.platform().store);
        match store.indicators.iter().position(|i| i.id == id) {
            Some(idx) => {
                store.indicators[idx].last_modified = last_modified.trunc_subsecs(0);
                store.changed(idx);
                true
            }
            None => false,
        }
    }
}

/// Binds `args.listen`, spawns the server, returns at once.
pub async fn start(args: SimArgs) -> std::io::Result<SimHandle> {
    let binding = server::bind(args.listen, args.seed, &args.faults, args.problems()).await?;
    let addr = binding.addr();
    let indicators = data::generate(
        args.indicators,
        args.seed,
        args.id_base,
        args.same_second,
        Utc::now(),
    );
    let rich = args.faults.rich_context;
    let mut store = Store::new(
        indicators
            .into_iter()
            .map(|i| i.with_rich_context(rich))
            .collect(),
        mutation::seeded_rng(args.seed),
    );
    // Clients that connect by address send it as `Host`, so this is the base they will see.
    store.render_base = format!("http://{addr}");
    let store = tokio::task::spawn_blocking(move || {
        let base = store.render_base.clone();
        let inds = &store.indicators;
        let blocks = PRERENDERED.map(|b| b as usize);
        store.renders.prerender(&blocks, |i, b| {
            PRERENDERED
                .iter()
                .find(|p| **p as usize == b)
                .map(|p| p.render(&inds[i], &base))
                .unwrap_or_default()
        });
        store
    })
    .await?;
    Ok(binding.serve(|server| ThreatConnect {
        server,
        access_id: args.access_id,
        secret_key: args.secret_key,
        addr,
        store: Mutex::new(store),
    }))
}

/// CLI entry: `start`, print the bound address (`127.0.0.1:PORT`, nothing else) as the FIRST line
/// of stdout and flush, log the base URL and the access id (never the secret) to stderr, serve
/// until SIGINT/SIGTERM, then shut down.
pub async fn run(args: SimArgs) -> std::io::Result<()> {
    let access_id = args.access_id.clone();
    let indicators = args.indicators;
    let stats = start(args)
        .await?
        .serve_until_signal(|handle| {
            tracing::info!(
                url = %handle.base_url(),
                access_id = %access_id,
                indicators = indicators as u64,
                "ThreatConnect simulator listening; the secret key is --secret-key / TI_SIM_TC_SECRET_KEY"
            );
        })
        .await?;
    tracing::info!(
        requests = stats.requests,
        pages_served = stats.pages_served,
        auth_rejected = stats.auth_rejected,
        errors_injected = stats.errors_injected,
        rate_limited = stats.rate_limited,
        mutations = stats.mutations,
        "ThreatConnect simulator stopped"
    );
    Ok(())
}

/// Why a request failed; the message is exactly what ThreatConnect puts in `message`.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("Access Denied")]
    AccessDenied,
    #[error("Timestamp Out of Acceptable Time Range")]
    TimestampOutOfRange,
    #[error("Signature Data Did Not Match Expected Result")]
    SignatureMismatch,
    #[error("Resource not found: {method} {path}")]
    NotFound { method: String, path: String },
    #[error("{}", fault_message(*.0))]
    Fault(#[from] Fault),
    #[error("Invalid resultLimit value \"{0}\": must be an integer from 1 to 10000")]
    ResultLimit(String),
    #[error("Invalid resultStart value \"{0}\": must be a non-negative integer")]
    ResultStart(String),
    #[error("Invalid count value \"{0}\": must be true or false")]
    Count(String),
    #[error("Invalid fields value \"{0}\"")]
    UnknownField(String),
    #[error("Invalid sorting \"{0}\": expected <lastModified|dateAdded|id> [asc|desc] pairs")]
    Sorting(String),
    #[error(transparent)]
    Tql(#[from] tql::TqlError),
}

/// ThreatConnect's `message` for a 429 or an injected 5xx.
fn fault_message(fault: Fault) -> String {
    match fault {
        Fault::RateLimited { .. } => fault.to_string(),
        Fault::Injected(status) => match status.as_u16() {
            502 => "Bad Gateway",
            503 => "Service Unavailable: the server is temporarily unable to handle the request",
            _ => "An unexpected error occurred while processing the request",
        }
        .to_owned(),
    }
}

impl Failure for ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::AccessDenied | Self::TimestampOutOfRange | Self::SignatureMismatch => {
                StatusCode::UNAUTHORIZED
            }
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::Fault(f) => f.status(),
            Self::ResultLimit(_)
            | Self::ResultStart(_)
            | Self::Count(_)
            | Self::UnknownField(_)
            | Self::Sorting(_)
            | Self::Tql(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = page::json_value(
            self.status(),
            &json!({"status": "Failure", "message": self.to_string()}),
        );
        if let Self::Fault(f) = self {
            f.add_headers(&mut resp);
        }
        resp
    }
}

impl Platform for ThreatConnect {
    const NAME: &'static str = "threatconnect";
    /// Requests are all `GET`s: the body is left unread.
    type Body = Body;
    type Stats = SimStats;

    fn server(&self) -> &Server {
        &self.server
    }

    fn answer(&self, request: &Request, _body: Body) -> Response {
        let outcome = self.serve(request);
        // 429s and injected 5xx are counted by `Faults` itself.
        if let Err(e) = &outcome
            && e.status() == StatusCode::UNAUTHORIZED
        {
            self.server.count_auth_rejected();
        }
        request.respond(Self::NAME, outcome)
    }

    fn stats(&self) -> SimStats {
        self.server.stats()
    }
}

impl ThreatConnect {
    /// Rate limit → authentication → routing → injected faults → parameters → page.
    fn serve(&self, request: &Request) -> Result<Response, ApiError> {
        let Request {
            method,
            uri,
            headers,
        } = request;
        self.server.faults.check_rate()?;
        self.check_auth(method, uri, headers)?;
        if method != Method::GET || uri.path() != INDICATORS_PATH {
            return Err(ApiError::NotFound {
                method: method.to_string(),
                path: uri.path().to_owned(),
            });
        }
        self.server.faults.check_error()?;
        let raw_query = uri.query().unwrap_or("");
        let params = Params::parse(raw_query)?;
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| self.addr.to_string());
        let base = format!("http://{host}");
        Ok(self.page(&params, &base, raw_query))
    }

    fn check_auth(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<(), ApiError> {
        // No credentials at all, or another scheme (e.g. `TC-Token`), is simply no access.
        let value = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::AccessDenied)?;
        let creds = value.strip_prefix("TC ").ok_or(ApiError::AccessDenied)?;
        // Base64 has no ':', so the last ':' separates the access id from the signature.
        let (access_id, sig) = creds.rsplit_once(':').unwrap_or((creds, ""));
        if access_id != self.access_id {
            return Err(ApiError::AccessDenied);
        }
        let ts: i64 = headers
            .get("Timestamp")
            .and_then(|v| v.to_str().ok())
            .and_then(|t| t.trim().parse().ok())
            .ok_or(ApiError::TimestampOutOfRange)?;
        if ts.abs_diff(Utc::now().timestamp()) > MAX_SKEW_SECS.unsigned_abs() {
            return Err(ApiError::TimestampOutOfRange);
        }
        // The request target exactly as received: raw path, and `?` + raw query only when non-empty.
        let target = match uri.query() {
            Some(q) if !q.is_empty() => format!("{}?{q}", uri.path()),
            _ => uri.path().to_owned(),
        };
        let message = auth::string_to_sign(&target, method.as_str(), ts);
        if auth::verify(self.secret_key.as_bytes(), &message, sig) {
            Ok(())
        } else {
            Err(ApiError::SignatureMismatch)
        }
    }
}

/// Keys that `sorting` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortKey {
    LastModified,
    DateAdded,
    Id,
}

/// `fields` values the API documents for indicators (spec §2).
const KNOWN_FIELDS: [&str; 24] = [
    "associatedArtifacts",
    "associatedCases",
    "associatedGroups",
    "associatedIndicators",
    "associationName",
    "attributes",
    "customAssociations",
    "dnsResolution",
    "enrichment",
    "externalDates",
    "falsePositives",
    "fileActions",
    "fileOccurrences",
    "genericCustomIndicatorValues",
    "geoLocation",
    "investigationLinks",
    "observations",
    "securityLabels",
    "sightings",
    "tags",
    "threatAssess",
    "trackedUsers",
    "userDetails",
    "whoIs",
];

/// Objects whose own fields can be requested with dot notation (`associatedGroups.attributes`).
const NESTABLE: [&str; 4] = [
    "associatedGroups",
    "associatedIndicators",
    "associatedArtifacts",
    "associatedCases",
];

fn valid_field(f: &str) -> bool {
    let mut parts = f.split('.');
    let first = parts.next().unwrap_or_default();
    if !KNOWN_FIELDS.contains(&first) {
        return false;
    }
    let rest: Vec<&str> = parts.collect();
    rest.is_empty() || (NESTABLE.contains(&first) && rest.iter().all(|p| KNOWN_FIELDS.contains(p)))
}

/// The parsed query string.
#[derive(Debug)]
struct Params {
    fields: BTreeSet<String>,
    start: usize,
    limit: usize,
    sorting: Vec<(SortKey, bool)>,
    tql: Option<tql::Expr>,
    count: bool,
}

impl Params {
    fn parse(raw: &str) -> Result<Self, ApiError> {
        let mut p = Params {
            fields: BTreeSet::new(),
            start: 0,
            limit: DEFAULT_RESULT_LIMIT,
            sorting: Vec::new(),
            tql: None,
            count: false,
        };
        // Proper form decoding: `+` and `%20` are both a space.
        for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
            match k.as_ref() {
                "fields" => {
                    for f in v.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                        if !valid_field(f) {
                            return Err(ApiError::UnknownField(f.to_owned()));
                        }
                        p.fields.insert(f.to_owned());
                    }
                }
                "resultStart" => {
                    p.start = v
                        .trim()
                        .parse()
                        .map_err(|_| ApiError::ResultStart(v.to_string()))?;
                }
                "resultLimit" => {
                    p.limit = server::page_size(&v, MAX_RESULT_LIMIT)
                        .ok_or_else(|| ApiError::ResultLimit(v.to_string()))?;
                }
                "sorting" => p.sorting = parse_sorting(&v)?,
                "tql" => {
                    p.tql = if v.trim().is_empty() {
                        None
                    } else {
                        Some(tql::parse(&v)?)
                    }
                }
                "count" => {
                    p.count = match v.trim().to_ascii_lowercase().as_str() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(ApiError::Count(v.to_string())),
                    }
                }
                // `owner` restricts to an owner on the real API; everything here is visible.
                _ => {}
            }
        }
        Ok(p)
    }

    fn has(&self, f: &str) -> bool {
        self.fields.contains(f)
    }

    fn has_nested(&self, prefix: &str) -> bool {
        self.fields
            .iter()
            .any(|f| f == prefix || f.strip_prefix(prefix).is_some_and(|r| r.starts_with('.')))
    }
}

/// `<field> [asc|desc|nullsfirst|nullslast]` pairs separated by `,` or whitespace.
fn parse_sorting(text: &str) -> Result<Vec<(SortKey, bool)>, ApiError> {
    let bad = || ApiError::Sorting(text.to_owned());
    let tokens: Vec<&str> = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let key = match tokens[i].to_ascii_lowercase().as_str() {
            "lastmodified" => SortKey::LastModified,
            "dateadded" => SortKey::DateAdded,
            "id" => SortKey::Id,
            _ => return Err(bad()),
        };
        i += 1;
        // None of the sortable fields is ever null, so the null orderings are plain ascending.
        let desc = match tokens.get(i).map(|t| t.to_ascii_lowercase()) {
            Some(d) if d == "desc" => true,
            Some(d) if d == "asc" || d == "nullsfirst" || d == "nullslast" => false,
            _ => {
                out.push((key, false));
                continue;
            }
        };
        i += 1;
        out.push((key, desc));
    }
    Ok(out)
}

fn compare(a: &Indicator, b: &Indicator, sorting: &[(SortKey, bool)]) -> Ordering {
    for (key, desc) in sorting {
        let o = match key {
            SortKey::LastModified => a.last_modified.cmp(&b.last_modified),
            SortKey::DateAdded => a.date_added.cmp(&b.date_added),
            SortKey::Id => a.id.cmp(&b.id),
        };
        let o = if *desc { o.reverse() } else { o };
        if o != Ordering::Equal {
            return o;
        }
    }
    // Ties always go by id ascending, so the order is stable between requests.
    a.id.cmp(&b.id)
}

/// The part of `sorted` (indicator indices in `sorting` order) outside which `tql` cannot match:
/// when the order is `lastModified` ascending first, each `lastModified` comparison joined by
/// `AND` at the top of the query holds on one run of it, found by binary search. Keyset pages
/// (`lastModified >= W`, and `< E` in a backfill window) then filter their own part, not the
/// whole data set for every page (at page 2000 that pass was most of the simulator's CPU).
fn last_modified_run(
    tql: &tql::Expr,
    sorting: &[(SortKey, bool)],
    sorted: &[usize],
    inds: &[Indicator],
) -> std::ops::Range<usize> {
    let mut run = 0..sorted.len();
    if sorting.first() != Some(&(SortKey::LastModified, false)) {
        return run;
    }
    let mut conjuncts = vec![tql];
    while let Some(e) = conjuncts.pop() {
        match e {
            tql::Expr::And(a, b) => conjuncts.extend([&**a, &**b]),
            tql::Expr::LastModified(op, t) => {
                let lm = |i: &usize| &inds[*i].last_modified;
                // The items before the first that can hold, and up to the last that can.
                let start = sorted.partition_point(|i| match op {
                    tql::CmpOp::Gt => lm(i) <= t,
                    tql::CmpOp::Geq | tql::CmpOp::Eq => lm(i) < t,
                    tql::CmpOp::Lt | tql::CmpOp::Leq | tql::CmpOp::Ne => false,
                });
                let end = sorted.partition_point(|i| match op {
                    tql::CmpOp::Lt => lm(i) < t,
                    tql::CmpOp::Leq | tql::CmpOp::Eq => lm(i) <= t,
                    tql::CmpOp::Gt | tql::CmpOp::Geq | tql::CmpOp::Ne => true,
                });
                let start = run.start.max(start);
                run = start..run.end.min(end).max(start);
            }
            _ => {}
        }
    }
    run
}

/// The raw query with `resultStart` set to `start`; every other parameter is kept byte for byte.
fn with_result_start(raw_query: &str, start: usize) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut replaced = false;
    for seg in raw_query.split('&').filter(|s| !s.is_empty()) {
        let key = seg.split('=').next().unwrap_or_default();
        let is_start = url::form_urlencoded::parse(key.as_bytes())
            .next()
            .is_some_and(|(k, _)| k == "resultStart");
        if is_start {
            if !replaced {
                parts.push(format!("resultStart={start}"));
                replaced = true;
            }
        } else {
            parts.push(seg.to_owned());
        }
    }
    if !replaced {
        parts.push(format!("resultStart={start}"));
    }
    parts.join("&")
}

/// The parts of an indicator that are rendered and cached separately; which of them a page
/// shows depends on `fields`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    /// The base object (always shown).
    Base,
    Tags,
    SecurityLabels,
    Attributes,
    Groups,
    GroupsWithAttributes,
    ThreatAssess,
    Sightings,
    ExternalDates,
    /// `falsePositives` and `observations` share one random stream, so each combination is its
    /// own render.
    FalsePositives,
    Observations,
    FalsePositivesAndObservations,
}

impl Block {
    const COUNT: usize = 12;

    /// The blocks `p.fields` asks for, base first, in the order a page writes them.
    fn requested(p: &Params) -> Vec<Block> {
        let groups = if p.has_nested("associatedGroups.attributes") {
            Block::GroupsWithAttributes
        } else {
            Block::Groups
        };
        let counters = match (p.has("falsePositives"), p.has("observations")) {
            (true, true) => Some(Block::FalsePositivesAndObservations),
            (true, false) => Some(Block::FalsePositives),
            (false, true) => Some(Block::Observations),
            (false, false) => None,
        };
        [
            Some(Block::Base),
            p.has("tags").then_some(Block::Tags),
            p.has("securityLabels").then_some(Block::SecurityLabels),
            p.has("attributes").then_some(Block::Attributes),
            p.has_nested("associatedGroups").then_some(groups),
            p.has("threatAssess").then_some(Block::ThreatAssess),
            p.has("sightings").then_some(Block::Sightings),
            p.has("externalDates").then_some(Block::ExternalDates),
            counters,
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    fn render(self, ind: &Indicator, base: &str) -> Members {
        let scalars = |fill: &dyn Fn(&mut Map<String, Value>)| {
            let mut m = Map::new();
            fill(&mut m);
            page::members(&m)
        };
        match self {
            Self::Base => page::members(&ind.base_json(base)),
            Self::Tags => page::member("tags", &data::tags(ind)),
            Self::SecurityLabels => page::member("securityLabels", &data::security_labels(ind)),
            Self::Attributes => page::member("attributes", &data::attributes(ind)),
            Self::Groups | Self::GroupsWithAttributes => page::member(
                "associatedGroups",
                &data::associated_groups(ind, base, self == Self::GroupsWithAttributes),
            ),
            Self::ThreatAssess => scalars(&|m| data::threat_assess(ind, m)),
            Self::Sightings => scalars(&|m| data::sightings(ind, m)),
            Self::ExternalDates => scalars(&|m| data::external_dates(ind, m)),
            Self::FalsePositives => scalars(&|m| data::counters(ind, m, true, false)),
            Self::Observations => scalars(&|m| data::counters(ind, m, false, true)),
            Self::FalsePositivesAndObservations => scalars(&|m| data::counters(ind, m, true, true)),
        }
    }
}

/// The blocks rendered at start-up: what ti-sidecar requests by default (`securityLabels`,
/// `sightings`, `tags`, `threatAssess`; see `source/threatconnect/client.rs`). Others are
/// rendered on first request.
const PRERENDERED: [Block; 5] = [
    Block::Base,
    Block::Tags,
    Block::SecurityLabels,
    Block::Sightings,
    Block::ThreatAssess,
];

/// `fields` whose block is always empty here: written as `"name":{}`.
const EMPTY_BLOCKS: [(&str, &[u8]); 3] = [
    ("associatedArtifacts", b"\"associatedArtifacts\":{}"),
    ("associatedCases", b"\"associatedCases\":{}"),
    ("customAssociations", b"\"customAssociations\":{}"),
];

/// Indices of the indicators associated with indicator `idx` (drawn from its own seed, so the
/// set is stable; their content is whatever they are now).
fn associated_indicators(ind: &Indicator, n: usize) -> Vec<usize> {
    let mut rng = ind.block_rng(9);
    let k = if n > 1 {
        rng.random_range(ind.associated_indicator_range())
    } else {
        0
    };
    (0..k).map(|_| rng.random_range(0..n)).collect()
}

/// Appends `"associatedIndicators":{"data":[…]}` (or `{}`), each item the cached base render of
/// the associated indicator.
fn write_associated_indicators(
    out: &mut Vec<u8>,
    store: &Store,
    ind: &Indicator,
    others: &[usize],
) {
    page::write_key(out, "associatedIndicators", false);
    let mut items = others
        .iter()
        .filter(|&&j| store.indicators[j].id != ind.id)
        .peekable();
    if items.peek().is_none() {
        out.extend_from_slice(b"{}");
        return;
    }
    out.extend_from_slice(b"{\"data\":");
    let mut arr = JsonArray::open(out);
    for &j in items {
        arr.object(&[store.renders.get(j, Block::Base as usize)]);
    }
    arr.finish();
    out.push(b'}');
}

impl ThreatConnect {
    /// Filters, sorts and slices one page, writes it from cached renders, then applies
    /// `--mutate-per-page`.
    fn page(&self, p: &Params, base: &str, raw_query: &str) -> Response {
        let mut guard = lock(&self.store);
        let store = &mut *guard;
        if store.render_base != base {
            store.renders.clear();
            store.render_base = base.to_owned();
        }
        let order = store.order(p);
        let total = order.len();
        let slice = order.get(p.start.min(total)..p.start.saturating_add(p.limit).min(total));
        let slice = slice.unwrap_or_default();
        let blocks = Block::requested(p);
        let with_assoc = p.has_nested("associatedIndicators");
        let empties: Vec<&[u8]> = EMPTY_BLOCKS
            .iter()
            .filter(|(name, _)| p.has_nested(name))
            .map(|(_, member)| *member)
            .collect();

        // Render what is missing, then write the page from the cache alone.
        let n = store.indicators.len();
        let mut assoc: Vec<Vec<usize>> = Vec::new();
        for &i in slice {
            let ind = &store.indicators[i];
            for &b in &blocks {
                store.renders.fill(i, b as usize, || b.render(ind, base));
            }
            if with_assoc {
                let others = associated_indicators(ind, n);
                for &j in &others {
                    let other = &store.indicators[j];
                    store
                        .renders
                        .fill(j, Block::Base as usize, || Block::Base.render(other, base));
                }
                assoc.push(others);
            }
        }
        let capacity = store
            .renders
            .page_capacity(slice, blocks.iter().map(|&b| b as usize), 512);
        let mut body = Vec::with_capacity(capacity);
        // Keys in the order serde_json's sorted map wrote them before: count, data, next, prev, status.
        body.push(b'{');
        if p.count {
            page::write_key(&mut body, "count", false);
            body.extend_from_slice(total.to_string().as_bytes());
            body.push(b',');
        }
        page::write_key(&mut body, "data", false);
        let mut arr = JsonArray::open(&mut body);
        let mut extra = Vec::new();
        for (k, &i) in slice.iter().enumerate() {
            extra.clear();
            if let Some(others) = assoc.get(k) {
                write_associated_indicators(&mut extra, store, &store.indicators[i], others);
            }
            let mut parts: [&[u8]; Block::COUNT + EMPTY_BLOCKS.len() + 1] = Default::default();
            let cached = blocks.iter().map(|&b| store.renders.get(i, b as usize));
            let all = cached
                .chain(empties.iter().copied())
                .chain([extra.as_slice()]);
            for (slot, part) in parts.iter_mut().zip(all) {
                *slot = part;
            }
            arr.object(&parts);
        }
        arr.finish();
        if p.start.saturating_add(slice.len()) < total {
            let q = with_result_start(raw_query, p.start.saturating_add(p.limit));
            page::write_key(&mut body, "next", true);
            page::write_str(&mut body, &format!("{base}{INDICATORS_PATH}?{q}"));
        }
        if p.start > 0 {
            let q = with_result_start(raw_query, p.start.saturating_sub(p.limit));
            page::write_key(&mut body, "prev", true);
            page::write_str(&mut body, &format!("{base}{INDICATORS_PATH}?{q}"));
        }
        body.extend_from_slice(b",\"status\":\"Success\"}");

        self.server.serve_page(guard, slice, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorting_pairs() {
        assert_eq!(
            parse_sorting("lastModified asc").unwrap(),
            vec![(SortKey::LastModified, false)]
        );
        assert_eq!(
            parse_sorting("dateAdded desc, id asc").unwrap(),
            vec![(SortKey::DateAdded, true), (SortKey::Id, false)]
        );
        assert_eq!(
            parse_sorting("lastModified desc id desc").unwrap(),
            vec![(SortKey::LastModified, true), (SortKey::Id, true)]
        );
        assert!(parse_sorting("rating asc").is_err());
    }

    /// Filtering the cached sorted whole gives what sorting the filtered part gave, for every
    /// sorting and filter, also after the data changed.
    #[test]
    fn a_query_order_is_the_sorted_whole_filtered() {
        let now = Utc::now();
        let inds = data::generate(500, 7, 1_000, 40, now);
        let mut store = Store::new(inds, mutation::seeded_rng(7));
        let mid = store.indicators[250]
            .last_modified
            .format("%Y-%m-%dT%H:%M:%SZ");
        for query in [
            "sorting=lastModified%20asc".to_owned(),
            format!("sorting=lastModified%20asc&tql=lastModified%20GEQ%20%22{mid}%22"),
            format!("sorting=dateAdded%20desc&tql=lastModified%20LT%20%22{mid}%22"),
            "sorting=id%20desc".to_owned(),
            // Bounds that narrow the pass, also under OR and NOT-equal, which must not.
            format!(
                "sorting=lastModified%20asc&tql=lastModified%20GT%20%22{mid}%22%20AND%20typeName%20NE%20%22Host%22"
            ),
            format!("sorting=lastModified%20asc,id%20asc&tql=lastModified%20LEQ%20%22{mid}%22"),
            format!("sorting=lastModified%20asc&tql=lastModified%20EQ%20%22{mid}%22"),
            format!("sorting=lastModified%20asc&tql=lastModified%20NE%20%22{mid}%22"),
            format!(
                "sorting=lastModified%20asc&tql=lastModified%20LT%20%22{mid}%22%20OR%20id%20GT%200"
            ),
            format!(
                "sorting=lastModified%20asc&tql=(lastModified%20GEQ%20%22{mid}%22%20AND%20lastModified%20LT%20%22{mid}%22)%20OR%20typeName%20EQ%20%22Host%22"
            ),
        ] {
            for round in 0..2 {
                let p = Params::parse(&query).unwrap();
                let inds = &store.indicators;
                let mut expected: Vec<usize> = (0..inds.len())
                    .filter(|&i| p.tql.as_ref().is_none_or(|e| e.matches(&inds[i])))
                    .collect();
                expected.sort_by(|&a, &b| compare(&inds[a], &inds[b], &p.sorting));
                assert!(!expected.is_empty(), "{query}");
                assert_eq!(&*store.order(&p), &expected[..], "{query}, round {round}");
                store.change(round * 100, now + chrono::TimeDelta::seconds(1));
            }
        }
    }

    #[test]
    fn params_decode_plus_and_percent20() {
        let a = Params::parse("tql=id+%3E%3D+5&sorting=id%20desc").unwrap();
        let b = Params::parse("tql=id%20%3E%3D%205&sorting=id+desc").unwrap();
        assert_eq!(a.tql, b.tql);
        assert_eq!(a.sorting, vec![(SortKey::Id, true)]);
    }

    #[test]
    fn params_reject_bad_values() {
        assert!(matches!(
            Params::parse("resultLimit=0"),
            Err(ApiError::ResultLimit(_))
        ));
        assert!(matches!(
            Params::parse("resultLimit=10001"),
            Err(ApiError::ResultLimit(v)) if v == "10001"
        ));
        assert!(Params::parse("resultLimit=10000").is_ok());
        assert!(matches!(
            Params::parse("resultStart=-1"),
            Err(ApiError::ResultStart(_))
        ));
        assert!(matches!(
            Params::parse("fields=bogus"),
            Err(ApiError::UnknownField(_))
        ));
        assert!(Params::parse("fields=associatedGroups.attributes.securityLabels").is_ok());
        assert!(Params::parse("fields=tags.bogus").is_err());
    }

    #[test]
    fn next_keeps_other_params_raw() {
        assert_eq!(
            with_result_start("fields=tags&resultLimit=2&resultStart=0&tql=id+%3E+1", 2),
            "fields=tags&resultLimit=2&resultStart=2&tql=id+%3E+1"
        );
        assert_eq!(with_result_start("", 100), "resultStart=100");
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimArgs,
    }

    #[test]
    fn clap_defaults_match_default() {
        use clap::Parser as _;
        let parsed = Cli::try_parse_from(["sim"]).unwrap().args;
        let d = SimArgs::default();
        assert_eq!(parsed.listen, d.listen);
        assert_eq!(parsed.indicators, d.indicators);
        assert_eq!(parsed.seed, d.seed);
        assert_eq!(parsed.access_id, d.access_id);
        assert_eq!(parsed.id_base, d.id_base);
        assert_eq!(parsed.faults.rate_limit, None);
        let custom = Cli::try_parse_from([
            "sim",
            "--rate-limit",
            "5",
            "--error-rate",
            "0.25",
            "--same-second",
            "3",
            "--mutate-per-page",
            "2",
        ])
        .unwrap()
        .args;
        assert_eq!(custom.faults.rate_limit, Some(5));
        assert_eq!(custom.faults.error_rate, 0.25);
        assert_eq!((custom.same_second, custom.faults.mutate_per_page), (3, 2));
    }

    #[test]
    fn args_validation_names_flags() {
        let args = SimArgs {
            faults: FaultArgs {
                error_rate: 1.5,
                rate_limit: Some(0),
                ..FaultArgs::default()
            },
            same_second: 5,
            indicators: 2,
            ..SimArgs::default()
        };
        let msg = args.problems().join("; ");
        for flag in ["--error-rate", "--rate-limit", "--same-second"] {
            assert!(msg.contains(flag), "{msg}");
        }
        assert!(SimArgs::default().problems().is_empty());
        let nan = SimArgs {
            faults: FaultArgs {
                error_rate: f64::NAN,
                ..FaultArgs::default()
            },
            ..SimArgs::default()
        };
        assert!(!nan.problems().is_empty());
    }
}
