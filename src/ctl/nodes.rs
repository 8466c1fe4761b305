//! `cfluxctl nodes`: who is in the cluster, who is alive, and how far each
//! node's catalog is behind its cluster's.

use serde::Serialize;

use super::Context;
use crate::proto;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only this cluster's nodes [default: every cluster's].
    #[arg(long, env = "CLUSTER")]
    pub cluster: Option<String>,
}

/// Where a node stands with its cluster's catalog, as of its last heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Standing {
    /// It applied the cluster's current version and its last step succeeded.
    InSync,
    /// It applied an older version, or one of another history.
    Behind,
    /// Its last sync step failed.
    Failing,
    /// It reports nothing (an older node, the legacy protocol).
    Unknown,
}

impl Standing {
    pub(super) fn of(node: &proto::Node) -> Standing {
        match (&node.sync, node.lag) {
            (None, _) => Standing::Unknown,
            (Some(s), _) if !s.sync_error.is_empty() => Standing::Failing,
            (Some(_), Some(0)) => Standing::InSync,
            (Some(_), _) => Standing::Behind,
        }
    }

    /// The word the tables show.
    pub(super) fn word(self) -> &'static str {
        match self {
            Standing::InSync => "in sync",
            Standing::Behind => "behind",
            Standing::Failing => "failing",
            Standing::Unknown => "unknown",
        }
    }
}

#[derive(Serialize)]
struct Node {
    cluster: String,
    node_id: String,
    hostname: String,
    ips: Vec<String>,
    bind_address: String,
    http_addr: String,
    version: String,
    alive: bool,
    registered_at_ms: u64,
    last_heartbeat_ms: u64,
    sync: Standing,
    /// `None` when the node reports nothing.
    applied_version: Option<u64>,
    applied_history_id: Option<String>,
    /// Versions behind the cluster's; `None` when unknown (nothing
    /// reported, or another history).
    lag: Option<u64>,
    sync_error: Option<String>,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    if let Some(cluster) = &args.cluster {
        ctx.existing_cluster(cluster).await?;
    }
    let nodes: Vec<Node> = ctx
        .manager
        .list_nodes(args.cluster.as_deref().unwrap_or_default())
        .await?
        .into_iter()
        .map(|n| {
            let sync = Standing::of(&n);
            let reported = n.sync.unwrap_or_default();
            let known = sync != Standing::Unknown;
            Node {
                cluster: n.cluster,
                node_id: n.node_id,
                hostname: n.hostname,
                ips: n.ips,
                bind_address: n.bind_address,
                http_addr: n.http_addr,
                version: n.version,
                alive: n.alive,
                registered_at_ms: n.registered_at_ms,
                last_heartbeat_ms: n.last_heartbeat_ms,
                sync,
                applied_version: known.then_some(reported.applied_version),
                applied_history_id: known.then_some(reported.applied_history_id),
                lag: n.lag,
                sync_error: Some(reported.sync_error).filter(|e| !e.is_empty()),
            }
        })
        .collect();
    ctx.output.print(&nodes, |nodes| {
        let now = crate::clock::now_ms();
        let rows: Vec<Vec<String>> = nodes
            .iter()
            .map(|n| {
                vec![
                    n.cluster.clone(),
                    n.node_id.clone(),
                    n.hostname.clone(),
                    n.http_addr.clone(),
                    if n.alive { "alive" } else { "dead" }.into(),
                    super::heartbeat_age(now, n.last_heartbeat_ms),
                    n.applied_version.map_or("-".into(), |v| v.to_string()),
                    lag_text(n.sync, n.lag),
                    n.sync.word().into(),
                    n.sync_error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        super::print_table(
            &[
                "CLUSTER",
                "NODE",
                "HOSTNAME",
                "HTTP",
                "STATE",
                "HEARTBEAT",
                "APPLIED",
                "LAG",
                "SYNC",
                "ERROR",
            ],
            &rows,
        );
    })
}

/// The lag as the table shows it: `-` when nothing is reported, `?` for a
/// version of another history.
fn lag_text(standing: Standing, lag: Option<u64>) -> String {
    match (standing, lag) {
        (Standing::Unknown, _) => "-".into(),
        (_, Some(n)) => n.to_string(),
        (_, None) => "?".into(),
    }
}
