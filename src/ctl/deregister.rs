//! `cfluxctl deregister`: forget a node for good.

use crate::client::manager::ManagerClient;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The node's cluster.
    #[arg(long, default_value = "default")]
    pub cluster: String,
    /// The node's ID (see `cfluxctl nodes`).
    pub node_id: String,
}

pub async fn run(manager: &ManagerClient, args: Args) -> anyhow::Result<()> {
    manager.deregister(&args.cluster, &args.node_id).await?;
    println!(
        "node {} removed from cluster {}",
        args.node_id, args.cluster
    );
    Ok(())
}
