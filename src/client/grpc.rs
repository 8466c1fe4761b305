//! The gRPC transport: a [`Call`] becomes a `clusterflux.v1` RPC over one
//! lazily connected HTTP/2 channel per manager (h2c for `http://`, TLS for
//! `https://`).

use std::time::Duration;

use futures::StreamExt;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::client::call::{Call, CallError, Reply};
use crate::client::tls::{self, Alpn};
use crate::proto::clusterflux_client::ClusterfluxClient;

/// Largest message a node accepts from a manager.
const MAX_MESSAGE: usize = 256 << 20;

type Authed = InterceptedService<Channel, TokenInterceptor>;

/// Adds `authorization: Bearer <token>` to every request when a token is set.
#[derive(Clone)]
pub struct TokenInterceptor(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for TokenInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

/// One manager over gRPC.
#[derive(Clone)]
pub struct GrpcTransport {
    client: ClusterfluxClient<Authed>,
}

impl GrpcTransport {
    /// A transport for `url` (`http://host:port` or `https://host:port`,
    /// verified with `tls`). Connects on first use, so a manager that is
    /// down now does not stop the node from starting.
    pub fn new(
        url: &str,
        token: Option<&str>,
        timeout: Duration,
        tls: &tls::ClientConfig,
    ) -> Result<Self, CallError> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| CallError::refused(format!("invalid endpoint {url:?}")).caused_by(e))?
            .connect_timeout(timeout)
            .timeout(timeout)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        let token = match token {
            Some(t) => Some(format!("Bearer {t}").parse().map_err(|e| {
                CallError::refused("the token is not valid in a header").caused_by(e)
            })?),
            None => None,
        };
        let channel =
            endpoint.connect_with_connector_lazy(tls::connector(tls.clone(), Alpn::Http2, timeout));
        let client = ClusterfluxClient::with_interceptor(channel, TokenInterceptor(token))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        Ok(GrpcTransport { client })
    }

    pub async fn call(&self, call: Call) -> Result<Reply, CallError> {
        let mut c = self.client.clone();
        Ok(match call {
            Call::Register(r) => Reply::Registered(c.register(r).await?.into_inner()),
            Call::Heartbeat(r) => {
                c.heartbeat(r).await?;
                Reply::Done
            }
            Call::Deregister(r) => {
                c.deregister(r).await?;
                Reply::Done
            }
            Call::ListNodes(r) => Reply::Nodes(c.list_nodes(r).await?.into_inner()),
            Call::ListClusters(r) => Reply::Clusters(c.list_clusters(r).await?.into_inner()),
            Call::GetMeta(r) => Reply::Snapshot(c.get_meta(r).await?.into_inner()),
            Call::PushMeta(r) => Reply::Pushed(c.push_meta(r).await?.into_inner()),
            Call::ListHistory(r) => Reply::History(c.list_history(r).await?.into_inner()),
            Call::GetVersion(r) => Reply::Snapshot(c.get_version(r).await?.into_inner()),
            Call::RestoreVersion(r) => Reply::Pushed(c.restore_version(r).await?.into_inner()),
            Call::DeleteCluster(r) => Reply::Deleted(c.delete_cluster(r).await?.into_inner()),
            Call::WatchMeta(r) => {
                let stream = c.watch_meta(r).await?.into_inner();
                Reply::Watch(Box::pin(stream.map(|item| item.map_err(CallError::from))))
            }
            Call::WatchNodes(r) => {
                let stream = c.watch_nodes(r).await?.into_inner();
                Reply::NodeWatch(Box::pin(stream.map(|item| item.map_err(CallError::from))))
            }
        })
    }
}
