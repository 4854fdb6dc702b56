//! Java-flavoured rendering of values (`toString()`, `Double.toString`) and the Java string processors (lowercase, trim).

use super::*;

/// The Java class name Elasticsearch would report for a parsed JSON value.
pub(crate) fn java_type_name(value: &Value) -> &'static str {
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
pub(crate) fn java_double_to_string(d: f64) -> String {
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
pub(crate) fn java_to_string(value: &Value) -> String {
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
pub(crate) fn render(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(v) => java_to_string(v),
    }
}

/// Applies a string processor (`lowercase`, `gsub`, `trim`, …) to a string or a list of
/// strings, like ES `AbstractStringProcessor`; any other type fails with the ES cast message.
pub(crate) fn map_strings(
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
pub(crate) fn java_trim(s: &str) -> String {
    s.trim_matches(|c: char| c <= ' ').to_owned()
}

/// Java `String.toLowerCase(Locale.ROOT)`.
pub(crate) fn java_lowercase(s: &str) -> String {
    s.to_lowercase()
}
