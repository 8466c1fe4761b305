//! `cfluxctl catch-up NODE`: fills a node from a healthy peer while both
//! keep serving (see [`crate::agent::catch_up`]), once the node has joined
//! (with the replication secret, it asks every alive peer first). Progress goes to stderr,
//! the summary to stdout. Exit codes: 0 everything copied; 1 failed (the
//! checkpoint stays: run it again to resume); [`super::status::NEEDS_ATTENTION`]
//! copied, but the node refused some points (logged); 130 interrupted
//! (Ctrl-C; the checkpoint stays).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::verify::{alive_nodes, count_nodes, reader, Credentials};
use super::{ClusterArg, Context};
use crate::agent::catch_up::copy::{CatchUp, Plan, Progress, Summary};
use crate::agent::catch_up::counts::total;
use crate::agent::catch_up::{base_url, SignedNode, Writer};
use crate::agent::frontdoor::replication::PeerAnswer;
use crate::agent::influxql::Influxd;
use crate::proto::Node;

/// The exit code of an interrupted copy (128 + SIGINT, as shells report it).
const INTERRUPTED: u8 = 130;
/// What a checkpoint's file name escapes of a cluster name or node ID.
const FILE_NAME: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');
/// How often a progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How long a copy waits for the node to join before it gives up.
const JOIN_WAIT: Duration = Duration::from_secs(30);

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The node to fill: its node ID or host name.
    pub node: String,
    #[command(flatten)]
    pub cluster: ClusterArg,
    /// The peer to copy from [default: the alive peer holding the most field values; the earliest registered of equals].
    #[arg(long)]
    pub from: Option<String>,
    /// Only this database [default: every database but _internal].
    #[arg(long)]
    pub database: Option<String>,
    /// Only points at or after this time: RFC 3339 (2026-11-01T00:00:00Z) or a duration ago (14d).
    #[arg(long, value_parser = parse_since)]
    pub since: Option<i64>,
    /// Width of the time windows copied and checkpointed one at a time (at least 1s).
    #[arg(long, default_value = "1d", value_parser = humantime::parse_duration)]
    pub window: Duration,
    /// Where the checkpoint of an interrupted copy is kept [default: $XDG_CACHE_HOME/cflux, else ~/.cache/cflux].
    #[arg(long, env = "CFLUX_CATCH_UP_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The cluster's replication secret: points go to the node's influxd only, not replicated again to every peer.
    #[arg(long, env = "CFLUX_REPLICATION_SECRET_FILE", value_name = "FILE")]
    pub replication_secret_file: Option<PathBuf>,
    #[command(flatten)]
    pub credentials: Credentials,
}

/// `--since`: an RFC 3339 time or a duration before now, in nanoseconds.
fn parse_since(s: &str) -> Result<i64, String> {
    let when = match humantime::parse_rfc3339_weak(s) {
        Ok(t) => t,
        Err(_) => {
            let ago = humantime::parse_duration(s)
                .map_err(|_| format!("{s:?} is neither an RFC 3339 time nor a duration"))?;
            SystemTime::now()
                .checked_sub(ago)
                .ok_or_else(|| format!("{s:?} reaches before 1970"))?
        }
    };
    let ns = when
        .duration_since(UNIX_EPOCH)
        .map_err(|_| format!("{s:?} is before 1970"))?
        .as_nanos();
    i64::try_from(ns).map_err(|_| format!("{s:?} is too far ahead"))
}

/// Waits (up to [`JOIN_WAIT`]) until every alive peer of `target` queues
/// new writes for it (it has joined; see
/// `agent::frontdoor::replication::joining`): a copy made earlier could
/// miss what a peer acknowledges until then. A peer without the signed
/// queues endpoint (not replicating, or an older agent) cannot tell, and
/// is not waited for.
async fn wait_joined(nodes: &[Node], target: &Node, secret: &[u8]) -> anyhow::Result<()> {
    let peers: Vec<&Node> = nodes
        .iter()
        .filter(|n| n.node_id != target.node_id && !n.http_addr.is_empty())
        .collect();
    let until = Instant::now() + JOIN_WAIT;
    let mut told = false;
    loop {
        let answers = futures::future::join_all(
            peers
                .iter()
                .map(|p| PeerAnswer::of(&p.http_addr, secret, &target.node_id)),
        )
        .await;
        let missing: Vec<String> = peers
            .iter()
            .zip(answers)
            .filter_map(|(p, answer)| answer.missing(&p.node_id))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= until {
            bail!(
                "{} has not joined within {JOIN_WAIT:?}: {}; a copy now could miss the writes those peers acknowledge until they queue for it (its /health says when it has joined)",
                target.node_id,
                missing.join("; ")
            );
        }
        if !std::mem::replace(&mut told, true) {
            eprintln!(
                "waiting until every alive peer queues new writes for {}: {}",
                target.node_id,
                missing.join("; ")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The node named by ID or host name.
fn find<'a>(nodes: &'a [Node], name: &str, what: &str) -> anyhow::Result<&'a Node> {
    if let Some(n) = nodes.iter().find(|n| n.node_id == name) {
        return Ok(n);
    }
    let by_host: Vec<&Node> = nodes.iter().filter(|n| n.hostname == name).collect();
    match by_host[..] {
        [n] => Ok(n),
        [] => bail!("{what} {name:?} is not an alive node of the cluster"),
        _ => bail!("{what} {name:?}: several alive nodes have that host name; give a node ID"),
    }
}

/// Where the checkpoint of copying into `node` of `cluster` is kept.
fn checkpoint_path(
    state_dir: Option<PathBuf>,
    cluster: &str,
    node: &str,
) -> anyhow::Result<PathBuf> {
    let dir = match state_dir {
        Some(d) => d,
        None => match (std::env::var_os("XDG_CACHE_HOME"), std::env::var_os("HOME")) {
            (Some(cache), _) if !cache.is_empty() => PathBuf::from(cache).join("cflux"),
            (_, Some(home)) if !home.is_empty() => PathBuf::from(home).join(".cache").join("cflux"),
            _ => bail!("no $XDG_CACHE_HOME or $HOME: give --state-dir"),
        },
    };
    let name = format!(
        "{}-{}.json",
        utf8_percent_encode(cluster, FILE_NAME),
        utf8_percent_encode(node, FILE_NAME)
    );
    Ok(dir.join("catch-up").join(name))
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let cluster = &args.cluster.name;
    ctx.existing_cluster(cluster).await?;
    let window_seconds = args.window.as_secs();
    if window_seconds == 0 {
        bail!("--window must be at least 1s");
    }
    let auth = args.credentials.auth()?;
    let nodes = alive_nodes(ctx, cluster).await?;
    let target = find(&nodes, &args.node, "node")?.clone();
    let candidates: Vec<Node> = match &args.from {
        Some(from) => vec![find(&nodes, from, "--from")?.clone()],
        None => nodes
            .iter()
            .filter(|n| n.node_id != target.node_id)
            .cloned()
            .collect(),
    };
    if candidates.iter().any(|n| n.node_id == target.node_id) {
        bail!("--from names the node itself");
    }
    if candidates.is_empty() {
        bail!("cluster {cluster:?} has no other alive node to copy from");
    }
    let secret = match &args.replication_secret_file {
        Some(file) => {
            let s = std::fs::read(file).with_context(|| {
                format!("cannot read --replication-secret-file {}", file.display())
            })?;
            Some(s.trim_ascii().to_vec()).filter(|s| !s.is_empty())
        }
        None => None,
    };
    match &secret {
        Some(secret) => wait_joined(&nodes, &target, secret).await?,
        None => eprintln!("without --replication-secret-file the peers cannot be asked whether they queue new writes for {}: make sure it has joined (its /health says so) before copying", target.node_id),
    }
    let counts = count_nodes(&candidates, &auth, args.database.as_deref(), window_seconds).await?;
    let (peer, counts) = candidates
        .iter()
        .zip(&counts)
        .max_by(|(a, ca), (b, cb)| {
            total(ca)
                .cmp(&total(cb))
                .then(b.registered_at_ms.cmp(&a.registered_at_ms))
        })
        .context("no peer to copy from")?;
    let writer = match secret {
        Some(secret) => Writer::Signed(SignedNode::new(
            &target.http_addr,
            secret,
            args.credentials.username.clone(),
        )),
        None => {
            eprintln!("without --replication-secret-file the points go through the node's /write: a replicating front door sends them to every peer again (stored once, but it costs)");
            Writer::Influxd {
                influxd: Influxd::new(&base_url(&target.http_addr), auth.clone()),
                admin: None,
            }
        }
    };
    let checkpoint = checkpoint_path(args.state_dir, cluster, &target.node_id)?;
    let catch_up = CatchUp {
        source: reader(peer, &auth),
        target: writer,
        plan: Plan::new(counts, args.window, args.since),
        checkpoint: checkpoint.clone(),
        copy: format!("{cluster}/{}", target.node_id),
    };
    eprintln!(
        "copying from {} ({}) into {} ({}): {} measurements, {} field values, checkpoint {}",
        peer.node_id,
        peer.http_addr,
        target.node_id,
        target.http_addr,
        catch_up.plan.windows.len(),
        catch_up.plan.values(),
        checkpoint.display()
    );
    let mut last_line = Instant::now();
    let mut first = true;
    let copy = catch_up.run(|p| {
        if first {
            first = false;
            if p.values_resumed > 0 {
                eprintln!(
                    "resuming from the checkpoint: {} of {} field values already copied",
                    p.values_resumed, p.values_total
                );
            }
        } else if last_line.elapsed() >= PROGRESS_EVERY {
            last_line = Instant::now();
            eprintln!("{}", progress_line(p));
        }
    });
    let summary = tokio::select! {
        done = copy => done.with_context(|| format!("catch-up stopped; run it again to resume from {}", checkpoint.display()))?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted: run the same command again to resume from {}", checkpoint.display());
            return Ok(ExitCode::from(INTERRUPTED));
        }
    };
    ctx.output.print(&summary, print_summary)?;
    Ok(if summary.writes_refused > 0 {
        ExitCode::from(super::status::NEEDS_ATTENTION)
    } else {
        ExitCode::SUCCESS
    })
}

fn progress_line(p: &Progress) -> String {
    let percent = if p.values_total == 0 {
        100.0
    } else {
        p.values_done as f64 * 100.0 / p.values_total as f64
    };
    let left = p
        .time_left()
        .map_or_else(|| "?".to_owned(), |d| format!("{}s", d.as_secs()));
    format!(
        "{percent:5.1}%  {}/{} field values  {} points  {:.0} points/s  {left} left  {}/{} measurements",
        p.values_done,
        p.values_total,
        p.points_written,
        p.points_per_second(),
        p.measurements_done,
        p.measurements_total
    )
}

fn print_summary(s: &Summary) {
    println!(
        "copied {} points ({} field values) of {} measurements in {:.1}s ({:.0} points/s){}{}",
        s.points_written,
        s.values_written,
        s.measurements,
        s.seconds,
        s.points_written as f64 / s.seconds.max(1e-3),
        if s.values_resumed > 0 {
            format!("; {} field values were copied before", s.values_resumed)
        } else {
            String::new()
        },
        if s.writes_refused > 0 {
            format!(
                "; the node refused {} writes (see the log)",
                s.writes_refused
            )
        } else {
            String::new()
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_a_time_or_a_duration_ago() {
        assert_eq!(
            parse_since("2023-11-14T00:00:00Z"),
            Ok(1_699_920_000_000_000_000)
        );
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        let day_ago = parse_since("1d").unwrap();
        assert!((now - day_ago - 86_400_000_000_000).abs() < 60_000_000_000);
        assert!(parse_since("yesterday").is_err());
    }

    #[test]
    fn checkpoints_are_named_by_cluster_and_node() {
        let p = checkpoint_path(Some("/s".into()), "prod/x y", "n-1").unwrap();
        assert_eq!(p, PathBuf::from("/s/catch-up/prod%2Fx%20y-n-1.json"));
    }
}
