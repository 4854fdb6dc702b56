//! ThreatConnect indicator → ECS, exactly as Elastic's `ti_threatconnect` ingest pipeline
//! (package 2.3.0) stores it.
//!
//! Two engines produce the same [`EcsEvent`]: [`reference`](mod@reference) replays the pipeline processor by
//! processor over a `serde_json` DOM and is the definition of correct output; [`fast`] decodes
//! the common shapes straight into the output maps, several times faster. [`map_indicator`]
//! tries the fast path and falls back to the reference for every indicator the fast path does
//! not model (errors, quirks, unexpected types). The differential property tests below hold the
//! two to byte-identical output.

mod fast;
mod reference;

use crate::ingest::EcsEvent;
pub use crate::ingest::MapOptions;
pub use reference::PIPELINE;

/// Maps one raw ThreatConnect indicator (one element of the API's `data` array, as JSON text) to the document Elastic's pipeline would store. Never panics; malformed input yields a document with `error.message` like the pipeline.
pub fn map_indicator(raw: &str, opts: &MapOptions) -> EcsEvent {
    fast::map(raw, opts).unwrap_or_else(|| reference::map_indicator(raw, opts))
}

/// The reference engine alone (for benchmarks and differential tests).
#[doc(hidden)]
pub fn map_indicator_reference(raw: &str, opts: &MapOptions) -> EcsEvent {
    reference::map_indicator(raw, opts)
}

/// The fast path alone: `None` when it leaves the indicator to the reference engine.
#[doc(hidden)]
pub fn map_indicator_fast(raw: &str, opts: &MapOptions) -> Option<EcsEvent> {
    fast::map(raw, opts)
}

/// G29 (§12): the ECS `threat.indicator.type` of a ThreatConnect indicator type, the same table
/// for both engines: the first needle the type contains (case-sensitive substring) wins; `None`
/// when none does (an `Address` is typed by its IP, G30–G32).
#[inline]
fn ecs_indicator_type(kind: &str) -> Option<&'static &'static str> {
    static TABLE: [(&str, &str); 5] = [
        ("File", "file"),
        ("URL", "url"),
        ("EmailAddress", "email-addr"),
        ("Mutex", "mutex"),
        ("Registry Key", "windows-registry-key"),
    ];
    TABLE
        .iter()
        .find(|(needle, _)| kind.contains(needle))
        .map(|(_, ecs)| ecs)
}

/// D48: the keys the pipeline removes from each element of an associated group's `attributes`,
/// the same list for both engines.
const GROUP_ATTRIBUTE_DROPPED_KEYS: &[&str] = &[
    "dateAdded",
    "default",
    "id",
    "lastModified",
    "pinned",
    "source",
];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn arb_json() -> impl Strategy<Value = Value> {
        crate::ingest::arb_json(
            &[
                "2023-12-01T08:26:48Z",
                "0.0.0.0",
                "::1",
                "File",
                "Address",
                "URL",
                "TLP:AMBER",
                "61",
                "true",
                "@",
                ":",
            ],
            &[
                "confidence",
                "ip",
                "type",
                "tags",
                "associatedGroups",
                "associatedIndicators",
                "attributes",
                "securityLabels",
                "data",
                "address",
                "AS Number",
                "lastModified",
                "summary",
                "createdBy",
                "firstName",
                "id",
                "size",
                "md5",
                "sha256",
                "name",
                "techniqueId",
                "platforms",
                "tactics",
                "assignments",
                "user",
                "location",
                "deleted_at",
                "created_by",
                "file",
                "owner",
                "ownerId",
                "dateAdded",
                "active",
                "rating",
                "Block",
                "_temp",
                "value",
                "Value Name",
                "hostName",
                "lastUsed",
                "securityLabels",
                "to",
                "from",
                "userName",
            ],
        )
    }

    fn opts() -> MapOptions {
        MapOptions {
            ioc_expiration: crate::config::IocExpiration::parse("90d").ok(),
            tags: vec!["forwarded".to_owned()],
        }
    }

    fn harness_opts() -> MapOptions {
        MapOptions {
            ioc_expiration: None,
            tags: vec!["preserve_original_event".to_owned()],
        }
    }

    /// The fast path, when it takes the input, yields exactly the reference's event.
    fn assert_same_as_reference(raw: &str, opts: &MapOptions) -> Result<bool, TestCaseError> {
        let reference = map_indicator_reference(raw, opts);
        let Some(fast) = map_indicator_fast(raw, opts) else {
            return Ok(false);
        };
        prop_assert_eq!(&fast.id, &reference.id);
        prop_assert_eq!(fast.timestamp, reference.timestamp);
        let (f, r) = (
            serde_json::to_string(&fast.doc).unwrap_or_default(),
            serde_json::to_string(&reference.doc).unwrap_or_default(),
        );
        prop_assert_eq!(f, r, "input {}", raw);
        Ok(true)
    }

    fn fixture_lines() -> Vec<String> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/fixtures/threatconnect");
        [
            "test-indicator.log",
            "test-with-associated-groups-and-attributes.log",
        ]
        .iter()
        .filter_map(|name| std::fs::read_to_string(dir.join(name)).ok())
        .flat_map(|t| t.lines().map(str::to_owned).collect::<Vec<_>>())
        .filter(|l| !l.is_empty())
        .collect()
    }

    #[test]
    fn fixture_lines_take_the_fast_path_and_match_the_reference() {
        for line in fixture_lines() {
            for o in [harness_opts(), opts(), MapOptions::default()] {
                assert_eq!(
                    assert_same_as_reference(&line, &o).map_err(|e| e.to_string()),
                    Ok(true),
                    "{line}"
                );
            }
        }
    }

    /// A tag's `platforms` in every shape the fast path decodes itself (names borrowed; not an
    /// object, no `data`, a null `data`: no names) maps as the reference does; a `data` that is
    /// not a list of strings, or a repeated `data`, is left to the reference.
    #[test]
    fn tag_platform_shapes_match_the_reference() {
        let shapes = [
            (
                r#"{"data": ["Windows", "Linux", "Windows"], "count": 2}"#,
                true,
            ),
            (r#"{"count": 0, "data": []}"#, true),
            (r#"{"count": 0}"#, true),
            (r#"{"data": null}"#, true),
            (r#""Windows""#, true),
            (r#"["Windows"]"#, true),
            ("3", true),
            (r#"{"data": ["Win\u0064ows", "macOS"]}"#, true),
            (r#"{"data": ["Windows", 3]}"#, false),
            (r#"{"data": "Windows"}"#, false),
            (r#"{"data": ["Windows"], "data": ["Linux"]}"#, false),
        ];
        for (platforms, fast) in shapes {
            let raw = format!(
                r#"{{"id": 7, "type": "Host", "hostName": "a.example", "summary": "a.example",
                   "lastModified": "2024-01-02T03:04:05Z",
                   "tags": {{"data": [{{"name": "T", "platforms": {platforms}}}]}}}}"#
            );
            for o in [opts(), MapOptions::default()] {
                assert_eq!(
                    assert_same_as_reference(&raw, &o).map_err(|e| e.to_string()),
                    Ok(fast),
                    "{platforms}"
                );
            }
        }
    }

    // ---- realistic indicators ---------------------------------------------------------------

    type Entry = Option<(String, Value)>;

    /// `key: value` present with probability `p`.
    fn field(
        key: &'static str,
        p: f64,
        v: impl Strategy<Value = Value> + 'static,
    ) -> BoxedStrategy<Entry> {
        let entry = v.prop_map(move |v| (key.to_owned(), v));
        if p >= 1.0 {
            entry.prop_map(Some).boxed()
        } else {
            prop::option::weighted(p, entry).boxed()
        }
    }

    fn object(fields: Vec<BoxedStrategy<Entry>>) -> BoxedStrategy<Value> {
        fields
            .prop_map(|entries| Value::Object(entries.into_iter().flatten().collect()))
            .boxed()
    }

    fn one_of(items: &'static [&'static str]) -> BoxedStrategy<Value> {
        prop::sample::select(items).prop_map(|s| json!(s)).boxed()
    }

    fn or_null(v: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Value> {
        prop_oneof![9 => v, 1 => Just(Value::Null)].boxed()
    }

    /// ISO 8601 timestamps as the API sends them, with the odd fraction and offset.
    fn time() -> BoxedStrategy<Value> {
        (
            2000..2031i32,
            1..=12u32,
            1..=31u32,
            0..24u32,
            0..60u32,
            0..60u32,
            prop::sample::select(
                &[
                    "Z",
                    ".123Z",
                    ".5Z",
                    ".123456789Z",
                    "+02:00",
                    "-05:30",
                    ".25+01:00",
                    "",
                ][..],
            ),
        )
            .prop_map(|(y, m, d, h, mi, s, tail)| {
                // Day 31 in a short month is a (refused) date the fast path must leave alone.
                json!(format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}{tail}"))
            })
            .boxed()
    }

    /// Integers, sometimes sent as strings (the 2.1.1+ collector does that).
    fn int(range: std::ops::Range<i64>) -> BoxedStrategy<Value> {
        prop_oneof![
            range.clone().prop_map(|n| json!(n)),
            range.prop_map(|n| json!(n.to_string())),
        ]
        .boxed()
    }

    fn id() -> BoxedStrategy<Value> {
        prop_oneof![
            (1..100_000u64).prop_map(|n| json!(n)),
            ((1u64 << 53)..u64::MAX).prop_map(|n| json!(n)),
            ((1u64 << 53)..u64::MAX).prop_map(|n| json!(n.to_string())),
        ]
        .boxed()
    }

    fn boolean() -> BoxedStrategy<Value> {
        prop_oneof![
            any::<bool>().prop_map(|b| json!(b)),
            one_of(&["true", "false", "TRUE", "False"]),
        ]
        .boxed()
    }

    fn text() -> BoxedStrategy<Value> {
        prop_oneof![
            "[a-zA-Z0-9 ._:/@-]{0,12}".prop_map(|s| json!(s)),
            one_of(&["", "Ünïcødé", "quote\"and\\\\back", "tab\tline\n"]),
        ]
        .boxed()
    }

    fn hash() -> BoxedStrategy<Value> {
        "[0-9A-Fa-f]{32}".prop_map(|s| json!(s)).boxed()
    }

    fn small_block() -> BoxedStrategy<Value> {
        prop_oneof![
            Just(json!({})),
            Just(json!([])),
            Just(json!({"data": [{"id": 12345, "name": "x", "empty": ""}], "count": 1})),
            Just(json!(3)),
            Just(json!({"nested": {"a": null, "b": [1, 2.5, "c"]}})),
        ]
        .boxed()
    }

    fn created_by() -> BoxedStrategy<Value> {
        object(vec![
            field("id", 0.9, id()),
            field("userName", 0.9, text()),
            field("firstName", 0.9, or_null(text())),
            field("lastName", 0.9, text()),
            field("pseudonym", 0.7, text()),
            field("owner", 0.7, text()),
        ])
    }

    fn list_of(item: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
        prop_oneof![
            8 => prop::collection::vec(item, 0..3).prop_map(|l| json!({"data": l, "count": l.len()})),
            1 => Just(json!({"data": null})),
            1 => Just(json!({})),
        ]
        .boxed()
    }

    fn group() -> BoxedStrategy<Value> {
        let mut fields = vec![
            field("id", 0.95, id()),
            field("ownerId", 0.8, int(1..100)),
            field("ownerName", 0.8, text()),
            field(
                "type",
                0.9,
                one_of(&["Incident", "Email", "Document", "Adversary"]),
            ),
            field("name", 0.9, text()),
            field("createdBy", 0.8, or_null(created_by())),
            field("upVoteCount", 0.5, int(0..5)),
            field("downVoteCount", 0.5, int(0..5)),
            field("generatedReport", 0.5, boolean()),
            field("malware", 0.5, boolean()),
            field("scoreIncludesBody", 0.5, boolean()),
            field("upVote", 0.5, boolean()),
            field("fileSize", 0.5, int(0..10_000)),
            field("to", 0.5, text()),
            field("from", 0.5, text()),
            field("userName", 0.2, text()),
            field("xid", 0.5, text()),
            field("password", 0.3, text()),
            field(
                "assignments",
                0.5,
                list_of(object(vec![
                    field("type", 0.9, one_of(&["Assigned", "Escalated"])),
                    field(
                        "user",
                        0.9,
                        object(vec![field("id", 0.9, id()), field("userName", 0.5, text())]),
                    ),
                ])),
            ),
            field(
                "attributes",
                0.5,
                list_of(object(vec![
                    field("id", 0.9, id()),
                    field("type", 0.9, text()),
                    field("value", 0.9, text()),
                    field("dateAdded", 0.5, time()),
                    field("default", 0.5, boolean()),
                    field("pinned", 0.5, boolean()),
                    field("source", 0.3, text()),
                ])),
            ),
        ];
        for key in [
            "webLink",
            "legacyLink",
            "subject",
            "header",
            "body",
            "scoreBreakdown",
            "status",
            "fileName",
            "fileText",
            "fileType",
            "documentType",
        ] {
            fields.push(field(key, 0.5, text()));
        }
        for key in [
            "dateAdded",
            "lastModified",
            "emailDate",
            "eventDate",
            "publishDate",
            "dueDate",
            "escalationDate",
            "reminderDate",
            "externalDateAdded",
            "externalDateExpires",
            "externalLastModified",
            "firstSeen",
            "lastSeen",
            "documentDateAdded",
        ] {
            fields.push(field(key, 0.5, time()));
        }
        object(fields)
    }

    fn associated_indicator() -> BoxedStrategy<Value> {
        let mut fields = vec![
            field("id", 0.95, id()),
            field("type", 0.9, one_of(&["File", "Address", "Host", "URL"])),
            field("summary", 0.9, text()),
            field("size", 0.5, int(0..10_000)),
            field("confidence", 0.5, int(0..101)),
            field("rating", 0.5, prop_oneof![int(0..6), Just(json!(3.5))]),
            field(
                "ip",
                0.5,
                one_of(&["0.0.0.0", "10.1.2.3", "2a02:cf40::1", "::ffff:1.2.3.4"]),
            ),
            field("ownerId", 0.5, int(1..100)),
            field("md5", 0.5, hash()),
            field(
                "geoLocation",
                0.3,
                Just(
                    json!({"location": "Berlin", "hostName": "h", "list": [{"Mutex": "m"}, [{"Mutex": "n"}]]}),
                ),
            ),
            field(
                "location",
                0.2,
                prop_oneof![Just(json!("x")), Just(json!({"city": "y"}))],
            ),
        ];
        for key in [
            "active",
            "activeLocked",
            "privateFlag",
            "dnsActive",
            "whoisActive",
        ] {
            fields.push(field(key, 0.5, boolean()));
        }
        for key in [
            "dateAdded",
            "lastModified",
            "firstSeen",
            "lastSeen",
            "externalDateAdded",
            "externalDateExpires",
            "externalLastModified",
        ] {
            fields.push(field(key, 0.5, time()));
        }
        for key in [
            "description",
            "Subject",
            "Block",
            "hostName",
            "text",
            "Key Name",
            "Value Name",
            "Value Type",
            "AS Number",
            "address",
            "User Agent String",
            "ownerName",
            "webLink",
            "legacyLink",
            "Hashtag",
            "Mutex",
            "sha1",
            "sha256",
        ] {
            fields.push(field(key, 0.4, text()));
        }
        object(fields)
    }

    fn attribute() -> BoxedStrategy<Value> {
        object(vec![
            field("id", 0.95, id()),
            field("type", 0.9, text()),
            field("value", 0.9, text()),
            field("source", 0.3, text()),
            field("createdBy", 0.8, created_by()),
            field("dateAdded", 0.7, time()),
            field("lastModified", 0.7, time()),
            field("default", 0.7, boolean()),
            field("pinned", 0.7, boolean()),
        ])
    }

    fn label() -> BoxedStrategy<Value> {
        object(vec![
            field("id", 0.9, int(1..10)),
            field(
                "name",
                0.95,
                one_of(&[
                    "TLP:AMBER",
                    "TLP:RED",
                    "TLP:CLEAR",
                    "TLP:AMBER+STRICT",
                    "TLP:amber",
                    "Custom",
                    "a:GREEN:c",
                    "",
                ]),
            ),
            field("description", 0.5, text()),
            field("color", 0.5, text()),
            field("owner", 0.5, text()),
            field("source", 0.3, text()),
            field("dateAdded", 0.8, time()),
        ])
    }

    fn tag() -> BoxedStrategy<Value> {
        object(vec![
            field("id", 0.9, id()),
            field("name", 0.95, or_null(text())),
            field("lastUsed", 0.8, time()),
            field("description", 0.5, text()),
            field("owner", 0.5, text()),
            field(
                "techniqueId",
                0.6,
                or_null(one_of(&["T1055.005", "T1566", ""])),
            ),
            field(
                "platforms",
                0.6,
                prop_oneof![
                    prop::collection::vec(one_of(&["Windows", "Linux", "macOS"]), 0..3)
                        .prop_map(|l| json!({"data": l, "count": l.len()})),
                    Just(json!({"count": 0})),
                ],
            ),
            field(
                "tactics",
                0.4,
                prop_oneof![
                    Just(json!({"data": ["Collection"], "count": 1})),
                    Just(json!({"count": 0})),
                ],
            ),
        ])
    }

    /// (type, the field carrying its value, that value).
    fn kind() -> BoxedStrategy<(&'static str, &'static str, Value)> {
        prop_oneof![
            one_of(&["67.43.156.7", "2a02:cf40::1", "::ffff:10.0.0.1"])
                .prop_map(|v| ("Address", "ip", v)),
            hash().prop_map(|v| ("File", "md5", v)),
            Just(("URL", "text", json!("http://bad.example.com/a.exe"))),
            Just(("Host", "hostName", json!("c2.example.net"))),
            Just(("EmailAddress", "address", json!("phish@bad.example"))),
            Just(("ASN", "AS Number", json!("ASN64512"))),
            Just(("CIDR", "Block", json!("10.0.0.0/8"))),
            Just(("Mutex", "Mutex", json!("Global\\evil"))),
            Just(("Registry Key", "Key Name", json!("HKEY_LOCAL_MACHINE\\Run"))),
            Just(("User Agent", "User Agent String", json!("curl/8.0"))),
            Just(("Email Subject", "Subject", json!("Your invoice"))),
            Just(("Hashtag", "Hashtag", json!("#evil"))),
            Just(("Custom File Thing", "value1", json!("v"))),
        ]
        .boxed()
    }

    /// A realistic indicator with every optional block possibly present.
    fn indicator() -> BoxedStrategy<Value> {
        let mut fields = vec![
            field("id", 1.0, id()),
            field("summary", 0.95, text()),
            field("ownerId", 0.9, int(1..100)),
            field("ownerName", 0.9, text()),
            field("confidence", 0.8, int(0..101)),
            field(
                "rating",
                0.8,
                prop_oneof![int(0..6), Just(json!(2.5)), Just(json!("3.5"))],
            ),
            field(
                "threatAssessRating",
                0.6,
                prop_oneof![int(0..6), Just(json!(3.5))],
            ),
            field("threatAssessConfidence", 0.6, int(0..101)),
            field("threatAssessScore", 0.6, int(0..1000)),
            field("threatAssessScoreObserved", 0.6, int(0..10)),
            field("threatAssessScoreFalsePositive", 0.6, int(0..10)),
            field("falsePositives", 0.5, int(0..10)),
            field("size", 0.5, int(0..100_000)),
            field("md5", 0.4, hash()),
            field("sha1", 0.4, hash()),
            field("sha256", 0.4, hash()),
            field(
                "address",
                0.3,
                one_of(&["john@xyz.com", "noat", "@lead", "trail@"]),
            ),
            field("AS Number", 0.3, one_of(&["ASN1234", "AS 64512"])),
            field("ip", 0.3, one_of(&["0.0.0.0", "10.1.2.3", "::1"])),
            field("associatedGroups", 0.5, list_of(group())),
            field("associatedIndicators", 0.5, list_of(associated_indicator())),
            field("attributes", 0.5, list_of(attribute())),
            field("securityLabels", 0.6, list_of(label())),
            field("tags", 0.6, list_of(tag())),
            field("deleted_at", 0.1, time()),
            field("calScore", 0.3, int(0..10)),
            field("whois", 0.2, small_block()),
        ];
        for key in [
            "privateFlag",
            "active",
            "activeLocked",
            "dnsActive",
            "whoisActive",
            "falsePositiveReportedByUser",
        ] {
            fields.push(field(key, 0.6, boolean()));
        }
        for key in [
            "dateAdded",
            "lastModified",
            "firstSeen",
            "lastSeen",
            "externalDateAdded",
            "externalDateExpires",
            "externalLastModified",
            "lastFalsePositive",
        ] {
            fields.push(field(
                key,
                0.7,
                prop_oneof![8 => time(), 1 => Just(json!("")), 1 => Just(Value::Null)],
            ));
        }
        for key in [
            "description",
            "webLink",
            "legacyLink",
            "source",
            "hostName",
            "text",
            "Subject",
            "Hashtag",
            "Mutex",
            "Key Name",
            "Value Name",
            "Value Type",
            "User Agent String",
            "Block",
        ] {
            fields.push(field(key, 0.4, or_null(text())));
        }
        for key in [
            "customAssociations",
            "dnsResolution",
            "enrichment",
            "fileActions",
            "fileOccurrences",
            "genericCustomIndicatorValues",
            "geoLocation",
            "investigationLinks",
            "observations",
            "trackedUsers",
            "whoIs",
            "associatedArtifacts",
            "associatedCases",
        ] {
            fields.push(field(key, 0.3, small_block()));
        }
        (object(fields), kind())
            .prop_map(|(mut v, (kind, key, value))| {
                if let Value::Object(m) = &mut v {
                    m.insert("type".to_owned(), json!(kind));
                    m.insert(key.to_owned(), value);
                }
                v
            })
            .boxed()
    }

    fn any_opts() -> BoxedStrategy<MapOptions> {
        prop_oneof![
            Just(harness_opts()),
            Just(opts()),
            Just(MapOptions::default()),
            Just(MapOptions {
                ioc_expiration: crate::config::IocExpiration::parse("12h").ok(),
                tags: Vec::new(),
            }),
        ]
        .boxed()
    }

    crate::ingest::never_panics_proptests! {
        map: map_indicator,
        json: arb_json(),
        opts: opts(),
        string_opts: MapOptions::default(),
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Differential: on arbitrary JSON (real field names with wrong types), whatever the
        /// fast path takes it maps exactly like the reference.
        #[test]
        fn fast_path_matches_reference_on_arbitrary_json(v in arb_json(), o in any_opts()) {
            assert_same_as_reference(&v.to_string(), &o)?;
        }

        /// Differential: realistic indicators, every optional block, odd values included.
        #[test]
        fn fast_path_matches_reference_on_realistic_indicators(v in indicator(), o in any_opts()) {
            assert_same_as_reference(&v.to_string(), &o)?;
            // The same indicator pretty-printed (whitespace, same values).
            assert_same_as_reference(&serde_json::to_string_pretty(&v).unwrap_or_default(), &o)?;
        }
    }

    /// The fast path is not a formality: every realistic indicator that the reference maps
    /// without an error (the API's normal output) takes it.
    #[test]
    fn realistic_indicators_take_the_fast_path() {
        use proptest::strategy::ValueTree as _;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = indicator();
        let (mut taken, mut clean) = (0, 0);
        for _ in 0..400 {
            let Ok(tree) = strategy.new_tree(&mut runner) else {
                continue;
            };
            let raw = tree.current().to_string();
            for o in [opts(), harness_opts()] {
                if map_indicator_reference(&raw, &o).doc.contains_key("error") {
                    continue;
                }
                clean += 1;
                if map_indicator_fast(&raw, &o).is_some() {
                    taken += 1;
                } else {
                    eprintln!("fell back: {raw}");
                }
            }
        }
        assert!(clean > 200, "too few error-free samples: {clean}");
        assert_eq!(taken, clean, "fast path took {taken} of {clean}");
    }
}
