//! Throughput of the ThreatConnect and ThreatQ → ECS mappings, in indicators per second.
//!
//! `ecs_map` runs `map_indicator` over a realistic mix (the upstream fixture lines plus
//! synthetic variants); `serde_json_roundtrip` parses and re-serialises the same texts, the
//! floor any JSON-to-JSON mapper pays, so the ratio shows what the pipeline logic itself costs.
//! `ecs_map_serialised` maps and also serialises the document to JSON bytes, as a sink does:
//! that is the like-for-like comparison with the round trip, which serialises too.
//! `threatconnect_full` does the same over indicators that carry every optional block; after
//! each group a line `…: ecs_map X k/s, serde_json_roundtrip Y k/s, ratio Z×, map+serialise
//! W k/s, ratio V×` is printed, with the same figures for the reference
//! (processor-by-processor) engine alone. Each figure is the median of ten interleaved rounds of
//! 0.2 s per contender, so that a machine whose speed drifts moves both sides alike.
//! `TI_BENCH_PER_TEXT=1` adds the ratio of every text on its own.

/// The binary's allocator, so that the numbers are the product's (and the round trip gets the
/// same allocator as the mapping).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use ti_sidecar::config::IocExpiration;
use ti_sidecar::ingest::EcsEvent;
use ti_sidecar::source::threatconnect::ecs::{
    MapOptions, map_indicator, map_indicator_fast, map_indicator_reference,
};
use ti_sidecar::source::threatq::ecs as tq;

fn fixture_base() -> PathBuf {
    std::env::var_os("TI_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures"))
        })
}

fn fixture_lines() -> Vec<String> {
    let dir = fixture_base().join("threatconnect");
    [
        "test-indicator.log",
        "test-with-associated-groups-and-attributes.log",
    ]
    .iter()
    .filter_map(|name| std::fs::read_to_string(dir.join(name)).ok())
    .flat_map(|text| {
        text.lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    })
    .collect()
}

fn synthetic(i: u64) -> Vec<String> {
    let common = |id: u64, ty: &str| {
        json!({
            "id": 9_007_199_254_000_000u64 + id,
            "dateAdded": "2023-12-05T06:00:00Z",
            "lastModified": "2023-12-05T07:00:00Z",
            "ownerId": 51,
            "ownerName": "Elastic",
            "webLink": format!("https://app.threatconnect.com/#/details/indicators/{id}/overview"),
            "legacyLink": format!("https://app.threatconnect.com/auth/indicators/details/x.xhtml?id={id}"),
            "type": ty,
            "confidence": (id % 101),
            "rating": 3,
            "threatAssessRating": 3.5,
            "threatAssessConfidence": 61,
            "threatAssessScore": 382,
            "threatAssessScoreObserved": 0,
            "threatAssessScoreFalsePositive": 0,
            "privateFlag": false,
            "active": true,
            "activeLocked": false,
            "securityLabels": {"data": [{"id": 3, "name": "TLP:AMBER", "dateAdded": "2016-08-31T00:00:00Z"}]},
            "tags": {"data": [{"id": 1, "name": "Phishing", "lastUsed": "2023-08-25T13:15:30Z",
                                "techniqueId": "T1566", "platforms": {"data": ["Windows", "Linux"], "count": 2}}]}
        })
    };
    let with = |mut base: Value, extra: Value| {
        if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
            b.extend(e);
        }
        base.to_string()
    };
    vec![
        with(
            common(i, "Address"),
            json!({"ip": format!("67.43.{}.{}", i % 256, (i * 7) % 256), "summary": format!("67.43.{}.{}", i % 256, (i * 7) % 256)}),
        ),
        with(
            common(i + 1, "File"),
            json!({"md5": "F5A2496CF66CB8CFFE66CB1B27D7DEDE", "sha1": "DA39A3EE5E6B4B0D3255BFEF95601890AFD80709",
                   "sha256": "7D5FFFBFE8D098E369466164F705B4D692517A2B4659A03901DAF67CF78ABCDE",
                   "size": 1024, "summary": "F5A2496CF66CB8CFFE66CB1B27D7DEDE : DA39A3EE5E6B4B0D3255BFEF95601890AFD80709"}),
        ),
        with(
            common(i + 2, "URL"),
            json!({"text": format!("http://bad.example.com/{i}/payload.exe"), "summary": format!("http://bad.example.com/{i}/payload.exe")}),
        ),
        with(
            common(i + 3, "Host"),
            json!({"hostName": format!("c2-{i}.example.net"), "dnsActive": true, "whoisActive": false, "summary": format!("c2-{i}.example.net")}),
        ),
    ]
}

/// Indicators carrying every optional block (attributes, associated groups and indicators,
/// security labels, tags, every scalar field): the fixture lines, and copies of them re-typed
/// over the built-in indicator types with fresh ids (above 2^53) and timestamps.
fn full_lines() -> Vec<String> {
    let fixtures = fixture_lines();
    let types = [
        ("Address", "ip", json!("67.43.156.7")),
        ("Address", "ip", json!("2a02:cf40::1")),
        ("File", "md5", json!("F5A2496CF66CB8CFFE66CB1B27D7DEDE")),
        ("URL", "text", json!("http://bad.example.com/payload.exe")),
        ("Host", "hostName", json!("c2.example.net")),
        ("EmailAddress", "address", json!("phish@bad.example")),
        (
            "Registry Key",
            "Key Name",
            json!("HKEY_LOCAL_MACHINE\\SOFTWARE\\Run"),
        ),
        ("Mutex", "Mutex", json!("Global\\evil")),
        ("ASN", "AS Number", json!("ASN64512")),
        ("CIDR", "Block", json!("10.0.0.0/8")),
        ("User Agent", "User Agent String", json!("curl/8.0")),
        ("Email Subject", "Subject", json!("Your invoice")),
    ];
    let mut out = fixtures.clone();
    for (i, line) in fixtures.iter().cycle().take(types.len()).enumerate() {
        let Ok(Value::Object(mut m)) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let (ty, field, value) = &types[i];
        let n = u64::try_from(i).unwrap_or(0);
        m.insert("type".to_owned(), json!(ty));
        m.insert((*field).to_owned(), value.clone());
        m.insert("id".to_owned(), json!(9_007_199_254_740_993u64 + n));
        m.insert(
            "lastModified".to_owned(),
            json!(format!(
                "2024-0{}-1{}T0{}:26:48Z",
                1 + n % 9,
                n % 10,
                n % 10
            )),
        );
        m.insert("summary".to_owned(), value.clone());
        out.push(Value::Object(m).to_string());
    }
    out
}

fn tc_options() -> MapOptions {
    MapOptions {
        ioc_expiration: IocExpiration::parse("90d").ok(),
        tags: vec!["forwarded".to_owned(), "threatconnect-indicator".to_owned()],
    }
}

fn roundtrip(raw: &str) -> String {
    let v: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
    serde_json::to_string(&v).unwrap_or_default()
}

/// Indicators per second of `f` over `texts`, measured for about `secs` seconds.
fn rate(texts: &[String], secs: f64, mut f: impl FnMut(&str)) -> f64 {
    let start = Instant::now();
    let mut done = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        for raw in texts {
            f(black_box(raw));
        }
        done += u64::try_from(texts.len()).unwrap_or(0);
    }
    #[allow(clippy::cast_precision_loss)]
    let per_sec = done as f64 / start.elapsed().as_secs_f64();
    per_sec
}

/// The median of `xs` (the mean of the middle two for an even count).
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => xs[n / 2],
        _ => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// The mapped document's JSON bytes, as the sinks produce them.
fn serialised(event: &EcsEvent) -> Vec<u8> {
    serde_json::to_vec(&event.doc).unwrap_or_default()
}

/// One platform's mapping entry points, for [`print_ratio`].
struct Mapper<'a> {
    map: &'a dyn Fn(&str) -> EcsEvent,
    reference: &'a dyn Fn(&str) -> EcsEvent,
    takes_fast_path: &'a dyn Fn(&str) -> bool,
}

/// Prints the mapping rate next to the `Value` round trip (parse + `to_string`) of the same
/// texts: the ratio is what the brief's target (≥ 1.0×) is stated in. `map+serialise` also
/// pays for the document's bytes, like the round trip does.
fn print_ratio(label: &str, texts: &[String], m: &Mapper<'_>) {
    // Ten rounds of 0.2 s per contender, interleaved, and the median of the per-round ratios:
    // a machine whose speed drifts during the run (other tenants, frequency changes) moves both
    // sides of a round alike, where one long measurement after the other would not.
    const ROUNDS: usize = 10;
    let (mut map, mut trip, mut map_serialised, mut reference) = (
        Vec::with_capacity(ROUNDS),
        Vec::with_capacity(ROUNDS),
        Vec::with_capacity(ROUNDS),
        Vec::with_capacity(ROUNDS),
    );
    for _ in 0..ROUNDS {
        map.push(rate(texts, 0.2, |raw| {
            black_box((m.map)(raw));
        }));
        trip.push(rate(texts, 0.2, |raw| {
            black_box(roundtrip(raw));
        }));
        map_serialised.push(rate(texts, 0.2, |raw| {
            black_box(serialised(&(m.map)(raw)));
        }));
        reference.push(rate(texts, 0.2, |raw| {
            black_box((m.reference)(raw));
        }));
    }
    let ratio = |xs: &[f64]| median(xs.iter().zip(&trip).map(|(x, t)| x / t).collect());
    let (map_ratio, map_serialised_ratio, reference_ratio) =
        (ratio(&map), ratio(&map_serialised), ratio(&reference));
    let (map, trip, map_serialised, reference) = (
        median(map),
        median(trip.clone()),
        median(map_serialised),
        median(reference),
    );
    let fast = texts.iter().filter(|raw| (m.takes_fast_path)(raw)).count();
    if std::env::var_os("TI_BENCH_PER_TEXT").is_some() {
        // Which shapes cost the most against their own round trip.
        for (i, raw) in texts.iter().enumerate() {
            let one = std::slice::from_ref(raw);
            let map = rate(one, 0.3, |raw| {
                black_box((m.map)(raw));
            });
            let trip = rate(one, 0.3, |raw| {
                black_box(roundtrip(raw));
            });
            println!(
                "  {label}[{i}]: {} bytes, ratio {:.2}x",
                raw.len(),
                map / trip
            );
        }
    }
    println!(
        "{label}: ecs_map {:.1} k/s, serde_json_roundtrip {:.1} k/s, ratio {:.2}x, \
         map+serialise {:.1} k/s, ratio {:.2}x \
         (reference engine alone {:.1} k/s, ratio {:.2}x; fast path took {fast} of {} texts; \
         medians of {ROUNDS} interleaved rounds)",
        map / 1e3,
        trip / 1e3,
        map_ratio,
        map_serialised / 1e3,
        map_serialised_ratio,
        reference / 1e3,
        reference_ratio,
        texts.len()
    );
}

/// Whether the ratio lines run (under `--profile-time` only the selected function should).
fn print_ratios() -> bool {
    !std::env::args().any(|a| a == "--profile-time")
}

fn tc_group(c: &mut Criterion, name: &str, indicators: &[String]) {
    let opts = tc_options();
    let n = u64::try_from(indicators.len()).unwrap_or(u64::MAX);
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(n));
    group.bench_function("ecs_map", |b| {
        b.iter(|| {
            for raw in indicators {
                black_box(map_indicator(black_box(raw), &opts));
            }
        });
    });
    group.bench_function("ecs_map_serialised", |b| {
        b.iter(|| {
            for raw in indicators {
                black_box(serialised(&map_indicator(black_box(raw), &opts)));
            }
        });
    });
    group.bench_function("serde_json_roundtrip", |b| {
        b.iter(|| {
            for raw in indicators {
                black_box(roundtrip(black_box(raw)));
            }
        });
    });
    group.finish();
    if print_ratios() {
        let mapper = Mapper {
            map: &|raw| map_indicator(raw, &opts),
            reference: &|raw| map_indicator_reference(raw, &opts),
            takes_fast_path: &|raw| map_indicator_fast(raw, &opts).is_some(),
        };
        print_ratio(name, indicators, &mapper);
    }
}

fn bench(c: &mut Criterion) {
    let mut mix = fixture_lines();
    for i in 0..4 {
        mix.extend(synthetic(i * 10));
    }
    tc_group(c, "threatconnect", &mix);
    tc_group(c, "threatconnect_full", &full_lines());
}

/// ThreatQ inputs: the fixture lines, or synthetic indicators when the fixtures are absent.
fn threatq_lines() -> Vec<String> {
    let dir = fixture_base().join("threatq");
    let lines: Vec<String> = [
        "test-threatq-sample-ndjson.log",
        "test-threatq-no-preserve-ndjson.log",
    ]
    .iter()
    .filter_map(|name| std::fs::read_to_string(dir.join(name)).ok())
    .flat_map(|text| {
        text.split('\n')
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    })
    .collect();
    if !lines.is_empty() {
        return lines;
    }
    let types = [
        ("IP Address", "89.160.20.156"),
        ("URL", "http://evil.example/a/payload.php?x=1"),
        (
            "SHA-256",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ),
        ("FQDN", "c2.evil.example"),
    ];
    (0..12u64)
        .map(|i| {
            let (ty, value) = types[usize::try_from(i % 4).unwrap_or(0)];
            json!({
                "id": 336 + i, "indicator_id": 336 + i, "class": "network",
                "type_id": 15, "type": {"id": 15, "name": ty, "class": "network"},
                "status_id": 2, "status": {"id": 2, "name": "Active", "description": "Poses a threat"},
                "value": value, "score": i % 11, "description": "synthetic",
                "hash": "1ece659dcec98b1e1141160b55655c96",
                "created_at": "2020-09-11 14:35:51", "updated_at": "2020-11-15 00:00:02",
                "touched_at": "2021-06-07 19:47:27", "published_at": "2020-09-11 14:35:51",
                "sources": [{"id": 336, "indicator_id": 336, "source_id": 12, "name": "AlienVault OTX",
                             "source_score": 1, "tlp_name": "AMBER",
                             "created_at": "2020-09-11 14:35:53", "updated_at": "2020-10-15 14:36:00"}],
                "attributes": [{"id": 1877, "attribute_id": 3, "indicator_id": 336, "name": "AlienVault Threat Level",
                                "value": "3", "created_at": "2020-09-11 14:35:53"}],
                "adversaries": [{"id": 12, "name": "Adversary Example"}]
            })
            .to_string()
        })
        .collect()
}

fn bench_threatq(c: &mut Criterion) {
    let indicators = threatq_lines();
    let opts = tq::MapOptions {
        ioc_expiration: IocExpiration::parse("90d").ok(),
        tags: vec!["forwarded".to_owned(), "threatq-threat".to_owned()],
    };
    let n = u64::try_from(indicators.len()).unwrap_or(u64::MAX);
    let fast = indicators
        .iter()
        .filter(|raw| tq::takes_fast_path(raw, &opts))
        .count();
    eprintln!(
        "threatq: {fast} of {} inputs take the fast path",
        indicators.len()
    );

    let mut group = c.benchmark_group("threatq");
    group.throughput(Throughput::Elements(n));
    group.bench_function("ecs_map", |b| {
        b.iter(|| {
            for raw in &indicators {
                black_box(tq::map_indicator(black_box(raw), &opts));
            }
        });
    });
    // The processor-by-processor engine the fast path falls back to, for comparison.
    group.bench_function("ecs_map_reference", |b| {
        b.iter(|| {
            for raw in &indicators {
                black_box(tq::reference::map_indicator(black_box(raw), &opts));
            }
        });
    });
    group.bench_function("ecs_map_serialised", |b| {
        b.iter(|| {
            for raw in &indicators {
                black_box(serialised(&tq::map_indicator(black_box(raw), &opts)));
            }
        });
    });
    group.bench_function("serde_json_roundtrip", |b| {
        b.iter(|| {
            for raw in &indicators {
                black_box(roundtrip(black_box(raw)));
            }
        });
    });
    group.finish();
    if print_ratios() {
        let mapper = Mapper {
            map: &|raw| tq::map_indicator(raw, &opts),
            reference: &|raw| tq::reference::map_indicator(raw, &opts),
            takes_fast_path: &|raw| tq::takes_fast_path(raw, &opts),
        };
        print_ratio("threatq", &indicators, &mapper);
    }
}

criterion_group!(benches, bench, bench_threatq);
criterion_main!(benches);
