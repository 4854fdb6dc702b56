//! Per-unit log levels (spec §2.2, §5.5): events inside a span carrying `unit.id` are filtered by
//! that unit's `UnitExpected.log_level`, which can change at any time; other events use the
//! process level. The Agent filters again on its side by the same rule.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// The most verbose level in force anywhere (the default's or a unit's), as
    /// [`verbosity`] numbers it: an event more verbose than that is dropped without looking up
    /// its unit. The HTTP/2 and gRPC libraries emit trace events for every frame, and looking
    /// up each one's unit (a walk of its span scope and a read of the table) was 1.5% of an
    /// agent-mode backfill's samples.
    most_verbose: Arc<AtomicUsize>,
}

/// `level` as a number that grows with verbosity (`OFF` 0 … `TRACE` 5).
fn verbosity(level: LevelFilter) -> usize {
    match level.into_level() {
        None => 0,
        Some(tracing::Level::ERROR) => 1,
        Some(tracing::Level::WARN) => 2,
        Some(tracing::Level::INFO) => 3,
        Some(tracing::Level::DEBUG) => 4,
        Some(tracing::Level::TRACE) => 5,
    }
}

impl UnitLevels {
    /// A table whose events outside any unit use `default`.
    pub fn new(default: LevelFilter) -> Self {
        Self {
            inner: Arc::default(),
            default,
            most_verbose: Arc::new(AtomicUsize::new(verbosity(default))),
        }
    }

    /// Sets (or changes) a unit's level.
    pub fn set(&self, unit_id: &str, level: UnitLogLevel) {
        if let Ok(mut map) = self.inner.write() {
            map.insert(unit_id.to_owned(), level_filter(level));
            self.note_most_verbose(&map);
        }
    }

    /// Forgets a removed unit.
    pub fn remove(&self, unit_id: &str) {
        if let Ok(mut map) = self.inner.write() {
            map.remove(unit_id);
            self.note_most_verbose(&map);
        }
    }

    /// Recomputes [`UnitLevels::most_verbose`] (under the table's write lock).
    fn note_most_verbose(&self, map: &HashMap<String, LevelFilter>) {
        let most = map
            .values()
            .map(|l| verbosity(*l))
            .fold(verbosity(self.default), usize::max);
        self.most_verbose.store(most, Ordering::Release);
    }

    /// Whether an event at `level` may pass for some unit (or outside any).
    fn may_pass(&self, level: tracing::Level) -> bool {
        verbosity(LevelFilter::from_level(level)) <= self.most_verbose.load(Ordering::Acquire)
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
        if !self.levels.may_pass(*meta.level()) {
            return false;
        }
        if let Some(scope) = cx.lookup_current().map(|s| s.scope()) {
            for span in scope {
                if let Some(SpanUnit(id)) = span.extensions().get::<SpanUnit>() {
                    return *meta.level() <= self.levels.level(Some(id));
                }
            }
        }
        *meta.level() <= self.levels.level(None)
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

    /// Events through a subscriber with the filter: by their unit's level, live, and the
    /// shortcut for levels no unit uses never drops one that a unit takes.
    #[test]
    fn events_pass_by_their_units_level() {
        use std::sync::Mutex;
        use tracing_subscriber::layer::SubscriberExt as _;

        /// Records each event's message.
        struct Seen(Arc<Mutex<Vec<String>>>);
        impl<S: Subscriber> tracing_subscriber::Layer<S> for Seen {
            fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
                struct Message(String);
                impl tracing::field::Visit for Message {
                    fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                        if f.name() == "message" {
                            self.0 = format!("{v:?}");
                        }
                    }
                }
                let mut m = Message(String::new());
                event.record(&mut m);
                self.0.lock().unwrap().push(m.0);
            }
        }

        let levels = UnitLevels::new(LevelFilter::INFO);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let layer =
            tracing_subscriber::Layer::with_filter(Seen(Arc::clone(&seen)), levels.filter());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let unit = tracing::info_span!("unit", unit.id = "u");
            let emit = |tag: &str| {
                tracing::trace!("{tag} outside trace");
                tracing::info!("{tag} outside info");
                unit.in_scope(|| {
                    tracing::trace!("{tag} unit trace");
                    tracing::debug!("{tag} unit debug");
                    tracing::info!("{tag} unit info");
                });
            };
            emit("default");
            levels.set("u", UnitLogLevel::Trace);
            emit("trace");
            levels.set("u", UnitLogLevel::Error);
            emit("error");
            levels.remove("u");
            emit("removed");
        });
        assert_eq!(
            *seen.lock().unwrap(),
            [
                "default outside info",
                "default unit info",
                "trace outside info",
                "trace unit trace",
                "trace unit debug",
                "trace unit info",
                "error outside info",
                "removed outside info",
                "removed unit info",
            ]
        );
    }
}
