//! `cfluxctl watch`: follow a cluster's catalog versions live.

use futures::StreamExt;

use crate::client::manager::ManagerClient;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The cluster to follow.
    #[arg(long, default_value = "default")]
    pub cluster: String,
}

pub async fn run(manager: &ManagerClient, args: Args) -> anyhow::Result<()> {
    let mut stream = manager.watch_meta(&args.cluster, 0).await?;
    while let Some(snapshot) = stream.next().await {
        let s = snapshot?;
        println!(
            "{} version {} ({} bytes)",
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
            s.version,
            s.data.len()
        );
    }
    Ok(())
}
