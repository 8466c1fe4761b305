//! `cfluxctl deregister`: forget a node for good. A node that is alive is
//! refused unless `--force`: its agent would register it again at its next
//! heartbeat.

use anyhow::bail;
use serde::Serialize;

use super::{ClusterArg, Context};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub cluster: ClusterArg,
    /// Remove the node even while it is alive (it comes back unless its agent is stopped).
    #[arg(long)]
    pub force: bool,
    /// The node's ID (see `cfluxctl nodes`).
    pub node_id: String,
}

#[derive(Serialize)]
struct Removed<'a> {
    cluster: &'a str,
    node_id: &'a str,
    was_alive: bool,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let cluster = &args.cluster.name;
    ctx.existing_cluster(cluster).await?;
    let listed = ctx
        .manager
        .list_nodes(cluster)
        .await?
        .into_iter()
        .find(|n| n.node_id == args.node_id);
    let was_alive = listed.as_ref().is_some_and(|n| n.alive);
    if let Some(node) = listed.as_ref().filter(|n| n.alive && !args.force) {
        bail!(
            "node {} ({}) is alive, last heartbeat {}: its agent would register it again within seconds; stop the agent first, or give --force",
            node.node_id,
            node.hostname,
            super::heartbeat_age(crate::clock::now_ms(), node.last_heartbeat_ms)
        );
    }
    // A node not listed is left to the manager to refuse, in its words.
    ctx.manager.deregister(cluster, &args.node_id).await?;
    let removed = Removed {
        cluster,
        node_id: &args.node_id,
        was_alive,
    };
    ctx.output.print(&removed, |r| {
        println!("node {} removed from cluster {}", r.node_id, r.cluster);
        if r.was_alive {
            println!("it was alive: it registers again unless its agent is stopped");
        }
    })
}
