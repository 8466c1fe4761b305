//! The authentication layer: finds the credentials a request presents (see
//! [`credentials`]), has the [`Authenticator`] judge a password, and passes
//! the request on as influxd should see it — with a JWT for a verified user,
//! with the credentials in a `Basic` header for a user only influxd knows,
//! untouched without credentials — or refuses a wrong password itself. The
//! client's `u`/`p` never reach influxd next to a JWT. Every request it
//! passes carries a [`Writer`]: who sent it, and whether the front door
//! vouched for them (replication acts as that user).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::Uri;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::agent::frontdoor::answer::{InfluxdIdentity, Refusal};
use crate::agent::frontdoor::authenticator::{Authenticator, Verdict};
use crate::agent::frontdoor::credentials::{self, Presented, Source};
use crate::agent::frontdoor::metrics::Auth;
use crate::agent::frontdoor::replication::Writer;
use crate::agent::influxql::sign_jwt;
use crate::http_serve::PeerAddr;
use crate::telemetry::with_causes;

/// How long the JWT handed to influxd is valid: it is used at once, for
/// one request.
pub const JWT_LIFETIME: Duration = Duration::from_secs(60);
/// The largest `POST /query` form body read to find `u`/`p` in it.
pub const MAX_FORM_BYTES: usize = 32 << 20;

/// What the layer needs: influxd's shared secret and the password checker.
pub struct Authentication {
    /// Without it the front door cannot vouch for anyone.
    secret: Option<String>,
    authenticator: Authenticator,
    identity: Arc<InfluxdIdentity>,
}

impl Authentication {
    pub fn new(
        secret: Option<String>,
        authenticator: Authenticator,
        identity: Arc<InfluxdIdentity>,
    ) -> Self {
        Authentication {
            secret: secret.filter(|s| !s.is_empty()),
            authenticator,
            identity,
        }
    }

    /// The request as influxd should see it, and how it was authenticated.
    async fn admit(&self, request: Request) -> Result<(Auth, Request), Refusal> {
        let (mut parts, body) = request.into_parts();
        let (presented, body) = presented(&mut parts, body).await?;
        let mut writer = Writer::default();
        let auth = match presented {
            Presented::Nothing => Auth::None,
            Presented::Bearer => {
                writer.user = parts
                    .headers
                    .get(header::AUTHORIZATION)
                    .and_then(credentials::bearer_username);
                Auth::Bearer
            }
            Presented::Password {
                username,
                password,
                source,
            } => {
                let checked = match &self.secret {
                    Some(secret) => {
                        Some((secret, self.authenticator.check(&username, &password).await))
                    }
                    None => None,
                };
                let (auth, authorization) = match checked {
                    Some((secret, c)) if c.verdict == Verdict::Valid => {
                        let auth = if c.cached {
                            Auth::Cached
                        } else {
                            Auth::Verified
                        };
                        (auth, bearer_header(secret, &username))
                    }
                    Some((_, c)) if c.verdict == Verdict::Invalid => {
                        let peer = parts.extensions.get::<PeerAddr>().map(|p| p.0);
                        tracing::info!(user = %username, ?source, peer = %peer.map_or_else(|| "-".to_owned(), |p| p.to_string()), "authentication failed");
                        return Err(Refusal::WrongPassword);
                    }
                    _ => (
                        Auth::Passed,
                        credentials::basic_header(&username, &password),
                    ),
                };
                parts.headers.insert(header::AUTHORIZATION, authorization);
                parts.uri = without_credential_params(&parts.uri).map_err(Refusal::InvalidUri)?;
                writer = Writer {
                    user: Some(username),
                    vouched: matches!(auth, Auth::Verified | Auth::Cached),
                };
                auth
            }
        };
        parts.extensions.insert(writer);
        Ok((auth, Request::from_parts(parts, body)))
    }
}

/// The layer (`axum::middleware::from_fn_with_state`); every answer carries
/// the [`Auth`] it was given for the metrics, except requests refused before
/// any credentials were read.
pub async fn authenticate(
    State(authentication): State<Arc<Authentication>>,
    request: Request,
    next: Next,
) -> Response {
    let (auth, mut response) = match authentication.admit(request).await {
        Ok((auth, request)) => (Some(auth), next.run(request).await),
        Err(refusal) => {
            if let Refusal::UnreadableBody(_) = &refusal {
                tracing::debug!(error = %with_causes(&refusal), "cannot read a request body");
            }
            let auth = matches!(refusal, Refusal::WrongPassword).then_some(Auth::Refused);
            (auth, authentication.identity.answer(&refusal))
        }
    };
    if let Some(auth) = auth {
        response.extensions_mut().insert(auth);
    }
    response
}

/// The credentials of a request: `u`/`p` in the query string first, then the
/// `Authorization` header, then `u`/`p` in a `POST /query` form body (read
/// whole, and given back without them).
async fn presented(parts: &mut Parts, body: Body) -> Result<(Presented, Body), Refusal> {
    if let Some((username, password)) = parts.uri.query().and_then(credentials::from_params) {
        let presented = Presented::Password {
            username,
            password,
            source: Source::Query,
        };
        return Ok((presented, body));
    }
    let presented = parts
        .headers
        .get(header::AUTHORIZATION)
        .map_or(Presented::Nothing, credentials::from_authorization);
    if presented != Presented::Nothing || !is_query_form(parts) {
        return Ok((presented, body));
    }
    let bytes = match Limited::new(body, MAX_FORM_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(Refusal::BodyTooLarge);
        }
        Err(e) => return Err(Refusal::UnreadableBody(e)),
    };
    let form = std::str::from_utf8(&bytes).ok();
    let Some(((username, password), form)) =
        form.and_then(|form| Some((credentials::from_params(form)?, form)))
    else {
        return Ok((Presented::Nothing, Body::from(bytes)));
    };
    let stripped = credentials::strip_params(form);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(stripped.len()));
    let presented = Presented::Password {
        username,
        password,
        source: Source::Form,
    };
    Ok((presented, Body::from(stripped)))
}

/// `Authorization: Bearer <jwt>` acting as `username`.
fn bearer_header(secret: &str, username: &str) -> HeaderValue {
    let jwt = sign_jwt(secret, username, JWT_LIFETIME);
    let mut v =
        HeaderValue::from_str(&format!("Bearer {jwt}")).expect("a JWT is a valid header value");
    v.set_sensitive(true);
    v
}

/// `uri` without `u` and `p` in its query string.
fn without_credential_params(uri: &Uri) -> Result<Uri, http::Error> {
    let path_and_query = match uri.query().map(credentials::strip_params) {
        Some(q) if !q.is_empty() => format!("{}?{q}", uri.path()),
        _ => uri.path().to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(path_and_query)?);
    Ok(Uri::from_parts(parts)?)
}

/// `POST /query` with a form body, which may carry `u` and `p`.
fn is_query_form(parts: &Parts) -> bool {
    parts.method == http::Method::POST
        && parts.uri.path() == "/query"
        && parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';').next().is_some_and(|m| {
                    m.trim()
                        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
                })
            })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_forms() {
        let parts = |method: &str, path: &str, ct: &str| {
            http::Request::builder()
                .method(method)
                .uri(path)
                .header(header::CONTENT_TYPE, ct)
                .body(())
                .unwrap()
                .into_parts()
                .0
        };
        let form = "application/x-www-form-urlencoded";
        assert!(is_query_form(&parts("POST", "/query", form)));
        assert!(is_query_form(&parts(
            "POST",
            "/query?db=x",
            "Application/X-WWW-Form-Urlencoded; charset=utf-8"
        )));
        // curl sends line protocol as a "form": /write bodies are never read.
        assert!(!is_query_form(&parts("POST", "/write", form)));
        assert!(!is_query_form(&parts("GET", "/query", form)));
        assert!(!is_query_form(&parts(
            "POST",
            "/query",
            "multipart/form-data"
        )));
    }

    #[test]
    fn credential_params_leave_the_uri() {
        let uri: Uri = "/query?db=x&u=bob&p=pw&q=SHOW+DATABASES".parse().unwrap();
        assert_eq!(
            without_credential_params(&uri).unwrap(),
            "/query?db=x&q=SHOW+DATABASES"
        );
        let uri: Uri = "http://db.example/ping?u=bob&p=pw".parse().unwrap();
        assert_eq!(
            without_credential_params(&uri).unwrap(),
            "http://db.example/ping"
        );
    }
}
