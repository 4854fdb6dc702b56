//! Elasticsearch ingest-processor semantics, as small reusable functions over JSON documents.
//!
//! Elastic's integrations map vendor data to ECS with ingest pipelines (`rename`, `convert`,
//! `date`, `append`, `fingerprint`, a recursive empty-value cleaner, …). To reproduce those
//! pipelines byte for byte without an Elasticsearch node, each vendor mapper composes the
//! building blocks below; they follow the observable behaviour of the ES processors (dotted
//! paths, list promotion on append, Java `toString()` of values, the exact error texts) rather
//! than what would be idiomatic in Rust. Nothing here is vendor-specific.
//!
//! One file per concern: [`java`] (Java rendering and string processors), [`paths`] (dotted
//! paths), [`convert`](mod@convert), [`dates`], [`uri`] (`uri_parts`), [`strict_json`] (the `json`
//! processor), [`epilogue`] (empty-value cleaner, fingerprint, pipeline errors: the end of every
//! pipeline), [`doc`] (the fast paths' document) and [`fast`] (the fast paths' decoding).

use std::fmt::Write as _;
use std::net::IpAddr;

use base64::Engine as _;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use serde_json::{Map, Number, Value};
use sha1::{Digest, Sha1};

mod convert;
mod dates;
pub(crate) mod doc;
mod epilogue;
pub(crate) mod fast;
mod java;
pub(crate) mod json;
mod paths;
mod strict_json;
mod uri;

pub(crate) use convert::*;
pub(crate) use dates::*;
pub use epilogue::*;
pub(crate) use java::*;
pub use paths::*;
pub(crate) use strict_json::*;
pub(crate) use uri::*;

pub use doc::{Document, Node, Object};

/// One mapped ECS document, ready for a sink.
#[derive(Debug, Clone, PartialEq)]
pub struct EcsEvent {
    /// The pipeline's `_id` (document metadata, not part of `doc`), when it has one.
    pub id: Option<String>,
    /// `@timestamp` as a typed time, when the document has one.
    pub timestamp: Option<chrono::DateTime<chrono::Utc>>,
    /// The `_source` document.
    pub doc: Document,
}

/// A processor failed; the text is what Elasticsearch reports as `_ingest.on_failure_message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct IngestError(pub String);

/// A processor failure together with the processor's identity, as an `on_failure` handler sees
/// it (`_ingest.on_failure_processor_type` / `_tag` / `_message`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("processor {processor_type} with tag {tag} failed: {message}")]
pub(crate) struct ProcessorFailure {
    /// The processor type, e.g. `convert`.
    pub processor_type: &'static str,
    /// The processor tag (empty when the processor has none).
    pub tag: &'static str,
    /// The failure message.
    pub message: String,
}

impl ProcessorFailure {
    /// Attaches a processor identity to an [`IngestError`].
    pub fn new(processor_type: &'static str, tag: &'static str, error: IngestError) -> Self {
        Self {
            processor_type,
            tag,
            message: error.0,
        }
    }
}

/// Per-stream inputs of a mapping that do not come from the indicator itself (shared by every
/// vendor mapper).
#[derive(Debug, Clone, Default)]
pub struct MapOptions {
    /// `ioc_expiration_duration`; None = the pipeline sees no `_conf` (as in Elastic's pipeline tests).
    pub ioc_expiration: Option<crate::config::IocExpiration>,
    /// The event's `tags` as the agent supplies them (already including `preserve_original_event` when that option is on).
    pub tags: Vec<String>,
}

impl MapOptions {
    /// What the Agent puts into the event before the pipeline runs: `tags`, and `_conf`
    /// carrying `ioc_expiration_duration`.
    pub(crate) fn insert_agent_fields(&self, doc: &mut Map<String, Value>) {
        if !self.tags.is_empty() {
            let tags = self.tags.iter().cloned().map(Value::String).collect();
            doc.insert("tags".to_owned(), Value::Array(tags));
        }
        if let Some(exp) = &self.ioc_expiration {
            let mut conf = Map::new();
            conf.insert(
                "ioc_expiration_duration".to_owned(),
                Value::String(exp.raw.clone()),
            );
            doc.insert("_conf".to_owned(), Value::Object(conf));
        }
    }
}

/// Arbitrary JSON for "never panics" property tests: scalars, the given realistic `strings`,
/// and nested objects whose keys are drawn from `keys` (so real field names carry wrong types).
#[cfg(test)]
pub(crate) fn arb_json(
    strings: &'static [&'static str],
    keys: &'static [&'static str],
) -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1.0e6f64..1.0e6).prop_map(Value::from),
        "[a-zA-Z0-9:@. /%_-]{0,16}".prop_map(Value::String),
        prop::sample::select(strings).prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(keys).prop_map(str::to_owned),
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The two "never panics" property tests every platform's `map_indicator` passes, defined once:
///
/// * `never_panics_on_arbitrary_json`: any JSON drawn from `json` maps under `opts` with the raw
///   text kept in `event.original`, and maps under the default options too;
/// * `never_panics_on_arbitrary_strings`: any short text maps under `string_opts` to a
///   document with `ecs`.
///
/// Invoked in a platform's test module, it defines the two tests there (512 cases each).
#[cfg(test)]
macro_rules! never_panics_proptests {
    (map: $map:path, json: $json:expr, opts: $opts:expr, string_opts: $string_opts:expr $(,)?) => {
        ::proptest::proptest! {
            #![proptest_config(::proptest::prelude::ProptestConfig::with_cases(512))]

            #[test]
            fn never_panics_on_arbitrary_json(v in $json) {
                let raw = v.to_string();
                let ev = $map(&raw, &$opts);
                // The raw text is always preserved (unless it is empty, which JSON never is).
                let doc = ev.doc.into_map();
                ::proptest::prop_assert_eq!(
                    doc.get("event").and_then(|e| e.get("original")),
                    Some(&::serde_json::Value::String(raw.clone()))
                );
                let _ = $map(&raw, &$crate::ingest::MapOptions::default());
            }

            #[test]
            fn never_panics_on_arbitrary_strings(s in ".{0,64}") {
                let ev = $map(&s, &$string_opts);
                ::proptest::prop_assert!(ev.doc.contains_key("ecs"));
            }
        }
    };
}
#[cfg(test)]
pub(crate) use never_panics_proptests;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn paths_get_set_remove_rename() {
        let mut d = obj(json!({"a": {"b": [1, {"c": 2}]}}));
        assert_eq!(get(&d, "a.b.1.c"), Some(&json!(2)));
        assert_eq!(get(&d, "a.x"), None);
        set(&mut d, "x.y.z", json!("v")).unwrap();
        assert_eq!(get(&d, "x.y.z"), Some(&json!("v")));
        assert!(set(&mut d, "x.y.z.w", json!(1)).is_err());
        assert!(rename(&mut d, "x.y.z", "p.q", false).unwrap());
        assert_eq!(get(&d, "p.q"), Some(&json!("v")));
        assert!(!rename(&mut d, "nope", "p.r", false).unwrap());
        assert_eq!(remove(&mut d, "p.q"), Some(json!("v")));
    }

    #[test]
    fn append_promotes_and_dedups() {
        let mut d = obj(json!({"k": "enrichment"}));
        append(&mut d, "k", json!("pipeline_error"), false).unwrap();
        append(&mut d, "k", json!("pipeline_error"), false).unwrap();
        assert_eq!(d["k"], json!(["enrichment", "pipeline_error"]));
        append(&mut d, "n.l", json!("a"), true).unwrap();
        append(&mut d, "n.l", json!("a"), true).unwrap();
        assert_eq!(d["n"]["l"], json!(["a", "a"]));
    }

    #[test]
    fn convert_follows_java() {
        assert_eq!(convert(&json!(12), ConvertType::String), Ok(json!("12")));
        assert_eq!(convert(&json!(3.0), ConvertType::String), Ok(json!("3.0")));
        assert_eq!(
            convert(&json!(1e20), ConvertType::String),
            Ok(json!("1.0E20"))
        );
        assert_eq!(convert(&json!("0x1F"), ConvertType::Long), Ok(json!(31)));
        assert_eq!(convert(&json!("-0x1F"), ConvertType::Long), Ok(json!(-31)));
        assert_eq!(
            convert(&json!(3.5), ConvertType::Long),
            Err(IngestError("unable to convert [3.5] to long".into()))
        );
        assert_eq!(convert(&json!(3), ConvertType::Double), Ok(json!(3.0)));
        assert_eq!(
            convert(&json!("TRUE"), ConvertType::Boolean),
            Ok(json!(true))
        );
        assert_eq!(
            convert(&json!("maybe"), ConvertType::Boolean),
            Err(IngestError(
                "[maybe] is not a boolean value, cannot convert to boolean".into()
            ))
        );
        assert_eq!(convert(&json!("::1"), ConvertType::Ip), Ok(json!("::1")));
        assert_eq!(
            convert(&json!("0.0.0.0/8"), ConvertType::Ip),
            Err(IngestError("'0.0.0.0/8' is not a valid ip address".into()))
        );
        assert_eq!(
            convert(&json!([1, 2]), ConvertType::String),
            Ok(json!(["1", "2"]))
        );
    }

    #[test]
    fn dates_format_as_es() {
        let iso = [DateFormat::Iso8601];
        assert_eq!(
            date(&json!("2023-12-01T08:26:48Z"), &iso),
            Ok("2023-12-01T08:26:48.000Z".into())
        );
        assert_eq!(
            date(&json!("2023-12-01T10:26:48.123456+02:00"), &iso),
            Ok("2023-12-01T08:26:48.123Z".into())
        );
        assert_eq!(
            date(&json!("2023-12-01"), &iso),
            Ok("2023-12-01T00:00:00.000Z".into())
        );
        assert_eq!(
            date(
                &json!("1700000000"),
                &[DateFormat::Iso8601, DateFormat::Unix]
            ),
            Ok("2023-11-14T22:13:20.000Z".into())
        );
        assert_eq!(
            date(&json!("nope"), &iso),
            Err(IngestError("unable to parse date [nope]".into()))
        );
    }

    #[test]
    fn cleaner_removes_empty_bottom_up() {
        let mut d = obj(json!({"a": {"b": "", "c": [null, {}, []]}, "f": false, "z": 0, "s": "x"}));
        remove_empty(&mut d);
        assert_eq!(Value::Object(d), json!({"f": false, "z": 0, "s": "x"}));
    }

    #[test]
    fn fingerprint_matches_es() {
        let d = obj(
            json!({"json": {"summary": "johnbae@poverts.com", "lastModified": "2023-12-01T08:26:48Z"}}),
        );
        assert_eq!(
            fingerprint(&d, &["json.summary", "json.lastModified"]).as_deref(),
            Some("IbZVedQybbneBJW2COa7ZnfzP5I=")
        );
        assert_eq!(fingerprint(&d, &["json.nope"]), None);
    }

    #[test]
    fn java_doubles() {
        assert_eq!(java_double_to_string(0.001), "0.001");
        assert_eq!(java_double_to_string(1.0e-4), "1.0E-4");
        assert_eq!(java_double_to_string(1234567.0), "1234567.0");
        assert_eq!(java_double_to_string(1.5e7), "1.5E7");
    }

    #[test]
    fn ymd_hms_pattern_is_strict() {
        assert_eq!(
            date_ymd_hms(&json!("2020-11-15 00:00:02")),
            Ok("2020-11-15T00:00:02.000Z".into())
        );
        for bad in [
            "2020-11-15T00:00:02",
            "2020-02-30 00:00:00",
            "2020-1-5 00:00:00",
            "2020-11-15 24:00:00",
            "",
        ] {
            assert!(date_ymd_hms(&json!(bad)).is_err(), "{bad}");
        }
        assert_eq!(
            date_ymd_hms(&json!(5)),
            Err(IngestError("unable to parse date [5]".into()))
        );
    }

    #[test]
    fn uri_parts_like_java() {
        let p = uri_parts("https://u:pw@Evil.example:8443/a/b.php?x=1%20#frag").unwrap();
        assert_eq!(
            Value::Object(p),
            json!({"scheme": "https", "domain": "Evil.example", "port": 8443, "path": "/a/b.php",
                   "extension": "php", "query": "x=1 ", "fragment": "frag",
                   "user_info": "u:pw", "username": "u", "password": "pw"})
        );
        let p = uri_parts("evil.example/x.php").unwrap();
        assert_eq!(
            Value::Object(p),
            json!({"path": "evil.example/x.php", "extension": "php"})
        );
        assert!(uri_parts("89.160.20.156:8080/maf.html").is_err());
        let p = uri_parts("http://89.160.20.156:8080/v1.2/dir").unwrap();
        assert_eq!(p["extension"], json!("2/dir"));
        assert_eq!(p["domain"], json!("89.160.20.156"));
        // Registry-based authority (underscore): valid URI without a host.
        let p = uri_parts("http://a_b.example/x").unwrap();
        assert!(p.get("domain").is_none());
        // Illegal URI characters: java.net.URL fallback, no decoding.
        let p = uri_parts("http://h.example/a b|c").unwrap();
        assert_eq!(p["path"], json!("/a b|c"));
        assert!(uri_parts("foo://h.example/a b").is_err());
        let p = uri_parts("mailto:a@b.example").unwrap();
        assert_eq!(Value::Object(p), json!({"scheme": "mailto"}));
    }

    #[test]
    fn strict_json_refuses_duplicates_and_trailing_text() {
        assert_eq!(
            parse_json_strict(r#"{"a":[1,{"b":null}],"c":1.5}"#).ok(),
            Some(json!({"a": [1, {"b": null}], "c": 1.5}))
        );
        let dup = parse_json_strict(r#"{"a":1,"b":{"x":1,"x":2}}"#);
        assert!(dup.is_err_and(|e| e.to_string().contains("Duplicate field 'x'")));
        assert!(parse_json_strict("123 \"foo\"").is_err());
        assert_eq!(parse_json_strict(" 7 ").ok(), Some(json!(7)));
    }
}
