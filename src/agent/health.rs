//! Unit health as a state machine (DESIGN §5, spec §8.3): what a running input unit reports,
//! derived from its streams' [`StreamStatus`].
//!
//! CONFIGURING until every stream has delivered its first page, then HEALTHY; DEGRADED only on sustained trouble (≥ [`DEGRADED_AFTER`]
//! consecutive failed attempts of a stream, which covers rate limiting and a sink that does not
//! acknowledge) with a message naming the stream and its last error, back to HEALTHY on the next
//! success; FAILED when a stream stopped for good (credentials rejected, bad request, state
//! store). The payload carries per-stream cursor, counters and last error, never a secret: the
//! errors are already secret-free (the HTTP client masks them).

use serde_json::{Map, Value, json};

use crate::proto::State;
use crate::telemetry::StreamStatus;
use crate::text::{bound_owned, bounded};

/// Consecutive failed attempts of one stream before its unit turns DEGRADED.
pub(crate) const DEGRADED_AFTER: u64 = 3;

/// A unit's reported health.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// The observed state.
    pub state: State,
    /// Short human message (shown in Fleet).
    pub message: String,
    /// `{"streams": {id: {...}}}`.
    pub payload: Map<String, Value>,
}

/// One stream's state: FAILED once it stopped for good, DEGRADED after [`DEGRADED_AFTER`]
/// failures in a row, else HEALTHY.
pub(crate) fn stream_state(status: &StreamStatus) -> State {
    if status.fatal.is_some() {
        State::Failed
    } else if status.consecutive_failures >= DEGRADED_AFTER {
        State::Degraded
    } else {
        State::Healthy
    }
}

/// Health of a running input unit from its streams (in config order).
pub fn derive(streams: &[(String, StreamStatus)]) -> Health {
    let mut per_stream = Map::new();
    let mut failed = Vec::new();
    let mut degraded = Vec::new();
    for (id, status) in streams {
        let state = stream_state(status);
        // Errors are bounded where they are made; cut again here, whatever made them.
        let fatal = status.fatal.as_deref().map(bounded);
        let last_error = status.last_error.as_deref().map(bounded);
        match state {
            State::Failed => failed.push(format!(
                "stream {id}: {}",
                fatal.as_deref().unwrap_or("stopped")
            )),
            State::Degraded => degraded.push(format!(
                "stream {id}: {} consecutive failures, last: {}",
                status.consecutive_failures,
                last_error.as_deref().unwrap_or("unknown error")
            )),
            _ => {}
        }
        per_stream.insert(
            id.clone(),
            json!({
                "status": state.as_str_name(),
                "error": fatal.or(last_error).unwrap_or_default(),
                "cursor": status.cursor,
                "consecutive_failures": status.consecutive_failures,
                "indicators": status.counters.indicators,
                "pages": status.counters.pages,
                "errors": status.counters.errors,
                "error_documents": status.counters.error_documents,
                "duplicates_dropped": status.counters.duplicates_dropped,
                "future_timestamps": status.counters.future_timestamps,
                "invalid_utf8": status.counters.invalid_utf8,
                "backfill_progress": status.backfill_progress,
                "caught_up_at": status.caught_up.map(|c| c.at.to_rfc3339()),
                "next_poll_at": status.caught_up.and_then(|c| c.next_poll).map(|t| t.to_rfc3339()),
                "notes": status.notes,
            }),
        );
    }
    let first_poll: Vec<&str> = streams
        .iter()
        .filter(|(_, s)| s.counters.pages == 0)
        .map(|(id, _)| id.as_str())
        .collect();
    let (state, message) = if !failed.is_empty() {
        (State::Failed, failed.join("; "))
    } else if !degraded.is_empty() {
        (State::Degraded, degraded.join("; "))
    } else if !first_poll.is_empty() {
        (
            State::Configuring,
            format!(
                "Configuring: first poll in progress ({})",
                first_poll.join(", ")
            ),
        )
    } else {
        let lags: Vec<String> = streams
            .iter()
            .map(|(id, s)| format!("stream {id} {}", s.standing()))
            .collect();
        let polling = format!("Healthy: polling {} stream(s)", streams.len());
        (
            State::Healthy,
            if lags.is_empty() {
                polling
            } else {
                format!("{polling}; {}", lags.join("; "))
            },
        )
    };
    // Insecure settings stay visible in Fleet whatever the state.
    let notes: Vec<String> = streams
        .iter()
        .flat_map(|(id, s)| s.notes.iter().map(move |n| format!("stream {id}: {n}")))
        .collect();
    let message = if notes.is_empty() {
        message
    } else {
        format!("{message} (warning: {})", notes.join("; "))
    };
    let mut payload = Map::new();
    payload.insert("streams".into(), Value::Object(per_stream));
    Health {
        state,
        // The unit message of CheckinV2, shown in Fleet: one bounded line however many
        // streams fail.
        message: bound_owned(message),
        payload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::MAX_SERVER_TEXT;

    fn status(failures: u64, fatal: Option<&str>) -> StreamStatus {
        StreamStatus {
            counters: crate::telemetry::CounterSnapshot {
                pages: 1,
                ..Default::default()
            },
            consecutive_failures: failures,
            last_error: (failures > 0).then(|| "fetch: HTTP 429 Too Many Requests".to_owned()),
            fatal: fatal.map(str::to_owned),
            cursor: Some("2026-01-01T00:00:00Z".into()),
            backfill_progress: None,
            caught_up: None,
            notes: Vec::new(),
        }
    }

    #[test]
    fn a_caught_up_stream_says_when_and_when_it_polls_next() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-05T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let mut s = status(0, None);
        s.caught_up = Some(crate::telemetry::Caught {
            at,
            next_poll: Some(at + chrono::TimeDelta::hours(1)),
        });
        let h = derive(&[("tc".into(), s.clone())]);
        // Absolute times: the message changes when the stream does, not every second.
        assert!(
            h.message.ends_with(
                "; stream tc caught up at 2026-12-05T10:00:00Z; next poll at 2026-12-05T11:00:00Z"
            ),
            "{}",
            h.message
        );
        assert_eq!(derive(&[("tc".into(), s.clone())]).message, h.message);
        assert_eq!(
            h.payload["streams"]["tc"]["next_poll_at"],
            json!("2026-12-05T11:00:00+00:00")
        );
        // Diagnostics (asked for, not pushed) say it relative to now.
        let now = at + chrono::TimeDelta::minutes(10);
        assert_eq!(s.lag(now), "caught up 10 m ago; next poll in 50 m");
        assert_eq!(
            StreamStatus::default().standing(),
            "first sweep in progress"
        );
    }

    #[test]
    fn a_backfilling_stream_says_how_far_it_is() {
        let mut s = status(0, None);
        s.backfill_progress = Some(crate::telemetry::BackfillProgress {
            done: 400,
            estimated: 1000,
        });
        let h = derive(&[("tc".into(), s)]);
        assert_eq!(h.state, State::Healthy);
        assert!(
            h.message
                .ends_with("; stream tc backfilling: 40 % (estimated)"),
            "{}",
            h.message
        );
        assert_eq!(
            h.payload["streams"]["tc"]["backfill_progress"],
            json!({"done": 400, "estimated": 1000})
        );
    }

    #[test]
    fn tls_verification_off_is_noted_in_every_state() {
        let mut insecure = status(0, None);
        insecure.notes = vec![crate::config::TLS_VERIFICATION_OFF.to_owned()];
        let h = derive(&[
            ("s1".into(), status(0, None)),
            ("s2".into(), insecure.clone()),
        ]);
        assert_eq!(h.state, State::Healthy);
        assert!(h.message.starts_with("Healthy"), "{}", h.message);
        assert!(
            h.message
                .contains("stream s2: ssl.verification_mode is none"),
            "{}",
            h.message
        );
        insecure.consecutive_failures = DEGRADED_AFTER;
        let h = derive(&[("s2".into(), insecure)]);
        assert_eq!(h.state, State::Degraded);
        assert!(
            h.message.contains("verification_mode is none"),
            "{}",
            h.message
        );
    }

    #[test]
    fn health_message_and_payload_are_bounded_however_long_the_errors() {
        let mut long = status(5, None);
        long.last_error = Some("x".repeat(20 * 1024 * 1024));
        let h = derive(&[("s1".into(), long.clone()), ("s2".into(), long)]);
        assert_eq!(h.state, State::Degraded);
        assert!(
            h.message.len() <= MAX_SERVER_TEXT + 32,
            "{}",
            h.message.len()
        );
        let error = h.payload["streams"]["s1"]["error"].as_str().unwrap();
        assert!(error.len() <= MAX_SERVER_TEXT + 32, "{}", error.len());
    }

    #[test]
    fn configuring_until_first_page() {
        let mut fresh = status(0, None);
        fresh.counters.pages = 0;
        let h = derive(&[("s1".into(), status(0, None)), ("s2".into(), fresh)]);
        assert_eq!(h.state, State::Configuring);
        assert!(h.message.contains("s2"), "{}", h.message);
    }

    #[test]
    fn healthy_degraded_recovered_failed() {
        let h = derive(&[
            ("s1".into(), status(0, None)),
            ("s2".into(), status(2, None)),
        ]);
        assert_eq!(
            h.state,
            State::Healthy,
            "two failures are not sustained yet"
        );
        assert_eq!(h.payload["streams"]["s1"]["cursor"], "2026-01-01T00:00:00Z");

        let h = derive(&[
            ("s1".into(), status(0, None)),
            ("s2".into(), status(3, None)),
        ]);
        assert_eq!(h.state, State::Degraded);
        assert!(
            h.message.contains("s2") && h.message.contains("429"),
            "{}",
            h.message
        );
        assert_eq!(h.payload["streams"]["s2"]["status"], "DEGRADED");

        let h = derive(&[("s2".into(), status(0, None))]);
        assert_eq!(h.state, State::Healthy, "back to HEALTHY after a success");

        let h = derive(&[
            ("s1".into(), status(5, None)),
            (
                "s2".into(),
                status(1, Some("credentials rejected (HTTP 401)")),
            ),
        ]);
        assert_eq!(h.state, State::Failed);
        assert!(h.message.contains("401"), "{}", h.message);
    }
}
