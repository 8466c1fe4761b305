//! Statements that change points (`DELETE`, `DROP SERIES`, `DROP
//! MEASUREMENT`, `SELECT … INTO`, see [`statements`]) travel as writes do.
//!
//! At the front door that takes one, `now()` is pinned to one instant, the
//! query runs on the local influxd, and each such statement that succeeded
//! there is queued for every member, durably and before the client hears
//! the answer — in the same per-peer queue as the writes, so a peer runs it
//! after the writes this node accepted before it and before those it
//! accepted after. The answer follows the writes' consistency rules
//! (`consistency=`, or the agent's default).
//!
//! `DROP SHARD` is refused: shard IDs are each node's own, so one ID names
//! different data on every node. A query whose local influxd cannot be
//! reached is refused too, never run on a peer alone.
//!
//! On the receiving end a queued statement runs on the local influxd as
//! the user who sent it, in turn with catalog applies
//! ([`crate::agent::turns`]). A database or policy the node does not have
//! yet is "not yet" until its catalog has caught up with the origin's
//! ([`super::origin_catalog`]); any other error refuses the statement for
//! good, logged.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http::header;
use http::StatusCode;
use http_body_util::BodyExt;

use super::{now_ns, Consistency, Hint, OriginCatalog, Replication, UpstreamUnreachable, Writer};
use crate::agent::frontdoor::statements::{self, Kind, Statement};
use crate::clock::now_ms;

/// The largest answer read back to learn which statements succeeded.
const MAX_ANSWER_BYTES: usize = 64 << 20;
const FORM: &str = "application/x-www-form-urlencoded";

/// A `/query` request's parameters, read as influxd reads them (Go's
/// `FormValue`: a `POST` form body first, then the query string).
pub(super) struct QueryParams {
    form: Option<Vec<(String, String)>>,
    url: Vec<(String, String)>,
}

impl QueryParams {
    pub(super) fn read(parts: &http::request::Parts, body: &[u8]) -> QueryParams {
        let is_form = parts.method == http::Method::POST
            && parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case(FORM));
        QueryParams {
            form: is_form.then(|| pairs(body)),
            url: pairs(parts.uri.query().unwrap_or_default().as_bytes()),
        }
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        fn first<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
            pairs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
        self.form
            .as_deref()
            .and_then(|form| first(form, name))
            .or_else(|| first(&self.url, name))
    }

    /// The request with `q` replaced where influxd reads it.
    fn with_query(
        &self,
        mut parts: http::request::Parts,
        body: Bytes,
        q: &str,
    ) -> Result<Request, http::Error> {
        let replace = |pairs: &[(String, String)]| {
            let mut out = form_urlencoded::Serializer::new(String::new());
            for (n, v) in pairs {
                out.append_pair(n, if n == "q" { q } else { v });
            }
            out.finish()
        };
        match &self.form {
            Some(form) if form.iter().any(|(n, _)| n == "q") => {
                parts.headers.remove(header::CONTENT_LENGTH);
                Ok(Request::from_parts(parts, Body::from(replace(form))))
            }
            _ => {
                let uri = format!("{}?{}", parts.uri.path(), replace(&self.url));
                parts.uri = uri.parse()?;
                Ok(Request::from_parts(parts, Body::from(body)))
            }
        }
    }
}

fn pairs(s: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(s).into_owned().collect()
}

impl Replication {
    /// A query holding statements every node must run (see the module).
    pub(super) async fn data_statements(
        &self,
        parts: http::request::Parts,
        body: Bytes,
        params: QueryParams,
        statements: Vec<Statement>,
        next: Next,
    ) -> Response {
        if statements.iter().any(|s| s.kind == Kind::DropShard) {
            return self.identity.error(
                StatusCode::BAD_REQUEST,
                "DROP SHARD is refused through a replicating front door: shard IDs are each \
                 node's own, so the same ID names different data on every node; delete the \
                 points with DELETE or DROP SERIES, or drop the retention policy",
            );
        }
        let consistency = match Consistency::from_query(parts.uri.query(), self.default_consistency)
        {
            Ok(c) => c,
            Err(e) => return self.identity.error(StatusCode::BAD_REQUEST, &e.to_string()),
        };
        if let Err(refused) = self.members_known().await {
            return refused;
        }
        let writer = parts
            .extensions
            .get::<Writer>()
            .cloned()
            .unwrap_or_default();
        let now = now_ns();
        let pinned: Vec<Statement> = statements
            .into_iter()
            .map(|s| match s.kind.is_replicated() {
                true => Statement {
                    text: statements::pin_now(&s.text, now),
                    kind: s.kind,
                },
                false => s,
            })
            .collect();
        let q = join(pinned.iter());
        let hint_path = replicated_path(&params);
        let request = match params.with_query(parts, body, &q) {
            Ok(r) => r,
            Err(_) => {
                return self
                    .identity
                    .error(StatusCode::BAD_REQUEST, "invalid request URI")
            }
        };
        let local = next.run(request).await;
        if local.extensions().get::<UpstreamUnreachable>().is_some() {
            return self.identity.error(
                StatusCode::SERVICE_UNAVAILABLE,
                "this node's influxd cannot be reached: a statement that changes points runs \
                 here first and then on every other node, so it is refused; try another node",
            );
        }
        if !local.status().is_success() {
            return local;
        }
        // influxd ran what it could; what it could not is not sent on.
        let (local, failed) = failures(local, pinned.len()).await;
        let replicated: Vec<&Statement> = pinned
            .iter()
            .enumerate()
            .filter(|(i, s)| s.kind.is_replicated() && !failed.contains(i))
            .map(|(_, s)| s)
            .collect();
        if replicated.is_empty() {
            return local;
        }
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("q", &join(replicated.into_iter()))
            .finish();
        let hint = Hint {
            path_and_query: hint_path,
            user: writer.user,
            content_encoding: None,
            body: Bytes::from(form),
            queued_at_ms: now_ms(),
        };
        match self.queue(hint, 0, true, consistency).await {
            Ok(()) => local,
            Err(error) => self.error(error),
        }
    }

    /// A statement queued by a peer, run on the local influxd as its user:
    /// `Ok(true)` ran, `Ok(false)` refused for good, `Err` not now.
    pub(super) async fn run_statement(
        &self,
        hint: &Hint,
        origin: Option<&OriginCatalog>,
    ) -> Result<bool, String> {
        let request = Request::post(&hint.path_and_query).header(header::CONTENT_TYPE, FORM);
        let _turn = self.turns.take().await;
        let sent = self
            .send_as(request, hint.user.as_deref(), hint.body.clone())
            .await?;
        let Some((status, answer)) = sent else {
            return Ok(false);
        };
        let error = if status.is_success() {
            match first_error(answer.as_bytes()) {
                None => return Ok(true),
                Some(e) => e,
            }
        } else {
            answer.trim().to_owned()
        };
        // A database or policy this node's catalog may not have caught up with.
        let missing =
            error.contains("database not found") || error.contains("retention policy not found");
        let status = if missing && status.is_success() {
            StatusCode::NOT_FOUND
        } else if status.is_success() {
            StatusCode::BAD_REQUEST
        } else {
            status
        };
        if self.refused_for_good(status, hint.queued_at_ms, origin) {
            tracing::warn!(user = hint.user.as_deref().unwrap_or("-"), %status, answer = %error, "influxd refused a replicated statement");
            Ok(false)
        } else {
            Err(format!("influxd: {status} {error}"))
        }
    }
}

/// Statements as one query.
fn join<'a>(statements: impl Iterator<Item = &'a Statement>) -> String {
    statements
        .map(|s| s.text.as_str())
        .collect::<Vec<_>>()
        .join(";\n")
}

/// `/query` with the parameters a statement's meaning depends on (the
/// default database and policy), and nothing else.
fn replicated_path(params: &QueryParams) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for name in ["db", "rp"] {
        if let Some(v) = params.get(name).filter(|v| !v.is_empty()) {
            query.append_pair(name, v);
        }
    }
    match query.finish() {
        q if q.is_empty() => "/query".to_owned(),
        q => format!("/query?{q}"),
    }
}

/// influxd's answer to a query of `statements` statements, read back whole,
/// and the statements (by position) it answered with an error; none when
/// the answer cannot be read that way (influxd may have run them all).
pub(super) async fn failures(local: Response, statements: usize) -> (Response, BTreeSet<usize>) {
    let (local, answer) = read_whole(local).await;
    let failed = answer
        .and_then(|a| failed_statements(&a, statements))
        .unwrap_or_default();
    (local, failed)
}

/// `response` read to its end (influxd has then run every statement), and
/// what it said; an answer over [`MAX_ANSWER_BYTES`], or one that broke
/// off, is given back as it comes (what was read, then the rest), unread.
pub(super) async fn read_whole(response: Response) -> (Response, Option<Bytes>) {
    let (head, mut body) = response.into_parts();
    let mut read = BytesMut::new();
    loop {
        match body.frame().await {
            None => {
                let whole = read.freeze();
                return (
                    Response::from_parts(head, Body::from(whole.clone())),
                    Some(whole),
                );
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    read.extend_from_slice(&data);
                }
                if read.len() <= MAX_ANSWER_BYTES {
                    continue;
                }
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "influxd's answer broke off");
            }
        }
        let first = futures::stream::once(std::future::ready(Ok::<_, axum::Error>(read.freeze())));
        let rest = first.chain(body.into_data_stream());
        return (Response::from_parts(head, Body::from_stream(rest)), None);
    }
}

/// The statements (by position) influxd answered with an error; `None`
/// when its answer cannot be read that way. A whole-query error (a parse
/// error) fails them all.
fn failed_statements(answer: &[u8], statements: usize) -> Option<BTreeSet<usize>> {
    let mut failed = BTreeSet::new();
    for document in serde_json::Deserializer::from_slice(answer).into_iter::<serde_json::Value>() {
        let document = document.ok()?;
        if document.get("error").is_some() {
            return Some((0..statements).collect());
        }
        for result in document.get("results")?.as_array()? {
            if result.get("error").is_some() {
                failed.insert(usize::try_from(result.get("statement_id")?.as_u64()?).ok()?);
            }
        }
    }
    Some(failed)
}

/// The first error in an answer of influxd's, whole-query or per statement.
fn first_error(answer: &[u8]) -> Option<String> {
    for document in serde_json::Deserializer::from_slice(answer).into_iter::<serde_json::Value>() {
        let Ok(document) = document else {
            return Some("an answer that is not JSON".to_owned());
        };
        let results = document.get("results").and_then(|r| r.as_array());
        let error = document
            .get("error")
            .or_else(|| results?.iter().find_map(|r| r.get("error")));
        if let Some(e) = error {
            return Some(e.as_str().unwrap_or_default().to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_statements_are_read_from_plain_and_chunked_answers() {
        let plain = br#"{"results":[{"statement_id":0},{"statement_id":1,"error":"database not found: x"}]}"#;
        assert_eq!(failed_statements(plain, 2), Some([1].into()));
        let chunked = b"{\"results\":[{\"statement_id\":0,\"error\":\"e\"}]}\n{\"results\":[{\"statement_id\":1}]}\n";
        assert_eq!(failed_statements(chunked, 2), Some([0].into()));
        let parse_error = br#"{"error":"error parsing query: found EOF"}"#;
        assert_eq!(failed_statements(parse_error, 3), Some([0, 1, 2].into()));
        assert_eq!(failed_statements(b"<html>", 1), None);
        assert_eq!(first_error(plain).as_deref(), Some("database not found: x"));
        assert_eq!(first_error(br#"{"results":[{"statement_id":0}]}"#), None);
    }

    #[test]
    fn replicated_statements_carry_their_database_and_policy_only() {
        let parts = |method: &str, uri: &str| {
            Request::builder()
                .method(method)
                .uri(uri)
                .header(header::CONTENT_TYPE, FORM)
                .body(())
                .unwrap()
                .into_parts()
                .0
        };
        let params = QueryParams::read(
            &parts("POST", "/query?db=url&epoch=ns&pretty=true"),
            b"q=DELETE+FROM+cpu&db=form&rp=r%201",
        );
        assert_eq!(params.get("q"), Some("DELETE FROM cpu"));
        assert_eq!(replicated_path(&params), "/query?db=form&rp=r+1");
        let params = QueryParams::read(&parts("GET", "/query?q=x"), b"db=ignored");
        assert_eq!(replicated_path(&params), "/query");
    }
}
