//! The host harness's parts: Agent-shaped certificates (SNI = server_name verifies, another
//! name does not; a real mTLS handshake), the OTLP receiver's NDJSON, the policy → units
//! mapping, and the reconciliation rules of agent-protocol.md §5.4 against crafted check-ins.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use ti_sidecar::agent::structs::struct_to_json;
use ti_sidecar::host::certs::{Authority, PeerCert, new_server_name};
use ti_sidecar::host::policy::{self, Policy};
use ti_sidecar::host::receiver::EventsReceiver;
use ti_sidecar::host::server::Reconciler;
use ti_sidecar::ingest::EcsEvent;
use ti_sidecar::policy::StreamIdentity;
use ti_sidecar::proto::{CheckinObserved, State, UnitLogLevel, UnitObserved, UnitType};
use ti_sidecar::sink::otlp::{OtlpOptions, OtlpSink};
use ti_sidecar::sink::{Batch, Sink};

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .expect("one certificate")
        .expect("valid PEM")
}

fn agent_certs() -> (Authority, PeerCert) {
    let ca = Authority::new().expect("CA");
    let peer = ca.issue(&new_server_name()).expect("leaf");
    (ca, peer)
}

#[test]
fn server_cert_verifies_with_sni_server_name_only() {
    let (ca, peer) = agent_certs();
    assert!(
        peer.key_pem
            .expose_secret()
            .starts_with("-----BEGIN RSA PRIVATE KEY-----"),
        "peer_key is PKCS#1, as the Agent hands it over"
    );
    assert!(
        !format!("{peer:?}").contains("PRIVATE KEY"),
        "Debug hides the key"
    );
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(der(ca.cert_pem()))
        .expect("CA accepted as a root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .expect("verifier");
    let leaf = der(&peer.cert_pem);
    let name = ServerName::try_from(peer.server_name.clone()).expect("server_name is a DNS name");
    verifier
        .verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
        .expect("verifies for SNI = server_name");
    for other in ["localhost", "127.0.0.1", &new_server_name()] {
        let other = ServerName::try_from(other.to_owned()).expect("name");
        assert!(
            verifier
                .verify_server_cert(&leaf, &[], &other, &[], UnixTime::now())
                .is_err(),
            "must not verify for {other:?}"
        );
    }
    // Signed by this CA only.
    let (other_ca, _) = agent_certs();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der(other_ca.cert_pem())).expect("root");
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .expect("verifier");
    assert!(
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
            .is_err()
    );
}

/// Starts a health-only gRPC server with the host's TLS setup (SNI-selected certificate,
/// client certificates required).
async fn tls_server(
    ca: &Authority,
    peer: &PeerCert,
    stop: &CancellationToken,
) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let config = ti_sidecar::host::certs::server_tls_config(ca, &[peer]).expect("server TLS");
    let incoming = ti_sidecar::host::tls_incoming(listener, config, stop.clone());
    let s = stop.clone();
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming_shutdown(incoming, s.cancelled_owned())
            .await;
    });
    addr
}

#[tokio::test]
async fn mtls_handshake_with_agent_shaped_certificates() {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let (ca, peer) = agent_certs();
    let stop = CancellationToken::new();
    let addr = tls_server(&ca, &peer, &stop).await;
    let check = |domain: String, with_identity: bool| {
        let ca_pem = ca.cert_pem().to_owned();
        let peer = peer.clone();
        async move {
            let mut tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca_pem))
                .domain_name(domain);
            if with_identity {
                tls = tls.identity(Identity::from_pem(
                    &peer.cert_pem,
                    peer.key_pem.expose_secret(),
                ));
            }
            let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
                .expect("uri")
                .tls_config(tls)
                .expect("client TLS")
                .connect_timeout(Duration::from_secs(5))
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            tonic_health::pb::health_client::HealthClient::new(channel)
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .map(|r| r.into_inner().status)
                .map_err(|e| e.to_string())
        }
    };
    let ok = check(peer.server_name.clone(), true).await;
    assert_eq!(
        ok,
        Ok(tonic_health::pb::health_check_response::ServingStatus::Serving as i32)
    );
    assert!(
        check("localhost".into(), true).await.is_err(),
        "wrong name fails"
    );
    assert!(
        check(peer.server_name.clone(), false).await.is_err(),
        "no client certificate fails"
    );
    stop.cancel();
}

/// Accepts any server certificate: isolates the server's own SNI check.
#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[tokio::test]
async fn server_picks_its_certificate_by_sni_like_the_agent() {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject as _;
    let (ca, peer) = agent_certs();
    let stop = CancellationToken::new();
    let addr = tls_server(&ca, &peer, &stop).await;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::from_pem_slice(peer.key_pem.expose_secret().as_bytes()).expect("key");
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
        .with_client_auth_cert(vec![der(&peer.cert_pem)], key)
        .expect("client auth");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let handshake = |sni: String| {
        let connector = connector.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let name = ServerName::try_from(sni).expect("name");
            connector.connect(name, tcp).await.map(|tls| {
                let (_, conn) = tls.get_ref();
                conn.peer_certificates().map(|c| c[0].clone())
            })
        }
    };
    let presented = handshake(peer.server_name.clone())
        .await
        .expect("handshake with SNI = server_name");
    assert_eq!(
        presented,
        Some(der(&peer.cert_pem)),
        "the component's own pair"
    );
    assert!(
        handshake(new_server_name()).await.is_err(),
        "another SNI: the server has no certificate for it"
    );
    assert!(handshake("localhost".into()).await.is_err());
    stop.cancel();
}

#[tokio::test]
async fn receiver_writes_ndjson_with_metadata_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.ndjson");
    let receiver = EventsReceiver::open(Some(&path)).await.expect("open");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    let s = stop.clone();
    let r = receiver.clone();
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(r.service(4 * 1024 * 1024))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                s.cancelled_owned(),
            )
            .await;
    });
    let sink = OtlpSink::new(&addr.to_string(), None, OtlpOptions::default()).expect("sink");
    let stream = StreamIdentity {
        id: "tq-threat".into(),
        dataset: "ti_threatq.threat".into(),
        namespace: "default".into(),
    };
    let doc = |n: i64| {
        let Value::Object(m) = json!({"threatq": {"id": 9_223_372_036_854_775_000_i64 + n}, "event": {"kind": "enrichment"}})
        else {
            unreachable!()
        };
        m
    };
    let batch = Batch {
        input_id: "tq-prod",
        stream: &stream,
        events: vec![
            EcsEvent {
                id: Some("id-0".into()),
                timestamp: None,
                doc: doc(0).into(),
            },
            EcsEvent {
                id: None,
                timestamp: None,
                doc: doc(1).into(),
            },
        ],
    };
    sink.send(&batch).await.expect("acknowledged");
    // The ack comes after the lines are flushed: the file is complete now.
    let text = std::fs::read_to_string(&path).expect("events file");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0],
        json!({
            "threatq": {"id": 9_223_372_036_854_775_000_i64},
            "event": {"kind": "enrichment"},
            "@metadata": {"_id": "id-0", "input_id": "tq-prod", "stream_id": "tq-threat"},
            "data_stream": {"type": "logs", "dataset": "ti_threatq.threat", "namespace": "default"},
        })
    );
    assert_eq!(lines[1]["@metadata"].get("_id"), None);
    assert_eq!(receiver.received(), 2);
    stop.cancel();
}

const POLICY: &str = r#"
outputs:
  default: { type: ndjson, path: "-" }
inputs:
  - id: tc-prod
    type: ti_threatconnect
    log_level: debug
    data_stream: { namespace: prod }
    streams:
      - id: tc-prod-indicator
        data_stream: { dataset: ti_threatconnect.indicator }
        url: https://app.threatconnect.com
        access_id: "12345"
        secret_key: ${TC_SECRET}
  - id: tq-prod
    type: ti_threatq
    streams:
      - id: tq-prod-threat
        data_stream: { dataset: ti_threatq.threat }
        host: https://threatq.example.com
        client_id: elastic
        client_secret: tq-secret
        data_collection_id: "abc123"
  - id: tc-off
    type: ti_threatconnect
    enabled: false
    streams:
      - id: tc-off-indicator
        access_id: "1"
        secret_key: x
"#;

fn lookup(name: &str) -> Option<String> {
    (name == "TC_SECRET").then(|| "tc-secret".to_owned())
}

fn policy(text: &str) -> Policy {
    policy::from_str(text, &lookup, "http://127.0.0.1:4317").unwrap_or_else(|p| panic!("{p}"))
}

#[test]
fn policy_maps_to_one_input_unit_per_input_and_one_output_unit() {
    let p = policy(POLICY);
    assert_eq!(p.component_id, "ti-sidecar-default");
    let ids: Vec<(&str, UnitType)> = p
        .units
        .iter()
        .map(|u| (u.id.as_str(), u.unit_type))
        .collect();
    assert_eq!(
        ids,
        [
            ("ti-sidecar-default-tc-prod", UnitType::Input),
            ("ti-sidecar-default-tq-prod", UnitType::Input),
            ("ti-sidecar-default", UnitType::Output),
        ],
        "disabled inputs are dropped"
    );
    let tc = &p.units[0];
    assert_eq!(tc.log_level, UnitLogLevel::Debug);
    assert_eq!(tc.config.id, "tc-prod");
    assert_eq!(tc.config.r#type, "ti_threatconnect");
    let source = struct_to_json(tc.config.source.as_ref().expect("source"));
    assert_eq!(
        source["streams"][0]["secret_key"], "tc-secret",
        "variables are expanded"
    );
    for removed in ["use_output", "enabled", "log_level"] {
        assert!(source.get(removed).is_none(), "{removed} is removed");
    }
    assert_eq!(tc.config.streams.len(), 1);
    let ds = tc.config.streams[0]
        .data_stream
        .as_ref()
        .expect("data_stream");
    assert_eq!(tc.config.streams[0].id, "tc-prod-indicator");
    assert_eq!(
        (
            ds.dataset.as_str(),
            ds.r#type.as_str(),
            ds.namespace.as_str()
        ),
        ("ti_threatconnect.indicator", "logs", "prod")
    );
    assert_eq!(p.units[1].log_level, UnitLogLevel::Info);
    let out = &p.units[2];
    assert_eq!(out.config.r#type, "otlp");
    assert_eq!(
        struct_to_json(out.config.source.as_ref().expect("source")),
        json!({"type": "otlp", "endpoint": "http://127.0.0.1:4317"}),
        "an ndjson output is replaced by the host's receiver"
    );
    // An otlp output is kept as written.
    let own = policy(&POLICY.replace(
        r#"{ type: ndjson, path: "-" }"#,
        r#"{ type: otlp, endpoint: "collector:4317" }"#,
    ));
    assert_eq!(
        struct_to_json(own.units[2].config.source.as_ref().expect("source"))["endpoint"],
        "collector:4317"
    );
    // An invalid policy is refused with every problem.
    let bad = policy::from_str(
        &POLICY.replace("access_id: \"12345\"", "access_id: \"\""),
        &lookup,
        "x",
    );
    assert!(bad.is_err());
}

fn observed(id: &str, t: UnitType, idx: u64, state: State) -> UnitObserved {
    UnitObserved {
        id: id.into(),
        r#type: t as i32,
        config_state_idx: idx,
        state: state as i32,
        message: format!("{state:?}"),
        payload: None,
    }
}

fn checkin(units: Vec<UnitObserved>, idx: u64) -> CheckinObserved {
    CheckinObserved {
        token: "t".into(),
        units,
        features_idx: idx,
        component_idx: idx,
        ..CheckinObserved::default()
    }
}

const TC: &str = "ti-sidecar-default-tc-prod";
const TQ: &str = "ti-sidecar-default-tq-prod";
const OUT: &str = "ti-sidecar-default";

fn all(idx: [u64; 3], states: [State; 3]) -> Vec<UnitObserved> {
    vec![
        observed(TC, UnitType::Input, idx[0], states[0]),
        observed(TQ, UnitType::Input, idx[1], states[1]),
        observed(OUT, UnitType::Output, idx[2], states[2]),
    ]
}

fn configs(msg: &ti_sidecar::proto::CheckinExpected) -> Vec<(String, u64, bool)> {
    let mut v: Vec<_> = msg
        .units
        .iter()
        .map(|u| (u.id.clone(), u.config_state_idx, u.config.is_some()))
        .collect();
    v.sort();
    v
}

#[test]
fn reconciliation_follows_the_agent_rules() {
    use State::{Healthy, Starting, Stopped};
    let p = policy(POLICY);
    let mut r = Reconciler::new(&p);

    // Trigger 1: the first check-in of a process is answered, every unit with its config.
    let first = r.observe(&checkin(vec![], 0));
    let reply = first.reply.expect("answered");
    assert_eq!(
        configs(&reply),
        [
            (OUT.into(), 1, true),
            (TC.into(), 1, true),
            (TQ.into(), 1, true)
        ]
    );
    assert_eq!((reply.features_idx, reply.component_idx), (2, 2));
    assert!(
        first.problems.is_empty(),
        "units never seen count as STARTING"
    );

    // Acknowledged but STARTING: unsettled, so answered, and without configs.
    let obs = r.observe(&checkin(all([1, 1, 1], [Starting, Starting, Healthy]), 2));
    let reply = obs.reply.expect("unsettled → answered");
    assert!(
        configs(&reply)
            .iter()
            .all(|(_, idx, cfg)| *idx == 1 && !cfg)
    );
    assert_eq!(obs.changes.len(), 3, "first sight of each unit is a change");

    // All HEALTHY with the indices echoed: settled, the host stays silent.
    let obs = r.observe(&checkin(all([1, 1, 1], [Healthy, Healthy, Healthy]), 2));
    assert!(obs.reply.is_none());
    assert_eq!(obs.changes.len(), 2, "the two inputs turned HEALTHY");
    assert!(r.settled() && r.all_healthy());
    let obs = r.observe(&checkin(all([1, 1, 1], [Healthy, Healthy, Healthy]), 2));
    assert!(obs.reply.is_none() && obs.changes.is_empty());

    // Not echoing features_idx is unsettled.
    assert!(
        r.observe(&checkin(all([1, 1, 1], [Healthy; 3]), 0))
            .reply
            .is_some()
    );
    assert!(
        r.observe(&checkin(all([1, 1, 1], [Healthy; 3]), 2))
            .reply
            .is_none()
    );

    // A running unit missing from a check-in: FAILED "not reported", and its config is resent.
    let mut units = all([1, 1, 1], [Healthy; 3]);
    units.remove(1);
    let obs = r.observe(&checkin(units, 2));
    assert!(
        obs.problems
            .iter()
            .any(|p| p.contains(TQ) && p.contains("not reported in check-in"))
    );
    let reply = obs.reply.expect("unsettled");
    assert!(configs(&reply).contains(&(TQ.into(), 1, true)));
    assert!(configs(&reply).contains(&(TC.into(), 1, false)));

    // An unknown unit that is not STOPPED: FAILED "reported unit is unknown".
    let mut units = all([1, 1, 1], [Healthy; 3]);
    units.push(observed("ghost", UnitType::Input, 1, Healthy));
    let obs = r.observe(&checkin(units, 2));
    assert!(
        obs.problems
            .iter()
            .any(|p| p.contains("ghost") && p.contains("unknown"))
    );
    let mut units = all([1, 1, 1], [Healthy; 3]);
    units.push(observed("ghost", UnitType::Input, 1, Stopped));
    assert!(r.observe(&checkin(units, 2)).problems.is_empty());
    assert!(
        r.observe(&checkin(all([1, 1, 1], [Healthy; 3]), 2))
            .reply
            .is_none()
    );

    // Policy change (trigger 3): the changed unit gets idx 2 with its config; the removed
    // unit is expected STOPPED; unchanged units keep idx 1 without config.
    let changed = policy(
        &POLICY
            .replace("access_id: \"12345\"", "access_id: \"99999\"")
            .replace(
                "  - id: tq-prod\n    type: ti_threatq\n",
                "  - id: tq-prod\n    type: ti_threatq\n    enabled: false\n",
            ),
    );
    let push = r.apply_policy(&changed).expect("pushed");
    let states: Vec<(String, u64, bool, i32)> = {
        let mut v: Vec<_> = push
            .units
            .iter()
            .map(|u| {
                (
                    u.id.clone(),
                    u.config_state_idx,
                    u.config.is_some(),
                    u.state,
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        states,
        [
            (OUT.into(), 1, false, Healthy as i32),
            (TC.into(), 2, true, Healthy as i32),
            (TQ.into(), 1, false, Stopped as i32),
        ]
    );
    assert!(
        r.apply_policy(&changed).is_none(),
        "same policy: nothing to push"
    );

    // The component acknowledges and stops the unit; once STOPPED is seen, it is removed.
    let obs = r.observe(&checkin(all([2, 1, 1], [Healthy, Stopped, Healthy]), 2));
    let reply = obs.reply.expect("unit count now differs → answered");
    assert_eq!(
        configs(&reply),
        [(OUT.into(), 1, false), (TC.into(), 2, false)]
    );
    let mut units = all([2, 1, 1], [Healthy; 3]);
    units.remove(1);
    assert!(
        r.observe(&checkin(units.clone(), 2)).reply.is_none(),
        "settled again"
    );

    // A restarted process gets an answer to its first check-in even if it looks settled.
    r.process_started();
    let reply = r.observe(&checkin(units, 2)).reply.expect("trigger 1");
    assert!(!reply.units.is_empty());
}
