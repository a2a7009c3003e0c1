//! A Replicate that never finishes: every prediction is created at once and
//! stays `processing`, so orders stay live (the slow provider of the
//! live-orders scenario). Answers with the shapes CONTRACTS.md gives.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::{get, post},
};
use serde_json::{Value, json};
use std::sync::Arc;

pub struct FakeReplicate {
    pub base: String,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Counts {
    created: AtomicU64,
}

fn prediction(id: &str, status: &str) -> Value {
    json!({"id": id, "model": "loadgen/slow", "version": "v", "input": {}, "status": status,
           "output": null, "error": null, "logs": "", "created_at": "2026-01-01T00:00:00Z",
           "urls": {"get": format!("/v1/predictions/{id}"), "cancel": format!("/v1/predictions/{id}/cancel")}})
}

async fn create(State(counts): State<Arc<Counts>>) -> (StatusCode, Json<Value>) {
    let n = counts.created.fetch_add(1, Ordering::Relaxed);
    (
        StatusCode::CREATED,
        Json(prediction(&format!("slow{n}"), "starting")),
    )
}

async fn show(Path(id): Path<String>) -> Json<Value> {
    Json(prediction(&id, "processing"))
}

async fn cancel(Path(id): Path<String>) -> Json<Value> {
    Json(prediction(&id, "canceled"))
}

async fn upload_file() -> (StatusCode, Json<Value>) {
    (
        StatusCode::CREATED,
        Json(json!({"id": "file", "urls": {"get": "https://api.replicate.com/v1/files/file"}})),
    )
}

impl FakeReplicate {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let app = Router::new()
            .route("/v1/models/{owner}/{name}/predictions", post(create))
            .route("/v1/predictions", post(create))
            .route("/v1/predictions/{id}", get(show))
            .route("/v1/predictions/{id}/cancel", post(cancel))
            .route("/v1/files", post(upload_file))
            .with_state(Arc::new(Counts::default()));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { base, server })
    }
}

impl Drop for FakeReplicate {
    fn drop(&mut self) {
        self.server.abort();
    }
}
