//! §7 Stage D: associated groups.

use super::*;

impl Run {
    /// §7 D1–D48: associated groups.
    pub(super) fn associated_groups(&mut self) -> Step {
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
                elem_remove(a, GROUP_ATTRIBUTE_DROPPED_KEYS);
            }
        }
        Ok(())
    }
}
