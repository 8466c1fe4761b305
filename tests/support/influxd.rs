//! Real InfluxDB 1.x servers (`influxd`), for integration tests and
//! benchmarks, and InfluxDB's own HTTP API to talk to them.
//!
//! - [`Influxd::start`] runs `/usr/bin/influxd` (or `$INFLUXD_BIN`) on free
//!   127.0.0.1 ports with its meta, data and WAL directories under a given
//!   directory, configured only by environment variables, and waits (with a
//!   deadline) until `GET /ping` answers. [`Influxd::start_many`] starts
//!   several in parallel. It is killed when dropped; when the thread is
//!   panicking (or `CFLUX_TEST_LOGS=1`), the tail of its log is printed first.
//! - [`InfluxApi`] speaks InfluxDB's own HTTP API (`/query`, `/write`), with
//!   no credentials, basic credentials or a JWT, and parses the `SHOW`
//!   answers the tests compare.
//!
//! The agent beside a server ([`Agent`], [`Node`], [`start_nodes`]), the
//! process helpers and the waits are re-exported here from their own
//! modules, where tests have always found them.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::process::{clean_env, exited, kill_child, log_tail, port_is_free, show_logs};
// Where the tests have always found them; not every test uses every one.
#[allow(unused_imports)]
pub use super::{
    agent::{agent_bin, start_nodes, Agent, AgentOptions, Node},
    process::{free_port, process_usage, ProcessUsage},
    wait::{eventually, same},
};

/// How long an influxd may take to answer `/ping`.
const INFLUXD_START_DEADLINE: Duration = Duration::from_secs(30);
/// Fresh ports are tried this many times (another process may take a port
/// between our probe and the server's bind).
pub(super) const START_ATTEMPTS: usize = 5;
/// Lines of a log printed when a test fails.
pub(super) const LOG_TAIL_LINES: usize = 150;

/// The influxd binary: `$INFLUXD_BIN`, or Debian's `/usr/bin/influxd`.
pub fn influxd_bin() -> String {
    std::env::var("INFLUXD_BIN").unwrap_or_else(|_| "/usr/bin/influxd".to_owned())
}

/// A plain HTTP client with a per-request timeout.
pub(super) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("an HTTP client")
}

/// How to run an influxd.
#[derive(Clone, Debug, Default)]
pub struct InfluxdOptions {
    /// `auth-enabled = true` with this `shared-secret` (JWT) when set.
    pub shared_secret: Option<String>,
    /// More `INFLUXDB_*` settings.
    pub env: Vec<(String, String)>,
}

impl InfluxdOptions {
    /// An `auth-enabled` server accepting JWTs signed with `secret`.
    pub fn auth(secret: &str) -> Self {
        InfluxdOptions {
            shared_secret: Some(secret.to_owned()),
            env: Vec::new(),
        }
    }
}

/// A running influxd; killed when dropped.
pub struct Influxd {
    child: Option<Child>,
    /// The HTTP API (`INFLUXDB_HTTP_BIND_ADDRESS`).
    pub http_addr: SocketAddr,
    /// The RPC/snapshot port (`INFLUXDB_BIND_ADDRESS`).
    pub rpc_addr: SocketAddr,
    /// Holds `meta/`, `data/`, `wal/` and `influxd.log`.
    pub dir: PathBuf,
    options: InfluxdOptions,
}

impl Influxd {
    /// Starts influxd with its files under `dir` and waits until it answers `/ping`.
    pub async fn start(dir: &Path, options: &InfluxdOptions) -> Influxd {
        let mut s = Influxd::spawn_fresh(dir, options);
        s.wait_ready_or_retry().await;
        s
    }

    /// Starts `dirs.len()` servers in parallel, one per directory.
    pub async fn start_many(dirs: &[PathBuf], options: &InfluxdOptions) -> Vec<Influxd> {
        let mut servers: Vec<Influxd> = dirs
            .iter()
            .map(|d| Influxd::spawn_fresh(d, options))
            .collect();
        futures::future::join_all(servers.iter_mut().map(|s| s.wait_ready_or_retry())).await;
        servers
    }

    fn spawn_fresh(dir: &Path, options: &InfluxdOptions) -> Influxd {
        std::fs::create_dir_all(dir).expect("create the influxd directory");
        let mut s = Influxd {
            child: None,
            http_addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            rpc_addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            dir: dir.to_owned(),
            options: options.clone(),
        };
        if let Err(e) = s.spawn() {
            panic!("{e}");
        }
        s
    }

    /// Waits for `/ping`; a server that exits (a port taken) is tried again
    /// on fresh ports.
    async fn wait_ready_or_retry(&mut self) {
        let mut last = String::new();
        for attempt in 0..START_ATTEMPTS {
            if attempt > 0 {
                self.http_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
                self.rpc_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
                if let Err(e) = self.spawn() {
                    panic!("{e}");
                }
            }
            match self.wait_ready().await {
                Ok(()) => return,
                Err(e) => last = e,
            }
        }
        panic!("influxd did not start in {}: {last}", self.dir.display());
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("influxd log file: {e}"))?;
        let mut cmd = Command::new(influxd_bin());
        clean_env(&mut cmd);
        cmd.arg("run")
            .env("INFLUXDB_META_DIR", self.meta_dir())
            .env("INFLUXDB_DATA_DIR", self.data_dir())
            .env("INFLUXDB_DATA_WAL_DIR", self.wal_dir())
            .env("INFLUXDB_HTTP_BIND_ADDRESS", self.http_addr.to_string())
            .env("INFLUXDB_BIND_ADDRESS", self.rpc_addr.to_string())
            .env("INFLUXDB_REPORTING_DISABLED", "true")
            .env("INFLUXDB_HTTP_LOG_ENABLED", "false")
            .env("INFLUXDB_LOGGING_LEVEL", "warn")
            .env("INFLUXDB_DATA_QUERY_LOG_ENABLED", "false");
        if let Some(secret) = &self.options.shared_secret {
            cmd.env("INFLUXDB_HTTP_AUTH_ENABLED", "true")
                .env("INFLUXDB_HTTP_SHARED_SECRET", secret);
        }
        for (k, v) in &self.options.env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| format!("influxd log: {e}"))?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", influxd_bin()))?;
        self.child = Some(child);
        Ok(())
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let http = http_client();
        let until = Instant::now() + INFLUXD_START_DEADLINE;
        loop {
            if let Some(status) = exited(&mut self.child) {
                self.child = None;
                return Err(format!(
                    "influxd exited with {status}; log:\n{}",
                    log_tail(&self.log_path(), 30)
                ));
            }
            let ping = http
                .get(format!("{}/ping", self.url()))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if matches!(&ping, Ok(r) if r.status().as_u16() == 204) {
                // A foreign server on a port we lost would answer too: ours
                // must still be running.
                tokio::time::sleep(Duration::from_millis(50)).await;
                if exited(&mut self.child).is_none() {
                    return Ok(());
                }
                continue;
            }
            if Instant::now() >= until {
                kill_child(&mut self.child);
                return Err(format!(
                    "no /ping answer on {} within {INFLUXD_START_DEADLINE:?}; log:\n{}",
                    self.http_addr,
                    log_tail(&self.log_path(), 30)
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    pub fn meta_dir(&self) -> PathBuf {
        self.dir.join("meta")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn wal_dir(&self) -> PathBuf {
        self.dir.join("wal")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("influxd.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The server's shared secret, when it is `auth-enabled`.
    pub fn shared_secret(&self) -> Option<&str> {
        self.options.shared_secret.as_deref()
    }

    /// InfluxDB's HTTP API on this server, without credentials.
    pub fn api(&self) -> InfluxApi {
        InfluxApi::new(&self.url())
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && exited(&mut self.child).is_none()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("influxd is running").id()
    }

    /// Its CPU time and memory so far (`None` when it is not running).
    pub fn usage(&self) -> Option<ProcessUsage> {
        process_usage(self.child.as_ref()?.id())
    }

    /// Kills the server (SIGKILL, as a crash would).
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }

    /// Starts the server again on the same directories and ports (which it
    /// frees when it dies), and waits until it answers `/ping`.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "influxd is still running");
        let until = Instant::now() + Duration::from_secs(10);
        while !(port_is_free(self.http_addr.port()) && port_is_free(self.rpc_addr.port())) {
            assert!(
                Instant::now() < until,
                "influxd's ports {} / {} stay taken",
                self.http_addr,
                self.rpc_addr
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.spawn().unwrap_or_else(|e| panic!("{e}"));
        self.wait_ready()
            .await
            .unwrap_or_else(|e| panic!("influxd did not start again: {e}"));
    }
}

impl Drop for Influxd {
    fn drop(&mut self) {
        self.kill();
        if show_logs() {
            eprintln!(
                "--- influxd log ({}, {}) ---\n{}--- end of influxd log ---",
                self.http_addr,
                self.dir.display(),
                log_tail(&self.log_path(), LOG_TAIL_LINES)
            );
        }
    }
}

// ---------------------------------------------------------------------------
// InfluxDB's HTTP API
// ---------------------------------------------------------------------------

/// How [`InfluxApi`] authenticates.
#[derive(Clone, Debug)]
pub enum Credentials {
    None,
    /// `u` and `p` query parameters.
    Password {
        username: String,
        password: String,
    },
    /// `Authorization: Bearer <jwt>` signed with the server's shared secret.
    Jwt {
        secret: String,
        username: String,
    },
}

/// One series of a `/query` answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    pub name: Option<String>,
    pub columns: Vec<String>,
    pub values: Vec<Vec<Value>>,
}

impl Series {
    /// The value of `column` in `row`.
    pub fn get<'a>(&self, row: &'a [Value], column: &str) -> Option<&'a Value> {
        let i = self.columns.iter().position(|c| c == column)?;
        row.get(i)
    }
}

/// A row of `SHOW RETENTION POLICIES`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PolicyRow {
    pub name: String,
    /// As influxd shows it, e.g. `48h0m0s`; `0s` is infinite.
    pub duration: String,
    pub shard_group_duration: String,
    pub replica_n: u64,
    pub default: bool,
}

/// InfluxDB's HTTP API (`/query`, `/write`) on one server.
#[derive(Clone)]
pub struct InfluxApi {
    base: String,
    credentials: Credentials,
    http: reqwest::Client,
}

impl InfluxApi {
    /// The API at `base` (`http://host:port`), without credentials.
    pub fn new(base: &str) -> Self {
        InfluxApi {
            base: base.trim_end_matches('/').to_owned(),
            credentials: Credentials::None,
            http: http_client(),
        }
    }

    /// The same API with `u`/`p` credentials.
    pub fn login(&self, username: &str, password: &str) -> Self {
        InfluxApi {
            credentials: Credentials::Password {
                username: username.to_owned(),
                password: password.to_owned(),
            },
            ..self.clone()
        }
    }

    /// The same API acting as `username` with a JWT signed with `secret`.
    pub fn jwt(&self, secret: &str, username: &str) -> Self {
        InfluxApi {
            credentials: Credentials::Jwt {
                secret: secret.to_owned(),
                username: username.to_owned(),
            },
            ..self.clone()
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credentials {
            Credentials::None => req,
            Credentials::Password { username, password } => {
                req.query(&[("u", username), ("p", password)])
            }
            Credentials::Jwt { secret, username } => req.bearer_auth(
                cflux::agent::influxql::sign_jwt(secret, username, Duration::from_secs(300)),
            ),
        }
    }

    /// Sends `req` with the credentials: the HTTP status and the body.
    /// Panics only when the server does not answer.
    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> (u16, String) {
        let resp = self
            .authorize(req)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {what}: {e}", self.base));
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    /// `POST /query` with `q` (and `db` when given): the HTTP status and the
    /// JSON answer. Panics only when the server does not answer.
    pub async fn raw_query(&self, q: &str, db: Option<&str>) -> (u16, Value) {
        let mut form = vec![("q", q)];
        if let Some(db) = db {
            form.push(("db", db));
        }
        let req = self.http.post(format!("{}/query", self.base)).form(&form);
        let (status, body) = self.send(req, &format!("POST /query {q:?}")).await;
        let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
        (status, json)
    }

    /// Runs `q`: its series, or the first error (top-level or per statement).
    pub async fn try_query(&self, q: &str) -> Result<Vec<Series>, String> {
        self.try_query_db(q, None).await
    }

    /// [`InfluxApi::try_query`] with a `db` parameter.
    pub async fn try_query_db(&self, q: &str, db: Option<&str>) -> Result<Vec<Series>, String> {
        let (status, v) = self.raw_query(q, db).await;
        if let Some(e) = v.get("error").and_then(Value::as_str) {
            return Err(format!("HTTP {status}: {e}"));
        }
        let results = v
            .get("results")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("HTTP {status}: unexpected answer {v}"))?;
        let mut out = Vec::new();
        for r in results {
            if let Some(e) = r.get("error").and_then(Value::as_str) {
                return Err(e.to_owned());
            }
            for s in r
                .get("series")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                out.push(Series {
                    name: s.get("name").and_then(Value::as_str).map(str::to_owned),
                    columns: s
                        .get("columns")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|c| c.as_str().map(str::to_owned))
                        .collect(),
                    values: s
                        .get("values")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|row| row.as_array().cloned())
                        .collect(),
                });
            }
        }
        Ok(out)
    }

    /// Runs `q` and panics on an error.
    pub async fn query(&self, q: &str) -> Vec<Series> {
        self.try_query(q)
            .await
            .unwrap_or_else(|e| panic!("{}: {q:?} failed: {e}", self.base))
    }

    /// Runs a statement that returns nothing of interest; panics on an error.
    pub async fn exec(&self, q: &str) {
        self.query(q).await;
    }

    /// `SHOW DATABASES`.
    pub async fn databases(&self) -> BTreeSet<String> {
        strings(&self.query("SHOW DATABASES").await, "name")
    }

    /// `SHOW RETENTION POLICIES ON db`; `Err` when the database is missing.
    pub async fn retention_policies(&self, db: &str) -> Result<Vec<PolicyRow>, String> {
        let series = self
            .try_query(&format!("SHOW RETENTION POLICIES ON {}", ident(db)))
            .await?;
        let mut rows: Vec<PolicyRow> = series
            .iter()
            .flat_map(|s| {
                s.values.iter().map(move |row| {
                    let text = |c: &str| {
                        s.get(row, c)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned()
                    };
                    PolicyRow {
                        name: text("name"),
                        duration: text("duration"),
                        shard_group_duration: text("shardGroupDuration"),
                        replica_n: s.get(row, "replicaN").and_then(Value::as_u64).unwrap_or(0),
                        default: s
                            .get(row, "default")
                            .and_then(Value::as_bool)
                            .unwrap_or(false),
                    }
                })
            })
            .collect();
        rows.sort();
        Ok(rows)
    }

    /// `SHOW CONTINUOUS QUERIES`: (database, name) → query text.
    pub async fn continuous_queries(&self) -> BTreeMap<(String, String), String> {
        let mut out = BTreeMap::new();
        for s in self.query("SHOW CONTINUOUS QUERIES").await {
            let db = s.name.clone().unwrap_or_default();
            for row in &s.values {
                let name = s.get(row, "name").and_then(Value::as_str).unwrap_or("");
                let query = s.get(row, "query").and_then(Value::as_str).unwrap_or("");
                out.insert((db.clone(), name.to_owned()), query.to_owned());
            }
        }
        out
    }

    /// `SHOW SUBSCRIPTIONS`: (database, policy, name) → (mode, destinations).
    pub async fn subscriptions(&self) -> BTreeMap<(String, String, String), (String, Vec<String>)> {
        let mut out = BTreeMap::new();
        for s in self.query("SHOW SUBSCRIPTIONS").await {
            let db = s.name.clone().unwrap_or_default();
            for row in &s.values {
                let text = |c: &str| {
                    s.get(row, c)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                let destinations = s
                    .get(row, "destinations")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|d| d.as_str().map(str::to_owned))
                    .collect();
                out.insert(
                    (db.clone(), text("retention_policy"), text("name")),
                    (text("mode"), destinations),
                );
            }
        }
        out
    }

    /// `SHOW USERS`: user → admin flag.
    pub async fn users(&self) -> BTreeMap<String, bool> {
        let mut out = BTreeMap::new();
        for s in self.query("SHOW USERS").await {
            for row in &s.values {
                let user = s.get(row, "user").and_then(Value::as_str).unwrap_or("");
                let admin = s
                    .get(row, "admin")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                out.insert(user.to_owned(), admin);
            }
        }
        out
    }

    /// `SHOW GRANTS FOR user`: database → privilege (`READ`, `WRITE`, `ALL
    /// PRIVILEGES`); databases with `NO PRIVILEGES` are left out. `Err` when
    /// the user is missing.
    pub async fn grants(&self, user: &str) -> Result<BTreeMap<String, String>, String> {
        let series = self
            .try_query(&format!("SHOW GRANTS FOR {}", ident(user)))
            .await?;
        let mut out = BTreeMap::new();
        for s in &series {
            for row in &s.values {
                let db = s.get(row, "database").and_then(Value::as_str).unwrap_or("");
                let p = s
                    .get(row, "privilege")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if p != "NO PRIVILEGES" {
                    out.insert(db.to_owned(), p.to_owned());
                }
            }
        }
        Ok(out)
    }

    /// `POST /write?db=…` of line protocol; panics unless influxd answers 204.
    pub async fn write(&self, db: &str, lines: &str) {
        self.write_rp(db, "", lines).await
    }

    /// [`Self::write`] into retention policy `rp` (empty: the default one).
    pub async fn write_rp(&self, db: &str, rp: &str, lines: &str) {
        let mut query = vec![("db", db)];
        if !rp.is_empty() {
            query.push(("rp", rp));
        }
        let req = self
            .http
            .post(format!("{}/write", self.base))
            .query(&query)
            .body(lines.to_owned());
        let (status, body) = self.send(req, "POST /write").await;
        assert_eq!(status, 204, "{}: write to {db} answered {body}", self.base);
    }

    /// The first value of the first row of `SELECT …` in `db`, as a number;
    /// `None` when there is no series (nothing written, or no such database).
    pub async fn select_number(&self, db: &str, q: &str) -> Option<f64> {
        let series = self.try_query_db(q, Some(db)).await.ok()?;
        let s = series.first()?;
        let row = s.values.first()?;
        row.get(1).and_then(Value::as_f64)
    }
}

/// The `column` of every row of every series.
pub fn strings(series: &[Series], column: &str) -> BTreeSet<String> {
    series
        .iter()
        .flat_map(|s| {
            s.values
                .iter()
                .filter_map(move |row| s.get(row, column).and_then(Value::as_str))
        })
        .map(str::to_owned)
        .collect()
}

/// An InfluxQL identifier, double-quoted.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}
