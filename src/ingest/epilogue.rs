//! The end of every pipeline, shared by both platforms: the empty-value cleaner, the `_id` fingerprint and the recording of pipeline errors.

use super::*;

/// Recursively removes null and `""` values, then maps and lists that are (or became) empty.
/// `false`, `0` and `0.0` are kept.
pub(crate) fn remove_empty(doc: &mut Map<String, Value>) {
    prune_map(doc);
}

/// Prunes `value` in place; returns whether it should be dropped by its parent.
pub(crate) fn prune(value: &mut Value) -> bool {
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
pub(crate) fn fingerprint(doc: &Map<String, Value>, fields: &[&str]) -> Option<String> {
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
pub(crate) fn error_text(processor_type: &str, tag: &str, pipeline: &str, message: &str) -> String {
    format!(
        "Processor {processor_type} with tag {tag} in pipeline {pipeline} failed with message: {message}"
    )
}

/// Appends the error text of `failure` to `error.message` (list semantics, duplicates kept).
pub(crate) fn record_error(
    doc: &mut Map<String, Value>,
    failure: &ProcessorFailure,
    pipeline: &str,
) {
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
