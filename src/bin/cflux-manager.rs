//! `cflux-manager`: the Clusterflux control plane. See `--help`.

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use cflux::manager::config::ManagerArgs;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = ManagerArgs::parse().resolve()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cflux::signals::cancel_on_signal(shutdown.clone()));
    cflux::manager::run(config, listener, shutdown).await
}
