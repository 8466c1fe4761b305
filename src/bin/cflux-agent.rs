//! `cflux-agent`: makes a stock InfluxDB 1.x server a Clusterflux node. See `--help`.

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use cflux::agent::config::AgentArgs;

#[tokio::main]
async fn main() -> ExitCode {
    let args = AgentArgs::parse();
    cflux::telemetry::init_tracing(args.log_format);
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line with its causes, in the log's format; no backtrace.
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cflux::signals::cancel_on_signal(shutdown.clone()));
    cflux::agent::run(config, shutdown).await
}
