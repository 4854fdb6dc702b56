//! The standalone sink: one JSON document per line, to stdout or a file.
//!
//! Each line is the document the pipeline would store as `_source`, plus what the Agent adds
//! for routing (`data_stream.*`) and an `@metadata` object (as Beats' file output writes it)
//! carrying the pipeline's `_id` and the input and stream ids, so the file can be bulk-indexed
//! idempotently. A batch is acknowledged once all its lines are written and flushed (and, for a
//! file, synced to disk).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Mutex;

use super::{Sink, SinkError, SizeGuess};
use crate::ingest::EcsEvent;
use crate::ingest::json::write_str;
use crate::policy::StreamIdentity;
use crate::source::off_runtime;

/// Where lines go. Writes run on the blocking pool with the encoded bytes shared, not copied
/// (tokio's `File` would copy each batch into its own buffer on an async worker first); the
/// mutex keeps them in order.
#[derive(Clone)]
enum Target {
    Stdout,
    File(Arc<std::fs::File>),
}

/// The line length assumed before a first chunk has been encoded.
const FIRST_LINE_GUESS: usize = 2048;

/// NDJSON to stdout (`-`) or an append-only file.
pub struct NdjsonSink {
    target: Mutex<Target>,
    name: String,
    /// The mean line length of the last chunk encoded, to size the next chunk's buffer once:
    /// a guess per event grew each buffer by doubling, copying megabytes (1.4% of a run).
    line_bytes: SizeGuess,
}

impl NdjsonSink {
    /// Opens the target; `-` is stdout.
    pub async fn open(path: &Path) -> Result<Self, SinkError> {
        if path == Path::new("-") {
            return Ok(Self {
                target: Mutex::new(Target::Stdout),
                name: "stdout".to_owned(),
                line_bytes: SizeGuess::new(FIRST_LINE_GUESS),
            });
        }
        let name = path.display().to_string();
        // Events can hold TLP:RED indicators: the file is 0600 (and new directories 0700)
        // whatever the umask.
        let owned = path.to_owned();
        let file = tokio::task::spawn_blocking(move || open_lines_for_append(&owned))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
            .map_err(|source| SinkError::Io {
                target: name.clone(),
                source,
            })?;
        Ok(Self {
            target: Mutex::new(Target::File(Arc::new(file))),
            name,
            line_bytes: SizeGuess::new(FIRST_LINE_GUESS),
        })
    }

    /// The file path, when writing to a file.
    pub fn path(&self) -> Option<PathBuf> {
        (self.name != "stdout").then(|| PathBuf::from(&self.name))
    }
}

/// Opens an NDJSON file for appending (0600, missing directories 0700) and first cuts off a
/// trailing partial line: a process killed mid-write leaves one, and the next line would be
/// glued to it (`…"Credential Acc{"@metadata":…`), which no line-based consumer can read. The
/// cut bytes belong to a batch that was never acknowledged, so its cursor was not committed and
/// the batch is delivered again. Logs how many bytes were dropped.
pub(crate) fn open_lines_for_append(path: &Path) -> std::io::Result<std::fs::File> {
    let file = crate::fsutil::open_private_append_creating_dirs(path)?;
    let dropped = drop_partial_last_line(path, &file)?;
    if dropped > 0 {
        tracing::warn!(
            path = %path.display(),
            dropped_bytes = dropped,
            "{} ended in a partial line (a write was interrupted): dropped its last {dropped} \
             byte(s); that batch was never acknowledged and is delivered again",
            path.display()
        );
    }
    Ok(file)
}

/// Truncates `file` (open for writing, at `path`) after its last `\n`; returns the bytes cut.
fn drop_partial_last_line(path: &Path, file: &std::fs::File) -> std::io::Result<u64> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    const CHUNK: u64 = 64 * 1024;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut reader = std::fs::File::open(path)?;
    let mut end = len;
    let mut buf = vec![0u8; CHUNK as usize];
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let piece = &mut buf[..(end - start) as usize];
        reader.seek(SeekFrom::Start(start))?;
        reader.read_exact(piece)?;
        if let Some(at) = piece.iter().rposition(|b| *b == b'\n') {
            let keep = start + at as u64 + 1;
            if keep < len {
                file.set_len(keep)?;
                file.sync_all()?;
            }
            return Ok(len - keep);
        }
        end = start;
    }
    // Not one complete line: the whole file is a fragment.
    file.set_len(0)?;
    file.sync_all()?;
    Ok(len)
}

/// What every line of a batch writes after its `_id`: the rest of `@metadata`, and
/// `data_stream`. Written once per batch rather than once per line (through serde's
/// `Serializer`, these few fields were 1.7% of a page-10 000 run's instructions).
struct Shared(Vec<u8>);

impl Shared {
    /// `data_stream` is what the Agent adds to every event for routing.
    fn of(input_id: &str, stream: &StreamIdentity) -> Self {
        let mut b = Vec::with_capacity(128);
        b.extend_from_slice(b"\"input_id\":");
        write_str(&mut b, input_id);
        b.extend_from_slice(b",\"stream_id\":");
        write_str(&mut b, &stream.id);
        b.extend_from_slice(b"},\"data_stream\":{\"type\":\"logs\",\"dataset\":");
        write_str(&mut b, &stream.dataset);
        b.extend_from_slice(b",\"namespace\":");
        write_str(&mut b, &stream.namespace);
        b.push(b'}');
        Self(b)
    }

    /// One line: `@metadata` (with the pipeline's `_id`, and the input and stream ids),
    /// `data_stream`, then the document's members.
    fn write_line(&self, id: Option<&str>, doc: &crate::ingest::Document, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"@metadata\":{");
        if let Some(id) = id {
            out.extend_from_slice(b"\"_id\":");
            write_str(out, id);
            out.push(b',');
        }
        out.extend_from_slice(&self.0);
        // The pipelines never produce `@metadata` or `data_stream`, so keys cannot collide.
        doc.write_members(out, false);
        out.push(b'}');
    }
}

impl NdjsonSink {
    fn io_error(&self, source: std::io::Error) -> SinkError {
        SinkError::Io {
            target: self.name.clone(),
            source,
        }
    }
}

impl Sink for NdjsonSink {
    /// The batch's lines, each ending in `\n`.
    type Encoded = Bytes;

    fn encode_each(
        &self,
        input_id: &str,
        stream: &StreamIdentity,
        events: impl Iterator<Item = EcsEvent>,
    ) -> Bytes {
        let shared = Shared::of(input_id, stream);
        let mut buf = Vec::with_capacity(self.line_bytes.capacity(events.size_hint().0));
        let mut lines = 0;
        for event in events {
            shared.write_line(event.id.as_deref(), &event.doc, &mut buf);
            buf.push(b'\n');
            lines += 1;
        }
        self.line_bytes.learn(buf.len(), lines);
        Bytes::from(buf)
    }

    /// Written and flushed: the acknowledgement. The file is synced in
    /// [`make_durable`](Sink::make_durable), before the page's cursor is committed.
    async fn send_encoded(&self, lines: &Bytes) -> Result<(), SinkError> {
        if lines.is_empty() {
            return Ok(());
        }
        // Held until the write is done, so that batches land in the order they were sent.
        let target = self.target.lock().await;
        let (to, lines) = (target.clone(), lines.clone());
        off_runtime(move || match to {
            Target::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(&lines)?;
                out.flush()
            }
            // Unbuffered: written is handed to the kernel.
            Target::File(file) => (&*file).write_all(&lines),
        })
        .await
        .map_err(|e| self.io_error(e))
    }

    async fn make_durable(&self) -> Result<(), SinkError> {
        let Target::File(file) = self.target.lock().await.clone() else {
            return Ok(());
        };
        off_runtime(move || file.sync_data())
            .await
            .map_err(|e| self.io_error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::Batch;

    // The line as a serde struct: the reference the sink's writer is held to.
    /// What the Agent adds to every event for routing.
    #[derive(serde::Serialize)]
    struct DataStream<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        dataset: &'a str,
        namespace: &'a str,
    }

    /// Beats' `@metadata`: the pipeline's `_id` and where the event came from.
    #[derive(serde::Serialize)]
    struct Metadata<'a> {
        #[serde(rename = "_id", skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        input_id: &'a str,
        stream_id: &'a str,
    }

    /// The line written for one event: the document plus `@metadata` and `data_stream`, serialised
    /// without copying the document.
    #[derive(serde::Serialize)]
    struct Line<'a> {
        #[serde(rename = "@metadata")]
        metadata: Metadata<'a>,
        data_stream: DataStream<'a>,
        #[serde(flatten)]
        doc: &'a crate::ingest::Document,
        /// The stream, for the sink's own writer.
        #[serde(skip)]
        stream: &'a StreamIdentity,
    }

    impl Line<'_> {
        /// The sink's bytes for the line.
        fn write_json(&self, out: &mut Vec<u8>) {
            Shared::of(self.metadata.input_id, self.stream).write_line(
                self.metadata.id,
                self.doc,
                out,
            );
        }
    }

    /// The line for one event of `batch`.
    fn render<'a>(batch: &'a Batch<'_>, event: &'a crate::ingest::EcsEvent) -> Line<'a> {
        Line {
            metadata: Metadata {
                id: event.id.as_deref(),
                input_id: batch.input_id,
                stream_id: &batch.stream.id,
            },
            data_stream: DataStream {
                kind: "logs",
                dataset: &batch.stream.dataset,
                namespace: &batch.stream.namespace,
            },
            doc: &event.doc,
            stream: batch.stream,
        }
    }

    fn reopened(content: &[u8]) -> (Vec<u8>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.ndjson");
        std::fs::write(&path, content).unwrap();
        drop(open_lines_for_append(&path).unwrap());
        (std::fs::read(&path).unwrap(), dir)
    }

    /// A line of a fast-path document is byte for byte the line of the same document as a map:
    /// `@metadata`, `data_stream`, then the document's keys in order.
    #[test]
    fn built_documents_render_the_same_line_as_maps() {
        use crate::ingest::{Document, MapOptions};
        let raw = r#"{"id":7,"type":"Address","ip":"10.0.0.1","summary":"10.0.0.1","lastModified":"2023-12-01T08:26:48Z","description":""}"#;
        let built = crate::source::threatconnect::ecs::map_indicator(raw, &MapOptions::default());
        assert!(
            matches!(built.doc, Document::Built(_)),
            "fast path expected"
        );
        let mut as_map = built.clone();
        as_map.doc = Document::Map(as_map.doc.into_map());
        let stream = crate::policy::StreamIdentity {
            id: "s1".into(),
            dataset: "ti_threatconnect.indicator".into(),
            namespace: "default".into(),
        };
        let batch = Batch {
            input_id: "in",
            stream: &stream,
            events: vec![built, as_map],
        };
        let lines: Vec<String> = batch
            .events
            .iter()
            .map(|e| serde_json::to_string(&render(&batch, e)).unwrap_or_default())
            .collect();
        assert_eq!(lines[0], lines[1]);
        // The sink's own writer gives the same bytes as serde for both kinds of document, and
        // for an empty one.
        for event in &batch.events {
            let mut written = Vec::new();
            render(&batch, event).write_json(&mut written);
            assert_eq!(String::from_utf8(written).unwrap_or_default(), lines[0]);
        }
        let empty = crate::ingest::EcsEvent {
            id: None,
            timestamp: None,
            doc: Document::default(),
        };
        let mut written = Vec::new();
        render(&batch, &empty).write_json(&mut written);
        assert_eq!(
            String::from_utf8(written).unwrap_or_default(),
            serde_json::to_string(&render(&batch, &empty)).unwrap_or_default()
        );
        assert!(
            lines[0].starts_with(r#"{"@metadata":{"_id":"#),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains(r#""data_stream":{"type":"logs","dataset":"ti_threatconnect.indicator","namespace":"default"},"@timestamp":"#));
    }

    #[test]
    fn a_partial_last_line_is_cut_before_appending() {
        let (kept, _d) = reopened(b"{\"a\":1}\n{\"b\":2}\n{\"c\":\"Credential Acc");
        assert_eq!(kept, b"{\"a\":1}\n{\"b\":2}\n");
        let (kept, _d) = reopened(b"{\"a\":1}\n");
        assert_eq!(kept, b"{\"a\":1}\n", "a complete file is untouched");
        let (kept, _d) = reopened(b"");
        assert!(kept.is_empty());
        let (kept, _d) = reopened(b"no newline at all");
        assert!(kept.is_empty(), "a file that is only a fragment is emptied");
        // A fragment longer than the scan chunk.
        let mut long = b"{\"a\":1}\n".to_vec();
        long.extend(std::iter::repeat_n(b'x', 200 * 1024));
        let (kept, _d) = reopened(&long);
        assert_eq!(kept, b"{\"a\":1}\n");
    }
}
