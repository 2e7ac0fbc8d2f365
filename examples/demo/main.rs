//! The Phalanx demo service: a catalog API with every Phalanx layer stacked.
//!
//! `cargo run --release --example demo` runs it on embedded defaults (SQLite file, L1-only
//! cache, in-process rate limiting, in-process upstream); `DATABASE_URL=postgres://…` and
//! `REDIS_URL=redis://…` switch to the real services. See the README for the routes and the
//! configuration file.

mod config;
mod db;
mod routes;
mod state;
mod upstream;

use std::{future::IntoFuture, sync::atomic::Ordering};

use axum::serve::ListenerExt;
use tokio::net::TcpSocket;

use crate::config::DemoConfig;

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
    let app = routes::router(state.clone(), &layers, &config)?;

    let socket = if config.bind.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(config.bind)?;
    let listener = socket.listen(config.backlog)?.tap_io(|tcp| {
        // Small responses go out at once rather than waiting for Nagle's timer.
        let _ = tcp.set_nodelay(true);
    });
    tracing::info!(addr = %config.bind, database = %state.database_kind, redis = config.redis_url.is_some(), "phalanx demo listening");

    let drain_delay = config.drain_delay();
    let shutdown_state = state.clone();
    let (draining_tx, mut draining) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            // Report not-ready first so the load balancer stops routing here, then stop accepting.
            shutdown_state.ready.store(false, Ordering::SeqCst);
            tracing::info!(?drain_delay, "shutdown requested: /readyz now 503, draining");
            tokio::time::sleep(drain_delay).await;
            let _ = draining_tx.send(true);
        });
    // In-flight requests get `shutdown_timeout` once the listener has closed, not more.
    let timeout = config.shutdown_timeout();
    let deadline = async move {
        let _ = draining.wait_for(|closed| *closed).await;
        tokio::time::sleep(timeout).await;
    };
    tokio::select! {
        result = server.into_future() => result?,
        _ = deadline => tracing::warn!(?timeout, "in-flight requests did not finish in time; exiting"),
    }
    tracing::info!("phalanx demo stopped");
    Ok(())
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
