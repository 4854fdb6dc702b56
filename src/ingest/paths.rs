//! Dotted paths: get, set, rename, copy and append, with the ES processors' list promotion.

use super::*;

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
pub(crate) fn get_mut<'a>(doc: &'a mut Map<String, Value>, path: &str) -> Option<&'a mut Value> {
    let mut parts = path.split('.');
    let first = parts.next()?;
    let mut cur = doc.get_mut(first)?;
    for part in parts {
        cur = step_mut(cur, part)?;
    }
    Some(cur)
}

/// Whether a field exists at `path` (its value may be null), like ES `hasField`.
pub(crate) fn contains(doc: &Map<String, Value>, path: &str) -> bool {
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
pub(crate) fn set(
    doc: &mut Map<String, Value>,
    path: &str,
    value: Value,
) -> Result<(), IngestError> {
    let slot = slot_mut(doc, path)?;
    *slot = value;
    Ok(())
}

/// The slot at `path`, created (as null) if absent, parents created as objects; fails like
/// [`set`] when a parent is a scalar or null.
pub(crate) fn slot_mut<'a>(
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
pub(crate) fn rename(
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
pub(crate) fn is_empty_value(value: &Value) -> bool {
    matches!(value, Value::Null) || matches!(value, Value::String(s) if s.is_empty())
}

/// ES `set` with `copy_from` and `ignore_empty_value`: copies `from` to `to` unless the source
/// is missing, null or `""`.
pub(crate) fn copy_from(
    doc: &mut Map<String, Value>,
    from: &str,
    to: &str,
) -> Result<(), IngestError> {
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
pub(crate) fn append(
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
pub(crate) fn append_to_slot(slot: &mut Value, value: Value, allow_duplicates: bool) {
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
