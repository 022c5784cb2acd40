//! Waiting for asynchronous facts with a bounded patience.
//!
//! Tests never sleep to synchronise: they poll for the fact they need and fail
//! with a message naming it when the patience runs out.

use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(25);

/// Polls `check` until it returns `Some`, or panics after `patience` naming `what`.
pub fn eventually<T>(what: &str, patience: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        if start.elapsed() > patience {
            panic!("timed out after {patience:?} waiting for: {what}");
        }
        std::thread::sleep(POLL);
    }
}

/// The async form of [`eventually`].
pub async fn eventually_async<T, F, Fut>(what: &str, patience: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > patience {
            panic!("timed out after {patience:?} waiting for: {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}
