//! Rate limiting per client and per tier, configured from TOML: a premium API key gets a larger
//! quota than an anonymous client, and every answer carries the IETF `RateLimit` fields.
//!
//! ```text
//! cargo run --example ratelimit                                  # in-process store
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example ratelimit  # shared store on Redis
//! cargo run --example ratelimit -- --serve                       # then: curl -i localhost:3000/
//! ```

use std::net::SocketAddr;

use axum::{body::Body, extract::ConnectInfo, http::Request, routing::get, Router};
use phalanx_core::{
    redis::{RedisHandle, RedisSettings},
    Classifier, ClassifyLayer, Deps, StatusSource, Tier,
};
use phalanx_ratelimit::{RateLimitConfig, RateLimitLayer, RATELIMIT, RATELIMIT_POLICY};
use tower::ServiceExt;

const CONFIG: &str = r#"
[key]
sources = [{ api_key = "x-api-key" }, { header = "x-client-id" }, "peer_ip"]
api_keys = ["k-premium-1"]  # the known keys; any other counts as no key

[redis]                     # with REDIS_URL: leases from Redis, decided locally
prefix = "example:rl"
deadline = "50ms"           # background round trips only
failure_mode = "open"       # while Redis is down: quota / known node count

[[policies]]
name = "per-client"
limit = 60
window = "60s"
burst = 3
tiers.premium = { limit = 600, window = "60s", burst = 20 }
"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config: RateLimitConfig = toml::from_str(CONFIG)?;
    // The process's one Redis handle, shared by every layer that uses Redis.
    let mut deps = Deps::new();
    if let Ok(url) = std::env::var("REDIS_URL") {
        deps = deps.redis(RedisHandle::connect(RedisSettings::from_url(url))?);
    }
    let limiter = RateLimitLayer::from_config(&config, &deps)?;
    let status = limiter.clone();
    // The classifier puts the tier (from the API key) into the extensions; the limiter reads it.
    let classifier = Classifier::builder().api_key_tier("x-api-key", "k-premium-1", Tier::Premium).build();
    let app: Router =
        Router::new().route("/", get(|| async { "hello\n" })).layer(limiter).layer(ClassifyLayer::new(classifier));

    if std::env::args().any(|a| a == "--serve") {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
        println!("listening on http://127.0.0.1:3000");
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
        return Ok(());
    }

    for (who, header) in [("anonymous", None), ("premium", Some("k-premium-1"))] {
        println!("-- {who}");
        for _ in 0..5 {
            let mut req = Request::builder().uri("/");
            if let Some(key) = header {
                req = req.header("x-api-key", key);
            }
            let mut req = req.body(Body::empty())?;
            req.extensions_mut().insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 1], 4000))));
            let res = app.clone().oneshot(req).await?;
            let field = |name| res.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
            println!(
                "{} RateLimit-Policy: {} | RateLimit: {}",
                res.status(),
                field(&RATELIMIT_POLICY),
                field(&RATELIMIT)
            );
        }
    }
    println!("-- /status section {}: {}", status.name(), status.report());
    Ok(())
}
