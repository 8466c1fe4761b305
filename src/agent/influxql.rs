//! The agent's line to its influxd: InfluxQL over the HTTP API (`POST /query`),
//! authenticated with a short-lived JWT signed with influxd's shared secret,
//! basic credentials, or nothing; and the reads and writes of points that
//! `cfluxctl verify` and catch-up need: answers streamed chunk by chunk
//! (`chunked=true`, [`Chunks`]) and line protocol written (`POST /write`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use crate::agent::config::InfluxAuth;
use crate::client::meta::MetaError;

/// Why a statement did not run.
#[derive(Debug, thiserror::Error)]
pub enum InfluxdError {
    /// The request could not be built (a bad `--influxdb-url`).
    #[error("cannot build a request to {url}")]
    Request {
        url: String,
        #[source]
        source: http::Error,
    },
    /// influxd cannot be reached.
    #[error("{base} cannot be reached")]
    Unreachable {
        base: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The answer broke off.
    #[error("{base}: the answer broke off")]
    Body {
        base: String,
        #[source]
        source: hyper::Error,
    },
    /// No answer in time.
    #[error("{base}: no answer within {TIMEOUT:?}")]
    Timeout { base: String },
    /// A write answered with an error status.
    #[error("{base}: influxd answered {status} to a write: {answer}")]
    Status {
        base: String,
        status: http::StatusCode,
        answer: String,
    },
    /// influxd answered with an error: it refused the statement.
    #[error("influxd refused {statement}: {answer}")]
    Refused {
        /// The statement, passwords redacted.
        statement: String,
        /// influxd's own words.
        answer: String,
    },
}

impl InfluxdError {
    /// Whether influxd itself refused the statement (it was reachable).
    pub fn is_refusal(&self) -> bool {
        matches!(self, InfluxdError::Refused { .. })
    }

    /// Whether a write was refused for good (bad points, no privilege),
    /// as opposed to not taken now.
    pub fn is_client_error(&self) -> bool {
        matches!(self, InfluxdError::Status { status, .. } if status.is_client_error())
    }
}

impl From<InfluxdError> for MetaError {
    fn from(e: InfluxdError) -> Self {
        match e {
            InfluxdError::Refused { .. }
            | InfluxdError::Request { .. }
            | InfluxdError::Status { .. } => MetaError::Failed(Box::new(e)),
            _ => MetaError::Unavailable(Box::new(e)),
        }
    }
}

/// How long a signed JWT is valid.
const JWT_LIFETIME: Duration = Duration::from_secs(60);
const TIMEOUT: Duration = Duration::from_secs(10);

/// An HS256 JWT for `username`, as influxd's `shared-secret` expects.
pub fn sign_jwt(secret: &str, username: &str, lifetime: Duration) -> String {
    let exp = SystemTime::now()
        .checked_add(lifetime)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims =
        URL_SAFE_NO_PAD.encode(serde_json::json!({ "username": username, "exp": exp }).to_string());
    let signing_input = format!("{header}.{claims}");
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// influxd's HTTP API.
#[derive(Clone)]
pub struct Influxd {
    base: String,
    auth: InfluxAuth,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl Influxd {
    pub fn new(base: &str, auth: InfluxAuth) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(3)));
        Influxd {
            base: base.trim_end_matches('/').to_owned(),
            auth,
            http: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// How it authenticates.
    pub fn auth(&self) -> &InfluxAuth {
        &self.auth
    }

    /// The server's base URL (`--influxdb-url`).
    pub fn url(&self) -> &str {
        &self.base
    }

    /// The `Authorization` header for a request acting as `admin` (the
    /// shared-secret mode needs an existing user to name in the JWT).
    fn authorization(&self, admin: Option<&str>) -> Option<String> {
        match &self.auth {
            InfluxAuth::None => None,
            InfluxAuth::Basic { username, password } => Some(format!(
                "Basic {}",
                STANDARD.encode(format!("{username}:{password}"))
            )),
            InfluxAuth::SharedSecret { secret, user } => {
                let name = user.as_deref().or(admin)?;
                Some(format!("Bearer {}", sign_jwt(secret, name, JWT_LIFETIME)))
            }
        }
    }

    /// Whether influxd answers `/ping`.
    pub async fn ping(&self) -> bool {
        let req = hyper::Request::get(format!("{}/ping", self.base)).body(Full::new(Bytes::new()));
        let Ok(req) = req else { return false };
        matches!(
            tokio::time::timeout(TIMEOUT, self.http.request(req)).await,
            Ok(Ok(r)) if r.status().is_success()
        )
    }

    /// Runs one InfluxQL statement; `shown` is how it may be logged
    /// (passwords redacted), `admin` a user to act as in shared-secret mode
    /// when none is configured.
    pub async fn execute(
        &self,
        statement: &str,
        shown: &str,
        admin: Option<&str>,
    ) -> Result<(), InfluxdError> {
        self.query(statement, shown, admin).await.map(drop)
    }

    /// Runs a read-only statement (one influxd answers without a database,
    /// e.g. `SHOW STATS`): its answer as JSON.
    pub async fn query_json(
        &self,
        statement: &str,
        admin: Option<&str>,
    ) -> Result<serde_json::Value, InfluxdError> {
        let body = self.query(statement, statement, admin).await?;
        serde_json::from_slice(&body).map_err(|e| InfluxdError::Refused {
            statement: statement.into(),
            answer: format!("an answer that is not JSON: {e}"),
        })
    }

    /// The databases influxd lists (`SHOW DATABASES`), `_internal` included.
    pub async fn databases(&self, admin: Option<&str>) -> Result<Vec<String>, InfluxdError> {
        let statement = "SHOW DATABASES";
        let body = self.query(statement, statement, admin).await?;
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| InfluxdError::Refused {
                statement: statement.into(),
                answer: format!("an answer that is not JSON: {e}"),
            })?;
        let values = v["results"][0]["series"][0]["values"].as_array();
        Ok(values
            .into_iter()
            .flatten()
            .filter_map(|row| row[0].as_str().map(str::to_owned))
            .collect())
    }

    /// Runs a read-only statement with `chunked=true` (times as nanosecond
    /// integers): the answer, read one chunk of at most `chunk_size` points
    /// at a time.
    pub async fn read_chunked(
        &self,
        statement: &str,
        chunk_size: usize,
    ) -> Result<Chunks, InfluxdError> {
        let parameters = format!("&epoch=ns&chunked=true&chunk_size={chunk_size}");
        let req = self.query_request(statement, &parameters, None)?;
        let response = send_within(&self.http, &self.base, TIMEOUT, req).await?;
        Chunks::from_response(response, &self.base, statement).await
    }

    /// Writes line protocol (nanosecond times) into `database`.`policy`.
    pub async fn write_points(
        &self,
        database: &str,
        policy: &str,
        lines: Bytes,
        admin: Option<&str>,
    ) -> Result<(), InfluxdError> {
        let url = format!("{}{}", self.base, write_path(database, policy));
        let mut req = hyper::Request::post(&url);
        if let Some(a) = self.authorization(admin) {
            req = req.header("authorization", a);
        }
        let req = req
            .body(Full::new(lines))
            .map_err(|source| InfluxdError::Request { url, source })?;
        let (status, body) = self.exchange(req).await?;
        if status.is_success() {
            return Ok(());
        }
        Err(InfluxdError::Status {
            base: self.base.clone(),
            status,
            answer: String::from_utf8_lossy(&body).trim().to_owned(),
        })
    }

    /// Sends `req` and reads the whole answer, within [`TIMEOUT`].
    async fn exchange(
        &self,
        req: hyper::Request<Full<Bytes>>,
    ) -> Result<(http::StatusCode, Bytes), InfluxdError> {
        let base = || self.base.clone();
        let exchange = async {
            let resp =
                self.http
                    .request(req)
                    .await
                    .map_err(|source| InfluxdError::Unreachable {
                        base: base(),
                        source,
                    })?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|source| InfluxdError::Body {
                    base: base(),
                    source,
                })?
                .to_bytes();
            Ok::<_, InfluxdError>((status, body))
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| InfluxdError::Timeout { base: base() })?
    }

    /// `POST /query` of `statement` with more form parameters
    /// (`&name=value…`), acting as `admin` in shared-secret mode.
    fn query_request(
        &self,
        statement: &str,
        parameters: &str,
        admin: Option<&str>,
    ) -> Result<hyper::Request<Full<Bytes>>, InfluxdError> {
        let body = format!(
            "q={}{parameters}",
            utf8_percent_encode(statement, NON_ALPHANUMERIC)
        );
        let url = format!("{}/query", self.base);
        let mut req =
            hyper::Request::post(&url).header("content-type", "application/x-www-form-urlencoded");
        if let Some(a) = self.authorization(admin) {
            req = req.header("authorization", a);
        }
        req.body(Full::new(Bytes::from(body)))
            .map_err(|source| InfluxdError::Request { url, source })
    }

    /// Runs one InfluxQL statement and returns influxd's answer when it
    /// holds no error.
    async fn query(
        &self,
        statement: &str,
        shown: &str,
        admin: Option<&str>,
    ) -> Result<Bytes, InfluxdError> {
        let req = self.query_request(statement, "", admin)?;
        let (status, body) = self.exchange(req).await?;
        let answer =
            query_error(&body).or_else(|| (!status.is_success()).then(|| format!("HTTP {status}")));
        match answer {
            Some(answer) => Err(InfluxdError::Refused {
                statement: shown.to_owned(),
                answer,
            }),
            None => Ok(body),
        }
    }
}

/// `/write?db=…&rp=…&precision=ns`, names percent-encoded.
pub fn write_path(database: &str, policy: &str) -> String {
    format!(
        "/write?db={}&rp={}&precision=ns",
        utf8_percent_encode(database, NON_ALPHANUMERIC),
        utf8_percent_encode(policy, NON_ALPHANUMERIC)
    )
}

/// Sends `request` to the server at `base` on `http`; its answer's head
/// within `within`.
pub async fn send_within(
    http: &Client<HttpConnector, Full<Bytes>>,
    base: &str,
    within: Duration,
    request: hyper::Request<Full<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, InfluxdError> {
    tokio::time::timeout(within, http.request(request))
        .await
        .map_err(|_| InfluxdError::Timeout {
            base: base.to_owned(),
        })?
        .map_err(|source| InfluxdError::Unreachable {
            base: base.to_owned(),
            source,
        })
}

/// A `chunked=true` answer of `/query`: one JSON document a line, each
/// holding up to `chunk_size` points, read as they arrive.
pub struct Chunks {
    body: hyper::body::Incoming,
    buffer: bytes::BytesMut,
    base: String,
    statement: String,
}

impl Chunks {
    /// The chunks of `response`; influxd's refusal when it is an error.
    pub async fn from_response(
        response: http::Response<hyper::body::Incoming>,
        base: &str,
        statement: &str,
    ) -> Result<Chunks, InfluxdError> {
        let status = response.status();
        let mut chunks = Chunks {
            body: response.into_body(),
            buffer: bytes::BytesMut::new(),
            base: base.to_owned(),
            statement: statement.to_owned(),
        };
        if !status.is_success() {
            let first = chunks.next().await.ok().flatten();
            let answer = first
                .as_ref()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("HTTP {status}"));
            return Err(chunks.refused(answer));
        }
        Ok(chunks)
    }

    fn refused(&self, answer: String) -> InfluxdError {
        InfluxdError::Refused {
            statement: self.statement.clone(),
            answer,
        }
    }

    /// The next chunk; `None` after the last. A chunk carrying an error
    /// (top-level or per statement) is influxd's refusal.
    pub async fn next(&mut self) -> Result<Option<serde_json::Value>, InfluxdError> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line = self.buffer.split_to(end + 1);
                if line.trim_ascii().is_empty() {
                    continue;
                }
                return self.parse(&line).map(Some);
            }
            let frame = tokio::time::timeout(TIMEOUT, self.body.frame())
                .await
                .map_err(|_| InfluxdError::Timeout {
                    base: self.base.clone(),
                })?;
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                Some(Err(source)) => {
                    return Err(InfluxdError::Body {
                        base: self.base.clone(),
                        source,
                    })
                }
                None if self.buffer.trim_ascii().is_empty() => return Ok(None),
                None => {
                    let rest = self.buffer.split();
                    return self.parse(&rest).map(Some);
                }
            }
        }
    }

    fn parse(&self, line: &[u8]) -> Result<serde_json::Value, InfluxdError> {
        if let Some(answer) = query_error(line) {
            return Err(self.refused(answer));
        }
        serde_json::from_slice(line)
            .map_err(|e| self.refused(format!("an answer that is not JSON: {e}")))
    }
}

/// The first error in a `/query` answer, top-level or per statement.
fn query_error(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        return Some(e.to_owned());
    }
    v.get("results")?
        .as_array()?
        .iter()
        .find_map(|r| r.get("error").and_then(|e| e.as_str()).map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_has_three_parts_and_the_claims() {
        let t = sign_jwt("s3cret", "admin", Duration::from_secs(60));
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["username"], "admin");
        assert!(claims["exp"].as_u64().unwrap() > 1_700_000_000);
        // Same input, same key, same second: same signature; another key differs.
        let other = sign_jwt("other", "admin", Duration::from_secs(60));
        assert_ne!(t.rsplit('.').next(), other.rsplit('.').next());
    }

    #[test]
    fn errors_are_found_in_answers() {
        assert_eq!(query_error(br#"{"results":[{"statement_id":0}]}"#), None);
        assert_eq!(
            query_error(br#"{"results":[{"statement_id":0,"error":"database not found"}]}"#)
                .as_deref(),
            Some("database not found")
        );
        assert_eq!(
            query_error(br#"{"error":"unable to parse authentication credentials"}"#).as_deref(),
            Some("unable to parse authentication credentials")
        );
    }
}
