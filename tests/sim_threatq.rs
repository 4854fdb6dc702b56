//! Drives the ThreatQ simulator over loopback with a real HTTP client and checks that it behaves
//! like `shared/spec/threatq-api.md` says: the OAuth2 client-credentials exchange, bearer-token
//! checks, `cursorMark` paging (also while indicators change), parameter validation, the data
//! coverage the ECS mapping needs, and the injected faults.

use std::collections::{BTreeMap, BTreeSet};
use ti_sidecar::sim::faults::FaultArgs;

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::Value;
use ti_sidecar::sim::threatq::{self, SimArgs, SimHandle};

const CLIENT_ID: &str = "ti-sidecar-sim";
const SECRET: &str = "ti-sidecar-sim-secret";
const FIELDS: &str = "*,sources,attributes,attributes.name,attributes.value";

struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).expect("JSON body")
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

async fn reply(resp: reqwest::Response) -> Reply {
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    Reply {
        status,
        headers,
        text,
    }
}

async fn sim(args: SimArgs) -> SimHandle {
    threatq::start(args).await.expect("simulator starts")
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

fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

/// The exchange exactly as the integration does it: form body, HTTP Basic client auth.
async fn token_request(sim: &SimHandle, id: &str, secret: &str) -> Reply {
    let resp = reqwest::Client::new()
        .post(sim.token_url())
        .header("Authorization", basic(id, secret))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .expect("token request");
    reply(resp).await
}

async fn token(sim: &SimHandle) -> String {
    let r = token_request(sim, CLIENT_ID, SECRET).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// GET the collection with `Authorization: <authz>` and the given query parameters.
async fn query_with(
    sim: &SimHandle,
    collection: &str,
    authz: Option<&str>,
    params: &[(&str, &str)],
) -> Reply {
    let mut req = reqwest::Client::new()
        .get(format!(
            "{}/api/indicators/query/hash/{collection}",
            sim.base_url()
        ))
        .header("Accept", "application/json")
        .query(params);
    if let Some(a) = authz {
        req = req.header("Authorization", a);
    }
    reply(req.send().await.expect("query")).await
}

async fn page(sim: &SimHandle, token: &str, params: &[(&str, &str)]) -> Reply {
    query_with(
        sim,
        "sim-collection",
        Some(&format!("Bearer {token}")),
        params,
    )
    .await
}

/// `data` as a list; the end-of-data `{}` is an empty list.
fn items(body: &Value) -> Vec<Value> {
    match &body["data"] {
        Value::Array(a) => a.clone(),
        Value::Object(o) if o.is_empty() => Vec::new(),
        other => panic!("unexpected data: {other}"),
    }
}

/// Pages from `start` until `data` is empty; returns every item in order, and the final mark.
async fn drain(sim: &SimHandle, token: &str, start: &str, limit: usize) -> (Vec<Value>, String) {
    let (all, mark, ended) = pages(sim, token, start, limit, 10_000).await;
    assert!(ended, "paging did not end");
    (all, mark)
}

/// Follows `nextCursorMark` from `start` for at most `max_pages` pages or until `data` is empty
/// (then checks the end-of-data contract). Returns the items, the last mark and whether it ended.
async fn pages(
    sim: &SimHandle,
    token: &str,
    start: &str,
    limit: usize,
    max_pages: usize,
) -> (Vec<Value>, String, bool) {
    let limit = limit.to_string();
    let mut mark = start.to_owned();
    let mut all = Vec::new();
    for _ in 0..max_pages {
        let r = page(
            sim,
            token,
            &[
                ("sort", "updated_at"),
                ("limit", &limit),
                ("cursorMark", &mark),
                ("fields", FIELDS),
            ],
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let body = r.json();
        let got = items(&body);
        let next = body["nextCursorMark"].as_str().expect("mark").to_owned();
        if got.is_empty() {
            assert_eq!(
                body["data"],
                serde_json::json!({}),
                "end is an empty object"
            );
            assert_eq!(next, mark, "the mark sent is echoed at the end");
            return (all, next, true);
        }
        all.extend(got);
        mark = next;
    }
    (all, mark, false)
}

fn id(o: &Value) -> i64 {
    o["id"].as_i64().expect("integer id")
}

#[tokio::test]
async fn token_with_basic_auth_works() {
    let sim = sim(small(5)).await;
    let r = token_request(&sim, CLIENT_ID, SECRET).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let v = r.json();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3600);
    assert!(!v["access_token"].as_str().unwrap().is_empty());
    assert!(!v["refresh_token"].as_str().unwrap().is_empty());
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    assert!(r.text.starts_with("{\"access_token\":"), "{}", r.text);
    let t = v["access_token"].as_str().unwrap();
    let p = page(&sim, t, &[("cursorMark", "*")]).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.text);
    assert_eq!(sim.stats().tokens_issued, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn token_with_body_credentials_and_query_grant_type_works() {
    let sim = sim_with(5, |a| a.token_ttl = 60).await;
    let resp = reqwest::Client::new()
        .post(sim.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
        ])
        .send()
        .await
        .unwrap();
    let r = reply(resp).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json()["expires_in"], 60);

    // The Tines-guide variant: grant_type in the query string, Basic auth, no body.
    let resp = reqwest::Client::new()
        .post(format!("{}?grant_type=client_credentials", sim.token_url()))
        .header("Authorization", basic(CLIENT_ID, SECRET))
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(reply(resp).await.status, StatusCode::OK);
    assert_eq!(sim.stats().tokens_issued, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn wrong_secret_is_401_invalid_client() {
    let sim = sim(small(5)).await;
    let r = token_request(&sim, CLIENT_ID, "not-the-secret").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let v = r.json();
    assert_eq!(v["error"], "invalid_client");
    assert_eq!(v["error_description"], "Client authentication failed");
    assert!(!r.text.contains(SECRET));
    let r = token_request(&sim, "someone-else", SECRET).await;
    assert_eq!(r.json()["error"], "invalid_client");
    // Body credentials, wrong secret.
    let resp = reqwest::Client::new()
        .post(sim.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", "nope"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(reply(resp).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(sim.stats().auth_rejected, 3);
    assert_eq!(sim.stats().tokens_issued, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn other_grant_types_are_400() {
    let sim = sim(small(5)).await;
    let resp = reqwest::Client::new()
        .post(sim.token_url())
        .header("Authorization", basic(CLIENT_ID, SECRET))
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();
    let r = reply(resp).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "unsupported_grant_type");
    sim.shutdown().await;
}

#[tokio::test]
async fn api_without_token_lowercase_bearer_or_revoked_token_is_401() {
    let sim = sim(small(5)).await;
    let t = token(&sim).await;
    let params = [("sort", "updated_at"), ("cursorMark", "*")];

    let r = query_with(&sim, "sim-collection", None, &params).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    let r = query_with(
        &sim,
        "sim-collection",
        Some(&format!("bearer {t}")),
        &params,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    let r = query_with(&sim, "sim-collection", Some("Bearer made-up"), &params).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));

    assert_eq!(page(&sim, &t, &params).await.status, StatusCode::OK);
    // Token "expiry" mid-run: revoke, get 401, re-authenticate, continue.
    sim.revoke_tokens();
    let r = page(&sim, &t, &params).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(!r.text.contains(&t), "the token is never echoed");
    let fresh = token(&sim).await;
    assert_ne!(fresh, t);
    assert_eq!(page(&sim, &fresh, &params).await.status, StatusCode::OK);
    assert_eq!(sim.stats().token_rejected, 4);
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_collection_is_404_and_accept_is_required() {
    let sim = sim(small(5)).await;
    let t = token(&sim).await;
    let r = query_with(
        &sim,
        "someid",
        Some(&format!("Bearer {t}")),
        &[("cursorMark", "*")],
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.json()["errors"][0].as_str().unwrap().contains("someid"));
    // Authentication comes first: no token, unknown collection → 401.
    let r = query_with(&sim, "someid", None, &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/api/indicators/query/hash/sim-collection",
            sim.base_url()
        ))
        .header("Authorization", format!("Bearer {t}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_ACCEPTABLE);
    sim.shutdown().await;
}

#[tokio::test]
async fn paging_from_star_yields_every_indicator_once_and_ends_with_empty_object() {
    let sim = sim_with(250, |a| a.id_base = 1000).await;
    let t = token(&sim).await;
    let first = page(
        &sim,
        &t,
        &[
            ("sort", "updated_at"),
            ("limit", "100"),
            ("cursorMark", "*"),
        ],
    )
    .await
    .json();
    assert_eq!(first["total"], 250);
    assert_eq!(first["limit"], 100);
    assert_eq!(items(&first).len(), 100);

    let (all, end_mark) = drain(&sim, &t, "*", 30).await;
    let ids: Vec<i64> = all.iter().map(id).collect();
    let unique: BTreeSet<i64> = ids.iter().copied().collect();
    assert_eq!(ids.len(), 250);
    assert_eq!(unique, (1000..1250).collect::<BTreeSet<i64>>());
    // Ascending by updated_at ("YYYY-MM-DD HH:MM:SS" sorts as text), ties by id.
    let keys: Vec<(String, i64)> = all
        .iter()
        .map(|o| (o["updated_at"].as_str().unwrap().to_owned(), id(o)))
        .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]));
    // The end mark is stable: asking again from it gives `{}` and the same mark.
    let (more, again) = drain(&sim, &t, &end_mark, 30).await;
    assert!(more.is_empty());
    assert_eq!(again, end_mark);
    sim.shutdown().await;
}

#[tokio::test]
async fn limit_above_1000_and_malformed_cursor_mark_and_bad_sort_are_400() {
    let sim = sim(small(5)).await;
    let t = token(&sim).await;
    let r = page(&sim, &t, &[("limit", "1001"), ("cursorMark", "*")]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text.contains("1001"), "{}", r.text);
    assert_eq!(
        page(&sim, &t, &[("limit", "1000")]).await.status,
        StatusCode::OK
    );
    for bad in ["not base64!", "AoJ9z5LKnvwCJjEwNjk2Nw==", "bm9waXBl"] {
        let r = page(&sim, &t, &[("cursorMark", bad)]).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
        assert!(r.json()["errors"].is_array());
    }
    let r = page(&sim, &t, &[("sort", "created_at")]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    sim.shutdown().await;
}

#[tokio::test]
async fn mutations_after_a_page_reappear_after_the_mark() {
    let sim = sim_with(300, |a| a.faults.mutate_per_page = 4).await;
    let t = token(&sim).await;
    // While indicators keep changing, every page feeds the queue after the mark, so read
    // 20 pages (500 items: everything once, plus changed ones again), then stop the changes
    // and catch up to the end.
    let (mut all, mark, ended) = pages(&sim, &t, "*", 25, 20).await;
    assert!(!ended);
    let during = sim.stats().mutations;
    assert_eq!(during, 80);
    sim.set_mutate_per_page(0);
    let (rest, end_mark) = drain(&sim, &t, &mark, 25).await;
    all.extend(rest);
    // Everything at least once, and the changed ones again.
    let mut last: BTreeMap<i64, String> = BTreeMap::new();
    for o in &all {
        last.insert(id(o), o["updated_at"].as_str().unwrap().to_owned());
    }
    assert_eq!(last.len(), 300);
    assert!(all.len() > 300, "changed indicators were served again");
    // Every final version was reached: what the client saw last is what the store holds.
    let snapshot: BTreeMap<i64, String> = sim.snapshot().into_iter().collect();
    assert_eq!(last, snapshot);
    // Nothing changed since, so a catch-up run from the end mark is empty.
    let (more, _) = drain(&sim, &t, &end_mark, 25).await;
    assert!(more.is_empty());
    // Later changes are picked up from the persisted mark (incremental polling).
    sim.set_mutate_per_page(2);
    let r = page(&sim, &t, &[("cursorMark", "*"), ("limit", "5")]).await;
    assert_eq!(r.status, StatusCode::OK);
    sim.set_mutate_per_page(0);
    let (changed, _) = drain(&sim, &t, &end_mark, 25).await;
    assert_eq!(changed.len(), 2);
    let snapshot: BTreeMap<i64, String> = sim.snapshot().into_iter().collect();
    for o in &changed {
        assert_eq!(
            snapshot[&id(o)],
            o["updated_at"].as_str().unwrap(),
            "final version"
        );
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn every_type_status_and_expiry_case_is_in_the_default_data() {
    let sim = sim(SimArgs::default()).await;
    let t = token(&sim).await;
    let (all, _) = drain(&sim, &t, "*", 1000).await;
    assert_eq!(all.len(), 1000);
    let types: BTreeSet<&str> = all
        .iter()
        .map(|o| o["type"]["name"].as_str().unwrap())
        .collect();
    for want in [
        "IP Address",
        "IPv6 Address",
        "CIDR Block",
        "FQDN",
        "URL",
        "URL Path",
        "Email Address",
        "Email Subject",
        "Filename",
        "File Path",
        "MD5",
        "SHA-1",
        "SHA-256",
        "SHA-384",
        "SHA-512",
        "ASN",
        "x509 Serial",
        "x509 Subject",
        "Mutex",
        "Registry Key",
        "User-agent",
        "Bitcoin Address",
    ] {
        assert!(types.contains(want), "missing type {want}");
    }
    let statuses: BTreeSet<&str> = all
        .iter()
        .map(|o| o["status"]["name"].as_str().unwrap())
        .collect();
    for want in ["Active", "Expired", "Indirect", "Review", "Whitelisted"] {
        assert!(statuses.contains(want), "missing status {want}");
    }
    let now = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string();
    let has = |f: &dyn Fn(&Value) -> bool| all.iter().any(f);
    let s = |o: &Value, k: &str| o[k].as_str().map(str::to_owned);
    assert!(has(
        &|o| s(o, "expires_at").is_some() && s(o, "expired_at").is_none()
    ));
    assert!(has(
        &|o| s(o, "expired_at").is_some() && s(o, "expires_at").is_none()
    ));
    assert!(has(
        &|o| s(o, "expired_at").is_some() && s(o, "expires_at").is_some()
    ));
    assert!(has(
        &|o| s(o, "expired_at").is_none() && s(o, "expires_at").is_none()
    ));
    assert!(has(&|o| s(o, "expires_at").is_some_and(|e| e < now)));
    assert!(has(&|o| s(o, "expires_at").is_some_and(|e| e > now)));
    assert!(has(&|o| {
        o["status"]["name"] == "Expired"
            && s(o, "expires_at").is_none()
            && s(o, "expired_at").is_none()
    }));
    // Realistic shape.
    let six_days_ago = (chrono::Utc::now() - chrono::Duration::days(6))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    for o in &all {
        for k in ["id", "type_id", "status_id", "score"] {
            assert!(o[k].is_i64(), "{k} in {o}");
        }
        for k in ["hash", "value", "class", "created_at", "updated_at"] {
            assert!(o[k].is_string(), "{k} in {o}");
        }
        assert_eq!(o["updated_at"].as_str().unwrap().len(), 19);
        assert!(o["updated_at"].as_str().unwrap() >= six_days_ago.as_str());
        assert!(o["adversaries"].is_array());
        assert!(!o["sources"].as_array().unwrap().is_empty());
        for a in o["attributes"].as_array().unwrap() {
            let keys: BTreeSet<&str> = a.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(keys, BTreeSet::from(["name", "value"]));
        }
    }
    let sources: Vec<&Value> = all
        .iter()
        .flat_map(|o| o["sources"].as_array().unwrap())
        .collect();
    assert!(sources.iter().any(|s| s["tlp_name"].is_string()));
    assert!(sources.iter().any(|s| s["tlp_name"].is_null()));
    assert!(sources.iter().any(|s| s["provider"].is_string()));
    assert!(has(&|o| o["related_indicator_count"].is_i64()));
    sim.shutdown().await;
}

#[tokio::test]
async fn fields_without_sources_omit_them() {
    let sim = sim(small(30)).await;
    let t = token(&sim).await;
    let body = page(&sim, &t, &[("cursorMark", "*"), ("fields", "*")])
        .await
        .json();
    for o in items(&body) {
        assert!(o.get("sources").is_none() && o.get("attributes").is_none());
        assert!(o["value"].is_string());
    }
    // No `fields` at all is the same default set.
    let body = page(&sim, &t, &[("cursorMark", "*")]).await.json();
    assert!(items(&body).iter().all(|o| o.get("sources").is_none()));
    // Full attribute objects when `attributes` is asked for without sub-fields.
    let body = page(&sim, &t, &[("cursorMark", "*"), ("fields", "*,attributes")])
        .await
        .json();
    let list = items(&body);
    assert!(list.iter().all(|o| o.get("sources").is_none()));
    assert!(
        list.iter()
            .flat_map(|o| o["attributes"].as_array().unwrap())
            .all(|a| a["attribute_id"].is_i64())
    );
    // The envelope keeps the real key order.
    let raw = page(&sim, &t, &[("cursorMark", "*"), ("limit", "1")])
        .await
        .text;
    assert!(raw.starts_with("{\"total\":30,\"data\":["), "{raw}");
    sim.shutdown().await;
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let sim = sim_with(5, |a| a.faults.rate_limit = Some(2)).await;
    let mut limited = None;
    for _ in 0..20 {
        let r = token_request(&sim, CLIENT_ID, SECRET).await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, StatusCode::OK);
    }
    let r = limited.expect("a 429");
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert!(sim.stats().rate_limited >= 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn error_rate_one_answers_5xx_on_api_and_token_endpoint() {
    let sim = sim_with(5, |a| a.faults.error_rate = 1.0).await;
    for _ in 0..3 {
        let r = token_request(&sim, CLIENT_ID, SECRET).await;
        assert!([500, 502, 503].contains(&r.status.as_u16()), "{}", r.status);
        let r = page(&sim, "whatever", &[("cursorMark", "*")]).await;
        assert!([500, 502, 503].contains(&r.status.as_u16()), "{}", r.status);
        assert!(r.json()["errors"].is_array());
    }
    let st = sim.stats();
    assert_eq!(
        (st.errors_injected, st.pages_served, st.tokens_issued),
        (6, 0, 0)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn bad_args_are_rejected_naming_the_flag() {
    let err = threatq::start(SimArgs {
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

#[tokio::test]
async fn a_mark_is_accepted_by_a_restarted_simulator() {
    // Resume after kill -9: the persisted mark goes to a fresh process with the same seed.
    let first = sim(small(40)).await;
    let t = token(&first).await;
    let (_, end_mark) = drain(&first, &t, "*", 15).await;
    first.shutdown().await;
    let second = sim(small(40)).await;
    let t = token(&second).await;
    let r = page(&second, &t, &[("cursorMark", &end_mark)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    second.shutdown().await;
}
