//! The agent's [`MetaClient`]: a stock influxd as the node's metadata owner.
//!
//! - Reads the catalog from influxd's own `meta.db` (written whole and renamed
//!   over by influxd on every change), and watches its directory so a local
//!   `CREATE DATABASE` is noticed at once; the client's periodic resync is the
//!   safety net for a missed event.
//! - Applies the cluster's catalog through InfluxQL over the HTTP API, in the
//!   dependency order [`crate::influx::diff`] plans, so a remote `DROP`
//!   deletes data exactly as a local one does. A statement influxd refuses
//!   does not stop the rest (only what depends on it is skipped); it is
//!   retried with backoff, counted, and shown on `/health`.
//! - Users: InfluxQL cannot set a password hash, so a user created (or
//!   re-passworded) from the cluster gets a random local password. The agent
//!   remembers which local hash stands for which cluster hash (`user-hashes.json`
//!   in its state directory) and reports the cluster's hash for it, so its own
//!   random passwords are never pushed back as local changes, while a real
//!   local `SET PASSWORD` still is.
//! - A local change racing with an apply is kept: the caller computed its
//!   target from the catalog [`MetaClient::catalog`] last returned, so what
//!   `meta.db` holds beyond that when the apply starts (a `CREATE DATABASE`
//!   answered meanwhile) is merged back on top of the target instead of
//!   being undone; the caller's next read sees it and pushes it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use notify::Watcher;

use crate::agent::turns::Turns;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::agent::influxql::{Influxd, InfluxdError};
use crate::agent::metadb;
use crate::backoff::Backoff;
use crate::client::meta::{MetaCause, MetaClient, MetaError, MetaIdentity};
use crate::influx::catalog::{is_node_local_database, Catalog};
use crate::influx::change::{Change, Password, Target};
use crate::influx::diff::diff;
use crate::influx::influxql::{quote_ident, quote_string};
use crate::influx::merge::merge;

/// Passes over the statements in one apply before the refused ones are left
/// to the sync task's next try.
const APPLY_ROUNDS: usize = 3;

/// A statement influxd refused, as `/health` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ApplyError {
    /// The statement, passwords redacted.
    pub statement: String,
    /// influxd's answer.
    pub error: String,
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
}

/// How applies went: refusals counted for `/metrics`, the last one kept for
/// `/health` until an apply succeeds whole.
struct ApplyStatus {
    registry: prometheus::Registry,
    refused: prometheus::IntCounter,
    last_error: Mutex<Option<ApplyError>>,
}

impl ApplyStatus {
    fn new() -> Self {
        let registry = prometheus::Registry::new();
        let refused = crate::telemetry::register(
            &registry,
            prometheus::IntCounter::new(
                "cflux_node_apply_errors_total",
                "Statements influxd refused while applying the cluster catalog.",
            ),
        );
        ApplyStatus {
            registry,
            refused,
            last_error: Mutex::new(None),
        }
    }

    fn last_error(&self) -> std::sync::MutexGuard<'_, Option<ApplyError>> {
        self.last_error.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A local hash the agent caused, and the cluster hash it stands for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct HashPair {
    local: String,
    cluster: String,
}

/// influxd as a [`MetaClient`].
pub struct InfluxdMeta {
    influxd: Influxd,
    meta_db: PathBuf,
    hashes_file: PathBuf,
    hashes: Mutex<BTreeMap<String, HashPair>>,
    /// What `catalog()` last returned, or what the last whole apply left:
    /// the catalog the caller's next target is computed from, and the
    /// identity of the `meta.db` it came from.
    seen: Mutex<Option<(Catalog, MetaIdentity)>>,
    changes: watch::Sender<u64>,
    status: ApplyStatus,
    /// Taken for each apply: replicated deletions wait for it.
    turns: Turns,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl InfluxdMeta {
    /// Watches `meta_dir/meta.db`; keeps its own files in `state_dir`.
    pub async fn new(
        influxd: Influxd,
        meta_dir: &Path,
        state_dir: &Path,
        turns: Turns,
    ) -> Result<Self, MetaError> {
        tokio::fs::create_dir_all(state_dir)
            .await
            .map_err(|e| failed(state_dir, e))?;
        let hashes_file = state_dir.join("user-hashes.json");
        let hashes = match tokio::fs::read(&hashes_file).await {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| failed(&hashes_file, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(failed(&hashes_file, e)),
        };
        let changes = watch::channel(0).0;
        let watcher = watch_meta_dir(meta_dir, changes.clone());
        Ok(InfluxdMeta {
            influxd,
            meta_db: meta_dir.join("meta.db"),
            hashes_file,
            hashes: Mutex::new(hashes),
            seen: Mutex::new(None),
            changes,
            status: ApplyStatus::new(),
            turns,
            _watcher: watcher,
        })
    }

    /// The statement influxd last refused, until an apply succeeds whole.
    pub fn last_apply_error(&self) -> Option<ApplyError> {
        self.status.last_error().clone()
    }

    /// The adapter's metrics, Prometheus text.
    pub fn render_metrics(&self) -> String {
        crate::telemetry::render(&self.status.registry)
    }

    /// One pass over the statements from `current` to `goal`. A statement
    /// influxd refuses is logged and counted, and the pass goes on with every
    /// statement that does not depend on it; the refusals are returned. An
    /// unreachable influxd ends the pass.
    async fn apply_pass(
        &self,
        current: &Catalog,
        goal: &Catalog,
    ) -> Result<Vec<InfluxdError>, MetaError> {
        let mut admin = some_admin(current);
        let mut refused: Vec<(Target, InfluxdError)> = Vec::new();
        for statement in diff(current, goal) {
            let target = statement.target();
            if refused.iter().any(|(t, _)| target.depends_on(t)) {
                continue;
            }
            let influxql = match (&statement.change, &statement.influxql) {
                (_, Some(q)) => q.clone(),
                (Change::PasswordHashChanged { user }, None) => {
                    // The cluster's hash cannot be set here: lock the old
                    // local password out with a random one instead.
                    format!(
                        "SET PASSWORD FOR {} = {}",
                        quote_ident(user),
                        quote_string(Password::random().expose())
                    )
                }
                _ => continue,
            };
            let shown = statement
                .redacted()
                .unwrap_or_else(|| "SET PASSWORD FOR … = '***'".into());
            tracing::info!(statement = %shown, "applying");
            match self
                .influxd
                .execute(&influxql, &shown, admin.as_deref())
                .await
            {
                Ok(()) => {}
                Err(e) if e.is_refusal() => {
                    tracing::warn!(error = %e, "influxd refused a statement; applying the rest");
                    self.status.refused.inc();
                    if let InfluxdError::Refused { statement, answer } = &e {
                        *self.status.last_error() = Some(ApplyError {
                            statement: statement.clone(),
                            error: answer.clone(),
                            at_ms: crate::clock::now_ms(),
                        });
                    }
                    refused.push((target, e));
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            if admin.is_none() {
                // The first admin user may just have been created.
                admin = some_admin(&self.read_raw().await?);
            }
        }
        Ok(refused.into_iter().map(|(_, e)| e).collect())
    }

    /// `meta.db` as it is now; a file influxd would refuse is unavailable.
    async fn read_raw(&self) -> Result<Catalog, MetaError> {
        Ok(self.read_identified().await?.0)
    }

    async fn read_identified(&self) -> Result<(Catalog, MetaIdentity), MetaError> {
        metadb::read(&self.meta_db)
            .await
            .map_err(|e| MetaError::Unavailable(Box::new(e)))
    }

    fn pairs(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, HashPair>> {
        self.hashes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The catalog in the cluster's terms: hashes the agent caused are
    /// reported as the cluster hashes they stand for.
    fn to_cluster_terms(&self, mut c: Catalog) -> Catalog {
        let pairs = self.pairs();
        for (name, user) in c.users.iter_mut() {
            if let Some(p) = pairs.get(name).filter(|p| p.local == user.hash) {
                user.hash = p.cluster.clone();
            }
        }
        c
    }

    /// The target in local terms: cluster hashes already stood for by a
    /// local hash need no change.
    fn to_local_terms(&self, mut c: Catalog) -> Catalog {
        let pairs = self.pairs();
        for (name, user) in c.users.iter_mut() {
            if let Some(p) = pairs.get(name).filter(|p| p.cluster == user.hash) {
                user.hash = p.local.clone();
            }
        }
        c
    }

    async fn remember_hashes(&self, target: &Catalog, after: &Catalog) -> Result<(), MetaError> {
        let json = {
            let mut pairs = self.pairs();
            pairs.clear();
            for (name, wanted) in &target.users {
                if let Some(local) = after.users.get(name).filter(|l| l.hash != wanted.hash) {
                    pairs.insert(
                        name.clone(),
                        HashPair {
                            local: local.hash.clone(),
                            cluster: wanted.hash.clone(),
                        },
                    );
                }
            }
            serde_json::to_vec_pretty(&*pairs).map_err(|e| failed(&self.hashes_file, e))?
        };
        // Written whole and renamed over, so a crash never leaves half a file.
        let tmp = self.hashes_file.with_extension("tmp");
        tokio::fs::write(&tmp, json)
            .await
            .map_err(|e| failed(&tmp, e))?;
        tokio::fs::rename(&tmp, &self.hashes_file)
            .await
            .map_err(|e| failed(&self.hashes_file, e))
    }
}

/// An operation on one of the agent's files that failed.
#[derive(Debug, thiserror::Error)]
#[error("{}", path.display())]
struct FileError {
    path: PathBuf,
    #[source]
    source: MetaCause,
}

/// A failed operation on `path`, with its cause.
fn failed(path: &Path, e: impl Into<MetaCause>) -> MetaError {
    MetaError::Failed(Box::new(FileError {
        path: path.to_owned(),
        source: e.into(),
    }))
}

/// Statements influxd still refused after every round of an apply.
#[derive(Debug, thiserror::Error)]
#[error("{count} statement(s) refused after {APPLY_ROUNDS} rounds, the rest applied; the first")]
struct ApplyRefused {
    count: usize,
    #[source]
    first: InfluxdError,
}

/// `meta.db` and the influxd the agent talks to are not the same server's.
#[derive(Debug, thiserror::Error)]
#[error("{meta_db} does not describe the influxd at {url}: databases only in meta.db {only_in_file:?}, only in influxd {only_in_server:?}; check --meta-dir and --influxdb-url")]
struct ServerMismatch {
    meta_db: String,
    url: String,
    only_in_file: Vec<String>,
    only_in_server: Vec<String>,
}

/// Bumps `changes` whenever something happens to `meta.db` in `dir`. A
/// watcher that cannot be set up is logged; the periodic resync still works.
fn watch_meta_dir(dir: &Path, changes: watch::Sender<u64>) -> Option<notify::RecommendedWatcher> {
    let handler = move |event: notify::Result<notify::Event>| {
        let touches_meta = match &event {
            // Opening or reading meta.db (as the agent itself does on every
            // reconcile) and metadata-only changes are no change of content;
            // counting them would make every read trigger the next one.
            Ok(e)
                if matches!(
                    e.kind,
                    notify::EventKind::Access(_)
                        | notify::EventKind::Modify(notify::event::ModifyKind::Metadata(_))
                ) =>
            {
                false
            }
            Ok(e) => e
                .paths
                .iter()
                .any(|p| p.file_name().is_some_and(|n| n == "meta.db")),
            Err(_) => true,
        };
        if touches_meta {
            changes.send_modify(|n| *n = n.wrapping_add(1));
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the meta directory; relying on the periodic re-read");
            return None;
        }
    };
    if let Err(e) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the meta directory; relying on the periodic re-read");
        return None;
    }
    Some(watcher)
}

/// A user influxd will accept in a JWT: the first admin.
fn some_admin(c: &Catalog) -> Option<String> {
    c.users.values().find(|u| u.admin).map(|u| u.name.clone())
}

#[async_trait]
impl MetaClient for InfluxdMeta {
    async fn catalog(&self) -> Result<Catalog, MetaError> {
        let (raw, identity) = self.read_identified().await?;
        let catalog = self.to_cluster_terms(raw);
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some((catalog.clone(), identity));
        Ok(catalog)
    }

    fn identity(&self) -> Option<MetaIdentity> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.as_ref().map(|(_, identity)| *identity)
    }

    /// The databases influxd lists must be `meta.db`'s (a `--meta-dir` of
    /// one server and an `--influxdb-url` of another would otherwise push
    /// the first's catalog over the cluster).
    async fn verify(&self) -> Result<(), MetaError> {
        let file = self.read_raw().await?;
        let admin = some_admin(&file);
        let listed = match self.influxd.databases(admin.as_deref()).await {
            Ok(listed) => listed,
            // An auth-enabled server without an admin answers nothing but
            // the first CREATE USER: nothing to compare it with until the
            // cluster's admins arrive.
            Err(e) if e.is_refusal() && admin.is_none() => {
                tracing::info!(error = &e as &dyn std::error::Error, "influxd lists no databases without an admin; meta.db is not checked against it");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let listed: std::collections::BTreeSet<String> = listed
            .into_iter()
            .filter(|d| !is_node_local_database(d))
            .collect();
        let in_file: std::collections::BTreeSet<String> = file.databases.keys().cloned().collect();
        if listed == in_file {
            return Ok(());
        }
        Err(MetaError::Mismatch(Box::new(ServerMismatch {
            meta_db: self.meta_db.display().to_string(),
            url: self.influxd.url().to_owned(),
            only_in_file: in_file.difference(&listed).cloned().collect(),
            only_in_server: listed.difference(&in_file).cloned().collect(),
        })))
    }

    async fn apply(&self, target: &Catalog) -> Result<(), MetaError> {
        let _turn = self.turns.take().await;
        let before = self.read_raw().await?;
        let now = self.to_cluster_terms(before.clone());
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let target = match seen.map(|(catalog, _)| catalog) {
            // Local changes since the caller's read are not in `target`:
            // keep them rather than undo them (a DROP of a database just
            // created here).
            Some(seen) if seen != now => {
                let m = merge(Some(&seen), &now, target);
                for w in &m.warnings {
                    tracing::warn!("merge with a concurrent local change: {w}");
                }
                tracing::info!("local changes made during the sync are kept");
                m.merged
            }
            _ => target.clone(),
        };
        let goal = self.to_local_terms(target.clone());
        // Refused statements are tried again after a wait: influxd may accept
        // them once something else changed (another node's fix arrived).
        let mut backoff =
            Backoff::new(Duration::from_millis(200), Duration::from_secs(2)).with_jitter(0.5);
        let mut current = before;
        let mut round = 1;
        loop {
            let pass = self.apply_pass(&current, &goal).await;
            // Created users' random hashes are remembered even after a
            // partial apply, so they are never pushed as local changes.
            let (after, identity) = self.read_identified().await?;
            current = after;
            self.remember_hashes(&target, &current).await?;
            let refused = pass?;
            let count = refused.len();
            let Some(first) = refused.into_iter().next() else {
                *self.status.last_error() = None;
                // What the node holds now, with the `Index` the apply raised
                // it to: the base the caller records next is this one, so an
                // older copy of meta.db restored later reads as older.
                let holds = self.to_cluster_terms(current);
                *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some((holds, identity));
                return Ok(());
            };
            if round == APPLY_ROUNDS {
                return Err(MetaError::Failed(Box::new(ApplyRefused { count, first })));
            }
            round += 1;
            backoff.wait().await;
        }
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}
