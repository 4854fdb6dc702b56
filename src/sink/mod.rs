//! Where acknowledged batches go. A sink's `send` returning `Ok` **is** the acknowledgement
//! that lets the poll loop commit the cursor, so a sink returns only once the batch is durable
//! on its side (NDJSON: written and flushed; OTLP: `Export` returned OK).

pub mod ndjson;

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
}

/// A destination for batches, shared by every stream of a process.
pub trait Sink: Send + Sync + 'static {
    /// Delivers `batch`; `Ok` means it is acknowledged.
    fn send(&self, batch: &Batch<'_>) -> impl Future<Output = Result<(), SinkError>> + Send;
}
