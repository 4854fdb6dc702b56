//! §6 Stage C: the indicator's scalar fields (top half).

use super::*;

impl Run {
    /// §6 C1–C11.
    pub(super) fn scalar_fields(&mut self) -> Step {
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
}
