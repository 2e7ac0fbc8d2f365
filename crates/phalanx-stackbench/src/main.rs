//! `phalanx-stackbench <mode> [addr]`: serve the one route in `mode` on `addr` (default
//! `127.0.0.1:3900`) until killed, peer addresses passed to the layers through `ConnectInfo`.
//!
//! `phalanx-stackbench loop <mode> [requests] [addresses]`: drive the router in process instead
//! (see `phalanx_stackbench::instruction_loop`), for callgrind.

use std::net::SocketAddr;

use phalanx_stackbench::{app, instruction_loop, Mode};

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage =
        || format!("usage: phalanx-stackbench [loop] <{}> [addr | requests addresses]", Mode::names().join("|"));
    if args.first().map(String::as_str) == Some("loop") {
        let mode: Mode = args.get(1).ok_or_else(usage)?.parse()?;
        let requests = args.get(2).map_or(Ok(100_000), |n| n.parse())?;
        let addresses = args.get(3).map_or(Ok(1000), |n| n.parse())?;
        return instruction_loop(mode, requests, addresses);
    }
    let mode: Mode = args.first().ok_or_else(usage)?.parse()?;
    let addr: SocketAddr = args.get(1).map_or("127.0.0.1:3900", String::as_str).parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let router = app(mode)?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        eprintln!("phalanx-stackbench: {mode:?} on http://{addr}");
        axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>()).await?;
        Ok(())
    })
}
