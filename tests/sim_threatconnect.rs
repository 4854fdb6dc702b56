//! Drives the ThreatConnect simulator over loopback with a real HTTP client, signing every
//! request with the production `auth` module, and checks that it behaves like the API spec says.

use std::collections::{BTreeMap, BTreeSet};
use ti_sidecar::sim::faults::FaultArgs;

use reqwest::StatusCode;
use serde_json::Value;
use ti_sidecar::sim::threatconnect::{self, SimArgs, SimHandle};
use ti_sidecar::source::threatconnect::auth;

const SECRET: &str = "ti-sidecar-sim-secret";
const ACCESS_ID: &str = "ti-sidecar-sim";

struct Reply {
    status: StatusCode,
    retry_after: Option<String>,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).expect("JSON body")
    }

    fn message(&self) -> String {
        let v = self.json();
        assert_eq!(v["status"], "Failure", "{}", self.text);
        v["message"].as_str().expect("message").to_owned()
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Sends a GET to an absolute URL, signed over exactly what goes on the wire.
async fn send(url: &str, access_id: &str, secret: &str, timestamp: i64) -> Reply {
    let url = url::Url::parse(url).expect("valid URL");
    let authz = auth::authorization(
        access_id,
        secret.as_bytes(),
        &auth::path_and_query(&url),
        "GET",
        timestamp,
    );
    send_with(url, &authz, timestamp).await
}

async fn send_with(url: url::Url, authorization: &str, timestamp: i64) -> Reply {
    let resp = reqwest::Client::new()
        .get(url)
        .header("Timestamp", timestamp.to_string())
        .header("Authorization", authorization)
        .send()
        .await
        .expect("request");
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get("Retry-After")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = resp.text().await.expect("body");
    Reply {
        status,
        retry_after,
        text,
    }
}

async fn get(sim: &SimHandle, path_and_query: &str) -> Reply {
    send(
        &format!("{}{path_and_query}", sim.base_url()),
        ACCESS_ID,
        SECRET,
        now(),
    )
    .await
}

async fn sim(args: SimArgs) -> SimHandle {
    threatconnect::start(args).await.expect("simulator starts")
}

fn small(n: usize) -> SimArgs {
    SimArgs {
        indicators: n,
        ..SimArgs::default()
    }
}

/// A simulator of `n` indicators, its other arguments the defaults changed by `adjust`.
async fn sim_with(n: usize, adjust: impl FnOnce(&mut SimArgs)) -> SimHandle {
    let mut args = small(n);
    adjust(&mut args);
    sim(args).await
}

fn ids(page: &Value) -> Vec<i64> {
    page["data"]
        .as_array()
        .expect("data array")
        .iter()
        .map(|o| o["id"].as_i64().expect("integer id"))
        .collect()
}

/// Follows `next` from `first` to the end and returns every page body.
async fn all_pages(sim: &SimHandle, first: &str) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut reply = get(sim, first).await;
    loop {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let page = reply.json();
        let next = page["next"].as_str().map(str::to_owned);
        pages.push(page);
        match next {
            Some(n) => reply = send(&n, ACCESS_ID, SECRET, now()).await,
            None => return pages,
        }
    }
}

#[tokio::test]
async fn signed_request_returns_result_limit_items_and_a_working_next() {
    let sim = sim(small(50)).await;
    let first = get(&sim, "/api/v3/indicators?resultLimit=10&resultStart=0").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let page = first.json();
    assert_eq!(page["status"], "Success");
    assert_eq!(ids(&page).len(), 10);
    assert!(page.get("prev").is_none());
    assert!(page.get("count").is_none());
    let next = page["next"].as_str().expect("next link");
    assert!(next.starts_with(&sim.base_url()), "{next}");
    assert!(next.contains("resultStart=10"), "{next}");

    let second = send(next, ACCESS_ID, SECRET, now()).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text);
    let page2 = second.json();
    assert_eq!(ids(&page2).len(), 10);
    assert!(page2["prev"].as_str().unwrap().contains("resultStart=0"));
    let a: BTreeSet<i64> = ids(&page).into_iter().collect();
    assert!(ids(&page2).iter().all(|id| !a.contains(id)));
    assert_eq!(sim.stats().pages_served, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn following_next_yields_every_indicator_exactly_once_without_mutation() {
    let sim = sim(small(257)).await;
    let pages = all_pages(
        &sim,
        "/api/v3/indicators?fields=tags&resultLimit=40&resultStart=0&sorting=lastModified+asc&count=true",
    )
    .await;
    assert_eq!(pages.len(), 7);
    assert_eq!(pages[0]["count"], 257);
    let mut seen: Vec<i64> = pages.iter().flat_map(ids).collect();
    let n = seen.len();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), n, "duplicates");
    let want: Vec<i64> = sim.snapshot().into_iter().map(|(id, _)| id).collect();
    assert_eq!(seen, want);
    sim.shutdown().await;
}

#[tokio::test]
async fn bad_signature_wrong_access_id_and_skew_are_401_with_tc_messages() {
    let sim = sim(small(5)).await;
    let url = format!("{}/api/v3/indicators?resultLimit=1", sim.base_url());

    let bad_sig = send(&url, ACCESS_ID, "not-the-secret", now()).await;
    assert_eq!(bad_sig.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        bad_sig.message(),
        "Signature Data Did Not Match Expected Result"
    );

    let wrong_id = send(&url, "someone-else", SECRET, now()).await;
    assert_eq!(wrong_id.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong_id.message(), "Access Denied");

    let skewed = send(&url, ACCESS_ID, SECRET, now() - 301).await;
    assert_eq!(skewed.status, StatusCode::UNAUTHORIZED);
    assert_eq!(skewed.message(), "Timestamp Out of Acceptable Time Range");

    let ahead = send(&url, ACCESS_ID, SECRET, now() + 301).await;
    assert_eq!(ahead.message(), "Timestamp Out of Acceptable Time Range");

    let missing = send_with(
        url::Url::parse(&url).unwrap(),
        &format!("TC {ACCESS_ID}:"),
        now(),
    )
    .await;
    assert_eq!(
        missing.message(),
        "Signature Data Did Not Match Expected Result"
    );

    assert_eq!(sim.stats().auth_rejected, 5);
    assert_eq!(sim.stats().pages_served, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn signature_covers_the_raw_query_bytes() {
    let sim = sim(small(5)).await;
    let base = sim.base_url();
    // `+` and `%20` both mean a space, and both work when signed as sent.
    for q in ["sorting=id+desc", "sorting=id%20desc"] {
        let r = get(&sim, &format!("/api/v3/indicators?{q}")).await;
        assert_eq!(r.status, StatusCode::OK, "{q}: {}", r.text);
    }
    // Signing one spelling and sending the other is a 401, like the real API.
    let ts = now();
    let authz = auth::authorization(
        ACCESS_ID,
        SECRET.as_bytes(),
        "/api/v3/indicators?sorting=id+desc",
        "GET",
        ts,
    );
    let sent = url::Url::parse(&format!("{base}/api/v3/indicators?sorting=id%20desc")).unwrap();
    let r = send_with(sent, &authz, ts).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    sim.shutdown().await;
}

#[tokio::test]
async fn result_limit_above_10000_is_400() {
    let sim = sim(small(5)).await;
    let r = get(&sim, "/api/v3/indicators?resultLimit=10001").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.message().contains("10001"), "{}", r.text);
    let r = get(&sim, "/api/v3/indicators?resultLimit=0").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = get(&sim, "/api/v3/indicators?resultLimit=10000").await;
    assert_eq!(r.status, StatusCode::OK);
    sim.shutdown().await;
}

#[tokio::test]
async fn malformed_tql_timestamp_is_400_naming_the_value() {
    let sim = sim(small(5)).await;
    let r = get(
        &sim,
        "/api/v3/indicators?tql=lastModified+GEQ+%222023-12-05T07%3A00%3A01.12Z%22",
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let msg = r.message();
    assert!(msg.starts_with("Invalid TQL"), "{msg}");
    assert!(msg.contains("2023-12-05T07:00:01.12Z"), "{msg}");

    let r = get(&sim, "/api/v3/indicators?tql=bogusKeyword+%3D+1").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    sim.shutdown().await;
}

#[tokio::test]
async fn tql_geq_filters_and_sorting_is_ascending_with_id_tie_break() {
    let sim = sim_with(400, |a| a.same_second = 30).await;
    let snap = sim.snapshot();
    let mut times: Vec<&String> = snap.iter().map(|(_, t)| t).collect();
    times.sort();
    let cutoff = times[times.len() / 2].clone();
    let want: BTreeSet<i64> = snap
        .iter()
        .filter(|(_, t)| *t >= cutoff)
        .map(|(id, _)| *id)
        .collect();

    let tql: String =
        url::form_urlencoded::byte_serialize(format!("lastModified GEQ \"{cutoff}\"").as_bytes())
            .collect();
    let pages = all_pages(
        &sim,
        &format!("/api/v3/indicators?resultLimit=37&sorting=lastModified+asc&tql={tql}"),
    )
    .await;
    let items: Vec<(String, i64)> = pages
        .iter()
        .flat_map(|p| p["data"].as_array().unwrap().clone())
        .map(|o| {
            (
                o["lastModified"].as_str().unwrap().to_owned(),
                o["id"].as_i64().unwrap(),
            )
        })
        .collect();
    let got: BTreeSet<i64> = items.iter().map(|(_, id)| *id).collect();
    assert_eq!(got, want);
    assert_eq!(items.len(), want.len());
    for w in items.windows(2) {
        assert!(w[0] < w[1], "not ascending by (lastModified, id): {w:?}");
    }

    // Descending by lastModified still breaks ties by ascending id.
    let r = get(
        &sim,
        "/api/v3/indicators?resultLimit=10000&sorting=lastModified%20desc",
    )
    .await;
    let page = r.json();
    let desc: Vec<(String, i64)> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["lastModified"].as_str().unwrap().to_owned(),
                o["id"].as_i64().unwrap(),
            )
        })
        .collect();
    for w in desc.windows(2) {
        assert!(w[0].0 > w[1].0 || (w[0].0 == w[1].0 && w[0].1 < w[1].1));
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn fields_include_only_the_requested_blocks() {
    let sim = sim(small(60)).await;
    let blocks = [
        "tags",
        "securityLabels",
        "attributes",
        "associatedGroups",
        "associatedIndicators",
        "threatAssessScore",
        "firstSeen",
        "externalDateAdded",
    ];
    let plain = get(&sim, "/api/v3/indicators?resultLimit=60").await.json();
    for o in plain["data"].as_array().unwrap() {
        for b in blocks {
            assert!(o.get(b).is_none(), "{b} without fields");
        }
        for base in [
            "id",
            "ownerId",
            "ownerName",
            "dateAdded",
            "webLink",
            "type",
            "lastModified",
            "summary",
            "privateFlag",
            "active",
            "activeLocked",
            "legacyLink",
        ] {
            assert!(o.get(base).is_some(), "{base} missing");
        }
        assert!(o["legacyLink"].as_str().unwrap().contains("&owner="));
    }

    let some = get(
        &sim,
        "/api/v3/indicators?resultLimit=60&fields=tags&fields=threatAssess&fields=associatedGroups.attributes",
    )
    .await
    .json();
    let data = some["data"].as_array().unwrap();
    for o in data {
        assert!(o["tags"].is_object());
        assert!(o["threatAssessScore"].is_i64());
        assert!(o["associatedGroups"].is_object());
        for absent in [
            "securityLabels",
            "attributes",
            "associatedIndicators",
            "firstSeen",
        ] {
            assert!(o.get(absent).is_none(), "{absent} not requested");
        }
    }
    // Realistic content: some ATT&CK tag and some group with attributes somewhere in the set.
    assert!(data.iter().any(|o| {
        o["tags"]["data"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["techniqueId"].is_string()))
    }));
    assert!(data.iter().any(|o| {
        o["associatedGroups"]["data"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g["attributes"].is_object()))
    }));

    let r = get(&sim, "/api/v3/indicators?fields=notAField").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    sim.shutdown().await;
}

#[tokio::test]
async fn ids_above_2_pow_53_are_exact_in_the_raw_json() {
    let sim = sim(small(20)).await;
    let r = get(&sim, "/api/v3/indicators?resultLimit=20&sorting=id+asc").await;
    assert_eq!(r.status, StatusCode::OK);
    // 2^53 + 1 is not representable as f64; it must appear digit for digit.
    assert!(
        r.text.contains("\"id\":9007199254740993,"),
        "{}",
        &r.text[..200]
    );
    for (id, _) in sim.snapshot() {
        assert!(r.text.contains(&format!("\"id\":{id},")), "{id} missing");
    }
    let page = r.json();
    assert_eq!(page["data"][1]["id"].as_i64(), Some(9_007_199_254_740_994));
    sim.shutdown().await;
}

#[tokio::test]
async fn same_second_puts_n_items_into_one_second() {
    let sim = sim_with(300, |a| a.same_second = 150).await;
    let mut per_second: BTreeMap<String, usize> = BTreeMap::new();
    for (_, t) in sim.snapshot() {
        *per_second.entry(t).or_default() += 1;
    }
    let (second, n) = per_second
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(s, n)| (s.clone(), *n))
        .unwrap();
    assert!(n >= 150, "largest second holds {n}");

    // More items in that second than one client page: the EQ query pages.
    let tql: String =
        url::form_urlencoded::byte_serialize(format!("lastModified EQ \"{second}\"").as_bytes())
            .collect();
    let r = get(
        &sim,
        &format!("/api/v3/indicators?resultLimit=100&count=true&tql={tql}"),
    )
    .await
    .json();
    assert_eq!(r["count"].as_u64(), Some(n as u64));
    assert!(r["next"].is_string());
    sim.shutdown().await;
}

#[tokio::test]
async fn mutate_per_page_changes_the_snapshot_after_a_page() {
    let sim = sim_with(100, |a| a.faults.mutate_per_page = 5).await;
    let before = sim.snapshot();
    let page = get(
        &sim,
        "/api/v3/indicators?resultLimit=20&sorting=lastModified+asc",
    )
    .await
    .json();
    let served: BTreeSet<i64> = ids(&page).into_iter().collect();
    let after = sim.snapshot();
    let changed: Vec<(i64, String)> = after
        .iter()
        .zip(&before)
        .filter(|(a, b)| a != b)
        .map(|(a, _)| a.clone())
        .collect();
    assert_eq!(changed.len(), 5);
    let newest_before = before.iter().map(|(_, t)| t).max().unwrap();
    for (id, t) in &changed {
        assert!(served.contains(id), "{id} was not served yet");
        assert!(t > newest_before, "mutated item did not move forward");
    }
    assert_eq!(sim.stats().mutations, 5);

    sim.set_mutate_per_page(0);
    let frozen = sim.snapshot();
    get(&sim, "/api/v3/indicators?resultLimit=20").await;
    assert_eq!(sim.snapshot(), frozen);
    sim.shutdown().await;
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let sim = sim_with(5, |a| a.faults.rate_limit = Some(2)).await;
    // The wire shape of the 429. Back to back, three of these requests fall in one second's
    // window; the window itself is a unit test on the paused clock (`src/sim/faults.rs`).
    let mut limited = None;
    for _ in 0..10 {
        let r = get(&sim, "/api/v3/indicators?resultLimit=1").await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, StatusCode::OK);
    }
    let r = limited.expect("a 429");
    assert_eq!(r.retry_after.as_deref(), Some("1"));
    assert!(!r.message().is_empty());
    assert!(sim.stats().rate_limited >= 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn error_rate_one_answers_5xx() {
    let sim = sim_with(5, |a| a.faults.error_rate = 1.0).await;
    for _ in 0..5 {
        let r = get(&sim, "/api/v3/indicators").await;
        assert!([500, 502, 503].contains(&r.status.as_u16()), "{}", r.status);
        assert!(!r.message().is_empty());
    }
    assert_eq!(sim.stats().errors_injected, 5);
    assert_eq!(sim.stats().pages_served, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn every_type_appears_in_the_default_data() {
    let sim = sim(SimArgs::default()).await;
    let page = get(&sim, "/api/v3/indicators?resultLimit=10000")
        .await
        .json();
    let data = page["data"].as_array().unwrap();
    assert_eq!(data.len(), 1000);
    let types: BTreeSet<&str> = data.iter().map(|o| o["type"].as_str().unwrap()).collect();
    let want: BTreeSet<&str> = [
        "Address",
        "EmailAddress",
        "File",
        "Host",
        "URL",
        "ASN",
        "CIDR",
        "Email Subject",
        "Hashtag",
        "Mutex",
        "Registry Key",
        "User Agent",
    ]
    .into_iter()
    .collect();
    assert_eq!(types, want);
    // Type-specific value fields are there.
    for (ty, field) in [
        ("Address", "ip"),
        ("EmailAddress", "address"),
        ("File", "md5"),
        ("Host", "hostName"),
        ("URL", "text"),
        ("ASN", "AS Number"),
        ("CIDR", "Block"),
        ("Email Subject", "Subject"),
        ("Hashtag", "Hashtag"),
        ("Mutex", "Mutex"),
        ("Registry Key", "Key Name"),
        ("User Agent", "User Agent String"),
    ] {
        assert!(
            data.iter()
                .filter(|o| o["type"] == ty)
                .all(|o| o[field].is_string()),
            "{ty} without {field}"
        );
    }
    assert!(
        data.iter()
            .any(|o| o["type"] == "Address" && o["ip"].as_str().unwrap().contains(':'))
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn other_paths_are_404_and_bad_args_are_rejected() {
    let sim = sim(small(5)).await;
    let r = get(&sim, "/api/v3/groups").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(!r.message().is_empty());
    sim.shutdown().await;

    let err = threatconnect::start(SimArgs {
        faults: FaultArgs {
            error_rate: 2.0,
            ..FaultArgs::default()
        },
        ..SimArgs::default()
    })
    .await
    .err()
    .expect("rejected");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("--error-rate"));
}
