//! STUB (replaced by the ecs branch).
/// One mapped ECS document.
#[derive(Debug, Clone, PartialEq)]
pub struct EcsEvent {
    /// `_id`.
    pub id: Option<String>,
    /// `@timestamp`.
    pub timestamp: Option<chrono::DateTime<chrono::Utc>>,
    /// `_source`.
    pub doc: serde_json::Map<String, serde_json::Value>,
}
