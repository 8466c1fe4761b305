//! `cflux-manager`: the Clusterflux control plane. See `--help`.

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use cflux::manager::config::ManagerArgs;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = ManagerArgs::parse();
    cflux::telemetry::init_tracing(args.log_format);
    let config = args.resolve()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cflux::signals::cancel_on_signal(shutdown.clone()));
    cflux::manager::run(config, listener, shutdown).await?;
    Ok(())
}
