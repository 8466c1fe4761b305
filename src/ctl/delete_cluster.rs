//! `cfluxctl delete-cluster CLUSTER`: removes a cluster on purpose — its
//! catalog, its kept history and its dead nodes' records, on every manager.
//! Refused while any node is alive (its agent would re-create the cluster at
//! once: stop the agents first). Asks the operator to type the cluster's
//! name unless `--yes`; without a terminal, `--yes` is required.

use anyhow::bail;
use serde::Serialize;

use super::Context;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The cluster to delete.
    pub cluster: String,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

#[derive(Serialize)]
struct Deleted {
    cluster: String,
    /// The catalog version the cluster had (0: never written).
    version: u64,
    removed_nodes: u32,
    removed_versions: u32,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let cluster = &args.cluster;
    let info = ctx.existing_cluster(cluster).await?;
    if info.alive_nodes > 0 {
        let alive: Vec<String> = ctx
            .manager
            .list_nodes(cluster)
            .await?
            .into_iter()
            .filter(|n| n.alive)
            .map(|n| format!("{} ({})", n.node_id, n.hostname))
            .collect();
        bail!(
            "cluster {cluster:?} has {} alive node(s): {}; stop their agents and wait for their TTL to run out",
            alive.len(),
            alive.join(", ")
        );
    }
    if !args.yes {
        let prompt = format!(
            "Deleting cluster {cluster:?} removes its catalog (version {}), its kept history and {} dead node record(s), on every manager. A node of it that comes back re-creates it from its own catalog.\nType the cluster's name to delete it:",
            info.version, info.nodes
        );
        if super::ask(prompt, "delete a cluster").await? != *cluster {
            bail!("not deleted: the name typed is not {cluster:?}");
        }
    }
    // The manager checks again: a node may have come alive meanwhile.
    let removed = ctx.manager.delete_cluster(cluster).await?;
    let deleted = Deleted {
        cluster: args.cluster,
        version: removed.version,
        removed_nodes: removed.removed_nodes,
        removed_versions: removed.removed_versions,
    };
    ctx.output.print(&deleted, |d| {
        println!(
            "cluster {} deleted: catalog version {}, {} kept version(s), {} node record(s)",
            d.cluster, d.version, d.removed_versions, d.removed_nodes
        )
    })
}
