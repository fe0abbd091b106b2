//! The admin HTTP listener: health, Prometheus metrics, bans, and (with the admin
//! token) the directory of domains and users, the registrations and the call history.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use holdfast_store::{Directory, Location, SqliteStore, StoreError};
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

use crate::cdr::{CdrQuery, ParamError, QueryError};
use crate::shared::Shared;

#[derive(Clone)]
struct App {
    shared: Arc<Shared>,
    store: Arc<SqliteStore>,
}

pub fn router(shared: Arc<Shared>, store: Arc<SqliteStore>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/v1/bans", get(bans))
        .route("/api/v1/domains", get(list_domains).post(add_domain))
        .route("/api/v1/domains/{name}", delete(delete_domain))
        .route("/api/v1/users", get(list_users).post(add_user))
        .route("/api/v1/users/{aor}", delete(delete_user).put(set_password))
        .route("/api/v1/registrations", get(registrations))
        .route("/api/v1/cdrs", get(cdrs))
        .with_state(App { shared, store })
}

async fn health(State(app): State<App>) -> impl IntoResponse {
    Json(json!({
        "status": "ok",
        "connections_open": app.shared.metrics.connections_open(),
    }))
}

async fn metrics(State(app): State<App>) -> impl IntoResponse {
    let mut body = app
        .shared
        .metrics
        .render(app.shared.guard.bans(Instant::now()).len());
    let store = app.store.stats();
    for (name, help, v) in [
        (
            "holdfast_store_commits_total",
            "Transactions committed by the store's writer (each one fsync)",
            store.commits,
        ),
        (
            "holdfast_store_writes_total",
            "Write jobs (a batch of bindings or of call records) committed or failed; writes / commits is the group-commit factor",
            store.writes,
        ),
    ] {
        body.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
        ));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

async fn bans(State(app): State<App>) -> impl IntoResponse {
    Json(json!({ "bans": app.shared.guard.bans(Instant::now()) }))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// The admin token, compared in constant time. Without a configured token the
/// directory API is closed.
#[allow(clippy::result_large_err)] // the error is the HTTP response itself, returned at once
fn authorize(app: &App, headers: &HeaderMap) -> Result<(), Response> {
    let Some(token) = app.shared.config.admin.token.as_deref() else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "the directory API needs [admin] token in the configuration",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let same = given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token",
        ))
    }
}

fn store_error(e: StoreError) -> Response {
    let status = match &e {
        StoreError::NotFound { .. } => StatusCode::NOT_FOUND,
        StoreError::AlreadyExists { .. } | StoreError::Conflict { .. } => StatusCode::CONFLICT,
        StoreError::Invalid { .. } => StatusCode::BAD_REQUEST,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e.to_string())
}

/// Splits `user@domain`.
pub fn split_aor(aor: &str) -> Option<(&str, &str)> {
    let (u, d) = aor.rsplit_once('@')?;
    (!u.is_empty() && !d.is_empty()).then_some((u, d))
}

#[derive(Deserialize)]
struct DomainBody {
    name: String,
}

async fn list_domains(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r;
    }
    match app.store.list_domains().await {
        Ok(d) => Json(json!({ "domains": d.iter().map(|d| &d.name).collect::<Vec<_>>() }))
            .into_response(),
        Err(e) => store_error(e),
    }
}

async fn add_domain(
    State(app): State<App>,
    headers: HeaderMap,
    Json(body): Json<DomainBody>,
) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r;
    }
    match app.store.add_domain(&body.name).await {
        Ok(d) => (StatusCode::CREATED, Json(json!({ "name": d.name }))).into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
struct Cascade {
    #[serde(default)]
    cascade: bool,
}

async fn delete_domain(
    State(app): State<App>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<Cascade>,
) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r;
    }
    match app.store.delete_domain(&name, q.cascade).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
struct UserBody {
    aor: String,
    password: String,
}

#[derive(Deserialize)]
struct PasswordBody {
    password: String,
}

#[derive(Deserialize)]
struct DomainFilter {
    domain: Option<String>,
}

async fn list_users(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<DomainFilter>,
) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r;
    }
    match app.store.list_users(q.domain.as_deref()).await {
        Ok(users) => Json(json!({
            "users": users.iter().map(|u| json!({
                "aor": format!("{}@{}", u.username, u.domain),
                "created_at": u.created_at,
            })).collect::<Vec<_>>()
        }))
        .into_response(),
        Err(e) => store_error(e),
    }
}

async fn add_user(
    State(app): State<App>,
    headers: HeaderMap,
    Json(body): Json<UserBody>,
) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r;
    }
    let Some((user, domain)) = split_aor(&body.aor) else {
        return error(StatusCode::BAD_REQUEST, "aor must be user@domain");
    };
    match app.store.add_user(user, domain, &body.password).await {
        Ok(u) => (
            StatusCode::CREATED,
            Json(json!({ "aor": format!("{}@{}", u.username, u.domain) })),
        )
            .into_response(),
        Err(e) => store_error(e),
    }
}

async fn set_password(
    State(app): State<App>,
    headers: HeaderMap,
    Path(aor): Path<String>,
    Json(body): Json<PasswordBody>,
) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r;
    }
    let Some((user, domain)) = split_aor(&aor) else {
        return error(StatusCode::BAD_REQUEST, "expected user@domain");
    };
    match app.store.set_password(user, domain, &body.password).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => store_error(e),
    }
}

async fn delete_user(
    State(app): State<App>,
    headers: HeaderMap,
    Path(aor): Path<String>,
) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r;
    }
    let Some((user, domain)) = split_aor(&aor) else {
        return error(StatusCode::BAD_REQUEST, "expected user@domain");
    };
    match app.store.delete_user(user, domain).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => store_error(e),
    }
}

/// One binding as the API and the CLI show it.
pub fn binding_json(b: &holdfast_store::Binding, now: i64) -> serde_json::Value {
    json!({
        "aor": b.aor,
        "contact": b.contact,
        "instance": b.instance,
        "reg_id": b.reg_id,
        "q": f64::from(b.q) / 1000.0,
        "flow": {
            "transport": b.transport,
            "source": b.source,
            "local": b.local,
            "connection": b.connection,
        },
        "transport": b.transport,
        "source": b.source,
        "user_agent": b.user_agent,
        "expires_in": b.expires_at.saturating_sub(now),
        "node": b.node,
    })
}

async fn registrations(State(app): State<App>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r;
    }
    let now = i64::try_from(crate::registrar::unix_now()).unwrap_or(i64::MAX);
    match app.store.load_unexpired(now).await {
        Ok(list) => Json(json!({
            "registrations": list.iter().map(|b| binding_json(b, now)).collect::<Vec<_>>()
        }))
        .into_response(),
        Err(e) => store_error(e),
    }
}

/// A 400 that names the parameter at fault.
fn param_error(e: &ParamError) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": format!("invalid {e}"), "parameter": e.param })),
    )
        .into_response()
}

/// `GET /api/v1/cdrs?from=&to=&user=&disposition=&limit=&cursor=`: one page of call
/// records, newest first. An unknown or repeated parameter is a 400 as well.
async fn cdrs(
    State(app): State<App>,
    headers: HeaderMap,
    pairs: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r;
    }
    let Ok(Query(pairs)) = pairs else {
        return error(StatusCode::BAD_REQUEST, "the query string does not decode");
    };
    let mut query = CdrQuery::default();
    for (name, value) in pairs {
        let Some(slot) = query.slot(&name) else {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "unknown parameter {name:?}; expected {}",
                    CdrQuery::PARAMS.join(", ")
                ),
            );
        };
        if slot.replace(value).is_some() {
            return error(
                StatusCode::BAD_REQUEST,
                format!("parameter {name:?} given more than once"),
            );
        }
    }
    match query.run(app.store.as_ref()).await {
        Ok(page) => Json(crate::cdr::page_json(&page)).into_response(),
        Err(QueryError::Param(e)) => param_error(&e),
        Err(QueryError::Store(e)) => store_error(e),
    }
}
