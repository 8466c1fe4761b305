//! `cflux-agent`: runs beside a stock InfluxDB 1.x server and makes it a
//! cluster node — [`influxd::InfluxdMeta`] is the server as a `MetaClient`,
//! driven by `cflux::Client`; the agent serves its own `/health` and `/metrics`.

pub mod catch_up;
pub mod config;
pub mod frontdoor;
pub mod influxd;
pub mod influxql;
pub mod metadb;
pub mod turns;

use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::agent::catch_up::auto::{CatchUpSettings, CatchUpState};
use crate::agent::config::{AgentConfig, InfluxAuth};
use crate::agent::frontdoor::handoff::Limits;
use crate::agent::frontdoor::replication::{CatalogSync, Replication, ReplicationSettings};
use crate::agent::frontdoor::{FrontDoor, FrontDoorSettings};
use crate::agent::influxd::InfluxdMeta;
use crate::agent::influxql::Influxd;
use crate::client::{Client, NodeSettings};

struct AgentState {
    client: Client<InfluxdMeta>,
    influxd: Influxd,
    frontdoor: Option<Arc<FrontDoor>>,
    /// With `--replicate`: whether the node needs catch-up.
    catch_up: Option<Arc<CatchUpState>>,
    /// With `--replicate`: whether the node has joined.
    replication: Option<Arc<Replication>>,
}

/// Runs the agent until `shutdown` is cancelled.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    // First, before anything starts: a second agent on this host with the
    // default address must fail at once and say what to change.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot serve /health and /metrics on {}: give each agent on this host its own --listen (CFLUX_AGENT_LISTEN)",
                config.listen
            )
        })?;
    let influxd = Influxd::new(&config.influxdb_url, config.auth.clone());
    let turns = turns::Turns::default();
    let meta = InfluxdMeta::new(
        influxd.clone(),
        &config.meta_dir,
        &config.state_dir,
        turns.clone(),
    )
    .await
    .context("cannot set up the InfluxDB adapter")?;
    let settings = NodeSettings {
        cluster: config.cluster.clone(),
        hostname: config.hostname.clone(),
        ips: host_ips(&config.hostname).await,
        http_addr: config.http_addr.clone(),
        version: format!("cflux-agent={}", env!("CARGO_PKG_VERSION")),
        state_dir: config.state_dir.clone(),
        resync_interval: config.resync_interval,
    };
    let client = Client::new(settings, &config.manager, Arc::new(meta))
        .context("cannot start the node client")?;
    let mut replication = None;
    let frontdoor = match &config.frontdoor {
        Some(fd) => {
            let tls = match &fd.tls {
                Some((cert, key)) => Some(crate::http_serve::tls_acceptor(cert, key)?),
                None => None,
            };
            let listener = tokio::net::TcpListener::bind(fd.listen)
                .await
                .with_context(|| format!("cannot listen on {} (--frontdoor-listen)", fd.listen))?;
            let shared_secret = match &config.auth {
                InfluxAuth::SharedSecret { secret, .. } => Some(secret.clone()),
                _ => {
                    tracing::warn!("the front door has no --shared-secret: it forwards credentials as they are, and influxd checks passwords against its own users");
                    None
                }
            };
            if !frontdoor::is_private_upstream(&config.influxdb_url) {
                tracing::warn!(influxdb = %config.influxdb_url, "influxd is not on a loopback address: make sure clients cannot reach it around the front door");
            }
            let has_shared_secret = shared_secret.is_some();
            let mut door = FrontDoor::new(
                FrontDoorSettings {
                    upstream: config.influxdb_url.clone(),
                    shared_secret,
                    tls: tls.is_some(),
                },
                client.observed_catalog(),
            );
            if let Some(r) = &config.replication {
                if !has_shared_secret {
                    tracing::warn!("--replicate without --shared-secret: peers write replicated points without a user, which an auth-enabled influxd refuses");
                }
                let mut own = fd.listen;
                if own.ip().is_unspecified() {
                    own.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                let settings = ReplicationSettings {
                    secret: r.secret.clone(),
                    dir: config.state_dir.join("handoff"),
                    limits: Limits {
                        max_bytes: r.max_size,
                        max_age: r.max_age,
                    },
                    missing_database_wait: r.missing_database_wait,
                    default_consistency: r.default_consistency,
                    own_address: own.to_string(),
                    catalog_wait: r.catalog_wait,
                    turns: turns.clone(),
                    catalog_sync: Some(CatalogSync {
                        push_now: client.push_now(),
                        state: client.sync_state(),
                    }),
                };
                let replicating = door
                    .start_replication(settings, shutdown.clone())
                    .await
                    .context("cannot open the hinted-handoff queues")?;
                client.count_queued_statements_with({
                    let replicating = replicating.clone();
                    move || replicating.queued_statements()
                });
                replication = Some(replicating);
                tracing::info!(max_size = r.max_size, max_age = ?r.max_age, "replicating writes to the cluster's nodes");
            }
            tracing::info!(listen = %fd.listen, tls = tls.is_some(), "front door open");
            Some((Arc::new(door), listener, tls))
        }
        None => None,
    };
    let catch_up = config.replication.as_ref().map(|r| CatchUpSettings {
        check_interval: r.catch_up_check_interval,
        auto: r.auto_catch_up,
        secret: r.secret.clone(),
        checkpoint: config.state_dir.join("catch-up.json"),
    });
    let state = Arc::new(AgentState {
        client,
        influxd,
        frontdoor: frontdoor.as_ref().map(|(door, _, _)| door.clone()),
        catch_up: catch_up.as_ref().map(|_| Arc::default()),
        replication: replication.clone(),
    });
    let app = axum::Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(state.clone());
    tracing::info!(
        cluster = %config.cluster,
        managers = ?config.manager.endpoints,
        influxdb = %config.influxdb_url,
        listen = %config.listen,
        "agent started"
    );
    let server =
        axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let front = async {
        if let Some((door, listener, tls)) = frontdoor {
            door.serve(listener, tls, shutdown.clone()).await;
        }
    };
    let replicating = replication.clone();
    let watch_subscriber = async {
        if let Some(r) = &replication {
            frontdoor::subscriptions::watch_influxd(
                r.subscriptions(),
                state.influxd.clone(),
                shutdown.clone(),
            )
            .await;
        }
    };
    let follow = async {
        if let Some(r) = replication.clone() {
            r.follow(&state.client).await;
        }
    };
    let check = async {
        if let (Some(settings), Some(s), Some(r)) = (catch_up, &state.catch_up, replicating) {
            let influxd = state.influxd.clone();
            catch_up::auto::run(
                settings,
                s.clone(),
                &state.client,
                influxd,
                r,
                shutdown.clone(),
            )
            .await;
        }
    };
    let (served, (), (), (), (), ()) = tokio::join!(
        async { server.await },
        state.client.run(shutdown.clone()),
        front,
        follow,
        check,
        watch_subscriber
    );
    served.context("the health and metrics server failed")?;
    tracing::info!("agent stopped");
    Ok(())
}

/// The host's IPv4 addresses, as the original node reported them.
async fn host_ips(hostname: &str) -> Vec<String> {
    match tokio::net::lookup_host((hostname, 0)).await {
        Ok(addrs) => {
            let mut ips: Vec<String> = addrs
                .filter(|a| a.is_ipv4())
                .map(|a| a.ip().to_string())
                .collect();
            ips.sort();
            ips.dedup();
            ips
        }
        Err(e) => {
            tracing::warn!(%hostname, error = %e, "cannot resolve the host name; reporting no addresses");
            Vec::new()
        }
    }
}

/// 200 with the node's state when it serves its cluster truthfully; 503
/// with the reasons when influxd is down, `meta.db` cannot be read (or is not
/// influxd's), no manager has answered for three heartbeat intervals, the
/// last apply of the cluster's catalog failed, or (with `--replicate`) the
/// node has not joined yet: some alive peer does not queue new writes for
/// it (see `frontdoor::replication::joining`).
async fn health(State(s): State<Arc<AgentState>>) -> impl IntoResponse {
    let up = s.influxd.ping().await;
    let mut problems = s.client.health().problems();
    if !up {
        problems.insert(0, format!("influxd at {} is down", s.influxd.url()));
    }
    let joining = s.replication.as_ref().and_then(|r| r.joining());
    if let Some(why) = &joining {
        problems.push(format!(
            "joining: not every alive peer queues new writes for this node yet ({why})"
        ));
    }
    let mut body = serde_json::json!({
        "status": if problems.is_empty() { "ok" } else { "failing" },
        "cluster": s.client.cluster(),
        "node_id": s.client.node_id(),
        "catalog_version": s.client.metrics().version(),
        "seconds_since_sync": s.client.metrics().seconds_since_sync(),
        "influxdb": if up { "up" } else { "down" },
        "last_apply_error": s.client.meta().last_apply_error(),
        "needs_catch_up": s.catch_up.as_ref().and_then(|c| c.reason()),
        "joined_at_ms": s.replication.as_ref().and_then(|r| r.joined_at_ms()),
    });
    let code = if problems.is_empty() {
        StatusCode::OK
    } else {
        body["reason"] = problems.join("; ").into();
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body))
}

async fn metrics(State(s): State<Arc<AgentState>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        {
            let mut text = s.client.metrics().render() + &s.client.meta().render_metrics();
            if let Some(door) = &s.frontdoor {
                text.push_str(&door.render_metrics());
            }
            if let Some(c) = &s.catch_up {
                text.push_str(&c.render_metrics());
            }
            text
        },
    )
}
