//! The shared HTTP client's `ssl` and `proxy_url` settings, against real TLS on loopback:
//! `verification_mode` full / certificate / none, custom CAs, and mutual TLS.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use secrecy::SecretString;
use ti_sidecar::config::fields::FieldReader;
use ti_sidecar::config::{HttpConfig, SslConfig, VerificationMode};
use ti_sidecar::http::{HttpClient, RetryPolicy};
use ti_sidecar::source::threatconnect::config::ThreatConnectConfig;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;

struct Pki {
    ca_pem: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn pki(server_name: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec![server_name.to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["client".to_owned()])
        .unwrap()
        .signed_by(&client_key, &issuer)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        server_cert: server.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: client.pem(),
        client_key: client_key.serialize_pem(),
    }
}

/// A one-shot-per-connection HTTPS server answering `{}`; with `require_client` it demands a
/// client certificate signed by the CA.
async fn serve(pki: &Pki, require_client: bool) -> std::net::SocketAddr {
    let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
    serve_answering(pki, require_client, ok.to_owned()).await
}

/// [`serve`] with a fixed raw HTTP/1.1 answer.
async fn serve_answering(pki: &Pki, require_client: bool, answer: String) -> std::net::SocketAddr {
    let answer = Arc::new(answer);
    let certs = pem_certs(&pki.server_cert);
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(pki.server_key.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let config = if require_client {
        let mut roots = rustls::RootCertStore::empty();
        for c in pem_certs(&pki.ca_pem) {
            roots.add(c).unwrap();
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        builder
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .unwrap()
    } else {
        builder
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap()
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let answer = answer.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

fn pem_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

fn client(ssl: SslConfig) -> HttpClient {
    let cfg = HttpConfig {
        timeout: Duration::from_secs(5),
        proxy_url: None,
        ssl,
        enable_request_tracer: false,
        max_response_size: ti_sidecar::config::size::default_max_response_size(),
    };
    HttpClient::build(&cfg, None, ti_sidecar::redact::Secrets::default())
        .unwrap()
        .with_retry(RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
            max_attempts: 1,
        })
}

async fn get(client: &HttpClient, url: &str) -> Result<u16, String> {
    client
        .send(|c| {
            c.get(url)
                .build()
                .map_err(|e| ti_sidecar::http::HttpError::Transport(e.to_string()))
        })
        .await
        .map(|r| r.status)
        .map_err(|e| e.to_string())
}

fn ssl(pki: &Pki, mode: VerificationMode) -> SslConfig {
    SslConfig {
        certificate_authorities: vec![pki.ca_pem.clone()],
        verification_mode: mode,
        ..SslConfig::default()
    }
}

#[tokio::test]
async fn full_verification_trusts_the_configured_ca_and_checks_the_name() {
    let pki = pki("localhost");
    let addr = serve(&pki, false).await;
    let c = client(ssl(&pki, VerificationMode::Full));
    assert_eq!(
        get(&c, &format!("https://localhost:{}/", addr.port())).await,
        Ok(200)
    );
    // The certificate is for "localhost", not for the IP literal.
    let err = get(&c, &format!("https://127.0.0.1:{}/", addr.port()))
        .await
        .unwrap_err();
    assert!(
        err.contains("certificate") || err.contains("Certificate"),
        "{err}"
    );
}

#[tokio::test]
async fn full_verification_refuses_an_unknown_ca() {
    let pki = pki("localhost");
    let addr = serve(&pki, false).await;
    let c = client(SslConfig::default());
    assert!(
        get(&c, &format!("https://localhost:{}/", addr.port()))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn certificate_mode_checks_the_chain_but_not_the_name() {
    let pki = pki("some-other-name.example");
    let addr = serve(&pki, false).await;
    let c = client(ssl(&pki, VerificationMode::Certificate));
    assert_eq!(
        get(&c, &format!("https://localhost:{}/", addr.port())).await,
        Ok(200)
    );
    // ...but still refuses a chain it cannot verify.
    let other = make_other();
    let c = client(ssl(&other, VerificationMode::Certificate));
    assert!(
        get(&c, &format!("https://localhost:{}/", addr.port()))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn none_mode_accepts_anything() {
    let pki = pki("some-other-name.example");
    let addr = serve(&pki, false).await;
    let c = client(SslConfig {
        verification_mode: VerificationMode::None,
        ..SslConfig::default()
    });
    assert_eq!(
        get(&c, &format!("https://127.0.0.1:{}/", addr.port())).await,
        Ok(200)
    );
}

#[tokio::test]
async fn mutual_tls_presents_the_client_certificate() {
    let pki = pki("localhost");
    let addr = serve(&pki, true).await;
    let url = format!("https://localhost:{}/", addr.port());
    let without = client(ssl(&pki, VerificationMode::Full));
    assert!(
        get(&without, &url).await.is_err(),
        "the server demands a client certificate"
    );
    let mut with = ssl(&pki, VerificationMode::Full);
    with.certificate = Some(pki.client_cert.clone());
    with.key = Some(SecretString::from(pki.client_key.clone()));
    assert_eq!(get(&client(with), &url).await, Ok(200));
}

#[tokio::test]
async fn proxy_url_routes_requests_through_the_proxy() {
    let proxy = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::path("/api/v3/indicators"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_string("{}"))
        .mount(&proxy)
        .await;
    let cfg = HttpConfig {
        timeout: Duration::from_secs(5),
        proxy_url: Some(proxy.uri().parse().unwrap()),
        ssl: SslConfig::default(),
        enable_request_tracer: false,
        max_response_size: ti_sidecar::config::size::default_max_response_size(),
    };
    let c = HttpClient::build(&cfg, None, ti_sidecar::redact::Secrets::default()).unwrap();
    // The name does not resolve: only a proxy can answer.
    assert_eq!(
        get(&c, "http://tc.invalid/api/v3/indicators").await,
        Ok(200)
    );
    let seen = proxy.received_requests().await.unwrap();
    assert_eq!(seen.len(), 1);
}

/// A second, unrelated PKI.
fn make_other() -> Pki {
    pki("localhost")
}

/// What `openssl pkcs12 -nodes` writes: `Bag Attributes` lines before each `-----BEGIN`.
fn openssl_export(pem: &str) -> String {
    format!(
        "Bag Attributes\n    friendlyName: client\n    localKeyID: 01 02 03 04\n\
         Key Attributes: <No Attributes>\n{pem}"
    )
}

/// The base64 body of a PEM block: key material that no message may ever contain.
fn material(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 16)
        .map(|l| l[..16].to_owned())
        .collect()
}

/// Validates a ThreatConnect stream carrying `ssl` as `validate` does; the problems as text.
fn validate_ssl(ssl: serde_json::Value) -> Result<(), String> {
    let stream = serde_json::json!({"access_id": "42", "secret_key": "hmac-secret", "ssl": ssl});
    let mut reader = FieldReader::open("s", &stream).unwrap();
    let config = ThreatConnectConfig::from_fields(&mut reader);
    let problems = reader.finish();
    match config {
        Some(_) if problems.is_empty() => Ok(()),
        _ => Err(problems.iter().map(ToString::to_string).collect()),
    }
}

/// The attack: `validate` took the key as inline PEM (it *contains* `-----BEGIN`), `run` as a path
/// (it does not *start* with it) and logged the whole private key in the "cannot read" error.
#[tokio::test]
async fn openssl_exported_key_with_bag_attributes_is_loaded_not_logged_as_a_path() {
    let pki = pki("localhost");
    let key = openssl_export(&pki.client_key);
    let cert = openssl_export(&pki.client_cert);

    validate_ssl(serde_json::json!({
        "certificate_authorities": [pki.ca_pem],
        "certificate": cert,
        "key": key,
    }))
    .unwrap_or_else(|p| panic!("{p}"));

    // The HTTP client loads the same key and presents it in a real mutual-TLS handshake.
    let addr = serve(&pki, true).await;
    let mut with = ssl(&pki, VerificationMode::Full);
    with.certificate = Some(cert.clone());
    with.key = Some(SecretString::from(key.clone()));
    let url = format!("https://localhost:{}/", addr.port());
    assert_eq!(get(&client(with.clone()), &url).await, Ok(200));

    // ...and so does the OTLP sink.
    ti_sidecar::sink::otlp::OtlpSink::new(
        "https://localhost:4317",
        Some(&with),
        ti_sidecar::sink::otlp::OtlpOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

/// A broken key is reported by validate, the HTTP client and the OTLP sink alike, naming the
/// field and "inline PEM", never a line of the key (nor a key "path" holding line breaks).
#[tokio::test]
async fn broken_inline_key_errors_never_contain_key_material() {
    let pki = pki("localhost");
    let whole = openssl_export(&pki.client_key);
    // The END line is gone: a malformed section.
    let truncated = whole.replace("-----END PRIVATE KEY-----", "");
    // No BEGIN line at all, but several lines: still inline, never a path to print.
    let headless: String = pki
        .client_key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .join("\n");
    for bad in [truncated, headless] {
        let secret_bits = material(&pki.client_key);
        let leaks = |text: &str| secret_bits.iter().any(|m| text.contains(m.as_str()));

        let problems = validate_ssl(serde_json::json!({
            "certificate": pki.client_cert,
            "key": bad,
        }))
        .unwrap_err();
        assert!(problems.starts_with("s.ssl.key: "), "{problems}");
        assert!(problems.contains("inline PEM"), "{problems}");
        assert!(!leaks(&problems), "{problems}");

        let mut with = ssl(&pki, VerificationMode::Full);
        with.certificate = Some(pki.client_cert.clone());
        with.key = Some(SecretString::from(bad.clone()));
        let cfg = HttpConfig {
            timeout: Duration::from_secs(5),
            proxy_url: None,
            ssl: with.clone(),
            enable_request_tracer: false,
            max_response_size: ti_sidecar::config::size::default_max_response_size(),
        };
        let e = HttpClient::build(&cfg, None, ti_sidecar::redact::Secrets::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("ssl.key: ") && e.contains("inline PEM"),
            "{e}"
        );
        assert!(!leaks(&e), "{e}");

        let e = ti_sidecar::sink::otlp::OtlpSink::new(
            "https://localhost:4317",
            Some(&with),
            ti_sidecar::sink::otlp::OtlpOptions::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("ssl.key: ") && e.contains("inline PEM"), "{e}");
        assert!(!leaks(&e), "{e}");
    }
}

/// The attack: an https API answering a redirect to plain http. The request (and its
/// Authorization header) must never leave TLS, whatever the host.
#[tokio::test]
async fn https_request_never_follows_a_redirect_to_http() {
    let plain = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::any())
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_string("{}"))
        .mount(&plain)
        .await;
    let pki = pki("localhost");
    let answer = format!(
        "HTTP/1.1 302 Found\r\nlocation: {}/api?token=x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        plain.uri()
    );
    let addr = serve_answering(&pki, false, answer).await;
    let c = client(ssl(&pki, VerificationMode::Full));
    let err = get(&c, &format!("https://localhost:{}/", addr.port()))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        format!(
            "redirect (302) to {} refused: https never drops to http",
            plain.uri()
        )
    );
    assert!(plain.received_requests().await.unwrap().is_empty());
}
