//! §9 Stage F: the indicator's attributes.

use super::*;

impl Run {
    /// §9: indicator attributes.
    pub(super) fn attributes(&mut self) -> Step {
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
}
