//! §10 Stage G: the remaining top-level fields (with the confidence and type tables, §11–§12).

use super::*;

impl Run {
    /// §10 G1–G73 (with §11–§13).
    pub(super) fn remaining_fields(&mut self) -> Step {
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
        labels_and_tags::security_labels(doc, j)?;
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
        labels_and_tags::tags(doc, j)?;
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
