//! Throughput of the ThreatConnect → ECS mapping, in indicators per second.
//!
//! `ecs_map` runs [`map_indicator`] over a realistic mix (the two upstream fixture lines plus
//! synthetic Address/File/URL/Host variants); `serde_json_roundtrip` parses and re-serialises
//! the same texts, the floor any JSON-to-JSON mapper pays, so the ratio shows what the
//! pipeline logic itself costs.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use ti_sidecar::config::IocExpiration;
use ti_sidecar::source::threatconnect::ecs::{MapOptions, map_indicator};

fn fixture_lines() -> Vec<String> {
    let base = std::env::var_os("TI_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures"))
        });
    let dir = base.join("threatconnect");
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

fn bench(c: &mut Criterion) {
    let mut indicators = fixture_lines();
    for i in 0..4 {
        indicators.extend(synthetic(i * 10));
    }
    let opts = MapOptions {
        ioc_expiration: IocExpiration::parse("90d").ok(),
        tags: vec!["forwarded".to_owned(), "threatconnect-indicator".to_owned()],
    };
    let n = u64::try_from(indicators.len()).unwrap_or(u64::MAX);

    let mut group = c.benchmark_group("threatconnect");
    group.throughput(Throughput::Elements(n));
    group.bench_function("ecs_map", |b| {
        b.iter(|| {
            for raw in &indicators {
                black_box(map_indicator(black_box(raw), &opts));
            }
        });
    });
    group.bench_function("serde_json_roundtrip", |b| {
        b.iter(|| {
            for raw in &indicators {
                let v: Value = serde_json::from_str(black_box(raw)).unwrap_or(Value::Null);
                black_box(serde_json::to_string(&v).unwrap_or_default());
            }
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
