//! The host's OTLP logs receiver (`LogsService/Export`): what the embedded collector is to a
//! real Agent. Each log record becomes one NDJSON line: the body kvlist as a JSON object, plus
//! `@metadata` (`_id` from `elasticsearch.document_id`, `input_id`, `stream_id`) and
//! `data_stream` from the record's attributes, i.e. the shape the standalone NDJSON sink writes.
//! A request is answered OK only once its lines are written and flushed, so the sidecar's
//! acknowledgement means the events are on disk.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::LogsService;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

use crate::sink::otlp::any_value_to_json;

/// Receives OTLP logs and appends them to an NDJSON file (or only counts them).
#[derive(Clone)]
pub struct EventsReceiver {
    file: Option<Arc<Mutex<tokio::fs::File>>>,
    received: Arc<AtomicU64>,
    per_dataset: Arc<std::sync::Mutex<BTreeMap<String, u64>>>,
}

impl EventsReceiver {
    /// Appends to `path` (created 0600, with its missing directories 0700); `None` only counts.
    pub async fn open(path: Option<&Path>) -> std::io::Result<Self> {
        let file = match path {
            Some(p) => {
                // 0600 whatever the umask: the events are the indicators themselves.
                // A partial last line (the host was killed mid-write) is cut off first.
                let f = crate::sink::ndjson::open_lines_for_append(p)?;
                Some(Arc::new(Mutex::new(tokio::fs::File::from_std(f))))
            }
            None => None,
        };
        Ok(Self {
            file,
            received: Arc::default(),
            per_dataset: Arc::default(),
        })
    }

    /// Log records received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Log records received so far per `data_stream.dataset` attribute (`""` when absent).
    pub(crate) fn received_per_dataset(&self) -> BTreeMap<String, u64> {
        self.per_dataset
            .lock()
            .map(|m| m.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }
}

fn attribute(attrs: &[KeyValue], key: &str) -> Option<Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .map(any_value_to_json)
}

/// One record as the NDJSON document the host writes.
pub fn render(record: &LogRecord) -> Map<String, Value> {
    let mut doc = match record.body.as_ref().map(any_value_to_json) {
        Some(Value::Object(m)) => m,
        Some(other) => {
            let mut m = Map::new();
            m.insert("message".into(), other);
            m
        }
        None => Map::new(),
    };
    let a = &record.attributes;
    let mut meta = Map::new();
    if let Some(id) = attribute(a, "elasticsearch.document_id") {
        meta.insert("_id".into(), id);
    }
    for (from, to) in [
        ("elastic.input_id", "input_id"),
        ("elastic.stream_id", "stream_id"),
    ] {
        if let Some(v) = attribute(a, from) {
            meta.insert(to.into(), v);
        }
    }
    doc.insert("@metadata".into(), Value::Object(meta));
    let mut ds = Map::new();
    for part in ["type", "dataset", "namespace"] {
        if let Some(v) = attribute(a, &format!("data_stream.{part}")) {
            ds.insert(part.into(), v);
        }
    }
    if !ds.is_empty() {
        doc.insert("data_stream".into(), Value::Object(ds));
    }
    doc
}

#[tonic::async_trait]
impl LogsService for EventsReceiver {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let request = request.into_inner();
        let mut buf = Vec::new();
        let mut count = 0u64;
        let mut datasets: BTreeMap<String, u64> = BTreeMap::new();
        for rl in &request.resource_logs {
            for sl in &rl.scope_logs {
                for record in &sl.log_records {
                    count += 1;
                    let dataset = match attribute(&record.attributes, "data_stream.dataset") {
                        Some(Value::String(d)) => d,
                        _ => String::new(),
                    };
                    *datasets.entry(dataset).or_default() += 1;
                    if serde_json::to_writer(&mut buf, &render(record)).is_ok() {
                        buf.push(b'\n');
                    }
                }
            }
        }
        if let Some(file) = &self.file {
            let mut f = file.lock().await;
            let written = async {
                f.write_all(&buf).await?;
                f.flush().await?;
                f.sync_data().await
            }
            .await;
            if let Err(e) = written {
                return Err(Status::unavailable(format!("cannot write events: {e}")));
            }
        }
        {
            let mut per_dataset = self
                .per_dataset
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (dataset, n) in datasets {
                *per_dataset.entry(dataset).or_default() += n;
            }
        }
        self.received.fetch_add(count, Ordering::Relaxed);
        Ok(Response::new(ExportLogsServiceResponse::default()))
    }
}
