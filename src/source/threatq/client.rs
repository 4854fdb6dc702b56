//! The ThreatQ client: OAuth2 client credentials (through the `oauth2` crate, over our shared
//! HTTP client so retries, proxy, TLS and the redacting tracer apply to the token exchange too),
//! and cursorMark paging of a data collection, implementing [`Source`].
//!
//! The token is cached and refreshed shortly before `expires_in` runs out; a 401 from the API
//! gets exactly one re-authentication and one retry. The cursorMark is opaque: it is persisted
//! verbatim, and only after the page it follows has been acknowledged.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use oauth2::basic::BasicClient;
use oauth2::{AuthType, ClientId, ClientSecret, RequestTokenError, TokenResponse as _, TokenUrl};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::time::Instant;

use super::config::{ClientAuthStyle, ThreatQConfig};
use super::ecs::{MapOptions, map_indicator};
use crate::config::fields::endpoint;
use crate::http::{BodyPool, HttpClient, HttpError};
use crate::source::walk;
use crate::source::{FetchError, Mapper, Page, RawItems, Source, off_runtime, page_text};
use crate::telemetry::TokenRefreshed;
use crate::text::{bound_owned, bounded, bounded_to, json_error};

const PLATFORM: &str = "threatq";

/// The cursorMark that starts a collection from its beginning.
pub(crate) const START: &str = "*";

/// A bearer token and when to stop using it.
struct CachedToken {
    access_token: SecretString,
    refresh_at: Instant,
}

/// Why the token endpoint refused or failed.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum TokenError {
    /// The server refused the client credentials (OAuth2 error response).
    #[error("ThreatQ token endpoint refused the client credentials: {0}")]
    Refused(String),
    /// The exchange failed in transport or with a retryable status.
    #[error("ThreatQ token request failed: {0}")]
    Http(HttpError),
    /// The answer was not an OAuth2 token response.
    #[error("ThreatQ token response is invalid: {0}")]
    Invalid(String),
}

impl From<TokenError> for FetchError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Http(h) => FetchError::Http(h),
            TokenError::Refused(message) => FetchError::Http(HttpError::Unauthorized {
                status: 401,
                message: format!(
                    "ThreatQ token endpoint refused the client credentials: {message}"
                ),
            }),
            TokenError::Invalid(message) => FetchError::InvalidResponse {
                platform: PLATFORM,
                message: format!("token response: {message}"),
            },
        }
    }
}

/// The collection envelope. `data` is an array, or `{}` when there is nothing more.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(rename = "nextCursorMark")]
    next_cursor_mark: Option<String>,
}

/// What a collection response says: where each object lies in the body, and the next mark.
#[derive(Debug, PartialEq)]
struct Parts {
    spans: Vec<Range<usize>>,
    next_cursor_mark: Option<String>,
}

impl Parts {
    /// The envelope as one strict walk of the body reads it, or `None` to leave the body to
    /// [`Parts::by_serde`] (which [`Envelope`] defines).
    fn walked(body: &str) -> Option<Self> {
        let mut parts = Parts {
            spans: Vec::new(),
            next_cursor_mark: None,
        };
        walk::envelope(body, &["data", "nextCursorMark"], |walk, field| {
            if field == 1 {
                parts.next_cursor_mark = walk::nullable_str(walk.value(2)?)?.map(Cow::into_owned);
                return Some(());
            }
            if walk.peek()? != b'[' {
                // `{}` (or null, or anything else) is how ThreatQ says "nothing more".
                return walk.skip(2);
            }
            walk.array(2, |walk| {
                let start = walk.start();
                let item = walk.value(3)?;
                parts.spans.push(start..start + item.len());
                Some(())
            })
        })?;
        Some(parts)
    }

    /// The envelope as `serde_json` reads it: the reference, and the answer (or the error)
    /// for whatever the walk leaves.
    fn by_serde(body: &str) -> Result<Self, FetchError> {
        let envelope: Envelope<'_> = serde_json::from_str(body)
            .map_err(|e| FetchError::undecodable(PLATFORM, "indicators response", &e))?;
        let items: Vec<&RawValue> = match envelope.data.map(RawValue::get) {
            Some(text) if text.trim_start().starts_with('[') => serde_json::from_str(text)
                .map_err(|e| FetchError::undecodable(PLATFORM, "data as a list of objects", &e))?,
            // `{}` (or absent, or null) is how ThreatQ says "nothing more".
            _ => Vec::new(),
        };
        Ok(Parts {
            spans: RawItems::spans_in(body, &items),
            next_cursor_mark: envelope.next_cursor_mark,
        })
    }
}

/// A decoded collection response: the objects (slices of the body) and the next mark.
struct DecodedPage {
    items: RawItems,
    next_cursor_mark: Option<String>,
    invalid_utf8: usize,
}

/// Decodes a collection response (run on the blocking pool: a page can be tens of MB).
fn decode_page(body: Vec<u8>, pool: Arc<BodyPool>) -> Result<DecodedPage, FetchError> {
    let (body, invalid_utf8) = page_text(body, pool);
    let parts = Parts::walked(&body).map_or_else(|| Parts::by_serde(&body), Ok)?;
    Ok(DecodedPage {
        items: RawItems::from_spans(Arc::clone(&body), parts.spans),
        next_cursor_mark: parts.next_cursor_mark,
        invalid_utf8,
    })
}

/// A ThreatQ stream's pull side.
pub struct ThreatQSource {
    cfg: Arc<ThreatQConfig>,
    http: HttpClient,
    /// `<host>/api/indicators/query/hash/<data_collection_id>`, joined once.
    indicators: url::Url,
    map_options: MapOptions,
    token: Option<CachedToken>,
    /// The credential style that worked, once `auto` has found it.
    auth_style: ClientAuthStyle,
}

impl ThreatQSource {
    /// Builds the source from a validated config and a ready HTTP client.
    pub fn new(cfg: Arc<ThreatQConfig>, http: HttpClient) -> Self {
        Self {
            map_options: MapOptions {
                ioc_expiration: cfg.ioc_expiration.clone(),
                tags: cfg.event_tags(),
            },
            auth_style: cfg.client_auth_style,
            indicators: endpoint(
                &cfg.host,
                [
                    "api",
                    "indicators",
                    "query",
                    "hash",
                    &cfg.data_collection_id,
                ],
            ),
            cfg,
            http,
            token: None,
        }
    }

    /// The indicators URL for one page.
    pub(crate) fn page_url(&self, cursor_mark: &str) -> url::Url {
        let mut url = self.indicators.clone();
        url.query_pairs_mut()
            .append_pair("sort", "updated_at")
            .append_pair("limit", &self.cfg.page_size.to_string())
            .append_pair("cursorMark", cursor_mark)
            .append_pair("fields", &self.cfg.threat_library_fields);
        url
    }

    /// A valid access token: the cached one, or a fresh one.
    async fn access_token(&mut self) -> Result<SecretString, TokenError> {
        if let Some(t) = &self.token
            && Instant::now() < t.refresh_at
        {
            return Ok(t.access_token.clone());
        }
        let styles: &[ClientAuthStyle] = match self.auth_style {
            ClientAuthStyle::Auto => &[ClientAuthStyle::Basic, ClientAuthStyle::Body],
            ClientAuthStyle::Basic => &[ClientAuthStyle::Basic],
            ClientAuthStyle::Body => &[ClientAuthStyle::Body],
        };
        let mut last = None;
        for style in styles {
            match self.request_token(*style).await {
                Ok(token) => {
                    if self.auth_style == ClientAuthStyle::Auto {
                        self.auth_style = *style;
                    }
                    let secret = token.access_token.clone();
                    self.token = Some(token);
                    return Ok(secret);
                }
                // Like Go's auto-detect: only a refusal makes us try the other style.
                Err(TokenError::Refused(m)) => last = Some(TokenError::Refused(m)),
                Err(other) => return Err(other),
            }
        }
        Err(last.unwrap_or_else(|| TokenError::Invalid("no client authentication style".into())))
    }

    async fn request_token(&self, style: ClientAuthStyle) -> Result<CachedToken, TokenError> {
        let client = BasicClient::new(ClientId::new(self.cfg.client_id.clone()))
            .set_client_secret(ClientSecret::new(
                self.cfg.client_secret.expose_secret().to_owned(),
            ))
            .set_token_uri(TokenUrl::from_url(self.cfg.token_url.clone()))
            .set_auth_type(match style {
                ClientAuthStyle::Body => AuthType::RequestBody,
                _ => AuthType::BasicAuth,
            });
        let http = self.http.clone();
        let exchange = move |request: oauth2::HttpRequest| {
            let http = http.clone();
            async move { oauth_exchange(&http, request).await }
        };
        let requested = Instant::now();
        let result = client
            .exchange_client_credentials()
            .request_async(&exchange)
            .await;
        let token = match result {
            Ok(t) => t,
            Err(RequestTokenError::ServerResponse(e)) => {
                let secrets = self.http.secrets();
                let mut text = secrets.mask_bounded(e.error().as_ref());
                if let Some(d) = e.error_description() {
                    text.push_str(": ");
                    text.push_str(&secrets.mask_bounded(d));
                }
                return Err(TokenError::Refused(text));
            }
            Err(RequestTokenError::Request(e)) => return Err(TokenError::Http(e.0)),
            // The field and the kind of problem only: serde's text would quote the value (a
            // numeric access_token, say), and the body is never repeated.
            Err(RequestTokenError::Parse(e, _body)) => {
                return Err(TokenError::Invalid(format!(
                    "field {}: {}",
                    bounded(&e.path().to_string()),
                    json_error(e.inner())
                )));
            }
            Err(RequestTokenError::Other(m)) => return Err(TokenError::Invalid(bound_owned(m))),
        };
        let lifetime = token_lifetime(token.expires_in());
        // Refresh early, as Go's oauth2 does (10 s), but never more than a tenth of a short TTL.
        let margin = Duration::from_secs(10).min(lifetime / 10);
        TokenRefreshed {
            platform: <super::ThreatQ as crate::source::registry::Platform>::NAME,
            expires_in: Some(lifetime),
        }
        .emit();
        // From now on the token is masked wherever it could be echoed (errors, logs, traces).
        self.http.secrets().add_token(token.access_token().secret());
        Ok(CachedToken {
            access_token: SecretString::from(token.access_token().secret().to_owned()),
            // `expires_in` is the server's number: `Instant + huge` would panic.
            refresh_at: requested
                .checked_add(lifetime.saturating_sub(margin))
                .unwrap_or(requested),
        })
    }

    async fn get_page(&mut self, url: &url::Url) -> Result<DecodedPage, FetchError> {
        let mut reauthenticated = false;
        loop {
            let token = self.access_token().await?;
            let result = self
                .http
                .send(|client| {
                    client
                        .get(url.clone())
                        .bearer_auth(token.expose_secret())
                        .header(reqwest::header::ACCEPT, "application/json")
                        .build()
                        .map_err(|e| HttpError::Transport(e.to_string()))
                })
                .await;
            match result {
                Ok(response) => {
                    let pool = self.http.page_pool();
                    return off_runtime(move || decode_page(response.body, pool)).await;
                }
                // The token expired or was revoked early: one re-authentication, one retry.
                Err(HttpError::Unauthorized { status: 401, .. }) if !reauthenticated => {
                    tracing::info!("ThreatQ answered 401: re-authenticating once");
                    self.token = None;
                    reauthenticated = true;
                }
                // A 401 on a token we were just issued (it expired while the retry stalled, or
                // it was revoked again) says nothing about the credentials: the token endpoint
                // accepted them. Retry later with a new token; the poll loop backs off, and the
                // unit turns DEGRADED if it keeps happening.
                Err(HttpError::Unauthorized {
                    status: 401,
                    message,
                }) => {
                    self.token = None;
                    return Err(FetchError::TokenRefused {
                        platform: PLATFORM,
                        message: format!("401: {}", bounded(&message)),
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The longest we keep a token whatever `expires_in` says (a server may send 2^64-1).
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// How long to use a token: `expires_in` (an hour when absent), at most [`MAX_TOKEN_LIFETIME`].
pub fn token_lifetime(expires_in: Option<Duration>) -> Duration {
    expires_in
        .unwrap_or(Duration::from_secs(3600))
        .min(MAX_TOKEN_LIFETIME)
}

/// The `oauth2` crate's HTTP hook: the token request goes through our client.
async fn oauth_exchange(
    http: &HttpClient,
    request: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, OauthTransport> {
    let (parts, body) = request.into_parts();
    let url = url::Url::parse(&parts.uri.to_string())
        .map_err(|e| OauthTransport(HttpError::Transport(e.to_string())))?;
    let response = http
        .send_credentials(|client| {
            let mut builder = client
                .request(parts.method.clone(), url.clone())
                .body(body.clone());
            for (name, value) in &parts.headers {
                builder = builder.header(name, value);
            }
            builder
                .build()
                .map_err(|e| HttpError::Transport(e.to_string()))
        })
        .await
        .map_err(OauthTransport)?;
    let mut builder = oauth2::http::Response::builder().status(response.status);
    for (name, value) in &response.headers {
        builder = builder.header(name, value);
    }
    builder
        .body(response.body)
        .map_err(|e| OauthTransport(HttpError::Transport(e.to_string())))
}

/// Transport failures of the token exchange, as the `oauth2` crate wants them (an `Error`).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub(crate) struct OauthTransport(HttpError);

impl Source for ThreatQSource {
    type Cursor = String;

    fn platform(&self) -> &'static str {
        PLATFORM
    }

    fn initial_cursor(&self) -> String {
        START.to_owned()
    }

    async fn fetch(&mut self, cursor: &String) -> Result<Page<String>, FetchError> {
        let page = self.next_page(cursor).await;
        page.map_err(|e| e.masked(self.http.secrets()))
    }

    fn end_sweep(&mut self) {
        self.http.release_page_buffers();
    }

    fn mapper(&self) -> Mapper {
        let options = self.map_options.clone();
        Arc::new(move |raw: &str| map_indicator(raw, &options))
    }

    fn describe(&self, cursor: &String) -> String {
        format!("cursorMark={}", bounded_to(cursor, MARK_SHOWN))
    }
}

impl ThreatQSource {
    /// The page after `cursor`, its errors not yet masked.
    async fn next_page(&mut self, cursor: &String) -> Result<Page<String>, FetchError> {
        // A mark committed before marks were checked could make every request fail forever.
        check_cursor_mark(cursor).map_err(|e| FetchError::UnusableCursor {
            platform: PLATFORM,
            message: format!(
                "the stored cursorMark {e}, starting {:?}; reset the stream's cursor with \
                 `ti-sidecar state reset --state-dir DIR --stream ID`",
                bounded_to(cursor, MARK_SHOWN)
            ),
        })?;
        let url = self.page_url(cursor);
        let DecodedPage {
            items,
            next_cursor_mark,
            invalid_utf8,
        } = self.get_page(&url).await?;
        let next = next_cursor_mark.filter(|m| !m.is_empty());
        // Never commit a mark we could not send back: the page fails (and is retried) instead,
        // and the stored cursor stays what it was.
        if let Some(mark) = &next {
            check_cursor_mark(mark).map_err(|e| FetchError::InvalidResponse {
                platform: PLATFORM,
                message: format!(
                    "nextCursorMark {e}, starting {:?}",
                    bounded_to(mark, MARK_SHOWN)
                ),
            })?;
        }
        // Stop on an empty page, or when the same mark comes back (the Solr end-of-results
        // contract); a missing mark keeps the current one so the next interval retries.
        let more = !items.is_empty() && next.as_deref().is_some_and(|m| m != cursor);
        Ok(Page {
            items,
            cursor: next.unwrap_or_else(|| cursor.clone()),
            more,
            duplicates_dropped: 0,
            invalid_utf8,
            future_timestamps: 0,
        })
    }
}

/// The longest cursorMark we accept. Solr marks are a few dozen bytes of base64; 4 KiB leaves
/// room for any real sort key while keeping the request URL well under common 8 KiB limits.
pub(crate) const MAX_CURSOR_MARK: usize = 4096;

/// How much of a bad or long mark is shown in errors and logs.
const MARK_SHOWN: usize = 48;

/// Why a cursorMark cannot be stored or sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InvalidCursorMark {
    /// Longer than [`MAX_CURSOR_MARK`].
    #[error("is {len} bytes long (at most {MAX_CURSOR_MARK} allowed)")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// Empty.
    #[error("is empty")]
    Empty,
    /// Holds a character outside visible ASCII.
    #[error("has {found:?} at byte {at} (only visible ASCII, 0x21-0x7E, is allowed)")]
    BadCharacter {
        /// Byte offset of the character.
        at: usize,
        /// The character.
        found: char,
    },
}

/// A cursorMark is 1 to [`MAX_CURSOR_MARK`] bytes of visible ASCII (`!` to `~`, no space, no
/// control character, nothing beyond ASCII): exactly what survives query encoding and the
/// round trip through the state store unchanged. Solr's base64 marks always qualify.
pub(crate) fn check_cursor_mark(mark: &str) -> Result<(), InvalidCursorMark> {
    if mark.len() > MAX_CURSOR_MARK {
        return Err(InvalidCursorMark::TooLong { len: mark.len() });
    }
    if mark.is_empty() {
        return Err(InvalidCursorMark::Empty);
    }
    match mark.char_indices().find(|(_, c)| !c.is_ascii_graphic()) {
        Some((at, found)) => Err(InvalidCursorMark::BadCharacter { at, found }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fields::FieldReader;
    use crate::source::registry::StreamSettings as _;

    proptest::proptest! {
        /// One walk of the page gives what serde's envelope and its second parse of `data`
        /// give: the same spans and next mark; and it leaves to serde only what it does not
        /// model. On generated pages, and on the same pages with edits.
        #[test]
        fn a_walked_page_is_the_serde_page(
            items in proptest::collection::vec(crate::ingest::arb_json(
                crate::source::walk::testing::STRINGS,
                &["id", "value", "\\"],
            ), 0..4),
            data in proptest::sample::select(&["items", "{}", "null", "absent", "\"x\""][..]),
            fields in proptest::collection::vec((
                proptest::sample::select(&["nextCursorMark", "data", "total", r"nextCursorM\u0061rk"][..]),
                proptest::sample::select(&[
                    "null", "[]", "{}", r#""AoJ9z5LKnvwCJjEwNjk2Nw==""#, r#""a\u0041""#, "3",
                ][..]),
            ), 0..3),
            pretty in proptest::bool::ANY,
            edits in crate::source::walk::testing::edits(),
        ) {
            let to_text = |v: &serde_json::Value| if pretty {
                serde_json::to_string_pretty(v).unwrap()
            } else {
                serde_json::to_string(v).unwrap()
            };
            let sep = if pretty { ",\n " } else { "," };
            let items: Vec<String> = items.iter().map(to_text).collect();
            let mut members: Vec<String> = match data {
                "items" => vec![format!(r#""data":[{}]"#, items.join(sep))],
                "absent" => vec![],
                other => vec![format!(r#""data":{other}"#)],
            };
            members.extend(fields.iter().map(|(k, v)| format!(r#""{k}":{v}"#)));
            let escaped = fields.iter().any(|(k, _)| k.contains('\\'));
            crate::source::walk::testing::check_walk(
                format!("{{{}}}", members.join(sep)),
                edits,
                escaped,
                Parts::walked,
                Parts::by_serde,
            )?;
        }
    }

    #[test]
    fn cursor_marks_are_bounded_visible_ascii() {
        assert_eq!(check_cursor_mark(START), Ok(()));
        assert_eq!(check_cursor_mark("AoJ9z5LKnvwCJjEwNjk2Nw=="), Ok(()));
        assert_eq!(check_cursor_mark(&"A".repeat(MAX_CURSOR_MARK)), Ok(()));
        assert_eq!(
            check_cursor_mark(&"A".repeat(MAX_CURSOR_MARK + 1)),
            Err(InvalidCursorMark::TooLong {
                len: MAX_CURSOR_MARK + 1
            })
        );
        assert_eq!(check_cursor_mark(""), Err(InvalidCursorMark::Empty));
        for (mark, at, found) in [("ab\ncd", 2, '\n'), ("a b", 1, ' '), ("é", 0, 'é')] {
            assert_eq!(
                check_cursor_mark(mark),
                Err(InvalidCursorMark::BadCharacter { at, found })
            );
        }
    }

    #[test]
    fn page_url_has_the_integration_parameters() {
        let stream = serde_json::json!({
            "host": "https://tq.example.com",
            "client_id": "c",
            "client_secret": "s",
            "data_collection_id": "abc123",
        });
        let mut r = FieldReader::open("s", &stream).unwrap();
        let cfg = ThreatQConfig::from_fields(&mut r).unwrap();
        let http = HttpClient::build(&cfg.http, None, crate::redact::Secrets::default()).unwrap();
        let src = ThreatQSource::new(Arc::new(cfg), http);
        assert_eq!(
            src.page_url("AoJ9z5LKnvwCJjEwNjk2Nw==").as_str(),
            "https://tq.example.com/api/indicators/query/hash/abc123?sort=updated_at&limit=1000\
             &cursorMark=AoJ9z5LKnvwCJjEwNjk2Nw%3D%3D&fields=*%2Csources%2Cattributes%2Cattributes.name%2Cattributes.value"
        );
    }
}
