//! `cfluxctl history CLUSTER`: the versions of a cluster's catalog the
//! manager keeps, newest first — when, who, through which layer, what changed.

use serde::Serialize;

use super::Context;
use crate::proto::CatalogChange;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The cluster whose history to list.
    pub cluster: String,
    /// At most this many versions (0: every kept one).
    #[arg(long, default_value_t = 0)]
    pub limit: u32,
}

#[derive(Serialize)]
struct History {
    cluster: String,
    /// Empty when no version is kept.
    history_id: String,
    versions: Vec<Version>,
}

#[derive(Serialize)]
struct Version {
    version: u64,
    changed_at: String,
    changed_at_ms: u64,
    node_id: String,
    hostname: String,
    layer: String,
    size_bytes: u64,
    summary: String,
    /// The version whose catalog a rollback published again; 0 otherwise.
    restored_from: u64,
}

impl From<CatalogChange> for Version {
    fn from(c: CatalogChange) -> Self {
        Version {
            version: c.version,
            changed_at: super::changed_at(c.changed_at_ms),
            changed_at_ms: c.changed_at_ms,
            node_id: c.node_id,
            hostname: c.hostname,
            layer: c.layer,
            size_bytes: c.size_bytes,
            summary: c.summary,
            restored_from: c.restored_from,
        }
    }
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    ctx.existing_cluster(&args.cluster).await?;
    let changes = ctx.manager.list_history(&args.cluster, args.limit).await?;
    let history = History {
        cluster: args.cluster,
        history_id: changes
            .first()
            .map(|c| c.history_id.clone())
            .unwrap_or_default(),
        versions: changes.into_iter().map(Version::from).collect(),
    };
    ctx.output.print(&history, print_table)
}

fn print_table(h: &History) {
    if h.versions.is_empty() {
        println!("cluster {} has no kept versions", h.cluster);
        return;
    }
    println!("cluster {} history {}", h.cluster, h.history_id);
    let rows: Vec<Vec<String>> = h
        .versions
        .iter()
        .map(|v| {
            vec![
                v.version.to_string(),
                v.changed_at.clone(),
                super::changed_by(&v.hostname, &v.node_id),
                v.layer.clone(),
                v.size_bytes.to_string(),
                v.summary.clone(),
            ]
        })
        .collect();
    super::print_table(
        &["VERSION", "CHANGED", "BY", "LAYER", "BYTES", "SUMMARY"],
        &rows,
    );
}
