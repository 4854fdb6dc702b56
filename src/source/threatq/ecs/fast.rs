//! The fast ThreatQ → ECS path: one pass over the raw text with borrowing serde visitors that
//! write the output document directly, with known keys and no dotted paths at run time.
//!
//! Why it exists: the reference engine ([`super::reference`]) decodes a DOM and then walks it
//! with dotted paths once per processor; its profile was dominated by path lookups, dates
//! formatted through `fmt`, and allocations for values that are replaced right away. Here each
//! known key of the vendor object is decoded by a visitor that already applies the pipeline's
//! processors to it (date → ISO text, id → string or long, attribute names, …). Values that
//! are passed through are pruned of nulls and `""` while they are read: the final empty-value
//! drop (§3.24) works bottom-up, so pruning each value as it is built gives the same document.
//!
//! Scope: the shapes ThreatQ sends. Anything else returns `None`, and
//! [`super::map_indicator`] maps that object with the reference engine: a value of a type the
//! pipeline would convert differently or fail on, a duplicate key, a date or conversion that
//! would record an error, an invalid expiration unit, a null or non-object source, attribute,
//! adversary or status, a missing `threat` object for providers/TLP (§9.5), a raw
//! `indicator_value` or `ioc_expired_at` key, and an `Expired` status without `updated_at`
//! (the reference then uses the current time). Giving up is always safe; guessing is not.
//!
//! The small decoding pieces ([`Key`], [`Strict`], [`Pruned`]) are vendor-neutral and could
//! later move next to the ingest building blocks, shared with other fast mappers.

use compact_str::CompactString;
use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::{
    ATTRIBUTE_DATES, ATTRIBUTE_IDS, COUNTERS, ECS_TLPS, PRESERVE_CUSTOM, REASON_DEFAULT,
    REASON_EXPIRED_AT, REASON_EXPIRES_AT, REASON_STATUS, SOURCE_DATES, SOURCE_IDS,
};
use crate::config::IocExpiration;
use crate::ingest::{self, Document, EcsEvent, MapOptions, Node, Object};

/// Maps `raw` exactly as [`super::reference::map_indicator`] would, or `None` when the object
/// is outside what this path models (see the module header).
pub fn map_indicator(raw: &str, opts: &MapOptions) -> Option<EcsEvent> {
    let keep_custom = opts.tags.iter().any(|t| t == PRESERVE_CUSTOM);
    let mut de = serde_json::Deserializer::from_str(raw);
    let indicator = IndicatorSeed { keep_custom }.deserialize(&mut de).ok()?;
    de.end().ok()?;
    indicator.into_event(raw, opts, keep_custom)
}

/// The error that sends an object to the reference engine; its text is never shown.
fn unmodelled<E: de::Error>() -> E {
    E::custom("outside the ThreatQ fast path")
}

// ------------------------------------------------------------------------------------------
// Vendor-neutral pieces: borrowed keys, pruned pass-through values, duplicate-free objects.
// ------------------------------------------------------------------------------------------

/// An object key, borrowed from the input unless it contains escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// An object under construction. Values arrive already pruned (`None` = dropped by §3.24);
/// a repeated key, kept or dropped, is refused like the `json` processor does
/// (`allow_duplicate_keys: false`), which sends the object to the reference engine.
#[derive(Default)]
struct Strict<'de> {
    map: Object,
    dropped: Vec<Cow<'de, str>>,
}

impl<'de> Strict<'de> {
    fn put<E: de::Error>(&mut self, key: Cow<'de, str>, value: Option<Node>) -> Result<(), E> {
        if self.dropped.contains(&key) || self.map.contains_key(&key) {
            return Err(unmodelled());
        }
        match value {
            Some(v) => self.map.insert(key.into_owned(), v),
            None => self.dropped.push(key),
        }
        Ok(())
    }

    /// The object as a value, or `None` when it ended up empty (§3.24).
    fn finish(self) -> Option<Node> {
        (!self.map.is_empty()).then_some(Node::Object(self.map))
    }
}

/// Any JSON value passed through unchanged, pruned as §3.24 will prune it: `None` for null,
/// `""` and containers that are (or became) empty.
struct Pruned;

impl<'de> DeserializeSeed<'de> for Pruned {
    type Value = Option<Node>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Pruned {
    type Value = Option<Node>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Some(Node::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(Node::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(Node::PosInt(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        // Like `Number::from_f64`, which refuses a non-finite number.
        Ok(v.is_finite().then_some(Node::Float(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok((!v.is_empty()).then(|| Node::Str(v.into())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok((!v.is_empty()).then_some(Node::from(v)))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut list = Vec::new();
        while let Some(v) = seq.next_element_seed(Pruned)? {
            list.extend(v);
        }
        Ok((!list.is_empty()).then_some(Node::Array(list)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut obj = Strict::default();
        while let Some(key) = map.next_key_seed(Key)? {
            let v = map.next_value_seed(Pruned)?;
            obj.put(key, v)?;
        }
        Ok(obj.finish())
    }
}

// ------------------------------------------------------------------------------------------
// Values the pipeline converts.
// ------------------------------------------------------------------------------------------

/// Declares a seed decoded with `deserialize_any` (so nesting is counted exactly as the
/// reference decoder counts it) whose visitor gets the listed methods; every other JSON type
/// is outside the fast path.
macro_rules! seed {
    ($(#[$doc:meta])* $name:ident -> $out:ty { $($body:tt)* }) => {
        $(#[$doc])*
        struct $name;

        impl<'de> DeserializeSeed<'de> for $name {
            type Value = $out;
            fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<$out, D::Error> {
                d.deserialize_any(self)
            }
        }

        impl<'de> Visitor<'de> for $name {
            type Value = $out;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(stringify!($name))
            }
            $($body)*
        }
    };
}

seed! {
    /// A string field read as it is (`""` kept: it still counts as present); null = absent.
    Text -> Option<String> {
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_owned()))
        }
        fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
}

seed! {
    /// `convert` to string of an id: text kept, integers in decimal; `None` when absent or
    /// pruned afterwards (null, `""`).
    IdText -> Option<String> {
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok((!v.is_empty()).then(|| v.to_owned()))
        }
        fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
            Ok((!v.is_empty()).then_some(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
}

seed! {
    /// `convert` to long whose failure records an error (ids, score, counters): only values
    /// that convert are modelled; null = absent.
    Long -> Option<i64> {
        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v).map(Some).map_err(|_| unmodelled())
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            ingest::parse_java_long(v).map(Some).ok_or_else(unmodelled)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
}

seed! {
    /// `source_score` (§3.15): `convert` to long, and anything that does not convert (null, a
    /// fraction, a boolean, text that is not a number) is silently removed.
    LongOrDrop -> Option<i64> {
        fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
            Ok(i64::try_from(v).ok())
        }
        // Java's text of a double always has a `.`, an `E` or a word: never a long.
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(ingest::parse_java_long(v))
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
}

/// A `yyyy-MM-dd HH:mm:ss` date field as the `date` processor sees it.
enum Date {
    /// Null: the processor skips it.
    Null,
    /// `""`: skipped by the top-level processors, yet present for the expiration logic.
    Empty,
    /// Parsed: the ISO text the pipeline writes, and the fields of the date.
    Iso(CompactString, [u32; 6]),
    /// A number, boolean or text that does not parse (its Java text never matches the pattern).
    Bad,
}

seed! {
    /// A date field (§3.6, §3.15, §3.17).
    YmdHms -> Date {
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            if v.is_empty() {
                return Ok(Date::Empty);
            }
            Ok(match ymd_hms_fields(v) {
                Some(fields) => Date::Iso(iso_millis(v), fields),
                None => Date::Bad,
            })
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(Date::Bad)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(Date::Bad)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(Date::Bad)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(Date::Bad)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(Date::Null)
        }
    }
}

impl Date {
    /// Inside a `foreach` element every failure silently removes the key (§3.15, §3.17).
    fn or_drop(self) -> Option<Node> {
        match self {
            Date::Iso(text, _) => Some(Node::from(text)),
            _ => None,
        }
    }
}

/// [`ingest::parse_ymd_hms`] (strict `yyyy-MM-dd HH:mm:ss`, UTC) with the calendar checked by
/// hand as this path does ([`ymd_hms_fields`]); the differential tests hold it to the shared one.
#[cfg(test)]
pub(super) fn parse_ymd_hms(text: &str) -> Option<DateTime<Utc>> {
    ingest::fields_utc(ymd_hms_fields(text)?)
}

/// The six fields of a valid `yyyy-MM-dd HH:mm:ss`: a real proleptic-Gregorian date (years
/// 0000–9999, as chrono) and a time of day without leap second. The shape is read by the shared
/// [`ingest::fixed_fields`]; the calendar is checked by hand, as chrono's checks were the
/// largest single cost of the mapping.
fn ymd_hms_fields(text: &str) -> Option<[u32; 6]> {
    let fields @ [year, month, day, hour, minute, second] = ingest::fixed_fields(text, b' ', b"")?;
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    let valid = (1..=days).contains(&day) && hour < 24 && minute < 60 && second < 60;
    valid.then_some(fields)
}

/// The pipeline's ISO form of a text `parse_ymd_hms` accepted: the pattern has
/// fixed widths and a four-digit year, so `format_date` of the parsed time is the same text
/// with `T` for the space and `.000Z` appended.
fn iso_millis(ymd_hms: &str) -> CompactString {
    // 24 bytes: stored inline, without an allocation.
    let mut out = CompactString::with_capacity(24);
    out.push_str(ymd_hms.get(..10).unwrap_or_default());
    out.push('T');
    out.push_str(ymd_hms.get(11..).unwrap_or_default());
    out.push_str(".000Z");
    out
}

// ------------------------------------------------------------------------------------------
// Nested objects: status, type, sources[], attributes[], adversaries[].
// ------------------------------------------------------------------------------------------

/// The kinds of nested object the pipeline processes key by key.
#[derive(Clone, Copy)]
enum Nested {
    Status,
    Type,
    Source { keep_custom: bool },
    Attribute,
    Adversary,
}

/// What the pipeline does with one key of a nested object.
#[derive(Clone, Copy)]
enum Rule {
    Pass,
    /// Parsed (duplicates still count) and removed (§3.21).
    Discard,
    IdText,
    LongOrDrop,
    DateOrDrop,
    /// Source `name`: passed through and collected as a provider (§3.16).
    Provider,
    /// Source `tlp_name`: collected when it is an ECS TLP (§3.16), kept only with the
    /// `preserve_duplicate_custom_fields` tag (§3.21).
    Tlp {
        keep: bool,
    },
    /// Attribute `name`: required, lower-cased, spaces → `_` (§3.17).
    AttributeName,
}

impl Nested {
    fn rule(self, key: &str) -> Rule {
        match (self, key) {
            (Nested::Status | Nested::Type | Nested::Adversary, "id") => Rule::IdText,
            (Nested::Source { .. }, k) if SOURCE_IDS.contains(&k) => Rule::IdText,
            (Nested::Source { .. }, k) if SOURCE_DATES.contains(&k) => Rule::DateOrDrop,
            (Nested::Attribute, k) if ATTRIBUTE_IDS.contains(&k) => Rule::IdText,
            (Nested::Attribute, k) if ATTRIBUTE_DATES.contains(&k) => Rule::DateOrDrop,
            (Nested::Source { .. }, "source_score") => Rule::LongOrDrop,
            (Nested::Source { .. }, "name") => Rule::Provider,
            (Nested::Source { keep_custom }, "tlp_name") => Rule::Tlp { keep: keep_custom },
            (Nested::Source { keep_custom: false }, "provider") => Rule::Discard,
            (Nested::Attribute, "name") => Rule::AttributeName,
            _ => Rule::Pass,
        }
    }
}

/// What a nested object hands to the indicator besides its own (pruned) value.
#[derive(Default)]
struct Found {
    provider: Option<String>,
    tlp: Option<&'static str>,
    has_name: bool,
}

/// One nested object; `nullable` = a null stands for "absent" (status, type) instead of
/// being outside the fast path (list elements).
#[derive(Clone, Copy)]
struct NestedSeed {
    kind: Nested,
    nullable: bool,
}

impl<'de> DeserializeSeed<'de> for NestedSeed {
    type Value = (Option<Node>, Found);
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NestedSeed {
    type Value = (Option<Node>, Found);
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        if self.nullable {
            Ok((None, Found::default()))
        } else {
            Err(unmodelled())
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut obj = Strict::default();
        let mut found = Found::default();
        while let Some(key) = map.next_key_seed(Key)? {
            let value = match self.kind.rule(&key) {
                Rule::Pass => map.next_value_seed(Pruned)?,
                Rule::Discard => {
                    map.next_value_seed(Pruned)?;
                    None
                }
                Rule::IdText => map.next_value_seed(IdText)?.map(Node::from),
                Rule::LongOrDrop => map.next_value_seed(LongOrDrop)?.map(Node::from),
                Rule::DateOrDrop => map.next_value_seed(YmdHms)?.or_drop(),
                Rule::Provider => {
                    let name = map.next_value_seed(Text)?;
                    let value = name.as_ref().filter(|n| !n.is_empty()).cloned();
                    found.provider = name;
                    value.map(Node::from)
                }
                Rule::Tlp { keep } => {
                    let value = map.next_value_seed(Pruned)?;
                    if let Some(t) = value.as_ref().and_then(Node::as_str) {
                        found.tlp = ECS_TLPS.iter().copied().find(|e| *e == t);
                    }
                    value.filter(|_| keep)
                }
                Rule::AttributeName => {
                    let name = map.next_value_seed(Text)?.ok_or_else(unmodelled)?;
                    found.has_name = true;
                    Some(Node::from(attribute_name(&name))).filter(|_| !name.is_empty())
                }
            };
            obj.put(key, value)?;
        }
        if matches!(self.kind, Nested::Attribute) && !found.has_name {
            return Err(unmodelled());
        }
        Ok((obj.finish(), found))
    }
}

/// §3.17: `lowercase` (Java `toLowerCase(Locale.ROOT)`), then `gsub` of `" "` → `_`.
fn attribute_name(name: &str) -> String {
    if name.is_ascii() {
        let bytes = name
            .bytes()
            .map(|b| {
                if b == b' ' {
                    b'_'
                } else {
                    b.to_ascii_lowercase()
                }
            })
            .collect();
        if let Ok(ascii) = String::from_utf8(bytes) {
            return ascii;
        }
    }
    ingest::java_lowercase(name).replace(' ', "_")
}

/// A list of nested objects; null = absent. For sources, the providers and TLPs found.
struct ListSeed {
    kind: Nested,
}

#[derive(Default)]
struct List {
    value: Option<Node>,
    providers: Vec<String>,
    tlps: Vec<&'static str>,
}

impl<'de> DeserializeSeed<'de> for ListSeed {
    type Value = List;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<List, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ListSeed {
    type Value = List;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of objects")
    }
    fn visit_unit<E>(self) -> Result<List, E> {
        Ok(List::default())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<List, A::Error> {
        let mut list = List::default();
        let mut items = Vec::new();
        let elem = NestedSeed {
            kind: self.kind,
            nullable: false,
        };
        while let Some((value, found)) = seq.next_element_seed(elem)? {
            items.extend(value);
            list.providers.extend(found.provider);
            list.tlps.extend(found.tlp);
        }
        list.value = (!items.is_empty()).then_some(Node::Array(items));
        Ok(list)
    }
}

// ------------------------------------------------------------------------------------------
// The indicator object.
// ------------------------------------------------------------------------------------------

/// A top-level key of the ThreatQ object the pipeline looks at.
#[derive(Clone, Copy)]
enum Field {
    Hash,
    /// An index into [`super::DATES`].
    Date(usize),
    Id,
    IndicatorId,
    Status,
    StatusId,
    Type,
    TypeId,
    Score,
    Description,
    Value,
    Sources,
    Attributes,
    Adversaries,
    /// An index into [`COUNTERS`].
    Counter(usize),
    /// Keys whose raw presence changes the pipeline's behaviour (§3.12, §4).
    Unmodelled,
    Other,
}

impl Field {
    fn of(key: &str) -> Field {
        match key {
            "hash" => Field::Hash,
            "updated_at" => Field::Date(0),
            "created_at" => Field::Date(1),
            "expired_at" => Field::Date(2),
            "expires_at" => Field::Date(3),
            "expires_calculated_at" => Field::Date(4),
            "published_at" => Field::Date(5),
            "touched_at" => Field::Date(6),
            "id" => Field::Id,
            "indicator_id" => Field::IndicatorId,
            "status" => Field::Status,
            "status_id" => Field::StatusId,
            "type" => Field::Type,
            "type_id" => Field::TypeId,
            "score" => Field::Score,
            "description" => Field::Description,
            "value" => Field::Value,
            "sources" => Field::Sources,
            "attributes" => Field::Attributes,
            "adversaries" => Field::Adversaries,
            "indicator_value" | "ioc_expired_at" => Field::Unmodelled,
            // `COUNTERS` is sorted (checked by a test).
            k if k.starts_with("related_") => COUNTERS
                .binary_search_by(|(name, _)| (*name).cmp(k))
                .map_or(Field::Other, Field::Counter),
            _ => Field::Other,
        }
    }

    /// A distinct bit per known key, to refuse repeated keys.
    fn bit(self) -> Option<u64> {
        let index = match self {
            Field::Hash => 0,
            Field::Date(i) => 1 + i,
            Field::Id => 8,
            Field::IndicatorId => 9,
            Field::Status => 10,
            Field::StatusId => 11,
            Field::Type => 12,
            Field::TypeId => 13,
            Field::Score => 14,
            Field::Description => 15,
            Field::Value => 16,
            Field::Sources => 17,
            Field::Attributes => 18,
            Field::Adversaries => 19,
            Field::Counter(i) => 20 + i,
            Field::Unmodelled | Field::Other => return None,
        };
        Some(1 << index)
    }
}

/// §3.14: the ECS mapping selected by the exact `threatq.type.name`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum IndicatorType {
    Email,
    Fqdn,
    Ip(&'static str),
    /// The `file.hash.*` field.
    Hash(&'static str),
    Filename,
    Url,
    X509,
    Unmapped,
}

impl IndicatorType {
    fn of(type_object: Option<&Node>) -> IndicatorType {
        let name = member(type_object, "name")
            .and_then(Node::as_str)
            .unwrap_or_default();
        match name {
            "Email Address" => IndicatorType::Email,
            "FQDN" => IndicatorType::Fqdn,
            "IP Address" => IndicatorType::Ip("ipv4-addr"),
            "IPv6 Address" => IndicatorType::Ip("ipv6-addr"),
            "MD5" => IndicatorType::Hash("md5"),
            "SHA-1" => IndicatorType::Hash("sha1"),
            "SHA-256" => IndicatorType::Hash("sha256"),
            "SHA-512" => IndicatorType::Hash("sha512"),
            "Filename" => IndicatorType::Filename,
            "URL" => IndicatorType::Url,
            "x509 Serial" => IndicatorType::X509,
            _ => IndicatorType::Unmapped,
        }
    }
}

/// The decoded indicator: the `threatq` object so far, and what later steps read from it.
#[derive(Default)]
struct Indicator {
    threatq: Object,
    hash: Option<String>,
    /// ISO text and time, when `updated_at` parsed (absent and `""` behave alike here).
    updated_at: Option<(CompactString, DateTime<Utc>)>,
    /// ISO text, or `""` (present but empty still decides the expiration reason, §4).
    expires_at: Option<CompactString>,
    expired_at: Option<CompactString>,
    score: Option<i64>,
    description: Option<String>,
    value: Option<String>,
    indicator_type: Option<IndicatorType>,
    status_expired: bool,
    providers: Vec<String>,
    tlps: Vec<&'static str>,
}

struct IndicatorSeed {
    keep_custom: bool,
}

impl<'de> DeserializeSeed<'de> for IndicatorSeed {
    type Value = Indicator;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Indicator, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for IndicatorSeed {
    type Value = Indicator;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a ThreatQ indicator object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Indicator, A::Error> {
        let mut ind = Indicator::default();
        let mut other = Strict::default();
        let mut seen = 0u64;
        let nested = |kind| NestedSeed {
            kind,
            nullable: true,
        };
        while let Some(key) = map.next_key_seed(Key)? {
            let field = Field::of(&key);
            if let Some(bit) = field.bit() {
                if seen & bit != 0 {
                    return Err(unmodelled());
                }
                seen |= bit;
            }
            let tq = &mut other.map;
            match field {
                Field::Hash => {
                    ind.hash = map.next_value_seed(Text)?;
                    if let Some(h) = ind.hash.as_ref().filter(|h| !h.is_empty()) {
                        tq.insert("hash", Node::from(h.clone()));
                    }
                }
                Field::Date(i) => match (i, map.next_value_seed(YmdHms)?) {
                    (_, Date::Null) => {}
                    // §3.6: a date the processor cannot parse records an error.
                    (_, Date::Bad) => return Err(unmodelled()),
                    (0, Date::Iso(text, fields)) => {
                        ind.updated_at =
                            Some((text, ingest::fields_utc(fields).ok_or_else(unmodelled)?));
                    }
                    (0, Date::Empty) => {}
                    (2, date) => ind.expired_at = Some(date.into_text()),
                    (3, date) => ind.expires_at = Some(date.into_text()),
                    (_, Date::Empty) => {}
                    (_, Date::Iso(text, _)) => {
                        tq.insert(super::DATES[i].0, Node::from(text));
                    }
                },
                Field::Id | Field::IndicatorId | Field::Counter(_) => {
                    if let Some(n) = map.next_value_seed(Long)? {
                        tq.insert(key.into_owned(), Node::from(n));
                    }
                }
                Field::StatusId | Field::TypeId => {
                    if let Some(s) = map.next_value_seed(IdText)? {
                        tq.insert(key.into_owned(), Node::from(s));
                    }
                }
                Field::Status => {
                    let (status, _) = map.next_value_seed(nested(Nested::Status))?;
                    ind.status_expired =
                        member(status.as_ref(), "name").and_then(Node::as_str) == Some("Expired");
                    if let Some(s) = status {
                        tq.insert("status", s);
                    }
                }
                Field::Type => {
                    let (ty, _) = map.next_value_seed(nested(Nested::Type))?;
                    ind.indicator_type = Some(IndicatorType::of(ty.as_ref()));
                    if let Some(t) = ty {
                        tq.insert("type", t);
                    }
                }
                Field::Score => ind.score = map.next_value_seed(Long)?,
                Field::Description => ind.description = map.next_value_seed(Text)?,
                Field::Value => ind.value = map.next_value_seed(Text)?,
                Field::Sources => {
                    let list = map.next_value_seed(ListSeed {
                        kind: Nested::Source {
                            keep_custom: self.keep_custom,
                        },
                    })?;
                    ind.providers = list.providers;
                    ind.tlps = list.tlps;
                    if let Some(v) = list.value {
                        tq.insert("sources", v);
                    }
                }
                Field::Attributes | Field::Adversaries => {
                    let kind = if matches!(field, Field::Attributes) {
                        Nested::Attribute
                    } else {
                        Nested::Adversary
                    };
                    if let Some(v) = map.next_value_seed(ListSeed { kind })?.value {
                        tq.insert(key.into_owned(), v);
                    }
                }
                Field::Unmodelled => return Err(unmodelled()),
                Field::Other => {
                    let v = map.next_value_seed(Pruned)?;
                    other.put(key, v)?;
                }
            }
        }
        ind.threatq = other.map;
        Ok(ind)
    }
}

impl Date {
    /// The text an expiration date contributes: ISO, or `""` when it was empty.
    fn into_text(self) -> CompactString {
        match self {
            Date::Iso(text, _) => text,
            _ => CompactString::const_new(""),
        }
    }
}

/// §3.11: the confidence band of a score.
fn confidence(score: i64) -> Option<&'static str> {
    match score {
        0..=4 => Some("Low"),
        5..=7 => Some("Medium"),
        8..=10 => Some("High"),
        _ => None,
    }
}

/// §4: the default-duration span, when the script would add it without recording anything
/// (unit `d`/`h`/`m` and a `Long.parseLong` amount); `None` sends the object to the reference.
fn default_span(exp: &IocExpiration) -> Option<chrono::Duration> {
    let raw = exp.raw.as_str();
    let (amount, unit) = raw.split_at(raw.char_indices().next_back()?.0);
    let decimal = !amount.starts_with("0x") && !amount.starts_with("-0x");
    if !matches!(unit, "d" | "h" | "m") || !decimal || ingest::parse_java_long(amount).is_none() {
        return None;
    }
    chrono::Duration::from_std(exp.duration).ok()
}

/// The value of `key` of an object node.
fn member<'a>(node: Option<&'a Node>, key: &str) -> Option<&'a Node> {
    match node? {
        Node::Object(o) => o.get(key),
        _ => None,
    }
}

fn text(s: &str) -> Node {
    Node::Str(s.into())
}

impl Indicator {
    /// Steps §3.1–3.25 on the decoded values, written straight into the output document.
    fn into_event(self, raw: &str, opts: &MapOptions, keep_custom: bool) -> Option<EcsEvent> {
        let Indicator {
            mut threatq,
            hash,
            updated_at,
            expires_at,
            expired_at,
            score,
            description,
            value,
            indicator_type,
            status_expired,
            providers,
            tlps,
        } = self;
        let mut indicator = Object::new();
        // Whether `threat.indicator` exists when §3.16 writes to it (§9.5).
        let mut threat_exists = false;

        // §3.10–3.11.
        if let Some(d) = description.as_ref().filter(|d| !d.is_empty()) {
            indicator.insert("description", text(d));
            threat_exists = true;
        }
        if let Some(s) = score {
            threat_exists = true;
            if let Some(band) = confidence(s) {
                indicator.insert("confidence", band);
            }
        }

        // §3.13 and §4.
        let mut ioc_expired_at = expired_at.clone().or_else(|| expires_at.clone());
        let mut reason = None;
        if let Some(exp) = opts.ioc_expiration.as_ref().filter(|e| !e.raw.is_empty()) {
            if ioc_expired_at.is_none() {
                let (iso, at) = updated_at.as_ref()?;
                ioc_expired_at = Some(if status_expired {
                    // The reference's DEVIATION: expire at `@timestamp` (= `updated_at`).
                    iso.clone()
                } else {
                    ingest::format_date(&at.checked_add_signed(default_span(exp)?)?)
                });
            }
            reason = Some(if expires_at.is_some() && expired_at.is_none() {
                REASON_EXPIRES_AT
            } else if expired_at.is_some() {
                REASON_EXPIRED_AT
            } else if status_expired {
                REASON_STATUS
            } else {
                REASON_DEFAULT
            });
        }

        // §3.5 and §3.14.
        let mut related_hash: Vec<Node> = hash
            .filter(|h| !h.is_empty())
            .map(Node::from)
            .into_iter()
            .collect();
        let mut related_ip = Vec::new();
        let nonempty = value.as_deref().filter(|v| !v.is_empty());
        let mut keep_value = true;
        let mut set_type = |indicator: &mut Object, ty: &'static str| {
            indicator.insert("type", ty);
            threat_exists = true;
        };
        match indicator_type.unwrap_or(IndicatorType::Unmapped) {
            IndicatorType::Email => {
                if let Some(v) = nonempty {
                    indicator.nested("email", "address", text(v));
                }
                set_type(&mut indicator, "email-addr");
            }
            IndicatorType::Fqdn => {
                if let Some(v) = nonempty {
                    indicator.nested("url", "domain", text(v));
                }
                set_type(&mut indicator, "domain-name");
            }
            IndicatorType::Ip(ty) => {
                if let Some(v) = nonempty {
                    indicator.insert("ip", text(v));
                    related_ip.push(text(v));
                }
                set_type(&mut indicator, ty);
            }
            IndicatorType::Hash(field) => {
                if let Some(v) = nonempty {
                    indicator.child("file").nested("hash", field, text(v));
                    if !related_hash.iter().any(|h| h.as_str() == Some(v)) {
                        related_hash.push(text(v));
                    }
                }
                set_type(&mut indicator, "file");
            }
            IndicatorType::Filename => {
                if let Some(v) = nonempty {
                    indicator.nested("file", "name", text(v));
                }
                indicator.nested("file", "type", "file");
                set_type(&mut indicator, "file");
            }
            IndicatorType::Url => {
                match value.as_deref().map(ingest::uri_parts) {
                    Some(Ok(mut parts)) => {
                        parts.insert("original".to_owned(), Value::from(value.as_deref()?));
                        ingest::remove_empty(&mut parts);
                        if !parts.is_empty() {
                            indicator.insert("url", Value::Object(parts));
                        }
                        keep_value = false;
                    }
                    _ => {
                        if let Some(v) = nonempty {
                            indicator.nested("url", "full", text(v));
                        }
                    }
                }
                set_type(&mut indicator, "url");
            }
            IndicatorType::X509 => {
                if let Some(v) = nonempty {
                    indicator.nested("x509", "serial_number", text(v));
                    threat_exists = true;
                }
            }
            IndicatorType::Unmapped => {}
        }

        // §3.16: both writes need `threat.indicator`, else the script fails (§9.5).
        if !tlps.is_empty() || !providers.is_empty() {
            if !threat_exists {
                return None;
            }
            if !tlps.is_empty() {
                let tlps: Vec<Node> = tlps.into_iter().map(Node::Const).collect();
                indicator.nested("marking", "tlp", tlps);
            }
            let providers: Vec<Node> = providers
                .into_iter()
                .filter(|p| !p.is_empty())
                .map(Node::from)
                .collect();
            indicator.insert_list("provider", providers);
        }

        // The rest of `threatq` (§3.12, §3.13, §3.21–3.22), pruned (§3.24).
        let mut insert_text = |key: &'static str, v: Option<CompactString>| {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                threatq.insert(key, Node::from(v));
            }
        };
        if keep_value {
            insert_text("indicator_value", value.map(CompactString::from));
        }
        insert_text("expires_at", expires_at);
        insert_text("expired_at", expired_at);
        insert_text("ioc_expired_at", ioc_expired_at);
        insert_text(
            "ioc_expiration_reason",
            reason.map(CompactString::const_new),
        );
        let timestamp = updated_at.as_ref().map(|(_, t)| *t);
        let at_timestamp = updated_at.map(|(iso, _)| iso);
        if keep_custom {
            insert_text("updated_at", at_timestamp.clone());
            insert_text("description", description.map(CompactString::from));
            if let Some(s) = score {
                threatq.insert("score", Node::from(s));
            }
        }

        // Assembly (§3.1–3.2, §3.7); empty parts are left out (§3.24).
        let mut doc = Object::with_capacity(8);
        if let Some(iso) = at_timestamp {
            doc.insert("@timestamp", Node::from(iso));
        }
        doc.nested("ecs", "version", "8.17.0");
        let mut event = Object::with_capacity(4);
        event.insert("category", Node::consts(&["threat"]));
        event.insert("kind", "enrichment");
        event.insert("original", text(raw));
        event.insert("type", Node::consts(&["indicator"]));
        doc.insert("event", event);
        let mut related = Object::new();
        related.insert_list("hash", related_hash);
        related.insert_list("ip", related_ip);
        doc.insert_object("related", related);
        let tags: Vec<Node> = opts
            .tags
            .iter()
            .filter(|t| !t.is_empty())
            .map(|t| text(t))
            .collect();
        doc.insert_list("tags", tags);
        if !indicator.is_empty() {
            doc.nested("threat", "indicator", indicator);
        }
        doc.insert_object("threatq", threatq);
        Some(EcsEvent {
            id: None,
            timestamp,
            doc: Document::finished(doc),
        })
    }
}
