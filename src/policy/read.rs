//! The policy envelope: `outputs`, `inputs`, their streams and data-stream naming.
//!
//! This is the part of the schema every platform shares (DESIGN §3). It checks ids and
//! references across the whole file (unique input and stream ids, `use_output` naming a declared
//! output), then hands each stream's map to its platform's `from_fields`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use super::{Config, InputConfig, MonitoringConfig, OutputConfig, StreamConfig, StreamIdentity};
use crate::config::fields::{self, FieldReader, describe};
use crate::config::{Problem, SslConfig, format_duration};
use crate::source::registry::{INPUT_TYPES, PlatformInfo, SourceConfig};

/// Input types this build understands (the registered platforms).
pub(crate) const SUPPORTED_INPUT_TYPES: &[&str] = INPUT_TYPES;

/// Output types this build understands.
pub(crate) const SUPPORTED_OUTPUT_TYPES: &[&str] = &["ndjson", "otlp"];

/// Output types the Agent itself writes (its monitoring, other integrations' inputs). A policy may
/// declare them next to ours; only an input of ours pointing at one is a problem.
pub(crate) const AGENT_OUTPUT_TYPES: &[&str] = &["elasticsearch", "logstash", "kafka", "redis"];

/// Top-level keys of an Elastic Agent policy that configure the Agent itself (`agent.monitoring`,
/// `agent.logging`, …): accepted and ignored.
pub(crate) const IGNORED_ROOT_KEYS: &[&str] = &["agent"];

/// Keys of an Elastic Agent policy's input that are accepted and ignored.
pub(crate) const IGNORED_INPUT_KEYS: &[&str] =
    &["name", "revision", "meta", "package_policy_id", "policy"];

/// Default `use_output`.
pub(crate) fn default_use_output() -> String {
    "default".to_owned()
}

/// Default `data_stream.namespace` when neither the stream nor its input sets one.
pub(crate) fn default_namespace() -> String {
    "default".to_owned()
}

/// Default NDJSON `path`: stdout.
pub(crate) fn default_ndjson_path() -> String {
    "-".to_owned()
}

/// The outputs used when the file has no `outputs` key: NDJSON to stdout, named `default`.
pub(crate) fn default_outputs() -> BTreeMap<String, OutputConfig> {
    BTreeMap::from([(
        "default".to_owned(),
        OutputConfig::Ndjson {
            path: PathBuf::from("-"),
        },
    )])
}

/// Ids seen so far, with where they were first declared.
#[derive(Debug, Default)]
struct SeenIds {
    inputs: HashMap<String, String>,
    streams: HashMap<String, String>,
}

fn check_unique(r: &mut FieldReader<'_>, seen: &mut HashMap<String, String>, what: &str, id: &str) {
    let here = r.field("id");
    if let Some(first) = seen.get(id) {
        let message = format!("duplicate {what} id {id:?} (first declared at {first})");
        r.problem("id", message);
    } else {
        seen.insert(id.to_owned(), here);
    }
}

/// Validates a whole configuration tree.
pub(crate) fn read_config(value: &Value) -> Result<Config, Vec<Problem>> {
    let mut root = match FieldReader::open("", value) {
        Ok(r) => r,
        Err(problem) => return Err(vec![problem]),
    };
    root.ignore(IGNORED_ROOT_KEYS);
    let monitoring = read_monitoring(&mut root);
    let declared = read_outputs(&mut root);
    let mut seen = SeenIds::default();
    let mut inputs = Vec::new();
    let present = value.get("inputs").is_some_and(|v| !v.is_null());
    match root.list("inputs") {
        None if present => {}
        None => root.problem("inputs", "required field is missing (a list of inputs)"),
        Some(items) if items.is_empty() => root.problem("inputs", "must not be empty"),
        Some(items) => {
            for (path, item) in items {
                let (input, problems) = read_input(&path, item, Some(&declared), &mut seen);
                root.absorb(problems);
                inputs.extend(input);
            }
        }
    }
    let problems = root.finish();
    if problems.is_empty() {
        Ok(Config {
            outputs: declared.ours,
            inputs,
            monitoring,
        })
    } else {
        Err(problems)
    }
}

/// `monitoring.http: {enabled, host, port, allow_remote}`; `None` unless enabled. A host that
/// is not a loopback address is refused without `allow_remote: true`: the endpoint has no
/// authentication.
pub(crate) fn read_monitoring(root: &mut FieldReader<'_>) -> Option<MonitoringConfig> {
    let mut monitoring = root.object("monitoring")?;
    let mut http = monitoring.object("http");
    let config = http.as_mut().and_then(|http| {
        let enabled = http.bool_or("enabled", || false);
        let host_text = http.string_or("host", || "127.0.0.1".to_owned());
        let port = http.integer_in("port", 0..=u16::MAX, || 5066);
        let allow_remote = http.bool_or("allow_remote", || false);
        let host = match host_text.parse::<std::net::IpAddr>() {
            Ok(ip) => ip,
            Err(_) if host_text == "localhost" => std::net::IpAddr::from([127, 0, 0, 1]),
            Err(_) => {
                http.problem(
                    "host",
                    format!("must be an IP address (or localhost), got {host_text:?}"),
                );
                return None;
            }
        };
        if !host.is_loopback() && !allow_remote {
            http.problem(
                "host",
                format!(
                    "{host} is not a loopback address; the endpoint has no authentication, so \
                     set allow_remote: true to serve it beyond this host"
                ),
            );
            return None;
        }
        enabled.then_some(MonitoringConfig { host, port })
    });
    if let Some(http) = http {
        let problems = http.finish();
        monitoring.absorb(problems);
    }
    let problems = monitoring.finish();
    root.absorb(problems);
    config
}

/// Validates one input on its own (an Agent unit's `config.source`); `use_output` is not checked
/// against any outputs.
pub(crate) fn read_single_input(value: &Value) -> Result<InputConfig, Vec<Problem>> {
    let (input, problems) = read_input("", value, None, &mut SeenIds::default());
    match input {
        Some(input) if problems.is_empty() => Ok(input),
        _ => Err(problems),
    }
}

/// Validates one output block on its own (an Agent output unit's `config.source`).
pub(crate) fn read_single_output(value: &Value) -> Result<OutputConfig, Vec<Problem>> {
    let mut r = match FieldReader::open("", value) {
        Ok(r) => r,
        Err(problem) => return Err(vec![problem]),
    };
    let output = read_output(&mut r);
    let problems = r.finish();
    match output {
        Some(output) if problems.is_empty() => Ok(output),
        _ => Err(problems),
    }
}

/// The `outputs` block: ours validated, the Agent's own remembered by name and type.
struct DeclaredOutputs {
    ours: BTreeMap<String, OutputConfig>,
    /// Outputs of the types in [`AGENT_OUTPUT_TYPES`], by name: their type.
    agents: BTreeMap<String, String>,
}

impl DeclaredOutputs {
    fn contains(&self, name: &str) -> bool {
        self.ours.contains_key(name) || self.agents.contains_key(name)
    }

    fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .ours
            .keys()
            .chain(self.agents.keys())
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names
    }
}

fn read_outputs(root: &mut FieldReader<'_>) -> DeclaredOutputs {
    let Some(mut outputs) = root.object("outputs") else {
        return DeclaredOutputs {
            ours: default_outputs(),
            agents: BTreeMap::new(),
        };
    };
    let mut declared = DeclaredOutputs {
        ours: BTreeMap::new(),
        agents: BTreeMap::new(),
    };
    let names: Vec<String> = outputs_keys(&outputs);
    if names.is_empty() {
        outputs.push(Problem {
            field: outputs.path().to_owned(),
            message: "must declare at least one output".to_owned(),
        });
    }
    for name in &names {
        let Some(mut out) = outputs.object(name) else {
            continue;
        };
        let agents_own = out
            .peek_str("type")
            .filter(|kind| AGENT_OUTPUT_TYPES.contains(kind))
            .map(str::to_owned);
        if let Some(kind) = agents_own {
            // The Agent validates its own outputs; their keys are none of ours.
            out.accept_rest();
            declared.agents.insert(name.clone(), kind);
        } else if let Some(config) = read_output(&mut out) {
            declared.ours.insert(name.clone(), config);
        }
        let problems = out.finish();
        outputs.absorb(problems);
    }
    let problems = outputs.finish();
    root.absorb(problems);
    declared
}

fn outputs_keys(outputs: &FieldReader<'_>) -> Vec<String> {
    outputs.keys().map(str::to_owned).collect()
}

fn read_output(r: &mut FieldReader<'_>) -> Option<OutputConfig> {
    let kind = r.required_string("type")?;
    match kind.as_str() {
        "ndjson" => {
            let path = r.string_or("path", default_ndjson_path);
            Some(OutputConfig::Ndjson {
                path: PathBuf::from(path),
            })
        }
        "otlp" => {
            let endpoint = r.required_string("endpoint");
            let ssl = r.ssl("ssl");
            for (key, why) in ssl.iter().flat_map(SslConfig::otlp_limits) {
                let field = format!("{}.{key}", r.field("ssl"));
                r.push(Problem {
                    field,
                    message: why.to_owned(),
                });
            }
            let mut retry_max_elapsed = super::default_otlp_retry_max_elapsed();
            if let Some(mut retry) = r.object("retry_on_failure") {
                retry_max_elapsed = retry.duration_in(
                    "max_elapsed_time",
                    Duration::from_secs(1)..=Duration::from_secs(3600),
                    super::default_otlp_retry_max_elapsed,
                );
                let problems = retry.finish();
                r.absorb(problems);
            }
            let mut batches_in_flight = super::default_otlp_batches_in_flight();
            if let Some(mut queue) = r.object("sending_queue") {
                batches_in_flight = queue.integer_in(
                    "num_consumers",
                    1..=64,
                    super::default_otlp_batches_in_flight,
                );
                let problems = queue.finish();
                r.absorb(problems);
            }
            Some(OutputConfig::Otlp {
                endpoint: endpoint?,
                ssl,
                retry_max_elapsed,
                batches_in_flight,
            })
        }
        other => {
            r.problem(
                "type",
                format!(
                    "unsupported output type {other:?} (supported: {})",
                    SUPPORTED_OUTPUT_TYPES.join(", ")
                ),
            );
            // The other keys belong to a type we do not know: do not report them too.
            r.accept_rest();
            None
        }
    }
}

fn read_input(
    path: &str,
    value: &Value,
    outputs: Option<&DeclaredOutputs>,
    seen: &mut SeenIds,
) -> (Option<InputConfig>, Vec<Problem>) {
    let mut r = match FieldReader::open(path, value) {
        Ok(r) => r,
        Err(problem) => return (None, vec![problem]),
    };
    r.ignore(IGNORED_INPUT_KEYS);
    let id = r.required_string("id");
    if let Some(id) = &id {
        check_unique(&mut r, &mut seen.inputs, "input", id);
    }
    let input_type = match r.required_string("type") {
        Some(name) => match PlatformInfo::by_input_type(&name) {
            Some(t) => Some(t),
            None => {
                r.problem(
                    "type",
                    format!(
                        "unsupported input type {name:?} (supported: {})",
                        SUPPORTED_INPUT_TYPES.join(", ")
                    ),
                );
                None
            }
        },
        None => None,
    };
    let use_output = r.string_or("use_output", default_use_output);
    if let Some(declared) = outputs {
        if let Some(kind) = declared.agents.get(&use_output) {
            r.problem(
                "use_output",
                format!(
                    "output {use_output:?} has type {kind:?}, which only the Agent writes; point \
                     this input at an output of type {} (ti-sidecar sends its own events)",
                    SUPPORTED_OUTPUT_TYPES.join(" or ")
                ),
            );
        } else if !declared.contains(&use_output) {
            r.problem(
                "use_output",
                format!(
                    "no output named {use_output:?} (declared outputs: {})",
                    declared.names().join(", ")
                ),
            );
        }
    }
    let namespace = match r.object("data_stream") {
        Some(mut ds) => {
            let ns = ds.optional_string("namespace");
            if let Some(ns) = &ns {
                check_data_stream_name(&mut ds, "namespace", ns);
            }
            let problems = ds.finish();
            r.absorb(problems);
            ns
        }
        None => None,
    };
    r.unsupported(
        "processors",
        "agent-side processors are not applied by ti-sidecar; remove them",
    );
    let mut streams = Vec::new();
    match r.list("streams") {
        None if value.get("streams").is_some_and(|v| !v.is_null()) => {}
        None => r.problem("streams", "required field is missing (a list of streams)"),
        Some(items) if items.is_empty() => r.problem("streams", "must not be empty"),
        Some(items) => {
            for (stream_path, item) in items {
                let (stream, problems) =
                    read_stream(&stream_path, item, input_type, namespace.as_deref(), seen);
                r.absorb(problems);
                streams.extend(stream);
            }
        }
    }
    let problems = r.finish();
    let input = match (id, input_type) {
        (Some(id), Some(_)) if problems.is_empty() => Some(InputConfig {
            id,
            use_output,
            streams,
        }),
        _ => None,
    };
    (input, problems)
}

fn read_stream(
    path: &str,
    value: &Value,
    input_type: Option<PlatformInfo>,
    input_namespace: Option<&str>,
    seen: &mut SeenIds,
) -> (Option<StreamConfig>, Vec<Problem>) {
    let mut r = match FieldReader::open(path, value) {
        Ok(r) => r,
        Err(problem) => return (None, vec![problem]),
    };
    let id = r.required_string("id");
    if let Some(id) = &id {
        check_unique(&mut r, &mut seen.streams, "stream", id);
    }
    // With an unknown input type the stream is not built; any valid name will do.
    let default_dataset =
        || input_type.map_or_else(default_namespace, |t| t.default_dataset.to_owned());
    let (dataset, namespace) = match r.object("data_stream") {
        Some(mut ds) => {
            let dataset = ds.string_or("dataset", default_dataset);
            check_data_stream_name(&mut ds, "dataset", &dataset);
            let namespace = ds.optional_string("namespace");
            if let Some(ns) = &namespace {
                check_data_stream_name(&mut ds, "namespace", ns);
            }
            if let Some(kind) = ds.raw("type")
                && kind.as_str() != Some("logs")
            {
                ds.problem("type", format!("must be \"logs\", got {}", describe(kind)));
            }
            let problems = ds.finish();
            r.absorb(problems);
            (dataset, namespace)
        }
        None => (default_dataset(), None),
    };
    let namespace = namespace
        .or_else(|| input_namespace.map(str::to_owned))
        .unwrap_or_else(default_namespace);
    let source = match input_type.and_then(|t| SourceConfig::from_fields(t.input_type, &mut r)) {
        Some(source) => source,
        None => {
            // The input's type is already reported; its variables cannot be checked.
            r.accept_rest();
            None
        }
    };
    let problems = r.finish();
    let stream = match (id, source) {
        (Some(id), Some(source)) if problems.is_empty() => Some(StreamConfig {
            identity: StreamIdentity {
                id,
                dataset,
                namespace,
            },
            source,
        }),
        _ => None,
    };
    (stream, problems)
}

/// Elasticsearch's rules for the dataset and namespace parts of a data stream name.
fn check_data_stream_name(r: &mut FieldReader<'_>, key: &str, value: &str) {
    const FORBIDDEN: &[char] = &['\\', '/', '*', '?', '"', '<', '>', '|', ' ', ',', '#', ':'];
    if value.is_empty() {
        r.problem(key, "must not be empty");
    } else if value.len() > 100 {
        r.problem(key, format!("must be at most 100 bytes, got {value:?}"));
    } else if value
        .chars()
        .any(|c| c.is_uppercase() || FORBIDDEN.contains(&c))
    {
        r.problem(
            key,
            format!(
                "must be lowercase without any of \\ / * ? \" < > | , # : or spaces, got {value:?}"
            ),
        );
    }
}

/// Renders a validated configuration under the file's key names, secrets redacted.
pub(crate) fn config_to_json(config: &Config) -> Value {
    let outputs: Map<String, Value> = config
        .outputs
        .iter()
        .map(|(name, output)| {
            let value = match output {
                OutputConfig::Ndjson { path } => serde_json::json!({
                    "type": "ndjson",
                    "path": path.to_string_lossy(),
                }),
                OutputConfig::Otlp {
                    endpoint,
                    ssl,
                    retry_max_elapsed,
                    batches_in_flight,
                } => {
                    let mut v = serde_json::json!({
                        "type": "otlp",
                        "endpoint": endpoint,
                    });
                    if *retry_max_elapsed != super::default_otlp_retry_max_elapsed() {
                        v["retry_on_failure"] = serde_json::json!({
                            "max_elapsed_time": format_duration(*retry_max_elapsed),
                        });
                    }
                    if *batches_in_flight != super::default_otlp_batches_in_flight() {
                        v["sending_queue"] = serde_json::json!({
                            "num_consumers": batches_in_flight,
                        });
                    }
                    if let Some(ssl) = ssl {
                        v["ssl"] = fields::ssl_to_json(ssl);
                    }
                    v
                }
            };
            (name.clone(), value)
        })
        .collect();
    let inputs: Vec<Value> = config
        .inputs
        .iter()
        .map(|input| {
            let kind = input
                .streams
                .first()
                .map_or(SUPPORTED_INPUT_TYPES[0], |s| s.source.input_type());
            let streams: Vec<Value> = input
                .streams
                .iter()
                .map(|stream| {
                    let mut map = match stream.source.redacted_json() {
                        Value::Object(map) => map,
                        _ => Map::new(),
                    };
                    map.insert("id".into(), Value::from(stream.identity.id.clone()));
                    map.insert(
                        "data_stream".into(),
                        serde_json::json!({
                            "type": "logs",
                            "dataset": stream.identity.dataset,
                            "namespace": stream.identity.namespace,
                        }),
                    );
                    Value::Object(map)
                })
                .collect();
            serde_json::json!({
                "id": input.id,
                "type": kind,
                "use_output": input.use_output,
                "streams": streams,
            })
        })
        .collect();
    serde_json::json!({ "outputs": outputs, "inputs": inputs })
}
