//! The front door's own answers, shaped as influxd shapes its errors
//! (`{"error":"…"}`, a request ID, influxd's version headers, the
//! `WWW-Authenticate` challenge on a 401), and why a request gets one.

use std::sync::RwLock;

use axum::body::Body;
use axum::response::Response;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;

/// The realm influxd names in its challenges (its default).
const REALM: &str = "Basic realm=\"InfluxDB\"";
/// influxd's headers that say which server answered.
const VERSION_HEADERS: [&str; 2] = ["x-influxdb-build", "x-influxdb-version"];

/// Why the front door answers a request itself instead of influxd.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// A user of the catalog with a wrong password.
    #[error("authorization failed")]
    WrongPassword,
    /// A `POST /query` form body over [`super::authentication::MAX_FORM_BYTES`].
    #[error("request body too large")]
    BodyTooLarge,
    #[error("cannot read the request body")]
    UnreadableBody(#[source] axum::BoxError),
    #[error("invalid request URI")]
    InvalidUri(#[source] http::Error),
    #[error("influxd cannot be reached")]
    Unreachable(#[source] hyper_util::client::legacy::Error),
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::WrongPassword => StatusCode::UNAUTHORIZED,
            Refusal::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::UnreadableBody(_) | Refusal::InvalidUri(_) => StatusCode::BAD_REQUEST,
            Refusal::Unreachable(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

/// influxd's `X-Influxdb-Build` and `-Version`, as last seen, for the front
/// door's own answers.
#[derive(Default)]
pub struct InfluxdIdentity {
    headers: RwLock<Vec<(HeaderName, HeaderValue)>>,
}

impl InfluxdIdentity {
    /// Keeps the version headers of an answer of influxd's.
    pub fn remember(&self, headers: &HeaderMap) {
        let seen: Vec<(HeaderName, HeaderValue)> = VERSION_HEADERS
            .iter()
            .filter_map(|n| Some((HeaderName::from_static(n), headers.get(*n)?.clone())))
            .collect();
        if seen.is_empty() {
            return;
        }
        let known = self.headers.read().unwrap_or_else(|e| e.into_inner());
        if *known == seen {
            return;
        }
        drop(known);
        *self.headers.write().unwrap_or_else(|e| e.into_inner()) = seen;
    }

    /// The answer to a refused request.
    pub fn answer(&self, refusal: &Refusal) -> Response {
        self.error(refusal.status(), &refusal.to_string())
    }

    /// An error of the front door's own, `{"error": message}` with `status`.
    pub fn error(&self, status: StatusCode, message: &str) -> Response {
        let body = format!("{}\n", serde_json::json!({ "error": message }));
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        let h = response.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let id = uuid::Uuid::new_v4().to_string();
        if let Ok(v) = HeaderValue::from_str(&id) {
            h.insert("request-id", v.clone());
            h.insert("x-request-id", v);
        }
        for (name, value) in self
            .headers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            h.insert(name.clone(), value.clone());
        }
        if status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(REALM));
        } else if let Ok(v) = HeaderValue::from_str(message) {
            h.insert("x-influxdb-error", v);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_look_like_influxd_and_carry_its_version() {
        let identity = InfluxdIdentity::default();
        let mut seen = HeaderMap::new();
        seen.insert("x-influxdb-version", HeaderValue::from_static("1.6.7"));
        identity.remember(&seen);
        let refused = identity.answer(&Refusal::WrongPassword);
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        let h = refused.headers();
        assert_eq!(h["www-authenticate"], REALM);
        assert_eq!(h["x-influxdb-version"], "1.6.7");
        assert!(h.contains_key("request-id"));
        assert!(!h.contains_key("x-influxdb-error"));
        let large = identity.answer(&Refusal::BodyTooLarge);
        assert_eq!(large.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            large.headers()["x-influxdb-error"],
            "request body too large"
        );
    }
}
