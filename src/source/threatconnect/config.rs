//! Settings of a `ti_threatconnect` stream: exactly the integration's variable names and defaults
//! (API spec §8).
//!
//! [`ThreatConnectConfig::from_fields`] reads them from a stream's map with the shared
//! [`FieldReader`], so every bad value is reported with its path, all at once.

use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Map, Value};
use url::Url;

use crate::config::duration::format_duration;
use crate::config::fields::{
    FieldReader, NON_NEGATIVE_DURATION, POSITIVE_DURATION, check_base_url, redact_url, ssl_to_json,
};
use crate::config::size::{RESPONSE_SIZE, default_max_response_size, format_size};
use crate::config::{HttpConfig, IocExpiration, REDACTED};
use crate::redact::Secrets;
use crate::source::registry::StreamSettings;

/// The dataset of the integration's only data stream.
pub(crate) const DEFAULT_DATASET: &str = "ti_threatconnect.indicator";

/// Default `url`: ThreatConnect's public cloud.
pub(crate) fn default_url() -> Url {
    // A constant, covered by `defaults_are_the_integration_defaults`: not user input.
    Url::parse("https://app.threatconnect.com").expect("the default URL is valid")
}

/// Default `interval`: `24h`.
pub(crate) fn default_interval() -> Duration {
    Duration::from_secs(24 * 3_600)
}

/// Default `initial_interval`: `168h` (a week).
pub(crate) fn default_initial_interval() -> Duration {
    Duration::from_secs(168 * 3_600)
}

/// Default `batch_size`: 2000.
pub(crate) fn default_batch_size() -> u32 {
    2_000
}

/// Default `backfill_concurrency`: 4 windows at once.
pub(crate) fn default_backfill_concurrency() -> u32 {
    4
}

/// Largest `backfill_concurrency`.
pub(crate) const MAX_BACKFILL_CONCURRENCY: u32 = 32;

/// Largest `batch_size`: ThreatConnect's `resultLimit` maximum.
pub(crate) const MAX_BATCH_SIZE: u32 = 10_000;

/// Default `http_client_timeout`: `2m`.
pub(crate) fn default_http_client_timeout() -> Duration {
    Duration::from_secs(120)
}

/// Default `ioc_expiration_duration`: `90d`.
pub(crate) fn default_ioc_expiration() -> IocExpiration {
    IocExpiration {
        raw: "90d".to_owned(),
        duration: Duration::from_secs(90 * 86_400),
    }
}

/// Default `tags`: `forwarded`, `threatconnect-indicator`.
pub(crate) fn default_tags() -> Vec<String> {
    vec!["forwarded".to_owned(), "threatconnect-indicator".to_owned()]
}

fn default_false() -> bool {
    false
}

/// A validated ThreatConnect stream configuration.
#[derive(Debug, Clone)]
pub struct ThreatConnectConfig {
    /// `url` (default `https://app.threatconnect.com`): the instance base URL, `http` or
    /// `https`, without credentials, query or fragment. Trailing `/` are stripped from its path
    /// (the `url` crate still prints a bare host as `https://host/`; use
    /// [`base_url`](Self::base_url) to build request URLs).
    pub url: Url,
    /// `access_id` (required): the API user's access id. Quote it in YAML (`"12345"`).
    pub access_id: String,
    /// `secret_key` (required, secret): the API user's HMAC key. Never printed.
    pub secret_key: SecretString,
    /// `http_client_timeout` (default `2m`, > 0): whole-request timeout; `proxy_url` (optional
    /// http/https URL, credentials URL-encoded); `ssl` (optional TLS block:
    /// `certificate_authorities`, `verification_mode` `full|certificate|none`, `certificate` and
    /// `key` together); `enable_request_tracer` (default false); `max_response_size` (default
    /// `256MiB`, 1 KiB–4 GiB): a larger page body fails the request.
    pub http: HttpConfig,
    /// `interval` (default `24h`, > 0): time between sweeps once caught up. Units `ns`, `us`,
    /// `ms`, `s`, `m`, `h`, `d`, combinable (`1h30m`).
    pub interval: Duration,
    /// `initial_interval` (default `168h`): look-back on the first run (`0s` starts from now).
    pub initial_interval: Duration,
    /// `batch_size` (default 2000, 1–10000): indicators per page (`resultLimit`). A YAML integer.
    pub batch_size: u32,
    /// `backfill_concurrency` (our addition; default 4, 1–32): how many time windows a backfill
    /// sweeps at once. 1 keeps the single cursor.
    pub backfill_concurrency: u32,
    /// `tql` (optional): extra TQL ANDed to the `lastModified` filter; trimmed, and empty means
    /// none.
    pub tql: Option<String>,
    /// `include_attributes` (default false): also fetch indicator attributes.
    pub include_attributes: bool,
    /// `include_group_assoc` (default false): also fetch associated groups.
    pub include_group_assoc: bool,
    /// `include_group_assoc_attribs` (default false): also fetch the attributes of associated
    /// groups (the API accepts it without `include_group_assoc`).
    pub include_group_assoc_attribs: bool,
    /// `include_indicator_assoc` (default false): also fetch associated indicators.
    pub include_indicator_assoc: bool,
    /// `ioc_expiration_duration` (default `90d`): how long after its last modification an
    /// indicator stays active. A whole number with one unit `d`, `h` or `m`, as the ingest
    /// pipeline requires. Always `Some` once validated.
    pub ioc_expiration: Option<IocExpiration>,
    /// `tags` (default `forwarded`, `threatconnect-indicator`): event tags.
    pub tags: Vec<String>,
    /// `preserve_original_event` (default false): keep the raw indicator in `event.original`;
    /// adds the tag `preserve_original_event`.
    pub preserve_original_event: bool,
}

impl ThreatConnectConfig {
    /// The event tags, as the integration builds them: `preserve_original_event` first when the
    /// option is on, then the user tags.
    pub fn event_tags(&self) -> Vec<String> {
        let mut tags = Vec::with_capacity(self.tags.len() + 1);
        if self.preserve_original_event {
            tags.push("preserve_original_event".to_owned());
        }
        tags.extend(self.tags.iter().cloned());
        tags
    }

    /// The base URL as text, without trailing `/`: `https://app.threatconnect.com`.
    pub fn base_url(&self) -> &str {
        self.url.as_str().trim_end_matches('/')
    }
}

impl StreamSettings for ThreatConnectConfig {
    /// Reads and validates the integration's variables from a stream's map. Every problem is
    /// recorded in `r`; returns `None` when any of them makes the stream unusable. The caller
    /// reads the stream's own keys (`id`, `data_stream`) and then calls [`FieldReader::finish`],
    /// which reports unknown keys.
    fn from_fields(r: &mut FieldReader<'_>) -> Option<Self> {
        let url = r
            .url_or("url", default_url)
            .and_then(|url| check_base_url(r, "url", url, "access_id and secret_key"));
        let access_id = r.required_string("access_id");
        let secret_key = r.required_secret("secret_key");
        let proxy_url = r.optional_url("proxy_url");
        let ssl = r.ssl("ssl").unwrap_or_default();
        let interval = r.duration_in("interval", POSITIVE_DURATION, default_interval);
        let initial_interval = r.duration_in(
            "initial_interval",
            NON_NEGATIVE_DURATION,
            default_initial_interval,
        );
        let batch_size = r.integer_in("batch_size", 1..=MAX_BATCH_SIZE, default_batch_size);
        let backfill_concurrency = r.integer_in(
            "backfill_concurrency",
            1..=MAX_BACKFILL_CONCURRENCY,
            default_backfill_concurrency,
        );
        let timeout = r.duration_in(
            "http_client_timeout",
            POSITIVE_DURATION,
            default_http_client_timeout,
        );
        let tql = r
            .optional_string("tql")
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty());
        if let Some(t) = &tql
            && has_top_level_or(t)
        {
            r.problem(
                "tql",
                format!(
                    "a top-level OR would escape the lastModified filter it is ANDed to \
                         (every matching indicator on every page); wrap it in parentheses: ({t})"
                ),
            );
        }
        let include_attributes = r.bool_or("include_attributes", default_false);
        let include_group_assoc = r.bool_or("include_group_assoc", default_false);
        let include_group_assoc_attribs = r.bool_or("include_group_assoc_attribs", default_false);
        let include_indicator_assoc = r.bool_or("include_indicator_assoc", default_false);
        let ioc_expiration = r.ioc_expiration_or("ioc_expiration_duration", default_ioc_expiration);
        let enable_request_tracer = r.bool_or("enable_request_tracer", default_false);
        let max_response_size = r.size_in(
            "max_response_size",
            RESPONSE_SIZE,
            default_max_response_size,
        );
        let tags = r.string_list_or("tags", default_tags);
        let preserve_original_event = r.bool_or("preserve_original_event", default_false);
        r.unsupported(
            "processors",
            "agent-side processors are not applied by ti-sidecar; remove them",
        );

        if r.has_problems() {
            return None;
        }
        Some(Self {
            url: url?,
            access_id: access_id?,
            secret_key: secret_key?,
            http: HttpConfig {
                timeout,
                proxy_url,
                ssl,
                enable_request_tracer,
                max_response_size,
            },
            interval,
            initial_interval,
            batch_size,
            backfill_concurrency,
            tql,
            include_attributes,
            include_group_assoc,
            include_group_assoc_attribs,
            include_indicator_assoc,
            ioc_expiration: Some(ioc_expiration),
            tags,
            preserve_original_event,
        })
    }
    /// The secrets masked wherever this stream's text goes: `secret_key`, a proxy password and `ssl.key_passphrase`.
    fn secrets(&self) -> Secrets {
        Secrets::new(
            std::iter::once(self.secret_key.expose_secret().to_owned())
                .chain(self.http.transport_secrets()),
        )
    }
    /// The effective settings under their integration names, with every secret replaced by
    /// `"[REDACTED]"`.
    fn redacted_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("url".into(), Value::from(self.base_url()));
        m.insert("access_id".into(), Value::from(self.access_id.clone()));
        m.insert("secret_key".into(), Value::from(REDACTED));
        if let Some(proxy) = &self.http.proxy_url {
            m.insert("proxy_url".into(), Value::from(redact_url(proxy)));
        }
        m.insert("ssl".into(), ssl_to_json(&self.http.ssl));
        m.insert(
            "interval".into(),
            Value::from(format_duration(self.interval)),
        );
        m.insert(
            "initial_interval".into(),
            Value::from(format_duration(self.initial_interval)),
        );
        m.insert("batch_size".into(), Value::from(self.batch_size));
        m.insert(
            "backfill_concurrency".into(),
            Value::from(self.backfill_concurrency),
        );
        m.insert(
            "http_client_timeout".into(),
            Value::from(format_duration(self.http.timeout)),
        );
        m.insert(
            "tql".into(),
            self.tql.clone().map_or(Value::Null, Value::from),
        );
        m.insert(
            "include_attributes".into(),
            Value::from(self.include_attributes),
        );
        m.insert(
            "include_group_assoc".into(),
            Value::from(self.include_group_assoc),
        );
        m.insert(
            "include_group_assoc_attribs".into(),
            Value::from(self.include_group_assoc_attribs),
        );
        m.insert(
            "include_indicator_assoc".into(),
            Value::from(self.include_indicator_assoc),
        );
        m.insert(
            "ioc_expiration_duration".into(),
            self.ioc_expiration
                .as_ref()
                .map_or(Value::Null, |e| Value::from(e.raw.clone())),
        );
        m.insert(
            "enable_request_tracer".into(),
            Value::from(self.http.enable_request_tracer),
        );
        m.insert(
            "max_response_size".into(),
            Value::from(format_size(self.http.max_response_size)),
        );
        m.insert("tags".into(), Value::from(self.tags.clone()));
        m.insert(
            "preserve_original_event".into(),
            Value::from(self.preserve_original_event),
        );
        Value::Object(m)
    }

    fn http(&self) -> &HttpConfig {
        &self.http
    }

    fn interval(&self) -> Duration {
        self.interval
    }
}

/// Whether TQL text has an `OR` outside quotes and parentheses. Appended as
/// `lastModified GEQ "…" AND <tql>`, such an `OR` binds looser than the `AND` and lets the user
/// filter match regardless of `lastModified`: the sweep would never advance.
pub(crate) fn has_top_level_or(tql: &str) -> bool {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut word = String::new();
    for c in tql.chars().chain(std::iter::once(' ')) {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        if depth == 0 && word.eq_ignore_ascii_case("or") {
            return true;
        }
        word.clear();
        match c {
            '"' | '\'' => quote = Some(c),
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn top_level_or_is_detected_outside_quotes_and_parentheses() {
        assert!(has_top_level_or(r#"typeName = "Host" OR rating > 3"#));
        assert!(has_top_level_or("a = 1 or b = 2"));
        assert!(!has_top_level_or(r#"(typeName = "Host" OR rating > 3)"#));
        assert!(!has_top_level_or(r#"summary = "this OR that""#));
        assert!(!has_top_level_or(r#"summary = "quote \" OR x""#));
        assert!(!has_top_level_or(
            r#"ownerName = "ORACLE" AND color = "orange""#
        ));
        assert!(!has_top_level_or(r#"typeName in ("Address","Host")"#));
    }

    #[test]
    fn defaults_are_the_integration_defaults() {
        assert_eq!(default_url().as_str(), "https://app.threatconnect.com/");
        assert_eq!(format_duration(default_interval()), "1d");
        assert_eq!(default_initial_interval(), Duration::from_secs(7 * 86_400));
        assert_eq!(default_batch_size(), 2_000);
        assert_eq!(default_http_client_timeout(), Duration::from_secs(120));
        assert_eq!(default_ioc_expiration().raw, "90d");
        assert_eq!(default_tags(), ["forwarded", "threatconnect-indicator"]);
    }

    #[test]
    fn url_trailing_slashes_are_stripped() {
        let stream = json!({
            "url": "https://tc.example.com/base//",
            "access_id": "1",
            "secret_key": "k",
        });
        let mut r = FieldReader::open("s", &stream).expect("a map");
        let tc = ThreatConnectConfig::from_fields(&mut r).expect("valid");
        assert!(r.finish().is_empty());
        assert_eq!(tc.url.as_str(), "https://tc.example.com/base");
        assert_eq!(tc.base_url(), "https://tc.example.com/base");
    }
}
