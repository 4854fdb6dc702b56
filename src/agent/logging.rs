//! Per-unit log levels (spec §2.2, §5.5): events inside a span carrying `unit.id` are filtered by
//! that unit's `UnitExpected.log_level`, which can change at any time; other events use the
//! process level. The Agent filters again on its side by the same rule.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Filter};
use tracing_subscriber::registry::LookupSpan;

use crate::proto::UnitLogLevel;

/// The level a `UnitLogLevel` maps to.
pub(crate) fn level_filter(level: UnitLogLevel) -> LevelFilter {
    match level {
        UnitLogLevel::Error => LevelFilter::ERROR,
        UnitLogLevel::Warn => LevelFilter::WARN,
        UnitLogLevel::Info => LevelFilter::INFO,
        UnitLogLevel::Debug => LevelFilter::DEBUG,
        UnitLogLevel::Trace => LevelFilter::TRACE,
    }
}

/// The live table of unit levels, shared by the unit manager (writer) and the log filter.
#[derive(Debug, Clone)]
pub struct UnitLevels {
    inner: Arc<RwLock<HashMap<String, LevelFilter>>>,
    default: LevelFilter,
}

impl UnitLevels {
    /// A table whose events outside any unit use `default`.
    pub fn new(default: LevelFilter) -> Self {
        Self {
            inner: Arc::default(),
            default,
        }
    }

    /// Sets (or changes) a unit's level.
    pub fn set(&self, unit_id: &str, level: UnitLogLevel) {
        if let Ok(mut map) = self.inner.write() {
            map.insert(unit_id.to_owned(), level_filter(level));
        }
    }

    /// Forgets a removed unit.
    pub fn remove(&self, unit_id: &str) {
        if let Ok(mut map) = self.inner.write() {
            map.remove(unit_id);
        }
    }

    /// The level that applies to `unit_id` (`None`: outside any unit).
    pub fn level(&self, unit_id: Option<&str>) -> LevelFilter {
        unit_id
            .and_then(|id| self.inner.read().ok().and_then(|m| m.get(id).copied()))
            .unwrap_or(self.default)
    }

    /// The log filter that applies this table.
    pub fn filter(&self) -> UnitLevelFilter {
        UnitLevelFilter {
            levels: self.clone(),
        }
    }
}

/// A span's unit, recorded when the span is created.
struct SpanUnit(String);

/// Visitor that finds a `unit.id` field.
struct UnitIdVisitor(Option<String>);

impl tracing::field::Visit for UnitIdVisitor {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "unit.id" {
            self.0 = Some(value.to_owned());
        }
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "unit.id" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

/// A per-layer filter: spans always pass (they carry the ids), events pass by their unit's level.
#[derive(Debug, Clone)]
pub struct UnitLevelFilter {
    levels: UnitLevels,
}

impl<S> Filter<S> for UnitLevelFilter
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn enabled(&self, meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        if meta.is_span() {
            return true;
        }
        let mut unit = None;
        if let Some(scope) = cx.lookup_current().map(|s| s.scope()) {
            for span in scope {
                if let Some(SpanUnit(id)) = span.extensions().get::<SpanUnit>() {
                    unit = Some(id.clone());
                    break;
                }
            }
        }
        *meta.level() <= self.levels.level(unit.as_deref())
    }

    fn callsite_enabled(&self, _meta: &'static Metadata<'static>) -> Interest {
        // Levels change at run time: decide per event.
        Interest::sometimes()
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::TRACE)
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut visitor = UnitIdVisitor(None);
        attrs.record(&mut visitor);
        if let (Some(unit), Some(span)) = (visitor.0, ctx.span(id)) {
            span.extensions_mut().insert(SpanUnit(unit));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_level_overrides_default_and_changes_live() {
        let levels = UnitLevels::new(LevelFilter::INFO);
        assert_eq!(levels.level(None), LevelFilter::INFO);
        assert_eq!(levels.level(Some("u")), LevelFilter::INFO);
        levels.set("u", UnitLogLevel::Debug);
        assert_eq!(levels.level(Some("u")), LevelFilter::DEBUG);
        levels.set("u", UnitLogLevel::Error);
        assert_eq!(levels.level(Some("u")), LevelFilter::ERROR);
        levels.remove("u");
        assert_eq!(levels.level(Some("u")), LevelFilter::INFO);
    }
}
