//! `manifest/ti-sidecar.spec.yml` against the component-spec schema of agent-protocol.md §10.2:
//! loaded into typed structs holding only the keys the Agent's loader knows (any other key is an
//! error), then checked for what the loader enforces (version 2, unique input names, platforms
//! every supported Agent knows, non-empty outputs, `command`, Go durations).

use std::collections::BTreeSet;

use serde::Deserialize;

/// The keys the Agent's spec loader knows (`pkg/component/spec.go`); anything else is an error
/// here, so the spec never leans on a key an older Agent would not read.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    version: u32,
    inputs: Vec<InputSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSpec {
    name: String,
    description: String,
    platforms: Vec<String>,
    outputs: Vec<String>,
    #[serde(default)]
    proxied_actions: Vec<String>,
    runtime: Option<serde_json::Value>,
    command: Option<CommandSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandSpec {
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<EnvSpec>,
    timeouts: Option<Timeouts>,
    log: Option<serde_json::Value>,
    restart_monitoring_period: Option<String>,
    maximum_restarts_per_period: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvSpec {
    name: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Timeouts {
    checkin: Option<String>,
    restart: Option<String>,
    stop: Option<String>,
}

/// The Agent's defaults for `command.timeouts` (`CommandTimeoutSpec.InitDefaults`).
const DEFAULT_TIMEOUTS: [(&str, f64); 3] = [("checkin", 30.0), ("restart", 10.0), ("stop", 30.0)];

/// Platform names every supported Agent (8.16 and later) knows (`platforms.go`). `windows/arm64`
/// is missing on purpose: Agents before 9.2 refuse it, and with it the whole components folder.
const PLATFORMS: &[&str] = &[
    "linux/amd64",
    "linux/arm64",
    "darwin/amd64",
    "darwin/arm64",
    "windows/amd64",
    "container/amd64",
    "container/arm64",
];

/// Input names Elastic's own specs use (spec §10.3); ours must not collide with them.
const TAKEN: &[&str] = &[
    "cel",
    "httpjson",
    "filestream",
    "log",
    "logfile",
    "tcp",
    "udp",
    "apm",
    "endpoint",
];

/// A Go duration as the Agent parses it (`30s`, `1m30s`), in seconds.
fn go_duration_secs(s: &str) -> Option<f64> {
    let mut total = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = ["ns", "us", "ms", "h", "m", "s"]
            .into_iter()
            .find(|u| rest.starts_with(u))?;
        rest = &rest[unit.len()..];
        total += n * match unit {
            "ns" => 1e-9,
            "us" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            _ => 3600.0,
        };
    }
    Some(total)
}

fn load() -> Spec {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/manifest/ti-sidecar.spec.yml");
    let text = std::fs::read_to_string(path).expect("spec file");
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

impl CommandSpec {
    /// A timeout as the Agent applies it: the spec's value, or the Agent's default.
    fn timeout_secs(&self, which: &str) -> Option<f64> {
        let set = self.timeouts.as_ref().and_then(|t| match which {
            "checkin" => t.checkin.as_deref(),
            "restart" => t.restart.as_deref(),
            _ => t.stop.as_deref(),
        });
        match set {
            Some(text) => go_duration_secs(text),
            None => DEFAULT_TIMEOUTS
                .iter()
                .find(|(name, _)| *name == which)
                .map(|(_, secs)| *secs),
        }
    }
}

/// Every violation of §10.2 (empty when the spec is valid).
fn problems(spec: &Spec) -> Vec<String> {
    let mut out = Vec::new();
    if spec.version != 2 {
        out.push(format!("version must be 2, got {}", spec.version));
    }
    if spec.inputs.is_empty() {
        out.push("inputs must not be empty".to_owned());
    }
    let mut names = BTreeSet::new();
    for (i, input) in spec.inputs.iter().enumerate() {
        let at = format!("inputs[{i}] ({})", input.name);
        let name = &input.name;
        if name.is_empty() {
            out.push(format!("{at}: empty name"));
        }
        if !names.insert(name.clone()) {
            out.push(format!("{at}: duplicate name {name:?}"));
        }
        if TAKEN.contains(&name.as_str()) {
            out.push(format!("{at}: {name:?} collides with an Elastic input"));
        }
        if input.description.trim().is_empty() {
            out.push(format!("{at}: description is required"));
        }
        if input.platforms.is_empty() {
            out.push(format!("{at}: platforms must not be empty"));
        }
        let mut seen = BTreeSet::new();
        for p in &input.platforms {
            if !PLATFORMS.contains(&p.as_str()) {
                out.push(format!(
                    "{at}: platform {p:?} is not known to every supported Agent"
                ));
            }
            if !seen.insert(p) {
                out.push(format!("{at}: duplicate platform {p:?}"));
            }
        }
        if input.outputs.is_empty() {
            out.push(format!("{at}: outputs must not be empty"));
        }
        let Some(cmd) = &input.command else {
            out.push(format!("{at}: command is required"));
            continue;
        };
        let durations = cmd
            .timeouts
            .iter()
            .flat_map(|t| [&t.checkin, &t.restart, &t.stop])
            .chain([&cmd.restart_monitoring_period])
            .flatten();
        for d in durations {
            if go_duration_secs(d).is_none() {
                out.push(format!("{at}: {d:?} is not a Go duration"));
            }
        }
        if let Some(t) = &cmd.timeouts {
            for (which, set) in [
                ("checkin", &t.checkin),
                ("restart", &t.restart),
                ("stop", &t.stop),
            ] {
                let default = DEFAULT_TIMEOUTS
                    .iter()
                    .find(|(n, _)| *n == which)
                    .map(|d| d.1);
                if set.as_deref().and_then(go_duration_secs) == default {
                    out.push(format!(
                        "{at}: timeouts.{which} repeats the Agent's default"
                    ));
                }
            }
        }
        // The Agent waits `stop` minus 5 s before SIGKILL: leave time to commit.
        if cmd.timeout_secs("stop").is_some_and(|s| s < 10.0) {
            out.push(format!("{at}: the stop timeout leaves no time to drain"));
        }
    }
    out
}

#[test]
fn spec_file_is_valid_against_the_schema() {
    let spec = load();
    assert_eq!(problems(&spec), Vec::<String>::new());
}

#[test]
fn spec_declares_both_inputs_everywhere_with_otlp() {
    let spec = load();
    let names: Vec<&str> = spec.inputs.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["ti_threatconnect", "ti_threatq"]);
    for input in &spec.inputs {
        for os in ["linux", "darwin", "windows", "container"] {
            assert!(
                input.platforms.iter().any(|p| p.starts_with(os)),
                "{} runs on {os}",
                input.name
            );
        }
        assert!(
            !input.platforms.iter().any(|p| p == "windows/arm64"),
            "windows/arm64 breaks Agents before 9.2"
        );
        assert_eq!(input.outputs, ["otlp"]);
        let cmd = input.command.as_ref().expect("command");
        assert_eq!(cmd.args, ["agent"], "the Agent appends -E path.data=...");
        // The component checks in at least every 25 s and drains within 25 s of SIGTERM.
        assert!(cmd.timeout_secs("checkin").is_some_and(|s| s > 25.0));
        assert!(cmd.timeout_secs("stop").is_some_and(|s| s >= 30.0));
        assert!(
            cmd.env
                .iter()
                .all(|e| !e.name.is_empty() && !e.value.is_empty())
        );
        assert!(input.proxied_actions.is_empty() && input.runtime.is_none());
        assert!(cmd.log.is_none());
        assert!(cmd.maximum_restarts_per_period.is_some());
    }
}

#[test]
fn the_checker_catches_schema_violations() {
    let bad: Spec = serde_norway::from_str(
        "version: 1\ninputs:\n  - name: cel\n    description: ''\n    platforms: [linux/amd64, linux/amd64, plan9/386, windows/arm64]\n    outputs: []\n",
    )
    .expect("parses");
    let found = problems(&bad);
    for needle in [
        "version must be 2",
        "collides",
        "description is required",
        "duplicate platform",
        "\"plan9/386\" is not known",
        "\"windows/arm64\" is not known",
        "outputs must not be empty",
        "command is required",
    ] {
        assert!(
            found.iter().any(|p| p.contains(needle)),
            "{needle}: {found:?}"
        );
    }
    let defaults: Spec = serde_norway::from_str(
        "version: 2\ninputs:\n  - name: x\n    description: x\n    platforms: [linux/amd64]\n    outputs: [otlp]\n    command: {timeouts: {checkin: 30s, stop: 5s}}\n",
    )
    .expect("parses");
    let found = problems(&defaults);
    assert!(
        found.iter().any(|p| p.contains("timeouts.checkin repeats")),
        "{found:?}"
    );
    assert!(
        found.iter().any(|p| p.contains("no time to drain")),
        "{found:?}"
    );
    for unknown in [
        "version: 2\ninputs: []\nshippers: [x]\n",
        "version: 2\ninputs: [{name: x, description: x, platforms: [], outputs: [], isolate_units: true}]\n",
        "version: 2\ninputs: [{name: x, description: x, platforms: [], outputs: [], command: {name: y}}]\n",
    ] {
        assert!(
            serde_norway::from_str::<Spec>(unknown).is_err(),
            "keys the loader does not know are rejected: {unknown}"
        );
    }
    assert_eq!(go_duration_secs("1m30s"), Some(90.0));
    assert_eq!(go_duration_secs("90d"), None);
}

// ---------------------------------------------------------------------------------------------
// The README's example policy, against the rules the Agent applies to a policy

/// The YAML block of the README's "Write the policy" step, unindented.
fn readme_policy() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let step = readme
        .split_once("**Write the policy.**")
        .expect("the README has a `Write the policy` step")
        .1;
    let block = step
        .split_once("```yaml\n")
        .expect("a yaml block")
        .1
        .split_once("```")
        .expect("a closed yaml block")
        .0;
    let indent = block
        .lines()
        .find(|l| !l.trim().is_empty())
        .map_or(0, |l| l.len() - l.trim_start().len());
    block
        .lines()
        .map(|l| l.get(indent..).unwrap_or("").trim_end())
        .collect::<Vec<_>>()
        .join("\n")
}

/// What the Agent refuses in a standalone policy before it starts any component: outputs that
/// inputs or monitoring name must exist (monitoring is on by default and uses `default`); an
/// input type must be one a spec declares, with an output type that spec input lists.
fn agent_rules(policy: &serde_json::Value, spec: &Spec) -> Vec<String> {
    use serde_json::Value;
    let mut out = Vec::new();
    let outputs = policy
        .get("outputs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let output_type = |name: &str| {
        outputs
            .get(name)
            .and_then(|o| o.get("type"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let monitoring = policy.pointer("/agent/monitoring");
    let monitoring_on = monitoring
        .and_then(|m| m.get("enabled"))
        .and_then(Value::as_bool)
        .unwrap_or(true);
    if monitoring_on {
        let name = monitoring
            .and_then(|m| m.get("use_output"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        if !outputs.contains_key(name) {
            out.push(format!("output {name:?} used for monitoring not found"));
        }
    }
    for input in policy
        .get("inputs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if input.get("enabled") == Some(&Value::Bool(false)) {
            continue;
        }
        let kind = input.get("type").and_then(Value::as_str).unwrap_or("");
        let use_output = input
            .get("use_output")
            .and_then(Value::as_str)
            .unwrap_or("default");
        let Some(out_type) = output_type(use_output) else {
            out.push(format!("input {kind:?}: output {use_output:?} not found"));
            continue;
        };
        match spec.inputs.iter().find(|i| i.name == kind) {
            None => out.push(format!("input type {kind:?} is in no component spec")),
            Some(s) if !s.outputs.contains(&out_type) => out.push(format!(
                "input {kind:?} does not support output type {out_type:?}"
            )),
            Some(_) => {}
        }
    }
    out
}

fn yaml(text: &str) -> serde_json::Value {
    serde_norway::from_str(text).unwrap_or_else(|e| panic!("{e}:\n{text}"))
}

#[test]
fn the_readme_policy_applies_under_the_agent() {
    let text = readme_policy();
    let policy = yaml(&text);
    assert_eq!(
        agent_rules(&policy, &load()),
        Vec::<String>::new(),
        "{text}"
    );
    // ti-sidecar's own reading of it (what `validate` and `host --policy` do).
    let lookup = |_: &str| Some("x".to_owned());
    let read = ti_sidecar::host::policy::from_str(&text, &lookup, "http://127.0.0.1:1");
    let policy = read.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.component_id, "ti-sidecar-otel");
    assert_eq!(policy.units.len(), 3, "two input units and the output unit");
}

#[test]
fn the_agent_rules_refuse_a_policy_without_the_monitoring_output() {
    let spec = load();
    // The README's example before this check existed: only `outputs.otel`.
    let before = yaml(
        "outputs: {otel: {type: otlp, endpoint: 'http://127.0.0.1:4317'}}\n\
         inputs: [{id: a, type: ti_threatconnect, use_output: otel, streams: []}]\n",
    );
    assert_eq!(
        agent_rules(&before, &spec),
        ["output \"default\" used for monitoring not found"]
    );
    let monitoring_off = yaml(
        "outputs: {otel: {type: otlp, endpoint: 'http://127.0.0.1:4317'}}\n\
         agent: {monitoring: {enabled: false}}\n\
         inputs: [{id: a, type: ti_threatconnect, use_output: otel, streams: []}]\n",
    );
    assert_eq!(agent_rules(&monitoring_off, &spec), Vec::<String>::new());
    let wrong = yaml(
        "outputs: {default: {type: elasticsearch}}\n\
         inputs: [{id: a, type: ti_threatconnect}, {id: b, type: ti_misp}, \
                  {id: c, type: ti_threatq, use_output: nope}]\n",
    );
    assert_eq!(
        agent_rules(&wrong, &spec),
        [
            "input \"ti_threatconnect\" does not support output type \"elasticsearch\"",
            "input type \"ti_misp\" is in no component spec",
            "input \"ti_threatq\": output \"nope\" not found",
        ]
    );
}
