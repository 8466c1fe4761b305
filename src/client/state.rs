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

use crate::client::meta::MetaIdentity;

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
    /// The catalog history `version` belongs to; empty when unknown (a
    /// manager that keeps none, or a base from before history ids).
    pub history_id: String,
    /// The identity of the node's own metadata when the base was agreed
    /// (`ClusterID`, highest `Index` seen); `None` when its owner has none.
    pub identity: Option<MetaIdentity>,
}

const NODE_ID: &str = "node-id";
const BASE: &str = "base.bin";
/// Opens the current format of `base.bin`. The first format began with the
/// big-endian version, whose first byte is 0 for any version below 2^56, so
/// a file without this tag is read as that format.
const BASE_FORMAT_2: &[u8; 4] = b"CFB2";

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
        decode_base(&bytes)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "corrupt base.bin"))
    }

    pub async fn set_base(&self, base: &SyncedBase) -> io::Result<()> {
        self.replace(BASE, encode_base(base).into()).await
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

/// `base.bin`: the format tag, the version, the history id (length-prefixed),
/// the identity (a presence byte, then `ClusterID` and `Index`), and the
/// catalog (a presence byte, then the bytes to the end).
fn encode_base(base: &SyncedBase) -> Vec<u8> {
    let catalog = base.catalog.as_deref().unwrap_or_default();
    let mut out = Vec::with_capacity(40 + base.history_id.len() + catalog.len());
    out.extend_from_slice(BASE_FORMAT_2);
    out.extend_from_slice(&base.version.to_be_bytes());
    let history = base.history_id.as_bytes();
    out.extend_from_slice(
        &u32::try_from(history.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(&history[..history.len().min(u32::MAX as usize)]);
    match base.identity {
        None => out.push(0),
        Some(id) => {
            out.push(1);
            out.extend_from_slice(&id.cluster_id.to_be_bytes());
            out.extend_from_slice(&id.index.to_be_bytes());
        }
    }
    match &base.catalog {
        None => out.push(0),
        Some(c) => {
            out.push(1);
            out.extend_from_slice(c);
        }
    }
    out
}

/// Reads either format of `base.bin`; `None` when it is corrupt.
fn decode_base(bytes: &[u8]) -> Option<SyncedBase> {
    let Some(mut rest) = bytes.strip_prefix(BASE_FORMAT_2) else {
        // The first format: version, presence byte, catalog.
        let (version, rest) = take_u64(bytes)?;
        return Some(SyncedBase {
            version,
            catalog: take_catalog(rest)?,
            ..SyncedBase::default()
        });
    };
    let version;
    (version, rest) = take_u64(rest)?;
    let (len, tail) = rest.split_at_checked(4)?;
    let len = usize::try_from(u32::from_be_bytes(len.try_into().ok()?)).ok()?;
    let (history, tail) = tail.split_at_checked(len)?;
    let history_id = String::from_utf8(history.to_vec()).ok()?;
    let (present, mut rest) = tail.split_first()?;
    let identity = match present {
        0 => None,
        1 => {
            let (cluster_id, index);
            (cluster_id, rest) = take_u64(rest)?;
            (index, rest) = take_u64(rest)?;
            Some(MetaIdentity { cluster_id, index })
        }
        _ => return None,
    };
    Some(SyncedBase {
        version,
        catalog: take_catalog(rest)?,
        history_id,
        identity,
    })
}

fn take_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = bytes.split_at_checked(8)?;
    Some((u64::from_be_bytes(head.try_into().ok()?), rest))
}

/// A presence byte, then the catalog to the end.
fn take_catalog(bytes: &[u8]) -> Option<Option<Bytes>> {
    match bytes.split_first()? {
        (0, _) => Some(None),
        (1, c) => Some(Some(Bytes::copy_from_slice(c))),
        _ => None,
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
            history_id: "h-1".into(),
            identity: Some(MetaIdentity {
                cluster_id: 0xC1,
                index: 42,
            }),
        };
        s.set_base(&base).await.unwrap();
        let s = StateDir::open(dir.path()).unwrap();
        assert_eq!(s.node_id().await.unwrap().as_deref(), Some("n-1"));
        assert_eq!(s.base().await.unwrap(), base);
        let empty = SyncedBase {
            version: 3,
            ..SyncedBase::default()
        };
        s.set_base(&empty).await.unwrap();
        assert_eq!(s.base().await.unwrap(), empty);
    }

    #[tokio::test]
    async fn a_base_of_the_first_format_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let mut old = 9u64.to_be_bytes().to_vec();
        old.push(1);
        old.extend_from_slice(b"\x08\x01");
        std::fs::write(dir.path().join(BASE), &old).unwrap();
        let base = StateDir::open(dir.path()).unwrap().base().await.unwrap();
        assert_eq!(
            base,
            SyncedBase {
                version: 9,
                catalog: Some(Bytes::from_static(b"\x08\x01")),
                history_id: String::new(),
                identity: None,
            }
        );
    }

    #[tokio::test]
    async fn a_corrupt_base_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(BASE), b"\x01\x02").unwrap();
        assert!(StateDir::open(dir.path()).unwrap().base().await.is_err());
        std::fs::write(dir.path().join(BASE), [0, 0, 0, 0, 0, 0, 0, 1, 9]).unwrap();
        assert!(StateDir::open(dir.path()).unwrap().base().await.is_err());
        // The current format cut short inside the history id.
        let mut cut = encode_base(&SyncedBase {
            history_id: "history".into(),
            ..SyncedBase::default()
        });
        cut.truncate(BASE_FORMAT_2.len() + 8 + 4 + 3);
        std::fs::write(dir.path().join(BASE), cut).unwrap();
        assert!(StateDir::open(dir.path()).unwrap().base().await.is_err());
    }
}
