//! Where acknowledged batches go. A sink's `send` returning `Ok` **is** the acknowledgement
//! that lets the poll loop commit the cursor, so a sink returns only once the batch is durable
//! on its side (NDJSON: written and flushed; OTLP: `Export` returned OK).

pub(crate) mod ndjson;
pub mod otlp;
mod otlp_wire;

use std::future::Future;

use crate::ingest::EcsEvent;
use crate::policy::{OutputConfig, StreamIdentity};

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
///
/// Delivery has two halves. [`encode_each`](Sink::encode_each) turns documents into the sink's
/// wire form (NDJSON bytes, OTLP requests) once: it is CPU work, which the poll loop runs on the
/// blocking pool while mapping, so each document's tree is dropped as soon as it is encoded.
/// [`send_encoded`](Sink::send_encoded) delivers that form, and retries resend it as it is.
pub trait Sink: Send + Sync + 'static {
    /// A batch in the sink's wire form.
    type Encoded: Send + Sync + 'static;

    /// Builds the wire form of the documents `events` yields, taking each one as it is mapped
    /// and consuming it (its strings move into the wire form where it has trees of its own):
    /// each is encoded while its tree is still in the cache, instead of walking the cold trees
    /// of a whole chunk afterwards. Never fails: every document can be written.
    fn encode_each(
        &self,
        input_id: &str,
        stream: &StreamIdentity,
        events: impl Iterator<Item = EcsEvent>,
    ) -> Self::Encoded;

    /// [`encode_each`](Sink::encode_each) of a whole batch.
    fn encode(&self, batch: Batch<'_>) -> Self::Encoded {
        self.encode_each(batch.input_id, batch.stream, batch.events.into_iter())
    }

    /// Delivers an encoded batch; `Ok` means it is acknowledged.
    fn send_encoded(
        &self,
        encoded: &Self::Encoded,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Makes every batch acknowledged so far durable, before a cursor is committed behind
    /// them. A file is synced to disk here once per page rather than once per chunk; a network
    /// sink's acknowledgement is already the receiver's.
    fn make_durable(&self) -> impl Future<Output = Result<(), SinkError>> + Send {
        std::future::ready(Ok(()))
    }

    /// Encodes a copy of `batch` on the calling thread, delivers it and makes it durable: one
    /// call for callers that hold a whole batch (tests, tools).
    fn send(&self, batch: &Batch<'_>) -> impl Future<Output = Result<(), SinkError>> + Send {
        let encoded = self.encode(Batch {
            input_id: batch.input_id,
            stream: batch.stream,
            events: batch.events.clone(),
        });
        async move {
            self.send_encoded(&encoded).await?;
            self.make_durable().await
        }
    }

    /// How many batches may be on their way at once, each acknowledged on its own (the poll
    /// loop still takes the acknowledgements in order and commits a page only behind all of
    /// its batches). A file takes one at a time: its lines are written in order. A network
    /// sink lets the receiver work on one batch while the next travels.
    fn sends_in_flight(&self) -> usize {
        1
    }

    /// Whether a `send` may be abandoned half-way on shutdown without harm. A network export
    /// can (nothing is acknowledged, the batch is sent again after restart); a file write cannot
    /// (it would leave half a line), so it is always finished.
    fn abandon_safe(&self) -> bool {
        false
    }
}

/// The mean size of an item (an NDJSON line, an OTLP record) in the last batch a sink encoded,
/// to size the next batch's buffer once: a buffer grown by doubling copies what it holds each
/// time (megabytes per chunk).
#[derive(Debug)]
pub(crate) struct SizeGuess(std::sync::atomic::AtomicUsize);

impl SizeGuess {
    /// Starting from `first`, before any batch was encoded.
    pub(crate) const fn new(first: usize) -> Self {
        Self(std::sync::atomic::AtomicUsize::new(first))
    }

    /// Room for `items` items: an eighth more than the last mean, as items vary from batch to
    /// batch.
    pub(crate) fn capacity(&self, items: usize) -> usize {
        let mean = self.0.load(std::sync::atomic::Ordering::Relaxed);
        items * (mean + mean / 8)
    }

    /// Learns from a batch of `items` items in `bytes` bytes.
    pub(crate) fn learn(&self, bytes: usize, items: usize) {
        if let Some(mean) = bytes.checked_div(items) {
            self.0.store(mean, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Opens the sink an output block asks for: the one place `run` and `agent` open outputs.
/// The output's security notes (a relaxed `verification_mode`, plain-text OTLP to another
/// host) are logged here, once per open.
pub async fn open(output: &OutputConfig) -> Result<AnySink, SinkError> {
    for note in output.security_notes() {
        tracing::warn!("output: {note}");
    }
    Ok(match output {
        OutputConfig::Ndjson { path } => AnySink::Ndjson(ndjson::NdjsonSink::open(path).await?),
        OutputConfig::Otlp {
            endpoint,
            ssl,
            retry_max_elapsed,
            batches_in_flight,
        } => {
            let options = otlp::OtlpOptions {
                give_up_after: *retry_max_elapsed,
                batches_in_flight: *batches_in_flight,
                ..otlp::OtlpOptions::default()
            };
            AnySink::Otlp(Box::new(otlp::OtlpSink::new(
                endpoint,
                ssl.as_ref(),
                options,
            )?))
        }
    })
}

/// Any of the sinks, so one process can write to outputs of different types.
pub enum AnySink {
    /// NDJSON to a file or stdout.
    Ndjson(ndjson::NdjsonSink),
    /// OTLP logs over gRPC.
    Otlp(Box<otlp::OtlpSink>),
}

/// The wire form of [`AnySink`]'s batches.
pub enum AnyEncoded {
    /// NDJSON lines.
    Ndjson(<ndjson::NdjsonSink as Sink>::Encoded),
    /// OTLP requests.
    Otlp(<otlp::OtlpSink as Sink>::Encoded),
}

impl Sink for AnySink {
    type Encoded = AnyEncoded;

    fn encode_each(
        &self,
        input_id: &str,
        stream: &StreamIdentity,
        events: impl Iterator<Item = EcsEvent>,
    ) -> AnyEncoded {
        match self {
            Self::Ndjson(s) => AnyEncoded::Ndjson(s.encode_each(input_id, stream, events)),
            Self::Otlp(s) => AnyEncoded::Otlp(s.encode_each(input_id, stream, events)),
        }
    }

    async fn send_encoded(&self, encoded: &AnyEncoded) -> Result<(), SinkError> {
        match (self, encoded) {
            (Self::Ndjson(s), AnyEncoded::Ndjson(e)) => s.send_encoded(e).await,
            (Self::Otlp(s), AnyEncoded::Otlp(e)) => s.send_encoded(e).await,
            // Each stream encodes with the sink it sends to.
            _ => unreachable!("a batch encoded for one sink type was sent to another"),
        }
    }

    async fn make_durable(&self) -> Result<(), SinkError> {
        match self {
            Self::Ndjson(s) => s.make_durable().await,
            Self::Otlp(s) => s.make_durable().await,
        }
    }

    fn sends_in_flight(&self) -> usize {
        match self {
            Self::Ndjson(s) => s.sends_in_flight(),
            Self::Otlp(s) => s.sends_in_flight(),
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
