//! The copy itself: a plan of time windows per database, retention policy
//! and measurement, made from the peer's counts; each window exported from
//! the peer (`SELECT * … GROUP BY *`, chunked) and written to the node as
//! line protocol; a checkpoint after every window, so an interrupted copy
//! resumes by copying again at most the window it was in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::counts::{Counts, MAX_TIME_NS};
use super::line_protocol::{append_series, FieldType, FieldTypes, LineError};
use super::{Reader, Writer};
use crate::agent::influxql::InfluxdError;
use crate::backoff::Backoff;
use crate::influx::influxql::quote_ident;

/// Lines of line protocol per write to the node.
const WRITE_LINES: u64 = 5_000;
/// A write the node does not take now is tried this often in all.
const WRITE_ATTEMPTS: usize = 6;
/// What a checkpoint file says it is.
const CHECKPOINT_FORMAT: &str = "cflux-catch-up/1";

/// Why a catch-up stopped.
#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    #[error("reading from the peer")]
    Read(#[source] InfluxdError),
    #[error("writing {database}.{policy} to the node")]
    Write {
        database: String,
        policy: String,
        #[source]
        source: InfluxdError,
    },
    #[error("{database}.{policy}: cannot write the peer's points back")]
    Line {
        database: String,
        policy: String,
        #[source]
        source: LineError,
    },
    #[error("the checkpoint {}", path.display())]
    Checkpoint {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the checkpoint {} is not a catch-up checkpoint", path.display())]
    CheckpointFormat {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// One measurement of one policy of one database.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Series {
    pub database: String,
    pub policy: String,
    pub measurement: String,
}

/// What to copy: per measurement, the windows that hold points on the
/// peer (start → field values), in time order.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub windows: BTreeMap<Series, BTreeMap<i64, u64>>,
    pub window_ns: i64,
    /// Copy only points at or after this time.
    pub since_ns: Option<i64>,
}

impl Plan {
    /// The plan for the peer's `counts`, counted in buckets of `window`.
    pub fn new(counts: &Counts, window: Duration, since_ns: Option<i64>) -> Plan {
        let window_ns = i64::try_from(window.as_nanos()).unwrap_or(i64::MAX);
        let mut windows: BTreeMap<Series, BTreeMap<i64, u64>> = BTreeMap::new();
        for (bucket, n) in counts {
            let end = bucket.start_ns.saturating_add(window_ns);
            if since_ns.is_some_and(|since| end <= since) {
                continue;
            }
            let series = Series {
                database: bucket.database.clone(),
                policy: bucket.policy.clone(),
                measurement: bucket.measurement.clone(),
            };
            *windows
                .entry(series)
                .or_default()
                .entry(bucket.start_ns)
                .or_default() += n;
        }
        Plan {
            windows,
            window_ns,
            since_ns,
        }
    }

    /// Field values the plan copies.
    pub fn values(&self) -> u64 {
        self.windows.values().flat_map(|w| w.values()).sum()
    }
}

/// Where a copy stands, kept in a file between runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub format: String,
    /// Which copy it belongs to (cluster and node).
    pub copy: String,
    /// Per measurement, the time up to which every window was copied.
    pub copied: Vec<Copied>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Copied {
    #[serde(flatten)]
    pub series: Series,
    /// Every window that starts before this time is copied.
    pub through_ns: i64,
}

impl Checkpoint {
    fn through(&self, series: &Series) -> Option<i64> {
        self.copied
            .iter()
            .find(|c| &c.series == series)
            .map(|c| c.through_ns)
    }

    fn set(&mut self, series: &Series, through_ns: i64) {
        match self.copied.iter_mut().find(|c| &c.series == series) {
            Some(c) => c.through_ns = through_ns,
            None => self.copied.push(Copied {
                series: series.clone(),
                through_ns,
            }),
        }
    }

    /// The checkpoint of `copy` kept in `path`; an empty one when there is
    /// none, or it belongs to another copy.
    pub async fn load(path: &Path, copy: &str) -> Result<Checkpoint, CatchUpError> {
        let fresh = Checkpoint {
            format: CHECKPOINT_FORMAT.to_owned(),
            copy: copy.to_owned(),
            copied: Vec::new(),
        };
        let bytes = match tokio::fs::read(path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(fresh),
            Err(source) => {
                return Err(CatchUpError::Checkpoint {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let kept: Checkpoint =
            serde_json::from_slice(&bytes).map_err(|source| CatchUpError::CheckpointFormat {
                path: path.to_owned(),
                source,
            })?;
        Ok(if kept.format == CHECKPOINT_FORMAT && kept.copy == copy {
            kept
        } else {
            fresh
        })
    }

    /// Writes the checkpoint whole or not at all (a temporary file renamed
    /// over the old one).
    async fn save(&self, path: &Path) -> Result<(), CatchUpError> {
        let failed = |source| CatchUpError::Checkpoint {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(failed)?;
        }
        let tmp = path.with_extension("tmp");
        // Serialising plain strings and integers cannot fail.
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        tokio::fs::write(&tmp, bytes).await.map_err(failed)?;
        tokio::fs::rename(&tmp, path).await.map_err(failed)
    }
}

/// How far a copy is, for progress lines.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Field values of the plan, and of those, copied (before this run too).
    pub values_total: u64,
    pub values_done: u64,
    /// Written by this run: points and field values.
    pub points_written: u64,
    pub values_written: u64,
    /// Measurements of the plan, and of those, finished.
    pub measurements_total: usize,
    pub measurements_done: usize,
    /// Field values a checkpoint said were copied before this run.
    pub values_resumed: u64,
    pub started: Instant,
}

impl Progress {
    /// Points written per second by this run.
    pub fn points_per_second(&self) -> f64 {
        self.points_written as f64 / self.started.elapsed().as_secs_f64().max(1e-3)
    }

    /// The time left at this run's rate; `None` before anything was copied.
    pub fn time_left(&self) -> Option<Duration> {
        let copied = self.values_done.saturating_sub(self.values_resumed);
        if copied == 0 {
            return None;
        }
        let rate = copied as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        let left = self.values_total.saturating_sub(self.values_done) as f64;
        Some(Duration::from_secs_f64(left / rate))
    }
}

/// One window of one measurement: `[from, end)`, and the field values the
/// plan counted there.
#[derive(Clone, Copy, Debug)]
struct Window {
    from: i64,
    end: i64,
    planned: u64,
}

/// One catch-up: from a peer into a node.
pub struct CatchUp {
    pub source: Reader,
    pub target: Writer,
    pub plan: Plan,
    /// Where the checkpoint is kept, and which copy it is.
    pub checkpoint: PathBuf,
    pub copy: String,
}

/// What a finished copy did.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub measurements: usize,
    pub points_written: u64,
    pub values_written: u64,
    /// Copied by an earlier, interrupted run.
    pub values_resumed: u64,
    /// Writes the node's influxd refused (points it cannot hold, such as a
    /// field of another type); they are logged.
    pub writes_refused: u64,
    pub seconds: f64,
}

impl CatchUp {
    /// Copies the plan, calling `progress` after every write, and removes
    /// the checkpoint once everything is copied.
    pub async fn run(&self, mut progress: impl FnMut(&Progress)) -> Result<Summary, CatchUpError> {
        let mut checkpoint = Checkpoint::load(&self.checkpoint, &self.copy).await?;
        let mut state = Progress {
            values_total: self.plan.values(),
            values_done: 0,
            points_written: 0,
            values_written: 0,
            measurements_total: self.plan.windows.len(),
            measurements_done: 0,
            values_resumed: 0,
            started: Instant::now(),
        };
        for (series, windows) in &self.plan.windows {
            let through = checkpoint.through(series).unwrap_or(i64::MIN);
            let resumed: u64 = windows.range(..through).map(|(_, n)| n).sum();
            state.values_done += resumed;
            state.values_resumed += resumed;
        }
        progress(&state);
        let mut refused = 0;
        for (series, windows) in &self.plan.windows {
            let through = checkpoint.through(series).unwrap_or(i64::MIN);
            if windows.range(through..).next().is_none() {
                state.measurements_done += 1;
                continue;
            }
            let types = self.field_types(series).await?;
            for (&start, &values) in windows.range(through..) {
                let end = start.saturating_add(self.plan.window_ns).min(MAX_TIME_NS);
                let from = self.plan.since_ns.map_or(start, |s| s.max(start));
                let window = Window {
                    from,
                    end,
                    planned: values,
                };
                refused += self
                    .copy_window(series, &types, window, &mut state, &mut progress)
                    .await?;
                checkpoint.set(series, start.saturating_add(1));
                checkpoint.save(&self.checkpoint).await?;
            }
            state.measurements_done += 1;
            progress(&state);
        }
        if let Err(source) = tokio::fs::remove_file(&self.checkpoint).await {
            if source.kind() != std::io::ErrorKind::NotFound {
                return Err(CatchUpError::Checkpoint {
                    path: self.checkpoint.clone(),
                    source,
                });
            }
        }
        Ok(Summary {
            measurements: state.measurements_total,
            points_written: state.points_written,
            values_written: state.values_written,
            values_resumed: state.values_resumed,
            writes_refused: refused,
            seconds: state.started.elapsed().as_secs_f64(),
        })
    }

    /// The measurement's field types on the peer (`SHOW FIELD KEYS`). A
    /// field of two types in different shards is written as the first.
    async fn field_types(&self, series: &Series) -> Result<FieldTypes, CatchUpError> {
        let statement = format!(
            "SHOW FIELD KEYS ON {} FROM {}.{}",
            quote_ident(&series.database),
            quote_ident(&series.policy),
            quote_ident(&series.measurement)
        );
        let mut types = FieldTypes::new();
        for s in self
            .source
            .series(&statement)
            .await
            .map_err(CatchUpError::Read)?
        {
            for row in s["values"].as_array().into_iter().flatten() {
                let (Some(name), Some(ty)) =
                    (row[0].as_str(), row[1].as_str().and_then(FieldType::parse))
                else {
                    continue;
                };
                types.entry(name.to_owned()).or_insert(ty);
            }
        }
        Ok(types)
    }

    /// Copies one window of one measurement; returns the writes refused.
    /// Progress counts the plan's values, not what arrives: points written
    /// since the plan was made must not take it past 100 %.
    async fn copy_window(
        &self,
        series: &Series,
        types: &FieldTypes,
        window: Window,
        state: &mut Progress,
        progress: &mut impl FnMut(&Progress),
    ) -> Result<u64, CatchUpError> {
        let Window { from, end, planned } = window;
        let done_before = state.values_done;
        let mut window_values = 0;
        let statement = format!(
            "SELECT * FROM {}.{}.{} WHERE time >= {from} AND time < {end} GROUP BY *",
            quote_ident(&series.database),
            quote_ident(&series.policy),
            quote_ident(&series.measurement)
        );
        let mut chunks = self
            .source
            .read_chunked(&statement)
            .await
            .map_err(CatchUpError::Read)?;
        let mut lines = String::new();
        let (mut points, mut values) = (0u64, 0u64);
        let mut refused = 0;
        loop {
            let chunk = chunks.next().await.map_err(CatchUpError::Read)?;
            let last = chunk.is_none();
            for s in chunk
                .as_ref()
                .and_then(|c| c["results"][0]["series"].as_array())
                .into_iter()
                .flatten()
            {
                let (p, v) =
                    append_series(&mut lines, s, types).map_err(|source| CatchUpError::Line {
                        database: series.database.clone(),
                        policy: series.policy.clone(),
                        source,
                    })?;
                points += p;
                values += v;
            }
            if points >= WRITE_LINES || (last && points > 0) {
                let body = Bytes::from(std::mem::take(&mut lines));
                if !self.write(series, body).await? {
                    refused += 1;
                }
                state.points_written += points;
                state.values_written += values;
                window_values += values;
                state.values_done = done_before + window_values.min(planned);
                (points, values) = (0, 0);
                progress(state);
            }
            if last {
                state.values_done = done_before + planned;
                return Ok(refused);
            }
        }
    }

    /// One write to the node, tried again while it cannot take it now;
    /// `false` when its influxd refused the points for good.
    async fn write(&self, series: &Series, body: Bytes) -> Result<bool, CatchUpError> {
        let mut backoff =
            Backoff::new(Duration::from_millis(200), Duration::from_secs(5)).with_jitter(0.5);
        let mut attempt = 1;
        loop {
            match self
                .target
                .write(&series.database, &series.policy, body.clone())
                .await
            {
                Ok(()) => return Ok(true),
                Err(e) if e.is_client_error() => {
                    tracing::warn!(
                        database = %series.database,
                        policy = %series.policy,
                        measurement = %series.measurement,
                        error = %crate::telemetry::with_causes(&e),
                        "the node refused copied points"
                    );
                    return Ok(false);
                }
                Err(source) if attempt >= WRITE_ATTEMPTS => {
                    return Err(CatchUpError::Write {
                        database: series.database.clone(),
                        policy: series.policy.clone(),
                        source,
                    })
                }
                Err(e) => {
                    tracing::debug!(error = %crate::telemetry::with_causes(&e), "the node did not take a write; trying again");
                    attempt += 1;
                    backoff.wait().await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::catch_up::counts::tests::bucket;

    #[test]
    fn the_plan_holds_the_windows_with_values_from_since() {
        const DAY: i64 = 86_400_000_000_000;
        let counts: Counts = [
            (bucket("cpu", "user", 0), 10),
            (bucket("cpu", "idle", 0), 10),
            (bucket("cpu", "user", 2 * DAY), 4),
            (bucket("mem", "free", DAY), 3),
        ]
        .into();
        let plan = Plan::new(&counts, Duration::from_secs(86_400), None);
        assert_eq!(plan.values(), 27);
        assert_eq!(plan.windows.len(), 2);
        let cpu = plan.windows.keys().next().unwrap().clone();
        assert_eq!(plan.windows[&cpu], [(0, 20), (2 * DAY, 4)].into());
        // From the middle of day 1: day 0 is left out, day 1 kept.
        let plan = Plan::new(&counts, Duration::from_secs(86_400), Some(DAY + DAY / 2));
        assert_eq!(plan.values(), 7);
    }

    #[tokio::test]
    async fn a_checkpoint_is_kept_per_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("c.json");
        let series = Series {
            database: "db".into(),
            policy: "autogen".into(),
            measurement: "cpu".into(),
        };
        let mut c = Checkpoint::load(&path, "a").await.unwrap();
        assert_eq!(c.through(&series), None);
        c.set(&series, 5);
        c.set(&series, 7);
        c.save(&path).await.unwrap();
        assert_eq!(
            Checkpoint::load(&path, "a").await.unwrap().through(&series),
            Some(7)
        );
        // Another copy's checkpoint is not this one's.
        assert_eq!(
            Checkpoint::load(&path, "b").await.unwrap().through(&series),
            None
        );
        std::fs::write(&path, "not json").unwrap();
        assert!(Checkpoint::load(&path, "a").await.is_err());
    }
}
