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
    /// Opens a watch of the nodes: the reply is a stream of node lists.
    WatchNodes(proto::WatchNodesRequest),
    ListHistory(proto::ListHistoryRequest),
    GetVersion(proto::GetVersionRequest),
    RestoreVersion(proto::RestoreVersionRequest),
    DeleteCluster(proto::DeleteClusterRequest),
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
            Call::WatchNodes(_) => "WatchNodes",
            Call::ListHistory(_) => "ListHistory",
            Call::GetVersion(_) => "GetVersion",
            Call::RestoreVersion(_) => "RestoreVersion",
            Call::DeleteCluster(_) => "DeleteCluster",
        }
    }
}

/// A stream of catalog snapshots; an `Err` item ends it.
pub type SnapshotStream =
    Pin<Box<dyn Stream<Item = Result<proto::MetaSnapshot, CallError>> + Send>>;

/// A stream of node lists; an `Err` item ends it.
pub type NodeListStream =
    Pin<Box<dyn Stream<Item = Result<proto::WatchNodesResponse, CallError>> + Send>>;

/// A manager's answer to a [`Call`].
pub enum Reply {
    Registered(proto::RegisterResponse),
    Done,
    Nodes(proto::ListNodesResponse),
    Clusters(proto::ListClustersResponse),
    Snapshot(proto::MetaSnapshot),
    Pushed(proto::PushMetaResponse),
    Watch(SnapshotStream),
    NodeWatch(NodeListStream),
    History(proto::ListHistoryResponse),
    Deleted(proto::DeleteClusterResponse),
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
            Reply::NodeWatch(_) => f.write_str("NodeWatch(..)"),
            Reply::History(h) => f.debug_tuple("History").field(&h.changes.len()).finish(),
            Reply::Deleted(d) => f.debug_tuple("Deleted").field(d).finish(),
        }
    }
}

/// What a failed call failed on (a transport error, a gRPC status, bad
/// JSON…), kept so the error's chain reaches the root cause.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why a call failed: what kind of failure (which decides whether it is
/// retried), in words, and its cause when there is one.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The manager could not be reached or did not answer in time, or said it
    /// is unavailable: worth retrying, possibly on another manager.
    #[error("manager unavailable: {what}")]
    Transient {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
    /// The node or cluster is unknown (a heartbeat's cue to register again).
    #[error("not found: {what}")]
    NotFound {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
    /// The manager refused the call for good (bad argument, bad token…).
    #[error("refused: {what}")]
    Refused {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
    /// The answer made no sense for the call (a bug on one side).
    #[error("unexpected answer: {what}")]
    Protocol {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
    /// The manager does not offer the call: an older version (gRPC
    /// `UNIMPLEMENTED`), or the legacy protocol, which has no such call.
    #[error("not offered by the manager: {what}")]
    Unsupported {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
}

impl CallError {
    pub fn transient(what: impl Into<String>) -> Self {
        CallError::Transient {
            what: what.into(),
            cause: None,
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        CallError::NotFound {
            what: what.into(),
            cause: None,
        }
    }

    pub fn refused(what: impl Into<String>) -> Self {
        CallError::Refused {
            what: what.into(),
            cause: None,
        }
    }

    pub fn protocol(what: impl Into<String>) -> Self {
        CallError::Protocol {
            what: what.into(),
            cause: None,
        }
    }

    pub fn unsupported(what: impl Into<String>) -> Self {
        CallError::Unsupported {
            what: what.into(),
            cause: None,
        }
    }

    /// The same failure, caused by `e`.
    pub fn caused_by(mut self, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        let (CallError::Transient { cause, .. }
        | CallError::NotFound { cause, .. }
        | CallError::Refused { cause, .. }
        | CallError::Protocol { cause, .. }
        | CallError::Unsupported { cause, .. }) = &mut self;
        *cause = Some(Box::new(e));
        self
    }

    /// Whether the retry layer should try again.
    pub fn is_transient(&self) -> bool {
        matches!(self, CallError::Transient { .. })
    }

    /// Whether the manager does not offer the call at all.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, CallError::Unsupported { .. })
    }
}

impl From<tonic::Status> for CallError {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        let what = format!("{:?}: {}", s.code(), s.message());
        let kind = match s.code() {
            // Unknown and Cancelled are what a broken connection surfaces as.
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Unknown
            | Code::Cancelled => CallError::transient(what),
            Code::NotFound => CallError::not_found(what),
            Code::Unimplemented => CallError::unsupported(what),
            _ => CallError::refused(what),
        };
        kind.caused_by(s)
    }
}

/// Unpacks a [`Reply`] of the expected variant.
macro_rules! expect_reply {
    ($reply:expr, $variant:ident) => {
        match $reply {
            $crate::client::call::Reply::$variant(v) => Ok(v),
            other => Err($crate::client::call::CallError::protocol(format!(
                "expected {}, got {other:?}",
                stringify!($variant)
            ))),
        }
    };
}
pub(crate) use expect_reply;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_decide_the_kind_of_failure() {
        let kind = |code| CallError::from(tonic::Status::new(code, "m"));
        assert!(kind(tonic::Code::Unavailable).is_transient());
        assert!(matches!(
            kind(tonic::Code::NotFound),
            CallError::NotFound { .. }
        ));
        // A manager without the call (an older version) says so: the caller
        // does without it (the agent lists nodes instead of watching them).
        let older = kind(tonic::Code::Unimplemented);
        assert!(older.is_unsupported() && !older.is_transient(), "{older}");
        assert!(matches!(
            kind(tonic::Code::InvalidArgument),
            CallError::Refused { .. }
        ));
    }
}
