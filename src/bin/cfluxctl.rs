//! `cfluxctl`: the operator's command line. See `--help`.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    cflux::ctl::Ctl::parse().run().await
}
