//! What a valid `meta.Data` is: the check the manager runs on every pushed
//! catalog (and a node may run on what it reads), so bytes influxd could not
//! load never become a cluster's catalog.
//!
//! Valid means: the bytes decode as `meta.Data` (wire types, lengths, UTF-8
//! strings), and every proto2 `required` field is present at every level —
//! InfluxDB's Go decoder refuses a message that lacks one. prost decodes
//! required fields as plain values and never checks their presence, so that
//! part walks the wire form. Unknown fields are allowed (a newer InfluxDB
//! may add some).

use prost::Message;

use super::meta_pb;
use super::wire::{self, WireError};

/// Why bytes are not a valid `meta.Data`. Messages name the field and where
/// it sits, never the bytes themselves.
#[derive(Debug, thiserror::Error)]
pub enum InvalidMeta {
    /// Zero bytes: not even the required counters.
    #[error("the catalog is empty (0 bytes), not a meta.Data")]
    Empty,
    /// The bytes do not decode as `meta.Data`.
    #[error("the catalog does not decode as meta.Data")]
    Decode(#[source] prost::DecodeError),
    /// The bytes are not a well-formed protobuf message.
    #[error("the catalog is not well-formed protobuf")]
    Malformed(#[from] WireError),
    /// A proto2 required field is absent.
    #[error("the catalog lacks required field {field} (number {number}) of {path}")]
    MissingField {
        /// Where the message sits, e.g. `Data.databases[1].retention_policies[0]`.
        path: String,
        /// The field's name in `proto/influxdb/meta.proto`.
        field: &'static str,
        /// The field's number.
        number: u32,
    },
}

/// Checks that `bytes` are a valid `meta.Data` (see the module doc); the
/// decoded message, so a caller that reads it decodes the bytes once.
pub fn validate_meta_data(bytes: &[u8]) -> Result<meta_pb::Data, InvalidMeta> {
    if bytes.is_empty() {
        return Err(InvalidMeta::Empty);
    }
    let data = meta_pb::Data::decode(bytes).map_err(InvalidMeta::Decode)?;
    check(bytes, &DATA, "Data".to_owned())?;
    Ok(data)
}

/// The required fields and nested messages of one message type.
struct Schema {
    required: &'static [(u32, &'static str)],
    nested: &'static [(u32, &'static str, &'static Schema)],
}

static DATA: Schema = Schema {
    required: &[
        (1, "term"),
        (2, "index"),
        (3, "cluster_id"),
        (7, "max_node_id"),
        (8, "max_shard_group_id"),
        (9, "max_shard_id"),
    ],
    nested: &[
        (4, "nodes", &NODE),
        (5, "databases", &DATABASE),
        (6, "users", &USER),
        (10, "data_nodes", &NODE),
        (11, "meta_nodes", &NODE),
    ],
};
static NODE: Schema = Schema {
    required: &[(1, "id"), (2, "host")],
    nested: &[],
};
static DATABASE: Schema = Schema {
    required: &[(1, "name"), (2, "default_retention_policy")],
    nested: &[
        (3, "retention_policies", &POLICY),
        (4, "continuous_queries", &QUERY),
    ],
};
static POLICY: Schema = Schema {
    required: &[
        (1, "name"),
        (2, "duration"),
        (3, "shard_group_duration"),
        (4, "replica_n"),
    ],
    nested: &[
        (5, "shard_groups", &SHARD_GROUP),
        (6, "subscriptions", &SUBSCRIPTION),
    ],
};
static SHARD_GROUP: Schema = Schema {
    required: &[
        (1, "id"),
        (2, "start_time"),
        (3, "end_time"),
        (4, "deleted_at"),
    ],
    nested: &[(5, "shards", &SHARD)],
};
static SHARD: Schema = Schema {
    required: &[(1, "id")],
    nested: &[(3, "owners", &SHARD_OWNER)],
};
static SHARD_OWNER: Schema = Schema {
    required: &[(1, "node_id")],
    nested: &[],
};
static SUBSCRIPTION: Schema = Schema {
    required: &[(1, "name"), (2, "mode")],
    nested: &[],
};
static QUERY: Schema = Schema {
    required: &[(1, "name"), (2, "query")],
    nested: &[],
};
static USER: Schema = Schema {
    required: &[(1, "name"), (2, "hash"), (3, "admin")],
    nested: &[(4, "privileges", &PRIVILEGE)],
};
static PRIVILEGE: Schema = Schema {
    required: &[(1, "database"), (2, "privilege")],
    nested: &[],
};

fn check(message: &[u8], schema: &Schema, path: String) -> Result<(), InvalidMeta> {
    let fields = wire::fields(message)?;
    for &(number, field) in schema.required {
        if !fields.iter().any(|f| f.number == number) {
            return Err(InvalidMeta::MissingField {
                path,
                field,
                number,
            });
        }
    }
    for &(number, name, nested) in schema.nested {
        let children = fields.iter().filter(|f| f.number == number && f.delimited);
        for (i, child) in children.enumerate() {
            check(child.payload, nested, format!("{path}.{name}[{i}]"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::influx::catalog::tests::sample;
    use crate::influx::catalog::{apply_to_meta, Catalog};
    use crate::influx::wire::{put_bytes, put_varint};

    /// A node's whole `meta.Data`, shard groups and node lists included, as
    /// an original Go node pushes it (prost writes every required field).
    fn node_meta() -> Vec<u8> {
        let mut data = meta_pb::Data::decode(sample().to_meta_bytes().as_slice()).unwrap();
        data.term = 2;
        data.nodes.push(meta_pb::NodeInfo {
            id: 1,
            host: "localhost:8088".into(),
            tcp_host: None,
        });
        data.databases[0].retention_policies[0]
            .shard_groups
            .push(meta_pb::ShardGroupInfo {
                id: 1,
                start_time: 0,
                end_time: 10,
                deleted_at: 0,
                shards: vec![meta_pb::ShardInfo {
                    id: 1,
                    owner_ids: vec![1],
                    owners: vec![meta_pb::ShardOwner { node_id: 1 }],
                }],
                truncated_at: None,
            });
        data.encode_to_vec()
    }

    #[test]
    fn our_own_output_is_valid() {
        validate_meta_data(&sample().to_meta_bytes()).unwrap();
        validate_meta_data(&Catalog::default().to_meta_bytes()).unwrap();
        validate_meta_data(&apply_to_meta(&[], &sample()).unwrap()).unwrap();
        let node = node_meta();
        validate_meta_data(&node).unwrap();
        let mut changed = sample();
        changed.databases.remove("telegraf");
        validate_meta_data(&apply_to_meta(&node, &changed).unwrap()).unwrap();
    }

    #[test]
    fn unknown_fields_are_allowed() {
        let mut bytes = sample().to_meta_bytes();
        put_bytes(&mut bytes, 100, b"from a newer influxd");
        validate_meta_data(&bytes).unwrap();
    }

    #[test]
    fn empty_truncated_and_garbage_bytes_are_refused() {
        assert!(matches!(validate_meta_data(&[]), Err(InvalidMeta::Empty)));
        let mut truncated = sample().to_meta_bytes();
        truncated.truncate(truncated.len() - 3);
        assert!(matches!(
            validate_meta_data(&truncated),
            Err(InvalidMeta::Decode(_))
        ));
        for garbage in [&b"not a catalog"[..], &[0xff; 64], &[0x0a, 0x05, 0xff]] {
            assert!(validate_meta_data(garbage).is_err(), "{garbage:?}");
        }
        // A string that is not UTF-8 where a name belongs.
        let mut bytes = Catalog::default().to_meta_bytes();
        let mut user = Vec::new();
        put_bytes(&mut user, 1, &[0xff, 0xfe]);
        put_bytes(&mut user, 2, b"h");
        put_varint(&mut user, 3, 0);
        put_bytes(&mut bytes, 6, &user);
        assert!(validate_meta_data(&bytes).is_err());
    }

    /// Removes every record of field `number` from a message.
    fn without(message: &[u8], number: u32) -> Vec<u8> {
        wire::fields(message)
            .unwrap()
            .iter()
            .filter(|f| f.number != number)
            .flat_map(|f| f.record.to_vec())
            .collect()
    }

    /// Replaces the first nested record of field `number` by `edit` of it.
    fn edit_first(message: &[u8], number: u32, edit: impl Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut done = false;
        for f in wire::fields(message).unwrap() {
            if f.number == number && !done {
                put_bytes(&mut out, number, &edit(f.payload));
                done = true;
            } else {
                out.extend_from_slice(f.record);
            }
        }
        out
    }

    fn missing(bytes: &[u8]) -> (String, u32) {
        match validate_meta_data(bytes) {
            Err(InvalidMeta::MissingField { path, number, .. }) => (path, number),
            other => panic!("expected a missing field, got {other:?}"),
        }
    }

    #[test]
    fn a_missing_required_field_is_named_at_every_level() {
        let node = node_meta();
        for number in [1, 2, 3, 7, 8, 9] {
            assert_eq!(missing(&without(&node, number)), ("Data".into(), number));
        }
        let nodes = |n: u32| edit_first(&node, 4, |m| without(m, n));
        assert_eq!(missing(&nodes(2)), ("Data.nodes[0]".into(), 2));
        for number in [1, 2] {
            let bytes = edit_first(&node, 5, |db| without(db, number));
            assert_eq!(missing(&bytes), ("Data.databases[0]".into(), number));
        }
        let in_policy =
            |edit: &dyn Fn(&[u8]) -> Vec<u8>| edit_first(&node, 5, |db| edit_first(db, 3, edit));
        for number in [1, 2, 3, 4] {
            assert_eq!(
                missing(&in_policy(&|rp| without(rp, number))),
                ("Data.databases[0].retention_policies[0]".into(), number)
            );
        }
        for number in [1, 2, 3, 4] {
            assert_eq!(
                missing(&in_policy(&|rp| edit_first(rp, 5, |sg| without(
                    sg, number
                )))),
                (
                    "Data.databases[0].retention_policies[0].shard_groups[0]".into(),
                    number
                )
            );
        }
        let shard = in_policy(&|rp| edit_first(rp, 5, |sg| edit_first(sg, 5, |s| without(s, 1))));
        assert_eq!(missing(&shard).1, 1);
        let owner = in_policy(&|rp| {
            edit_first(rp, 5, |sg| {
                edit_first(sg, 5, |s| edit_first(s, 3, |o| without(o, 1)))
            })
        });
        assert!(missing(&owner).0.ends_with("shards[0].owners[0]"));
        for number in [1, 2] {
            let sub = in_policy(&|rp| edit_first(rp, 6, |s| without(s, number)));
            assert!(missing(&sub).0.ends_with("subscriptions[0]"));
            let cq = edit_first(&node, 5, |db| edit_first(db, 4, |q| without(q, number)));
            assert_eq!(
                missing(&cq),
                ("Data.databases[0].continuous_queries[0]".into(), number)
            );
            let privilege = edit_first(&node, 6, |u| edit_first(u, 4, |p| without(p, number)));
            assert_eq!(
                missing(&privilege),
                ("Data.users[0].privileges[0]".into(), number)
            );
        }
        for number in [1, 2, 3] {
            let user = edit_first(&node, 6, |u| without(u, number));
            assert_eq!(missing(&user), ("Data.users[0]".into(), number));
        }
    }
}
