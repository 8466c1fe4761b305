//! The control plane: `cflux-manager`.
//!
//! - [`plane`]: the semantics (registration, liveness, catalogs), transport-free.
//! - [`grpc`] and [`legacy`]: the two faces of the plane.
//! - [`server`]: one port for gRPC, legacy HTTP and `/metrics`; TLS; shutdown.
//! - [`console`]: the operator's web page at `/`, live through server-sent events.
//! - [`store`]: where state lives (embedded redb or etcd); [`hub`]: change
//!   fan-out; [`encoded`]: `WatchMeta` sending each snapshot encoded once;
//!   [`roster`]: `WatchNodes`, one follower per watched node list.
//! - [`summary`]: the one-line description of a change the history keeps.
//! - [`config`]: flags, environment and TOML.

pub mod config;
pub mod console;
pub mod encoded;
pub mod grpc;
pub mod hub;
pub mod legacy;
pub mod metrics;
pub mod plane;
pub mod roster;
pub mod server;
pub mod store;
pub mod summary;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::http_serve::TlsError;
use crate::manager::config::{ManagerConfig, StoreConfig};
use crate::manager::hub::Hub;
use crate::manager::legacy::LegacyOptions;
use crate::manager::plane::{ControlPlane, Limits};
use crate::manager::server::ServeOptions;
use crate::manager::store::{CatalogFeed, Store, StoreError, StoreOptions};

/// Why the manager cannot start or serve.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("cannot open the store in {}", dir.display())]
    OpenStore {
        dir: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error("cannot connect to etcd")]
    ConnectEtcd(#[source] StoreError),
    #[error("cannot set up TLS")]
    Tls(#[from] TlsError),
    #[error("cannot describe the gRPC services for reflection")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("the listener has no local address")]
    Listener(#[source] std::io::Error),
}

/// Opens the configured store; an etcd store announces other managers'
/// catalogs to `feed`.
pub async fn open_store(
    config: &ManagerConfig,
    feed: Arc<dyn CatalogFeed>,
) -> Result<Arc<dyn Store>, ManagerError> {
    let opts = StoreOptions {
        node_ttl: config.node_ttl,
        advertise: config.advertise.clone(),
        history: config.history,
        etcd_compaction_interval: match &config.store {
            StoreConfig::Etcd {
                compaction_interval,
                ..
            } => *compaction_interval,
            StoreConfig::Embedded { .. } => Duration::ZERO,
        },
    };
    Ok(match &config.store {
        StoreConfig::Embedded { data_dir } => {
            tracing::info!(data_dir = %data_dir.display(), "embedded store");
            store::embedded::EmbeddedStore::open(data_dir, opts)
                .await
                .map_err(|source| ManagerError::OpenStore {
                    dir: data_dir.clone(),
                    source,
                })?
        }
        StoreConfig::Etcd { endpoints, .. } => {
            tracing::info!(?endpoints, "etcd store");
            store::etcd::EtcdStore::connect(endpoints, opts, feed)
                .await
                .map_err(ManagerError::ConnectEtcd)?
        }
    })
}

/// Serves on `listener` until `shutdown` is cancelled, then ends watches and
/// long polls, lets in-flight requests finish and closes the store.
pub async fn run(
    config: ManagerConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ManagerError> {
    let hub = Hub::new();
    let store = open_store(&config, hub.clone()).await?;
    let limits = Limits {
        node_ttl: config.node_ttl,
        heartbeat_interval: config.heartbeat_interval,
        max_catalog_bytes: config.max_message_size,
        store_timeout: Duration::from_secs(5),
    };
    let plane = Arc::new(ControlPlane::new(
        store,
        hub,
        limits,
        Arc::new(metrics::Metrics::new()),
    ));
    let tls = match &config.tls {
        Some((cert, key)) => Some(crate::http_serve::tls_acceptor(cert, key)?),
        None => None,
    };
    let opts = ServeOptions {
        legacy: LegacyOptions {
            poll_timeout: config.legacy_poll_timeout,
            timeout_status: config.legacy_timeout_status,
        },
        token: config.token.clone(),
        max_message_bytes: config.max_message_size,
    };
    let (reporter, health) = tonic_health::server::health_reporter();
    let app = server::app(plane.clone(), &opts, health, shutdown.clone())?;
    let health_task = tokio::spawn(server::track_health(
        plane.clone(),
        reporter,
        shutdown.clone(),
    ));
    tracing::info!(
        listen = %listener.local_addr().map_err(ManagerError::Listener)?,
        tls = tls.is_some(),
        auth = config.token.is_some(),
        "manager serving gRPC, legacy HTTP and /metrics"
    );
    let ending = {
        let plane = plane.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            tracing::info!("shutting down: ending watches and long polls");
            plane.end_watches();
        })
    };
    crate::http_serve::serve(listener, app, tls, shutdown, config.shutdown_grace).await;
    let _ = ending.await;
    let _ = health_task.await;
    plane.close().await;
    tracing::info!("manager stopped");
    Ok(())
}
