//! `cflux-agent`: makes a stock InfluxDB 1.x server a Clusterflux node. See `--help`.

use clap::Parser;
use tokio_util::sync::CancellationToken;

use cflux::agent::config::AgentArgs;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    cflux::telemetry::init_tracing();
    let config = AgentArgs::parse().resolve()?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cflux::signals::cancel_on_signal(shutdown.clone()));
    cflux::agent::run(config, shutdown).await
}
