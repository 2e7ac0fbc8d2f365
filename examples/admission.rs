//! Admission control per route group, configured from TOML: requests get a priority from the
//! `X-Priority` header or their route's default, a tier from their API key (throttled clients
//! are demoted to `background`), and when the handler is full the lower classes wait less and
//! are refused first, with `503`, `Retry-After` and a problem+json document.
//!
//! ```text
//! cargo run --example admission            # offers a burst in-process and prints what happened
//! cargo run --example admission -- --serve # then: curl -i -H 'x-priority: low' localhost:3000/api/work
//! ```

use std::{collections::BTreeMap, time::Duration};

use axum::{body::Body, http::Request, routing::get, Router};
use phalanx_admission::{AdmissionConfig, AdmissionLayer};
use phalanx_core::{Classifier, ClassifyLayer, Deps, Priority, StatusRegistry, Tier};
use tower::ServiceExt;

const CONFIG: &str = r#"
# Interactive API: an adaptive limit; background work may hold at most 10 % of it.
[api]
name = "api"
retry_after = "1s"
[api.limit]
algorithm = "gradient2"
initial = 20
min = 5
max = 200
[api.classes.background]
share = 0.1
queue_timeout = "20ms"

# Batch exports: a small fixed limit and short queues.
[batch]
name = "batch"
[batch.limit]
algorithm = "fixed"
initial = 4
[batch.classes.normal]
max_queue = 8
queue_timeout = "100ms"
"#;

async fn work() -> &'static str {
    // A handler that takes a while, so a burst fills the limit.
    tokio::time::sleep(Duration::from_millis(50)).await;
    "done\n"
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config: BTreeMap<String, AdmissionConfig> = toml::from_str(CONFIG)?;
    let deps = Deps::new();
    let api = AdmissionLayer::from_config(&config["api"], &deps)?;
    let batch = AdmissionLayer::from_config(&config["batch"], &deps)?;

    // Each limiter is a /status section; the second one under its own name.
    let status = StatusRegistry::new();
    status.register_as("admission.api", api.clone());
    status.register_as("admission.batch", batch.clone());

    let classifier = Classifier::builder()
        .priority_header("x-priority")
        .route_priority("/api/health", Priority::Critical)
        .route_priority("/batch/export", Priority::Low)
        .api_key_tier("x-api-key", "k-premium", Tier::Premium)
        .api_key_tier("x-api-key", "k-abuser", Tier::Throttled)
        // The header only lowers a class, except for premium keys, which may raise it to high.
        .tier_max_header_priority(Tier::Premium, Priority::High)
        .custom(|_req, c| {
            if c.tier == Tier::Throttled {
                c.priority = Priority::Background;
            }
        })
        .build();

    // Each route group has its own limiter; classification runs first, outside them all.
    let app = Router::new()
        .merge(Router::new().route("/api/work", get(work)).route("/api/health", get(|| async { "ok\n" })).layer(api))
        .merge(Router::new().route("/batch/export", get(work)).layer(batch))
        .layer(ClassifyLayer::new(classifier));

    if std::env::args().any(|a| a == "--serve") {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
        println!("listening on http://127.0.0.1:3000");
        axum::serve(listener, app).await?;
        return Ok(());
    }

    // A burst of 300 requests at once: 30 critical health checks, 90 high (premium key), 90
    // normal, 90 from a throttled key (background); then what each class got.
    let mut calls = Vec::new();
    for i in 0..300 {
        let (path, priority, key) = match i % 10 {
            0 => ("/api/health", None, None),
            1..=3 => ("/api/work", Some("high"), Some("k-premium")),
            4..=6 => ("/api/work", None, None),
            _ => ("/api/work", None, Some("k-abuser")),
        };
        let mut req = Request::get(path);
        if let Some(p) = priority {
            req = req.header("x-priority", p);
        }
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        let req = req.body(Body::empty())?;
        let label = match (path, priority, key) {
            ("/api/health", ..) => "critical",
            (_, Some(_), _) => "high",
            (_, _, Some(_)) => "background",
            _ => "normal",
        };
        let app = app.clone();
        calls.push(tokio::spawn(async move { (label, app.oneshot(req).await.unwrap().status().as_u16()) }));
    }
    let mut outcome: BTreeMap<(&str, u16), usize> = BTreeMap::new();
    for c in calls {
        *outcome.entry(c.await?).or_default() += 1;
    }
    for ((class, status), n) in &outcome {
        println!("{class:<10} {status} x {n}");
    }
    let res = app
        .clone()
        .oneshot(Request::get("/batch/export").header("x-priority", "background").body(Body::empty())?)
        .await?;
    println!("batch export: {}", res.status());
    drop(res);
    for (name, section) in status.sections() {
        println!("/status {name}: {}", serde_json::to_string_pretty(&section)?);
    }
    Ok(())
}
