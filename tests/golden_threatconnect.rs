//! Golden parity of the ThreatConnect → ECS mapping with Elastic's `ti_threatconnect` pipeline.
//!
//! The fixtures in `../shared/fixtures/threatconnect` are the upstream pipeline-test inputs and
//! expected documents (see their `PROVENANCE.md`); documents are compared structurally and
//! type-strictly (`3.0` ≠ `3`), with a field-by-field diff on mismatch. Targeted tests pin the
//! behaviours the fixtures do not cover (errors, type tables, expiration, large ids).

mod common;

use common::{fixture_dir, golden_with, map_json_with, read_fixture, sample_event};

use serde_json::{Map, Value, json};
use ti_sidecar::config::IocExpiration;
use ti_sidecar::source::threatconnect::ecs::{MapOptions, PIPELINE, map_indicator};

fn harness_opts() -> MapOptions {
    MapOptions {
        ioc_expiration: None,
        tags: vec!["preserve_original_event".to_owned()],
    }
}

fn map_json(v: &Value, opts: &MapOptions) -> Map<String, Value> {
    map_json_with(map_indicator, v, opts)
}

fn golden(log: &str, expected: &str) {
    golden_with(
        "threatconnect",
        map_indicator,
        &harness_opts(),
        log,
        expected,
    );
}

#[test]
fn golden_test_indicator_2x() {
    golden(
        "test-indicator.log",
        "test-indicator.log-expected.2x-derived.json",
    );
}

#[test]
fn golden_associated_groups_and_attributes() {
    golden(
        "test-with-associated-groups-and-attributes.log",
        "test-with-associated-groups-and-attributes.log-expected.json",
    );
}

#[test]
fn fingerprint_ids_of_spec_section_4() {
    let cases = [
        (
            json!({"lastModified": "2023-12-01T08:26:48Z", "summary": "johnbae@poverts.com"}),
            Some("IbZVedQybbneBJW2COa7ZnfzP5I="),
        ),
        (
            json!({"lastModified": "2023-12-05T06:38:53Z", "summary": "test.user@elastic.co"}),
            Some("ExJEBvevcXYG3H0/1p6TE+ZLHjM="),
        ),
        (
            json!({"summary": "johnbae@poverts.com"}),
            Some("lIQRAU2omfLZcp+nP4OAKZ/tmMk="),
        ),
        (json!({"id": 1}), None),
    ];
    for (input, want) in cases {
        let ev = map_indicator(&input.to_string(), &MapOptions::default());
        assert_eq!(ev.id.as_deref(), want, "_id of {input}");
        assert!(!ev.doc.contains_key("_id"), "_id is metadata, not _source");
    }
}

/// Numeric equality that ignores the integer/float distinction: `sample_event.json` went
/// through a Go serialiser that prints `0.0` as `0`.
fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| loose_eq(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| loose_eq(v, w))
        }
        _ => a == b,
    }
}

#[test]
fn sample_event_pipeline_parts_match() {
    let Some((sample, raw)) = sample_event("threatconnect") else {
        return;
    };
    let opts = MapOptions {
        ioc_expiration: Some(IocExpiration::parse("90d").expect("90d parses")),
        tags: vec!["preserve_original_event".to_owned()],
    };
    let ev = map_indicator(&raw, &opts);
    let mut got = Value::Object(ev.doc.into_map());
    // The sample predates 1.3.0 (threat.technique.name) and carries agent/Fleet fields.
    if let Some(t) = got
        .pointer_mut("/threat/technique")
        .and_then(Value::as_object_mut)
    {
        assert_eq!(t.remove("name"), Some(json!(["Financial Theft"])));
    }
    for key in [
        "threat_connect",
        "threat",
        "related",
        "os",
        "user",
        "@timestamp",
        "ecs",
    ] {
        let (w, g) = (&sample[key], &got[key]);
        assert!(loose_eq(w, g), "{key}: expected {w}, got {g}");
    }
    let mut event = got["event"].clone();
    let mut want_event = sample["event"].clone();
    for k in ["dataset", "agent_id_status", "ingested", "original"] {
        if let Some(m) = want_event.as_object_mut() {
            m.remove(k);
        }
        if let Some(m) = event.as_object_mut() {
            m.remove(k);
        }
    }
    assert_eq!(want_event, event);
    assert_eq!(got["event"]["original"], json!(raw));
    assert_eq!(ev.id.as_deref(), Some("ExJEBvevcXYG3H0/1p6TE+ZLHjM="));
}

#[test]
fn large_ids_stay_exact() {
    let Some(dir) = fixture_dir("threatconnect") else {
        return;
    };
    let response: Value =
        serde_json::from_str(&read_fixture(&dir, "large-id-precision-response.json"))
            .expect("JSON");
    let data = response["data"].as_array().expect("data");
    let got: Vec<(Value, Value, Value)> = data
        .iter()
        .map(|item| {
            let d = map_json(item, &MapOptions::default());
            let tci = &d["threat_connect"]["indicator"];
            (
                tci["id"].clone(),
                tci["ip"].clone(),
                d["threat"]["indicator"]["ip"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                json!("9007199254918487"),
                json!("67.43.156.12"),
                json!("67.43.156.12")
            ),
            (
                json!("9007199254918489"),
                json!("67.43.156.13"),
                json!("67.43.156.13")
            ),
        ]
    );
    // Also through the raw text path, where the id is never a float.
    let raw = r#"{"id":9007199254918489,"summary":"x"}"#;
    let d = map_indicator(raw, &MapOptions::default()).doc.into_map();
    assert_eq!(
        d["threat_connect"]["indicator"]["id"],
        json!("9007199254918489")
    );
}

#[test]
fn malformed_json_line_yields_error_document() {
    let raw = "{\"id\": 1, \"summary\": ";
    let ev = map_indicator(raw, &harness_opts());
    let d = Value::Object(ev.doc.into_map());
    assert_eq!(d["event"]["original"], json!(raw));
    assert_eq!(d["event"]["kind"], json!(["enrichment", "pipeline_error"]));
    assert_eq!(d["tags"], json!(["preserve_original_event"]));
    assert_eq!(d["threat"]["indicator"]["provider"], json!("ThreatConnect"));
    let messages = d["error"]["message"]
        .as_array()
        .expect("error.message list");
    assert_eq!(messages.len(), 1);
    let m = messages[0].as_str().unwrap_or_default();
    let prefix = format!(
        "Processor json with tag json_event_original in pipeline {PIPELINE} failed with message: "
    );
    assert!(m.starts_with(&prefix), "{m}");
    assert!(d.get("threat_connect").is_none() && d.get("json").is_none());
    assert_eq!(ev.id, None);
    assert_eq!(ev.timestamp, None);
}

#[test]
fn non_object_json_fails_the_pipeline() {
    let ev = map_indicator("[1,2]", &MapOptions::default());
    let d = Value::Object(ev.doc.into_map());
    assert_eq!(d["event"]["kind"], json!("pipeline_error"));
    assert_eq!(d["json"], json!([1, 2]));
    assert_eq!(d["tags"], json!(["preserve_original_event"]));
    assert!(
        d["error"]["message"][0]
            .as_str()
            .is_some_and(|m| m.contains("script-default-deleted_at"))
    );
}

#[test]
fn recorded_conversion_error() {
    let raw =
        json!({"active": "maybe", "summary": "a@b.c", "lastModified": "2023-12-01T08:26:48Z"});
    let d = Value::Object(map_json(&raw, &MapOptions::default()));
    assert_eq!(
        d["error"]["message"],
        json!([format!(
            "Processor convert with tag convert_active_to_boolean in pipeline {PIPELINE} failed with message: [maybe] is not a boolean value, cannot convert to boolean"
        )])
    );
    assert_eq!(d["event"]["kind"], json!(["enrichment", "pipeline_error"]));
    assert_eq!(d["tags"], json!(["preserve_original_event"]));
    // Processing continued after the recorded error.
    assert_eq!(d["threat_connect"]["indicator"]["summary"], json!("a@b.c"));
    assert_eq!(d["@timestamp"], json!("2023-12-01T08:26:48.000Z"));
    assert!(d["threat_connect"]["indicator"].get("active").is_none());
    assert!(d.get("json").is_none());
}

#[test]
fn confidence_table_boundaries() {
    let cases = [
        (json!(0), Some("Not Specified")),
        (json!(1), Some("None")),
        (json!(2), Some("Low")),
        (json!(39), Some("Low")),
        (json!(39.5), Some("Low")),
        (json!(40), Some("Medium")),
        (json!(69), Some("Medium")),
        (json!(69.9), Some("Medium")),
        (json!(70), Some("High")),
        (json!(100), Some("High")),
        (json!(101), Some("None")),
        (json!(-5), Some("None")),
        (Value::Null, None),
    ];
    for (c, want) in cases {
        let d = map_json(&json!({"confidence": c}), &MapOptions::default());
        let got = d
            .get("threat")
            .and_then(|t| t.get("indicator"))
            .and_then(|i| i.get("confidence"))
            .and_then(Value::as_str);
        assert_eq!(got, want, "confidence {c}");
    }
    // A long copy of the integer goes to threat_connect.indicator.confidence.
    let d = map_json(&json!({"confidence": 61}), &MapOptions::default());
    assert_eq!(d["threat_connect"]["indicator"]["confidence"], json!(61));
    // A non-numeric confidence makes the upstream script throw: pipeline failure.
    let d = map_json(&json!({"confidence": "high"}), &MapOptions::default());
    assert_eq!(d["event"]["kind"], json!("pipeline_error"));
    assert!(d.contains_key("json"));
}

#[test]
fn address_type_ipv4_and_ipv6() {
    let v4 = map_json(
        &json!({"type": "Address", "ip": "67.43.156.12"}),
        &MapOptions::default(),
    );
    assert_eq!(v4["threat"]["indicator"]["type"], json!("ipv4-addr"));
    assert_eq!(v4["threat"]["indicator"]["ip"], json!("67.43.156.12"));
    assert_eq!(v4["related"]["ip"], json!(["67.43.156.12"]));
    let v6 = map_json(
        &json!({"type": "Address", "ip": "2001:db8::1"}),
        &MapOptions::default(),
    );
    assert_eq!(v6["threat"]["indicator"]["type"], json!("ipv6-addr"));
    assert_eq!(v6["threat"]["indicator"]["ip"], json!("2001:db8::1"));
    // `.` wins for an IPv4-mapped address (the ipv4 step runs last).
    let mapped = map_json(
        &json!({"type": "Address", "ip": "::ffff:1.2.3.4"}),
        &MapOptions::default(),
    );
    assert_eq!(mapped["threat"]["indicator"]["type"], json!("ipv4-addr"));
    // Not an Address: no threat.indicator.ip.
    let host = map_json(
        &json!({"type": "Host", "ip": "1.2.3.4"}),
        &MapOptions::default(),
    );
    assert!(host["threat"]["indicator"].get("ip").is_none());
    // An Address without a valid ip: the recorded convert error, then the unguarded
    // dereference fails the pipeline.
    let bad = map_json(
        &json!({"type": "Address", "ip": "0.0.0.0/8"}),
        &MapOptions::default(),
    );
    assert_eq!(bad["event"]["kind"], json!("pipeline_error"));
    let msgs = bad["error"]["message"].as_array().expect("messages");
    assert_eq!(msgs.len(), 2);
    assert!(
        msgs[0]
            .as_str()
            .is_some_and(|m| m.ends_with("'0.0.0.0/8' is not a valid ip address"))
    );
}

#[test]
fn file_hashes_lowercased_and_copied() {
    let raw = json!({
        "type": "File",
        "md5": "ABCDEF0123456789ABCDEF0123456789",
        "sha1": "ABCDEF0123456789ABCDEF0123456789ABCDEF01",
        "sha256": "ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789",
        "size": "2048",
        "associatedIndicators": {"data": [{"md5": "UPPERCASE", "type": "File"}]}
    });
    let d = map_json(&raw, &MapOptions::default());
    let md5 = "abcdef0123456789abcdef0123456789";
    let sha1 = "abcdef0123456789abcdef0123456789abcdef01";
    let sha256 = "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789";
    assert_eq!(d["threat"]["indicator"]["type"], json!(["file"]));
    assert_eq!(
        d["threat"]["indicator"]["file"],
        json!({"hash": {"md5": md5, "sha1": sha1, "sha256": sha256}, "size": 2048})
    );
    assert_eq!(d["threat_connect"]["indicator"]["md5"], json!(md5));
    assert_eq!(d["threat_connect"]["indicator"]["size"], json!("2048"));
    assert_eq!(d["related"]["hash"], json!([md5, sha1, sha256]));
    // Associated indicators' hashes are not touched.
    assert_eq!(
        d["threat_connect"]["indicator"]["associated_indicators"]["data"][0]["md5"],
        json!("UPPERCASE")
    );
    // sha256 reaches related.hash only when md5 exists (upstream guard).
    let d = map_json(
        &json!({"type": "File", "sha256": "AA"}),
        &MapOptions::default(),
    );
    assert_eq!(
        d["threat"]["indicator"]["file"]["hash"]["sha256"],
        json!("aa")
    );
    assert!(d.get("related").is_none());
}

#[test]
fn expiration_deleted_at_example() {
    let raw = json!({"summary": "test.user@elastic.co", "lastModified": "2023-12-05T06:38:53Z"});
    let opts = MapOptions {
        ioc_expiration: Some(IocExpiration::parse("90d").expect("90d")),
        tags: Vec::new(),
    };
    let ev = map_indicator(&raw.to_string(), &opts);
    let tci = &ev.doc.to_map()["threat_connect"]["indicator"];
    assert_eq!(tci["deleted_at"], json!("2024-03-04T06:38:53.000Z"));
    assert_eq!(tci["expiration_duration"], json!("90d"));
    assert!(!ev.doc.contains_key("_conf"));
    assert_eq!(
        ev.timestamp.map(|t| t.to_rfc3339()),
        Some("2023-12-05T06:38:53+00:00".to_owned())
    );
    // Leap year: 2023-12-01 + 90d = 2024-02-29.
    let raw = json!({"lastModified": "2023-12-01T08:26:48Z"});
    let d = map_indicator(&raw.to_string(), &opts).doc.into_map();
    assert_eq!(
        d["threat_connect"]["indicator"]["deleted_at"],
        json!("2024-02-29T08:26:48.000Z")
    );
    // No `_conf` (pipeline tests): no deleted_at.
    let d = map_json(&raw, &MapOptions::default());
    assert!(d["threat_connect"]["indicator"].get("deleted_at").is_none());
}

#[test]
fn pipeline_level_failure_keeps_partial_document() {
    // An Address without `ip`: G31's guard dereferences the missing ip and the pipeline fails.
    let raw = json!({
        "type": "Address",
        "summary": "x",
        "lastModified": "2023-12-01T08:26:48Z",
        "webLink": "https://example.com/1",
        "associatedIndicators": {"data": [{"id": 1}]}
    });
    let ev = map_indicator(&raw.to_string(), &harness_opts());
    let d = Value::Object(ev.doc.into_map());
    // Processing stopped: `event.kind` is the scalar, the scratch `json` is still there
    // (with the fields not yet moved), and the cleaner did not run (E16's "" placeholder stays).
    assert_eq!(d["event"]["kind"], json!("pipeline_error"));
    assert_eq!(d["related"]["ip"], json!([""]));
    assert_eq!(d["json"]["webLink"], json!("https://example.com/1"));
    assert_eq!(d["json"]["summary"], json!("x"));
    assert!(d["json"].get("type").is_none(), "type was already moved");
    assert_eq!(d["threat_connect"]["indicator"]["type"], json!("Address"));
    assert!(d["threat_connect"]["indicator"].get("web_link").is_none());
    assert_eq!(d["tags"], json!(["preserve_original_event"]));
    let msgs = d["error"]["message"]
        .as_array()
        .expect("error.message list");
    assert_eq!(msgs.len(), 1);
    assert!(
        msgs[0]
            .as_str()
            .is_some_and(|m| m.starts_with(&format!(
                "Processor conditional with tag set_threat_indicator_type_to_ipv6_addr in pipeline {PIPELINE} failed with message: "
            ))),
        "{}",
        msgs[0]
    );
    // The `_id` was computed before the failure.
    assert!(ev.id.is_some());
}

#[test]
fn wrong_types_for_structured_fields_fail_like_the_pipeline() {
    // `tags` is not an object: the foreach guard `ctx.json?.tags?.data` throws.
    let d = map_json(
        &json!({"tags": "x", "summary": "s"}),
        &MapOptions::default(),
    );
    assert_eq!(d["event"]["kind"], json!("pipeline_error"));
    // `associatedGroups.data` is not a list: the foreach fails.
    let d = map_json(
        &json!({"associatedGroups": {"data": "x"}}),
        &MapOptions::default(),
    );
    assert_eq!(d["event"]["kind"], json!("pipeline_error"));
    assert!(
        d["error"]["message"][0]
            .as_str()
            .is_some_and(|m| m.contains("cannot be cast to [java.util.List]"))
    );
    // A group without attributes gets `[]`, which the cleaner removes; `attributes: {}` too.
    let d = map_json(
        &json!({"associatedGroups": {"data": [{"id": 7, "attributes": {}}, {"id": 8}]}}),
        &MapOptions::default(),
    );
    assert_eq!(
        d["threat_connect"]["indicator"]["associated_groups"]["data"],
        json!([{"id": "7"}, {"id": "8"}])
    );
    assert!(d.get("error").is_none());
}
