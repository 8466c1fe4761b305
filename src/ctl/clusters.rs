//! `cfluxctl clusters`: every cluster with its catalog version.

use serde::Serialize;

use super::Context;

#[derive(Serialize)]
struct Cluster {
    name: String,
    version: u64,
    nodes: u32,
    alive_nodes: u32,
}

pub async fn run(ctx: &Context) -> anyhow::Result<()> {
    let clusters: Vec<Cluster> = ctx
        .manager
        .list_clusters()
        .await?
        .into_iter()
        .map(|c| Cluster {
            name: c.name,
            version: c.version,
            nodes: c.nodes,
            alive_nodes: c.alive_nodes,
        })
        .collect();
    ctx.output.print(&clusters, |clusters| {
        let rows: Vec<Vec<String>> = clusters
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    c.version.to_string(),
                    c.nodes.to_string(),
                    c.alive_nodes.to_string(),
                ]
            })
            .collect();
        super::print_table(&["CLUSTER", "VERSION", "NODES", "ALIVE"], &rows);
    })
}
