//! The front door's Prometheus metrics and the layer that counts every
//! request by how it was authenticated (an [`Auth`] the authentication layer
//! leaves in the response's extensions) and every answer influxd could not
//! give ([`UpstreamUnreachable`], left by the proxy); and replication's
//! ([`ReplicationMetrics`]).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::collections::BTreeMap;

use prometheus::core::Collector;
use prometheus::{
    GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

use crate::agent::frontdoor::consistency::Consistency;
use crate::agent::frontdoor::handoff::QueueStats;
use crate::telemetry::register;

/// How a request was authenticated, as counted in the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// No credentials the front door reads.
    None,
    /// The client's own token.
    Bearer,
    /// Password checked with bcrypt.
    Verified,
    /// Password matched a cached verdict.
    Cached,
    /// Wrong password: answered 401.
    Refused,
    /// Not a user of the catalog (or no shared secret): influxd checked.
    Passed,
}

impl Auth {
    fn label(self) -> &'static str {
        match self {
            Auth::None => "none",
            Auth::Bearer => "bearer",
            Auth::Verified => "verified",
            Auth::Cached => "cached",
            Auth::Refused => "refused",
            Auth::Passed => "passed",
        }
    }
}

/// Marks a response the proxy gave because influxd could not be reached.
#[derive(Clone, Copy, Debug)]
pub struct UpstreamUnreachable;

pub struct FrontDoorMetrics {
    registry: Registry,
    requests: IntCounterVec,
    upstream_errors: IntCounter,
}

impl Default for FrontDoorMetrics {
    fn default() -> Self {
        let r = Registry::new();
        FrontDoorMetrics {
            requests: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "cflux_frontdoor_requests_total",
                        "Requests through the front door, by how they were authenticated (none, bearer, verified, cached, refused, passed).",
                    ),
                    &["auth"],
                ),
            ),
            upstream_errors: register(
                &r,
                IntCounter::new(
                    "cflux_frontdoor_upstream_errors_total",
                    "Requests answered 502 because influxd could not be reached.",
                ),
            ),
            registry: r,
        }
    }
}

impl FrontDoorMetrics {
    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        crate::telemetry::render(&self.registry)
    }
}

/// The counting layer (`axum::middleware::from_fn_with_state`).
pub async fn count(
    State(metrics): State<Arc<FrontDoorMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    if let Some(auth) = response.extensions().get::<Auth>() {
        metrics.requests.with_label_values(&[auth.label()]).inc();
    }
    if response.extensions().get::<UpstreamUnreachable>().is_some() {
        metrics.upstream_errors.inc();
    }
    response
}

/// Replication's figures (`--replicate`): each peer's queue (read from the
/// queues at every scrape), what was delivered and dropped, delivery
/// errors, how long a write took to reach a peer, and how writes were
/// answered.
pub struct ReplicationMetrics {
    registry: Registry,
    queue_bytes: IntGaugeVec,
    queue_points: IntGaugeVec,
    queue_writes: IntGaugeVec,
    oldest_age: GaugeVec,
    delivered: IntCounterVec,
    dropped: IntCounterVec,
    errors: IntCounterVec,
    latency: HistogramVec,
    writes: IntCounterVec,
    forged: IntCounter,
    peers: IntGauge,
    barriers: IntCounterVec,
    barrier_seconds: Histogram,
    membership_changes: IntCounterVec,
    membership_watch: IntGauge,
    joined: IntGauge,
}

impl Default for ReplicationMetrics {
    fn default() -> Self {
        let r = Registry::new();
        let peer_gauge = |name: &str, help: &str| {
            register(&r, IntGaugeVec::new(Opts::new(name, help), &["peer"]))
        };
        ReplicationMetrics {
            queue_bytes: peer_gauge(
                "cflux_handoff_queue_bytes",
                "Bytes of writes queued for the peer (hinted handoff).",
            ),
            queue_points: peer_gauge(
                "cflux_handoff_queue_points",
                "Points queued for the peer (lines of line protocol; compressed writes count 0).",
            ),
            queue_writes: peer_gauge(
                "cflux_handoff_queue_writes",
                "Writes (requests) queued for the peer.",
            ),
            oldest_age: register(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "cflux_handoff_oldest_age_seconds",
                        "Age of the oldest write queued for the peer (0 when empty).",
                    ),
                    &["peer"],
                ),
            ),
            delivered: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "cflux_replication_delivered_points_total",
                        "Points the peer wrote from this node's queue.",
                    ),
                    &["peer"],
                ),
            ),
            dropped: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "cflux_replication_dropped_points_total",
                        "Points dropped for the peer: full (--hh-max-size), expired (--hh-max-age), refused (a client error there).",
                    ),
                    &["peer", "reason"],
                ),
            ),
            errors: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "cflux_replication_errors_total",
                        "Failed deliveries to the peer (unreachable, timing out, 5xx); the writes stay queued.",
                    ),
                    &["peer"],
                ),
            ),
            latency: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "cflux_replication_latency_seconds",
                        "From a write's queueing to the peer writing it.",
                    )
                    .buckets(vec![
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
                        300.0, 3600.0,
                    ]),
                    &["peer"],
                ),
            ),
            writes: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "cflux_replication_writes_total",
                        "Replicated client writes by consistency and answer (ok, partial write, timeout, write failed, queue_failed).",
                    ),
                    &["consistency", "result"],
                ),
            ),
            forged: register(
                &r,
                IntCounter::new(
                    "cflux_replication_refused_requests_total",
                    "Replication requests refused for a missing or wrong credential.",
                ),
            ),
            peers: register(
                &r,
                IntGauge::new(
                    "cflux_replication_peers",
                    "The cluster's other nodes new writes are queued for, as the manager last listed them.",
                ),
            ),
            barriers: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "cflux_catalog_barrier_total",
                        "Answers to catalog changes by how their wait for the other nodes ended: applied (every alive node applied it), timeout (--catalog-wait passed), unpushed (the change could not be pushed to the manager now).",
                    ),
                    &["outcome"],
                ),
            ),
            barrier_seconds: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "cflux_catalog_barrier_seconds",
                        "How long the answer to a catalog change waited for the other nodes to apply it.",
                    )
                    .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
                ),
            ),
            membership_changes: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "cflux_replication_membership_changes_total",
                        "Changes of the nodes new writes are queued for, by how the manager told them: watch (WatchNodes, as they happen) or list (ListNodes every heartbeat, from a manager without WatchNodes).",
                    ),
                    &["source"],
                ),
            ),
            membership_watch: register(
                &r,
                IntGauge::new(
                    "cflux_replication_membership_watch",
                    "1 while the front door follows the manager's WatchNodes stream; 0 while it has none open (or lists the nodes instead).",
                ),
            ),
            joined: register(
                &r,
                IntGauge::new(
                    "cflux_replication_joined",
                    "1 once every alive peer's front door queues new writes for this node (it joined); 0 until then.",
                ),
            ),
            registry: r,
        }
    }
}

impl ReplicationMetrics {
    /// The metrics, the queue gauges set from `queues` first.
    pub fn render(&self, queues: &BTreeMap<String, QueueStats>, now_ms: u64) -> String {
        for (peer, q) in queues {
            let gauge = |g: &IntGaugeVec, v: u64| {
                g.with_label_values(&[peer])
                    .set(i64::try_from(v).unwrap_or(i64::MAX));
            };
            gauge(&self.queue_bytes, q.bytes);
            gauge(&self.queue_points, q.points);
            gauge(&self.queue_writes, q.entries);
            let age = q.oldest_ms.map_or(0, |o| now_ms.saturating_sub(o));
            self.oldest_age
                .with_label_values(&[peer])
                .set(age as f64 / 1000.0);
        }
        crate::telemetry::render(&self.registry)
    }

    pub fn delivered(&self, peer: &str, points: u64, latency_ms: u64) {
        self.delivered.with_label_values(&[peer]).inc_by(points);
        self.latency
            .with_label_values(&[peer])
            .observe(latency_ms as f64 / 1000.0);
    }

    pub fn dropped(&self, peer: &str, reason: &str, points: u64) {
        self.dropped
            .with_label_values(&[peer, reason])
            .inc_by(points);
    }

    pub fn error(&self, peer: &str) {
        self.errors.with_label_values(&[peer]).inc();
    }

    pub fn write_answered(&self, consistency: Consistency, result: &str) {
        self.writes
            .with_label_values(&[consistency.label(), result])
            .inc();
    }

    pub fn forged(&self) {
        self.forged.inc();
    }

    /// A catalog barrier ended with `outcome` after `seconds`.
    pub fn barrier(&self, outcome: &str, seconds: f64) {
        self.barriers.with_label_values(&[outcome]).inc();
        self.barrier_seconds.observe(seconds);
    }

    pub fn set_peers(&self, n: usize) {
        self.peers.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The members changed, as `source` ("watch" or "list") told.
    pub fn membership_changed(&self, source: &str) {
        self.membership_changes.with_label_values(&[source]).inc();
    }

    pub fn set_membership_watch(&self, open: bool) {
        self.membership_watch.set(i64::from(open));
    }

    pub fn set_joined(&self, joined: bool) {
        self.joined.set(i64::from(joined));
    }

    /// What each peer's counters hold so far (peers with no count yet are
    /// absent: reading creates no series).
    pub fn totals(&self) -> BTreeMap<String, PeerTotals> {
        let mut totals: BTreeMap<String, PeerTotals> = BTreeMap::new();
        let mut each = |vec: &IntCounterVec, add: &mut dyn FnMut(&mut PeerTotals, &str, u64)| {
            for family in vec.collect() {
                for m in family.get_metric() {
                    let label = |name: &str| {
                        m.get_label()
                            .iter()
                            .find(|l| l.name() == name)
                            .map_or("", |l| l.value())
                    };
                    let t = totals.entry(label("peer").to_owned()).or_default();
                    add(t, label("reason"), m.get_counter().get_value() as u64);
                }
            }
        };
        each(&self.delivered, &mut |t, _, v| t.delivered_points += v);
        each(&self.dropped, &mut |t, reason, v| {
            *t.dropped_points.entry(reason.to_owned()).or_default() += v;
        });
        each(&self.errors, &mut |t, _, v| t.errors += v);
        totals
    }
}

/// One peer's replication counters since the agent started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerTotals {
    pub delivered_points: u64,
    /// By reason: full, expired, refused, dropped_database.
    pub dropped_points: BTreeMap<String, u64>,
    /// Failed deliveries.
    pub errors: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_each_peers_counters() {
        let m = ReplicationMetrics::default();
        m.delivered("b", 10, 5);
        m.delivered("b", 5, 5);
        m.dropped("b", "full", 3);
        m.dropped("b", "refused", 2);
        m.error("c");
        let totals = m.totals();
        assert_eq!(totals["b"].delivered_points, 15);
        assert_eq!(
            totals["b"].dropped_points,
            [("full".to_owned(), 3), ("refused".to_owned(), 2)].into()
        );
        assert_eq!(totals["c"].errors, 1);
        assert_eq!(totals["c"].delivered_points, 0);
        // Reading made no series.
        assert!(!m.render(&BTreeMap::new(), 0).contains("peer=\"c\",reason"));
    }
}
