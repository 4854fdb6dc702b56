//! Settings of a `ti_threatq` stream: exactly the integration's variable names and defaults
//! (`spec/threatq-api.md` §5), plus `client_auth_style`.
//!
//! [`ThreatQConfig::from_fields`] reads them with the shared [`FieldReader`], so every bad value
//! is reported with its path, all at once.

use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Map, Value};
use url::Url;

use crate::config::duration::format_duration;
use crate::config::fields::{
    FieldReader, POSITIVE_DURATION, check_base_url, redact_url, refuse_credentials, ssl_to_json,
};
use crate::config::size::{RESPONSE_SIZE, default_max_response_size, format_size};
use crate::config::{HttpConfig, IocExpiration, REDACTED};
use crate::redact::Secrets;
use crate::source::registry::StreamSettings;

/// The dataset of the integration's only data stream.
pub(crate) const DEFAULT_DATASET: &str = "ti_threatq.threat";

/// Largest `page_size`: "maximum supported page size value is 1000".
pub(crate) const MAX_PAGE_SIZE: u32 = 1_000;

/// Default `host`: the integration's placeholder.
pub(crate) fn default_host() -> Url {
    // A constant, covered by `defaults_are_the_integration_defaults`: not user input.
    Url::parse("https://threatqexample.com").expect("the default host is valid")
}

/// Default `interval`: `10m`.
pub(crate) fn default_interval() -> Duration {
    Duration::from_secs(600)
}

/// Default `page_size`: 1000.
pub(crate) fn default_page_size() -> u32 {
    1_000
}

/// Default `http_client_timeout`: `30s`.
pub(crate) fn default_http_client_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Default `ioc_expiration_duration`: `90d`.
pub(crate) fn default_ioc_expiration() -> IocExpiration {
    IocExpiration {
        raw: "90d".to_owned(),
        duration: Duration::from_secs(90 * 86_400),
    }
}

/// Default `tags`: `forwarded`, `threatq-threat`.
pub(crate) fn default_tags() -> Vec<String> {
    vec!["forwarded".to_owned(), "threatq-threat".to_owned()]
}

/// Default `threat_library_fields`: what the integration requests since 1.39.2 (ThreatQ 6.12+
/// leaves `sources` and `attributes` out of `*`).
pub(crate) fn default_threat_library_fields() -> String {
    "*,sources,attributes,attributes.name,attributes.value".to_owned()
}

fn default_false() -> bool {
    false
}

fn default_auth_style() -> String {
    "auto".to_owned()
}

/// How the OAuth2 client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthStyle {
    /// HTTP Basic first, then the request body if the server refuses Basic: what the
    /// integration's Go `clientcredentials` client does (its default).
    Auto,
    /// HTTP Basic only (`Authorization: Basic base64(id:secret)`).
    Basic,
    /// `client_id` and `client_secret` as form fields only.
    Body,
}

/// A validated ThreatQ stream configuration.
#[derive(Debug, Clone)]
pub struct ThreatQConfig {
    /// `host` (default `https://threatqexample.com`): scheme and host of the ThreatQ instance,
    /// without `/api`.
    pub host: Url,
    /// `client_id` (required): the OAuth2 client id.
    pub client_id: String,
    /// `client_secret` (required, secret): the OAuth2 client secret. Never printed.
    pub client_secret: SecretString,
    /// `token_url` (default `<host>/api/token`): the OAuth2 token endpoint.
    pub token_url: Url,
    /// `client_auth_style` (default `auto`): `auto`, `basic` or `body`.
    pub client_auth_style: ClientAuthStyle,
    /// `data_collection_id` (required): the Threat Library data collection (hash) to pull.
    pub data_collection_id: String,
    /// `interval` (default `10m`, > 0): time between sweeps once caught up.
    pub interval: Duration,
    /// `page_size` (default 1000, 1–1000): the `limit` parameter.
    pub page_size: u32,
    /// `threat_library_fields` (default `*,sources,attributes,attributes.name,attributes.value`):
    /// the `fields` parameter.
    pub threat_library_fields: String,
    /// `http_client_timeout` (default `30s`), `proxy_url`, `ssl`, `enable_request_tracer`,
    /// `max_response_size` (default `256MiB`, 1 KiB–4 GiB: a larger page body fails the request).
    pub http: HttpConfig,
    /// `ioc_expiration_duration` (default `90d`): a whole number with one unit `d`, `h` or `m`.
    pub ioc_expiration: Option<IocExpiration>,
    /// `tags` (default `forwarded`, `threatq-threat`).
    pub tags: Vec<String>,
    /// `preserve_original_event` (default false): adds the tag `preserve_original_event`.
    pub preserve_original_event: bool,
    /// `preserve_duplicate_custom_fields` (default false): adds the tag
    /// `preserve_duplicate_custom_fields` (keeps `threatq.score`, `description`, `updated_at`
    /// and the sources' `provider`/`tlp_name`).
    pub preserve_duplicate_custom_fields: bool,
}

impl ThreatQConfig {
    /// The event tags, as the integration builds them.
    pub fn event_tags(&self) -> Vec<String> {
        let mut tags = Vec::with_capacity(self.tags.len() + 2);
        if self.preserve_original_event {
            tags.push("preserve_original_event".to_owned());
        }
        if self.preserve_duplicate_custom_fields {
            tags.push("preserve_duplicate_custom_fields".to_owned());
        }
        tags.extend(self.tags.iter().cloned());
        tags
    }

    /// The host as text, without trailing `/`.
    pub fn base_url(&self) -> &str {
        self.host.as_str().trim_end_matches('/')
    }
}

impl StreamSettings for ThreatQConfig {
    /// Reads and validates the integration's variables from a stream's map.
    fn from_fields(r: &mut FieldReader<'_>) -> Option<Self> {
        let host = r
            .url_or("host", default_host)
            .and_then(|url| check_base_url(r, "host", url, "client_id and client_secret"));
        let client_id = r.required_string("client_id");
        let client_secret = r.required_secret("client_secret");
        let token_url = r
            .optional_url("token_url")
            .and_then(|url| refuse_credentials(r, "token_url", url, "client_id and client_secret"));
        let style = r.string_or("client_auth_style", default_auth_style);
        let client_auth_style = match style.as_str() {
            "auto" => Some(ClientAuthStyle::Auto),
            "basic" => Some(ClientAuthStyle::Basic),
            "body" => Some(ClientAuthStyle::Body),
            other => {
                r.problem(
                    "client_auth_style",
                    format!("must be one of auto, basic, body; got {other:?}"),
                );
                None
            }
        };
        let data_collection_id = r.required_string("data_collection_id");
        if let Some(id) = &data_collection_id
            && (id.is_empty() || id.contains(['/', '?', '#']))
        {
            r.problem(
                "data_collection_id",
                format!("must be a non-empty collection hash without '/', '?' or '#', got {id:?}"),
            );
        }
        let interval = r.duration_in("interval", POSITIVE_DURATION, default_interval);
        let page_size = r.integer_in("page_size", 1..=MAX_PAGE_SIZE, default_page_size);
        let threat_library_fields =
            r.string_or("threat_library_fields", default_threat_library_fields);
        let proxy_url = r.optional_url("proxy_url");
        let ssl = r.ssl("ssl").unwrap_or_default();
        let timeout = r.duration_in(
            "http_client_timeout",
            POSITIVE_DURATION,
            default_http_client_timeout,
        );
        let enable_request_tracer = r.bool_or("enable_request_tracer", default_false);
        let max_response_size = r.size_in(
            "max_response_size",
            RESPONSE_SIZE,
            default_max_response_size,
        );
        let ioc_expiration = r.ioc_expiration_or("ioc_expiration_duration", default_ioc_expiration);
        let tags = r.string_list_or("tags", default_tags);
        let preserve_original_event = r.bool_or("preserve_original_event", default_false);
        let preserve_duplicate_custom_fields =
            r.bool_or("preserve_duplicate_custom_fields", default_false);
        r.unsupported(
            "processors",
            "agent-side processors are not applied by ti-sidecar; remove them",
        );
        if r.has_problems() {
            return None;
        }
        let host = host?;
        // The integration defaults token_url to its placeholder host; following the configured
        // host instead is what a user who only sets `host` expects.
        let token_url = match token_url {
            Some(u) => u,
            None => Url::parse(&format!(
                "{}/api/token",
                host.as_str().trim_end_matches('/')
            ))
            .ok()?,
        };
        Some(Self {
            host,
            client_id: client_id?,
            client_secret: client_secret?,
            token_url,
            client_auth_style: client_auth_style?,
            data_collection_id: data_collection_id?,
            interval,
            page_size,
            threat_library_fields,
            http: HttpConfig {
                timeout,
                proxy_url,
                ssl,
                enable_request_tracer,
                max_response_size,
            },
            ioc_expiration: Some(ioc_expiration),
            tags,
            preserve_original_event,
            preserve_duplicate_custom_fields,
        })
    }
    /// The secrets masked wherever this stream's text goes: `client_secret` (also inside the
    /// token request's `Authorization: Basic`), a proxy password and `ssl.key_passphrase`. The source adds each
    /// access token it fetches.
    fn secrets(&self) -> Secrets {
        let secret = self.client_secret.expose_secret();
        Secrets::with_basic_credentials(
            std::iter::once(secret.to_owned()).chain(self.http.transport_secrets()),
            &self.client_id,
            secret,
        )
    }
    /// The effective settings under their integration names, secrets replaced by `"[REDACTED]"`.
    fn redacted_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("host".into(), Value::from(self.base_url()));
        m.insert("client_id".into(), Value::from(self.client_id.clone()));
        m.insert("client_secret".into(), Value::from(REDACTED));
        m.insert("token_url".into(), Value::from(redact_url(&self.token_url)));
        let style = match self.client_auth_style {
            ClientAuthStyle::Auto => "auto",
            ClientAuthStyle::Basic => "basic",
            ClientAuthStyle::Body => "body",
        };
        m.insert("client_auth_style".into(), Value::from(style));
        m.insert(
            "data_collection_id".into(),
            Value::from(self.data_collection_id.clone()),
        );
        m.insert(
            "interval".into(),
            Value::from(format_duration(self.interval)),
        );
        m.insert("page_size".into(), Value::from(self.page_size));
        m.insert(
            "threat_library_fields".into(),
            Value::from(self.threat_library_fields.clone()),
        );
        if let Some(proxy) = &self.http.proxy_url {
            m.insert("proxy_url".into(), Value::from(redact_url(proxy)));
        }
        m.insert("ssl".into(), ssl_to_json(&self.http.ssl));
        m.insert(
            "http_client_timeout".into(),
            Value::from(format_duration(self.http.timeout)),
        );
        m.insert(
            "enable_request_tracer".into(),
            Value::from(self.http.enable_request_tracer),
        );
        m.insert(
            "max_response_size".into(),
            Value::from(format_size(self.http.max_response_size)),
        );
        m.insert(
            "ioc_expiration_duration".into(),
            self.ioc_expiration
                .as_ref()
                .map_or(Value::Null, |e| Value::from(e.raw.clone())),
        );
        m.insert("tags".into(), Value::from(self.tags.clone()));
        m.insert(
            "preserve_original_event".into(),
            Value::from(self.preserve_original_event),
        );
        m.insert(
            "preserve_duplicate_custom_fields".into(),
            Value::from(self.preserve_duplicate_custom_fields),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_are_the_integration_defaults() {
        assert_eq!(default_host().as_str(), "https://threatqexample.com/");
        assert_eq!(default_interval(), Duration::from_secs(600));
        assert_eq!(default_page_size(), 1_000);
        assert_eq!(default_http_client_timeout(), Duration::from_secs(30));
        assert_eq!(default_ioc_expiration().raw, "90d");
        assert_eq!(default_tags(), ["forwarded", "threatq-threat"]);
    }

    #[test]
    fn token_url_follows_host_and_secret_stays_hidden() {
        let stream = json!({
            "host": "https://tq.example.com/",
            "client_id": "elastic",
            "client_secret": "hunter2-secret",
            "data_collection_id": "abc123",
        });
        let mut r = FieldReader::open("s", &stream).expect("a map");
        let tq = ThreatQConfig::from_fields(&mut r).expect("valid");
        assert!(r.finish().is_empty());
        assert_eq!(tq.token_url.as_str(), "https://tq.example.com/api/token");
        assert_eq!(tq.client_auth_style, ClientAuthStyle::Auto);
        assert!(!format!("{tq:?}").contains("hunter2-secret"));
        assert!(!tq.redacted_json().to_string().contains("hunter2-secret"));
        assert_eq!(tq.event_tags(), ["forwarded", "threatq-threat"]);
    }

    #[test]
    fn token_url_with_credentials_is_refused_without_echoing_them() {
        let stream = json!({
            "host": "https://tq.example.com",
            "client_id": "elastic",
            "client_secret": "s",
            "token_url": "https://elastic:token-url-PASSWORD@tq.example.com/api/token",
            "data_collection_id": "abc123",
        });
        let mut r = FieldReader::open("s", &stream).expect("a map");
        assert!(ThreatQConfig::from_fields(&mut r).is_none());
        let problems = r.finish();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].field, "s.token_url");
        assert!(problems[0].message.contains("must not contain credentials"));
        assert!(
            !problems[0].message.contains("token-url-PASSWORD"),
            "{problems:?}"
        );
    }

    #[test]
    fn bad_values_name_their_field() {
        let stream = json!({
            "client_id": "elastic",
            "client_secret": "s",
            "data_collection_id": "a/b",
            "page_size": 1001,
            "client_auth_style": "header",
        });
        let mut r = FieldReader::open("s", &stream).expect("a map");
        assert!(ThreatQConfig::from_fields(&mut r).is_none());
        let fields: Vec<String> = r.finish().into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            ["s.client_auth_style", "s.data_collection_id", "s.page_size"]
        );
    }
}
