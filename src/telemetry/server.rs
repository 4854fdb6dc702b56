//! The opt-in monitoring endpoint (the Beats convention: `monitoring.http`): `/metrics`
//! (Prometheus text), `/stats` (the same counters as JSON) and `/healthz`. Loopback unless the
//! configuration says `allow_remote: true`; it serves only counters, never a secret or a
//! configuration value beyond the ids that label the series.

use std::net::SocketAddr;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::metrics;
use crate::policy::MonitoringConfig;

/// The endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("monitoring.http: cannot listen on {address}: {source}")]
pub struct MonitoringError {
    /// Where it tried to listen.
    pub address: SocketAddr,
    /// Why it could not.
    pub source: std::io::Error,
}

async fn metrics_text() -> impl IntoResponse {
    let text = tokio::task::spawn_blocking(metrics::render)
        .await
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

async fn stats() -> impl IntoResponse {
    axum::Json(metrics::stats())
}

async fn healthz() -> impl IntoResponse {
    let failed = metrics::failed_streams();
    if failed.is_empty() {
        (StatusCode::OK, axum::Json(json!({"status": "ok"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "failed", "failed_streams": failed})),
        )
    }
}

/// Starts serving on `config`'s address until `shutdown`; returns the bound address (port 0
/// picks a free one).
pub async fn serve(
    config: &MonitoringConfig,
    shutdown: CancellationToken,
) -> Result<SocketAddr, MonitoringError> {
    let address = SocketAddr::new(config.host, config.port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| MonitoringError { address, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| MonitoringError { address, source })?;
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/stats", get(stats))
        .route("/healthz", get(healthz));
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!("monitoring endpoint stopped: {e}");
        }
    });
    tracing::info!(
        monitoring.address = %bound,
        "monitoring endpoint listening on http://{bound} (/metrics, /stats, /healthz)"
    );
    Ok(bound)
}
