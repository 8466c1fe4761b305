//! TEMPORARY: live check against a real influxd; removed before hand-off.
use super::*;
use std::collections::BTreeMap;

const HOUR: i64 = 3_600_000_000_000;

fn target(round: u32) -> Catalog {
    let mut c = catalog::tests::sample();
    let mut dangling = Database::new("dangling", "gone");
    dangling
        .retention_policies
        .insert("r".into(), RetentionPolicy::new("r", 2 * HOUR, 0, 1));
    c.databases.insert("dangling".into(), dangling);
    let mut tiny = Database::new("tiny ns", "n");
    tiny.retention_policies
        .insert("n".into(), RetentionPolicy::new("n", HOUR + 7, HOUR, 1));
    c.databases.insert("tiny ns".into(), tiny);
    let mut cqdb = Database::new("cqdb", "autogen");
    cqdb.retention_policies
        .insert("autogen".into(), RetentionPolicy::new("autogen", 0, 0, 1));
    cqdb.retention_policies.insert(
        "down".into(),
        RetentionPolicy::new("down", 30 * 24 * HOUR, 0, 1),
    );
    cqdb.continuous_queries.insert("cq \"1\"".into(), ContinuousQuery { name: "cq \"1\"".into(),
        query: "CREATE CONTINUOUS QUERY \"cq \\\"1\\\"\" ON cqdb BEGIN SELECT mean(v) INTO cqdb.down.m2 FROM cqdb.autogen.m GROUP BY time(1h) END".into() });
    c.databases.insert("cqdb".into(), cqdb);
    // the sample's CQ refers to database telegraf; make it valid
    let mut u = User::new("o'hara \"x\" \\", "h", false);
    u.privileges
        .insert("wéird 'db' 日本".into(), Privilege::Write);
    c.users.insert(u.name.clone(), u);
    // the sample's weird database name has no backslash: influxd refuses / and \ in names
    if round >= 2 {
        let t = c.databases.get_mut("telegraf").unwrap();
        t.default_retention_policy = "one \"week\"".into();
        t.retention_policies.remove("autogen");
        t.continuous_queries.clear();
        let w = t.retention_policies.get_mut("one \"week\"").unwrap();
        w.duration_ns = 24 * HOUR;
        w.shard_group_duration_ns = 0;
        w.replica_n = 1;
        w.future_write_limit = 0;
        let d = c.databases.get_mut("dangling").unwrap();
        d.default_retention_policy = "r".into();
        c.databases.remove("tiny ns");
        let cq = c
            .databases
            .get_mut("cqdb")
            .unwrap()
            .continuous_queries
            .get_mut("cq \"1\"")
            .unwrap();
        cq.query = cq.query.replace("mean", "max");
        let a = c.users.get_mut("alice").unwrap();
        a.admin = true;
        a.privileges.clear();
        let r = c.users.get_mut("root").unwrap();
        r.admin = false;
        r.privileges.insert("cqdb".into(), Privilege::Read);
        c.users.remove("o'hara \"x\" \\");
    }
    // The sample's future write limit is 1.11-only syntax: drop it for 1.6.
    for db in c.databases.values_mut() {
        for rp in db.retention_policies.values_mut() {
            rp.future_write_limit = 0;
        }
    }
    c
}

#[test]
#[ignore]
fn live() {
    let dir = std::env::var("CFX_DIR").unwrap();
    let round: u32 = std::env::var("CFX_ROUND").unwrap().parse().unwrap();
    let meta = std::fs::read(format!("{dir}/meta/meta.db")).unwrap_or_default();
    let current = Catalog::from_meta_bytes(&meta).unwrap();
    let to = target(round);
    let statements = diff(&current, &to);
    let mut out = String::new();
    for s in &statements {
        if let Some(q) = &s.influxql {
            out.push_str(q);
            out.push('\n');
        } else {
            eprintln!("NOTE {:?}", s.change);
        }
    }
    std::fs::write(format!("{dir}/stmts.txt"), out).unwrap();
    eprintln!("{} statements", statements.len());
    let _: BTreeMap<u8, u8> = BTreeMap::new();
}

#[test]
#[ignore]
fn live_rewrite() {
    let dir = std::env::var("CFX_DIR").unwrap();
    let meta = std::fs::read(format!("{dir}/meta/meta.db")).unwrap();
    let mut c = Catalog::from_meta_bytes(&meta).unwrap();
    eprintln!(
        "{:#?}",
        meta_pb::Data::decode(meta.as_slice()).map(|d| (
            d.term,
            d.index,
            d.cluster_id,
            d.max_shard_group_id,
            d.max_shard_id,
            d.nodes.len(),
            d.meta_nodes.len(),
            d.data_nodes.len()
        ))
    );
    let mut db = Database::new("spliced", "rp");
    db.retention_policies
        .insert("rp".into(), RetentionPolicy::new("rp", 0, 0, 1));
    c.databases.insert("spliced".into(), db);
    let out = apply_to_meta(&meta, &c).unwrap();
    assert_eq!(Catalog::from_meta_bytes(&out).unwrap(), c);
    std::fs::write(format!("{dir}/meta.db.new"), out).unwrap();
}
use prost::Message;
