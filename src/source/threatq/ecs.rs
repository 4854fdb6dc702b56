//! ThreatQ indicator → ECS, exactly as Elastic's `ti_threatq` ingest pipeline (package 1.33+,
//! data stream `ti_threatq.threat`) stores it.
//!
//! Users compare our documents with the ones the Elastic integration produces, and the
//! latest-IOC transform relies on `threatq.ioc_expired_at`. Two engines produce the same
//! document:
//!
//! * [`reference`](mod@reference) replays the pipeline processor by processor on a JSON DOM with dotted paths.
//!   It is the specification in code and handles every input, including errors and quirks.
//! * [`fast`] decodes the common shapes of a ThreatQ object in one pass, straight into the
//!   output document, and gives up (`None`) on anything it does not model.
//!
//! [`map_indicator`] tries the fast path and falls back to the reference engine; differential
//! property tests (`differential`) hold the two to byte-identical output. Section numbers
//! (`§3.14`, `§4`, …) refer to `shared/spec/threatq-mapping.md`.

pub(crate) mod fast;
pub mod reference;

#[cfg(test)]
mod differential;

use crate::ingest::EcsEvent;
pub use crate::ingest::MapOptions;

/// The ES pipeline id reproduced here; it appears in every recorded error text.
pub const PIPELINE: &str = "logs-ti_threatq.threat-1.41.1";

/// The tag that keeps the original text (added on every error, §3.25).
const PRESERVE: &str = "preserve_original_event";
/// The tag that keeps `threatq.score`/`description`/`updated_at` and the sources' copies (§3.21).
const PRESERVE_CUSTOM: &str = "preserve_duplicate_custom_fields";

/// `threatq.ioc_expiration_reason` values (§4, exact strings).
const REASON_EXPIRES_AT: &str = "Expiration set by ThreatQ from expires_at field";
const REASON_EXPIRED_AT: &str = "Expiration set by ThreatQ from expired_at field";
const REASON_STATUS: &str = "Expiration set by Elastic when threatq.status is 'Expired'";
const REASON_DEFAULT: &str =
    "Expiration set by Elastic from the integration's parameter `IOC Expiration Duration`";
const INVALID_DURATION: &str = "invalid ioc_expiration_duration: using default 90 days";

/// §3.6: top-level dates, in pipeline order (`updated_at` first, then `@timestamp`, §3.7).
const DATES: [(&str, &str); 7] = [
    ("updated_at", "date_updated_at"),
    ("created_at", "date_created_at"),
    ("expired_at", "date_expired_at"),
    ("expires_at", "date_expires_at"),
    ("expires_calculated_at", "date_expires_calculated_at"),
    ("published_at", "date_published_at"),
    ("touched_at", "date_touched_at"),
];

/// §3.18: relationship counters converted to long.
const COUNTERS: [(&str, &str); 22] = [
    (
        "related_adversary_count",
        "convert_related_adversary_count_to_long",
    ),
    ("related_asset_count", "convert_related_asset_count_to_long"),
    (
        "related_attachment_count",
        "convert_related_attachment_count_to_long",
    ),
    (
        "related_attack_pattern_count",
        "convert_related_attack_pattern_count_to_long",
    ),
    (
        "related_campaign_count",
        "convert_related_campaign_count_to_long",
    ),
    (
        "related_course_of_action_count",
        "convert_related_course_of_action_count_to_long",
    ),
    ("related_event_count", "convert_related_event_count_to_long"),
    (
        "related_exploit_target_count",
        "convert_related_exploit_target_count_to_long",
    ),
    (
        "related_identity_count",
        "convert_related_identity_count_to_long",
    ),
    (
        "related_incident_count",
        "convert_related_incident_count_to_long",
    ),
    (
        "related_indicator_count",
        "convert_related_indicator_count_to_long",
    ),
    (
        "related_infrastructure_count",
        "convert_related_infrastructure_count_to_long",
    ),
    (
        "related_intrusion_set_count",
        "convert_related_intrusion_set_count_to_long",
    ),
    (
        "related_investigation_count",
        "convert_related_investigation_count_to_long",
    ),
    (
        "related_malware_count",
        "convert_related_malware_count_to_long",
    ),
    ("related_note_count", "convert_related_note_count_to_long"),
    (
        "related_report_count",
        "convert_related_report_count_to_long",
    ),
    (
        "related_signature_count",
        "convert_related_signature_count_to_long",
    ),
    ("related_task_count", "convert_related_task_count_to_long"),
    ("related_tool_count", "convert_related_tool_count_to_long"),
    ("related_ttp_count", "convert_related_ttp_count_to_long"),
    (
        "related_vulnerability_count",
        "convert_related_vulnerability_count_to_long",
    ),
];

/// §3.15: the keys of each `sources[]` element converted to string, and its dates.
const SOURCE_IDS: [&str; 8] = [
    "indicator_type_id",
    "indicator_status_id",
    "reference_id",
    "creator_source_id",
    "id",
    "indicator_id",
    "source_id",
    "tlp_id",
];
const SOURCE_DATES: [&str; 3] = ["created_at", "published_at", "updated_at"];

/// §3.17: the keys of each `attributes[]` element converted to string, and its dates.
const ATTRIBUTE_IDS: [&str; 3] = ["attribute_id", "id", "indicator_id"];
const ATTRIBUTE_DATES: [&str; 3] = ["created_at", "updated_at", "touched_at"];

/// §3.16: the only TLP names the upstream script accepts.
const ECS_TLPS: [&str; 6] = ["WHITE", "GREEN", "AMBER", "RED", "CLEAR", "AMBER+STRICT"];

/// Maps one raw ThreatQ indicator (one element of the API's `data` array, as JSON text) to the
/// document Elastic's pipeline would store. Never panics; malformed input yields a document
/// with `error.message`, like the pipeline. The pipeline sets no `_id` (§5), so `id` is `None`.
pub fn map_indicator(raw: &str, opts: &MapOptions) -> EcsEvent {
    fast::map_indicator(raw, opts).unwrap_or_else(|| reference::map_indicator(raw, opts))
}

/// Whether [`map_indicator`] maps `raw` on the fast path (for tests and benchmarks: the common
/// shapes must not silently fall back to the reference engine).
#[doc(hidden)]
pub fn takes_fast_path(raw: &str, opts: &MapOptions) -> bool {
    fast::map_indicator(raw, opts).is_some()
}

/// Realistic strings and ThreatQ key names for the arbitrary-JSON property tests.
#[cfg(test)]
pub(crate) fn arb_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
    crate::ingest::arb_json(
        &[
            "2020-11-15 00:00:02",
            "2020-11-15T00:00:02Z",
            "Expired",
            "IP Address",
            "URL",
            "Filename",
            "SHA-256",
            "FQDN",
            "x509 Serial",
            "http://u:p@h.example:80/a.b?q#f",
            "89.160.20.156:8080/maf.html",
            "[::1]",
            "WHITE",
            "AMBER+STRICT",
            "4",
            "",
        ],
        &[
            "type",
            "name",
            "status",
            "sources",
            "attributes",
            "adversaries",
            "updated_at",
            "created_at",
            "expires_at",
            "expired_at",
            "value",
            "indicator_value",
            "score",
            "id",
            "indicator_id",
            "hash",
            "description",
            "tlp_name",
            "source_score",
            "related_note_count",
            "ioc_expired_at",
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> MapOptions {
        MapOptions {
            ioc_expiration: crate::config::IocExpiration::parse("90d").ok(),
            tags: vec!["forwarded".to_owned()],
        }
    }

    crate::ingest::never_panics_proptests! {
        map: map_indicator,
        json: arb_json(),
        opts: opts(),
        string_opts: opts(),
    }
}
