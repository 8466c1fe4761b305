//! The calls a node makes to a manager, as values: one request type and one
//! response type for every transport, so retry and failover are tower layers
//! around a `Service<Call>` instead of code repeated in every method.

use std::pin::Pin;

use futures::Stream;

use crate::proto;

/// One call to a manager. Cheap to clone, so the retry layer can resend it.
#[derive(Clone, Debug)]
pub enum Call {
    Register(proto::RegisterRequest),
    Heartbeat(proto::HeartbeatRequest),
    Deregister(proto::DeregisterRequest),
    ListNodes(proto::ListNodesRequest),
    ListClusters(proto::ListClustersRequest),
    GetMeta(proto::GetMetaRequest),
    PushMeta(proto::PushMetaRequest),
    /// Opens a watch: the reply is a stream of snapshots.
    WatchMeta(proto::WatchMetaRequest),
}

impl Call {
    /// The RPC's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Call::Register(_) => "Register",
            Call::Heartbeat(_) => "Heartbeat",
            Call::Deregister(_) => "Deregister",
            Call::ListNodes(_) => "ListNodes",
            Call::ListClusters(_) => "ListClusters",
            Call::GetMeta(_) => "GetMeta",
            Call::PushMeta(_) => "PushMeta",
            Call::WatchMeta(_) => "WatchMeta",
        }
    }
}

/// A stream of catalog snapshots; an `Err` item ends it.
pub type SnapshotStream =
    Pin<Box<dyn Stream<Item = Result<proto::MetaSnapshot, CallError>> + Send>>;

/// A manager's answer to a [`Call`].
pub enum Reply {
    Registered(proto::RegisterResponse),
    Done,
    Nodes(proto::ListNodesResponse),
    Clusters(proto::ListClustersResponse),
    Snapshot(proto::MetaSnapshot),
    Pushed(proto::PushMetaResponse),
    Watch(SnapshotStream),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Registered(r) => f.debug_tuple("Registered").field(r).finish(),
            Reply::Done => f.write_str("Done"),
            Reply::Nodes(n) => f.debug_tuple("Nodes").field(n).finish(),
            Reply::Clusters(c) => f.debug_tuple("Clusters").field(c).finish(),
            Reply::Snapshot(s) => f.debug_tuple("Snapshot").field(&s.version).finish(),
            Reply::Pushed(p) => f.debug_tuple("Pushed").field(p).finish(),
            Reply::Watch(_) => f.write_str("Watch(..)"),
        }
    }
}

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The manager could not be reached or did not answer in time, or said it
    /// is unavailable: worth retrying, possibly on another manager.
    #[error("manager unavailable: {0}")]
    Transient(String),
    /// The node or cluster is unknown (a heartbeat's cue to register again).
    #[error("not found: {0}")]
    NotFound(String),
    /// The manager refused the call for good (bad argument, bad token…).
    #[error("refused: {0}")]
    Refused(String),
    /// The answer made no sense for the call (a bug on one side).
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

impl CallError {
    /// Whether the retry layer should try again.
    pub fn is_transient(&self) -> bool {
        matches!(self, CallError::Transient(_))
    }
}

impl From<tonic::Status> for CallError {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        let msg = format!("{:?}: {}", s.code(), s.message());
        match s.code() {
            // Unknown and Cancelled are what a broken connection surfaces as.
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Unknown
            | Code::Cancelled => CallError::Transient(msg),
            Code::NotFound => CallError::NotFound(msg),
            _ => CallError::Refused(msg),
        }
    }
}

/// Unpacks a [`Reply`] of the expected variant.
macro_rules! expect_reply {
    ($reply:expr, $variant:ident) => {
        match $reply {
            $crate::client::call::Reply::$variant(v) => Ok(v),
            other => Err($crate::client::call::CallError::Protocol(format!(
                "expected {}, got {other:?}",
                stringify!($variant)
            ))),
        }
    };
}
pub(crate) use expect_reply;
