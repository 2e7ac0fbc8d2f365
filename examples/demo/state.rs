//! What the demo builds at start-up and every handler shares.

use std::{
    collections::BTreeMap,
    sync::{atomic::AtomicBool, Arc},
};

use axum::extract::FromRef;
use phalanx::{
    admission::{AdmissionLayer, AdmissionStatus},
    breaker::BreakerRegistry,
    cache::{CacheLayer, HttpStore, TieredCache},
    core::{
        redis::{connect_in_background, RedisSettings},
        Classifier, StatusRegistry,
    },
    metrics::{MetricsLayer, PrometheusExporter},
    pools::{DbPool, DbPoolConfig, HttpClient, PoolsStatus, RedisPool},
    ratelimit::RateLimitLayer,
};

use crate::{
    config::DemoConfig,
    db::{self, Item},
    upstream::{self, UpstreamControl},
};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) db: DbPool<sqlx::Any>,
    pub(crate) redis: Option<RedisPool>,
    pub(crate) http: HttpClient,
    pub(crate) rows: TieredCache<i64, Item>,
    pub(crate) http_cache: CacheLayer,
    pub(crate) upstream_url: String,
    pub(crate) upstream_control: Option<UpstreamControl>,
    pub(crate) database_kind: &'static str,
    pub(crate) ready: Arc<AtomicBool>,
    pub(crate) item_max_age_s: u32,
    pub(crate) list_max_age_s: u32,
}

impl FromRef<AppState> for DbPool<sqlx::Any> {
    fn from_ref(state: &AppState) -> Self {
        state.db.clone()
    }
}

impl FromRef<AppState> for HttpClient {
    fn from_ref(state: &AppState) -> Self {
        state.http.clone()
    }
}

/// The layers, built once and shared by every clone of the router.
pub(crate) struct Layers {
    pub(crate) exporter: PrometheusExporter,
    pub(crate) metrics: MetricsLayer,
    pub(crate) classifier: Classifier,
    pub(crate) ratelimit: RateLimitLayer,
    pub(crate) admission: BTreeMap<String, AdmissionLayer>,
    pub(crate) breakers: BreakerRegistry,
    pub(crate) status: StatusRegistry,
}

pub(crate) async fn build(config: &DemoConfig) -> Result<(AppState, Layers), Error> {
    // The meter provider goes first: every layer built after it records into it.
    let exporter = PrometheusExporter::install("phalanx-demo")?;
    let metrics = MetricsLayer::new();
    let status = StatusRegistry::new();

    let classifier = classifier(config);
    let redis_settings = config.redis_url.as_ref().map(|url| RedisSettings::from_url(url.clone()));

    let ratelimit_redis = match &redis_settings {
        Some(settings) => {
            let pool = settings.build_pool()?;
            connect_in_background(&pool);
            Some(pool)
        }
        None => None,
    };
    let ratelimit = config.ratelimit.build(ratelimit_redis, None)?;
    status.register(ratelimit.status());

    let with_redis = |mut c: phalanx::cache::TieredConfig| {
        if c.redis.is_none() {
            c.redis = redis_settings.clone();
        }
        c
    };
    let rows: TieredCache<i64, Item> = TieredCache::from_config(with_redis(config.cache.rows.clone()), None)?;
    let http_store: HttpStore = TieredCache::from_config(with_redis(config.cache.http_store.clone()), None)?;
    let http_cache = CacheLayer::from_config(config.cache.http.clone(), http_store)?;
    status.register(http_cache.status().named("http_cache"));
    // The row cache sees mostly the HTTP cache's misses: its hit ratio is no target.
    status.register(rows.status().named("row_cache").target_hit_ratio(0.0));

    let mut admission = BTreeMap::new();
    let mut admission_status = AdmissionStatus::default();
    for (group, cfg) in &config.admission {
        let layer = AdmissionLayer::from_config(cfg)?;
        admission_status = admission_status.with(layer.handle());
        admission.insert(group.clone(), layer);
    }
    status.register(admission_status);

    let breakers = BreakerRegistry::new(config.breaker.clone());
    status.register(breakers.clone());

    sqlx::any::install_default_drivers();
    let database_kind = if config.database_url.starts_with("postgres") { "postgresql" } else { "sqlite" };
    db::prepare(&config.database_url).await?;
    let db_config = DbPoolConfig { url: config.database_url.clone(), ..config.pools.db.clone() };
    let db = DbPool::<sqlx::Any>::new(db_config)?;
    db::migrate(db.sqlx()).await?;
    let seeded = db::seed(db.sqlx(), config.seed_items).await?;
    if seeded > 0 {
        tracing::info!(seeded, "catalog seeded");
    }
    let redis = match &config.redis_url {
        Some(url) => {
            Some(RedisPool::new(phalanx::pools::RedisPoolConfig { url: url.clone(), ..config.pools.redis.clone() })?)
        }
        None => None,
    };
    let http = HttpClient::builder(config.pools.http.clone()).breaker(breakers.clone()).build()?;
    let mut pools = PoolsStatus::new().with(db.clone()).with(http.clone());
    if let Some(redis) = &redis {
        pools = pools.with(redis.clone());
    }
    status.register(pools);

    let (upstream_url, upstream_control) = match &config.upstream.url {
        Some(url) => (url.trim_end_matches('/').to_owned(), None),
        None => {
            let control = UpstreamControl::default();
            let addr = upstream::spawn(control.clone()).await?;
            (format!("http://{addr}"), Some(control))
        }
    };

    let state = AppState {
        db,
        redis,
        http,
        rows,
        http_cache,
        upstream_url,
        upstream_control,
        database_kind,
        ready: Arc::new(AtomicBool::new(true)),
        item_max_age_s: config.item_max_age_s,
        list_max_age_s: config.list_max_age_s,
    };
    let layers = Layers { exporter, metrics, classifier, ratelimit, admission, breakers, status };
    Ok((state, layers))
}

fn classifier(config: &DemoConfig) -> Classifier {
    let c = &config.classify;
    let mut builder = Classifier::builder()
        .priority_header(&c.priority_header)
        .max_header_priority(c.max_header_priority)
        // Operations endpoints must answer even when the service is saturated.
        .path_prefix_priority("/healthz", phalanx::core::Priority::Critical)
        .path_prefix_priority("/readyz", phalanx::core::Priority::Critical);
    for (route, priority) in &c.routes {
        builder = builder.route_priority(route.clone(), *priority);
    }
    for (key, tier) in &c.api_keys {
        builder = builder.api_key_tier(&c.api_key_header, key.clone(), *tier);
    }
    builder.build()
}
