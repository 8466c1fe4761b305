//! `cfluxctl backup`: a cluster's catalog saved to one self-describing JSON
//! file ([`BackupFile`]), which `cfluxctl restore` reads back.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{ClusterArg, Context};

/// The `format` of the files this version writes and reads.
pub const FORMAT: &str = "cflux-backup/1";

/// One backup: what it is of and when, and the catalog's `meta.Data` bytes
/// exactly as the manager holds them.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupFile {
    pub format: String,
    pub cluster: String,
    pub version: u64,
    /// Empty from managers that keep no history.
    pub history_id: String,
    /// RFC 3339, UTC.
    pub taken_at: String,
    pub catalog_base64: String,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub cluster: ClusterArg,
    /// Replace FILE if it exists.
    #[arg(long)]
    pub overwrite: bool,
    /// Where to write the backup.
    pub file: PathBuf,
}

#[derive(Serialize)]
struct Saved<'a> {
    file: &'a Path,
    cluster: &'a str,
    version: u64,
    history_id: &'a str,
    taken_at: &'a str,
    bytes: usize,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let cluster = &args.cluster.name;
    ctx.existing_cluster(cluster).await?;
    if !args.overwrite && args.file.exists() {
        bail!(
            "{} exists; give --overwrite to replace it",
            args.file.display()
        );
    }
    let snapshot = ctx.manager.get_meta(cluster).await?;
    if snapshot.version == 0 {
        bail!("cluster {cluster:?} has no catalog yet: nothing to back up");
    }
    let backup = BackupFile {
        format: FORMAT.to_owned(),
        cluster: cluster.clone(),
        version: snapshot.version,
        history_id: snapshot.history_id,
        taken_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        catalog_base64: base64::engine::general_purpose::STANDARD.encode(&snapshot.data),
    };
    write_whole(&args.file, &serde_json::to_vec_pretty(&backup)?)?;
    let saved = Saved {
        file: &args.file,
        cluster,
        version: backup.version,
        history_id: &backup.history_id,
        taken_at: &backup.taken_at,
        bytes: snapshot.data.len(),
    };
    ctx.output.print(&saved, |s| {
        println!(
            "cluster {} version {} ({} bytes) saved to {}",
            s.cluster,
            s.version,
            s.bytes,
            s.file.display()
        )
    })
}

/// Writes `bytes` to `path` whole or not at all: a temporary file beside it,
/// synced, then renamed over it.
fn write_whole(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let written = (|| {
        let mut f = std::fs::File::create(&partial)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&partial, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written.with_context(|| format!("cannot write {}", path.display()))
}
