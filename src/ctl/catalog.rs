//! `cfluxctl catalog`: a cluster's catalog in words (password hashes are
//! never printed, in either output).

use serde::Serialize;

use super::{ClusterArg, Context};
use crate::influx::catalog::Catalog;
use crate::influx::influxql::format_duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub cluster: ClusterArg,
}

#[derive(Serialize)]
struct Shown {
    cluster: String,
    version: u64,
    history_id: String,
    /// The catalog without the users' hashes.
    catalog: serde_json::Value,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let cluster = &args.cluster.name;
    ctx.existing_cluster(cluster).await?;
    let snapshot = ctx.manager.get_meta(cluster).await?;
    let catalog = if snapshot.data.is_empty() {
        Catalog::default()
    } else {
        Catalog::from_meta_bytes(&snapshot.data)?
    };
    let mut json = serde_json::to_value(&catalog)?;
    if let Some(users) = json.get_mut("users").and_then(|u| u.as_object_mut()) {
        for user in users.values_mut().filter_map(|u| u.as_object_mut()) {
            user.remove("hash");
        }
    }
    let shown = Shown {
        cluster: cluster.clone(),
        version: snapshot.version,
        history_id: snapshot.history_id,
        catalog: json,
    };
    ctx.output
        .print(&shown, |s| print_catalog(&s.cluster, s.version, &catalog))
}

fn print_catalog(cluster: &str, version: u64, catalog: &Catalog) {
    println!("cluster {cluster} version {version}");
    for db in catalog.databases.values() {
        println!(
            "database {} (default policy {})",
            db.name, db.default_retention_policy
        );
        for rp in db.retention_policies.values() {
            println!(
                "  policy {} duration {} shard duration {} replication {}",
                rp.name,
                format_duration(rp.duration_ns),
                format_duration(rp.shard_group_duration_ns),
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
}
