//! Deterministic indicator data for the ThreatConnect simulator (API spec §6).
//!
//! Every built-in indicator type is generated from one seed, with realistic base fields. The
//! optional blocks (`tags`, `securityLabels`, `attributes`, `associatedGroups`, …) are rendered on
//! demand from a per-indicator seed, so they stay stable across mutations and cost no memory
//! until a client asks for them with `fields`.
//!
//! With `--rich-context` ([`Indicator::with_rich_context`]) the same blocks are drawn larger:
//! dozens of attributes with analyst-length text, several groups with their own attributes,
//! more associated indicators and tags, so that an indicator with every block is tens of KB, as
//! in a mature ThreatConnect instance.

use std::ops::RangeInclusive;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::sim::values::{
    Blocks, MALWARE, WORDS, analysis, cidr, domain, email_address, hex, ipv4, ipv6, mix, mutex,
    observed_in, php_url, run_key, user_agent,
};
use serde_json::{Map, Value, json};

/// The built-in indicator types, with the `type` text the API returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndicatorType {
    /// `Address` (IPv4 or IPv6).
    Address,
    /// `EmailAddress`.
    EmailAddress,
    /// `File` (hashes and size).
    File,
    /// `Host`.
    Host,
    /// `URL`.
    Url,
    /// `ASN`.
    Asn,
    /// `CIDR`.
    Cidr,
    /// `Email Subject`.
    EmailSubject,
    /// `Hashtag`.
    Hashtag,
    /// `Mutex`.
    Mutex,
    /// `Registry Key`.
    RegistryKey,
    /// `User Agent`.
    UserAgent,
}

impl IndicatorType {
    /// Every built-in type, in the order the API documentation lists them.
    pub(crate) const ALL: [IndicatorType; 12] = [
        Self::Address,
        Self::EmailAddress,
        Self::File,
        Self::Host,
        Self::Url,
        Self::Asn,
        Self::Cidr,
        Self::EmailSubject,
        Self::Hashtag,
        Self::Mutex,
        Self::RegistryKey,
        Self::UserAgent,
    ];

    /// The `type` / `typeName` text.
    pub fn name(self) -> &'static str {
        match self {
            Self::Address => "Address",
            Self::EmailAddress => "EmailAddress",
            Self::File => "File",
            Self::Host => "Host",
            Self::Url => "URL",
            Self::Asn => "ASN",
            Self::Cidr => "CIDR",
            Self::EmailSubject => "Email Subject",
            Self::Hashtag => "Hashtag",
            Self::Mutex => "Mutex",
            Self::RegistryKey => "Registry Key",
            Self::UserAgent => "User Agent",
        }
    }

    /// Relative frequency in generated data (addresses, hosts, URLs and files dominate real feeds).
    fn weight(self) -> u32 {
        match self {
            Self::Address | Self::Host | Self::Url => 20,
            Self::File => 15,
            Self::EmailAddress => 8,
            _ => 2,
        }
    }
}

/// One indicator as the simulator stores it: base fields plus a seed for the optional blocks.
#[derive(Debug, Clone)]
pub struct Indicator {
    /// The indicator id (`id_base + index`).
    pub id: i64,
    /// The indicator type.
    pub kind: IndicatorType,
    /// The `summary` text.
    pub summary: String,
    /// Type-specific value fields (`ip`, `hostName`, `AS Number`, …).
    pub values: Vec<(&'static str, Value)>,
    /// Index into [`OWNERS`].
    pub owner: usize,
    /// `dateAdded`.
    pub date_added: DateTime<Utc>,
    /// `lastModified`, second precision.
    pub last_modified: DateTime<Utc>,
    /// `rating` (0–5), absent for unrated indicators.
    pub rating: Option<f64>,
    /// `confidence` (0–100), absent when unset.
    pub confidence: Option<u8>,
    /// `description`, sometimes present.
    pub description: Option<String>,
    /// `source`, sometimes present.
    pub source: Option<String>,
    /// `privateFlag`.
    pub private_flag: bool,
    /// `activeLocked`.
    pub active_locked: bool,
    /// How often the simulator has modified this indicator.
    pub version: u32,
    /// `legacyLink` page and query, without base and owner.
    legacy_path: String,
    /// Seed and size of the optional blocks.
    blocks: Blocks,
}

/// Owners (organisation, community, source) that indicators belong to: `(ownerId, ownerName)`.
pub(crate) const OWNERS: [(i64, &str); 4] = [
    (51, "Example Org"),
    (12, "Common Community"),
    (33, "Technical Blogs and Reports"),
    (67, "Partner Feed"),
];

const SOURCES: [&str; 4] = [
    "OSINT feed",
    "abuse.ch",
    "Internal SOC",
    "https://example.org/reports/2024-17",
];

/// `YYYY-MM-DDTHH:MM:SSZ`, the only timestamp format the API returns.
pub(crate) fn format_ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn pct(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Type-specific values: `(summary, value fields, legacyLink path and query without owner)`.
fn values_for(
    kind: IndicatorType,
    id: i64,
    rng: &mut ChaCha8Rng,
) -> (String, Vec<(&'static str, Value)>, String) {
    let custom = format!("customIndicator.xhtml?id={id}");
    match kind {
        IndicatorType::Address => {
            let ip = if rng.random_bool(0.2) {
                ipv6(rng)
            } else {
                ipv4(rng)
            };
            let link = format!("address.xhtml?address={}", pct(&ip));
            (ip.clone(), vec![("ip", json!(ip))], link)
        }
        IndicatorType::EmailAddress => {
            let addr = email_address(rng);
            let link = format!("emailaddress.xhtml?emailaddress={}", pct(&addr));
            (addr.clone(), vec![("address", json!(addr))], link)
        }
        IndicatorType::File => {
            let upper = rng.random_bool(0.5);
            let md5 = hex(rng, 16, upper);
            let sha1 = rng.random_bool(0.8).then(|| hex(rng, 20, upper));
            let sha256 = rng.random_bool(0.9).then(|| hex(rng, 32, upper));
            let mut parts = vec![md5.clone()];
            let mut values = vec![("md5", json!(md5))];
            if let Some(s) = &sha1 {
                parts.push(s.clone());
                values.push(("sha1", json!(s)));
            }
            if let Some(s) = &sha256 {
                parts.push(s.clone());
                values.push(("sha256", json!(s)));
            }
            values.push(("size", json!(rng.random_range(512..20_000_000u64))));
            (parts.join(" : "), values, format!("file.xhtml?file={md5}"))
        }
        IndicatorType::Host => {
            let host = domain(rng);
            let values = vec![
                ("hostName", json!(host)),
                ("dnsActive", json!(rng.random_bool(0.5))),
                ("whoisActive", json!(rng.random_bool(0.5))),
            ];
            let link = format!("host.xhtml?host={}", pct(&host));
            (host, values, link)
        }
        IndicatorType::Url => {
            let word = WORDS.choose(rng).copied().unwrap_or("login");
            let text = php_url(rng, word);
            (
                text.clone(),
                vec![("text", json!(text))],
                format!("url.xhtml?orgid={id}"),
            )
        }
        IndicatorType::Asn => {
            let asn = format!("ASN{}", rng.random_range(1000..400_000));
            (asn.clone(), vec![("AS Number", json!(asn))], custom)
        }
        IndicatorType::Cidr => {
            let block = cidr(rng);
            (block.clone(), vec![("Block", json!(block))], custom)
        }
        IndicatorType::EmailSubject => {
            let subject = [
                "Invoice overdue",
                "Your parcel could not be delivered",
                "Password expires today",
                "Urgent: wire transfer",
                "Shared document",
            ]
            .choose(rng)
            .copied()
            .unwrap_or("Invoice overdue");
            let s = format!("{subject} #{}", rng.random_range(1000..99_999));
            (s.clone(), vec![("Subject", json!(s))], custom)
        }
        IndicatorType::Hashtag => {
            let m = MALWARE.choose(rng).copied().unwrap_or("Emotet");
            let tag = format!("#{}", m.replace(' ', "").to_lowercase());
            (tag.clone(), vec![("Hashtag", json!(tag))], custom)
        }
        IndicatorType::Mutex => {
            let m = mutex(rng);
            (m.clone(), vec![("Mutex", json!(m))], custom)
        }
        IndicatorType::RegistryKey => {
            let key = run_key(rng);
            let value_name = format!("{}{}", "svc", rng.random_range(1..50));
            let value_type = ["REG_SZ", "REG_QWORD", "REG_DWORD", "REG_BINARY"]
                .choose(rng)
                .copied()
                .unwrap_or("REG_SZ");
            let summary = format!("{key} : {value_name} : {value_type}");
            let values = vec![
                ("Key Name", json!(key)),
                ("Value Name", json!(value_name)),
                ("Value Type", json!(value_type)),
            ];
            (summary, values, custom)
        }
        IndicatorType::UserAgent => {
            let ua = user_agent(rng);
            (ua.clone(), vec![("User Agent String", json!(ua))], custom)
        }
    }
}

/// Generates `n` indicators with ids `id_base..id_base+n`, `lastModified` spread over the six
/// days before `now`, and `same_second` of them sharing one single second.
pub fn generate(
    n: usize,
    seed: u64,
    id_base: i64,
    same_second: usize,
    now: DateTime<Utc>,
) -> Vec<Indicator> {
    let now = now.trunc_subsecs(0);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let total_weight: u32 = IndicatorType::ALL.iter().map(|t| t.weight()).sum();
    // The first twelve indicators cover every type (in a seeded order), so any data set of
    // twelve or more has all of them.
    let mut first: Vec<IndicatorType> = IndicatorType::ALL.to_vec();
    rand::seq::SliceRandom::shuffle(first.as_mut_slice(), &mut rng);
    let crowded_second = now - Duration::seconds(rng.random_range(3600..5 * 86_400));
    let crowded: std::collections::HashSet<usize> =
        rand::seq::index::sample(&mut rng, n, same_second.min(n))
            .into_iter()
            .collect();

    let mut out: Vec<Indicator> = Vec::with_capacity(n);
    for i in 0..n {
        let id = id_base + i as i64;
        let kind = match first.get(i) {
            Some(k) => *k,
            None => {
                let mut pick = rng.random_range(0..total_weight);
                let mut chosen = IndicatorType::Address;
                for t in IndicatorType::ALL {
                    if pick < t.weight() {
                        chosen = t;
                        break;
                    }
                    pick -= t.weight();
                }
                chosen
            }
        };
        let mut vrng = ChaCha8Rng::seed_from_u64(mix(seed, 1, i as u64));
        let (summary, values, legacy_path) = values_for(kind, id, &mut vrng);
        // Real feeds import in bursts: now and then an indicator shares a second with an earlier one.
        let last_modified = if crowded.contains(&i) {
            crowded_second
        } else if i > 0 && rng.random_bool(0.1) {
            let j = rng.random_range(0..i);
            out[j].last_modified
        } else {
            now - Duration::seconds(rng.random_range(1..6 * 86_400))
        };
        let date_added = last_modified - Duration::seconds(rng.random_range(0..180 * 86_400));
        let rating = rng
            .random_bool(0.8)
            .then(|| f64::from(rng.random_range(1..=10u8)) / 2.0);
        let confidence = rng.random_bool(0.8).then(|| rng.random_range(0..=100u8));
        let description = rng.random_bool(0.3).then(|| observed_in(&mut rng));
        let source = rng.random_bool(0.3).then(|| {
            SOURCES
                .choose(&mut rng)
                .copied()
                .unwrap_or("OSINT")
                .to_owned()
        });
        out.push(Indicator {
            id,
            kind,
            summary,
            values,
            owner: rng.random_range(0..OWNERS.len()),
            date_added,
            last_modified,
            rating,
            confidence,
            description,
            source,
            private_flag: rng.random_bool(0.1),
            active_locked: rng.random_bool(0.05),
            version: 0,
            legacy_path,
            blocks: Blocks::of(seed, i),
        });
    }
    out
}

impl Indicator {
    /// The same indicator, with realistic-size (`rich`) or default-size optional blocks (`--rich-context`); its base
    /// fields are unchanged.
    pub fn with_rich_context(mut self, rich: bool) -> Self {
        self.blocks.rich = rich;
        self
    }

    /// How many associated indicators to draw.
    pub(crate) fn associated_indicator_range(&self) -> RangeInclusive<usize> {
        self.blocks.sized(0..=3, 4..=15)
    }

    /// Modifies the indicator as an analyst would: a new rating, confidence and description,
    /// with `lastModified` set to `now` (second precision).
    pub(crate) fn mutate(&mut self, now: DateTime<Utc>, rng: &mut ChaCha8Rng) {
        self.version += 1;
        self.last_modified = now.trunc_subsecs(0);
        self.rating = Some(f64::from(rng.random_range(1..=10u8)) / 2.0);
        self.confidence = Some(rng.random_range(0..=100u8));
        self.description = Some(format!(
            "Re-assessed by the simulator (revision {})",
            self.version
        ));
    }

    /// The `lastModified` text exactly as served.
    pub(crate) fn last_modified_text(&self) -> String {
        format_ts(self.last_modified)
    }

    fn legacy_link(&self, base: &str) -> String {
        format!(
            "{base}/auth/indicators/details/{}&owner={}",
            self.legacy_path,
            pct(OWNERS[self.owner % OWNERS.len()].1)
        )
    }

    /// The base object: always-present fields, type values and the optional scalar fields.
    pub fn base_json(&self, base: &str) -> Map<String, Value> {
        let (owner_id, owner_name) = OWNERS[self.owner % OWNERS.len()];
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("ownerId".into(), json!(owner_id));
        m.insert("ownerName".into(), json!(owner_name));
        m.insert("dateAdded".into(), json!(format_ts(self.date_added)));
        m.insert(
            "webLink".into(),
            json!(format!("{base}/#/details/indicators/{}/overview", self.id)),
        );
        m.insert("type".into(), json!(self.kind.name()));
        m.insert("lastModified".into(), json!(self.last_modified_text()));
        if let Some(r) = self.rating {
            m.insert("rating".into(), json!(r));
        }
        if let Some(c) = self.confidence {
            m.insert("confidence".into(), json!(c));
        }
        if let Some(d) = &self.description {
            m.insert("description".into(), json!(d));
        }
        if let Some(s) = &self.source {
            m.insert("source".into(), json!(s));
        }
        m.insert("summary".into(), json!(self.summary));
        m.insert("privateFlag".into(), json!(self.private_flag));
        m.insert("active".into(), json!(true));
        m.insert("activeLocked".into(), json!(self.active_locked));
        for (k, v) in &self.values {
            m.insert((*k).into(), v.clone());
        }
        m.insert("legacyLink".into(), json!(self.legacy_link(base)));
        m
    }

    /// A fresh RNG for optional block `block`, independent of mutations.
    pub(crate) fn block_rng(&self, block: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(mix(self.blocks.seed, 3, block))
    }
}

/// `{"data":[…]}`, or `{}` when empty (what the API returns for an empty requested block).
pub fn collection(items: Vec<Value>) -> Value {
    if items.is_empty() {
        json!({})
    } else {
        json!({ "data": items })
    }
}

fn users() -> [Value; 3] {
    [
        json!({"id": 69, "userName": "analyst@example.org", "firstName": "Ada", "lastName": "Analyst", "pseudonym": "adaA", "owner": "Example Org"}),
        json!({"id": 3, "userName": "api-feed@example.org", "firstName": "Feed", "lastName": "Bot", "pseudonym": "feedAPI", "owner": "Example Org"}),
        json!({"id": 112, "userName": "hunter@example.org", "firstName": "Hal", "lastName": "Hunter", "pseudonym": "halH", "owner": "Example Org"}),
    ]
}

/// `tags`: plain tags and MITRE ATT&CK tags (with `techniqueId`, `platforms`, `tactics`).
pub fn tags(ind: &Indicator) -> Value {
    let mut rng = ind.block_rng(1);
    let plain = [
        "Phishing",
        "Ransomware",
        "Botnet",
        "C2",
        "Scanner",
        "APT28",
        "Crimeware",
    ];
    let attack: [(&str, &str, &[&str], &[&str]); 4] = [
        (
            "Financial Theft",
            "T1657",
            &[
                "Linux",
                "macOS",
                "Windows",
                "Office 365",
                "SaaS",
                "Google Workspace",
            ],
            &["Impact"],
        ),
        (
            "Phishing: Spearphishing Link",
            "T1566.002",
            &["Linux", "macOS", "Windows", "Office 365", "SaaS"],
            &["Initial Access"],
        ),
        (
            "Command and Scripting Interpreter: PowerShell",
            "T1059.001",
            &["Windows"],
            &["Execution"],
        ),
        (
            "Process Injection: Portable Executable Injection",
            "T1055.002",
            &["Windows"],
            &["Defense Evasion", "Privilege Escalation"],
        ),
    ];
    let n = rng.random_range(ind.blocks.sized(0..=4, 4..=12));
    let mut items = Vec::new();
    for _ in 0..n {
        let last_used =
            format_ts(ind.last_modified - Duration::seconds(rng.random_range(0..86_400)));
        if rng.random_bool(0.35) {
            let (name, tid, platforms, tactics) = attack[rng.random_range(0..attack.len())];
            items.push(json!({
                "id": 463_700 + rng.random_range(0..100i64),
                "name": name,
                "description": format!("MITRE ATT&CK technique {tid}: {name}."),
                "lastUsed": last_used,
                "owner": "Common Community",
                "techniqueId": tid,
                "platforms": {"data": platforms, "count": platforms.len()},
                "tactics": {"data": tactics, "count": tactics.len()},
            }));
        } else {
            let name = plain[rng.random_range(0..plain.len())];
            items.push(json!({
                "id": 1000 + rng.random_range(0..plain.len() as i64),
                "name": name,
                "lastUsed": last_used,
            }));
        }
    }
    collection(items)
}

/// `securityLabels`: zero or one TLP label.
pub fn security_labels(ind: &Indicator) -> Value {
    let mut rng = ind.block_rng(2);
    let labels: [(i64, &str, &str, &str); 6] = [
        (1, "TLP:WHITE", "FFFFFF", "Disclosure is not limited."),
        (
            7,
            "TLP:CLEAR",
            "FFFFFF",
            "Recipients can spread this to the world; there is no limit on disclosure.",
        ),
        (
            2,
            "TLP:GREEN",
            "33FF00",
            "Limited disclosure, recipients can spread this within their community.",
        ),
        (
            3,
            "TLP:AMBER",
            "FFC000",
            "Limited disclosure, recipients can only spread this on a need-to-know basis within their organization and its clients.",
        ),
        (
            8,
            "TLP:AMBER+STRICT",
            "FFC000",
            "Limited disclosure, restricted to the recipient's organization only.",
        ),
        (
            4,
            "TLP:RED",
            "FF0033",
            "For the eyes and ears of individual recipients only, no further disclosure.",
        ),
    ];
    if rng.random_bool(0.25) {
        return collection(Vec::new());
    }
    let (id, name, color, description) = labels[rng.random_range(0..labels.len())];
    collection(vec![json!({
        "id": id,
        "name": name,
        "description": description,
        "color": color,
        "owner": "System",
        "dateAdded": "2016-08-31T00:00:00Z",
    })])
}

fn attribute_list(
    rng: &mut ChaCha8Rng,
    around: DateTime<Utc>,
    id_base: i64,
    count: RangeInclusive<usize>,
    rich: bool,
) -> Vec<Value> {
    let users = users();
    let n = rng.random_range(count);
    (0..n)
        .map(|k| {
            let added = around - Duration::seconds(rng.random_range(0..3 * 86_400));
            let (ty, value) = match rng.random_range(0..5u8) {
                0 => ("First Seen", json!(format_ts(added - Duration::days(30)))),
                1 => ("Last Seen", json!(format_ts(added))),
                2 => ("Source", json!(SOURCES[rng.random_range(0..SOURCES.len())])),
                3 if rich => (
                    "Description",
                    json!(format!(
                        "Linked to {} infrastructure. {}",
                        MALWARE[rng.random_range(0..MALWARE.len())],
                        analysis(rng)
                    )),
                ),
                3 => (
                    "Description",
                    json!(format!(
                        "Linked to {} infrastructure",
                        MALWARE[rng.random_range(0..MALWARE.len())]
                    )),
                ),
                _ if rich => ("Additional Analysis and Context", json!(analysis(rng))),
                _ => (
                    "Additional Analysis and Context",
                    json!("Seen in sandbox detonation."),
                ),
            };
            let mut a = json!({
                "id": id_base + k as i64,
                "dateAdded": format_ts(added),
                "type": ty,
                "value": value,
                "createdBy": users[rng.random_range(0..users.len())].clone(),
                "lastModified": format_ts(added),
                "pinned": rng.random_bool(0.1),
                "default": k == 0,
            });
            if rng.random_bool(0.2) {
                a["source"] = json!("Other System");
            }
            a
        })
        .collect()
}

/// `attributes`, each with `createdBy`.
pub fn attributes(ind: &Indicator) -> Value {
    let mut rng = ind.block_rng(3);
    // Room for every attribute id of one indicator before the next one's start.
    let stride = if ind.blocks.rich { 64 } else { 4 };
    let base = 71_670_000 + (ind.blocks.seed % 1_000_000) as i64 * stride;
    collection(attribute_list(
        &mut rng,
        ind.last_modified,
        base,
        ind.blocks.sized(0..=3, 10..=30),
        ind.blocks.rich,
    ))
}

/// `associatedGroups` of several group types; with `with_attributes`, each carries `attributes`.
pub fn associated_groups(ind: &Indicator, base: &str, with_attributes: bool) -> Value {
    let mut rng = ind.block_rng(4);
    let n = rng.random_range(ind.blocks.sized(0..=3, 3..=10));
    let stride = if ind.blocks.rich { 16 } else { 4 };
    let items = (0..n)
        .map(|_| {
            let gid = rng.random_range(0..40u64);
            let mut g = group(gid, base);
            if with_attributes {
                let mut grng = ChaCha8Rng::seed_from_u64(mix(gid, 5, 0));
                g["attributes"] = collection(attribute_list(
                    &mut grng,
                    group_time(gid),
                    90_000_000 + gid as i64 * stride,
                    ind.blocks.sized(0..=3, 2..=8),
                    ind.blocks.rich,
                ));
            }
            g
        })
        .collect();
    collection(items)
}

fn group_time(gid: u64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_700_000_000 + gid as i64 * 7_919, 0).unwrap_or_default()
}

/// Group `gid` of a fixed pool of forty, shared by all indicators.
fn group(gid: u64, base: &str) -> Value {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(gid, 6, 0));
    let types = [
        "Adversary",
        "Campaign",
        "Document",
        "Email",
        "Event",
        "Incident",
        "Intrusion Set",
        "Malware",
        "Report",
        "Signature",
        "Task",
        "Threat",
        "Vulnerability",
    ];
    let ty = types[(gid as usize) % types.len()];
    let id = 600_000 + gid as i64;
    let added = group_time(gid);
    let users = users();
    let malware = MALWARE[rng.random_range(0..MALWARE.len())];
    let name = match ty {
        "Vulnerability" => format!("CVE-2024-{}", 1000 + gid * 37),
        "Malware" => malware.to_owned(),
        _ => format!("{malware} {ty} {gid}"),
    };
    let lower = ty.to_lowercase().replace(' ', "");
    let mut g = json!({
        "id": id,
        "ownerId": 51,
        "ownerName": "Example Org",
        "dateAdded": format_ts(added),
        "webLink": format!("{base}/#/details/groups/{id}/overview"),
        "type": ty,
        "name": name,
        "createdBy": users[rng.random_range(0..users.len())].clone(),
        "upVoteCount": "0",
        "downVoteCount": "0",
        "lastModified": format_ts(added + Duration::hours(rng.random_range(0..400))),
        "legacyLink": format!("{base}/auth/{lower}/{lower}.xhtml?{lower}={id}"),
    });
    let date = json!(format_ts(added));
    match ty {
        "Document" | "Report" => {
            g["fileName"] = json!(format!("{}.pdf", name.to_lowercase().replace(' ', "-")));
            g["fileSize"] = json!(rng.random_range(10_000..5_000_000u64));
            g["status"] = json!("Success");
            g["documentType"] = json!("PDF");
            g["documentDateAdded"] = date.clone();
            g["generatedReport"] = json!(ty == "Report");
            g["malware"] = json!(false);
            if ty == "Report" {
                g["publishDate"] = date;
            }
        }
        "Email" => {
            g["to"] = json!("victim@example.org");
            g["from"] = json!(format!("billing@{}", "invoices-example.xyz"));
            g["subject"] = json!(format!("{malware} lure"));
            g["header"] = json!("Received: from mx.example.org");
            g["body"] = json!("Please see the attached invoice.");
            g["scoreIncludesBody"] = json!(true);
            g["emailDate"] = date;
            g["scoreBreakdown"] = json!("");
        }
        "Event" | "Incident" => {
            g["eventDate"] = date;
            g["status"] = json!(if ty == "Incident" {
                "Closed"
            } else {
                "Needs Review"
            });
        }
        "Task" => {
            g["dueDate"] = json!(format_ts(added + Duration::days(7)));
            g["escalationDate"] = json!(format_ts(added + Duration::days(5)));
            g["reminderDate"] = json!(format_ts(added + Duration::days(3)));
            g["status"] = json!("Not Started");
            g["assignments"] = json!({"data": [{"type": "Assigned", "user": {"id": 69}}]});
        }
        "Signature" => {
            g["fileName"] = json!(format!("{}.yar", lower));
            g["fileType"] = json!("YARA");
            g["fileText"] = json!(format!(
                "rule {} {{ condition: true }}",
                malware.replace(' ', "_")
            ));
        }
        _ => {}
    }
    g
}

/// `threatAssess`: the legacy rating/confidence plus the integer scores.
pub fn threat_assess(ind: &Indicator, m: &mut Map<String, Value>) {
    let mut rng = ind.block_rng(5);
    let score = rng.random_range(0..=1000i64);
    m.insert(
        "threatAssessRating".into(),
        json!(ind.rating.unwrap_or(0.0)),
    );
    m.insert(
        "threatAssessConfidence".into(),
        json!(f64::from(ind.confidence.unwrap_or(0))),
    );
    m.insert("threatAssessScore".into(), json!(score));
    m.insert(
        "threatAssessScoreObserved".into(),
        json!(rng.random_range(0..=score)),
    );
    m.insert(
        "threatAssessScoreFalsePositive".into(),
        json!(rng.random_range(0..=score / 10)),
    );
    m.insert("calScore".into(), json!(rng.random_range(0..=1000i64)));
}

/// `sightings`: `firstSeen` / `lastSeen`.
pub fn sightings(ind: &Indicator, m: &mut Map<String, Value>) {
    let mut rng = ind.block_rng(6);
    let last = ind.date_added + Duration::seconds(rng.random_range(0..86_400 * 30));
    let first = ind.date_added - Duration::seconds(rng.random_range(0..86_400 * 30));
    m.insert("firstSeen".into(), json!(format_ts(first)));
    m.insert("lastSeen".into(), json!(format_ts(last)));
}

/// `externalDates`: `externalDateAdded/Expires/LastModified`.
pub(crate) fn external_dates(ind: &Indicator, m: &mut Map<String, Value>) {
    let mut rng = ind.block_rng(7);
    let added = ind.date_added - Duration::seconds(rng.random_range(0..86_400 * 10));
    m.insert("externalDateAdded".into(), json!(format_ts(added)));
    m.insert(
        "externalDateExpires".into(),
        json!(format_ts(added + Duration::days(90))),
    );
    m.insert("externalLastModified".into(), json!(format_ts(added)));
}

/// `falsePositives` and `observations` counters.
pub fn counters(
    ind: &Indicator,
    m: &mut Map<String, Value>,
    false_positives: bool,
    observations: bool,
) {
    let mut rng = ind.block_rng(8);
    if false_positives {
        let n = if rng.random_bool(0.1) {
            rng.random_range(1..4i64)
        } else {
            0
        };
        m.insert("falsePositives".into(), json!(n));
        if n > 0 {
            m.insert(
                "lastFalsePositive".into(),
                json!(format_ts(ind.last_modified)),
            );
        }
        m.insert("falsePositiveReportedByUser".into(), json!(false));
    }
    if observations {
        let n = rng.random_range(0..50i64);
        m.insert("observations".into(), json!(n));
        if n > 0 {
            m.insert("lastObserved".into(), json!(format_ts(ind.last_modified)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_701_763_200, 0).unwrap()
    }

    #[test]
    fn same_seed_same_data() {
        let a = generate(200, 7, 1, 5, now());
        let b = generate(200, 7, 1, 5, now());
        let key = |v: &[Indicator]| {
            v.iter()
                .map(|i| (i.id, i.summary.clone(), i.last_modified_text()))
                .collect::<Vec<_>>()
        };
        assert_eq!(key(&a), key(&b));
        assert_eq!(tags(&a[3]), tags(&b[3]));
    }

    #[test]
    fn every_type_and_crowded_second() {
        let v = generate(50, 3, 10, 20, now());
        for t in IndicatorType::ALL {
            assert!(v.iter().any(|i| i.kind == t), "{t:?} missing");
        }
        let mut counts = std::collections::HashMap::new();
        for i in &v {
            *counts.entry(i.last_modified).or_insert(0usize) += 1;
        }
        assert!(counts.values().any(|c| *c >= 20));
        for i in &v {
            assert!(i.last_modified < now() && i.last_modified >= now() - Duration::days(6));
        }
    }

    #[test]
    fn file_summary_joins_hashes() {
        let v = generate(300, 1, 1, 0, now());
        let f = v.iter().find(|i| i.kind == IndicatorType::File).unwrap();
        let md5 = f.values.iter().find(|(k, _)| *k == "md5").unwrap();
        assert!(f.summary.starts_with(md5.1.as_str().unwrap()));
        let link = f.base_json("https://h")["legacyLink"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(link.contains("&owner="), "{link}");
    }
}
