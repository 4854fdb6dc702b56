//! The fast path: the same ECS document as [`super::reference`], built without a DOM of the
//! indicator and without dotted paths.
//!
//! The indicator is decoded once into typed slots (`Str`/`Scalar` borrow from the input when
//! they can; blocks passed through as sent are decoded straight to `Value`), and the document is
//! assembled with known keys in the pipeline's order wherever order is observable (the
//! `related.*` lists, `threat.indicator.reference`, `os.family`). The final empty-value cleaner
//! is the reference's own [`ingest::remove_empty`], so empty intermediate maps and `""` values
//! need no special care here.
//!
//! The fast path models the success side only. Whenever the reference engine would record an
//! error, fail the pipeline, or meet a shape whose outcome depends on a quirk (a repeated key, a
//! field colliding with a rename target, a number where a string is expected, a non-object list
//! element, …), [`map`] returns `None` and the caller runs the reference engine. Step numbers
//! (`C4`, `D44`, …) refer to `shared/spec/threatconnect-mapping.md`.

use compact_str::CompactString;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::reference::{associated_key_name, confidence_band, parse_zoned};
use crate::ingest::doc::Key;
use crate::ingest::fast::{
    ObjectOrSkip, Pass, ReadObject, Scalar, Skip, Str, Without, append_unique, fingerprint_strs,
    iso8601_date, once,
};
use crate::ingest::{self, ConvertType, DateFormat, Document, EcsEvent, MapOptions, Node, Object};

/// Maps `raw` like the reference engine, or `None` when the indicator needs the reference.
pub(super) fn map(raw: &str, opts: &MapOptions) -> Option<EcsEvent> {
    let indicator: Indicator<'_> = serde_json::from_str(raw).ok()?;
    indicator.into_event(raw, opts)
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

/// What an object decoder does with a key it does not list.
#[derive(Clone, Copy)]
enum Unknown {
    /// Dropped (the pipeline deletes the scratch object with every unlisted field).
    Skip,
    /// Kept as sent, unless it is one of these names, which the pipeline writes itself (a
    /// collision the fast path leaves to the reference).
    Keep(&'static [&'static str]),
    /// Refused (left to the reference).
    Refuse,
}

fn unknown_key<'de, A: MapAccess<'de>>(
    map: &mut A,
    rest: &mut Object,
    key: Str<'de>,
    policy: Unknown,
) -> Result<(), A::Error> {
    match policy {
        Unknown::Skip => map.next_value::<Skip>().map(|_| ()),
        Unknown::Keep(reserved) if !reserved.contains(&&*key) => {
            if rest.contains_key(&key) {
                return Err(de::Error::custom(format_args!("repeated key [{}]", &*key)));
            }
            let value = map.next_value_seed(Without(&[]))?;
            rest.insert(key.0.into_owned(), value);
            Ok(())
        }
        Unknown::Keep(_) | Unknown::Refuse => Err(de::Error::custom(format_args!(
            "key [{}] left to the reference engine",
            &*key
        ))),
    }
}

/// Like [`once`], but a null is refused too (for fields where the pipeline fails on null).
fn once_not_null<'de, A: MapAccess<'de>, T: de::Deserialize<'de>>(
    map: &mut A,
    slot: &mut Option<T>,
    key: &str,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::custom(format_args!("repeated key [{key}]")));
    }
    *slot = Some(map.next_value::<T>()?);
    Ok(())
}

/// An object decoder with one optional slot per known key.
macro_rules! object {
    (@reader) => { once };
    (@reader $reader:ident) => { $reader };
    (
        $(#[$meta:meta])*
        struct $name:ident<$lt:lifetime> {
            $($(#[$fmeta:meta])* $key:literal => $field:ident : $ty:ty $(= $reader:ident)?),* $(,)?
        }
        unknown = $policy:expr;
    ) => {
        $(#[$meta])*
        #[derive(Default)]
        struct $name<$lt> {
            $($(#[$fmeta])* $field: Option<$ty>,)*
            /// Unlisted keys kept as sent.
            rest: Object,
        }

        impl<'de> de::Deserialize<'de> for $name<'de> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $name<'de>;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(concat!("a ThreatConnect ", stringify!($name), " object"))
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                        let mut out = $name::default();
                        while let Some(key) = map.next_key::<Str<'de>>()? {
                            match &*key {
                                $($key => object!(@reader $($reader)?)(&mut map, &mut out.$field, $key)?,)*
                                _ => unknown_key(&mut map, &mut out.rest, key, $policy)?,
                            }
                        }
                        Ok(out)
                    }
                }
                d.deserialize_map(V)
            }
        }
    };
}

object! {
    /// One ThreatConnect indicator (an element of the API's `data` array).
    struct Indicator<'a> {
        "activeLocked" => active_locked: Scalar<'a>,
        "active" => active: Scalar<'a>,
        "address" => address: Str<'a>,
        "AS Number" => as_number: Str<'a>,
        "associatedArtifacts" => associated_artifacts: Pass,
        "associatedCases" => associated_cases: Pass,
        "associatedGroups" => associated_groups: DataList<Done<Group<'a>>>,
        "associatedIndicators" => associated_indicators: DataList<Done<AssociatedIndicator>>,
        "attributes" => attributes: DataList<Done<Attribute<'a>>>,
        "Block" => block: Pass,
        "confidence" => confidence: Scalar<'a>,
        "customAssociations" => custom_associations: Pass,
        "dateAdded" => date_added: Str<'a>,
        "deleted_at" => deleted_at: Str<'a>,
        "description" => description: Value,
        "dnsActive" => dns_active: Scalar<'a>,
        "dnsResolution" => dns_resolution: Pass,
        "enrichment" => enrichment: Pass,
        "externalDateAdded" => external_date_added: Str<'a>,
        "externalDateExpires" => external_date_expires: Str<'a>,
        "externalLastModified" => external_last_modified: Str<'a>,
        "falsePositiveReportedByUser" => false_positive_reported_by_user: Scalar<'a>,
        "falsePositives" => false_positives: Scalar<'a>,
        "fileActions" => file_actions: Pass,
        "fileOccurrences" => file_occurrences: Pass,
        "firstSeen" => first_seen: Str<'a>,
        "genericCustomIndicatorValues" => generic_custom_indicator_values: Pass,
        "geoLocation" => geo_location: Pass,
        "Hashtag" => hashtag: Pass,
        "hostName" => host_name: Str<'a>,
        "id" => id: Scalar<'a>,
        "investigationLinks" => investigation_links: Pass,
        "ip" => ip: Str<'a>,
        "Key Name" => key_name: Value,
        "lastFalsePositive" => last_false_positive: Str<'a>,
        "lastModified" => last_modified: Str<'a>,
        "lastSeen" => last_seen: Str<'a>,
        "legacyLink" => legacy_link: Str<'a>,
        "md5" => md5: Str<'a>,
        "Mutex" => mutex: Pass,
        "observations" => observations: Pass,
        "ownerId" => owner_id: Scalar<'a>,
        "ownerName" => owner_name: Pass,
        "privateFlag" => private_flag: Scalar<'a>,
        "rating" => rating: Scalar<'a>,
        "securityLabels" => security_labels: DataList<Done<Label<'a>>>,
        "sha1" => sha1: Str<'a>,
        "sha256" => sha256: Str<'a>,
        "size" => size: Scalar<'a>,
        "source" => source: Pass,
        "Subject" => subject: Value,
        "summary" => summary: Str<'a>,
        "tags" => tags: DataList<Done<Tag<'a>>>,
        "text" => text: Value,
        "threatAssessConfidence" => threat_assess_confidence: Scalar<'a>,
        "threatAssessRating" => threat_assess_rating: Scalar<'a>,
        "threatAssessScoreFalsePositive" => threat_assess_score_false_positive: Scalar<'a>,
        "threatAssessScoreObserved" => threat_assess_score_observed: Scalar<'a>,
        "threatAssessScore" => threat_assess_score: Scalar<'a>,
        "trackedUsers" => tracked_users: Pass,
        "type" => kind: Str<'a>,
        "User Agent String" => user_agent_string: Value,
        "Value Name" => value_name: Value,
        "Value Type" => value_type: Value,
        "webLink" => web_link: Str<'a>,
        "whoIs" => who_is: Pass,
        "whoisActive" => whois_active: Scalar<'a>,
    }
    unknown = Unknown::Skip;
}

/// A list element that is turned into its output as soon as it is decoded, so that lists hold
/// small values (the decoded slots of a group take more than a kilobyte).
trait Element: Sized {
    type Out;
    /// The output, or `None` for a shape left to the reference engine.
    fn finish(self) -> Option<Self::Out>;
}

/// One finished list element.
struct Done<T: Element>(T::Out);

impl<'de, T: Element + de::Deserialize<'de>> de::Deserialize<'de> for Done<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d)?
            .finish()
            .map(Done)
            .ok_or_else(|| de::Error::custom("element left to the reference engine"))
    }
}

/// A `{"data": [...], ...}` wrapper: the list (absent or null → `None`); other keys dropped.
struct DataList<T>(Option<Vec<T>>);

impl<'de, T: de::Deserialize<'de>> de::Deserialize<'de> for DataList<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: de::Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = DataList<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object with a data list")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut data = None;
                while let Some(key) = map.next_key::<Str<'de>>()? {
                    if &*key == "data" {
                        once(&mut map, &mut data, "data")?;
                    } else {
                        map.next_value::<Skip>()?;
                    }
                }
                Ok(DataList(data))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

object! {
    /// `createdBy` of a group or an attribute; any other key stays behind in `createdBy`
    /// upstream, which the fast path does not model.
    struct CreatedBy<'a> {
        "firstName" => first_name: Str<'a>,
        "lastName" => last_name: Str<'a>,
        "userName" => user_name: Str<'a>,
        "id" => id: Scalar<'a>,
        "owner" => owner: Value,
        "pseudonym" => pseudonym: Value,
    }
    unknown = Unknown::Refuse;
}

/// Names of the keys a group rename or convert writes (D1–D48).
const GROUP_TARGETS: &[&str] = &[
    "created_by",
    "date_added",
    "document",
    "down_vote_count",
    "due_date",
    "email_date",
    "escalation_date",
    "event_date",
    "external",
    "file",
    "first_seen",
    "generated_report",
    "last_modified",
    "last_seen",
    "legacy_link",
    "owner",
    "publish_date",
    "reminder_date",
    "score_breakdown",
    "score_includes_body",
    "up_vote",
    "up_vote_count",
    "web_link",
];

object! {
    /// One associated group (§7); unlisted keys stay as sent.
    struct Group<'a> {
        "createdBy" => created_by: CreatedBy<'a>,
        "assignments" => assignments: Value,
        "attributes" => attributes: GroupAttributes,
        "to" => to: Str<'a>,
        "from" => from: Str<'a>,
        "userName" => user_name: Skip,
        "dateAdded" => date_added: Str<'a>,
        "documentDateAdded" => document_date_added: Str<'a>,
        "dueDate" => due_date: Str<'a>,
        "emailDate" => email_date: Str<'a>,
        "escalationDate" => escalation_date: Str<'a>,
        "eventDate" => event_date: Str<'a>,
        "externalDateAdded" => external_date_added: Str<'a>,
        "externalDateExpires" => external_date_expires: Str<'a>,
        "externalLastModified" => external_last_modified: Str<'a>,
        "firstSeen" => first_seen: Str<'a>,
        "lastModified" => last_modified: Str<'a>,
        "lastSeen" => last_seen: Str<'a>,
        "publishDate" => publish_date: Str<'a>,
        "reminderDate" => reminder_date: Str<'a>,
        "documentType" => document_type: Value,
        "downVoteCount" => down_vote_count: Value,
        "fileName" => file_name: Value,
        "fileText" => file_text: Value,
        "fileType" => file_type: Value,
        "legacyLink" => legacy_link: Value,
        "ownerName" => owner_name: Value,
        "scoreBreakdown" => score_breakdown: Value,
        "upVoteCount" => up_vote_count: Value,
        "webLink" => web_link: Value,
        "fileSize" => file_size: Scalar<'a>,
        "generatedReport" => generated_report: Scalar<'a>,
        "malware" => malware: Scalar<'a>,
        "ownerId" => owner_id: Scalar<'a>,
        "scoreIncludesBody" => score_includes_body: Scalar<'a>,
        "upVote" => up_vote: Scalar<'a>,
        "id" => id: Scalar<'a>,
    }
    unknown = Unknown::Keep(GROUP_TARGETS);
}

/// A group's `attributes` (D47/D48): `Some(list)` when it has a `data` key (null → `None`
/// inside), each object element without the keys D48 removes. An object without `data` but
/// with other keys becomes a one-element list upstream; that is refused.
struct GroupAttributes(Option<Vec<Node>>);

impl<'de> de::Deserialize<'de> for GroupAttributes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = GroupAttributes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("group attributes")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut data: Option<Option<Vec<Node>>> = None;
                let mut other = false;
                while let Some(key) = map.next_key::<Str<'de>>()? {
                    if &*key == "data" {
                        if data.is_some() {
                            return Err(de::Error::custom("repeated key [data]"));
                        }
                        data = Some(map.next_value_seed(OptionalList(Without(
                            super::GROUP_ATTRIBUTE_DROPPED_KEYS,
                        )))?);
                    } else {
                        other = true;
                        map.next_value::<Skip>()?;
                    }
                }
                match data {
                    Some(list) => Ok(GroupAttributes(list)),
                    None if other => Err(de::Error::custom("group attributes without data")),
                    None => Ok(GroupAttributes(None)),
                }
            }
        }
        d.deserialize_map(V)
    }
}

/// `null` or a list whose elements are decoded with a seed.
struct OptionalList<S>(S);

impl<'de, S: DeserializeSeed<'de> + Copy> DeserializeSeed<'de> for OptionalList<S> {
    type Value = Option<Vec<S::Value>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de, S: DeserializeSeed<'de> + Copy> Visitor<'de> for OptionalList<S> {
    type Value = Option<Vec<S::Value>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("null or a list")
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut list = Vec::new();
        while let Some(v) = seq.next_element_seed(self.0)? {
            list.push(v);
        }
        Ok(Some(list))
    }
}

object! {
    /// One indicator attribute (§9); unlisted keys (`type`, `value`, `source`, …) stay.
    struct Attribute<'a> {
        "createdBy" => created_by: CreatedBy<'a>,
        "userName" => user_name: Skip,
        "dateAdded" => date_added: Str<'a>,
        "lastModified" => last_modified: Str<'a>,
        "default" => default: Scalar<'a>,
        "pinned" => pinned: Scalar<'a>,
        "id" => id: Scalar<'a>,
    }
    unknown = Unknown::Keep(&["created_by", "date_added", "last_modified"]);
}

object! {
    /// One security label (G42–G45).
    struct Label<'a> {
        "dateAdded" => date_added: Str<'a>,
        // A null name makes the TLP script fail upstream.
        "name" => name: Str<'a> = once_not_null,
        "id" => id: Skip,
        "description" => description: Skip,
        "color" => color: Skip,
        "owner" => owner: Skip,
    }
    unknown = Unknown::Keep(&["date_added"]);
}

object! {
    /// One tag (§13).
    struct Tag<'a> {
        "lastUsed" => last_used: Str<'a>,
        "name" => name: Value,
        "techniqueId" => technique_id: Str<'a>,
        "platforms" => platforms: Platforms<'a>,
        "tactics" => tactics: Value,
        "id" => id: Skip,
        "description" => description: Skip,
        "owner" => owner: Skip,
    }
    unknown = Unknown::Keep(&["last_used", "technique"]);
}

/// A tag's `platforms` as §13 step 5 reads it: the names under `data`, borrowed. A value that is
/// not an object, an object without `data` and a null `data` give no names, as upstream; a
/// `data` that is not a list of strings (or a repeated `data` key) is a decoding error, which
/// leaves the indicator to the reference engine. Anything else in the value is validated and
/// skipped: step 5 only reads the names, and the tag's document does not keep the value.
#[derive(Default)]
struct Platforms<'a>(Vec<Str<'a>>);

impl<'de> de::Deserialize<'de> for Platforms<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjectOrSkip::<Platforms<'de>>(std::marker::PhantomData))
    }
}

impl<'de> ReadObject<'de> for Platforms<'de> {
    fn read<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut data: Option<Option<Vec<Str<'de>>>> = None;
        while let Some(key) = map.next_key::<Str<'de>>()? {
            if &*key != "data" {
                map.next_value::<Skip>()?;
            } else if data.is_some() {
                return Err(de::Error::custom("repeated key [data]"));
            } else {
                data = Some(map.next_value()?);
            }
        }
        Ok(Platforms(data.flatten().unwrap_or_default()))
    }
}

/// One associated indicator after E1's recursive key rename.
struct AssociatedIndicator {
    /// Keys kept (after E1's renames).
    rest: Object,
    /// The values of the keys E2–E27 move or drop ([`ASSOCIATED_MOVED`]), decoded aside so their
    /// names are never allocated.
    moved: Vec<(&'static str, Node)>,
}

/// Keys of an associated indicator that E2–E27 move or remove (none of them is renamed by E1).
const ASSOCIATED_MOVED: &[&str] = &[
    "active",
    "activeLocked",
    "dnsActive",
    "privateFlag",
    "whoisActive",
    "ownerId",
    "ownerName",
    "dateAdded",
    "firstSeen",
    "lastModified",
    "lastSeen",
    "externalDateAdded",
    "externalDateExpires",
    "externalLastModified",
    "Block",
    "Value Name",
    "Value Type",
];

impl AssociatedIndicator {
    /// Takes the value of a moved key.
    fn take(&mut self, key: &str) -> Option<Node> {
        let i = self.moved.iter().position(|(k, _)| *k == key)?;
        Some(self.moved.swap_remove(i).1)
    }
}

impl<'de> de::Deserialize<'de> for AssociatedIndicator {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AssociatedIndicator;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an associated indicator object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut item = AssociatedIndicator {
                    rest: Object::with_capacity(40),
                    moved: Vec::with_capacity(ASSOCIATED_MOVED.len()),
                };
                while let Some(key) = map.next_key::<Str<'de>>()? {
                    match ASSOCIATED_MOVED.iter().find(|k| **k == &*key) {
                        Some(k) if item.moved.iter().any(|(m, _)| m == k) => {
                            return Err(de::Error::custom("repeated key"));
                        }
                        Some(k) => {
                            let value = map.next_value_seed(Renamed::Member)?;
                            item.moved.push((k, value));
                        }
                        None => renamed_entry(&mut map, &mut item.rest, &key)?,
                    }
                }
                Ok(item)
            }
        }
        d.deserialize_map(V)
    }
}

/// E1: where a value sits relative to the renamed objects. `rename_keys` renames the keys of
/// an object, of objects nested in it, and of objects that are direct elements of a list in it;
/// a list directly inside a list is copied as is.
#[derive(Clone, Copy)]
enum Renamed {
    /// The value of a key of a renamed object.
    Member,
    /// An element of a list that is a member.
    Element,
}

impl<'de> DeserializeSeed<'de> for Renamed {
    type Value = Node;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Renamed {
    type Value = Node;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Without(&[]).visit_bool(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Without(&[]).visit_i64(v)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Without(&[]).visit_u64(v)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Without(&[]).visit_f64(v)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Without(&[]).visit_str(v)
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Without(&[]).visit_string(v)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Without(&[]).visit_unit()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Node, A::Error> {
        match self {
            Renamed::Member => {
                let mut seq = seq;
                let mut list = Vec::new();
                while let Some(v) = seq.next_element_seed(Renamed::Element)? {
                    list.push(v);
                }
                Ok(Node::Array(list))
            }
            Renamed::Element => Without(&[]).visit_seq(seq),
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Node, A::Error> {
        renamed_map(map).map(Node::Object)
    }
}

/// An object with E1's key renames; a collision (or a repeated key) is refused.
fn renamed_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Object, A::Error> {
    let mut out = Object::new();
    while let Some(key) = map.next_key::<Str<'de>>()? {
        renamed_entry(&mut map, &mut out, &key)?;
    }
    Ok(out)
}

/// Decodes the value of `key` and stores it under its E1 name.
fn renamed_entry<'de, A: MapAccess<'de>>(
    map: &mut A,
    out: &mut Object,
    key: &str,
) -> Result<(), A::Error> {
    let value = map.next_value_seed(Renamed::Member)?;
    let scalar = !matches!(value, Node::Object(_) | Node::Array(_));
    let renamed = match key {
        "location" if scalar => "location_value",
        other => associated_key_name(other),
    };
    if out.contains_key(renamed) {
        return Err(de::Error::custom(format_args!("repeated key [{renamed}]")));
    }
    out.insert(known_key(renamed), value);
    Ok(())
}

/// An associated indicator's key after E1, borrowed from a static name when it is one the API
/// sends (so that no `String` is allocated for it), owned otherwise. A `match` on the text: the
/// compiler dispatches on the length first, cheaper here than a search through a sorted list.
fn known_key(key: &str) -> Key {
    macro_rules! borrowed {
        ($($name:literal)*) => {
            match key {
                $($name => Key::Borrowed($name),)*
                other => Key::Owned(other.to_owned()),
            }
        };
    }
    borrowed!(
        "address" "as_number" "confidence" "description" "hashtag" "host_name" "id" "ip"
        "key_name" "legacy_link" "md5" "mutex" "rating" "sha1" "sha256" "size" "subject"
        "summary" "text" "type" "user_agent_string" "web_link"
    )
}

/// The creator names of a group or attribute: first, last, user name.
type Creator<'a> = [Option<Str<'a>>; 3];

/// A finished group and what the document-level steps need from it.
struct GroupOut<'a> {
    doc: Object,
    creator: Creator<'a>,
    to: Option<Str<'a>>,
    from: Option<Str<'a>>,
}

impl<'a> Element for Group<'a> {
    type Out = GroupOut<'a>;
    fn finish(mut self) -> Option<GroupOut<'a>> {
        let creator = creator(self.created_by.as_ref());
        let (to, from) = (self.to.take(), self.from.take());
        Some(GroupOut {
            doc: self.into_doc()?,
            creator,
            to,
            from,
        })
    }
}

impl<'a> Element for Attribute<'a> {
    type Out = (Object, Creator<'a>);
    fn finish(self) -> Option<Self::Out> {
        let creator = creator(self.created_by.as_ref());
        Some((self.into_doc()?, creator))
    }
}

impl Element for Label<'_> {
    /// The label and its TLP marking.
    type Out = (Object, Option<&'static str>);
    fn finish(self) -> Option<Self::Out> {
        let tlp = self.tlp();
        Some((self.into_doc(), tlp))
    }
}

/// A finished tag and what §13 steps 2, 4 and 5 need from it.
struct TagOut<'a> {
    doc: Object,
    /// `techniqueId` and the tag's `name` (null when missing), when the tag has a technique.
    technique: Option<(Str<'a>, Value)>,
    platforms: Vec<Str<'a>>,
}

impl<'a> Element for Tag<'a> {
    type Out = TagOut<'a>;
    fn finish(mut self) -> Option<TagOut<'a>> {
        let platforms = self.platforms.take().map(|p| p.0).unwrap_or_default();
        let technique = self
            .technique_id
            .clone()
            .map(|id| (id, self.name.clone().unwrap_or(Value::Null)));
        Some(TagOut {
            doc: self.into_doc(),
            technique,
            platforms,
        })
    }
}

impl Element for AssociatedIndicator {
    type Out = Object;
    fn finish(self) -> Option<Object> {
        associated_indicator(self)
    }
}

fn creator<'a>(c: Option<&CreatedBy<'a>>) -> Creator<'a> {
    match c {
        Some(c) => [
            c.first_name.clone(),
            c.last_name.clone(),
            c.user_name.clone(),
        ],
        None => [None, None, None],
    }
}

// ---------------------------------------------------------------------------------------------
// Assembly
// ---------------------------------------------------------------------------------------------

/// The output objects of the document, filled field by field.
#[derive(Default)]
struct Out {
    /// `threat_connect.indicator`.
    tci: Object,
    /// `threat.indicator`.
    ti: Object,
    event: Object,
    user: Object,
    email: Object,
    related_user: Vec<Node>,
    related_hosts: Vec<Node>,
    related_ip: Vec<Node>,
    related_hash: Vec<Node>,
    reference: Vec<Node>,
    technique_id: Vec<Node>,
    technique_name: Vec<Node>,
    os_family: Vec<Node>,
    email_to: Vec<Node>,
    email_from: Vec<Node>,
}

fn string(s: &str) -> Node {
    Node::Str(s.into())
}

/// A top-level `date` processor guarded by `!= null && != ''` (G9–G27): the formatted date,
/// `Ok(None)` for an empty text, `Err` when the reference would record an error.
fn top_date(text: Option<&Str<'_>>) -> Result<Option<CompactString>, ()> {
    match text {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => iso8601_date(s).map(Some).ok_or(()),
    }
}

/// A `date` inside a `foreach` (failures only remove the source): the formatted date or nothing.
fn element_date(text: Option<&Str<'_>>) -> Option<CompactString> {
    text.and_then(|s| iso8601_date(s))
}

/// An element `date` over a decoded value (associated indicators).
fn value_date(v: Node) -> Option<CompactString> {
    match v {
        Node::Null => None,
        Node::Str(s) => iso8601_date(&s),
        other => ingest::date(&other.into_value(), &[DateFormat::Iso8601])
            .ok()
            .map(CompactString::from),
    }
}

/// ES `convert` of a decoded value, when it succeeds.
fn convert(v: Node, to: ConvertType) -> Option<Node> {
    ingest::convert(&v.into_value(), to).ok().map(Node::Value)
}

/// `tci.type instanceof String && tci.type.contains(needle)`.
fn kind_contains(kind: Option<&Str<'_>>, needle: &str) -> bool {
    kind.is_some_and(|k| k.contains(needle))
}

/// Copies a passed-through value into an ECS field (ES `set` with `copy_from` and
/// `ignore_empty_value`).
fn copy_value(v: Option<&Value>, to: &mut Object, key: &'static str) {
    if let Some(v) = v.filter(|v| !ingest::is_empty_value(v)) {
        to.insert(key, v.clone());
    }
}

impl CreatedBy<'_> {
    /// `created_by` (D1–D11 / §9).
    fn into_created_by(self) -> Object {
        // In key order: finishing then finds the object sorted.
        let mut m = Object::with_capacity(6);
        if let Some(n) = self.first_name {
            m.insert("first_name", n.into_value());
        }
        if let Some(id) = &self.id {
            m.insert("id", id.to_string_node());
        }
        if let Some(n) = self.last_name {
            m.insert("last_name", n.into_value());
        }
        for (key, v) in [("owner", self.owner), ("pseudonym", self.pseudonym)] {
            if let Some(v) = v {
                m.insert(key, v);
            }
        }
        if let Some(n) = self.user_name {
            m.insert("user_name", n.into_value());
        }
        m
    }
}

/// The creator names of each element, appended list by list (all first names, then all last
/// names, then all user names) to `related.user`.
fn append_creators<'b, 'a: 'b>(
    related_user: &mut Vec<Node>,
    creators: impl Iterator<Item = &'b Creator<'a>> + Clone,
) {
    for i in 0..3 {
        for c in creators.clone() {
            if let Some(name) = &c[i] {
                append_unique(related_user, name);
            }
        }
    }
}

impl Group<'_> {
    /// The group as stored under `tci.associated_groups.data` (D1–D48), or `None` for a shape
    /// left to the reference.
    fn into_doc(self) -> Option<Object> {
        let mut g = self.rest;
        if let Some(c) = self.created_by {
            g.insert_object("created_by", c.into_created_by());
        }
        if let Some(a) = self.assignments {
            g.insert("assignments", assignments(a)?);
        }
        for (key, text) in [
            ("date_added", &self.date_added),
            ("due_date", &self.due_date),
            ("email_date", &self.email_date),
            ("escalation_date", &self.escalation_date),
            ("event_date", &self.event_date),
            ("first_seen", &self.first_seen),
            ("last_modified", &self.last_modified),
            ("last_seen", &self.last_seen),
            ("publish_date", &self.publish_date),
            ("reminder_date", &self.reminder_date),
        ] {
            if let Some(d) = element_date(text.as_ref()) {
                g.insert(key, d);
            }
        }
        if let Some(d) = element_date(self.document_date_added.as_ref()) {
            g.nested("document", "date_added", d);
        }
        let mut external = Object::new();
        for (key, text) in [
            ("added", &self.external_date_added),
            ("expires", &self.external_date_expires),
        ] {
            if let Some(d) = element_date(text.as_ref()) {
                external.nested("date", key, d);
            }
        }
        if let Some(d) = element_date(self.external_last_modified.as_ref()) {
            external.insert("last_modified", d);
        }
        g.insert_object("external", external);
        // `file` and `owner` in key order: finishing then finds them sorted.
        if let Some(v) = self.document_type {
            g.nested("document", "type", v);
        }
        if let Some(v) = self.file_name {
            g.nested("file", "name", v);
        }
        if let Some(s) = &self.file_size {
            g.nested("file", "size", s.to_string_node());
        }
        for (key, v) in [("text", self.file_text), ("type", self.file_type)] {
            if let Some(v) = v {
                g.nested("file", key, v);
            }
        }
        if let Some(s) = &self.owner_id {
            g.nested("owner", "id", s.to_string_node());
        }
        if let Some(v) = self.owner_name {
            g.nested("owner", "name", v);
        }
        for (key, v) in [
            ("down_vote_count", self.down_vote_count),
            ("legacy_link", self.legacy_link),
            ("score_breakdown", self.score_breakdown),
            ("up_vote_count", self.up_vote_count),
            ("web_link", self.web_link),
        ] {
            if let Some(v) = v {
                g.insert(key, v);
            }
        }
        if let Some(s) = &self.id {
            g.insert("id", s.to_string_node());
        }
        for (key, s) in [
            ("generated_report", &self.generated_report),
            ("malware", &self.malware),
            ("score_includes_body", &self.score_includes_body),
            ("up_vote", &self.up_vote),
        ] {
            if let Some(s) = s {
                g.insert(key, Node::Bool(s.to_bool()?));
            }
        }
        if let Some(GroupAttributes(Some(list))) = self.attributes
            && !list.is_empty()
        {
            g.insert("attributes", list);
        }
        Some(g)
    }
}

/// D4/D5: every `assignments.data[*].user.id` converted to a string in place.
fn assignments(mut v: Value) -> Option<Value> {
    if let Value::Object(m) = &mut v {
        match m.get_mut("data") {
            None | Some(Value::Null) => {}
            Some(Value::Array(list)) => {
                for a in list {
                    if let Value::Object(a) = a
                        && let Some(Value::Object(user)) = a.get_mut("user")
                        && let Some(id) = user.get_mut("id").filter(|id| !id.is_null())
                    {
                        *id = ingest::convert(id, ConvertType::String).ok()?;
                    }
                }
            }
            Some(_) => return None,
        }
    }
    Some(v)
}

impl Attribute<'_> {
    /// The attribute as stored under `tci.attributes.data` (§9).
    fn into_doc(self) -> Option<Object> {
        let mut a = self.rest;
        if let Some(c) = self.created_by {
            a.insert_object("created_by", c.into_created_by());
        }
        for (key, text) in [
            ("date_added", &self.date_added),
            ("last_modified", &self.last_modified),
        ] {
            if let Some(d) = element_date(text.as_ref()) {
                a.insert(key, d);
            }
        }
        for (key, s) in [("default", &self.default), ("pinned", &self.pinned)] {
            if let Some(s) = s {
                a.insert(key, Node::Bool(s.to_bool()?));
            }
        }
        if let Some(s) = &self.id {
            a.insert("id", s.to_string_node());
        }
        Some(a)
    }
}

/// Keys an associated indicator must not carry: E2–E27 write them.
const ASSOCIATED_TARGETS: &[&str] = &[
    "_temp",
    "block",
    "date_added",
    "dns_active",
    "external",
    "first_seen",
    "last_modified",
    "last_seen",
    "owner",
    "private_flag",
    "value",
    "whois_active",
];

/// E2–E27 on one (renamed) associated indicator.
fn associated_indicator(mut item: AssociatedIndicator) -> Option<Object> {
    use ConvertType::{Boolean, Double, Ip, Long, String};
    let mut out = std::mem::take(&mut item.rest);
    if ASSOCIATED_TARGETS.iter().any(|k| out.contains_key(k)) {
        return None;
    }
    for (key, ty) in [
        ("size", String),
        ("confidence", Long),
        ("id", String),
        ("ip", Ip),
        ("rating", Double),
    ] {
        if let Some(v) = out.get_mut(key).filter(|v| !matches!(v, Node::Null)) {
            *v = convert(std::mem::replace(v, Node::Null), ty)?;
        }
    }
    let mut active = Object::new();
    for (from, to) in [("activeLocked", "locked"), ("active", "value")] {
        if let Some(v) = item.take(from).filter(|v| !matches!(v, Node::Null)) {
            active.insert(to, convert(v, Boolean)?);
        }
    }
    for (from, to) in [
        ("dnsActive", "dns_active"),
        ("privateFlag", "private_flag"),
        ("whoisActive", "whois_active"),
    ] {
        if let Some(v) = item.take(from).filter(|v| !matches!(v, Node::Null)) {
            out.insert(to, convert(v, Boolean)?);
        }
    }
    let mut owner = Object::new();
    if let Some(v) = item.take("ownerId").filter(|v| !matches!(v, Node::Null)) {
        owner.insert("id", convert(v, String)?);
    }
    if let Some(v) = item.take("ownerName") {
        owner.insert("name", v);
    }
    for (from, to) in [
        ("dateAdded", "date_added"),
        ("firstSeen", "first_seen"),
        ("lastModified", "last_modified"),
        ("lastSeen", "last_seen"),
    ] {
        if let Some(d) = item.take(from).and_then(value_date) {
            out.insert(to, d);
        }
    }
    let mut external = Object::new();
    for (from, key) in [
        ("externalDateAdded", "added"),
        ("externalDateExpires", "expires"),
    ] {
        if let Some(d) = item.take(from).and_then(value_date) {
            external.nested("date", key, d);
        }
    }
    if let Some(d) = item.take("externalLastModified").and_then(value_date) {
        external.insert("last_modified", d);
    }
    if let Some(v) = item.take("Block") {
        out.insert("block", v);
    }
    let mut value = Object::new();
    for (from, to) in [("Value Name", "name"), ("Value Type", "type")] {
        if let Some(v) = item.take(from) {
            value.insert(to, v);
        }
    }
    out.insert_object("active", active);
    out.insert_object("owner", owner);
    out.insert_object("value", value);
    out.insert_object("external", external);
    Some(out)
}

impl Label<'_> {
    /// The label as stored under `tci.security_labels.data` (G42, G44).
    fn into_doc(self) -> Object {
        let mut l = self.rest;
        if let Some(d) = element_date(self.date_added.as_ref()) {
            l.insert("date_added", d);
        }
        if let Some(n) = self.name {
            l.insert("name", n.node());
        }
        l
    }

    /// G43: the TLP marking of this label, if any.
    fn tlp(&self) -> Option<&'static str> {
        let name = self.name.as_deref()?;
        if !name.contains(':') {
            return None;
        }
        let second = name.split(':').nth(1)?;
        ["WHITE", "CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"]
            .into_iter()
            .find(|t| *t == second)
    }
}

impl Tag<'_> {
    /// The tag as stored under `tci.tags.data` (§13 steps 1, 3, 6, 7).
    fn into_doc(self) -> Object {
        let mut t = self.rest;
        if let Some(d) = element_date(self.last_used.as_ref()) {
            t.insert("last_used", d);
        }
        if let Some(n) = self.name {
            t.insert("name", n);
        }
        if let Some(tactics) = self.tactics {
            let tactics = match tactics {
                Value::Object(mut m) if m.contains_key("data") => m.remove("data"),
                other => Some(other),
            };
            if let Some(v) = tactics {
                t.insert("tactics", v);
            }
        }
        if let Some(id) = self.technique_id {
            t.nested("technique", "id", id.node());
        }
        t
    }
}

impl<'a> Indicator<'a> {
    fn into_event(mut self, raw: &str, opts: &MapOptions) -> Option<EcsEvent> {
        let mut o = Out {
            // About what a full indicator fills, so the entries are not moved while growing.
            tci: Object::with_capacity(48),
            ti: Object::with_capacity(16),
            // id, kind, category, type, original.
            event: Object::with_capacity(5),
            ..Out::default()
        };
        let id = fingerprint_strs(&[self.last_modified.as_deref(), self.summary.as_deref()]);

        // §5 B1–B3.
        let expiration = opts.ioc_expiration.as_ref().filter(|e| !e.raw.is_empty());
        let formats = [DateFormat::Iso8601, DateFormat::Unix];
        let deleted_at = match (&self.deleted_at, expiration, &self.last_modified) {
            (Some(d), _, _) if d.is_empty() => None,
            (Some(d), _, _) => Some(
                ingest::date(&Value::String(d.to_string()), &formats)
                    .ok()?
                    .into(),
            ),
            (None, Some(exp), Some(lm)) => {
                let t = parse_zoned(lm)?
                    .checked_add_signed(chrono::Duration::from_std(exp.duration).ok()?)?
                    .with_timezone(&chrono::Utc);
                let text = ingest::format_date(&t);
                // B3's `date` processor re-reads the text B2 wrote; for a four-digit year that
                // is the same text again.
                if (0..=9999).contains(&chrono::Datelike::year(&t)) {
                    Some(text)
                } else {
                    Some(
                        ingest::date(&Value::String(text.into_string()), &formats)
                            .ok()?
                            .into(),
                    )
                }
            }
            (None, _, _) => None,
        };
        if let Some(date) = deleted_at {
            o.tci.insert("deleted_at", date);
        }
        if let Some(exp) = expiration {
            o.tci.insert("expiration_duration", string(&exp.raw));
        }

        // §6 C1–C11.
        let mut active = Object::new();
        for (key, s) in [("locked", &self.active_locked), ("value", &self.active)] {
            if let Some(s) = s {
                active.insert(key, Node::Bool(s.to_bool()?));
            }
        }
        o.tci.insert_object("active", active);
        if let Some(address) = &self.address {
            o.tci.insert("address", address.node());
            if let Some((name, domain)) = address.split_once('@') {
                o.user.insert("name", string(name));
                o.user.insert("domain", string(domain));
                append_unique(&mut o.related_user, name);
            }
            if !address.is_empty() {
                o.ti.nested("email", "address", address.node());
                o.user.insert("email", address.node());
            }
        }
        if let Some(asn) = &self.as_number {
            o.tci.insert("as_number", asn.node());
            let spaced: String = asn
                .chars()
                .map(|c| if c.is_ascii_alphabetic() { ' ' } else { c })
                .collect();
            let number = ingest::parse_java_long(&ingest::java_trim(&spaced))?;
            o.ti.nested("as", "number", Value::from(number));
        }
        for (key, v) in [
            ("associated_artifacts", self.associated_artifacts.take()),
            ("associated_cases", self.associated_cases.take()),
        ] {
            if let Some(v) = v {
                o.tci.insert(key, v);
            }
        }

        // §7 D: associated groups.
        if let Some(DataList(Some(groups))) = self.associated_groups.take() {
            append_creators(&mut o.related_user, groups.iter().map(|g| &g.0.creator));
            for Done(g) in &groups {
                if let Some(to) = &g.to {
                    append_unique(&mut o.email_to, to);
                }
            }
            for Done(g) in &groups {
                if let Some(from) = &g.from {
                    append_unique(&mut o.email_from, from);
                }
            }
            let list = groups.into_iter().map(|Done(g)| g.doc.into()).collect();
            o.tci.nested("associated_groups", "data", Node::Array(list));
        }

        // §8 E: associated indicators.
        if let Some(DataList(Some(items))) = self.associated_indicators.take() {
            let list = items.into_iter().map(|Done(v)| v.into()).collect();
            o.tci
                .nested("associated_indicators", "data", Node::Array(list));
        }

        // §9 F: attributes.
        if let Some(DataList(Some(attrs))) = self.attributes.take() {
            append_creators(&mut o.related_user, attrs.iter().map(|a| &a.0.1));
            let list = attrs.into_iter().map(|Done((v, _))| v.into()).collect();
            o.tci.nested("attributes", "data", Node::Array(list));
        }

        // §10 G.
        let kind = self.kind.as_ref();
        if let Some(v) = self.block.take() {
            o.tci.insert("block", v);
        }
        if let Some(c) = &self.confidence {
            o.tci.insert("confidence", c.to_long()?);
            let n = match c {
                Scalar::Str(s) => ingest::parse_java_double(s)?,
                other => other.to_double()?.as_f64()?,
            };
            if !n.is_finite() {
                return None;
            }
            o.ti.insert("confidence", confidence_band(n));
        }
        let pass_through = [
            ("custom_associations", self.custom_associations.take()),
            ("dns_resolution", self.dns_resolution.take()),
            ("enrichment", self.enrichment.take()),
            ("file_actions", self.file_actions.take()),
            ("file_occurrences", self.file_occurrences.take()),
            (
                "generic_custom_indicator_values",
                self.generic_custom_indicator_values.take(),
            ),
            ("geo_location", self.geo_location.take()),
            ("hashtag", self.hashtag.take()),
            ("investigation_links", self.investigation_links.take()),
            ("mutex", self.mutex.take()),
            ("observations", self.observations.take()),
            ("source", self.source.take()),
            ("tracked_users", self.tracked_users.take()),
            ("who_is", self.who_is.take()),
        ];
        for (key, v) in pass_through {
            if let Some(v) = v {
                o.tci.insert(key, v);
            }
        }
        let booleans = [
            ("dns_active", &self.dns_active),
            (
                "false_positive_reported_by_user",
                &self.false_positive_reported_by_user,
            ),
            ("private_flag", &self.private_flag),
            ("whois_active", &self.whois_active),
        ];
        for (key, s) in booleans {
            if let Some(s) = s {
                o.tci.insert(key, Node::Bool(s.to_bool()?));
            }
        }
        if let Some(d) = self.description.take() {
            copy_value(Some(&d), &mut o.ti, "description");
            o.tci.insert("description", d);
        }
        let mut external = Object::new();
        if let Some(d) = top_date(self.external_date_added.as_ref()).ok()? {
            external.nested("date", "added", d);
        }
        if let Some(d) = top_date(self.external_date_expires.as_ref()).ok()? {
            external.nested("date", "expires", d);
        }
        o.tci.insert_object("external", external);
        // G11: `external_last.modified` (sic), G12.
        if let Some(d) = top_date(self.external_last_modified.as_ref()).ok()? {
            o.ti.insert("modified_at", d.clone());
            o.tci.nested("external_last", "modified", d);
        }
        if let Some(s) = &self.false_positives {
            o.tci.insert("false_positives", s.to_long()?);
        }
        let mut timestamp = None;
        for (key, text, ecs) in [
            ("first_seen", &self.first_seen, Some("first_seen")),
            ("last_false_positive", &self.last_false_positive, None),
            ("last_modified", &self.last_modified, None),
            ("last_seen", &self.last_seen, Some("last_seen")),
            ("date_added", &self.date_added, None),
        ] {
            if let Some(d) = top_date(text.as_ref()).ok()? {
                if let Some(ecs) = ecs {
                    o.ti.insert(ecs, d.clone());
                }
                if key == "last_modified" {
                    timestamp = Some(d.clone());
                }
                o.tci.insert(key, d);
            }
        }
        if let Some(host) = &self.host_name {
            o.tci.insert("host_name", host.node());
            append_unique(&mut o.related_hosts, host);
        }
        if let Some(s) = &self.id {
            o.tci.insert("id", s.to_string_node());
        }
        // G22/G23.
        let ip = match &self.ip {
            Some(ip) if !ip.is_empty() => {
                if !ingest::is_inet_address(ip) {
                    return None;
                }
                o.tci.insert("ip", ip.node());
                append_unique(&mut o.related_ip, ip);
                Some(ip)
            }
            _ => None,
        };
        // G28–G32.
        if let Some(k) = kind {
            o.tci.insert("type", k.node());
            if let Some(ecs) = super::ecs_indicator_type(k) {
                o.ti.insert("type", Node::consts(std::slice::from_ref(ecs)));
            }
            if &**k == "Address" {
                // The guards dereference `tci.ip` without a null check.
                let ip = ip?;
                o.ti.insert("ip", ip.node());
                if ip.contains('.') {
                    o.ti.insert("type", "ipv4-addr");
                } else if ip.contains(':') {
                    o.ti.insert("type", "ipv6-addr");
                }
            }
        }
        let is_file = kind_contains(kind, "File");
        let is_registry = kind_contains(kind, "Registry Key");
        if let Some(link) = &self.legacy_link {
            o.tci.insert("legacy_link", link.node());
            append_unique(&mut o.reference, link);
        }
        // G34, G36, G46, G47: hashes lower-cased [2.x].
        let md5 = self.md5.as_ref().map(|h| ingest::java_lowercase(h));
        let sha1 = self.sha1.as_ref().map(|h| ingest::java_lowercase(h));
        let sha256 = self.sha256.as_ref().map(|h| ingest::java_lowercase(h));
        let mut ti_file = Object::new();
        for (key, hash) in [("md5", &md5), ("sha1", &sha1), ("sha256", &sha256)] {
            if let Some(h) = hash {
                o.tci.insert(key, string(h));
                if is_file && !h.is_empty() {
                    ti_file.nested("hash", key, string(h));
                }
            }
        }
        if let Some(h) = &md5 {
            append_unique(&mut o.related_hash, h);
        }
        if let Some(h) = &sha1 {
            append_unique(&mut o.related_hash, h);
        }
        if md5.is_some()
            && let Some(h) = &sha256
        {
            append_unique(&mut o.related_hash, h);
        }
        let mut registry = Object::new();
        if let Some(k) = self.key_name.take() {
            if is_registry {
                copy_value(Some(&k), &mut registry, "path");
            }
            o.tci.insert("key_name", k);
        }
        let mut owner = Object::new();
        if let Some(s) = &self.owner_id {
            owner.insert("id", s.to_string_node());
        }
        if let Some(v) = self.owner_name.take() {
            owner.insert("name", v);
        }
        o.tci.insert_object("owner", owner);
        if let Some(s) = &self.rating {
            o.tci.insert("rating", s.to_double()?);
        }

        // G42–G45.
        if let Some(DataList(Some(labels))) = self.security_labels.take() {
            let tlp: Vec<Node> = labels
                .iter()
                .filter_map(|l| l.0.1)
                .map(Node::Const)
                .collect();
            if !tlp.is_empty() {
                o.ti.nested("marking", "tlp", tlp);
            }
            let list = labels.into_iter().map(|Done((v, _))| v.into()).collect();
            o.tci.nested("security_labels", "data", Node::Array(list));
        }
        if let Some(s) = &self.size {
            o.tci.insert("size", s.to_string_node());
            ti_file.insert("size", s.to_long()?);
        }
        if let Some(v) = self.subject.take() {
            copy_value(Some(&v), &mut o.email, "subject");
            o.tci.insert("subject", v);
        }
        if let Some(s) = &self.summary {
            o.tci.insert("summary", s.node());
            if !s.is_empty() {
                o.event.insert("id", s.node());
            }
        }

        // G52–G59.
        if let Some(DataList(Some(tags))) = self.tags.take() {
            for Done(t) in &tags {
                if let Some((id, name)) = &t.technique {
                    o.technique_name.push(name.clone().into());
                    // Step 4 runs after step 2 over all tags; no other list interleaves.
                    append_unique(&mut o.technique_id, id);
                }
            }
            for Done(t) in &tags {
                for name in &t.platforms {
                    append_unique(&mut o.os_family, name);
                }
            }
            let list = tags.into_iter().map(|Done(t)| t.doc.into()).collect();
            o.tci.nested("tags", "data", Node::Array(list));
        }
        if let Some(text) = self.text.take() {
            if kind_contains(kind, "URL") {
                let mut url = Object::new();
                copy_value(Some(&text), &mut url, "original");
                o.ti.insert("url", url);
            }
            o.tci.insert("text", text);
        }
        let mut assess = Object::new();
        if let Some(s) = &self.threat_assess_confidence {
            assess.insert("confidence", s.to_double()?);
        }
        if let Some(s) = &self.threat_assess_rating {
            assess.insert("rating", s.to_double()?);
        }
        for (key, s) in [
            ("false_positive", &self.threat_assess_score_false_positive),
            ("observed", &self.threat_assess_score_observed),
            ("value", &self.threat_assess_score),
        ] {
            if let Some(s) = s {
                assess.nested("score", key, s.to_long()?);
            }
        }
        o.tci.insert_object("threat_assess", assess);
        let mut user_agent = None;
        if let Some(v) = self.user_agent_string.take() {
            if !ingest::is_empty_value(&v) {
                user_agent = Some(v.clone());
            }
            o.tci.insert("user_agent_string", v);
        }
        let mut value = Object::new();
        if let Some(v) = self.value_name.take() {
            if is_registry {
                copy_value(Some(&v), &mut registry, "value");
            }
            value.insert("name", v);
        }
        if let Some(v) = self.value_type.take() {
            if is_registry && !ingest::is_empty_value(&v) {
                registry.nested("data", "type", v.clone());
            }
            value.insert("type", v);
        }
        o.tci.insert_object("value", value);
        o.ti.insert_object("registry", registry);
        o.ti.insert_object("file", ti_file);
        if let Some(link) = &self.web_link {
            o.tci.insert("web_link", link.node());
            append_unique(&mut o.reference, link);
        }
        o.assemble(
            raw,
            opts,
            id,
            timestamp,
            self.host_name.as_ref(),
            user_agent,
        )
    }
}

impl Out {
    /// Puts the objects together, finishes the document like the pipeline's last step (the
    /// empty-value cleaner), and types `@timestamp`.
    fn assemble(
        mut self,
        raw: &str,
        opts: &MapOptions,
        id: Option<String>,
        timestamp: Option<CompactString>,
        host_name: Option<&Str<'_>>,
        user_agent: Option<Value>,
    ) -> Option<EcsEvent> {
        // The document, `event`, `email` and `related` are filled in key order, so that
        // finishing finds them sorted and only checks it (sorting objects was about 4% of
        // mapping, and these are sorted for every indicator). Any order of distinct keys
        // gives the same document.
        let mut doc = Object::with_capacity(16);
        let ts = timestamp
            .as_deref()
            .and_then(|s| ingest::parse_iso8601(s).map(|t| t.with_timezone(&chrono::Utc)));
        if let Some(t) = timestamp {
            doc.insert("@timestamp", t);
        }
        doc.nested("ecs", "version", "8.11.0");
        let mut email = Object::with_capacity(3);
        email.nested("from", "address", self.email_from);
        email.extend(self.email);
        email.nested("to", "address", self.email_to);
        doc.insert("email", email);
        let mut event = Object::with_capacity(5);
        event.insert("category", Node::consts(&["threat"]));
        event.extend(self.event);
        event.insert("kind", "enrichment");
        event.insert("original", string(raw));
        event.insert("type", Node::consts(&["indicator"]));
        doc.insert("event", event);
        if let Some(h) = host_name.filter(|h| !h.is_empty()) {
            doc.nested("observer", "hostname", h.node());
        }
        doc.nested("os", "family", self.os_family);
        let mut related = Object::with_capacity(4);
        for (key, list) in [
            ("hash", self.related_hash),
            ("hosts", self.related_hosts),
            ("ip", self.related_ip),
            ("user", self.related_user),
        ] {
            related.insert(key, list);
        }
        doc.insert("related", related);
        if !opts.tags.is_empty() {
            let tags = opts.tags.iter().map(|t| string(t)).collect();
            doc.insert("tags", Node::Array(tags));
        }
        self.ti.insert("provider", "ThreatConnect");
        self.ti.insert_list("reference", self.reference);
        let mut threat = Object::new();
        threat.insert("indicator", self.ti);
        let mut technique = Object::new();
        technique.insert("id", self.technique_id);
        technique.insert("name", self.technique_name);
        threat.insert("technique", technique);
        doc.insert("threat", threat);
        doc.nested("threat_connect", "indicator", self.tci);
        doc.insert("user", self.user);
        if let Some(ua) = user_agent {
            doc.nested("user_agent", "original", ua);
        }
        Some(EcsEvent {
            id,
            timestamp: ts,
            doc: Document::finished(doc),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_associated_keys_are_borrowed() {
        assert!(matches!(known_key("web_link"), Key::Borrowed("web_link")));
        assert!(matches!(known_key("Custom Field"), Key::Owned(k) if k == "Custom Field"));
    }
}
