//! The legacy HTTP transport: a [`Call`] spoken in the original Clusterflux
//! protocol, for managers that predate gRPC. `WatchMeta` becomes a loop of
//! long polls where 504 and 204 both mean "ask again". `https://` managers
//! are spoken to over TLS.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use crate::client::call::{Call, CallError, Reply};
use crate::client::tls::{self, Alpn};
use crate::legacy_protocol as wire;
use crate::proto;

/// How long one long poll may be held: above any manager's poll window.
const LONG_POLL_LIMIT: Duration = Duration::from_secs(6 * 60);
/// The original protocol's heartbeat interval and TTL, for answers that say
/// nothing this node can read.
const ORIGINAL_HEARTBEAT: Duration = Duration::from_secs(5);
const ORIGINAL_TTL: Duration = Duration::from_secs(15);
/// The shortest interval a registration answer may imply (a skewed clock).
const MIN_HEARTBEAT: Duration = Duration::from_millis(200);

/// One manager over the legacy protocol.
#[derive(Clone)]
pub struct LegacyTransport {
    base: String,
    token: Option<String>,
    timeout: Duration,
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

struct Answer {
    status: StatusCode,
    version: Option<u64>,
    body: Bytes,
}

fn seg(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

impl LegacyTransport {
    /// A transport for `url` (`http://host:port` or `https://host:port`,
    /// verified with `tls`).
    pub fn new(
        url: &str,
        token: Option<&str>,
        timeout: Duration,
        tls: &tls::ClientConfig,
    ) -> Result<Self, CallError> {
        let base = url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CallError::refused(format!(
                "legacy endpoint {url:?} must be an http:// or https:// URL"
            )));
        }
        let connector = tls::connector(tls.clone(), Alpn::Http1, timeout);
        Ok(LegacyTransport {
            base,
            token: token.map(str::to_owned),
            timeout,
            http: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        limit: Duration,
    ) -> Result<Answer, CallError> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path))
            .header("content-type", "application/json");
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| CallError::refused("cannot build the request").caused_by(e))?;
        let exchange = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| CallError::transient(self.base.clone()).caused_by(e))?;
            let status = resp.status();
            let version = resp
                .headers()
                .get("Version")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| {
                    CallError::transient(format!("{}: reading the answer", self.base)).caused_by(e)
                })?
                .to_bytes();
            Ok::<_, CallError>(Answer {
                status,
                version,
                body,
            })
        };
        let answer = tokio::time::timeout(limit, exchange).await.map_err(|e| {
            CallError::transient(format!("{}: no answer within {limit:?}", self.base)).caused_by(e)
        })??;
        match answer.status {
            s if s.is_success()
                || s == StatusCode::CONFLICT
                || s == StatusCode::GATEWAY_TIMEOUT =>
            {
                Ok(answer)
            }
            StatusCode::NOT_FOUND => Err(CallError::not_found(text(&answer.body))),
            StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::BAD_GATEWAY
            | StatusCode::TOO_MANY_REQUESTS => Err(CallError::transient(format!(
                "{}: {}",
                answer.status,
                text(&answer.body)
            ))),
            s => Err(CallError::refused(format!("{s}: {}", text(&answer.body)))),
        }
    }

    /// One long poll: `Some(snapshot)` when the version differs, `None` when
    /// the manager says "ask again" (504 or 204).
    async fn poll(
        &self,
        cluster: &str,
        version: u64,
        limit: Duration,
    ) -> Result<Option<proto::MetaSnapshot>, CallError> {
        let path = format!("/clusters/{}/versions/{version}", seg(cluster));
        let a = self.send(Method::GET, &path, Bytes::new(), limit).await?;
        match a.status {
            StatusCode::OK => Ok(Some(proto::MetaSnapshot {
                cluster: cluster.to_owned(),
                version: a
                    .version
                    .ok_or_else(|| CallError::protocol("no Version header"))?,
                data: a.body,
                history_id: String::new(),
            })),
            StatusCode::GATEWAY_TIMEOUT | StatusCode::NO_CONTENT => Ok(None),
            s => Err(CallError::protocol(format!("long poll answered {s}"))),
        }
    }

    pub async fn call(&self, call: Call) -> Result<Reply, CallError> {
        match call {
            Call::Register(r) => {
                let body = wire::Registration {
                    ip: wire::join_ips(&r.ips),
                    hostname: r.hostname,
                    id: r.node_id,
                };
                let a = self
                    .send(
                        Method::POST,
                        &format!("/nodes/{}", seg(&r.cluster)),
                        serde_json::to_vec(&body)
                            .map_err(|e| CallError::refused("registration").caused_by(e))?
                            .into(),
                        self.timeout,
                    )
                    .await?;
                let reg: wire::Registered = serde_json::from_slice(&a.body)
                    .map_err(|e| CallError::protocol("registration answer").caused_by(e))?;
                let (heartbeat, ttl) = liveness(&reg.expiration_date, std::time::SystemTime::now());
                Ok(Reply::Registered(proto::RegisterResponse {
                    node_id: reg.id,
                    // The legacy protocol does not hand it out.
                    bind_address: String::new(),
                    heartbeat_interval_ms: heartbeat.as_millis() as u64,
                    ttl_ms: ttl.as_millis() as u64,
                }))
            }
            Call::Heartbeat(r) => {
                let path = format!("/nodes/{}/{}", seg(&r.cluster), seg(&r.node_id));
                self.send(Method::PUT, &path, Bytes::new(), self.timeout)
                    .await?;
                Ok(Reply::Done)
            }
            Call::Deregister(r) => {
                let path = format!("/nodes/{}/{}", seg(&r.cluster), seg(&r.node_id));
                self.send(Method::DELETE, &path, Bytes::new(), self.timeout)
                    .await?;
                Ok(Reply::Done)
            }
            Call::ListClusters(_) => Err(CallError::refused(
                "the legacy protocol cannot list clusters",
            )),
            Call::ListHistory(_) | Call::GetVersion(_) | Call::RestoreVersion(_) => Err(
                CallError::refused("the legacy protocol keeps no catalog history"),
            ),
            Call::DeleteCluster(_) => Err(CallError::refused(
                "the legacy protocol cannot delete clusters",
            )),
            Call::WatchNodes(_) => Err(CallError::unsupported(
                "the legacy protocol cannot watch nodes; list them instead",
            )),
            Call::ListNodes(r) => {
                let a = self
                    .send(
                        Method::GET,
                        &format!("/nodes/{}", seg(&r.cluster)),
                        Bytes::new(),
                        self.timeout,
                    )
                    .await?;
                let nodes: Vec<wire::Node> = serde_json::from_slice(&a.body)
                    .map_err(|e| CallError::protocol("node list").caused_by(e))?;
                Ok(Reply::Nodes(proto::ListNodesResponse {
                    nodes: nodes
                        .into_iter()
                        .map(|n| proto::Node {
                            node_id: n.id,
                            cluster: r.cluster.clone(),
                            hostname: n.hostname,
                            ips: wire::split_ips(&n.ip),
                            bind_address: n.bind_address,
                            alive: n.alive,
                            ..Default::default()
                        })
                        .collect(),
                }))
            }
            Call::GetMeta(r) => {
                // A version no catalog has answers at once with the current one.
                let snapshot = self.poll(&r.cluster, u64::MAX, self.timeout).await?;
                snapshot
                    .map(Reply::Snapshot)
                    .ok_or_else(|| CallError::protocol("GetMeta long poll was held"))
            }
            Call::PushMeta(r) => {
                let path = format!(
                    "/clusters/{}/versions/{}",
                    seg(&r.cluster),
                    r.expected_version
                );
                let a = self.send(Method::POST, &path, r.data, self.timeout).await?;
                let version = a
                    .version
                    .ok_or_else(|| CallError::protocol("no Version header"))?;
                use proto::push_meta_response::Result as R;
                let result = if a.status == StatusCode::CONFLICT {
                    R::Conflict(proto::MetaSnapshot {
                        cluster: r.cluster,
                        version,
                        data: a.body,
                        // The legacy protocol keeps no history identity.
                        history_id: String::new(),
                    })
                } else {
                    R::AcceptedVersion(version)
                };
                Ok(Reply::Pushed(proto::PushMetaResponse {
                    result: Some(result),
                }))
            }
            Call::WatchMeta(r) => {
                // A first, immediate request is made here, so a manager that
                // is down fails the call (and the retry layer sees it), not
                // the stream. It must not be the long poll itself: that is
                // held until the catalog changes, and the caller awaits this
                // call before it can attend to anything else (a node's local
                // changes would wait for a remote one). A version no catalog
                // has answers at once with the current catalog, sent first
                // when it differs from the caller's.
                let first = self
                    .poll(&r.cluster, u64::MAX, self.timeout)
                    .await?
                    .filter(|s| s.version != r.version);
                let this = self.clone();
                let stream = futures::stream::unfold(
                    (this, r.cluster, r.version, first),
                    |(t, cluster, mut version, mut pending)| async move {
                        loop {
                            if let Some(s) = pending.take() {
                                version = s.version;
                                return Some((Ok(s), (t, cluster, version, None)));
                            }
                            match t.poll(&cluster, version, LONG_POLL_LIMIT).await {
                                Ok(next) => pending = next,
                                Err(e) => return Some((Err(e), (t, cluster, version, None))),
                            }
                        }
                    },
                );
                Ok(Reply::Watch(Box::pin(stream)))
            }
        }
    }

    /// Whether `base` answers the legacy protocol (used to pick a transport
    /// in `auto` mode when gRPC fails).
    pub async fn speaks_legacy(&self) -> bool {
        self.send(Method::GET, "/nodes", Bytes::new(), self.timeout)
            .await
            .is_ok()
    }
}

/// The heartbeat interval and TTL a registration answer implies: the TTL is
/// the time left until its `expirationDate`, and a third of it the interval,
/// so a node survives two lost heartbeats whatever the manager's TTL; the
/// original's 5 s and 15 s when there is no date this can read (an original
/// manager's) or it is not in the future.
fn liveness(expiration_date: &str, now: std::time::SystemTime) -> (Duration, Duration) {
    let left = humantime::parse_rfc3339_weak(expiration_date)
        .ok()
        .and_then(|at| at.duration_since(now).ok())
        .filter(|left| !left.is_zero());
    match left {
        Some(ttl) => ((ttl / 3).clamp(MIN_HEARTBEAT, ORIGINAL_HEARTBEAT), ttl),
        None => (ORIGINAL_HEARTBEAT, ORIGINAL_TTL),
    }
}

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn at(rfc3339: &str) -> SystemTime {
        humantime::parse_rfc3339(rfc3339).unwrap()
    }

    #[test]
    fn the_heartbeat_follows_the_expiration_date() {
        let now = at("2026-01-01T00:00:00Z");
        let s = Duration::from_secs;
        // A 3 s TTL: a heartbeat every second.
        assert_eq!(liveness("2026-01-01T00:00:03Z", now), (s(1), s(3)));
        // The usual 15 s: the original's 5 s.
        assert_eq!(liveness("2026-01-01T00:00:15Z", now), (s(5), s(15)));
        // Never rarer than the original, never a busy loop.
        assert_eq!(liveness("2026-01-01T00:01:00Z", now), (s(5), s(60)));
        assert_eq!(
            liveness("2026-01-01T00:00:00.300Z", now),
            (MIN_HEARTBEAT, Duration::from_millis(300))
        );
        // No date, one this cannot read, or one already past: the original's.
        for answer in [
            "",
            "tomorrow",
            "2025-12-31T23:59:00Z",
            "2026-01-01T00:00:00Z",
        ] {
            assert_eq!(liveness(answer, now), (s(5), s(15)), "{answer:?}");
        }
    }
}
