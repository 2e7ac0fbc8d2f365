//! The Phalanx demo service: a catalog API with every Phalanx layer stacked.
//!
//! `cargo run --release --example demo` runs it on embedded defaults (SQLite file, L1-only
//! cache, in-process rate limiting, in-process upstream); `DATABASE_URL=postgres://…` and
//! `REDIS_URL=redis://…` switch to the real services. The API (and `/healthz`, `/readyz`) is
//! on `BIND`; `/metrics`, `/status` and the control routes only on `ADMIN_BIND` (loopback by
//! default). See examples/demo/README.md.

mod config;
mod db;
mod extract;
mod routes;
mod server;
mod state;
#[cfg(test)]
mod tests;
mod upstream;
mod write_count;

use std::sync::atomic::Ordering;

use tokio::net::TcpSocket;

use crate::config::DemoConfig;

// glibc's allocator took a sixth of the demo's CPU under the 10,000-user load (perf, see
// BENCHMARKS.md); mimalloc's thread-local free lists cost a fraction of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .init();
    raise_fd_limit();
    let config = DemoConfig::load()?;
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(config))
}

async fn run(config: DemoConfig) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (state, layers) = state::build(&config).await?;
    let routers = routes::router(state.clone(), &layers, &config)?;

    let public = listen(config.bind, config.backlog)?;
    let admin = listen(config.admin_bind, 128)?;
    tracing::info!(
        addr = %config.bind,
        admin = %config.admin_bind,
        database = %state.database_kind,
        redis = config.redis_url.is_some(),
        "phalanx demo listening"
    );

    let drain_delay = config.drain_delay;
    let shutdown_state = state.clone();
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        // Report not-ready first so the load balancer stops routing here, then stop accepting.
        shutdown_state.ready.store(false, Ordering::SeqCst);
        tracing::info!(?drain_delay, "shutdown requested: /readyz now 503, draining");
        tokio::time::sleep(drain_delay).await;
        let _ = closing_tx.send(true);
    });
    let servers = async {
        let (a, b) = tokio::join!(
            server::serve(public, routers.public, config.server, closing.clone()),
            server::serve(admin, routers.admin, config.admin_server(), closing.clone()),
        );
        a.and(b)
    };
    // In-flight requests get `shutdown_timeout` once the listeners have closed, not more.
    let timeout = config.shutdown_timeout;
    let mut closed = closing.clone();
    let deadline = async move {
        let _ = closed.wait_for(|closed| *closed).await;
        tokio::time::sleep(timeout).await;
    };
    tokio::select! {
        result = servers => result?,
        _ = deadline => tracing::warn!(?timeout, "in-flight requests did not finish in time; exiting"),
    }
    tracing::info!("phalanx demo stopped");
    Ok(())
}

fn listen(addr: std::net::SocketAddr, backlog: u32) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    // Small responses go out at once rather than waiting for Nagle's timer (accepted sockets
    // inherit it on Linux; the server sets it again on each).
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

/// 10,000 connections need more descriptors than the usual soft limit of 1024.
fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < 12_000 => {
            tracing::warn!(limit, "open-file limit is below what 10,000 connections need")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
}
