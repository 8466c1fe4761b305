//! The node side: `cflux::Client` and the pieces it is made of.
//!
//! - [`call`]: every manager call as a value ([`call::Call`]) and its errors.
//! - [`retry`]: the tower retry layer (5 attempts, exponential backoff, jitter).
//! - [`manager`]: [`manager::ManagerClient`] — retry around failover around
//!   the transports, [`grpc`] and [`legacy`], both dialling `https://`
//!   managers through [`tls`].
//! - [`node`]: [`Client`], registration and heartbeats; [`sync`]: the sync
//!   task (watch, push, merge); [`state`]: what it keeps on disk; [`meta`]:
//!   the [`MetaClient`] it wraps; [`health`]: what `/health` reports;
//!   [`push_now`]: a push on request, for the front door's catalog barrier.

pub mod call;
pub mod grpc;
pub mod health;
pub mod legacy;
pub mod manager;
pub mod meta;
pub mod metrics;
pub mod node;
pub mod push_now;
pub mod retry;
pub mod state;
pub mod sync;
pub mod tls;

pub use meta::{InMemoryMeta, MetaClient, MetaError, MetaIdentity};
pub use node::{Client, NodeSettings};
