//! Golden parity of the ThreatQ → ECS mapping with Elastic's `ti_threatq` pipeline (1.33+).
//!
//! The fixtures in `../shared/fixtures/threatq` are the upstream pipeline-test inputs and the
//! expected documents with the 1.33+ deltas applied (`*-expected.current-derived.json`, see
//! the fixtures' `README.md`); documents are compared structurally and type-strictly (`"336"`
//! ≠ `336`), with a field-by-field diff on mismatch. Targeted tests pin what the fixtures do
//! not cover: expiration (§4), errors (§7), the type table (§3.14).

mod common;

use common::{assert_same, golden_with, map_json_with, sample_event};

use serde_json::{Map, Value, json};
use ti_sidecar::config::IocExpiration;
use ti_sidecar::source::threatq::ecs::{MapOptions, PIPELINE, map_indicator};

/// The pipeline-test harness: both tags, no `_conf`.
fn harness_opts() -> MapOptions {
    MapOptions {
        ioc_expiration: None,
        tags: vec![
            "preserve_original_event".to_owned(),
            "preserve_duplicate_custom_fields".to_owned(),
        ],
    }
}

fn with_expiration(d: &str) -> MapOptions {
    MapOptions {
        ioc_expiration: Some(IocExpiration::parse(d).expect("duration parses")),
        tags: vec!["forwarded".to_owned()],
    }
}

/// Asserts the document expired at `at` for `reason`.
fn assert_expired(d: &Map<String, Value>, at: &str, reason: &str) {
    assert_eq!(d["threatq"]["ioc_expired_at"], json!(at));
    assert_eq!(d["threatq"]["ioc_expiration_reason"], json!(reason));
}

fn map_json(v: &Value, opts: &MapOptions) -> Map<String, Value> {
    map_json_with(map_indicator, v, opts)
}

fn golden(log: &str, expected: &str) {
    golden_with("threatq", map_indicator, &harness_opts(), log, expected);
}

#[test]
fn golden_sample_ndjson() {
    golden(
        "test-threatq-sample-ndjson.log",
        "test-threatq-sample-ndjson.log-expected.current-derived.json",
    );
}

#[test]
fn golden_no_preserve_ndjson() {
    golden(
        "test-threatq-no-preserve-ndjson.log",
        "test-threatq-no-preserve-ndjson.log-expected.current-derived.json",
    );
}

#[test]
fn sample_event_pipeline_parts_match() {
    let Some((sample, raw)) = sample_event("threatq") else {
        return;
    };
    let opts = MapOptions {
        ioc_expiration: Some(IocExpiration::parse("5d").expect("5d parses")),
        tags: vec![
            "preserve_original_event".to_owned(),
            "forwarded".to_owned(),
            "threatq-threat".to_owned(),
        ],
    };
    let ev = map_indicator(&raw, &opts);
    let mut got = Value::Object(ev.doc.into_map());
    let mut want = sample.clone();
    // Agent/Fleet fields (fixtures README) are not pipeline output.
    if let Some(m) = want.as_object_mut() {
        for k in ["agent", "data_stream", "elastic_agent", "input"] {
            m.remove(k);
        }
    }
    if let Some(e) = want.get_mut("event").and_then(Value::as_object_mut) {
        for k in ["agent_id_status", "created", "dataset", "ingested"] {
            e.remove(k);
        }
    }
    // The 1.33+ provider delta: the list of `sources[].name`.
    let names: Vec<Value> = want["threatq"]["sources"]
        .as_array()
        .map(|s| s.iter().filter_map(|x| x.get("name").cloned()).collect())
        .unwrap_or_default();
    assert!(!names.is_empty());
    if let Some(i) = want
        .pointer_mut("/threat/indicator")
        .and_then(Value::as_object_mut)
    {
        i.insert("provider".to_owned(), Value::Array(names));
    }
    // The sample's tags are the agent's; ours are what we passed in.
    assert_eq!(got["tags"], want["tags"]);
    if let Some(m) = got.as_object_mut() {
        m.remove("tags");
    }
    if let Some(m) = want.as_object_mut() {
        m.remove("tags");
    }
    assert_same(&want, &got, "sample_event.json");
    assert_eq!(ev.id, None);
}

#[test]
fn expiration_from_api_expires_at() {
    let raw = json!({"updated_at": "2020-11-15 00:00:02", "expires_at": "2021-01-02 03:04:05",
                     "status": {"name": "Active"}});
    let d = map_json(&raw, &with_expiration("90d"));
    assert_expired(
        &d,
        "2021-01-02T03:04:05.000Z",
        "Expiration set by ThreatQ from expires_at field",
    );
    assert!(d.get("error").is_none());
}

#[test]
fn expiration_from_api_expired_at_wins() {
    let raw = json!({"updated_at": "2020-11-15 00:00:02", "expires_at": "2021-01-02 03:04:05",
                     "expired_at": "2020-12-01 00:00:00", "status": {"name": "Expired"}});
    let d = map_json(&raw, &with_expiration("90d"));
    assert_expired(
        &d,
        "2020-12-01T00:00:00.000Z",
        "Expiration set by ThreatQ from expired_at field",
    );
}

/// The documented deviation: status `Expired` (object or plain string) expires at `@timestamp`.
#[test]
fn expiration_from_status_expired_deviation() {
    for status in [
        json!({"id": 2, "name": "Expired", "description": "No longer poses a serious threat."}),
        json!("Expired"),
    ] {
        let raw = json!({"updated_at": "2020-11-15 00:00:02", "status": status});
        let ev = map_indicator(&raw.to_string(), &with_expiration("90d"));
        let d = &ev.doc.to_map();
        assert_eq!(d["@timestamp"], json!("2020-11-15T00:00:02.000Z"));
        assert_eq!(d["threatq"]["ioc_expired_at"], d["@timestamp"]);
        assert_eq!(
            d["threatq"]["ioc_expiration_reason"],
            json!("Expiration set by Elastic when threatq.status is 'Expired'")
        );
        assert!(ev.timestamp.is_some());
    }
}

/// Deviation, no `updated_at`: there is no pipeline `@timestamp`, so "now" (what the agent
/// would stamp) is used.
#[test]
fn expiration_status_expired_without_updated_at_uses_now() {
    let before = chrono::Utc::now();
    let ev = map_indicator(
        &json!({"status": {"name": "Expired"}}).to_string(),
        &with_expiration("90d"),
    );
    let after = chrono::Utc::now();
    let at = ev.doc.to_map()["threatq"]["ioc_expired_at"]
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
        .expect("ioc_expired_at");
    assert!(at >= before - chrono::Duration::milliseconds(1) && at <= after);
    assert!(!ev.doc.contains_key("error"));
    assert_eq!(ev.timestamp, None);
}

#[test]
fn url_fallback_keeps_indicator_value() {
    let d = map_json(
        &json!({"type": {"name": "URL"}, "value": "89.160.20.156:8080/maf.html", "score": 4}),
        &harness_opts(),
    );
    assert_eq!(
        d["threat"]["indicator"]["url"],
        json!({"full": "89.160.20.156:8080/maf.html"})
    );
    assert_eq!(
        d["threatq"]["indicator_value"],
        json!("89.160.20.156:8080/maf.html")
    );
    assert!(d.get("error").is_none());
    let d = map_json(
        &json!({"type": {"name": "URL"}, "value": 42, "score": 4}),
        &harness_opts(),
    );
    assert_eq!(d["threat"]["indicator"]["url"]["full"], json!("42"));
}

#[test]
fn expiration_default_duration_adds_to_updated_at() {
    let raw = json!({"updated_at": "2023-12-01 08:26:48", "status": {"name": "Active"}});
    let reason = json!(
        "Expiration set by Elastic from the integration's parameter `IOC Expiration Duration`"
    );
    for (dur, want) in [
        ("90d", "2024-02-29T08:26:48.000Z"),
        ("5d", "2023-12-06T08:26:48.000Z"),
        ("36h", "2023-12-02T20:26:48.000Z"),
        ("45m", "2023-12-01T09:11:48.000Z"),
    ] {
        let d = map_json(&raw, &with_expiration(dur));
        assert_eq!(d["threatq"]["ioc_expired_at"], json!(want), "{dur}");
        assert_eq!(d["threatq"]["ioc_expiration_reason"], reason, "{dur}");
        assert_eq!(d["event"]["kind"], json!("enrichment"));
    }
    // Without `_conf` (pipeline tests) there is neither a computed date nor a reason.
    let d = map_json(&raw, &MapOptions::default());
    assert!(d["threatq"].get("ioc_expired_at").is_none());
    assert!(d["threatq"].get("ioc_expiration_reason").is_none());
}

#[test]
fn expiration_without_updated_at_is_a_script_error() {
    let raw = json!({"updated_at": "2023-12-01T08:26:48Z", "status": {"name": "Active"}});
    let d = map_json(&raw, &with_expiration("90d"));
    let msgs = d["error"]["message"].as_array().expect("messages");
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert!(msgs[0].as_str().is_some_and(|m| m.starts_with(&format!(
        "Processor date with tag date_updated_at in pipeline {PIPELINE} failed with message: unable to parse date [2023-12-01T08:26:48Z]"
    ))));
    assert!(msgs[1].as_str().is_some_and(|m| m.starts_with(&format!(
        "Processor script with tag script-expired_ioc in pipeline {PIPELINE} failed with message: "
    ))));
    assert!(d["threatq"].get("ioc_expired_at").is_none());
    assert!(d["threatq"].get("ioc_expiration_reason").is_none());
    assert_eq!(d["event"]["kind"], json!("pipeline_error"));
}

#[test]
fn malformed_json_line_yields_error_document() {
    let raw = "{\"id\": 336, \"value\": ";
    let ev = map_indicator(raw, &harness_opts());
    let d = Value::Object(ev.doc.into_map());
    assert_eq!(d["event"]["original"], json!(raw));
    assert_eq!(d["event"]["kind"], json!("pipeline_error"));
    assert_eq!(d["ecs"]["version"], json!("8.17.0"));
    assert_eq!(
        d["tags"],
        json!([
            "preserve_original_event",
            "preserve_duplicate_custom_fields"
        ])
    );
    let messages = d["error"]["message"]
        .as_array()
        .expect("error.message list");
    assert_eq!(messages.len(), 1);
    let prefix = format!(
        "Processor json with tag json_event_original in pipeline {PIPELINE} failed with message: "
    );
    assert!(messages[0].as_str().is_some_and(|m| m.starts_with(&prefix)));
    assert!(d.get("threatq").is_none() && d.get("json").is_none() && d.get("message").is_none());
    assert_eq!(ev.id, None);
    assert_eq!(ev.timestamp, None);

    // With production `_conf` the expiry script also fails on the missing `threatq` (§3.3).
    let d = map_indicator(raw, &with_expiration("90d")).doc.into_map();
    let messages = d["error"]["message"].as_array().expect("messages");
    assert_eq!(messages.len(), 2);
    assert!(
        messages[1]
            .as_str()
            .is_some_and(|m| m.contains("script-expired_ioc"))
    );
    assert_eq!(d["tags"], json!(["forwarded", "preserve_original_event"]));
}

#[test]
fn duplicate_keys_are_a_decode_error() {
    let d = map_indicator(r#"{"id":1,"value":"a","value":"b"}"#, &harness_opts())
        .doc
        .into_map();
    assert!(d.get("threatq").is_none());
    assert!(d["error"]["message"][0].as_str().is_some_and(|m| {
        m.starts_with(&format!(
        "Processor json with tag json_event_original in pipeline {PIPELINE} failed with message: "
    )) && m.contains("Duplicate field 'value'")
    }));
    assert_eq!(d["event"]["kind"], json!("pipeline_error"));
}

#[test]
fn non_object_json_fails_the_pipeline() {
    let d = map_indicator("[1,2]", &MapOptions::default())
        .doc
        .into_map();
    assert_eq!(d["event"]["kind"], json!("pipeline_error"));
    assert_eq!(d["threatq"], json!([1, 2]));
    assert_eq!(d["tags"], json!(["preserve_original_event"]));
}

#[test]
fn bad_date_is_recorded_and_processing_continues() {
    let raw = json!({"id": "77", "created_at": "2020/11/15", "updated_at": "2020-11-15 00:00:02",
                     "value": "a@b.example", "type": {"name": "Email Address"}, "score": "9"});
    let ev = map_indicator(&raw.to_string(), &harness_opts());
    let d = &ev.doc.to_map();
    assert_eq!(
        d["error"]["message"],
        json!([format!(
            "Processor date with tag date_created_at in pipeline {PIPELINE} failed with message: unable to parse date [2020/11/15]"
        )])
    );
    assert!(d["threatq"].get("created_at").is_none());
    assert_eq!(d["event"]["kind"], json!("pipeline_error"));
    // Later steps still ran.
    assert_eq!(d["threatq"]["id"], json!(77));
    assert_eq!(
        d["threatq"]["updated_at"],
        json!("2020-11-15T00:00:02.000Z")
    );
    assert_eq!(
        d["threat"]["indicator"]["email"]["address"],
        json!("a@b.example")
    );
    assert_eq!(d["threat"]["indicator"]["confidence"], json!("High"));
    assert_eq!(
        ev.timestamp.map(|t| t.to_rfc3339()),
        Some("2020-11-15T00:00:02+00:00".to_owned())
    );
}

#[test]
fn conversion_errors_remove_the_field() {
    let raw = json!({"id": "4.0", "score": "high", "related_note_count": "x", "description": "d"});
    let d = map_json(&raw, &harness_opts());
    let msgs: Vec<&str> = d["error"]["message"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    assert!(
        msgs[0].contains("tag convert_id_to_long")
            && msgs[0].ends_with("unable to convert [4.0] to long")
    );
    assert!(msgs[1].contains("tag convert_score_to_long"));
    assert!(msgs[2].contains("tag convert_related_note_count_to_long"));
    let tq = &d["threatq"];
    assert!(
        tq.get("id").is_none()
            && tq.get("score").is_none()
            && tq.get("related_note_count").is_none()
    );
    assert_eq!(d["threat"]["indicator"]["description"], json!("d"));
}

/// (ThreatQ type name, value, expected `threat.indicator.type`, value field, `related.*` list).
type TypeCase = (
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static str,
    Option<&'static str>,
);

#[test]
fn type_table_maps_every_type() {
    let cases: [TypeCase; 11] = [
        (
            "Email Address",
            "a@b.example",
            Some("email-addr"),
            "/threat/indicator/email/address",
            None,
        ),
        (
            "FQDN",
            "evil.example",
            Some("domain-name"),
            "/threat/indicator/url/domain",
            None,
        ),
        (
            "IP Address",
            "89.160.20.156",
            Some("ipv4-addr"),
            "/threat/indicator/ip",
            Some("ip"),
        ),
        (
            "IPv6 Address",
            "2001:db8::1",
            Some("ipv6-addr"),
            "/threat/indicator/ip",
            Some("ip"),
        ),
        (
            "MD5",
            "d41d8cd98f00b204e9800998ecf8427e",
            Some("file"),
            "/threat/indicator/file/hash/md5",
            Some("hash"),
        ),
        (
            "SHA-1",
            "da39a3ee5e6b4b0d3255bfef95601890afd80709",
            Some("file"),
            "/threat/indicator/file/hash/sha1",
            Some("hash"),
        ),
        (
            "SHA-256",
            "e3b0c44298fc1c149afbf4c8996fb924",
            Some("file"),
            "/threat/indicator/file/hash/sha256",
            Some("hash"),
        ),
        (
            "SHA-512",
            "cf83e1357eefb8bdf1542850d66d8007",
            Some("file"),
            "/threat/indicator/file/hash/sha512",
            Some("hash"),
        ),
        (
            "Filename",
            "payload.exe",
            Some("file"),
            "/threat/indicator/file/name",
            None,
        ),
        (
            "URL",
            "http://evil.example/a.php",
            Some("url"),
            "/threat/indicator/url/original",
            None,
        ),
        (
            "x509 Serial",
            "0a:1b",
            None,
            "/threat/indicator/x509/serial_number",
            None,
        ),
    ];
    for (name, value, ty, field, related) in cases {
        let raw = json!({"type": {"name": name}, "value": value, "score": 1});
        let d = Value::Object(map_json(&raw, &harness_opts()));
        assert_eq!(d.pointer(field), Some(&json!(value)), "{name}: {field}");
        assert_eq!(
            d.pointer("/threat/indicator/type"),
            ty.map(|t| json!(t)).as_ref(),
            "{name}: type"
        );
        if let Some(r) = related {
            assert_eq!(d["related"][r], json!([value]), "{name}: related.{r}");
        }
        assert!(d.get("error").is_none(), "{name}: {d}");
    }
    let d = map_json(
        &json!({"type": {"name": "Filename"}, "value": "a"}),
        &harness_opts(),
    );
    assert_eq!(d["threat"]["indicator"]["file"]["type"], json!("file"));
    // URL success: the parts, and `indicator_value` is removed.
    let d = map_json(
        &json!({"type": {"name": "URL"}, "value": "https://evil.example:8443/x/a.php?q=1#f", "score": 1}),
        &harness_opts(),
    );
    assert_eq!(
        d["threat"]["indicator"]["url"],
        json!({"original": "https://evil.example:8443/x/a.php?q=1#f", "scheme": "https",
               "domain": "evil.example", "port": 8443, "path": "/x/a.php", "extension": "php",
               "query": "q=1", "fragment": "f"})
    );
    assert!(d["threatq"].get("indicator_value").is_none());
    // Unmapped types: value only under threatq, no threat.indicator.type; case matters.
    for name in ["CIDR Block", "ip address", "Mutex"] {
        let d = map_json(
            &json!({"type": {"name": name}, "value": "v", "score": 1}),
            &harness_opts(),
        );
        assert_eq!(d["threatq"]["indicator_value"], json!("v"));
        assert!(d["threat"]["indicator"].get("type").is_none(), "{name}");
    }
}

#[test]
fn provider_without_threat_object_fails_the_pipeline() {
    // §9.5: no score, no description, unmapped type, but a named source.
    let raw = json!({"type": {"name": "Mutex"}, "value": "m", "sources": [{"name": "S"}]});
    let d = map_json(&raw, &harness_opts());
    assert_eq!(d["event"]["kind"], json!("pipeline_error"));
    assert!(
        d["error"]["message"][0]
            .as_str()
            .is_some_and(|m| m.contains("tag script_to_extract_tlp_and_providers"))
    );
    // TLP names must match exactly; a null source cancels the step.
    let raw = json!({"score": 1, "sources": [{"name": "A", "tlp_name": "AMBER"}, {"name": "B", "tlp_name": "TLP:RED"}]});
    let d = map_json(&raw, &harness_opts());
    assert_eq!(d["threat"]["indicator"]["marking"]["tlp"], json!(["AMBER"]));
    assert_eq!(d["threat"]["indicator"]["provider"], json!(["A", "B"]));
    let raw = json!({"score": 1, "sources": [{"name": "A", "tlp_name": "AMBER"}, null]});
    let d = map_json(&raw, &harness_opts());
    assert!(d["threat"]["indicator"].get("provider").is_none());
}
