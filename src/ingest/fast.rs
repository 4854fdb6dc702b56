//! Building blocks for a mapper's fast path: decoding the vendor JSON straight into borrowed
//! scalars, and the success side of the ingest processors on those scalars.
//!
//! The processor-by-processor engines (see [`crate::ingest`]) parse each indicator into a
//! `serde_json::Value` and walk dotted paths through `BTreeMap`s for every step; that is exact
//! but slow. A fast path instead decodes the fields it knows with `serde` visitors (strings stay
//! borrowed from the input when they carry no escape) and writes the output maps with known
//! keys. It only has to be right where it succeeds: every helper here returns `None` (or a
//! decoding error) wherever the ES processor would fail or behave in a way the fast path does
//! not model, and the caller then falls back to its reference engine.
//!
//! Decoding goes through `deserialize_any`-style calls only ([`Skip`] included), so the input
//! is accepted or refused exactly as `serde_json::from_str::<Value>` would (same recursion
//! limit, same number and string validation); `IgnoredAny` would be laxer.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use chrono::Utc;
use compact_str::CompactString;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};
use sha1::{Digest, Sha1};

use super::{
    Node, Object, format_date, java_double_to_string, parse_iso8601, parse_java_double,
    parse_java_long,
};

/// A JSON string, borrowed from the input when it needs no unescaping. Any other JSON type is a
/// decoding error.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Str<'a>(pub Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_any(V)
    }
}

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Str<'_> {
    /// The string as a document node (inline up to 24 bytes, without an allocation).
    pub(crate) fn node(&self) -> Node {
        Node::Str(CompactString::from(&*self.0))
    }

    /// The JSON string value, reusing an owned (unescaped) string.
    pub(crate) fn into_value(self) -> Value {
        Value::String(self.0.into_owned())
    }
}

/// A JSON scalar (not null, not a container), as the parser produced it: non-negative integers
/// are `PosInt` and negative ones `NegInt`, like `serde_json::Number`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar<'a> {
    /// A string.
    Str(Cow<'a, str>),
    /// An integer ≥ 0 that fits `u64`.
    PosInt(u64),
    /// An integer < 0 that fits `i64`.
    NegInt(i64),
    /// Any other number.
    Float(f64),
    /// `true` / `false`.
    Bool(bool),
}

impl<'de> de::Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON scalar")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Scalar::PosInt(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(match u64::try_from(v) {
                    Ok(u) => Scalar::PosInt(u),
                    Err(_) => Scalar::NegInt(v),
                })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Scalar::Bool(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl Scalar<'_> {
    /// Java `toString()` of the value (what `convert` and templates see).
    pub(crate) fn java_string(&self) -> Cow<'_, str> {
        match self {
            Scalar::Str(s) => Cow::Borrowed(s.as_ref()),
            Scalar::PosInt(u) => Cow::Owned(u.to_string()),
            Scalar::NegInt(i) => Cow::Owned(i.to_string()),
            Scalar::Float(f) => Cow::Owned(java_double_to_string(*f)),
            Scalar::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        }
    }

    /// ES `convert` to `string`, as a document node.
    pub(crate) fn to_string_node(&self) -> Node {
        use compact_str::ToCompactString;
        Node::Str(match self {
            Scalar::PosInt(u) => u.to_compact_string(),
            Scalar::NegInt(i) => i.to_compact_string(),
            other => CompactString::from(other.java_string().as_ref()),
        })
    }

    /// ES `convert` to `long`, when it succeeds.
    pub(crate) fn to_long(&self) -> Option<Value> {
        match self {
            Scalar::PosInt(u) => i64::try_from(*u).ok().map(Value::from),
            Scalar::NegInt(i) => Some(Value::from(*i)),
            Scalar::Str(s) => parse_java_long(s).map(Value::from),
            // Java prints a double with a `.` or an exponent: never a long.
            Scalar::Float(_) | Scalar::Bool(_) => None,
        }
    }

    /// ES `convert` to `double`, when it succeeds.
    pub(crate) fn to_double(&self) -> Option<Value> {
        #[allow(clippy::cast_precision_loss)]
        let d = match self {
            // Both round the exact integer to the nearest double, as parsing its text would.
            Scalar::PosInt(u) => *u as f64,
            Scalar::NegInt(i) => *i as f64,
            // Java's shortest text of a double parses back to the same double.
            Scalar::Float(f) => *f,
            Scalar::Str(s) => parse_java_double(s)?,
            Scalar::Bool(_) => return None,
        };
        Number::from_f64(d).map(Value::Number)
    }

    /// ES `convert` to `boolean`, when it succeeds (strings: ASCII `true`/`false` in any case;
    /// rarer Unicode case folds are left to the reference engine).
    pub(crate) fn to_bool(&self) -> Option<bool> {
        match self {
            Scalar::Bool(b) => Some(*b),
            Scalar::Str(s) if s.eq_ignore_ascii_case("true") => Some(true),
            Scalar::Str(s) if s.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        }
    }
}

/// Any JSON value, validated exactly like `Value` parsing but not kept.
#[derive(Default)]
pub(crate) struct Skip;

impl<'de> de::Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ObjectOrSkip::<Skip>(std::marker::PhantomData))
    }
}

impl<'de> ReadObject<'de> for Skip {
    fn read<A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        while map.next_key::<Skip>()?.is_some() {
            map.next_value::<Skip>()?;
        }
        Ok(Skip)
    }
}

/// A value read from a JSON object; any other JSON value gives [`Default::default`] (see
/// [`ObjectOrSkip`]).
pub(crate) trait ReadObject<'de>: Default {
    /// Reads the object's members.
    fn read<A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
}

/// Visits any JSON value, validated exactly like `Value` parsing: an object is read by `T`,
/// anything else is skipped and gives `T::default()`.
pub(crate) struct ObjectOrSkip<T>(pub std::marker::PhantomData<T>);

impl<'de, T: ReadObject<'de>> Visitor<'de> for ObjectOrSkip<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_i64<E>(self, _: i64) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_u64<E>(self, _: u64) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_f64<E>(self, _: f64) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_str<E>(self, _: &str) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_unit<E>(self) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(T::default())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::read(map)
    }
}

/// Reads the value of a known key into `slot`; a repeated key is a decoding error (the
/// reference engine keeps the last one, which the caller then computes instead). A JSON `null`
/// leaves the slot empty.
pub(crate) fn once<'de, A, T>(map: &mut A, slot: &mut Option<T>, key: &str) -> Result<(), A::Error>
where
    A: MapAccess<'de>,
    T: de::Deserialize<'de>,
{
    if slot.is_some() {
        return Err(de::Error::custom(format_args!("repeated key [{key}]")));
    }
    *slot = map.next_value::<Option<T>>()?;
    Ok(())
}

/// Decodes any JSON value as a document [`Node`], exactly as it would parse as a `Value`
/// (a repeated key keeps the last value once the document is finished), except that the
/// `drop`ped keys of a top-level object are left out without allocating them. Objects become
/// [`Object`]s with owned keys: no tree is built for what is only passed through.
#[derive(Clone, Copy)]
pub(crate) struct Without(pub &'static [&'static str]);

impl<'de> DeserializeSeed<'de> for Without {
    type Value = Node;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Without {
    type Value = Node;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::PosInt(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        // `Value` parsing maps a non-finite number to null.
        Ok(if v.is_finite() {
            Node::Float(v)
        } else {
            Node::Null
        })
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.into()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v.into()))
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut list = Vec::new();
        while let Some(v) = seq.next_element_seed(Without(&[]))? {
            list.push(v);
        }
        Ok(Node::Array(list))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut out = Object::new();
        while let Some(key) = map.next_key::<Str<'de>>()? {
            if self.0.contains(&&*key) {
                map.next_value::<Skip>()?;
            } else {
                out.insert(key.0.into_owned(), map.next_value_seed(Without(&[]))?);
            }
        }
        Ok(Node::Object(out))
    }
}

/// A value passed through as sent, decoded straight into a document [`Node`] (see [`Without`]):
/// strings up to 24 bytes inline, objects as flat [`Object`]s, no `Value` tree.
pub(crate) struct Pass(pub Node);

impl<'de> de::Deserialize<'de> for Pass {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Without(&[]).deserialize(d).map(Pass)
    }
}

impl From<Pass> for Node {
    fn from(p: Pass) -> Node {
        p.0
    }
}

/// ES `date` with the single format `ISO8601`, when it succeeds: the UTC text
/// `yyyy-MM-ddTHH:mm:ss.SSSZ`. The API's usual `yyyy-MM-ddTHH:mm:ssZ` is validated and
/// extended without going through a `DateTime`.
pub(crate) fn iso8601_date(text: &str) -> Option<CompactString> {
    if let Some(t) = super::parse_canonical_utc(text) {
        // Already UTC with whole seconds: the output is the text with `.000` before the `Z`.
        debug_assert_eq!(super::format_date(&t).get(..19), text.get(..19));
        let mut out = CompactString::with_capacity(24);
        out.push_str(text.get(..19)?);
        out.push_str(".000Z");
        return Some(out);
    }
    parse_iso8601(text).map(|d| format_date(&d.with_timezone(&Utc)))
}

/// ES `fingerprint` (SHA-1, Base64) over string fields given in sorted field-name order; `None`
/// entries are missing fields. `None` when all are missing.
pub(crate) fn fingerprint_strs(fields: &[Option<&str>]) -> Option<String> {
    let mut hasher = Sha1::new();
    let mut any = false;
    for s in fields.iter().flatten() {
        any = true;
        hasher.update([0u8]);
        hasher.update(s.as_bytes());
    }
    any.then(|| base64::engine::general_purpose::STANDARD.encode(hasher.finalize()))
}

/// Appends a rendered string to a `related.*`-style list unless already present (ES `append`
/// without duplicates). Empty strings are skipped: the pipeline appends them too, but its final
/// cleaner removes them again.
pub(crate) fn append_unique(list: &mut Vec<Node>, s: &str) {
    if s.is_empty() || list.iter().any(|v| v.as_str() == Some(s)) {
        return;
    }
    list.push(Node::Str(s.into()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{ConvertType, DateFormat, convert, date};
    use serde_json::json;

    #[test]
    fn scalar_conversions_agree_with_convert() {
        let cases = [
            json!(12),
            json!(-3),
            json!(3.0),
            json!(1e20),
            json!("0x1F"),
            json!("61"),
            json!(" 61"),
            json!("3.5"),
            json!("TRUE"),
            json!("false"),
            json!(true),
            json!(u64::MAX),
        ];
        for v in cases {
            let text = v.to_string();
            let s: Scalar<'_> = serde_json::from_str(&text).unwrap();
            assert_eq!(
                s.to_string_node().into_value(),
                convert(&v, ConvertType::String).unwrap()
            );
            for (got, ty) in [
                (s.to_long(), ConvertType::Long),
                (s.to_double(), ConvertType::Double),
                (s.to_bool().map(Value::Bool), ConvertType::Boolean),
            ] {
                if let Some(got) = got {
                    assert_eq!(Ok(got), convert(&v, ty), "{v} {ty:?}");
                }
            }
        }
    }

    #[test]
    fn canonical_dates_match_the_date_processor() {
        for text in [
            "2023-12-01T08:26:48Z",
            "2024-02-29T23:59:59Z",
            "2023-02-29T00:00:00Z",
            "2023-12-01T24:00:00Z",
            "0000-01-01T00:00:00Z",
            "2023-12-01T10:26:48.123456+02:00",
            "2023-12-01",
        ] {
            assert_eq!(
                iso8601_date(text).map(CompactString::into_string),
                date(&json!(text), &[DateFormat::Iso8601]).ok(),
                "{text}"
            );
        }
    }

    #[test]
    fn skip_is_as_strict_as_value() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for text in ["1e400", "\"\\ud800\"", deep.as_str(), "[1,]", "{\"a\":1}"] {
            assert_eq!(
                serde_json::from_str::<Skip>(text).is_ok(),
                serde_json::from_str::<Value>(text).is_ok(),
                "{text}"
            );
        }
    }
}
