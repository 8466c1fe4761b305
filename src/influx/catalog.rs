//! The catalog: the cluster-wide part of InfluxDB 1.x's metadata, and its
//! conversions to and from `meta.Data` bytes (`meta.db`, snapshot payloads).
//!
//! Reading decodes with prost. Writing never starts from scratch: it takes the
//! node's own `meta.Data` bytes as a base, replaces the cluster-wide parts and
//! copies everything else — shard groups, shards, node lists, counters, Raft
//! index and term, and every field this code does not know — byte for byte
//! (the private `wire` module). A newer InfluxDB's extra fields therefore survive a
//! round trip, at the top level and inside each database, retention policy,
//! subscription, continuous query, user and privilege that still exists.
//!
//! Every map is keyed by name, and the key is the identity: writers use the
//! key, and the `name` fields repeat it for convenience.

use std::collections::BTreeMap;

use prost::Message;
use serde::{Deserialize, Serialize};

use super::meta_pb;
use super::wire::{self, Field};

/// The database each influxd's monitor keeps its own statistics in: node-local,
/// like shards. It is never read into a catalog (so never pushed), and a
/// catalog's copy is never written or applied (so never created or dropped
/// from remote).
pub const INTERNAL_DATABASE: &str = "_internal";

/// Whether `database` belongs to the node alone, never to the catalog.
pub fn is_node_local_database(database: &str) -> bool {
    database == INTERNAL_DATABASE
}

/// Why metadata bytes could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The bytes are not a `meta.Data` message.
    #[error("metadata does not decode as meta.Data")]
    Decode(#[from] prost::DecodeError),
    /// The bytes are not a well-formed protobuf message.
    #[error("metadata is not a well-formed meta.Data")]
    Malformed(#[from] wire::WireError),
    /// A privilege value outside InfluxDB 1.x's 0–3.
    #[error("user {user:?} has privilege {value} on database {database:?}, which InfluxDB 1.x does not define")]
    UnknownPrivilege {
        /// The user holding the privilege.
        user: String,
        /// The database it applies to.
        database: String,
        /// The value found.
        value: i32,
    },
}

/// The cluster-wide metadata of an InfluxDB 1.x server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// Databases by name.
    pub databases: BTreeMap<String, Database>,
    /// Users by name.
    pub users: BTreeMap<String, User>,
}

/// A database and the definitions inside it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Database {
    /// The database's name (the same as its key).
    pub name: String,
    /// The policy writes without `rp` go to. It may name no existing policy
    /// (InfluxDB keeps the name when the default policy is dropped) or be
    /// empty (a database created with `retention-autocreate = false`).
    pub default_retention_policy: String,
    /// Retention policies by name.
    pub retention_policies: BTreeMap<String, RetentionPolicy>,
    /// Continuous queries by name.
    pub continuous_queries: BTreeMap<String, ContinuousQuery>,
}

/// A retention policy, without its node-local shard groups.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    /// The policy's name (the same as its key).
    pub name: String,
    /// How long data is kept, in nanoseconds; 0 is forever (`INF`).
    pub duration_ns: i64,
    /// The time span of one shard group, in nanoseconds; 0 lets InfluxDB
    /// choose from the duration (which it then stores).
    pub shard_group_duration_ns: i64,
    /// The replication factor (informational on OSS).
    pub replica_n: u32,
    /// Subscriptions by name.
    pub subscriptions: BTreeMap<String, Subscription>,
    /// InfluxDB 1.11+: writes further than this into the future are refused,
    /// in nanoseconds; 0 is no limit.
    pub future_write_limit: i64,
    /// InfluxDB 1.11+: writes further than this into the past are refused, in
    /// nanoseconds; 0 is no limit.
    pub past_write_limit: i64,
}

/// A subscription: points written to a policy are copied to destinations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// The subscription's name (the same as its key).
    pub name: String,
    /// `ALL` (every destination) or `ANY` (one of them).
    pub mode: String,
    /// Destination URLs, e.g. `udp://h:9090`.
    pub destinations: Vec<String>,
}

/// A continuous query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContinuousQuery {
    /// The query's name (the same as its key).
    pub name: String,
    /// The whole statement as InfluxDB stores it:
    /// `CREATE CONTINUOUS QUERY ... BEGIN ... END`.
    pub query: String,
}

/// A user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The user's name (the same as its key).
    pub name: String,
    /// The bcrypt hash of the password.
    pub hash: String,
    /// Whether the user has all privileges on everything.
    pub admin: bool,
    /// Privileges by database name.
    pub privileges: BTreeMap<String, Privilege>,
}

/// A user's privilege on one database (InfluxDB's `influxql.Privilege`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Privilege {
    /// 0: nothing (what `REVOKE ALL ON db` leaves behind).
    None,
    /// 1: read.
    Read,
    /// 2: write.
    Write,
    /// 3: read and write.
    All,
}

impl Privilege {
    /// The value stored in `meta.Data`.
    pub fn as_i32(self) -> i32 {
        match self {
            Privilege::None => 0,
            Privilege::Read => 1,
            Privilege::Write => 2,
            Privilege::All => 3,
        }
    }

    /// The value stored in `meta.Data`, if InfluxDB 1.x defines it.
    pub fn from_i32(value: i32) -> Option<Privilege> {
        match value {
            0 => Some(Privilege::None),
            1 => Some(Privilege::Read),
            2 => Some(Privilege::Write),
            3 => Some(Privilege::All),
            _ => None,
        }
    }
}

impl Database {
    /// An empty database named `name`.
    pub fn new(name: impl Into<String>, default_retention_policy: impl Into<String>) -> Self {
        Database {
            name: name.into(),
            default_retention_policy: default_retention_policy.into(),
            ..Default::default()
        }
    }
}

impl RetentionPolicy {
    /// A policy without subscriptions or write limits.
    pub fn new(
        name: impl Into<String>,
        duration_ns: i64,
        shard_group_duration_ns: i64,
        replica_n: u32,
    ) -> Self {
        RetentionPolicy {
            name: name.into(),
            duration_ns,
            shard_group_duration_ns,
            replica_n,
            ..Default::default()
        }
    }
}

impl User {
    /// A user without privileges.
    pub fn new(name: impl Into<String>, hash: impl Into<String>, admin: bool) -> Self {
        User {
            name: name.into(),
            hash: hash.into(),
            admin,
            privileges: BTreeMap::new(),
        }
    }
}

impl Catalog {
    /// Reads the catalog out of `meta.Data` bytes (a `meta.db` file, a
    /// snapshot payload). Empty bytes are an empty catalog.
    pub fn from_meta_bytes(bytes: &[u8]) -> Result<Catalog, CatalogError> {
        Catalog::from_meta(&meta_pb::Data::decode(bytes)?)
    }

    /// Reads the catalog out of a decoded `meta.Data`. When a name occurs
    /// twice, the first wins, as InfluxDB's own lookups do.
    pub fn from_meta(data: &meta_pb::Data) -> Result<Catalog, CatalogError> {
        let mut catalog = Catalog::default();
        for d in &data.databases {
            if is_node_local_database(&d.name) {
                continue;
            }
            let mut db = Database::new(d.name.clone(), d.default_retention_policy.clone());
            for rp in &d.retention_policies {
                let mut policy = RetentionPolicy {
                    name: rp.name.clone(),
                    duration_ns: rp.duration,
                    shard_group_duration_ns: rp.shard_group_duration,
                    replica_n: rp.replica_n,
                    subscriptions: BTreeMap::new(),
                    future_write_limit: rp.future_write_limit(),
                    past_write_limit: rp.past_write_limit(),
                };
                for s in &rp.subscriptions {
                    policy
                        .subscriptions
                        .entry(s.name.clone())
                        .or_insert_with(|| Subscription {
                            name: s.name.clone(),
                            mode: s.mode.clone(),
                            destinations: s.destinations.clone(),
                        });
                }
                db.retention_policies
                    .entry(rp.name.clone())
                    .or_insert(policy);
            }
            for cq in &d.continuous_queries {
                db.continuous_queries
                    .entry(cq.name.clone())
                    .or_insert_with(|| ContinuousQuery {
                        name: cq.name.clone(),
                        query: cq.query.clone(),
                    });
            }
            catalog.databases.entry(d.name.clone()).or_insert(db);
        }
        for u in &data.users {
            let mut user = User::new(u.name.clone(), u.hash.clone(), u.admin);
            for p in &u.privileges {
                if is_node_local_database(&p.database) {
                    continue;
                }
                let privilege = Privilege::from_i32(p.privilege).ok_or_else(|| {
                    CatalogError::UnknownPrivilege {
                        user: u.name.clone(),
                        database: p.database.clone(),
                        value: p.privilege,
                    }
                })?;
                user.privileges
                    .entry(p.database.clone())
                    .or_insert(privilege);
            }
            catalog.users.entry(u.name.clone()).or_insert(user);
        }
        Ok(catalog)
    }

    /// The catalog as a fresh `meta.Data`: no node-local parts, required
    /// fields zero. Equivalent to `apply_to_meta(&[], self)`.
    pub fn to_meta_bytes(&self) -> Vec<u8> {
        encode_data(self, &BaseData::default())
    }
}

/// Writes `catalog` into the node's `meta.Data` bytes `base_meta_bytes`: the
/// databases and users (with their policies, subscriptions, continuous queries
/// and privileges) become the catalog's, and everything node-local is kept:
/// `Term`, `Index`, `ClusterID`, the node lists, `MaxNodeID`,
/// `MaxShardGroupID`, `MaxShardID`, and the shard groups of every policy that
/// exists in both (a policy new from the catalog has none). Fields this code
/// does not know are kept at every level whose entity still exists.
///
/// Empty `base_meta_bytes` give a valid `meta.Data` whose required fields are
/// zero. Fails only when `base_meta_bytes` do not decode.
pub fn apply_to_meta(base_meta_bytes: &[u8], catalog: &Catalog) -> Result<Vec<u8>, CatalogError> {
    let fields = wire::fields(base_meta_bytes)?;
    let base = BaseData::parse(&fields)?;
    Ok(encode_data(catalog, &base))
}

// `meta.Data` field numbers (see proto/influxdb/meta.proto).
const DATA_DATABASES: u32 = 5;
const DATA_USERS: u32 = 6;
/// Required scalar fields written as 0 when the base lacks them: before and
/// after the databases and users, in number order.
const DATA_REQUIRED_HEAD: [u32; 3] = [1, 2, 3];
const DATA_REQUIRED_TAIL: [u32; 3] = [7, 8, 9];
/// The highest field number each message defines; above it, a field is unknown.
const DATABASE_KNOWN: u32 = 4;
const POLICY_KNOWN: u32 = 8;
const SUBSCRIPTION_KNOWN: u32 = 3;
const QUERY_KNOWN: u32 = 2;
const USER_KNOWN: u32 = 4;
const PRIVILEGE_KNOWN: u32 = 2;

/// The parts of a base `meta.Data` that survive a rewrite, by entity.
#[derive(Default)]
struct BaseData<'a> {
    /// Records before the databases (Term, Index, ClusterID, Nodes).
    head: Vec<&'a [u8]>,
    /// Records after the users (MaxNodeID onwards, and unknown fields).
    tail: Vec<&'a [u8]>,
    present: Vec<u32>,
    databases: BTreeMap<String, BaseDatabase<'a>>,
    /// Whole records of node-local databases (`_internal`), kept as they are.
    node_local_databases: Vec<&'a [u8]>,
    users: BTreeMap<String, BaseUser<'a>>,
}

#[derive(Default)]
struct BaseDatabase<'a> {
    policies: BTreeMap<String, BasePolicy<'a>>,
    queries: BTreeMap<String, Vec<&'a [u8]>>,
    unknown: Vec<&'a [u8]>,
}

#[derive(Default)]
struct BasePolicy<'a> {
    shard_groups: Vec<&'a [u8]>,
    subscriptions: BTreeMap<String, Vec<&'a [u8]>>,
    /// Whether the write limits were present (kept present even when 0).
    future_present: bool,
    past_present: bool,
    unknown: Vec<&'a [u8]>,
}

#[derive(Default)]
struct BaseUser<'a> {
    privileges: BTreeMap<String, Vec<&'a [u8]>>,
    /// Whole records of privileges on node-local databases, kept as they are.
    node_local_privileges: Vec<&'a [u8]>,
    unknown: Vec<&'a [u8]>,
}

impl<'a> BaseData<'a> {
    fn parse(fields: &[Field<'a>]) -> Result<Self, CatalogError> {
        let mut base = BaseData::default();
        for f in fields {
            base.present.push(f.number);
            match f.number {
                DATA_DATABASES => {
                    let inner = wire::fields(f.payload)?;
                    let name = wire::string_field(&inner, 1)?;
                    if is_node_local_database(&name) {
                        base.node_local_databases.push(f.record);
                        continue;
                    }
                    let db = BaseDatabase::parse(&inner)?;
                    base.databases.entry(name).or_insert(db);
                }
                DATA_USERS => {
                    let inner = wire::fields(f.payload)?;
                    let name = wire::string_field(&inner, 1)?;
                    let user = BaseUser::parse(&inner)?;
                    base.users.entry(name).or_insert(user);
                }
                n if n < DATA_DATABASES => base.head.push(f.record),
                _ => base.tail.push(f.record),
            }
        }
        Ok(base)
    }
}

impl<'a> BaseDatabase<'a> {
    fn parse(fields: &[Field<'a>]) -> Result<Self, CatalogError> {
        let mut db = BaseDatabase::default();
        for f in fields {
            match f.number {
                3 => {
                    let inner = wire::fields(f.payload)?;
                    let name = wire::string_field(&inner, 1)?;
                    let policy = BasePolicy::parse(&inner)?;
                    db.policies.entry(name).or_insert(policy);
                }
                4 => {
                    let (name, unknown) = leaf(f.payload, QUERY_KNOWN)?;
                    db.queries.entry(name).or_insert(unknown);
                }
                n if n > DATABASE_KNOWN => db.unknown.push(f.record),
                _ => {}
            }
        }
        Ok(db)
    }
}

impl<'a> BasePolicy<'a> {
    fn parse(fields: &[Field<'a>]) -> Result<Self, CatalogError> {
        let mut policy = BasePolicy::default();
        for f in fields {
            match f.number {
                5 => policy.shard_groups.push(f.record),
                6 => {
                    let (name, unknown) = leaf(f.payload, SUBSCRIPTION_KNOWN)?;
                    policy.subscriptions.entry(name).or_insert(unknown);
                }
                7 => policy.future_present = true,
                8 => policy.past_present = true,
                n if n > POLICY_KNOWN => policy.unknown.push(f.record),
                _ => {}
            }
        }
        Ok(policy)
    }
}

impl<'a> BaseUser<'a> {
    fn parse(fields: &[Field<'a>]) -> Result<Self, CatalogError> {
        let mut user = BaseUser::default();
        for f in fields {
            match f.number {
                4 => {
                    let (database, unknown) = leaf(f.payload, PRIVILEGE_KNOWN)?;
                    if is_node_local_database(&database) {
                        user.node_local_privileges.push(f.record);
                    } else {
                        user.privileges.entry(database).or_insert(unknown);
                    }
                }
                n if n > USER_KNOWN => user.unknown.push(f.record),
                _ => {}
            }
        }
        Ok(user)
    }
}

/// A message without nested entities: its field-1 string (the name) and its
/// unknown records.
fn leaf(payload: &[u8], known: u32) -> Result<(String, Vec<&[u8]>), CatalogError> {
    let fields = wire::fields(payload)?;
    let name = wire::string_field(&fields, 1)?;
    let unknown = fields
        .iter()
        .filter(|f| f.number > known)
        .map(|f| f.record)
        .collect();
    Ok((name, unknown))
}

fn encode_data(catalog: &Catalog, base: &BaseData<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    for n in DATA_REQUIRED_HEAD {
        if !base.present.contains(&n) {
            wire::put_varint(&mut out, n, 0);
        }
    }
    for record in &base.head {
        out.extend_from_slice(record);
    }
    for (name, db) in &catalog.databases {
        if is_node_local_database(name) {
            continue;
        }
        let bytes = encode_database(name, db, base.databases.get(name));
        wire::put_bytes(&mut out, DATA_DATABASES, &bytes);
    }
    extend(&mut out, &base.node_local_databases);
    for (name, user) in &catalog.users {
        let bytes = encode_user(name, user, base.users.get(name));
        wire::put_bytes(&mut out, DATA_USERS, &bytes);
    }
    for n in DATA_REQUIRED_TAIL {
        if !base.present.contains(&n) {
            wire::put_varint(&mut out, n, 0);
        }
    }
    for record in &base.tail {
        out.extend_from_slice(record);
    }
    out
}

fn encode_database(name: &str, db: &Database, base: Option<&BaseDatabase<'_>>) -> Vec<u8> {
    let mut out = Vec::new();
    wire::put_bytes(&mut out, 1, name.as_bytes());
    wire::put_bytes(&mut out, 2, db.default_retention_policy.as_bytes());
    for (rp_name, rp) in &db.retention_policies {
        let base_rp = base.and_then(|b| b.policies.get(rp_name));
        wire::put_bytes(&mut out, 3, &encode_policy(rp_name, rp, base_rp));
    }
    for (cq_name, cq) in &db.continuous_queries {
        let mut bytes = Vec::new();
        wire::put_bytes(&mut bytes, 1, cq_name.as_bytes());
        wire::put_bytes(&mut bytes, 2, cq.query.as_bytes());
        if let Some(unknown) = base.and_then(|b| b.queries.get(cq_name)) {
            extend(&mut bytes, unknown);
        }
        wire::put_bytes(&mut out, 4, &bytes);
    }
    if let Some(b) = base {
        extend(&mut out, &b.unknown);
    }
    out
}

fn encode_policy(name: &str, rp: &RetentionPolicy, base: Option<&BasePolicy<'_>>) -> Vec<u8> {
    let mut out = Vec::new();
    wire::put_bytes(&mut out, 1, name.as_bytes());
    // int64 and uint32 travel as two's-complement varints.
    wire::put_varint(&mut out, 2, rp.duration_ns as u64);
    wire::put_varint(&mut out, 3, rp.shard_group_duration_ns as u64);
    wire::put_varint(&mut out, 4, u64::from(rp.replica_n));
    if let Some(b) = base {
        extend(&mut out, &b.shard_groups);
    }
    for (sub_name, sub) in &rp.subscriptions {
        let mut bytes = Vec::new();
        wire::put_bytes(&mut bytes, 1, sub_name.as_bytes());
        wire::put_bytes(&mut bytes, 2, sub.mode.as_bytes());
        for d in &sub.destinations {
            wire::put_bytes(&mut bytes, 3, d.as_bytes());
        }
        if let Some(unknown) = base.and_then(|b| b.subscriptions.get(sub_name)) {
            extend(&mut bytes, unknown);
        }
        wire::put_bytes(&mut out, 6, &bytes);
    }
    // Optional (1.11+): absent unless set, or present in the base already, so
    // older servers' bytes stay as they were.
    if rp.future_write_limit != 0 || base.is_some_and(|b| b.future_present) {
        wire::put_varint(&mut out, 7, rp.future_write_limit as u64);
    }
    if rp.past_write_limit != 0 || base.is_some_and(|b| b.past_present) {
        wire::put_varint(&mut out, 8, rp.past_write_limit as u64);
    }
    if let Some(b) = base {
        extend(&mut out, &b.unknown);
    }
    out
}

fn encode_user(name: &str, user: &User, base: Option<&BaseUser<'_>>) -> Vec<u8> {
    let mut out = Vec::new();
    wire::put_bytes(&mut out, 1, name.as_bytes());
    wire::put_bytes(&mut out, 2, user.hash.as_bytes());
    wire::put_varint(&mut out, 3, u64::from(user.admin));
    for (database, privilege) in &user.privileges {
        if is_node_local_database(database) {
            continue;
        }
        let mut bytes = Vec::new();
        wire::put_bytes(&mut bytes, 1, database.as_bytes());
        // int32 travels sign-extended to 64 bits.
        wire::put_varint(&mut bytes, 2, i64::from(privilege.as_i32()) as u64);
        if let Some(unknown) = base.and_then(|b| b.privileges.get(database)) {
            extend(&mut bytes, unknown);
        }
        wire::put_bytes(&mut out, 4, &bytes);
    }
    if let Some(b) = base {
        extend(&mut out, &b.node_local_privileges);
        extend(&mut out, &b.unknown);
    }
    out
}

fn extend(out: &mut Vec<u8>, records: &[&[u8]]) {
    for r in records {
        out.extend_from_slice(r);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::influx::wire::{put_bytes, put_varint};

    const HOUR: i64 = 3_600_000_000_000;

    /// A catalog with something of everything, names included that need quoting.
    pub(crate) fn sample() -> Catalog {
        let mut c = Catalog::default();
        let mut db = Database::new("telegraf", "autogen");
        let mut rp = RetentionPolicy::new("autogen", 0, 168 * HOUR, 1);
        rp.subscriptions.insert(
            "kapacitor".into(),
            Subscription {
                name: "kapacitor".into(),
                mode: "ANY".into(),
                destinations: vec!["udp://k1:9092".into(), "udp://k2:9092".into()],
            },
        );
        db.retention_policies.insert("autogen".into(), rp);
        let mut week = RetentionPolicy::new("one \"week\"", 168 * HOUR, 24 * HOUR, 2);
        week.future_write_limit = HOUR;
        db.retention_policies.insert("one \"week\"".into(), week);
        db.continuous_queries.insert(
            "cq".into(),
            ContinuousQuery {
                name: "cq".into(),
                query: "CREATE CONTINUOUS QUERY cq ON telegraf BEGIN SELECT mean(v) INTO m2 FROM m GROUP BY time(1h) END".into(),
            },
        );
        c.databases.insert("telegraf".into(), db);
        let mut weird = Database::new("wéird 'db' 日本", "r");
        weird
            .retention_policies
            .insert("r".into(), RetentionPolicy::new("r", 2 * HOUR, HOUR, 1));
        c.databases.insert("wéird 'db' 日本".into(), weird);
        let mut alice = User::new("alice", "$2a$10$abc", false);
        alice.privileges.insert("telegraf".into(), Privilege::Read);
        alice
            .privileges
            .insert("wéird 'db' 日本".into(), Privilege::None);
        c.users.insert("alice".into(), alice);
        c.users
            .insert("root".into(), User::new("root", "$2a$10$xyz", true));
        c
    }

    fn unknown_varint(number: u32, value: u64) -> Vec<u8> {
        let mut v = Vec::new();
        put_varint(&mut v, number, value);
        v
    }

    fn unknown_bytes(number: u32, value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        put_bytes(&mut v, number, value);
        v
    }

    /// A node's `meta.Data` written by hand in InfluxDB's field order, with
    /// node-local parts and unknown fields at several levels.
    fn hand_built() -> Vec<u8> {
        let shard_group = meta_pb::ShardGroupInfo {
            id: 7,
            start_time: 0,
            end_time: HOUR,
            deleted_at: 0,
            shards: vec![meta_pb::ShardInfo {
                id: 9,
                owner_ids: vec![],
                owners: vec![meta_pb::ShardOwner { node_id: 1 }],
            }],
            truncated_at: None,
        }
        .encode_to_vec();

        let mut rp = Vec::new();
        put_bytes(&mut rp, 1, b"autogen");
        put_varint(&mut rp, 2, 0);
        put_varint(&mut rp, 3, (168 * HOUR) as u64);
        put_varint(&mut rp, 4, 1);
        put_bytes(&mut rp, 5, &shard_group);
        let mut sub = Vec::new();
        put_bytes(&mut sub, 1, b"s");
        put_bytes(&mut sub, 2, b"ALL");
        put_bytes(&mut sub, 3, b"udp://h:1");
        sub.extend(unknown_bytes(40, b"sub-extra"));
        put_bytes(&mut rp, 6, &sub);
        put_varint(&mut rp, 7, 0); // present although 0: must stay present
        rp.extend(unknown_varint(21, 42));
        rp.extend(unknown_bytes(22, b"rp-extra"));

        let mut cq = Vec::new();
        put_bytes(&mut cq, 1, b"cq");
        put_bytes(&mut cq, 2, b"CREATE CONTINUOUS QUERY cq ON db BEGIN SELECT count(v) INTO c FROM m GROUP BY time(1h) END");
        cq.extend(unknown_varint(9, 1));

        let mut db = Vec::new();
        put_bytes(&mut db, 1, b"db");
        put_bytes(&mut db, 2, b"autogen");
        put_bytes(&mut db, 3, &rp);
        put_bytes(&mut db, 4, &cq);
        db.extend(unknown_bytes(12, b"db-extra"));

        let mut privilege = Vec::new();
        put_bytes(&mut privilege, 1, b"db");
        put_varint(&mut privilege, 2, 2);
        privilege.extend(unknown_varint(5, 5));

        let mut user = Vec::new();
        put_bytes(&mut user, 1, b"bob");
        put_bytes(&mut user, 2, b"$2a$10$bob");
        put_varint(&mut user, 3, 0);
        put_bytes(&mut user, 4, &privilege);
        user.extend(unknown_bytes(30, b"user-extra"));
        user.extend(unknown_varint(31, 3));

        let node = meta_pb::NodeInfo {
            id: 1,
            host: "localhost:8088".into(),
            tcp_host: Some("localhost:8088".into()),
        }
        .encode_to_vec();

        let mut data = Vec::new();
        put_varint(&mut data, 1, 3); // Term
        put_varint(&mut data, 2, 57); // Index
        put_varint(&mut data, 3, 0xC1u64 << 40); // ClusterID
        put_bytes(&mut data, 4, &node);
        put_bytes(&mut data, 5, &db);
        put_bytes(&mut data, 6, &user);
        put_varint(&mut data, 7, 1); // MaxNodeID
        put_varint(&mut data, 8, 7); // MaxShardGroupID
        put_varint(&mut data, 9, 9); // MaxShardID
        put_bytes(&mut data, 10, &node);
        put_bytes(&mut data, 11, &node);
        data.extend(unknown_bytes(100, b"top-extra"));
        data.extend(unknown_varint(101, 1));
        data
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn our_bytes_round_trip() {
        let c = sample();
        let bytes = c.to_meta_bytes();
        assert_eq!(Catalog::from_meta_bytes(&bytes).unwrap(), c);
        assert_eq!(apply_to_meta(&bytes, &c).unwrap(), bytes);
        assert_eq!(apply_to_meta(&[], &c).unwrap(), bytes);
        // prost agrees with the splice encoder.
        let data = meta_pb::Data::decode(bytes.as_slice()).unwrap();
        assert_eq!(data.databases.len(), 2);
        let policies = &data.databases[0].retention_policies;
        assert_eq!(policies[0].name, "autogen");
        assert_eq!(policies[0].future_write_limit, None, "absent unless set");
        assert_eq!(policies[1].future_write_limit, Some(HOUR));
    }

    #[test]
    fn hand_built_bytes_with_unknown_fields_round_trip_exactly() {
        let base = hand_built();
        let c = Catalog::from_meta_bytes(&base).unwrap();
        assert_eq!(c.databases["db"].retention_policies.len(), 1);
        assert_eq!(c.users["bob"].privileges["db"], Privilege::Write);
        assert_eq!(apply_to_meta(&base, &c).unwrap(), base);
    }

    #[test]
    fn unknown_fields_stay_at_their_level_after_changes() {
        let base = hand_built();
        let mut c = Catalog::from_meta_bytes(&base).unwrap();
        {
            let db = c.databases.get_mut("db").unwrap();
            let rp = db.retention_policies.get_mut("autogen").unwrap();
            rp.duration_ns = 48 * HOUR;
            rp.shard_group_duration_ns = 24 * HOUR;
            db.retention_policies
                .insert("new".into(), RetentionPolicy::new("new", HOUR, HOUR, 1));
        }
        {
            let bob = c.users.get_mut("bob").unwrap();
            bob.admin = true;
            bob.privileges.insert("db".into(), Privilege::All);
        }
        let out = apply_to_meta(&base, &c).unwrap();
        assert_eq!(Catalog::from_meta_bytes(&out).unwrap(), c);

        let top = wire::fields(&out).unwrap();
        let top_unknown: Vec<u32> = top.iter().map(|f| f.number).filter(|n| *n > 11).collect();
        assert_eq!(top_unknown, [100, 101]);

        let db = top.iter().find(|f| f.number == 5).unwrap();
        let db_fields = wire::fields(db.payload).unwrap();
        assert!(db_fields
            .iter()
            .any(|f| f.number == 12 && f.payload == b"db-extra"));
        let rps: Vec<_> = db_fields.iter().filter(|f| f.number == 3).collect();
        assert_eq!(rps.len(), 2);
        let autogen = wire::fields(rps[0].payload).unwrap();
        assert_eq!(wire::string_field(&autogen, 1).unwrap(), "autogen");
        assert!(autogen.iter().any(|f| f.number == 21));
        assert!(autogen
            .iter()
            .any(|f| f.number == 22 && f.payload == b"rp-extra"));
        assert!(autogen.iter().any(|f| f.number == 7), "presence kept");
        let sub = autogen.iter().find(|f| f.number == 6).unwrap();
        assert!(contains(sub.payload, b"sub-extra"));
        let new = wire::fields(rps[1].payload).unwrap();
        assert!(
            new.iter().all(|f| f.number <= 4),
            "a new policy has nothing else"
        );

        let user = top.iter().find(|f| f.number == 6).unwrap();
        let user_fields = wire::fields(user.payload).unwrap();
        assert!(user_fields
            .iter()
            .any(|f| f.number == 30 && f.payload == b"user-extra"));
        assert!(user_fields.iter().any(|f| f.number == 31));
        let privilege = user_fields.iter().find(|f| f.number == 4).unwrap();
        let privilege_fields = wire::fields(privilege.payload).unwrap();
        assert!(privilege_fields.iter().any(|f| f.number == 5));
    }

    #[test]
    fn node_local_parts_are_kept() {
        let base = hand_built();
        let mut c = Catalog::from_meta_bytes(&base).unwrap();
        // Drop the database and add it back under a new name: no shard groups follow.
        let db = c.databases.remove("db").unwrap();
        c.databases.insert(
            "db2".into(),
            Database {
                name: "db2".into(),
                ..db.clone()
            },
        );
        let out = apply_to_meta(&base, &c).unwrap();
        let data = meta_pb::Data::decode(out.as_slice()).unwrap();
        assert_eq!((data.term, data.index), (3, 57));
        assert_eq!(data.cluster_id, 0xC1u64 << 40);
        assert_eq!(
            (data.max_node_id, data.max_shard_group_id, data.max_shard_id),
            (1, 7, 9)
        );
        assert_eq!(data.nodes.len(), 1);
        assert_eq!(data.data_nodes.len(), 1);
        assert_eq!(data.meta_nodes.len(), 1);
        assert_eq!(data.databases.len(), 1);
        assert!(data.databases[0].retention_policies[0]
            .shard_groups
            .is_empty());
        assert!(
            !contains(&out, b"db-extra"),
            "a dropped database's fields go with it"
        );

        // The same database kept: its shard groups stay.
        c.databases.insert("db".into(), db);
        let out = apply_to_meta(&base, &c).unwrap();
        let data = meta_pb::Data::decode(out.as_slice()).unwrap();
        let kept = data.databases.iter().find(|d| d.name == "db").unwrap();
        assert_eq!(kept.retention_policies[0].shard_groups.len(), 1);
        assert_eq!(kept.retention_policies[0].shard_groups[0].shards[0].id, 9);
    }

    #[test]
    fn empty_base_gives_valid_data_with_required_fields() {
        let out = apply_to_meta(&[], &Catalog::default()).unwrap();
        let numbers: Vec<u32> = wire::fields(&out)
            .unwrap()
            .iter()
            .map(|f| f.number)
            .collect();
        assert_eq!(numbers, [1, 2, 3, 7, 8, 9]);
        let data = meta_pb::Data::decode(out.as_slice()).unwrap();
        assert_eq!(data, meta_pb::Data::default());
        assert_eq!(Catalog::from_meta_bytes(&[]).unwrap(), Catalog::default());
    }

    #[test]
    fn internal_is_node_local_on_read_and_on_write() {
        let mut with_internal = sample();
        with_internal.databases.insert(
            INTERNAL_DATABASE.into(),
            Database::new(INTERNAL_DATABASE, "monitor"),
        );
        with_internal
            .users
            .get_mut("alice")
            .unwrap()
            .privileges
            .insert(INTERNAL_DATABASE.into(), Privilege::Read);
        // A catalog never carries it out...
        let bytes = with_internal.to_meta_bytes();
        assert_eq!(Catalog::from_meta_bytes(&bytes).unwrap(), sample());
        let data = meta_pb::Data::decode(bytes.as_slice()).unwrap();
        assert!(data.databases.iter().all(|d| d.name != INTERNAL_DATABASE));

        // ...nor reads it from a node's meta.db, whose own copy a write keeps.
        let mut node = meta_pb::Data::decode(sample().to_meta_bytes().as_slice()).unwrap();
        node.databases.push(meta_pb::DatabaseInfo {
            name: INTERNAL_DATABASE.into(),
            default_retention_policy: "monitor".into(),
            ..Default::default()
        });
        let alice = node.users.iter_mut().find(|u| u.name == "alice").unwrap();
        alice.privileges.push(meta_pb::UserPrivilege {
            database: INTERNAL_DATABASE.into(),
            privilege: 1,
        });
        let node_bytes = node.encode_to_vec();
        assert_eq!(Catalog::from_meta_bytes(&node_bytes).unwrap(), sample());
        let mut without = sample();
        without.databases.remove("telegraf");
        let written = apply_to_meta(&node_bytes, &without).unwrap();
        let data = meta_pb::Data::decode(written.as_slice()).unwrap();
        assert!(data.databases.iter().any(|d| d.name == INTERNAL_DATABASE));
        let alice = data.users.iter().find(|u| u.name == "alice").unwrap();
        assert!(alice
            .privileges
            .iter()
            .any(|p| p.database == INTERNAL_DATABASE));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut bytes = sample().to_meta_bytes();
        bytes.truncate(bytes.len() / 2);
        assert!(Catalog::from_meta_bytes(&bytes).is_err());
        assert!(apply_to_meta(&bytes, &sample()).is_err());

        let mut c = Catalog::default();
        c.users.insert("u".into(), User::new("u", "h", false));
        let mut data = meta_pb::Data::decode(c.to_meta_bytes().as_slice()).unwrap();
        data.users[0].privileges.push(meta_pb::UserPrivilege {
            database: "db".into(),
            privilege: 7,
        });
        let err = Catalog::from_meta_bytes(&data.encode_to_vec()).unwrap_err();
        assert!(matches!(
            err,
            CatalogError::UnknownPrivilege { value: 7, .. }
        ));
    }

    #[test]
    fn first_of_duplicate_names_wins() {
        let mut data = meta_pb::Data::default();
        for policy in ["a", "b"] {
            data.databases.push(meta_pb::DatabaseInfo {
                name: "db".into(),
                default_retention_policy: policy.into(),
                ..Default::default()
            });
        }
        let c = Catalog::from_meta_bytes(&data.encode_to_vec()).unwrap();
        assert_eq!(c.databases["db"].default_retention_policy, "a");
    }
}
