//! `cfluxctl rollback CLUSTER VERSION`: publishes a kept past version of a
//! cluster's catalog again, as a new version every node applies. It restores
//! definitions, not the points a `DROP` deleted. Asks for confirmation on
//! the terminal unless `--yes`; refuses a stdin that is not a terminal
//! without `--yes`, so a script never rolls back by accident.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::bail;

use crate::client::manager::{ManagerClient, Pushed};

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

pub async fn run(manager: &ManagerClient, args: Args) -> anyhow::Result<()> {
    let current = manager.get_meta(&args.cluster).await?;
    let past = manager.get_version(&args.cluster, args.version).await?;
    println!(
        "cluster {}: version {} -> the catalog of version {}:",
        args.cluster, current.version, args.version
    );
    for line in super::diff::statements(&current, &past)? {
        println!("  {line}");
    }
    println!("Definitions come back; points that a DROP deleted do not.");
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            bail!("stdin is not a terminal: pass --yes to roll back without confirmation");
        }
        if !confirm().await? {
            bail!("rollback cancelled");
        }
    }
    match manager
        .restore_version(&args.cluster, args.version, current.version)
        .await?
    {
        Pushed::Accepted(v) => {
            println!("restored version {} as version {v}", args.version);
            Ok(())
        }
        Pushed::Conflict(now) => bail!(
            "the catalog changed meanwhile (now version {}); nothing restored, run again",
            now.version
        ),
    }
}

/// Asks on the terminal; true for "y" or "yes".
async fn confirm() -> anyhow::Result<bool> {
    tokio::task::spawn_blocking(|| {
        print!("Roll back? [y/N] ");
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        Ok(matches!(
            answer.trim().to_ascii_lowercase().as_str(),
            "y" | "yes"
        ))
    })
    .await?
}
