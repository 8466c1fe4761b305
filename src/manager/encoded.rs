//! `WatchMeta` with every snapshot encoded once and shared by all streams.
//!
//! tonic encodes each message of each stream into that stream's own buffer:
//! a push to 10,000 watchers would be 10,000 encodings and copies of one
//! catalog (and, for a catalog of 16 MiB, 16 MiB held per watcher until its
//! connection has taken it). [`WatchMeta`] answers that one method in front
//! of the generated service instead: it decodes the request with tonic's own
//! decoder, and the response body sends each snapshot as the gRPC frame the
//! hub encoded once ([`Announced::grpc_frame`](crate::manager::hub::Announced::grpc_frame)),
//! a reference to shared bytes that h2 writes to every connection without a
//! copy. Every other method goes to the generated service.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue};
use http_body_util::StreamBody;
use hyper::body::Frame;
use prost::Message;
use tonic::body::Body;
use tonic::codec::{Codec, Streaming};
use tonic::server::NamedService;
use tonic::Status;
use tonic_prost::ProstCodec;
use tower::Service;

use crate::manager::grpc::snapshot_message;
use crate::manager::plane::ControlPlane;
use crate::manager::store::Snapshot;
use crate::proto;

/// The path of the method this module serves.
const WATCH_META_PATH: &str = "/clusterflux.v1.Clusterflux/WatchMeta";

/// A snapshot as one `MetaSnapshot` gRPC message frame: the uncompressed
/// flag, the length (big-endian), the message.
pub fn grpc_frame(snapshot: &Snapshot) -> Bytes {
    let message = snapshot_message(snapshot);
    let len = message.encoded_len();
    let mut frame = BytesMut::with_capacity(5 + len);
    frame.put_u8(0);
    // Catalogs are bounded by --max-message-size, far below 4 GiB.
    frame.put_u32(len as u32);
    message.encode_raw(&mut frame);
    frame.freeze()
}

/// Answers `WatchMeta` with shared frames; passes everything else to `inner`.
#[derive(Clone)]
pub struct WatchMeta<S> {
    inner: S,
    plane: Arc<ControlPlane>,
    /// The largest request message accepted.
    max_request_bytes: usize,
}

impl<S> WatchMeta<S> {
    pub fn new(plane: Arc<ControlPlane>, max_request_bytes: usize, inner: S) -> Self {
        WatchMeta {
            inner,
            plane,
            max_request_bytes,
        }
    }
}

impl<S: NamedService> NamedService for WatchMeta<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for WatchMeta<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() != WATCH_META_PATH {
            return Box::pin(self.inner.call(request));
        }
        let (plane, max) = (self.plane.clone(), self.max_request_bytes);
        Box::pin(async move {
            Ok(match watch(plane, request, max).await {
                Ok(body) => {
                    let mut response = http::Response::new(body);
                    response.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        HeaderValue::from_static("application/grpc"),
                    );
                    response
                }
                Err(status) => status.into_http(),
            })
        })
    }
}

/// Keeps the open-streams gauge right however a stream ends.
struct StreamGauge(Arc<ControlPlane>);

impl Drop for StreamGauge {
    fn drop(&mut self) {
        self.0.metrics.watch_streams.dec();
    }
}

/// Opens the watch a request asks for; the response body: the snapshots'
/// frames as they come, then `grpc-status: 0` once the hub closes
/// (shutdown, or the cluster was deleted).
async fn watch(
    plane: Arc<ControlPlane>,
    request: http::Request<Body>,
    max_request_bytes: usize,
) -> Result<Body, Status> {
    let decoder = ProstCodec::<proto::MetaSnapshot, proto::WatchMetaRequest>::default().decoder();
    let mut messages =
        Streaming::new_request(decoder, request.into_body(), None, Some(max_request_bytes));
    let r = messages
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("WatchMeta without a request message"))?;
    let sub = plane.watch(&r.cluster).await?;
    plane.metrics.watch_streams.inc();
    let gauge = StreamGauge(plane.clone());
    tracing::debug!(cluster = %r.cluster, version = r.version, "watch opened");
    let frames = futures::stream::unfold(
        (sub, r.version, gauge),
        |(mut sub, known, gauge)| async move {
            let snapshot = sub.next_different(known).await?;
            let frame = Frame::data(snapshot.grpc_frame());
            Some((Ok(frame), (sub, snapshot.version, gauge)))
        },
    )
    .chain(futures::stream::once(async {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        Ok::<_, Infallible>(Frame::trailers(trailers))
    }));
    Ok(Body::new(StreamBody::new(frames)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_the_length_prefixed_message_tonic_decodes() {
        let snapshot = Snapshot {
            cluster: "prod".into(),
            version: 7,
            data: Bytes::from_static(b"catalog bytes"),
            history_id: "h1".into(),
        };
        let frame = grpc_frame(&snapshot);
        assert_eq!(frame[0], 0, "not compressed");
        let len = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
        assert_eq!(len, frame.len() - 5);
        let decoded = proto::MetaSnapshot::decode(&frame[5..]).expect("a MetaSnapshot");
        assert_eq!(
            decoded,
            proto::MetaSnapshot {
                cluster: "prod".into(),
                version: 7,
                data: Bytes::from_static(b"catalog bytes"),
                history_id: "h1".into(),
            }
        );
    }
}
