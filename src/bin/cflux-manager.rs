//! `cflux-manager`: the Clusterflux control plane. See `--help`.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use cflux::manager::config::ManagerArgs;

#[tokio::main]
async fn main() -> ExitCode {
    let args = ManagerArgs::parse();
    cflux::telemetry::init_tracing(args.log_format);
    cflux::telemetry::exit_code(run(args).await)
}

async fn run(args: ManagerArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", config.listen))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cflux::signals::cancel_on_signal(shutdown.clone()));
    cflux::manager::run(config, listener, shutdown).await?;
    Ok(())
}
