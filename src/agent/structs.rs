//! Conversions between `google.protobuf.Struct` (how the Agent carries unit configs and
//! payloads) and `serde_json::Value` (how our config layer reads them).

use prost_types::{ListValue, Struct, Value as PValue, value::Kind};
use serde_json::{Map, Number, Value};

/// A protobuf `Struct` as a JSON object. Whole numbers become integers (protobuf has only
/// doubles, but `batch_size: 2000` must read as an integer).
pub fn struct_to_json(s: &Struct) -> Value {
    Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect::<Map<_, _>>(),
    )
}

fn value_to_json(v: &PValue) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::NumberValue(n)) => {
            if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
                Value::from(*n as i64)
            } else {
                Number::from_f64(*n).map_or(Value::Null, Value::Number)
            }
        }
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(value_to_json).collect()),
    }
}

/// A JSON value as a protobuf `Value`.
pub(crate) fn json_to_value(v: &Value) -> PValue {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        Value::Object(o) => Kind::StructValue(json_to_struct(o)),
    };
    PValue { kind: Some(kind) }
}

/// A JSON object as a protobuf `Struct`.
pub(crate) fn json_to_struct(o: &Map<String, Value>) -> Struct {
    Struct {
        fields: o
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Integers up to 2^53 (every one a double holds exactly) come back as integers; the host
    /// harness once cut at 9.0e15 with its own copy of this conversion.
    #[test]
    fn whole_numbers_up_to_2_pow_53_are_integers() {
        let limit = 9_007_199_254_740_991_i64;
        let v = json!({"max": limit, "big": 9_007_199_254_740_000_i64});
        let Value::Object(o) = &v else { unreachable!() };
        assert_eq!(struct_to_json(&json_to_struct(o)), v);
    }

    #[test]
    fn round_trip_keeps_integers() {
        let v = json!({"a": 1, "b": [true, null, "x", 1.5], "c": {"d": 2000}});
        let Value::Object(o) = &v else { unreachable!() };
        assert_eq!(struct_to_json(&json_to_struct(o)), v);
    }
}
