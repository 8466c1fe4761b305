//! `cfluxctl queues`: each alive node's hinted-handoff queues — per peer,
//! the writes, points and bytes waiting, the oldest one's age, and what was
//! delivered, dropped and failed since that node's agent started. Asked of
//! every alive node at the `http_addr` it registered (its front door), at
//! [`QUEUES_PATH`]; with auth on, as an admin user. Its own command rather
//! than columns of `nodes`: the queues are per pair of nodes, and asking
//! every front door is slower than a manager's listing.

use std::collections::BTreeMap;
use std::process::ExitCode;

use serde::Serialize;

use super::front_door_queues::ask_all;
use super::verify::{alive_nodes, Credentials};
use super::{ClusterArg, Context};
use crate::agent::frontdoor::replication::Queue;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub cluster: ClusterArg,
    /// An admin user, with auth on.
    #[command(flatten)]
    pub credentials: Credentials,
}

/// One alive node's answer.
#[derive(Serialize)]
struct NodeQueues {
    node_id: String,
    hostname: String,
    http_addr: String,
    /// `None` when the node could not be asked (see `error`).
    queues: Option<Vec<Queue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let cluster = &args.cluster.name;
    ctx.existing_cluster(cluster).await?;
    let auth = args.credentials.auth()?;
    let nodes = alive_nodes(ctx, cluster).await?;
    let answers = ask_all(&nodes, &auth).await;
    let report: Vec<NodeQueues> = nodes
        .into_iter()
        .zip(answers)
        .map(|(n, answer)| {
            let (queues, error) = match answer {
                Ok(q) => (Some(q.queues), None),
                Err(e) => (None, Some(format!("{e:#}"))),
            };
            NodeQueues {
                node_id: n.node_id,
                hostname: n.hostname,
                http_addr: n.http_addr,
                queues,
                error,
            }
        })
        .collect();
    ctx.output.print(&report, |r| print_table(r))?;
    Ok(if report.iter().all(|n| n.error.is_none()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::status::NEEDS_ATTENTION)
    })
}

fn print_table(report: &[NodeQueues]) {
    let header = [
        "NODE",
        "HOSTNAME",
        "PEER",
        "WRITES",
        "STATEMENTS",
        "POINTS",
        "BYTES",
        "OLDEST",
        "DELIVERED",
        "DROPPED",
        "ERRORS",
    ];
    let mut rows = Vec::new();
    for n in report {
        let node = || vec![n.node_id.clone(), n.hostname.clone()];
        match (&n.queues, &n.error) {
            (_, Some(e)) => {
                let mut row = node();
                row.push(format!("error: {e}"));
                rows.push(row);
            }
            (Some(queues), None) if queues.is_empty() => {
                let mut row = node();
                row.push("(no peers)".to_owned());
                rows.push(row);
            }
            (Some(queues), None) => {
                for q in queues {
                    let mut row = node();
                    let peer = if q.member {
                        q.peer.clone()
                    } else {
                        format!("{} (not a member)", q.peer)
                    };
                    row.extend([
                        peer,
                        q.writes.to_string(),
                        q.statements.to_string(),
                        q.points.to_string(),
                        q.bytes.to_string(),
                        q.oldest_age_seconds
                            .map_or("-".to_owned(), |s| format!("{s:.1}s")),
                        q.delivered_points.to_string(),
                        dropped(&q.dropped_points),
                        q.errors.to_string(),
                    ]);
                    rows.push(row);
                }
            }
            (None, None) => {}
        }
    }
    super::print_table(&header, &rows);
}

/// `0`, or the total with its reasons: `12 (full 10, expired 2)`.
fn dropped(by_reason: &BTreeMap<String, u64>) -> String {
    let total: u64 = by_reason.values().sum();
    if total == 0 {
        return "0".to_owned();
    }
    let reasons: Vec<String> = by_reason
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    format!("{total} ({})", reasons.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_show_their_reasons() {
        assert_eq!(dropped(&BTreeMap::new()), "0");
        let by_reason = [("expired".to_owned(), 2), ("full".to_owned(), 10)].into();
        assert_eq!(dropped(&by_reason), "12 (expired 2, full 10)");
    }
}
