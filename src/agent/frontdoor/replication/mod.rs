//! Replicated writes (`--replicate`): every node of a cluster holds all of
//! the cluster's points.
//!
//! A client's write (`POST /write`, `/api/v2/write`, Prometheus'
//! `/api/v1/prom/write`) goes to the local influxd first, as the user who
//! sent it, its lines without a timestamp stamped here ([`timestamps`]). What influxd took is then queued
//! durably, in one group commit, for every other node of the cluster
//! ([`super::handoff`]), before the client hears 204: an acknowledged write
//! is on disk here twice — in influxd and in the queues — so a SIGKILL right
//! after the answer loses nothing. One delivery task per peer sends its
//! queue in order, many writes per request, to the peer's front door
//! ([`REPLICATE_PATH`]), and removes what the peer answered for; what it
//! could not take waits there, tried again with backoff. `consistency=`
//! decides how many nodes must have written a write before its 204
//! ([`super::consistency`]).
//!
//! A write whose local influxd is down is queued for this node too (the
//! `(local)` queue, delivered through this front door's own replication
//! endpoint), but only when the front door verified the user itself: a
//! user only influxd could have checked cannot be vouched for.
//!
//! Replication requests carry an HMAC-SHA256 over a timestamp and the body
//! under `--replication-secret-file`, which only the cluster's nodes hold.
//! The receiver writes them to its own influxd only (never forwarding them
//! again), as the user who wrote them — a JWT for that user, so influxd
//! enforces the user's privileges exactly as for a direct write.
//!
//! Subscriptions fire once, here, for the writes this front door accepted
//! ([`super::subscriptions`]); replicated copies never reach a subscriber.
//!
//! Statements that change points (`DELETE`, `DROP SERIES`, `DROP
//! MEASUREMENT`, `SELECT … INTO`) travel through the same queues, in order
//! with the writes ([`data_statements`]); a dropped database or policy
//! takes its queued writes with it ([`drops`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use hmac::{Hmac, Mac};
use http::header::{self, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use prost::Message;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::agent::frontdoor::answer::InfluxdIdentity;
use crate::agent::frontdoor::authentication::{JWT_LIFETIME, MAX_FORM_BYTES};
use crate::agent::frontdoor::consistency::{self, Consistency, Outcomes, Pending, Tally};
use crate::agent::frontdoor::handoff::{Append, Committer, Handoff, HandoffError, Limits};
use crate::agent::frontdoor::metrics::{ReplicationMetrics, UpstreamUnreachable};
use crate::agent::frontdoor::proxy::Upstream;
use crate::agent::frontdoor::statements::{self, Kind};
use crate::agent::frontdoor::subscriptions::{Accepted, Subscriptions};
use crate::agent::frontdoor::timestamps;
use crate::agent::influxql::sign_jwt;
use crate::agent::turns::Turns;
use crate::backoff::Backoff;
use crate::clock::now_ms;
use crate::influx::catalog::Catalog;
use crate::telemetry::with_causes;
use data_statements::QueryParams;

mod catalog_barrier;
mod data_statements;
mod drops;
mod joining;
mod membership;
mod origin_catalog;

pub use catalog_barrier::{peer_catalog, AppliedCatalog, CatalogSync, PEER_CATALOG_PATH};
pub use joining::PeerAnswer;
pub use membership::{Learned, MemberSource};
pub use origin_catalog::OriginCatalog;

/// Where a front door takes replicated writes from its peers.
pub const REPLICATE_PATH: &str = "/cflux/v1/replicate";
/// Where a front door answers queries for a peer whose influxd is down.
pub const QUERY_PATH: &str = "/cflux/v1/query";
/// Where a front door shows its queues (`cfluxctl queues`).
pub const QUEUES_PATH: &str = "/cflux/v1/queues";
/// Where a front door shows its queues to a peer (signed), whose catch-up
/// check waits while deletions are still queued anywhere.
pub const PEER_QUEUES_PATH: &str = "/cflux/v1/peer-queues";
/// The node whose influxd answered a query.
pub const SERVED_BY_HEADER: &str = "x-cflux-served-by";
/// The queue of writes this node's own influxd could not take.
pub const LOCAL: &str = "(local)";
/// The largest write body the front door buffers (influxd's own limit is 25 MB).
pub const MAX_WRITE_BYTES: usize = 32 << 20;
/// The largest decompressed gzip write the front door stamps.
const MAX_PLAIN_WRITE_BYTES: usize = 4 * MAX_WRITE_BYTES;
/// How long a write waits for its consistency (Enterprise's write-timeout).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a write waits for the first listing of the members (or, with
/// no manager answering, for the remembered ones) before it is refused.
const MEMBERS_WAIT: Duration = Duration::from_secs(10);
/// How far a replication request's timestamp may be from the receiver's clock.
const MAX_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;
/// One delivery request takes at most this many writes, or this many bytes.
const BATCH_ENTRIES: usize = 512;
const BATCH_BYTES: usize = 8 << 20;
/// How long one delivery request may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the queues are checked for entries past `--hh-max-age` (at
/// least twice per max age).
const EXPIRY_INTERVAL: Duration = Duration::from_secs(10);
pub(crate) const SIGNATURE_HEADER: &str = "x-cflux-signature";
pub(crate) const TIMESTAMP_HEADER: &str = "x-cflux-timestamp";

/// One write as it travels to a peer and waits in a queue.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Hint {
    /// `/write?db=…` or `/api/v2/write?bucket=…`, without credentials.
    #[prost(string, tag = "1")]
    pub path_and_query: String,
    /// Who wrote it; none for a write without credentials.
    #[prost(string, optional, tag = "2")]
    pub user: Option<String>,
    #[prost(string, optional, tag = "3")]
    pub content_encoding: Option<String>,
    #[prost(bytes = "bytes", tag = "4")]
    pub body: Bytes,
    #[prost(uint64, tag = "5")]
    pub queued_at_ms: u64,
}

/// A delivery request: writes in queue order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Batch {
    #[prost(message, repeated, tag = "1")]
    pub hints: Vec<Hint>,
    /// The sender's catalog; none from an agent that does not say it.
    #[prost(message, optional, tag = "2")]
    pub origin: Option<OriginCatalog>,
}

/// What the receiver did with each write of a batch, in order; fewer than
/// the batch's writes when it had to stop (the rest stays queued).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Receipt {
    /// `true` written, `false` refused for good (a client error).
    pub outcomes: Vec<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What replication needs to know.
#[derive(Clone, Debug)]
pub struct ReplicationSettings {
    /// The members' credential (`--replication-secret-file`).
    pub secret: Vec<u8>,
    /// Where the queues live (under the agent's state directory).
    pub dir: std::path::PathBuf,
    pub limits: Limits,
    /// How long a peer's write to a database this node's influxd does not
    /// have is answered "not yet" (the catalog may be behind) rather than
    /// refused for good (`--hh-missing-database-wait`).
    pub missing_database_wait: Duration,
    /// The consistency of a write whose client names none
    /// (`--default-consistency`).
    pub default_consistency: Consistency,
    /// This front door, as its own `(local)` queue reaches it.
    pub own_address: String,
    /// How long the answer to a catalog change waits for the other nodes
    /// to apply it (`--catalog-wait`).
    pub catalog_wait: Duration,
    /// The node's catalog sync, which the catalog barrier pushes and peers
    /// ask about; `None` where the node syncs no catalog.
    pub catalog_sync: Option<CatalogSync>,
    /// Taken for each peer's statement, as catalog applies take it.
    pub turns: Turns,
}

/// The cluster's other nodes as the manager lists them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Members {
    /// This node's ID.
    pub node_id: String,
    /// Node ID → front-door address (`http_addr`).
    pub peers: BTreeMap<String, String>,
    /// The peers listed alive, which reads fail over to.
    pub alive: BTreeSet<String>,
}

/// A query a front door whose influxd is down hands to a peer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryCall {
    #[prost(string, tag = "1")]
    pub method: String,
    /// `/query?…`, without credentials.
    #[prost(string, tag = "2")]
    pub path_and_query: String,
    #[prost(string, optional, tag = "3")]
    pub content_type: Option<String>,
    /// Who asks; none for a query without credentials.
    #[prost(string, optional, tag = "4")]
    pub user: Option<String>,
    #[prost(bytes = "bytes", tag = "5")]
    pub body: Bytes,
}

/// A delivery task's wake-up call.
struct Courier {
    wake: Arc<Notify>,
}

/// Replication of one node.
pub struct Replication {
    secret: Vec<u8>,
    /// influxd's shared secret: replicated writes act as their user.
    jwt_secret: Option<String>,
    own_address: String,
    handoff: Arc<Handoff>,
    committer: Committer<Tally>,
    pending: Arc<Pending>,
    /// Node ID → address: who new writes are queued for.
    members: RwLock<BTreeMap<String, String>>,
    /// Whether `members` is known: listed by a manager, or, when none
    /// answers soon after the start, remembered from the last run (see
    /// [`membership`]). Until then writes wait, then are refused.
    members_known: watch::Sender<bool>,
    /// This node's ID as a header value, once registered.
    own_id: RwLock<Option<HeaderValue>>,
    /// The peers listed alive.
    alive: RwLock<BTreeSet<String>>,
    /// Every queue with an address, members or not.
    addresses: RwLock<BTreeMap<String, String>>,
    couriers: std::sync::Mutex<HashMap<String, Courier>>,
    /// Woken after a failed delivery: ask the manager again.
    refresh: Notify,
    /// Whether every alive peer queues new writes for this node yet.
    join: joining::JoinState,
    upstream: Arc<Upstream>,
    identity: Arc<InfluxdIdentity>,
    http: Client<HttpConnector, Full<Bytes>>,
    pub metrics: Arc<ReplicationMetrics>,
    /// How often queues are checked for entries past `--hh-max-age`.
    expiry_interval: Duration,
    missing_database_wait: Duration,
    default_consistency: Consistency,
    catalog_wait: Duration,
    catalog_sync: Option<CatalogSync>,
    turns: Turns,
    /// The node's catalog: who may see the queues.
    catalog: watch::Receiver<Option<Arc<Catalog>>>,
    /// Where accepted writes go on to subscribers.
    subscriptions: Arc<Subscriptions>,
    shutdown: CancellationToken,
}

/// Why replication cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("the hinted-handoff queues")]
    Handoff(#[from] HandoffError),
    #[error("the subscriptions' TLS client")]
    Tls(#[from] crate::client::tls::TlsError),
}

impl Replication {
    /// Opens the queues (off the async workers) and starts delivering
    /// what they hold to the peers remembered from the last run.
    pub async fn start(
        settings: ReplicationSettings,
        jwt_secret: Option<String>,
        upstream: Arc<Upstream>,
        identity: Arc<InfluxdIdentity>,
        catalog: watch::Receiver<Option<Arc<Catalog>>>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Replication>, ReplicationError> {
        let dir = settings.dir.clone();
        let limits = settings.limits;
        let handoff =
            tokio::task::spawn_blocking(move || Handoff::open(&dir, limits, is_statement_bytes))
                .await
                .map_err(|_| HandoffError::Stopped)??;
        let handoff = Arc::new(handoff);
        let known = handoff.known_peers()?;
        let pending = Arc::new(Pending::default());
        let committer = Committer::start(handoff.clone(), {
            let pending = pending.clone();
            move |seq, tally: &Tally| pending.register(seq, tally.clone())
        });
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(3)));
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        let subscriptions = Subscriptions::new(catalog.clone(), shutdown.clone())?;
        let replication = Arc::new(Replication {
            secret: settings.secret,
            jwt_secret: jwt_secret.filter(|s| !s.is_empty()),
            own_address: settings.own_address,
            handoff,
            committer,
            pending,
            members_known: watch::Sender::new(false),
            members: RwLock::new(known.clone()),
            own_id: RwLock::new(None),
            alive: RwLock::new(BTreeSet::new()),
            addresses: RwLock::new(BTreeMap::new()),
            couriers: std::sync::Mutex::new(HashMap::new()),
            refresh: Notify::new(),
            join: joining::JoinState::default(),
            upstream,
            identity,
            http,
            metrics: Arc::new(ReplicationMetrics::default()),
            expiry_interval: EXPIRY_INTERVAL
                .min(limits.max_age / 2)
                .max(Duration::from_millis(100)),
            missing_database_wait: settings.missing_database_wait,
            default_consistency: settings.default_consistency,
            catalog_wait: settings.catalog_wait,
            catalog_sync: settings.catalog_sync,
            turns: settings.turns,
            catalog,
            subscriptions,
            shutdown,
        });
        replication.metrics.set_peers(known.len());
        if !known.is_empty() {
            tokio::spawn(replication.clone().remembered_unless_listed(known.len()));
        }
        let mut addresses = known;
        addresses.insert(LOCAL.to_owned(), replication.own_address.clone());
        replication.set_addresses(addresses);
        tokio::spawn(replication.clone().expire_loop());
        tokio::spawn(replication.clone().follow_drops());
        Ok(replication)
    }

    /// Takes the manager's word on the members (`learned` from its watch or
    /// a listing): who new writes are queued for, and who is alive.
    async fn set_members(self: &Arc<Self>, m: Members, learned: Learned) {
        *self.own_id.write().unwrap_or_else(|e| e.into_inner()) =
            HeaderValue::from_str(&m.node_id).ok();
        *self.alive.write().unwrap_or_else(|e| e.into_inner()) = m.alive.clone();
        let changed = *self.members.read().unwrap_or_else(|e| e.into_inner()) != m.peers;
        if !changed {
            self.members_known.send_replace(true);
            return;
        }
        tracing::info!(peers = ?m.peers, from = learned.label(), "replicating to these peers");
        self.metrics.membership_changed(learned.label());
        self.metrics.set_peers(m.peers.len());
        *self.members.write().unwrap_or_else(|e| e.into_inner()) = m.peers.clone();
        let mut addresses = self
            .addresses
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        addresses.extend(m.peers.clone());
        self.set_addresses(addresses);
        let handoff = self.handoff.clone();
        self.members_known.send_replace(true);
        let remembered =
            tokio::task::spawn_blocking(move || handoff.remember_peers(&m.peers)).await;
        if let Ok(Err(e)) = remembered {
            tracing::warn!(error = %with_causes(&e), "cannot remember the peers");
        }
    }

    /// New addresses, and a delivery task for each queue that has none yet.
    fn set_addresses(self: &Arc<Self>, addresses: BTreeMap<String, String>) {
        *self.addresses.write().unwrap_or_else(|e| e.into_inner()) = addresses.clone();
        let mut couriers = self.couriers.lock().unwrap_or_else(|e| e.into_inner());
        for peer in addresses.keys() {
            let courier = couriers.entry(peer.clone()).or_insert_with(|| {
                let wake = Arc::new(Notify::new());
                tokio::spawn(self.clone().deliver(peer.clone(), wake.clone()));
                Courier { wake }
            });
            // A new address may reach a peer the old one did not.
            courier.wake.notify_one();
        }
    }

    fn wake(&self, peers: &[String]) {
        let couriers = self.couriers.lock().unwrap_or_else(|e| e.into_inner());
        for p in peers {
            if let Some(c) = couriers.get(p) {
                c.wake.notify_one();
            }
        }
    }

    /// Statements that change points still queued for some peer: while
    /// there are any, the nodes differ by what they delete.
    pub fn queued_statements(&self) -> u64 {
        self.handoff.stats().values().map(|s| s.kept).sum()
    }

    /// The queues' and the subscriptions' figures, for `/metrics`.
    pub fn render_metrics(&self) -> String {
        let mut text = self.metrics.render(&self.handoff.stats(), now_ms());
        text.push_str(&self.subscriptions.render_metrics());
        text
    }

    /// The subscriptions this front door fires.
    pub fn subscriptions(&self) -> Arc<Subscriptions> {
        self.subscriptions.clone()
    }

    /// Every queue of this node: the members', those of former members
    /// still holding writes, and `(local)` when it was used.
    pub fn queues(&self) -> Queues {
        let stats = self.handoff.stats();
        let totals = self.metrics.totals();
        let members = self
            .members
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let addresses = self
            .addresses
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let peers: BTreeSet<&String> = stats
            .keys()
            .chain(totals.keys())
            .chain(members.keys())
            .collect();
        let now = now_ms();
        let queues = peers
            .into_iter()
            .map(|peer| {
                let s = stats.get(peer).copied().unwrap_or_default();
                let t = totals.get(peer).cloned().unwrap_or_default();
                Queue {
                    peer: peer.clone(),
                    address: addresses.get(peer).cloned(),
                    member: members.contains_key(peer),
                    writes: s.entries,
                    statements: s.kept,
                    points: s.points,
                    bytes: s.bytes,
                    oldest_age_seconds: s.oldest_ms.map(|o| now.saturating_sub(o) as f64 / 1000.0),
                    delivered_points: t.delivered_points,
                    dropped_points: t.dropped_points,
                    errors: t.errors,
                }
            })
            .collect();
        let node_id = self
            .own_id
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(|v| v.to_str().ok().map(str::to_owned));
        Queues { node_id, queues }
    }

    /// `GET` [`QUEUES_PATH`]: for an admin the front door verified — or
    /// anyone while the cluster has no admin, as influxd then lets anyone
    /// in (auth off) or no one yet.
    fn show_queues(&self, writer: &Writer) -> Response {
        let allowed = match self.catalog.borrow().as_ref() {
            None => false,
            Some(c) => match &writer.user {
                Some(user) if writer.vouched => c.users.get(user).is_some_and(|u| u.admin),
                _ => !c.users.values().any(|u| u.admin),
            },
        };
        if allowed {
            return axum::Json(self.queues()).into_response();
        }
        let status = if writer.user.is_some() {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::UNAUTHORIZED
        };
        self.identity
            .error(status, "the queues are shown to admin users only")
    }

    /// A client's write: stamped where a line has no timestamp, written
    /// here, queued for the peers, answered when its consistency is reached.
    async fn write(&self, request: Request, next: Next) -> Response {
        let consistency =
            match Consistency::from_query(request.uri().query(), self.default_consistency) {
                Ok(c) => c,
                Err(e) => return self.identity.error(StatusCode::BAD_REQUEST, &e.to_string()),
            };
        let writer = request
            .extensions()
            .get::<Writer>()
            .cloned()
            .unwrap_or_default();
        let (mut parts, body) = request.into_parts();
        let body = match Limited::new(body, MAX_WRITE_BYTES).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                return self
                    .identity
                    .error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
            }
            Err(_) => {
                return self
                    .identity
                    .error(StatusCode::BAD_REQUEST, "cannot read the request body")
            }
        };
        if let Err(refused) = self.members_known().await {
            return refused;
        }
        let body = stamp_lines(&mut parts, body);
        let hint = Hint {
            path_and_query: without_param(&parts.uri, "consistency"),
            user: writer.user.clone(),
            content_encoding: parts
                .headers
                .get(header::CONTENT_ENCODING)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: body.clone(),
            queued_at_ms: now_ms(),
        };
        let local = next.run(Request::from_parts(parts, Body::from(body))).await;
        let status = local.status();
        let unreachable = local.extensions().get::<UpstreamUnreachable>().is_some();
        let mut partial_answer = None;
        let (local, written_here) = if status.is_success() {
            (local, true)
        } else if status == StatusCode::BAD_REQUEST {
            // influxd writes the valid points of a partial write: so do the peers.
            let (local, partial) = is_partial_write(local).await;
            let Some(answer) = partial else {
                return local;
            };
            partial_answer = Some(answer);
            (local, true)
        } else if (unreachable || status.is_server_error()) && writer.vouched {
            (local, false)
        } else {
            return local;
        };
        let points = count_points(&hint);
        let (path_and_query, encoding, body) = (
            hint.path_and_query.clone(),
            hint.content_encoding.clone(),
            hint.body.clone(),
        );
        let queued = self.queue(hint, points, written_here, consistency).await;
        if written_here || queued.is_ok() {
            // Stored here, or queued to be (influxd down): the points are
            // the cluster's even when the consistency fell short, as an
            // Enterprise coordinator fires subscriptions before it waits.
            self.subscriptions.forward(Accepted {
                path_and_query: &path_and_query,
                content_encoding: encoding.as_deref(),
                body: &body,
                partial_answer: partial_answer.as_deref(),
            });
        }
        match queued {
            // A partial write is answered as influxd answered it, once the
            // valid points reached the consistency or it fell short: a
            // client that reads them next at another front door finds them.
            _ if partial_answer.is_some() => local,
            Ok(()) if written_here => local,
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(error) => self.error(error),
        }
    }

    /// Queues `hint` durably for every member (and for `(local)` when it
    /// was not `written_here`) and waits until `consistency` is reached;
    /// the error to answer when it falls short.
    async fn queue(
        &self,
        mut hint: Hint,
        points: u64,
        written_here: bool,
        consistency: Consistency,
    ) -> Result<(), &'static str> {
        let mut targets: Vec<String> = self
            .members
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        let nodes = targets.len() + 1;
        if !written_here {
            targets.push(LOCAL.to_owned());
        }
        if targets.is_empty() {
            return Ok(());
        }
        // Replication lag counts from the moment this node holds the write.
        hint.queued_at_ms = now_ms();
        let append = Append {
            hint: hint.encode_to_vec(),
            points,
            queued_at_ms: hint.queued_at_ms,
            peers: targets,
        };
        let tally = Tally::new(Outcomes::default());
        let appended = match self.committer.append(append, tally.clone()).await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %with_causes(e.as_ref()), "cannot queue a write for the peers");
                self.metrics.write_answered(consistency, "queue_failed");
                return Err(if written_here {
                    "partial write"
                } else {
                    "write failed"
                });
            }
        };
        for peer in &appended.full {
            self.metrics.dropped(peer, "full", points);
            tracing::warn!(%peer, points, "the peer's hinted-handoff queue is full (--hh-max-size): the write is not queued for it");
        }
        self.wake(&appended.queued);
        let queued: BTreeSet<String> = appended.queued.iter().cloned().collect();
        let verdict = consistency::settle(
            &tally,
            consistency,
            nodes,
            written_here,
            &queued,
            WRITE_TIMEOUT,
        )
        .await;
        self.pending.forget(appended.seq);
        self.metrics
            .write_answered(consistency, verdict.error().unwrap_or("ok"));
        verdict.error().map_or(Ok(()), Err)
    }

    /// Waits (up to [`MEMBERS_WAIT`]) until the members are known, so that
    /// no write is acknowledged on this node alone; a 503 after that.
    async fn members_known(&self) -> Result<(), Response> {
        let mut known = self.members_known.subscribe();
        let waited = tokio::time::timeout(MEMBERS_WAIT, known.wait_for(|k| *k)).await;
        if matches!(waited, Ok(Ok(_))) {
            return Ok(());
        }
        Err(self.identity.error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this front door does not know its cluster's members yet (no manager has listed them): \
             a write here could not be replicated, so it is refused; try again shortly",
        ))
    }

    /// Enterprise's answer to a write that fell short: 500 `{"error":…}`.
    fn error(&self, message: &str) -> Response {
        self.identity
            .error(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// A peer's batch, written to the local influxd only.
    async fn receive(&self, request: Request) -> Response {
        let (parts, body) = request.into_parts();
        let body = match Limited::new(body, BATCH_BYTES + MAX_WRITE_BYTES)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return self
                    .identity
                    .error(StatusCode::BAD_REQUEST, "cannot read the batch")
            }
        };
        if let Some(refused) = self.refuse_unsigned(&parts, &body) {
            return refused;
        }
        let batch = match Batch::decode(body) {
            Ok(b) => b,
            Err(_) => {
                return self
                    .identity
                    .error(StatusCode::BAD_REQUEST, "not a replication batch")
            }
        };
        let receipt = self.write_locally(batch.hints, batch.origin.as_ref()).await;
        axum::Json(receipt).into_response()
    }

    /// A peer's question without a body to speak of ([`PEER_QUEUES_PATH`],
    /// [`PEER_CATALOG_PATH`]): `Err` with the answer to one that cannot be
    /// read or does not carry the members' credential.
    async fn signed_question(&self, request: Request) -> Result<(), Response> {
        let (parts, body) = request.into_parts();
        let body = match Limited::new(body, 4096).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return Err(self
                    .identity
                    .error(StatusCode::BAD_REQUEST, "cannot read the request"))
            }
        };
        self.refuse_unsigned(&parts, &body).map_or(Ok(()), Err)
    }

    /// The refusal of a request that does not carry the members' credential.
    fn refuse_unsigned(&self, parts: &http::request::Parts, body: &[u8]) -> Option<Response> {
        let timestamp = parts
            .headers
            .get(TIMESTAMP_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let signature = parts
            .headers
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| hex::decode(v).ok());
        let trusted = match (timestamp, signature) {
            (Some(ts), Some(sig)) => {
                now_ms().abs_diff(ts) <= MAX_CLOCK_SKEW_MS && verify(&self.secret, ts, body, &sig)
            }
            _ => false,
        };
        if trusted {
            return None;
        }
        self.metrics.forged();
        let peer = parts
            .extensions
            .get::<crate::http_serve::PeerAddr>()
            .map(|p| p.0.to_string());
        tracing::warn!(
            peer = peer.as_deref().unwrap_or("-"),
            path = parts.uri.path(),
            "refused a replication request without a valid credential"
        );
        Some(
            self.identity
                .error(StatusCode::FORBIDDEN, "replication credential refused"),
        )
    }

    /// A query: statements that change points go to every node
    /// ([`data_statements`]), drops take their queued writes with them
    /// ([`drops`]), the rest is answered by the local influxd or, when it
    /// cannot be reached, by an alive peer (only for a user the front door
    /// verified, or a query without credentials); the answer names the node
    /// that served it. A catalog change is answered once every alive node
    /// has applied it ([`catalog_barrier`]).
    async fn query(&self, request: Request, next: Next) -> Response {
        let writer = request
            .extensions()
            .get::<Writer>()
            .cloned()
            .unwrap_or_default();
        let (parts, body) = request.into_parts();
        let body = match Limited::new(body, MAX_FORM_BYTES).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return self
                    .identity
                    .error(StatusCode::BAD_REQUEST, "cannot read the request body")
            }
        };
        let params = QueryParams::read(&parts, &body);
        let statements = params.get("q").map(statements::split).unwrap_or_default();
        let changes_catalog = statements.iter().any(|s| s.kind.changes_catalog());
        // Both read influxd's answer to its end.
        let response = if statements
            .iter()
            .any(|s| s.kind.is_replicated() || s.kind == Kind::DropShard)
        {
            self.data_statements(parts, body, params, statements, next)
                .await
        } else if statements.iter().any(|s| s.dropped().is_some()) {
            self.drop_statements(parts, body, &statements, next).await
        } else if changes_catalog {
            // influxd answers 200 before it runs the statements: read to
            // its end, the change is in `meta.db` when the barrier pushes.
            let response = self.read_or_change(parts, body, writer, next).await;
            data_statements::read_whole(response).await.0
        } else {
            return self.read_or_change(parts, body, writer, next).await;
        };
        if changes_catalog && response.status().is_success() {
            self.catalog_barrier().await;
        }
        response
    }

    /// A query without statements that change points.
    async fn read_or_change(
        &self,
        parts: http::request::Parts,
        body: Bytes,
        writer: Writer,
        next: Next,
    ) -> Response {
        let call = QueryCall {
            method: parts.method.to_string(),
            path_and_query: parts
                .uri
                .path_and_query()
                .map_or_else(|| "/query".to_owned(), |p| p.to_string()),
            content_type: parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            user: writer.user.clone(),
            body: body.clone(),
        };
        let local = next.run(Request::from_parts(parts, Body::from(body))).await;
        let down = local.extensions().get::<UpstreamUnreachable>().is_some();
        if down && (writer.vouched || writer.user.is_none()) {
            let alive: Vec<String> = {
                let alive = self.alive.read().unwrap_or_else(|e| e.into_inner());
                let addresses = self.addresses.read().unwrap_or_else(|e| e.into_inner());
                alive
                    .iter()
                    .filter_map(|p| addresses.get(p).cloned())
                    .collect()
            };
            let signed = Bytes::from(call.encode_to_vec());
            for address in alive {
                match self.ask_peer(&address, signed.clone()).await {
                    Ok(answer) => return answer,
                    Err(e) => {
                        tracing::debug!(peer = %address, error = %e, "a peer could not answer a query")
                    }
                }
            }
        }
        self.served_here(local)
    }

    fn served_here(&self, mut response: Response) -> Response {
        if let Some(id) = self
            .own_id
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            response.headers_mut().insert(SERVED_BY_HEADER, id);
        }
        response
    }

    /// A peer's answer to a query, streamed; `Err` when it has none (its
    /// influxd is down too, or it cannot be reached).
    async fn ask_peer(&self, address: &str, call: Bytes) -> Result<Response, String> {
        let response = self.signed_post(address, QUERY_PATH, call).await?;
        if response.status() == StatusCode::BAD_GATEWAY
            || response.status() == StatusCode::FORBIDDEN
        {
            return Err(format!("{}", response.status()));
        }
        Ok(response.map(Body::new))
    }

    /// A peer's query, run on the local influxd as its user.
    async fn answer_query(&self, request: Request) -> Response {
        let (parts, body) = request.into_parts();
        let body = match Limited::new(body, MAX_FORM_BYTES + 4096).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return self
                    .identity
                    .error(StatusCode::BAD_REQUEST, "cannot read the query")
            }
        };
        if let Some(refused) = self.refuse_unsigned(&parts, &body) {
            return refused;
        }
        let Ok(call) = QueryCall::decode(body) else {
            return self
                .identity
                .error(StatusCode::BAD_REQUEST, "not a query call");
        };
        if call.path_and_query.split('?').next() != Some("/query") {
            return self.identity.error(StatusCode::BAD_REQUEST, "not a query");
        }
        let mut request = Request::builder()
            .method(call.method.as_str())
            .uri(&call.path_and_query);
        if let Some(ct) = &call.content_type {
            request = request.header(header::CONTENT_TYPE, ct);
        }
        if let (Some(user), Some(secret)) = (&call.user, &self.jwt_secret) {
            let jwt = sign_jwt(secret, user, JWT_LIFETIME);
            request = request.header(header::AUTHORIZATION, format!("Bearer {jwt}"));
        }
        let Ok(request) = request.body(Body::from(call.body)) else {
            return self.identity.error(StatusCode::BAD_REQUEST, "not a query");
        };
        self.served_here(self.upstream.send(request).await)
    }

    /// Writes `hints` in order (runs of the same target and user as one
    /// request); stops at the first influxd cannot take now.
    async fn write_locally(&self, hints: Vec<Hint>, origin: Option<&OriginCatalog>) -> Receipt {
        let mut receipt = Receipt::default();
        let mut i = 0;
        while i < hints.len() {
            let first = &hints[i];
            let mut end = i + 1;
            // Line protocol of the same target and user goes as one request;
            // Prometheus bodies and statements one by one.
            let lines = matches!(path_of(first), "/write" | "/api/v2/write");
            if first.content_encoding.is_none() && lines {
                while end < hints.len()
                    && hints[end].content_encoding.is_none()
                    && hints[end].path_and_query == first.path_and_query
                    && hints[end].user == first.user
                {
                    end += 1;
                }
            }
            let run = &hints[i..end];
            match self.write_run(run, origin).await {
                Ok(written) => receipt
                    .outcomes
                    .extend(std::iter::repeat_n(written, run.len())),
                Err(error) => {
                    receipt.error = Some(error);
                    break;
                }
            }
            i = end;
        }
        receipt
    }

    /// `Ok(true)` written, `Ok(false)` refused for good, `Err` not now.
    async fn write_run(
        &self,
        run: &[Hint],
        origin: Option<&OriginCatalog>,
    ) -> Result<bool, String> {
        let first = &run[0];
        let path = path_of(first);
        if path == "/query" {
            return self.run_statement(first, origin).await;
        }
        if !is_write_path(path) {
            return Ok(false);
        }
        let body = if run.len() == 1 {
            first.body.clone()
        } else {
            let mut joined = BytesMut::new();
            for h in run {
                joined.extend_from_slice(&h.body);
                if !h.body.ends_with(b"\n") {
                    joined.extend_from_slice(b"\n");
                }
            }
            joined.freeze()
        };
        let mut request = Request::post(&first.path_and_query);
        if let Some(encoding) = &first.content_encoding {
            request = request.header(header::CONTENT_ENCODING, encoding);
        }
        let Some((status, text)) = self.send_as(request, first.user.as_deref(), body).await? else {
            return Ok(false);
        };
        if status.is_success() {
            return Ok(true);
        }
        if self.refused_for_good(status, first.queued_at_ms, origin) {
            tracing::warn!(user = first.user.as_deref().unwrap_or("-"), path, %status, answer = %text.trim(), "influxd refused a replicated write");
            Ok(false)
        } else {
            Err(format!("influxd: {status} {}", text.trim()))
        }
    }

    /// A peer's request (`request` with `body`) sent to the local influxd
    /// as `user` (a JWT for them): influxd's status and answer; `Ok(None)`
    /// for a request that cannot be built, `Err` when influxd cannot be
    /// reached.
    async fn send_as(
        &self,
        mut request: http::request::Builder,
        user: Option<&str>,
        body: Bytes,
    ) -> Result<Option<(StatusCode, String)>, String> {
        if let (Some(user), Some(secret)) = (user, &self.jwt_secret) {
            let jwt = sign_jwt(secret, user, JWT_LIFETIME);
            request = request.header(header::AUTHORIZATION, format!("Bearer {jwt}"));
        }
        let Ok(request) = request.body(Body::from(body)) else {
            return Ok(None);
        };
        let response = self.upstream.send(request).await;
        if response.extensions().get::<UpstreamUnreachable>().is_some() {
            return Err("influxd cannot be reached".to_owned());
        }
        let status = response.status();
        let text = response
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        Ok(Some((status, text)))
    }

    /// One peer's delivery task: sends its queue in order whenever woken
    /// (a new write, a new address) and after failures with backoff.
    async fn deliver(self: Arc<Self>, peer: String, wake: Arc<Notify>) {
        let mut backoff =
            Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).with_jitter(0.5);
        let mut retry = false;
        loop {
            let wait = match self.deliver_queue(&peer, retry).await {
                Ok(()) => {
                    backoff.reset();
                    None
                }
                Err(e) => {
                    self.metrics.error(&peer);
                    let wait = backoff.next_wait();
                    tracing::debug!(%peer, error = %e, ?wait, "cannot deliver to the peer; trying again");
                    self.refresh.notify_one();
                    Some(wait)
                }
            };
            retry = wait.is_some();
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = wake.notified(), if wait.is_none() => {}
                _ = tokio::time::sleep(wait.unwrap_or_default()), if wait.is_some() => {}
            }
        }
    }

    /// Sends `peer`'s queue until it is empty, or fails; a `retry` pushes
    /// this node's catalog first, so that the peer can tell a database it
    /// lacks for good from one its catalog has not caught up with.
    async fn deliver_queue(&self, peer: &str, retry: bool) -> Result<(), String> {
        let origin = self.origin_catalog(retry).await;
        loop {
            let handoff = self.handoff.clone();
            let p = peer.to_owned();
            let batch =
                tokio::task::spawn_blocking(move || handoff.peek(&p, BATCH_ENTRIES, BATCH_BYTES))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| with_causes(&e))?;
            if batch.is_empty() {
                return Ok(());
            }
            let Some(address) = self
                .addresses
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(peer)
                .cloned()
            else {
                return Err("no address known".to_owned());
            };
            let mut hints = Vec::with_capacity(batch.len());
            for q in &batch {
                hints.push(Hint::decode(&q.hint[..]).map_err(|e| e.to_string())?);
            }
            let origin = origin.clone();
            let receipt = self.send(&address, Batch { hints, origin }).await;
            let receipt = match receipt {
                Ok(r) => r,
                Err(e) => {
                    for q in &batch {
                        self.pending.record(q.seq, peer, false);
                    }
                    return Err(e);
                }
            };
            let done = receipt.outcomes.len().min(batch.len());
            let now = now_ms();
            let (mut refused, mut refused_points) = (0, 0);
            for (q, written) in batch.iter().zip(&receipt.outcomes) {
                self.pending.record(q.seq, peer, *written);
                if *written {
                    self.metrics
                        .delivered(peer, q.points, now.saturating_sub(q.queued_at_ms));
                } else {
                    self.metrics.dropped(peer, "refused", q.points);
                    refused += 1;
                    refused_points += q.points;
                }
            }
            if refused > 0 {
                tracing::warn!(%peer, writes = refused, points = refused_points, "the peer refused writes for good (a client error there, or a database it still lacks after --hh-missing-database-wait): dropped for it");
            }
            if done > 0 {
                let last = batch[done - 1].seq;
                let handoff = self.handoff.clone();
                let p = peer.to_owned();
                tokio::task::spawn_blocking(move || handoff.remove_through(&p, last))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| with_causes(&e))?;
            }
            if done < batch.len() {
                for q in &batch[done..] {
                    self.pending.record(q.seq, peer, false);
                }
                return Err(receipt
                    .error
                    .unwrap_or_else(|| "the peer stopped".to_owned()));
            }
        }
    }

    /// A request to a peer carrying the members' credential.
    async fn signed_post(
        &self,
        address: &str,
        path: &str,
        body: Bytes,
    ) -> Result<http::Response<hyper::body::Incoming>, String> {
        let ts = now_ms();
        let signature = hex::encode(sign(&self.secret, ts, &body));
        let request = hyper::Request::post(format!("http://{address}{path}"))
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header(SIGNATURE_HEADER, signature)
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        tokio::time::timeout(DELIVERY_TIMEOUT, self.http.request(request))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| with_causes(&e))
    }

    /// One signed delivery request.
    async fn send(&self, address: &str, batch: Batch) -> Result<Receipt, String> {
        let body = Bytes::from(batch.encode_to_vec());
        let response = self.signed_post(address, REPLICATE_PATH, body).await?;
        let status = response.status();
        let bytes = tokio::time::timeout(DELIVERY_TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "{status} {}",
                String::from_utf8_lossy(&bytes).trim()
            ));
        }
        serde_json::from_slice(&bytes).map_err(|e| format!("unreadable receipt: {e}"))
    }

    /// Drops what waited past `--hh-max-age`, counted and logged.
    async fn expire_loop(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.expiry_interval) => {}
            }
            let handoff = self.handoff.clone();
            match tokio::task::spawn_blocking(move || handoff.expire(now_ms())).await {
                Ok(Ok(expired)) => {
                    for e in expired {
                        self.metrics.dropped(&e.peer, "expired", e.points);
                        tracing::warn!(peer = %e.peer, writes = e.entries, points = e.points, "dropped writes queued for the peer longer than --hh-max-age");
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %with_causes(&e), "cannot expire old queue entries")
                }
                Err(_) => {}
            }
        }
    }
}

/// A node's hinted-handoff queues, as [`QUEUES_PATH`] answers.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Queues {
    /// `None` before the node registered.
    pub node_id: Option<String>,
    pub queues: Vec<Queue>,
}

impl Queues {
    /// Statements that change points queued, for any peer.
    pub fn statements(&self) -> u64 {
        self.queues.iter().map(|q| q.statements).sum()
    }

    /// Whether new writes are queued for `node_id` (the node has it as a
    /// member).
    pub fn queues_for(&self, node_id: &str) -> bool {
        self.queues.iter().any(|q| q.peer == node_id && q.member)
    }
}

/// One peer's queue and what was done for that peer since the agent started.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Queue {
    /// The peer's node ID, or [`LOCAL`].
    pub peer: String,
    /// Its front door, as last learned.
    pub address: Option<String>,
    /// Whether new writes are queued for it (the manager lists it).
    pub member: bool,
    /// Queued entries, writes and statements that change points alike.
    pub writes: u64,
    /// Of those, statements that change points (deletions, `SELECT INTO`).
    #[serde(default)]
    pub statements: u64,
    pub points: u64,
    pub bytes: u64,
    /// The oldest queued write's age (`None` when the queue is empty).
    pub oldest_age_seconds: Option<f64>,
    pub delivered_points: u64,
    /// By reason: full, expired, refused, dropped_database.
    pub dropped_points: BTreeMap<String, u64>,
    /// Failed deliveries (the writes stayed queued).
    pub errors: u64,
}

/// Who wrote a request, as the authentication layer found them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Writer {
    pub user: Option<String>,
    /// The front door checked the password itself (not only influxd).
    pub vouched: bool,
}

/// The replication layer (`axum::middleware::from_fn_with_state`), below
/// the authentication: client writes are replicated, queries may fail over,
/// [`QUEUES_PATH`] is answered here, the rest passes.
pub async fn replicate(
    State(replication): State<Arc<Replication>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if request.method() == Method::POST && is_write_path(path) {
        replication.write(request, next).await
    } else if request.method() == Method::GET && path == QUEUES_PATH {
        let writer = request.extensions().get::<Writer>().cloned();
        replication.show_queues(&writer.unwrap_or_default())
    } else if path == "/query" {
        replication.query(request, next).await
    } else {
        next.run(request).await
    }
}

/// The receiving end of [`PEER_QUEUES_PATH`].
pub async fn peer_queues(
    State(replication): State<Arc<Replication>>,
    request: Request,
) -> Response {
    if let Err(refused) = replication.signed_question(request).await {
        return refused;
    }
    axum::Json(replication.queues()).into_response()
}

/// The receiving end of [`QUERY_PATH`].
pub async fn answer_query(
    State(replication): State<Arc<Replication>>,
    request: Request,
) -> Response {
    replication.answer_query(request).await
}

/// The receiving end of [`REPLICATE_PATH`].
pub async fn receive(State(replication): State<Arc<Replication>>, request: Request) -> Response {
    replication.receive(request).await
}

fn path_of(hint: &Hint) -> &str {
    hint.path_and_query.split('?').next().unwrap_or_default()
}

/// Whether an encoded hint is a statement that changes points rather than
/// a write: never dropped for the queue limits (losing a deletion brings
/// deleted points back). Reads only its first field (prost writes `path_and_query`, tag 1, first), so that a
/// large write's body is never decoded for it.
fn is_statement_bytes(hint: &[u8]) -> bool {
    let Some((&0x0A, mut rest)) = hint.split_first() else {
        return false;
    };
    let Ok(len) = prost::encoding::decode_varint(&mut rest) else {
        return false;
    };
    let path = rest
        .get(..usize::try_from(len).unwrap_or(usize::MAX))
        .unwrap_or(rest);
    path == b"/query" || path.starts_with(b"/query?")
}

/// The write paths of influxd's API: line protocol (1.x and the 2.x
/// compatibility API) and Prometheus remote write.
fn is_write_path(path: &str) -> bool {
    path == "/write" || path == "/api/v2/write" || path == PROM_WRITE_PATH
}

const PROM_WRITE_PATH: &str = "/api/v1/prom/write";

/// A line-protocol write's body with every line that has no timestamp
/// stamped with this instant in the request's precision ([`timestamps`]);
/// a gzip body that needs stamps is sent on decompressed. Prometheus
/// samples always carry their time.
fn stamp_lines(parts: &mut http::request::Parts, body: Bytes) -> Bytes {
    if parts.uri.path() == PROM_WRITE_PATH {
        return body;
    }
    let Some(unit) = timestamps::precision_ns(parts.uri.query()) else {
        return body;
    };
    let now = now_ns() / unit;
    let gzip = match parts.headers.get(header::CONTENT_ENCODING) {
        None => false,
        Some(e) if e.as_bytes().eq_ignore_ascii_case(b"gzip") => true,
        // An encoding influxd refuses: left for it to answer.
        Some(_) => return body,
    };
    let stamped = if gzip {
        // A body past the limit, or not gzip after all, is left for influxd.
        let limit = MAX_PLAIN_WRITE_BYTES as u64;
        let mut plain = Vec::new();
        let decoder = flate2::read::GzDecoder::new(body.as_ref());
        match std::io::Read::read_to_end(&mut std::io::Read::take(decoder, limit + 1), &mut plain) {
            Ok(n) if (n as u64) <= limit => timestamps::stamp(&plain, now),
            _ => None,
        }
    } else {
        timestamps::stamp(&body, now)
    };
    let Some(stamped) = stamped else {
        return body;
    };
    parts.headers.remove(header::CONTENT_ENCODING);
    parts.headers.remove(header::CONTENT_LENGTH);
    stamped
}

/// Now, in nanoseconds since the epoch.
fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// HMAC-SHA256 over the timestamp and the body.
pub(crate) fn sign(secret: &[u8], ts: u64, body: &[u8]) -> Vec<u8> {
    mac(secret, ts, body).finalize().into_bytes().to_vec()
}

fn verify(secret: &[u8], ts: u64, body: &[u8], signature: &[u8]) -> bool {
    mac(secret, ts, body).verify_slice(signature).is_ok()
}

fn mac(secret: &[u8], ts: u64, body: &[u8]) -> Hmac<sha2::Sha256> {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(&ts.to_be_bytes());
    mac.update(body);
    mac
}

/// The lines of line protocol a write carries; a gzip body (the only
/// encoding influxd takes) is decompressed to count them, and counts 0 if
/// it cannot be (influxd took it, so that does not happen).
fn count_points(hint: &Hint) -> u64 {
    let mut lines = LineCounter::default();
    match hint.content_encoding.as_deref() {
        None => lines.feed(&hint.body),
        Some(e) if e.eq_ignore_ascii_case("gzip") => {
            let mut decoder = flate2::read::GzDecoder::new(hint.body.as_ref());
            let mut buf = [0u8; 16 * 1024];
            loop {
                match std::io::Read::read(&mut decoder, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => lines.feed(&buf[..n]),
                    Err(_) => return 0,
                }
            }
        }
        Some(_) => return 0,
    }
    lines.points
}

/// Counts the lines of line protocol (not blank, not a `#` comment) in a
/// body fed in pieces.
#[derive(Default)]
struct LineCounter {
    points: u64,
    /// Whether the current line has been classified (counted or skipped).
    decided: bool,
}

impl LineCounter {
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.decided = false;
            } else if !self.decided && !b.is_ascii_whitespace() {
                self.decided = true;
                self.points += u64::from(b != b'#');
            }
        }
    }
}

/// `uri`'s path and query without the parameter `name`.
fn without_param(uri: &http::Uri, name: &str) -> String {
    let query: Vec<&str> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty() && p.split('=').next() != Some(name))
        .collect();
    if query.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), query.join("&"))
    }
}

/// Whether a 400 of influxd's is a partial write (the valid points were
/// written): its body then; the answer is given back whole.
async fn is_partial_write(response: Response) -> (Response, Option<Bytes>) {
    let (parts, body) = response.into_parts();
    let bytes = match Limited::new(body, 1 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let partial = String::from_utf8_lossy(&bytes)
        .contains("partial write")
        .then(|| bytes.clone());
    (Response::from_parts(parts, Body::from(bytes)), partial)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_secret_time_and_body() {
        let sig = sign(b"s3cret", 42, b"cpu v=1");
        assert!(verify(b"s3cret", 42, b"cpu v=1", &sig));
        assert!(!verify(b"other", 42, b"cpu v=1", &sig));
        assert!(!verify(b"s3cret", 43, b"cpu v=1", &sig));
        assert!(!verify(b"s3cret", 42, b"cpu v=2", &sig));
    }

    #[test]
    fn points_and_params() {
        let hint = Hint {
            body: Bytes::from_static(b"cpu v=1 1\n\n# comment\n  mem v=2 2\ndisk v=3"),
            ..Hint::default()
        };
        assert_eq!(count_points(&hint), 3);
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gzip, &hint.body).unwrap();
        let compressed = Hint {
            body: Bytes::from(gzip.finish().unwrap()),
            content_encoding: Some("gzip".into()),
            ..Hint::default()
        };
        assert_eq!(count_points(&compressed), 3, "a gzip body counts its lines");
        let garbled = Hint {
            body: Bytes::from_static(b"not gzip"),
            content_encoding: Some("gzip".into()),
            ..Hint::default()
        };
        assert_eq!(count_points(&garbled), 0);
        let mut pieces = LineCounter::default();
        for piece in [&b"cp"[..], b"u v=1\n  ", b"# c\n", b"\n m v=2"] {
            pieces.feed(piece);
        }
        assert_eq!(pieces.points, 2, "lines split across pieces count once");
        let uri: http::Uri = "/write?db=x&consistency=all&rp=r".parse().unwrap();
        assert_eq!(without_param(&uri, "consistency"), "/write?db=x&rp=r");
        let uri: http::Uri = "/write?consistency=all".parse().unwrap();
        assert_eq!(without_param(&uri, "consistency"), "/write");
    }

    #[test]
    fn statements_are_told_from_writes_without_decoding_the_body() {
        let encoded = |path: &str| {
            Hint {
                path_and_query: path.into(),
                body: Bytes::from_static(b"q=DELETE+FROM+cpu"),
                ..Hint::default()
            }
            .encode_to_vec()
        };
        assert!(is_statement_bytes(&encoded("/query?db=x")));
        assert!(is_statement_bytes(&encoded("/query")));
        assert!(!is_statement_bytes(&encoded("/write?db=x")));
        assert!(!is_statement_bytes(&encoded("/queryx")));
        assert!(!is_statement_bytes(b""));
    }

    #[test]
    fn batches_round_trip() {
        let batch = Batch {
            hints: vec![Hint {
                path_and_query: "/write?db=x".into(),
                user: Some("bob".into()),
                content_encoding: None,
                body: Bytes::from_static(b"cpu v=1"),
                queued_at_ms: 7,
            }],
            origin: Some(OriginCatalog {
                version: 12,
                history_id: "h".into(),
                pushed: true,
            }),
        };
        assert_eq!(Batch::decode(&batch.encode_to_vec()[..]).unwrap(), batch);
        // A batch from an agent that does not say its catalog.
        let older = Batch {
            origin: None,
            ..batch.clone()
        };
        assert_eq!(
            Batch::decode(&older.encode_to_vec()[..]).unwrap().origin,
            None
        );
    }
}
