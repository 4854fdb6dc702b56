//! Vendor platforms. Each platform module has the same shape: `config.rs` (settings),
//! `client.rs` (the API and its paging, implementing [`Source`]) and `ecs.rs` (the mapping).
//!
//! The shared poll loop (`crate::poll`) drives any [`Source`]: it asks for the page after the
//! committed cursor, maps the page's raw objects, hands them to a sink, and commits the page's
//! cursor only after the sink acknowledged them.

pub mod registry;
pub mod threatconnect;
pub mod threatq;
pub(crate) mod walk;

use std::borrow::Cow;
use std::fmt::Debug;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::http::{BodyPool, Classify, ErrorKind, HttpError, PageText};
use crate::ingest::EcsEvent;
use crate::redact::Secrets;

/// One page of raw vendor objects and the cursor that follows it.
#[derive(Debug)]
pub struct Page<C> {
    /// The objects to deliver, exactly as the API sent them (duplicates already dropped),
    /// each a slice of the page's one body.
    pub items: RawItems,
    /// The cursor to commit once `items` are acknowledged.
    pub cursor: C,
    /// Whether the platform has more right now (`false`: caught up until the next interval).
    pub more: bool,
    /// Objects dropped as already delivered.
    pub duplicates_dropped: usize,
    /// Of `items`, those stamped later than the platform's clock allows: delivered, but their
    /// timestamps did not move the cursor.
    pub future_timestamps: usize,
    /// Invalid UTF-8 sequences replaced with U+FFFD in the responses behind this page.
    pub invalid_utf8: usize,
}

/// A page body and where each of its items lies in it. Items are borrowed from the one body
/// the API sent, never copied: a page is held once, however it is cut into chunks, and the
/// body is freed when the last chunk that refers to it has been mapped.
#[derive(Clone, Default)]
pub struct RawItems {
    body: Arc<PageText>,
    spans: Vec<Range<usize>>,
}

/// Never prints the items (they can be TLP:RED, and large): only how many and how big.
impl Debug for RawItems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawItems")
            .field("items", &self.spans.len())
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

impl RawItems {
    /// The items of `body`, given as JSON values borrowed from it (`&RawValue` deserialized
    /// from `body`).
    pub fn new(body: Arc<PageText>, items: &[&RawValue]) -> Self {
        let spans = Self::spans_in(&body, items);
        Self { body, spans }
    }

    /// The items of `body` that lie at `spans`. A span that is not a slice of `body` on
    /// character boundaries (never the case for a walk's spans) yields an empty item.
    pub(crate) fn from_spans(body: Arc<PageText>, spans: Vec<Range<usize>>) -> Self {
        Self { body, spans }
    }

    /// Where each of `items` (borrowed from `body`) lies in it. A value that is not a slice of
    /// `body` (never the case for borrowed `RawValue`s) is skipped rather than trusted.
    pub(crate) fn spans_in(body: &str, items: &[&RawValue]) -> Vec<Range<usize>> {
        let start = body.as_ptr() as usize;
        items
            .iter()
            .filter_map(|raw| {
                let text = raw.get();
                let offset = (text.as_ptr() as usize).checked_sub(start)?;
                let span = offset..offset + text.len();
                (body.get(span.clone()) == Some(text)).then_some(span)
            })
            .collect()
    }

    /// The size of the page body the items are slices of.
    pub fn body_len(&self) -> usize {
        self.body.len()
    }

    /// How many items.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The `i`th item's JSON text.
    pub fn get(&self, i: usize) -> Option<&str> {
        self.spans.get(i).and_then(|s| self.body.get(s.clone()))
    }

    /// Every item's JSON text, in order.
    pub(crate) fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.spans
            .iter()
            .map(|s| self.body.get(s.clone()).unwrap_or_default())
    }

    /// Keeps only the items at `indices` (in that order); others are dropped.
    pub(crate) fn select(self, indices: &[usize]) -> Self {
        let spans = indices
            .iter()
            .filter_map(|&i| self.spans.get(i).cloned())
            .collect();
        Self {
            body: self.body,
            spans,
        }
    }

    /// Cuts the items into consecutive chunks of at most `max_items` items and, unless one item
    /// alone is larger, `max_bytes` bytes. Each chunk shares the body. An empty page gives one
    /// empty chunk, so that its cursor still travels to the commit.
    pub(crate) fn chunks(&self, max_items: usize, max_bytes: usize) -> Vec<RawItems> {
        let max_items = max_items.max(1);
        let mut chunks = Vec::new();
        let mut current: Vec<Range<usize>> = Vec::new();
        let mut bytes = 0;
        for span in &self.spans {
            let len = span.len();
            if !current.is_empty() && (current.len() >= max_items || bytes + len > max_bytes) {
                chunks.push(self.with_spans(std::mem::take(&mut current)));
                bytes = 0;
            }
            bytes += len;
            current.push(span.clone());
        }
        if !current.is_empty() || chunks.is_empty() {
            chunks.push(self.with_spans(current));
        }
        chunks
    }

    fn with_spans(&self, spans: Vec<Range<usize>>) -> Self {
        Self {
            body: Arc::clone(&self.body),
            spans,
        }
    }
}

/// Runs CPU work (decoding a page, mapping a chunk) on tokio's blocking pool, never on the
/// async worker threads that answer the Agent. A panic in `work` is resumed in the caller, so
/// the stream's panic guard reports it as the crash it is.
pub(crate) async fn off_runtime<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    joined(tokio::task::spawn_blocking(work)).await
}

/// The result of work started on the blocking pool, its panic resumed in the caller.
pub(crate) async fn joined<T>(handle: tokio::task::JoinHandle<T>) -> T {
    match handle.await {
        Ok(value) => value,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Cancelled: only when the runtime is shutting down, which drops this future too.
            Err(_) => std::future::pending().await,
        },
    }
}

/// A finished task's value, its panic resumed in the caller; `None` when it was cancelled.
pub(crate) fn task_value<T>(result: Result<T, tokio::task::JoinError>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => None,
        },
    }
}

/// A response body as text. Invalid UTF-8 sequences become U+FFFD, as Go's `encoding/json`
/// decodes them for Elastic's inputs, so one bad byte costs one character, not the whole page
/// (which would be retried forever and stall the stream). Returns how many were replaced.
pub fn decode_body(body: &[u8]) -> (Cow<'_, str>, usize) {
    if let Ok(text) = std::str::from_utf8(body) {
        return (Cow::Borrowed(text), 0);
    }
    let mut text = String::with_capacity(body.len() + 16);
    let mut replaced = 0;
    for chunk in body.utf8_chunks() {
        text.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            text.push(char::REPLACEMENT_CHARACTER);
            replaced += 1;
        }
    }
    (Cow::Owned(text), replaced)
}

/// A page body's text ([`decode_owned_body`]), shared by the page's items; its buffer goes
/// back to `pool` for a later page once they are all done with it.
pub(crate) fn page_text(body: Vec<u8>, pool: Arc<BodyPool>) -> (Arc<PageText>, usize) {
    let (text, replaced) = decode_owned_body(body);
    (Arc::new(PageText::pooled(text, pool)), replaced)
}

/// [`decode_body`] for an owned body: valid UTF-8 (the usual case) is taken as it is, without
/// a copy.
pub(crate) fn decode_owned_body(body: Vec<u8>) -> (String, usize) {
    match String::from_utf8(body) {
        Ok(text) => (text, 0),
        Err(e) => {
            let (text, replaced) = decode_body(e.as_bytes());
            (text.into_owned(), replaced)
        }
    }
}

/// Why a page could not be fetched.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// The HTTP exchange failed after its retries.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The platform answered 2xx with something we cannot page through.
    #[error("invalid response from {platform}: {message}")]
    InvalidResponse {
        /// Platform name.
        platform: &'static str,
        /// What was wrong.
        message: String,
    },
    /// The API refused an access token the token endpoint had just issued (it expired early,
    /// or was revoked while in use). Transient: the next attempt asks for a new token. Only the
    /// token endpoint itself can reject the credentials.
    #[error(
        "{platform} refused a freshly issued access token ({message}); a new token is requested on the next attempt"
    )]
    TokenRefused {
        /// Platform name.
        platform: &'static str,
        /// The API's answer (bounded).
        message: String,
    },
    /// The stored cursor can never be used (retrying cannot help; the user must reset it).
    #[error("unusable stored cursor for {platform}: {message}")]
    UnusableCursor {
        /// Platform name.
        platform: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
}

impl FetchError {
    /// A 2xx body that does not decode as `what`. Only serde's error kind and position are
    /// kept: its text can quote the body.
    pub(crate) fn undecodable(platform: &'static str, what: &str, e: &serde_json::Error) -> Self {
        Self::InvalidResponse {
            platform,
            message: format!("cannot decode {what}: {}", crate::text::json_error(e)),
        }
    }

    /// The same error with `secrets` masked in its text: the one place a stream's errors are
    /// cleaned, at the end of each platform's [`Source::fetch`]. Everything downstream (logs,
    /// health, diagnostics, the run's exit message) is built from the masked error.
    pub(crate) fn masked(self, secrets: &Secrets) -> Self {
        match self {
            Self::Http(e) => Self::Http(e.masked(secrets)),
            Self::InvalidResponse { platform, message } => Self::InvalidResponse {
                platform,
                message: secrets.mask_owned(message),
            },
            Self::TokenRefused { platform, message } => Self::TokenRefused {
                platform,
                message: secrets.mask_owned(message),
            },
            Self::UnusableCursor { platform, message } => Self::UnusableCursor {
                platform,
                message: secrets.mask_owned(message),
            },
        }
    }
}

impl Classify for FetchError {
    /// Retry later, or fail the input.
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Http(e) => e.kind(),
            Self::InvalidResponse { .. } | Self::TokenRefused { .. } => ErrorKind::Retry,
            Self::UnusableCursor { .. } => ErrorKind::Fail,
        }
    }
}

/// Maps one raw vendor object to its ECS document (the platform's mapping with the stream's
/// options). Called on the blocking pool, chunk by chunk.
pub type Mapper = Arc<dyn Fn(&str) -> EcsEvent + Send + Sync>;

/// A platform's pull side.
pub trait Source: Send + 'static {
    /// Where a sweep stands; persisted verbatim in the state store.
    type Cursor: Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static;

    /// Short platform name for logs (`threatconnect`).
    fn platform(&self) -> &'static str;

    /// The cursor of a stream that has never committed one.
    fn initial_cursor(&self) -> Self::Cursor;

    /// Fetches the page after `cursor`. Errors come back with the stream's secrets masked
    /// ([`FetchError::masked`]).
    fn fetch(
        &mut self,
        cursor: &Self::Cursor,
    ) -> impl Future<Output = Result<Page<Self::Cursor>, FetchError>> + Send;

    /// The stream's mapping of one raw object to its ECS document, shareable with the
    /// blocking pool that runs it. Never fails: bad objects become documents carrying
    /// `error.message`.
    fn mapper(&self) -> Mapper;

    /// A short human rendering of a cursor for logs.
    fn describe(&self, cursor: &Self::Cursor) -> String {
        format!("{cursor:?}")
    }

    /// Called before each sweep's first fetch (a platform may plan the sweep then).
    fn begin_sweep(&mut self) {}

    /// Called once a sweep has caught up, before the stream rests until the next one (a
    /// platform lets go of what it kept for the sweep then).
    fn end_sweep(&mut self) {}

    /// A backfill's progress at `cursor`: items delivered and items estimated in all.
    fn progress(&self, _cursor: &Self::Cursor) -> Option<crate::telemetry::BackfillProgress> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_items(body: &str) -> RawItems {
        let body = Arc::new(PageText::from(body.to_owned()));
        let items: Vec<&RawValue> = serde_json::from_str(&body).unwrap();
        RawItems::new(Arc::clone(&body), &items)
    }

    #[test]
    fn items_are_slices_of_the_one_body() {
        let items = raw_items(r#"[{"a":1}, {"b":"x"} ,[3]]"#);
        assert_eq!(
            items.iter().collect::<Vec<_>>(),
            [r#"{"a":1}"#, r#"{"b":"x"}"#, "[3]"]
        );
        let kept = items.clone().select(&[2, 0, 7]);
        assert_eq!(kept.iter().collect::<Vec<_>>(), ["[3]", r#"{"a":1}"#]);
        assert_eq!(
            format!("{items:?}"),
            "RawItems { items: 3, body_bytes: 25 }"
        );
    }

    #[test]
    fn chunks_are_bounded_by_items_and_bytes() {
        let items = raw_items(r#"[1,22,333,4444,55555]"#);
        let texts = |chunks: Vec<RawItems>| -> Vec<Vec<String>> {
            chunks
                .iter()
                .map(|c| c.iter().map(str::to_owned).collect())
                .collect()
        };
        assert_eq!(
            texts(items.chunks(2, 1 << 20)),
            [vec!["1", "22"], vec!["333", "4444"], vec!["55555"]]
        );
        // Bytes: 1+22 = 3, then 333 would make 6 > 4; an item larger than the cap is
        // a chunk of its own.
        assert_eq!(
            texts(items.chunks(10, 4)),
            [vec!["1", "22"], vec!["333"], vec!["4444"], vec!["55555"]]
        );
        let empty = raw_items("[]");
        assert_eq!(
            empty.chunks(10, 10).len(),
            1,
            "an empty page still has its one chunk"
        );
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters_and_is_counted() {
        assert_eq!(
            decode_body(b"{\"a\":\"ok\"}"),
            (Cow::Borrowed("{\"a\":\"ok\"}"), 0)
        );
        let (text, replaced) = decode_body(b"{\"a\":\"x\xff\xfey\",\"b\":\"\xc3\"}");
        assert_eq!(text, "{\"a\":\"x\u{fffd}\u{fffd}y\",\"b\":\"\u{fffd}\"}");
        assert_eq!(replaced, 3);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["b"], "\u{fffd}");
        let (owned, replaced) = decode_owned_body(b"{\"a\":\"x\xffy\"}".to_vec());
        assert_eq!((owned.as_str(), replaced), ("{\"a\":\"x\u{fffd}y\"}", 1));
    }
}
