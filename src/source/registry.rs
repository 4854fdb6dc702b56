//! The one list of platforms.
//!
//! A platform is a type implementing [`Platform`]: its input type, default dataset, how its
//! stream settings are read and shown, how its [`Source`] is built, and its ECS mapping. The
//! `platforms!` line at the bottom registers it; that line generates [`SourceConfig`] (one
//! variant per platform) and every dispatch over it. Adding a third platform is one directory
//! under `source/` (config, client, ecs, and a `Platform` impl in its `mod.rs`) plus one line
//! there.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::Source;
use crate::config::HttpConfig;
use crate::config::fields::FieldReader;
use crate::http::HttpClient;
use crate::ingest::{EcsEvent, MapOptions};
use crate::redact::Secrets;

/// A platform's validated stream settings.
pub trait StreamSettings: Clone + std::fmt::Debug + Send + Sync + Sized + 'static {
    /// Reads a stream's settings; every problem is recorded in `fields`, naming its field.
    /// The caller reads the stream's own keys (`id`, `data_stream`) and then calls
    /// [`FieldReader::finish`], which reports unknown keys.
    fn from_fields(fields: &mut FieldReader<'_>) -> Option<Self>;
    /// The secrets masked wherever this stream's text goes.
    fn secrets(&self) -> Secrets;
    /// The effective settings under their integration names, every secret replaced by
    /// `"[REDACTED]"`.
    fn redacted_json(&self) -> Value;
    /// The HTTP settings.
    fn http(&self) -> &HttpConfig;
    /// The time between sweeps once caught up.
    fn interval(&self) -> Duration;
}

/// One threat-intelligence platform ti-sidecar polls.
pub trait Platform: 'static {
    /// The integration's input type (`ti_threatconnect`).
    const INPUT_TYPE: &'static str;
    /// The short name the `map` command takes (`threatconnect`).
    const NAME: &'static str;
    /// The dataset a stream writes to unless it names one.
    const DEFAULT_DATASET: &'static str;

    /// A stream's validated settings.
    type Config: StreamSettings;
    /// What polls the platform.
    type Source: Source;

    /// The source of one stream.
    fn build(config: Arc<Self::Config>, http: HttpClient) -> Self::Source;
    /// Maps one raw indicator to its document (the `map` command).
    fn map(raw: &str, options: &MapOptions) -> EcsEvent;
}

/// Work done with one stream's platform and settings, whichever platform it is (see
/// [`SourceConfig::visit`]).
pub(crate) trait PlatformVisitor<'a> {
    /// What the work gives.
    type Output;
    /// Does the work for platform `P`.
    fn visit<P: Platform>(self, config: &'a P::Config) -> Self::Output;
}

/// A platform's entry points that need no stream (its names and its mapping).
#[derive(Debug, Clone, Copy)]
pub struct PlatformInfo {
    /// [`Platform::INPUT_TYPE`].
    pub input_type: &'static str,
    /// [`Platform::NAME`].
    pub name: &'static str,
    /// [`Platform::DEFAULT_DATASET`].
    pub default_dataset: &'static str,
    /// [`Platform::map`].
    pub map: fn(&str, &MapOptions) -> EcsEvent,
}

impl PlatformInfo {
    /// The registered platform with input type `input_type`.
    pub(crate) fn by_input_type(input_type: &str) -> Option<Self> {
        PLATFORMS
            .iter()
            .copied()
            .find(|p| p.input_type == input_type)
    }

    /// The registered platform with short name `name`.
    pub fn by_name(name: &str) -> Option<Self> {
        PLATFORMS.iter().copied().find(|p| p.name == name)
    }
}

const fn info<P: Platform>() -> PlatformInfo {
    PlatformInfo {
        input_type: P::INPUT_TYPE,
        name: P::NAME,
        default_dataset: P::DEFAULT_DATASET,
        map: P::map,
    }
}

/// Registers the platforms: generates [`SourceConfig`], [`PLATFORMS`] and the dispatch.
macro_rules! platforms {
    ($($variant:ident => $platform:ty),+ $(,)?) => {
        /// A stream's platform-specific settings: one variant per registered platform.
        #[derive(Debug, Clone)]
        pub enum SourceConfig {
            $(
                #[doc = concat!("A stream of [`", stringify!($platform), "`].")]
                $variant(<$platform as Platform>::Config),
            )+
        }

        /// The input types of the registered platforms.
        pub(crate) const INPUT_TYPES: &[&str] = &[$(<$platform as Platform>::INPUT_TYPE),+];

        /// Every registered platform, in registration order.
        pub const PLATFORMS: &[PlatformInfo] = &[$(info::<$platform>()),+];

        impl SourceConfig {
            /// Reads the settings of a stream of input type `input_type`; `None` when the type
            /// is not registered.
            pub(crate) fn from_fields(
                input_type: &str,
                fields: &mut FieldReader<'_>,
            ) -> Option<Option<Self>> {
                $(
                    if input_type == <$platform as Platform>::INPUT_TYPE {
                        return Some(<<$platform as Platform>::Config as StreamSettings>::from_fields(fields).map(Self::$variant));
                    }
                )+
                None
            }

            /// The integration's input type name (`ti_threatconnect`, `ti_threatq`).
            pub(crate) fn input_type(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => <$platform as Platform>::INPUT_TYPE,)+
                }
            }

            /// The effective settings with every secret replaced by `"[REDACTED]"`.
            pub(crate) fn redacted_json(&self) -> Value {
                match self {
                    $(Self::$variant(config) => config.redacted_json(),)+
                }
            }

            /// The secrets of the stream, to mask in everything it logs, reports or traces.
            pub(crate) fn secrets(&self) -> Secrets {
                match self {
                    $(Self::$variant(config) => config.secrets(),)+
                }
            }

            /// The HTTP settings.
            pub(crate) fn http(&self) -> &HttpConfig {
                match self {
                    $(Self::$variant(config) => config.http(),)+
                }
            }

            /// Runs `visitor` with this stream's platform and settings.
            pub(crate) fn visit<'a, V: PlatformVisitor<'a>>(&'a self, visitor: V) -> V::Output {
                match self {
                    $(Self::$variant(config) => visitor.visit::<$platform>(config),)+
                }
            }
        }
    };
}

platforms! {
    ThreatConnect => super::threatconnect::ThreatConnect,
    ThreatQ => super::threatq::ThreatQ,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_platform_is_found_by_its_names_and_only_those() {
        assert_eq!(INPUT_TYPES, ["ti_threatconnect", "ti_threatq"]);
        for p in PLATFORMS {
            let by_type = PlatformInfo::by_input_type(p.input_type).expect("by input type");
            assert_eq!(by_type.name, p.name);
            let by_name = PlatformInfo::by_name(p.name).expect("by name");
            assert_eq!(by_name.input_type, p.input_type);
            assert!(p.default_dataset.starts_with(p.input_type), "{p:?}");
        }
        assert!(PlatformInfo::by_input_type("ti_misp").is_none());
        assert!(PlatformInfo::by_name("ti_threatq").is_none());
    }

    #[test]
    fn an_unregistered_input_type_reads_no_settings() {
        let value = serde_json::json!({"url": "https://tc.example"});
        let mut fields = FieldReader::open("inputs[0].streams[0]", &value).expect("object");
        assert!(SourceConfig::from_fields("ti_misp", &mut fields).is_none());
        let read = SourceConfig::from_fields("ti_threatconnect", &mut fields);
        assert!(matches!(read, Some(None)), "missing access_id is a problem");
    }
}
