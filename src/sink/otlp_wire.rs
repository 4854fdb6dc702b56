//! A document's `LogRecord`, written as protobuf bytes straight from the document.
//!
//! Building the `LogRecord` message first (a `KeyValue` with an owned key for every entry, an
//! `AnyValue` for every value, each string copied) and then encoding it with prost cost more
//! than mapping the indicator. Here the document tree is walked twice instead: once to learn
//! the length of every nested message (each length prefix comes before its message), once to
//! write. The bytes are exactly prost's for the message `super::log_record` builds; a
//! property test holds the two equal.
//!
//! The messages (OTLP `common.v1` and `logs.v1`), as far as a record of ours uses them:
//! `AnyValue { string 1 | bool 2 | int64 3 | double 4 | ArrayValue 5 | KeyValueList 6 }` (a
//! oneof: written whenever set, even at its default), `ArrayValue { repeated AnyValue 1 }`,
//! `KeyValueList { repeated KeyValue 1 }`, `KeyValue { string key 1; AnyValue value 2 }` (an
//! empty key is not written), `LogRecord { fixed64 time 1; AnyValue body 5; repeated KeyValue
//! attributes 6; fixed64 observed_time 11 }` (zero times are not written).

use serde_json::Value;

use crate::ingest::{Document, Node, Object};

/// Wire types.
const LEN: u8 = 2;
const VARINT: u8 = 0;
const I64: u8 = 1;

const fn tag(field: u8, wire: u8) -> u8 {
    (field << 3) | wire
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The bytes a length-delimited field of `len` bytes takes, tag included.
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn put_len_field(out: &mut Vec<u8>, field: u8, len: usize) {
    out.push(tag(field, LEN));
    put_varint(out, len as u64);
}

fn put_str_field(out: &mut Vec<u8>, field: u8, s: &str) {
    put_message(out, field, s.as_bytes());
}

/// A length-delimited field `field` holding `content`.
fn put_message(out: &mut Vec<u8>, field: u8, content: &[u8]) {
    put_len_field(out, field, content.len());
    out.extend_from_slice(content);
}

/// The start of a `KeyValue` in field `field`: its length, its key (not written when empty),
/// and the prefix of its value (an `AnyValue` of `value_len` bytes, which the caller writes).
fn put_key_value(out: &mut Vec<u8>, field: u8, key: &str, value_len: usize) {
    put_len_field(out, field, key_value_len(key, value_len));
    if !key.is_empty() {
        put_str_field(out, 1, key);
    }
    put_len_field(out, 2, value_len);
}

/// A scalar value as `AnyValue` takes it.
enum Scalar<'a> {
    /// `null`: an empty `AnyValue`.
    Empty,
    Str(&'a str),
    /// An integer above `i64::MAX`, written as its decimal string.
    BigUint(u64),
    Bool(bool),
    Int(i64),
    Double(f64),
}

impl Scalar<'_> {
    fn len(&self) -> usize {
        match self {
            Scalar::Empty => 0,
            Scalar::Str(s) => field_len(s.len()),
            Scalar::BigUint(u) => field_len(decimal_len(*u)),
            Scalar::Bool(_) => 2,
            Scalar::Int(i) => 1 + varint_len(*i as u64),
            Scalar::Double(_) => 9,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Scalar::Empty => {}
            Scalar::Str(s) => put_str_field(out, 1, s),
            Scalar::BigUint(u) => put_str_field(out, 1, &u.to_string()),
            Scalar::Bool(b) => out.extend_from_slice(&[tag(2, VARINT), u8::from(*b)]),
            Scalar::Int(i) => {
                out.push(tag(3, VARINT));
                put_varint(out, *i as u64);
            }
            Scalar::Double(d) => {
                out.push(tag(4, I64));
                out.extend_from_slice(&d.to_le_bytes());
            }
        }
    }
}

fn decimal_len(u: u64) -> usize {
    u.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// `any_value`'s reading of a JSON number.
fn number(n: &serde_json::Number) -> Scalar<'static> {
    if let Some(i) = n.as_i64() {
        Scalar::Int(i)
    } else if let Some(u) = n.as_u64() {
        Scalar::BigUint(u)
    } else {
        Scalar::Double(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// A value of the document: a node of a built one, or a `serde_json` value.
#[derive(Clone, Copy)]
enum Item<'a> {
    Node(&'a Node),
    Value(&'a Value),
    Const(&'a str),
}

/// What an item is on the wire: a scalar, or a container (array or kvlist) of items, borrowed
/// from the document (nothing is collected: a container is walked where it lies).
enum Shape<'a> {
    Scalar(Scalar<'a>),
    Nodes(&'a [Node]),
    Consts(&'a [&'static str]),
    Values(&'a [Value]),
    Object(&'a Object),
    Map(&'a serde_json::Map<String, Value>),
}

impl<'a> Shape<'a> {
    fn of(item: Item<'a>) -> Self {
        match item {
            Item::Const(s) => Shape::Scalar(Scalar::Str(s)),
            Item::Node(node) => match node {
                Node::Null => Shape::Scalar(Scalar::Empty),
                Node::Str(s) => Shape::Scalar(Scalar::Str(s.as_str())),
                Node::Const(s) => Shape::Scalar(Scalar::Str(s)),
                Node::PosInt(u) => {
                    Shape::Scalar(i64::try_from(*u).map_or(Scalar::BigUint(*u), Scalar::Int))
                }
                Node::NegInt(i) => Shape::Scalar(Scalar::Int(*i)),
                // `Value::from(f64)`: `null` unless finite.
                Node::Float(f) if f.is_finite() => Shape::Scalar(Scalar::Double(*f)),
                Node::Float(_) => Shape::Scalar(Scalar::Empty),
                Node::Bool(b) => Shape::Scalar(Scalar::Bool(*b)),
                Node::Array(items) => Shape::Nodes(items),
                Node::Consts(list) => Shape::Consts(list),
                Node::Object(o) => Shape::Object(o),
                Node::Value(v) => Shape::of(Item::Value(v)),
            },
            Item::Value(value) => match value {
                Value::Null => Shape::Scalar(Scalar::Empty),
                Value::Bool(b) => Shape::Scalar(Scalar::Bool(*b)),
                Value::Number(n) => Shape::Scalar(number(n)),
                Value::String(s) => Shape::Scalar(Scalar::Str(s)),
                Value::Array(items) => Shape::Values(items),
                Value::Object(map) => Shape::Map(map),
            },
        }
    }

    /// A document's top level.
    fn document(doc: &'a Document) -> Self {
        match doc {
            Document::Map(map) => Shape::Map(map),
            Document::Built(object) => Shape::Object(object),
        }
    }

    /// Calls `f` with each element of an array (nothing for anything else).
    fn elements(&self, mut f: impl FnMut(Item<'a>)) {
        match *self {
            Shape::Nodes(items) => items.iter().for_each(|n| f(Item::Node(n))),
            Shape::Consts(list) => list.iter().for_each(|s| f(Item::Const(s))),
            Shape::Values(items) => items.iter().for_each(|v| f(Item::Value(v))),
            _ => {}
        }
    }

    /// Calls `f` with each member of an object (nothing for anything else).
    fn members(&self, mut f: impl FnMut(&'a str, Item<'a>)) {
        match *self {
            Shape::Object(o) => o.entries().iter().for_each(|(k, v)| f(k, Item::Node(v))),
            Shape::Map(map) => map.iter().for_each(|(k, v)| f(k, Item::Value(v))),
            _ => {}
        }
    }
}

/// The lengths of a document's nested messages, in the order they are written.
#[derive(Default)]
struct Lengths {
    all: Vec<usize>,
    /// The next one to write.
    next: usize,
}

impl Lengths {
    /// The length of the `AnyValue` message of `shape`; the lengths of its containers are
    /// recorded.
    fn measure(&mut self, shape: &Shape<'_>) -> usize {
        match shape {
            Shape::Scalar(s) => s.len(),
            Shape::Nodes(_) | Shape::Consts(_) | Shape::Values(_) => {
                let slot = self.reserve();
                let mut inner = 0;
                shape.elements(|item| inner += field_len(self.measure(&Shape::of(item))));
                self.all[slot] = inner;
                field_len(inner)
            }
            Shape::Object(_) | Shape::Map(_) => field_len(self.measure_kvlist(shape)),
        }
    }

    /// The length of the `KeyValueList` of an object's members.
    fn measure_kvlist(&mut self, shape: &Shape<'_>) -> usize {
        let slot = self.reserve();
        let mut inner = 0;
        shape.members(|key, value| {
            inner += field_len(key_value_len(key, self.measure(&Shape::of(value))));
        });
        self.all[slot] = inner;
        inner
    }

    fn reserve(&mut self) -> usize {
        self.all.push(0);
        self.all.len() - 1
    }

    /// The recorded length of the next container, without taking it.
    fn peek(&self) -> usize {
        self.all.get(self.next).copied().unwrap_or(0)
    }

    fn take(&mut self) -> usize {
        let len = self.peek();
        self.next += 1;
        len
    }

    /// The length of the `AnyValue` of `shape` while writing: scalars again, containers
    /// recorded.
    fn any_len(&self, shape: &Shape<'_>) -> usize {
        match shape {
            Shape::Scalar(s) => s.len(),
            _ => field_len(self.peek()),
        }
    }

    /// Writes the content of the `AnyValue` of `shape`.
    fn write(&mut self, out: &mut Vec<u8>, shape: &Shape<'_>) {
        match shape {
            Shape::Scalar(s) => s.write(out),
            Shape::Nodes(_) | Shape::Consts(_) | Shape::Values(_) => {
                put_len_field(out, 5, self.take());
                shape.elements(|item| {
                    let shape = Shape::of(item);
                    put_len_field(out, 1, self.any_len(&shape));
                    self.write(out, &shape);
                });
            }
            Shape::Object(_) | Shape::Map(_) => {
                put_len_field(out, 6, self.take());
                self.write_members(out, shape);
            }
        }
    }

    /// Writes the `KeyValue`s of the `KeyValueList` of an object whose length was taken.
    fn write_members(&mut self, out: &mut Vec<u8>, shape: &Shape<'_>) {
        shape.members(|key, value| {
            let shape = Shape::of(value);
            put_key_value(out, 1, key, self.any_len(&shape));
            self.write(out, &shape);
        });
    }
}

/// The length of a `KeyValue` of `key` and a value of `value_len`.
fn key_value_len(key: &str, value_len: usize) -> usize {
    let key = if key.is_empty() {
        0
    } else {
        field_len(key.len())
    };
    key + field_len(value_len)
}

/// Writes `LogRecord`s, keeping its table of lengths from one record to the next.
#[derive(Default)]
pub(crate) struct RecordWriter {
    lengths: Lengths,
}

impl RecordWriter {
    /// Appends the `LogRecord` of `doc` (its body), with the string `attributes` in order and
    /// the two times (0: not written), to `out`, as a `ScopeLogs.log_records` field (its tag
    /// and length first): a request is then its header and a run of such fields, sent without
    /// copying the records into it ([`export_request_header`]).
    pub(crate) fn write<'a>(
        &mut self,
        out: &mut Vec<u8>,
        doc: &Document,
        attributes: impl IntoIterator<Item = (&'static str, &'a str)> + Clone,
        time_unix_nano: u64,
        observed_time_unix_nano: u64,
    ) {
        self.lengths.all.clear();
        self.lengths.next = 0;
        write_log_record(
            out,
            &mut self.lengths,
            doc,
            attributes,
            time_unix_nano,
            observed_time_unix_nano,
        );
    }
}

fn write_log_record<'a>(
    out: &mut Vec<u8>,
    lengths: &mut Lengths,
    doc: &Document,
    attributes: impl IntoIterator<Item = (&'static str, &'a str)> + Clone,
    time_unix_nano: u64,
    observed_time_unix_nano: u64,
) {
    let body = Shape::document(doc);
    let body_inner = lengths.measure_kvlist(&body);
    let time_len = |t: u64| if t == 0 { 0 } else { 9 };
    let record = time_len(time_unix_nano)
        + field_len(field_len(body_inner))
        + attributes
            .clone()
            .into_iter()
            .map(|(key, value)| field_len(key_value_len(key, Scalar::Str(value).len())))
            .sum::<usize>()
        + time_len(observed_time_unix_nano);
    out.reserve(field_len(record));
    // ScopeLogs { log_records 2 }.
    put_len_field(out, 2, record);
    if time_unix_nano != 0 {
        out.push(tag(1, I64));
        out.extend_from_slice(&time_unix_nano.to_le_bytes());
    }
    // body: AnyValue { kvlist_value: KeyValueList }.
    put_len_field(out, 5, field_len(body_inner));
    put_len_field(out, 6, lengths.take());
    lengths.write_members(out, &body);
    for (key, value) in attributes {
        let value = Scalar::Str(value);
        put_key_value(out, 6, key, value.len());
        value.write(out);
    }
    if observed_time_unix_nano != 0 {
        out.push(tag(11, I64));
        out.extend_from_slice(&observed_time_unix_nano.to_le_bytes());
    }
}

/// The protobuf bytes of an `ExportLogsServiceRequest` up to its records, under one resource
/// (`resource`, a `Resource`'s bytes) and one scope (`scope`, an `InstrumentationScope`'s
/// bytes), for records of `records` bytes (their `log_records` fields, as [`RecordWriter`]
/// writes them) that follow it.
pub(crate) fn export_request_header(resource: &[u8], scope: &[u8], records: usize) -> Vec<u8> {
    let scope_logs = field_len(scope.len()) + records;
    let resource_logs = field_len(resource.len()) + field_len(scope_logs);
    let mut out = Vec::with_capacity(field_len(resource_logs) - records);
    // ExportLogsServiceRequest { resource_logs 1: ResourceLogs { resource 1, scope_logs 2:
    // ScopeLogs { scope 1, log_records 2 } } }.
    put_len_field(&mut out, 1, resource_logs);
    put_message(&mut out, 1, resource);
    put_len_field(&mut out, 2, scope_logs);
    put_message(&mut out, 1, scope);
    out
}
