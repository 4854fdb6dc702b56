//! The `convert` processor and the Java number and address parsing it relies on.

use super::*;

/// Target types of the ES `convert` processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConvertType {
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
pub(crate) fn convert(value: &Value, to: ConvertType) -> Result<Value, IngestError> {
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
pub(crate) fn parse_java_long(text: &str) -> Option<i64> {
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
pub(crate) fn parse_java_double(text: &str) -> Option<f64> {
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
pub(crate) fn is_inet_address(text: &str) -> bool {
    let addr = match text.split_once('%') {
        Some((a, zone)) if a.contains(':') && !zone.is_empty() => a,
        Some(_) => return false,
        None => text,
    };
    addr.parse::<IpAddr>().is_ok()
}
