//! §13: security labels (TLP) and tags, with their techniques and platforms.

use super::*;

/// G42–G45: label dates, TLP extraction (§13), label pruning and the move to `tci`.
pub(super) fn security_labels(doc: &mut Doc, j: &mut Doc) -> Step {
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
pub(super) fn tags(doc: &mut Doc, j: &mut Doc) -> Step {
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
