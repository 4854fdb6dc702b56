//! `Export` requests read where they lie: the receiver writes each record's NDJSON line
//! straight from the request's protobuf bytes, without decoding it into `LogRecord`,
//! `KeyValue` and `AnyValue` messages first.
//!
//! Decoding a page-10 000 backfill's requests with prost (an owned `String` for every key and
//! value, a `Vec` for every list, all freed again once written) was most of the host's CPU,
//! and it ran on the async workers that also answer the component's check-ins. Here a request
//! is walked once, on the blocking pool, and keys and strings are borrowed from its bytes.
//!
//! The walk reads the canonical encoding that every OTLP client writes: each singular message
//! field once, one member of `AnyValue`'s `oneof`. Anything else (a repeated singular message,
//! which prost would merge; two `oneof` members; nesting near prost's recursion limit; a group
//! or a wrong wire type; invalid UTF-8; a truncated field) makes it give up on the request
//! ([`Unusual`]): the receiver then decodes it with prost as before, whose answer (or error)
//! stands. Property tests hold the two to the same lines, and hold the walk to giving up on
//! whatever prost refuses.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::Write as _;

use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value as AnyKind};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::encoding::{WireType, decode_key, decode_varint};

use super::receiver::{DATA_STREAM, METADATA, write_members_then};
use crate::ingest::json::write_str;

/// The walk met something it does not read itself; prost reads the request instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unusual;

type Walked<T> = Result<T, Unusual>;

/// Deeper than this (messages inside messages, the request being 1) is left to prost, whose
/// limit is 100.
const MAX_DEPTH: u32 = 90;

/// One field's value, as its wire type carries it.
#[derive(Clone, Copy)]
enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32,
    Bytes(&'a [u8]),
}

/// Calls `each` with every field of the message `buf`, in order.
fn each_field<'a>(
    mut buf: &'a [u8],
    mut each: impl FnMut(u32, Field<'a>) -> Walked<()>,
) -> Walked<()> {
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf).map_err(|_| Unusual)?;
        let field = match wire {
            WireType::Varint => Field::Varint(decode_varint(&mut buf).map_err(|_| Unusual)?),
            WireType::SixtyFourBit => {
                let (eight, rest) = buf.split_first_chunk::<8>().ok_or(Unusual)?;
                buf = rest;
                Field::Fixed64(u64::from_le_bytes(*eight))
            }
            WireType::ThirtyTwoBit => {
                let (_, rest) = buf.split_first_chunk::<4>().ok_or(Unusual)?;
                buf = rest;
                Field::Fixed32
            }
            WireType::LengthDelimited => {
                let len = decode_varint(&mut buf).map_err(|_| Unusual)?;
                let len = usize::try_from(len).map_err(|_| Unusual)?;
                if len > buf.len() {
                    return Err(Unusual);
                }
                let (bytes, rest) = buf.split_at(len);
                buf = rest;
                Field::Bytes(bytes)
            }
            WireType::StartGroup | WireType::EndGroup => return Err(Unusual),
        };
        each(tag, field)?;
    }
    Ok(())
}

/// A `string` field's text.
fn text(bytes: &[u8]) -> Walked<&str> {
    std::str::from_utf8(bytes).map_err(|_| Unusual)
}

/// Checks a field of a known tag whose value is not needed: its wire type, and for a string
/// its UTF-8, as prost would.
fn check(field: Field<'_>, wire: WireType, is_string: bool) -> Walked<()> {
    let ok = match (field, wire) {
        (Field::Varint(_), WireType::Varint)
        | (Field::Fixed64(_), WireType::SixtyFourBit)
        | (Field::Fixed32, WireType::ThirtyTwoBit) => true,
        (Field::Bytes(b), WireType::LengthDelimited) => !is_string || text(b).is_ok(),
        _ => false,
    };
    if ok { Ok(()) } else { Err(Unusual) }
}

/// A message field's bytes, or [`Unusual`] for another wire type.
fn message(field: Field<'_>) -> Walked<&[u8]> {
    match field {
        Field::Bytes(b) => Ok(b),
        _ => Err(Unusual),
    }
}

/// What one request held: its records as NDJSON lines, and how many per
/// `data_stream.dataset`.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Lines {
    pub bytes: Vec<u8>,
    pub records: u64,
    pub per_dataset: BTreeMap<String, u64>,
}

impl Lines {
    pub(crate) fn count(&mut self, dataset: &str) {
        self.records += 1;
        match self.per_dataset.get_mut(dataset) {
            Some(n) => *n += 1,
            None => {
                self.per_dataset.insert(dataset.to_owned(), 1);
            }
        }
    }
}

/// The lines of an `ExportLogsServiceRequest`'s records, in order, as
/// [`write_line`](super::receiver::write_line) writes them from the decoded request.
pub(crate) fn request_lines(request: &[u8]) -> Walked<Lines> {
    let mut lines = Lines::default();
    each_field(request, |tag, field| match tag {
        1 => resource_logs(message(field)?, &mut lines),
        _ => Ok(()),
    })?;
    Ok(lines)
}

fn resource_logs(buf: &[u8], lines: &mut Lines) -> Walked<()> {
    logs::<Resource>(buf, lines, scope_logs)
}

fn scope_logs(buf: &[u8], lines: &mut Lines) -> Walked<()> {
    logs::<InstrumentationScope>(buf, lines, log_record)
}

/// A `ResourceLogs` or a `ScopeLogs`: its `M` (1), its children (2, each read by `child`) and
/// its schema URL (3).
fn logs<M: prost::Message + Default>(
    buf: &[u8],
    lines: &mut Lines,
    child: fn(&[u8], &mut Lines) -> Walked<()>,
) -> Walked<()> {
    each_field(buf, |tag, field| match tag {
        // Not written, but prost would refuse the request for a bad one.
        1 => M::decode(message(field)?).map(drop).map_err(|_| Unusual),
        2 => child(message(field)?, lines),
        3 => check(field, WireType::LengthDelimited, true),
        _ => Ok(()),
    })
}

/// A `KeyValue`: its key, and its value's bytes when it has one.
type Pair<'a> = (&'a str, Option<&'a [u8]>);

fn log_record(buf: &[u8], lines: &mut Lines) -> Walked<()> {
    let mut body = None;
    let mut attributes: Vec<Pair<'_>> = Vec::new();
    each_field(buf, |tag, field| match tag {
        1 | 11 => check(field, WireType::SixtyFourBit, false),
        2 | 7 => check(field, WireType::Varint, false),
        8 => check(field, WireType::ThirtyTwoBit, false),
        3 | 12 => check(field, WireType::LengthDelimited, true),
        9 | 10 => check(field, WireType::LengthDelimited, false),
        5 if body.is_none() => {
            body = Some(message(field)?);
            Ok(())
        }
        // A second body would be merged into the first.
        5 => Err(Unusual),
        6 => {
            attributes.push(key_value(message(field)?)?);
            Ok(())
        }
        _ => Ok(()),
    })?;
    // Depth: request 1, resource logs 2, scope logs 3, record 4, body 5 (an attribute: its
    // pair 5, its value 6; a body kvlist's value: list 6, pair 7, value 8).
    let body = body.map(|b| read_any(b, 5)).transpose()?;
    // Prost reads every attribute, the ones no line shows too.
    for (_, value) in &attributes {
        check_value(*value, 6)?;
    }
    let first = |key: &str| {
        attributes
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| *v)
    };
    let dataset = match first("data_stream.dataset") {
        Some(v) => match read_any(v, 6)? {
            Some(Any::Str(s)) => s,
            _ => "",
        },
        None => "",
    };
    lines.count(dataset);
    let out = &mut lines.bytes;
    let mut members: Vec<(&str, Member<'_>)> = match body {
        Some(Some(Any::Kvlist(list))) => key_values(list)?
            .into_iter()
            .map(|(key, value)| (key, Member::Value(value)))
            .collect(),
        Some(other) => vec![("message", Member::Body(other))],
        None => Vec::new(),
    };
    let from_attributes = |table: [(&'static str, &str); 3]| -> Vec<_> {
        table
            .into_iter()
            .filter_map(|(to, from)| Some((to, Some(first(from)?))))
            .collect()
    };
    members.push(("@metadata", Member::Attributes(from_attributes(METADATA))));
    let ds = from_attributes(DATA_STREAM);
    if !ds.is_empty() {
        members.push(("data_stream", Member::Attributes(ds)));
    }
    // A body member that `@metadata` or `data_stream` (or a later body member) replaces is
    // not written, but prost reads it all the same.
    let failed = Cell::new(Ok(()));
    let fail = |result: Walked<()>| failed.set(failed.get().and(result));
    write_members_then(
        out,
        members,
        |out, member| {
            fail(match member {
                Member::Value(v) => write_value(out, v, 8),
                Member::Body(v) => write_any(out, v, 5),
                Member::Attributes(list) => write_pairs(out, list, 6),
            });
        },
        |member| {
            if let Member::Value(v) = member {
                fail(check_value(v, 8));
            }
        },
    );
    failed.get()?;
    out.push(b'\n');
    Ok(())
}

/// A top-level member of a line.
enum Member<'a> {
    /// A body kvlist member: its value's bytes, if any.
    Value(Option<&'a [u8]>),
    /// A body that is not a kvlist, as `message`.
    Body(Option<Any<'a>>),
    /// `@metadata` or `data_stream`: attribute values' bytes.
    Attributes(Vec<Pair<'a>>),
}

fn key_value(buf: &[u8]) -> Walked<Pair<'_>> {
    let (mut key, mut value) = ("", None);
    each_field(buf, |tag, field| match tag {
        // A repeated string field: the last one stands, as in prost.
        1 => {
            key = text(message(field)?)?;
            Ok(())
        }
        2 if value.is_none() => {
            value = Some(message(field)?);
            Ok(())
        }
        2 => Err(Unusual),
        3 => check(field, WireType::Varint, false),
        _ => Ok(()),
    })?;
    Ok((key, value))
}

/// A `KeyValueList`'s pairs.
fn key_values(buf: &[u8]) -> Walked<Vec<Pair<'_>>> {
    let mut pairs = Vec::new();
    each_field(buf, |tag, field| match tag {
        1 => {
            pairs.push(key_value(message(field)?)?);
            Ok(())
        }
        _ => Ok(()),
    })?;
    Ok(pairs)
}

/// Writes `pairs` as an object (see [`write_members_then`]), their values at `depth`. A value
/// that a later pair of the same key replaces is read all the same, as prost reads it.
fn write_pairs(out: &mut Vec<u8>, pairs: Vec<Pair<'_>>, depth: u32) -> Walked<()> {
    let failed = Cell::new(Ok(()));
    let fail = |result: Walked<()>| failed.set(failed.get().and(result));
    write_members_then(
        out,
        pairs,
        |out, v| fail(write_value(out, v, depth)),
        |v| fail(check_value(v, depth)),
    );
    failed.get()
}

/// Reads a value as prost would, writing nothing.
fn check_value(value: Option<&[u8]>, depth: u32) -> Walked<()> {
    write_value(&mut Vec::new(), value, depth)
}

/// An `AnyValue`'s member; lists and kvlists are still bytes.
#[derive(Clone, Copy)]
enum Any<'a> {
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Array(&'a [u8]),
    Kvlist(&'a [u8]),
    Bytes(&'a [u8]),
    Strindex(i32),
}

/// Reads an `AnyValue` at `depth`: `None` when it has no member.
fn read_any(buf: &[u8], depth: u32) -> Walked<Option<Any<'_>>> {
    if depth > MAX_DEPTH {
        return Err(Unusual);
    }
    let mut value = None;
    each_field(buf, |tag, field| {
        let read = match (tag, field) {
            (1, Field::Bytes(b)) => Any::Str(text(b)?),
            (2, Field::Varint(v)) => Any::Bool(v != 0),
            // Two's complement, as prost reads `int64` and `int32`.
            (3, Field::Varint(v)) => Any::Int(v as i64),
            (4, Field::Fixed64(v)) => Any::Double(f64::from_bits(v)),
            (5, Field::Bytes(b)) => Any::Array(b),
            (6, Field::Bytes(b)) => Any::Kvlist(b),
            (7, Field::Bytes(b)) => Any::Bytes(b),
            (8, Field::Varint(v)) => Any::Strindex(v as i32),
            (1..=8, _) => return Err(Unusual),
            _ => return Ok(()),
        };
        // A second member: prost keeps the last or merges the two.
        if value.replace(read).is_some() {
            return Err(Unusual);
        }
        Ok(())
    })?;
    Ok(value)
}

/// Writes the value whose bytes are `value` (`None`: `null`), at `depth`.
fn write_value(out: &mut Vec<u8>, value: Option<&[u8]>, depth: u32) -> Walked<()> {
    match value {
        Some(bytes) => write_any(out, read_any(bytes, depth)?, depth),
        None => {
            out.extend_from_slice(b"null");
            Ok(())
        }
    }
}

/// Writes what [`write_any`](super::receiver) writes for the same value.
fn write_any(out: &mut Vec<u8>, value: Option<Any<'_>>, depth: u32) -> Walked<()> {
    let Some(value) = value else {
        out.extend_from_slice(b"null");
        return Ok(());
    };
    match value {
        Any::Str(s) => write_str(out, s),
        Any::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        Any::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Any::Strindex(i) => {
            let _ = write!(out, "{i}");
        }
        Any::Double(d) => match serde_json::Number::from_f64(d) {
            Some(n) => {
                let _ = serde_json::to_writer(&mut *out, &n);
            }
            None => out.extend_from_slice(b"null"),
        },
        Any::Array(list) => {
            out.push(b'[');
            let mut first = true;
            each_field(list, |tag, field| {
                if tag != 1 {
                    return Ok(());
                }
                if !first {
                    out.push(b',');
                }
                first = false;
                // Depth: the list is one level, its values the next.
                write_any(out, read_any(message(field)?, depth + 2)?, depth + 2)
            })?;
            out.push(b']');
        }
        Any::Kvlist(list) => {
            // Depth: the list, the pair, the value.
            write_pairs(out, key_values(list)?, depth + 3)?;
        }
        Any::Bytes(b) => {
            let value = AnyValue {
                value: Some(AnyKind::BytesValue(b.to_vec())),
            };
            let _ = serde_json::to_writer(&mut *out, &crate::sink::otlp::any_value_to_json(&value));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::receiver::decoded_lines;
    use crate::host::receiver::tests::{kind, kv};
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValue, KeyValueList};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use proptest::prelude::*;
    use prost::Message as _;

    /// Any `AnyValue`, every member kind included (bytes, string indexes, NaN, no member).
    fn arb_any() -> impl Strategy<Value = AnyValue> + Clone {
        let leaf = prop_oneof![
            Just(AnyValue::default()),
            prop::sample::select(&["", "a", "x\"\\\u{1}é", "data_stream"][..])
                .prop_map(|s| kind(AnyKind::StringValue(s.to_owned()))),
            any::<bool>().prop_map(|b| kind(AnyKind::BoolValue(b))),
            any::<i64>().prop_map(|i| kind(AnyKind::IntValue(i))),
            any::<f64>().prop_map(|d| kind(AnyKind::DoubleValue(d))),
            prop::collection::vec(any::<u8>(), 0..6).prop_map(|b| kind(AnyKind::BytesValue(b))),
            any::<i32>().prop_map(|i| kind(AnyKind::StringValueStrindex(i))),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|values| kind(AnyKind::ArrayValue(ArrayValue { values }))),
                arb_pairs(inner, &["a", "b", "\"", "@metadata", "message"])
                    .prop_map(|values| kind(AnyKind::KvlistValue(KeyValueList { values }))),
            ]
        })
    }

    /// Pairs with keys from `keys` (repeats included) and values, or none, from `values`.
    fn arb_pairs(
        values: impl Strategy<Value = AnyValue> + Clone,
        keys: &'static [&'static str],
    ) -> impl Strategy<Value = Vec<KeyValue>> {
        prop::collection::vec(
            (
                prop::sample::select(keys),
                prop::option::weighted(0.9, values),
            ),
            0..5,
        )
        .prop_map(|pairs| pairs.into_iter().map(|(k, v)| kv(k, v)).collect())
    }

    fn arb_record() -> impl Strategy<Value = LogRecord> {
        let attribute_keys = &[
            "elastic.input_id",
            "elastic.stream_id",
            "elasticsearch.document_id",
            "data_stream.type",
            "data_stream.dataset",
            "data_stream.namespace",
            "other",
        ][..];
        (
            prop::option::weighted(0.9, arb_any()),
            arb_pairs(arb_any(), attribute_keys),
            any::<u64>(),
            "[a-z]{0,4}",
        )
            .prop_map(|(body, attributes, time, severity)| LogRecord {
                body,
                attributes,
                time_unix_nano: time,
                severity_text: severity,
                trace_id: vec![1; 16],
                flags: 1,
                ..Default::default()
            })
    }

    fn arb_request() -> impl Strategy<Value = ExportLogsServiceRequest> {
        let scope = prop::collection::vec(arb_record(), 0..4).prop_map(|log_records| ScopeLogs {
            scope: Some(InstrumentationScope {
                name: "ti-sidecar".into(),
                ..Default::default()
            }),
            log_records,
            schema_url: "s".into(),
        });
        let resource = prop::collection::vec(scope, 0..3).prop_map(|scope_logs| ResourceLogs {
            resource: Some(Resource::default()),
            scope_logs,
            ..Default::default()
        });
        prop::collection::vec(resource, 0..3)
            .prop_map(|resource_logs| ExportLogsServiceRequest { resource_logs })
    }

    /// The same lines as prost's decoding gives, and nothing prost refuses.
    fn assert_as_prost(bytes: &[u8]) -> Result<(), TestCaseError> {
        match (request_lines(bytes), decoded_lines(bytes)) {
            (Ok(walked), Ok(decoded)) => {
                prop_assert_eq!(
                    String::from_utf8_lossy(&walked.bytes),
                    String::from_utf8_lossy(&decoded.bytes)
                );
                prop_assert_eq!(walked, decoded);
            }
            (Ok(_), Err(e)) => prop_assert!(false, "read what prost refuses: {e}"),
            (Err(Unusual), _) => {}
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Every request a client encodes is read by the walk, to prost's lines.
        #[test]
        fn encoded_requests_are_walked_to_prosts_lines(request in arb_request()) {
            let bytes = request.encode_to_vec();
            prop_assert!(request_lines(&bytes).is_ok(), "the walk gave up on a canonical request");
            assert_as_prost(&bytes)?;
        }

        /// Cut, doubled and replaced bytes: the walk reads what prost reads, the same way, or
        /// leaves it to prost.
        #[test]
        fn damaged_requests_are_read_as_prost_reads_them_or_left_to_it(
            request in arb_request(),
            edits in prop::collection::vec((0u8..4, any::<usize>(), any::<u8>()), 1..4),
        ) {
            let mut bytes = request.encode_to_vec();
            for (edit, at, with) in edits {
                if bytes.is_empty() {
                    break;
                }
                let i = at % bytes.len();
                match edit {
                    0 => { bytes.remove(i); }
                    1 => bytes.insert(i, bytes[i]),
                    2 => bytes[i] = with,
                    _ => bytes.insert(i, with),
                }
            }
            assert_as_prost(&bytes)?;
        }
    }

    fn request_of(record: LogRecord) -> Vec<u8> {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![record],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    /// What prost merges or refuses is left to it, and the receiver's answer is prost's.
    #[test]
    fn requests_prost_would_merge_or_refuse_are_left_to_prost() {
        let body = |k| {
            request_of(LogRecord {
                body: Some(kind(k)),
                ..Default::default()
            })
        };
        let string = body(AnyKind::StringValue("a".into()));
        // Two bodies in one record: prost merges them.
        let two_bodies = {
            let body = |k| {
                LogRecord {
                    body: Some(kind(k)),
                    ..Default::default()
                }
                .encode_to_vec()
            };
            let mut record = body(AnyKind::StringValue("a".into()));
            record.extend_from_slice(&body(AnyKind::IntValue(3)));
            request_of_bytes(&record)
        };
        // Two members of the oneof in one value: prost keeps the last.
        let two_members = {
            let mut value = kind(AnyKind::StringValue("a".into())).encode_to_vec();
            value.extend_from_slice(&kind(AnyKind::IntValue(7)).encode_to_vec());
            let mut record = Vec::new();
            prost::encoding::bytes::encode(5, &value, &mut record);
            request_of_bytes(&record)
        };
        // Nesting beyond the walk's depth.
        let mut deep = kind(AnyKind::IntValue(1));
        for _ in 0..40 {
            deep = kind(AnyKind::KvlistValue(KeyValueList {
                values: vec![kv("k", Some(deep))],
            }));
        }
        let deep = request_of(LogRecord {
            body: Some(deep),
            ..Default::default()
        });
        // Invalid UTF-8 in a string: prost refuses the request.
        let mut invalid = string.clone();
        let at = invalid.iter().rposition(|&b| b == b'a').unwrap();
        invalid[at] = 0xFF;
        assert!(request_lines(&string).is_ok());
        for (what, bytes) in [
            ("two bodies", two_bodies),
            ("two oneof members", two_members),
            ("deep nesting", deep),
            ("invalid UTF-8", invalid.clone()),
        ] {
            assert_eq!(request_lines(&bytes), Err(Unusual), "{what}");
        }
        assert!(decoded_lines(&invalid).is_err());
    }

    /// Regression: a body member named `@metadata` (or `data_stream`) is replaced in the line
    /// by the one built from the attributes, so the walk did not read its value, and accepted a
    /// request whose value there prost refuses (found by the damaged-request property test).
    #[test]
    fn a_body_member_the_attributes_replace_is_still_read() {
        for name in ["@metadata", "data_stream"] {
            let value = kind(AnyKind::StringValue("\u{7f}".into()));
            let record = LogRecord {
                body: Some(kind(AnyKind::KvlistValue(KeyValueList {
                    values: vec![kv(name, Some(value))],
                }))),
                attributes: vec![kv(
                    "data_stream.type",
                    Some(kind(AnyKind::StringValue("logs".into()))),
                )],
                ..Default::default()
            };
            let mut bytes = request_of(record);
            assert!(request_lines(&bytes).is_ok(), "{name}");
            let at = bytes.iter().position(|&b| b == 0x7f).unwrap();
            bytes[at] = 0xFF;
            assert!(
                decoded_lines(&bytes).is_err(),
                "prost refuses invalid UTF-8"
            );
            assert_eq!(request_lines(&bytes), Err(Unusual), "{name}");
        }
    }

    /// A request of one scope of one resource holding `record`'s bytes.
    fn request_of_bytes(record: &[u8]) -> Vec<u8> {
        let mut scope = Vec::new();
        prost::encoding::bytes::encode(2, &record.to_vec(), &mut scope);
        let mut resource = Vec::new();
        prost::encoding::bytes::encode(2, &scope, &mut resource);
        let mut request = Vec::new();
        prost::encoding::bytes::encode(1, &resource, &mut request);
        request
    }
}
