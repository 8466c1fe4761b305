//! What a node keeps on disk between runs, in its state directory: its node
//! ID (so a restarted node stays one node) and the last synced catalog — the
//! base of the three-way merge. Local changes not yet pushed need no file of
//! their own: they are whatever the node's metadata holds beyond that base,
//! and the node's metadata (InfluxDB's `meta.db`) is durable.
//!
//! Files are replaced atomically (write, fsync, rename, fsync of the
//! directory), so a crash leaves the old or the new state, never half of one.
//! That I/O blocks, so it runs on tokio's blocking pool, never on the async
//! workers that serve the node.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

/// The state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    dir: PathBuf,
}

/// The last catalog this node and its cluster agreed on.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SyncedBase {
    /// The cluster version it was agreed at (0: never synced).
    pub version: u64,
    /// Cluster-wide `meta.Data` bytes; `None` when the node has not joined
    /// yet (or the manager lost its state): the merge then runs as a first join.
    pub catalog: Option<Bytes>,
}

const NODE_ID: &str = "node-id";
const BASE: &str = "base.bin";

impl StateDir {
    /// Creates the directory if needed (once, at start-up).
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(StateDir {
            dir: dir.to_owned(),
        })
    }

    pub async fn node_id(&self) -> io::Result<Option<String>> {
        let path = self.dir.join(NODE_ID);
        blocking(move || match std::fs::read_to_string(path) {
            Ok(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_owned())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        })
        .await
    }

    pub async fn set_node_id(&self, id: &str) -> io::Result<()> {
        self.replace(NODE_ID, Bytes::copy_from_slice(id.as_bytes()))
            .await
    }

    /// The synced base; a missing file is a node that never synced.
    pub async fn base(&self) -> io::Result<SyncedBase> {
        let path = self.dir.join(BASE);
        let bytes = match blocking(move || std::fs::read(path)).await {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(SyncedBase::default()),
            Err(e) => return Err(e),
        };
        let invalid = || io::Error::new(io::ErrorKind::InvalidData, "corrupt base.bin");
        let (head, rest) = bytes.split_at_checked(9).ok_or_else(invalid)?;
        let version = u64::from_be_bytes(head[..8].try_into().map_err(|_| invalid())?);
        let catalog = match head[8] {
            0 => None,
            1 => Some(Bytes::copy_from_slice(rest)),
            _ => return Err(invalid()),
        };
        Ok(SyncedBase { version, catalog })
    }

    pub async fn set_base(&self, base: &SyncedBase) -> io::Result<()> {
        let mut out = Vec::with_capacity(9 + base.catalog.as_ref().map_or(0, |c| c.len()));
        out.extend_from_slice(&base.version.to_be_bytes());
        match &base.catalog {
            None => out.push(0),
            Some(c) => {
                out.push(1);
                out.extend_from_slice(c);
            }
        }
        self.replace(BASE, out.into()).await
    }

    /// Write to a temporary file, fsync it, rename it over `name`, fsync the
    /// directory: the rename is what a crash either sees or does not.
    async fn replace(&self, name: &'static str, bytes: Bytes) -> io::Result<()> {
        let dir = self.dir.clone();
        blocking(move || {
            let tmp = dir.join(format!(".{name}.tmp"));
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, dir.join(name))?;
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
    }
}

/// Runs file I/O on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn state_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateDir::open(dir.path()).unwrap();
        assert_eq!(s.node_id().await.unwrap(), None);
        assert_eq!(s.base().await.unwrap(), SyncedBase::default());
        s.set_node_id("n-1").await.unwrap();
        let base = SyncedBase {
            version: 7,
            catalog: Some(Bytes::from_static(b"\x08\x01")),
        };
        s.set_base(&base).await.unwrap();
        let s = StateDir::open(dir.path()).unwrap();
        assert_eq!(s.node_id().await.unwrap().as_deref(), Some("n-1"));
        assert_eq!(s.base().await.unwrap(), base);
        s.set_base(&SyncedBase {
            version: 3,
            catalog: None,
        })
        .await
        .unwrap();
        assert_eq!(s.base().await.unwrap().catalog, None);
    }

    #[tokio::test]
    async fn a_corrupt_base_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(BASE), b"\x01\x02").unwrap();
        assert!(StateDir::open(dir.path()).unwrap().base().await.is_err());
        std::fs::write(dir.path().join(BASE), [0, 0, 0, 0, 0, 0, 0, 1, 9]).unwrap();
        assert!(StateDir::open(dir.path()).unwrap().base().await.is_err());
    }
}
