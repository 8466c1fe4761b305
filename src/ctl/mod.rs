//! `cfluxctl`: the operator's command line. One file per command; every
//! command speaks to the managers through the same [`ManagerClient`] (and so
//! the same retry layer and failover) as the nodes, and prints through
//! [`Output`]: a table for people, or one JSON document for scripts.

mod backup;
mod catalog;
mod catch_up;
mod clusters;
mod delete_cluster;
mod deregister;
mod diff;
mod front_door_queues;
mod history;
mod nodes;
mod queues;
mod restore;
mod rollback;
mod status;
mod verify;
mod watch;

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::client::manager::{ManagerClient, ManagerSettings, TransportKind};
use crate::client::retry::RetrySettings;
use crate::proto::ClusterInfo;

/// Command line of `cfluxctl`.
#[derive(Parser, Debug)]
#[command(
    name = "cfluxctl",
    version,
    about = "Inspect and operate a Clusterflux cluster."
)]
pub struct Ctl {
    /// Manager URL (http:// or https://); a comma-separated list fails over between managers.
    #[arg(
        long,
        env = "CFLUX_ENDPOINT",
        default_value = "http://localhost:8000",
        global = true
    )]
    pub endpoint: String,
    /// Bearer token for the managers (prefer --token-file: flags show in `ps`).
    #[arg(long, env = "CFLUX_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the managers' bearer token (its trailing newline is ignored).
    #[arg(
        long,
        visible_alias = "cflux-token-file",
        env = "CFLUX_TOKEN_FILE",
        global = true,
        value_name = "FILE"
    )]
    pub token_file: Option<PathBuf>,
    /// PEM file of the CA that https:// managers' certificates are checked against [default: the system's roots].
    #[arg(
        long,
        visible_alias = "cflux-ca",
        env = "CFLUX_CA",
        global = true,
        value_name = "FILE"
    )]
    pub ca: Option<PathBuf>,
    /// How to print: a table for people, or one JSON document for scripts.
    #[arg(
        long,
        short = 'o',
        value_enum,
        default_value_t = Output::Table,
        global = true
    )]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List nodes (all clusters, or one with --cluster), dead ones included, with their catalog version and lag.
    Nodes(nodes::Args),
    /// One screen on every cluster (or one): version, nodes alive/dead/behind/failing, last change; exit code 3 when a node needs attention.
    Status(status::Args),
    /// List clusters with their catalog version and node counts.
    Clusters,
    /// Show a cluster's catalog: databases, policies, queries, subscriptions, users.
    Catalog(catalog::Args),
    /// Follow a cluster's catalog versions as they change (Ctrl-C stops).
    Watch(watch::Args),
    /// Remove a node from a cluster (a decommissioned server).
    Deregister(deregister::Args),
    /// Save a cluster's catalog to one self-describing file.
    Backup(backup::Args),
    /// Write a backup's catalog as the cluster's next version (onto a fresh manager or an existing cluster).
    Restore(restore::Args),
    /// List the kept versions of a cluster's catalog: when, who, what changed.
    History(history::Args),
    /// Show the InfluxQL that turns one kept version into another.
    Diff(diff::Args),
    /// Publish a kept past version of a cluster's catalog again.
    Rollback(rollback::Args),
    /// Remove a cluster whose nodes are all dead, with its catalog and history.
    DeleteCluster(delete_cluster::Args),
    /// Compare the points the alive nodes of a cluster hold (field values per database, policy, measurement and time bucket); exit code 3 when they differ.
    Verify(verify::Args),
    /// Each alive node's hinted-handoff queues per peer (writes, points, bytes, oldest age, delivered, dropped, errors); exit code 3 when a node cannot be asked.
    Queues(queues::Args),
    /// Fill a node from a healthy peer (a new node of a cluster with history, or one back after its peers' queues dropped writes), resumable; exit code 3 when the node refused some points.
    CatchUp(catch_up::Args),
}

/// What a command prints with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

impl Output {
    /// Prints `value` as one JSON document, or as `table` prints it.
    fn print<T: Serialize>(self, value: &T, table: impl FnOnce(&T)) -> anyhow::Result<()> {
        match self {
            Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
            Output::Table => table(value),
        }
        Ok(())
    }
}

/// `--cluster`, as the agent reads it (`CLUSTER`).
#[derive(clap::Args, Debug)]
pub struct ClusterArg {
    /// The cluster.
    #[arg(long = "cluster", env = "CLUSTER", default_value = "default")]
    pub name: String,
}

/// What every command works with.
pub struct Context {
    pub manager: ManagerClient,
    pub output: Output,
}

impl Context {
    /// The cluster `name` as the manager lists it; an error naming the
    /// clusters that do exist when it is not among them.
    pub async fn existing_cluster(&self, name: &str) -> anyhow::Result<ClusterInfo> {
        let clusters = self.manager.list_clusters().await?;
        if let Some(found) = clusters.iter().find(|c| c.name == name) {
            return Ok(found.clone());
        }
        let known = if clusters.is_empty() {
            "no clusters yet".to_owned()
        } else {
            let names: Vec<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
            format!("clusters: {}", names.join(", "))
        };
        bail!("cluster {name:?} does not exist; {known}")
    }
}

impl Ctl {
    /// Runs the command, printing to stdout; the exit code is a failure
    /// only for `status` when a node needs attention.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let token = crate::config_file::token(
            self.token,
            self.token_file.as_deref(),
            "--token",
            "--token-file",
        )?;
        let manager = ManagerClient::new(&ManagerSettings {
            endpoints: self
                .endpoint
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            transport: TransportKind::Grpc,
            token,
            ca_file: self.ca,
            timeout: Duration::from_secs(5),
            retry: RetrySettings::default(),
        })?;
        let ctx = Context {
            manager,
            output: self.output,
        };
        match self.command {
            Command::Status(a) => return status::run(&ctx, a).await,
            Command::Verify(a) => return verify::run(&ctx, a).await,
            Command::Queues(a) => return queues::run(&ctx, a).await,
            Command::CatchUp(a) => return catch_up::run(&ctx, a).await,
            Command::Nodes(a) => nodes::run(&ctx, a).await,
            Command::Clusters => clusters::run(&ctx).await,
            Command::Catalog(a) => catalog::run(&ctx, a).await,
            Command::Watch(a) => watch::run(&ctx, a).await,
            Command::Deregister(a) => deregister::run(&ctx, a).await,
            Command::Backup(a) => backup::run(&ctx, a).await,
            Command::Restore(a) => restore::run(&ctx, a).await,
            Command::History(a) => history::run(&ctx, a).await,
            Command::Diff(a) => diff::run(&ctx, a).await,
            Command::Rollback(a) => rollback::run(&ctx, a).await,
            Command::DeleteCluster(a) => delete_cluster::run(&ctx, a).await,
        }?;
        Ok(ExitCode::SUCCESS)
    }
}

/// The operator's answer to `prompt`, asked on the terminal (on stderr, so
/// stdout stays the command's output). Without a terminal on stdin, an
/// error saying to give `--yes`, so a script never goes on by accident.
async fn ask(prompt: String, action: &'static str) -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        bail!("stdin is not a terminal: pass --yes to {action} without confirmation");
    }
    tokio::task::spawn_blocking(move || {
        eprint!("{prompt} ");
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        Ok(answer.trim().to_owned())
    })
    .await?
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

/// When a catalog change was made, as RFC 3339 in seconds.
fn changed_at(ms: u64) -> String {
    let when = std::time::UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(when).to_string()
}

/// Who made a catalog change: `influx-1 (node-id)`, the ID alone for an
/// unregistered node, `-` for an operator's tool.
fn changed_by(hostname: &str, node_id: &str) -> String {
    match (hostname, node_id) {
        ("", "") => "-".to_owned(),
        ("", id) => id.to_owned(),
        (host, id) => format!("{host} ({id})"),
    }
}

/// How long ago a heartbeat was, in words: `1.5s ago`.
fn heartbeat_age(now_ms: u64, heartbeat_ms: u64) -> String {
    format!(
        "{:.1}s ago",
        now_ms.saturating_sub(heartbeat_ms) as f64 / 1000.0
    )
}
