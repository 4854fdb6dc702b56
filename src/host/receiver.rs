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

use bytes::{Buf as _, Bytes};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyKind;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message as _;
use serde_json::{Map, Value};
use std::io::Write as _;
use std::sync::Mutex;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::codegen::http;
use tonic::{Request, Response, Status};

use crate::sink::otlp::any_value_to_json;

/// Receives OTLP logs and appends them to an NDJSON file (or only counts them).
#[derive(Clone)]
pub struct EventsReceiver {
    file: Option<Arc<Mutex<std::fs::File>>>,
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
                Some(Arc::new(Mutex::new(f)))
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
    attribute_any(attrs, key).map(any_value_to_json)
}

/// The value of the first attribute named `key`, when it has one.
fn attribute_any<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

/// [`attribute_any`]'s value kind.
fn attribute_value<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyKind> {
    attribute_any(attrs, key).and_then(|v| v.value.as_ref())
}

/// `@metadata`'s members and the record attributes they come from.
pub(super) const METADATA: [(&str, &str); 3] = [
    ("_id", "elasticsearch.document_id"),
    ("input_id", "elastic.input_id"),
    ("stream_id", "elastic.stream_id"),
];

/// `data_stream`'s members and the record attributes they come from.
pub(super) const DATA_STREAM: [(&str, &str); 3] = [
    ("dataset", "data_stream.dataset"),
    ("namespace", "data_stream.namespace"),
    ("type", "data_stream.type"),
];

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
    for (to, from) in METADATA {
        if let Some(v) = attribute(a, from) {
            meta.insert(to.into(), v);
        }
    }
    doc.insert("@metadata".into(), Value::Object(meta));
    let mut ds = Map::new();
    for (part, from) in DATA_STREAM {
        if let Some(v) = attribute(a, from) {
            ds.insert(part.into(), v);
        }
    }
    if !ds.is_empty() {
        doc.insert("data_stream".into(), Value::Object(ds));
    }
    doc
}

impl EventsReceiver {
    /// The `LogsService` this receiver serves (with `max_message_size` as its decoding limit),
    /// for a tonic `Server`.
    pub fn service(self, max_message_size: usize) -> ExportService {
        ExportService {
            receiver: self,
            max_message_size,
        }
    }

    /// Writes one request's records and syncs them; on the blocking pool.
    fn write_request(&self, request: &[u8]) -> Result<(), Status> {
        let lines = match super::wire::request_lines(request) {
            Ok(lines) => lines,
            // Not in the form every client writes: prost reads it (or refuses it), as before.
            Err(super::wire::Unusual) => decoded_lines(request)?,
        };
        if let Some(file) = &self.file {
            let mut f = file
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f.write_all(&lines.bytes)
                .and_then(|()| f.sync_data())
                .map_err(|e| Status::unavailable(format!("cannot write events: {e}")))?;
        }
        {
            let mut per_dataset = self
                .per_dataset
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (dataset, n) in lines.per_dataset {
                *per_dataset.entry(dataset).or_default() += n;
            }
        }
        self.received.fetch_add(lines.records, Ordering::Relaxed);
        Ok(())
    }
}

/// A request's lines through prost's decoding: the reference the walk is held to, and the
/// way for requests the walk leaves alone. Its error is tonic's for an undecodable message.
pub(crate) fn decoded_lines(request: &[u8]) -> Result<super::wire::Lines, Status> {
    let request =
        ExportLogsServiceRequest::decode(request).map_err(|e| Status::internal(e.to_string()))?;
    let mut lines = super::wire::Lines::default();
    for rl in &request.resource_logs {
        for sl in &rl.scope_logs {
            for record in &sl.log_records {
                lines.count(
                    match attribute_value(&record.attributes, "data_stream.dataset") {
                        Some(AnyKind::StringValue(d)) => d,
                        _ => "",
                    },
                );
                write_line(&mut lines.bytes, record);
            }
        }
    }
    Ok(lines)
}

/// The receiver as a gRPC service: `LogsService/Export`, its request taken as bytes.
///
/// Tonic's generated server decodes each request into messages on an async worker before
/// handing it over; here the bytes go to the blocking pool as they came, and are read there
/// ([`super::wire`]). The host's async workers also answer the component's check-ins.
#[derive(Clone)]
pub struct ExportService {
    receiver: EventsReceiver,
    max_message_size: usize,
}

impl tonic::server::NamedService for ExportService {
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
}

/// The `Export` method's path.
const EXPORT: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

impl<B> tower::Service<http::Request<B>> for ExportService
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != EXPORT {
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        let service = self.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(RequestBytes)
                .apply_max_message_size_config(Some(service.max_message_size), None);
            Ok(grpc.unary(service, request).await)
        })
    }
}

impl tonic::server::UnaryService<Bytes> for ExportService {
    type Response = ExportLogsServiceResponse;
    type Future = tonic::codegen::BoxFuture<Response<Self::Response>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let receiver = self.receiver.clone();
        Box::pin(async move {
            let bytes = request.into_inner();
            tokio::task::spawn_blocking(move || receiver.write_request(&bytes))
                .await
                .map_err(|e| Status::internal(format!("the events writer stopped: {e}")))??;
            Ok(Response::new(ExportLogsServiceResponse::default()))
        })
    }
}

/// A codec that takes each request as its bytes and answers with a prost-encoded response
/// (tonic-prost's own encoder).
#[derive(Clone, Copy, Default)]
struct RequestBytes;

impl Codec for RequestBytes {
    type Encode = ExportLogsServiceResponse;
    type Decode = Bytes;
    type Encoder = tonic_prost::ProstEncoder<ExportLogsServiceResponse>;
    type Decoder = RequestBytes;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestBytes
    }
}

impl Decoder for RequestBytes {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// A top-level member of a rendered record.
enum Member<'a> {
    Value(Option<&'a AnyValue>),
    /// `@metadata` or `data_stream`: members taken from the record's attributes.
    Attributes(Vec<(&'static str, &'a AnyValue)>),
}

/// Appends `record` as the NDJSON line [`render`] gives (the same bytes as
/// `serde_json::to_writer` of it, and a newline), written straight from the record: rendering
/// through `serde_json` maps was most of the host's CPU at 20 000 records/s.
pub fn write_line(out: &mut Vec<u8>, record: &LogRecord) {
    let mut members: Vec<(&str, Member<'_>)> = match record.body.as_ref() {
        Some(AnyValue {
            value: Some(AnyKind::KvlistValue(list)),
        }) => list
            .values
            .iter()
            .map(|kv| (kv.key.as_str(), Member::Value(kv.value.as_ref())))
            .collect(),
        Some(other) => vec![("message", Member::Value(Some(other)))],
        None => Vec::new(),
    };
    let a = &record.attributes;
    let from_attributes = |table: [(&'static str, &str); 3]| -> Vec<_> {
        table
            .into_iter()
            .filter_map(|(to, from)| Some((to, attribute_any(a, from)?)))
            .collect()
    };
    members.push(("@metadata", Member::Attributes(from_attributes(METADATA))));
    let ds = from_attributes(DATA_STREAM);
    if !ds.is_empty() {
        members.push(("data_stream", Member::Attributes(ds)));
    }
    write_members(out, members, |out, member| match member {
        Member::Value(v) => write_any(out, v),
        Member::Attributes(list) => {
            write_members(out, list, |out, v| write_any(out, Some(v)));
        }
    });
    out.push(b'\n');
}

/// Writes an object of `members` as a `serde_json` map holds them: sorted by key, and of
/// members with the same key, the last.
fn write_members<T>(
    out: &mut Vec<u8>,
    members: Vec<(&str, T)>,
    value: impl FnMut(&mut Vec<u8>, T),
) {
    write_members_then(out, members, value, drop);
}

/// [`write_members`], handing each member that a later one of the same key replaces to
/// `replaced` instead of writing it.
pub(super) fn write_members_then<T>(
    out: &mut Vec<u8>,
    mut members: Vec<(&str, T)>,
    mut value: impl FnMut(&mut Vec<u8>, T),
    mut replaced: impl FnMut(T),
) {
    members.sort_by(|a, b| a.0.cmp(b.0));
    out.push(b'{');
    let mut first = true;
    let mut members = members.into_iter().peekable();
    while let Some((key, v)) = members.next() {
        if members.peek().is_some_and(|(next, _)| *next == key) {
            replaced(v);
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        crate::ingest::json::write_str(out, key);
        out.push(b':');
        value(out, v);
    }
    out.push(b'}');
}

/// Writes what [`any_value_to_json`] gives for `value` (`None`: `null`).
fn write_any(out: &mut Vec<u8>, value: Option<&AnyValue>) {
    let Some(kind) = value.and_then(|v| v.value.as_ref()) else {
        out.extend_from_slice(b"null");
        return;
    };
    match kind {
        AnyKind::StringValue(s) => crate::ingest::json::write_str(out, s),
        AnyKind::BoolValue(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        AnyKind::IntValue(i) => {
            let _ = write!(out, "{i}");
        }
        AnyKind::StringValueStrindex(i) => {
            let _ = write!(out, "{i}");
        }
        AnyKind::DoubleValue(d) => match serde_json::Number::from_f64(*d) {
            Some(n) => {
                let _ = serde_json::to_writer(&mut *out, &n);
            }
            None => out.extend_from_slice(b"null"),
        },
        AnyKind::ArrayValue(list) => {
            out.push(b'[');
            for (i, v) in list.values.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_any(out, Some(v));
            }
            out.push(b']');
        }
        AnyKind::KvlistValue(list) => write_members(
            out,
            list.values
                .iter()
                .map(|kv| (kv.key.as_str(), kv.value.as_ref()))
                .collect(),
            write_any,
        ),
        AnyKind::BytesValue(_) => {
            let _ = serde_json::to_writer(
                &mut *out,
                &any_value_to_json(value.unwrap_or(&AnyValue::default())),
            );
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn kv(key: &str, value: Option<AnyValue>) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value,
            ..Default::default()
        }
    }

    pub(crate) fn kind(k: AnyKind) -> AnyValue {
        AnyValue { value: Some(k) }
    }

    /// What the host wrote before: `render` through `serde_json`.
    fn via_serde(record: &LogRecord) -> Vec<u8> {
        let mut line = serde_json::to_vec(&render(record)).unwrap_or_default();
        line.push(b'\n');
        line
    }

    fn via_writer(record: &LogRecord) -> Vec<u8> {
        let mut line = Vec::new();
        write_line(&mut line, record);
        line
    }

    #[test]
    fn lines_are_written_as_render_serialises_them() {
        let body = kind(AnyKind::KvlistValue(
            opentelemetry_proto::tonic::common::v1::KeyValueList {
                values: vec![
                    kv("b", Some(kind(AnyKind::IntValue(-3)))),
                    kv("a", Some(kind(AnyKind::DoubleValue(f64::NAN)))),
                    kv("b", Some(kind(AnyKind::DoubleValue(1.5e300)))),
                    kv("@metadata", Some(kind(AnyKind::BoolValue(true)))),
                    kv("data_stream", None),
                    kv("bytes", Some(kind(AnyKind::BytesValue(vec![0, 255, 7])))),
                    kv("idx", Some(kind(AnyKind::StringValueStrindex(4)))),
                    kv("é\"\n", Some(AnyValue::default())),
                ],
            },
        ));
        let attrs = vec![
            kv(
                "elastic.input_id",
                Some(kind(AnyKind::StringValue("in".into()))),
            ),
            kv(
                "elasticsearch.document_id",
                Some(kind(AnyKind::IntValue(7))),
            ),
            kv(
                "elastic.input_id",
                Some(kind(AnyKind::StringValue("second".into()))),
            ),
            kv(
                "data_stream.type",
                Some(kind(AnyKind::StringValue("logs".into()))),
            ),
            kv("data_stream.namespace", None),
        ];
        for (body, attributes) in [
            (Some(body.clone()), attrs.clone()),
            (Some(body), Vec::new()),
            (
                Some(kind(AnyKind::StringValue("plain".into()))),
                attrs.clone(),
            ),
            (Some(AnyValue::default()), attrs),
            (None, Vec::new()),
        ] {
            let record = LogRecord {
                body,
                attributes,
                ..Default::default()
            };
            assert_eq!(
                String::from_utf8_lossy(&via_writer(&record)),
                String::from_utf8_lossy(&via_serde(&record))
            );
        }
    }

    proptest! {
        /// On generated documents (as the sidecar's kvlists carry them) and attributes.
        #[test]
        fn generated_records_are_written_as_render_serialises_them(
            body in crate::ingest::arb_json(&["", "x\"\\\u{1}", "é"], &["a", "b", "@metadata", "data_stream", "\""]),
            attrs in proptest::collection::vec((
                proptest::sample::select(&[
                    "elastic.input_id", "elastic.stream_id", "elasticsearch.document_id",
                    "data_stream.type", "data_stream.dataset", "data_stream.namespace", "other",
                ][..]),
                crate::ingest::arb_json(&["tc"], &["k"]),
            ), 0..5),
        ) {
            let record = LogRecord {
                body: Some(crate::sink::otlp::reference::any_value(&body)),
                attributes: attrs
                    .iter()
                    .map(|(k, v)| kv(k, Some(crate::sink::otlp::reference::any_value(v))))
                    .collect(),
                ..Default::default()
            };
            let (written, rendered) = (via_writer(&record), via_serde(&record));
            prop_assert_eq!(
                String::from_utf8_lossy(&written),
                String::from_utf8_lossy(&rendered)
            );
        }
    }
}
