//! What the demo builds at start-up and every handler shares.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{atomic::AtomicBool, Arc},
};

use axum::{
    extract::FromRef,
    http::{HeaderMap, HeaderName},
};
use phalanx::{
    admission::AdmissionLayer,
    breaker::BreakerRegistry,
    cache::{CacheLayer, TieredCache},
    core::{
        identity::{api_key_digest, ClientKeyConfig},
        redis::{RedisHandle, RedisSettings},
        Classifier, ClientKeyResolver, Deps, StatusRegistry,
    },
    metrics::{MetricsLayer, PrometheusExporter},
    pools::{DbPool, HttpClient, RedisPool},
    ratelimit::RateLimitLayer,
};

use crate::{
    config::DemoConfig,
    db::{self, Item},
    upstream::{self, UpstreamControl},
    write_count::WriteCounter,
};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// What every handler shares: one `Arc`, so axum's per-request `State` clone is one count bump
/// rather than a dozen (perf showed the field-by-field clone and drop under load).
#[derive(Clone)]
pub(crate) struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub(crate) struct Shared {
    pub(crate) db: DbPool<sqlx::Any>,
    pub(crate) redis: Option<RedisPool>,
    pub(crate) http: HttpClient,
    pub(crate) rows: TieredCache<i64, Item>,
    pub(crate) http_cache: CacheLayer,
    pub(crate) upstream_url: String,
    pub(crate) upstream_control: Option<UpstreamControl>,
    pub(crate) database_kind: &'static str,
    pub(crate) ready: Arc<AtomicBool>,
    pub(crate) item_max_age: std::time::Duration,
    pub(crate) list_max_age: std::time::Duration,
    pub(crate) writers: Writers,
    pub(crate) known_keys: KnownKeys,
    /// The cluster-wide write count, flushed to Redis in the background (no-op without Redis).
    pub(crate) writes: WriteCounter,
}

/// The API keys that may change the catalog, held as digests.
#[derive(Clone)]
pub(crate) struct Writers {
    header: HeaderName,
    digests: Arc<HashSet<String>>,
}

/// Whether a request may write.
pub(crate) enum WriteAccess {
    Granted,
    /// No key, or a key that is not in the table.
    NoKey,
    /// A known key without write permission.
    ReadOnly,
}

impl Writers {
    pub(crate) fn from_config(config: &DemoConfig) -> Result<Self, Error> {
        let c = &config.classify;
        let header = HeaderName::try_from(c.api_key_header.as_str())
            .map_err(|_| format!("invalid classify.api_key_header {:?}", c.api_key_header))?;
        let digests = c.api_keys.iter().filter(|(_, g)| g.write).map(|(k, _)| api_key_digest(k)).collect();
        Ok(Writers { header, digests: Arc::new(digests) })
    }

    pub(crate) fn check(&self, headers: &HeaderMap, config_keys: &KnownKeys) -> WriteAccess {
        let Some(key) = headers.get(&self.header).and_then(|v| v.to_str().ok()) else {
            return WriteAccess::NoKey;
        };
        if self.digests.contains(&api_key_digest(key)) {
            WriteAccess::Granted
        } else if config_keys.is_known_api_key(key) {
            WriteAccess::ReadOnly
        } else {
            WriteAccess::NoKey
        }
    }

    pub(crate) fn header(&self) -> &HeaderName {
        &self.header
    }
}

/// The table of every known key (the resolver holds it).
pub(crate) type KnownKeys = ClientKeyResolver;

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
    let metrics = MetricsLayer::from_config(&config.metrics, &Deps::new())?;
    let status = StatusRegistry::new();

    let key_resolver = key_config(config).build()?;
    let writers = Writers::from_config(config)?;
    let classifier = classifier(config, key_resolver.clone());
    let redis_settings = redis_settings(config);
    // The process's one Redis handle (one pool, one subscriber): the rate limiter, the caches and
    // the Redis extractor's pool all run on it.
    let redis_handle = redis_settings.clone().map(RedisHandle::connect).transpose()?;
    let mut deps = Deps::new();
    if let Some(handle) = &redis_handle {
        deps = deps.redis(handle.clone());
    }
    let ratelimit = ratelimit(config, &deps)?;
    status.register(ratelimit.clone());

    let rows: TieredCache<i64, Item> = TieredCache::from_config(&config.cache.rows, &deps)?;
    let http_cache = CacheLayer::from_config(&config.cache.http, &deps)?;
    status.register(http_cache.clone());
    // The row cache sees mostly the HTTP cache's misses: demo.toml gives it no hit-ratio target.
    status.register_as("row_cache", rows.clone());

    let mut admission = BTreeMap::new();
    for (group, cfg) in &config.admission {
        let layer = AdmissionLayer::from_config(cfg, &Deps::new())?;
        // One /status section per route group: `admission.items`, `admission.upstream`.
        status.register_as(format!("admission.{group}"), layer.clone());
        admission.insert(group.clone(), layer);
    }

    let breakers = BreakerRegistry::from_config(&config.breaker, &phalanx::core::Deps::new())?;
    status.register(breakers.clone());

    sqlx::any::install_default_drivers();
    let database_kind = if config.database_url.starts_with("postgres") { "postgresql" } else { "sqlite" };
    db::prepare(&config.database_url).await?;
    // `database_url` (env DATABASE_URL) names the database of the pool.
    let mut db_config = config.pools.db.clone().with_url(config.database_url.clone());
    if config.database_url.starts_with("sqlite") && db_config.after_connect.is_empty() {
        // With the write-ahead log, NORMAL syncs at checkpoints rather than at every commit:
        // still safe against corruption, and writes no longer queue behind one fsync each
        // (holding connections the reads need) when the disk is slow.
        db_config = db_config.with_after_connect(["PRAGMA synchronous = NORMAL"]);
    }
    let db = DbPool::<sqlx::Any>::from_config(&db_config, &deps).await.map_err(|e| in_section(e, "pools.db"))?;
    db::migrate(db.sqlx()).await?;
    let seeded = db::seed(db.sqlx(), config.seed_items).await?;
    if seeded > 0 {
        tracing::info!(seeded, "catalog seeded");
    }
    let redis = match &redis_handle {
        Some(_) => {
            Some(RedisPool::from_config(&config.pools.redis, &deps).await.map_err(|e| in_section(e, "pools.redis"))?)
        }
        None => None,
    };
    let http = HttpClient::builder()
        .config(config.pools.http.clone())
        .breaker(breakers.clone())
        .build()
        .await
        .map_err(|e| in_section(e, "pools.http"))?;
    status.register(db.clone());
    status.register(http.clone());
    if let Some(redis) = &redis {
        status.register(redis.clone());
    }

    let (upstream_url, upstream_control) = match &config.upstream.url {
        Some(url) => (url.trim_end_matches('/').to_owned(), None),
        None => {
            let control = UpstreamControl::default();
            let addr = upstream::spawn(control.clone()).await?;
            (format!("http://{addr}"), Some(control))
        }
    };

    let writes = redis.clone().map(WriteCounter::spawn).unwrap_or_default();
    let state = AppState(Arc::new(Shared {
        db,
        redis,
        http,
        rows,
        http_cache,
        upstream_url,
        upstream_control,
        database_kind,
        ready: Arc::new(AtomicBool::new(true)),
        item_max_age: config.item_max_age,
        list_max_age: config.list_max_age,
        writers,
        known_keys: key_resolver,
        writes,
    }));
    let layers = Layers { exporter, metrics, classifier, ratelimit, admission, breakers, status };
    Ok((state, layers))
}

/// A pool's configuration error with its field named from the file's top (`pools.db.url`).
fn in_section(e: phalanx::pools::Error, section: &str) -> Error {
    match e {
        phalanx::pools::Error::Config(c) => c.in_section(section).into(),
        other => other.into(),
    }
}

/// The one Redis deployment every layer uses: `REDIS_URL` as given (`redis://`, `rediss://`,
/// `redis-cluster://`, `rediss-cluster://`), with `REDIS_TLS_CA_FILE` for a private CA.
pub(crate) fn redis_settings(config: &DemoConfig) -> Option<RedisSettings> {
    config.redis_url.as_ref().map(|url| {
        let mut settings = RedisSettings::from_url(url.clone());
        settings.tls_ca_file = config.redis_tls_ca_file.clone();
        settings
    })
}

/// The rate limiter's identity rules, with the known keys taken from the one key table.
pub(crate) fn key_config(config: &DemoConfig) -> ClientKeyConfig {
    let mut key = config.ratelimit.key.clone();
    key.api_keys.extend(config.classify.api_keys.keys().cloned());
    key
}

pub(crate) fn ratelimit(config: &DemoConfig, deps: &Deps) -> Result<RateLimitLayer, Error> {
    let mut rl = config.ratelimit.clone();
    rl.key = key_config(config);
    Ok(RateLimitLayer::from_config(&rl, deps)?)
}

/// The classifier, which also resolves the client key once for the layers below it.
pub(crate) fn classifier(config: &DemoConfig, key_resolver: ClientKeyResolver) -> Classifier {
    let c = &config.classify;
    let mut builder = Classifier::builder()
        .priority_header(&c.priority_header)
        // Operations endpoints must answer even when the service is saturated.
        .path_prefix_priority("/healthz", phalanx::core::Priority::Critical)
        .path_prefix_priority("/readyz", phalanx::core::Priority::Critical)
        .client_key(key_resolver);
    for (tier, cap) in &c.tier_max_priority {
        builder = builder.tier_max_header_priority(*tier, *cap);
    }
    for (route, priority) in &c.routes {
        builder = builder.route_priority(route.clone(), *priority);
    }
    for (key, grant) in &c.api_keys {
        builder = builder.api_key_tier(&c.api_key_header, key.clone(), grant.tier);
    }
    builder.build()
}
