//! `cfluxctl rollback CLUSTER VERSION`: publishes a kept past version of a
//! cluster's catalog again, as a new version every node applies. It restores
//! definitions, not the points a `DROP` deleted. Asks for confirmation on
//! the terminal unless `--yes`; refuses a stdin that is not a terminal
//! without `--yes`, so a script never rolls back by accident.

use anyhow::bail;
use serde::Serialize;

use super::{Context, Output};
use crate::client::manager::Pushed;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The cluster.
    pub cluster: String,
    /// The kept version whose catalog to publish again (see `cfluxctl history`).
    pub version: u64,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

#[derive(Serialize)]
struct RolledBack {
    cluster: String,
    /// The version whose catalog was published again.
    restored_version: u64,
    /// The version it replaced.
    previous_version: u64,
    /// The new version: the restored catalog.
    version: u64,
    /// What the nodes run to get there (as `cfluxctl diff` shows it).
    statements: Vec<String>,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    ctx.existing_cluster(&args.cluster).await?;
    let current = ctx.manager.get_meta(&args.cluster).await?;
    let past = ctx.manager.get_version(&args.cluster, args.version).await?;
    let statements = super::diff::statements(&current, &past)?;
    // The preview goes where people read it: stdout for the table, stderr
    // beside the prompt when stdout is one JSON document for a script.
    let preview: Option<fn(&str)> = match (ctx.output, args.yes) {
        (Output::Table, _) => Some(|line: &str| println!("{line}")),
        (Output::Json, false) => Some(|line: &str| eprintln!("{line}")),
        (Output::Json, true) => None,
    };
    if let Some(preview) = preview {
        preview(&format!(
            "cluster {}: version {} -> the catalog of version {}:",
            args.cluster, current.version, args.version
        ));
        for line in &statements {
            preview(&format!("  {line}"));
        }
        preview("Definitions come back; points that a DROP deleted do not.");
    }
    if !args.yes {
        let answer = super::ask("Roll back? [y/N]".to_owned(), "roll back").await?;
        if !matches!(answer.to_ascii_lowercase().as_str(), "y" | "yes") {
            bail!("rollback cancelled");
        }
    }
    match ctx
        .manager
        .restore_version(&args.cluster, args.version, current.version)
        .await?
    {
        Pushed::Accepted(version) => {
            let done = RolledBack {
                cluster: args.cluster,
                restored_version: args.version,
                previous_version: current.version,
                version,
                statements,
            };
            ctx.output.print(&done, |d| {
                println!(
                    "restored version {} as version {}",
                    d.restored_version, d.version
                )
            })
        }
        Pushed::Conflict(now) => bail!(
            "the catalog changed meanwhile (now version {}); nothing restored, run again",
            now.version
        ),
    }
}
