//! `cfluxctl verify`: whether the alive nodes of a cluster hold the same
//! points. It counts, on every node, the field values of each measurement
//! per database, retention policy and time bucket (`SELECT COUNT(*) …
//! GROUP BY time(bucket)`), and compares the counts across nodes: the first
//! step toward anti-entropy. The exit code tells scripts: 0 when every node
//! holds the same counts, [`super::status::NEEDS_ATTENTION`] otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::Serialize;

use super::{ClusterArg, Context};
use crate::agent::catch_up::counts::{count, Counts};
use crate::agent::catch_up::{base_url, Reader};
use crate::agent::config::InfluxAuth;
use crate::agent::influxql::Influxd;
use crate::proto::Node;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub cluster: ClusterArg,
    /// Only this database [default: every database but _internal].
    #[arg(long)]
    pub database: Option<String>,
    /// Width of the time buckets counted (at least 1s).
    #[arg(long, default_value = "1d", value_parser = humantime::parse_duration)]
    pub bucket: Duration,
    #[command(flatten)]
    pub credentials: Credentials,
}

/// The InfluxDB user commands that read (or write) points act as.
#[derive(clap::Args, Debug)]
pub struct Credentials {
    /// The InfluxDB user to act as, with auth on: one that may read every database for verify, write as well for catch-up, an admin for queues.
    #[arg(long, short = 'u', env = "INFLUX_USERNAME")]
    pub username: Option<String>,
    /// That user's password (prefer the environment: flags show in `ps`).
    #[arg(long, short = 'p', env = "INFLUX_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

impl Credentials {
    pub fn auth(&self) -> anyhow::Result<InfluxAuth> {
        Ok(match (&self.username, &self.password) {
            (Some(username), Some(password)) => InfluxAuth::Basic {
                username: username.clone(),
                password: password.clone(),
            },
            (None, None) => InfluxAuth::None,
            _ => bail!("give both --username and --password (or INFLUX_USERNAME and INFLUX_PASSWORD), or neither"),
        })
    }
}

/// The alive nodes of `cluster`.
pub async fn alive_nodes(ctx: &Context, cluster: &str) -> anyhow::Result<Vec<Node>> {
    Ok(ctx
        .manager
        .list_nodes(cluster)
        .await?
        .into_iter()
        .filter(|n| n.alive)
        .collect())
}

/// A node's front door, read with `auth`.
pub fn reader(node: &Node, auth: &InfluxAuth) -> Reader {
    Reader::Influxd(Influxd::new(&base_url(&node.http_addr), auth.clone()))
}

/// Every count of `nodes`, in the same order.
pub async fn count_nodes(
    nodes: &[Node],
    auth: &InfluxAuth,
    database: Option<&str>,
    bucket_seconds: u64,
) -> anyhow::Result<Vec<Counts>> {
    futures::future::try_join_all(nodes.iter().map(|n| async move {
        count(&reader(n, auth), database, bucket_seconds)
            .await
            .with_context(|| format!("counting on node {} ({})", n.node_id, n.http_addr))
    }))
    .await
}

#[derive(Serialize)]
struct Report {
    cluster: String,
    nodes: Vec<String>,
    bucket_seconds: u64,
    /// Every node holds the same counts.
    same: bool,
    /// Measurements compared, over every database and policy.
    measurements: usize,
    /// Field values counted on each node.
    values: BTreeMap<String, u64>,
    differences: Vec<Difference>,
    /// When the nodes differ: the statements that change points (deletions,
    /// `SELECT … INTO`) still queued on them, which the differences may be;
    /// `None` when no node's queues could be read (they need an admin).
    #[serde(skip_serializing_if = "Option::is_none")]
    statements_queued: Option<u64>,
}

/// A measurement whose counts differ between nodes.
#[derive(Serialize)]
struct Difference {
    database: String,
    policy: String,
    measurement: String,
    /// Field values per node, over every bucket.
    values: BTreeMap<String, u64>,
    /// Buckets whose counts differ.
    buckets_differing: usize,
    /// The first of them, RFC 3339.
    first_differing_bucket: String,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let cluster = &args.cluster.name;
    ctx.existing_cluster(cluster).await?;
    let bucket_seconds = args.bucket.as_secs();
    if bucket_seconds == 0 {
        bail!("--bucket must be at least 1s");
    }
    let auth = args.credentials.auth()?;
    let nodes = alive_nodes(ctx, cluster).await?;
    if nodes.len() < 2 {
        bail!(
            "cluster {cluster:?} has {} alive node(s): nothing to compare",
            nodes.len()
        );
    }
    let counts = count_nodes(&nodes, &auth, args.database.as_deref(), bucket_seconds).await?;
    let ids: Vec<String> = nodes.iter().map(|n| n.node_id.clone()).collect();
    let mut report = compare(cluster, &ids, &counts, bucket_seconds);
    if !report.same {
        let queues = super::front_door_queues::ask_all(&nodes, &auth).await;
        let read: Vec<u64> = queues.iter().flatten().map(|q| q.statements()).collect();
        report.statements_queued = (!read.is_empty()).then(|| read.iter().sum());
    }
    ctx.output.print(&report, print_table)?;
    Ok(if report.same {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::status::NEEDS_ATTENTION)
    })
}

/// Compares the nodes' counts, measurement by measurement.
fn compare(cluster: &str, ids: &[String], counts: &[Counts], bucket_seconds: u64) -> Report {
    let buckets: BTreeSet<_> = counts.iter().flat_map(|c| c.keys()).collect();
    // (database, policy, measurement) → per node totals, differing buckets.
    type Key = (String, String, String);
    let mut measured: BTreeMap<Key, (Vec<u64>, BTreeSet<i64>)> = BTreeMap::new();
    for bucket in buckets {
        let key = (
            bucket.database.clone(),
            bucket.policy.clone(),
            bucket.measurement.clone(),
        );
        let entry = measured
            .entry(key)
            .or_insert_with(|| (vec![0; ids.len()], BTreeSet::new()));
        let here: Vec<u64> = counts
            .iter()
            .map(|c| c.get(bucket).copied().unwrap_or(0))
            .collect();
        for (total, n) in entry.0.iter_mut().zip(&here) {
            *total += n;
        }
        if here.iter().any(|n| *n != here[0]) {
            entry.1.insert(bucket.start_ns);
        }
    }
    let per_node = |totals: &[u64]| -> BTreeMap<String, u64> {
        ids.iter().cloned().zip(totals.iter().copied()).collect()
    };
    let mut values = vec![0u64; ids.len()];
    let mut differences = Vec::new();
    for ((database, policy, measurement), (totals, differing)) in &measured {
        for (sum, n) in values.iter_mut().zip(totals) {
            *sum += n;
        }
        if let Some(first) = differing.first() {
            differences.push(Difference {
                database: database.clone(),
                policy: policy.clone(),
                measurement: measurement.clone(),
                values: per_node(totals),
                buckets_differing: differing.len(),
                first_differing_bucket: rfc3339(*first),
            });
        }
    }
    Report {
        cluster: cluster.to_owned(),
        nodes: ids.to_vec(),
        bucket_seconds,
        same: differences.is_empty(),
        measurements: measured.len(),
        values: per_node(&values),
        differences,
        statements_queued: None,
    }
}

fn rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    match u64::try_from(secs) {
        Ok(secs) => {
            humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs))
                .to_string()
        }
        Err(_) => format!("{ns}ns"),
    }
}

fn print_table(report: &Report) {
    if report.same {
        let values = report.values.values().next().copied().unwrap_or(0);
        println!(
            "the {} alive nodes of {:?} hold the same points: {} measurements, {values} field values each",
            report.nodes.len(),
            report.cluster,
            report.measurements
        );
        return;
    }
    let mut header = vec!["DATABASE", "POLICY", "MEASUREMENT"];
    header.extend(report.nodes.iter().map(String::as_str));
    header.extend(["BUCKETS DIFFERING", "FIRST"]);
    let rows: Vec<Vec<String>> = report
        .differences
        .iter()
        .map(|d| {
            let mut row = vec![d.database.clone(), d.policy.clone(), d.measurement.clone()];
            row.extend(
                report
                    .nodes
                    .iter()
                    .map(|n| d.values.get(n).copied().unwrap_or(0).to_string()),
            );
            row.push(d.buckets_differing.to_string());
            row.push(d.first_differing_bucket.clone());
            row
        })
        .collect();
    super::print_table(&header, &rows);
    println!(
        "\n{} of {} measurements differ ({}s buckets; counts are field values)",
        report.differences.len(),
        report.measurements,
        report.bucket_seconds
    );
    if let Some(n) = report.statements_queued.filter(|n| *n > 0) {
        println!(
            "{n} statement(s) that change points (deletions, SELECT INTO) are still queued \
             (cfluxctl queues): the nodes differ by those until they are delivered"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::catch_up::counts::tests::bucket;

    #[test]
    fn equal_counts_are_the_same_and_a_missing_bucket_differs() {
        let a: Counts = [
            (bucket("cpu", "value", 0), 10),
            (bucket("cpu", "value", 86_400_000_000_000), 5),
            (bucket("mem", "free", 0), 3),
        ]
        .into();
        let ids = vec!["a".to_owned(), "b".to_owned()];
        let same = compare("c", &ids, &[a.clone(), a.clone()], 86_400);
        assert!(same.same);
        assert_eq!(same.measurements, 2);
        assert_eq!(same.values["b"], 18);

        let mut b = a.clone();
        b.remove(&bucket("cpu", "value", 86_400_000_000_000));
        let differ = compare("c", &ids, &[a, b], 86_400);
        assert!(!differ.same);
        assert_eq!(differ.differences.len(), 1);
        let d = &differ.differences[0];
        assert_eq!(d.measurement, "cpu");
        assert_eq!((d.values["a"], d.values["b"]), (15, 10));
        assert_eq!(d.buckets_differing, 1);
        assert_eq!(d.first_differing_bucket, "1970-01-02T00:00:00Z");
    }
}
