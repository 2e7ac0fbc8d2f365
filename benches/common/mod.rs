//! Throughput of two axum routers side by side over loopback HTTP/1.1, in one run.

use std::{net::SocketAddr, time::Instant};

use axum::{body::Body, Router};
use http_body_util::BodyExt;
use hyper::Request;

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// `connections` keep-alive clients each send `per_connection` requests; returns requests/s.
async fn http_round(addr: SocketAddr, connections: usize, per_connection: usize) -> f64 {
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
            tokio::spawn(conn);
            for i in 0..per_connection {
                let req =
                    Request::get(format!("/items/{}", i % 1000)).header("host", "bench").body(Body::empty()).unwrap();
                let res = send.send_request(req).await.unwrap();
                assert!(res.status().is_success());
                res.into_body().collect().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (connections * per_connection) as f64 / started.elapsed().as_secs_f64()
}

/// Alternating rounds against both servers; prints each side's median throughput and the ratio.
pub(crate) fn http_ratio(label: &str, rounds: usize, bare: Router, layered: Router) -> f64 {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let bare_addr = serve(bare).await;
        let layered_addr = serve(layered).await;
        // Warm both up: connection setup, allocator, first label sets.
        http_round(bare_addr, 16, 200).await;
        http_round(layered_addr, 16, 200).await;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            a.push(http_round(bare_addr, 16, 500).await);
            b.push(http_round(layered_addr, 16, 500).await);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(|x, y| x.partial_cmp(y).unwrap());
            v[v.len() / 2]
        };
        let (bare_rps, layered_rps) = (median(&mut a), median(&mut b));
        let ratio = layered_rps / bare_rps;
        println!(
            "{label}: bare axum {bare_rps:.0} req/s, with layer {layered_rps:.0} req/s, throughput ratio {ratio:.3} \
             (cost {:.1} %), median of {rounds} alternating rounds, 16 keep-alive connections, client and server \
             sharing the machine's cores",
            (1.0 - ratio) * 100.0
        );
        ratio
    })
}
