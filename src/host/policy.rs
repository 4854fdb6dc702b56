//! From a policy file (the `run --config` schema, DESIGN §3) to the units the host expects its
//! component to run (agent-protocol.md §10.4): one INPUT unit per enabled policy input, one
//! OUTPUT unit. The file is validated with the same code as `run --config` (after dropping
//! disabled inputs and the Agent-only keys `enabled`, `log_level`); the unit configs
//! carry the original (variable-expanded) blocks as `config.source`, as the Agent sends them.
//!
//! The real Agent makes one component per (input type, output); the harness runs one process
//! for every input, so its component id is `ti-sidecar-<output name>`.

use std::path::Path;

use serde_json::{Map, Value};

use crate::agent::structs::json_to_struct;
use crate::config::{self, Problem, Problems};
use crate::proto::{DataStream, Meta, Package, Stream, UnitExpectedConfig, UnitLogLevel, UnitType};

/// One unit the host wants running, before revision numbering.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitSpec {
    /// Unit id.
    pub id: String,
    /// INPUT or OUTPUT.
    pub unit_type: UnitType,
    /// Its configuration.
    pub config: UnitExpectedConfig,
    /// Its log level.
    pub log_level: UnitLogLevel,
}

/// What a policy file asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The component id (also the output unit id).
    pub component_id: String,
    /// Input units then the output unit.
    pub units: Vec<UnitSpec>,
}

/// Reads, expands, validates and converts a policy file; `otlp_endpoint` is the host's own
/// receiver, used when the policy's output is ndjson or absent.
pub fn load(path: &Path, otlp_endpoint: &str) -> Result<Policy, Problems> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Problems(vec![Problem {
            field: config::FILE_FIELD.to_owned(),
            message: format!("cannot read {}: {e}", path.display()),
        }])
    })?;
    from_str(&text, &config::env::process_env, otlp_endpoint)
}

/// [`load`] on text, with a custom variable lookup.
pub fn from_str(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    otlp_endpoint: &str,
) -> Result<Policy, Problems> {
    let tree: Value = serde_norway::from_str(text).map_err(|e| {
        Problems(vec![Problem {
            field: config::FILE_FIELD.to_owned(),
            message: format!("invalid YAML: {e}"),
        }])
    })?;
    let (expanded, problems) = config::env::expand_tree(&tree, lookup);
    if !problems.is_empty() {
        return Err(Problems(problems));
    }
    let validated = crate::policy::from_value(&for_validation(&expanded))?;
    Ok(units(&expanded, &validated, otlp_endpoint))
}

/// The tree `run --config` would see: disabled inputs dropped, and the keys the Agent itself
/// consumes (`enabled`, `log_level`, `_runtime_experimental`) removed.
fn for_validation(tree: &Value) -> Value {
    let mut tree = tree.clone();
    if let Some(inputs) = tree.get_mut("inputs").and_then(Value::as_array_mut) {
        inputs.retain(|i| i.get("enabled") != Some(&Value::Bool(false)));
        for input in inputs.iter_mut().filter_map(Value::as_object_mut) {
            for key in ["enabled", "log_level", "_runtime_experimental"] {
                input.remove(key);
            }
        }
    }
    tree
}

fn units(tree: &Value, validated: &crate::policy::Config, otlp_endpoint: &str) -> Policy {
    let output_name = validated
        .inputs
        .first()
        .map_or_else(|| "default".to_owned(), |i| i.use_output.clone());
    let component_id = format!("ti-sidecar-{output_name}");
    let mut units = Vec::new();
    let inputs = tree
        .get("inputs")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for input in inputs {
        let Value::Object(mut block) = input else {
            continue;
        };
        if block.get("enabled") == Some(&Value::Bool(false)) {
            continue;
        }
        let log_level = log_level(block.get("log_level"));
        for key in [
            "use_output",
            "enabled",
            "log_level",
            "_runtime_experimental",
        ] {
            block.remove(key);
        }
        let kind = str_at(&block, "type");
        let id = block
            .get("id")
            .and_then(Value::as_str)
            .map_or_else(|| kind.clone(), str::to_owned);
        let namespace = block
            .get("data_stream")
            .and_then(|d| d.get("namespace"))
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_owned();
        let streams = block
            .get("streams")
            .and_then(Value::as_array)
            .map(|streams| {
                streams
                    .iter()
                    .filter_map(Value::as_object)
                    .map(|s| Stream {
                        source: Some(json_to_struct(s)),
                        id: str_at(s, "id"),
                        data_stream: Some(DataStream {
                            source: s
                                .get("data_stream")
                                .and_then(Value::as_object)
                                .map(json_to_struct),
                            dataset: s
                                .get("data_stream")
                                .and_then(|d| d.get("dataset"))
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                            r#type: "logs".to_owned(),
                            namespace: namespace.clone(),
                        }),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let meta = block.get("meta").and_then(Value::as_object).map(|m| Meta {
            source: Some(json_to_struct(m)),
            package: m
                .get("package")
                .and_then(Value::as_object)
                .map(|p| Package {
                    source: Some(json_to_struct(p)),
                    name: str_at(p, "name"),
                    version: str_at(p, "version"),
                }),
        });
        let config = UnitExpectedConfig {
            source: Some(json_to_struct(&block)),
            id: id.clone(),
            r#type: kind,
            name: str_at(&block, "name"),
            revision: block.get("revision").and_then(Value::as_u64).unwrap_or(1),
            meta,
            data_stream: Some(DataStream {
                namespace,
                ..DataStream::default()
            }),
            streams,
        };
        units.push(UnitSpec {
            id: format!("{component_id}-{id}"),
            unit_type: UnitType::Input,
            config,
            log_level,
        });
    }
    let output = match validated.outputs.get(&output_name) {
        Some(crate::policy::OutputConfig::Otlp { .. }) => tree
            .get("outputs")
            .and_then(|o| o.get(&output_name))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        // ndjson, or no output at all: events come to the host's own receiver.
        _ => {
            let mut m = Map::new();
            m.insert("type".into(), Value::from("otlp"));
            m.insert("endpoint".into(), Value::from(otlp_endpoint));
            m
        }
    };
    units.push(UnitSpec {
        id: component_id.clone(),
        unit_type: UnitType::Output,
        config: UnitExpectedConfig {
            source: Some(json_to_struct(&output)),
            id: output_name,
            r#type: "otlp".to_owned(),
            ..UnitExpectedConfig::default()
        },
        log_level: UnitLogLevel::Info,
    });
    Policy {
        component_id,
        units,
    }
}

fn str_at(m: &Map<String, Value>, key: &str) -> String {
    m.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn log_level(v: Option<&Value>) -> UnitLogLevel {
    match v.and_then(Value::as_str) {
        Some("error") => UnitLogLevel::Error,
        Some("warn" | "warning") => UnitLogLevel::Warn,
        Some("debug") => UnitLogLevel::Debug,
        Some("trace") => UnitLogLevel::Trace,
        _ => UnitLogLevel::Info,
    }
}
