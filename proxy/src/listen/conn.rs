//! What one HTTP/1 client connection's reader (the [`Inspector`]) and the
//! request path share: which request the reader refused, whether an
//! upgrade happened, whether a request is in flight.
//!
//! Requests on a connection are numbered from 0 in the order pingora reads
//! them; the reader numbers the heads it lets through the same way, so a
//! refusal found while an earlier pipelined request is still being served
//! reaches the right request.
//!
//! [`Inspector`]: super::inspect::Inspector

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures::task::AtomicWaker;
use parking_lot::Mutex;

use super::framing::Refusal;

/// Shared between a connection's reader and its requests.
#[derive(Debug, Default)]
pub struct Connection {
    /// Requests the proxy has started.
    started: AtomicU64,
    in_flight: AtomicBool,
    /// Closing should linger: the client may still be sending.
    linger: AtomicBool,
    /// The head the reader refused: its number, why, and the start of its
    /// first line (escaped, for the access log).
    refused: Mutex<Option<(u64, Refusal, String)>>,
    upgrade: Mutex<UpgradeWait>,
    waker: AtomicWaker,
    /// A request the HTTP/1 shortcut began and hands to pingora's path with
    /// its state (`service/lean_pass.rs`), for the next request pingora
    /// reads on this connection.
    carried: Mutex<Carry>,
}

/// What [`Connection::carry`] holds (opaque here).
#[derive(Default)]
struct Carry(Option<Box<dyn std::any::Any + Send + Sync>>);

impl std::fmt::Debug for Carry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Carry(..)"
        } else {
            "Carry(None)"
        })
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpgradeWait {
    #[default]
    None,
    /// The reader passed upgrade request `n` and holds what follows.
    Waiting(u64),
    /// Request `n` got 101: what follows is the new protocol.
    Upgraded(u64),
    /// Request `n` got another answer: what follows is HTTP/1 again.
    Refused(u64),
}

/// A request starting on a connection.
#[derive(Debug)]
pub struct Begun {
    /// The request's number on the connection.
    pub index: u64,
    /// Set when the reader refused this request's head (the request pingora
    /// parsed is a stand-in): answer with this status and close.
    pub refusal: Option<Refusal>,
    /// The refused request's first line as received (escaped, cut short).
    pub refused_line: Option<String>,
}

impl Connection {
    /// A request starts (`early_request_filter`).
    pub fn begin(&self) -> Begun {
        let index = self.started.fetch_add(1, Ordering::AcqRel);
        self.resume(index)
    }

    /// Request `index`, begun already (by the HTTP/1 shortcut, which hands
    /// it to pingora's path), goes on: in flight, with its refusal.
    pub fn resume(&self, index: u64) -> Begun {
        self.in_flight.store(true, Ordering::Release);
        let (refusal, refused_line) = match self.refused.lock().as_ref() {
            Some((n, r, line)) if *n == index => (Some(*r), Some(line.clone())),
            _ => (None, None),
        };
        Begun {
            index,
            refusal,
            refused_line,
        }
    }

    /// The request ends (`logging`).
    pub fn end(&self) {
        self.in_flight.store(false, Ordering::Release);
    }

    /// edge answers before reading the whole request (and closes): closing
    /// lingers so the answer is not lost to a reset.
    pub fn linger(&self) {
        self.linger.store(true, Ordering::Release);
    }

    pub(crate) fn lingers(&self) -> bool {
        self.linger.load(Ordering::Acquire)
    }

    pub(crate) fn in_flight(&self) -> bool {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Request `index` was answered with `status`: settles an upgrade the
    /// reader waits on.
    pub fn answered(&self, index: u64, status: u16) {
        let mut wait = self.upgrade.lock();
        if *wait == UpgradeWait::Waiting(index) {
            *wait = if status == 101 {
                UpgradeWait::Upgraded(index)
            } else {
                UpgradeWait::Refused(index)
            };
            drop(wait);
            self.waker.wake();
        }
    }

    /// Hands `state` to the next request pingora's path reads here.
    pub fn carry(&self, state: Box<dyn std::any::Any + Send + Sync>) {
        self.carried.lock().0 = Some(state);
    }

    /// What [`Self::carry`] left, once.
    pub fn take_carried(&self) -> Option<Box<dyn std::any::Any + Send + Sync>> {
        self.carried.lock().0.take()
    }

    pub(crate) fn refuse(&self, index: u64, refusal: Refusal, line: String) {
        *self.refused.lock() = Some((index, refusal, line));
    }

    pub(crate) fn wait_for_upgrade(&self, index: u64) {
        *self.upgrade.lock() = UpgradeWait::Waiting(index);
    }

    /// The upgrade's outcome, registering `waker` while there is none.
    pub(crate) fn upgrade_outcome(&self, waker: &std::task::Waker) -> UpgradeWait {
        self.waker.register(waker);
        *self.upgrade.lock()
    }
}
