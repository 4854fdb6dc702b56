//! The `ti-sidecar` binary: command-line parsing and process edges (signals, exit codes).
//! Everything else lives in the library.
#![forbid(unsafe_code)]

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::builder::TypedValueParser as _;
use clap::{Parser, Subcommand};

use ti_sidecar::config::{self, IocExpiration};
use ti_sidecar::ingest::EcsEvent;
use ti_sidecar::ingest::MapOptions;
use ti_sidecar::policy;
use ti_sidecar::runner::{self, RunOptions};
use ti_sidecar::source::registry::{PLATFORMS, PlatformInfo};

/// Threat-intelligence input component: ThreatConnect (and ThreatQ) indicators to ECS.
#[derive(Debug, Parser)]
#[command(name = "ti-sidecar", version, about)]
struct Cli {
    /// Log level for stderr JSON logs (overridden by RUST_LOG).
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    /// Write the JSON log lines to this file (0600) instead of stderr, which then shows only
    /// warnings and errors (`demo` on a terminal uses `demo.log`).
    #[arg(long, global = true)]
    log_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Standalone mode: poll the configured inputs into the configured outputs.
    Run {
        /// The YAML configuration (elastic-agent.yml shape).
        #[arg(long)]
        config: PathBuf,
        /// Where cursors and request traces are kept.
        #[arg(long, default_value = "state")]
        state_dir: PathBuf,
        /// Run each input until it has caught up, then exit.
        #[arg(long)]
        once: bool,
    },
    /// Show or reset the committed cursors of a state directory (stop the sidecar first).
    State {
        #[command(subcommand)]
        action: StateAction,
    },
    /// Report every configuration problem at once (exit 2 if there is any).
    Validate {
        /// The YAML configuration.
        #[arg(long)]
        config: PathBuf,
    },
    /// Offline pipeline: raw vendor objects on stdin (one per line) to ECS documents on stdout.
    Map {
        /// The platform the objects come from.
        #[arg(long, value_parser = platform_parser())]
        source: PlatformInfo,
        /// Add the `preserve_original_event` tag (the integration option).
        #[arg(long)]
        preserve_original: bool,
        /// `ioc_expiration_duration`, e.g. `90d` (absent: no expiration, as in Elastic's tests).
        #[arg(long)]
        ioc_expiration_duration: Option<String>,
        /// Extra tags, after `preserve_original_event`.
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// Run a vendor API simulator.
    #[cfg(feature = "harness")]
    Simulate {
        #[command(subcommand)]
        platform: SimPlatform,
    },
    #[cfg(feature = "harness")]
    /// A small Elastic Agent: spawns `ti-sidecar agent`, serves CheckinV2/Actions over mTLS and
    /// an OTLP logs receiver, and writes received events as NDJSON.
    Host {
        /// The policy (same schema as `run --config`); editing it pushes a new policy.
        #[arg(long)]
        policy: PathBuf,
        /// Append received events here as NDJSON (default: only count them).
        #[arg(long)]
        events: Option<PathBuf>,
        /// The component's state directory (`-E path.data=`).
        #[arg(long, default_value = "host-data")]
        data_dir: PathBuf,
        /// Request diagnostics once every unit is healthy and save the files in this directory.
        #[arg(long)]
        diagnostics: Option<PathBuf>,
        /// Delay before restarting a component that exited (`command.timeouts.restart`).
        #[arg(long, default_value = "10s", value_parser = parse_duration_arg)]
        restart_delay: std::time::Duration,
        /// Check-in watchdog period (`command.timeouts.checkin`).
        #[arg(long, default_value = "30s", value_parser = parse_duration_arg)]
        checkin_period: std::time::Duration,
        /// Measure the component's control-plane answer latency: send a diagnostics action this
        /// often (one at a time) and print `control probe: N answered, p50, p99, max` at the
        /// stop.
        #[arg(long, value_parser = parse_duration_arg)]
        probe_control_every: Option<std::time::Duration>,
    },
    /// The mode Elastic Agent launches: StartUpInfo on stdin, then CheckinV2 and Actions over
    /// mTLS. `-E path.data=DIR` sets the state directory; other `-E` pairs and unknown flags are
    /// ignored.
    #[command(disable_help_flag = true)]
    Agent {
        /// `-E key=value` pairs (and anything else the Agent passes).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
    #[cfg(feature = "harness")]
    /// Both simulators, the host harness and `ti-sidecar agent` on loopback: shows unit states
    /// and progress, writes `demo-events.ndjson` and prints a summary once both have caught up.
    Demo {
        /// Indicators each simulator serves.
        #[arg(long, default_value_t = 5000)]
        indicators: usize,
        /// Where to write the events.
        #[arg(long, default_value = "demo-events.ndjson")]
        events: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum StateAction {
    /// Print the committed cursors as one JSON object on stdout: store key → cursor.
    Show {
        /// The state directory (`run --state-dir`, or the agent's `path.data`).
        #[arg(long)]
        state_dir: PathBuf,
        /// Only this stream: its key `<input id>/<stream id>`, or its stream id alone when that
        /// is unambiguous.
        #[arg(long)]
        stream: Option<String>,
    },
    /// Delete one stream's cursor: it starts again from its initial look-back on its next run.
    Reset {
        /// The state directory (`run --state-dir`, or the agent's `path.data`).
        #[arg(long)]
        state_dir: PathBuf,
        /// The stream: its key `<input id>/<stream id>` as `state show` prints it, or its stream
        /// id alone when that is unambiguous.
        #[arg(long)]
        stream: String,
    },
}

/// `--source`: the short name of a registered platform.
fn platform_parser() -> impl clap::builder::TypedValueParser<Value = PlatformInfo> {
    clap::builder::PossibleValuesParser::new(PLATFORMS.iter().map(|p| p.name)).try_map(
        |name: String| {
            PlatformInfo::by_name(&name).ok_or_else(|| format!("unknown platform {name:?}"))
        },
    )
}

#[cfg(feature = "harness")]
#[derive(Debug, Subcommand)]
enum SimPlatform {
    /// A faithful fake ThreatConnect V3 API.
    Threatconnect(ti_sidecar::sim::threatconnect::SimArgs),
    /// A faithful fake ThreatQ API (OAuth2 token endpoint and collection paging).
    Threatq(ti_sidecar::sim::threatq::SimArgs),
}

/// jemalloc (the `jemalloc` feature, on by default): its background threads return freed
/// memory to the system at once (`.cargo/config.toml`), so memory falls back to its
/// idle level after a backfill instead of staying at the peak, as glibc's arenas do.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // Purging needs jemalloc's background threads; the build-time configuration turns them on
    // too, this covers a build without it. Failing to start them only costs idle memory.
    #[cfg(feature = "jemalloc")]
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
    let cli = Cli::parse();
    if let Command::Agent { args } = &cli.command {
        return agent(args, &cli.log_level);
    }
    // `run` and `demo` show a live display when stderr is a terminal; logs then go to the
    // log file, and only warnings reach the terminal.
    #[cfg(feature = "harness")]
    let demo = matches!(cli.command, Command::Demo { .. });
    #[cfg(not(feature = "harness"))]
    let demo = false;
    let console = (demo || matches!(cli.command, Command::Run { .. }))
        && ti_sidecar::console::stderr_is_terminal();
    let log_file = cli
        .log_file
        .clone()
        .or_else(|| (console && demo).then(|| PathBuf::from("demo.log")));
    let targets = ti_sidecar::telemetry::LogTargets {
        level: &cli.log_level,
        file: log_file.as_deref(),
        console,
    };
    if let Err(e) = ti_sidecar::telemetry::init_targets(targets) {
        eprintln!("--log-file: {e}");
        return ExitCode::from(2);
    }
    let console = console.then(ti_sidecar::console::Console::start);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(cli.command, console, log_file)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(1)
        }
    }
}

/// `ti-sidecar agent`: reads StartUpInfo from stdin (to EOF), then runs the component until
/// SIGTERM (exit 0) or until the Agent's streams stay unreachable (exit 1: the Agent restarts
/// us).
fn agent(args: &[String], log_level: &str) -> ExitCode {
    use tracing::level_filters::LevelFilter;
    let default = log_level
        .parse::<LevelFilter>()
        .unwrap_or(LevelFilter::INFO);
    let levels = ti_sidecar::agent::UnitLevels::new(default);
    ti_sidecar::telemetry::init_with_filter(levels.filter());
    let launch = ti_sidecar::agent::parse_args(args);
    if !launch.ignored.is_empty() {
        tracing::debug!(ignored = ?launch.ignored, "ignoring arguments");
    }
    let info = match ti_sidecar::agent::read_start_up_info(std::io::stdin().lock()) {
        Ok(info) => info,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let options = ti_sidecar::agent::AgentOptions::new(launch.path_data, levels);
    let result = runtime.block_on(async move {
        let shutdown = ti_sidecar::signal::shutdown_token();
        ti_sidecar::agent::run(info, options, shutdown).await
    });
    // Poll loops that ignored cancellation must not keep the process alive past the Agent's
    // stop timeout.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Every way out with an error says why, in one JSON line the Agent keeps.
            tracing::error!("cannot run as an Agent component: {e}");
            ExitCode::from(1)
        }
    }
}

async fn dispatch(
    command: Command,
    console: Option<std::sync::Arc<ti_sidecar::console::Console>>,
    #[cfg_attr(not(feature = "harness"), allow(unused_variables))] log_file: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    match command {
        Command::Agent { .. } => Ok(ExitCode::from(2)),
        Command::Validate { config } => Ok(validate(&config)),
        Command::State { action } => state(action),
        Command::Run {
            config,
            state_dir,
            once,
        } => {
            let cfg = match policy::load_file(&config) {
                Ok(c) => c,
                Err(problems) => {
                    report_problems(&problems);
                    return Ok(ExitCode::from(2));
                }
            };
            let shutdown = ti_sidecar::signal::shutdown_token();
            let options = RunOptions {
                state_dir,
                once,
                retry: None,
                poll_retry_delay: None,
            };
            let started = std::time::Instant::now();
            let display = tokio_util::sync::CancellationToken::new();
            if let Some(console) = &console {
                console.watch_streams(display.clone());
            }
            let result = runner::run(&cfg, &options, shutdown).await;
            if let Some(console) = &console {
                display.cancel();
                console.finish();
                if let Ok(summary) = &result {
                    let table =
                        ti_sidecar::console::summary_table(&summary.per_stream, started.elapsed());
                    eprintln!("{table}");
                }
            }
            result?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Map {
            source,
            preserve_original,
            ioc_expiration_duration,
            tags,
        } => map(source, preserve_original, ioc_expiration_duration, tags),
        #[cfg(feature = "harness")]
        Command::Simulate { platform } => match platform {
            SimPlatform::Threatconnect(args) => {
                ti_sidecar::sim::threatconnect::run(args).await?;
                Ok(ExitCode::SUCCESS)
            }
            SimPlatform::Threatq(args) => {
                ti_sidecar::sim::threatq::run(args).await?;
                Ok(ExitCode::SUCCESS)
            }
        },
        #[cfg(feature = "harness")]
        Command::Host {
            policy,
            events,
            data_dir,
            diagnostics,
            restart_delay,
            checkin_period,
            probe_control_every,
        } => {
            let component = std::env::current_exe().context("locating this binary")?;
            let options = ti_sidecar::host::HostOptions {
                policy,
                events,
                data_dir,
                diagnostics,
                component,
                restart_delay,
                checkin_period,
                control_probe: probe_control_every,
            };
            match ti_sidecar::host::run(options, ti_sidecar::signal::shutdown_token()).await {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(ti_sidecar::host::HostError::Policy(problems)) => {
                    report_problems(&problems);
                    Ok(ExitCode::from(2))
                }
                Err(e) => Err(e.into()),
            }
        }
        #[cfg(feature = "harness")]
        Command::Demo { indicators, events } => {
            // The host launches this very binary in agent mode, as Elastic Agent would.
            let component = std::env::current_exe().context("locating this binary")?;
            let options = ti_sidecar::demo::DemoOptions {
                indicators,
                events,
                component,
                console: console.clone(),
            };
            let summary =
                ti_sidecar::demo::run(options, ti_sidecar::signal::shutdown_token()).await;
            if let Some(console) = &console {
                console.finish();
            }
            println!("{}", summary?);
            println!("{}", ti_sidecar::demo::next_steps(log_file.as_deref()));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `ti-sidecar state show|reset`. An unknown `--stream` exits 2, listing the known keys.
fn state(action: StateAction) -> anyhow::Result<ExitCode> {
    use ti_sidecar::state::StateStore;
    let (state_dir, wanted) = match &action {
        StateAction::Show { state_dir, stream } => (state_dir, stream.as_deref()),
        StateAction::Reset { state_dir, stream } => (state_dir, Some(stream.as_str())),
    };
    let store = StateStore::open_existing(state_dir)?;
    let key = match wanted.map(|w| store.resolve_key(w)).transpose()? {
        Some(Err(lookup)) => {
            tracing::error!("{lookup}");
            return Ok(ExitCode::from(2));
        }
        Some(Ok(key)) => Some(key),
        None => None,
    };
    match action {
        StateAction::Show { .. } => {
            let cursors: serde_json::Map<String, serde_json::Value> = store
                .all()?
                .into_iter()
                .filter(|(k, _)| key.as_ref().is_none_or(|wanted| wanted == k))
                .collect();
            println!("{}", serde_json::to_string_pretty(&cursors)?);
        }
        StateAction::Reset { .. } => {
            let key = key.unwrap_or_default();
            let previous = store
                .all()?
                .into_iter()
                .find_map(|(k, v)| (k == key).then_some(v))
                .unwrap_or(serde_json::Value::Null)
                .to_string();
            store.remove(&key)?;
            let previous = ti_sidecar::text::bounded(&previous);
            println!(
                "reset {key}: its cursor ({previous}) is deleted; the stream starts again from its \
                 initial look-back (ThreatConnect: initial_interval; ThreatQ: the start of the \
                 collection) on its next run"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "harness")]
fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    config::parse_duration(s).map_err(|e| e.to_string())
}

fn report_problems(problems: &config::Problems) {
    for p in &problems.0 {
        tracing::error!(field = %p.field, "{p}");
    }
}

fn validate(path: &std::path::Path) -> ExitCode {
    match policy::load_file(path) {
        Ok(cfg) => {
            let streams: usize = cfg.inputs.iter().map(|i| i.streams.len()).sum();
            println!(
                "{}: OK ({} input(s), {streams} stream(s))",
                path.display(),
                cfg.inputs.len()
            );
            for (place, note) in cfg.security_notes() {
                println!("  warning: {place}: {note}");
            }
            ExitCode::SUCCESS
        }
        Err(problems) => {
            println!("{}: {} problem(s)", path.display(), problems.0.len());
            for p in &problems.0 {
                println!("  {p}");
            }
            ExitCode::from(2)
        }
    }
}

/// Lines `map` reads, maps and writes at a time (two blocks of documents are buffered: the one
/// being written and the one being mapped).
const MAP_BLOCK_LINES: usize = 1024;

/// One input line of `map`: its number, its text, and how many invalid UTF-8 sequences were
/// replaced in it.
struct MapLine {
    number: u64,
    text: String,
    invalid_utf8: usize,
}

/// Up to `max` non-blank lines of `input` (numbered on from `number`).
fn read_lines(
    input: &mut impl BufRead,
    max: usize,
    number: &mut u64,
) -> anyhow::Result<Vec<MapLine>> {
    let mut lines = Vec::new();
    let mut bytes = Vec::new();
    while lines.len() < max {
        bytes.clear();
        if input
            .read_until(b'\n', &mut bytes)
            .context("reading stdin")?
            == 0
        {
            break;
        }
        *number += 1;
        // One bad byte spoils its line, not the run: it is mapped with U+FFFD in its place and
        // the document says so.
        let (text, invalid_utf8) = ti_sidecar::source::decode_body(&bytes);
        let text = text.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            continue;
        }
        lines.push(MapLine {
            number: *number,
            text: text.to_owned(),
            invalid_utf8,
        });
    }
    Ok(lines)
}

/// Appends the documents of `lines` to `out`, one JSON line each.
fn map_lines(lines: &[MapLine], mapper: &(dyn Fn(&str) -> EcsEvent + Sync), out: &mut Vec<u8>) {
    for line in lines {
        let mut event = mapper(&line.text);
        if line.invalid_utf8 > 0 {
            ti_sidecar::ingest::push_error_message(
                event.doc.make_map(),
                format!(
                    "line {} is not valid UTF-8: {} invalid byte sequence(s) were replaced with \
                     U+FFFD",
                    line.number, line.invalid_utf8
                ),
            );
        }
        event.doc.write_json(out);
        out.push(b'\n');
    }
}

fn map(
    source: PlatformInfo,
    preserve_original: bool,
    ioc_expiration_duration: Option<String>,
    extra_tags: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let ioc_expiration = ioc_expiration_duration
        .map(|d| {
            IocExpiration::parse(&d).with_context(|| format!("--ioc-expiration-duration {d:?}"))
        })
        .transpose()?;
    let mut tags = Vec::new();
    if preserve_original {
        tags.push("preserve_original_event".to_owned());
    }
    tags.extend(extra_tags);
    let options = MapOptions {
        ioc_expiration,
        tags,
    };
    let mapper = move |line: &str| (source.map)(line, &options);
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let mut stdin = std::io::stdin().lock();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut number = 0u64;
    // While the workers map one block, this thread writes the documents of the previous block
    // and reads the next one. The output buffers are kept from block to block: growing fresh
    // ones (tens of MB per block) cost page faults and copies.
    let mut block = read_lines(&mut stdin, MAP_BLOCK_LINES, &mut number)?;
    let mut mapped: Vec<Vec<u8>> = vec![Vec::new(); workers];
    let mut written: Vec<Vec<u8>> = vec![Vec::new(); workers];
    while !block.is_empty() {
        let per_worker = block.len().div_ceil(workers);
        for buf in &mut mapped {
            buf.clear();
        }
        let next = std::thread::scope(|scope| -> anyhow::Result<Vec<MapLine>> {
            let handles: Vec<_> = block
                .chunks(per_worker)
                .zip(mapped.iter_mut())
                .map(|(lines, buf)| scope.spawn(|| map_lines(lines, &mapper, buf)))
                .collect();
            let io = write_parts(&mut out, &written)
                .and_then(|()| read_lines(&mut stdin, MAP_BLOCK_LINES, &mut number));
            for h in handles {
                h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            }
            io
        })?;
        std::mem::swap(&mut mapped, &mut written);
        block = next;
    }
    write_parts(&mut out, &written)?;
    out.flush().context("writing stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// Writes the mapped parts of a block, in order.
fn write_parts(out: &mut impl Write, parts: &[Vec<u8>]) -> anyhow::Result<()> {
    for part in parts {
        out.write_all(part).context("writing stdout")?;
    }
    Ok(())
}
