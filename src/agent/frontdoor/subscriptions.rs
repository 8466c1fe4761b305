//! Subscriptions fired once, by the front door that took the write.
//!
//! influxd's subscriber service forwards every point written to *its*
//! server, whatever the point's origin. With `--replicate` every point is
//! written on every node, so a subscriber (Kapacitor) would get each point
//! once per node. InfluxDB Enterprise fires a subscription once, on the node
//! that accepted the write; so does Clusterflux: each node's influxd runs
//! with its subscriber service off (`[subscriber] enabled = false`; the
//! subscriptions stay in its meta, so `CREATE`/`SHOW`/`DROP SUBSCRIPTION` and
//! the metadata sync are unchanged), and the front door that accepted a
//! client's write hands it to [`Subscriptions::forward`] once it was
//! accepted. Replicated copies and catch-up never come through here.
//!
//! Shaped like influxd's own subscriber, best effort: per destination one
//! bounded in-memory queue ([`QUEUE_WRITES`] writes, influxd's
//! `write-buffer-size`) and one task sending it in order; a full queue drops
//! the write (counted, logged at most once a minute), and nothing here ever
//! delays a client's answer. `ALL` sends to every destination, `ANY` to one,
//! round-robin. HTTP(S) destinations get `POST /write?db=&rp=&precision=`
//! with the line protocol (the request's precision kept); UDP ones get the
//! lines in datagrams (timestamps in nanoseconds, as influxd's UDP listener
//! reads them by default), split between points.
//!
//! [`watch_influxd`] checks, once influxd answers and every minute after,
//! that influxd's own service really is off (`SHOW STATS FOR 'subscriber'`):
//! otherwise subscribers get every point once per node.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::agent::frontdoor::line_protocol::{points, Point};
use crate::agent::frontdoor::timestamps;
use crate::agent::influxql::Influxd;
use crate::client::tls;
use crate::influx::catalog::Catalog;
use crate::telemetry::{register, with_causes};

/// Writes waiting per destination (influxd's `write-buffer-size`).
pub const QUEUE_WRITES: usize = 1000;
/// The largest UDP datagram sent, unless one point is longer: below a
/// common MTU, so that no datagram is fragmented.
const UDP_PAYLOAD: usize = 1400;
/// How long one HTTP delivery may take (influxd's `http-timeout`).
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an idle destination keeps its task (a dropped subscription's
/// destination ends there).
const IDLE: Duration = Duration::from_secs(300);
/// At most one warning per destination in this long.
const LOG_INTERVAL: Duration = Duration::from_secs(60);
/// How often influxd's own subscriber service is checked.
const CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// The largest decompressed gzip body forwarded.
const MAX_PLAIN_BYTES: u64 = 128 << 20;

/// Why a write could not be delivered to a destination.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("not a destination influxd's subscriber takes (http://, https:// or udp://host:port)")]
    BadDestination,
    #[error("cannot resolve {0}")]
    Resolve(String, #[source] std::io::Error),
    #[error("UDP")]
    Udp(#[source] std::io::Error),
    #[error("HTTP request")]
    Request(#[source] http::Error),
    #[error("HTTP")]
    Http(#[source] hyper_util::client::legacy::Error),
    #[error("timed out")]
    Timeout,
    #[error("answered {0}")]
    Refused(http::StatusCode),
}

/// One accepted write, as the front door took it.
#[derive(Debug)]
pub struct Accepted<'a> {
    /// `/write?…` or `/api/v2/write?…` (Prometheus remote writes are not line
    /// protocol: not forwarded).
    pub path_and_query: &'a str,
    pub content_encoding: Option<&'a str>,
    /// As written to influxd: lines without a timestamp already stamped.
    pub body: &'a Bytes,
    /// influxd's answer to a partial write: its unparsable lines are left out.
    pub partial_answer: Option<&'a [u8]>,
}

/// What a destination sends: one write's points, for one database and policy.
#[derive(Debug)]
struct Job {
    db: String,
    rp: String,
    /// A precision `/write` reads (`n`, `u`, `ms`, `s`, `m`, `h`); `None`:
    /// nanoseconds.
    precision: Option<&'static str>,
    /// The timestamps' unit, in nanoseconds.
    unit_ns: i64,
    /// The points, one a line.
    body: Bytes,
    points: u64,
}

/// A destination's queue.
struct Destination {
    queue: mpsc::Sender<Arc<Job>>,
}

/// The subscriptions of one front door.
pub struct Subscriptions {
    catalog: watch::Receiver<Option<Arc<Catalog>>>,
    /// By destination URL.
    destinations: Mutex<HashMap<String, Destination>>,
    /// `ANY` subscriptions' next destination, by (database, policy, name).
    next: Mutex<HashMap<(String, String, String), usize>>,
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    pub metrics: Arc<SubscriptionMetrics>,
    shutdown: CancellationToken,
}

impl Subscriptions {
    pub fn new(
        catalog: watch::Receiver<Option<Arc<Catalog>>>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Subscriptions>, tls::TlsError> {
        // Without system roots https:// destinations cannot be verified:
        // they fail, counted and logged, and the others work.
        let config = tls::client_config(None).or_else(|e| {
            tracing::warn!(error = %with_causes(&e), "no root certificates: https:// subscription destinations will fail");
            tls::trust_nothing()
        })?;
        let connector = tls::connector(config, tls::Alpn::Http1, Duration::from_secs(5));
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Ok(Arc::new(Subscriptions {
            catalog,
            destinations: Mutex::new(HashMap::new()),
            next: Mutex::new(HashMap::new()),
            http,
            metrics: Arc::new(SubscriptionMetrics::default()),
            shutdown,
        }))
    }

    /// Hands an accepted write to the subscriptions of its database and
    /// policy: queued for their destinations, never waited for.
    pub fn forward(self: &Arc<Self>, write: Accepted<'_>) {
        let Some((path, query)) = split_path(write.path_and_query) else {
            return;
        };
        let Some(target) = Target::read(path, query) else {
            return;
        };
        let Some(catalog) = self.catalog.borrow().clone() else {
            return;
        };
        let Some(db) = catalog.databases.get(&target.db) else {
            return;
        };
        let rp = if target.rp.is_empty() {
            db.default_retention_policy.clone()
        } else {
            target.rp.clone()
        };
        let Some(policy) = db.retention_policies.get(&rp) else {
            return;
        };
        if policy.subscriptions.is_empty() {
            return;
        }
        let Some(unit_ns) = timestamps::precision_ns(query) else {
            return;
        };
        let Some(plain) = plain_body(write.body, write.content_encoding) else {
            tracing::debug!(
                "a write's body could not be decompressed: not forwarded to subscriptions"
            );
            return;
        };
        let rejected = write.partial_answer.map(rejected_lines).unwrap_or_default();
        let (body, points) = points_body(&plain, &rejected);
        if points == 0 {
            return;
        }
        let job = Arc::new(Job {
            db: target.db.clone(),
            rp: rp.clone(),
            precision: target.precision,
            unit_ns,
            body,
            points,
        });
        for sub in policy.subscriptions.values() {
            if sub.destinations.is_empty() {
                continue;
            }
            if sub.mode.eq_ignore_ascii_case("ANY") {
                let key = (target.db.clone(), rp.clone(), sub.name.clone());
                let i = {
                    let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
                    let n = next.entry(key).or_insert(0);
                    let i = *n % sub.destinations.len();
                    *n = n.wrapping_add(1);
                    i
                };
                self.enqueue(&sub.destinations[i], job.clone());
            } else {
                for d in &sub.destinations {
                    self.enqueue(d, job.clone());
                }
            }
        }
    }

    /// Queues `job` for `url`, starting its task when it has none.
    fn enqueue(self: &Arc<Self>, url: &str, job: Arc<Job>) {
        let points = job.points;
        let mut destinations = self.destinations.lock().unwrap_or_else(|e| e.into_inner());
        let destination = destinations.entry(url.to_owned()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(QUEUE_WRITES);
            tokio::spawn(self.clone().deliver(url.to_owned(), rx));
            Destination { queue: tx }
        });
        if destination.queue.try_send(job).is_err() {
            drop(destinations);
            self.metrics.points(url, "dropped", points);
            self.metrics.warn(
                url,
                "a subscription destination's queue is full: writes dropped for it",
            );
        }
    }

    /// One destination's task: sends its queue in order; ends when idle
    /// for [`IDLE`] (a later write starts another) or at shutdown.
    async fn deliver(self: Arc<Self>, url: String, mut queue: mpsc::Receiver<Arc<Job>>) {
        let mut udp: Option<(UdpSocket, SocketAddr)> = None;
        loop {
            let job = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                job = queue.recv() => job,
                _ = tokio::time::sleep(IDLE) => {
                    // Under the lock that `enqueue` holds: nothing is queued
                    // for a task that is leaving.
                    let mut destinations = self.destinations.lock().unwrap_or_else(|e| e.into_inner());
                    if queue.is_empty() {
                        destinations.remove(&url);
                        return;
                    }
                    continue;
                }
            };
            let Some(job) = job else { return };
            let sent = if let Some(address) = url.strip_prefix("udp://") {
                self.send_udp(&mut udp, address, &job).await
            } else {
                self.send_http(&url, &job).await
            };
            match sent {
                Ok(()) => self.metrics.points(&url, "sent", job.points),
                Err(e) => {
                    self.metrics.points(&url, "failed", job.points);
                    self.metrics.warn_error(&url, &e);
                }
            }
        }
    }

    async fn send_http(&self, url: &str, job: &Job) -> Result<(), DeliveryError> {
        let (base, basic) = without_userinfo(url).ok_or(DeliveryError::BadDestination)?;
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(DeliveryError::BadDestination);
        }
        let query = {
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.append_pair("db", &job.db).append_pair("rp", &job.rp);
            if let Some(p) = job.precision {
                query.append_pair("precision", p);
            }
            query.finish()
        };
        let mut request =
            hyper::Request::post(format!("{}/write?{}", base.trim_end_matches('/'), query))
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8");
        if let Some(basic) = basic {
            request = request.header(header::AUTHORIZATION, basic);
        }
        let request = request
            .body(Full::new(job.body.clone()))
            .map_err(DeliveryError::Request)?;
        let response = tokio::time::timeout(HTTP_TIMEOUT, self.http.request(request))
            .await
            .map_err(|_| DeliveryError::Timeout)?
            .map_err(DeliveryError::Http)?;
        let status = response.status();
        // Read the answer so that the connection can be used again.
        let _ = tokio::time::timeout(HTTP_TIMEOUT, response.into_body().collect()).await;
        if status.is_success() {
            Ok(())
        } else {
            Err(DeliveryError::Refused(status))
        }
    }

    async fn send_udp(
        &self,
        socket: &mut Option<(UdpSocket, SocketAddr)>,
        address: &str,
        job: &Job,
    ) -> Result<(), DeliveryError> {
        let (socket, to) = match socket {
            Some(s) => s,
            None => {
                let to = tokio::net::lookup_host(address)
                    .await
                    .map_err(|e| DeliveryError::Resolve(address.to_owned(), e))?
                    .next()
                    .ok_or_else(|| {
                        DeliveryError::Resolve(
                            address.to_owned(),
                            std::io::Error::other("no address"),
                        )
                    })?;
                let local: SocketAddr = if to.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let s = UdpSocket::bind(local).await.map_err(DeliveryError::Udp)?;
                socket.insert((s, to))
            }
        };
        for datagram in datagrams(&job.body, job.unit_ns, UDP_PAYLOAD) {
            socket
                .send_to(&datagram, *to)
                .await
                .map_err(DeliveryError::Udp)?;
        }
        Ok(())
    }

    /// The figures, for `/metrics`: the queue gauges set first.
    pub fn render_metrics(&self) -> String {
        self.metrics.queued.reset();
        let destinations = self.destinations.lock().unwrap_or_else(|e| e.into_inner());
        for (url, d) in destinations.iter() {
            let waiting = QUEUE_WRITES.saturating_sub(d.queue.capacity());
            self.metrics
                .queued
                .with_label_values(&[&shown(url)])
                .set(i64::try_from(waiting).unwrap_or(i64::MAX));
        }
        drop(destinations);
        self.metrics.render()
    }
}

/// Where a write goes, as its query string says.
#[derive(Debug, PartialEq)]
struct Target {
    db: String,
    /// Empty: the database's default policy.
    rp: String,
    precision: Option<&'static str>,
}

impl Target {
    fn read(path: &str, query: Option<&str>) -> Option<Target> {
        let params: HashMap<String, String> =
            form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        let (db, rp) = match path {
            "/write" => (
                params.get("db")?.clone(),
                params.get("rp").cloned().unwrap_or_default(),
            ),
            // The 2.x API: `bucket=db/rp`, `bucket=db`.
            "/api/v2/write" => {
                let bucket = params.get("bucket")?;
                match bucket.split_once('/') {
                    Some((db, rp)) => (db.to_owned(), rp.to_owned()),
                    None => (bucket.clone(), String::new()),
                }
            }
            _ => return None,
        };
        let precision = match params.get("precision").map(String::as_str) {
            None | Some("") => None,
            Some("n" | "ns") => Some("n"),
            Some("u" | "us") => Some("u"),
            Some("ms") => Some("ms"),
            Some("s") => Some("s"),
            Some("m") => Some("m"),
            Some("h") => Some("h"),
            Some(_) => return None,
        };
        (!db.is_empty()).then_some(Target { db, rp, precision })
    }
}

fn split_path(path_and_query: &str) -> Option<(&str, Option<&str>)> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    (!path.is_empty()).then_some((path, query))
}

/// The body as plain line protocol: a gzip body decompressed (bounded).
fn plain_body(body: &Bytes, encoding: Option<&str>) -> Option<Bytes> {
    match encoding {
        None => Some(body.clone()),
        Some(e) if e.eq_ignore_ascii_case("identity") => Some(body.clone()),
        Some(e) if e.eq_ignore_ascii_case("gzip") => {
            let mut plain = Vec::new();
            let decoder = flate2::read::GzDecoder::new(body.as_ref());
            let mut limited = std::io::Read::take(decoder, MAX_PLAIN_BYTES + 1);
            match std::io::Read::read_to_end(&mut limited, &mut plain) {
                Ok(n) if (n as u64) <= MAX_PLAIN_BYTES => Some(Bytes::from(plain)),
                _ => None,
            }
        }
        Some(_) => None,
    }
}

/// The lines influxd could not parse, as its partial-write answer names
/// them: `{"error":"partial write: unable to parse '<line>': <why>…"}`.
fn rejected_lines(answer: &[u8]) -> HashSet<Vec<u8>> {
    let message = serde_json::from_slice::<serde_json::Value>(answer)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_default();
    const OPEN: &str = "unable to parse '";
    let mut rejected = HashSet::new();
    let mut rest = message.as_str();
    while let Some(at) = rest.find(OPEN) {
        rest = &rest[at + OPEN.len()..];
        let Some(end) = rest.find("': ") else { break };
        rejected.insert(rest[..end].trim().as_bytes().to_vec());
        rest = &rest[end..];
    }
    rejected
}

/// The points of `plain` not in `rejected`, one a line, and how many.
fn points_body(plain: &[u8], rejected: &HashSet<Vec<u8>>) -> (Bytes, u64) {
    let mut body = BytesMut::with_capacity(plain.len());
    let mut n = 0;
    for p in points(plain) {
        if !rejected.is_empty() && rejected.contains(p.text) {
            continue;
        }
        body.extend_from_slice(p.text);
        body.extend_from_slice(b"\n");
        n += 1;
    }
    (body.freeze(), n)
}

/// `body`'s points in datagrams of at most `size` bytes (a longer point
/// alone), timestamps in nanoseconds: a UDP listener knows no request
/// precision.
fn datagrams(body: &[u8], unit_ns: i64, size: usize) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut current = BytesMut::new();
    for p in points(body) {
        let line = in_nanoseconds(&p, unit_ns);
        if !current.is_empty() && current.len() + line.len() + 1 > size {
            out.push(current.split().freeze());
        }
        current.extend_from_slice(&line);
        current.extend_from_slice(b"\n");
    }
    if !current.is_empty() {
        out.push(current.freeze());
    }
    out
}

/// A point's text with its timestamp in nanoseconds (as it is when the
/// timestamp is missing, unreadable or out of range: influxd took it so).
fn in_nanoseconds(p: &Point<'_>, unit_ns: i64) -> Vec<u8> {
    let Some(range) = p.timestamp.clone() else {
        return p.text.to_vec();
    };
    if unit_ns == 1 {
        return p.text.to_vec();
    }
    let ns = std::str::from_utf8(&p.text[range.clone()])
        .ok()
        .and_then(|t| t.parse::<i64>().ok())
        .and_then(|t| t.checked_mul(unit_ns));
    match ns {
        Some(ns) => {
            let mut line = p.text[..range.start].to_vec();
            line.extend_from_slice(ns.to_string().as_bytes());
            line
        }
        None => p.text.to_vec(),
    }
}

/// `url` without `user:password@`, and those as a `Basic` header (as Go's
/// HTTP client sends them, which influxd's subscriber uses); `None` for
/// something that is not a URL.
fn without_userinfo(url: &str) -> Option<(String, Option<String>)> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        None => Some((url.to_owned(), None)),
        Some((userinfo, host)) => {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            use base64::Engine;
            let basic = base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                decode(user),
                decode(password)
            ));
            Some((
                format!("{scheme}://{host}{path}"),
                Some(format!("Basic {basic}")),
            ))
        }
    }
}

/// A destination as it may be shown: without credentials.
fn shown(url: &str) -> String {
    without_userinfo(url).map_or_else(|| "(not a URL)".to_owned(), |(u, _)| u)
}

/// What the subscriptions did: points by destination and result (`sent`,
/// `failed`, `dropped`), and whether influxd's own subscriber service
/// forwards points too.
pub struct SubscriptionMetrics {
    registry: Registry,
    points: IntCounterVec,
    queued: IntGaugeVec,
    influxd_forwards: IntGauge,
    /// Per destination: when it was last logged, and what was not logged since.
    logged: Mutex<HashMap<String, (Instant, u64)>>,
}

impl Default for SubscriptionMetrics {
    fn default() -> Self {
        let r = Registry::new();
        SubscriptionMetrics {
            points: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "cflux_subscription_points_total",
                        "Points of accepted writes forwarded to subscription destinations, by destination and result (sent, failed, dropped: the destination's queue was full).",
                    ),
                    &["destination", "result"],
                ),
            ),
            queued: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "cflux_subscription_queue_writes",
                        "Writes waiting for a subscription destination.",
                    ),
                    &["destination"],
                ),
            ),
            influxd_forwards: register(
                &r,
                IntGauge::new(
                    "cflux_influxd_subscriber_active",
                    "1 when this node's influxd forwards points to subscriptions itself (its [subscriber] service is on): subscribers then get every point once per node.",
                ),
            ),
            logged: Mutex::new(HashMap::new()),
            registry: r,
        }
    }
}

impl SubscriptionMetrics {
    fn render(&self) -> String {
        crate::telemetry::render(&self.registry)
    }

    fn points(&self, url: &str, result: &str, n: u64) {
        self.points
            .with_label_values(&[&shown(url), result])
            .inc_by(n);
    }

    fn warn_error(&self, url: &str, error: &DeliveryError) {
        if let Some(suppressed) = self.may_log(url) {
            tracing::warn!(destination = %shown(url), error = %with_causes(error), suppressed, "cannot send a write to a subscription destination: dropped for it");
        }
    }

    fn warn(&self, url: &str, message: &'static str) {
        if let Some(suppressed) = self.may_log(url) {
            tracing::warn!(destination = %shown(url), suppressed, "{message}");
        }
    }

    /// Whether a warning about `url` may be logged now, and how many were
    /// held back since the last one.
    fn may_log(&self, url: &str) -> Option<u64> {
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match logged.get_mut(url) {
            Some((at, held)) if now.duration_since(*at) < LOG_INTERVAL => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                *at = now;
                Some(std::mem::take(held))
            }
            None => {
                logged.insert(url.to_owned(), (now, 0));
                Some(0)
            }
        }
    }
}

/// Checks, once influxd answers and every [`CHECK_INTERVAL`] after, that
/// influxd's own subscriber service forwards nothing while subscriptions
/// exist; says once (until it is fixed) how to fix it, and keeps the gauge.
pub async fn watch_influxd(
    subscriptions: Arc<Subscriptions>,
    influxd: Influxd,
    shutdown: CancellationToken,
) {
    while !influxd.ping().await {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    let mut reported = false;
    loop {
        let catalog = subscriptions.catalog.borrow().clone();
        let any = catalog.as_ref().is_some_and(|c| {
            c.databases.values().any(|d| {
                d.retention_policies
                    .values()
                    .any(|rp| !rp.subscriptions.is_empty())
            })
        });
        let admin = catalog
            .as_ref()
            .and_then(|c| c.users.values().find(|u| u.admin).map(|u| u.name.clone()));
        if any {
            match influxd
                .query_json("SHOW STATS FOR 'subscriber'", admin.as_deref())
                .await
            {
                Ok(answer) => {
                    let forwarded = subscriber_activity(&answer);
                    subscriptions
                        .metrics
                        .influxd_forwards
                        .set(i64::from(forwarded > 0));
                    if forwarded > 0 && !reported {
                        tracing::error!(points = forwarded, "influxd's own subscriber service is on: with --replicate every subscriber receives each point once per node. Turn it off on every node ([subscriber] enabled = false in influxdb.conf, or INFLUXDB_SUBSCRIBER_ENABLED=false) and restart influxd; the front door forwards each accepted write once");
                    }
                    reported = forwarded > 0;
                }
                Err(e) => {
                    tracing::debug!(error = %with_causes(&e), "cannot read influxd's subscriber statistics")
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(CHECK_INTERVAL) => {}
        }
    }
}

/// `pointsWritten` plus `writeFailures` over every series of a
/// `SHOW STATS FOR 'subscriber'` answer.
fn subscriber_activity(answer: &serde_json::Value) -> u64 {
    let mut total = 0u64;
    let series = answer["results"][0]["series"].as_array();
    for s in series.into_iter().flatten() {
        let columns = s["columns"].as_array().cloned().unwrap_or_default();
        for row in s["values"].as_array().into_iter().flatten() {
            for (c, v) in columns.iter().zip(row.as_array().into_iter().flatten()) {
                if matches!(c.as_str(), Some("pointsWritten" | "writeFailures")) {
                    total = total.saturating_add(v.as_u64().unwrap_or(0));
                }
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::read("/write", Some("db=my%20db&rp=a&precision=s")).unwrap();
        assert_eq!(
            t,
            Target {
                db: "my db".into(),
                rp: "a".into(),
                precision: Some("s")
            }
        );
        let t = Target::read("/api/v2/write", Some("bucket=d/r&precision=ns")).unwrap();
        assert_eq!(
            (t.db.as_str(), t.rp.as_str(), t.precision),
            ("d", "r", Some("n"))
        );
        let t = Target::read("/api/v2/write", Some("bucket=d")).unwrap();
        assert_eq!((t.rp.as_str(), t.precision), ("", None));
        assert!(Target::read("/write", Some("rp=a")).is_none());
        assert!(Target::read("/api/v1/prom/write", Some("db=d")).is_none());
        assert!(Target::read("/write", Some("db=d&precision=fortnight")).is_none());
    }

    #[test]
    fn points_are_read_as_influxd_reads_them() {
        let body = b"# c\ncpu v=1 10\n\n  m\\ x,h=a\\ b s=\"a b\nc\" 20\r\nnots v=2\n";
        let p = points(body);
        let texts: Vec<&[u8]> = p.iter().map(|p| p.text).collect();
        assert_eq!(
            texts,
            vec![
                &b"cpu v=1 10"[..],
                &b"m\\ x,h=a\\ b s=\"a b\nc\" 20"[..],
                &b"nots v=2"[..]
            ]
        );
        assert_eq!(&p[0].text[p[0].timestamp.clone().unwrap()], b"10");
        assert_eq!(&p[1].text[p[1].timestamp.clone().unwrap()], b"20");
        assert!(p[2].timestamp.is_none());
    }

    #[test]
    fn partial_writes_leave_out_what_influxd_could_not_parse() {
        let answer = br#"{"error":"partial write: unable to parse 'bad line': missing fields\nunable to parse 'x v=': missing field value dropped=2"}"#;
        let rejected = rejected_lines(answer);
        assert_eq!(rejected.len(), 2);
        let (body, n) = points_body(b"cpu v=1 1\nbad line\nx v=\nmem v=2 2\n", &rejected);
        assert_eq!(n, 2);
        assert_eq!(&body[..], b"cpu v=1 1\nmem v=2 2\n");
    }

    #[test]
    fn udp_datagrams_split_between_points_in_nanoseconds() {
        let body: String = (0..100).map(|i| format!("cpu,i={i} v={i} {i}\n")).collect();
        let grams = datagrams(body.as_bytes(), 1_000_000_000, 200);
        assert!(grams.iter().all(|g| g.len() <= 200));
        let joined: Vec<u8> = grams.concat();
        let expected: String = (0..100)
            .map(|i| format!("cpu,i={i} v={i} {}\n", i as i64 * 1_000_000_000))
            .collect();
        assert_eq!(String::from_utf8(joined).unwrap(), expected);
        // A point longer than a datagram goes alone.
        let long = format!("big s=\"{}\" 1\nsmall v=1 2\n", "x".repeat(300));
        let grams = datagrams(long.as_bytes(), 1, 200);
        assert_eq!(grams.len(), 2);
    }

    #[test]
    fn destinations_lose_their_credentials() {
        let (url, basic) = without_userinfo("http://kap:s%40cret@k:9092/x").unwrap();
        assert_eq!(url, "http://k:9092/x");
        assert_eq!(basic.unwrap(), "Basic a2FwOnNAY3JldA==");
        assert_eq!(shown("https://u:p@k:9092"), "https://k:9092");
        assert_eq!(
            without_userinfo("udp://h:1").unwrap(),
            ("udp://h:1".into(), None)
        );
    }

    /// A catalog with database `d` (default policy `autogen`, and `other`)
    /// whose `autogen` has an `ALL` subscription to `udp`.
    fn catalog(udp: &str) -> Catalog {
        use crate::influx::catalog::{Database, RetentionPolicy, Subscription};
        let mut db = Database::new("d", "autogen");
        let mut autogen = RetentionPolicy::new("autogen", 0, 0, 1);
        autogen.subscriptions.insert(
            "s".into(),
            Subscription {
                name: "s".into(),
                mode: "ALL".into(),
                destinations: vec![udp.to_owned()],
            },
        );
        db.retention_policies.insert("autogen".into(), autogen);
        db.retention_policies
            .insert("other".into(), RetentionPolicy::new("other", 0, 0, 1));
        let mut c = Catalog::default();
        c.databases.insert("d".into(), db);
        c
    }

    #[tokio::test]
    async fn writes_reach_their_policys_subscriptions_only() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let udp = format!("udp://{}", socket.local_addr().unwrap());
        let (_tx, rx) = watch::channel(Some(Arc::new(catalog(&udp))));
        let subs = Subscriptions::new(rx, CancellationToken::new()).unwrap();
        let send = |path: &str, body: &'static [u8], encoding: Option<&str>| {
            subs.forward(Accepted {
                path_and_query: path,
                content_encoding: encoding,
                body: &Bytes::from_static(body),
                partial_answer: None,
            })
        };
        // Not forwarded: another policy, another database, Prometheus.
        send("/write?db=d&rp=other", b"no v=1 1", None);
        send("/write?db=x", b"no v=2 2", None);
        send("/api/v1/prom/write?db=d", b"no v=3 3", None);
        // Forwarded: the default policy by name or by absence, the 2.x API,
        // gzip; timestamps in nanoseconds.
        send("/write?db=d&precision=s", b"a v=1 1", None);
        send("/write?db=d&rp=autogen", b"b v=1 2", None);
        send(
            "/api/v2/write?bucket=d/autogen&precision=ms",
            b"c v=1 3",
            None,
        );
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gzip, b"d v=1 4\n").unwrap();
        let gz: &'static [u8] = Box::leak(gzip.finish().unwrap().into_boxed_slice());
        send("/write?db=d", gz, Some("gzip"));
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while got.len() < 4 {
            let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
                .await
                .expect("a datagram")
                .unwrap();
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        assert_eq!(
            got,
            vec![
                "a v=1 1000000000\n",
                "b v=1 2\n",
                "c v=1 3000000\n",
                "d v=1 4\n"
            ]
        );
        // Counted once the send returned, a moment after the datagram left.
        let sent =
            format!("cflux_subscription_points_total{{destination=\"{udp}\",result=\"sent\"}} 4");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !subs.render_metrics().contains(&sent) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}",
                subs.render_metrics()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn influxd_subscriber_activity() {
        let idle: serde_json::Value = serde_json::from_str(r#"{"results":[{"statement_id":0,"series":[{"name":"subscriber","columns":["createFailures","pointsWritten","writeFailures"],"values":[[0,0,0]]}]}]}"#).unwrap();
        assert_eq!(subscriber_activity(&idle), 0);
        let busy: serde_json::Value = serde_json::from_str(r#"{"results":[{"statement_id":0,"series":[{"name":"subscriber","columns":["createFailures","pointsWritten","writeFailures"],"values":[[3,0,1]]},{"name":"subscriber","tags":{"database":"d"},"columns":["pointsWritten","writeFailures"],"values":[[1,0]]}]}]}"#).unwrap();
        assert_eq!(subscriber_activity(&busy), 2);
        assert_eq!(subscriber_activity(&serde_json::json!({})), 0);
    }
}
