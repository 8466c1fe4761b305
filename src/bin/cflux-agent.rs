//! `cflux-agent`: makes a stock InfluxDB 1.x server a Clusterflux node. See `--help`.

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use cflux::agent::config::AgentArgs;

#[tokio::main]
async fn main() -> ExitCode {
    let args = AgentArgs::parse();
    cflux::telemetry::init_tracing(args.log_format);
    cflux::telemetry::exit_code(run(args).await)
}

async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cflux::signals::cancel_on_signal(shutdown.clone()));
    cflux::agent::run(config, shutdown).await
}
