//! `OtlpSink` against an in-test OTLP logs receiver: record shape, exact 64-bit integers,
//! retries of transient failures, `partial_success` as a non-ack, and an outage that ends in an
//! error and recovers without losing records.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use ti_sidecar::ingest::EcsEvent;
use ti_sidecar::policy::StreamIdentity;
use ti_sidecar::sink::otlp::{OtlpOptions, OtlpSink, any_value_to_json};
use ti_sidecar::sink::{Batch, Sink, SinkError};

/// What the receiver does with the next calls; once empty, it accepts everything.
type Script = Arc<Mutex<VecDeque<Result<ExportLogsServiceResponse, Status>>>>;

struct Receiver {
    script: Script,
    /// Every call, accepted or not: (answered OK, request).
    calls: mpsc::UnboundedSender<(bool, ExportLogsServiceRequest)>,
}

#[tonic::async_trait]
impl LogsService for Receiver {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let request = request.into_inner();
        let next = self
            .script
            .lock()
            .map(|mut s| s.pop_front())
            .unwrap_or(None);
        let answer = next.unwrap_or_else(|| Ok(ExportLogsServiceResponse::default()));
        let _ = self.calls.send((answer.is_ok(), request));
        answer.map(Response::new)
    }
}

struct Running {
    addr: SocketAddr,
    script: Script,
    calls: mpsc::UnboundedReceiver<(bool, ExportLogsServiceRequest)>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start_receiver(addr: SocketAddr) -> Running {
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let script: Script = Arc::default();
    let (tx, calls) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let service = LogsServiceServer::new(Receiver {
        script: script.clone(),
        calls: tx,
    });
    let s = stop.clone();
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                s.cancelled_owned(),
            )
            .await;
    });
    Running {
        addr,
        script,
        calls,
        stop,
        task,
    }
}

/// A receiver on a free loopback port.
async fn receiver() -> Running {
    start_receiver("127.0.0.1:0".parse().expect("addr")).await
}

fn fast() -> OtlpOptions {
    OtlpOptions {
        retry_initial: Duration::from_millis(10),
        retry_max: Duration::from_millis(50),
        give_up_after: Duration::from_millis(600),
        request_timeout: Duration::from_secs(5),
        ..OtlpOptions::default()
    }
}

static STREAM: std::sync::LazyLock<StreamIdentity> = std::sync::LazyLock::new(|| StreamIdentity {
    id: "tc-prod-indicator".into(),
    dataset: "ti_threatconnect.indicator".into(),
    namespace: "prod".into(),
});

/// A batch of `events` of input `tc-prod`'s stream.
fn batch(events: Vec<EcsEvent>) -> Batch<'static> {
    Batch {
        input_id: "tc-prod",
        stream: &STREAM,
        events,
    }
}

/// A sink to `addr` with `options`.
fn sink_to(addr: impl std::fmt::Display, options: OtlpOptions) -> OtlpSink {
    OtlpSink::new(&addr.to_string(), None, options).expect("sink")
}

impl Running {
    /// The receiver's answers to the next calls, in order.
    fn answer_next(
        &self,
        answers: impl IntoIterator<Item = Result<ExportLogsServiceResponse, Status>>,
    ) {
        self.script.lock().expect("lock").extend(answers);
    }
}

fn event(n: i64) -> EcsEvent {
    let doc = json!({
        "@timestamp": "2026-01-02T03:04:05.123Z",
        "threatconnect": {"indicator": {"id": 9_007_199_254_740_993_i64 + n, "rating": 2.5, "active": true}},
        "tags": ["a", "b"],
        "threat": {"indicator": {"ip": "10.0.0.1", "type": "ipv4-addr"}},
    });
    let Value::Object(doc) = doc else {
        unreachable!()
    };
    EcsEvent {
        id: Some(format!("doc-{n}")),
        timestamp: Some(
            chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123Z")
                .expect("time")
                .with_timezone(&chrono::Utc),
        ),
        doc: doc.into(),
    }
}

fn attr(attrs: &[KeyValue], key: &str) -> Option<Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .map(any_value_to_json)
}

fn records(req: &ExportLogsServiceRequest) -> Vec<&LogRecord> {
    req.resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .flat_map(|s| &s.log_records)
        .collect()
}

async fn next_call(
    calls: &mut mpsc::UnboundedReceiver<(bool, ExportLogsServiceRequest)>,
) -> (bool, ExportLogsServiceRequest) {
    tokio::time::timeout(Duration::from_secs(20), calls.recv())
        .await
        .expect("a call within 20 s")
        .expect("receiver alive")
}

#[tokio::test]
async fn records_carry_body_attributes_and_ids() {
    let mut rx = receiver().await;
    let sink = sink_to(rx.addr, fast());
    let events = vec![event(0), event(1)];
    let expected_bodies: Vec<Value> = events
        .iter()
        .map(|e| Value::Object(e.doc.to_map()))
        .collect();
    let batch = batch(events);
    sink.send(&batch).await.expect("acknowledged");

    let (ok, req) = next_call(&mut rx.calls).await;
    assert!(ok);
    let scope = &req.resource_logs[0].scope_logs[0];
    let scope_attrs = &scope.scope.as_ref().expect("scope").attributes;
    assert_eq!(
        attr(scope_attrs, "elastic.mapping.mode"),
        Some(json!("bodymap"))
    );
    let recs = records(&req);
    assert_eq!(recs.len(), 2);
    for (i, rec) in recs.iter().enumerate() {
        let body = any_value_to_json(rec.body.as_ref().expect("body"));
        assert_eq!(body, expected_bodies[i], "body is the document verbatim");
        // 2^53 + 1 (+ i) survives exactly: it travels as int_value, not as a double.
        assert_eq!(
            body["threatconnect"]["indicator"]["id"].as_i64(),
            Some(9_007_199_254_740_993 + i as i64)
        );
        assert_eq!(rec.time_unix_nano, 1_767_323_045_123_000_000);
        let a = &rec.attributes;
        assert_eq!(attr(a, "data_stream.type"), Some(json!("logs")));
        assert_eq!(
            attr(a, "data_stream.dataset"),
            Some(json!("ti_threatconnect.indicator"))
        );
        assert_eq!(attr(a, "data_stream.namespace"), Some(json!("prod")));
        assert_eq!(
            attr(a, "elasticsearch.document_id"),
            Some(json!(format!("doc-{i}")))
        );
        assert_eq!(attr(a, "elastic.input_id"), Some(json!("tc-prod")));
        assert_eq!(
            attr(a, "elastic.stream_id"),
            Some(json!("tc-prod-indicator"))
        );
    }
    rx.stop.cancel();
}

#[tokio::test]
async fn documents_without_id_have_no_document_id_attribute() {
    let mut rx = receiver().await;
    let sink = sink_to(format!("http://{}", rx.addr), fast());
    let mut e = event(0);
    e.id = None;
    let batch = batch(vec![e]);
    sink.send(&batch).await.expect("acknowledged");
    let (_, req) = next_call(&mut rx.calls).await;
    assert_eq!(
        attr(&records(&req)[0].attributes, "elasticsearch.document_id"),
        None
    );
    rx.stop.cancel();
}

#[tokio::test]
async fn big_batches_are_split_into_bounded_requests() {
    let mut rx = receiver().await;
    let options = OtlpOptions {
        max_records: 3,
        ..fast()
    };
    let sink = sink_to(rx.addr, options);
    let batch = batch((0..8).map(event).collect());
    sink.send(&batch).await.expect("acknowledged");
    let mut sizes = Vec::new();
    for _ in 0..3 {
        let (_, req) = next_call(&mut rx.calls).await;
        sizes.push(records(&req).len());
    }
    assert_eq!(sizes, [3, 3, 2]);
    rx.stop.cancel();
}

#[tokio::test]
async fn unavailable_then_ok_is_retried() {
    let mut rx = receiver().await;
    rx.answer_next([
        Err(Status::unavailable("collector starting")),
        Err(Status::resource_exhausted("queue full")),
    ]);
    let sink = sink_to(rx.addr, fast());
    let batch = batch(vec![event(0)]);
    sink.send(&batch).await.expect("acknowledged after retries");
    let outcomes: Vec<bool> = [
        next_call(&mut rx.calls).await,
        next_call(&mut rx.calls).await,
        next_call(&mut rx.calls).await,
    ]
    .iter()
    .map(|(ok, _)| *ok)
    .collect();
    assert_eq!(outcomes, [false, false, true]);
    rx.stop.cancel();
}

#[tokio::test]
async fn invalid_argument_is_not_retried_and_not_acknowledged() {
    let rx = receiver().await;
    rx.answer_next([Err(Status::invalid_argument("bad"))]);
    let sink = sink_to(rx.addr, fast());
    let batch = batch(vec![event(0)]);
    let err = sink.send(&batch).await.expect_err("not acknowledged");
    assert!(
        matches!(
            err,
            SinkError::Otlp {
                code: tonic::Code::InvalidArgument,
                attempts: 1,
                ..
            }
        ),
        "{err}"
    );
    rx.stop.cancel();
}

#[tokio::test]
async fn partial_success_is_reported_not_retried_and_not_acknowledged() {
    let mut rx = receiver().await;
    rx.answer_next([Ok(ExportLogsServiceResponse {
        partial_success: Some(ExportLogsPartialSuccess {
            rejected_log_records: 1,
            error_message: "mapping conflict".into(),
        }),
    })]);
    let sink = sink_to(rx.addr, fast());
    let batch = batch(vec![event(0), event(1)]);
    let err = sink
        .send(&batch)
        .await
        .expect_err("a rejection is not an ack");
    match &err {
        SinkError::OtlpRejected {
            rejected,
            sent,
            message,
            ..
        } => {
            assert_eq!((*rejected, *sent), (1, 2));
            assert_eq!(message, "mapping conflict");
        }
        other => panic!("unexpected error {other}"),
    }
    assert_eq!(sink.rejected_records(), 1);
    // Exactly one call: the sink did not resend the request itself.
    let _ = next_call(&mut rx.calls).await;
    assert!(
        rx.calls.try_recv().is_err(),
        "no retry of a partial success"
    );
    // The poll loop's resend is accepted.
    sink.send(&batch).await.expect("acknowledged on resend");
    rx.stop.cancel();
}

/// On the wire: a receiver that is down is an `Unavailable` error at once (the refused
/// connection, not a timeout), and the same batch is delivered whole once it is back. How long
/// the sink retries an outage before that error is a unit test of its retry loop on the paused
/// clock (`src/sink/otlp.rs`); here it gives up after the first attempt.
#[tokio::test]
async fn outage_errors_after_bounded_time_then_recovers_without_loss() {
    // Reserve a port, then free it: nothing listens there during the outage.
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = probe.local_addr().expect("addr");
    drop(probe);
    let options = OtlpOptions {
        give_up_after: Duration::ZERO,
        ..fast()
    };
    let sink = sink_to(addr, options);
    let batch = batch((0..5).map(event).collect());
    let started = std::time::Instant::now();
    let err = sink.send(&batch).await.expect_err("receiver is down");
    assert!(
        matches!(
            err,
            SinkError::Otlp {
                code: tonic::Code::Unavailable,
                attempts: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the refused connection failed before the 5 s connect timeout"
    );

    // The receiver comes back on the same address; the poll loop resends the same batch.
    let mut rx = start_receiver(addr).await;
    sink.send(&batch).await.expect("acknowledged once back");
    let (ok, req) = next_call(&mut rx.calls).await;
    assert!(ok);
    let ids: Vec<Value> = records(&req)
        .iter()
        .map(|r| attr(&r.attributes, "elasticsearch.document_id").unwrap_or(Value::Null))
        .collect();
    assert_eq!(
        ids,
        (0..5)
            .map(|n| json!(format!("doc-{n}")))
            .collect::<Vec<_>>(),
        "every record of the batch arrives"
    );
    rx.stop.cancel();
    let _ = rx.task.await;
}
