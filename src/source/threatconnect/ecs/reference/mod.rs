//! The reference engine: ThreatConnect indicator → ECS, exactly as Elastic's `ti_threatconnect`
//! ingest pipeline (package 2.3.0) stores it, replayed processor by processor.
//!
//! Users compare our documents with the ones the Elastic integration produces, dashboards and
//! transforms rely on the same fields, and the `_id` decides which document an update
//! overwrites. So this module replays the pipeline processor by processor (in the upstream
//! order, with its quirks), on top of the generic building blocks in [`crate::ingest`]. Step
//! numbers in comments (`C4`, `D44`, `G31`, …) refer to `shared/spec/threatconnect-mapping.md`.
//! It is the definition of correct output: the fast path in [`super::fast`] must produce the
//! same event, and falls back to this engine for every input it does not model.
//!
//! The indicator is parsed once into a scratch object (the pipeline's `json`); fields are moved
//! out of it into the document. A processor without its own error handler aborts the pipeline
//! (§14.4): the partial document is kept, the scratch object is put back under `json`, and the
//! pipeline-level handler marks the document as a `pipeline_error`.
//!
//! One file per stage of the spec, named after what it maps: [`scalars`] (§6),
//! [`associated_groups`] (§7), [`associated_indicators`] (§8), [`attributes`] (§9),
//! [`remaining`] (§10–§12) and [`labels_and_tags`] (§13); this file holds the run, the
//! processor helpers they share, and the epilogue.

mod associated_groups;
mod associated_indicators;
mod attributes;
mod labels_and_tags;
mod remaining;
mod scalars;

use serde_json::{Map, Value};

// The tables both engines share (see `super`).
use super::{GROUP_ATTRIBUTE_DROPPED_KEYS, ecs_indicator_type};
use crate::ingest::{
    self, ConvertType, DateFormat, EcsEvent, IngestError, ProcessorFailure, append, contains,
    convert, copy_from, get, record_error, remove, remove_empty, render, set,
};

/// The ES pipeline id reproduced here; it appears in every recorded error text.
pub const PIPELINE: &str = "logs-ti_threatconnect.indicator-2.3.0";

use crate::ingest::MapOptions;

type Doc = Map<String, Value>;
type Step = Result<(), ProcessorFailure>;

const PRESERVE: &str = "preserve_original_event";

/// Maps one raw ThreatConnect indicator (one element of the API's `data` array, as JSON text) to the document Elastic's pipeline would store. Never panics; malformed input yields a document with `error.message` like the pipeline.
pub fn map_indicator(raw: &str, opts: &MapOptions) -> EcsEvent {
    let mut doc = Doc::new();
    opts.insert_agent_fields(&mut doc);

    let mut run = Run {
        doc,
        j: Doc::new(),
        json: Scratch::Absent,
        id: None,
    };
    match run.process(raw, opts) {
        Ok(()) => {
            // G73: the scratch object is simply not put back. §14.2-3.
            remove_empty(&mut run.doc);
            if get(&run.doc, "error.message").is_some() {
                let _ = append(&mut run.doc, "event.kind", "pipeline_error".into(), false);
                let _ = append(&mut run.doc, "tags", PRESERVE.into(), false);
            }
        }
        Err(failure) => {
            // §14.4: processing stops; `json` stays, the cleaner does not run.
            match std::mem::replace(&mut run.json, Scratch::Absent) {
                Scratch::Object => {
                    let j = std::mem::take(&mut run.j);
                    run.doc.insert("json".to_owned(), Value::Object(j));
                }
                Scratch::Other(v) => {
                    run.doc.insert("json".to_owned(), v);
                }
                Scratch::Absent => {}
            }
            record_error(&mut run.doc, &failure, PIPELINE);
            let _ = set(&mut run.doc, "event.kind", "pipeline_error".into());
            let _ = append(&mut run.doc, "tags", PRESERVE.into(), false);
        }
    }
    let timestamp = match run.doc.get("@timestamp") {
        Some(Value::String(s)) => ingest::parse_iso8601(s).map(|t| t.with_timezone(&chrono::Utc)),
        _ => None,
    };
    EcsEvent {
        id: run.id,
        timestamp,
        doc: run.doc.into(),
    }
}

/// What the pipeline's `json` scratch field holds.
enum Scratch {
    /// A7 failed: there is no `json`.
    Absent,
    /// An object, kept in [`Run::j`].
    Object,
    /// Valid JSON that is not an object (the pipeline stores it as is).
    Other(Value),
}

struct Run {
    doc: Doc,
    /// The scratch object (`json`), empty when there is none.
    j: Doc,
    json: Scratch,
    id: Option<String>,
}

fn fail(processor_type: &'static str, tag: &'static str, message: String) -> ProcessorFailure {
    ProcessorFailure {
        processor_type,
        tag,
        message,
    }
}

fn failure(processor_type: &'static str, tag: &'static str, e: IngestError) -> ProcessorFailure {
    ProcessorFailure::new(processor_type, tag, e)
}

/// How a processor's failure is handled.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnFail {
    /// No `on_failure`: the pipeline fails (§14.4).
    Abort,
    /// `on_failure` appends the error text to `error.message`.
    Record,
}

fn handle(doc: &mut Doc, f: ProcessorFailure, on_fail: OnFail) -> Step {
    match on_fail {
        OnFail::Abort => Err(f),
        OnFail::Record => {
            record_error(doc, &f, PIPELINE);
            Ok(())
        }
    }
}

/// The value of a scratch field for a `!= null` guard.
fn present<'a>(j: &'a Doc, key: &str) -> Option<&'a Value> {
    j.get(key).filter(|v| !v.is_null())
}

/// A guard `ctx.a?.b?.c != null` evaluated the Painless way: null-safe on null parents, but a
/// non-object parent makes the condition itself throw.
fn guard<'a>(root: &'a Doc, path: &[&str]) -> Result<Option<&'a Value>, String> {
    let Some((first, rest)) = path.split_first() else {
        return Ok(None);
    };
    let mut cur = match root.get(*first) {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v,
    };
    for key in rest {
        cur = match cur {
            Value::Object(map) => match map.get(*key) {
                None | Some(Value::Null) => return Ok(None),
                Some(v) => v,
            },
            other => return Err(painless_getter_error(other, key)),
        };
    }
    Ok(Some(cur))
}

/// The Painless error for `x.key` (a `?.` field access) on a non-object `x`.
fn painless_getter_error(v: &Value, key: &str) -> String {
    match v {
        Value::Array(_) => format!("Illegal list shortcut value [{key}]."),
        other => format!(
            "dynamic getter [{}, {key}] not found",
            ingest::java_type_name(other)
        ),
    }
}

/// A failure while evaluating a processor's `if`: ES reports it as processor type
/// `conditional` with the processor's tag, and the processor's own `on_failure` does not run.
fn conditional(tag: &'static str, message: String) -> ProcessorFailure {
    fail("conditional", tag, message)
}

/// rename `json.<from>` → `<to>` (ignore_missing; fails if the target exists).
fn mv(j: &mut Doc, from: &str, doc: &mut Doc, to: &str, tag: &'static str) -> Step {
    let Some(value) = j.remove(from) else {
        return Ok(());
    };
    if contains(doc, to) {
        j.insert(from.to_owned(), value);
        return Err(fail("rename", tag, format!("field [{to}] already exists")));
    }
    match ingest::slot_mut(doc, to) {
        Ok(slot) => {
            *slot = value;
            Ok(())
        }
        Err(e) => {
            j.insert(from.to_owned(), value);
            Err(failure("rename", tag, e))
        }
    }
}

/// convert `json.<from>` → `<to>` (ignore_missing: absent or null is a no-op).
fn conv(
    j: &Doc,
    from: &str,
    doc: &mut Doc,
    to: &str,
    ty: ConvertType,
    tag: &'static str,
    on_fail: OnFail,
) -> Step {
    let Some(v) = present(j, from) else {
        return Ok(());
    };
    match convert(v, ty).and_then(|c| set(doc, to, c)) {
        Ok(()) => Ok(()),
        Err(e) => handle(doc, failure("convert", tag, e), on_fail),
    }
}

/// date `json.<from>` (ISO8601) → `<to>`, guarded by `!= null && != ''`, errors recorded.
fn date_field(j: &Doc, from: &str, doc: &mut Doc, to: &str, tag: &'static str) -> Step {
    let Some(v) = present(j, from) else {
        return Ok(());
    };
    if ingest::is_empty_value(v) {
        return Ok(());
    }
    match ingest::date(v, &[DateFormat::Iso8601]).and_then(|d| set(doc, to, Value::String(d))) {
        Ok(()) => Ok(()),
        Err(e) => handle(doc, failure("date", tag, e), OnFail::Record),
    }
}

/// set `<to>` copy_from `<from>` with ignore_empty_value (no on_failure).
fn copy(doc: &mut Doc, from: &str, to: &str, tag: &'static str) -> Step {
    copy_from(doc, from, to).map_err(|e| failure("set", tag, e))
}

/// append `{{{<from>}}}` to `<to>` without duplicates, guarded by `<from> != null`.
fn append_field(doc: &mut Doc, from: &str, to: &str, tag: &'static str) -> Step {
    let Some(v) = get(doc, from).filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let rendered = render(Some(v));
    append(doc, to, Value::String(rendered), false).map_err(|e| failure("append", tag, e))
}

/// `tci.type instanceof String && tci.type.contains(needle)`.
fn type_contains(doc: &Doc, needle: &str) -> bool {
    matches!(get(doc, "threat_connect.indicator.type"), Some(Value::String(t)) if t.contains(needle))
}

fn is_address(doc: &Doc) -> bool {
    matches!(get(doc, "threat_connect.indicator.type"), Some(Value::String(t)) if t == "Address")
}

// ---------------------------------------------------------------------------------------------
// Per-element (foreach) helpers. `_ingest._value` may be any JSON value; field access on a
// non-object element behaves as "missing", writes to it fail.
// ---------------------------------------------------------------------------------------------

fn elem_get<'a>(elem: &'a Value, path: &str) -> Option<&'a Value> {
    match elem {
        Value::Object(m) => get(m, path),
        _ => None,
    }
}

fn elem_rename(elem: &mut Value, from: &str, to: &str, over: bool, tag: &'static str) -> Step {
    match elem {
        Value::Object(m) => ingest::rename(m, from, to, over)
            .map(|_| ())
            .map_err(|e| failure("rename", tag, e)),
        _ => Ok(()),
    }
}

fn elem_remove(elem: &mut Value, fields: &[&str]) {
    if let Value::Object(m) = elem {
        for f in fields {
            remove(m, f);
        }
    }
}

/// `on_failure` of a convert inside a `foreach`.
#[derive(Clone, Copy)]
enum ElemOnFail {
    /// No handler: the pipeline fails.
    Abort,
    /// Record the error.
    Record,
    /// Remove this field of the element, then record the error.
    RemoveRecord(&'static str),
}

/// convert inside an element (ignore_missing).
fn elem_convert(
    doc: &mut Doc,
    elem: &mut Value,
    from: &str,
    to: &str,
    ty: ConvertType,
    tag: &'static str,
    on_fail: ElemOnFail,
) -> Step {
    let Value::Object(m) = elem else {
        return Ok(());
    };
    let Some(v) = get(m, from).filter(|v| !v.is_null()) else {
        return Ok(());
    };
    match convert(v, ty).and_then(|c| set(m, to, c)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let f = failure("convert", tag, e);
            match on_fail {
                ElemOnFail::Abort => Err(f),
                ElemOnFail::Record => handle(doc, f, OnFail::Record),
                ElemOnFail::RemoveRecord(field) => {
                    remove(m, field);
                    handle(doc, f, OnFail::Record)
                }
            }
        }
    }
}

/// date inside an element; any failure (missing, null, bad format) removes the source field.
fn elem_date(elem: &mut Value, from: &str, to: &str) {
    let Value::Object(m) = elem else {
        return;
    };
    let parsed = match get(m, from) {
        Some(v) if !v.is_null() => ingest::date(v, &[DateFormat::Iso8601]).ok(),
        _ => None,
    };
    let ok = match parsed {
        Some(d) => set(m, to, Value::String(d)).is_ok(),
        None => false,
    };
    if !ok {
        remove(m, from);
    }
}

/// The list a `foreach` iterates, or the ES cast failure.
fn as_list<'a>(
    v: &'a mut Value,
    path: &str,
    tag: &'static str,
) -> Result<&'a mut Vec<Value>, ProcessorFailure> {
    let type_name = ingest::java_type_name(v);
    match v {
        Value::Array(list) => Ok(list),
        _ => Err(fail(
            "foreach",
            tag,
            format!("field [{path}] of type [{type_name}] cannot be cast to [java.util.List]"),
        )),
    }
}

/// Renders `{{{_ingest._value.<path>}}}` of every element and appends it (dedup) to `to`.
fn append_each(doc: &mut Doc, list: &[Value], path: &str, to: &str, tag: &'static str) -> Step {
    for elem in list {
        let rendered = render(elem_get(elem, path));
        append(doc, to, Value::String(rendered), false).map_err(|e| failure("append", tag, e))?;
    }
    Ok(())
}

impl Run {
    fn process(&mut self, raw: &str, opts: &MapOptions) -> Step {
        let doc = &mut self.doc;
        // A1–A5.
        doc.insert("ecs".to_owned(), serde_json::json!({ "version": "8.11.0" }));
        set(doc, "event.kind", "enrichment".into())
            .map_err(|e| failure("set", "set_event_kind", e))?;
        append(doc, "event.category", "threat".into(), false)
            .map_err(|e| failure("append", "append_threat_into_event_category", e))?;
        append(doc, "event.type", "indicator".into(), false)
            .map_err(|e| failure("append", "append_indicator_into_event_type", e))?;
        set(doc, "threat.indicator.provider", "ThreatConnect".into())
            .map_err(|e| failure("set", "set_threat_indicator_provider", e))?;
        // A6: the raw text is `message`, renamed to `event.original` (kept since 1.5.0).
        set(doc, "event.original", Value::String(raw.to_owned()))
            .map_err(|e| failure("rename", "rename_message_to_event_original", e))?;

        // A7.
        match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(m)) => {
                self.j = m;
                self.json = Scratch::Object;
            }
            Ok(other) => self.json = Scratch::Other(other),
            Err(e) => {
                let shown: String = raw.chars().take(200).collect();
                let f = fail(
                    "json",
                    "json_event_original",
                    format!("cannot parse field [event.original] as JSON: {e} (value [{shown}])"),
                );
                record_error(&mut self.doc, &f, PIPELINE);
            }
        }

        // A8: `_id`; fields sorted → lastModified first, like json.lastModified < json.summary.
        if matches!(self.json, Scratch::Object) {
            self.id = ingest::fingerprint(&self.j, &["summary", "lastModified"]);
        }

        if let Scratch::Other(v) = &self.json {
            // B1's condition dereferences `ctx.json?.deleted_at`: on a non-object `json` the
            // Painless condition throws, which fails the pipeline. (A JSON `null` is
            // null-safe upstream and yields an almost empty document without error; we
            // refuse it the same way, as a non-object indicator is never valid input.)
            let message = match v {
                Value::Null => "[json] is null: the indicator is not a JSON object".to_owned(),
                other => painless_getter_error(other, "deleted_at"),
            };
            return Err(conditional("script-default-deleted_at", message));
        }

        self.expiration(opts)?;
        self.scalar_fields()?;
        self.associated_groups()?;
        self.associated_indicators()?;
        self.attributes()?;
        self.remaining_fields()
    }

    /// §5 B1–B3.
    fn expiration(&mut self, opts: &MapOptions) -> Step {
        let Run { doc, j, .. } = self;
        // B1. The duration comes pre-parsed from our config (which refuses everything the
        // script would turn into "+90 days"), so the sum is exact.
        if let Some(exp) = opts.ioc_expiration.as_ref().filter(|e| !e.raw.is_empty())
            && present(j, "deleted_at").is_none()
            && let Some(lm) = present(j, "lastModified")
        {
            let tag = "script-default-deleted_at";
            let computed = match lm {
                Value::String(s) => match parse_zoned(s) {
                    Some(t) => chrono::Duration::from_std(exp.duration)
                        .ok()
                        .and_then(|d| t.checked_add_signed(d))
                        .map(|t| ingest::format_date(&t.with_timezone(&chrono::Utc)))
                        .ok_or_else(|| format!("cannot add [{}] to [{s}]: out of range", exp.raw)),
                    None => Err(format!("Text '{s}' could not be parsed")),
                },
                other => Err(format!(
                    "class {} cannot be cast to class java.lang.String (json.lastModified [{}])",
                    ingest::java_type_name(other),
                    ingest::java_to_string(other)
                )),
            };
            match computed {
                Ok(d) => {
                    j.insert("deleted_at".to_owned(), Value::String(d.into_string()));
                }
                Err(m) => record_error(doc, &fail("script", tag, m), PIPELINE),
            }
        }
        // B2.
        if let Some(v) = present(j, "deleted_at").filter(|v| !ingest::is_empty_value(v)) {
            let target = "threat_connect.indicator.deleted_at";
            match ingest::date(v, &[DateFormat::Iso8601, DateFormat::Unix])
                .and_then(|d| set(doc, target, Value::String(d)))
            {
                Ok(()) => {}
                Err(e) => record_error(doc, &failure("date", "date_deleted_at", e), PIPELINE),
            }
        }
        // B3.
        ingest::rename(
            doc,
            "_conf.ioc_expiration_duration",
            "threat_connect.indicator.expiration_duration",
            false,
        )
        .map_err(|e| failure("rename", "rename_conf_ioc_expiration_duration", e))?;
        Ok(())
    }
}

/// [2.x] `lowercase` with ignore_missing and no on_failure.
fn lowercase(doc: &mut Doc, field: &str, tag: &'static str) -> Step {
    let Some(v) = get(doc, field).filter(|v| !v.is_null()) else {
        return Ok(());
    };
    let lowered = ingest::map_strings(v, field, ingest::java_lowercase)
        .map_err(|e| failure("lowercase", tag, e))?;
    set(doc, field, lowered).map_err(|e| failure("lowercase", tag, e))
}

/// §11: the confidence table, evaluated like the upstream script (including its off-by-one
/// at 1). Numeric strings (what the 2.1.1+ collector sends) are compared numerically.
fn confidence_level(v: &Value) -> Result<&'static str, String> {
    let n = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => ingest::parse_java_double(s),
        _ => None,
    }
    .filter(|n| n.is_finite())
    .ok_or_else(|| {
        format!(
            "cannot compare json.confidence [{}] of type [{}] with a number",
            ingest::java_to_string(v),
            ingest::java_type_name(v)
        )
    })?;
    Ok(confidence_band(n))
}

/// §11 for a finite number.
pub(super) fn confidence_band(n: f64) -> &'static str {
    let mut level = "None";
    if n == 0.0 {
        level = "Not Specified";
    }
    if n > 1.0 && n < 40.0 {
        level = "Low";
    }
    if (40.0..70.0).contains(&n) {
        level = "Medium";
    } else if (70.0..=100.0).contains(&n) {
        level = "High";
    }
    level
}

/// E1: the recursive key rename of associated indicators (at every depth, into objects and
/// objects inside lists); a scalar `location` becomes `location_value`.
fn rename_keys(m: &Doc) -> Doc {
    let mut out = Doc::new();
    for (key, value) in m {
        let renamed = associated_key_name(key);
        match value {
            Value::Object(inner) => {
                out.insert(renamed.to_owned(), Value::Object(rename_keys(inner)));
            }
            Value::Array(items) => {
                let list = items
                    .iter()
                    .map(|i| match i {
                        Value::Object(o) => Value::Object(rename_keys(o)),
                        other => other.clone(),
                    })
                    .collect();
                out.insert(renamed.to_owned(), Value::Array(list));
            }
            scalar if key == "location" => {
                out.insert("location_value".to_owned(), scalar.clone());
            }
            scalar => {
                out.insert(renamed.to_owned(), scalar.clone());
            }
        }
    }
    out
}

/// E1's name for a key of an associated indicator (at any depth); the scalar `location` rule
/// is applied by the caller.
pub(super) fn associated_key_name(key: &str) -> &str {
    match key {
        "AS Number" => "as_number",
        "hostName" => "host_name",
        "Hashtag" => "hashtag",
        "Key Name" => "key_name",
        "legacyLink" => "legacy_link",
        "Mutex" => "mutex",
        "Subject" => "subject",
        "User Agent String" => "user_agent_string",
        "webLink" => "web_link",
        other => other,
    }
}

/// `ZonedDateTime.parse` (ISO_ZONED_DATE_TIME): date, `T`, `HH:mm[:ss[.f]]`, and a mandatory
/// offset (`Z` or `±HH:MM`), optionally followed by a `[zone id]` (ignored here).
pub(super) fn parse_zoned(text: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    if let Some(t) = ingest::parse_canonical_utc(text) {
        return Some(t.fixed_offset());
    }
    let text = match text.find('[') {
        Some(i) if text.ends_with(']') => text.get(..i)?,
        _ => text,
    };
    let t_pos = text.find('T')?;
    let time_part = text.get(t_pos + 1..)?;
    let zone_at = time_part.find(['Z', '+', '-'])?;
    let (clock, zone) = time_part.split_at(zone_at);
    if clock.len() < 5
        || !(zone == "Z" || (zone.len() == 6 && zone.as_bytes().get(3) == Some(&b':')))
    {
        return None;
    }
    let full_clock = if clock.len() == 5 {
        format!("{clock}:00")
    } else {
        clock.to_owned()
    };
    let normalized = format!("{}T{full_clock}{zone}", text.get(..t_pos)?);
    if normalized.get(..t_pos)?.len() != 10 {
        return None;
    }
    ingest::parse_iso8601(&normalized)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confidence_table_boundaries() {
        let cases = [
            (serde_json::json!(0), "Not Specified"),
            (serde_json::json!(1), "None"),
            (serde_json::json!(2), "Low"),
            (serde_json::json!(39.5), "Low"),
            (serde_json::json!(40), "Medium"),
            (serde_json::json!(69.9), "Medium"),
            (serde_json::json!(70), "High"),
            (serde_json::json!(100), "High"),
            (serde_json::json!(101), "None"),
            (serde_json::json!(-1), "None"),
            (serde_json::json!("61"), "Medium"),
        ];
        for (v, want) in cases {
            assert_eq!(confidence_level(&v), Ok(want), "confidence {v}");
        }
        assert!(confidence_level(&serde_json::json!("high")).is_err());
    }

    #[test]
    fn zoned_parse_requires_offset() {
        assert!(parse_zoned("2023-12-05T06:38:53Z").is_some());
        assert!(parse_zoned("2023-12-05T06:38Z").is_some());
        assert!(parse_zoned("2023-12-05T06:38:53+02:00").is_some());
        assert!(parse_zoned("2023-12-05T06:38:53").is_none());
        assert!(parse_zoned("2023-12-05").is_none());
    }
}
