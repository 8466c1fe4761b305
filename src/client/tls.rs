//! Connecting to `https://` managers: one rustls client configuration, which
//! trusts either the system's roots or the CA of an operator's PEM file
//! (`--cflux-ca`), and the connector both transports dial through — gRPC
//! offering HTTP/2 through ALPN, the legacy protocol HTTP/1.1.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
pub use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::{self, RootCertStore};

/// Why the roots to trust could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read CA file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CA file {} holds no PEM certificate", .0.display())]
    NoCertificate(PathBuf),
    #[error("CA file {} holds a certificate rustls refuses", path.display())]
    BadCertificate {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("no system root certificate could be loaded ({0}); give a CA file with --cflux-ca")]
    NoSystemRoots(String),
    #[error("TLS configuration")]
    Config(#[from] rustls::Error),
}

/// Which protocol a connection offers through ALPN.
#[derive(Clone, Copy, Debug)]
pub enum Alpn {
    /// gRPC.
    Http2,
    /// The legacy protocol.
    Http1,
}

/// A client configuration trusting the certificates of `ca_file` only, or
/// the system's roots without one.
pub fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let read_error = |source| TlsError::Read {
                path: path.to_owned(),
                source,
            };
            let pem = std::fs::read(path).map_err(read_error)?;
            let certs = rustls_pemfile::certs(&mut pem.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(read_error)?;
            if certs.is_empty() {
                return Err(TlsError::NoCertificate(path.to_owned()));
            }
            for cert in certs {
                roots.add(cert).map_err(|source| TlsError::BadCertificate {
                    path: path.to_owned(),
                    source,
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            // A system store may hold a few certificates rustls cannot parse;
            // only an empty result leaves nothing to trust.
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(TlsError::NoSystemRoots(if why.is_empty() {
                    "the store is empty".into()
                } else {
                    why
                }));
            }
        }
    }
    Ok(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A configuration that trusts nothing: what a transport to a plain
/// `http://` manager holds, since it never makes a TLS handshake.
pub fn trust_nothing() -> Result<ClientConfig, TlsError> {
    Ok(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth(),
    )
}

/// A connector that dials `http://` URLs in plain TCP and `https://` ones
/// through TLS with `config`, offering `alpn`.
pub fn connector(
    config: ClientConfig,
    alpn: Alpn,
    connect_timeout: Duration,
) -> HttpsConnector<HttpConnector> {
    let mut tcp = HttpConnector::new();
    // The TLS layer above handles https:// URLs.
    tcp.enforce_http(false);
    tcp.set_connect_timeout(Some(connect_timeout));
    tcp.set_nodelay(true);
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http();
    match alpn {
        Alpn::Http2 => builder.enable_http2().wrap_connector(tcp),
        Alpn::Http1 => builder.enable_http1().wrap_connector(tcp),
    }
}
