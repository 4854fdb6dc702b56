//! Differential tests: the fast path ([`super::fast`]) against the reference engine
//! ([`super::reference`]), which is the specification.
//!
//! Whenever the fast path answers, its event must equal the reference's: same `id`, same
//! `timestamp`, and byte-identical `serde_json::to_string` of the document. Inputs are
//! generated ThreatQ objects (every optional block, quirks, wrong types, keys in any order),
//! the shared arbitrary-JSON strategy, and realistic objects with one field replaced by
//! arbitrary JSON. Separately, the common shapes (fixture lines, well-formed generated objects)
//! must take the fast path rather than silently falling back.

use std::time::Duration;

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::{COUNTERS, MapOptions, fast, reference};
use crate::config::IocExpiration;

/// Checks that the fast path, when it answers, agrees with the reference; returns whether it
/// answered.
fn agrees(raw: &str, opts: &MapOptions) -> Result<bool, TestCaseError> {
    let Some(got) = fast::map_indicator(raw, opts) else {
        return Ok(false);
    };
    let want = reference::map_indicator(raw, opts);
    let text = |doc: &crate::ingest::Document| serde_json::to_string(doc).unwrap_or_default();
    prop_assert_eq!(
        text(&got.doc),
        text(&want.doc),
        "raw {} with {:?}",
        raw,
        opts
    );
    prop_assert_eq!(got.id, want.id);
    prop_assert_eq!(got.timestamp, want.timestamp);
    Ok(true)
}

fn expiration(raw: &str) -> IocExpiration {
    // `""` does not parse as a duration, yet the mapper must treat it as "no script" (§3.13).
    IocExpiration::parse(raw).unwrap_or(IocExpiration {
        raw: raw.to_owned(),
        duration: Duration::ZERO,
    })
}

/// Mapping options: the pipeline-test harness, production tags, odd tags; durations the
/// script accepts and, unless `clean`, ones it refuses (`1h30m`: not a number; `10s`: unit).
fn options(clean: bool) -> BoxedStrategy<MapOptions> {
    let tags = prop::sample::select(vec![
        vec![
            "preserve_original_event",
            "preserve_duplicate_custom_fields",
        ],
        vec!["forwarded", "threatq-threat"],
        vec![],
        vec!["preserve_duplicate_custom_fields", ""],
        vec!["preserve_original_event"],
    ]);
    let mut durations = vec![
        None,
        Some("90d"),
        Some("5d"),
        Some("36h"),
        Some("45m"),
        Some(""),
    ];
    if !clean {
        durations.extend([Some("1h30m"), Some("10s"), Some("0d"), None, Some("90d")]);
    }
    (tags, prop::sample::select(durations))
        .prop_map(|(tags, d)| MapOptions {
            ioc_expiration: d.map(expiration),
            tags: tags.into_iter().map(str::to_owned).collect(),
        })
        .boxed()
}

/// `clean` values, plus, unless `clean`, values the fast path leaves to the reference (rare
/// enough per field that about half of the generated objects still take the fast path).
fn mix(clean: Vec<Value>, odd: Vec<Value>, is_clean: bool) -> BoxedStrategy<Value> {
    let clean = prop::sample::select(clean);
    if is_clean || odd.is_empty() {
        clean.boxed()
    } else {
        prop_oneof![60 => clean, 1 => prop::sample::select(odd)].boxed()
    }
}

fn date(clean: bool) -> BoxedStrategy<Value> {
    let valid = (
        1990u32..2031,
        1u32..13,
        1u32..29,
        0u32..24,
        0u32..60,
        0u32..60,
    )
        .prop_map(|(y, mo, d, h, mi, s)| {
            json!(format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}"))
        });
    let other = mix(
        vec![
            Value::Null,
            json!(""),
            json!("2020-02-29 23:59:59"),
            json!("0000-01-01 00:00:00"),
        ],
        vec![
            json!("2020-02-30 00:00:00"),
            json!("2019-02-29 00:00:00"),
            json!("2020-11-15 24:00:00"),
            json!("2020-11-15 23:59:60"),
            json!("2020-11-15T00:00:02Z"),
            json!(20201115),
            json!(["2020-11-15 00:00:02"]),
        ],
        clean,
    );
    prop_oneof![4 => valid, 1 => other].boxed()
}

/// Ids converted to long.
fn long(clean: bool) -> BoxedStrategy<Value> {
    let n = prop_oneof![
        (0u64..100_000).prop_map(Value::from),
        (0u64..100_000).prop_map(|n| json!(n.to_string())),
        (-5i64..0).prop_map(Value::from),
    ];
    let other = mix(
        vec![Value::Null, json!("0x1F"), json!(i64::MAX)],
        vec![
            json!("abc"),
            json!(4.0),
            json!(u64::MAX),
            json!(true),
            json!(""),
            json!([1]),
        ],
        clean,
    );
    prop_oneof![4 => n, 1 => other].boxed()
}

/// Ids converted to string.
fn id_text(clean: bool) -> BoxedStrategy<Value> {
    let n = prop_oneof![
        (0u64..100_000).prop_map(Value::from),
        (0u64..100_000).prop_map(|n| json!(n.to_string())),
    ];
    let other = mix(
        vec![Value::Null, json!(""), json!("abc"), json!(u64::MAX)],
        vec![json!(1.5), json!(false), json!({"id": 1})],
        clean,
    );
    prop_oneof![4 => n, 1 => other].boxed()
}

fn text(pool: &[&str], clean: bool, odd: Vec<Value>) -> BoxedStrategy<Value> {
    let mut values: Vec<Value> = pool.iter().map(|s| json!(s)).collect();
    values.extend([json!(""), Value::Null]);
    mix(values, odd, clean)
}

/// `(key, value)` or the key left out.
fn field(key: &'static str, value: BoxedStrategy<Value>) -> BoxedStrategy<Option<(String, Value)>> {
    prop::option::of(value.prop_map(move |v| (key.to_owned(), v))).boxed()
}

fn object(fields: Vec<BoxedStrategy<Option<(String, Value)>>>) -> BoxedStrategy<Value> {
    fields
        .prop_map(|f| Value::Object(f.into_iter().flatten().collect()))
        .boxed()
}

fn source(clean: bool) -> BoxedStrategy<Value> {
    let mut fields: Vec<_> = super::SOURCE_IDS
        .into_iter()
        .map(|k| field(k, id_text(clean)))
        .collect();
    fields.extend([
        field(
            "name",
            text(
                &["AlienVault OTX", "Source Example", "Domain Tools"],
                clean,
                vec![json!(7)],
            ),
        ),
        field(
            "tlp_name",
            text(
                &[
                    "WHITE",
                    "GREEN",
                    "AMBER",
                    "RED",
                    "CLEAR",
                    "AMBER+STRICT",
                    "TLP:RED",
                    "white",
                ],
                true,
                vec![],
            ),
        ),
        field(
            "source_score",
            mix(
                vec![
                    json!(1),
                    json!("5"),
                    json!("x"),
                    Value::Null,
                    json!(1.5),
                    json!(true),
                ],
                vec![json!([1, "2"])],
                clean,
            ),
        ),
        field("created_at", date(true)),
        field("published_at", date(true)),
        field("updated_at", date(true)),
        field("provider", text(&["Provider Example"], true, vec![])),
        field("source_type", text(&["connectors", "users"], true, vec![])),
        field("source_expire_days", text(&["30", "90"], true, vec![])),
        field("creator_source_name", text(&["Elastic"], true, vec![])),
    ]);
    object(fields)
}

fn attribute(clean: bool) -> BoxedStrategy<Value> {
    let name = text(
        &[
            "Description",
            "AlienVault Threat Level",
            "Country",
            "  Spaced  Out ",
            "ÜBER Größe",
            "İstanbul",
        ],
        clean,
        vec![json!(5), json!(["A B"])],
    );
    let name = if clean {
        name.prop_filter("names are present", |v| !v.is_null())
            .boxed()
    } else {
        name
    };
    let required = name.prop_map(|v| Some(("name".to_owned(), v))).boxed();
    let name_field = if clean {
        required
    } else {
        prop_oneof![40 => required, 1 => Just(None)].boxed()
    };
    object(vec![
        name_field,
        field("attribute_id", id_text(clean)),
        field("id", id_text(clean)),
        field("indicator_id", id_text(clean)),
        field("created_at", date(true)),
        field("updated_at", date(true)),
        field("touched_at", date(true)),
        field("value", text(&["Malicious Host", "MP", "3"], true, vec![])),
        field(
            "sources",
            prop::sample::select(vec![json!([{"name": "AlienVault OTX"}]), json!([])]).boxed(),
        ),
    ])
}

fn list(elem: BoxedStrategy<Value>, clean: bool, odd: Vec<Value>) -> BoxedStrategy<Value> {
    let items = prop::collection::vec(elem, 0..4).prop_map(Value::Array);
    if clean {
        prop_oneof![8 => items, 1 => Just(Value::Null)].boxed()
    } else {
        let odd_items = (
            prop::collection::vec(source(true), 0..2),
            prop::sample::select(odd),
        )
            .prop_map(|(mut items, odd)| {
                items.push(odd);
                Value::Array(items)
            });
        prop_oneof![30 => items, 3 => Just(Value::Null), 1 => odd_items, 1 => Just(json!({"a": 1}))]
            .boxed()
    }
}

/// The type names the pipeline maps, and a few it does not (case matters).
const TYPE_NAMES: [&str; 15] = [
    "Email Address",
    "FQDN",
    "IP Address",
    "IPv6 Address",
    "MD5",
    "SHA-1",
    "SHA-256",
    "SHA-512",
    "Filename",
    "URL",
    "x509 Serial",
    "CIDR Block",
    "Mutex",
    "ip address",
    "",
];

/// Indicator values of every kind, including URLs that parse, parse relatively, or fall back
/// to `url.full`.
const VALUES: [&str; 14] = [
    "89.160.20.156",
    "2001:db8::1",
    "a@b.example",
    "evil.example",
    "1ece659dcec98b1e1141160b55655c96",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "payload.exe",
    "http://evil.example/a/payload.php?x=1",
    "https://u:p@h.example:8443/v1.2/dir?q=%20#frag",
    "evil.example/x.php",
    "89.160.20.156:8080/maf.html",
    "http://a_b.example/x",
    "mailto:a@b.example",
    "0a:1b:2c",
];

/// A ThreatQ indicator object. `clean` = only shapes the fast path must handle itself.
fn indicator(clean: bool) -> BoxedStrategy<Map<String, Value>> {
    let status = mix(
        vec![
            json!({"id": 1, "name": "Active", "description": "Poses a threat"}),
            json!({"id": "2", "name": "Expired", "description": "No longer poses a serious threat."}),
            json!({"id": 3, "name": "Review", "description": ""}),
            json!({"name": "Whitelisted"}),
            Value::Null,
        ],
        vec![json!("Expired"), json!(2), json!([])],
        clean,
    );
    let ty = (prop::sample::select(TYPE_NAMES.to_vec()), id_text(clean))
        .prop_map(|(name, id)| json!({"id": id, "name": name, "class": "network"}));
    let ty = if clean {
        ty.boxed()
    } else {
        prop_oneof![30 => ty, 3 => Just(Value::Null), 1 => Just(json!("URL")), 1 => Just(json!({"name": 5}))]
            .boxed()
    };
    let mut fields = vec![
        field("id", long(clean)),
        field("indicator_id", long(clean)),
        field("type_id", id_text(clean)),
        field("status_id", id_text(clean)),
        field("type", ty),
        field("value", text(&VALUES, clean, vec![json!(42)])),
        field("status", status),
        field(
            "score",
            mix(
                vec![
                    json!(0),
                    json!(4),
                    json!(5),
                    json!(8),
                    json!(10),
                    json!(15),
                    json!(-1),
                    json!("9"),
                    Value::Null,
                ],
                vec![json!("high"), json!(4.5)],
                clean,
            ),
        ),
        field(
            "description",
            text(
                &["synthetic", "No longer poses a serious threat"],
                clean,
                vec![json!(5)],
            ),
        ),
        field(
            "hash",
            text(
                &["1ece659dcec98b1e1141160b55655c96"],
                clean,
                vec![json!(12)],
            ),
        ),
        field("created_at", date(clean)),
        field("expired_at", date(clean)),
        field("expires_at", date(clean)),
        field("expires_calculated_at", date(clean)),
        field("published_at", date(clean)),
        field("touched_at", date(clean)),
        field("deleted_at", date(true)),
        field(
            "sources",
            list(source(clean), clean, vec![Value::Null, json!("x")]),
        ),
        field(
            "attributes",
            list(
                attribute(clean),
                clean,
                vec![json!({"value": "no name"}), json!(3)],
            ),
        ),
        field(
            "adversaries",
            list(
                object(vec![
                    field("id", id_text(clean)),
                    field("name", text(&["Adversary Example"], true, vec![])),
                ]),
                clean,
                vec![json!("x")],
            ),
        ),
        field("class", text(&["network", "host"], true, vec![])),
        field(
            "uuid",
            text(&["a7a0f5b6-8a2f-4d5b-9a5c-0e1f2a3b4c5d"], true, vec![]),
        ),
        field(
            "tags",
            prop::sample::select(vec![json!([]), json!(["x", ""]), json!([null])]).boxed(),
        ),
        field(
            "generated_score",
            prop::sample::select(vec![json!(3.5), json!(0), json!(-0.0), json!(1e300)]).boxed(),
        ),
        field(
            "manual_score",
            mix(vec![Value::Null, json!(7)], vec![], true),
        ),
        field(
            "custom \"field\" ключ",
            mix(
                vec![json!({"a": {"b": null}}), json!("\u{1}\n\"x\"")],
                vec![],
                true,
            ),
        ),
    ];
    if clean {
        // The script needs `updated_at` (or an API date); ThreatQ always sends it.
        fields.push(
            date(true)
                .prop_filter("a date", Value::is_string)
                .prop_filter("not empty", |v| v != "")
                .prop_map(|v| Some(("updated_at".to_owned(), v)))
                .boxed(),
        );
    } else {
        let rare = |key: &'static str, v: Value| {
            prop::option::weighted(0.03, Just((key.to_owned(), v))).boxed()
        };
        fields.extend([
            prop::option::weighted(0.9, date(false).prop_map(|v| ("updated_at".to_owned(), v)))
                .boxed(),
            rare("indicator_value", json!("v")),
            rare("ioc_expired_at", json!("2020-01-01T00:00:00.000Z")),
        ]);
    }
    let counters =
        prop::sample::subsequence(COUNTERS.iter().map(|c| c.0).collect::<Vec<_>>(), 0..5)
            .prop_flat_map(move |names| {
                names
                    .into_iter()
                    .map(|n| long(clean).prop_map(move |v| (n.to_owned(), v)))
                    .collect::<Vec<_>>()
            });
    (fields, counters)
        .prop_map(move |(f, c)| {
            let mut m: Map<String, Value> = f.into_iter().flatten().collect();
            m.extend(c);
            if clean {
                // §9.5: providers need a `threat` object; a score guarantees one.
                m.entry("score").or_insert(json!(3));
                if m.get("score").is_some_and(Value::is_null) {
                    m.insert("score".to_owned(), json!(3));
                }
            }
            m
        })
        .boxed()
}

/// The object as text: keys in any order, with or without whitespace.
fn shuffled(m: Map<String, Value>) -> BoxedStrategy<String> {
    let pairs: Vec<(String, Value)> = m.into_iter().collect();
    (
        Just(pairs).prop_shuffle(),
        prop::sample::select(vec![(",", ":"), (", ", ": "), ("\n  ,", " :\t")]),
    )
        .prop_map(|(pairs, (comma, colon))| {
            let body: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}{colon}{v}", Value::String(k.clone())))
                .collect();
            format!("{{{}}}", body.join(comma))
        })
        .boxed()
}

fn indicator_text(clean: bool) -> BoxedStrategy<String> {
    indicator(clean).prop_flat_map(shuffled).boxed()
}

/// Where an arbitrary value is planted in a well-formed object.
const PLANT_AT: [&[&str]; 22] = [
    &["hash"],
    &["updated_at"],
    &["expires_at"],
    &["expired_at"],
    &["id"],
    &["status"],
    &["status", "name"],
    &["status", "id"],
    &["type"],
    &["type", "name"],
    &["type_id"],
    &["score"],
    &["description"],
    &["value"],
    &["sources"],
    &["sources", "0"],
    &["sources", "0", "name"],
    &["sources", "0", "source_score"],
    &["attributes"],
    &["attributes", "0", "name"],
    &["adversaries"],
    &["related_note_count"],
];

fn plant(mut m: Map<String, Value>, at: &[&str], v: Value) -> Map<String, Value> {
    let Some((leaf, parents)) = at.split_last() else {
        return m;
    };
    let mut cur = &mut m;
    for p in parents {
        let next = cur.entry(p.to_owned()).or_insert_with(|| json!([{}]));
        let next = match next {
            Value::Array(items) => {
                if items.is_empty() {
                    items.push(json!({}));
                }
                items.get_mut(0)
            }
            other => Some(other),
        };
        match next {
            Some(Value::Object(o)) => cur = o,
            _ => return m,
        }
    }
    if *leaf == "0" {
        return m;
    }
    cur.insert((*leaf).to_owned(), v);
    m
}

fn harness() -> MapOptions {
    MapOptions {
        ioc_expiration: None,
        tags: vec![
            "preserve_original_event".to_owned(),
            "preserve_duplicate_custom_fields".to_owned(),
        ],
    }
}

fn production(duration: &str) -> MapOptions {
    MapOptions {
        ioc_expiration: Some(expiration(duration)),
        tags: vec!["forwarded".to_owned(), "threatq-threat".to_owned()],
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn fast_path_equals_reference_on_generated_objects(
        raw in indicator_text(false),
        opts in options(false),
    ) {
        agrees(&raw, &opts)?;
    }

    #[test]
    fn fast_path_takes_well_formed_objects(raw in indicator_text(true), opts in options(true)) {
        prop_assert!(agrees(&raw, &opts)?, "fell back on {} with {:?}", raw, opts);
    }

    #[test]
    fn fast_path_equals_reference_on_arbitrary_json(
        v in super::arb_json(),
        opts in options(false),
    ) {
        agrees(&v.to_string(), &opts)?;
    }

    #[test]
    fn fast_path_equals_reference_with_an_arbitrary_field(
        m in indicator(true),
        at in prop::sample::select(PLANT_AT.to_vec()),
        v in super::arb_json(),
        opts in options(false),
    ) {
        let raw = Value::Object(plant(m, at, v)).to_string();
        agrees(&raw, &opts)?;
    }
}

#[test]
fn fixture_lines_take_the_fast_path() {
    let dir = std::env::var_os("TI_FIXTURES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures").into())
        .join("threatq");
    let mut lines = Vec::new();
    for name in [
        "test-threatq-sample-ndjson.log",
        "test-threatq-no-preserve-ndjson.log",
    ] {
        if let Ok(text) = std::fs::read_to_string(dir.join(name)) {
            lines.extend(
                text.split('\n')
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
            );
        }
    }
    if let Ok(sample) = std::fs::read_to_string(dir.join("sample_event.json")) {
        let v: Value = serde_json::from_str(&sample).expect("sample_event.json is JSON");
        lines.extend(v["event"]["original"].as_str().map(str::to_owned));
    }
    for opts in [harness(), production("90d"), production("5d")] {
        for line in &lines {
            let answered = agrees(line, &opts).expect("fast path agrees with the reference");
            assert!(answered, "fell back on a fixture line: {line}");
            assert!(super::takes_fast_path(line, &opts));
        }
    }
}

#[test]
fn unmodelled_shapes_fall_back_to_the_reference() {
    let cases = [
        // Duplicate keys, at every level, kept or pruned.
        r#"{"value":"a","value":"b"}"#,
        r#"{"class":null,"class":"x"}"#,
        r#"{"x":{"a":1,"a":null}}"#,
        r#"{"score":1,"sources":[{"name":"A","provider":"p","provider":"q"}]}"#,
        r#"{"status":{"id":1,"id":2}}"#,
        r#"{"attributes":[{"name":"A","name":"B"}]}"#,
        // Errors the pipeline records.
        r#"{"id":"4.0"}"#,
        r#"{"created_at":"2020/11/15"}"#,
        r#"{"related_note_count":"x"}"#,
        // Quirks.
        r#"{"type":{"name":"Mutex"},"sources":[{"name":"S"}]}"#,
        r#"{"type":{"name":"Mutex"},"sources":[{"name":""}]}"#,
        r#"{"type":{"name":"x509 Serial"},"value":"","sources":[{"tlp_name":"RED"}]}"#,
        r#"{"score":1,"sources":[{"name":"A"},null]}"#,
        r#"{"status":"Expired","updated_at":"2020-11-15 00:00:02"}"#,
        r#"{"indicator_value":"x","type":{"name":"IP Address"}}"#,
        r#"{"attributes":[{"value":"no name"}]}"#,
        // Not an object, not JSON, trailing text.
        "[1,2]",
        "{\"id\": 336, \"value\": ",
        r#"{"id":1} {"id":2}"#,
    ];
    for raw in cases {
        assert!(fast::map_indicator(raw, &harness()).is_none(), "{raw}");
        let want = reference::map_indicator(raw, &harness());
        assert_eq!(super::map_indicator(raw, &harness()), want, "{raw}");
    }
    // The expiry script's own failures and the "now" of an expired status need the reference.
    let no_updated_at = r#"{"status":{"name":"Expired"}}"#;
    assert!(fast::map_indicator(no_updated_at, &production("90d")).is_none());
    let updated = r#"{"updated_at":"2020-11-15 00:00:02"}"#;
    assert!(fast::map_indicator(updated, &production("10s")).is_none());
    assert!(fast::map_indicator(updated, &production("1h30m")).is_none());
    assert!(fast::map_indicator(updated, &production("90d")).is_some());
}

/// The share of generated inputs the fast path answers, out of `n` (fixed seed).
fn fast_share<S: Strategy<Value = (String, MapOptions)>>(strategy: S, n: usize) -> usize {
    use proptest::strategy::ValueTree as _;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    (0..n)
        .filter(|_| {
            let (raw, opts) = strategy
                .new_tree(&mut runner)
                .map(|t| t.current())
                .unwrap_or_default();
            fast::map_indicator(&raw, &opts).is_some()
        })
        .count()
}

/// The differential properties compare something: generated objects reach both paths.
#[test]
fn generated_objects_exercise_both_paths() {
    let generated = fast_share((indicator_text(false), options(false)), 400);
    let arbitrary = fast_share(
        (
            super::arb_json().prop_map(|v| v.to_string()),
            options(false),
        ),
        400,
    );
    eprintln!("fast path answered {generated}/400 generated, {arbitrary}/400 arbitrary");
    assert!((80..=320).contains(&generated), "{generated}/400");
}

proptest! {
    /// The fast path's byte-level date parser accepts exactly what the shared one accepts.
    #[test]
    fn ymd_hms_parsers_agree(
        text in prop_oneof![
            "[0-9]{4}-[01][0-9]-[0-3][0-9] [0-2][0-9]:[0-6][0-9]:[0-6][0-9]",
            "[0-9 :+-]{17,20}",
            ".{19}",
        ]
    ) {
        prop_assert_eq!(fast::parse_ymd_hms(&text), crate::ingest::parse_ymd_hms(&text));
    }
}

/// Every month end and every 29 February of four centuries, for both date parsers.
#[test]
fn ymd_hms_parsers_agree_on_month_ends() {
    for year in (0..=2400).chain([9999]) {
        for month in 0..=13 {
            for day in [0, 28, 29, 30, 31, 32] {
                let text = format!("{year:04}-{month:02}-{day:02} 23:59:59");
                assert_eq!(
                    fast::parse_ymd_hms(&text),
                    crate::ingest::parse_ymd_hms(&text),
                    "{text}"
                );
            }
        }
    }
}

/// The fast path finds counters by binary search.
#[test]
fn counters_are_sorted() {
    assert!(COUNTERS.windows(2).all(|w| w[0].0 < w[1].0));
}
