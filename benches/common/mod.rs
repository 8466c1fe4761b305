//! Pieces the benchmarks share besides the test support (the processes,
//! `tests/support`): the runtime, the machine's figures for the header,
//! percentiles and how figures are written.
//!
//! Each benchmark includes it with `mod common;` (cargo does not take
//! subdirectories of `benches/` for benchmark targets); not every benchmark
//! uses every piece.

#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use cflux::manager::store::{CasOutcome, ChangeNote, Store};
use cflux::proto::clusterflux_client::ClusterfluxClient;
use cflux::proto::{self, push_meta_response};
use tokio::task::JoinSet;
use tonic::transport::Channel;

/// Runs `bench` on a multi-threaded tokio runtime.
pub fn run(bench: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench)
}

// ---------------------------------------------------------------------------
// The machine.

/// CPUs available to this process (`nproc`); 0 when unknown.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(0, |n| n.get())
}

/// The 1, 5 and 15 minute load averages from `/proc/loadavg`.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

// ---------------------------------------------------------------------------
// Throughput.

/// Runs one worker per state in `states` for `window`, each repeating `op`
/// on its state (which `op` hands back); operations per second over all
/// workers, until the last one stopped.
pub async fn rate<S, F, Fut>(window: Duration, states: Vec<S>, op: F) -> anyhow::Result<f64>
where
    S: Send + 'static,
    F: Fn(S) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<S>> + Send,
{
    let start = Instant::now();
    let deadline = start + window;
    let mut set = JoinSet::new();
    for mut state in states {
        let op = op.clone();
        set.spawn(async move {
            let mut ops = 0u64;
            while Instant::now() < deadline {
                state = op(state).await?;
                ops += 1;
            }
            anyhow::Ok((ops, Instant::now()))
        });
    }
    let (mut ops, mut end) = (0, start);
    while let Some(joined) = set.join_next().await {
        let (n, stopped) = joined??;
        ops += n;
        end = end.max(stopped);
    }
    Ok(ops as f64 / end.duration_since(start).as_secs_f64())
}

/// Accepted compare-and-swaps per second of `data` straight on `store` for
/// `window`: `clients` workers, each on its own cluster `{prefix}-{i}`.
pub async fn store_pushes(
    store: Arc<dyn Store>,
    window: Duration,
    prefix: &str,
    clients: usize,
    data: Bytes,
) -> anyhow::Result<f64> {
    let states = (0..clients).map(|i| (format!("{prefix}-{i}"), 0)).collect();
    rate(window, states, move |(cluster, version)| {
        let (store, data) = (store.clone(), data.clone());
        async move {
            match store
                .cas_meta(&cluster, version, "", data, ChangeNote::default())
                .await?
            {
                CasOutcome::Accepted(v) => Ok((cluster, v)),
                CasOutcome::Conflict(s) => bail!("store CAS conflicted at {}", s.version),
            }
        }
    })
    .await
}

// ---------------------------------------------------------------------------
// Figures.

/// The `p` quantile (0 to 1, nearest rank) of `samples`; `None` when empty.
pub fn percentile(samples: &[Duration], p: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Milliseconds with `decimals` decimals, `–` for no figure.
pub fn ms(d: Option<Duration>, decimals: usize) -> String {
    d.map_or("–".into(), |d| {
        format!("{:.*} ms", decimals, d.as_secs_f64() * 1e3)
    })
}

/// Whole microseconds, `–` for no figure.
pub fn us(d: Option<Duration>) -> String {
    d.map_or("–".into(), |d| format!("{:.0} µs", d.as_secs_f64() * 1e6))
}

/// KiB as MiB with one decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// One compare-and-swap push that must be accepted; returns the new version.
pub async fn push(
    client: &mut ClusterfluxClient<Channel>,
    cluster: &str,
    expected: u64,
    data: Bytes,
) -> anyhow::Result<u64> {
    let answer = client
        .push_meta(proto::PushMetaRequest {
            cluster: cluster.to_owned(),
            expected_version: expected,
            data,
            ..Default::default()
        })
        .await?
        .into_inner();
    match answer.result {
        Some(push_meta_response::Result::AcceptedVersion(v)) => Ok(v),
        Some(push_meta_response::Result::Conflict(s)) => {
            bail!(
                "push to {cluster} at {expected} conflicted with version {}",
                s.version
            )
        }
        None => bail!("push to {cluster}: empty answer"),
    }
}
