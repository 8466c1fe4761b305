//! Prometheus metrics of the manager, served as text on `/metrics`.

use std::time::Duration;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::manager::store::{NodeStatus, StoreError};
use crate::telemetry::register;

/// Every metric the manager exports.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    nodes: IntGaugeVec,
    alive_nodes: IntGaugeVec,
    pub watch_streams: IntGauge,
    pub node_watch_streams: IntGauge,
    pub long_polls: IntGauge,
    pub conflicts: IntCounter,
    store_errors: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        Metrics {
            requests: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "cflux_requests_total",
                        "Requests by layer (grpc, legacy), method and status.",
                    ),
                    &["layer", "method", "status"],
                ),
            ),
            latency: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "cflux_request_duration_seconds",
                        "Request latency by layer and method.",
                    )
                    .buckets(vec![
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0,
                    ]),
                    &["layer", "method"],
                ),
            ),
            nodes: register(
                &r,
                IntGaugeVec::new(
                    Opts::new("cflux_nodes", "Registered nodes per cluster."),
                    &["cluster"],
                ),
            ),
            alive_nodes: register(
                &r,
                IntGaugeVec::new(
                    Opts::new("cflux_nodes_alive", "Alive nodes per cluster."),
                    &["cluster"],
                ),
            ),
            watch_streams: register(
                &r,
                IntGauge::new("cflux_watch_streams", "Open WatchMeta streams."),
            ),
            node_watch_streams: register(
                &r,
                IntGauge::new("cflux_node_watch_streams", "Open WatchNodes streams."),
            ),
            long_polls: register(
                &r,
                IntGauge::new("cflux_long_polls", "Held legacy long polls."),
            ),
            conflicts: register(
                &r,
                IntCounter::new(
                    "cflux_push_conflicts_total",
                    "Catalog pushes refused by compare-and-swap.",
                ),
            ),
            store_errors: register(
                &r,
                IntCounterVec::new(
                    Opts::new("cflux_store_errors_total", "Failed store calls by kind."),
                    &["kind"],
                ),
            ),
            registry: r,
        }
    }

    /// Counts one finished request.
    pub fn observe(&self, layer: &str, method: &str, status: &str, elapsed: Duration) {
        self.requests
            .with_label_values(&[layer, method, status])
            .inc();
        self.latency
            .with_label_values(&[layer, method])
            .observe(elapsed.as_secs_f64());
    }

    pub fn store_error(&self, e: &StoreError) {
        let kind = if e.is_unavailable() {
            "unavailable"
        } else {
            "internal"
        };
        self.store_errors.with_label_values(&[kind]).inc();
    }

    /// Replaces the per-cluster node gauges with the given listing.
    pub fn set_node_gauges(&self, nodes: &[NodeStatus]) {
        self.nodes.reset();
        self.alive_nodes.reset();
        for n in nodes {
            let c = n.record.cluster.as_str();
            self.nodes.with_label_values(&[c]).inc();
            let alive = self.alive_nodes.with_label_values(&[c]);
            if n.alive {
                alive.inc();
            }
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        crate::telemetry::render(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render() {
        let m = Metrics::new();
        m.observe("grpc", "Register", "OK", Duration::from_millis(3));
        m.conflicts.inc();
        let text = m.render();
        assert!(
            text.contains(r#"cflux_requests_total{layer="grpc",method="Register",status="OK"} 1"#)
        );
        assert!(text.contains("cflux_push_conflicts_total 1"));
    }
}
