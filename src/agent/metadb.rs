//! Reading influxd's `meta.db` as influxd itself would: a file influxd
//! refuses to start from (zero bytes, a required field of `meta.Data`
//! missing) is unreadable, never an empty catalog — pushing that would drop
//! every database of the cluster. The read also yields the metadata's
//! identity (`ClusterID`, `Index`), so the sync task can tell when the file
//! was replaced under it.

use std::path::{Path, PathBuf};

use prost::Message;

use crate::client::meta::MetaIdentity;
use crate::influx::catalog::{Catalog, CatalogError};

/// Why `meta.db` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MetaDbError {
    #[error("cannot read {path} (is influxd running with this meta directory?)")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is empty; influxd itself refuses such a file")]
    Empty { path: PathBuf },
    #[error("{path} is not a meta.Data message")]
    Malformed {
        path: PathBuf,
        #[source]
        source: prost::DecodeError,
    },
    #[error(
        "{path} lacks required meta.Data field(s) {missing:?}; influxd itself refuses such a file"
    )]
    Incomplete {
        path: PathBuf,
        missing: Vec<&'static str>,
    },
    #[error("{path} holds a catalog that cannot be read")]
    Catalog {
        path: PathBuf,
        #[source]
        source: CatalogError,
    },
}

/// The required scalar fields of `meta.Data`, as optional ones, so their
/// presence can be checked (prost reads a missing required field as 0).
/// Every other field is skipped when decoding.
#[derive(Clone, PartialEq, Message)]
struct RequiredFields {
    #[prost(uint64, optional, tag = "1")]
    term: Option<u64>,
    #[prost(uint64, optional, tag = "2")]
    index: Option<u64>,
    #[prost(uint64, optional, tag = "3")]
    cluster_id: Option<u64>,
    #[prost(uint64, optional, tag = "7")]
    max_node_id: Option<u64>,
    #[prost(uint64, optional, tag = "8")]
    max_shard_group_id: Option<u64>,
    #[prost(uint64, optional, tag = "9")]
    max_shard_id: Option<u64>,
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

/// The catalog and identity in `bytes` of the file at `path`.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<(Catalog, MetaIdentity), MetaDbError> {
    if bytes.is_empty() {
        return Err(MetaDbError::Empty {
            path: path.to_owned(),
        });
    }
    let required = RequiredFields::decode(bytes).map_err(|source| MetaDbError::Malformed {
        path: path.to_owned(),
        source,
    })?;
    let missing: Vec<&'static str> = [
        ("Term", required.term),
        ("Index", required.index),
        ("ClusterID", required.cluster_id),
        ("MaxNodeID", required.max_node_id),
        ("MaxShardGroupID", required.max_shard_group_id),
        ("MaxShardID", required.max_shard_id),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.is_none().then_some(name))
    .collect();
    if !missing.is_empty() {
        return Err(MetaDbError::Incomplete {
            path: path.to_owned(),
            missing,
        });
    }
    let catalog = Catalog::from_meta_bytes(bytes).map_err(|source| MetaDbError::Catalog {
        path: path.to_owned(),
        source,
    })?;
    let identity = MetaIdentity {
        cluster_id: required.cluster_id.unwrap_or_default(),
        index: required.index.unwrap_or_default(),
    };
    Ok((catalog, identity))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::influx::catalog::{apply_to_meta, Database};

    fn path() -> PathBuf {
        PathBuf::from("/var/lib/influxdb/meta/meta.db")
    }

    #[test]
    fn what_influxd_refuses_is_unreadable_not_empty() {
        assert!(matches!(
            parse(&path(), b""),
            Err(MetaDbError::Empty { .. })
        ));
        // A catalog without influxd's required counters (what a bare
        // `to_meta_bytes` of an empty catalog would be if it left them out).
        let only_term = RequiredFields {
            term: Some(1),
            ..Default::default()
        }
        .encode_to_vec();
        match parse(&path(), &only_term) {
            Err(MetaDbError::Incomplete { missing, .. }) => assert_eq!(
                missing,
                [
                    "Index",
                    "ClusterID",
                    "MaxNodeID",
                    "MaxShardGroupID",
                    "MaxShardID"
                ]
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&path(), b"\xff\xff"),
            Err(MetaDbError::Malformed { .. })
        ));
    }

    #[test]
    fn a_whole_file_gives_its_catalog_and_identity() {
        let whole = RequiredFields {
            term: Some(1),
            index: Some(42),
            cluster_id: Some(0xC1),
            max_node_id: Some(1),
            max_shard_group_id: Some(0),
            max_shard_id: Some(0),
        }
        .encode_to_vec();
        let mut catalog = Catalog::default();
        catalog
            .databases
            .insert("db".into(), Database::new("db", "autogen"));
        let bytes = apply_to_meta(&whole, &catalog).unwrap();
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
