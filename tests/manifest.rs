//! `manifest/ti-sidecar.spec.yml` against the component-spec schema of agent-protocol.md §10.2:
//! loaded into typed structs (unknown keys are errors), then checked for what the Agent's
//! loader enforces (version 2, unique input names, allowed platforms, non-empty outputs,
//! `command` or `service`, Go durations).

use std::collections::BTreeSet;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    version: u32,
    #[serde(default)]
    component_files: Vec<String>,
    inputs: Vec<InputSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSpec {
    name: String,
    #[serde(default)]
    aliases: Vec<String>,
    description: String,
    platforms: Vec<String>,
    outputs: Vec<String>,
    #[serde(default)]
    proxied_actions: Vec<String>,
    #[serde(default)]
    isolate_units: bool,
    #[serde(default)]
    single_receiver: bool,
    runtime: Option<serde_json::Value>,
    command: Option<CommandSpec>,
    service: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandSpec {
    name: Option<String>,
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

const PLATFORMS: &[&str] = &[
    "linux/amd64",
    "linux/arm64",
    "darwin/amd64",
    "darwin/arm64",
    "windows/amd64",
    "windows/arm64",
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
        for name in std::iter::once(&input.name).chain(&input.aliases) {
            if name.is_empty() {
                out.push(format!("{at}: empty name or alias"));
            }
            if !names.insert(name.clone()) {
                out.push(format!("{at}: duplicate name {name:?}"));
            }
            if TAKEN.contains(&name.as_str()) {
                out.push(format!("{at}: {name:?} collides with an Elastic input"));
            }
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
                out.push(format!("{at}: unknown platform {p:?}"));
            }
            if !seen.insert(p) {
                out.push(format!("{at}: duplicate platform {p:?}"));
            }
        }
        if input.outputs.is_empty() {
            out.push(format!("{at}: outputs must not be empty"));
        }
        match (&input.command, &input.service) {
            (Some(_), Some(_)) => out.push(format!("{at}: both command and service")),
            (None, None) => out.push(format!("{at}: command or service is required")),
            _ => {}
        }
        if let Some(cmd) = &input.command {
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
            if let Some(stop) = cmd.timeouts.as_ref().and_then(|t| t.stop.as_deref()) {
                // The Agent waits `stop` minus 5 s before SIGKILL: leave time to commit.
                if go_duration_secs(stop).is_some_and(|s| s < 10.0) {
                    out.push(format!("{at}: stop timeout {stop} leaves no time to drain"));
                }
            }
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
        for os in ["linux", "darwin", "windows"] {
            assert!(
                input.platforms.iter().any(|p| p.starts_with(os)),
                "{} runs on {os}",
                input.name
            );
        }
        assert_eq!(input.outputs, ["otlp"]);
        let cmd = input.command.as_ref().expect("command");
        assert_eq!(cmd.args, ["agent"], "the Agent appends -E path.data=...");
        let t = cmd.timeouts.as_ref().expect("timeouts");
        assert_eq!(t.checkin.as_deref().and_then(go_duration_secs), Some(30.0));
        assert!(t.restart.as_deref().and_then(go_duration_secs).is_some());
        assert!(t.stop.as_deref().and_then(go_duration_secs).is_some());
        assert!(
            cmd.env
                .iter()
                .all(|e| !e.name.is_empty() && !e.value.is_empty())
        );
        assert!(!input.isolate_units && !input.single_receiver);
        assert!(input.proxied_actions.is_empty() && input.runtime.is_none());
        assert!(cmd.name.is_none() && cmd.log.is_none());
        assert!(cmd.maximum_restarts_per_period.is_some());
    }
    assert!(spec.component_files.is_empty());
}

#[test]
fn the_checker_catches_schema_violations() {
    let bad: Spec = serde_norway::from_str(
        "version: 1\ninputs:\n  - name: cel\n    description: ''\n    platforms: [linux/amd64, linux/amd64, plan9/386]\n    outputs: []\n",
    )
    .expect("parses");
    let found = problems(&bad);
    for needle in [
        "version must be 2",
        "collides",
        "description is required",
        "duplicate platform",
        "unknown platform",
        "outputs must not be empty",
        "command or service",
    ] {
        assert!(
            found.iter().any(|p| p.contains(needle)),
            "{needle}: {found:?}"
        );
    }
    let unknown_key =
        serde_norway::from_str::<Spec>("version: 2\ninputs: []\nshippers: [x]\n").is_err();
    assert!(unknown_key, "removed keys such as `shippers` are rejected");
    assert_eq!(go_duration_secs("1m30s"), Some(90.0));
    assert_eq!(go_duration_secs("90d"), None);
}
