//! The mapped document: either a `serde_json` map (the reference engines) or a [`Object`] built
//! by a fast path, which serialises to the same bytes.
//!
//! Why a second representation: a `serde_json::Map` is a `BTreeMap` whose every insert
//! allocates a `String` key, compares keys and moves nodes, and the final empty-value cleaner
//! walks the whole tree again. A fast path knows its keys at compile time, so it builds
//! [`Object`]s: flat `Vec`s of `(key, node)` with `&'static str` keys (owned only for vendor
//! keys passed through as sent), sorted once when the document is finished. Finishing also
//! applies [`super::remove_empty`]'s rule, and a later entry under the same key replaces an
//! earlier one, like `Map::insert`; so the finished object is, key for key, the pruned map, and
//! its `Serialize` writes the same bytes (a property test below holds it to that).

use std::borrow::Cow;

use compact_str::CompactString;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

/// An object key: known names are borrowed, vendor keys passed through are owned.
pub(crate) type Key = Cow<'static, str>;

/// One value of a built document.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// `null` (dropped when the document is finished).
    Null,
    /// A string (up to 24 bytes inline, without an allocation: dates, ids, addresses).
    Str(CompactString),
    /// A string known at compile time.
    Const(&'static str),
    /// An integer ≥ 0 (like `serde_json::Number`'s `PosInt`).
    PosInt(u64),
    /// An integer < 0.
    NegInt(i64),
    /// Any other (finite) number.
    Float(f64),
    /// `true` / `false`.
    Bool(bool),
    /// A list.
    Array(Vec<Node>),
    /// A list of strings known at compile time, none of them empty (see [`Node::consts`]).
    Consts(&'static [&'static str]),
    /// An object.
    Object(Object),
    /// A block passed through as the vendor sent it.
    Value(Value),
}

impl From<String> for Node {
    fn from(s: String) -> Self {
        Node::Str(s.into())
    }
}

impl From<CompactString> for Node {
    fn from(s: CompactString) -> Self {
        Node::Str(s)
    }
}

impl From<&'static str> for Node {
    fn from(s: &'static str) -> Self {
        Node::Const(s)
    }
}

impl From<bool> for Node {
    fn from(b: bool) -> Self {
        Node::Bool(b)
    }
}

impl From<i64> for Node {
    /// Like `Value::from(i64)`: non-negative integers are `PosInt`.
    fn from(i: i64) -> Self {
        u64::try_from(i).map_or(Node::NegInt(i), Node::PosInt)
    }
}

impl From<Value> for Node {
    fn from(v: Value) -> Self {
        Node::Value(v)
    }
}

impl From<Object> for Node {
    fn from(o: Object) -> Self {
        Node::Object(o)
    }
}

impl From<Vec<Node>> for Node {
    fn from(list: Vec<Node>) -> Self {
        Node::Array(list)
    }
}

impl Node {
    /// A list of strings known at compile time, without an allocation (`event.category`,
    /// `event.type`, ...). The strings must not be empty: a finished document keeps the list
    /// as it is.
    pub(crate) fn consts(list: &'static [&'static str]) -> Node {
        debug_assert!(list.iter().all(|s| !s.is_empty()), "{list:?}");
        Node::Consts(list)
    }

    /// Finishes the node in place (see [`Object::finish`]); returns whether its parent drops it.
    fn prune(&mut self) -> bool {
        match self {
            Node::Null => true,
            Node::Str(s) => s.is_empty(),
            Node::Const(s) => s.is_empty(),
            Node::Array(list) => {
                list.retain_mut(|n| !n.prune());
                list.is_empty()
            }
            Node::Object(o) => o.finish(),
            Node::Consts(list) => list.is_empty(),
            Node::Value(v) => super::prune(v),
            Node::PosInt(_) | Node::NegInt(_) | Node::Float(_) | Node::Bool(_) => false,
        }
    }

    /// The string, when this is one.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Node::Str(s) => Some(s),
            Node::Const(s) => Some(s),
            Node::Value(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    /// The same value as a `serde_json::Value`.
    pub(crate) fn into_value(self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Str(s) => Value::String(s.into_string()),
            Node::Const(s) => Value::String(s.to_owned()),
            Node::PosInt(u) => Value::from(u),
            Node::NegInt(i) => Value::from(i),
            Node::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
            Node::Bool(b) => Value::Bool(b),
            Node::Array(list) => Value::Array(list.into_iter().map(Node::into_value).collect()),
            Node::Consts(list) => Value::Array(list.iter().map(|s| Value::from(*s)).collect()),
            Node::Object(o) => Value::Object(o.into_map()),
            Node::Value(v) => v,
        }
    }
}

/// A place in a document, on either side of a pass-through block.
#[derive(Clone, Copy)]
enum NodeRef<'a> {
    Node(&'a Node),
    Value(&'a Value),
}

impl<'a> NodeRef<'a> {
    /// The value of `key`, when this is an object that has it.
    fn get(self, key: &str) -> Option<NodeRef<'a>> {
        match self {
            NodeRef::Node(Node::Object(o)) => o.get(key).map(NodeRef::Node),
            NodeRef::Node(Node::Value(v)) | NodeRef::Value(v) => v.get(key).map(NodeRef::Value),
            NodeRef::Node(_) => None,
        }
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => s.serialize_unit(),
            Node::Str(v) => s.serialize_str(v),
            Node::Const(v) => s.serialize_str(v),
            Node::PosInt(v) => s.serialize_u64(*v),
            Node::NegInt(v) => s.serialize_i64(*v),
            Node::Float(v) => s.serialize_f64(*v),
            Node::Bool(v) => s.serialize_bool(*v),
            Node::Array(v) => s.collect_seq(v),
            Node::Consts(v) => s.collect_seq(*v),
            Node::Object(v) => v.serialize(s),
            Node::Value(v) => v.serialize(s),
        }
    }
}

/// An object under construction: entries in insertion order until [`Object::finish`] sorts
/// them. Lookups are linear, which is cheaper than a tree at the sizes a mapping builds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Object {
    entries: Vec<(Key, Node)>,
}

impl Object {
    /// An empty object.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty object with room for `n` entries.
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            entries: Vec::with_capacity(n),
        }
    }

    /// Sets `key` to `value`; a later entry under the same key replaces this one when the
    /// object is finished (like `Map::insert`).
    #[inline]
    pub(crate) fn insert(&mut self, key: impl Into<Key>, value: impl Into<Node>) {
        self.entries.push((key.into(), value.into()));
    }

    /// Inserts `key` unless it is already present; returns whether it was new.
    pub fn insert_new(&mut self, key: impl Into<Key>, value: impl Into<Node>) -> bool {
        let key = key.into();
        if self.contains_key(&key) {
            return false;
        }
        self.entries.push((key, value.into()));
        true
    }

    /// The object under `key`, created (or replacing a non-object) when needed.
    #[inline]
    pub(crate) fn child(&mut self, key: &'static str) -> &mut Object {
        let at = match self.position(key) {
            Some(i) if matches!(self.entries[i].1, Node::Object(_)) => i,
            _ => {
                self.entries
                    .push((Cow::Borrowed(key), Node::Object(Object::new())));
                self.entries.len() - 1
            }
        };
        match &mut self.entries[at].1 {
            Node::Object(o) => o,
            _ => unreachable!("the entry was just checked or created as an object"),
        }
    }

    /// `self[parent][key] = value`, creating `parent` (see [`Object::child`]).
    #[inline]
    pub(crate) fn nested(
        &mut self,
        parent: &'static str,
        key: &'static str,
        value: impl Into<Node>,
    ) {
        self.child(parent).insert(key, value);
    }

    /// Inserts `value` unless it is an empty object.
    #[inline]
    pub(crate) fn insert_object(&mut self, key: &'static str, value: Object) {
        if !value.is_empty() {
            self.insert(key, value);
        }
    }

    /// Inserts `list` unless it is empty.
    #[inline]
    pub(crate) fn insert_list(&mut self, key: &'static str, list: Vec<Node>) {
        if !list.is_empty() {
            self.insert(key, list);
        }
    }

    /// The index of the entry `key` currently stands for (the last one inserted).
    #[inline]
    fn position(&self, key: &str) -> Option<usize> {
        self.entries.iter().rposition(|(k, _)| k == key)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.position(key).map(|i| &self.entries[i].1)
    }

    /// The value of `key`, mutably.
    pub(crate) fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        self.position(key).map(|i| &mut self.entries[i].1)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// Removes `key` and returns its value.
    pub fn remove(&mut self, key: &str) -> Option<Node> {
        let i = self.position(key)?;
        let (_, value) = self.entries.remove(i);
        self.entries.retain(|(k, _)| k != key);
        Some(value)
    }

    /// Whether the object has no entries (before finishing, empty values count).
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Makes the object what `remove_empty` makes of the equivalent map: entries sorted by
    /// key, one per key (the last inserted), null and `""` dropped, and lists and objects that
    /// are or become empty dropped, recursively. Returns whether the object is then empty.
    pub(crate) fn finish(&mut self) -> bool {
        let sorted = self
            .entries
            .windows(2)
            .all(|w| key_order(&w[0].0, &w[1].0).is_lt());
        if !sorted {
            // Stable, so among equal keys the last inserted stays last.
            self.entries.sort_by(|a, b| key_order(&a.0, &b.0));
            self.entries.dedup_by(|later, kept| {
                if later.0 == kept.0 {
                    std::mem::swap(&mut later.1, &mut kept.1);
                    true
                } else {
                    false
                }
            });
        }
        self.entries.retain_mut(|(_, v)| !v.prune());
        self.entries.is_empty()
    }

    /// The entries in their current order (sorted once finished), keys as they were given: borrowed names, or owned
    /// vendor keys.
    pub(crate) fn entries(&self) -> &[(Key, Node)] {
        &self.entries
    }

    /// The same object as a `serde_json` map.
    pub fn into_map(self) -> Map<String, Value> {
        self.entries
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.into_value()))
            .collect()
    }
}

/// `BTreeMap<String, _>`'s key order (bytewise), compared inline: keys are short and mostly
/// differ in their first bytes, where a `memcmp` call costs more than the comparison.
fn key_order(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}

/// Appends the entries as [`Object::insert`] does, one by one.
impl Extend<(Key, Node)> for Object {
    fn extend<I: IntoIterator<Item = (Key, Node)>>(&mut self, entries: I) {
        self.entries.extend(entries);
    }
}

impl IntoIterator for Object {
    type Item = (Key, Node);
    type IntoIter = std::vec::IntoIter<(Key, Node)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl Serialize for Object {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.entries.len()))?;
        for (k, v) in &self.entries {
            map.serialize_entry(k.as_ref(), v)?;
        }
        map.end()
    }
}

/// The `_source` of an [`super::EcsEvent`].
#[derive(Debug, Clone)]
pub enum Document {
    /// A `serde_json` map (the reference engines, tests).
    Map(Map<String, Value>),
    /// A finished [`Object`] (the fast paths): sorted, one entry per key, already pruned.
    Built(Object),
}

impl Default for Document {
    fn default() -> Self {
        Document::Map(Map::new())
    }
}

impl From<Map<String, Value>> for Document {
    fn from(map: Map<String, Value>) -> Self {
        Document::Map(map)
    }
}

impl Document {
    /// Finishes `object` (see [`Object::finish`]) into a document: what `remove_empty` makes
    /// of the equivalent map.
    pub(crate) fn finished(mut object: Object) -> Self {
        object.finish();
        Document::Built(object)
    }

    /// Whether the document has the top-level `key`.
    pub fn contains_key(&self, key: &str) -> bool {
        match self {
            Document::Map(m) => m.contains_key(key),
            Document::Built(o) => o.contains_key(key),
        }
    }

    /// Whether the document has a value at `path`, one key per level (for instance
    /// `["error", "message"]`).
    pub(crate) fn contains_path(&self, path: &[&str]) -> bool {
        let Some((first, rest)) = path.split_first() else {
            return true;
        };
        let mut at = match self {
            Document::Map(m) => m.get(*first).map(NodeRef::Value),
            Document::Built(o) => o.get(first).map(NodeRef::Node),
        };
        for key in rest {
            at = at.and_then(|n| n.get(key));
        }
        at.is_some()
    }

    /// Sets the top-level `key` to `value`, as `Map::insert` does (the value is not pruned).
    pub(crate) fn insert(&mut self, key: &'static str, value: Value) {
        match self {
            Document::Map(m) => {
                m.insert(key.to_owned(), value);
            }
            // A finished object stays sorted: insert in place.
            Document::Built(o) => match o.entries.binary_search_by(|(k, _)| key_order(k, key)) {
                Ok(i) => o.entries[i].1 = Node::Value(value),
                Err(i) => o
                    .entries
                    .insert(i, (Cow::Borrowed(key), Node::Value(value))),
            },
        }
    }

    /// The document as a map to edit (a built document is converted first; this is for rare
    /// edits such as appending an `error.message`).
    pub fn make_map(&mut self) -> &mut Map<String, Value> {
        if let Document::Built(o) = self {
            *self = Document::Map(std::mem::take(o).into_map());
        }
        match self {
            Document::Map(m) => m,
            Document::Built(_) => unreachable!("converted above"),
        }
    }

    /// A copy of the document as a `serde_json` map.
    pub fn to_map(&self) -> Map<String, Value> {
        self.clone().into_map()
    }

    /// The document as a `serde_json` map.
    pub fn into_map(self) -> Map<String, Value> {
        match self {
            Document::Map(m) => m,
            Document::Built(o) => o.into_map(),
        }
    }
}

impl PartialEq for Document {
    /// Equal when they hold the same JSON, whatever their representation.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Document::Map(a), Document::Map(b)) => a == b,
            _ => self.to_map() == other.to_map(),
        }
    }
}

impl Serialize for Document {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Document::Map(m) => m.serialize(s),
            Document::Built(o) => o.serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// `value` as nodes, keeping about a third of the subtrees (by `seed`) as pass-through values so
    /// both kinds of node are exercised.
    fn to_node(value: Value, seed: u64) -> Node {
        if seed % 3 == 1 {
            return Node::Value(value);
        }
        let next = |i: usize| seed.wrapping_mul(31).wrapping_add(i as u64 + 7);
        match value {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(b),
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => Node::PosInt(u),
                (None, Some(i), _) => Node::NegInt(i),
                (_, _, f) => Node::Float(f.unwrap_or_default()),
            },
            Value::String(s) if seed.is_multiple_of(5) && s.is_empty() => Node::Const(""),
            Value::String(s) => Node::from(s),
            Value::Array(list) => Node::Array(
                list.into_iter()
                    .enumerate()
                    .map(|(i, v)| to_node(v, next(i)))
                    .collect(),
            ),
            Value::Object(m) => {
                let mut o = Object::new();
                for (i, (k, v)) in m.into_iter().enumerate() {
                    o.insert(k, to_node(v, next(i)));
                }
                Node::Object(o)
            }
        }
    }

    fn arb_entries() -> impl Strategy<Value = Vec<(String, Value)>> {
        let keys: &'static [&'static str] = &["a", "b", "ab", "B", "é", "", "data", "z"];
        prop::collection::vec(
            (
                prop::sample::select(keys).prop_map(str::to_owned),
                super::super::arb_json(&["", "x", "0"], keys),
            ),
            0..10,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Entries inserted in any order, with repeated keys, and then finished give the bytes
        /// of the same inserts into a map cleaned by `remove_empty`.
        #[test]
        fn finished_object_serialises_like_the_pruned_map(entries in arb_entries(), seed: u64) {
            let mut map = Map::new();
            let mut object = Object::new();
            for (i, (k, v)) in entries.into_iter().enumerate() {
                map.insert(k.clone(), v.clone());
                object.insert(k, to_node(v, seed.wrapping_add(i as u64)));
            }
            super::super::remove_empty(&mut map);
            let doc = Document::finished(object);
            let want = serde_json::to_string(&map).unwrap_or_default();
            prop_assert_eq!(serde_json::to_string(&doc).unwrap_or_default(), want.clone());
            let mut written = Vec::new();
            doc.write_json(&mut written);
            prop_assert_eq!(String::from_utf8(written).unwrap_or_default(), want.clone());
            prop_assert_eq!(doc.to_map(), map.clone());
            let event = |doc| crate::ingest::EcsEvent { id: None, timestamp: None, doc };
            let (written, reference) =
                crate::sink::otlp::reference::request_bytes_both(vec![event(doc.clone()), event(Document::Map(map.clone()))]);
            prop_assert_eq!(written, reference);
            prop_assert_eq!(
                crate::sink::otlp::reference::document_kvlist(doc),
                crate::sink::otlp::reference::document_kvlist(Document::Map(map))
            );
        }
    }

    #[test]
    fn later_inserts_replace_and_children_are_shared() {
        let mut o = Object::new();
        o.insert("b", "first");
        o.nested("a", "y", 1i64);
        o.insert("b", "second");
        o.nested("a", "x", Node::Null);
        o.nested("a", "x", -2i64);
        o.insert("c", Object::new());
        o.insert("d", vec![Node::Const(""), Node::Bool(false)]);
        o.insert("e", Node::consts(&["x", "y"]));
        o.insert("f", Node::consts(&[]));
        let doc = Document::finished(o);
        assert_eq!(
            serde_json::to_string(&doc).unwrap_or_default(),
            r#"{"a":{"x":-2,"y":1},"b":"second","d":[false],"e":["x","y"]}"#
        );
        assert!(doc.contains_path(&["a", "x"]));
        assert!(!doc.contains_path(&["a", "z"]));
        assert!(!doc.contains_key("c"));
    }

    #[test]
    fn top_level_insert_keeps_the_order() {
        let mut doc = Document::finished({
            let mut o = Object::new();
            o.insert("event", json!({"kind": "enrichment"}));
            o.insert("threat", json!({"x": 1}));
            o
        });
        doc.insert("@timestamp", json!("2024-01-01T00:00:00.000Z"));
        doc.insert("threat", json!(2));
        let mut map = doc.to_map();
        assert_eq!(
            serde_json::to_string(&doc).unwrap_or_default(),
            serde_json::to_string(&map).unwrap_or_default()
        );
        crate::ingest::push_error_message(doc.make_map(), "boom".to_owned());
        crate::ingest::push_error_message(&mut map, "boom".to_owned());
        assert_eq!(doc, Document::Map(map));
        assert!(doc.contains_path(&["error", "message"]));
    }
}
