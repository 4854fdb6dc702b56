//! Build once, then run: what turns one validated stream into its poll loop, shared by
//! standalone mode ([`crate::runner`]) and the agent's input units ([`crate::agent`]).
//!
//! [`StreamPoller::into_loop`] does every fallible step up front (the HTTP client with its TLS
//! and proxy settings, the request trace, the platform's source, found through
//! [`crate::source::registry`]); what it returns only polls, and fails only as a poll loop
//! does ([`PollError`]).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::http::{HttpBuildError, HttpClient, RetryPolicy};
use crate::policy::StreamConfig;
use crate::poll::{Outcome, PollError, Poller, Schedule};
use crate::sink::Sink;
use crate::source::Source;
use crate::source::registry::{Platform, PlatformVisitor, StreamSettings as _};
use crate::state::{StateStore, cursor_key};
use crate::telemetry::StreamCounters;
use crate::telemetry::metrics::{StreamLabels, register_stream};

/// A stream could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Its HTTP client could not be built (`ssl`, `proxy_url`).
    #[error("inputs[{input}].streams[{stream}]: {source}")]
    Http {
        /// Input id.
        input: String,
        /// Stream id.
        stream: String,
        /// Why.
        source: HttpBuildError,
    },
}

/// Knobs of every stream of a process (standalone or agent).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where cursors (and request traces) live.
    pub state_dir: PathBuf,
    /// Stop each stream once it has caught up.
    pub once: bool,
    /// Override of the HTTP retry schedule (tests use short delays).
    pub retry: Option<RetryPolicy>,
    /// Override of the poll loop's first retry delay (tests use short delays).
    pub poll_retry_delay: Option<Duration>,
}

/// Where a stream's request trace goes: always directly inside `<state_dir>/request-trace`,
/// whatever the ids hold (they come from the policy; see [`crate::fsutil::path_component`]).
pub(crate) fn trace_path(state_dir: &Path, input_id: &str, stream_id: &str) -> PathBuf {
    use crate::fsutil::path_component;
    state_dir.join("request-trace").join(format!(
        "{}--{}.ndjson",
        path_component(input_id),
        path_component(stream_id)
    ))
}

/// A stream's poll loop, ready to spawn (the platform's `Poller::run`).
pub(crate) type StreamLoop =
    Pin<Box<dyn Future<Output = Result<Outcome, PollError>> + Send + 'static>>;

/// A poll loop whose panic ends it with [`PollError::Crashed`] instead of unwinding out of the
/// task, where standalone mode would count it as success and a unit would never leave
/// CONFIGURING.
struct CatchPanic {
    stream: String,
    inner: StreamLoop,
}

impl Future for CatchPanic {
    type Output = Result<Outcome, PollError>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = &mut *self;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            this.inner.as_mut().poll(cx)
        })) {
            Ok(poll) => poll,
            // Ready ends the future: the panicked loop is never polled again.
            Err(payload) => std::task::Poll::Ready(Err(PollError::Crashed {
                stream: this.stream.clone(),
                message: crate::text::panic_text(&*payload),
            })),
        }
    }
}

/// Wraps a poll loop so that a panic inside it is a [`PollError::Crashed`] of `stream`.
pub(crate) fn catch_panic(stream: &str, inner: StreamLoop) -> StreamLoop {
    Box::pin(CatchPanic {
        stream: stream.to_owned(),
        inner,
    })
}

/// What every stream's poll loop needs, whatever its platform and sink. Shared by standalone
/// mode and the agent's input units.
pub(crate) struct StreamPoller<'a, K: Sink> {
    /// The input (or agent unit) the stream belongs to; first half of its cursor key.
    pub input_id: &'a str,
    /// The validated stream.
    pub stream: &'a StreamConfig,
    /// Where acknowledged batches go.
    pub sink: Arc<K>,
    /// Cursor store.
    pub state: &'a StateStore,
    /// State directory, retry overrides.
    pub options: &'a RunOptions,
    /// Counters shared with health and diagnostics.
    pub counters: Arc<StreamCounters>,
}

/// Builds one stream's source and poll loop, whichever its platform.
struct Build<'a, K: Sink> {
    poller: StreamPoller<'a, K>,
    shutdown: CancellationToken,
}

impl<'c, K: Sink> PlatformVisitor<'c> for Build<'_, K> {
    type Output = Result<StreamLoop, BuildError>;

    fn visit<P: Platform>(self, config: &'c P::Config) -> Self::Output {
        let http = self.poller.http()?.with_platform(P::NAME);
        register_stream(
            StreamLabels {
                platform: P::NAME.to_owned(),
                input: self.poller.input_id.to_owned(),
                stream: self.poller.stream.identity.id.clone(),
            },
            &self.poller.counters,
        );
        let source = P::build(Arc::new(config.clone()), http);
        let run = self
            .poller
            .poller(source, config.interval())
            .run(self.shutdown);
        Ok(Box::pin(run))
    }
}

impl<K: Sink> StreamPoller<'_, K> {
    /// Builds the platform's source and HTTP client and returns the poll loop, which runs until
    /// `shutdown` (finishing and committing the batch in flight).
    pub(crate) fn into_loop(self, shutdown: CancellationToken) -> Result<StreamLoop, BuildError> {
        for note in self.stream.source.http().security_notes() {
            self.counters.add_note(&self.stream.identity.id, note);
        }
        let stream = self.stream.identity.id.clone();
        let inner = self.stream.source.visit(Build {
            poller: self,
            shutdown,
        })?;
        Ok(catch_panic(&stream, inner))
    }

    /// The stream's HTTP client. The stream's secrets are masked in its request trace, its
    /// errors and, through the counters, in every log line and health message about it.
    fn http(&self) -> Result<HttpClient, BuildError> {
        let secrets = self.stream.source.secrets();
        self.counters.mask_with(secrets.clone());
        let trace = trace_path(
            &self.options.state_dir,
            self.input_id,
            &self.stream.identity.id,
        );
        let http = HttpClient::build(self.stream.source.http(), Some(&trace), secrets).map_err(
            |source| BuildError::Http {
                input: self.input_id.to_owned(),
                stream: self.stream.identity.id.clone(),
                source,
            },
        )?;
        Ok(match self.options.retry {
            Some(retry) => http.with_retry(retry),
            None => http,
        })
    }

    fn poller<S: Source>(self, source: S, interval: Duration) -> Poller<S, K> {
        let mut schedule = Schedule::every(interval, self.options.once);
        if let Some(d) = self.options.poll_retry_delay {
            schedule.retry_delay = d;
        }
        Poller {
            source,
            sink: self.sink,
            state: self.state.clone(),
            cursor_key: cursor_key(self.input_id, &self.stream.identity.id),
            input_id: self.input_id.to_owned(),
            stream: self.stream.identity.clone(),
            schedule,
            counters: self.counters,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a panicking stream task was only logged, and `run --once` exited 0 with an
    /// empty summary. The panic is now the stream's failure.
    #[tokio::test]
    async fn a_panicking_stream_loop_is_a_failure_not_a_success() {
        let crashing: StreamLoop = Box::pin(async {
            tokio::task::yield_now().await;
            panic!("cursor arithmetic overflowed");
        });
        let joined = tokio::spawn(catch_panic("tc-indicator", crashing)).await;
        match joined.expect("the panic does not escape the task") {
            Err(PollError::Crashed { stream, message }) => {
                assert_eq!(stream, "tc-indicator");
                assert_eq!(message, "cursor arithmetic overflowed");
            }
            other => panic!("expected a crash, got {other:?}"),
        }
        let fine: StreamLoop = Box::pin(async { Ok(Outcome::default()) });
        assert!(catch_panic("s", fine).await.is_ok());
    }

    #[test]
    fn trace_path_stays_in_the_trace_directory_whatever_the_ids() {
        let state = Path::new("/var/lib/ti/state");
        for (input, stream) in [
            ("x", "x/../../escaped"),
            ("..", ".."),
            ("../../etc", "passwd"),
            ("a", "/abs"),
        ] {
            let path = trace_path(state, input, stream);
            assert_eq!(
                path.parent(),
                Some(state.join("request-trace").as_path()),
                "{input:?} {stream:?} -> {}",
                path.display()
            );
            assert!(
                path.components()
                    .all(|c| !matches!(c, std::path::Component::ParentDir)),
                "{}",
                path.display()
            );
        }
    }
}
