//! The reference ThreatQ → ECS engine: Elastic's `ti_threatq` ingest pipeline (package 1.33+,
//! data stream `ti_threatq.threat`) replayed processor by processor, in the upstream order and
//! with its quirks, on top of the generic dotted-path building blocks in [`crate::ingest`].
//!
//! It is the executable statement of the mapping: every input the fast path
//! ([`super::fast`]) does not model is mapped here, and the differential tests hold the fast
//! path to byte-identical output against it. Prefer clarity over speed in this file. Section
//! numbers in comments (`§3.14`, `§4`, `§9.1`, …) refer to `shared/spec/threatq-mapping.md`.
//!
//! One deliberate deviation (see `DEVIATION:` below): an IOC whose status is `Expired` expires
//! at once, as the integration documents, although the upstream script never matches it.
//!
//! The raw text is decoded with the `json` processor's defaults: a repeated key is an error
//! (`allow_duplicate_keys: false`), recorded like any other decode failure (§3.3).
//!
//! A processor without its own error handler aborts the pipeline (§7): the document is kept
//! as it was at that moment and marked as a `pipeline_error`.

use serde_json::{Map, Value};

use super::{
    ATTRIBUTE_DATES, ATTRIBUTE_IDS, COUNTERS, DATES, ECS_TLPS, INVALID_DURATION, PIPELINE,
    PRESERVE, PRESERVE_CUSTOM, REASON_DEFAULT, REASON_EXPIRED_AT, REASON_EXPIRES_AT, REASON_STATUS,
    SOURCE_DATES, SOURCE_IDS,
};
use crate::ingest::{
    self, ConvertType, EcsEvent, IngestError, MapOptions, ProcessorFailure, append, convert,
    copy_from, get, get_mut, record_error, remove, remove_empty, render, set,
};

type Doc = Map<String, Value>;
type Step = Result<(), ProcessorFailure>;

/// Maps one raw ThreatQ indicator (one element of the API's `data` array, as JSON text) to the
/// document Elastic's pipeline would store. Never panics; malformed input yields a document
/// with `error.message`, like the pipeline. The pipeline sets no `_id` (§5), so `id` is `None`.
pub fn map_indicator(raw: &str, opts: &MapOptions) -> EcsEvent {
    let mut doc = Doc::new();
    doc.insert("message".to_owned(), Value::String(raw.to_owned()));
    opts.insert_agent_fields(&mut doc);

    match process(&mut doc, opts) {
        Ok(()) => {
            // §3.24, §3.25.
            remove_empty(&mut doc);
            if get(&doc, "error.message").is_some() {
                let _ = set(&mut doc, "event.kind", "pipeline_error".into());
                let _ = append(&mut doc, "tags", PRESERVE.into(), false);
            }
        }
        Err(failure) => {
            // §7: processing stops; the document stays as it was at the failure.
            record_error(&mut doc, &failure, PIPELINE);
            let _ = set(&mut doc, "event.kind", "pipeline_error".into());
            let _ = append(&mut doc, "tags", PRESERVE.into(), false);
        }
    }
    let timestamp = match doc.get("@timestamp") {
        Some(Value::String(s)) => ingest::parse_iso8601(s).map(|t| t.with_timezone(&chrono::Utc)),
        _ => None,
    };
    EcsEvent {
        id: None,
        timestamp,
        doc: doc.into(),
    }
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

/// The value at `path` for a `!= null` guard.
fn present<'a>(doc: &'a Doc, path: &str) -> Option<&'a Value> {
    get(doc, path).filter(|v| !v.is_null())
}

/// The `threatq` object, when there is one.
fn tq(doc: &Doc) -> Option<&Doc> {
    doc.get("threatq").and_then(Value::as_object)
}

fn tq_mut(doc: &mut Doc) -> Option<&mut Doc> {
    doc.get_mut("threatq").and_then(Value::as_object_mut)
}

/// Painless `ctx.threatq?.<key>?.name`: null-safe on null parents, but a non-object parent
/// makes the condition throw ("dynamic getter … not found").
fn guard_name<'a>(doc: &'a Doc, key: &str) -> Result<Option<&'a Value>, String> {
    let Some(obj) = tq(doc) else {
        return Ok(None);
    };
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(m.get("name").filter(|v| !v.is_null())),
        Some(Value::Array(_)) => Err(format!(
            "Illegal list shortcut value [name] on [threatq.{key}]."
        )),
        Some(other) => Err(format!(
            "dynamic getter [{}, name] not found",
            ingest::java_type_name(other)
        )),
    }
}

/// A top-level `convert` with `ignore_missing`; `remove_and_record` = the pipeline's
/// "remove field + append error" handler, otherwise a failure aborts.
fn conv(
    doc: &mut Doc,
    path: &str,
    ty: ConvertType,
    tag: &'static str,
    remove_and_record: bool,
) -> Step {
    let Some(v) = present(doc, path) else {
        return Ok(());
    };
    match convert(v, ty).and_then(|c| set(doc, path, c)) {
        Ok(()) => Ok(()),
        Err(e) if remove_and_record => {
            remove(doc, path);
            record_error(doc, &failure("convert", tag, e), PIPELINE);
            Ok(())
        }
        Err(e) => Err(failure("convert", tag, e)),
    }
}

/// §3.6: `date` in place with `yyyy-MM-dd HH:mm:ss`, guarded by `!= null && != ''`; on failure
/// the field is removed and the error recorded.
fn date_in_place(doc: &mut Doc, field: &str, tag: &'static str) {
    let path = format!("threatq.{field}");
    let Some(v) = present(doc, &path) else {
        return;
    };
    if ingest::is_empty_value(v) {
        return;
    }
    match ingest::date_ymd_hms(v).and_then(|d| set(doc, &path, Value::String(d))) {
        Ok(()) => {}
        Err(e) => {
            remove(doc, &path);
            record_error(doc, &failure("date", tag, e), PIPELINE);
        }
    }
}

/// Inside a `foreach` element: convert to string (ignore_missing); non-objects are skipped.
fn elem_to_string(elem: &mut Doc, key: &str) {
    let converted = match elem.get(key) {
        Some(v) if !v.is_null() => convert(v, ConvertType::String).ok(),
        _ => None,
    };
    if let Some(c) = converted {
        elem.insert(key.to_owned(), c);
    }
}

/// Inside a `foreach` element: date `yyyy-MM-dd HH:mm:ss`; any failure (missing, null, bad
/// format) removes the key, silently (§3.15, §3.17).
fn elem_date(elem: &mut Doc, key: &str) {
    let parsed = elem.get(key).and_then(|v| ingest::date_ymd_hms(v).ok());
    match parsed {
        Some(d) => {
            elem.insert(key.to_owned(), Value::String(d));
        }
        None => {
            elem.remove(key);
        }
    }
}

/// Painless `ZonedDateTime.parse(text)` for the ISO text the pipeline itself wrote.
fn parse_zoned(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    let has_zone = text.ends_with('Z')
        || text
            .get(text.len().saturating_sub(6)..)
            .is_some_and(|z| z.starts_with(['+', '-']));
    match ingest::parse_iso8601(text) {
        Some(t) if has_zone && text.contains('T') => Ok(t.with_timezone(&chrono::Utc)),
        _ => Err(format!("Text '{text}' could not be parsed at index 0")),
    }
}

fn process(doc: &mut Doc, opts: &MapOptions) -> Step {
    // §3.0: agentless-policy fields (never present in what we build, kept for parity).
    if ["organization", "division", "team"]
        .iter()
        .all(|k| matches!(doc.get(*k), Some(Value::String(_))))
    {
        for k in ["organization", "division", "team"] {
            doc.remove(k);
        }
    }

    // §3.1.
    doc.insert("ecs".to_owned(), serde_json::json!({ "version": "8.17.0" }));
    set(doc, "event.kind", "enrichment".into()).map_err(|e| failure("set", "set_event_kind", e))?;
    set(doc, "event.category", serde_json::json!(["threat"]))
        .map_err(|e| failure("set", "set_event_category", e))?;
    set(doc, "event.type", serde_json::json!(["indicator"]))
        .map_err(|e| failure("set", "set_event_type", e))?;

    // §3.2.
    if present(doc, "event.original").is_none() && present(doc, "message").is_some() {
        ingest::rename(doc, "message", "event.original", true)
            .map_err(|e| failure("rename", "rename_message_to_event_original", e))?;
    }
    if present(doc, "event.original").is_some() {
        doc.remove("message");
    }

    // §3.3–3.4: decode into `json`, then rename it to `threatq`.
    let decoded = match get(doc, "event.original") {
        Some(Value::String(text)) => ingest::parse_json_strict(text).map_err(|e| {
            let shown: String = text.chars().take(200).collect();
            format!("cannot parse field [event.original] as JSON: {e} (value [{shown}])")
        }),
        Some(other) => Err(format!(
            "field [event.original] of type [{}] cannot be cast to [java.lang.String]",
            ingest::java_type_name(other)
        )),
        None => Err("field [original] not present as part of path [event.original]".to_owned()),
    };
    match decoded {
        Ok(v) => {
            doc.insert("threatq".to_owned(), v);
        }
        Err(m) => record_error(doc, &fail("json", "json_event_original", m), PIPELINE),
    }

    // The first condition (`ctx.threatq?.hash != null`) throws on a non-object `threatq`.
    match doc.get("threatq") {
        None | Some(Value::Null | Value::Object(_)) => {}
        Some(Value::Array(_)) => {
            return Err(fail(
                "append",
                "append_related_hash",
                "Illegal list shortcut value [hash] on [threatq].".to_owned(),
            ));
        }
        Some(other) => {
            return Err(fail(
                "append",
                "append_related_hash",
                format!(
                    "dynamic getter [{}, hash] not found",
                    ingest::java_type_name(other)
                ),
            ));
        }
    }

    // §3.5.
    if let Some(h) = present(doc, "threatq.hash") {
        let text = render(Some(h));
        append(doc, "related.hash", Value::String(text), false)
            .map_err(|e| failure("append", "append_related_hash", e))?;
    }

    // §3.6–3.7.
    for (i, (field, tag)) in DATES.iter().enumerate() {
        date_in_place(doc, field, tag);
        if i == 0 {
            copy_from(doc, "threatq.updated_at", "@timestamp")
                .map_err(|e| failure("set", "set_@timestamp_from_updated_at", e))?;
        }
    }

    // §3.8.
    conv(
        doc,
        "threatq.id",
        ConvertType::Long,
        "convert_id_to_long",
        true,
    )?;
    conv(
        doc,
        "threatq.indicator_id",
        ConvertType::Long,
        "convert_indicator_id_to_long",
        true,
    )?;
    for path in [
        "threatq.status.id",
        "threatq.status_id",
        "threatq.type.id",
        "threatq.type_id",
    ] {
        // Untagged in the version read (§0).
        conv(doc, path, ConvertType::String, "", false)?;
    }

    // §3.9–3.11.
    conv(
        doc,
        "threatq.score",
        ConvertType::Long,
        "convert_score_to_long",
        true,
    )?;
    copy_from(doc, "threatq.description", "threat.indicator.description").map_err(|e| {
        failure(
            "set",
            "set_threat_indicator_description_from_description",
            e,
        )
    })?;
    confidence(doc)?;

    // §3.12.
    if present(doc, "threatq.value").is_some() {
        ingest::rename(doc, "threatq.value", "threatq.indicator_value", false)
            .map_err(|e| failure("rename", "rename_value", e))?;
    }

    // §3.13.
    expiration(doc, opts);

    // §3.14.
    indicator_type(doc)?;

    // §3.15–3.16.
    sources(doc);
    tlp_and_providers(doc)?;

    // §3.17.
    attributes(doc)?;

    // §3.18.
    for (field, tag) in COUNTERS {
        conv(
            doc,
            &format!("threatq.{field}"),
            ConvertType::Long,
            tag,
            true,
        )?;
    }

    // §3.19: ids to string; the second (name-append) loop has no visible effect (§9.9).
    if let Some(Value::Array(list)) = tq_mut(doc).and_then(|t| t.get_mut("adversaries")) {
        for elem in list.iter_mut().filter_map(Value::as_object_mut) {
            elem_to_string(elem, "id");
        }
    }

    // §3.20 (null pruning when `threat` exists) is not replayed: nothing after it can fail,
    // and §3.24 removes every null anyway, so it has no observable effect.

    // §3.21–3.23.
    let keep_custom =
        matches!(doc.get("tags"), Some(Value::Array(t)) if t.iter().any(|v| v == PRESERVE_CUSTOM));
    if !keep_custom {
        if let Some(Value::Array(list)) = tq_mut(doc).and_then(|t| t.get_mut("sources")) {
            for elem in list.iter_mut().filter_map(Value::as_object_mut) {
                elem.remove("provider");
                elem.remove("tlp_name");
            }
        }
        for path in ["threatq.description", "threatq.score", "threatq.updated_at"] {
            remove(doc, path);
        }
    }
    doc.remove("_conf");
    Ok(())
}

/// §3.11 (`set_threat_indicator_confidence`): the script creates `threat.indicator` first,
/// then compares the (long) score with the bands; a non-number makes the comparison throw.
fn confidence(doc: &mut Doc) -> Step {
    let Some(score) = present(doc, "threatq.score").cloned() else {
        return Ok(());
    };
    let tag = "set_threat_indicator_confidence";
    let indicator =
        ingest::slot_mut(doc, "threat.indicator").map_err(|e| failure("script", tag, e))?;
    if !indicator.is_object() {
        *indicator = Value::Object(Map::new());
    }
    let Some(value) = score.as_i64() else {
        return Err(fail(
            "script",
            tag,
            format!(
                "Cannot apply [>=] operation to types [{}] and [java.lang.Integer].",
                ingest::java_type_name(&score)
            ),
        ));
    };
    let level = match value {
        0..=4 => "Low",
        5..=7 => "Medium",
        8..=10 => "High",
        _ => return Ok(()),
    };
    if let Value::Object(m) = indicator {
        m.insert("confidence".to_owned(), Value::String(level.to_owned()));
    }
    Ok(())
}

/// Whether the indicator's status says `Expired`.
fn status_expired(threatq: &Doc) -> bool {
    match threatq.get("status") {
        Some(Value::String(s)) => s == "Expired",
        Some(Value::Object(m)) => matches!(m.get("name"), Some(Value::String(s)) if s == "Expired"),
        _ => false,
    }
}

/// §3.13 and §4: IOC expiration.
fn expiration(doc: &mut Doc, opts: &MapOptions) {
    // Steps 1–2: API dates (already ISO from §3.6); `expired_at` wins.
    for field in ["expires_at", "expired_at"] {
        if let Some(v) = present(doc, &format!("threatq.{field}")).cloned() {
            let _ = set(doc, "threatq.ioc_expired_at", v);
        }
    }
    // Step 3: the script, only with a non-empty `_conf.ioc_expiration_duration`.
    let Some(exp) = opts.ioc_expiration.as_ref().filter(|e| !e.raw.is_empty()) else {
        return;
    };
    if let Err(message) = expiry_script(doc, exp) {
        // The script's own handler names the current pipeline (identical in practice, §4).
        record_error(
            doc,
            &fail("script", "script-expired_ioc", message),
            PIPELINE,
        );
    }
}

/// The `script-expired_ioc` script (§4); `Err` is the exception its handler records.
fn expiry_script(doc: &mut Doc, exp: &crate::config::IocExpiration) -> Result<(), String> {
    let at_timestamp = doc.get("@timestamp").cloned();
    let Some(threatq) = tq(doc) else {
        return Err(
            "Cannot invoke \"Object.getClass()\" because \"ctx.threatq\" is null".to_owned(),
        );
    };
    let mut invalid_unit = false;
    let computed = if present_in(threatq, "ioc_expired_at").is_some() {
        None
    } else if status_expired(threatq) {
        // DEVIATION: upstream compares the `status` object with the string 'Expired' (never
        // true, §9.1); the integration's README says an Expired IOC expires, so we match
        // `status.name` (or a plain-string status) and expire it at `@timestamp`. Without an
        // `updated_at` there is no pipeline `@timestamp` yet; the agent would stamp "now", so
        // we use the current time.
        let at = match at_timestamp {
            Some(Value::String(s)) => parse_zoned(&s)?,
            _ => chrono::Utc::now(),
        };
        Some(at)
    } else {
        let updated_at = match threatq.get("updated_at") {
            None | Some(Value::Null) => {
                return Err(
                    "Cannot invoke \"java.lang.CharSequence.length()\" because \"text\" is null"
                        .to_owned(),
                );
            }
            Some(Value::String(s)) => parse_zoned(s)?,
            Some(other) => {
                return Err(format!(
                    "class {} cannot be cast to class java.lang.CharSequence",
                    ingest::java_type_name(other)
                ));
            }
        };
        // The script splits the text into amount + unit (`d`/`h`/`m`); our config validation
        // only admits such whole-number durations, so the typed duration is the same sum.
        let raw = exp.raw.as_str();
        let mut chars = raw.chars();
        let unit = chars.next_back();
        let amount = chars.as_str();
        let span = match unit {
            Some('d' | 'h' | 'm') => {
                // `Long.parseLong`: no `0x` form (which ES `convert` would accept).
                if ingest::parse_java_long(amount).is_none()
                    || amount.starts_with("0x")
                    || amount.starts_with("-0x")
                {
                    return Err(format!("For input string: \"{amount}\""));
                }
                chrono::Duration::from_std(exp.duration)
                    .map_err(|_| format!("long overflow adding [{raw}]"))?
            }
            _ => {
                invalid_unit = true;
                chrono::Duration::days(90)
            }
        };
        Some(
            updated_at
                .checked_add_signed(span)
                .ok_or_else(|| format!("long overflow adding [{raw}] to [{updated_at}]"))?,
        )
    };
    if invalid_unit {
        let _ = append(doc, "error.message", INVALID_DURATION.into(), true);
    }
    let Some(threatq) = tq_mut(doc) else {
        return Ok(());
    };
    if let Some(at) = computed {
        threatq.insert(
            "ioc_expired_at".to_owned(),
            Value::String(ingest::format_date(&at).into_string()),
        );
    }
    let expires = present_in(threatq, "expires_at").is_some();
    let expired = present_in(threatq, "expired_at").is_some();
    let reason = if expires && !expired {
        REASON_EXPIRES_AT
    } else if expired {
        REASON_EXPIRED_AT
    } else if status_expired(threatq) {
        // DEVIATION (continued): the status reason, unreachable upstream.
        REASON_STATUS
    } else {
        REASON_DEFAULT
    };
    threatq.insert(
        "ioc_expiration_reason".to_owned(),
        Value::String(reason.to_owned()),
    );
    Ok(())
}

fn present_in<'a>(m: &'a Doc, key: &str) -> Option<&'a Value> {
    m.get(key).filter(|v| !v.is_null())
}

/// §3.14: ECS fields keyed on the exact `threatq.type.name`.
fn indicator_type(doc: &mut Doc) -> Step {
    let name = match guard_name(doc, "type") {
        Ok(Some(Value::String(s))) => s.clone(),
        Ok(_) => return Ok(()),
        Err(m) => {
            // The first conditional processor of the type table throws.
            return Err(fail("set", "set_threat_indicator_email_address", m));
        }
    };
    let value = "threatq.indicator_value";
    let copy = |doc: &mut Doc, to: &str| {
        copy_from(doc, value, to).map_err(|e| failure("set", "set_indicator_value", e))
    };
    let set_type = |doc: &mut Doc, ty: &str| {
        set(doc, "threat.indicator.type", Value::String(ty.to_owned()))
            .map_err(|e| failure("set", "set_threat_indicator_type", e))
    };
    let related = |doc: &mut Doc, to: &str| -> Step {
        let text = render(get(doc, value));
        append(doc, to, Value::String(text), false)
            .map_err(|e| failure("append", "append_related", e))
    };
    match name.as_str() {
        "Email Address" => {
            copy(doc, "threat.indicator.email.address")?;
            set_type(doc, "email-addr")?;
        }
        "FQDN" => {
            copy(doc, "threat.indicator.url.domain")?;
            set_type(doc, "domain-name")?;
        }
        "IP Address" | "IPv6 Address" => {
            copy(doc, "threat.indicator.ip")?;
            set_type(
                doc,
                if name == "IP Address" {
                    "ipv4-addr"
                } else {
                    "ipv6-addr"
                },
            )?;
            related(doc, "related.ip")?;
        }
        "MD5" | "SHA-1" | "SHA-256" | "SHA-512" => {
            let field = match name.as_str() {
                "MD5" => "md5",
                "SHA-1" => "sha1",
                "SHA-256" => "sha256",
                _ => "sha512",
            };
            copy(doc, &format!("threat.indicator.file.hash.{field}"))?;
            set_type(doc, "file")?;
            related(doc, "related.hash")?;
        }
        "Filename" => {
            // §9.6: the literal `file.type: file` as well.
            copy(doc, "threat.indicator.file.name")?;
            set(doc, "threat.indicator.file.type", "file".into())
                .map_err(|e| failure("set", "set_threat_indicator_file_type", e))?;
            set_type(doc, "file")?;
        }
        "URL" => {
            url(doc);
            set_type(doc, "url")?;
        }
        "x509 Serial" => {
            // §9.7: no `threat.indicator.type`.
            copy(doc, "threat.indicator.x509.serial_number")?;
        }
        _ => {}
    }
    Ok(())
}

/// §3.14 URL: `uri_parts` (keep_original, remove_if_successful); on failure a silent fallback
/// to `url.full` (§9.8).
fn url(doc: &mut Doc) {
    let parsed = match get(doc, "threatq.indicator_value") {
        Some(Value::String(s)) => ingest::uri_parts(s).ok().map(|mut parts| {
            parts.insert("original".to_owned(), Value::String(s.clone()));
            parts
        }),
        _ => None,
    };
    match parsed {
        Some(parts) => {
            let _ = set(doc, "threat.indicator.url", Value::Object(parts));
            remove(doc, "threatq.indicator_value");
        }
        None => {
            // The handler sets `url.full` from the template `{{{threatq.indicator_value}}}`
            // (string form) with `ignore_empty_value`.
            let full = render(get(doc, "threatq.indicator_value"));
            if !full.is_empty() {
                let _ = set(doc, "threat.indicator.url.full", Value::String(full));
            }
        }
    }
}

/// §3.15: per-source conversions (only when `sources` is a list).
fn sources(doc: &mut Doc) {
    let Some(Value::Array(list)) = tq_mut(doc).and_then(|t| t.get_mut("sources")) else {
        return;
    };
    for elem in list.iter_mut().filter_map(Value::as_object_mut) {
        for key in SOURCE_IDS {
            elem_to_string(elem, key);
        }
        if let Some(v) = elem.get("source_score") {
            match convert(v, ConvertType::Long) {
                Ok(c) if !v.is_null() => {
                    elem.insert("source_score".to_owned(), c);
                }
                _ => {
                    elem.remove("source_score");
                }
            }
        }
        for key in SOURCE_DATES {
            elem_date(elem, key);
        }
    }
}

/// §3.16 (`script_to_extract_tlp_and_providers`).
fn tlp_and_providers(doc: &mut Doc) -> Step {
    let tag = "script_to_extract_tlp_and_providers";
    let Some(Value::Array(list)) = tq(doc).and_then(|t| t.get("sources")) else {
        return Ok(());
    };
    let mut providers = Vec::new();
    let mut tlps = Vec::new();
    for source in list {
        let m = match source {
            // §9.4: a null element cancels the whole step.
            Value::Null => return Ok(()),
            Value::Object(m) => m,
            other => {
                return Err(fail(
                    "script",
                    tag,
                    format!(
                        "dynamic method [{}, containsKey/1] not found",
                        ingest::java_type_name(other)
                    ),
                ));
            }
        };
        // §3.16, 1.33.0+: the provider is the source's `name`.
        if let Some(name) = present_in(m, "name") {
            providers.push(name.clone());
        }
        if let Some(Value::String(t)) = m.get("tlp_name")
            && ECS_TLPS.contains(&t.as_str())
        {
            tlps.push(Value::String(t.clone()));
        }
    }
    // §9.5: both writes dereference `ctx.threat.indicator`; without `threat` the script throws.
    let npe = || {
        fail(
            "script",
            tag,
            "Cannot invoke \"Object.getClass()\" because \"ctx.threat\" is null".to_owned(),
        )
    };
    if !tlps.is_empty() {
        let Some(Value::Object(indicator)) = get_mut(doc, "threat.indicator") else {
            return Err(npe());
        };
        let marking = indicator
            .entry("marking")
            .or_insert_with(|| Value::Object(Map::new()));
        if !marking.is_object() {
            *marking = Value::Object(Map::new());
        }
        if let Value::Object(mk) = marking {
            mk.insert("tlp".to_owned(), Value::Array(tlps));
        }
    }
    if !providers.is_empty() {
        let Some(Value::Object(indicator)) = get_mut(doc, "threat.indicator") else {
            return Err(npe());
        };
        indicator.insert("provider".to_owned(), Value::Array(providers));
    }
    Ok(())
}

/// §3.17: attribute names lower-cased and `' '` → `_` (no error handling: a bad element fails
/// the pipeline), then ids to string and dates parsed (only when `attributes` is a list).
fn attributes(doc: &mut Doc) -> Step {
    let Some(attrs) = tq_mut(doc)
        .and_then(|t| t.get_mut("attributes"))
        .filter(|v| !v.is_null())
    else {
        return Ok(());
    };
    for (tag, f) in [
        (
            "lowercase_attribute_name",
            ingest::java_lowercase as fn(&str) -> String,
        ),
        ("gsub_attribute_name", |s: &str| s.replace(' ', "_")),
    ] {
        // ES foreach walks a list, or the values of an object.
        let elems: Vec<&mut Value> = match attrs {
            Value::Array(list) => list.iter_mut().collect(),
            Value::Object(m) => m.values_mut().collect(),
            other => {
                return Err(fail(
                    "foreach",
                    tag,
                    format!(
                        "field [threatq.attributes] of type [{}] cannot be cast to [java.util.List]",
                        ingest::java_type_name(other)
                    ),
                ));
            }
        };
        for elem in elems {
            let name = match elem {
                Value::Object(m) => m.get_mut("name"),
                other => {
                    return Err(fail(
                        "foreach",
                        tag,
                        format!(
                            "cannot resolve [name] from object of type [{}] as part of path [_ingest._value.name]",
                            ingest::java_type_name(other)
                        ),
                    ));
                }
            };
            let Some(name) = name else {
                return Err(fail(
                    "foreach",
                    tag,
                    "field [name] not present as part of path [_ingest._value.name]".to_owned(),
                ));
            };
            if name.is_null() {
                return Err(fail(
                    "foreach",
                    tag,
                    "field [_ingest._value.name] is null, cannot process it.".to_owned(),
                ));
            }
            *name = ingest::map_strings(name, "_ingest._value.name", f)
                .map_err(|e| failure("foreach", tag, e))?;
        }
    }
    if let Value::Array(list) = attrs {
        for elem in list.iter_mut().filter_map(Value::as_object_mut) {
            for key in ATTRIBUTE_IDS {
                elem_to_string(elem, key);
            }
            for key in ATTRIBUTE_DATES {
                elem_date(elem, key);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn confidence_bands() {
        for (score, want) in [
            (json!(0), Some("Low")),
            (json!(4), Some("Low")),
            (json!(5), Some("Medium")),
            (json!(7), Some("Medium")),
            (json!(8), Some("High")),
            (json!(10), Some("High")),
            (json!(11), None),
            (json!(-1), None),
            (json!("9"), Some("High")),
        ] {
            let d = map_indicator(&json!({"score": score}).to_string(), &MapOptions::default())
                .doc
                .into_map();
            let got = d
                .get("threat")
                .and_then(|t| t.get("indicator"))
                .and_then(|i| i.get("confidence"))
                .and_then(Value::as_str);
            assert_eq!(got, want, "score {score}");
        }
    }

    #[test]
    fn status_expired_matches_object_and_string() {
        let obj = |v: Value| v.as_object().cloned().unwrap_or_default();
        assert!(status_expired(&obj(json!({"status": {"name": "Expired"}}))));
        assert!(status_expired(&obj(json!({"status": "Expired"}))));
        assert!(!status_expired(&obj(json!({"status": {"name": "Active"}}))));
        assert!(!status_expired(&obj(json!({"status": 2}))));
    }
}
