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
use crate::agent::config::InfluxAuth;
use crate::agent::influxql::Influxd;
use crate::influx::influxql::quote_ident;

/// The oldest and newest times InfluxDB stores (its `MinNanoTime` and
/// `MaxNanoTime`): the range every count covers.
const MIN_TIME_NS: i64 = i64::MIN + 2;
const MAX_TIME_NS: i64 = i64::MAX - 1;

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
    /// A user that may read every database compared (with auth on).
    #[arg(long, short = 'u', env = "INFLUX_USERNAME")]
    pub username: Option<String>,
    /// That user's password (prefer the environment: flags show in `ps`).
    #[arg(long, short = 'p', env = "INFLUX_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

/// One count: a field's values of a measurement in one bucket.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Bucket {
    database: String,
    policy: String,
    measurement: String,
    field: String,
    start_ns: i64,
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
    let auth = match (args.username, args.password) {
        (Some(username), Some(password)) => InfluxAuth::Basic { username, password },
        (None, None) => InfluxAuth::None,
        _ => bail!("give both --username and --password (or INFLUX_USERNAME and INFLUX_PASSWORD), or neither"),
    };
    let nodes: Vec<_> = ctx
        .manager
        .list_nodes(cluster)
        .await?
        .into_iter()
        .filter(|n| n.alive)
        .collect();
    if nodes.len() < 2 {
        bail!(
            "cluster {cluster:?} has {} alive node(s): nothing to compare",
            nodes.len()
        );
    }
    let counts = futures::future::try_join_all(nodes.iter().map(|n| {
        let influxd = Influxd::new(&base_url(&n.http_addr), auth.clone());
        let database = args.database.clone();
        async move {
            count(&influxd, database.as_deref(), bucket_seconds)
                .await
                .with_context(|| format!("counting on node {} ({})", n.node_id, n.http_addr))
        }
    }))
    .await?;
    let ids: Vec<String> = nodes.iter().map(|n| n.node_id.clone()).collect();
    let report = compare(cluster, &ids, &counts, bucket_seconds);
    ctx.output.print(&report, print_table)?;
    Ok(if report.same {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::status::NEEDS_ATTENTION)
    })
}

/// A node's `http_addr` as a URL (it may be given with its scheme).
fn base_url(http_addr: &str) -> String {
    if http_addr.contains("://") {
        http_addr.to_owned()
    } else {
        format!("http://{http_addr}")
    }
}

/// Every count of one node.
async fn count(
    influxd: &Influxd,
    only: Option<&str>,
    bucket_seconds: u64,
) -> anyhow::Result<BTreeMap<Bucket, u64>> {
    let mut out = BTreeMap::new();
    let databases: Vec<String> = influxd
        .databases(None)
        .await?
        .into_iter()
        .filter(|d| d != "_internal" && only.is_none_or(|o| o == d))
        .collect();
    for database in databases {
        let policies = influxd
            .read(&format!(
                "SHOW RETENTION POLICIES ON {}",
                quote_ident(&database)
            ))
            .await?;
        for policy in first_column(&policies) {
            let statement = format!(
                "SELECT COUNT(*) FROM {}.{}./.*/ WHERE time >= {MIN_TIME_NS} AND time <= {MAX_TIME_NS} GROUP BY time({bucket_seconds}s) fill(none)",
                quote_ident(&database),
                quote_ident(&policy),
            );
            let answer = influxd.read(&statement).await?;
            for series in all_series(&answer) {
                collect(&mut out, &database, &policy, series)?;
            }
        }
    }
    Ok(out)
}

/// The series of the first statement's result.
fn all_series(answer: &serde_json::Value) -> impl Iterator<Item = &serde_json::Value> {
    answer["results"][0]["series"]
        .as_array()
        .into_iter()
        .flatten()
}

/// The first column of every row of every series.
fn first_column(answer: &serde_json::Value) -> Vec<String> {
    all_series(answer)
        .filter_map(|s| s["values"].as_array())
        .flatten()
        .filter_map(|row| row[0].as_str().map(str::to_owned))
        .collect()
}

/// The counts of one measurement's series (`time`, `count_<field>`…).
fn collect(
    out: &mut BTreeMap<Bucket, u64>,
    database: &str,
    policy: &str,
    series: &serde_json::Value,
) -> anyhow::Result<()> {
    let measurement = series["name"].as_str().context("a series without a name")?;
    let columns: Vec<&str> = series["columns"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str())
        .collect();
    for row in series["values"].as_array().into_iter().flatten() {
        let start_ns = row[0].as_i64().context("a bucket without a time")?;
        for (i, column) in columns.iter().enumerate().skip(1) {
            let n = row[i].as_u64().unwrap_or(0);
            if n == 0 {
                continue;
            }
            let field = column.strip_prefix("count_").unwrap_or(column);
            out.insert(
                Bucket {
                    database: database.to_owned(),
                    policy: policy.to_owned(),
                    measurement: measurement.to_owned(),
                    field: field.to_owned(),
                    start_ns,
                },
                n,
            );
        }
    }
    Ok(())
}

/// Compares the nodes' counts, measurement by measurement.
fn compare(
    cluster: &str,
    ids: &[String],
    counts: &[BTreeMap<Bucket, u64>],
    bucket_seconds: u64,
) -> Report {
    let buckets: BTreeSet<&Bucket> = counts.iter().flat_map(|c| c.keys()).collect();
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(measurement: &str, field: &str, start_ns: i64) -> Bucket {
        Bucket {
            database: "db".into(),
            policy: "autogen".into(),
            measurement: measurement.into(),
            field: field.into(),
            start_ns,
        }
    }

    #[test]
    fn equal_counts_are_the_same_and_a_missing_bucket_differs() {
        let a: BTreeMap<Bucket, u64> = [
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

    #[test]
    fn a_series_answer_is_counted_per_field_and_bucket() {
        let series = serde_json::json!({
            "name": "cpu",
            "columns": ["time", "count_user", "count_idle"],
            "values": [[0, 4, 4], [60_000_000_000i64, 2, 0]]
        });
        let mut out = BTreeMap::new();
        collect(&mut out, "db", "autogen", &series).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(out[&bucket("cpu", "user", 60_000_000_000)], 2);
        assert!(!out.contains_key(&bucket("cpu", "idle", 60_000_000_000)));
    }
}
