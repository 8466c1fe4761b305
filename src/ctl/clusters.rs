//! `cfluxctl clusters`: every cluster with its catalog version.

use crate::client::manager::ManagerClient;

pub async fn run(manager: &ManagerClient) -> anyhow::Result<()> {
    let rows: Vec<Vec<String>> = manager
        .list_clusters()
        .await?
        .into_iter()
        .map(|c| {
            vec![
                c.name,
                c.version.to_string(),
                c.nodes.to_string(),
                c.alive_nodes.to_string(),
            ]
        })
        .collect();
    super::print_table(&["CLUSTER", "VERSION", "NODES", "ALIVE"], &rows);
    Ok(())
}
