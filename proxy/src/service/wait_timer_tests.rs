//! The vendored pingora-core's `WaitTimer` (EDGE-PATCH twenty-eighth):
//! one timer re-armed for each wait of a connection's upstream sessions.
//! Here because the vendored crate's own tests are not built with the
//! workspace. Paused time: the clock moves only to the next timer.

use pingora_core::protocols::http::v1::wait_timer::{within, WaitTimer};
use std::future::{poll_fn, Future};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::time::Instant;

/// Ready on its `n`th poll (from 1), counting polls.
fn ready_on(n: usize, polls: Arc<AtomicUsize>) -> impl Future<Output = usize> {
    poll_fn(move |cx| {
        let k = polls.fetch_add(1, Ordering::SeqCst) + 1;
        if k >= n {
            Poll::Ready(k)
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_ready_future_never_arms_the_timer() {
    let mut timer = WaitTimer::new();
    let before = timer.deadline();
    let polls = Arc::new(AtomicUsize::new(0));
    let out = within(Some(&mut timer), Duration::from_secs(1), ready_on(1, polls)).await;
    assert_eq!(out.ok(), Some(1));
    assert_eq!(timer.deadline(), before);
}

#[tokio::test(start_paused = true)]
async fn a_wait_is_bounded_from_its_first_pending_poll() {
    let mut timer = WaitTimer::new();
    // Time passes before the wait; its limit counts from the wait.
    tokio::time::advance(Duration::from_secs(100)).await;
    let start = Instant::now();
    let polls = Arc::new(AtomicUsize::new(0));
    let out = within(Some(&mut timer), Duration::from_secs(5), async {
        ready_on(2, polls.clone()).await;
        std::future::pending::<()>().await
    })
    .await;
    assert!(out.is_err());
    // Paused time advances only to the timer that fired.
    let waited = Instant::now() - start;
    assert!(waited >= Duration::from_secs(5), "{waited:?}");
    assert!(waited < Duration::from_secs(6), "{waited:?}");
    assert!(polls.load(Ordering::SeqCst) >= 2);
}

#[tokio::test(start_paused = true)]
async fn each_wait_re_arms_the_one_timer() {
    let mut timer = WaitTimer::new();
    // A wait that finishes before its limit leaves the timer armed;
    // the next wait's limit counts from its own first wait, later or
    // earlier than the last deadline.
    for (i, limit) in [30u64, 60, 10, 10, 45, 1].into_iter().enumerate() {
        let limit = Duration::from_secs(limit);
        let polls = Arc::new(AtomicUsize::new(0));
        let armed_at = Instant::now();
        let out = within(Some(&mut timer), limit, ready_on(3, polls.clone())).await;
        assert_eq!(out.ok(), Some(3), "wait {i}");
        assert_eq!(timer.deadline(), armed_at + limit, "wait {i}");
        tokio::time::advance(limit / 2).await;
        let start = Instant::now();
        let out = within(Some(&mut timer), limit, std::future::pending::<()>()).await;
        assert!(out.is_err(), "wait {i}");
        let waited = Instant::now() - start;
        assert!(
            waited >= limit && waited < limit + Duration::from_secs(1),
            "wait {i}: {waited:?} against {limit:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_limit_past_any_instant_waits_for_the_future() {
    let mut timer = WaitTimer::new();
    let (tx, rx) = tokio::sync::oneshot::channel::<u8>();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let _ = tx.send(7);
    });
    let out = within(Some(&mut timer), Duration::MAX, rx).await;
    assert_eq!(out.ok().and_then(|r| r.ok()), Some(7));
}
