//! `cfluxctl catalog`: a cluster's catalog in words (password hashes are
//! never printed).

use crate::client::manager::ManagerClient;
use crate::influx::catalog::Catalog;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The cluster whose catalog to show.
    #[arg(long, default_value = "default")]
    pub cluster: String,
}

pub async fn run(manager: &ManagerClient, args: Args) -> anyhow::Result<()> {
    let snapshot = manager.get_meta(&args.cluster).await?;
    println!("cluster {} version {}", args.cluster, snapshot.version);
    let catalog = if snapshot.data.is_empty() {
        Catalog::default()
    } else {
        Catalog::from_meta_bytes(&snapshot.data)?
    };
    for db in catalog.databases.values() {
        println!(
            "database {} (default policy {})",
            db.name, db.default_retention_policy
        );
        for rp in db.retention_policies.values() {
            println!(
                "  policy {} duration {} shard duration {} replication {}",
                rp.name,
                crate::influx::influxql::format_duration(rp.duration_ns),
                crate::influx::influxql::format_duration(rp.shard_group_duration_ns),
                rp.replica_n
            );
            for sub in rp.subscriptions.values() {
                println!(
                    "    subscription {} {} {}",
                    sub.name,
                    sub.mode,
                    sub.destinations.join(", ")
                );
            }
        }
        for cq in db.continuous_queries.values() {
            println!("  continuous query {}: {}", cq.name, cq.query);
        }
    }
    for user in catalog.users.values() {
        let privileges: Vec<String> = user
            .privileges
            .iter()
            .map(|(db, p)| format!("{db}:{p:?}"))
            .collect();
        println!(
            "user {}{} {}",
            user.name,
            if user.admin { " (admin)" } else { "" },
            privileges.join(" ")
        );
    }
    Ok(())
}
