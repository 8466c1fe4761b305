//! The headers of a request passed on, as a reverse proxy keeps them:
//! hop-by-hop headers removed both ways (they belong to one connection), and
//! `X-Forwarded-For`, `-Proto` and `-Host` added to say where the request
//! came from. Both are request/response maps for `tower::util`'s layers.

use axum::extract::Request;
use axum::response::Response;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::http_serve::PeerAddr;

/// A request without its hop-by-hop headers.
pub fn strip_request(mut request: Request) -> Request {
    remove_hop_by_hop(request.headers_mut());
    request
}

/// A response without its hop-by-hop headers.
pub fn strip_response(mut response: Response) -> Response {
    remove_hop_by_hop(response.headers_mut());
    response
}

/// Adds `X-Forwarded-Host` (the client's `Host`), `-For` (the peer, after
/// any earlier proxies) and `-Proto` (`scheme`, how the client came in).
pub fn add_forwarded(scheme: &'static str) -> impl Fn(Request) -> Request + Clone {
    move |mut request: Request| {
        let peer = request.extensions().get::<PeerAddr>().map(|p| p.0);
        let host = request.headers().get(header::HOST).cloned().or_else(|| {
            request
                .uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let headers = request.headers_mut();
        if let Some(host) = host {
            headers.insert("x-forwarded-host", host);
        }
        if let Some(peer) = peer {
            let forwarded = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
                Some(earlier) => format!("{earlier}, {}", peer.ip()),
                None => peer.ip().to_string(),
            };
            if let Ok(v) = HeaderValue::from_str(&forwarded) {
                headers.insert("x-forwarded-for", v);
            }
        }
        headers.insert("x-forwarded-proto", HeaderValue::from_static(scheme));
        request
    }
}

/// Headers that belong to one connection, not to the request (RFC 9110
/// §7.6.1), and whatever `Connection` names.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close, x-hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        remove_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["content-type", "authorization"]);
    }

    #[test]
    fn forwarded_headers_name_the_client() {
        let mut request = Request::builder()
            .uri("/query")
            .header(header::HOST, "db.example:8086")
            .header("x-forwarded-for", "10.0.0.9")
            .body(Body::empty())
            .expect("a request");
        request
            .extensions_mut()
            .insert(PeerAddr(([192, 0, 2, 1], 5000).into()));
        let request = add_forwarded("https")(request);
        let h = request.headers();
        assert_eq!(h["x-forwarded-host"], "db.example:8086");
        assert_eq!(h["x-forwarded-for"], "10.0.0.9, 192.0.2.1");
        assert_eq!(h["x-forwarded-proto"], "https");
    }
}
