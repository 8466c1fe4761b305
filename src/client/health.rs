//! What the node knows about its own health, for the agent's `/health`: the
//! sync task and the membership loop report here, and [`NodeHealth::problems`]
//! names whatever keeps the node from serving its cluster truthfully.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::telemetry::with_causes;

/// How many heartbeat intervals without any manager answering count as
/// having lost the managers.
const SILENT_INTERVALS: u32 = 3;

/// The node's own view of its health.
pub struct NodeHealth {
    state: Mutex<State>,
}

struct State {
    /// Why the node's metadata could not be read (or did not describe its
    /// server) at the last try; `None` once it could.
    meta: Option<String>,
    /// Why the last apply of the cluster's catalog failed; `None` once one
    /// succeeded.
    apply: Option<String>,
    /// The last time a manager answered a registration or heartbeat (or
    /// when the node started).
    manager_answered: Instant,
    heartbeat_interval: Duration,
}

impl NodeHealth {
    pub fn new() -> Self {
        NodeHealth {
            state: Mutex::new(State {
                meta: None,
                apply: None,
                manager_answered: Instant::now(),
                heartbeat_interval: Duration::from_secs(5),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The outcome of the last read of the node's metadata.
    pub fn meta_read(&self, result: Result<(), &dyn std::error::Error>) {
        self.state().meta = result.err().map(with_causes);
    }

    /// The outcome of the last apply of the cluster's catalog.
    pub fn applied(&self, result: Result<(), &dyn std::error::Error>) {
        self.state().apply = result.err().map(with_causes);
    }

    /// Whether the last apply of the cluster's catalog failed.
    pub fn apply_failing(&self) -> bool {
        self.state().apply.is_some()
    }

    /// A manager answered; heartbeats are due every `interval`.
    pub fn manager_answered(&self, interval: Duration) {
        let mut s = self.state();
        s.manager_answered = Instant::now();
        s.heartbeat_interval = interval;
    }

    /// What is wrong, one sentence each; empty when the node is healthy.
    pub fn problems(&self) -> Vec<String> {
        self.problems_at(Instant::now())
    }

    /// [`Self::problems`] as they are at `now`.
    fn problems_at(&self, now: Instant) -> Vec<String> {
        let s = self.state();
        let mut out = Vec::new();
        if let Some(e) = &s.meta {
            out.push(format!("metadata cannot be read: {e}"));
        }
        let silence = now.saturating_duration_since(s.manager_answered);
        if silence > s.heartbeat_interval * SILENT_INTERVALS {
            out.push(format!(
                "no manager has answered for {}s",
                silence.as_secs()
            ));
        }
        if let Some(e) = &s.apply {
            out.push(format!("the last apply of the cluster catalog failed: {e}"));
        }
        out
    }
}

impl Default for NodeHealth {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_named_until_they_are_over() {
        let h = NodeHealth::new();
        assert!(h.problems().is_empty());
        let io = std::io::Error::other("gone");
        h.meta_read(Err(&io));
        h.applied(Err(&io));
        let problems = h.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("gone"), "{problems:?}");
        h.meta_read(Ok(()));
        h.applied(Ok(()));
        assert!(h.problems().is_empty());
        // A manager silent for three intervals, and not a moment before.
        let interval = Duration::from_secs(5);
        h.manager_answered(interval);
        let answered = Instant::now();
        assert!(h
            .problems_at(answered + interval * 3 - Duration::from_millis(1))
            .is_empty());
        let later = h.problems_at(answered + interval * 3 + Duration::from_secs(1));
        assert!(
            later[0].contains("no manager has answered for 16s"),
            "{later:?}"
        );
    }
}
