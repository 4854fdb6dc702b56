//! The mTLS gRPC channel to the Agent (spec §3.2).
//!
//! The client presents `peer_cert`/`peer_key`, verifies the server against `ca_cert`, and sends
//! SNI = `server_name` (never the address's host): the Agent picks its certificate by SNI. Both
//! message-size limits are raised to `max_message_size`. `unix://` addresses are dialled through
//! a Unix-socket connector; TLS still runs on top.

use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::proto::StartUpInfo;
use crate::proto::elastic_agent_client::ElasticAgentClient;

/// The Agent's default `max_message_size` (100 MiB), used when the StartUpInfo leaves it 0.
pub(crate) const DEFAULT_MAX_MESSAGE_SIZE: usize = 100 * 1024 * 1024;

/// The channel could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// `addr` is not a usable address.
    #[error("StartUpInfo.addr {addr:?} is not a usable gRPC address: {message}")]
    Address {
        /// The address.
        addr: String,
        /// Why.
        message: String,
    },
    /// The TLS material was refused (bad PEM, wrong key type).
    #[error("TLS setup with server name {server_name:?} failed: {message}")]
    Tls {
        /// The expected server name.
        server_name: String,
        /// Why.
        message: String,
    },
    /// Connecting (TCP, TLS handshake, HTTP/2) failed.
    #[error("cannot connect to the Agent at {addr}: {message}")]
    Connect {
        /// The address.
        addr: String,
        /// Why (the full error chain).
        message: String,
    },
}

/// The generated client with both size limits set.
pub(crate) type AgentClient = ElasticAgentClient<Channel>;

/// Where to dial.
enum Target {
    Tcp(Endpoint),
    Unix(Endpoint, std::path::PathBuf),
}

/// The message-size limit the StartUpInfo asks for.
pub fn max_message_size(info: &StartUpInfo) -> usize {
    match info.max_message_size {
        0 => DEFAULT_MAX_MESSAGE_SIZE,
        n => n as usize,
    }
}

/// Wraps a channel in the client, with both limits at `max_message_size`.
pub fn client(channel: Channel, info: &StartUpInfo) -> AgentClient {
    let limit = max_message_size(info);
    ElasticAgentClient::new(channel)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit)
}

fn target(info: &StartUpInfo) -> Result<Target, ConnectionError> {
    let addr = info.addr.trim();
    let bad = |message: String| ConnectionError::Address {
        addr: addr.to_owned(),
        message,
    };
    if let Some(path) = addr.strip_prefix("unix://") {
        if path.is_empty() {
            return Err(bad("empty socket path".into()));
        }
        // The URI only selects TLS (https) and the :authority header; the socket is dialled
        // by the connector.
        return Ok(Target::Unix(
            Endpoint::from_static("https://localhost"),
            path.into(),
        ));
    }
    if addr.starts_with("npipe://") {
        return Err(bad("named pipes are Windows-only".into()));
    }
    let uri = if addr.contains("://") {
        addr.replacen("http://", "https://", 1)
    } else {
        format!("https://{addr}")
    };
    Endpoint::from_shared(uri)
        .map(Target::Tcp)
        .map_err(|e| bad(e.to_string()))
}

fn tls(info: &StartUpInfo) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&info.ca_cert))
        .identity(Identity::from_pem(&info.peer_cert, &info.peer_key))
        .domain_name(info.server_name.clone())
}

fn configure(endpoint: Endpoint, info: &StartUpInfo) -> Result<Endpoint, ConnectionError> {
    endpoint
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true)
        .tls_config(tls(info))
        .map_err(|e| ConnectionError::Tls {
            server_name: info.server_name.clone(),
            message: error_chain(&e),
        })
}

/// A lazily connecting channel: gRPC re-dials by itself after a break, so the check-in and
/// actions loops just reopen their streams on it.
pub(crate) fn channel_lazy(info: &StartUpInfo) -> Result<Channel, ConnectionError> {
    Ok(match target(info)? {
        Target::Tcp(endpoint) => configure(endpoint, info)?.connect_lazy(),
        Target::Unix(endpoint, path) => {
            configure(endpoint, info)?.connect_with_connector_lazy(unix_connector(path))
        }
    })
}

/// Connects now (TCP, TLS handshake with SNI, HTTP/2), surfacing a refused handshake as an error.
pub async fn connect(info: &StartUpInfo) -> Result<Channel, ConnectionError> {
    let failed = |e: tonic::transport::Error| ConnectionError::Connect {
        addr: info.addr.clone(),
        message: error_chain(&e),
    };
    match target(info)? {
        Target::Tcp(endpoint) => configure(endpoint, info)?.connect().await.map_err(failed),
        Target::Unix(endpoint, path) => configure(endpoint, info)?
            .connect_with_connector(unix_connector(path))
            .await
            .map_err(failed),
    }
}

fn unix_connector(
    path: std::path::PathBuf,
) -> impl tower::Service<
    tonic::codegen::http::Uri,
    Response = TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |_: tonic::codegen::http::Uri| {
        let path = path.clone();
        async move {
            let stream = tokio::net::UnixStream::connect(path).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    })
}

/// An error and its sources on one line (tonic's transport errors hide the cause otherwise).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let info = |addr: &str| StartUpInfo {
            addr: addr.into(),
            ..Default::default()
        };
        assert!(
            matches!(target(&info("localhost:6789")), Ok(Target::Tcp(e)) if e.uri() == "https://localhost:6789/")
        );
        assert!(
            matches!(target(&info("unix:///tmp/a.sock")), Ok(Target::Unix(_, p)) if p == std::path::Path::new("/tmp/a.sock"))
        );
        assert!(target(&info("npipe:///x")).is_err());
        assert!(target(&info("unix://")).is_err());
        assert_eq!(max_message_size(&info("x")), DEFAULT_MAX_MESSAGE_SIZE);
    }
}
