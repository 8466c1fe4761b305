//! `cfluxctl`: the operator's command line. One file per command; every
//! command speaks to the managers through the same [`ManagerClient`] (and so
//! the same retry layer and failover) as the nodes.

mod catalog;
mod clusters;
mod deregister;
mod diff;
mod history;
mod nodes;
mod rollback;
mod watch;

use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::client::manager::{ManagerClient, ManagerSettings, TransportKind};
use crate::client::retry::RetrySettings;

/// Command line of `cfluxctl`.
#[derive(Parser, Debug)]
#[command(
    name = "cfluxctl",
    version,
    about = "Inspect and operate a Clusterflux cluster."
)]
pub struct Ctl {
    /// Manager URL; a comma-separated list fails over between managers.
    #[arg(
        long,
        env = "CFLUX_ENDPOINT",
        default_value = "http://localhost:8000",
        global = true
    )]
    pub endpoint: String,
    /// Bearer token for the managers.
    #[arg(long, env = "CFLUX_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List nodes (all clusters, or one with --cluster), dead ones included.
    Nodes(nodes::Args),
    /// List clusters with their catalog version and node counts.
    Clusters,
    /// Show a cluster's catalog: databases, policies, queries, subscriptions, users.
    Catalog(catalog::Args),
    /// Follow a cluster's catalog versions as they change (Ctrl-C stops).
    Watch(watch::Args),
    /// Remove a node from a cluster (a decommissioned server).
    Deregister(deregister::Args),
    /// List the kept versions of a cluster's catalog: when, who, what changed.
    History(history::Args),
    /// Show the InfluxQL that turns one kept version into another.
    Diff(diff::Args),
    /// Publish a kept past version of a cluster's catalog again.
    Rollback(rollback::Args),
}

impl Ctl {
    /// Runs the command, printing to stdout.
    pub async fn run(self) -> anyhow::Result<()> {
        let manager = ManagerClient::new(&ManagerSettings {
            endpoints: self
                .endpoint
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            transport: TransportKind::Grpc,
            token: self.token,
            timeout: Duration::from_secs(5),
            retry: RetrySettings::default(),
        })?;
        match self.command {
            Command::Nodes(a) => nodes::run(&manager, a).await,
            Command::Clusters => clusters::run(&manager).await,
            Command::Catalog(a) => catalog::run(&manager, a).await,
            Command::Watch(a) => watch::run(&manager, a).await,
            Command::Deregister(a) => deregister::run(&manager, a).await,
            Command::History(a) => history::run(&manager, a).await,
            Command::Diff(a) => diff::run(&manager, a).await,
            Command::Rollback(a) => rollback::run(&manager, a).await,
        }
    }
}

/// Prints rows as left-aligned columns under a header.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}
