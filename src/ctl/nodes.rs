//! `cfluxctl nodes`: who is in the cluster, and who is alive.

use crate::client::manager::ManagerClient;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only this cluster's nodes.
    #[arg(long, default_value = "")]
    pub cluster: String,
}

pub async fn run(manager: &ManagerClient, args: Args) -> anyhow::Result<()> {
    let now = crate::clock::now_ms();
    let rows: Vec<Vec<String>> = manager
        .list_nodes(&args.cluster)
        .await?
        .into_iter()
        .map(|n| {
            vec![
                n.cluster,
                n.node_id,
                n.hostname,
                n.http_addr,
                if n.alive { "alive" } else { "dead" }.into(),
                format!(
                    "{:.1}s ago",
                    now.saturating_sub(n.last_heartbeat_ms) as f64 / 1000.0
                ),
            ]
        })
        .collect();
    super::print_table(
        &["CLUSTER", "NODE", "HOSTNAME", "HTTP", "STATE", "HEARTBEAT"],
        &rows,
    );
    Ok(())
}
