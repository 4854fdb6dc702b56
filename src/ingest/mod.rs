//! Elasticsearch ingest-processor semantics, as small reusable functions over JSON documents.
//!
//! Elastic's integrations map vendor data to ECS with ingest pipelines (`rename`, `convert`,
//! `date`, `append`, `fingerprint`, a recursive empty-value cleaner, …). To reproduce those
//! pipelines byte for byte without an Elasticsearch node, each vendor mapper composes the
//! building blocks below; they follow the observable behaviour of the ES processors (dotted
//! paths, list promotion on append, Java `toString()` of values, the exact error texts) rather
//! than what would be idiomatic in Rust. Nothing here is vendor-specific.

use std::fmt::Write as _;
use std::net::IpAddr;

use base64::Engine as _;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use serde_json::{Map, Number, Value};
use sha1::{Digest, Sha1};

pub mod doc;
pub mod fast;

pub use doc::{Document, Node, Object};

/// One mapped ECS document, ready for a sink.
#[derive(Debug, Clone, PartialEq)]
pub struct EcsEvent {
    /// The pipeline's `_id` (document metadata, not part of `doc`), when it has one.
    pub id: Option<String>,
    /// `@timestamp` as a typed time, when the document has one.
    pub timestamp: Option<chrono::DateTime<chrono::Utc>>,
    /// The `_source` document.
    pub doc: Document,
}

/// A processor failed; the text is what Elasticsearch reports as `_ingest.on_failure_message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IngestError(pub String);

/// A processor failure together with the processor's identity, as an `on_failure` handler sees
/// it (`_ingest.on_failure_processor_type` / `_tag` / `_message`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("processor {processor_type} with tag {tag} failed: {message}")]
pub struct ProcessorFailure {
    /// The processor type, e.g. `convert`.
    pub processor_type: &'static str,
    /// The processor tag (empty when the processor has none).
    pub tag: &'static str,
    /// The failure message.
    pub message: String,
}

impl ProcessorFailure {
    /// Attaches a processor identity to an [`IngestError`].
    pub fn new(processor_type: &'static str, tag: &'static str, error: IngestError) -> Self {
        Self {
            processor_type,
            tag,
            message: error.0,
        }
    }
}

// ------------------------------------------------------------------------------------------
// Java-flavoured rendering of values
// ------------------------------------------------------------------------------------------

/// The Java class name Elasticsearch would report for a parsed JSON value.
pub fn java_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "java.lang.Boolean",
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                if i32::try_from(i).is_ok() {
                    "java.lang.Integer"
                } else {
                    "java.lang.Long"
                }
            } else if n.is_u64() {
                "java.math.BigInteger"
            } else {
                "java.lang.Double"
            }
        }
        Value::String(_) => "java.lang.String",
        Value::Array(_) => "java.util.ArrayList",
        Value::Object(_) => "java.util.HashMap",
    }
}

/// Java's `Double.toString`: `3.0`, `0.001`, `1.0E7`, `1.0E-4`.
pub fn java_double_to_string(d: f64) -> String {
    if d.is_nan() {
        return "NaN".to_owned();
    }
    if d.is_infinite() {
        return if d > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    if d == 0.0 {
        return if d.is_sign_negative() { "-0.0" } else { "0.0" }.to_owned();
    }
    let abs = d.abs();
    if (1e-3..1e7).contains(&abs) {
        let mut s = format!("{d}");
        if !s.contains('.') {
            s.push_str(".0");
        }
        s
    } else {
        let s = format!("{d:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((s.as_str(), "0"));
        if mantissa.contains('.') {
            format!("{mantissa}E{exp}")
        } else {
            format!("{mantissa}.0E{exp}")
        }
    }
}

/// Java's `toString()` of a parsed JSON value (what `convert` and templates operate on).
pub fn java_to_string(value: &Value) -> String {
    let mut out = String::new();
    write_java(&mut out, value);
    out
}

fn write_java(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => out.push_str(s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_java(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(k);
                out.push('=');
                write_java(out, v);
            }
            out.push('}');
        }
    }
}

fn write_number(out: &mut String, n: &Number) {
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(f) = n.as_f64() {
        out.push_str(&java_double_to_string(f));
    }
}

/// Renders a `{{{path}}}` mustache template over one value: missing or null → `""`.
pub fn render(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(v) => java_to_string(v),
    }
}

// ------------------------------------------------------------------------------------------
// Dotted paths
// ------------------------------------------------------------------------------------------

fn step<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    match value {
        Value::Object(map) => map.get(key),
        Value::Array(list) => key.parse::<usize>().ok().and_then(|i| list.get(i)),
        _ => None,
    }
}

fn step_mut<'a>(value: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    match value {
        Value::Object(map) => map.get_mut(key),
        Value::Array(list) => key.parse::<usize>().ok().and_then(|i| list.get_mut(i)),
        _ => None,
    }
}

/// The value at a dotted `path` (`a.b.0.c`: list elements by index), like ES `getFieldValue`.
/// `None` when any part is missing or a parent is not a container (ES `hasField` is false).
pub fn get<'a>(doc: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let first = parts.next()?;
    let mut cur = doc.get(first)?;
    for part in parts {
        cur = step(cur, part)?;
    }
    Some(cur)
}

/// Mutable access to the value at a dotted `path`.
pub fn get_mut<'a>(doc: &'a mut Map<String, Value>, path: &str) -> Option<&'a mut Value> {
    let mut parts = path.split('.');
    let first = parts.next()?;
    let mut cur = doc.get_mut(first)?;
    for part in parts {
        cur = step_mut(cur, part)?;
    }
    Some(cur)
}

/// Whether a field exists at `path` (its value may be null), like ES `hasField`.
pub fn contains(doc: &Map<String, Value>, path: &str) -> bool {
    get(doc, path).is_some()
}

/// Removes and returns the value at `path` (ES `remove` with `ignore_missing`).
pub fn remove(doc: &mut Map<String, Value>, path: &str) -> Option<Value> {
    match path.rsplit_once('.') {
        None => doc.remove(path),
        Some((parent, leaf)) => match get_mut(doc, parent)? {
            Value::Object(map) => map.remove(leaf),
            Value::Array(list) => {
                let i = leaf.parse::<usize>().ok()?;
                (i < list.len()).then(|| list.remove(i))
            }
            _ => None,
        },
    }
}

/// Sets `value` at `path`, creating intermediate objects, like ES `setFieldValue`.
/// Fails when a parent on the way is a scalar or null.
pub fn set(doc: &mut Map<String, Value>, path: &str, value: Value) -> Result<(), IngestError> {
    let slot = slot_mut(doc, path)?;
    *slot = value;
    Ok(())
}

/// The slot at `path`, created (as null) if absent, parents created as objects; fails like
/// [`set`] when a parent is a scalar or null.
pub fn slot_mut<'a>(
    doc: &'a mut Map<String, Value>,
    path: &str,
) -> Result<&'a mut Value, IngestError> {
    let mut parts = path.split('.').peekable();
    let first = parts.next().unwrap_or_default();
    if parts.peek().is_none() {
        return Ok(doc.entry(first.to_owned()).or_insert(Value::Null));
    }
    if !doc.contains_key(first) {
        doc.insert(first.to_owned(), Value::Object(Map::new()));
    }
    let Some(mut cur) = doc.get_mut(first) else {
        return Err(IngestError(format!(
            "cannot set [{first}] as part of path [{path}]"
        )));
    };
    while let Some(part) = parts.next() {
        let last = parts.peek().is_none();
        cur = match cur {
            Value::Object(map) => {
                // Look up before inserting: most segments exist and need no key allocation.
                if !map.contains_key(part) {
                    let fresh = if last {
                        Value::Null
                    } else {
                        Value::Object(Map::new())
                    };
                    map.insert(part.to_owned(), fresh);
                }
                match map.get_mut(part) {
                    Some(v) => v,
                    None => {
                        return Err(IngestError(format!(
                            "cannot set [{part}] as part of path [{path}]"
                        )));
                    }
                }
            }
            Value::Array(list) => {
                let len = list.len();
                match part.parse::<usize>() {
                    Ok(i) if i < len => &mut list[i],
                    Ok(i) => {
                        return Err(IngestError(format!(
                            "[{i}] is out of bounds for array with length [{len}] as part of path [{path}]"
                        )));
                    }
                    Err(_) => {
                        return Err(IngestError(format!(
                            "[{part}] is not an integer, cannot be used as an index as part of path [{path}]"
                        )));
                    }
                }
            }
            Value::Null => {
                return Err(IngestError(format!(
                    "cannot set [{part}] with null parent as part of path [{path}]"
                )));
            }
            other => {
                return Err(IngestError(format!(
                    "cannot set [{part}] with parent object of type [{}] as part of path [{path}]",
                    java_type_name(other)
                )));
            }
        };
    }
    Ok(cur)
}

/// ES `rename` with `ignore_missing`: moves the value at `from` to `to` inside one document.
/// Returns whether something moved. Fails (leaving the source in place) if `to` exists and
/// `override_target` is false, or if `to` cannot be set.
pub fn rename(
    doc: &mut Map<String, Value>,
    from: &str,
    to: &str,
    override_target: bool,
) -> Result<bool, IngestError> {
    if !contains(doc, from) {
        return Ok(false);
    }
    if !override_target && contains(doc, to) {
        return Err(IngestError(format!("field [{to}] already exists")));
    }
    let Some(value) = remove(doc, from) else {
        return Ok(false);
    };
    match slot_mut(doc, to) {
        Ok(slot) => {
            *slot = value;
            Ok(true)
        }
        Err(e) => {
            let _ = set(doc, from, value);
            Err(e)
        }
    }
}

/// Whether a value counts as empty for `ignore_empty_value` (null or `""`).
pub fn is_empty_value(value: &Value) -> bool {
    matches!(value, Value::Null) || matches!(value, Value::String(s) if s.is_empty())
}

/// ES `set` with `copy_from` and `ignore_empty_value`: copies `from` to `to` unless the source
/// is missing, null or `""`.
pub fn copy_from(doc: &mut Map<String, Value>, from: &str, to: &str) -> Result<(), IngestError> {
    match get(doc, from) {
        Some(v) if !is_empty_value(v) => {
            let v = v.clone();
            set(doc, to, v)
        }
        _ => Ok(()),
    }
}

/// ES `append`: absent → `[value]`; scalar → promoted to a one-element list; with
/// `allow_duplicates == false` the value is added only if not already present. A list `value`
/// is appended element by element.
pub fn append(
    doc: &mut Map<String, Value>,
    path: &str,
    value: Value,
    allow_duplicates: bool,
) -> Result<(), IngestError> {
    let slot = slot_mut(doc, path)?;
    append_to_slot(slot, value, allow_duplicates);
    Ok(())
}

/// [`append`] on an already-resolved slot (a fresh slot is `null`; an existing scalar is
/// promoted to a one-element list).
pub fn append_to_slot(slot: &mut Value, value: Value, allow_duplicates: bool) {
    if !slot.is_array() {
        let previous = std::mem::take(slot);
        *slot = Value::Array(match previous {
            Value::Null => Vec::new(),
            v => vec![v],
        });
    }
    let Value::Array(list) = slot else {
        return;
    };
    let items = match value {
        Value::Array(items) => items,
        v => vec![v],
    };
    for item in items {
        if allow_duplicates || !list.contains(&item) {
            list.push(item);
        }
    }
}

// ------------------------------------------------------------------------------------------
// convert
// ------------------------------------------------------------------------------------------

/// Target types of the ES `convert` processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvertType {
    /// Java `toString()`.
    String,
    /// `Long.parseLong` (or `Long.decode` for `0x`/`-0x`).
    Long,
    /// `Double.parseDouble`.
    Double,
    /// `"true"`/`"false"`, ignoring case.
    Boolean,
    /// A valid IPv4/IPv6 literal, kept as text.
    Ip,
}

/// ES `convert`: lists are converted element by element; every other value is converted from
/// its Java `toString()`. Errors carry the ES message text.
pub fn convert(value: &Value, to: ConvertType) -> Result<Value, IngestError> {
    if let Value::Array(items) = value {
        return items
            .iter()
            .map(|v| convert_one(v, to))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array);
    }
    convert_one(value, to)
}

fn convert_one(value: &Value, to: ConvertType) -> Result<Value, IngestError> {
    let text: std::borrow::Cow<'_, str> = match value {
        Value::String(s) => std::borrow::Cow::Borrowed(s.as_str()),
        v => std::borrow::Cow::Owned(java_to_string(v)),
    };
    match to {
        ConvertType::String => Ok(match value {
            Value::String(s) => Value::String(s.clone()),
            _ => Value::String(text.into_owned()),
        }),
        ConvertType::Long => parse_java_long(&text)
            .map(Value::from)
            .ok_or_else(|| IngestError(format!("unable to convert [{text}] to long"))),
        ConvertType::Double => parse_java_double(&text)
            .and_then(Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| IngestError(format!("unable to convert [{text}] to double"))),
        ConvertType::Boolean => {
            if java_eq_ignore_case(&text, "true") {
                Ok(Value::Bool(true))
            } else if java_eq_ignore_case(&text, "false") {
                Ok(Value::Bool(false))
            } else {
                Err(IngestError(format!(
                    "[{text}] is not a boolean value, cannot convert to boolean"
                )))
            }
        }
        ConvertType::Ip => {
            if is_inet_address(&text) {
                Ok(Value::String(text.into_owned()))
            } else {
                Err(IngestError(format!("'{text}' is not a valid ip address")))
            }
        }
    }
}

/// `Long.parseLong`, or `Long.decode` when the text starts with `0x`/`-0x` (ES convert).
pub fn parse_java_long(text: &str) -> Option<i64> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (digits, radix) = match rest.strip_prefix("0x") {
        Some(hex) if text.starts_with("0x") || text.starts_with("-0x") => (hex, 16),
        _ => (rest, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// `Double.parseDouble`: surrounding whitespace and a `f`/`d` suffix allowed; Rust-only
/// spellings (`inf`, `nan`) refused.
pub fn parse_java_double(text: &str) -> Option<f64> {
    let t = text.trim_matches(|c: char| c <= ' ');
    let body = t.strip_prefix(['+', '-']).unwrap_or(t);
    if body == "NaN" || body == "Infinity" {
        return t.parse::<f64>().ok();
    }
    let t = t.strip_suffix(['f', 'F', 'd', 'D']).unwrap_or(t);
    let body = t.strip_prefix(['+', '-']).unwrap_or(t);
    let valid = !body.is_empty()
        && body.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && body
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'));
    if !valid {
        return None;
    }
    t.parse::<f64>().ok()
}

/// Java `String.equalsIgnoreCase` (per-char upper/lower comparison).
fn java_eq_ignore_case(a: &str, b: &str) -> bool {
    let mut ai = a.chars();
    let mut bi = b.chars();
    loop {
        match (ai.next(), bi.next()) {
            (None, None) => return true,
            (Some(x), Some(y)) => {
                if x == y {
                    continue;
                }
                let (ux, uy) = (single_upper(x), single_upper(y));
                if ux == uy || single_lower(ux) == single_lower(uy) {
                    continue;
                }
                return false;
            }
            _ => return false,
        }
    }
}

fn single_upper(c: char) -> char {
    let mut it = c.to_uppercase();
    match (it.next(), it.next()) {
        (Some(u), None) => u,
        _ => c,
    }
}

fn single_lower(c: char) -> char {
    let mut it = c.to_lowercase();
    match (it.next(), it.next()) {
        (Some(l), None) => l,
        _ => c,
    }
}

/// Whether `text` is an IPv4 or IPv6 literal (IPv6 may carry a `%zone`).
pub fn is_inet_address(text: &str) -> bool {
    let addr = match text.split_once('%') {
        Some((a, zone)) if a.contains(':') && !zone.is_empty() => a,
        Some(_) => return false,
        None => text,
    };
    addr.parse::<IpAddr>().is_ok()
}

// ------------------------------------------------------------------------------------------
// String processors (lowercase, gsub, trim)
// ------------------------------------------------------------------------------------------

/// Applies a string processor (`lowercase`, `gsub`, `trim`, …) to a string or a list of
/// strings, like ES `AbstractStringProcessor`; any other type fails with the ES cast message.
pub fn map_strings(
    value: &Value,
    field: &str,
    f: impl Fn(&str) -> String,
) -> Result<Value, IngestError> {
    let cast_error = |v: &Value| {
        IngestError(format!(
            "field [{field}] of type [{}] cannot be cast to [java.lang.String]",
            java_type_name(v)
        ))
    };
    match value {
        Value::String(s) => Ok(Value::String(f(s))),
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(Value::String(f(s))),
                other => Err(cast_error(other)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        other => Err(cast_error(other)),
    }
}

/// Java `String.trim()`: strips every char `<= ' '` at both ends.
pub fn java_trim(s: &str) -> String {
    s.trim_matches(|c: char| c <= ' ').to_owned()
}

/// Java `String.toLowerCase(Locale.ROOT)`.
pub fn java_lowercase(s: &str) -> String {
    s.to_lowercase()
}

// ------------------------------------------------------------------------------------------
// date
// ------------------------------------------------------------------------------------------

/// Input formats of the ES `date` processor that the mappers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateFormat {
    /// ES `ISO8601`: `yyyy[-MM[-dd[THH[:mm[:ss[.fff]]]]]][zone]`, no zone = UTC.
    Iso8601,
    /// ES `UNIX`: epoch seconds, possibly fractional.
    Unix,
}

/// Parses ES-style ISO 8601 text. A value without offset is taken as UTC.
pub fn parse_iso8601(text: &str) -> Option<DateTime<FixedOffset>> {
    let b = text.as_bytes();
    let mut pos = 0usize;
    let num = |pos: &mut usize, n: usize| -> Option<u32> {
        let s = text.get(*pos..*pos + n)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        *pos += n;
        s.parse().ok()
    };
    let year = i32::try_from(num(&mut pos, 4)?).ok()?;
    let (mut month, mut day) = (1, 1);
    let (mut hour, mut minute, mut second, mut nanos) = (0, 0, 0, 0u32);
    if b.get(pos) == Some(&b'-') {
        pos += 1;
        month = num(&mut pos, 2)?;
        if b.get(pos) == Some(&b'-') {
            pos += 1;
            day = num(&mut pos, 2)?;
            if b.get(pos) == Some(&b'T') {
                pos += 1;
                hour = num(&mut pos, 2)?;
                if b.get(pos) == Some(&b':') {
                    pos += 1;
                    minute = num(&mut pos, 2)?;
                    if b.get(pos) == Some(&b':') {
                        pos += 1;
                        second = num(&mut pos, 2)?;
                        if matches!(b.get(pos), Some(b'.' | b',')) {
                            pos += 1;
                            let start = pos;
                            while b.get(pos).is_some_and(u8::is_ascii_digit) {
                                pos += 1;
                            }
                            let digits = text.get(start..pos)?;
                            if digits.is_empty() || digits.len() > 9 {
                                return None;
                            }
                            let scale = 10u32.pow(9 - u32::try_from(digits.len()).ok()?);
                            nanos = digits.parse::<u32>().ok()? * scale;
                        }
                    }
                }
            }
        }
    }
    let offset_secs = match text.get(pos..)? {
        "" | "Z" => 0,
        zone => {
            let sign = match zone.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let rest = zone.get(1..)?;
            let (h, m) = match rest.len() {
                2 => (rest, "00"),
                4 => (rest.get(..2)?, rest.get(2..)?),
                5 if rest.as_bytes().get(2) == Some(&b':') => (rest.get(..2)?, rest.get(3..)?),
                _ => return None,
            };
            if !(h.bytes().chain(m.bytes()).all(|c| c.is_ascii_digit())) {
                return None;
            }
            let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
            if h > 18 || m > 59 {
                return None;
            }
            sign * (h * 3600 + m * 60)
        }
    };
    let date = NaiveDate::from_ymd_opt(year, month, day)?;
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?;
    let offset = FixedOffset::east_opt(offset_secs)?;
    offset
        .from_local_datetime(&NaiveDateTime::new(date, time))
        .single()
}

/// Parses ES `UNIX` text (epoch seconds, fraction allowed; millisecond precision).
pub fn parse_unix(text: &str) -> Option<DateTime<Utc>> {
    let secs = parse_java_double(text)?;
    let millis = secs * 1000.0;
    if !millis.is_finite() || millis.abs() > 8.64e18 {
        return None;
    }
    // ES truncates the product to a long number of milliseconds.
    #[allow(clippy::cast_possible_truncation)]
    DateTime::from_timestamp_millis(millis as i64)
}

/// The ES default date output: UTC, `yyyy-MM-dd'T'HH:mm:ss.SSSZ` with a literal `Z`.
pub fn format_date(dt: &DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    let year = dt.year();
    let mut out = String::with_capacity(24);
    if (0..=9999).contains(&year) {
        let _ = write!(out, "{year:04}");
    } else {
        let _ = write!(out, "{year:+05}");
    }
    let _ = write!(
        out,
        "-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.timestamp_subsec_millis().min(999)
    );
    out
}

/// ES `date`: parses the value's Java `toString()` with the first matching format and returns
/// the formatted UTC text.
pub fn date(value: &Value, formats: &[DateFormat]) -> Result<String, IngestError> {
    let text: std::borrow::Cow<'_, str> = match value {
        Value::String(s) => std::borrow::Cow::Borrowed(s.as_str()),
        v => std::borrow::Cow::Owned(java_to_string(v)),
    };
    for format in formats {
        let parsed = match format {
            DateFormat::Iso8601 => parse_iso8601(&text).map(|d| d.with_timezone(&Utc)),
            DateFormat::Unix => parse_unix(&text),
        };
        if let Some(dt) = parsed {
            return Ok(format_date(&dt));
        }
    }
    Err(IngestError(format!("unable to parse date [{text}]")))
}

// ------------------------------------------------------------------------------------------
// Empty-value cleaner, fingerprint, error recording
// ------------------------------------------------------------------------------------------

/// Recursively removes null and `""` values, then maps and lists that are (or became) empty.
/// `false`, `0` and `0.0` are kept.
pub fn remove_empty(doc: &mut Map<String, Value>) {
    prune_map(doc);
}

/// Prunes `value` in place; returns whether it should be dropped by its parent.
fn prune(value: &mut Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Object(map) => prune_map(map),
        Value::Array(list) => {
            // Most lists lose nothing: visit in place, and only `retain` when one must go.
            let mut drop_any = false;
            for v in list.iter_mut() {
                drop_any |= prune(v);
            }
            if drop_any {
                list.retain(|v| !is_pruned(v));
            }
            list.is_empty()
        }
        _ => false,
    }
}

/// Prunes every value of `map` and removes those that must go; returns whether `map` is then
/// empty. A `BTreeMap` `retain` walks with removal handles, which costs more than a plain
/// visit, so it only runs when some entry must go.
fn prune_map(map: &mut Map<String, Value>) -> bool {
    let mut drop_any = false;
    for v in map.values_mut() {
        drop_any |= prune(v);
    }
    if drop_any {
        map.retain(|_, v| !is_pruned(v));
    }
    map.is_empty()
}

/// Whether an already pruned value is one its parent drops.
fn is_pruned(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Object(map) => map.is_empty(),
        Value::Array(list) => list.is_empty(),
        _ => false,
    }
}

/// ES `fingerprint` (SHA-1, no salt, Base64) over `fields` of `doc`, with `ignore_missing`:
/// fields sorted by name, each present value fed as `0x00` + its bytes. `None` when every field
/// is missing or null (ES then leaves the target unset).
pub fn fingerprint(doc: &Map<String, Value>, fields: &[&str]) -> Option<String> {
    let mut sorted: Vec<&str> = fields.to_vec();
    sorted.sort_unstable();
    let mut hasher = Sha1::new();
    let mut any = false;
    for field in sorted {
        match get(doc, field) {
            None | Some(Value::Null) => {}
            Some(v) => {
                any = true;
                hash_value(&mut hasher, v);
            }
        }
    }
    any.then(|| base64::engine::general_purpose::STANDARD.encode(hasher.finalize()))
}

fn hash_value(hasher: &mut Sha1, value: &Value) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| hash_value(hasher, v)),
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (k, v) in entries {
                hasher.update([0u8]);
                hasher.update(k.as_bytes());
                hash_value(hasher, v);
            }
        }
        scalar => {
            hasher.update([0u8]);
            match scalar {
                Value::String(s) => hasher.update(s.as_bytes()),
                Value::Bool(b) => hasher.update([if *b { 1u8 } else { 2u8 }]),
                Value::Number(n) => {
                    if let Some(i) = n.as_i64() {
                        match i32::try_from(i) {
                            Ok(small) => hasher.update(small.to_le_bytes()),
                            Err(_) => hasher.update(i.to_le_bytes()),
                        }
                    } else if let Some(u) = n.as_u64() {
                        hasher.update(u.to_le_bytes());
                    } else if let Some(f) = n.as_f64() {
                        hasher.update(f.to_le_bytes());
                    }
                }
                _ => {}
            }
        }
    }
}

/// The text every "record an error" `on_failure` handler appends.
pub fn error_text(processor_type: &str, tag: &str, pipeline: &str, message: &str) -> String {
    format!(
        "Processor {processor_type} with tag {tag} in pipeline {pipeline} failed with message: {message}"
    )
}

/// Appends the error text of `failure` to `error.message` (list semantics, duplicates kept).
pub fn record_error(doc: &mut Map<String, Value>, failure: &ProcessorFailure, pipeline: &str) {
    let text = error_text(
        failure.processor_type,
        failure.tag,
        pipeline,
        &failure.message,
    );
    push_error_message(doc, text);
}

/// Appends `text` to `error.message` (list semantics, duplicates kept), the field every error
/// document carries.
pub fn push_error_message(doc: &mut Map<String, Value>, text: String) {
    if append(doc, "error.message", Value::String(text.clone()), true).is_err() {
        // `error` is not an object: ES would fail the handler; keep the text somewhere visible.
        doc.insert("error".to_owned(), serde_json::json!({ "message": [text] }));
    }
}

// ------------------------------------------------------------------------------------------
// Additions for pipelines beyond ThreatConnect (ThreatQ): mapping options, a fixed Java date
// pattern, and the `uri_parts` processor.
// ------------------------------------------------------------------------------------------

/// Per-stream inputs of a mapping that do not come from the indicator itself (shared by every
/// vendor mapper).
#[derive(Debug, Clone, Default)]
pub struct MapOptions {
    /// `ioc_expiration_duration`; None = the pipeline sees no `_conf` (as in Elastic's pipeline tests).
    pub ioc_expiration: Option<crate::config::IocExpiration>,
    /// The event's `tags` as the agent supplies them (already including `preserve_original_event` when that option is on).
    pub tags: Vec<String>,
}

impl MapOptions {
    /// What the Agent puts into the event before the pipeline runs: `tags`, and `_conf`
    /// carrying `ioc_expiration_duration`.
    pub fn insert_agent_fields(&self, doc: &mut Map<String, Value>) {
        if !self.tags.is_empty() {
            let tags = self.tags.iter().cloned().map(Value::String).collect();
            doc.insert("tags".to_owned(), Value::Array(tags));
        }
        if let Some(exp) = &self.ioc_expiration {
            let mut conf = Map::new();
            conf.insert(
                "ioc_expiration_duration".to_owned(),
                Value::String(exp.raw.clone()),
            );
            doc.insert("_conf".to_owned(), Value::Object(conf));
        }
    }
}

/// Parses the Java pattern `yyyy-MM-dd HH:mm:ss` (strict: fixed widths, real calendar dates,
/// hours 0–23) as UTC.
pub fn parse_ymd_hms(text: &str) -> Option<DateTime<Utc>> {
    let b = text.as_bytes();
    if b.len() != 19
        || b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || b.get(10) != Some(&b' ')
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        let s = text.get(from..to)?;
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    let date = NaiveDate::from_ymd_opt(i32::try_from(num(0, 4)?).ok()?, num(5, 7)?, num(8, 10)?)?;
    let time = NaiveTime::from_hms_opt(num(11, 13)?, num(14, 16)?, num(17, 19)?)?;
    Some(NaiveDateTime::new(date, time).and_utc())
}

/// ES `date` with the single format `yyyy-MM-dd HH:mm:ss` (UTC): the value's Java `toString()`
/// parsed and re-formatted like [`format_date`], or the ES error text.
pub fn date_ymd_hms(value: &Value) -> Result<String, IngestError> {
    let text: std::borrow::Cow<'_, str> = match value {
        Value::String(s) => std::borrow::Cow::Borrowed(s.as_str()),
        v => std::borrow::Cow::Owned(java_to_string(v)),
    };
    parse_ymd_hms(&text)
        .map(|dt| format_date(&dt))
        .ok_or_else(|| IngestError(format!("unable to parse date [{text}]")))
}

/// ES `uri_parts` (without `original`, which the caller adds with `keep_original`): parses
/// `text` like `java.net.URI` (RFC 2396), falling back to `java.net.URL`, and returns the parts
/// ES writes (`domain`, `fragment`, `path`, `extension`, `port`, `query`, `scheme`,
/// `user_info`, `username`, `password`). Components are percent-decoded as the `URI` getters do.
pub fn uri_parts(text: &str) -> Result<Map<String, Value>, IngestError> {
    let parts = java_uri::parse(text)
        .or_else(|| java_url::parse(text))
        .ok_or_else(|| IngestError(format!("unable to parse URI [{text}]")))?;
    let mut out = Map::new();
    if let Some(d) = parts.host {
        out.insert("domain".to_owned(), Value::String(d));
    }
    if let Some(f) = parts.fragment {
        out.insert("fragment".to_owned(), Value::String(f));
    }
    if let Some(p) = parts.path {
        if let Some(i) = p.rfind('.') {
            let ext = p.get(i + 1..).unwrap_or_default().to_owned();
            out.insert("extension".to_owned(), Value::String(ext));
        }
        out.insert("path".to_owned(), Value::String(p));
    }
    if let Some(port) = parts.port {
        out.insert("port".to_owned(), Value::from(port));
    }
    if let Some(q) = parts.query {
        out.insert("query".to_owned(), Value::String(q));
    }
    if let Some(s) = parts.scheme {
        out.insert("scheme".to_owned(), Value::String(s));
    }
    if let Some(u) = parts.user_info {
        if let Some((user, pass)) = u.split_once(':') {
            out.insert("username".to_owned(), Value::String(user.to_owned()));
            out.insert("password".to_owned(), Value::String(pass.to_owned()));
        }
        out.insert("user_info".to_owned(), Value::String(u));
    }
    Ok(out)
}

/// The components `uri_parts` reads from a parsed URI/URL.
#[derive(Debug, Default)]
struct UriComponents {
    scheme: Option<String>,
    user_info: Option<String>,
    host: Option<String>,
    port: Option<i32>,
    path: Option<String>,
    query: Option<String>,
    fragment: Option<String>,
}

/// `java.net.URI`'s RFC 2396 parser (`URI.Parser`), reduced to what the getters expose.
mod java_uri {
    use super::UriComponents;

    const MARK: &str = "-_.!~*'()";
    const RESERVED: &str = ";/?:@&=+$,[]";

    fn unreserved(c: char) -> bool {
        c.is_ascii_alphanumeric() || MARK.contains(c)
    }
    fn uric(c: char) -> bool {
        unreserved(c) || RESERVED.contains(c)
    }
    fn pchar(c: char) -> bool {
        unreserved(c) || ":@&=+$,".contains(c)
    }
    fn path_char(c: char) -> bool {
        pchar(c) || c == ';' || c == '/'
    }
    fn userinfo_char(c: char) -> bool {
        unreserved(c) || ";:&=+$,".contains(c)
    }
    fn reg_name_char(c: char) -> bool {
        unreserved(c) || "$,;:@&=+".contains(c)
    }
    fn server_char(c: char) -> bool {
        userinfo_char(c) || c.is_ascii_alphanumeric() || "-.:@[]".contains(c)
    }

    /// Java `scan` with escapes: the end of the longest prefix of `s` made of `ok` characters,
    /// `%XX` escapes and visible non-ASCII characters; `None` on a malformed escape.
    fn scan_escaped(s: &str, ok: impl Fn(char) -> bool) -> Option<usize> {
        let b = s.as_bytes();
        let mut it = s.char_indices();
        while let Some((i, c)) = it.next() {
            if ok(c) {
                continue;
            }
            if c == '%' {
                let hex = |j: usize| b.get(j).is_some_and(u8::is_ascii_hexdigit);
                if hex(i + 1) && hex(i + 2) {
                    it.next();
                    it.next();
                    continue;
                }
                return None;
            }
            if u32::from(c) > 128 && !c.is_whitespace() && !c.is_control() {
                continue;
            }
            return Some(i);
        }
        Some(s.len())
    }

    /// The whole of `s` is made of `ok` characters (with escapes).
    fn all_escaped(s: &str, ok: impl Fn(char) -> bool) -> bool {
        scan_escaped(s, ok) == Some(s.len())
    }

    /// Percent-decoding as `URI.decode` does (UTF-8, malformed sequences replaced).
    fn decode(s: &str) -> String {
        if !s.contains('%') {
            return s.to_owned();
        }
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while let Some(&c) = b.get(i) {
            if c == b'%' {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(v) = hex {
                    out.push(v);
                    i += 3;
                    continue;
                }
            }
            out.push(c);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    pub(super) fn parse(s: &str) -> Option<UriComponents> {
        let mut parts = UriComponents::default();
        let scheme_end = s.find(['/', '?', '#', ':']);
        let rest = match scheme_end {
            Some(p) if s.as_bytes().get(p) == Some(&b':') => {
                let scheme = s.get(..p)?;
                let mut chars = scheme.chars();
                if !chars.next().is_some_and(|c| c.is_ascii_alphabetic())
                    || !chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                {
                    return None;
                }
                let ssp = s.get(p + 1..)?;
                if ssp.is_empty() {
                    return None;
                }
                parts.scheme = Some(scheme.to_owned());
                if !ssp.starts_with('/') {
                    // Opaque URI: only scheme and fragment are exposed.
                    let (body, frag) = match ssp.split_once('#') {
                        Some((b, f)) => (b, Some(f)),
                        None => (ssp, None),
                    };
                    if !all_escaped(body, uric) {
                        return None;
                    }
                    if let Some(f) = frag {
                        if !all_escaped(f, uric) {
                            return None;
                        }
                        parts.fragment = Some(decode(f));
                    }
                    return Some(parts);
                }
                ssp
            }
            _ => s,
        };
        hierarchical(rest, &mut parts)?;
        Some(parts)
    }

    fn hierarchical(s: &str, parts: &mut UriComponents) -> Option<()> {
        let mut rest = s;
        if let Some(after) = rest.strip_prefix("//") {
            let end = after.find(['/', '?', '#']).unwrap_or(after.len());
            let authority = after.get(..end)?;
            if !authority.is_empty() {
                parse_authority(authority, parts)?;
            } else if end == after.len() {
                return None; // "Expected authority"
            }
            rest = after.get(end..)?;
        }
        let path_end = rest.find(['?', '#']).unwrap_or(rest.len());
        let path = rest.get(..path_end)?;
        if !all_escaped(path, path_char) {
            return None;
        }
        parts.path = Some(decode(path));
        rest = rest.get(path_end..)?;
        if let Some(q) = rest.strip_prefix('?') {
            let end = q.find('#').unwrap_or(q.len());
            let query = q.get(..end)?;
            if !all_escaped(query, uric) {
                return None;
            }
            parts.query = Some(decode(query));
            rest = q.get(end..)?;
        }
        if let Some(f) = rest.strip_prefix('#') {
            if !all_escaped(f, uric) {
                return None;
            }
            parts.fragment = Some(decode(f));
            rest = "";
        }
        rest.is_empty().then_some(())
    }

    fn parse_authority(a: &str, parts: &mut UriComponents) -> Option<()> {
        let server_chars = all_escaped(a, server_char);
        let reg_chars = all_escaped(a, reg_name_char);
        if server_chars {
            let mut server = UriComponents::default();
            if parse_server(a, &mut server).is_some() {
                parts.user_info = server.user_info;
                parts.host = server.host;
                parts.port = server.port;
                return Some(());
            }
        }
        // A registry-based authority: valid, but no host, user info or port.
        reg_chars.then_some(())
    }

    fn parse_server(a: &str, parts: &mut UriComponents) -> Option<()> {
        let mut rest = a;
        if let Some(at) = a.find('@') {
            let user = a.get(..at)?;
            if !all_escaped(user, userinfo_char) {
                return None;
            }
            parts.user_info = Some(decode(user));
            rest = a.get(at + 1..)?;
        }
        let host_end = if rest.starts_with('[') {
            let close = rest.find(']')?;
            let inner = rest.get(1..close)?;
            let addr = inner.split_once('%').map_or(inner, |(a, _)| a);
            addr.parse::<std::net::Ipv6Addr>().ok()?;
            close + 1
        } else {
            match ipv4_end(rest) {
                Some(end) => end,
                None => hostname_end(rest)?,
            }
        };
        parts.host = Some(rest.get(..host_end)?.to_owned());
        let after = rest.get(host_end..)?;
        if after.is_empty() {
            return Some(());
        }
        let port = after.strip_prefix(':')?;
        if port.is_empty() {
            return Some(());
        }
        if !port.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        parts.port = Some(port.parse().ok()?);
        Some(())
    }

    /// `parseIPv4Address`: a dotted quad (octets ≤ 255) followed by nothing or `:`.
    fn ipv4_end(s: &str) -> Option<usize> {
        let run = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let quad = s.get(..run)?;
        let octets: Vec<&str> = quad.split('.').collect();
        let ok = octets.len() == 4
            && octets
                .iter()
                .all(|o| !o.is_empty() && o.len() <= 3 && o.parse::<u16>().is_ok_and(|v| v <= 255));
        if !ok {
            return None;
        }
        match s.as_bytes().get(run) {
            None | Some(b':') => Some(run),
            Some(_) => None,
        }
    }

    /// `parseHostname`: dot-separated labels of alphanumerics and inner dashes; the last label
    /// of a multi-label name starts with a letter; only `:` may follow.
    fn hostname_end(s: &str) -> Option<usize> {
        let b = s.as_bytes();
        let mut p = 0usize;
        let mut last_label: Option<usize> = None;
        loop {
            let start = p;
            while b.get(p).is_some_and(u8::is_ascii_alphanumeric) {
                p += 1;
            }
            if p == start {
                break;
            }
            last_label = Some(start);
            while b
                .get(p)
                .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'-')
            {
                p += 1;
            }
            if p > 0 && b.get(p - 1) == Some(&b'-') {
                return None;
            }
            if b.get(p) == Some(&b'.') {
                p += 1;
            } else {
                break;
            }
            if p >= b.len() {
                break;
            }
        }
        if p < b.len() && b.get(p) != Some(&b':') {
            return None;
        }
        let l = last_label?;
        if l > 0 && !b.get(l).is_some_and(u8::is_ascii_alphabetic) {
            return None;
        }
        Some(p)
    }
}

/// The lenient `java.net.URL` parser (`URLStreamHandler.parseURL`) for the protocols a JDK
/// ships handlers for; used only when `java.net.URI` refuses the text.
mod java_url {
    use super::UriComponents;

    pub(super) fn parse(spec: &str) -> Option<UriComponents> {
        let spec = spec.trim_matches(|c: char| c <= ' ');
        let spec = match spec.get(..4) {
            Some(p) if p.eq_ignore_ascii_case("url:") => spec.get(4..)?,
            _ => spec,
        };
        let colon = spec.find([':', '/', '#'])?;
        if spec.as_bytes().get(colon) != Some(&b':') {
            return None; // "no protocol"
        }
        let protocol = spec.get(..colon)?.to_ascii_lowercase();
        let mut chars = protocol.chars();
        if !chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            || !chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return None;
        }
        if !["http", "https", "ftp", "file", "jar", "mailto", "jrt"].contains(&protocol.as_str()) {
            return None; // "unknown protocol"
        }
        let rest = spec.get(colon + 1..)?;
        if protocol == "jar" && !rest.contains("!/") {
            return None;
        }
        let mut parts = UriComponents {
            scheme: Some(protocol.clone()),
            ..UriComponents::default()
        };
        let (body, frag) = match rest.split_once('#') {
            Some((b, f)) => (b, Some(f.to_owned())),
            None => (rest, None),
        };
        parts.fragment = frag;
        if protocol == "mailto" || protocol == "jar" {
            parts.path = Some(body.to_owned());
            return Some(parts);
        }
        let (before_query, query) = match body.split_once('?') {
            Some((b, q)) => (b, Some(q.to_owned())),
            None => (body, None),
        };
        parts.query = query;
        let mut path = before_query;
        if let Some(after) = before_query.strip_prefix("//") {
            let end = after.find('/').unwrap_or(after.len());
            let authority = after.get(..end)?;
            path = after.get(end..)?;
            let host_port = match authority.rfind('@') {
                Some(at) => {
                    parts.user_info = Some(authority.get(..at)?.to_owned());
                    authority.get(at + 1..)?
                }
                None => authority,
            };
            let (host, port) = if host_port.starts_with('[') {
                let close = host_port.find(']')?;
                (host_port.get(..=close)?, host_port.get(close + 1..)?)
            } else {
                match host_port.find(':') {
                    Some(i) => (host_port.get(..i)?, host_port.get(i..)?),
                    None => (host_port, ""),
                }
            };
            parts.host = Some(host.to_owned());
            if let Some(p) = port.strip_prefix(':') {
                if !p.is_empty() {
                    if !p.bytes().all(|c| c.is_ascii_digit()) {
                        return None; // "Invalid port number"
                    }
                    parts.port = Some(p.parse().ok()?);
                }
            } else if !port.is_empty() {
                return None;
            }
        }
        parts.path = Some(path.to_owned());
        Some(parts)
    }
}

/// The ES `json` processor's parser with its defaults (`allow_duplicate_keys: false`,
/// `strict_json_parsing: true`): one JSON value, nothing after it, and no object with a
/// repeated key (`Duplicate field '<key>'`).
pub fn parse_json_strict(text: &str) -> Result<Value, serde_json::Error> {
    use serde::de::DeserializeSeed as _;
    let mut de = serde_json::Deserializer::from_str(text);
    let value = StrictJson.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Builds a [`Value`] like `serde_json`, but refuses duplicate object keys.
struct StrictJson;

impl<'de> serde::de::DeserializeSeed<'de> for StrictJson {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for StrictJson {
    type Value = Value;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut list = Vec::new();
        while let Some(v) = seq.next_element_seed(StrictJson)? {
            list.push(v);
        }
        Ok(Value::Array(list))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("Duplicate field '{key}'")));
            }
            let v = map.next_value_seed(StrictJson)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// Arbitrary JSON for "never panics" property tests: scalars, the given realistic `strings`,
/// and nested objects whose keys are drawn from `keys` (so real field names carry wrong types).
#[cfg(test)]
pub(crate) fn arb_json(
    strings: &'static [&'static str],
    keys: &'static [&'static str],
) -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1.0e6f64..1.0e6).prop_map(Value::from),
        "[a-zA-Z0-9:@. /%_-]{0,16}".prop_map(Value::String),
        prop::sample::select(strings).prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(keys).prop_map(str::to_owned),
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn paths_get_set_remove_rename() {
        let mut d = obj(json!({"a": {"b": [1, {"c": 2}]}}));
        assert_eq!(get(&d, "a.b.1.c"), Some(&json!(2)));
        assert_eq!(get(&d, "a.x"), None);
        set(&mut d, "x.y.z", json!("v")).unwrap();
        assert_eq!(get(&d, "x.y.z"), Some(&json!("v")));
        assert!(set(&mut d, "x.y.z.w", json!(1)).is_err());
        assert!(rename(&mut d, "x.y.z", "p.q", false).unwrap());
        assert_eq!(get(&d, "p.q"), Some(&json!("v")));
        assert!(!rename(&mut d, "nope", "p.r", false).unwrap());
        assert_eq!(remove(&mut d, "p.q"), Some(json!("v")));
    }

    #[test]
    fn append_promotes_and_dedups() {
        let mut d = obj(json!({"k": "enrichment"}));
        append(&mut d, "k", json!("pipeline_error"), false).unwrap();
        append(&mut d, "k", json!("pipeline_error"), false).unwrap();
        assert_eq!(d["k"], json!(["enrichment", "pipeline_error"]));
        append(&mut d, "n.l", json!("a"), true).unwrap();
        append(&mut d, "n.l", json!("a"), true).unwrap();
        assert_eq!(d["n"]["l"], json!(["a", "a"]));
    }

    #[test]
    fn convert_follows_java() {
        assert_eq!(convert(&json!(12), ConvertType::String), Ok(json!("12")));
        assert_eq!(convert(&json!(3.0), ConvertType::String), Ok(json!("3.0")));
        assert_eq!(
            convert(&json!(1e20), ConvertType::String),
            Ok(json!("1.0E20"))
        );
        assert_eq!(convert(&json!("0x1F"), ConvertType::Long), Ok(json!(31)));
        assert_eq!(convert(&json!("-0x1F"), ConvertType::Long), Ok(json!(-31)));
        assert_eq!(
            convert(&json!(3.5), ConvertType::Long),
            Err(IngestError("unable to convert [3.5] to long".into()))
        );
        assert_eq!(convert(&json!(3), ConvertType::Double), Ok(json!(3.0)));
        assert_eq!(
            convert(&json!("TRUE"), ConvertType::Boolean),
            Ok(json!(true))
        );
        assert_eq!(
            convert(&json!("maybe"), ConvertType::Boolean),
            Err(IngestError(
                "[maybe] is not a boolean value, cannot convert to boolean".into()
            ))
        );
        assert_eq!(convert(&json!("::1"), ConvertType::Ip), Ok(json!("::1")));
        assert_eq!(
            convert(&json!("0.0.0.0/8"), ConvertType::Ip),
            Err(IngestError("'0.0.0.0/8' is not a valid ip address".into()))
        );
        assert_eq!(
            convert(&json!([1, 2]), ConvertType::String),
            Ok(json!(["1", "2"]))
        );
    }

    #[test]
    fn dates_format_as_es() {
        let iso = [DateFormat::Iso8601];
        assert_eq!(
            date(&json!("2023-12-01T08:26:48Z"), &iso),
            Ok("2023-12-01T08:26:48.000Z".into())
        );
        assert_eq!(
            date(&json!("2023-12-01T10:26:48.123456+02:00"), &iso),
            Ok("2023-12-01T08:26:48.123Z".into())
        );
        assert_eq!(
            date(&json!("2023-12-01"), &iso),
            Ok("2023-12-01T00:00:00.000Z".into())
        );
        assert_eq!(
            date(
                &json!("1700000000"),
                &[DateFormat::Iso8601, DateFormat::Unix]
            ),
            Ok("2023-11-14T22:13:20.000Z".into())
        );
        assert_eq!(
            date(&json!("nope"), &iso),
            Err(IngestError("unable to parse date [nope]".into()))
        );
    }

    #[test]
    fn cleaner_removes_empty_bottom_up() {
        let mut d = obj(json!({"a": {"b": "", "c": [null, {}, []]}, "f": false, "z": 0, "s": "x"}));
        remove_empty(&mut d);
        assert_eq!(Value::Object(d), json!({"f": false, "z": 0, "s": "x"}));
    }

    #[test]
    fn fingerprint_matches_es() {
        let d = obj(
            json!({"json": {"summary": "johnbae@poverts.com", "lastModified": "2023-12-01T08:26:48Z"}}),
        );
        assert_eq!(
            fingerprint(&d, &["json.summary", "json.lastModified"]).as_deref(),
            Some("IbZVedQybbneBJW2COa7ZnfzP5I=")
        );
        assert_eq!(fingerprint(&d, &["json.nope"]), None);
    }

    #[test]
    fn java_doubles() {
        assert_eq!(java_double_to_string(0.001), "0.001");
        assert_eq!(java_double_to_string(1.0e-4), "1.0E-4");
        assert_eq!(java_double_to_string(1234567.0), "1234567.0");
        assert_eq!(java_double_to_string(1.5e7), "1.5E7");
    }

    #[test]
    fn ymd_hms_pattern_is_strict() {
        assert_eq!(
            date_ymd_hms(&json!("2020-11-15 00:00:02")),
            Ok("2020-11-15T00:00:02.000Z".into())
        );
        for bad in [
            "2020-11-15T00:00:02",
            "2020-02-30 00:00:00",
            "2020-1-5 00:00:00",
            "2020-11-15 24:00:00",
            "",
        ] {
            assert!(date_ymd_hms(&json!(bad)).is_err(), "{bad}");
        }
        assert_eq!(
            date_ymd_hms(&json!(5)),
            Err(IngestError("unable to parse date [5]".into()))
        );
    }

    #[test]
    fn uri_parts_like_java() {
        let p = uri_parts("https://u:pw@Evil.example:8443/a/b.php?x=1%20#frag").unwrap();
        assert_eq!(
            Value::Object(p),
            json!({"scheme": "https", "domain": "Evil.example", "port": 8443, "path": "/a/b.php",
                   "extension": "php", "query": "x=1 ", "fragment": "frag",
                   "user_info": "u:pw", "username": "u", "password": "pw"})
        );
        let p = uri_parts("evil.example/x.php").unwrap();
        assert_eq!(
            Value::Object(p),
            json!({"path": "evil.example/x.php", "extension": "php"})
        );
        assert!(uri_parts("89.160.20.156:8080/maf.html").is_err());
        let p = uri_parts("http://89.160.20.156:8080/v1.2/dir").unwrap();
        assert_eq!(p["extension"], json!("2/dir"));
        assert_eq!(p["domain"], json!("89.160.20.156"));
        // Registry-based authority (underscore): valid URI without a host.
        let p = uri_parts("http://a_b.example/x").unwrap();
        assert!(p.get("domain").is_none());
        // Illegal URI characters: java.net.URL fallback, no decoding.
        let p = uri_parts("http://h.example/a b|c").unwrap();
        assert_eq!(p["path"], json!("/a b|c"));
        assert!(uri_parts("foo://h.example/a b").is_err());
        let p = uri_parts("mailto:a@b.example").unwrap();
        assert_eq!(Value::Object(p), json!({"scheme": "mailto"}));
    }

    #[test]
    fn strict_json_refuses_duplicates_and_trailing_text() {
        assert_eq!(
            parse_json_strict(r#"{"a":[1,{"b":null}],"c":1.5}"#).ok(),
            Some(json!({"a": [1, {"b": null}], "c": 1.5}))
        );
        let dup = parse_json_strict(r#"{"a":1,"b":{"x":1,"x":2}}"#);
        assert!(dup.is_err_and(|e| e.to_string().contains("Duplicate field 'x'")));
        assert!(parse_json_strict("123 \"foo\"").is_err());
        assert_eq!(parse_json_strict(" 7 ").ok(), Some(json!(7)));
    }
}
