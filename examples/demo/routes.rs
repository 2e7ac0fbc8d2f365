//! The demo's routes and the order of its layers.

use std::sync::atomic::Ordering;

use axum::{
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use phalanx_core::{problem::types, Problem};
use phalanx_metrics::StatusReport;
use serde::Deserialize;
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    timeout::TimeoutLayer,
};

use crate::{
    config::DemoConfig,
    db::{self, ItemUpdate},
    state::AppState,
};

pub(crate) fn router(state: AppState, config: &DemoConfig) -> Router {
    let status = StatusReport::new(state.metrics.stats(), state.status.clone());
    let api = Router::new()
        .route("/items/{id}", get(get_item).put(put_item))
        .route("/items", get(list_items))
        .with_state(state.clone());
    let ops = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state.clone())
        .merge(state.exporter.router("/metrics"))
        .merge(status.router("/status"));

    // Outermost first: metrics see every request, the rejections of the layers inside included.
    let stack = ServiceBuilder::new()
        .layer(state.metrics.clone())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, config.request_timeout()))
        .layer(CatchPanicLayer::new());
    api.merge(ops).layer(stack)
}

/// A problem document as an axum response.
fn problem(p: Problem) -> Response {
    IntoResponse::into_response(p)
}

fn database_unavailable(e: sqlx::Error) -> Response {
    tracing::warn!(error = %e, "database error");
    problem(
        Problem::unavailable(types::DEPENDENCY_UNAVAILABLE, std::time::Duration::from_secs(1))
            .with_detail("the catalog database did not answer"),
    )
}

fn not_found(id: i64) -> Response {
    problem(Problem::new(StatusCode::NOT_FOUND).with_detail(format!("no item {id}")))
}

async fn get_item(State(state): State<AppState>, Path(id): Path<i64>) -> Response {
    let result = async {
        let mut conn = state.pool.acquire().await?;
        db::get_item(&mut conn, id).await
    }
    .await;
    match result {
        Ok(Some(item)) => Json(item).into_response(),
        Ok(None) => not_found(id),
        Err(e) => database_unavailable(e),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct Page {
    page: Option<i64>,
    per_page: Option<i64>,
}

async fn list_items(State(state): State<AppState>, Query(page): Query<Page>) -> Response {
    let number = page.page.unwrap_or(1);
    let per_page = page.per_page.unwrap_or(20);
    if number < 1 || !(1..=100).contains(&per_page) {
        return problem(
            Problem::new(StatusCode::BAD_REQUEST).with_detail("page must be >= 1 and per_page within 1..=100"),
        );
    }
    let result = async {
        let mut conn = state.pool.acquire().await?;
        db::list_items(&mut conn, number, per_page).await
    }
    .await;
    match result {
        Ok(items) => Json(items).into_response(),
        Err(e) => database_unavailable(e),
    }
}

async fn put_item(State(state): State<AppState>, Path(id): Path<i64>, Json(update): Json<ItemUpdate>) -> Response {
    if let Err(why) = update.validate() {
        return problem(Problem::new(StatusCode::UNPROCESSABLE_ENTITY).with_detail(why));
    }
    let result = async {
        let mut conn = state.pool.acquire().await?;
        db::update_item(&mut conn, id, &update).await
    }
    .await;
    match result {
        Ok(Some(item)) => Json(item).into_response(),
        Ok(None) => not_found(id),
        Err(e) => database_unavailable(e),
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready").into_response()
    } else {
        problem(
            Problem::unavailable(types::DEPENDENCY_UNAVAILABLE, std::time::Duration::from_secs(5))
                .with_title("Draining")
                .with_detail("this instance is shutting down"),
        )
    }
}
