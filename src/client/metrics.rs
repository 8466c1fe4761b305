//! Prometheus metrics of a node's sync, for the agent's `/metrics`.

use std::time::Instant;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::telemetry::register;

/// Counters and gauges of one node's sync.
pub struct NodeMetrics {
    registry: Registry,
    pushes: IntCounterVec,
    pulls: IntCounter,
    failures: IntCounterVec,
    version: IntGauge,
    since_sync: prometheus::Gauge,
    last_sync: std::sync::Mutex<Option<Instant>>,
}

impl NodeMetrics {
    pub fn new() -> Self {
        let r = Registry::new();
        NodeMetrics {
            pushes: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "cflux_node_pushes_total",
                        "Catalog pushes by result (accepted, conflict).",
                    ),
                    &["result"],
                ),
            ),
            pulls: register(
                &r,
                IntCounter::new(
                    "cflux_node_pulls_total",
                    "Cluster catalogs applied to the local server.",
                ),
            ),
            failures: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "cflux_node_failures_total",
                        "Failed sync steps after retries, by step.",
                    ),
                    &["step"],
                ),
            ),
            version: register(
                &r,
                IntGauge::new(
                    "cflux_node_catalog_version",
                    "Cluster catalog version last synced.",
                ),
            ),
            since_sync: register(
                &r,
                prometheus::Gauge::new(
                    "cflux_node_seconds_since_sync",
                    "Seconds since the last successful sync (-1: never).",
                ),
            ),
            last_sync: std::sync::Mutex::new(None),
            registry: r,
        }
    }

    pub fn pushed(&self, accepted: bool) {
        self.pushes
            .with_label_values(&[push_result(accepted)])
            .inc();
    }

    pub fn pulled(&self) {
        self.pulls.inc();
    }

    pub fn failure(&self, step: &str) {
        self.failures.with_label_values(&[step]).inc();
    }

    pub fn set_version(&self, v: u64) {
        self.version.set(i64::try_from(v).unwrap_or(i64::MAX));
    }

    pub fn synced(&self) {
        *self.last_sync.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// Pushes the manager accepted (`true`) or answered with a conflict.
    pub fn pushes(&self, accepted: bool) -> u64 {
        self.pushes
            .with_label_values(&[push_result(accepted)])
            .get()
    }

    /// The catalog version last synced.
    pub fn version(&self) -> u64 {
        u64::try_from(self.version.get()).unwrap_or(0)
    }

    /// Prometheus text of every metric.
    pub fn render(&self) -> String {
        let since = self
            .last_sync
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map_or(-1.0, |t| t.elapsed().as_secs_f64());
        self.since_sync.set(since);
        crate::telemetry::render(&self.registry)
    }
}

/// The `result` label of a push.
fn push_result(accepted: bool) -> &'static str {
    if accepted {
        "accepted"
    } else {
        "conflict"
    }
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render() {
        let m = NodeMetrics::new();
        m.pushed(false);
        m.set_version(4);
        assert_eq!((m.pushes(false), m.pushes(true)), (1, 0));
        let text = m.render();
        assert!(text.contains(r#"cflux_node_pushes_total{result="conflict"} 1"#));
        assert!(text.contains("cflux_node_catalog_version 4"));
        assert!(text.contains("cflux_node_seconds_since_sync -1"));
    }
}
