//! The Prometheus exporter: an OpenTelemetry meter provider whose reader is a Prometheus
//! registry, and the `/metrics` handler that renders it.

use axum::{http::header, response::IntoResponse, routing::get, Router};
use opentelemetry_sdk::{metrics::SdkMeterProvider, Resource};
use prometheus::{Encoder, TextEncoder};

use crate::Error;

/// The Prometheus text exposition format, version 0.0.4.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// An OpenTelemetry meter provider exporting to a Prometheus registry. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PrometheusExporter {
    registry: prometheus::Registry,
    provider: SdkMeterProvider,
}

impl PrometheusExporter {
    /// A provider for this service name, not installed globally.
    pub fn new(service_name: &'static str) -> Result<Self, Error> {
        let registry = prometheus::Registry::new();
        let reader = opentelemetry_prometheus::exporter().with_registry(registry.clone()).build()?;
        let provider = SdkMeterProvider::builder()
            .with_reader(reader)
            .with_resource(Resource::builder().with_service_name(service_name).build())
            .build();
        Ok(PrometheusExporter { registry, provider })
    }

    /// A provider for this service name, installed as the global meter provider so that
    /// [`phalanx_core::default_meter`] records into it. Install it before building layers.
    pub fn install(service_name: &'static str) -> Result<Self, Error> {
        let exporter = Self::new(service_name)?;
        opentelemetry::global::set_meter_provider(exporter.provider.clone());
        Ok(exporter)
    }

    /// The meter provider.
    pub fn provider(&self) -> &SdkMeterProvider {
        &self.provider
    }

    /// The `phalanx` meter of this provider (for layers built with an explicit meter).
    pub fn meter(&self) -> opentelemetry::metrics::Meter {
        use opentelemetry::metrics::MeterProvider;
        self.provider.meter("phalanx")
    }

    /// The current metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::with_capacity(16 * 1024);
        // Encoding a gathered registry into a Vec cannot fail for the text format but on
        // invalid UTF-8, which OpenTelemetry's sanitized names never contain.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// A router serving the metrics at `path`.
    pub fn router<S: Clone + Send + Sync + 'static>(&self, path: &str) -> Router<S> {
        let exporter = self.clone();
        Router::new().route(
            path,
            get(move || {
                let exporter = exporter.clone();
                async move { ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], exporter.render()).into_response() }
            }),
        )
    }
}
