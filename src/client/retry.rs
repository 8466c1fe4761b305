//! The retry layer every call to a manager goes through: 5 attempts in all,
//! exponential backoff with jitter between them, and only for transient
//! failures — never for a conflict (which is an answer, not an error), a bad
//! argument or an unknown node.

use std::time::Duration;

use tower::retry::backoff::{Backoff, ExponentialBackoff, ExponentialBackoffMaker, MakeBackoff};
use tower::retry::RetryLayer;
use tower::util::rng::HasherRng;

use crate::client::call::{Call, CallError, Reply};

/// Attempts per call, the first included.
pub const ATTEMPTS: usize = 5;

/// How the backoff grows: from `min` doubling up to `max`, each wait
/// randomised by `jitter` (0.0–1.0 of the wait) so nodes do not retry in step.
#[derive(Clone, Debug)]
pub struct RetrySettings {
    pub attempts: usize,
    pub min: Duration,
    pub max: Duration,
    pub jitter: f64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            attempts: ATTEMPTS,
            min: Duration::from_millis(100),
            max: Duration::from_secs(3),
            jitter: 0.5,
        }
    }
}

/// The tower retry policy: one clone per call, counting that call's attempts.
#[derive(Clone)]
pub struct RetryPolicy {
    left: usize,
    backoff: ExponentialBackoff<HasherRng>,
}

impl RetryPolicy {
    pub fn new(settings: &RetrySettings) -> Self {
        let mut maker = ExponentialBackoffMaker::new(
            settings.min,
            settings.max.max(settings.min),
            settings.jitter.clamp(0.0, 1.0),
            HasherRng::default(),
        )
        .unwrap_or_else(|_| {
            // Only reachable with a zero maximum, which `max(min)` rules out
            // unless both are zero: fall back to the defaults.
            let d = RetrySettings::default();
            ExponentialBackoffMaker::new(d.min, d.max, d.jitter, HasherRng::default())
                .expect("default backoff settings are valid")
        });
        RetryPolicy {
            left: settings.attempts.saturating_sub(1),
            backoff: maker.make_backoff(),
        }
    }

    /// The layer to put around a `Service<Call>`.
    pub fn layer(settings: &RetrySettings) -> RetryLayer<RetryPolicy> {
        RetryLayer::new(RetryPolicy::new(settings))
    }
}

impl tower::retry::Policy<Call, Reply, CallError> for RetryPolicy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        call: &mut Call,
        result: &mut Result<Reply, CallError>,
    ) -> Option<Self::Future> {
        match result {
            Err(e) if e.is_transient() && self.left > 0 => {
                self.left -= 1;
                tracing::debug!(
                    call = call.name(),
                    error = e as &dyn std::error::Error,
                    left = self.left,
                    "retrying"
                );
                Some(self.backoff.next_backoff())
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, call: &Call) -> Option<Call> {
        Some(call.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tower::{Service, ServiceBuilder, ServiceExt};

    fn settings() -> RetrySettings {
        RetrySettings {
            min: Duration::from_millis(1),
            max: Duration::from_millis(4),
            ..RetrySettings::default()
        }
    }

    /// Counts calls and fails them with the error `error` makes.
    fn failing(
        error: fn() -> CallError,
        calls: Arc<AtomicUsize>,
    ) -> impl Service<Call, Response = Reply, Error = CallError> + Clone {
        tower::service_fn(move |_call: Call| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { Err::<Reply, _>(error()) }
        })
    }

    fn heartbeat() -> Call {
        Call::Heartbeat(Default::default())
    }

    #[tokio::test]
    async fn transient_failures_get_five_attempts_in_all() {
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = ServiceBuilder::new()
            .layer(RetryPolicy::layer(&settings()))
            .service(failing(|| CallError::transient("down"), calls.clone()));
        assert!(svc.oneshot(heartbeat()).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried() {
        let permanent: [fn() -> CallError; 2] =
            [|| CallError::not_found("x"), || CallError::refused("bad")];
        for error in permanent {
            let calls = Arc::new(AtomicUsize::new(0));
            let svc = ServiceBuilder::new()
                .layer(RetryPolicy::layer(&settings()))
                .service(failing(error, calls.clone()));
            assert!(svc.oneshot(heartbeat()).await.is_err());
            assert_eq!(calls.load(Ordering::SeqCst), 1);
        }
    }

    #[tokio::test]
    async fn a_later_success_ends_the_retries() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let svc = ServiceBuilder::new()
            .layer(RetryPolicy::layer(&settings()))
            .service(tower::service_fn(move |_call: Call| {
                let n = c.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 2 {
                        Err(CallError::transient("down"))
                    } else {
                        Ok(Reply::Done)
                    }
                }
            }));
        assert!(matches!(svc.oneshot(heartbeat()).await, Ok(Reply::Done)));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
