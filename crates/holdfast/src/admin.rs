//! The admin HTTP listener: health, Prometheus metrics, and the ban list.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tokio::time::Instant;

use crate::shared::Shared;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/v1/bans", get(bans))
        .with_state(shared)
}

async fn health(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    Json(serde_json::json!({
        "status": "ok",
        "connections_open": shared.metrics.connections_open(),
    }))
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let body = shared
        .metrics
        .render(shared.guard.bans(Instant::now()).len());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

async fn bans(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    Json(serde_json::json!({ "bans": shared.guard.bans(Instant::now()) }))
}
