//! Polling with a deadline: the only way fixtures and tests wait.
//!
//! Nothing here sleeps to synchronise: a condition is checked every
//! [`POLL_INTERVAL`] until it holds or the deadline passes, and a timeout
//! says what was awaited and what was last seen.

use std::fmt::Display;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{FixtureError, Result};

/// How long to pause between two checks of a condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Waits until `condition` returns `true`, checking it every
/// [`POLL_INTERVAL`], for at most `timeout`.
///
/// `what` names the condition in the timeout error, e.g.
/// `"the leader key to be deleted"`.
///
/// ```
/// # use std::time::Duration;
/// let start = std::time::Instant::now();
/// shardkit_tests::wait_until(Duration::from_secs(5), "50 ms to pass", || start.elapsed() >= Duration::from_millis(50))?;
/// # Ok::<(), shardkit_tests::FixtureError>(())
/// ```
pub fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) -> Result<()> {
    poll(timeout, what, || if condition() { Step::Done(()) } else { Step::Retry(None) })
}

/// Calls `attempt` every [`POLL_INTERVAL`] until it returns `Ok`, for at most
/// `timeout`, and returns that value.
///
/// On timeout the error names `what` and shows the last `Err` that `attempt`
/// returned, e.g. "connection refused".
pub fn wait_for<T, E: Display>(timeout: Duration, what: &str, mut attempt: impl FnMut() -> Result<T, E>) -> Result<T> {
    poll(timeout, what, || match attempt() {
        Ok(value) => Step::Done(value),
        Err(err) => Step::Retry(Some(err.to_string())),
    })
}

/// One check of a condition, for [`poll`].
pub(crate) enum Step<T> {
    /// The condition holds; stop waiting.
    Done(T),
    /// Not yet; the string, if any, says what was seen instead.
    Retry(Option<String>),
    /// It never will (e.g. the server exited); stop waiting with this error.
    Abort(FixtureError),
}

/// Checks `step` every [`POLL_INTERVAL`] until it is done or aborts, for at
/// most `timeout`. The condition is always checked at least once, and once
/// more after the deadline.
pub(crate) fn poll<T>(timeout: Duration, what: &str, mut step: impl FnMut() -> Step<T>) -> Result<T> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut last = None;
    loop {
        let past_deadline = Instant::now() >= deadline;
        match step() {
            Step::Done(value) => return Ok(value),
            Step::Abort(err) => return Err(err),
            Step::Retry(seen) => last = seen.or(last),
        }
        if past_deadline {
            return Err(FixtureError::Timeout { what: what.to_owned(), waited: start.elapsed(), last });
        }
        let now = Instant::now();
        thread::sleep(POLL_INTERVAL.min(deadline.saturating_duration_since(now)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_as_soon_as_the_condition_holds() {
        let mut calls = 0;
        wait_until(Duration::from_secs(10), "the third call", || {
            calls += 1;
            calls == 3
        })
        .unwrap();
        assert_eq!(calls, 3);
    }

    #[test]
    fn times_out_naming_what_and_the_last_observation() {
        let err = wait_for(Duration::from_millis(60), "a miracle", || Err::<(), _>("nothing yet")).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("timed out after "), "{text}");
        assert!(text.ends_with("waiting for a miracle (last: nothing yet)"), "{text}");
    }

    #[test]
    fn checks_at_least_once_even_with_a_zero_timeout() {
        assert_eq!(wait_for(Duration::ZERO, "a value", || Ok::<_, String>(7)).unwrap(), 7);
    }

    #[test]
    fn abort_stops_waiting_at_once() {
        let start = Instant::now();
        let err = poll::<()>(Duration::from_secs(30), "never", || Step::Abort(FixtureError::Usage("gave up".into())));
        assert_eq!(err.unwrap_err().to_string(), "gave up");
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
