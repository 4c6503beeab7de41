//! The aggregator's plain HTTP listener (`http_listen` in its config): `GET /metrics`, the
//! OpenMetrics text of [`crate::metrics`]. Read-only and unauthenticated (the gRPC
//! service is where TLS and roles apply), so it is bound where only operators and the metrics
//! collector reach it.

use crate::township::Township;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use std::future::Future;
use std::sync::Arc;

pub fn router(township: Arc<Township>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(township)
}

async fn metrics(State(township): State<Arc<Township>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        township.metrics_text(),
    )
}

/// Serves [`router`] on `listener` until `shutdown` ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    township: Arc<Township>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(township))
        .with_graceful_shutdown(shutdown)
        .await
}
