//! Serving HTTP on a listening socket, shared by the manager and the agent's
//! front door: plain TCP or TLS, HTTP/1.1 and HTTP/2 detected per connection,
//! the peer's address in every request, and graceful shutdown on one
//! cancellation token — stop accepting, let requests in flight finish within
//! a grace period. A connection that does not deliver its request headers
//! (or its TLS handshake) within [`HEADER_READ_TIMEOUT`] is closed, as is an
//! HTTP/1.1 connection idle that long between requests and an HTTP/2 peer
//! that stops answering pings: slow or dead clients cannot pin connections.
//! HTTP/1 request targets that Go's server takes and hyper refuses reach
//! hyper percent-encoded ([`request_target`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::backoff::Backoff;

mod request_target;
use request_target::TargetEncoder;

/// Back-off after a failed accept (out of file descriptors and the like).
const ACCEPT_MIN_BACKOFF: Duration = Duration::from_millis(100);
const ACCEPT_MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How long a client may take to send a request's headers (and, first, the
/// first byte of its connection or its TLS handshake); also how long an
/// HTTP/1.1 connection may sit idle between requests.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 connections are pinged this often when idle; long-lived watch
/// streams stay open, peers that stop answering are dropped.
const HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const HTTP2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Streams one HTTP/2 connection may have open at once (hyper's default,
/// stated because clients multiplexing watches depend on it): a client
/// holding more watch streams opens more connections.
pub const HTTP2_MAX_CONCURRENT_STREAMS: u32 = 200;

/// The address a request came from, put into every request's extensions.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// Accepts connections until `shutdown`, then waits (up to `grace`) for
/// in-flight requests to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(HTTP2_KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(HTTP2_KEEP_ALIVE_TIMEOUT)
        .max_concurrent_streams(HTTP2_MAX_CONCURRENT_STREAMS);
    let builder = Arc::new(builder);
    let mut accept_backoff = Backoff::new(ACCEPT_MIN_BACKOFF, ACCEPT_MAX_BACKOFF);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    accept_backoff.reset();
                    a
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = accept_backoff.wait() => continue,
                    }
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone().map_request(move |mut r: Request| {
            r.extensions_mut().insert(PeerAddr(peer));
            r
        });
        let service =
            hyper::service::service_fn(move |r: hyper::Request<hyper::body::Incoming>| {
                app.clone().oneshot(r.map(axum::body::Body::new))
            });
        let builder = builder.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            // hyper's header timeout starts once it knows the protocol; a
            // client that sends nothing at all is closed here.
            let mut first = [0u8; 1];
            match tokio::time::timeout(HEADER_READ_TIMEOUT, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return,
                Err(_) => {
                    tracing::debug!(%peer, "no request within the header timeout; closing");
                    return;
                }
            }
            let result = match tls {
                None => {
                    let conn = builder.serve_connection_with_upgrades(
                        TokioIo::new(TargetEncoder::new(stream)),
                        service,
                    );
                    watcher.watch(conn.into_owned()).await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            let conn = builder.serve_connection_with_upgrades(
                                TokioIo::new(TargetEncoder::new(tls_stream)),
                                service,
                            );
                            watcher.watch(conn.into_owned()).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake not done within the header timeout; closing");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(grace) => tracing::warn!(?grace, "connections still open after the grace period; closing"),
    }
}

/// Why a TLS certificate and key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no private key in {}", .0.display())]
    NoKey(PathBuf),
    #[error("invalid certificate or key")]
    Config(#[from] tokio_rustls::rustls::Error),
}

/// Loads a PEM certificate chain and key into a TLS acceptor (HTTP/2 and
/// HTTP/1.1 offered through ALPN).
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let certs = rustls_pemfile::certs(&mut open_pem(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(cert, e))?;
    let key = rustls_pemfile::private_key(&mut open_pem(key)?)
        .map_err(|e| read_error(key, e))?
        .ok_or_else(|| TlsError::NoKey(key.to_owned()))?;
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn open_pem(path: &Path) -> Result<std::io::BufReader<std::fs::File>, TlsError> {
    std::fs::File::open(path)
        .map(std::io::BufReader::new)
        .map_err(|e| read_error(path, e))
}

fn read_error(path: &Path, source: std::io::Error) -> TlsError {
    TlsError::Read {
        path: path.to_owned(),
        source,
    }
}
