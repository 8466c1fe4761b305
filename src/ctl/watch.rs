//! `cfluxctl watch`: follow a cluster's catalog versions live. With
//! `--output json` every version is one JSON object on its own line.

use futures::StreamExt;
use serde::Serialize;

use super::{ClusterArg, Context, Output};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub cluster: ClusterArg,
}

#[derive(Serialize)]
struct Version {
    at: String,
    cluster: String,
    version: u64,
    history_id: String,
    bytes: usize,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let cluster = &args.cluster.name;
    ctx.existing_cluster(cluster).await?;
    let mut stream = ctx.manager.watch_meta(cluster, 0).await?;
    while let Some(snapshot) = stream.next().await {
        let s = snapshot?;
        let seen = Version {
            at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            cluster: s.cluster,
            version: s.version,
            history_id: s.history_id,
            bytes: s.data.len(),
        };
        match ctx.output {
            // One line per document, so a script can read them as they come.
            Output::Json => println!("{}", serde_json::to_string(&seen)?),
            Output::Table => println!(
                "{} version {} ({} bytes)",
                seen.at, seen.version, seen.bytes
            ),
        }
    }
    Ok(())
}
