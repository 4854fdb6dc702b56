//! The live display of `run` and `demo` when stderr is a terminal: one line per stream (state,
//! indicators, rate, lag, last error), redrawn in place (`indicatif`), and a summary table at
//! the end. Log lines then go to `--log-file` (JSON, as ever), and only warnings and errors
//! reach the terminal, printed above the display. When stderr is not a terminal nothing here
//! runs: the JSON lines Elastic Agent reads are unchanged.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::proto::State;
use crate::telemetry::metrics::{self, StreamLabels};
use crate::telemetry::{CounterSnapshot, StreamStatus};

/// Whether stderr is a terminal (then `run` and `demo` show the live display).
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// The display, while one is shown.
static ACTIVE: OnceLock<Arc<Console>> = OnceLock::new();

/// Whether a live display is shown.
pub(crate) fn is_active() -> bool {
    ACTIVE.get().is_some()
}

/// Prints `text` on the terminal above the live display, or plainly when there is none.
pub(crate) fn print_above(text: &str) {
    match ACTIVE.get() {
        Some(console) => console.multi.suspend(|| eprintln!("{text}")),
        None => eprintln!("{text}"),
    }
}

/// A live display: named lines redrawn in place.
#[derive(Debug)]
pub struct Console {
    multi: MultiProgress,
    lines: Mutex<BTreeMap<String, ProgressBar>>,
    started: Instant,
}

impl Console {
    /// Starts the display on stderr (at most one per process).
    pub fn start() -> Arc<Self> {
        let console = Arc::new(Self {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4)),
            lines: Mutex::default(),
            started: Instant::now(),
        });
        let _ = ACTIVE.set(Arc::clone(&console));
        console
    }

    /// Sets line `key` to `text` (added the first time).
    pub(crate) fn line(&self, key: &str, text: String) {
        let Ok(mut lines) = self.lines.lock() else {
            return;
        };
        let bar = lines.entry(key.to_owned()).or_insert_with(|| {
            let bar = self.multi.add(ProgressBar::new_spinner());
            let style = ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        });
        bar.set_message(text);
    }

    /// Removes every line (before the summary is printed).
    pub fn finish(&self) {
        if let Ok(mut lines) = self.lines.lock() {
            for (_, bar) in std::mem::take(&mut *lines) {
                bar.finish_and_clear();
            }
        }
        let _ = self.multi.clear();
    }

    /// Redraws one line per stream of this process until `stop`.
    pub fn watch_streams(self: &Arc<Self>, stop: CancellationToken) {
        let console = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let elapsed = console.started.elapsed();
                let now = chrono::Utc::now();
                for (labels, status) in metrics::stream_statuses() {
                    let key = format!("{}/{}", labels.input, labels.stream);
                    console.line(&key, stream_line(&labels, &status, elapsed, now));
                }
            }
        });
    }
}

/// What a stream's line says: state, indicators, rate, lag and the last error.
pub(crate) fn stream_line(
    labels: &StreamLabels,
    status: &StreamStatus,
    elapsed: Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let state = match crate::agent::health::stream_state(status) {
        State::Failed => "FAILED",
        State::Degraded => "DEGRADED",
        _ if status.caught_up.is_some() => "caught up",
        _ => "polling",
    };
    let secs = elapsed.as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let rate = if secs > 0.0 {
        status.counters.indicators as f64 / secs
    } else {
        0.0
    };
    let mut line = format!(
        "{:<14} {:<28} {:<9} {:>9} indicators {:>8.0}/s  {}",
        labels.platform,
        labels.stream,
        state,
        status.counters.indicators,
        rate,
        status.lag(now)
    );
    if let Some(error) = status.fatal.as_ref().or(status.last_error.as_ref()) {
        line.push_str("  last error: ");
        line.push_str(&crate::text::bounded_to(error, 120));
    }
    line
}

/// The final table of a run: one row per stream, from the run's summary.
pub fn summary_table(per_stream: &BTreeMap<String, CounterSnapshot>, elapsed: Duration) -> String {
    let mut out = format!(
        "{:<28} {:>10} {:>7} {:>10} {:>7}\n",
        "stream", "indicators", "pages", "error docs", "errors"
    );
    for (stream, c) in per_stream {
        out.push_str(&format!(
            "{:<28} {:>10} {:>7} {:>10} {:>7}\n",
            stream, c.indicators, c.pages, c.error_documents, c.errors,
        ));
    }
    out.push_str(&format!("in {:.1} s", elapsed.as_secs_f64()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Caught;

    fn labels() -> StreamLabels {
        StreamLabels {
            platform: "threatconnect".into(),
            input: "tc".into(),
            stream: "tc-indicator".into(),
        }
    }

    #[test]
    fn a_stream_line_says_state_count_rate_lag_and_error() {
        let now = chrono::Utc::now();
        let mut status = StreamStatus {
            counters: CounterSnapshot {
                indicators: 2000,
                ..CounterSnapshot::default()
            },
            ..StreamStatus::default()
        };
        let line = stream_line(&labels(), &status, Duration::from_secs(4), now);
        assert!(line.contains("polling"), "{line}");
        assert!(line.contains("2000 indicators"), "{line}");
        assert!(line.contains("500/s"), "{line}");

        status.caught_up = Some(Caught {
            at: now - chrono::TimeDelta::seconds(12),
            next_poll: None,
        });
        let line = stream_line(&labels(), &status, Duration::from_secs(4), now);
        assert!(line.contains("caught up"), "{line}");

        status.consecutive_failures = 3;
        status.last_error = Some(format!("fetch: 503 {}", "x".repeat(500)));
        let line = stream_line(&labels(), &status, Duration::from_secs(4), now);
        assert!(line.contains("DEGRADED"), "{line}");
        assert!(line.contains("last error: fetch: 503"), "{line}");
        assert!(line.len() < 400, "the error is cut: {line}");
    }

    #[test]
    fn the_summary_has_a_row_per_stream() {
        let counters = CounterSnapshot {
            indicators: 7,
            pages: 2,
            ..CounterSnapshot::default()
        };
        let per_stream = BTreeMap::from([("tc-indicator".to_owned(), counters)]);
        let table = summary_table(&per_stream, Duration::from_millis(1500));
        let rows: Vec<&str> = table.lines().collect();
        assert_eq!(rows.len(), 3, "{table}");
        assert!(
            rows[1].contains("tc-indicator") && rows[1].contains(" 7 "),
            "{table}"
        );
        assert_eq!(rows[2], "in 1.5 s");
    }
}
