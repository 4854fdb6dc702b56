//! The Agent-mode sink: ECS documents as OTLP logs over gRPC (DESIGN §6).
//!
//! Each document becomes one `LogRecord` whose `body` is the document as a kvlist, in the shape
//! Elastic's Beat receivers hand to the collector embedded in Elastic Agent: the scope attribute
//! `elastic.mapping.mode = bodymap` makes the `elasticsearch` exporter store the body verbatim,
//! and `elasticsearch.document_id` carries the pipeline's `_id`.
//!
//! A batch is acknowledged (DESIGN §4) only when every `Export` call for it returned OK with no
//! rejected records. Transient gRPC failures are retried here with jittered backoff for a
//! bounded time; after that the error goes back to the poll loop, whose own retry and health
//! logic then sees the outage.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{BufMut as _, Bytes};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyKind;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use secrecy::ExposeSecret as _;
use serde_json::Value;
use tonic::client::Grpc;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::{Sink, SinkError, otlp_wire};
use crate::backoff::Backoff;
use crate::config::SslConfig;
use crate::ingest::EcsEvent;
use crate::pem;
use crate::policy::StreamIdentity;
use crate::telemetry::metrics::ExportOutcome;
use crate::telemetry::{ExportFinished, ExportRetried};
use crate::text::{bound_owned, bounded};

/// Size and pacing of an [`OtlpSink`].
#[derive(Debug, Clone, Copy)]
pub struct OtlpOptions {
    /// At most this many log records per `Export` call.
    pub max_records: usize,
    /// At most about this many encoded bytes per `Export` call (a single larger record is
    /// still sent alone). Below the 4 MiB default receive limit of most gRPC servers.
    pub max_bytes: usize,
    /// Timeout of one `Export` call.
    pub request_timeout: Duration,
    /// First delay between retries of a transient failure.
    pub retry_initial: Duration,
    /// Cap of the delay between retries.
    pub retry_max: Duration,
    /// After this long without success, `send` returns the last error.
    pub give_up_after: Duration,
    /// Batches on their way to the receiver at once, on the one HTTP/2 connection. One at a
    /// time, the receiver sat idle while each request travelled and the sidecar waited for
    /// each answer.
    pub batches_in_flight: usize,
}

impl Default for OtlpOptions {
    fn default() -> Self {
        Self {
            max_records: 2000,
            max_bytes: 3 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            retry_initial: Duration::from_millis(250),
            retry_max: Duration::from_secs(5),
            give_up_after: Duration::from_secs(30),
            batches_in_flight: crate::policy::default_otlp_batches_in_flight(),
        }
    }
}

/// The HTTP/2 stream window: the 64 KiB default caps throughput severalfold.
const STREAM_WINDOW: u32 = 16 * 1024 * 1024;
/// The HTTP/2 connection window.
const CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;

/// OTLP/gRPC logs to a collector or to the host's receiver.
pub struct OtlpSink {
    client: Grpc<Channel>,
    endpoint: String,
    options: OtlpOptions,
    rejected_records: AtomicU64,
    /// The mean encoded record of the last chunk, to size the next chunk's buffer.
    record_bytes: super::SizeGuess,
}

impl std::fmt::Debug for OtlpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpSink")
            .field("endpoint", &self.endpoint)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl OtlpSink {
    /// Prepares a client for `endpoint` (`host:port`, `http://…` or `https://…`), with TLS when
    /// the scheme is `https` or `ssl` is given. Connects lazily: the receiver may still be down.
    /// Must be called inside a tokio runtime.
    pub fn new(
        endpoint: &str,
        ssl: Option<&SslConfig>,
        options: OtlpOptions,
    ) -> Result<Self, SinkError> {
        let shown = redact_endpoint(endpoint);
        let config_error = |message: String| SinkError::OtlpConfig {
            endpoint: shown.clone(),
            message,
        };
        let uri = endpoint_uri(endpoint, ssl.is_some()).map_err(config_error)?;
        let mut ep = Endpoint::from_shared(uri.clone())
            .map_err(|e| config_error(format!("invalid endpoint: {e}")))?
            .initial_stream_window_size(Some(STREAM_WINDOW))
            .initial_connection_window_size(Some(CONNECTION_WINDOW))
            .connect_timeout(Duration::from_secs(5))
            .timeout(options.request_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        if uri.starts_with("https://") {
            let tls = tls_config(ssl).map_err(config_error)?;
            ep = ep
                .tls_config(tls)
                .map_err(|e| config_error(format!("TLS: {e}")))?;
        }
        let client = Grpc::new(ep.connect_lazy())
            .max_decoding_message_size(16 * 1024 * 1024)
            .max_encoding_message_size(usize::MAX);
        Ok(Self {
            client,
            endpoint: shown,
            options,
            rejected_records: AtomicU64::new(0),
            record_bytes: super::SizeGuess::new(0),
        })
    }

    /// Log records the receiver reported as rejected (`partial_success`) since start.
    pub fn rejected_records(&self) -> u64 {
        self.rejected_records.load(Ordering::Relaxed)
    }

    /// Sends one `Export` request, retrying transient failures until `give_up_after`.
    async fn export(&self, request: &EncodedExport) -> Result<(), SinkError> {
        self.export_with(request, |request| {
            let mut client = self.client.clone();
            async move {
                client.ready().await.map_err(|e| {
                    tonic::Status::unavailable(format!("OTLP channel not ready: {e}"))
                })?;
                client
                    .unary(
                        tonic::Request::new(request),
                        PathAndQuery::from_static(EXPORT),
                        PreEncoded,
                    )
                    .await
            }
        })
        .await
    }

    /// [`export`](Self::export) with `call` making each `Export` call with the request's bytes:
    /// the retry loop apart from the network. Between attempts it sleeps, on `tokio::time`, the
    /// server's `RetryInfo` or the next jittered backoff.
    async fn export_with<C, Fut>(
        &self,
        request: &EncodedExport,
        mut call: C,
    ) -> Result<(), SinkError>
    where
        C: FnMut(EncodedExport) -> Fut,
        Fut: Future<Output = Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status>>,
    {
        let sent = request.count;
        let started = tokio::time::Instant::now();
        let mut backoff =
            Backoff::clamped(self.options.retry_initial, self.options.retry_max, true);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let called = std::time::Instant::now();
            // A reference to the same bytes: a retry resends them as they are.
            let answer = call(request.clone()).await;
            let finished = |outcome, rejected| {
                ExportFinished {
                    outcome,
                    rejected,
                    elapsed: called.elapsed(),
                }
                .emit();
            };
            let status = match answer {
                Ok(response) => {
                    let partial = response.into_inner().partial_success;
                    let rejected = partial.as_ref().map_or(0, |p| p.rejected_log_records);
                    if rejected <= 0 {
                        finished(ExportOutcome::Ok, 0);
                        return Ok(());
                    }
                    // Not retried (the OTLP spec forbids resending a partially accepted
                    // request), but not acknowledged either: DESIGN §4 makes "OK with no
                    // rejected records" the ack, so the cursor stays put and the poll loop
                    // resends the batch later. Ids are deterministic, so the records that
                    // were accepted are overwritten, not duplicated.
                    let message = bound_owned(partial.map(|p| p.error_message).unwrap_or_default());
                    let rejected = u64::try_from(rejected).unwrap_or(0);
                    finished(ExportOutcome::Rejected, rejected);
                    self.rejected_records.fetch_add(rejected, Ordering::Relaxed);
                    tracing::error!(
                        endpoint = %self.endpoint,
                        rejected,
                        sent,
                        "OTLP receiver rejected log records: {message}"
                    );
                    return Err(SinkError::OtlpRejected {
                        endpoint: self.endpoint.clone(),
                        rejected,
                        sent,
                        message,
                    });
                }
                Err(status) => {
                    finished(ExportOutcome::Failed, 0);
                    status
                }
            };
            let error = SinkError::Otlp {
                endpoint: self.endpoint.clone(),
                code: status.code(),
                message: bounded(status.message()).into_owned(),
                attempts,
            };
            if !is_retryable(status.code()) {
                return Err(error);
            }
            let wait = retry_info_delay(&status).unwrap_or_else(|| backoff.next_delay());
            if started.elapsed() + wait > self.options.give_up_after {
                return Err(error);
            }
            ExportRetried {
                endpoint: &self.endpoint,
                code: status.code().description(),
                retry_in: wait,
                message: &bounded(status.message()),
            }
            .emit();
            tokio::time::sleep(wait).await;
        }
    }
}

impl Sink for OtlpSink {
    /// The batch's `Export` requests, each within `max_records` and about `max_bytes`, encoded.
    type Encoded = Vec<EncodedExport>;

    fn abandon_safe(&self) -> bool {
        true
    }

    fn sends_in_flight(&self) -> usize {
        self.options.batches_in_flight
    }

    /// Each document is written as its log record's protobuf bytes (a kvlist body) as soon as
    /// it is mapped, here on the blocking pool; the records are then cut into requests.
    fn encode_each(
        &self,
        input_id: &str,
        stream: &StreamIdentity,
        events: impl Iterator<Item = EcsEvent>,
    ) -> Vec<EncodedExport> {
        let capacity = self.record_bytes.capacity(events.size_hint().0);
        let requests = encode_requests(
            input_id,
            stream,
            events,
            unix_nanos(chrono::Utc::now()),
            (self.options.max_records, self.options.max_bytes),
            capacity,
        );
        let (bytes, records) = requests
            .iter()
            .fold((0, 0), |(b, r), e| (b + e.records.len(), r + e.count));
        self.record_bytes.learn(bytes, records);
        requests
    }

    async fn send_encoded(&self, requests: &Vec<EncodedExport>) -> Result<(), SinkError> {
        for request in requests {
            self.export(request).await?;
        }
        Ok(())
    }
}

/// The `Export` requests of `events`, observed at `observed` (ns): each document written as its
/// record's protobuf bytes, the records cut into requests of at most `max_records` and about
/// `max_bytes`, in one buffer of `capacity` bytes to start with.
fn encode_requests(
    input_id: &str,
    stream: &StreamIdentity,
    events: impl Iterator<Item = EcsEvent>,
    observed: u64,
    (max_records, max_bytes): (usize, usize),
    capacity: usize,
) -> Vec<EncodedExport> {
    let mut writer = otlp_wire::RecordWriter::default();
    let mut bytes = Vec::with_capacity(capacity);
    let mut ends = Vec::new();
    for event in events {
        writer.write(
            &mut bytes,
            &event.doc,
            record_attributes(input_id, stream, &event),
            event.timestamp.map_or(0, unix_nanos),
            observed,
        );
        ends.push(bytes.len());
    }
    // The requests share the records' one buffer: each is its header and a slice of it.
    let bytes = Bytes::from(bytes);
    let mut start = 0;
    let records: Vec<std::ops::Range<usize>> = ends
        .iter()
        .map(|&end| {
            let record = start..end;
            start = end;
            record
        })
        .collect();
    split(records, max_records, max_bytes, ExactSizeIterator::len)
        .iter()
        .map(|records| {
            let run = records.first().map_or(0, |r| r.start)..records.last().map_or(0, |r| r.end);
            EncodedExport::new(bytes.slice(run), records.len())
        })
        .collect()
}

/// The gRPC method an [`EncodedExport`] is sent to.
const EXPORT: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// An `Export` request encoded once, when its chunk is mapped on the blocking pool: the bytes
/// every attempt sends. Handing tonic the message instead made each attempt deep-copy the
/// request (it takes the message by value), encode it and free the copy, all on an async
/// worker: in agent mode that was most of the component's CPU (7.3 s against 2.2 s for the
/// same stream to NDJSON).
#[derive(Debug, Clone)]
pub struct EncodedExport {
    /// The request up to its records.
    header: Bytes,
    /// Its records' `log_records` fields, a slice of the chunk's one buffer.
    records: Bytes,
    /// Log records in the request.
    count: usize,
}

impl EncodedExport {
    /// The request of `count` records, whose fields are `records`.
    fn new(records: Bytes, count: usize) -> Self {
        static HEADER: std::sync::LazyLock<(Vec<u8>, Vec<u8>)> = std::sync::LazyLock::new(|| {
            let (resource, scope) = request_header();
            (resource.encode_to_vec(), scope.encode_to_vec())
        });
        let (resource, scope) = &*HEADER;
        Self {
            header: otlp_wire::export_request_header(resource, scope, records.len()).into(),
            records,
            count,
        }
    }

    /// The request's bytes, in one piece (tests).
    #[cfg(test)]
    fn to_vec(&self) -> Vec<u8> {
        [&self.header[..], &self.records[..]].concat()
    }
}

/// The `Export` call's codec: the request goes as the bytes it was encoded to, the response is
/// decoded with prost.
#[derive(Debug, Clone, Copy, Default)]
struct PreEncoded;

impl Codec for PreEncoded {
    type Encode = EncodedExport;
    type Decode = ExportLogsServiceResponse;
    type Encoder = PreEncoded;
    type Decoder = PreEncoded;

    fn encoder(&mut self) -> Self::Encoder {
        PreEncoded
    }

    fn decoder(&mut self) -> Self::Decoder {
        PreEncoded
    }
}

impl Encoder for PreEncoded {
    type Item = EncodedExport;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: EncodedExport,
        dst: &mut EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        // One copy, into tonic's buffer, sized once: putting 1.8 MB into its default 8 KiB
        // buffer grew it by doubling, copying it again each time.
        dst.reserve(item.header.len() + item.records.len());
        dst.put_slice(&item.header);
        dst.put_slice(&item.records);
        Ok(())
    }
}

impl Decoder for PreEncoded {
    type Item = ExportLogsServiceResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut DecodeBuf<'_>,
    ) -> Result<Option<ExportLogsServiceResponse>, tonic::Status> {
        ExportLogsServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("undecodable Export response: {e}")))
    }
}

/// Codes worth retrying: the OTLP spec's retryable set, plus `RESOURCE_EXHAUSTED` (a full
/// collector queue is transient for us; DESIGN §6).
fn is_retryable(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::ResourceExhausted
            | tonic::Code::Cancelled
            | tonic::Code::Aborted
            | tonic::Code::OutOfRange
    )
}

/// Between half and all of `delay`, so that many streams do not retry in lockstep.
/// `google.rpc.Status`, as carried in `grpc-status-details-bin`.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<prost_types::Duration>,
}

/// The server's `RetryInfo.retry_delay`, when it sent one (capped at one minute).
fn retry_info_delay(status: &tonic::Status) -> Option<Duration> {
    if status.details().is_empty() {
        return None;
    }
    let rpc = RpcStatus::decode(status.details()).ok()?;
    let any = rpc
        .details
        .iter()
        .find(|a| a.type_url.ends_with("/google.rpc.RetryInfo"))?;
    let d = RetryInfo::decode(any.value.as_slice()).ok()?.retry_delay?;
    let secs = u64::try_from(d.seconds).ok()?;
    let nanos = u32::try_from(d.nanos).ok()?;
    Some(Duration::new(secs, nanos).min(Duration::from_secs(60)))
}

/// Splits records into requests of at most `max_records` and about `max_bytes` each (`len`:
/// a record's encoded length).
fn split<R>(
    records: Vec<R>,
    max_records: usize,
    max_bytes: usize,
    len: impl Fn(&R) -> usize,
) -> Vec<Vec<R>> {
    let max_records = max_records.max(1);
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0usize;
    for record in records {
        // Field tag and length prefix of the repeated message: a few bytes each.
        let len = len(&record) + 6;
        if !current.is_empty() && (current.len() >= max_records || bytes + len > max_bytes) {
            chunks.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += len;
        current.push(record);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// The resource and scope every request carries.
fn request_header() -> (Resource, InstrumentationScope) {
    (
        Resource {
            attributes: vec![
                kv("service.name", string("ti-sidecar")),
                kv("service.version", string(env!("CARGO_PKG_VERSION"))),
            ],
            ..Default::default()
        },
        InstrumentationScope {
            name: "ti-sidecar".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            attributes: vec![kv("elastic.mapping.mode", string("bodymap"))],
            ..Default::default()
        },
    )
}

/// A time as `LogRecord` carries it: nanoseconds since the epoch, 0 when unknown.
fn unix_nanos(t: chrono::DateTime<chrono::Utc>) -> u64 {
    t.timestamp_nanos_opt()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0)
}

/// A record's attributes (DESIGN §6), in order.
fn record_attributes<'a>(
    input_id: &'a str,
    stream: &'a StreamIdentity,
    event: &'a EcsEvent,
) -> impl Iterator<Item = (&'static str, &'a str)> + Clone {
    [
        ("data_stream.type", "logs"),
        ("data_stream.dataset", stream.dataset.as_str()),
        ("data_stream.namespace", stream.namespace.as_str()),
    ]
    .into_iter()
    .chain(
        event
            .id
            .as_deref()
            .map(|id| ("elasticsearch.document_id", id)),
    )
    .chain([
        ("elastic.input_id", input_id),
        ("elastic.stream_id", stream.id.as_str()),
    ])
}

fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(value),
        ..Default::default()
    }
}

fn string(s: &str) -> AnyValue {
    AnyValue {
        value: Some(AnyKind::StringValue(s.to_owned())),
    }
}

/// The inverse of `any_value` (what the sidecar sends), for receivers: kvlist → object,
/// array → array, bytes → base64 string.
pub fn any_value_to_json(value: &AnyValue) -> Value {
    match &value.value {
        None => Value::Null,
        Some(AnyKind::StringValue(s)) => Value::String(s.clone()),
        Some(AnyKind::BoolValue(b)) => Value::Bool(*b),
        Some(AnyKind::IntValue(i)) => Value::from(*i),
        Some(AnyKind::DoubleValue(d)) => {
            serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number)
        }
        Some(AnyKind::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(any_value_to_json).collect())
        }
        Some(AnyKind::KvlistValue(l)) => Value::Object(
            l.values
                .iter()
                .map(|kv| {
                    let v = kv.value.as_ref().map_or(Value::Null, any_value_to_json);
                    (kv.key.clone(), v)
                })
                .collect(),
        ),
        Some(AnyKind::BytesValue(b)) => {
            use base64::Engine as _;
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        Some(AnyKind::StringValueStrindex(i)) => Value::from(*i),
    }
}

/// `host:port` → `http(s)://host:port`; URLs pass through. `https` when `tls` is asked for.
pub(crate) fn endpoint_uri(endpoint: &str, tls: bool) -> Result<String, String> {
    let endpoint = endpoint.trim();
    if let Some(rest) = endpoint.strip_prefix("http://") {
        if tls {
            return Err("an ssl block needs an https:// (or bare host:port) endpoint".to_owned());
        }
        return Ok(format!("http://{rest}"));
    }
    if endpoint.starts_with("https://") {
        return Ok(endpoint.to_owned());
    }
    if endpoint.contains("://") {
        return Err("the endpoint scheme must be http or https".to_owned());
    }
    if endpoint.is_empty() {
        return Err("the endpoint is empty".to_owned());
    }
    Ok(format!(
        "{}://{endpoint}",
        if tls { "https" } else { "http" }
    ))
}

/// The endpoint without any `user:password@` part, for messages.
fn redact_endpoint(endpoint: &str) -> String {
    match url::Url::parse(endpoint) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => endpoint.to_owned(),
    }
}

/// The PEM bytes of an `ssl` value (inline or path, as [`crate::pem`] decides), once `check`
/// found in them what `field` needs. tonic parses them again with the same parser.
fn checked_pem<T>(
    field: &str,
    value: &str,
    check: fn(&[u8], &pem::Origin) -> Result<T, pem::PemError>,
) -> Result<Vec<u8>, String> {
    let named = |e: pem::PemError| format!("ssl.{field}: {e}");
    let (bytes, origin) = pem::load(value).map_err(named)?;
    check(&bytes, &origin).map_err(named)?;
    Ok(bytes.into_owned())
}

fn tls_config(ssl: Option<&SslConfig>) -> Result<ClientTlsConfig, String> {
    let mut tls = ClientTlsConfig::new();
    let Some(ssl) = ssl else {
        return Ok(tls.with_webpki_roots());
    };
    if let Some(problem) = ssl.otlp_limits().into_iter().next() {
        return Err(format!("ssl.{}: {}", problem.0, problem.1));
    }
    if ssl.certificate_authorities.is_empty() {
        tls = tls.with_webpki_roots();
    }
    for ca in &ssl.certificate_authorities {
        tls = tls.ca_certificate(Certificate::from_pem(checked_pem(
            "certificate_authorities",
            ca,
            pem::parse_certificates,
        )?));
    }
    match (&ssl.certificate, &ssl.key) {
        (Some(cert), Some(key)) => {
            let cert = checked_pem("certificate", cert, pem::parse_certificates)?;
            let passphrase = ssl.key_passphrase.as_ref().map(|p| p.expose_secret());
            let key = pem::private_key_pem(key.expose_secret(), passphrase)
                .map_err(|e| format!("ssl.key: {e}"))?;
            let key = key.to_vec();
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        (None, None) => {}
        _ => return Err("ssl.certificate and ssl.key go together".to_owned()),
    }
    Ok(tls)
}

/// The message-building path this module used before it wrote protobuf straight from the
/// documents: the reference the differential tests hold the writer to.
#[cfg(test)]
pub(crate) mod reference {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

    use super::*;
    use crate::ingest::{Document, Node, Object};

    /// The request message of `records`: the reference for [`EncodedExport::new`].
    pub(crate) fn export_request(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
        let (resource, scope) = request_header();
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(resource),
                scope_logs: vec![ScopeLogs {
                    scope: Some(scope),
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    /// One document of stream `stream` of input `input_id` as a `LogRecord` message (DESIGN §6),
    /// observed at `observed`: the reference for [`otlp_wire::RecordWriter`].
    pub(crate) fn log_record(
        input_id: &str,
        stream: &StreamIdentity,
        event: EcsEvent,
        observed: chrono::DateTime<chrono::Utc>,
    ) -> LogRecord {
        let attributes = record_attributes(input_id, stream, &event)
            .map(|(k, v)| kv(k, string(v)))
            .collect();
        LogRecord {
            time_unix_nano: event.timestamp.map_or(0, unix_nanos),
            observed_time_unix_nano: unix_nanos(observed),
            body: Some(AnyValue {
                value: Some(AnyKind::KvlistValue(document_kvlist(event.doc))),
            }),
            attributes,
            ..Default::default()
        }
    }

    /// The protobuf bytes of one request carrying `events`: as the sink encodes them (one request,
    /// the limits out of reach), and by prost from the messages [`log_record`] builds (the
    /// reference).
    pub(crate) fn request_bytes_both(events: Vec<EcsEvent>) -> (Vec<u8>, Vec<u8>) {
        let stream = StreamIdentity {
            id: "tc-indicator".into(),
            dataset: "ti_threatconnect.indicator".into(),
            namespace: "default".into(),
        };
        let observed =
            chrono::DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap_or_default();
        let requests = encode_requests(
            "tc",
            &stream,
            events.clone().into_iter(),
            unix_nanos(observed),
            (usize::MAX, usize::MAX),
            0,
        );
        let written = requests.first().map_or_else(
            || EncodedExport::new(Bytes::new(), 0).to_vec(),
            EncodedExport::to_vec,
        );
        let reference = export_request(
            events
                .into_iter()
                .map(|e| log_record("tc", &stream, e, observed))
                .collect(),
        )
        .encode_to_vec();
        (written, reference)
    }

    pub(crate) fn kvlist(map: &serde_json::Map<String, Value>) -> KeyValueList {
        KeyValueList {
            values: map.iter().map(|(k, v)| kv(k, any_value(v))).collect(),
        }
    }

    pub(crate) fn into_kvlist(map: serde_json::Map<String, Value>) -> KeyValueList {
        KeyValueList {
            values: map
                .into_iter()
                .map(|(key, v)| KeyValue {
                    key,
                    value: Some(into_any_value(v)),
                    ..Default::default()
                })
                .collect(),
        }
    }

    /// A document as the kvlist body of its `LogRecord`: entries in key order, its strings moved.
    pub(crate) fn document_kvlist(doc: Document) -> KeyValueList {
        match doc {
            Document::Map(map) => into_kvlist(map),
            Document::Built(object) => object_kvlist(object),
        }
    }

    pub(crate) fn object_kvlist(object: Object) -> KeyValueList {
        KeyValueList {
            values: object
                .into_iter()
                .map(|(key, v)| KeyValue {
                    key: key.into_owned(),
                    value: Some(node_any_value(v)),
                    ..Default::default()
                })
                .collect(),
        }
    }

    /// [`into_any_value`] of the JSON value a [`Node`] stands for.
    pub(crate) fn node_any_value(node: Node) -> AnyValue {
        let kind = match node {
            Node::Str(s) => Some(AnyKind::StringValue(s.into_string())),
            Node::Const(s) => Some(AnyKind::StringValue(s.to_owned())),
            Node::Array(items) => Some(AnyKind::ArrayValue(ArrayValue {
                values: items.into_iter().map(node_any_value).collect(),
            })),
            Node::Consts(list) => Some(AnyKind::ArrayValue(ArrayValue {
                values: list
                    .iter()
                    .map(|s| AnyValue {
                        value: Some(AnyKind::StringValue((*s).to_owned())),
                    })
                    .collect(),
            })),
            Node::Object(o) => Some(AnyKind::KvlistValue(object_kvlist(o))),
            Node::Value(v) => return into_any_value(v),
            // Scalars as `Value`s (no allocation), so numbers take `any_value`'s rules.
            scalar => return any_value(&scalar.into_value()),
        };
        AnyValue { value: kind }
    }

    /// [`any_value`], moving the value's strings instead of copying them.
    pub(crate) fn into_any_value(value: Value) -> AnyValue {
        let kind = match value {
            Value::String(s) => Some(AnyKind::StringValue(s)),
            Value::Array(items) => Some(AnyKind::ArrayValue(ArrayValue {
                values: items.into_iter().map(into_any_value).collect(),
            })),
            Value::Object(map) => Some(AnyKind::KvlistValue(into_kvlist(map))),
            scalar => return any_value(&scalar),
        };
        AnyValue { value: kind }
    }

    /// A JSON value as an `AnyValue`: objects → kvlist, arrays → array, integers → `int_value`
    /// exactly, other numbers → `double_value`, `null` → an empty `AnyValue`.
    pub(crate) fn any_value(value: &Value) -> AnyValue {
        let kind = match value {
            Value::Null => None,
            Value::Bool(b) => Some(AnyKind::BoolValue(*b)),
            Value::Number(n) => Some(if let Some(i) = n.as_i64() {
                AnyKind::IntValue(i)
            } else if let Some(u) = n.as_u64() {
                // Above i64::MAX: a double would lose digits; the decimal string keeps them.
                AnyKind::StringValue(u.to_string())
            } else {
                AnyKind::DoubleValue(n.as_f64().unwrap_or(f64::NAN))
            }),
            Value::String(s) => Some(AnyKind::StringValue(s.clone())),
            Value::Array(items) => Some(AnyKind::ArrayValue(ArrayValue {
                values: items.iter().map(any_value).collect(),
            })),
            Value::Object(map) => Some(AnyKind::KvlistValue(kvlist(map))),
        };
        AnyValue { value: kind }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::logs::v1::LogRecord;

    use super::reference::*;
    use super::*;
    use crate::ingest::{Document, Node, Object};
    use serde_json::json;

    #[test]
    fn json_round_trips_through_any_value() {
        let doc = json!({
            "a": {"b": [1, 2.5, "x", true, null, {"c": 9007199254740993_i64}]},
            "big": -9223372036854775808_i64,
        });
        let back = any_value_to_json(&any_value(&doc));
        assert_eq!(
            into_any_value(doc.clone()),
            any_value(&doc),
            "moving equals copying"
        );
        assert_eq!(back, doc);
    }

    #[test]
    fn u64_above_i64_stays_exact_as_string() {
        let v = any_value(&json!(18446744073709551615_u64));
        assert_eq!(
            v.value,
            Some(AnyKind::StringValue("18446744073709551615".into()))
        );
    }

    #[test]
    fn endpoints_get_a_scheme() {
        assert_eq!(
            endpoint_uri("127.0.0.1:4317", false).as_deref(),
            Ok("http://127.0.0.1:4317")
        );
        assert_eq!(endpoint_uri("h:1", true).as_deref(), Ok("https://h:1"));
        assert!(endpoint_uri("http://h:1", true).is_err());
        assert!(endpoint_uri("ftp://h:1", false).is_err());
        assert_eq!(
            redact_endpoint("https://u:pw@h:1/"),
            "https://h:1/".to_owned()
        );
    }

    #[test]
    fn split_bounds_records_and_bytes() {
        let rec = |n: usize| LogRecord {
            body: Some(string(&"x".repeat(n))),
            ..Default::default()
        };
        let chunks = split((0..5).map(|_| rec(10)).collect(), 2, usize::MAX, |r| {
            r.encoded_len()
        });
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
        let chunks = split((0..4).map(|_| rec(100)).collect(), 100, 250, |r| {
            r.encoded_len()
        });
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2]);
        // A record larger than the byte bound still goes, alone.
        let chunks = split(vec![rec(1000), rec(1)], 100, 250, |r| r.encoded_len());
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1]);
    }

    /// Every kind of value the writer handles, at the edges of its encoding: the bytes are
    /// prost's for the same messages (the property test in `ingest::doc` covers generated
    /// documents).
    #[test]
    fn records_are_written_as_prost_encodes_them() {
        let value = serde_json::json!({
            "": "empty key",
            "s": "", "long": "x".repeat(300), "é": "ü\u{1F600}",
            "t": true, "f": false, "zero": 0, "neg": -1, "min": i64::MIN, "max": i64::MAX,
            "above": u64::MAX, "pi": 3.25, "nz": -0.0, "null": null,
            "list": [1, "a", null, [], {}, [[{"deep": [true]}]]],
            "obj": {"a": {"b": {"c": "d"}}, "e": []},
        });
        let serde_json::Value::Object(map) = value else {
            unreachable!()
        };
        let mut object = Object::new();
        object.insert("bool", Node::Bool(false));
        object.insert("int", Node::PosInt(u64::MAX));
        object.insert("neg", Node::NegInt(-5));
        object.insert("float", Node::Float(1.5));
        object.insert("consts", Node::consts(&["threat", "x"]));
        object.insert(
            "list",
            Node::Array(vec![Node::from("a"), Node::Object(Object::new())]),
        );
        object.nested(
            "a",
            "b",
            Node::Value(serde_json::json!({"k": [1, {"z": null}]})),
        );
        object.insert("value", Node::Value(serde_json::Value::Object(map.clone())));
        let events = [
            EcsEvent {
                id: Some("abc=".into()),
                timestamp: chrono::DateTime::from_timestamp(1, 2),
                doc: Document::Map(map),
            },
            EcsEvent {
                id: None,
                timestamp: None,
                doc: Document::Built(object),
            },
            EcsEvent {
                id: None,
                timestamp: None,
                doc: Document::Map(serde_json::Map::new()),
            },
        ];
        for n in 0..=events.len() {
            let (written, reference) = request_bytes_both(events[..n].to_vec());
            assert_eq!(written, reference, "{n} records");
        }
    }

    /// The requests cut from one chunk share its records' buffer (each is its own header and a
    /// slice of it), and each is prost's encoding of its records.
    #[test]
    fn requests_cut_from_one_buffer_are_each_prosts_encoding() {
        let stream = StreamIdentity {
            id: "tc-indicator".into(),
            dataset: "ti_threatconnect.indicator".into(),
            namespace: "default".into(),
        };
        let observed = chrono::DateTime::from_timestamp(1_700_000_000, 5).unwrap_or_default();
        let events: Vec<EcsEvent> = (0..5)
            .map(|i: i64| {
                let serde_json::Value::Object(doc) =
                    json!({"n": i, "s": "x".repeat(usize::try_from(i).unwrap_or(0) * 100)})
                else {
                    unreachable!()
                };
                EcsEvent {
                    id: Some(format!("id-{i}")),
                    timestamp: chrono::DateTime::from_timestamp(i, 0),
                    doc: Document::Map(doc),
                }
            })
            .collect();
        let requests = encode_requests(
            "tc",
            &stream,
            events.clone().into_iter(),
            unix_nanos(observed),
            (2, usize::MAX),
            0,
        );
        assert_eq!(requests.len(), 3);
        for (request, events) in requests.iter().zip(events.chunks(2)) {
            assert_eq!(request.count, events.len());
            let reference = export_request(
                events
                    .iter()
                    .map(|e| log_record("tc", &stream, e.clone(), observed))
                    .collect(),
            )
            .encode_to_vec();
            assert_eq!(request.to_vec(), reference);
        }
    }

    /// A `RESOURCE_EXHAUSTED` carrying `RetryInfo` with `delay`.
    fn exhausted_retry_in(delay: prost_types::Duration) -> tonic::Status {
        let info = RetryInfo {
            retry_delay: Some(delay),
        };
        let rpc = RpcStatus {
            code: tonic::Code::ResourceExhausted as i32,
            message: "full".into(),
            details: vec![prost_types::Any {
                type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
                value: info.encode_to_vec(),
            }],
        };
        tonic::Status::with_details(
            tonic::Code::ResourceExhausted,
            "full",
            rpc.encode_to_vec().into(),
        )
    }

    #[test]
    fn retry_info_is_honoured() {
        let status = exhausted_retry_in(prost_types::Duration {
            seconds: 2,
            nanos: 500,
        });
        assert_eq!(retry_info_delay(&status), Some(Duration::new(2, 500)));
        assert_eq!(retry_info_delay(&tonic::Status::unavailable("x")), None);
    }

    /// Exports one empty request through the retry loop with `answers` (in memory, on the
    /// paused clock, the default pacing); returns the result, when each call was made from the
    /// start, and when the loop returned.
    async fn export_over(
        mut answers: impl FnMut(usize) -> Result<ExportLogsServiceResponse, tonic::Status>,
    ) -> (Result<(), SinkError>, Vec<Duration>, Duration) {
        let sink = OtlpSink::new("127.0.0.1:9", None, OtlpOptions::default()).unwrap();
        let start = tokio::time::Instant::now();
        let mut calls = Vec::new();
        let result = sink
            .export_with(&EncodedExport::new(Bytes::new(), 0), |_| {
                calls.push(start.elapsed());
                let answer = answers(calls.len()).map(tonic::Response::new);
                async move { answer }
            })
            .await;
        (result, calls, start.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_ends_in_an_error_within_give_up_after_with_growing_jittered_waits() {
        let (result, calls, returned) =
            export_over(|_| Err(tonic::Status::unavailable("down"))).await;
        let Err(SinkError::Otlp {
            code: tonic::Code::Unavailable,
            attempts,
            ..
        }) = result
        else {
            panic!("{result:?}")
        };
        assert_eq!(attempts as usize, calls.len());
        let last = *calls.last().unwrap();
        assert_eq!(returned, last, "no wait after the last attempt");
        let defaults = OtlpOptions::default();
        // Gave up because the next wait (at most retry_max) would pass give_up_after.
        assert!(last <= defaults.give_up_after, "{calls:?}");
        assert!(
            last + defaults.retry_max > defaults.give_up_after,
            "{calls:?}"
        );
        // Each wait is in the upper half of its step: 250 ms doubling to the 5 s cap.
        let mut step = defaults.retry_initial;
        for wait in calls.windows(2).map(|w| w[1] - w[0]) {
            assert!(
                wait >= step / 2 && wait <= step + Duration::from_millis(2),
                "{wait:?} for a step of {step:?}: {calls:?}"
            );
            step = (step * 2).min(defaults.retry_max);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_servers_retry_info_sets_the_wait() {
        let (result, calls, _) = export_over(|n| match n {
            1 => Err(exhausted_retry_in(prost_types::Duration {
                seconds: 7,
                nanos: 0,
            })),
            _ => Ok(ExportLogsServiceResponse::default()),
        })
        .await;
        result.unwrap();
        assert_eq!(calls.len(), 2);
        assert!(
            calls[1] >= Duration::from_secs(7) && calls[1] < Duration::from_millis(7002),
            "{calls:?}"
        );
    }
}
