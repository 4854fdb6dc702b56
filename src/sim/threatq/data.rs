//! Deterministic indicator data for the ThreatQ simulator (API spec §4, mapping spec §3.14, §4).
//!
//! Every indicator type of the mapping's type table (plus a custom type), every default status
//! and every expiration case of mapping §4 is generated from one seed, in the object shape of the
//! `shared/fixtures/threatq` samples: `YYYY-MM-DD HH:MM:SS` timestamps, `type`/`status` objects,
//! `sources`, `attributes`, `adversaries` and `related_*_count` counters. The nested blocks are
//! rendered on demand from a per-indicator seed, so they stay stable across mutations.
//!
//! With `--rich-context` ([`Indicator::with_rich_context`]) the blocks are drawn larger: dozens
//! of attributes (analyst-length descriptions, each with its `sources`), most of the feeds as
//! sources, adversaries and every `related_*_count`, so that an indicator with `sources` and
//! `attributes` is tens of KB.

use chrono::{DateTime, Duration, SubsecRound, Utc};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::sim::values::{
    Blocks, MALWARE, WORDS, analysis, cidr, domain, email_address, hex, ipv4, ipv6, mix, mutex,
    observed_in, php_url, pick, run_key, user_agent,
};
use serde_json::{Map, Value, json};

/// One ThreatQ indicator type: `type {id, name, class}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndicatorType {
    /// `type.id` / `type_id`.
    pub id: i64,
    /// `type.name`, the exact text the ECS mapping keys on.
    pub name: &'static str,
    /// `type.class` and the indicator's `class`: `network` or `host`.
    pub class: &'static str,
}

const fn ty(id: i64, name: &'static str, class: &'static str) -> IndicatorType {
    IndicatorType { id, name, class }
}

/// Every generated type. Ids are the simulator's own numbering, chosen to agree with the
/// fixtures (`IP Address` = 15, `URL` = 30); `Bitcoin Address` is a custom, user-defined type.
pub(crate) const TYPES: [IndicatorType; 22] = [
    ty(15, "IP Address", "network"),
    ty(16, "IPv6 Address", "network"),
    ty(3, "CIDR Block", "network"),
    ty(11, "FQDN", "network"),
    ty(30, "URL", "network"),
    ty(31, "URL Path", "network"),
    ty(5, "Email Address", "network"),
    ty(7, "Email Subject", "host"),
    ty(10, "Filename", "host"),
    ty(9, "File Path", "host"),
    ty(17, "MD5", "host"),
    ty(22, "SHA-1", "host"),
    ty(23, "SHA-256", "host"),
    ty(24, "SHA-384", "host"),
    ty(25, "SHA-512", "host"),
    ty(1, "ASN", "network"),
    ty(27, "x509 Serial", "host"),
    ty(28, "x509 Subject", "host"),
    ty(18, "Mutex", "host"),
    ty(20, "Registry Key", "host"),
    ty(32, "User-agent", "network"),
    ty(101, "Bitcoin Address", "network"),
];

/// ThreatQ's default indicator statuses: `(id, name, description)`.
pub(crate) const STATUSES: [(i64, &str, &str); 5] = [
    (
        1,
        "Active",
        "Poses a threat and is being exported to detection tools.",
    ),
    (2, "Expired", "No longer poses a serious threat."),
    (
        3,
        "Indirect",
        "Associated to an active indicator or event (i.e. pDNS).",
    ),
    (4, "Review", "Requires further analysis."),
    (
        5,
        "Whitelisted",
        "Poses NO risk and should never be deployed.",
    ),
];

/// Index of `Expired` in [`STATUSES`].
const EXPIRED: usize = 1;

/// Which expiration dates an indicator carries (mapping spec §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// Neither `expires_at` nor `expired_at`: the default duration applies.
    Neither,
    /// Only `expires_at`, in the future.
    ExpiresFuture,
    /// Only `expires_at`, already in the past.
    ExpiresPast,
    /// Only `expired_at` (in the past).
    ExpiredOnly,
    /// Both `expires_at` and `expired_at`.
    Both,
    /// Status `Expired` but no date at all.
    StatusExpiredNoDates,
}

impl Expiry {
    /// Every case, so that the first few indicators cover all of them.
    pub(crate) const ALL: [Expiry; 6] = [
        Self::Neither,
        Self::ExpiresFuture,
        Self::ExpiresPast,
        Self::ExpiredOnly,
        Self::Both,
        Self::StatusExpiredNoDates,
    ];
}

/// One indicator as the simulator stores it.
#[derive(Debug, Clone)]
pub struct Indicator {
    /// `id` (`id_base + index`).
    pub id: i64,
    /// Index into [`TYPES`].
    pub kind: usize,
    /// Index into [`STATUSES`].
    pub status: usize,
    /// `value`.
    pub value: String,
    /// `hash`: 32 hex digits.
    pub hash: String,
    /// `uuid`, present on some indicators.
    pub uuid: Option<String>,
    /// `description`, present on some indicators.
    pub description: Option<String>,
    /// `score` (0–10).
    pub score: u8,
    /// `manual_score`, present when an analyst set one.
    pub manual_score: Option<u8>,
    /// `created_at`.
    pub created_at: DateTime<Utc>,
    /// `updated_at`. Served at second precision; the sub-second part only orders changes made
    /// within one second (see the cursor notes in `mod.rs`).
    pub updated_at: DateTime<Utc>,
    /// `touched_at`.
    pub touched_at: DateTime<Utc>,
    /// `published_at`.
    pub published_at: DateTime<Utc>,
    /// `expires_at`.
    pub expires_at: Option<DateTime<Utc>>,
    /// `expired_at`.
    pub expired_at: Option<DateTime<Utc>>,
    /// `expires_calculated_at`.
    pub expires_calculated_at: Option<DateTime<Utc>>,
    /// `tags`, present on some indicators.
    pub tags: Option<Vec<String>>,
    /// How often the simulator has modified this indicator.
    pub version: u32,
    /// Seed and size of `sources`, `attributes`, `adversaries` and the counters.
    blocks: Blocks,
}

/// Sources: `(source_id, name, source_type, TLP (id, name), provider)`.
type SourceDef = (
    i64,
    &'static str,
    &'static str,
    Option<(i64, &'static str)>,
    Option<&'static str>,
);
const SOURCES: [SourceDef; 7] = [
    (12, "AlienVault OTX", "connectors", None, None),
    (
        14,
        "abuse.ch URLhaus",
        "connectors",
        Some((4, "WHITE")),
        Some("abuse.ch"),
    ),
    (
        21,
        "Internal SOC",
        "users",
        Some((2, "AMBER")),
        Some("Example Corp"),
    ),
    (37, "www.dan.me.uk Tor Node List", "connectors", None, None),
    (52, "CISA AIS", "connectors", Some((1, "RED")), Some("CISA")),
    (61, "MISP Community", "connectors", Some((5, "CLEAR")), None),
    (
        44,
        "Partner ISAC",
        "connectors",
        Some((3, "GREEN")),
        Some("Partner ISAC"),
    ),
];
const ADVERSARIES: [(i64, &str); 4] = [
    (12, "APT28"),
    (31, "FIN7"),
    (47, "Lazarus Group"),
    (58, "TA505"),
];
/// Attribute definitions: `(attribute_id, name)`.
const ATTRIBUTES: [(i64, &str); 6] = [
    (3, "Description"),
    (4, "Country"),
    (5, "Confidence"),
    (7, "AlienVault Threat Level"),
    (9, "Malware Family"),
    (11, "Kill Chain Phase"),
];
/// The object kinds ThreatQ counts relations for (`related_<kind>_count`).
const RELATED: [&str; 22] = [
    "adversary",
    "asset",
    "attachment",
    "attack_pattern",
    "campaign",
    "course_of_action",
    "event",
    "exploit_target",
    "identity",
    "incident",
    "indicator",
    "infrastructure",
    "intrusion_set",
    "investigation",
    "malware",
    "note",
    "report",
    "signature",
    "task",
    "tool",
    "ttp",
    "vulnerability",
];

/// `YYYY-MM-DD HH:MM:SS` (UTC, no zone), the only timestamp format ThreatQ returns.
pub(crate) fn format_ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// A value of the given type name.
fn value_for(name: &str, rng: &mut ChaCha8Rng) -> String {
    match name {
        "IP Address" => ipv4(rng),
        "IPv6 Address" => ipv6(rng),
        "CIDR Block" => cidr(rng),
        "FQDN" => domain(rng),
        "URL" => {
            let word = pick(rng, &WORDS);
            match rng.random_range(0..4u8) {
                // Scheme-less with a port, as in the fixtures: `uri_parts` cannot parse it.
                0 => format!("{}:8080/{word}.html", ipv4(rng)),
                1 => format!("http://{}/{word}/{}.exe", domain(rng), hex(rng, 3, false)),
                _ => php_url(rng, word),
            }
        }
        "URL Path" => format!("/{}/{}.php", pick(rng, &WORDS), hex(rng, 4, false)),
        "Email Address" => email_address(rng),
        "Email Subject" => format!(
            "{} #{}",
            pick(
                rng,
                &[
                    "Invoice overdue",
                    "Your parcel could not be delivered",
                    "Password expires today",
                    "Urgent: wire transfer",
                ]
            ),
            rng.random_range(1000..99_999)
        ),
        "Filename" => format!(
            "{}_{}.{}",
            pick(rng, &["invoice", "scan", "payroll", "setup", "update"]),
            rng.random_range(1..9999),
            pick(rng, &["pdf.exe", "docm", "js", "iso", "lnk", "dll"])
        ),
        "File Path" => format!(
            "C:\\Users\\Public\\{}\\{}.exe",
            pick(rng, &["Downloads", "Libraries", "AppData"]),
            hex(rng, 4, false)
        ),
        "MD5" => hex(rng, 16, false),
        "SHA-1" => hex(rng, 20, false),
        "SHA-256" => hex(rng, 32, false),
        "SHA-384" => hex(rng, 48, false),
        "SHA-512" => hex(rng, 64, false),
        "ASN" => format!("AS{}", rng.random_range(1000..400_000)),
        "x509 Serial" => (0..16)
            .map(|_| format!("{:02x}", rng.random::<u8>()))
            .collect::<Vec<_>>()
            .join(":"),
        "x509 Subject" => format!(
            "CN={}, O={} Ltd, C={}",
            domain(rng),
            pick(rng, &WORDS),
            pick(rng, &["US", "RU", "NL", "DE", "PA"])
        ),
        "Mutex" => mutex(rng),
        "Registry Key" => run_key(rng),
        "User-agent" => user_agent(rng),
        _ => format!(
            "bc1q{}",
            hex(rng, 19, false)
                .chars()
                .map(|c| if c == '1' { 'x' } else { c })
                .collect::<String>()
        ),
    }
}

/// Generates `n` indicators with ids `id_base..id_base+n` and `updated_at` spread over the six
/// days before `now`. The first 22 cover every type, and the statuses and expiration cases
/// cycle through them, so any data set of 22 or more has every case.
pub fn generate(n: usize, seed: u64, id_base: i64, now: DateTime<Utc>) -> Vec<Indicator> {
    let now = now.trunc_subsecs(0);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut first: Vec<usize> = (0..TYPES.len()).collect();
    rand::seq::SliceRandom::shuffle(first.as_mut_slice(), &mut rng);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let id = id_base.saturating_add(i64::try_from(i).unwrap_or(i64::MAX));
        let kind = first
            .get(i)
            .copied()
            .unwrap_or_else(|| rng.random_range(0..TYPES.len()));
        let (expiry, status) = if i < TYPES.len() {
            (Expiry::ALL[i % Expiry::ALL.len()], i % STATUSES.len())
        } else {
            let e = if rng.random_bool(0.6) {
                Expiry::Neither
            } else {
                Expiry::ALL[rng.random_range(1..Expiry::ALL.len())]
            };
            // Mostly Active, as in real libraries.
            let s = if rng.random_bool(0.6) {
                0
            } else {
                rng.random_range(0..STATUSES.len())
            };
            (e, s)
        };
        let status = match expiry {
            Expiry::StatusExpiredNoDates => EXPIRED,
            _ => status,
        };
        let mut vrng = ChaCha8Rng::seed_from_u64(mix(seed, 1, i as u64));
        let value = value_for(TYPES[kind].name, &mut vrng);
        let updated_at = now - Duration::seconds(rng.random_range(1..6 * 86_400));
        let created_at = updated_at - Duration::seconds(rng.random_range(0..120 * 86_400));
        let published_at = created_at + Duration::seconds(rng.random_range(0..3));
        let touched_at = updated_at + Duration::seconds(rng.random_range(0..3600));
        let touched_at = touched_at.min(now);
        let future = now + Duration::seconds(rng.random_range(86_400..90 * 86_400));
        let past = updated_at - Duration::seconds(rng.random_range(60..86_400));
        let (expires_at, expired_at) = match expiry {
            Expiry::Neither | Expiry::StatusExpiredNoDates => (None, None),
            Expiry::ExpiresFuture => (Some(future), None),
            Expiry::ExpiresPast => (Some(past), None),
            Expiry::ExpiredOnly => (None, Some(past)),
            Expiry::Both => (Some(past), Some(past)),
        };
        let expires_calculated_at = rng
            .random_bool(0.5)
            .then(|| updated_at + Duration::seconds(rng.random_range(60..7200)));
        let score = rng.random_range(0..=10u8);
        let manual_score = rng.random_bool(0.1).then(|| rng.random_range(0..=10u8));
        let description = rng.random_bool(0.3).then(|| observed_in(&mut rng));
        let tags = rng.random_bool(0.3).then(|| {
            let k = rng.random_range(1..=3usize);
            MALWARE
                .choose_multiple(&mut rng, k)
                .map(|m| m.to_lowercase().replace(' ', "-"))
                .collect()
        });
        let hash = hex(&mut vrng, 16, false);
        let uuid = rng.random_bool(0.5).then(|| {
            let h = hex(&mut vrng, 16, false);
            format!(
                "{}-{}-{}-{}-{}",
                &h[0..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            )
        });
        out.push(Indicator {
            id,
            kind,
            status,
            value,
            hash,
            uuid,
            description,
            score,
            manual_score,
            created_at,
            updated_at,
            touched_at,
            published_at,
            expires_at,
            expired_at,
            expires_calculated_at,
            tags,
            version: 0,
            blocks: Blocks::of(seed, i),
        });
    }
    out
}

impl Indicator {
    /// The same indicator, with realistic-size (`rich`) or default-size blocks (`--rich-context`); its own fields are
    /// unchanged.
    pub fn with_rich_context(mut self, rich: bool) -> Self {
        self.blocks.rich = rich;
        self
    }

    /// The indicator's type.
    pub fn kind(&self) -> IndicatorType {
        TYPES[self.kind % TYPES.len()]
    }

    /// The status name (`Active`, `Expired`, …).
    pub fn status_name(&self) -> &'static str {
        STATUSES[self.status % STATUSES.len()].1
    }

    /// Modifies the indicator as an analyst or a feed would: a new score and `updated_at` /
    /// `touched_at` = `at` (which the caller makes strictly later than every existing key).
    /// Now and then the indicator is expired.
    pub(crate) fn mutate(&mut self, at: DateTime<Utc>, rng: &mut ChaCha8Rng) {
        self.version += 1;
        self.updated_at = at;
        self.touched_at = at;
        self.score = rng.random_range(0..=10u8);
        self.description = Some(format!(
            "Re-assessed by the simulator (revision {})",
            self.version
        ));
        if rng.random_bool(0.1) {
            self.status = EXPIRED;
            self.expired_at = Some(at);
        }
    }

    /// The `updated_at` text exactly as served.
    pub(crate) fn updated_at_text(&self) -> String {
        format_ts(self.updated_at)
    }

    fn block_rng(&self, stream: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(mix(self.blocks.seed, stream, 0))
    }

    /// The default (`fields=*`) keys: everything except `sources` and `attributes`.
    pub fn base_json(&self) -> Map<String, Value> {
        let t = self.kind();
        let (sid, sname, sdesc) = STATUSES[self.status % STATUSES.len()];
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("type_id".into(), json!(t.id));
        m.insert(
            "type".into(),
            json!({"id": t.id, "name": t.name, "class": t.class}),
        );
        m.insert("status_id".into(), json!(sid));
        m.insert(
            "status".into(),
            json!({"id": sid, "name": sname, "description": sdesc}),
        );
        m.insert("class".into(), json!(t.class));
        m.insert("hash".into(), json!(self.hash));
        m.insert("value".into(), json!(self.value));
        if let Some(d) = &self.description {
            m.insert("description".into(), json!(d));
        }
        m.insert("score".into(), json!(self.score));
        let mut rng = self.block_rng(1);
        if rng.random_bool(0.5) {
            m.insert("generated_score".into(), json!(self.score));
        }
        if let Some(s) = self.manual_score {
            m.insert("manual_score".into(), json!(s));
        }
        m.insert("created_at".into(), json!(format_ts(self.created_at)));
        m.insert("updated_at".into(), json!(self.updated_at_text()));
        m.insert("touched_at".into(), json!(format_ts(self.touched_at)));
        m.insert("published_at".into(), json!(format_ts(self.published_at)));
        for (k, v) in [
            ("expires_at", self.expires_at),
            ("expired_at", self.expired_at),
            ("expires_calculated_at", self.expires_calculated_at),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), json!(format_ts(v)));
            }
        }
        if let Some(u) = &self.uuid {
            m.insert("uuid".into(), json!(u));
        }
        if let Some(tags) = &self.tags {
            m.insert("tags".into(), json!(tags));
        }
        m.insert("adversaries".into(), self.adversaries());
        // Only the richer records carry the relation counters, as in the fixtures.
        if rng.random_bool(0.3) || self.blocks.rich {
            for kind in RELATED {
                m.insert(
                    format!("related_{kind}_count"),
                    json!(rng.random_range(0..4u32)),
                );
            }
        }
        m
    }

    /// `adversaries`: usually empty.
    pub fn adversaries(&self) -> Value {
        let mut rng = self.block_rng(2);
        if rng.random_bool(0.8) && !self.blocks.rich {
            return json!([]);
        }
        let k = rng.random_range(self.blocks.sized(1..=2, 1..=4));
        let list: Vec<Value> = ADVERSARIES
            .choose_multiple(&mut rng, k)
            .map(|(id, name)| json!({"id": id, "name": name}))
            .collect();
        Value::Array(list)
    }

    /// `sources`: one to three feed records, some with `tlp_id`/`tlp_name` and `provider`.
    pub fn sources(&self) -> Vec<Map<String, Value>> {
        let mut rng = self.block_rng(3);
        let k = rng.random_range(self.blocks.sized(1..=3, 4..=7));
        let t = self.kind();
        let (sid, _, _) = STATUSES[self.status % STATUSES.len()];
        SOURCES
            .choose_multiple(&mut rng, k)
            .enumerate()
            .map(|(j, (source_id, name, source_type, tlp, provider))| {
                let at = format_ts(self.created_at + Duration::seconds(2));
                let mut s = Map::new();
                s.insert(
                    "id".into(),
                    json!(self.id.saturating_mul(4).saturating_add(j as i64)),
                );
                s.insert("indicator_id".into(), json!(self.id));
                s.insert("source_id".into(), json!(source_id));
                s.insert("creator_source_id".into(), json!(source_id));
                s.insert("reference_id".into(), json!(rng.random_range(1..100u32)));
                s.insert("indicator_status_id".into(), json!(sid));
                s.insert("indicator_type_id".into(), json!(t.id));
                s.insert("name".into(), json!(name));
                s.insert("source_type".into(), json!(source_type));
                s.insert("source_score".into(), json!(rng.random_range(0..=5u8)));
                s.insert(
                    "source_expire_days".into(),
                    json!(["30", "60", "90"].choose(&mut rng).copied().unwrap_or("30")),
                );
                if let Some((tlp_id, tlp_name)) = tlp {
                    s.insert("tlp_id".into(), json!(tlp_id));
                    s.insert("tlp_name".into(), json!(tlp_name));
                }
                if let Some(p) = provider {
                    s.insert("provider".into(), json!(p));
                }
                s.insert("created_at".into(), json!(at));
                s.insert("updated_at".into(), json!(self.updated_at_text()));
                s.insert("published_at".into(), json!(at));
                s
            })
            .collect()
    }

    /// `attributes`: zero to four `{id, attribute_id, indicator_id, name, value, …}` objects;
    /// with `--rich-context`, 60 to 150 of them (names repeat, as they do in real libraries),
    /// each with the `sources` that reported it.
    pub fn attributes(&self) -> Vec<Map<String, Value>> {
        let mut rng = self.block_rng(4);
        let at = format_ts(self.created_at + Duration::seconds(2));
        let defs: Vec<(i64, &str)> = if self.blocks.rich {
            let k = rng.random_range(60..=150usize);
            (0..k)
                .map(|_| ATTRIBUTES[rng.random_range(0..ATTRIBUTES.len())])
                .collect()
        } else {
            let k = rng.random_range(0..=4usize);
            ATTRIBUTES.choose_multiple(&mut rng, k).copied().collect()
        };
        defs.into_iter()
            .enumerate()
            .map(|(j, (attribute_id, name))| {
                let value = match name {
                    "Country" => pick(&mut rng, &["US", "RU", "NL", "CN", "MP"]).to_owned(),
                    "Malware Family" => pick(&mut rng, &MALWARE).to_owned(),
                    "Kill Chain Phase" => pick(
                        &mut rng,
                        &["Delivery", "Command and Control", "Exploitation"],
                    )
                    .to_owned(),
                    "Description" if self.blocks.rich => analysis(&mut rng),
                    "Description" => "Malicious Host".to_owned(),
                    _ => rng.random_range(1..=5u8).to_string(),
                };
                // Room for every attribute id of one indicator before the next one's start.
                let stride = if self.blocks.rich { 128 } else { 8 };
                let mut a = Map::new();
                a.insert(
                    "id".into(),
                    json!(self.id.saturating_mul(stride).saturating_add(j as i64)),
                );
                a.insert("attribute_id".into(), json!(attribute_id));
                a.insert("indicator_id".into(), json!(self.id));
                a.insert("name".into(), json!(name));
                a.insert("value".into(), json!(value));
                a.insert("created_at".into(), json!(at));
                a.insert("updated_at".into(), json!(at));
                a.insert("touched_at".into(), json!(at));
                if self.blocks.rich {
                    let source = SOURCES[rng.random_range(0..SOURCES.len())].1;
                    a.insert("sources".into(), json!([{ "name": source }]));
                }
                a
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn deterministic_and_ids_follow_base() {
        let now = Utc::now();
        let a = generate(50, 9, 100, now);
        let b = generate(50, 9, 100, now);
        assert_eq!(
            a.iter()
                .map(|i| (&i.value, i.updated_at))
                .collect::<Vec<_>>(),
            b.iter()
                .map(|i| (&i.value, i.updated_at))
                .collect::<Vec<_>>()
        );
        assert_eq!(a[0].id, 100);
        assert_eq!(a[49].id, 149);
    }

    #[test]
    fn first_indicators_cover_every_type_status_and_expiry() {
        let now = Utc::now();
        let v = generate(22, 1, 1, now);
        let types: BTreeSet<&str> = v.iter().map(|i| i.kind().name).collect();
        assert_eq!(types.len(), TYPES.len());
        let statuses: BTreeSet<&str> = v.iter().map(Indicator::status_name).collect();
        assert_eq!(statuses.len(), STATUSES.len());
        assert!(v.iter().any(|i| i.expires_at.is_some_and(|t| t > now)));
        assert!(v.iter().any(|i| i.expires_at.is_some_and(|t| t < now)));
        assert!(
            v.iter()
                .any(|i| i.expired_at.is_some() && i.expires_at.is_none())
        );
        assert!(v.iter().any(|i| i.status_name() == "Expired"
            && i.expires_at.is_none()
            && i.expired_at.is_none()));
        for i in &v {
            assert!(i.updated_at < now && i.updated_at > now - Duration::days(6));
            assert_eq!(i.hash.len(), 32);
        }
    }

    #[test]
    fn timestamps_are_threatq_format() {
        let t = DateTime::parse_from_rfc3339("2021-10-01T18:36:03.5Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(format_ts(t), "2021-10-01 18:36:03");
    }
}
