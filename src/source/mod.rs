//! Vendor platforms. Each platform module has the same shape: `config.rs` (settings),
//! `client.rs` (the API and its paging, implementing [`Source`]) and `ecs.rs` (the mapping).
//!
//! The shared poll loop (`crate::poll`) drives any [`Source`]: it asks for the page after the
//! committed cursor, maps the page's raw objects, hands them to a sink, and commits the page's
//! cursor only after the sink acknowledged them.

pub mod threatconnect;
pub mod threatq;

use std::borrow::Cow;
use std::fmt::Debug;
use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::http::{ErrorKind, HttpError};
use crate::ingest::EcsEvent;
use crate::redact::Secrets;

/// One page of raw vendor objects and the cursor that follows it.
#[derive(Debug)]
pub struct Page<C> {
    /// The objects to deliver, exactly as the API sent them (duplicates already dropped).
    pub items: Vec<Box<RawValue>>,
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
    pub fn undecodable(platform: &'static str, what: &str, e: &serde_json::Error) -> Self {
        Self::InvalidResponse {
            platform,
            message: format!("cannot decode {what}: {}", crate::text::json_error(e)),
        }
    }

    /// The same error with `secrets` masked in its text: the one place a stream's errors are
    /// cleaned, at the end of each platform's [`Source::fetch`]. Everything downstream (logs,
    /// health, diagnostics, the run's exit message) is built from the masked error.
    pub fn masked(self, secrets: &Secrets) -> Self {
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

    /// Retry later, or fail the input.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Http(e) => e.kind(),
            Self::InvalidResponse { .. } | Self::TokenRefused { .. } => ErrorKind::Retry,
            Self::UnusableCursor { .. } => ErrorKind::Fail,
        }
    }
}

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

    /// Maps one raw object to its ECS document. Never fails: bad objects become documents
    /// carrying `error.message`.
    fn map(&self, raw: &str) -> EcsEvent;

    /// A short human rendering of a cursor for logs.
    fn describe(&self, cursor: &Self::Cursor) -> String {
        format!("{cursor:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
