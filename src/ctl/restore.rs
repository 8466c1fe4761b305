//! `cfluxctl restore`: a backup's catalog written as the cluster's next
//! version. Onto a fresh manager it becomes version 1; onto an existing
//! cluster it is pushed against the current version, so every node applies
//! it like any change — after a confirmation, since what the backup lacks
//! is dropped everywhere.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use base64::Engine;
use serde::Serialize;

use super::backup::{BackupFile, FORMAT};
use super::Context;
use crate::client::manager::Pushed;
use crate::influx::catalog::Catalog;
use crate::proto::PushMetaRequest;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The cluster to restore into [default: the backup's].
    #[arg(long, env = "CLUSTER")]
    pub cluster: Option<String>,
    /// Allow restoring into a cluster other than the one the backup was taken of.
    #[arg(long)]
    pub other_cluster: bool,
    /// Replace an existing cluster's catalog without asking.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// A file written by `cfluxctl backup`.
    pub file: PathBuf,
}

#[derive(Serialize)]
struct Restored<'a> {
    cluster: &'a str,
    version: u64,
    backup_version: u64,
    backup_taken_at: &'a str,
    databases_dropped: Vec<String>,
    users_dropped: Vec<String>,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let (backup, bytes, catalog) = read_backup(&args.file)?;
    let cluster = args
        .cluster
        .clone()
        .unwrap_or_else(|| backup.cluster.clone());
    if cluster != backup.cluster && !args.other_cluster {
        bail!(
            "{} is a backup of cluster {:?}, not {cluster:?}; give --other-cluster to restore it there",
            args.file.display(),
            backup.cluster
        );
    }
    crate::names::validate_cluster(&cluster)?;
    let current = ctx.manager.get_meta(&cluster).await?;
    let (databases_dropped, users_dropped) = if current.data.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        let now = Catalog::from_meta_bytes(&current.data)
            .context("the cluster's current catalog does not decode")?;
        (
            missing(now.databases.keys(), &catalog.databases),
            missing(now.users.keys(), &catalog.users),
        )
    };
    if current.version > 0 && !args.yes {
        let what = format!(
            "cluster {cluster:?} is at version {}; restoring the backup of version {} taken {} makes its catalog version {} on every node{}{}",
            current.version,
            backup.version,
            backup.taken_at,
            current.version + 1,
            listed("; drops databases (and their data)", &databases_dropped),
            listed("; drops users", &users_dropped),
        );
        if !confirm(what).await? {
            bail!("not restored");
        }
    }
    let pushed = ctx
        .manager
        .push_meta(PushMetaRequest {
            cluster: cluster.clone(),
            expected_version: current.version,
            data: bytes.into(),
            node_id: String::new(),
            expected_history_id: current.history_id,
        })
        .await?;
    let version = match pushed {
        Pushed::Accepted(v) => v,
        Pushed::Conflict(now) => bail!(
            "cluster {cluster:?} changed while restoring (now version {}); nothing was restored, run the restore again",
            now.version
        ),
    };
    let restored = Restored {
        cluster: &cluster,
        version,
        backup_version: backup.version,
        backup_taken_at: &backup.taken_at,
        databases_dropped,
        users_dropped,
    };
    ctx.output.print(&restored, |r| {
        println!(
            "cluster {} is at version {}: the catalog of version {} taken {}",
            r.cluster, r.version, r.backup_version, r.backup_taken_at
        )
    })
}

/// The backup in `path`, its catalog bytes, and those decoded: anything
/// but a whole, valid backup of this format is refused.
fn read_backup(path: &std::path::Path) -> anyhow::Result<(BackupFile, Vec<u8>, Catalog)> {
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let backup: BackupFile = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a cfluxctl backup", path.display()))?;
    if backup.format != FORMAT {
        bail!(
            "{} has format {:?}; this cfluxctl reads {FORMAT:?}",
            path.display(),
            backup.format
        );
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&backup.catalog_base64)
        .with_context(|| format!("{}: catalog_base64 is not base64", path.display()))?;
    let catalog = Catalog::from_meta_bytes(&bytes)
        .with_context(|| format!("{}: the catalog is not a valid meta.Data", path.display()))?;
    Ok((backup, bytes, catalog))
}

/// The names of `now` that `restored` lacks.
fn missing<'a, V>(
    now: impl Iterator<Item = &'a String>,
    restored: &std::collections::BTreeMap<String, V>,
) -> Vec<String> {
    now.filter(|n| !restored.contains_key(*n))
        .cloned()
        .collect()
}

fn listed(what: &str, names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!("{what} {}", names.join(", "))
    }
}

/// Asks whether to go on with `what` on the terminal; without one, the
/// answer is no (give --yes).
async fn confirm(what: String) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("{what}; no terminal to ask on: give --yes to restore");
    }
    tokio::task::spawn_blocking(move || {
        eprint!("{what}. Go on? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
    })
    .await?
}
