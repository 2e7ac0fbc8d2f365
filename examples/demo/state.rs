//! What every handler shares.

use std::sync::{atomic::AtomicBool, Arc};

use phalanx_core::StatusRegistry;
use phalanx_metrics::{MetricsLayer, PrometheusExporter};
use sqlx::AnyPool;

use crate::{config::DemoConfig, db};

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) pool: AnyPool,
    pub(crate) database_kind: &'static str,
    pub(crate) ready: Arc<AtomicBool>,
    pub(crate) exporter: PrometheusExporter,
    pub(crate) metrics: MetricsLayer,
    pub(crate) status: StatusRegistry,
}

impl AppState {
    pub(crate) async fn build(config: &DemoConfig) -> Result<Self, Box<dyn std::error::Error>> {
        // The meter provider goes first: layers built after it record into it.
        let exporter = PrometheusExporter::install("phalanx-demo")?;
        let metrics = MetricsLayer::new();
        let status = StatusRegistry::new();

        sqlx::any::install_default_drivers();
        let database_kind = if config.database_url.starts_with("postgres") { "postgresql" } else { "sqlite" };
        let pool = db::pool_options(&config.database_url).connect(&config.database_url).await?;
        db::migrate(&pool).await?;
        let seeded = db::seed(&pool, config.seed_items).await?;
        if seeded > 0 {
            tracing::info!(seeded, "catalog seeded");
        }
        Ok(AppState { pool, database_kind, ready: Arc::new(AtomicBool::new(true)), exporter, metrics, status })
    }
}
