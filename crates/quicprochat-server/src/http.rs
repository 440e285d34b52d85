//! The operator's HTTP endpoint: `GET /metrics` (OpenMetrics text, which
//! Prometheus scrapes), `GET /healthz` (`200 ready`, `200 degraded: …` while a
//! plugin is switched off, or `503 draining`) and
//! `GET /federation` (each peer server's status as JSON: reachable, last
//! error, pending entries; `[]` without federation).
//!
//! [`serve_http`] runs an axum HTTP/1.1 server on a listener the caller
//! bound (`metrics_listen`) until the `shutdown` token is cancelled. It owns
//! no state: metric values come from [`Metrics`], readiness from a
//! [`HealthSource`].
//!
//! Wiring note: give `serve_http` its own token, cancelled only after the
//! drain finished, not the token that starts the drain; otherwise the
//! endpoint disappears exactly when `/healthz` should start saying
//! `draining`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// The `Content-Type` of `/metrics` (prometheus-client emits OpenMetrics).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Tells `/healthz` whether the server is draining.
pub trait HealthSource: Send + Sync + 'static {
    /// True once shutdown has begun.
    fn is_draining(&self) -> bool;

    /// Why the server serves with less than it was configured with (a
    /// plugin switched off), if it does.
    fn degraded(&self) -> Option<String> {
        None
    }
}

impl HealthSource for Metrics {
    fn is_draining(&self) -> bool {
        Metrics::is_draining(self)
    }

    fn degraded(&self) -> Option<String> {
        let off = self.plugins().switched_off_now();
        (!off.is_empty()).then(|| format!("plugins switched off: {}", off.join(", ")))
    }
}

/// Draining once the token is cancelled (pass the drain token here).
impl HealthSource for CancellationToken {
    fn is_draining(&self) -> bool {
        self.is_cancelled()
    }
}

struct AppState {
    metrics: Metrics,
    health: Box<dyn HealthSource>,
}

/// Serves `/metrics` and `/healthz` on `listener` until `shutdown` is
/// cancelled; then stops accepting and finishes open requests. Fails only if
/// the listener fails.
pub async fn serve_http(
    listener: TcpListener,
    metrics: Metrics,
    health: impl HealthSource,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let state = Arc::new(AppState { metrics, health: Box::new(health) });
    let router = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(health_page))
        .route("/federation", get(federation_page))
        .with_state(state);
    axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

async fn metrics_page(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], state.metrics.encode())
}

async fn federation_page(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], state.metrics.federation().peer_report())
}

async fn health_page(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let (status, body) = if state.health.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n".to_owned())
    } else if let Some(why) = state.health.degraded() {
        // Still serving: a balancer should keep sending traffic here.
        (StatusCode::OK, format!("degraded: {why}\n"))
    } else {
        (StatusCode::OK, "ready\n".to_owned())
    };
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    const DEADLINE: Duration = Duration::from_secs(5);

    /// A plain HTTP/1.1 GET; returns the whole response (head and body).
    async fn get(addr: SocketAddr, path: &str) -> String {
        let exchange = async {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            response
        };
        tokio::time::timeout(DEADLINE, exchange).await.unwrap()
    }

    async fn start(health: impl HealthSource) -> (SocketAddr, Metrics, CancellationToken, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Metrics::new();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve_http(listener, metrics.clone(), health, shutdown.clone()));
        let task = tokio::spawn(async move { task.await.unwrap().unwrap() });
        (addr, metrics, shutdown, task)
    }

    #[tokio::test]
    async fn metrics_page_serves_current_values() {
        let (addr, metrics, shutdown, task) = start(CancellationToken::new()).await;
        metrics.record_rpc("Login", "OK", Duration::from_millis(2));
        let response = get(addr, "/metrics").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.to_lowercase().contains(&format!("content-type: {METRICS_CONTENT_TYPE}")), "{response}");
        assert!(response.contains(r#"qpc_rpc_requests_total{method="Login",status="OK"} 1"#), "{response}");

        metrics.record_rpc("Login", "OK", Duration::from_millis(2));
        let response = get(addr, "/metrics").await;
        assert!(response.contains(r#"qpc_rpc_requests_total{method="Login",status="OK"} 2"#), "{response}");

        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        shutdown.cancel();
        tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn healthz_follows_drain_state() {
        let drain = CancellationToken::new();
        let (addr, _metrics, shutdown, task) = start(drain.clone()).await;
        let response = get(addr, "/healthz").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with("\r\n\r\nready\n"), "{response}");

        drain.cancel();
        let response = get(addr, "/healthz").await;
        assert!(response.starts_with("HTTP/1.1 503"), "{response}");
        assert!(response.ends_with("\r\n\r\ndraining\n"), "{response}");

        shutdown.cancel();
        tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn healthz_from_metrics_drain_flag() {
        let metrics = Metrics::new();
        let (addr, _own_metrics, shutdown, _task) = start(metrics.clone()).await;
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        metrics.set_draining(true);
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 503"));
        shutdown.cancel();
    }
}
