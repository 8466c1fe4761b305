//! `cfluxctl diff CLUSTER V1 V2`: what turns one kept version of a cluster's
//! catalog into another, as the InfluxQL statements a node would run
//! (passwords redacted).

use serde::Serialize;

use super::Context;
use crate::influx::catalog::Catalog;
use crate::influx::influxql::quote_ident;
use crate::influx::{diff, Change};
use crate::proto::MetaSnapshot;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The cluster.
    pub cluster: String,
    /// The version to start from.
    pub from: u64,
    /// The version to arrive at.
    pub to: u64,
}

#[derive(Serialize)]
struct Diff {
    cluster: String,
    from: u64,
    to: u64,
    /// One statement (or `--` note) a line, as the table prints them.
    statements: Vec<String>,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    ctx.existing_cluster(&args.cluster).await?;
    let from = ctx.manager.get_version(&args.cluster, args.from).await?;
    let to = ctx.manager.get_version(&args.cluster, args.to).await?;
    let diff = Diff {
        statements: statements(&from, &to)?,
        cluster: args.cluster,
        from: args.from,
        to: args.to,
    };
    ctx.output.print(&diff, |d| {
        for line in &d.statements {
            println!("{line}");
        }
    })
}

/// The statements from one snapshot's catalog to another's, one per line;
/// notes InfluxQL cannot carry out as `--` comments.
pub(super) fn statements(from: &MetaSnapshot, to: &MetaSnapshot) -> anyhow::Result<Vec<String>> {
    let (from, to) = (catalog(from)?, catalog(to)?);
    let lines: Vec<String> = diff(&from, &to)
        .iter()
        .map(|s| match (s.redacted(), &s.change) {
            (Some(q), _) => format!("{q};"),
            (None, Change::PasswordHashChanged { user }) => format!(
                "-- the password hash of user {} changes (InfluxQL cannot set a hash)",
                quote_ident(user)
            ),
            (None, other) => format!("-- {other:?}"),
        })
        .collect();
    Ok(if lines.is_empty() {
        vec!["-- no change".to_owned()]
    } else {
        lines
    })
}

fn catalog(s: &MetaSnapshot) -> anyhow::Result<Catalog> {
    Catalog::from_meta_bytes(&s.data).map_err(|e| {
        anyhow::Error::new(e).context(format!("version {} does not decode", s.version))
    })
}
