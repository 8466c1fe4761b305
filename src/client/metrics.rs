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
    replaced: IntCounterVec,
    history_changes: IntCounter,
    since_sync: prometheus::Gauge,
    sync: std::sync::Mutex<SyncMoment>,
}

/// When the node was last known in sync.
#[derive(Clone, Copy, Default)]
struct SyncMoment {
    /// The last moment known in sync (`None`: never).
    last: Option<Instant>,
    /// Whether it still is: the watch is open, nothing is left to push or
    /// apply. While it is, the node stays in sync without any event.
    now: bool,
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
            replaced: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "cflux_node_metadata_replaced_total",
                        "Times the local metadata turned out replaced (another ClusterID, an Index gone back) and the node rejoined, by reason.",
                    ),
                    &["reason"],
                ),
            ),
            history_changes: register(
                &r,
                IntCounter::new(
                    "cflux_node_history_changes_total",
                    "Times the cluster catalog's history changed under the node (a manager that lost its state) and the node rejoined.",
                ),
            ),
            since_sync: register(
                &r,
                prometheus::Gauge::new(
                    "cflux_node_seconds_since_sync",
                    "Seconds since the node was last known in sync (-1: never); 0 while it is.",
                ),
            ),
            sync: std::sync::Mutex::new(SyncMoment::default()),
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

    /// The local metadata was found replaced (`reason`: `cluster_id`, `index`).
    pub fn metadata_replaced(&self, reason: &str) {
        self.replaced.with_label_values(&[reason]).inc();
    }

    pub fn history_changed(&self) {
        self.history_changes.inc();
    }

    /// Whether the node is in sync now; leaving sync keeps the moment it
    /// was last known to be.
    pub fn set_in_sync(&self, in_sync: bool) {
        let mut sync = self.sync.lock().unwrap_or_else(|e| e.into_inner());
        if in_sync || sync.now {
            sync.last = Some(Instant::now());
        }
        sync.now = in_sync;
    }

    /// Seconds since the node was last known in sync: 0 while it is,
    /// `None` if it never was.
    pub fn seconds_since_sync(&self) -> Option<f64> {
        self.seconds_since_sync_at(Instant::now())
    }

    /// [`Self::seconds_since_sync`] as it is at `now`.
    fn seconds_since_sync_at(&self, now: Instant) -> Option<f64> {
        let sync = *self.sync.lock().unwrap_or_else(|e| e.into_inner());
        match sync {
            SyncMoment { now: true, .. } => Some(0.0),
            SyncMoment { last, .. } => last.map(|t| now.saturating_duration_since(t).as_secs_f64()),
        }
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
        self.since_sync
            .set(self.seconds_since_sync().unwrap_or(-1.0));
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

    #[test]
    fn seconds_since_sync_stay_zero_while_in_sync_and_count_after() {
        let m = NodeMetrics::new();
        assert_eq!(m.seconds_since_sync(), None);
        let hour = std::time::Duration::from_secs(3600);
        m.set_in_sync(true);
        assert_eq!(m.seconds_since_sync_at(Instant::now() + hour), Some(0.0));
        m.set_in_sync(false);
        let left = Instant::now();
        let since = m.seconds_since_sync_at(left + hour).unwrap();
        assert!((3600.0..3601.0).contains(&since), "{since}");
        // Failing again does not move the moment last known in sync.
        m.set_in_sync(false);
        assert!(m.seconds_since_sync_at(left + hour).unwrap() >= since);
    }
}
