//! Waiting for a condition with a deadline, never a fixed sleep: one poll
//! loop ([`poll`]) behind every wait of the tests and benchmarks, polling
//! with a short backoff (20 ms doubling to 100 ms) so a condition met at once
//! costs little and a slow one does not load the machine.

#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use cflux::backoff::Backoff;

/// Calls `check` until it returns `Ok`, and returns that; the last `Err`
/// (what was still missing) when `deadline` passes first.
pub async fn poll<T, F, Fut>(deadline: Duration, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(100));
    loop {
        match check().await {
            Ok(value) => return Ok(value),
            Err(last) if started.elapsed() >= deadline => return Err(last),
            Err(_) => backoff.wait().await,
        }
    }
}

/// [`poll`], panicking with `what` and the last `Err` when `deadline`
/// passes first.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    poll(deadline, check)
        .await
        .unwrap_or_else(|last| panic!("timed out after {deadline:?}: {what}\nlast seen: {last}"))
}

/// [`eventually`] for a condition that is only true or false.
pub async fn wait_until<F, Fut>(deadline: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually(deadline, what, || {
        let checked = check();
        async move {
            if checked.await {
                Ok(())
            } else {
                Err("not yet".to_owned())
            }
        }
    })
    .await
}

/// Runs `fut` with a deadline, panicking with `what` when it passes.
pub async fn within<T>(deadline: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(deadline, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {deadline:?}: {what}"),
    }
}

/// `Ok` when `expected == actual`, else an `Err` showing both.
pub fn same<T: PartialEq + std::fmt::Debug>(
    who: &str,
    expected: &T,
    actual: &T,
) -> Result<(), String> {
    if expected == actual {
        Ok(())
    } else {
        Err(format!("{who}: expected {expected:?}, found {actual:?}"))
    }
}
