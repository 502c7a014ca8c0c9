//! Per-request state (`RequestCtx`): the route, the pool and upstream
//! plan, the attempts and their outcomes, the cache's view, the slots a
//! request holds until `logging` gives them back.

use super::*;

/// Why edge answered instead of a backend.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Failure {
    Unavailable(Unavailable),
    Overflow(Overflow),
    Deadline,
    BodyTooLarge(u64),
    /// A prefill request (`edge-prefill`) for an object another node of
    /// the site owns: that node fills it.
    NotOwned(String),
}

/// One try against one backend.
pub(super) struct Attempt {
    pub(super) index: usize,
    pub(super) probe: bool,
    pub(super) retry: bool,
    pub(super) recorded: bool,
}

/// Per-request state.
pub struct RequestCtx {
    pub(super) start: Instant,
    pub(super) state: Option<Arc<ProxyState>>,
    pub(super) route: Option<Arc<CompiledRoute>>,
    pub(super) pool: Option<Arc<Pool>>,
    /// The upstream plan (`plan.rs`): the tier `pool` belongs to now, and
    /// the tiers left to try when none of its backends can be reached.
    pub(super) plan: Plan,
    /// Backends tried, by index in the pool; the last is current.
    pub(super) tried: smallvec::SmallVec<[usize; 4]>,
    pub(super) attempt: Option<Attempt>,
    pub(super) retries: u32,
    pub(super) permit: Option<OwnedSemaphorePermit>,
    pub(super) counted_active: bool,
    pub(super) deadline: Option<Instant>,
    pub(super) hash_key: Option<Vec<u8>>,
    pub(super) sticky: Option<String>,
    pub(super) set_sticky: Option<String>,
    pub(super) upstream_sent: Option<Instant>,
    pub(super) upstream_seconds: Option<f64>,
    /// The current error is a response turned into a retry (see `upstream_response_filter`).
    pub(super) retrying_response: bool,
    /// A retry was decided and counted in the budget; its attempt has not started.
    pub(super) retry_reserved: bool,
    /// The next attempt is a failover after a failed connection: no
    /// backoff, not counted in the retry budget.
    pub(super) free_retry: bool,
    /// The attempt failed on a pooled connection the backend had closed:
    /// it is tried once more on a new connection to the same backend.
    pub(super) stale_retry: bool,
    pub(super) stale_retried: bool,
    /// A response head arrived for the current attempt.
    pub(super) response_started: bool,
    /// `upstream_peer` ran: the request went for the upstream, whether or
    /// not a backend was picked.
    pub(super) went_upstream: bool,
    pub(super) failure: Option<Failure>,
    /// The HTTP/1 connection this request came on, and its number there.
    pub(super) conn: Option<Arc<Connection>>,
    pub(super) conn_index: u64,
    /// The connection's reader refused this request's head, and its line.
    pub(super) framing_refusal: Option<crate::listen::framing::Refusal>,
    pub(super) refused_line: Option<String>,
    /// The request's host (normalized, no port): what routes match.
    pub(super) host: String,
    /// `host[:port]` (normalized, no default port): what the cache keys.
    pub(super) authority: String,
    pub(super) cache: CacheCtx,
    /// Request body bytes allowed (the route's or the listener's limit).
    pub(super) body_limit: u64,
    pub(super) body_seen: u64,
    /// The rate-limit state reported in `RateLimit-*` response headers.
    pub(super) rate_limit: Option<crate::ratelimit::Decision>,
    /// A node of this site asked on behalf of its client (`site.rs`).
    pub(super) from_peer: bool,
    /// The players' data (CTA-5004) and the `CMCD` parameter as sent.
    pub(super) cmcd: Option<Box<crate::video::cmcd::Cmcd>>,
    pub(super) cmcd_query: Option<String>,
    /// `X-Request-Id` (`request_id.rs`), and whether edge made it (it is
    /// then written on the request by [`RequestCtx::stamp_ids`]).
    pub(super) request_id: String,
    pub(super) request_id_new: bool,
    /// The id and trace context are on the request.
    pub(super) ids_stamped: bool,
    /// W3C trace context: the request's trace and edge's span in it.
    pub(super) trace: Option<crate::trace_context::TraceContext>,
    /// The HTTP/1 shortcut's attempt failed (`lean_pass.rs`): the failure
    /// as judged, and whether it is retried (`pick_upstream` answers it or
    /// goes on with the next attempt).
    pub(super) carried_failure: Option<(Box<Error>, bool)>,
    /// Why edge refused the request itself (access log `denied`).
    pub(super) denied: Option<String>,
    /// A client write error pingora set aside to finish filling the cache
    /// (a client gone or timed out during a miss): the access log's
    /// `error`, as the request's own error would be. Set through `&self`
    /// (`suppress_proxy_warn_log`).
    pub(super) client_gone: std::sync::OnceLock<Box<str>>,
}

impl RequestCtx {
    /// A request's state as it starts.
    pub(super) fn new() -> Self {
        RequestCtx {
            start: Instant::now(),
            state: None,
            route: None,
            pool: None,
            plan: Plan::default(),
            tried: smallvec::SmallVec::new(),
            attempt: None,
            retries: 0,
            permit: None,
            counted_active: false,
            deadline: None,
            hash_key: None,
            sticky: None,
            set_sticky: None,
            upstream_sent: None,
            upstream_seconds: None,
            retrying_response: false,
            retry_reserved: false,
            free_retry: false,
            stale_retry: false,
            stale_retried: false,
            response_started: false,
            went_upstream: false,
            failure: None,
            conn: None,
            conn_index: 0,
            framing_refusal: None,
            refused_line: None,
            host: String::new(),
            authority: String::new(),
            cache: CacheCtx::default(),
            body_limit: u64::MAX,
            body_seen: 0,
            rate_limit: None,
            from_peer: false,
            cmcd: None,
            cmcd_query: None,
            denied: None,
            client_gone: std::sync::OnceLock::new(),
            request_id: String::new(),
            request_id_new: false,
            ids_stamped: false,
            trace: None,
            carried_failure: None,
        }
    }

    /// Writes the request's id and trace context on the client's request
    /// (`X-Request-Id` when edge made it, `traceparent` with edge's span),
    /// once, where the request leaves this node: before a subrequest copies
    /// it and when the request phase lets it go on toward the cache phases
    /// and the upstream. A request edge answers itself (a RAM hit) never
    /// pays for the two fields.
    pub(super) fn stamp_ids(&mut self, req: &mut RequestHeader) {
        if std::mem::replace(&mut self.ids_stamped, true) {
            return;
        }
        if self.request_id_new {
            crate::request_id::stamp(req, &self.request_id);
        }
        if let Some(trace) = &self.trace {
            trace.stamp(req);
        }
    }

    /// Whether serving a segment to this request prefetches the next ones.
    pub(super) fn prefetches(&self, req: &RequestHeader) -> bool {
        crate::plan::prefetches(self.state.as_deref(), req)
    }

    /// The node name of the owner this request went to (`-` if none).
    pub(super) fn owner_name(&self) -> &str {
        match (&self.state, &self.pool) {
            (Some(state), Some(pool)) => self.plan.owner_name(state, pool),
            _ => "-",
        }
    }

    /// What this request adds to every response it gets (see [`Decor`]).
    /// Nothing for edge's own subrequests: a slice's answer goes to its
    /// parent, which decorates what the client gets (`slice.rs`), so the
    /// route's `add` edits would appear twice.
    pub(super) fn decor(&self) -> Decor<'_> {
        if self.cache.sub.is_some() {
            return Decor::NONE;
        }
        Decor {
            ops: self.route.as_ref().map(|r| &r.response_headers),
            rate_limit: self.rate_limit.as_ref(),
        }
    }

    /// edge answers without reading the rest of the request and closes.
    pub(super) fn close_unread(&self, session: &mut Session) {
        session.set_keepalive(None);
        if let Some(conn) = &self.conn {
            conn.linger();
        }
    }

    pub(super) fn backend_label(&self) -> &str {
        match (&self.pool, &self.attempt) {
            (Some(p), Some(a)) => p.backends.get(a.index).map_or("-", |b| b.label.as_str()),
            _ => "-",
        }
    }

    pub(super) fn timeouts<'a>(&'a self, pool: &'a Pool) -> &'a Timeouts {
        // Toward a peer: `[site.timeouts]` (a short connect: a dead peer
        // sends the miss on to the next tier quickly).
        if self.plan.tier == Tier::Owner {
            return &pool.config.timeouts;
        }
        self.route
            .as_ref()
            .and_then(|r| r.config.timeouts.as_ref())
            .unwrap_or(&pool.config.timeouts)
    }

    pub(super) fn retry_policy<'a>(&'a self, pool: &'a Pool) -> &'a Retry {
        self.route
            .as_ref()
            .and_then(|r| r.config.retry.as_ref())
            .unwrap_or(&pool.config.retry)
    }

    /// Counts a decided retry in the budget from now until its attempt ends,
    /// backoff included.
    pub(super) fn reserve_retry(&mut self) {
        if let Some(pool) = &self.pool {
            if !self.retry_reserved {
                pool.counters.retries.fetch_add(1, Ordering::Relaxed);
                self.retry_reserved = true;
            }
        }
    }

    pub(super) fn start_attempt(&mut self, pool: &Pool, pick: Pick, retry: bool) {
        let b = &pool.backends[pick.index];
        b.state.in_flight.fetch_add(1, Ordering::Relaxed);
        b.state.requests.fetch_add(1, Ordering::Relaxed);
        if retry && !std::mem::take(&mut self.retry_reserved) {
            pool.counters.retries.fetch_add(1, Ordering::Relaxed);
        }
        self.attempt = Some(Attempt {
            index: pick.index,
            probe: pick.probe,
            retry,
            recorded: false,
        });
    }

    /// Records how the current attempt ended (once), for outlier detection,
    /// the breaker and selection.
    pub(super) fn record(&mut self, outcome: Outcome) {
        self.record_at(outcome, Instant::now());
    }

    /// [`Self::record`] as of `now` (when the outcome was seen).
    pub(super) fn record_at(&mut self, outcome: Outcome, now: Instant) {
        let (Some(pool), Some(attempt)) = (&self.pool, &mut self.attempt) else {
            return;
        };
        if attempt.recorded {
            return;
        }
        attempt.recorded = true;
        pool.record_outcome_at(attempt.index, outcome, attempt.probe, now);
    }

    /// Ends the current attempt: its in-flight slot, its retry slot, and a
    /// half-open probe slot it never used.
    pub(super) fn finish_attempt(&mut self) {
        let (Some(pool), Some(attempt)) = (&self.pool, self.attempt.take()) else {
            return;
        };
        let b = &pool.backends[attempt.index];
        b.state.in_flight.fetch_sub(1, Ordering::Relaxed);
        if attempt.retry {
            pool.counters.retries.fetch_sub(1, Ordering::Relaxed);
        }
        if attempt.probe && !attempt.recorded {
            b.state.breaker_release_probe();
        }
    }

    pub(super) fn release(&mut self) {
        self.finish_attempt();
        if std::mem::take(&mut self.retry_reserved) {
            if let Some(pool) = &self.pool {
                pool.counters.retries.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if self.counted_active {
            if let Some(pool) = &self.pool {
                pool.counters.active.fetch_sub(1, Ordering::Relaxed);
            }
            self.counted_active = false;
        }
        self.permit = None;
    }
}

impl Drop for RequestCtx {
    fn drop(&mut self) {
        self.release();
    }
}
