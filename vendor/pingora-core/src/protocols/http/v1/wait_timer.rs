// EDGE-PATCH (twenty-eighth): not in pingora-core 0.9.1.

//! One timer re-armed for every wait a connection makes, in place of a
//! timer registered and dropped for each.
//!
//! pingora bounds each read and write of an HTTP/1 client session with
//! `pingora_timeout::timeout`: a read that must wait (the answer's head
//! always does) registers a timer in pingora's timer manager (a lock, a
//! `BTreeMap` lookup, two `Arc`s, a boxed future, a `Notify` waiter put on
//! its list and taken off) and each timeout made checks the clock thread
//! (one `Instant::now()`): about 1,000 instructions per proxied request
//! (`benches/callgrind/instr.sh`, issue 17). A [`WaitTimer`] is one tokio
//! `Sleep` kept by whoever owns the client connection (edge: the client's
//! HTTP/1 connection, for the requests it passes through) and lent to each
//! session ([`super::client::HttpSession::lend_wait_timer`]). Re-arming it
//! to a later deadline is one compare-and-swap on the timer's state (tokio
//! moves the wheel's entry only when the old deadline comes), and a wait
//! that does not have to wait (its future is ready when first polled)
//! does not touch it.

use pingora_timeout::Elapsed;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The limit from which a wait is not bounded: 30 years, tokio's far
/// future (its timer adds up to a millisecond to a deadline, which must
/// stay an `Instant`).
pub const UNBOUNDED: Duration = Duration::from_secs(86_400 * 365 * 30);

/// A timer for one wait at a time, re-armed by each (see the module's
/// text). Made in a tokio runtime with timers enabled (as
/// `tokio::time::sleep`), and used in that runtime.
pub struct WaitTimer(Pin<Box<Sleep>>);

impl WaitTimer {
    /// A timer not yet armed.
    pub fn new() -> Self {
        WaitTimer(Box::pin(tokio::time::sleep_until(Instant::now())))
    }

    /// The deadline it was last armed for (when made: the time it was
    /// made).
    pub fn deadline(&self) -> Instant {
        self.0.deadline()
    }
}

impl Default for WaitTimer {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for WaitTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("WaitTimer").field(&self.deadline()).finish()
    }
}

/// `fut`'s output, or [`Elapsed`] when it has not finished `limit` after
/// it first had to wait: `pingora_timeout::timeout`'s contract, with
/// `timer` re-armed for the wait when there is one (else pingora's timer).
/// A `limit` of [`UNBOUNDED`] or more waits without end.
pub async fn within<F: Future>(
    timer: Option<&mut WaitTimer>,
    limit: Duration,
    fut: F,
) -> Result<F::Output, Elapsed> {
    let Some(timer) = timer else {
        return pingora_timeout::timeout(limit, fut).await;
    };
    let mut fut = pin!(fut);
    // Armed on the first wait: `Some(true)` bounded, `Some(false)` not.
    let mut armed = None;
    poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        let bounded = *armed.get_or_insert_with(|| {
            let deadline = (limit < UNBOUNDED)
                .then(|| Instant::now().checked_add(limit))
                .flatten();
            if let Some(deadline) = deadline {
                timer.0.as_mut().reset(deadline);
            }
            deadline.is_some()
        });
        if bounded && timer.0.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(Elapsed));
        }
        Poll::Pending
    })
    .await
}
