//! `cfluxctl history CLUSTER`: the versions of a cluster's catalog the
//! manager keeps, newest first — when, who, through which layer, what changed.

use crate::client::manager::ManagerClient;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The cluster whose history to list.
    pub cluster: String,
    /// At most this many versions (0: every kept one).
    #[arg(long, default_value_t = 0)]
    pub limit: u32,
}

pub async fn run(manager: &ManagerClient, args: Args) -> anyhow::Result<()> {
    let changes = manager.list_history(&args.cluster, args.limit).await?;
    if let Some(newest) = changes.first() {
        println!("cluster {} history {}", args.cluster, newest.history_id);
    } else {
        println!("cluster {} has no kept versions", args.cluster);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = changes
        .iter()
        .map(|c| {
            vec![
                c.version.to_string(),
                super::changed_at(c.changed_at_ms),
                super::changed_by(&c.hostname, &c.node_id),
                c.layer.clone(),
                c.size_bytes.to_string(),
                c.summary.clone(),
            ]
        })
        .collect();
    super::print_table(
        &["VERSION", "CHANGED", "BY", "LAYER", "BYTES", "SUMMARY"],
        &rows,
    );
    Ok(())
}
