//! STUB (replaced by the ecs branch).
use crate::ingest::EcsEvent;
/// Pipeline id.
pub const PIPELINE: &str = "logs-ti_threatconnect.indicator-2.3.0";
/// Options.
#[derive(Debug, Clone, Default)]
pub struct MapOptions {
    /// exp.
    pub ioc_expiration: Option<crate::config::IocExpiration>,
    /// tags.
    pub tags: Vec<String>,
}
/// Map.
pub fn map_indicator(raw: &str, opts: &MapOptions) -> EcsEvent {
    let mut doc = serde_json::Map::new();
    doc.insert("event".into(), serde_json::json!({"original": raw}));
    doc.insert("tags".into(), opts.tags.clone().into());
    EcsEvent { id: None, timestamp: None, doc }
}
