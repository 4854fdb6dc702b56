//! STUB (replaced by the threatq ecs branch).
use crate::ingest::EcsEvent;
pub use crate::source::threatconnect::ecs::MapOptions;
/// Map.
pub fn map_indicator(raw: &str, opts: &MapOptions) -> EcsEvent {
    let mut doc = serde_json::Map::new();
    doc.insert("event".into(), serde_json::json!({"original": raw}));
    doc.insert("tags".into(), opts.tags.clone().into());
    EcsEvent {
        id: None,
        timestamp: None,
        doc,
    }
}
