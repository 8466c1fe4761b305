//! Reading influxd's `meta.db` as influxd itself would: a file influxd
//! refuses to start from (zero bytes, a required field of `meta.Data`
//! missing) is unreadable, never an empty catalog — pushing that would drop
//! every database of the cluster. The read also yields the metadata's
//! identity (`ClusterID`, `Index`), so the sync task can tell when the file
//! was replaced under it.

use std::path::{Path, PathBuf};

use crate::client::meta::MetaIdentity;
use crate::influx::catalog::{Catalog, CatalogError};
use crate::influx::{validate_meta_data, InvalidMeta};

/// Why `meta.db` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MetaDbError {
    #[error("cannot read {path} (is influxd running with this meta directory?)")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// What influxd itself would refuse to start from: zero bytes, a
    /// message that does not decode, a required field missing.
    #[error("{path} is not a meta.Data influxd would load")]
    Invalid {
        path: PathBuf,
        #[source]
        source: InvalidMeta,
    },
    #[error("{path} holds a catalog that cannot be read")]
    Catalog {
        path: PathBuf,
        #[source]
        source: CatalogError,
    },
}

/// Reads `meta.db` at `path`, off the async workers.
pub async fn read(path: &Path) -> Result<(Catalog, MetaIdentity), MetaDbError> {
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|source| MetaDbError::Read {
            path: path.to_owned(),
            source,
        })?;
    parse(path, &bytes)
}

/// The catalog and identity in `bytes` of the file at `path`, checked with
/// the same rules the manager applies to a pushed catalog.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<(Catalog, MetaIdentity), MetaDbError> {
    let invalid = |source| MetaDbError::Invalid {
        path: path.to_owned(),
        source,
    };
    let data = validate_meta_data(bytes).map_err(invalid)?;
    let catalog = Catalog::from_meta(&data).map_err(|source| MetaDbError::Catalog {
        path: path.to_owned(),
        source,
    })?;
    let identity = MetaIdentity {
        cluster_id: data.cluster_id,
        index: data.index,
    };
    Ok((catalog, identity))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::influx::catalog::{apply_to_meta, Database};
    use crate::influx::meta_pb;
    use prost::Message;

    fn path() -> PathBuf {
        PathBuf::from("/var/lib/influxdb/meta/meta.db")
    }

    /// `meta.Data` with every required counter, as influxd writes it.
    fn whole(index: u64, cluster_id: u64) -> Vec<u8> {
        meta_pb::Data {
            term: 1,
            index,
            cluster_id,
            max_node_id: 1,
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn refused(bytes: &[u8]) -> InvalidMeta {
        match parse(&path(), bytes) {
            Err(MetaDbError::Invalid { source, .. }) => source,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn what_influxd_refuses_is_unreadable_not_empty() {
        assert!(matches!(refused(b""), InvalidMeta::Empty));
        assert!(matches!(
            refused(b"\xff\xff"),
            InvalidMeta::Malformed(_) | InvalidMeta::Decode(_)
        ));
        // Only Term (field 1) present: influxd stops at the first missing
        // required field, and so does this.
        match refused(b"\x08\x01") {
            InvalidMeta::MissingField { field, .. } => assert_eq!(field, "index"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_whole_file_gives_its_catalog_and_identity() {
        let mut catalog = Catalog::default();
        catalog
            .databases
            .insert("db".into(), Database::new("db", "autogen"));
        let bytes = apply_to_meta(&whole(42, 0xC1), &catalog).unwrap();
        let (read, identity) = parse(&path(), &bytes).unwrap();
        assert_eq!(read, catalog);
        assert_eq!(
            identity,
            MetaIdentity {
                cluster_id: 0xC1,
                index: 42
            }
        );
    }
}
