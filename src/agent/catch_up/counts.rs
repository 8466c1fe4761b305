//! How many points a node holds, counted as InfluxQL counts them: field
//! values per database, retention policy, measurement, field and time
//! bucket (`SELECT COUNT(*) … GROUP BY time(bucket)`). `cfluxctl verify`
//! compares them across nodes; catch-up plans its windows from a peer's.

use std::collections::BTreeMap;

use serde_json::Value;

use super::Reader;
use crate::agent::influxql::InfluxdError;
use crate::influx::influxql::quote_ident;

/// The oldest and newest times InfluxDB stores (its `MinNanoTime` and
/// `MaxNanoTime`): the range every count covers.
pub const MIN_TIME_NS: i64 = i64::MIN + 2;
pub const MAX_TIME_NS: i64 = i64::MAX - 1;

/// One count: a field's values of a measurement in one bucket.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bucket {
    pub database: String,
    pub policy: String,
    pub measurement: String,
    pub field: String,
    pub start_ns: i64,
}

/// Field values per bucket.
pub type Counts = BTreeMap<Bucket, u64>;

/// The databases a node holds but `_internal` (only `only`, when given).
pub async fn databases(reader: &Reader, only: Option<&str>) -> Result<Vec<String>, InfluxdError> {
    let listed = first_column(&reader.series("SHOW DATABASES").await?);
    Ok(listed
        .into_iter()
        .filter(|d| d != "_internal" && only.is_none_or(|o| o == d))
        .collect())
}

/// The retention policies of `database`.
pub async fn policies(reader: &Reader, database: &str) -> Result<Vec<String>, InfluxdError> {
    let statement = format!("SHOW RETENTION POLICIES ON {}", quote_ident(database));
    Ok(first_column(&reader.series(&statement).await?))
}

/// Every count of one node, in buckets of `bucket_seconds`.
pub async fn count(
    reader: &Reader,
    only: Option<&str>,
    bucket_seconds: u64,
) -> Result<Counts, InfluxdError> {
    let mut out = BTreeMap::new();
    for database in databases(reader, only).await? {
        for policy in policies(reader, &database).await? {
            let statement = format!(
                "SELECT COUNT(*) FROM {}.{}./.*/ WHERE time >= {MIN_TIME_NS} AND time <= {MAX_TIME_NS} GROUP BY time({bucket_seconds}s) fill(none)",
                quote_ident(&database),
                quote_ident(&policy),
            );
            for series in reader.series(&statement).await? {
                collect(&mut out, &database, &policy, &series).map_err(|answer| {
                    InfluxdError::Refused {
                        statement: statement.clone(),
                        answer,
                    }
                })?;
            }
        }
    }
    Ok(out)
}

/// The first column of every row of every series.
pub fn first_column(series: &[Value]) -> Vec<String> {
    series
        .iter()
        .filter_map(|s| s["values"].as_array())
        .flatten()
        .filter_map(|row| row[0].as_str().map(str::to_owned))
        .collect()
}

/// The counts of one measurement's series (`time`, `count_<field>`…).
fn collect(out: &mut Counts, database: &str, policy: &str, series: &Value) -> Result<(), String> {
    let measurement = series["name"].as_str().ok_or("a series without a name")?;
    let columns: Vec<&str> = series["columns"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str())
        .collect();
    for row in series["values"].as_array().into_iter().flatten() {
        let start_ns = row[0].as_i64().ok_or("a bucket without a time")?;
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

/// The field values of `counts`.
pub fn total(counts: &Counts) -> u64 {
    counts.values().sum()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn bucket(measurement: &str, field: &str, start_ns: i64) -> Bucket {
        Bucket {
            database: "db".into(),
            policy: "autogen".into(),
            measurement: measurement.into(),
            field: field.into(),
            start_ns,
        }
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
        assert_eq!(total(&out), 10);
    }
}
