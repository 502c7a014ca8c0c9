//! The vendored pingora-core's `WaitTimer` (EDGE-PATCH twenty-eighth):
//! one timer re-armed for each wait of a connection's upstream sessions.
//! Here because the vendored crate's own tests are not built with the
//! workspace. Paused time: the clock moves only to the next timer.

use futures::FutureExt;
use pingora_core::protocols::http::v1::wait_timer::{within, WaitTimer, UNBOUNDED};
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
    // the next wait's limit counts from its own first wait (here the
    // timer is past its deadline or moved later; see below for earlier).
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

/// How long `within(timer, limit, never)` waits before `Elapsed`, from
/// now (a guard of a day past the limit against a wait without end).
async fn waits(timer: &mut WaitTimer, limit: Duration) -> Duration {
    let start = Instant::now();
    let out = tokio::time::timeout(
        limit + Duration::from_secs(86_400),
        within(Some(timer), limit, std::future::pending::<()>()),
    )
    .await;
    assert!(matches!(out, Ok(Err(_))), "no Elapsed a day past {limit:?}");
    Instant::now() - start
}

#[tokio::test(start_paused = true)]
async fn a_live_deadline_is_moved_earlier_by_a_shorter_wait() {
    let mut timer = WaitTimer::new();
    // The head's wait (a long limit) arms the timer and ends in time; the
    // body's (a short one) must not wait out the head's deadline.
    for (long, short) in [(60u64, 10u64), (3, 1), (3600, 59)] {
        let (long, short) = (Duration::from_secs(long), Duration::from_secs(short));
        let polls = Arc::new(AtomicUsize::new(0));
        let out = within(Some(&mut timer), long, ready_on(3, polls)).await;
        assert!(out.is_ok());
        tokio::time::advance(Duration::from_millis(1)).await;
        let waited = waits(&mut timer, short).await;
        assert!(
            waited >= short && waited < short + Duration::from_secs(1),
            "{waited:?} against {short:?} after {long:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_armed_wait_dropped_leaves_the_next_its_own_limit() {
    let mut timer = WaitTimer::new();
    // Armed by a poll with a waker that does nothing, then dropped (the
    // pass-through's select drops a read when the client speaks first).
    for (dropped, next) in [(60u64, 5u64), (5, 60), (30, 30)] {
        let (dropped, next) = (Duration::from_secs(dropped), Duration::from_secs(next));
        let once = within(Some(&mut timer), dropped, std::future::pending::<()>()).now_or_never();
        assert!(once.is_none());
        tokio::time::advance(Duration::from_secs(1)).await;
        let waited = waits(&mut timer, next).await;
        assert!(
            waited >= next && waited < next + Duration::from_secs(1),
            "{waited:?} against {next:?} after {dropped:?} dropped"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_future_that_wakes_itself_is_bounded_from_its_first_wait() {
    let mut timer = WaitTimer::new();
    // Polled again every second, never ready: the limit is not moved by
    // the polls after the first.
    let start = Instant::now();
    let ticking = async {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let out = tokio::time::timeout(
        Duration::from_secs(86_400),
        within(Some(&mut timer), Duration::from_millis(5_500), ticking),
    )
    .await;
    assert!(matches!(out, Ok(Err(_))), "no Elapsed within a day");
    let waited = Instant::now() - start;
    assert!(
        waited >= Duration::from_millis(5_500) && waited < Duration::from_secs(6),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_limit_of_30_years_or_more_waits_for_the_future() {
    let mut timer = WaitTimer::new();
    let limits = [
        UNBOUNDED,
        UNBOUNDED + Duration::from_nanos(1),
        Duration::from_secs(u64::MAX / 2),
        Duration::MAX,
    ];
    for limit in limits {
        let (tx, rx) = tokio::sync::oneshot::channel::<u8>();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            let _ = tx.send(7);
        });
        let out = within(Some(&mut timer), limit, rx).await;
        assert_eq!(out.ok().and_then(|r| r.ok()), Some(7), "{limit:?}");
    }
    // Just under: bounded.
    let limit = UNBOUNDED - Duration::from_secs(1);
    let waited = waits(&mut timer, limit).await;
    assert!(waited >= limit, "{waited:?}");
}
