//! The in-process upstream the `/upstream/quote` route calls by default. It can be told to fail
//! a share of its calls or to slow down (`POST /upstream/control`), so the circuit breaker can
//! be watched opening, probing and closing on `/metrics` and `/status`.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Json, Router};
use serde::{Deserialize, Serialize};

/// How the in-process upstream behaves. Cheap to clone; clones share the settings.
#[derive(Clone, Default)]
pub(crate) struct UpstreamControl {
    inner: Arc<Settings>,
}

#[derive(Default)]
struct Settings {
    fail_permille: AtomicU64,
    delay_ms: AtomicU64,
    calls: AtomicU64,
}

/// The body of `POST /upstream/control`, and its answer.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Behaviour {
    /// Share of calls answered 503, 0.0 … 1.0.
    #[serde(default)]
    pub(crate) fail_ratio: f64,
    /// Delay before every answer, in milliseconds.
    #[serde(default)]
    pub(crate) delay_ms: u64,
    /// Calls served so far (answers only).
    #[serde(default)]
    pub(crate) calls: u64,
}

impl UpstreamControl {
    pub(crate) fn set(&self, behaviour: Behaviour) -> Result<Behaviour, String> {
        if !(0.0..=1.0).contains(&behaviour.fail_ratio) {
            return Err(format!("fail_ratio {} is outside 0.0 … 1.0", behaviour.fail_ratio));
        }
        if behaviour.delay_ms > 60_000 {
            return Err("delay_ms must be at most 60000".into());
        }
        self.inner.fail_permille.store((behaviour.fail_ratio * 1000.0).round() as u64, Relaxed);
        self.inner.delay_ms.store(behaviour.delay_ms, Relaxed);
        Ok(self.get())
    }

    pub(crate) fn get(&self) -> Behaviour {
        Behaviour {
            fail_ratio: self.inner.fail_permille.load(Relaxed) as f64 / 1000.0,
            delay_ms: self.inner.delay_ms.load(Relaxed),
            calls: self.inner.calls.load(Relaxed),
        }
    }
}

/// Serve the upstream on an ephemeral loopback port.
pub(crate) async fn spawn(control: UpstreamControl) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new().route("/quote", get(quote)).with_state(control);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "in-process upstream stopped");
        }
    });
    Ok(addr)
}

async fn quote(State(control): State<UpstreamControl>) -> impl IntoResponse {
    let settings = &control.inner;
    let n = settings.calls.fetch_add(1, Relaxed);
    let delay = settings.delay_ms.load(Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    // Spread failures evenly: call n fails when it falls in the failing share of each thousand.
    if n % 1000 < settings.fail_permille.load(Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "error": "upstream told to fail" })));
    }
    (StatusCode::OK, Json(serde_json::json!({ "quote": "keep your promises under load", "call": n })))
}
