//! `cfluxctl status [CLUSTER]`: the one-screen overview — every cluster (or
//! one) with its catalog version, its nodes alive, dead, behind and failing,
//! and its last change. The exit code tells scripts whether all is well:
//! 0 when every node is alive and in sync, [`NEEDS_ATTENTION`] otherwise.

use std::process::ExitCode;

use serde::Serialize;

use super::nodes::Standing;
use super::Context;
use crate::proto;

/// The exit code when some node is dead, behind or failing.
pub const NEEDS_ATTENTION: u8 = 3;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only this cluster [default: every cluster].
    pub cluster: Option<String>,
}

#[derive(Serialize)]
struct Status {
    /// Every node alive and in sync (nodes that report nothing aside).
    in_sync: bool,
    clusters: Vec<ClusterStatus>,
}

#[derive(Serialize)]
struct ClusterStatus {
    name: String,
    version: u64,
    nodes: u32,
    alive: u32,
    dead: u32,
    /// Alive nodes behind the cluster's catalog.
    behind: u32,
    /// Alive nodes whose last sync step failed.
    failing: u32,
    /// Alive nodes that report nothing (older nodes, the legacy protocol).
    unknown: u32,
    last_change: Option<LastChange>,
    /// The nodes that are dead, behind or failing, and why.
    problems: Vec<Problem>,
}

#[derive(Serialize)]
struct LastChange {
    version: u64,
    changed_at_ms: u64,
    node_id: String,
    hostname: String,
    layer: String,
    summary: String,
}

#[derive(Serialize)]
struct Problem {
    node_id: String,
    hostname: String,
    problem: String,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let clusters = match &args.cluster {
        Some(name) => vec![ctx.existing_cluster(name).await?],
        None => ctx.manager.list_clusters().await?,
    };
    let nodes = ctx
        .manager
        .list_nodes(args.cluster.as_deref().unwrap_or_default())
        .await?;
    let mut out = Vec::with_capacity(clusters.len());
    for c in clusters {
        let last_change = ctx
            .manager
            .list_history(&c.name, 1)
            .await?
            .into_iter()
            .next()
            .map(|h| LastChange {
                version: h.version,
                changed_at_ms: h.changed_at_ms,
                node_id: h.node_id,
                hostname: h.hostname,
                layer: h.layer,
                summary: h.summary,
            });
        let members: Vec<&proto::Node> = nodes.iter().filter(|n| n.cluster == c.name).collect();
        out.push(cluster_status(c, &members, last_change));
    }
    let status = Status {
        in_sync: out.iter().all(|c| c.problems.is_empty()),
        clusters: out,
    };
    ctx.output.print(&status, print_table)?;
    Ok(if status.in_sync {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(NEEDS_ATTENTION)
    })
}

fn cluster_status(
    c: proto::ClusterInfo,
    members: &[&proto::Node],
    last_change: Option<LastChange>,
) -> ClusterStatus {
    let mut s = ClusterStatus {
        name: c.name,
        version: c.version,
        nodes: members.len() as u32,
        alive: 0,
        dead: 0,
        behind: 0,
        failing: 0,
        unknown: 0,
        last_change,
        problems: Vec::new(),
    };
    for n in members {
        let problem = if !n.alive {
            s.dead += 1;
            Some("dead".to_owned())
        } else {
            s.alive += 1;
            match Standing::of(n) {
                Standing::InSync => None,
                Standing::Unknown => {
                    s.unknown += 1;
                    None
                }
                Standing::Behind => {
                    s.behind += 1;
                    Some(match n.lag {
                        Some(lag) => format!("behind by {lag}"),
                        None => "behind: applied a version of another history".to_owned(),
                    })
                }
                Standing::Failing => {
                    s.failing += 1;
                    let error = n.sync.as_ref().map_or("", |r| r.sync_error.as_str());
                    Some(format!("failing: {error}"))
                }
            }
        };
        // Holding fewer points than a peer is a problem of its own, and so
        // is a deletion not yet on every node: the nodes hold different data.
        let catch_up = n
            .sync
            .as_ref()
            .filter(|r| n.alive && !r.catch_up.is_empty())
            .map(|r| format!("needs catch-up: {}", r.catch_up));
        let queued = n
            .sync
            .as_ref()
            .filter(|r| r.queued_statements > 0)
            .map(|r| {
                format!(
                    "{} statement(s) that change points (a DELETE, a DROP SERIES ...) not yet delivered to every node",
                    r.queued_statements
                )
            });
        for problem in problem.into_iter().chain(catch_up).chain(queued) {
            s.problems.push(Problem {
                node_id: n.node_id.clone(),
                hostname: n.hostname.clone(),
                problem,
            });
        }
    }
    s
}

fn print_table(status: &Status) {
    let rows: Vec<Vec<String>> = status
        .clusters
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                c.version.to_string(),
                c.nodes.to_string(),
                c.alive.to_string(),
                c.dead.to_string(),
                c.behind.to_string(),
                c.failing.to_string(),
                c.last_change.as_ref().map_or("-".into(), change_text),
            ]
        })
        .collect();
    super::print_table(
        &[
            "CLUSTER",
            "VERSION",
            "NODES",
            "ALIVE",
            "DEAD",
            "BEHIND",
            "FAILING",
            "LAST CHANGE",
        ],
        &rows,
    );
    let problems: Vec<Vec<String>> = status
        .clusters
        .iter()
        .flat_map(|c| {
            c.problems.iter().map(|p| {
                vec![
                    c.name.clone(),
                    p.node_id.clone(),
                    p.hostname.clone(),
                    p.problem.clone(),
                ]
            })
        })
        .collect();
    println!();
    if problems.is_empty() {
        println!("every node is alive and in sync");
    } else {
        super::print_table(&["CLUSTER", "NODE", "HOSTNAME", "PROBLEM"], &problems);
    }
}

/// `v42 2026-12-01T11:00:00Z by influx-1 (node-id) (grpc): databases +db2`.
fn change_text(c: &LastChange) -> String {
    format!(
        "v{} {} by {} ({}): {}",
        c.version,
        super::changed_at(c.changed_at_ms),
        super::changed_by(&c.hostname, &c.node_id),
        c.layer,
        c.summary
    )
}
