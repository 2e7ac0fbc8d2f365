//! Serving a router on a listener with what `axum::serve` leaves out: a header-read timeout
//! (hyper's timer), which in HTTP/1 also bounds how long a keep-alive connection may sit idle
//! between requests; HTTP/2 keep-alive pings; a cap on open connections with a clear refusal;
//! and graceful shutdown.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{extract::ConnectInfo, Router};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use serde::Deserialize;
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
    sync::{watch, Semaphore},
};
use tower::ServiceExt;

/// Connection limits of one listener (`[server]` in the demo's configuration).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ServerConfig {
    /// A client must send a complete request head within this time, or the connection is
    /// closed. The same timer runs while an HTTP/1 keep-alive connection waits for its next
    /// request, so it is also the idle keep-alive timeout.
    #[serde(with = "phalanx::core::duration")]
    pub(crate) header_read_timeout: Duration,
    /// HTTP/2: a connection that has not answered a keep-alive ping within this time is closed.
    #[serde(with = "phalanx::core::duration")]
    pub(crate) http2_keepalive_timeout: Duration,
    /// Open connections beyond this are answered 503 (problem+json, `Retry-After`) and closed.
    pub(crate) max_connections: usize,
    /// Concurrent HTTP/2 streams per connection.
    pub(crate) http2_max_streams: u32,
    /// Longest request head, in bytes.
    pub(crate) max_header_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            header_read_timeout: Duration::from_secs(10),
            http2_keepalive_timeout: Duration::from_secs(20),
            max_connections: 20_000,
            http2_max_streams: 256,
            max_header_bytes: 16 * 1024,
        }
    }
}

impl ServerConfig {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.header_read_timeout < Duration::from_millis(1)
            || self.http2_keepalive_timeout < Duration::from_millis(1)
        {
            return Err("server timeouts must be at least 1ms".into());
        }
        if self.max_connections == 0 || self.max_connections > Semaphore::MAX_PERMITS {
            return Err(format!("server.max_connections {} is out of range", self.max_connections));
        }
        if self.http2_max_streams == 0 || self.max_header_bytes < 1024 {
            return Err("server.http2_max_streams must be at least 1 and max_header_bytes at least 1024".into());
        }
        Ok(())
    }
}

const REFUSAL_BODY: &str = r#"{"type":"urn:phalanx:problem:overloaded","title":"Too many connections","status":503,"detail":"the server holds as many connections as it allows; retry shortly"}"#;

/// Serve `app` on `listener` until `shutdown` turns true; then stop accepting, let each open
/// connection finish its request in flight, and return when every connection has closed.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    config: ServerConfig,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval((config.http2_keepalive_timeout / 2).max(Duration::from_millis(1)))
        .keep_alive_timeout(config.http2_keepalive_timeout)
        .max_concurrent_streams(config.http2_max_streams)
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(config.max_connections));

    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        let _ = tcp.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(refuse(tcp));
            continue;
        };
        let builder = builder.clone();
        let app = app.clone();
        let mut shutdown = shutdown.clone();
        let first_bytes_by = tokio::time::Instant::now() + config.header_read_timeout;
        tokio::spawn(async move {
            let _slot = slot;
            // hyper's timer starts only once the protocol is known: a client that sends nothing,
            // or a part of the HTTP/2 preface, would otherwise hold the connection for ever.
            if !protocol_known_by(&tcp, first_bytes_by).await {
                return;
            }
            let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                app.clone().oneshot(req)
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => log_end(result),
                () = stopped(&mut shutdown) => {
                    conn.as_mut().graceful_shutdown();
                    log_end(conn.await);
                }
            }
        });
    }
    drop(listener);
    // Every connection holds a slot: all slots back means all connections closed.
    let _all = slots.acquire_many(u32::try_from(config.max_connections).unwrap_or(u32::MAX)).await;
    Ok(())
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether enough bytes arrive by `deadline` to tell HTTP/1 from HTTP/2 (what hyper's
/// auto builder waits for): the whole HTTP/2 preface, or a first byte that departs from it.
async fn protocol_known_by(tcp: &TcpStream, deadline: tokio::time::Instant) -> bool {
    let mut buf = [0u8; 24];
    let mut seen = 0;
    loop {
        let peeked = tokio::time::timeout_at(deadline, tcp.peek(&mut buf)).await;
        let n = match peeked {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return false,
            Ok(Ok(n)) => n,
        };
        if n >= H2_PREFACE.len() || buf[..n] != H2_PREFACE[..n] {
            return true;
        }
        if n == seen {
            // A part of the preface and no more yet: `peek` answers at once while bytes wait
            // unread, so pause instead of spinning (this path is only for such clients).
            if tokio::time::timeout_at(deadline, tokio::time::sleep(Duration::from_millis(20))).await.is_err() {
                return false;
            }
        }
        seen = n;
    }
}

async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn log_end(result: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(e) = result {
        // Timeouts and resets are what clients do; not worth more than a debug line.
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// A connection over the cap gets a short 503 and is closed, within a bounded time.
async fn refuse(mut tcp: TcpStream) {
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n",
        REFUSAL_BODY.len()
    );
    let write = async {
        tcp.write_all(head.as_bytes()).await?;
        tcp.write_all(REFUSAL_BODY.as_bytes()).await?;
        tcp.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_millis(200), write).await;
}
