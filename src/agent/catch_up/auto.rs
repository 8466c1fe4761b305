//! The agent's side of catch-up (with `--replicate`): every
//! `--catch-up-check-interval` it counts its own points and an alive
//! peer's (through the peer's signed query endpoint), per database, policy,
//! measurement and hour, as `cfluxctl verify` does. Holding fewer field
//! values than the peer in any hour that ended a minute ago or more — it
//! joined a cluster holding data, or a peer's queue dropped writes for it —
//! is "needs catch-up": the `cflux_node_needs_catch_up` gauge, `/health`'s
//! `needs_catch_up`, and every heartbeat (so `cfluxctl status` and the
//! console show it) until a check finds it equal again. With
//! `--auto-catch-up` the agent then copies from that peer into its own
//! influxd itself, with the code `cfluxctl catch-up` runs, checkpointed in
//! its state directory.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntCounter, IntGauge, Registry};
use tokio_util::sync::CancellationToken;

use super::copy::{CatchUp, Plan};
use super::counts::{count, Counts};
use super::{Reader, SignedNode, Writer};
use crate::agent::config::InfluxAuth;
use crate::agent::frontdoor::replication::Replication;
use crate::agent::influxd::InfluxdMeta;
use crate::agent::influxql::Influxd;
use crate::client::Client;
use crate::clock::now_ms;
use crate::telemetry::{register, with_causes};

/// The buckets a check compares.
const CHECK_BUCKET: Duration = Duration::from_secs(3600);
/// Buckets that ended less than this long ago are not compared: writes to
/// them may still be on their way.
const SETTLE: Duration = Duration::from_secs(60);
/// The windows an automatic catch-up copies.
const COPY_WINDOW: Duration = Duration::from_secs(86_400);

/// What the agent needs for its checks.
#[derive(Clone, Debug)]
pub struct CatchUpSettings {
    pub check_interval: Duration,
    /// `--auto-catch-up`: copy from the peer when behind.
    pub auto: bool,
    /// The members' credential (`--replication-secret-file`).
    pub secret: Vec<u8>,
    pub checkpoint: PathBuf,
}

/// Where the node stands, for `/metrics` and `/health`.
pub struct CatchUpState {
    registry: Registry,
    needed: IntGauge,
    copies: IntCounter,
    reason: Mutex<Option<String>>,
}

impl Default for CatchUpState {
    fn default() -> Self {
        let r = Registry::new();
        CatchUpState {
            needed: register(
                &r,
                IntGauge::new(
                    "cflux_node_needs_catch_up",
                    "1 while the node holds fewer points than a peer (it joined a cluster holding data, or a peer's queue dropped writes for it), until it is caught up.",
                ),
            ),
            copies: register(
                &r,
                IntCounter::new(
                    "cflux_node_catch_ups_total",
                    "Catch-ups the agent finished by itself (--auto-catch-up).",
                ),
            ),
            registry: r,
            reason: Mutex::new(None),
        }
    }
}

impl CatchUpState {
    /// Why the node needs catch-up, when it does.
    pub fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn render_metrics(&self) -> String {
        crate::telemetry::render(&self.registry)
    }

    fn set(&self, reason: Option<String>) {
        self.needed.set(i64::from(reason.is_some()));
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = reason;
    }
}

/// Checks every `check_interval` until shutdown (and copies, with `auto`);
/// `replication` is this node's, whose queues the checks look at.
pub async fn run(
    settings: CatchUpSettings,
    state: Arc<CatchUpState>,
    client: &Client<InfluxdMeta>,
    influxd: Influxd,
    replication: Arc<Replication>,
    shutdown: CancellationToken,
) {
    while client.node_id().is_none() {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    // A copy made before every peer queues for this node could miss what
    // they acknowledge until then; after it, nothing slips between.
    if !replication.wait_joined().await {
        return;
    }
    loop {
        let checked = check(
            &settings,
            &state,
            client,
            &influxd,
            &replication,
            settings.auto,
        );
        let wait = match checked.await {
            Ok(()) => settings.check_interval,
            Err(e) => {
                tracing::warn!(error = %e, "cannot check whether the node needs catch-up");
                settings.check_interval.min(Duration::from_secs(5))
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One check, and with `auto` the copy it calls for.
async fn check(
    settings: &CatchUpSettings,
    state: &CatchUpState,
    client: &Client<InfluxdMeta>,
    influxd: &Influxd,
    replication: &Replication,
    auto: bool,
) -> Result<(), String> {
    let Some(own) = client.node_id() else {
        return Err("not registered yet".to_owned());
    };
    // A user of the cluster's to act as on the peer and on influxd.
    let admin = client
        .observed_catalog()
        .borrow()
        .as_ref()
        .and_then(|c| c.users.values().find(|u| u.admin).map(|u| u.name.clone()));
    let nodes = client.cluster_nodes().await.map_err(|e| with_causes(&e))?;
    if let Some(why) = deletions_in_flight(settings, replication, &nodes, &own).await {
        tracing::info!(reason = %why, "the catch-up check waits: a deletion is not yet on every node, and a copy could bring deleted points back");
        return Ok(());
    }
    let Some(peer) = nodes
        .iter()
        .filter(|n| n.alive && n.node_id != own && !n.http_addr.is_empty())
        .min_by_key(|n| n.registered_at_ms)
    else {
        state.set(None);
        client.report_catch_up("");
        return Ok(());
    };
    let local = Reader::Influxd(as_admin(influxd, admin.as_deref()));
    let remote = Reader::Signed(SignedNode::new(
        &peer.http_addr,
        settings.secret.clone(),
        admin.clone(),
    ));
    let bucket = CHECK_BUCKET.as_secs();
    let (mine, theirs) =
        tokio::try_join!(count(&local, None, bucket), count(&remote, None, bucket))
            .map_err(|e| with_causes(&e))?;
    let reason = behind(&mine, &theirs, now_ms()).map(|(buckets, values)| {
        format!(
            "holds {values} field values fewer than peer {} in {buckets} hour(s)",
            peer.node_id
        )
    });
    let needed = reason.is_some();
    if let Some(r) = &reason {
        tracing::warn!(reason = %r, "the node needs catch-up");
    }
    client.report_catch_up(reason.as_deref().unwrap_or_default());
    state.set(reason);
    if !(needed && auto) {
        return Ok(());
    }
    // The peer's counts again, in the copy's windows.
    let theirs = count(&remote, None, COPY_WINDOW.as_secs())
        .await
        .map_err(|e| with_causes(&e))?;
    let catch_up = CatchUp {
        source: remote,
        target: Writer::Influxd {
            influxd: influxd.clone(),
            admin: admin.clone(),
        },
        plan: Plan::new(&theirs, COPY_WINDOW, None),
        checkpoint: settings.checkpoint.clone(),
        copy: format!("auto/{own}"),
    };
    tracing::info!(peer = %peer.node_id, values = catch_up.plan.values(), "catching up from the peer (--auto-catch-up)");
    let summary = catch_up.run(|_| {}).await.map_err(|e| with_causes(&e))?;
    state.copies.inc();
    tracing::info!(
        points = summary.points_written,
        seconds = summary.seconds,
        refused = summary.writes_refused,
        "caught up"
    );
    // Equal now? Checked at once, without copying again: points the node
    // refused would otherwise be copied over and over.
    Box::pin(check(settings, state, client, influxd, replication, false)).await
}

/// Why nodes may differ by a deletion right now, if they may: one that
/// this node or an alive peer still has queued, or a member that is down
/// (it may hold one). See "Nothing resurrects" in docs/decisions.md.
async fn deletions_in_flight(
    settings: &CatchUpSettings,
    replication: &Replication,
    nodes: &[crate::proto::Node],
    own: &str,
) -> Option<String> {
    let here = replication.queued_statements();
    if here > 0 {
        return Some(format!(
            "{here} statement(s) that change points are queued here"
        ));
    }
    if let Some(down) = nodes.iter().find(|n| !n.alive && n.node_id != own) {
        return Some(format!("member {} is down", down.node_id));
    }
    for peer in nodes
        .iter()
        .filter(|n| n.node_id != own && !n.http_addr.is_empty())
    {
        let node = SignedNode::new(&peer.http_addr, settings.secret.clone(), None);
        match node.queued_statements().await {
            Ok(0) => {}
            Ok(n) => {
                return Some(format!(
                    "{n} statement(s) that change points are queued on {}",
                    peer.node_id
                ))
            }
            Err(e) => return Some(format!("{}'s queues: {}", peer.node_id, with_causes(&e))),
        }
    }
    None
}

/// `influxd` acting as `admin` in shared-secret mode without a user of its own.
fn as_admin(influxd: &Influxd, admin: Option<&str>) -> Influxd {
    match (influxd.auth(), admin) {
        (InfluxAuth::SharedSecret { secret, user: None }, Some(admin)) => Influxd::new(
            influxd.url(),
            InfluxAuth::SharedSecret {
                secret: secret.clone(),
                user: Some(admin.to_owned()),
            },
        ),
        _ => influxd.clone(),
    }
}

/// The buckets (and the field values) where `mine` holds fewer than
/// `theirs`, among those that ended [`SETTLE`] before `now_ms`; `None` when
/// there are none.
fn behind(mine: &Counts, theirs: &Counts, now_ms: u64) -> Option<(usize, u64)> {
    let bucket_ns = i64::try_from(CHECK_BUCKET.as_nanos()).unwrap_or(i64::MAX);
    let settled_ns = i64::try_from(now_ms.saturating_sub(SETTLE.as_millis() as u64))
        .unwrap_or(i64::MAX)
        .saturating_mul(1_000_000);
    let mut starts = std::collections::BTreeSet::new();
    let mut missing = 0;
    for (bucket, n) in theirs {
        if bucket.start_ns.saturating_add(bucket_ns) > settled_ns {
            continue;
        }
        let have = mine.get(bucket).copied().unwrap_or(0);
        if have < *n {
            missing += n - have;
            starts.insert(bucket.start_ns);
        }
    }
    (missing > 0).then_some((starts.len(), missing))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::catch_up::counts::tests::bucket;

    #[test]
    fn fewer_values_in_a_settled_hour_is_behind_and_more_is_not() {
        const HOUR: i64 = 3_600_000_000_000;
        let now_ms = 10 * 3_600_000;
        let theirs: Counts = [
            (bucket("cpu", "v", 0), 10),
            (bucket("cpu", "v", HOUR), 10),
            // The hour still running: not compared.
            (bucket("cpu", "v", 9 * HOUR), 10),
        ]
        .into();
        let mine: Counts = [(bucket("cpu", "v", 0), 10), (bucket("cpu", "v", HOUR), 4)].into();
        assert_eq!(behind(&mine, &theirs, now_ms), Some((1, 6)));
        let ahead: Counts = [(bucket("cpu", "v", 0), 12), (bucket("cpu", "v", HOUR), 10)].into();
        assert_eq!(behind(&ahead, &theirs, now_ms), None);
    }
}
