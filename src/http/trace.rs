//! The request tracer (`enable_request_tracer`): one NDJSON line per HTTP exchange, with
//! credentials redacted by name and the stream's secrets masked in any encoding.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;

use reqwest::header::HeaderMap;

use super::HttpBuildError;
use crate::redact::{REDACTED, Secrets};
use crate::text::bounded_to;

/// Headers whose values are always replaced in traces.
const REDACTED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
];
/// Form and JSON fields whose values are always replaced in traces.
const REDACTED_FIELDS: &[&str] = &[
    "client_secret",
    "password",
    "access_token",
    "refresh_token",
    "token",
    "secret_key",
];
/// Bodies are cut to this many bytes in a trace line.
const MAX_TRACED_BODY: usize = 64 * 1024;
/// How far past the cut a body is masked before cutting.
const TRACE_MASK_MARGIN: usize = 8 * 1024;

/// Writes one NDJSON line per HTTP exchange, with secrets redacted (`enable_request_tracer`).
pub(crate) struct RequestTracer {
    file: Mutex<File>,
    secrets: Secrets,
}

/// The request half of a trace line, captured before the request is sent.
pub(crate) struct TraceRequest {
    method: String,
    url: String,
    headers: serde_json::Map<String, serde_json::Value>,
    body: Option<String>,
}

impl RequestTracer {
    /// Opens (appends to) the trace file, creating its directory. Traces hold indicator bodies:
    /// the directory is 0700 and the file 0600 whatever the umask, and an existing one is
    /// tightened to those modes.
    pub(crate) fn open(path: &Path, secrets: Secrets) -> Result<Self, HttpBuildError> {
        let err = |source| HttpBuildError::Tracer {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            crate::fsutil::create_private_dir_all(dir).map_err(err)?;
        }
        let file = crate::fsutil::open_private_append(path).map_err(err)?;
        Ok(Self {
            file: Mutex::new(file),
            secrets,
        })
    }

    pub(super) fn request_line(&self, request: &reqwest::Request) -> TraceRequest {
        TraceRequest {
            method: request.method().to_string(),
            url: redact_query(request.url()),
            headers: redact_headers(request.headers()),
            body: request
                .body()
                .and_then(|b| b.as_bytes())
                .map(|b| redact_body(&String::from_utf8_lossy(b))),
        }
    }

    pub(super) fn write(
        &self,
        req: TraceRequest,
        response: Option<(u16, &HeaderMap)>,
        body: Option<&[u8]>,
        error: Option<&str>,
    ) {
        let mut line = serde_json::json!({
            "@timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "http.request.method": req.method,
            "url.original": req.url,
            "http.request.headers": req.headers,
        });
        if let Some(b) = req.body {
            line["http.request.body.content"] = b.into();
        }
        if let Some((status, headers)) = response {
            line["http.response.status_code"] = status.into();
            line["http.response.headers"] = redact_headers(headers).into();
        }
        if let Some(b) = body {
            // Masked before the cut, so a secret straddling it cannot leave a piece behind.
            let window = &b[..b.len().min(MAX_TRACED_BODY + TRACE_MASK_MARGIN)];
            let content = redact_body(&String::from_utf8_lossy(window));
            let content = self.secrets.mask(&content);
            line["http.response.body.content"] =
                bounded_to(&content, MAX_TRACED_BODY).into_owned().into();
            line["http.response.body.bytes"] = b.len().into();
        }
        if let Some(e) = error {
            line["error.message"] = e.into();
        }
        // Every value as it is (raw, or in the encoding it came in), then the line as written
        // (JSON-escaped once more).
        mask_json(&mut line, &self.secrets);
        let text = self.secrets.mask_owned(line.to_string());
        if let Ok(mut f) = self.file.lock() {
            // Tracing is best effort: a full disk must not stop ingestion.
            let _ = writeln!(f, "{text}");
        }
    }
}

/// Masks every string of a JSON tree in place.
fn mask_json(v: &mut serde_json::Value, secrets: &Secrets) {
    match v {
        serde_json::Value::String(text) => {
            if let std::borrow::Cow::Owned(masked) = secrets.mask(text) {
                *text = masked;
            }
        }
        serde_json::Value::Object(map) => map.values_mut().for_each(|v| mask_json(v, secrets)),
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| mask_json(v, secrets)),
        _ => {}
    }
}

fn redact_headers(headers: &HeaderMap) -> serde_json::Map<String, serde_json::Value> {
    headers
        .iter()
        .map(|(name, value)| {
            let v = if REDACTED_HEADERS.contains(&name.as_str()) {
                REDACTED.to_owned()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            (name.as_str().to_owned(), serde_json::Value::from(v))
        })
        .collect()
}

/// Form pairs with the value of every secret field replaced by `REDACTED`.
fn redacted_pairs<'a>(
    pairs: impl Iterator<Item = (std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>)>,
) -> Vec<(String, String)> {
    pairs
        .map(|(k, v)| {
            let v = if REDACTED_FIELDS.contains(&k.as_ref()) {
                REDACTED.to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect()
}

fn redact_query(url: &url::Url) -> String {
    let mut url = url.clone();
    if url.query().is_some() {
        let pairs = redacted_pairs(url.query_pairs());
        if pairs
            .iter()
            .any(|(k, _)| REDACTED_FIELDS.contains(&k.as_str()))
        {
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
    }
    if url.password().is_some() {
        let _ = url.set_password(Some(REDACTED));
    }
    url.to_string()
}

/// Redacts secret fields in a JSON or form-encoded body.
fn redact_body(body: &str) -> String {
    if let Ok(mut v) = serde_json::from_str::<serde_json::Value>(body) {
        redact_json(&mut v);
        return v.to_string();
    }
    if body.contains('=') && !body.contains(char::is_whitespace) {
        let pairs = redacted_pairs(url::form_urlencoded::parse(body.as_bytes()));
        return url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
    }
    body.to_owned()
}

fn redact_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if REDACTED_FIELDS.contains(&k.as_str()) {
                    *val = REDACTED.into();
                } else {
                    redact_json(val);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_json),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_redacted() {
        assert_eq!(
            redact_body("grant_type=client_credentials&client_secret=s3cr3t"),
            "grant_type=client_credentials&client_secret=%5BREDACTED%5D"
        );
        let json = redact_body(r#"{"access_token":"abc","data":{"token":"x"},"n":1}"#);
        assert!(!json.contains("abc") && !json.contains("\"x\""), "{json}");
    }
}
