//! `cfluxctl nodes`: who is in the cluster, and who is alive.

use serde::Serialize;

use super::Context;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only this cluster's nodes [default: every cluster's].
    #[arg(long, env = "CLUSTER")]
    pub cluster: Option<String>,
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
        .map(|n| Node {
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
                ]
            })
            .collect();
        super::print_table(
            &["CLUSTER", "NODE", "HOSTNAME", "HTTP", "STATE", "HEARTBEAT"],
            &rows,
        );
    })
}
