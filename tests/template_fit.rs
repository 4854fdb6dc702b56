//! Documents fit the integrations' index templates (issue 11, item 4).
//!
//! Every leaf value the mappers produce is checked against the type Elasticsearch would index it
//! as under the `ti_threatconnect.indicator` and `ti_threatq.threat` data streams: ECS 8.17 types
//! (`../shared/ecs/ecs-8.17.0-field-types.json`, or `$TI_ECS`) plus the packages' own field
//! definitions, recorded below as tables. The documents are the golden fixtures' inputs (harness
//! options, as in `golden_*.rs`) and a few thousand simulator indicators rendered exactly as the
//! simulators serve them (production options: `_conf` with 90d, the default tags).
//!
//! Acceptance follows Elasticsearch's defaults (`coerce: true`, `ignore_malformed: false`): a
//! value ES would coerce (a numeric string into `long`, a number into `keyword`, `"true"` into
//! `boolean`) is accepted and reported; a value ES would reject, or a field with no mapping and
//! no entry on the dynamic allow-list, fails the test. Misfits that Elastic's own pipeline
//! produces the same way are tolerated only when listed in a stream's `same_as_elastic`, and each
//! entry there must be seen in Elastic's expected documents, so the list cannot hide our own drift.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use common::{fixture_dir, read_fixture};
use serde_json::{Map, Value};
use ti_sidecar::config::IocExpiration;
use ti_sidecar::ingest::{EcsEvent, MapOptions};
use ti_sidecar::sim::page;
use ti_sidecar::sim::threatconnect::data as tc_sim;
use ti_sidecar::sim::threatq::data as tq_sim;
use ti_sidecar::source::{threatconnect, threatq};

// ------------------------------------------------------------------------------------------
// Elastic's field types beyond ECS
// ------------------------------------------------------------------------------------------

/// What both packages' `base-fields.yml` declare alike (the files are named with each table
/// below; only their `value`s differ, which this test does not check).
const BASE_FIELDS: &[(&str, &str)] = &[
    ("@timestamp", "date"),
    ("data_stream.dataset", "constant_keyword"),
    ("data_stream.namespace", "constant_keyword"),
    ("data_stream.type", "constant_keyword"),
    ("event.dataset", "constant_keyword"),
    ("event.module", "constant_keyword"),
];

/// `ti_threatconnect` (package 2.x), data stream `indicator`: names and types only, read from
/// elastic/integrations `packages/ti_threatconnect/data_stream/indicator/fields/base-fields.yml`
/// (commit 67c4317a64166f57932fa07bc901a6eb2eaf1cdb, its only version) and `.../fields/fields.yml`
/// (commit 18a5698514eaca137500e868a08da06f33586402, the newest stored version: it has
/// `tags.data.tactics` from 1.9.0; the older f29825de also declared
/// `labels.is_ioc_transform_source`, which this one no longer does). The data stream has no
/// `ecs.yml`: ECS fields come from the `ecs@mappings` component template since 1.1.0, so they
/// take their ECS types. The manifest (commit 05441c83) sets no `elasticsearch.dynamic*`.
const THREATCONNECT_FIELDS: &[(&str, &str)] = &[
    ("threat.feed.name", "constant_keyword"),
    ("threat_connect.indicator.active.locked", "boolean"),
    ("threat_connect.indicator.active.value", "boolean"),
    ("threat_connect.indicator.address", "keyword"),
    ("threat_connect.indicator.as_number", "keyword"),
    ("threat_connect.indicator.associated_artifacts", "flattened"),
    ("threat_connect.indicator.associated_cases", "flattened"),
    (
        "threat_connect.indicator.associated_groups.data.attributes.type",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_groups.data.attributes.value",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_groups.data.assignments.data.type",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_groups.data.assignments.data.user.id",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_groups.data.body",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_groups.data.created_by.first_name",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_groups.data.created_by.id",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_groups.data.created_by.last_name",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_groups.data.created_by.owner",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_groups.data.created_by.pseudonym",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_groups.data.created_by.user_name",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_groups.data.date_added",
        "date",
    ),
    (
        "threat_connect.indicator.associated_groups.data.document.date_added",
        "date",
    ),
    (
        "threat_connect.indicator.associated_groups.data.document.type",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_groups.data.down_vote_count",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_groups.data.due_date",
        "date",
    ),
    (
        "threat_connect.indicator.associated_groups.data.email_date",
        "date",
    ),
    (
        "threat_connect.indicator.associated_groups.data.escalation_date",
        "date",
    ),
    (
        "threat_connect.indicator.associated_groups.data.event_date",
        "date",
    ),
    (
        "threat_connect.indicator.associated_groups.data.external.date.added",
        "date",
    ),
    (
        "threat_connect.indicator.associated_groups.data.external.date.expires",
        "date",
    ),
    (
        "threat_connect.indicator.associated_groups.data.external.last_modified",
        "date",
    ),
    (
        "threat_connect.indicator.associated_groups.data.file.name",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_groups.data.file.size",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_groups.data.file.text",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_groups.data.file.type",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_groups.data.first_seen",
        "date",
    ),
    (
        "threat_connect.indicator.associated_groups.data.from",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_groups.data.generated_report",
        "boolean",
    ),
    (
        "threat_connect.indicator.associated_groups.data.header",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_groups.data.id",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_groups.data.last_modified",
        "date",
    ),
    (
        "threat_connect.indicator.associated_groups.data.last_seen",
        "date",
    ),
    (
        "threat_connect.indicator.associated_groups.data.legacy_link",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_groups.data.malware",
        "boolean",
    ),
    (
        "threat_connect.indicator.associated_groups.data.name",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_groups.data.owner.id",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_groups.data.owner.name",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_groups.data.password",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_groups.data.publish_date",
        "date",
    ),
    (
        "threat_connect.indicator.associated_groups.data.reminder_date",
        "date",
    ),
    (
        "threat_connect.indicator.associated_groups.data.score_breakdown",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_groups.data.score_includes_body",
        "boolean",
    ),
    (
        "threat_connect.indicator.associated_groups.data.status",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_groups.data.subject",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_groups.data.to",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_groups.data.type",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_groups.data.up_vote",
        "boolean",
    ),
    (
        "threat_connect.indicator.associated_groups.data.up_vote_count",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_groups.data.web_link",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_groups.data.xid",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.active.locked",
        "boolean",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.active.value",
        "boolean",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.address",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.as_number",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.block",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.confidence",
        "long",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.date_added",
        "date",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.description",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.dns_active",
        "boolean",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.external.date.added",
        "date",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.external.date.expires",
        "date",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.external.last_modified",
        "date",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.first_seen",
        "date",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.hashtag",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.host_name",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.id",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.ip",
        "ip",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.key_name",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.last_modified",
        "date",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.last_seen",
        "date",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.legacy_link",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.md5",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.mutex",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.owner.id",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.owner.name",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.private_flag",
        "boolean",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.rating",
        "double",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.sha1",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.sha256",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.size",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.subject",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.summary",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.text",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.type",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.user_agent_string",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.value.name",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.value.type",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.web_link",
        "keyword",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.whois_active",
        "boolean",
    ),
    (
        "threat_connect.indicator.attributes.data.created_by.first_name",
        "keyword",
    ),
    (
        "threat_connect.indicator.attributes.data.created_by.id",
        "keyword",
    ),
    (
        "threat_connect.indicator.attributes.data.created_by.last_name",
        "keyword",
    ),
    (
        "threat_connect.indicator.attributes.data.created_by.owner",
        "keyword",
    ),
    (
        "threat_connect.indicator.attributes.data.created_by.pseudonym",
        "keyword",
    ),
    (
        "threat_connect.indicator.attributes.data.created_by.user_name",
        "keyword",
    ),
    (
        "threat_connect.indicator.attributes.data.date_added",
        "date",
    ),
    (
        "threat_connect.indicator.attributes.data.default",
        "boolean",
    ),
    ("threat_connect.indicator.attributes.data.id", "keyword"),
    (
        "threat_connect.indicator.attributes.data.last_modified",
        "date",
    ),
    ("threat_connect.indicator.attributes.data.pinned", "boolean"),
    ("threat_connect.indicator.attributes.data.source", "keyword"),
    ("threat_connect.indicator.attributes.data.type", "keyword"),
    ("threat_connect.indicator.attributes.data.value", "keyword"),
    ("threat_connect.indicator.block", "keyword"),
    ("threat_connect.indicator.confidence", "long"),
    ("threat_connect.indicator.custom_associations", "flattened"),
    ("threat_connect.indicator.date_added", "date"),
    ("threat_connect.indicator.deleted_at", "date"),
    ("threat_connect.indicator.description", "keyword"),
    ("threat_connect.indicator.dns_active", "boolean"),
    ("threat_connect.indicator.dns_resolution", "flattened"),
    ("threat_connect.indicator.enrichment", "flattened"),
    ("threat_connect.indicator.expiration_duration", "keyword"),
    ("threat_connect.indicator.external.date.added", "date"),
    ("threat_connect.indicator.external.date.expires", "date"),
    ("threat_connect.indicator.external_last.modified", "date"),
    (
        "threat_connect.indicator.false_positive_reported_by_user",
        "boolean",
    ),
    ("threat_connect.indicator.false_positives", "long"),
    ("threat_connect.indicator.file_actions", "flattened"),
    ("threat_connect.indicator.file_occurrences", "flattened"),
    ("threat_connect.indicator.first_seen", "date"),
    (
        "threat_connect.indicator.generic_custom_indicator_values",
        "flattened",
    ),
    ("threat_connect.indicator.geo_location", "flattened"),
    ("threat_connect.indicator.hashtag", "keyword"),
    ("threat_connect.indicator.host_name", "keyword"),
    ("threat_connect.indicator.id", "keyword"),
    ("threat_connect.indicator.investigation_links", "flattened"),
    ("threat_connect.indicator.ip", "ip"),
    ("threat_connect.indicator.key_name", "keyword"),
    ("threat_connect.indicator.last_false_positive", "date"),
    ("threat_connect.indicator.last_modified", "date"),
    ("threat_connect.indicator.last_seen", "date"),
    ("threat_connect.indicator.legacy_link", "keyword"),
    ("threat_connect.indicator.md5", "keyword"),
    ("threat_connect.indicator.mutex", "keyword"),
    ("threat_connect.indicator.observations", "flattened"),
    ("threat_connect.indicator.owner.id", "keyword"),
    ("threat_connect.indicator.owner.name", "keyword"),
    ("threat_connect.indicator.private_flag", "boolean"),
    ("threat_connect.indicator.rating", "double"),
    (
        "threat_connect.indicator.security_labels.data.date_added",
        "date",
    ),
    (
        "threat_connect.indicator.security_labels.data.name",
        "keyword",
    ),
    (
        "threat_connect.indicator.security_labels.data.owner",
        "keyword",
    ),
    (
        "threat_connect.indicator.security_labels.data.source",
        "keyword",
    ),
    ("threat_connect.indicator.sha1", "keyword"),
    ("threat_connect.indicator.sha256", "keyword"),
    ("threat_connect.indicator.size", "keyword"),
    ("threat_connect.indicator.source", "keyword"),
    ("threat_connect.indicator.subject", "keyword"),
    ("threat_connect.indicator.summary", "keyword"),
    ("threat_connect.indicator.tags.data.last_used", "date"),
    ("threat_connect.indicator.tags.data.name", "keyword"),
    ("threat_connect.indicator.tags.data.owner", "keyword"),
    ("threat_connect.indicator.tags.data.platforms.count", "long"),
    (
        "threat_connect.indicator.tags.data.platforms.data",
        "keyword",
    ),
    ("threat_connect.indicator.tags.data.tactics", "keyword"),
    ("threat_connect.indicator.tags.data.technique.id", "keyword"),
    ("threat_connect.indicator.text", "keyword"),
    (
        "threat_connect.indicator.threat_assess.confidence",
        "double",
    ),
    ("threat_connect.indicator.threat_assess.rating", "double"),
    (
        "threat_connect.indicator.threat_assess.score.false_positive",
        "long",
    ),
    (
        "threat_connect.indicator.threat_assess.score.observed",
        "long",
    ),
    ("threat_connect.indicator.threat_assess.score.value", "long"),
    ("threat_connect.indicator.tracked_users", "flattened"),
    ("threat_connect.indicator.type", "keyword"),
    ("threat_connect.indicator.user_agent_string", "keyword"),
    ("threat_connect.indicator.value.name", "keyword"),
    ("threat_connect.indicator.value.type", "keyword"),
    ("threat_connect.indicator.web_link", "keyword"),
    ("threat_connect.indicator.who_is", "flattened"),
    ("threat_connect.indicator.whois_active", "boolean"),
];

/// `ti_threatq` (package 1.33+), data stream `threat`: names and types only, read from
/// elastic/integrations `packages/ti_threatq/data_stream/threat/fields/base-fields.yml` (commit
/// 58c7331e91b059a7ea028da1bd6803ed0959c3f7, the version with `threat.feed.*`) and
/// `.../fields/fields.yml` (commit 006480b9c7b1db51c41d878b5f048a03e8b543a7, the 1.32.0 rewrite
/// with `threatq.ioc_expired_at`; the older 9c26298c typed `threatq.attributes` as `flattened`).
/// The data stream's `ecs.yml` (same commit as base-fields) only names ECS fields
/// (`external: ecs`), so those take their ECS types. The manifest (commit 0c34e444) sets no
/// `elasticsearch.dynamic*`.
const THREATQ_FIELDS: &[(&str, &str)] = &[
    ("threat.feed.dashboard_id", "constant_keyword"),
    ("threat.feed.name", "constant_keyword"),
    ("threatq.adversaries.id", "keyword"),
    ("threatq.adversaries.name", "keyword"),
    ("threatq.attributes.attribute_id", "keyword"),
    ("threatq.attributes.created_at", "date"),
    ("threatq.attributes.id", "keyword"),
    ("threatq.attributes.indicator_id", "keyword"),
    ("threatq.attributes.name", "keyword"),
    ("threatq.attributes.sources.name", "keyword"),
    ("threatq.attributes.touched_at", "date"),
    ("threatq.attributes.updated_at", "date"),
    ("threatq.attributes.value", "keyword"),
    ("threatq.class", "keyword"),
    ("threatq.created_at", "date"),
    ("threatq.description", "keyword"),
    ("threatq.expired_at", "date"),
    ("threatq.expires_at", "date"),
    ("threatq.expires_calculated_at", "date"),
    ("threatq.generated_score", "long"),
    ("threatq.hash", "keyword"),
    ("threatq.id", "keyword"),
    ("threatq.indicator_id", "keyword"),
    ("threatq.indicator_value", "keyword"),
    ("threatq.ioc_expiration_reason", "keyword"),
    ("threatq.ioc_expired_at", "date"),
    ("threatq.ioc_expires_at", "date"),
    ("threatq.manual_score", "long"),
    ("threatq.published_at", "date"),
    ("threatq.related_adversary_count", "long"),
    ("threatq.related_asset_count", "long"),
    ("threatq.related_attachment_count", "long"),
    ("threatq.related_attack_pattern_count", "long"),
    ("threatq.related_campaign_count", "long"),
    ("threatq.related_course_of_action_count", "long"),
    ("threatq.related_event_count", "long"),
    ("threatq.related_exploit_target_count", "long"),
    ("threatq.related_identity_count", "long"),
    ("threatq.related_incident_count", "long"),
    ("threatq.related_indicator_count", "long"),
    ("threatq.related_infrastructure_count", "long"),
    ("threatq.related_intrusion_set_count", "long"),
    ("threatq.related_investigation_count", "long"),
    ("threatq.related_malware_count", "long"),
    ("threatq.related_note_count", "long"),
    ("threatq.related_report_count", "long"),
    ("threatq.related_signature_count", "long"),
    ("threatq.related_task_count", "long"),
    ("threatq.related_tool_count", "long"),
    ("threatq.related_ttp_count", "long"),
    ("threatq.related_vulnerability_count", "long"),
    ("threatq.score", "long"),
    ("threatq.sources.created_at", "date"),
    ("threatq.sources.creator_source_id", "keyword"),
    ("threatq.sources.creator_source_name", "keyword"),
    ("threatq.sources.creator_source_type", "keyword"),
    ("threatq.sources.id", "keyword"),
    ("threatq.sources.indicator_id", "keyword"),
    ("threatq.sources.indicator_status_id", "keyword"),
    ("threatq.sources.indicator_type_id", "keyword"),
    ("threatq.sources.name", "keyword"),
    ("threatq.sources.provider", "keyword"),
    ("threatq.sources.published_at", "date"),
    ("threatq.sources.reference_id", "keyword"),
    ("threatq.sources.source_expire_days", "keyword"),
    ("threatq.sources.source_id", "keyword"),
    ("threatq.sources.source_score", "long"),
    ("threatq.sources.source_type", "keyword"),
    ("threatq.sources.tlp_id", "keyword"),
    ("threatq.sources.tlp_name", "keyword"),
    ("threatq.sources.type", "keyword"),
    ("threatq.sources.updated_at", "date"),
    ("threatq.status.description", "keyword"),
    ("threatq.status.id", "keyword"),
    ("threatq.status.name", "keyword"),
    ("threatq.status_id", "keyword"),
    ("threatq.tags", "keyword"),
    ("threatq.touched_at", "date"),
    ("threatq.type.class", "keyword"),
    ("threatq.type.id", "keyword"),
    ("threatq.type.name", "keyword"),
    ("threatq.type_id", "keyword"),
    ("threatq.updated_at", "date"),
    ("threatq.uuid", "keyword"),
];

/// Fields with no type in either table that Elasticsearch maps dynamically, exactly as it does
/// for Elastic's own pipeline output (neither data stream sets `dynamic`, so the default dynamic
/// mapping applies: strings → `keyword`, integers → `long`). Elastic's pipeline-test inputs do
/// not carry these keys, so its expected documents cannot show them; the reason cites the
/// pipeline step (`../shared/spec/threatconnect-mapping.md`) that passes them through. An entry
/// ending in `.*` covers every path under it.
const THREATCONNECT_DYNAMIC: &[(&str, &str)] = &[
    (
        "threat_connect.indicator.associated_groups.data.attributes.createdBy.*",
        "a group attribute's `createdBy` (sent with fields=associatedGroups.attributes) is kept \
         as sent: step D48 removes only dateAdded/default/id/lastModified/pinned/source",
    ),
    (
        "threat_connect.indicator.associated_indicators.data.source",
        "an associated indicator's `source` is kept as sent (stage E renames and removes other \
         keys only); fields.yml declares `source` for the indicator but not under \
         associated_indicators.data",
    ),
];

/// Misfits that Elastic's pipeline produces the same way (checked below against Elastic's
/// expected documents): `(field path, why it does not fit)`. Listed in README.md ("Fields that do
/// not fit the templates, as in Elastic's pipeline").
const THREATCONNECT_SAME_AS_ELASTIC: &[(&str, &str)] = &[(
    "os.family",
    "every tag's `platforms.data` is appended to a top-level `os.family` (§13 step 5 of the \
     mapping spec); ECS defines `os.*` only nested (`host.os.family`, …) and the package declares no \
     `os`, so Elasticsearch maps it dynamically as keyword",
)];

/// ThreatQ: every produced field has a type, and nothing misfits.
const THREATQ_DYNAMIC: &[(&str, &str)] = &[];
const THREATQ_SAME_AS_ELASTIC: &[(&str, &str)] = &[];

/// One data stream: its package fields and the documented exceptions to them.
struct Stream {
    fields: &'static [(&'static str, &'static str)],
    dynamic: &'static [(&'static str, &'static str)],
    same_as_elastic: &'static [(&'static str, &'static str)],
}

const THREATCONNECT: Stream = Stream {
    fields: THREATCONNECT_FIELDS,
    dynamic: THREATCONNECT_DYNAMIC,
    same_as_elastic: THREATCONNECT_SAME_AS_ELASTIC,
};

const THREATQ: Stream = Stream {
    fields: THREATQ_FIELDS,
    dynamic: THREATQ_DYNAMIC,
    same_as_elastic: THREATQ_SAME_AS_ELASTIC,
};

// ------------------------------------------------------------------------------------------
// The template: path → type
// ------------------------------------------------------------------------------------------

/// How Elasticsearch indexes a field, reduced to what decides whether a value fits.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// `keyword`, `constant_keyword`, `wildcard`, `match_only_text`, `text`.
    Keyword,
    /// `long`, `integer`, `short`, `byte`, with their range.
    Integer {
        min: i64,
        max: i64,
    },
    /// `float`, `double`, `scaled_float`, `half_float`.
    Float,
    Date,
    Ip,
    Boolean,
    GeoPoint,
    /// `object`; with `object_type`, every sub-field takes that type (ECS `labels`).
    Object(Option<Box<FieldType>>),
    Nested,
    Flattened,
}

/// A field's type: its Elasticsearch name (for messages) and what that name means.
#[derive(Debug, Clone, PartialEq)]
struct FieldType {
    name: String,
    kind: Kind,
}

impl FieldType {
    fn parse(name: &str, object_type: Option<&str>) -> Self {
        let kind = match name {
            "keyword" | "constant_keyword" | "wildcard" | "match_only_text" | "text" => {
                Kind::Keyword
            }
            "long" => Kind::Integer {
                min: i64::MIN,
                max: i64::MAX,
            },
            "integer" => Kind::Integer {
                min: i32::MIN.into(),
                max: i32::MAX.into(),
            },
            "short" => Kind::Integer {
                min: i16::MIN.into(),
                max: i16::MAX.into(),
            },
            "byte" => Kind::Integer {
                min: i8::MIN.into(),
                max: i8::MAX.into(),
            },
            "float" | "double" | "scaled_float" | "half_float" => Kind::Float,
            "date" => Kind::Date,
            "ip" => Kind::Ip,
            "boolean" => Kind::Boolean,
            "geo_point" => Kind::GeoPoint,
            "object" => Kind::Object(object_type.map(|t| Box::new(FieldType::parse(t, None)))),
            "nested" => Kind::Nested,
            "flattened" => Kind::Flattened,
            other => panic!("field type {other:?} is not handled by this test"),
        };
        Self {
            name: name.to_owned(),
            kind,
        }
    }
}

/// The fields of one data stream: ECS plus the package's own.
struct Template {
    fields: HashMap<String, FieldType>,
    /// Every proper prefix of a field path: an object in the mapping.
    groups: HashSet<String>,
    /// Unmapped paths Elasticsearch maps dynamically, as for Elastic's own output.
    dynamic: &'static [(&'static str, &'static str)],
}

impl Template {
    fn new(ecs: &HashMap<String, FieldType>, stream: &Stream) -> Self {
        let mut fields = ecs.clone();
        for (path, ty) in BASE_FIELDS.iter().chain(stream.fields) {
            fields.insert((*path).to_owned(), FieldType::parse(ty, None));
        }
        let mut groups = HashSet::new();
        for path in fields.keys() {
            let mut rest = path.as_str();
            while let Some((head, _)) = rest.rsplit_once('.') {
                groups.insert(head.to_owned());
                rest = head;
            }
        }
        Self {
            fields,
            groups,
            dynamic: stream.dynamic,
        }
    }

    /// The type at `path`: its own, or the `object_type` of an enclosing `object`.
    fn lookup(&self, path: &str) -> Option<&FieldType> {
        if let Some(t) = self.fields.get(path) {
            return Some(t);
        }
        let mut rest = path;
        while let Some((head, _)) = rest.rsplit_once('.') {
            if let Some(FieldType {
                kind: Kind::Object(Some(inner)),
                ..
            }) = self.fields.get(head)
            {
                return Some(inner);
            }
            rest = head;
        }
        None
    }
}

/// ECS 8.17 field types from `ecs-8.17.0-field-types.json` (`{"fields": {path: {"type", …}}}`),
/// or None (skip) when the file is not there.
fn ecs_types() -> Option<HashMap<String, FieldType>> {
    let dir = std::env::var_os("TI_ECS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/ecs")));
    let file = dir.join("ecs-8.17.0-field-types.json");
    let Ok(text) = std::fs::read_to_string(&file) else {
        eprintln!(
            "skipping: ECS field types {} not found (set TI_ECS)",
            file.display()
        );
        return None;
    };
    let json: Value = serde_json::from_str(&text).expect("ECS field types are JSON");
    let fields = json["fields"].as_object().expect("`fields` object");
    Some(
        fields
            .iter()
            .map(|(path, def)| {
                let ty = def["type"].as_str().expect("every ECS field has a type");
                let object_type = def.get("object_type").and_then(Value::as_str);
                (path.clone(), FieldType::parse(ty, object_type))
            })
            .collect(),
    )
}

// ------------------------------------------------------------------------------------------
// Checking values
// ------------------------------------------------------------------------------------------

/// Whether a value fits its field type.
enum Verdict {
    Fits,
    /// Accepted by Elasticsearch's default coercion; reported, not failed.
    Coerced(&'static str),
    Misfit(&'static str),
}

/// An integer in `min..=max`, as a long-family field with `coerce: true` accepts it: a JSON
/// integer; a JSON float (truncated: coerced); a string holding either (coerced); `""` (indexed
/// as null: coerced).
fn check_integer(v: &Value, min: i64, max: i64) -> Verdict {
    let in_range = |f: f64| f.is_finite() && f.trunc() >= min as f64 && f.trunc() <= max as f64;
    match v {
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) if (min..=max).contains(&i) => Verdict::Fits,
            (Some(_), _) => Verdict::Misfit("integer out of range"),
            (None, _) if n.is_u64() => Verdict::Misfit("integer out of range"),
            (None, Some(f)) if in_range(f) => Verdict::Coerced("float truncated into an integer"),
            _ => Verdict::Misfit("number out of range"),
        },
        Value::String(s) if s.is_empty() => Verdict::Coerced("empty string indexed as null"),
        Value::String(s) => match (s.parse::<i64>(), s.parse::<f64>()) {
            (Ok(i), _) if (min..=max).contains(&i) => Verdict::Coerced("string holding an integer"),
            (Err(_), Ok(f)) if in_range(f) => Verdict::Coerced("string holding a number"),
            _ => Verdict::Misfit("string that is not a number in range"),
        },
        _ => Verdict::Misfit("not a number"),
    }
}

/// A finite number, or (coerced) a string holding one.
fn check_float(v: &Value) -> Verdict {
    match v {
        Value::Number(_) => Verdict::Fits,
        Value::String(s) if s.is_empty() => Verdict::Coerced("empty string indexed as null"),
        Value::String(s) if s.parse::<f64>().is_ok_and(f64::is_finite) => {
            Verdict::Coerced("string holding a number")
        }
        _ => Verdict::Misfit("not a finite number"),
    }
}

/// Elasticsearch's default date format, `strict_date_optional_time||epoch_millis`: an ISO-8601
/// `yyyy[-MM[-dd]]`, optionally followed by `THH[:mm[:ss[.f{1,9}]]]` and a zone (`Z`, `±HH`,
/// `±HHmm`, `±HH:mm`); or epoch milliseconds (a JSON number, or a string of digits).
fn check_date(v: &Value) -> Verdict {
    match v {
        Value::Number(n) if n.is_i64() || n.is_u64() => Verdict::Fits,
        Value::Number(_) => Verdict::Coerced("fractional epoch millis"),
        Value::String(s) if is_strict_date_optional_time(s) => Verdict::Fits,
        Value::String(s) if is_epoch_millis(s) => Verdict::Fits,
        Value::String(_) => Verdict::Misfit("not strict_date_optional_time or epoch_millis"),
        _ => Verdict::Misfit("not a date"),
    }
}

fn is_epoch_millis(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `s` has the shape `d`/`-`/`:` pattern `shape` (`9` = a digit, anything else literal).
fn has_shape(s: &str, shape: &str) -> bool {
    s.len() == shape.len()
        && s.bytes().zip(shape.bytes()).all(|(c, p)| match p {
            b'9' => c.is_ascii_digit(),
            _ => c == p,
        })
}

fn is_strict_date_optional_time(s: &str) -> bool {
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    // Missing month/day default to 01; chrono then checks the calendar.
    let full_date = if has_shape(date, "9999-99-99") {
        date.to_owned()
    } else if has_shape(date, "9999-99") {
        format!("{date}-01")
    } else if has_shape(date, "9999") {
        format!("{date}-01-01")
    } else {
        return false;
    };
    if NaiveDate::parse_from_str(&full_date, "%Y-%m-%d").is_err() {
        return false;
    }
    let Some(time) = time else {
        return true;
    };
    let (clock, zone) = match time.find(['Z', '+', '-']) {
        Some(i) => time.split_at(i),
        None => (time, ""),
    };
    let zone_ok = zone.is_empty()
        || zone == "Z"
        || ["+99", "+99:99", "+9999"]
            .iter()
            .any(|shape| has_shape(&zone.replacen('-', "+", 1), shape));
    let (hms, fraction) = match clock.split_once('.') {
        Some((hms, f)) => (hms, Some(f)),
        None => (clock, None),
    };
    let full_clock = if has_shape(hms, "99:99:99") {
        hms.to_owned()
    } else if has_shape(hms, "99:99") && fraction.is_none() {
        format!("{hms}:00")
    } else if has_shape(hms, "99") && fraction.is_none() {
        format!("{hms}:00:00")
    } else {
        return false;
    };
    let fraction_ok = fraction
        .is_none_or(|f| (1..=9).contains(&f.len()) && f.bytes().all(|b| b.is_ascii_digit()));
    zone_ok
        && fraction_ok
        && NaiveTime::parse_from_str(&full_clock, "%H:%M:%S").is_ok()
        && NaiveDateTime::parse_from_str(&format!("{full_date}T{full_clock}"), "%Y-%m-%dT%H:%M:%S")
            .is_ok()
}

fn check_keyword(v: &Value) -> Verdict {
    match v {
        Value::String(_) => Verdict::Fits,
        Value::Number(_) => Verdict::Coerced("number indexed as keyword"),
        Value::Bool(_) => Verdict::Coerced("boolean indexed as keyword"),
        _ => Verdict::Misfit("not a string"),
    }
}

fn check_boolean(v: &Value) -> Verdict {
    match v {
        Value::Bool(_) => Verdict::Fits,
        Value::String(s) if s == "true" || s == "false" => {
            Verdict::Coerced("string \"true\"/\"false\"")
        }
        Value::String(s) if s.is_empty() => Verdict::Coerced("empty string indexed as false"),
        _ => Verdict::Misfit("not a boolean"),
    }
}

fn check_geo_point(v: &Value) -> Verdict {
    let coord = |x: Option<&Value>| x.is_some_and(|c| check_float(c).fits());
    match v {
        Value::Object(m) if coord(m.get("lat")) && coord(m.get("lon")) => Verdict::Fits,
        Value::Array(a) if a.len() == 2 && a.iter().all(Value::is_number) => Verdict::Fits,
        // "lat,lon", a geohash or WKT: accepted as text; ES parses it at index time.
        Value::String(_) => Verdict::Coerced("geo_point as text"),
        _ => Verdict::Misfit("not a geo_point"),
    }
}

impl Verdict {
    fn fits(&self) -> bool {
        !matches!(self, Verdict::Misfit(_))
    }
}

/// One value that does not fit.
#[derive(Debug, Clone)]
struct Misfit {
    doc: String,
    path: String,
    value: String,
    expected: String,
    reason: String,
}

/// What a walk over documents found.
#[derive(Default)]
struct Findings {
    documents: usize,
    leaves: usize,
    misfits: Vec<Misfit>,
    /// (path, what was coerced) → count.
    coerced: BTreeMap<(String, &'static str), usize>,
    /// Allow-listed dynamic paths seen → count.
    dynamic: BTreeMap<String, usize>,
}

fn truncated(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl Template {
    /// Whether `path` is on the stream's dynamic allow-list.
    fn dynamic_allowed(&self, path: &str) -> bool {
        self.dynamic
            .iter()
            .any(|(p, _)| match p.strip_suffix(".*") {
                Some(prefix) => path
                    .strip_prefix(prefix)
                    .is_some_and(|r| r.starts_with('.')),
                None => path == *p,
            })
    }
}

impl Findings {
    fn document(&mut self, t: &Template, doc_label: &str, doc: &Map<String, Value>) {
        self.documents += 1;
        for (k, v) in doc {
            self.walk(t, doc_label, k, v);
        }
    }

    fn misfit(&mut self, doc: &str, path: &str, v: &Value, expected: &str, reason: &str) {
        self.misfits.push(Misfit {
            doc: doc.to_owned(),
            path: path.to_owned(),
            value: truncated(v),
            expected: expected.to_owned(),
            reason: reason.to_owned(),
        });
    }

    fn walk(&mut self, t: &Template, doc: &str, path: &str, v: &Value) {
        // `null` is not indexed; an empty array neither.
        if v.is_null() {
            return;
        }
        if let Some(ty) = t.lookup(path) {
            self.typed(t, doc, path, v, ty);
            return;
        }
        match v {
            Value::Array(items) => {
                for item in items {
                    self.walk(t, doc, path, item);
                }
            }
            Value::Object(m) => {
                for (k, child) in m {
                    self.walk(t, doc, &join(path, k), child);
                }
            }
            _ if t.groups.contains(path) => {
                self.leaves += 1;
                self.misfit(
                    doc,
                    path,
                    v,
                    "object",
                    "concrete value where the mapping has an object",
                );
            }
            _ if t.dynamic_allowed(path) => {
                self.leaves += 1;
                *self.dynamic.entry(path.to_owned()).or_default() += 1;
            }
            _ => {
                self.leaves += 1;
                self.misfit(
                    doc,
                    path,
                    v,
                    "(no mapping)",
                    "field has no type in ECS or the package",
                );
            }
        }
    }

    fn typed(&mut self, t: &Template, doc: &str, path: &str, v: &Value, ty: &FieldType) {
        let verdict = match (&ty.kind, v) {
            (Kind::GeoPoint, _) => check_geo_point(v),
            (_, Value::Array(items)) => {
                for item in items.iter().filter(|i| !i.is_null()) {
                    self.typed(t, doc, path, item, ty);
                }
                return;
            }
            (Kind::Flattened, Value::Object(_)) => Verdict::Fits,
            (Kind::Flattened, _) => Verdict::Misfit("flattened field needs an object"),
            (Kind::Object(_) | Kind::Nested, Value::Object(m)) => {
                // Declared sub-fields (or an object_type) are checked; otherwise the object ends here.
                if t.groups.contains(path) || matches!(ty.kind, Kind::Object(Some(_))) {
                    for (k, child) in m {
                        self.walk(t, doc, &join(path, k), child);
                    }
                } else {
                    self.leaves += 1;
                }
                return;
            }
            (Kind::Object(_) | Kind::Nested, _) => Verdict::Misfit("concrete value for an object"),
            (_, Value::Object(_)) => Verdict::Misfit("object for a concrete field"),
            (Kind::Keyword, _) => check_keyword(v),
            (Kind::Integer { min, max }, _) => check_integer(v, *min, *max),
            (Kind::Float, _) => check_float(v),
            (Kind::Date, _) => check_date(v),
            (Kind::Ip, Value::String(s)) if s.parse::<IpAddr>().is_ok() => Verdict::Fits,
            (Kind::Ip, _) => Verdict::Misfit("not an IP address"),
            (Kind::Boolean, _) => check_boolean(v),
        };
        self.leaves += 1;
        match verdict {
            Verdict::Fits => {}
            Verdict::Coerced(what) => {
                *self.coerced.entry((path.to_owned(), what)).or_default() += 1;
            }
            Verdict::Misfit(why) => self.misfit(doc, path, v, &ty.name, why),
        }
    }

    /// Prints what was coerced or mapped dynamically, for the reviewer.
    fn report(&self, what: &str) {
        eprintln!(
            "{what}: {} documents, {} leaf values, {} misfits (before the same-as-Elastic list)",
            self.documents,
            self.leaves,
            self.misfits.len()
        );
        for ((path, how), n) in &self.coerced {
            eprintln!("  coerced  {path}: {how} (×{n})");
        }
        for (path, n) in &self.dynamic {
            eprintln!("  dynamic  {path} (×{n})");
        }
    }
}

/// Every misfit, grouped by field and reason: the count and the first few documents and values.
fn format_misfits(misfits: &[&Misfit]) -> String {
    const EXAMPLES: usize = 3;
    let mut groups: BTreeMap<(&str, &str, &str), Vec<&Misfit>> = BTreeMap::new();
    for m in misfits {
        groups
            .entry((m.path.as_str(), m.expected.as_str(), m.reason.as_str()))
            .or_default()
            .push(m);
    }
    let mut out = String::new();
    for ((path, expected, reason), ms) in groups {
        out.push_str(&format!(
            "  {path} (expected {expected}: {reason}) in {} value(s):\n",
            ms.len()
        ));
        for m in ms.iter().take(EXAMPLES) {
            out.push_str(&format!("      {}: {}\n", m.doc, m.value));
        }
        if ms.len() > EXAMPLES {
            out.push_str(&format!("      … and {} more\n", ms.len() - EXAMPLES));
        }
    }
    out
}

// ------------------------------------------------------------------------------------------
// Documents
// ------------------------------------------------------------------------------------------

/// Fixed "now" of the simulator data, so every run checks the same documents.
fn sim_now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-03-01T12:00:00Z")
        .expect("fixed time")
        .with_timezone(&Utc)
}

const SIM_SEED: u64 = 11;
const SIM_INDICATORS: usize = 2_500;
const SIM_BASE_URL: &str = "http://127.0.0.1:8443";

/// Indicator `i` as the ThreatConnect simulator serves it when every `include_*` option is on
/// (`fields=associatedGroups,associatedGroups.attributes,associatedIndicators,attributes,
/// securityLabels,sightings,tags,threatAssess`): the same blocks, in the same order, written by
/// the same `sim::page` functions. The associated indicators are a fixed pick of others' base
/// objects (the simulator draws them from a private seed).
fn threatconnect_api_json(all: &[tc_sim::Indicator], i: usize) -> String {
    let ind = &all[i];
    let mut scalars = Map::new();
    tc_sim::threat_assess(ind, &mut scalars);
    let threat_assess = page::members(&scalars);
    let mut scalars = Map::new();
    tc_sim::sightings(ind, &mut scalars);
    let sightings = page::members(&scalars);
    let associated: Vec<Value> = (1..=i % 4)
        .map(|k| Value::Object(all[(i + 37 * k) % all.len()].base_json(SIM_BASE_URL)))
        .collect();
    let parts: [&[u8]; 8] = [
        &page::members(&ind.base_json(SIM_BASE_URL)),
        &page::member("tags", &tc_sim::tags(ind)),
        &page::member("securityLabels", &tc_sim::security_labels(ind)),
        &page::member("attributes", &tc_sim::attributes(ind)),
        &page::member(
            "associatedGroups",
            &tc_sim::associated_groups(ind, SIM_BASE_URL, true),
        ),
        &threat_assess,
        &sightings,
        &page::member("associatedIndicators", &tc_sim::collection(associated)),
    ];
    let mut out = Vec::new();
    page::write_object(&mut out, &parts);
    String::from_utf8(out).expect("the simulator writes UTF-8")
}

/// Indicator `ind` as the ThreatQ simulator serves it for the default
/// `fields=*,sources,attributes,attributes.name,attributes.value`: base keys, whole `sources`,
/// `attributes` trimmed to `name` and `value`.
fn threatq_api_json(ind: &tq_sim::Indicator) -> String {
    let attributes: Vec<Value> = ind
        .attributes()
        .into_iter()
        .map(|mut a| {
            a.retain(|k, _| k == "name" || k == "value");
            Value::Object(a)
        })
        .collect();
    let sources: Vec<Value> = ind.sources().into_iter().map(Value::Object).collect();
    let parts: [&[u8]; 3] = [
        &page::members(&ind.base_json()),
        &page::member("sources", &Value::Array(sources)),
        &page::member("attributes", &Value::Array(attributes)),
    ];
    let mut out = Vec::new();
    page::write_object(&mut out, &parts);
    String::from_utf8(out).expect("the simulator writes UTF-8")
}

/// The lines of a fixture input file (one JSON indicator per line).
fn fixture_lines(dir: &std::path::Path, name: &str) -> Vec<String> {
    read_fixture(dir, name)
        .split('\n')
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The `expected` documents of one of Elastic's pipeline-test files.
fn expected_documents(dir: &std::path::Path, name: &str) -> Vec<Map<String, Value>> {
    let v: Value = serde_json::from_str(&read_fixture(dir, name)).expect("expected file is JSON");
    v["expected"]
        .as_array()
        .expect("`expected` array")
        .iter()
        .map(|d| d.as_object().expect("document object").clone())
        .collect()
}

/// Fails with every misfit not on the stream's `same_as_elastic` list, and checks that each entry
/// of that list is a misfit in Elastic's own documents too.
fn assert_fit(ours: &Findings, elastic: &Findings, same: &[(&str, &str)]) {
    let same_as_elastic = |path: &str| same.iter().any(|(p, _)| *p == path);
    let unexpected: Vec<&Misfit> = ours
        .misfits
        .iter()
        .filter(|m| !same_as_elastic(&m.path))
        .collect();
    let elastic_paths: BTreeSet<&str> = elastic.misfits.iter().map(|m| m.path.as_str()).collect();
    let unjustified: Vec<&str> = same
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !elastic_paths.contains(p))
        .collect();
    let elastic_only: Vec<&Misfit> = elastic
        .misfits
        .iter()
        .filter(|m| !same_as_elastic(&m.path))
        .collect();
    if !elastic_only.is_empty() {
        eprintln!(
            "Elastic's expected documents also misfit (not on its same-as-Elastic list):\n{}",
            format_misfits(&elastic_only)
        );
    }
    assert!(
        unexpected.is_empty() && unjustified.is_empty(),
        "{} value(s) do not fit the template:\n{}\nsame-as-Elastic entries that Elastic's expected documents do not show: {unjustified:?}",
        unexpected.len(),
        format_misfits(&unexpected),
    );
}

// ------------------------------------------------------------------------------------------
// Tests
// ------------------------------------------------------------------------------------------

/// Where one platform's documents come from and how they are mapped.
struct Platform {
    /// The fixture directory under `../shared/fixtures`.
    fixtures: &'static str,
    stream: Stream,
    /// JSON pointer to the indicator id in a mapped document (named in failures).
    id_pointer: &'static str,
    /// Elastic's pipeline-test inputs, mapped with `harness_tags` and no `_conf`, as in
    /// `golden_*.rs`.
    inputs: &'static [&'static str],
    harness_tags: &'static [&'static str],
    /// Elastic's expected documents for those inputs.
    expected: &'static [&'static str],
    /// The integration's default tags plus `preserve_original_event`.
    production_tags: &'static [&'static str],
    map: fn(&str, &MapOptions) -> EcsEvent,
}

/// Maps the fixture inputs (harness options) and `api_objects` (production options: `(label,
/// raw JSON)`), checks them and Elastic's expected documents against the stream's template, and
/// fails with every misfit not shared by Elastic.
fn assert_platform_fits(
    p: &Platform,
    api_objects: impl FnOnce(&std::path::Path) -> Vec<(String, String)>,
) {
    let (Some(ecs), Some(dir)) = (ecs_types(), fixture_dir(p.fixtures)) else {
        return;
    };
    let t = Template::new(&ecs, &p.stream);
    let options = |tags: &[&str], expiration: Option<&str>| MapOptions {
        ioc_expiration: expiration.map(|d| IocExpiration::parse(d).expect("duration parses")),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
    };
    let label = |source: String, doc: &Map<String, Value>| {
        let id = Value::Object(doc.clone())
            .pointer(p.id_pointer)
            .map_or_else(|| "?".to_owned(), |v| v.to_string());
        format!("{source} (id {id})")
    };
    let mut ours = Findings::default();
    let harness = options(p.harness_tags, None);
    for name in p.inputs {
        for (n, line) in fixture_lines(&dir, name).iter().enumerate() {
            let doc = (p.map)(line, &harness).doc.into_map();
            ours.document(&t, &label(format!("{name} #{n}"), &doc), &doc);
        }
    }
    let production = options(p.production_tags, Some("90d"));
    for (source, raw) in api_objects(&dir) {
        let doc = (p.map)(&raw, &production).doc.into_map();
        ours.document(&t, &label(source, &doc), &doc);
    }
    let mut elastic = Findings::default();
    for name in p.expected {
        for (n, doc) in expected_documents(&dir, name).iter().enumerate() {
            elastic.document(&t, &label(format!("{name} #{n}"), doc), doc);
        }
    }
    ours.report(&format!("{} (ours)", p.fixtures));
    elastic.report(&format!("{} (Elastic's expected documents)", p.fixtures));
    assert!(ours.documents > SIM_INDICATORS && ours.leaves > 100_000);
    assert_fit(&ours, &elastic, p.stream.same_as_elastic);
}

#[test]
fn threatconnect_documents_fit_the_template() {
    let platform = Platform {
        fixtures: "threatconnect",
        stream: THREATCONNECT,
        id_pointer: "/threat_connect/indicator/id",
        inputs: &[
            "test-indicator.log",
            "test-with-associated-groups-and-attributes.log",
        ],
        harness_tags: &["preserve_original_event"],
        expected: &[
            "test-indicator.log-expected.2x-derived.json",
            "test-with-associated-groups-and-attributes.log-expected.json",
        ],
        production_tags: &[
            "forwarded",
            "threatconnect-indicator",
            "preserve_original_event",
        ],
        map: threatconnect::ecs::map_indicator,
    };
    assert_platform_fits(&platform, |dir| {
        // The 2.1.1 precision test's API objects (ids above 2^53), as sent.
        let name = "large-id-precision-response.json";
        let response: Value = serde_json::from_str(&read_fixture(dir, name)).expect("JSON");
        let large_ids = response["data"].as_array().expect("data").iter();
        let mut objects: Vec<(String, String)> = large_ids
            .enumerate()
            .map(|(n, item)| (format!("{name} #{n}"), item.to_string()))
            .collect();
        let indicators: Vec<tc_sim::Indicator> = tc_sim::generate(
            SIM_INDICATORS,
            SIM_SEED,
            9_007_199_254_740_993,
            40,
            sim_now(),
        )
        .into_iter()
        .enumerate()
        // Every tenth indicator with realistic-size blocks (`--rich-context`).
        .map(|(i, ind)| ind.with_rich_context(i % 10 == 0))
        .collect();
        objects.extend((0..indicators.len()).map(|i| {
            (
                format!("simulator #{i}"),
                threatconnect_api_json(&indicators, i),
            )
        }));
        objects
    });
}

#[test]
fn threatq_documents_fit_the_template() {
    let platform = Platform {
        fixtures: "threatq",
        stream: THREATQ,
        id_pointer: "/threatq/id",
        inputs: &[
            "test-threatq-sample-ndjson.log",
            "test-threatq-no-preserve-ndjson.log",
        ],
        harness_tags: &[
            "preserve_original_event",
            "preserve_duplicate_custom_fields",
        ],
        expected: &[
            "test-threatq-sample-ndjson.log-expected.current-derived.json",
            "test-threatq-no-preserve-ndjson.log-expected.current-derived.json",
        ],
        production_tags: &["forwarded", "threatq-threat", "preserve_original_event"],
        map: threatq::ecs::map_indicator,
    };
    assert_platform_fits(&platform, |_| {
        tq_sim::generate(SIM_INDICATORS, SIM_SEED, 9_007_199_254_740_993, sim_now())
            .into_iter()
            .enumerate()
            .map(|(i, ind)| {
                let ind = ind.with_rich_context(i % 10 == 0);
                (format!("simulator #{i}"), threatq_api_json(&ind))
            })
            .collect()
    });
}

#[test]
fn date_format_is_strict_date_optional_time_or_epoch_millis() {
    for ok in [
        "2023-12-01T08:26:48.000Z",
        "2023-12-01T08:26:48Z",
        "2023-12-01T08:26:48.123456789+01:00",
        "2023-12-01T08:26:48+0100",
        "2023-12-01T08:26",
        "2023-12-01",
        "2023-12",
        "2023",
        "1701419208000",
    ] {
        assert!(check_date(&Value::from(ok)).fits(), "{ok}");
    }
    for bad in [
        "2023-12-01 08:26:48",
        "2023-13-01",
        "2023-02-30T00:00:00Z",
        "2023-12-01T25:00:00Z",
        "2023-12-01T08:26:48.1234567890Z",
        "01/12/2023",
        "",
    ] {
        assert!(!check_date(&Value::from(bad)).fits(), "{bad}");
    }
    assert!(check_date(&Value::from(1_701_419_208_000_i64)).fits());
}

#[test]
fn numbers_follow_default_coercion() {
    let long = |v: Value| check_integer(&v, i64::MIN, i64::MAX);
    assert!(matches!(long(Value::from(5)), Verdict::Fits));
    assert!(matches!(long(Value::from("5")), Verdict::Coerced(_)));
    assert!(matches!(long(Value::from(2.5)), Verdict::Coerced(_)));
    assert!(matches!(long(Value::from(u64::MAX)), Verdict::Misfit(_)));
    assert!(matches!(long(Value::from("high")), Verdict::Misfit(_)));
    assert!(matches!(long(Value::from(true)), Verdict::Misfit(_)));
    assert!(matches!(
        check_integer(&Value::from(40_000), i16::MIN.into(), i16::MAX.into()),
        Verdict::Misfit(_)
    ));
    assert!(matches!(
        check_float(&Value::from("1.5")),
        Verdict::Coerced(_)
    ));
    assert!(matches!(
        check_float(&Value::from("NaN")),
        Verdict::Misfit(_)
    ));
    assert!(matches!(
        check_keyword(&Value::from(3)),
        Verdict::Coerced(_)
    ));
    assert!(matches!(
        check_boolean(&Value::from("yes")),
        Verdict::Misfit(_)
    ));
}

#[test]
fn walker_finds_each_kind_of_misfit() {
    let ecs: HashMap<String, FieldType> = [
        ("threat.indicator.ip", "ip"),
        ("threat.indicator.confidence", "keyword"),
        ("threat.indicator.first_seen", "date"),
        ("labels", "object"),
    ]
    .into_iter()
    .map(|(p, t)| (p.to_owned(), FieldType::parse(t, None)))
    .chain([(
        "labels".to_owned(),
        FieldType::parse("object", Some("keyword")),
    )])
    .collect();
    let t = Template::new(&ecs, &THREATCONNECT);
    let doc = serde_json::json!({
        "threat": {"indicator": {
            "ip": ["1.2.3.4", "not-an-ip", null],
            "confidence": {"level": "High"},
            "first_seen": "2023-12-01 08:26:48",
        }},
        "labels": {"a": "x", "b": 1},
        "threat_connect": {"indicator": {
            "owner": "Example Org",
            "rating": "3.5",
            "geo_location": {"anything": [1, "x"]},
            "associated_groups": {"data": [{"attributes": [{"createdBy": {"id": 3}}]}]},
        }},
        "unmapped": true,
    });
    let mut f = Findings::default();
    f.document(&t, "doc", doc.as_object().expect("object"));
    let got: BTreeSet<(&str, &str)> = f
        .misfits
        .iter()
        .map(|m| (m.path.as_str(), m.expected.as_str()))
        .collect();
    let want: BTreeSet<(&str, &str)> = [
        ("threat.indicator.ip", "ip"),
        ("threat.indicator.confidence", "keyword"),
        ("threat.indicator.first_seen", "date"),
        ("threat_connect.indicator.owner", "object"),
        ("unmapped", "(no mapping)"),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want, "{:#?}", f.misfits);
    assert_eq!(f.misfits.len(), 5);
    // labels.a fits (object_type keyword), labels.b is coerced; rating is a numeric string.
    assert!(
        f.coerced
            .contains_key(&("labels.b".to_owned(), "number indexed as keyword"))
    );
    assert!(f.coerced.contains_key(&(
        "threat_connect.indicator.rating".to_owned(),
        "string holding a number"
    )));
    assert_eq!(
        f.dynamic
            .get("threat_connect.indicator.associated_groups.data.attributes.createdBy.id"),
        Some(&1)
    );
}
