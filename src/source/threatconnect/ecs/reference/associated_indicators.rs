//! §8 Stage E: associated indicators.

use super::*;

impl Run {
    /// §8 E1–E27: associated indicators.
    pub(super) fn associated_indicators(&mut self) -> Step {
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
}
