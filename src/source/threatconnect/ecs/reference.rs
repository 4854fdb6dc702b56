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

use serde_json::{Map, Value};

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
        self.stage_c()?;
        self.stage_d()?;
        self.stage_e()?;
        self.stage_f()?;
        self.stage_g()
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
                    j.insert("deleted_at".to_owned(), Value::String(d));
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

    /// §6 C1–C11.
    fn stage_c(&mut self) -> Step {
        let Run { doc, j, .. } = self;
        use ConvertType::*;
        conv(
            j,
            "activeLocked",
            doc,
            "threat_connect.indicator.active.locked",
            Boolean,
            "convert_activeLocked_to_boolean",
            OnFail::Record,
        )?;
        conv(
            j,
            "active",
            doc,
            "threat_connect.indicator.active.value",
            Boolean,
            "convert_active_to_boolean",
            OnFail::Record,
        )?;
        mv(
            j,
            "address",
            doc,
            "threat_connect.indicator.address",
            "rename_address",
        )?;
        // C4: dissect `%{user.name}@%{user.domain}` when the address contains '@'.
        let dissect_tag = "dissect_threat_connect_indicator_address";
        let split = match get(doc, "threat_connect.indicator.address") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => s.split_once('@').map(|(n, d)| (n.to_owned(), d.to_owned())),
            Some(Value::Array(items)) => {
                if items.iter().any(|i| i == "@") {
                    return Err(fail(
                        "dissect",
                        dissect_tag,
                        "field [threat_connect.indicator.address] of type [java.util.ArrayList] cannot be cast to [java.lang.String]".to_owned(),
                    ));
                }
                None
            }
            Some(other) => {
                // The `if` calls `.contains('@')` on a non-string: the condition throws.
                return Err(conditional(
                    dissect_tag,
                    format!(
                        "dynamic method [{}, contains/1] not found",
                        ingest::java_type_name(other)
                    ),
                ));
            }
        };
        if let Some((name, domain)) = split {
            set(doc, "user.name", Value::String(name))
                .map_err(|e| failure("dissect", dissect_tag, e))?;
            set(doc, "user.domain", Value::String(domain))
                .map_err(|e| failure("dissect", dissect_tag, e))?;
        }
        append_field(
            doc,
            "user.name",
            "related.user",
            "append_user_name_into_related_user",
        )?;
        copy(
            doc,
            "threat_connect.indicator.address",
            "threat.indicator.email.address",
            "set_threat_indicator_email_address_from_indicator_address",
        )?;
        copy(
            doc,
            "threat_connect.indicator.address",
            "user.email",
            "set_user_email_from_indicator_address",
        )?;
        mv(
            j,
            "AS Number",
            doc,
            "threat_connect.indicator.as_number",
            "rename_AS Number",
        )?;
        // C9: gsub letters → spaces, trim (ignore_failure), convert to long; scratch `temp`.
        if let Some(v) = get(doc, "threat_connect.indicator.as_number").filter(|v| !v.is_null()) {
            let replaced = ingest::map_strings(v, "threat_connect.indicator.as_number", |s| {
                s.chars()
                    .map(|c| if c.is_ascii_alphabetic() { ' ' } else { c })
                    .collect()
            })
            .map_err(|e| failure("gsub", "replace_string_values_with_space", e))?;
            set(doc, "threat_connect.indicator.temp", replaced)
                .map_err(|e| failure("gsub", "replace_string_values_with_space", e))?;
            if let Some(t) = get(doc, "threat_connect.indicator.temp")
                && let Ok(trimmed) =
                    ingest::map_strings(t, "threat_connect.indicator.temp", ingest::java_trim)
            {
                let _ = set(doc, "threat_connect.indicator.temp", trimmed);
            }
            if let Some(t) = get(doc, "threat_connect.indicator.temp").filter(|v| !v.is_null()) {
                match convert(t, Long).and_then(|n| set(doc, "threat.indicator.as.number", n)) {
                    Ok(()) => {}
                    Err(e) => handle(
                        doc,
                        failure("convert", "convert_as_number_string_to_long", e),
                        OnFail::Record,
                    )?,
                }
            }
            remove(doc, "threat_connect.indicator.temp");
        }
        mv(
            j,
            "associatedArtifacts",
            doc,
            "threat_connect.indicator.associated_artifacts",
            "rename_associatedArtifacts",
        )?;
        mv(
            j,
            "associatedCases",
            doc,
            "threat_connect.indicator.associated_cases",
            "rename_associatedCases",
        )?;
        Ok(())
    }

    /// §7 D1–D48: associated groups.
    fn stage_d(&mut self) -> Step {
        let Run { doc, j, .. } = self;
        use ConvertType::*;
        let path = "json.associatedGroups.data";
        match guard(j, &["associatedGroups", "data"]) {
            Err(m) => return Err(conditional("foreach_associated_data_rename_firstname", m)),
            Ok(None) => {}
            Ok(Some(_)) => {
                let Some(data) = j
                    .get_mut("associatedGroups")
                    .and_then(|g| g.get_mut("data"))
                else {
                    return Ok(());
                };
                let groups = as_list(data, path, "foreach_associated_data_rename_firstname")?;
                for g in groups.iter_mut() {
                    elem_rename(
                        g,
                        "createdBy.firstName",
                        "created_by.first_name",
                        false,
                        "rename_associatedGroups_data_createdBy_firstName",
                    )?;
                }
                append_each(
                    doc,
                    groups,
                    "created_by.first_name",
                    "related.user",
                    "append_associatedGroups_data_createdBy_firstName_into_related_user",
                )?;
                for g in groups.iter_mut() {
                    elem_convert(
                        doc,
                        g,
                        "createdBy.id",
                        "created_by.id",
                        String,
                        "convert_associatedGroups_data_createdBy_id_to_string",
                        ElemOnFail::RemoveRecord("createdBy.id"),
                    )?;
                }
                for g in groups.iter_mut() {
                    // D4: nested foreach (ignore_missing) over assignments.data.
                    let Value::Object(gm) = g else { continue };
                    let Some(assignments) = ingest::get_mut(gm, "assignments.data") else {
                        continue;
                    };
                    if assignments.is_null() {
                        continue;
                    }
                    let list = as_list(
                        assignments,
                        "_ingest._value.assignments.data",
                        "foreach_assignments_data",
                    )?;
                    for a in list.iter_mut() {
                        elem_convert(
                            doc,
                            a,
                            "user.id",
                            "user.id",
                            String,
                            "convert_associatedGroups_data_assignments_data_user_id_to_string",
                            ElemOnFail::Record,
                        )?;
                    }
                }
                // D5 renames `assignments.data.type` onto itself: a no-op unless the path
                // resolves, and renaming a field onto itself fails as "already exists".
                for g in groups.iter() {
                    if elem_get(g, "assignments.data.type").is_some() {
                        return Err(fail(
                            "rename",
                            "rename_associatedGroups_data_assignments_data_type",
                            "field [_ingest._value.assignments.data.type] already exists"
                                .to_owned(),
                        ));
                    }
                }
                for g in groups.iter_mut() {
                    elem_rename(
                        g,
                        "createdBy.lastName",
                        "created_by.last_name",
                        false,
                        "rename_associatedGroups_data_createdBy_lastName",
                    )?;
                }
                append_each(
                    doc,
                    groups,
                    "created_by.last_name",
                    "related.user",
                    "append_associatedGroups_data_createdBy_lastName_into_related_user",
                )?;
                for g in groups.iter_mut() {
                    elem_rename(
                        g,
                        "createdBy.owner",
                        "created_by.owner",
                        false,
                        "rename_associatedGroups_data_createdBy_owner",
                    )?;
                }
                for g in groups.iter_mut() {
                    elem_rename(
                        g,
                        "createdBy.pseudonym",
                        "created_by.pseudonym",
                        false,
                        "rename_associatedGroups_data_createdBy_pseudonym",
                    )?;
                }
                for g in groups.iter_mut() {
                    elem_rename(
                        g,
                        "createdBy.userName",
                        "created_by.user_name",
                        false,
                        "rename_associatedGroups_data_createdBy_userName",
                    )?;
                }
                append_each(
                    doc,
                    groups,
                    "created_by.user_name",
                    "related.user",
                    "append_associatedGroups_data_createdBy_userName_into_related_user",
                )?;
                // D12/D13 have ignore_failure.
                let _ = append_each(
                    doc,
                    groups,
                    "to",
                    "email.to.address",
                    "append_associatedGroups_data_to_email",
                );
                let _ = append_each(
                    doc,
                    groups,
                    "from",
                    "email.from.address",
                    "append_associatedGroups_data_from_email",
                );
                for g in groups.iter_mut() {
                    elem_date(g, "dateAdded", "date_added");
                }
                for g in groups.iter_mut() {
                    elem_date(g, "documentDateAdded", "document.date_added");
                }
                for g in groups.iter_mut() {
                    elem_rename(
                        g,
                        "documentType",
                        "document.type",
                        false,
                        "rename_associatedGroups_data_documentType",
                    )?;
                }
                for g in groups.iter_mut() {
                    elem_rename(
                        g,
                        "downVoteCount",
                        "down_vote_count",
                        false,
                        "rename_associatedGroups_data_downVoteCount",
                    )?;
                }
                for (from, to) in [
                    ("dueDate", "due_date"),
                    ("emailDate", "email_date"),
                    ("escalationDate", "escalation_date"),
                    ("eventDate", "event_date"),
                    ("externalDateAdded", "external.date.added"),
                    ("externalDateExpires", "external.date.expires"),
                    ("externalLastModified", "external.last_modified"),
                ] {
                    for g in groups.iter_mut() {
                        elem_date(g, from, to);
                    }
                }
                for g in groups.iter_mut() {
                    elem_rename(
                        g,
                        "fileName",
                        "file.name",
                        false,
                        "rename_associatedGroups_data_fileName",
                    )?;
                }
                for g in groups.iter_mut() {
                    elem_convert(
                        doc,
                        g,
                        "fileSize",
                        "file.size",
                        String,
                        "convert_associatedGroups_data_filesize_to_string",
                        ElemOnFail::RemoveRecord("fileSize"),
                    )?;
                }
                for g in groups.iter_mut() {
                    elem_rename(
                        g,
                        "fileText",
                        "file.text",
                        false,
                        "rename_associatedGroups_data_fileText",
                    )?;
                }
                for g in groups.iter_mut() {
                    elem_rename(
                        g,
                        "fileType",
                        "file.type",
                        false,
                        "rename_associatedGroups_data_fileType",
                    )?;
                }
                for g in groups.iter_mut() {
                    elem_date(g, "firstSeen", "first_seen");
                }
                for g in groups.iter_mut() {
                    elem_convert(
                        doc,
                        g,
                        "generatedReport",
                        "generated_report",
                        Boolean,
                        "convert_associatedGroups_data_generatedReport_to_boolean",
                        ElemOnFail::RemoveRecord("generatedReport"),
                    )?;
                }
                for g in groups.iter_mut() {
                    elem_date(g, "lastModified", "last_modified");
                }
                for g in groups.iter_mut() {
                    elem_date(g, "lastSeen", "last_seen");
                }
                for g in groups.iter_mut() {
                    elem_rename(
                        g,
                        "legacyLink",
                        "legacy_link",
                        false,
                        "rename_associatedGroups_data_legacyLink",
                    )?;
                }
                for g in groups.iter_mut() {
                    elem_convert(
                        doc,
                        g,
                        "malware",
                        "malware",
                        Boolean,
                        "convert_associatedGroups_data_malware_to_boolean",
                        ElemOnFail::RemoveRecord("malware"),
                    )?;
                }
                for g in groups.iter_mut() {
                    elem_convert(
                        doc,
                        g,
                        "ownerId",
                        "owner.id",
                        String,
                        "convert_associatedGroups_data_ownerId_to_string",
                        ElemOnFail::Abort,
                    )?;
                }
                for g in groups.iter_mut() {
                    elem_rename(
                        g,
                        "ownerName",
                        "owner.name",
                        false,
                        "rename_associatedGroups_data_ownerName",
                    )?;
                }
                for g in groups.iter_mut() {
                    elem_date(g, "publishDate", "publish_date");
                }
                for g in groups.iter_mut() {
                    elem_date(g, "reminderDate", "reminder_date");
                }
                for g in groups.iter_mut() {
                    elem_rename(
                        g,
                        "scoreBreakdown",
                        "score_breakdown",
                        false,
                        "rename_associatedGroups_data_scoreBreakdown",
                    )?;
                }
                for g in groups.iter_mut() {
                    elem_convert(
                        doc,
                        g,
                        "scoreIncludesBody",
                        "score_includes_body",
                        Boolean,
                        "convert_associatedGroups_data_scoreIncludesBody_to_boolean",
                        ElemOnFail::RemoveRecord("scoreIncludesBody"),
                    )?;
                }
                for g in groups.iter_mut() {
                    elem_convert(
                        doc,
                        g,
                        "upVote",
                        "up_vote",
                        Boolean,
                        "convert_associatedGroups_data_upVote_to_boolean",
                        ElemOnFail::RemoveRecord("upVote"),
                    )?;
                }
                for g in groups.iter_mut() {
                    elem_rename(
                        g,
                        "upVoteCount",
                        "up_vote_count",
                        false,
                        "rename_associatedGroups_data_upVoteCount",
                    )?;
                }
                for g in groups.iter_mut() {
                    elem_rename(
                        g,
                        "webLink",
                        "web_link",
                        false,
                        "rename_associatedGroups_data_webLink",
                    )?;
                }
                for g in groups.iter_mut() {
                    // D44: upstream removes upVote here (sic), not id.
                    elem_convert(
                        doc,
                        g,
                        "id",
                        "id",
                        String,
                        "convert_associatedGroups_data_id_to_string",
                        ElemOnFail::RemoveRecord("upVote"),
                    )?;
                }
            }
        }
        // D45.
        let moved = j
            .get_mut("associatedGroups")
            .and_then(Value::as_object_mut)
            .and_then(|g| g.remove("data"));
        if let Some(data) = moved {
            let target = "threat_connect.indicator.associated_groups.data";
            if contains(doc, target) {
                return Err(fail(
                    "rename",
                    "rename_associatedGroups_data",
                    format!("field [{target}] already exists"),
                ));
            }
            set(doc, target, data)
                .map_err(|e| failure("rename", "rename_associatedGroups_data", e))?;
        }
        let Some(data) = ingest::get_mut(doc, "threat_connect.indicator.associated_groups.data")
        else {
            return Ok(());
        };
        if data.is_null() {
            return Ok(());
        }
        let groups = as_list(
            data,
            "threat_connect.indicator.associated_groups.data",
            "foreach_remove_duplicate_fields",
        )?;
        // D46.
        for g in groups.iter_mut() {
            elem_remove(
                g,
                &[
                    "createdBy.firstName",
                    "createdBy.lastName",
                    "createdBy.id",
                    "dueDate",
                    "downVoteCount",
                    "documentType",
                    "externalDateAdded",
                    "externalDateExpires",
                    "externalLastModified",
                    "fileName",
                    "fileText",
                    "fileSize",
                    "fileType",
                    "eventDate",
                    "escalationDate",
                    "emailDate",
                    "firstSeen",
                    "lastSeen",
                    "lastModified",
                    "documentDateAdded",
                    "dateAdded",
                    "userName",
                    "reminderDate",
                    "publishDate",
                    "ownerId",
                    "ownerName",
                    "generatedReport",
                    "webLink",
                    "upVoteCount",
                    "upVote",
                    "scoreIncludesBody",
                    "scoreBreakdown",
                    "to",
                    "from",
                ],
            );
        }
        // D47: attributes ← attributes.data; on failure append [] to attributes.
        for g in groups.iter_mut() {
            let Value::Object(gm) = g else {
                return Err(fail(
                    "append",
                    "set_associated_group_attributes_empty_array",
                    format!(
                        "cannot set [attributes] with parent object of type [{}] as part of path [_ingest._value.attributes]",
                        ingest::java_type_name(g)
                    ),
                ));
            };
            match get(gm, "attributes.data").cloned() {
                Some(data) => {
                    gm.insert("attributes".to_owned(), data);
                }
                None => {
                    let slot = gm.entry("attributes".to_owned()).or_insert(Value::Null);
                    ingest::append_to_slot(slot, Value::Array(Vec::new()), true);
                }
            }
        }
        // D48.
        for g in groups.iter_mut() {
            let Value::Object(gm) = g else { continue };
            let Some(attrs) = gm.get_mut("attributes") else {
                continue;
            };
            if attrs.is_null() {
                continue;
            }
            let list = as_list(
                attrs,
                "_ingest._value.attributes",
                "foreach_associated_groups_attribute_obj",
            )?;
            for a in list.iter_mut() {
                elem_remove(
                    a,
                    &[
                        "dateAdded",
                        "default",
                        "id",
                        "lastModified",
                        "pinned",
                        "source",
                    ],
                );
            }
        }
        Ok(())
    }

    /// §8 E1–E27: associated indicators.
    fn stage_e(&mut self) -> Step {
        let Run { doc, j, .. } = self;
        use ConvertType::*;
        let script_tag = "painless_to_rename_fields_under_json_associatedIndicators_data_object";
        let data = match guard(j, &["associatedIndicators", "data"]) {
            Err(m) => return Err(conditional(script_tag, m)),
            Ok(None) => return Ok(()),
            Ok(Some(d)) => d,
        };
        // E1.
        let Value::Array(items) = data else {
            return Err(fail(
                "script",
                script_tag,
                format!(
                    "cannot iterate over [{}] (json.associatedIndicators.data)",
                    ingest::java_type_name(data)
                ),
            ));
        };
        let mut renamed = Vec::with_capacity(items.len());
        for item in items {
            let Value::Object(m) = item else {
                return Err(fail(
                    "script",
                    script_tag,
                    format!(
                        "class {} cannot be cast to class java.util.Map (json.associatedIndicators.data element [{}])",
                        ingest::java_type_name(item),
                        ingest::java_to_string(item)
                    ),
                ));
            };
            renamed.push(Value::Object(rename_keys(m)));
        }
        let target = "threat_connect.indicator.associated_indicators.data";
        if contains(doc, target) {
            return Err(fail(
                "rename",
                "rename_entities_obj",
                format!("field [{target}] already exists"),
            ));
        }
        set(doc, target, Value::Array(renamed))
            .map_err(|e| failure("rename", "rename_entities_obj", e))?;

        // The list lives in `doc`; take it out to append to `related.ip` while iterating.
        let Some(Value::Array(mut list)) = ingest::remove(doc, target) else {
            return Ok(());
        };
        let result = (|| -> Step {
            for e in list.iter_mut() {
                elem_convert(
                    doc,
                    e,
                    "size",
                    "size",
                    String,
                    "convert_associatedIndicators_data_size_to_string",
                    ElemOnFail::RemoveRecord("size"),
                )?;
            }
            for e in list.iter_mut() {
                elem_convert(
                    doc,
                    e,
                    "active",
                    "_temp.value",
                    Boolean,
                    "convert_associatedIndicators_data_active_to_boolean",
                    ElemOnFail::RemoveRecord("active"),
                )?;
            }
            for e in list.iter_mut() {
                elem_convert(
                    doc,
                    e,
                    "activeLocked",
                    "_temp.locked",
                    Boolean,
                    "convert_associatedIndicators_data_activeLocked_to_boolean",
                    ElemOnFail::RemoveRecord("activeLocked"),
                )?;
            }
            for e in list.iter_mut() {
                elem_rename(
                    e,
                    "Block",
                    "block",
                    false,
                    "rename_associatedIndicators_data_block",
                )?;
            }
            // E6 converts `Block` after it was renamed: it never does anything.
            for e in list.iter_mut() {
                elem_convert(
                    doc,
                    e,
                    "confidence",
                    "confidence",
                    Long,
                    "convert_associatedIndicators_data_confidence_to_long",
                    ElemOnFail::RemoveRecord("confidence"),
                )?;
            }
            for e in list.iter_mut() {
                elem_date(e, "dateAdded", "date_added");
            }
            for e in list.iter_mut() {
                elem_convert(
                    doc,
                    e,
                    "dnsActive",
                    "dns_active",
                    Boolean,
                    "convert_associatedIndicators_data_dnsActive_to_boolean",
                    ElemOnFail::RemoveRecord("dnsActive"),
                )?;
            }
            for (from, to) in [
                ("externalDateAdded", "external.date.added"),
                ("externalDateExpires", "external.date.expires"),
                ("externalLastModified", "external.last_modified"),
                ("firstSeen", "first_seen"),
            ] {
                for e in list.iter_mut() {
                    elem_date(e, from, to);
                }
            }
            for e in list.iter_mut() {
                elem_convert(
                    doc,
                    e,
                    "id",
                    "id",
                    String,
                    "convert_associatedIndicators_data_id_to_string",
                    ElemOnFail::RemoveRecord("id"),
                )?;
            }
            for e in list.iter_mut() {
                elem_convert(
                    doc,
                    e,
                    "ip",
                    "ip",
                    Ip,
                    "convert_associatedIndicators_data_ip_to_ip",
                    ElemOnFail::RemoveRecord("ip"),
                )?;
            }
            // E16: `value.ip` never exists, so this appends "" (removed by the cleaner).
            append_each(
                doc,
                &list,
                "value.ip",
                "related.ip",
                "append_associatedIndicators_data_ip_into_related_ip",
            )?;
            for (from, to) in [("lastModified", "last_modified"), ("lastSeen", "last_seen")] {
                for e in list.iter_mut() {
                    elem_date(e, from, to);
                }
            }
            for e in list.iter_mut() {
                elem_convert(
                    doc,
                    e,
                    "ownerId",
                    "owner.id",
                    String,
                    "convert_associatedIndicators_data_ownerId_to_string",
                    ElemOnFail::Abort,
                )?;
            }
            for e in list.iter_mut() {
                elem_rename(
                    e,
                    "ownerName",
                    "owner.name",
                    false,
                    "rename_associatedIndicators_data_ownerName",
                )?;
            }
            for e in list.iter_mut() {
                elem_convert(
                    doc,
                    e,
                    "privateFlag",
                    "private_flag",
                    Boolean,
                    "convert_associatedIndicators_data_privateFlag_to_boolean",
                    ElemOnFail::RemoveRecord("privateFlag"),
                )?;
            }
            for e in list.iter_mut() {
                elem_convert(
                    doc,
                    e,
                    "rating",
                    "rating",
                    Double,
                    "convert_associatedIndicators_data_rating_to_double",
                    ElemOnFail::RemoveRecord("rating"),
                )?;
            }
            for e in list.iter_mut() {
                elem_rename(
                    e,
                    "Value Name",
                    "value.name",
                    false,
                    "rename_associatedIndicators_data_Value_Name",
                )?;
            }
            for e in list.iter_mut() {
                elem_rename(
                    e,
                    "Value Type",
                    "value.type",
                    false,
                    "rename_associatedIndicators_data_Value_Type",
                )?;
            }
            for e in list.iter_mut() {
                elem_convert(
                    doc,
                    e,
                    "whoisActive",
                    "whois_active",
                    Boolean,
                    "convert_associatedIndicators_data_whoisActive_to_boolean",
                    ElemOnFail::RemoveRecord("whoisActive"),
                )?;
            }
            for e in list.iter_mut() {
                elem_remove(
                    e,
                    &[
                        "active",
                        "activeLocked",
                        "Block",
                        "dnsActive",
                        "dateAdded",
                        "externalDateAdded",
                        "externalDateExpires",
                        "externalLastModified",
                        "firstSeen",
                        "lastSeen",
                        "lastModified",
                        "ownerId",
                        "privateFlag",
                        "Value Type",
                        "Value Name",
                        "whoisActive",
                    ],
                );
            }
            for e in list.iter_mut() {
                elem_rename(e, "_temp", "active", false, "rename_temp_to_active")?;
            }
            Ok(())
        })();
        let _ = set(doc, target, Value::Array(list));
        result
    }

    /// §9: indicator attributes.
    fn stage_f(&mut self) -> Step {
        let Run { doc, j, .. } = self;
        use ConvertType::*;
        let first_tag = "foreach_rename_attributes_data_createdBy_firstName";
        match guard(j, &["attributes", "data"]) {
            Err(m) => return Err(conditional(first_tag, m)),
            Ok(None) => return Ok(()),
            Ok(Some(_)) => {}
        }
        let Some(data) = j.get_mut("attributes").and_then(|a| a.get_mut("data")) else {
            return Ok(());
        };
        let attrs = as_list(data, "json.attributes.data", first_tag)?;
        for a in attrs.iter_mut() {
            elem_rename(
                a,
                "createdBy.firstName",
                "created_by.first_name",
                false,
                "rename_attributes_data_createdBy_firstName",
            )?;
        }
        append_each(
            doc,
            attrs,
            "created_by.first_name",
            "related.user",
            "append_attributes_data_createdBy_firstName_into_related_user",
        )?;
        for a in attrs.iter_mut() {
            // Upstream removes `default` on failure here (sic).
            elem_convert(
                doc,
                a,
                "createdBy.id",
                "created_by.id",
                String,
                "convert_attributes_data_createdBy_id_to_string",
                ElemOnFail::RemoveRecord("default"),
            )?;
        }
        for a in attrs.iter_mut() {
            elem_rename(
                a,
                "createdBy.lastName",
                "created_by.last_name",
                false,
                "rename_attributes_data_createdBy_lastName",
            )?;
        }
        append_each(
            doc,
            attrs,
            "created_by.last_name",
            "related.user",
            "append_attributes_data_createdBy_lastName_into_related_user",
        )?;
        for a in attrs.iter_mut() {
            elem_rename(
                a,
                "createdBy.owner",
                "created_by.owner",
                false,
                "rename_attributes_data_createdBy_owner",
            )?;
        }
        for a in attrs.iter_mut() {
            elem_rename(
                a,
                "createdBy.pseudonym",
                "created_by.pseudonym",
                false,
                "rename_attributes_data_createdBy_pseudonym",
            )?;
        }
        for a in attrs.iter_mut() {
            elem_rename(
                a,
                "createdBy.userName",
                "created_by.user_name",
                false,
                "rename_attributes_data_createdBy_userName",
            )?;
        }
        append_each(
            doc,
            attrs,
            "created_by.user_name",
            "related.user",
            "append_attributes_data_createdBy_userName_into_related_user",
        )?;
        for a in attrs.iter_mut() {
            elem_date(a, "dateAdded", "date_added");
        }
        for a in attrs.iter_mut() {
            elem_convert(
                doc,
                a,
                "default",
                "default",
                Boolean,
                "convert_attributes_data_default_to_boolean",
                ElemOnFail::RemoveRecord("default"),
            )?;
        }
        for a in attrs.iter_mut() {
            elem_date(a, "lastModified", "last_modified");
        }
        for a in attrs.iter_mut() {
            elem_convert(
                doc,
                a,
                "pinned",
                "pinned",
                Boolean,
                "convert_attributes_data_pinned_to_boolean",
                ElemOnFail::RemoveRecord("pinned"),
            )?;
        }
        for a in attrs.iter_mut() {
            // Upstream removes `default` on failure here too (sic).
            elem_convert(
                doc,
                a,
                "id",
                "id",
                String,
                "convert_attributess_data_id_to_string",
                ElemOnFail::RemoveRecord("default"),
            )?;
        }
        let moved = j
            .get_mut("attributes")
            .and_then(Value::as_object_mut)
            .and_then(|a| a.remove("data"));
        if let Some(mut data) = moved {
            if let Value::Array(list) = &mut data {
                for a in list.iter_mut() {
                    elem_remove(
                        a,
                        &[
                            "createdBy.firstName",
                            "createdBy.lastName",
                            "createdBy.id",
                            "lastModified",
                            "dateAdded",
                            "userName",
                        ],
                    );
                }
            }
            set(doc, "threat_connect.indicator.attributes.data", data)
                .map_err(|e| failure("rename", "rename_attributes_data", e))?;
        }
        Ok(())
    }

    /// §10 G1–G73 (with §11–§13).
    fn stage_g(&mut self) -> Step {
        let Run { doc, j, .. } = self;
        use ConvertType::*;
        mv(
            j,
            "Block",
            doc,
            "threat_connect.indicator.block",
            "rename_Block",
        )?;
        conv(
            j,
            "confidence",
            doc,
            "threat_connect.indicator.confidence",
            Long,
            "convert_confidence_to_long",
            OnFail::Record,
        )?;
        if let Some(v) = present(j, "confidence") {
            let level = confidence_level(v).map_err(|m| fail("script", "", m))?;
            set(
                doc,
                "threat.indicator.confidence",
                Value::String(level.to_owned()),
            )
            .map_err(|e| failure("script", "", e))?;
        }
        mv(
            j,
            "customAssociations",
            doc,
            "threat_connect.indicator.custom_associations",
            "rename_customAssociations",
        )?;
        conv(
            j,
            "dnsActive",
            doc,
            "threat_connect.indicator.dns_active",
            Boolean,
            "convert_dnsActive_to_boolean",
            OnFail::Record,
        )?;
        mv(
            j,
            "description",
            doc,
            "threat_connect.indicator.description",
            "rename_description",
        )?;
        copy(
            doc,
            "threat_connect.indicator.description",
            "threat.indicator.description",
            "set_threat_indicator_description_from_indicator_description",
        )?;
        mv(
            j,
            "dnsResolution",
            doc,
            "threat_connect.indicator.dns_resolution",
            "rename_dnsResolution",
        )?;
        mv(
            j,
            "enrichment",
            doc,
            "threat_connect.indicator.enrichment",
            "rename_enrichment",
        )?;
        date_field(
            j,
            "externalDateAdded",
            doc,
            "threat_connect.indicator.external.date.added",
            "date_externalDateAdded",
        )?;
        date_field(
            j,
            "externalDateExpires",
            doc,
            "threat_connect.indicator.external.date.expires",
            "date_externalDateExpires",
        )?;
        // G11: `external_last.modified` (sic).
        date_field(
            j,
            "externalLastModified",
            doc,
            "threat_connect.indicator.external_last.modified",
            "date_externalLastModified",
        )?;
        copy(
            doc,
            "threat_connect.indicator.external_last.modified",
            "threat.indicator.modified_at",
            "set_threat_indicator_modified_at_from_indicator_external_last_modified",
        )?;
        conv(
            j,
            "falsePositiveReportedByUser",
            doc,
            "threat_connect.indicator.false_positive_reported_by_user",
            Boolean,
            "convert_falsePositiveReportedByUser_to_boolean",
            OnFail::Record,
        )?;
        conv(
            j,
            "falsePositives",
            doc,
            "threat_connect.indicator.false_positives",
            Long,
            "convert_falsePositives_to_long",
            OnFail::Record,
        )?;
        mv(
            j,
            "fileActions",
            doc,
            "threat_connect.indicator.file_actions",
            "rename_fileActions",
        )?;
        mv(
            j,
            "fileOccurrences",
            doc,
            "threat_connect.indicator.file_occurrences",
            "rename_fileOccurrences",
        )?;
        date_field(
            j,
            "firstSeen",
            doc,
            "threat_connect.indicator.first_seen",
            "date_firstSeen",
        )?;
        copy(
            doc,
            "threat_connect.indicator.first_seen",
            "threat.indicator.first_seen",
            "set_threat_indicator_first_seen_from_indicator_first_seen",
        )?;
        mv(
            j,
            "genericCustomIndicatorValues",
            doc,
            "threat_connect.indicator.generic_custom_indicator_values",
            "rename_genericCustomIndicatorValues",
        )?;
        mv(
            j,
            "geoLocation",
            doc,
            "threat_connect.indicator.geo_location",
            "rename_geoLocation",
        )?;
        mv(
            j,
            "Hashtag",
            doc,
            "threat_connect.indicator.hashtag",
            "rename_Hashtag",
        )?;
        mv(
            j,
            "hostName",
            doc,
            "threat_connect.indicator.host_name",
            "rename_hostName",
        )?;
        copy(
            doc,
            "threat_connect.indicator.host_name",
            "observer.hostname",
            "set_observer_hostname_from_indicator_host_name",
        )?;
        append_field(
            doc,
            "threat_connect.indicator.host_name",
            "related.hosts",
            "convert_hostname_address_to_related_host",
        )?;
        // G20: serde_json keeps integer ids exact (no float64 round trip).
        conv(
            j,
            "id",
            doc,
            "threat_connect.indicator.id",
            String,
            "convert_id_to_string",
            OnFail::Abort,
        )?;
        mv(
            j,
            "investigationLinks",
            doc,
            "threat_connect.indicator.investigation_links",
            "rename_investigationLinks",
        )?;
        if present(j, "ip").is_some_and(|v| !ingest::is_empty_value(v)) {
            conv(
                j,
                "ip",
                doc,
                "threat_connect.indicator.ip",
                Ip,
                "convert_ip_to_ip",
                OnFail::Record,
            )?;
        }
        append_field(
            doc,
            "threat_connect.indicator.ip",
            "related.ip",
            "convert_ip_to_related_ip",
        )?;
        date_field(
            j,
            "lastFalsePositive",
            doc,
            "threat_connect.indicator.last_false_positive",
            "date_lastFalsePositive",
        )?;
        date_field(
            j,
            "lastModified",
            doc,
            "threat_connect.indicator.last_modified",
            "date_lastModified",
        )?;
        copy(
            doc,
            "threat_connect.indicator.last_modified",
            "@timestamp",
            "set_@timestamp_from_indicator_last_modified",
        )?;
        date_field(
            j,
            "lastSeen",
            doc,
            "threat_connect.indicator.last_seen",
            "date_lastSeen",
        )?;
        copy(
            doc,
            "threat_connect.indicator.last_seen",
            "threat.indicator.last_seen",
            "set_threat_indicator_last_seen_from_indicator_last_seen",
        )?;
        date_field(
            j,
            "dateAdded",
            doc,
            "threat_connect.indicator.date_added",
            "date_dateAdded",
        )?;
        mv(
            j,
            "type",
            doc,
            "threat_connect.indicator.type",
            "rename_type",
        )?;
        // G29 (§12): first case-sensitive substring hit wins.
        if let Some(Value::String(t)) = get(doc, "threat_connect.indicator.type") {
            let ecs_type = [
                ("File", "file"),
                ("URL", "url"),
                ("EmailAddress", "email-addr"),
                ("Mutex", "mutex"),
                ("Registry Key", "windows-registry-key"),
            ]
            .into_iter()
            .find(|(needle, _)| t.contains(needle))
            .map(|(_, ecs)| ecs);
            if let Some(ecs) = ecs_type {
                let r = set(doc, "threat.indicator.type", serde_json::json!([ecs]));
                if let Err(e) = r {
                    handle(
                        doc,
                        failure("script", "script_to_add_category", e),
                        OnFail::Record,
                    )?;
                }
            }
        }
        if is_address(doc) {
            copy(
                doc,
                "threat_connect.indicator.ip",
                "threat.indicator.ip",
                "set_threat_indicator_ip_from_indicator_ip",
            )?;
            // G31/G32: the guards dereference `tci.ip` without a null check.
            for (needle, value, tag) in [
                (":", "ipv6-addr", "set_threat_indicator_type_to_ipv6_addr"),
                (".", "ipv4-addr", "set_threat_indicator_type_to_ipv4_addr"),
            ] {
                let hit = match get(doc, "threat_connect.indicator.ip") {
                    Some(Value::String(ip)) => ip.contains(needle),
                    Some(Value::Array(items)) => items.iter().any(|i| i == needle),
                    None | Some(Value::Null) => {
                        return Err(conditional(
                            tag,
                            "cannot access method/field [contains] from a null def reference"
                                .to_owned(),
                        ));
                    }
                    Some(other) => {
                        return Err(conditional(
                            tag,
                            format!(
                                "dynamic method [{}, contains/1] not found",
                                ingest::java_type_name(other)
                            ),
                        ));
                    }
                };
                if hit {
                    set(doc, "threat.indicator.type", value.into())
                        .map_err(|e| failure("set", tag, e))?;
                }
            }
        }
        mv(
            j,
            "legacyLink",
            doc,
            "threat_connect.indicator.legacy_link",
            "rename_legacyLink",
        )?;
        append_field(
            doc,
            "threat_connect.indicator.legacy_link",
            "threat.indicator.reference",
            "append_threat_indicator_reference_from_indicator_legacy_link",
        )?;
        mv(j, "md5", doc, "threat_connect.indicator.md5", "rename_md5")?;
        lowercase(
            doc,
            "threat_connect.indicator.md5",
            "lowercase_threat_indicator_md5",
        )?;
        if type_contains(doc, "File") {
            copy(
                doc,
                "threat_connect.indicator.md5",
                "threat.indicator.file.hash.md5",
                "set_threat_indicator_file_hash_md5_from_indicator_md5",
            )?;
        }
        mv(
            j,
            "Key Name",
            doc,
            "threat_connect.indicator.key_name",
            "rename_Key Name",
        )?;
        if type_contains(doc, "Registry Key") {
            copy(
                doc,
                "threat_connect.indicator.key_name",
                "threat.indicator.registry.path",
                "set_threat_indicator_registry_path_from_indicator_key_name",
            )?;
        }
        append_field(
            doc,
            "threat_connect.indicator.md5",
            "related.hash",
            "convert_md5_address_to_related_hash",
        )?;
        mv(
            j,
            "Mutex",
            doc,
            "threat_connect.indicator.mutex",
            "rename_Mutex",
        )?;
        mv(
            j,
            "observations",
            doc,
            "threat_connect.indicator.observations",
            "rename_observations",
        )?;
        conv(
            j,
            "ownerId",
            doc,
            "threat_connect.indicator.owner.id",
            String,
            "convert_ownerId_to_string",
            OnFail::Abort,
        )?;
        mv(
            j,
            "ownerName",
            doc,
            "threat_connect.indicator.owner.name",
            "rename_ownerName",
        )?;
        conv(
            j,
            "privateFlag",
            doc,
            "threat_connect.indicator.private_flag",
            Boolean,
            "convert_privateFlag_to_boolean",
            OnFail::Record,
        )?;
        conv(
            j,
            "rating",
            doc,
            "threat_connect.indicator.rating",
            Double,
            "convert_rating_to_double",
            OnFail::Record,
        )?;
        security_labels(doc, j)?;
        mv(
            j,
            "sha1",
            doc,
            "threat_connect.indicator.sha1",
            "rename_sha1",
        )?;
        lowercase(
            doc,
            "threat_connect.indicator.sha1",
            "lowercase_threat_indicator_sha1",
        )?;
        if type_contains(doc, "File") {
            copy(
                doc,
                "threat_connect.indicator.sha1",
                "threat.indicator.file.hash.sha1",
                "set_threat_indicator_file_hash_sha1_from_indicator_sha1",
            )?;
        }
        append_field(
            doc,
            "threat_connect.indicator.sha1",
            "related.hash",
            "convert_sha1_address_to_related_hash",
        )?;
        mv(
            j,
            "sha256",
            doc,
            "threat_connect.indicator.sha256",
            "rename_sha256",
        )?;
        lowercase(
            doc,
            "threat_connect.indicator.sha256",
            "lowercase_threat_indicator_sha256",
        )?;
        if type_contains(doc, "File") {
            copy(
                doc,
                "threat_connect.indicator.sha256",
                "threat.indicator.file.hash.sha256",
                "set_threat_indicator_file_hash_sha256_from_indicator_sha256",
            )?;
        }
        // G47: upstream guards the sha256 append on md5 (sic).
        if get(doc, "threat_connect.indicator.md5").is_some_and(|v| !v.is_null()) {
            let rendered = render(get(doc, "threat_connect.indicator.sha256"));
            append(doc, "related.hash", Value::String(rendered), false)
                .map_err(|e| failure("append", "convert_sha256_address_to_related_hash", e))?;
        }
        conv(
            j,
            "size",
            doc,
            "threat_connect.indicator.size",
            String,
            "convert_size_to_string",
            OnFail::Record,
        )?;
        // G48 [2.x]: the tag of this step is not known (the merged 2.0.0 YAML was unreadable).
        conv(
            j,
            "size",
            doc,
            "threat.indicator.file.size",
            Long,
            "convert_size_to_long",
            OnFail::Record,
        )?;
        mv(
            j,
            "source",
            doc,
            "threat_connect.indicator.source",
            "rename_source",
        )?;
        mv(
            j,
            "Subject",
            doc,
            "threat_connect.indicator.subject",
            "rename_Subject",
        )?;
        copy(
            doc,
            "threat_connect.indicator.subject",
            "email.subject",
            "set_email_subject_from_indicator_subject",
        )?;
        mv(
            j,
            "summary",
            doc,
            "threat_connect.indicator.summary",
            "rename_summary",
        )?;
        copy(
            doc,
            "threat_connect.indicator.summary",
            "event.id",
            "set_event_id_from_indicator_summary",
        )?;
        tags(doc, j)?;
        mv(
            j,
            "text",
            doc,
            "threat_connect.indicator.text",
            "rename_text",
        )?;
        if type_contains(doc, "URL") {
            copy(
                doc,
                "threat_connect.indicator.text",
                "threat.indicator.url.original",
                "set_threat_indicator_url_original_from_indicator_text",
            )?;
        }
        conv(
            j,
            "threatAssessConfidence",
            doc,
            "threat_connect.indicator.threat_assess.confidence",
            Double,
            "convert_threatAssessConfidence_to_double",
            OnFail::Record,
        )?;
        conv(
            j,
            "threatAssessRating",
            doc,
            "threat_connect.indicator.threat_assess.rating",
            Double,
            "convert_threatAssessRating_to_double",
            OnFail::Record,
        )?;
        conv(
            j,
            "threatAssessScoreFalsePositive",
            doc,
            "threat_connect.indicator.threat_assess.score.false_positive",
            Long,
            "convert_threatAssessScoreFalsePositive_to_long",
            OnFail::Record,
        )?;
        conv(
            j,
            "threatAssessScoreObserved",
            doc,
            "threat_connect.indicator.threat_assess.score.observed",
            Long,
            "convert_threatAssessScoreObserved_to_long",
            OnFail::Record,
        )?;
        conv(
            j,
            "threatAssessScore",
            doc,
            "threat_connect.indicator.threat_assess.score.value",
            Long,
            "convert_threatAssessScore_to_long",
            OnFail::Record,
        )?;
        mv(
            j,
            "trackedUsers",
            doc,
            "threat_connect.indicator.tracked_users",
            "rename_trackedUsers",
        )?;
        mv(
            j,
            "User Agent String",
            doc,
            "threat_connect.indicator.user_agent_string",
            "rename_User Agent String",
        )?;
        copy(
            doc,
            "threat_connect.indicator.user_agent_string",
            "user_agent.original",
            "set_user_agent_original_from_indicator_user_agent_string",
        )?;
        mv(
            j,
            "Value Name",
            doc,
            "threat_connect.indicator.value.name",
            "rename_Value Name",
        )?;
        if type_contains(doc, "Registry Key") {
            copy(
                doc,
                "threat_connect.indicator.value.name",
                "threat.indicator.registry.value",
                "set_threat_indicator_registry_value_from_indicator_value_name",
            )?;
        }
        mv(
            j,
            "Value Type",
            doc,
            "threat_connect.indicator.value.type",
            "rename_Value Type",
        )?;
        if type_contains(doc, "Registry Key") {
            copy(
                doc,
                "threat_connect.indicator.value.type",
                "threat.indicator.registry.data.type",
                "set_threat_indicator_registry_data_type_from_indicator_value_type",
            )?;
        }
        mv(
            j,
            "webLink",
            doc,
            "threat_connect.indicator.web_link",
            "rename_webLink",
        )?;
        append_field(
            doc,
            "threat_connect.indicator.web_link",
            "threat.indicator.reference",
            "append_threat_indicator_reference_from_indicator_web_link",
        )?;
        mv(
            j,
            "whoIs",
            doc,
            "threat_connect.indicator.who_is",
            "rename_whoIs",
        )?;
        conv(
            j,
            "whoisActive",
            doc,
            "threat_connect.indicator.whois_active",
            Boolean,
            "convert_whoisActive_to_boolean",
            OnFail::Record,
        )?;
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

/// G42–G45: label dates, TLP extraction (§13), label pruning and the move to `tci`.
fn security_labels(doc: &mut Doc, j: &mut Doc) -> Step {
    let tag = "foreach_date_securityLabels_data_dateAdded";
    match guard(j, &["securityLabels", "data"]) {
        Err(m) => return Err(conditional(tag, m)),
        Ok(None) => return Ok(()),
        Ok(Some(_)) => {}
    }
    let Some(data) = j.get_mut("securityLabels").and_then(|s| s.get_mut("data")) else {
        return Ok(());
    };
    let labels = as_list(data, "json.securityLabels.data", tag)?;
    for l in labels.iter_mut() {
        elem_date(l, "dateAdded", "date_added");
    }
    // G43.
    let script_tag = "script_securityLabels_data_name";
    let mut tlps = Vec::new();
    for l in labels.iter() {
        let Value::Object(m) = l else {
            return Err(fail(
                "script",
                script_tag,
                format!(
                    "dynamic method [{}, containsKey/1] not found",
                    ingest::java_type_name(l)
                ),
            ));
        };
        let Some(name) = m.get("name") else { continue };
        let hit = match name {
            Value::String(s) => s.contains(':'),
            Value::Array(items) => {
                if items.iter().any(|i| i == ":") {
                    return Err(fail(
                        "script",
                        script_tag,
                        "dynamic method [java.util.ArrayList, splitOnToken/1] not found".to_owned(),
                    ));
                }
                false
            }
            other => {
                return Err(fail(
                    "script",
                    script_tag,
                    format!(
                        "cannot call contains on security label name [{}] of type [{}]",
                        ingest::java_to_string(other),
                        ingest::java_type_name(other)
                    ),
                ));
            }
        };
        if let (true, Value::String(s)) = (hit, name) {
            let second = s.split(':').nth(1).unwrap_or_default();
            if ["WHITE", "CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"].contains(&second) {
                tlps.push(Value::String(second.to_owned()));
            }
        }
    }
    if !tlps.is_empty() {
        set(doc, "threat.indicator.marking.tlp", Value::Array(tlps))
            .map_err(|e| failure("script", script_tag, e))?;
    }
    for l in labels.iter_mut() {
        elem_remove(l, &["id", "description", "color", "owner", "dateAdded"]);
    }
    let moved = j
        .get_mut("securityLabels")
        .and_then(Value::as_object_mut)
        .and_then(|s| s.remove("data"));
    if let Some(data) = moved {
        set(doc, "threat_connect.indicator.security_labels.data", data)
            .map_err(|e| failure("rename", "rename_securityLabels_data", e))?;
    }
    Ok(())
}

/// G52–G59: tags, technique names/ids, platforms, tactics (§13).
fn tags(doc: &mut Doc, j: &mut Doc) -> Step {
    let tag = "foreach_date_tags_data_lastUsed";
    match guard(j, &["tags", "data"]) {
        Err(m) => return Err(conditional(tag, m)),
        Ok(None) => return Ok(()),
        Ok(Some(_)) => {}
    }
    let Some(data) = j.get_mut("tags").and_then(|t| t.get_mut("data")) else {
        return Ok(());
    };
    let list = as_list(data, "json.tags.data", tag)?;
    for t in list.iter_mut() {
        elem_date(t, "lastUsed", "last_used");
    }
    // Step 2 (script with on_failure → recorded).
    let mut names = Vec::new();
    let mut script_error = None;
    for t in list.iter() {
        match t {
            Value::Object(m) => {
                if m.get("techniqueId").is_some_and(|v| !v.is_null()) {
                    names.push(m.get("name").cloned().unwrap_or(Value::Null));
                }
            }
            other => {
                script_error = Some(format!(
                    "dynamic method [{}, get/1] not found (json.tags.data element [{}])",
                    ingest::java_type_name(other),
                    ingest::java_to_string(other)
                ));
                break;
            }
        }
    }
    match script_error {
        Some(m) => record_error(doc, &fail("script", "script_technique_names", m), PIPELINE),
        None if !names.is_empty() => {
            if let Err(e) = set(doc, "threat.technique.name", Value::Array(names)) {
                record_error(
                    doc,
                    &failure("script", "script_technique_names", e),
                    PIPELINE,
                );
            }
        }
        None => {}
    }
    for t in list.iter_mut() {
        elem_rename(
            t,
            "techniqueId",
            "technique.id",
            false,
            "rename_tags_data_techniqueId",
        )?;
    }
    append_each(
        doc,
        list,
        "technique.id",
        "threat.technique.id",
        "append_tags_data_techniqueId",
    )?;
    for t in list.iter_mut() {
        let Value::Object(m) = t else { continue };
        let Some(platforms) = ingest::get_mut(m, "platforms.data") else {
            continue;
        };
        if platforms.is_null() {
            continue;
        }
        let items = as_list(
            platforms,
            "_ingest._value.platforms.data",
            "foreach_platforms_data",
        )?;
        for p in items.iter() {
            append(doc, "os.family", Value::String(render(Some(p))), false)
                .map_err(|e| failure("append", "append_tags_platforms_data", e))?;
        }
    }
    for t in list.iter_mut() {
        // Since 1.9.0: `tactics.data` replaces `tactics` (override).
        elem_rename(
            t,
            "tactics.data",
            "tactics",
            true,
            "rename_tags_data_tactics_data",
        )?;
    }
    let moved = j
        .get_mut("tags")
        .and_then(Value::as_object_mut)
        .and_then(|t| t.remove("data"));
    if let Some(mut data) = moved {
        if let Value::Array(list) = &mut data {
            for t in list.iter_mut() {
                elem_remove(
                    t,
                    &[
                        "lastUsed",
                        "id",
                        "description",
                        "techniqueId",
                        "platforms",
                        "owner",
                    ],
                );
            }
        }
        set(doc, "threat_connect.indicator.tags.data", data)
            .map_err(|e| failure("rename", "rename_tags_data", e))?;
    }
    Ok(())
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
