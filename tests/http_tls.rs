//! The shared HTTP client's `ssl` and `proxy_url` settings, against real TLS on loopback:
//! `verification_mode` full / strict / certificate / none, custom CAs, mutual TLS with a plain or
//! an encrypted (`key_passphrase`) key, `supported_protocols` and `ca_trusted_fingerprint`.

use std::sync::Arc;
use std::time::Duration;
use ti_sidecar::source::registry::StreamSettings as _;

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
    let server = Server {
        versions: rustls::DEFAULT_VERSIONS,
        chain: pki.server_cert.clone(),
    };
    server.start(pki, require_client, answer).await
}

/// How a test server presents itself.
struct Server {
    versions: &'static [&'static rustls::SupportedProtocolVersion],
    /// The certificate chain it sends (PEM).
    chain: String,
}

impl Server {
    /// Serves `{}` with this chain and these protocol versions.
    async fn serve(self, pki: &Pki) -> std::net::SocketAddr {
        let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
        self.start(pki, false, ok.to_owned()).await
    }

    async fn start(self, pki: &Pki, require_client: bool, answer: String) -> std::net::SocketAddr {
        let answer = Arc::new(answer);
        let certs = pem_certs(&self.chain);
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_slice(pki.server_key.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(self.versions)
            .unwrap();
        let config = if require_client {
            let mut roots = rustls::RootCertStore::empty();
            for c in pem_certs(&pki.ca_pem) {
                roots.add(c).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
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

// ---------------------------------------------------------------------------------------------
// The Beats settings users copy: strict, key_passphrase, supported_protocols,
// ca_trusted_fingerprint, and `ssl` as YAML text

/// Reads a ThreatConnect stream's `ssl` as `validate` and `run` do.
fn read_ssl(ssl: serde_json::Value) -> Result<SslConfig, String> {
    let stream = serde_json::json!({"access_id": "42", "secret_key": "hmac-secret", "ssl": ssl});
    let mut reader = FieldReader::open("s", &stream).unwrap();
    let config = ThreatConnectConfig::from_fields(&mut reader);
    let problems = reader.finish();
    match config {
        Some(c) if problems.is_empty() => Ok(c.http.ssl),
        _ => Err(problems.iter().map(ToString::to_string).collect()),
    }
}

/// `key` (PKCS#8 PEM) encrypted with `passphrase` as `openssl pkcs8 -topk8 -v2 aes-256-cbc`
/// writes it (PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC).
fn encrypt_key(key_pem: &str, passphrase: &str) -> String {
    let der = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let info = pkcs8::PrivateKeyInfo::try_from(der.secret_pkcs8_der()).unwrap();
    let params =
        pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(2048, b"saltsalt", &[7u8; 16])
            .unwrap();
    let encrypted = info.encrypt_with_params(params, passphrase).unwrap();
    encrypted
        .to_pem("ENCRYPTED PRIVATE KEY", pkcs8::LineEnding::LF)
        .unwrap()
        .to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn sha256(pem: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(pem_certs(pem)[0].as_ref()).into()
}

#[tokio::test]
async fn an_encrypted_pkcs8_key_with_key_passphrase_does_mutual_tls() {
    let pki = pki("localhost");
    let addr = serve(&pki, true).await;
    let url = format!("https://localhost:{}/", addr.port());
    let passphrase = "correct horse battery staple";
    let encrypted = encrypt_key(&pki.client_key, passphrase);
    assert!(encrypted.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));

    let ssl = read_ssl(serde_json::json!({
        "certificate_authorities": [pki.ca_pem],
        "certificate": pki.client_cert,
        "key": encrypted,
        "key_passphrase": passphrase,
    }))
    .expect("validates");
    assert_eq!(get(&client(ssl), &url).await, Ok(200));

    // Without the passphrase, and with a wrong one: named, and neither secret shown.
    for (given, expected) in [
        (
            None,
            "s.ssl.key: the private key in inline PEM is encrypted: set `key_passphrase`",
        ),
        (
            Some("wrong"),
            "s.ssl.key: cannot decrypt the private key in inline PEM: wrong `key_passphrase`",
        ),
    ] {
        let mut ssl = serde_json::json!({"certificate": pki.client_cert, "key": encrypted});
        if let Some(p) = given {
            ssl["key_passphrase"] = p.into();
        }
        let err = read_ssl(ssl).unwrap_err();
        assert!(err.starts_with(expected), "{err}");
        assert!(
            !err.contains("wrong`") && !err.contains(passphrase),
            "{err}"
        );
        for line in material(&encrypted) {
            assert!(!err.contains(&line), "{err}");
        }
    }
    // The redacted config shows that a passphrase is set, never what it is.
    let ssl = read_ssl(serde_json::json!({
        "certificate": pki.client_cert, "key": encrypted, "key_passphrase": passphrase,
    }))
    .unwrap();
    let shown = ti_sidecar::config::fields::ssl_to_json(&ssl).to_string();
    assert!(
        shown.contains("\"key_passphrase\":\"[REDACTED]\""),
        "{shown}"
    );
    assert!(!shown.contains(passphrase) && !format!("{ssl:?}").contains(passphrase));
}

#[tokio::test]
async fn a_legacy_encrypted_pem_key_gets_the_conversion_command() {
    let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00112233445566778899AABBCCDDEEFF\n\nc2VjcmV0c2VjcmV0c2VjcmV0\n-----END RSA PRIVATE KEY-----\n";
    let pki = pki("localhost");
    let err = read_ssl(serde_json::json!({
        "certificate": pki.client_cert, "key": legacy, "key_passphrase": "x",
    }))
    .unwrap_err();
    assert!(
        err.contains("legacy PEM encryption") && err.contains("openssl pkcs8 -topk8"),
        "{err}"
    );
    assert!(!err.contains("c2VjcmV0"), "{err}");
}

static TLS12_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

#[tokio::test]
async fn supported_protocols_choose_the_tls_versions_offered() {
    let pki = pki("localhost");
    let tls12_only = Server {
        versions: TLS12_ONLY,
        chain: pki.server_cert.clone(),
    }
    .serve(&pki)
    .await;
    let url = format!("https://localhost:{}/", tls12_only.port());
    let with = |protocols: serde_json::Value| {
        read_ssl(serde_json::json!({
            "certificate_authorities": [pki.ca_pem], "supported_protocols": protocols,
        }))
        .unwrap()
    };
    assert_eq!(
        get(
            &client(with(serde_json::json!(["TLSv1.2", "TLSv1.3"]))),
            &url
        )
        .await,
        Ok(200)
    );
    assert_eq!(
        get(&client(with(serde_json::json!(["TLSv1.2"]))), &url).await,
        Ok(200)
    );
    let err = get(&client(with(serde_json::json!(["TLSv1.3"]))), &url)
        .await
        .unwrap_err();
    assert!(
        err.to_lowercase().contains("version")
            || err.contains("handshake")
            || err.contains("alert"),
        "{err}"
    );
}

#[tokio::test]
async fn ca_trusted_fingerprint_trusts_the_ca_the_server_presents() {
    let pki = pki("localhost");
    // The server sends its CA in the chain, as Elasticsearch's auto-generated setup does.
    let addr = Server {
        versions: rustls::DEFAULT_VERSIONS,
        chain: format!("{}{}", pki.server_cert, pki.ca_pem),
    }
    .serve(&pki)
    .await;
    let url = format!("https://localhost:{}/", addr.port());
    let pinned = |fingerprint: String| {
        read_ssl(serde_json::json!({"ca_trusted_fingerprint": fingerprint})).unwrap()
    };
    // No CA configured: the public roots alone refuse the chain.
    assert!(get(&client(SslConfig::default()), &url).await.is_err());
    // The CA's fingerprint, as openssl prints it (colons, upper case) and as Kibana shows it.
    let ca = sha256(&pki.ca_pem);
    assert_eq!(get(&client(pinned(hex(&ca))), &url).await, Ok(200));
    assert_eq!(
        get(
            &client(pinned(hex(&ca).replace(':', "").to_lowercase())),
            &url
        )
        .await,
        Ok(200)
    );
    // The host name is still checked under `full`.
    let by_ip = format!("https://127.0.0.1:{}/", addr.port());
    assert!(get(&client(pinned(hex(&ca))), &by_ip).await.is_err());
    // Another CA's fingerprint, or the leaf's (not a CA): refused, as Beats does.
    let other = sha256(&make_other().ca_pem);
    assert!(get(&client(pinned(hex(&other))), &url).await.is_err());
    let leaf = sha256(&pki.server_cert);
    assert!(get(&client(pinned(hex(&leaf))), &url).await.is_err());
}

#[test]
fn strict_is_full_and_ssl_text_is_read_as_the_yaml_it_holds() {
    let strict = read_ssl(serde_json::json!({"verification_mode": "strict"})).unwrap();
    assert_eq!(strict.verification_mode, VerificationMode::Full);
    // ThreatQ's package default, and text with nothing in it: no ssl settings at all.
    for nothing in ["#verification_mode: none", "", "  \n# a comment\n"] {
        assert_eq!(
            read_ssl(serde_json::json!(nothing)),
            Ok(SslConfig::default()),
            "{nothing:?}"
        );
    }
    // Text holding settings (Fleet's yaml variable) is read like the map.
    let text = read_ssl(serde_json::json!(
        "verification_mode: none\nsupported_protocols: [TLSv1.3]\n"
    ))
    .unwrap();
    assert_eq!(text.verification_mode, VerificationMode::None);
    assert_eq!(
        text.supported_protocols,
        [ti_sidecar::config::TlsVersion::Tls13]
    );
}
