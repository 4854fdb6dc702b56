//! Where acknowledged batches go. A sink's `send` returning `Ok` **is** the acknowledgement
//! that lets the poll loop commit the cursor, so a sink returns only once the batch is durable
//! on its side (NDJSON: written and flushed; OTLP: `Export` returned OK).

pub mod ndjson;
pub mod otlp;

use std::future::Future;

use crate::config::StreamIdentity;
use crate::ingest::EcsEvent;

/// A batch of one stream's documents.
#[derive(Debug)]
pub struct Batch<'a> {
    /// The input the stream belongs to.
    pub input_id: &'a str,
    /// The stream.
    pub stream: &'a StreamIdentity,
    /// The documents, in API order.
    pub events: Vec<EcsEvent>,
}

/// A sink failed to take a batch; the batch was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing failed (disk full, closed pipe...).
    #[error("cannot write events to {target}: {source}")]
    Io {
        /// Where we were writing.
        target: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An OTLP `Export` call failed (after retries, for transient codes).
    #[error("OTLP export to {endpoint} failed after {attempts} attempt(s): {code:?}: {message}")]
    Otlp {
        /// The receiver (without credentials).
        endpoint: String,
        /// The last gRPC status code.
        code: tonic::Code,
        /// The last status message, as the receiver sent it.
        message: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The OTLP receiver answered OK but rejected records (`partial_success`): not an ack.
    #[error("OTLP receiver {endpoint} rejected {rejected} of {sent} log records: {message}")]
    OtlpRejected {
        /// The receiver (without credentials).
        endpoint: String,
        /// `rejected_log_records`.
        rejected: u64,
        /// Records in the request.
        sent: usize,
        /// The receiver's `error_message`.
        message: String,
    },
    /// The OTLP output settings are unusable (endpoint, `ssl`).
    #[error("OTLP output {endpoint}: {message}")]
    OtlpConfig {
        /// The endpoint as configured (without credentials).
        endpoint: String,
        /// What is wrong (never a key's content).
        message: String,
    },
}

/// A destination for batches, shared by every stream of a process.
pub trait Sink: Send + Sync + 'static {
    /// Delivers `batch`; `Ok` means it is acknowledged.
    fn send(&self, batch: &Batch<'_>) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Whether a `send` may be abandoned half-way on shutdown without harm. A network export
    /// can (nothing is acknowledged, the batch is sent again after restart); a file write cannot
    /// (it would leave half a line), so it is always finished.
    fn abandon_safe(&self) -> bool {
        false
    }
}

/// Any of the sinks, so one process can write to outputs of different types.
pub enum AnySink {
    /// NDJSON to a file or stdout.
    Ndjson(ndjson::NdjsonSink),
    /// OTLP logs over gRPC.
    Otlp(otlp::OtlpSink),
}

impl Sink for AnySink {
    async fn send(&self, batch: &Batch<'_>) -> Result<(), SinkError> {
        match self {
            Self::Ndjson(s) => s.send(batch).await,
            Self::Otlp(s) => s.send(batch).await,
        }
    }

    fn abandon_safe(&self) -> bool {
        match self {
            Self::Ndjson(s) => s.abandon_safe(),
            Self::Otlp(s) => s.abandon_safe(),
        }
    }
}

impl std::fmt::Debug for AnySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ndjson(s) => f
                .debug_tuple("Ndjson")
                .field(
                    &s.path()
                        .map_or_else(|| "stdout".to_owned(), |p| p.display().to_string()),
                )
                .finish(),
            Self::Otlp(s) => f.debug_tuple("Otlp").field(s).finish(),
        }
    }
}
