//! Control-plane metrics (Prometheus): the serving revision, reload
//! outcomes, Redis connectivity and freeze deferrals. One registry per
//! control plane (so tests running several gateways in one process do not
//! collide); `/metrics` on the admin listener renders it.

use prometheus::{Encoder, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// The control plane's metric handles, registered once.
#[derive(Debug, Clone)]
pub struct ControlMetrics {
    registry: Registry,
    /// `switchyard_config_revision`: Redis revision being served (0 = file).
    pub revision: IntGauge,
    /// `switchyard_config_reloads_total{result}`: applied, rejected, deferred, error.
    pub reloads: IntCounterVec,
    /// `switchyard_config_deferred_revision`: revision held back by a freeze (0 = none).
    pub deferred: IntGauge,
    /// `switchyard_redis_connected`: 1 while the last Redis command succeeded.
    pub redis_connected: IntGauge,
    /// `switchyard_pins`: pins mirrored from Redis.
    pub redis_pins: IntGauge,
    /// The request metrics (same registry); each published table gets its
    /// label handles from here.
    pub requests: std::sync::Arc<crate::metrics::RequestMetrics>,
}

impl Default for ControlMetrics {
    fn default() -> Self {
        let registry = Registry::new();
        let revision = IntGauge::new(
            "switchyard_config_revision",
            "Routing table revision being served (0 for a file)",
        )
        .expect("valid metric");
        let reloads = IntCounterVec::new(
            Opts::new(
                "switchyard_config_reloads_total",
                "Routing table reload attempts by result",
            ),
            &["result"],
        )
        .expect("valid metric");
        let deferred = IntGauge::new(
            "switchyard_config_deferred_revision",
            "Revision held back by a change freeze until it ends (0 = none)",
        )
        .expect("valid metric");
        let redis_connected = IntGauge::new(
            "switchyard_redis_connected",
            "1 while the last Redis command succeeded",
        )
        .expect("valid metric");
        let redis_pins = IntGauge::new(
            "switchyard_redis_pins",
            "Per-client pins mirrored from Redis",
        )
        .expect("valid metric");
        for m in [&revision, &deferred, &redis_connected, &redis_pins] {
            registry
                .register(Box::new(m.clone()))
                .expect("unique metric");
        }
        registry
            .register(Box::new(reloads.clone()))
            .expect("unique metric");
        // Pre-create the result series so dashboards see zeros, not gaps.
        for r in ["applied", "rejected", "deferred", "error"] {
            reloads.with_label_values(&[r]);
        }
        #[cfg(target_os = "linux")]
        {
            let _ = registry.register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ));
        }
        ControlMetrics {
            requests: std::sync::Arc::new(crate::metrics::RequestMetrics::register(&registry)),
            registry,
            revision,
            reloads,
            deferred,
            redis_connected,
            redis_pins,
        }
    }
}

impl ControlMetrics {
    /// Registers more metric families on the same `/metrics` (names must be unique).
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        self.registry.register(collector).expect("unique metric");
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}
