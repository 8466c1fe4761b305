//! `cflux-agent`: makes a stock InfluxDB 1.x server a Clusterflux node. See `--help`.

use clap::Parser;
use tokio_util::sync::CancellationToken;

use cflux::agent::config::AgentArgs;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = AgentArgs::parse().resolve()?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cflux::signals::cancel_on_signal(shutdown.clone()));
    cflux::agent::run(config, shutdown).await
}
