//! The ThreatConnect V3 indicators client: request building (fields, TQL, sorting, paging
//! parameters encoded exactly as Elastic's CEL program does), HMAC signing per attempt, and the
//! [`Source`] implementation that drives the skip-free sweep of [`super::sweep`].

use std::borrow::Cow;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::ExposeSecret as _;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::auth;
use super::config::ThreatConnectConfig;
use super::ecs::{MapOptions, map_indicator};
use super::sweep::{self, ItemKey, Step, SweepCursor};
use crate::http::{HttpClient, HttpError};
use crate::source::{FetchError, Mapper, Page, RawItems, Source, decode_owned_body, off_runtime};
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
pub fn fields(cfg: &ThreatConnectConfig) -> Vec<&'static str> {
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
    let base = format!(
        "lastModified GEQ \"{}\"",
        start.format("%Y-%m-%dT%H:%M:%SZ")
    );
    match user.map(str::trim).filter(|u| !u.is_empty()) {
        Some(u) => format!("{base} AND {u}"),
        None => base,
    }
}

/// The query string with keys sorted as Go's `url.Values.Encode` does.
pub fn query(fields: &[&str], result_limit: u32, result_start: u32, tql: &str) -> String {
    let mut q = String::new();
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
    q
}

/// The paging keys of an indicator; everything else is left for the mapper.
#[derive(Deserialize)]
struct Keys {
    id: Option<i64>,
    #[serde(rename = "lastModified")]
    last_modified: Option<String>,
}

fn item_key(raw: &RawValue) -> ItemKey {
    let keys: Keys = serde_json::from_str(raw.get()).ok()?;
    let lm = DateTime::parse_from_rfc3339(keys.last_modified.as_deref()?).ok()?;
    Some((keys.id?, lm.with_timezone(&Utc)))
}

/// The response envelope, its items borrowed from the body.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow)]
    data: Vec<&'a RawValue>,
    next: Option<&'a RawValue>,
    status: Option<Cow<'a, str>>,
}

/// A decoded indicators response: the items (slices of the body) and their paging keys.
struct DecodedPage {
    items: RawItems,
    keys: Vec<ItemKey>,
    /// The response had a `next` link.
    next: bool,
    invalid_utf8: usize,
}

/// Decodes an indicators response (run on the blocking pool: a page can be tens of MB).
fn decode_page(body: Vec<u8>) -> Result<DecodedPage, FetchError> {
    let (text, invalid_utf8) = decode_owned_body(body);
    let body = Arc::new(text);
    let envelope: Envelope<'_> = serde_json::from_str(&body)
        .map_err(|e| FetchError::undecodable(PLATFORM, "indicators response", &e))?;
    if let Some(status) = envelope.status.as_deref().filter(|s| *s != "Success") {
        return Err(FetchError::InvalidResponse {
            platform: PLATFORM,
            message: format!("status {:?} in a 200 response", bounded(status)),
        });
    }
    let keys = envelope.data.iter().map(|raw| item_key(raw)).collect();
    let next = envelope.next.is_some();
    let items = RawItems::new(Arc::clone(&body), &envelope.data);
    Ok(DecodedPage {
        items,
        keys,
        next,
        invalid_utf8,
    })
}

/// A ThreatConnect stream's pull side.
pub struct ThreatConnectSource {
    cfg: Arc<ThreatConnectConfig>,
    http: HttpClient,
    fields: Vec<&'static str>,
    map_options: MapOptions,
    /// The platform's clock minus ours, learned from `Date` headers.
    clock_offset: chrono::TimeDelta,
    /// Whether future-stamped indicators have been reported yet (once per stream).
    future_reported: bool,
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
            cfg,
            http,
            map_options,
            clock_offset: chrono::TimeDelta::zero(),
            future_reported: false,
        }
    }

    /// The full request URL for a page.
    pub fn page_url(
        &self,
        watermark: DateTime<Utc>,
        result_start: u32,
    ) -> Result<url::Url, HttpError> {
        let q = query(
            &self.fields,
            self.cfg.batch_size,
            result_start,
            &tql(watermark, self.cfg.tql.as_deref()),
        );
        url::Url::parse(&format!("{}/api/v3/indicators?{q}", self.cfg.base_url())).map_err(|e| {
            HttpError::Client {
                status: 0,
                message: format!("url: cannot build request URL: {e}"),
            }
        })
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
        let access_id = self.cfg.access_id.clone();
        let cfg = self.cfg.clone();
        // Sign the exact bytes we send: path + query of the parsed URL, fresh timestamp per attempt.
        let target = auth::path_and_query(url);
        let response = self
            .http
            .send(|client| {
                let ts = Utc::now().timestamp();
                let authz = auth::authorization(
                    &access_id,
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
        if let Some(server_now) = server_date {
            self.clock_offset = server_now.signed_duration_since(Utc::now());
        }
        let page = off_runtime(move || decode_page(response.body)).await?;
        Ok((page, server_date))
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
    type Cursor = SweepCursor;

    fn platform(&self) -> &'static str {
        PLATFORM
    }

    fn initial_cursor(&self) -> SweepCursor {
        let lookback = chrono::TimeDelta::from_std(self.cfg.initial_interval)
            .unwrap_or(chrono::TimeDelta::MAX);
        SweepCursor::starting_at(
            Utc::now()
                .checked_sub_signed(lookback)
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
        )
    }

    async fn fetch(&mut self, cursor: &SweepCursor) -> Result<Page<SweepCursor>, FetchError> {
        let page = self.next_page(cursor).await;
        page.map_err(|e| e.masked(self.http.secrets()))
    }

    fn mapper(&self) -> Mapper {
        let options = self.map_options.clone();
        Arc::new(move |raw: &str| map_indicator(raw, &options))
    }

    fn describe(&self, cursor: &SweepCursor) -> String {
        match cursor.anchor {
            Some(a) => format!(
                "lastModified>={} +{}",
                cursor.watermark.format("%Y-%m-%dT%H:%M:%SZ"),
                a.position + 1
            ),
            None => format!(
                "lastModified>={}",
                cursor.watermark.format("%Y-%m-%dT%H:%M:%SZ")
            ),
        }
    }
}

impl ThreatConnectSource {
    /// The page after `cursor`, its errors not yet masked.
    async fn next_page(&mut self, cursor: &SweepCursor) -> Result<Page<SweepCursor>, FetchError> {
        let mut cursor = cursor.clone();
        let mut invalid_utf8 = 0;
        let now = Utc::now();
        if cursor.watermark > sweep::future_horizon(Some(self.platform_now(now)), now) {
            // Written from a future-stamped indicator before they were kept out of the
            // watermark: paging from it would find nothing, ever. The look-back is what
            // `state reset` would give; the new cursor replaces it once this page is delivered.
            tracing::warn!(
                watermark = %cursor.watermark.to_rfc3339(),
                "the stored watermark is in the future: starting again from initial_interval"
            );
            cursor = self.initial_cursor();
        }
        loop {
            let plan = cursor.plan(self.platform_now(Utc::now()));
            let url = self.page_url(cursor.watermark, plan.result_start)?;
            let (page, server_date) = self.get(&url).await?;
            invalid_utf8 += page.invalid_utf8;
            let horizon = sweep::future_horizon(server_date, Utc::now());
            let keys = page.keys;
            // `next` says more items exist; a full page says so too, for servers that omit `next`
            // (the no-progress guard in `step` stops a sweep that would only spin).
            let more = page.next || keys.len() >= self.cfg.batch_size as usize;
            match sweep::step(&cursor, plan, &keys, more, horizon) {
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

    #[test]
    fn large_ids_are_exact_keys() {
        let raw = RawValue::from_string(
            r#"{"id":9007199254918489,"lastModified":"2024-01-01T00:00:00Z"}"#.into(),
        )
        .unwrap();
        assert_eq!(
            item_key(&raw).map(|(id, _)| id),
            Some(9_007_199_254_918_489)
        );
    }
}
