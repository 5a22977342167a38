//! The health-check loop every driver shares: attempts until one passes or the deadline.

use std::future::Future;
use std::time::{Duration, Instant};

use super::DriverError;
use crate::model::HealthCheck;

/// What one attempt found.
pub enum Attempt {
    Healthy,
    /// Not healthy yet; the check's own words (exit status, output tail).
    Unhealthy(String),
    /// The attempt itself ran past the time it was given.
    TimedOut,
    /// Stop at once: something other than health is wrong (e.g. unreachable, wrong release).
    Fatal(DriverError),
}

/// Runs `attempt(time_left)` every `interval_ms` until it passes or `timeout_seconds` is over.
/// The error carries the most informative failure seen, not merely the last timeout.
pub async fn until_healthy<F, Fut>(
    target: &str,
    hc: &HealthCheck,
    mut attempt: F,
) -> Result<(), DriverError>
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Attempt>,
{
    let deadline = Instant::now() + Duration::from_secs(hc.timeout_seconds);
    let mut last: Option<String> = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let detail = last.unwrap_or_else(|| "the check itself ran past the deadline".into());
            return Err(DriverError::Unhealthy {
                target: target.to_owned(),
                seconds: hc.timeout_seconds,
                detail,
            });
        }
        match attempt(left).await {
            Attempt::Healthy => return Ok(()),
            Attempt::Unhealthy(why) => last = Some(why),
            Attempt::TimedOut => {}
            Attempt::Fatal(e) => return Err(e),
        }
        tokio::time::sleep(
            Duration::from_millis(hc.interval_ms)
                .min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
    }
}
