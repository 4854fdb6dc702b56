//! The ThreatConnect V3 indicators client: request building (fields, TQL, sorting, paging
//! parameters encoded exactly as Elastic's CEL program does), HMAC signing per attempt, and the
//! [`Source`] implementation that drives the skip-free sweep of [`super::sweep`].

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::ExposeSecret as _;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::auth;
use super::backfill::{self, Aimd, Backfill, TcCursor};
use super::config::ThreatConnectConfig;
use super::ecs::{MapOptions, map_indicator};
use super::sweep::{self, ItemKey, Plan, Step, SweepCursor};
use crate::config::fields::endpoint;
use crate::http::{BodyPool, HttpClient, HttpError};
use crate::source::{
    FetchError, Mapper, Page, RawItems, Source, off_runtime, page_text, task_value,
    walk::{self, Walk},
};
use crate::telemetry::BackfillProgress;
use crate::text::bounded;

const PLATFORM: &str = "threatconnect";

/// Go's `url.QueryEscape`: everything but `A–Z a–z 0–9 - _ . ~` is escaped (space handled apart).
const QUERY_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn query_escape(s: &str) -> String {
    utf8_percent_encode(s, QUERY_ESCAPE)
        .to_string()
        .replace("%20", "+")
}

/// The `fields` values for the include_* options, in the integration's order (API spec §7).
pub(crate) fn fields(cfg: &ThreatConnectConfig) -> Vec<&'static str> {
    let mut fields = Vec::new();
    if cfg.include_group_assoc {
        fields.push("associatedGroups");
    }
    if cfg.include_group_assoc_attribs {
        fields.push("associatedGroups.attributes");
    }
    if cfg.include_indicator_assoc {
        fields.push("associatedIndicators");
    }
    if cfg.include_attributes {
        fields.push("attributes");
    }
    fields.extend(["securityLabels", "sightings", "tags", "threatAssess"]);
    fields
}

/// `lastModified GEQ "<start>"`, ANDed with the user's TQL when there is one. The timestamp is
/// RFC 3339 without fraction: ThreatConnect rejects some fractional forms (API spec §3).
pub fn tql(start: DateTime<Utc>, user: Option<&str>) -> String {
    bounded_tql(start, None, user)
}

/// [`tql`] bounded above by `lastModified LT "<end>"` (a backfill window) when `end` is given.
pub(crate) fn bounded_tql(
    start: DateTime<Utc>,
    end: Option<DateTime<Utc>>,
    user: Option<&str>,
) -> String {
    const FORMAT: &str = "%Y-%m-%dT%H:%M:%SZ";
    let mut base = format!("lastModified GEQ \"{}\"", start.format(FORMAT));
    if let Some(end) = end {
        base.push_str(&format!(" AND lastModified LT \"{}\"", end.format(FORMAT)));
    }
    match user.map(str::trim).filter(|u| !u.is_empty()) {
        Some(u) => format!("{base} AND {u}"),
        None => base,
    }
}

/// The query string with keys sorted as Go's `url.Values.Encode` does.
pub(crate) fn query(fields: &[&str], result_limit: u32, result_start: u32, tql: &str) -> String {
    let mut q = String::new();
    append_query(&mut q, fields, result_limit, result_start, tql);
    q
}

/// A one-item probe with `count=true` (the total matches) at `result_start`: no optional
/// fields, so it stays small.
pub(crate) fn probe_query(result_start: u32, tql: &str) -> String {
    let mut q = String::from("count=true&");
    append_query(&mut q, &[], 1, result_start, tql);
    q
}

fn append_query(q: &mut String, fields: &[&str], result_limit: u32, result_start: u32, tql: &str) {
    for f in fields {
        q.push_str("fields=");
        q.push_str(&query_escape(f));
        q.push('&');
    }
    q.push_str(&format!(
        "resultLimit={result_limit}&resultStart={result_start}&sorting={}&tql={}",
        query_escape("lastModified asc"),
        query_escape(tql)
    ));
}

/// The paging keys of an indicator; everything else is left for the mapper.
#[derive(Deserialize)]
struct Keys {
    id: Option<i64>,
    #[serde(rename = "lastModified")]
    last_modified: Option<String>,
}

/// The paging key of an item: what deserializing [`Keys`] from it gives.
fn item_key(text: &str) -> ItemKey {
    let mut walk = Walk::new(text);
    walked_item(&mut walk, 1)
        .filter(|_| walk.finish().is_some())
        .map_or_else(|| serde_key(text), |(_, key)| key)
}

fn serde_key(text: &str) -> ItemKey {
    let keys: Keys = serde_json::from_str(text).ok()?;
    key_of(keys.id, keys.last_modified.as_deref())
}

fn key_of(id: Option<i64>, last_modified: Option<&str>) -> ItemKey {
    let lm = DateTime::parse_from_rfc3339(last_modified?).ok()?;
    Some((id?, lm.with_timezone(&Utc)))
}

/// Walks one item (at nesting level `depth`) and gives where it lies and its paging key:
/// what [`serde_key`] gives, found from its top-level members in the same pass. `None` when
/// the walk does not accept the item.
fn walked_item(walk: &mut Walk<'_>, depth: usize) -> Option<(Range<usize>, ItemKey)> {
    let start = walk.start();
    if walk.peek()? != b'{' {
        // Not an object: serde's answer (a struct can be read from an array).
        let text = walk.value(depth)?;
        return Some((start..start + text.len(), serde_key(text)));
    }
    // serde's view of each field: absent, or the value (more than one voids the key).
    let (mut id, mut last_modified) = (None, None);
    let (mut duplicate, mut escaped) = (false, false);
    walk.object(depth, |walk, key| {
        let slot = match key {
            "id" => &mut id,
            "lastModified" => &mut last_modified,
            _ => {
                // An escaped key may spell either name.
                escaped |= key.contains('\\');
                return walk.skip(depth + 1);
            }
        };
        duplicate |= slot.replace(walk.value(depth + 1)?).is_some();
        Some(())
    })?;
    let text = walk.since(start)?;
    let span = start..start + text.len();
    let key = if escaped {
        serde_key(text)
    } else if duplicate {
        // serde: "duplicate field".
        None
    } else {
        member_key(id, last_modified)
    };
    Some((span, key))
}

/// [`key_of`] from the two members' texts, read as serde reads them into [`Keys`].
fn member_key(id: Option<&str>, last_modified: Option<&str>) -> ItemKey {
    let id = id
        .map_or(Ok(None), serde_json::from_str::<Option<i64>>)
        .ok()?;
    let last_modified = match last_modified {
        None => None,
        Some(v) => walk::nullable_str(v)?,
    };
    key_of(id, last_modified.as_deref())
}

/// The response envelope, its items borrowed from the body.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow)]
    data: Vec<&'a RawValue>,
    next: Option<&'a RawValue>,
    status: Option<Cow<'a, str>>,
    /// Only with `count=true`.
    count: Option<u64>,
}

/// What a page's envelope says: where each item lies in the body, their paging keys, and the
/// envelope's other fields.
#[derive(Debug, PartialEq)]
struct Parts<'a> {
    spans: Vec<Range<usize>>,
    keys: Vec<ItemKey>,
    /// The response had a `next` link.
    next: bool,
    status: Option<Cow<'a, str>>,
    /// The total matches, when asked for (`count=true`).
    count: Option<u64>,
}

impl<'a> Parts<'a> {
    /// The envelope as one strict walk of the body reads it, or `None` to leave the body to
    /// [`Parts::by_serde`] (which [`Envelope`] defines).
    fn walked(body: &'a str) -> Option<Self> {
        let mut parts = Parts {
            spans: Vec::new(),
            keys: Vec::new(),
            next: false,
            status: None,
            count: None,
        };
        walk::envelope(
            body,
            &["data", "next", "status", "count"],
            |walk, field| match field {
                0 => {
                    if walk.peek()? != b'[' {
                        return None;
                    }
                    walk.array(2, |walk| {
                        let (span, key) = walked_item(walk, 3)?;
                        parts.spans.push(span);
                        parts.keys.push(key);
                        Some(())
                    })
                }
                1 => {
                    parts.next = walk.value(2)? != "null";
                    Some(())
                }
                2 => {
                    parts.status = walk::nullable_str(walk.value(2)?)?;
                    Some(())
                }
                _ => {
                    parts.count = serde_json::from_str(walk.value(2)?).ok()?;
                    Some(())
                }
            },
        )?;
        Some(parts)
    }

    /// The envelope as `serde_json` reads it: the reference, and the answer (or the error)
    /// for whatever the walk leaves.
    fn by_serde(body: &'a str) -> Result<Self, FetchError> {
        let envelope: Envelope<'a> = serde_json::from_str(body)
            .map_err(|e| FetchError::undecodable(PLATFORM, "indicators response", &e))?;
        Ok(Parts {
            spans: RawItems::spans_in(body, &envelope.data),
            keys: envelope
                .data
                .iter()
                .map(|raw| item_key(raw.get()))
                .collect(),
            next: envelope.next.is_some(),
            status: envelope.status,
            count: envelope.count,
        })
    }
}

/// A decoded indicators response: the items (slices of the body) and their paging keys.
struct DecodedPage {
    items: RawItems,
    keys: Vec<ItemKey>,
    /// The response had a `next` link.
    next: bool,
    /// The total matches, when asked for (`count=true`).
    count: Option<u64>,
    invalid_utf8: usize,
}

/// Decodes an indicators response (run on the blocking pool: a page can be tens of MB).
fn decode_page(body: Vec<u8>, pool: Arc<BodyPool>) -> Result<DecodedPage, FetchError> {
    let (body, invalid_utf8) = page_text(body, pool);
    let parts = Parts::walked(&body).map_or_else(|| Parts::by_serde(&body), Ok)?;
    if let Some(status) = parts.status.as_deref().filter(|s| *s != "Success") {
        return Err(FetchError::InvalidResponse {
            platform: PLATFORM,
            message: format!("status {:?} in a 200 response", bounded(status)),
        });
    }
    Ok(DecodedPage {
        items: RawItems::from_spans(Arc::clone(&body), parts.spans),
        keys: parts.keys,
        next: parts.next,
        count: parts.count,
        invalid_utf8,
    })
}

/// One signed GET of the indicators API, decoded off the runtime; the platform's clock (its
/// `Date` header) comes with it. Owns its inputs so that backfill windows can run it as tasks.
async fn fetch_page(
    http: HttpClient,
    cfg: Arc<ThreatConnectConfig>,
    url: url::Url,
) -> Result<(DecodedPage, Option<DateTime<Utc>>), FetchError> {
    // Sign the exact bytes we send: path + query of the parsed URL, fresh timestamp per attempt.
    let target = auth::path_and_query(&url);
    let response = http
        .send(|client| {
            let ts = Utc::now().timestamp();
            let authz = auth::authorization(
                &cfg.access_id,
                cfg.secret_key.expose_secret().as_bytes(),
                &target,
                "GET",
                ts,
            );
            client
                .get(url.clone())
                .header("Timestamp", ts.to_string())
                .header(reqwest::header::AUTHORIZATION, authz)
                .header(reqwest::header::ACCEPT, "application/json")
                .build()
                .map_err(|e| HttpError::Transport(e.to_string()))
        })
        .await?;
    let server_date = crate::http::server_date(&response.headers);
    let pool = http.page_pool();
    let page = off_runtime(move || decode_page(response.body, pool)).await?;
    Ok((page, server_date))
}

/// A ThreatConnect stream's pull side.
pub struct ThreatConnectSource {
    cfg: Arc<ThreatConnectConfig>,
    http: HttpClient,
    /// `<url>/api/v3/indicators`, joined once.
    indicators: url::Url,
    fields: Vec<&'static str>,
    map_options: MapOptions,
    /// The platform's clock minus ours, learned from `Date` headers.
    clock_offset: chrono::TimeDelta,
    /// Whether future-stamped indicators have been reported yet (once per stream).
    future_reported: bool,
    /// A sweep has just begun: consider a backfill before its first page.
    sweep_begun: bool,
    /// The backfill's windows in flight, when one runs.
    windows: Option<WindowFetches>,
}

impl ThreatConnectSource {
    /// Builds the source from a validated config and a ready HTTP client.
    pub fn new(cfg: Arc<ThreatConnectConfig>, http: HttpClient) -> Self {
        let map_options = MapOptions {
            ioc_expiration: cfg.ioc_expiration.clone(),
            tags: cfg.event_tags(),
        };
        Self {
            fields: fields(&cfg),
            indicators: endpoint(&cfg.url, ["api", "v3", "indicators"]),
            cfg,
            http,
            map_options,
            clock_offset: chrono::TimeDelta::zero(),
            future_reported: false,
            sweep_begun: false,
            windows: None,
        }
    }

    /// The full request URL for a page.
    pub(crate) fn page_url(&self, watermark: DateTime<Utc>, result_start: u32) -> url::Url {
        self.window_url(watermark, None, result_start)
    }

    /// The request URL for a page of `[watermark, end)`.
    fn window_url(
        &self,
        watermark: DateTime<Utc>,
        end: Option<DateTime<Utc>>,
        result_start: u32,
    ) -> url::Url {
        let q = query(
            &self.fields,
            self.cfg.batch_size,
            result_start,
            &bounded_tql(watermark, end, self.cfg.tql.as_deref()),
        );
        self.indicators_url(&q)
    }

    /// A one-item `count=true` probe of `[start, end)` at `result_start`.
    fn probe_url(&self, start: DateTime<Utc>, end: DateTime<Utc>, result_start: u64) -> url::Url {
        let result_start = u32::try_from(result_start).unwrap_or(u32::MAX);
        let q = probe_query(
            result_start,
            &bounded_tql(start, Some(end), self.cfg.tql.as_deref()),
        );
        self.indicators_url(&q)
    }

    fn indicators_url(&self, q: &str) -> url::Url {
        let mut url = self.indicators.clone();
        url.set_query(Some(q));
        url
    }

    /// The platform's clock as last learned from its `Date` header (`DateTime + TimeDelta`
    /// panics on overflow, and the offset is the server's number).
    fn platform_now(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now.checked_add_signed(self.clock_offset).unwrap_or(now)
    }

    /// One decoded page and the platform's clock (its `Date` header) when it sent it.
    async fn get(
        &mut self,
        url: &url::Url,
    ) -> Result<(DecodedPage, Option<DateTime<Utc>>), FetchError> {
        let fetched = fetch_page(self.http.clone(), Arc::clone(&self.cfg), url.clone()).await?;
        self.learn_clock(fetched.1);
        Ok(fetched)
    }

    /// Keeps the platform's clock offset from a response's `Date` header.
    fn learn_clock(&mut self, server_date: Option<DateTime<Utc>>) {
        if let Some(server_now) = server_date {
            self.clock_offset = server_now.signed_duration_since(Utc::now());
        }
    }

    /// Says once per stream that some indicators are stamped in the future (they are counted
    /// on every page).
    fn report_future(&mut self, keys: &[ItemKey], horizon: DateTime<Utc>, count: usize) {
        if count == 0 || self.future_reported {
            return;
        }
        self.future_reported = true;
        let example = keys.iter().flatten().find(|(_, lm)| *lm > horizon);
        tracing::warn!(
            future_timestamps = count as u64,
            example.id = example.map(|(id, _)| *id),
            example.last_modified = example.map(|(_, lm)| lm.to_rfc3339()),
            "{count} indicator(s) have a lastModified after the platform's clock (+{} min): they \
             are delivered but do not move the watermark (reported once per stream)",
            sweep::FUTURE_MARGIN.num_minutes()
        );
    }
}

impl Source for ThreatConnectSource {
    type Cursor = TcCursor;

    fn platform(&self) -> &'static str {
        PLATFORM
    }

    fn initial_cursor(&self) -> TcCursor {
        TcCursor::from(self.initial_sweep())
    }

    fn begin_sweep(&mut self) {
        self.sweep_begun = true;
    }

    fn end_sweep(&mut self) {
        self.http.release_page_buffers();
    }

    async fn fetch(&mut self, cursor: &TcCursor) -> Result<Page<TcCursor>, FetchError> {
        let page = match &cursor.backfill {
            Some(_) => self.next_window_page(cursor).await,
            None => self.next_single_page(cursor).await,
        };
        page.map_err(|e| e.masked(self.http.secrets()))
    }

    fn mapper(&self) -> Mapper {
        let options = self.map_options.clone();
        Arc::new(move |raw: &str| map_indicator(raw, &options))
    }

    fn describe(&self, cursor: &TcCursor) -> String {
        let tail = describe_sweep(&cursor.sweep, None);
        let Some(b) = &cursor.backfill else {
            return tail;
        };
        let windows: Vec<String> = b
            .windows
            .iter()
            .map(|w| format!("#{} {}", w.id, describe_sweep(&w.cursor, Some(w.end))))
            .collect();
        format!(
            "backfill {}% of ~{} in {} window(s) [{}]; then {tail}",
            b.percent(),
            b.estimated,
            b.windows.len(),
            windows.join(", ")
        )
    }

    fn progress(&self, cursor: &TcCursor) -> Option<BackfillProgress> {
        cursor.backfill.as_ref().map(|b| BackfillProgress {
            done: b.done,
            estimated: b.estimated,
        })
    }
}

/// `lastModified>=<watermark> [+<anchor>] [<end]`.
fn describe_sweep(cursor: &SweepCursor, end: Option<DateTime<Utc>>) -> String {
    const FORMAT: &str = "%Y-%m-%dT%H:%M:%SZ";
    let mut text = format!("lastModified>={}", cursor.watermark.format(FORMAT));
    if let Some(a) = cursor.anchor {
        text.push_str(&format!(" +{}", a.position + 1));
    }
    if let Some(end) = end {
        text.push_str(&format!(" <{}", end.format(FORMAT)));
    }
    text
}

/// Raw page bodies a backfill may hold beyond the pipeline's own (fetched ahead or in flight):
/// the windows' concurrency is cut to what fits, so large pages (10 000 indicators with every
/// association are tens of MB each) keep memory bounded. Two pages of 10 000 plain indicators
/// (12.7 MiB each) fit: with one, every page waited for its own request to be served and
/// decoded, and the fetch, not the mapping, paced a page-10 000 backfill.
const BACKFILL_PAGE_BUDGET: usize = 32 * 1024 * 1024;

/// What a backfill task brings back.
enum Fetched {
    /// A page of window `window`, requested with `plan`.
    Page {
        window: u32,
        plan: Plan,
        started: std::time::Instant,
        result: Result<(DecodedPage, Option<DateTime<Utc>>), FetchError>,
    },
    /// The timestamp of the middle item of window `window` (where to split it), if any.
    Split {
        window: u32,
        at: Option<DateTime<Utc>>,
    },
}

/// A backfill's requests in flight: one page request per window at most, up to the
/// concurrency [`Aimd`] allows, plus at most one split probe. Finished pages wait here until
/// the poll loop asks for the next page (each is one page of the pipeline).
struct WindowFetches {
    /// The window set with every applied page (ahead of what the loop has taken).
    cursor: TcCursor,
    /// The cursor of the page last handed to the loop: while the loop passes it back, the
    /// state here is the truth; anything else (a restart of the sweep) starts afresh.
    handed_out: TcCursor,
    /// Pages applied and waiting for the loop, in order (with those in flight, at most twice the
    /// concurrency limit, within the page budget).
    ready: std::collections::VecDeque<Page<TcCursor>>,
    /// A request failed: reported once the ready pages are taken.
    failed: Option<FetchError>,
    /// The largest page body seen, in bytes (0 until the first page).
    largest_page: usize,
    tasks: tokio::task::JoinSet<Fetched>,
    in_flight: std::collections::BTreeSet<u32>,
    splitting: bool,
    aimd: Aimd,
    pushback_seen: u64,
}

impl ThreatConnectSource {
    fn initial_sweep(&self) -> SweepCursor {
        let lookback = chrono::TimeDelta::from_std(self.cfg.initial_interval)
            .unwrap_or(chrono::TimeDelta::MAX);
        SweepCursor::starting_at(
            Utc::now()
                .checked_sub_signed(lookback)
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
        )
    }

    /// The next page of the single sweep; at the start of a sweep far behind, the backfill's
    /// plan instead (an empty page whose cursor holds the windows).
    async fn next_single_page(&mut self, cursor: &TcCursor) -> Result<Page<TcCursor>, FetchError> {
        if std::mem::take(&mut self.sweep_begun)
            && let Some(backfill) = self.plan_backfill(&cursor.sweep).await?
        {
            let upper = backfill
                .windows
                .last()
                .map_or(cursor.sweep.watermark, |w| w.end);
            tracing::info!(
                windows = backfill.windows.len(),
                estimated = backfill.estimated,
                concurrency = self.cfg.backfill_concurrency,
                "backfill planned: {} windows up to {}",
                backfill.windows.len(),
                upper.format("%Y-%m-%dT%H:%M:%SZ")
            );
            return Ok(Page {
                items: RawItems::default(),
                cursor: TcCursor {
                    sweep: SweepCursor::starting_at(upper),
                    backfill: Some(backfill),
                },
                more: true,
                duplicates_dropped: 0,
                future_timestamps: 0,
                invalid_utf8: 0,
            });
        }
        let page = self.next_page(&cursor.sweep).await?;
        Ok(Page {
            items: page.items,
            cursor: TcCursor::from(page.cursor),
            more: page.more,
            duplicates_dropped: page.duplicates_dropped,
            future_timestamps: page.future_timestamps,
            invalid_utf8: page.invalid_utf8,
        })
    }

    /// Windows for `[cursor, now - SETTLE)` when the stream is more than `interval` behind and
    /// holds enough items to be worth it; edges at the K-quantiles of the data.
    async fn plan_backfill(
        &mut self,
        cursor: &SweepCursor,
    ) -> Result<Option<Backfill>, FetchError> {
        let k = u64::from(self.cfg.backfill_concurrency);
        if k < 2 {
            return Ok(None);
        }
        let upper = backfill::upper_edge(self.platform_now(Utc::now()));
        let interval =
            chrono::TimeDelta::from_std(self.cfg.interval).unwrap_or(chrono::TimeDelta::MAX);
        let behind = upper.signed_duration_since(cursor.watermark);
        if behind <= interval {
            return Ok(None);
        }
        let probe = self.probe_url(cursor.watermark, upper, 0);
        let (counted, _) = self.get(&probe).await?;
        let total = counted.count.unwrap_or(0);
        // A single cursor takes two pages in two round trips: nothing to gain.
        if total <= 2 * u64::from(self.cfg.batch_size) {
            return Ok(None);
        }
        let mut probes = tokio::task::JoinSet::new();
        for i in 1..k {
            let url = self.probe_url(cursor.watermark, upper, total * i / k);
            probes.spawn(fetch_page(self.http.clone(), Arc::clone(&self.cfg), url));
        }
        let mut quantiles = Vec::new();
        while let Some(done) = probes.join_next().await {
            let Some(result) = task_value(done) else {
                continue;
            };
            let (page, _) = result?;
            quantiles.extend(page.keys.first().copied().flatten().map(|(_, lm)| lm));
        }
        let edges = backfill::edges(cursor.watermark, &quantiles, upper);
        let windows = edges.len().saturating_sub(1).max(1) as u64;
        let estimates = vec![total / windows; edges.len().saturating_sub(1)];
        Ok(Backfill::plan(cursor, &edges, &estimates))
    }

    /// The next page any backfill window delivers, with the whole window set as its cursor.
    ///
    /// Every finished request is applied as soon as the loop asks for a page, and its window's
    /// next request starts at once; the pages wait here in the order they were applied (each
    /// carries the window set as it stood after it), at most the concurrency limit of them.
    async fn next_window_page(&mut self, cursor: &TcCursor) -> Result<Page<TcCursor>, FetchError> {
        if self
            .windows
            .as_ref()
            .is_none_or(|w| w.handed_out != *cursor)
        {
            self.windows = Some(WindowFetches {
                cursor: cursor.clone(),
                handed_out: cursor.clone(),
                tasks: tokio::task::JoinSet::new(),
                in_flight: std::collections::BTreeSet::new(),
                splitting: false,
                ready: std::collections::VecDeque::new(),
                failed: None,
                largest_page: 0,
                aimd: Aimd::new(self.cfg.backfill_concurrency as usize),
                pushback_seen: self.http.pushback(),
            });
        }
        loop {
            while let Some(done) = self.windows.as_mut().and_then(|w| w.tasks.try_join_next()) {
                self.absorb(done);
            }
            self.launch_windows()?;
            let Some(fetches) = self.windows.as_mut() else {
                unreachable!("set above");
            };
            if let Some(page) = fetches.ready.pop_front() {
                fetches.handed_out = page.cursor.clone();
                return Ok(page);
            }
            if let Some(e) = fetches.failed.take() {
                // Retried by the poll loop with backoff; the window is launched again then.
                return Err(e);
            }
            let Some(done) = fetches.tasks.join_next().await else {
                // Nothing in flight and nothing to launch: every window is done.
                return Ok(self.backfill_done());
            };
            self.absorb(done);
        }
    }

    /// Applies one finished backfill task: a page joins the ready queue, a failure is kept for
    /// the loop, a split probe splits its window.
    fn absorb(&mut self, done: Result<Fetched, tokio::task::JoinError>) {
        let Some(done) = task_value(done) else {
            return;
        };
        let Some(fetches) = self.windows.as_mut() else {
            return;
        };
        let (window, plan, started, result) = match done {
            Fetched::Split { window, at } => {
                fetches.splitting = false;
                let Some(b) = fetches.cursor.backfill.as_mut() else {
                    return;
                };
                match at {
                    Some(at) if b.split(window, at) => {
                        tracing::debug!(window, at = %at, "backfill window split");
                    }
                    // No middle item, or one in a second that cannot be cut: this window is
                    // not split again (no probe after probe while a slot is idle).
                    _ => b.unsplittable(window),
                }
                return;
            }
            Fetched::Page {
                window,
                plan,
                started,
                result,
            } => (window, plan, started, result),
        };
        fetches.in_flight.remove(&window);
        let pushback = self.http.pushback();
        let pushed = pushback > fetches.pushback_seen;
        fetches.pushback_seen = pushback;
        let before = fetches.aimd.limit();
        match &result {
            Ok(_) => fetches.aimd.on_page(started.elapsed(), pushed),
            Err(_) => fetches.aimd.on_error(),
        }
        let after = fetches.aimd.limit();
        if after != before {
            tracing::info!(
                concurrency = after as u64,
                "backfill concurrency {before} -> {after}{}",
                if after < before {
                    " (the API pushed back)"
                } else {
                    ""
                }
            );
        }
        match result {
            Ok((page, server_date)) => {
                fetches.largest_page = fetches.largest_page.max(page.items.body_len());
                self.learn_clock(server_date);
                if let Some(page) = self.apply_window_page(window, plan, page, server_date)
                    && let Some(fetches) = self.windows.as_mut()
                {
                    fetches.ready.push_back(page);
                }
            }
            Err(e) => {
                // A fatal refusal (credentials) wins over a transient failure.
                let keep = fetches.failed.as_ref().is_some_and(|kept| {
                    crate::error::Classify::kind(kept) == crate::error::ErrorKind::Fail
                });
                if !keep {
                    fetches.failed = Some(e);
                }
            }
        }
    }

    /// Starts page requests for idle windows up to the concurrency limit, and a split probe of
    /// the largest window when a slot would otherwise stay idle.
    fn launch_windows(&mut self) -> Result<(), FetchError> {
        let Some(fetches) = self.windows.as_ref() else {
            return Ok(());
        };
        let Some(b) = fetches.cursor.backfill.as_ref() else {
            return Ok(());
        };
        let server_now = self.platform_now(Utc::now());
        let mut launches = Vec::new();
        // At most `limit` requests in flight, and with the pages waiting for the loop at most
        // twice that (windows keep fetching while the loop maps a burst), all within
        // BACKFILL_PAGE_BUDGET by the largest page seen so far (one request until the first
        // page says how large pages are).
        let held = fetches.in_flight.len() + fetches.ready.len();
        let by_memory = match fetches.largest_page {
            0 => 1,
            bytes => (BACKFILL_PAGE_BUDGET / bytes).max(1),
        };
        let limit = fetches.aimd.limit();
        let free = limit
            .saturating_sub(fetches.in_flight.len())
            .min((2 * limit).min(by_memory).saturating_sub(held));
        for w in b
            .windows
            .iter()
            .filter(|w| !fetches.in_flight.contains(&w.id))
            .take(free)
        {
            let plan = w.cursor.plan(server_now);
            launches.push((
                w.id,
                plan,
                self.window_url(w.cursor.watermark, Some(w.end), plan.result_start),
            ));
        }
        let idle_slots = free > launches.len();
        let split = (idle_slots && !fetches.splitting)
            .then(|| b.largest(2 * u64::from(self.cfg.batch_size)))
            .flatten()
            .map(|w| {
                (
                    w.id,
                    self.probe_url(w.cursor.watermark, w.end, w.remaining() / 2),
                )
            });
        let (http, cfg) = (self.http.clone(), Arc::clone(&self.cfg));
        let Some(fetches) = self.windows.as_mut() else {
            return Ok(());
        };
        for (window, plan, url) in launches {
            fetches.in_flight.insert(window);
            let (http, cfg) = (http.clone(), Arc::clone(&cfg));
            fetches.tasks.spawn(async move {
                let started = std::time::Instant::now();
                let result = fetch_page(http, cfg, url).await;
                Fetched::Page {
                    window,
                    plan,
                    started,
                    result,
                }
            });
        }
        if let Some((window, url)) = split {
            fetches.splitting = true;
            fetches.tasks.spawn(async move {
                let at = fetch_page(http, cfg, url)
                    .await
                    .ok()
                    .and_then(|(page, _)| page.keys.first().copied().flatten())
                    .map(|(_, lm)| lm);
                Fetched::Split { window, at }
            });
        }
        Ok(())
    }

    /// Applies window `id`'s page to the window set: the page to deliver, or `None` when the
    /// window's crowded second shifted and must be re-read.
    fn apply_window_page(
        &mut self,
        id: u32,
        plan: Plan,
        page: DecodedPage,
        server_date: Option<DateTime<Utc>>,
    ) -> Option<Page<TcCursor>> {
        let batch = self.cfg.batch_size as usize;
        let fetches = self.windows.as_mut()?;
        let b = fetches.cursor.backfill.as_mut()?;
        let i = b.windows.iter().position(|w| w.id == id)?;
        let horizon = sweep::future_horizon(server_date, Utc::now());
        // A window split while this page was in flight now ends earlier than the page asked:
        // what lies past its end belongs to the new window (the API sorts by lastModified, so
        // it is the page's tail), and delivering it here too would only duplicate it.
        let end = b.windows[i].end;
        let ours = page
            .keys
            .iter()
            .position(|k| matches!(k, Some((_, lm)) if *lm >= end))
            .unwrap_or(page.keys.len());
        let keys = &page.keys[..ours];
        let more = ours == page.keys.len() && (page.next || page.keys.len() >= batch);
        match sweep::step(&b.windows[i].cursor, plan, keys, more, horizon) {
            Step::Rewind => {
                b.windows[i].cursor.anchor = None;
                None
            }
            Step::Advance {
                deliver,
                cursor: next,
                more,
                future,
            } => {
                let delivered = deliver.len() as u64;
                let w = &mut b.windows[i];
                w.cursor = next;
                w.delivered += delivered;
                b.done += delivered;
                // Past its end (it was split while its page was in flight), or drained.
                if !more || w.cursor.watermark >= w.end {
                    b.windows.remove(i);
                }
                if b.windows.is_empty() {
                    tracing::info!(
                        delivered = b.done,
                        "backfill done: continuing as one cursor from its upper edge"
                    );
                    fetches.cursor.backfill = None;
                }
                Some(Page {
                    duplicates_dropped: keys.len() - deliver.len(),
                    items: page.items.select(&deliver),
                    cursor: fetches.cursor.clone(),
                    more: true,
                    future_timestamps: future,
                    invalid_utf8: page.invalid_utf8,
                })
            }
        }
    }

    /// The page that ends a backfill with nothing left in flight: no items, the tail as the
    /// stream's single cursor.
    fn backfill_done(&mut self) -> Page<TcCursor> {
        let cursor = self.windows.take().map_or_else(
            || TcCursor::from(self.initial_sweep()),
            |w| TcCursor::from(w.cursor.sweep),
        );
        Page {
            items: RawItems::default(),
            cursor,
            more: true,
            duplicates_dropped: 0,
            future_timestamps: 0,
            invalid_utf8: 0,
        }
    }

    /// The page after `cursor` of the single sweep, its errors not yet masked.
    async fn next_page(&mut self, cursor: &SweepCursor) -> Result<Page<SweepCursor>, FetchError> {
        let mut cursor = cursor.clone();
        let mut invalid_utf8 = 0;
        let mut waited_for_settle = false;
        let now = Utc::now();
        if cursor.watermark > sweep::future_horizon(Some(self.platform_now(now)), now) {
            // Written from a future-stamped indicator before they were kept out of the
            // watermark: paging from it would find nothing, ever. The look-back is what
            // `state reset` would give; the new cursor replaces it once this page is delivered.
            tracing::warn!(
                watermark = %cursor.watermark.to_rfc3339(),
                "the stored watermark is in the future: starting again from initial_interval"
            );
            cursor = self.initial_sweep();
        }
        loop {
            let plan = cursor.plan(self.platform_now(Utc::now()));
            let url = self.page_url(cursor.watermark, plan.result_start);
            let (page, server_date) = self.get(&url).await?;
            invalid_utf8 += page.invalid_utf8;
            let horizon = sweep::future_horizon(server_date, Utc::now());
            let keys = page.keys;
            // `next` says more items exist; a full page says so too, for servers that omit `next`
            // (the no-progress guard in `step` stops a sweep that would only spin).
            let server_more = page.next || keys.len() >= self.cfg.batch_size as usize;
            match sweep::step(&cursor, plan, &keys, server_more, horizon) {
                Step::Rewind => {
                    tracing::debug!(watermark = %cursor.watermark, "crowded second shifted, re-reading it from its start");
                    cursor.anchor = None;
                }
                Step::Advance {
                    deliver,
                    cursor: next,
                    more,
                    future,
                } => {
                    let server_now = self.platform_now(Utc::now());
                    if !more && server_more && deliver.is_empty() && !waited_for_settle {
                        // A second denser than a page that can still gain items: re-reading it
                        // from its start makes no progress. Wait until it has settled, then go on
                        // behind the anchor, instead of calling the stream caught up while
                        // indicators of that second are still unread.
                        let settled = next
                            .watermark
                            .checked_add_signed(sweep::SETTLE + chrono::TimeDelta::seconds(1))
                            .unwrap_or(next.watermark);
                        let wait = settled.signed_duration_since(server_now);
                        if wait > chrono::TimeDelta::zero() {
                            tracing::info!(
                                watermark = %next.watermark.to_rfc3339(),
                                wait_ms = wait.num_milliseconds() as u64,
                                "a second holds more than a page and can still gain items: waiting for it to settle"
                            );
                            tokio::time::sleep(wait.to_std().unwrap_or_default()).await;
                            waited_for_settle = true;
                            cursor = next;
                            continue;
                        }
                    }
                    self.report_future(&keys, horizon, future);
                    let duplicates_dropped = keys.len() - deliver.len();
                    let items = page.items.select(&deliver);
                    return Ok(Page {
                        items,
                        cursor: next,
                        more,
                        duplicates_dropped,
                        invalid_utf8,
                        future_timestamps: future,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_matches_elastic_cel_encoding() {
        let start = DateTime::parse_from_rfc3339("2023-11-28T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let q = query(
            &["securityLabels", "sightings", "tags", "threatAssess"],
            2000,
            0,
            &tql(start, None),
        );
        assert_eq!(
            q,
            "fields=securityLabels&fields=sightings&fields=tags&fields=threatAssess&resultLimit=2000&resultStart=0&sorting=lastModified+asc&tql=lastModified+GEQ+%222023-11-28T08%3A00%3A00Z%22"
        );
    }

    #[test]
    fn tql_builder() {
        let start = DateTime::parse_from_rfc3339("2023-11-28T08:00:00.750Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            tql(start, None),
            "lastModified GEQ \"2023-11-28T08:00:00Z\""
        );
        assert_eq!(
            tql(start, Some("   ")),
            "lastModified GEQ \"2023-11-28T08:00:00Z\""
        );
        assert_eq!(
            tql(start, Some("  typeName in (\"Address\",\"Host\") ")),
            "lastModified GEQ \"2023-11-28T08:00:00Z\" AND typeName in (\"Address\",\"Host\")"
        );
    }

    #[test]
    fn go_query_escape() {
        assert_eq!(query_escape("a b\"c:~*"), "a+b%22c%3A~%2A");
    }

    proptest::proptest! {
        /// The walk gives serde's key for every item, duplicates, escaped keys, wrong types and
        /// nested decoys included.
        #[test]
        fn item_keys_by_walk_are_serde_keys(members in proptest::collection::vec((
            proptest::sample::select(&["id", "lastModified", r"i\u0064", r"lastModifie\u0064", "x", "tags"][..]),
            proptest::sample::select(&[
                "7", "-3", "9007199254918489", "18446744073709551615", "1.0", "1e3", "null", "true",
                r#""7""#, r#""2024-01-01T00:00:00Z""#, r#""2024-01-01T00:00:00+02:00""#,
                r#""2024-01-01T00:00:00\u005a""#, r#""not a date""#, r#""""#,
                r#"{"id":1,"lastModified":"2024-01-01T00:00:00Z"}"#, r#"[{"id":"}"}]"#,
            ][..]),
        ), 0..6), pretty in proptest::bool::ANY) {
            let sep = if pretty { ",\n  " } else { "," };
            let body: Vec<String> = members.iter().map(|(k, v)| format!(r#""{k}":{v}"#)).collect();
            let text = format!("{{{}}}", body.join(sep));
            let raw = RawValue::from_string(text.clone()).unwrap();
            proptest::prop_assert_eq!(item_key(raw.get()), serde_key(&text), "{}", text);
        }
    }

    proptest::proptest! {
        /// One walk of the page gives what serde's envelope and the key of each item give:
        /// the same spans, keys, `next`, `status` and `count`; and it leaves to serde only
        /// what it does not model. On generated pages, and on the same pages with edits.
        #[test]
        fn a_walked_page_is_the_serde_page(
            items in proptest::collection::vec(crate::ingest::arb_json(
                crate::source::walk::testing::STRINGS,
                &["id", "lastModified", "tags", "\\"],
            ), 0..4),
            keys in proptest::collection::vec((
                proptest::option::of(proptest::sample::select(&["7", "-3", "1.5", "\"7\"", "null"][..])),
                proptest::option::of(proptest::sample::select(&[
                    r#""2024-01-01T00:00:00Z""#, r#""2024-01-01T00:00:00\u005a""#, r#""x""#, "null", "3",
                ][..])),
            ), 0..4),
            fields in proptest::collection::vec((
                proptest::sample::select(&["data", "next", "status", "count", "other", r"dat\u0061", "Data"][..]),
                proptest::sample::select(&[
                    "null", "[]", r#""Success""#, r#""Failure""#, r#""Succ\u0065ss""#, "3", "-1", "1.5",
                    r#"{"a":[]}"#, r#""https://x/next""#, "true",
                ][..]),
            ), 0..4),
            pretty in proptest::bool::ANY,
            edits in crate::source::walk::testing::edits(),
        ) {
            let items: Vec<String> = items
                .into_iter()
                .zip(keys.into_iter().chain(std::iter::repeat((None, None))))
                .map(|(item, (id, lm))| {
                    let mut text = if pretty {
                        serde_json::to_string_pretty(&item).unwrap()
                    } else {
                        serde_json::to_string(&item).unwrap()
                    };
                    if let (Some(rest), true) = (text.strip_prefix('{'), item.is_object()) {
                        let extra: String = [("id", id), ("lastModified", lm)]
                            .iter()
                            .filter_map(|(k, v)| v.map(|v| format!(r#""{k}":{v},"#)))
                            .collect();
                        text = if rest.trim_start() == "}" {
                            format!("{{{}}}", extra.trim_end_matches(','))
                        } else {
                            format!("{{{extra}{rest}")
                        };
                    }
                    text
                })
                .collect();
            let sep = if pretty { ",\n " } else { "," };
            let mut members = vec![format!(r#""data":[{}]"#, items.join(sep))];
            members.extend(fields.iter().map(|(k, v)| format!(r#""{k}":{v}"#)));
            let escaped = fields.iter().any(|(k, _)| k.contains('\\'));
            crate::source::walk::testing::check_walk(
                format!("{{{}}}", members.join(sep)),
                edits,
                escaped,
                // Compared by every field's `Debug` (the parts borrow from the page).
                |body| Parts::walked(body).map(|p| format!("{p:?}")),
                |body| Parts::by_serde(body).map(|p| format!("{p:?}")),
            )?;
        }
    }

    #[test]
    fn large_ids_are_exact_keys() {
        let raw = RawValue::from_string(
            r#"{"id":9007199254918489,"lastModified":"2024-01-01T00:00:00Z"}"#.into(),
        )
        .unwrap();
        assert_eq!(
            item_key(raw.get()).map(|(id, _)| id),
            Some(9_007_199_254_918_489)
        );
    }
}
