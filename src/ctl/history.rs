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
            let when = std::time::UNIX_EPOCH + std::time::Duration::from_millis(c.changed_at_ms);
            let by = match (c.hostname.as_str(), c.node_id.as_str()) {
                ("", "") => "-".to_owned(),
                ("", id) => id.to_owned(),
                (host, id) => format!("{host} ({id})"),
            };
            vec![
                c.version.to_string(),
                humantime::format_rfc3339_seconds(when).to_string(),
                by,
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
