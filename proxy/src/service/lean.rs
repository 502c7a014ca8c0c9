//! The HTTP/1 shortcut of fresh RAM hits (issue 17): a keep-alive
//! `GET`/`HEAD` without a body is answered by the connection's own loop
//! (`listen/http.rs`) before pingora builds a session for it, when the
//! request phase would take no step but the cache's and the cache would
//! answer from RAM with the stored lines (`caching::fast::lines_hit`).
//!
//! The request goes through the same door, route table, cache plan,
//! request directives, key and RAM lookup as on pingora's path, and is
//! counted and logged by the same code (`log.rs`). Everything with more
//! to do goes to pingora (the connection loop hands it the bytes as they
//! came): a route with rate limits, a signed URL or a country rule, a
//! request with CMCD data, a segment after which the route would fetch a
//! segment ahead (one after which every segment it looks at is cached is
//! answered here, and those are counted `skipped_cached` as pingora's path
//! counts them), an LL-HLS playlist whose hinted part the route fetches
//! ahead, a site peer's request, a sampled trace, a stale or absent
//! object, and whatever the stored lines do not answer. Nothing
//! this path looks at before it decides changes what pingora's path does
//! (the RAM tier's use counters aside, which count one use more).

use super::*;

/// An answer the connection writes itself: the head (status line, fields,
/// `Date`, `Connection`) and the body, then [`EdgeProxy::shortcut_done`].
pub struct Shortcut {
    pub head: bytes::BytesMut,
    pub body: Option<Bytes>,
    pub done: ShortcutDone,
}

impl Shortcut {
    /// The answer's status.
    pub fn status(&self) -> u16 {
        self.done.status
    }
}

/// A head's route, found before the request is built.
pub struct Candidate {
    state: Arc<ProxyState>,
    route: Arc<CompiledRoute>,
    /// Found for the `Host` value's name as it came (not as parsed): its
    /// length (the value may go on with a port).
    plain: Option<usize>,
}

impl Candidate {
    /// The route passes through (`service/lean_pass.rs`) rather than
    /// answering from RAM.
    pub fn lean_pass(&self) -> bool {
        self.route.lean_pass
    }
}

/// What the door and the route give a head the shortcut goes on with.
pub(super) struct Admitted {
    /// Boxed: an `Admitted` and a [`ShortcutDone`] are moved through the
    /// shortcut's steps by value, and a context is 856 bytes; as a box,
    /// one allocation instead of about a dozen copies of it per HTTP/2 hit
    /// (RESULTS "One code unit, whole-program LTO").
    pub(super) ctx: Box<RequestCtx>,
    pub(super) state: Arc<ProxyState>,
    pub(super) route: Arc<CompiledRoute>,
    /// The route's pool's index in `state.pools`.
    pub(super) pool: usize,
}

/// How far a shortcut's write got before it failed.
pub struct ShortcutCut {
    pub error: std::io::Error,
    /// What was being written, in pingora's HTTP/1 writer's words.
    pub context: &'static str,
    /// The head was written whole.
    pub head_out: bool,
    /// Bytes of the body written.
    pub body_out: u64,
}

/// What is counted and logged once the answer is written.
pub struct ShortcutDone {
    ctx: Box<RequestCtx>,
    status: u16,
    body_len: u64,
    /// Segments after a segment's hit not fetched ahead, being cached.
    skipped_cached: usize,
}

impl EdgeProxy {
    /// Whether the shortcut may answer on this listener now: the fast
    /// paths are on, the node is not closing connections, and a route it
    /// answers for (a RAM hit's, `shortcut`, or a pass-through's,
    /// `lean_pass`) may match here.
    pub fn shortcut_possible(&self) -> bool {
        self.proxy.fast_paths()
            && !self.proxy.closing()
            && self.proxy.state_now().routes.shortcut_on(&self.listener)
    }

    /// Whether a head with this `Host` value (`None`: none or several),
    /// target and method (`GET`, else `HEAD`) may be the shortcut's: its
    /// route, looked up from the head as it came, is one the shortcut
    /// answers for (then the route and the state it is from). Only a head the door would keep as it is (a `Host`
    /// that parses, an origin-form target whose path is normal) and a
    /// table that does not route on header fields are looked up; any
    /// other head is pingora's.
    pub fn shortcut_may_take(
        &self,
        host: Option<&[u8]>,
        target: &[u8],
        get: bool,
    ) -> Option<Candidate> {
        let host = host?;
        let state = self.proxy.state();
        if state.routes.needs_fields {
            return None;
        }
        // A plain lower-case name, with or without a port, is what the door
        // keeps as it is (checked again after the door: `shortcut`); any
        // other spelling is parsed as the door parses it.
        let name = match memchr::memrchr(b':', host) {
            Some(i) if host[i + 1..].iter().all(u8::is_ascii_digit) => &host[..i],
            _ => host,
        };
        let plain = name.last().is_some_and(|b| *b != b'.')
            && name
                .iter()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-'));
        let parsed;
        let host: &str = if plain {
            std::str::from_utf8(name).ok()?
        } else {
            let default_port = if self.tls { 443 } else { 80 };
            parsed = normalize::host::parse(host, default_port).ok()?;
            &parsed.host
        };
        // One check of the target's text, not one each for its path and
        // query (about 100 instructions per call; issue 17).
        let target = std::str::from_utf8(target).ok()?;
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        if !normalize::path::is_normal(path.as_bytes(), &self.paths) {
            return None;
        }
        let headers = http::HeaderMap::new();
        let method = if get {
            http::Method::GET
        } else {
            http::Method::HEAD
        };
        let view = RequestView {
            listener: &self.listener,
            host,
            path,
            query,
            method: &method,
            headers: &headers,
            cookies: &[],
        };
        let route = state
            .routes
            .find(&view)
            .filter(|r| r.shortcut || r.lean_pass)?
            .clone();
        Some(Candidate {
            state,
            route,
            plain: plain.then_some(name.len()),
        })
    }

    /// The answer to `req` (read on an HTTP/1 connection; keep-alive,
    /// `GET` or `HEAD`, no body, no `Connection` or `Upgrade` field, as
    /// the caller checks) when it is a fresh RAM hit this path can give;
    /// `None`: pingora's path takes the request as it came. `req` may be
    /// normalized in place either way.
    ///
    /// `candidate`: what [`EdgeProxy::shortcut_may_take`] found for this
    /// head. The door keeps a head it found (its `Host` parses, its path is
    /// normal: host and path stay as they are), and the table does not
    /// route on fields: the route of the normalized request is that one.
    pub fn shortcut(
        &self,
        req: &mut RequestHeader,
        client: Option<IpAddr>,
        candidate: Candidate,
        conn: &Connection,
    ) -> Option<Shortcut> {
        let admitted = self.shortcut_door(req, client, candidate)?;
        self.ram_hit(
            req,
            client,
            admitted,
            Some(conn),
            |rt, req, obj, ctx, decor, now| {
                let hit = caching::fast::lines_hit(rt, req, obj, ctx, decor, now)?;
                let head = crate::caching::h1_head::status_line_and_fields(
                    hit.status,
                    hit.reason.as_deref(),
                    &hit.fields,
                );
                let body_len = hit.body.as_ref().map_or(0, |b| b.len() as u64);
                Some(((head, hit.body), hit.status, hit.kind, body_len))
            },
            |(head, body), done| Shortcut { head, body, done },
        )
    }

    /// A fresh RAM hit's answer to `req` after the door (`admitted`), as
    /// pingora's path gives it: the cache plan (a whole object), the
    /// request's directives, the object, `answer`'s head and body of it
    /// (with the status, kind and body bytes it answers with; `None`:
    /// pingora's), made into the caller's answer with `done`, the
    /// segments ahead and an LL-HLS playlist's hint, the request's id and
    /// trace. `conn`: the HTTP/1 connection a sampled trace is carried on
    /// to pingora's path (none: the caller took no request whose spans are
    /// exported).
    // Inlined into each caller: `admitted` and the answer are not moved
    // through a frame of their own (+290 instructions per HTTP/1 hit when
    // it was not, with the context held inline; the context is boxed now,
    // the answer is not).
    #[inline(always)]
    pub(super) fn ram_hit<A, R>(
        &self,
        req: &mut RequestHeader,
        client: Option<IpAddr>,
        admitted: Admitted,
        conn: Option<&Connection>,
        answer: impl FnOnce(
            &caching::CacheRuntime,
            &RequestHeader,
            &Arc<edge_cache::object::Object>,
            &CacheCtx,
            Decor<'_>,
            std::time::SystemTime,
        ) -> Option<(A, u16, edge_cache::video::Kind, u64)>,
        done: impl FnOnce(A, ShortcutDone) -> R,
    ) -> Option<R> {
        let rt = self.proxy.cache()?;
        let Admitted {
            mut ctx,
            state,
            route,
            pool,
        } = admitted;
        ctx.cache.scheme = self.scheme();
        let (way, url) = caching::plan(
            rt,
            &route.cache,
            req,
            &ctx.authority,
            ctx.cache.scheme,
            None,
            true,
        );
        if way != Way::Whole {
            return None;
        }
        ctx.cache.way = Some(way);
        ctx.cache.url = url;
        ctx.cache.directives =
            caching::directives::RequestDirectives::of(req, &route.cache, client);
        if ctx.cache.directives.may_force_revalidation() {
            return None;
        }
        let now = std::time::SystemTime::now();
        let obj = caching::fast::fresh_object(rt, &ctx.cache, &route, req, now)?;
        let decor = Decor {
            ops: Some(&route.response_headers),
            rate_limit: None,
        };
        // What pingora's path sets before it renders a RAM hit's head.
        ctx.cache.status = Some(edge_cache::Status::Hit);
        ctx.cache.tier = Some(edge_cache::Tier::Ram);
        let (answer, status, kind, body_len) = answer(rt, req, &obj, &ctx.cache, decor, now)?;
        // A segment's hit looks at the segments after it: when all are
        // cached it only counts them, else it fetches ahead with pingora's
        // subrequests (copies of this request with its ids written on it,
        // `RequestCtx::stamp_ids`: a key made of those fields is pingora's).
        let skipped_cached = if kind == edge_cache::video::Kind::Segment
            && crate::plan::prefetches(Some(&state), req)
        {
            if route.cache.key_headers.iter().any(|h| {
                [
                    crate::request_id::HEADER,
                    crate::trace_context::TRACEPARENT,
                    crate::trace_context::TRACESTATE,
                ]
                .contains(&h.as_str())
            }) {
                return None;
            }
            caching::prefetch::all_ahead_cached(
                rt,
                &route.cache,
                &ctx.authority,
                ctx.cache.scheme,
                req,
            )?
        } else {
            0
        };
        // (A playlist by its path is one by its path and type.)
        if status == 200
            && kind == edge_cache::video::Kind::HlsPlaylist
            && edge_cache::video::classify(req.uri.path(), None)
                == edge_cache::video::Kind::HlsPlaylist
            && crate::plan::prefetches(Some(&state), req)
            && caching::prefetch::preload_hint(rt, &route.cache, &ctx.authority, req.uri.path())
                .is_some()
        {
            // An LL-HLS playlist's hinted part, likewise (`log.rs`).
            return None;
        }
        // The request's id and trace go nowhere but into the access log
        // line (a RAM hit does not write them): without the line, neither
        // is made. A trace whose spans are exported is pingora's, with
        // this decision (sampled once, not again there).
        let tracing = self.proxy.tracing();
        let logged = self.proxy.access_log();
        let trace = (logged || tracing.is_some()).then(|| {
            crate::trace_context::continue_or_start(req, tracing.as_ref().map(|t| t.sample_ratio))
        });
        if logged || trace.is_some() {
            (ctx.request_id, ctx.request_id_new) = crate::request_id::choose(req);
        }
        ctx.trace = trace;
        if tracing.is_some() && trace.is_some_and(|t| t.sampled()) {
            if let Some(conn) = conn {
                lean_pass::carry(conn, lean_pass::decided(&ctx), None, None);
            }
            return None;
        }
        ctx.pool = state.pools.get(pool).cloned();
        ctx.state = Some(state);
        ctx.route = Some(route);
        Some(done(
            answer,
            ShortcutDone {
                ctx,
                status,
                body_len,
                skipped_cached,
            },
        ))
    }

    /// The door, the route and the gate's cheap part for a head the
    /// shortcut may take (`candidate`: what [`EdgeProxy::shortcut_may_take`]
    /// found for it): head limits, `Host` and path normalization (`req`
    /// normalized in place), not an ACME challenge, the host spelled as the
    /// route was found for, no players' data to count, no bad LL-HLS
    /// directive, not a site peer's request. `None`: pingora's path takes
    /// the request as it came.
    #[inline(always)]
    pub(super) fn shortcut_door(
        &self,
        req: &mut RequestHeader,
        client: Option<IpAddr>,
        candidate: Candidate,
    ) -> Option<Admitted> {
        if guard::check_head(req, &self.limits).is_some() {
            return None;
        }
        // The value as it came (shares the head's bytes).
        let raw_host = crate::names::values(&req.headers, http::header::HOST)
            .next()
            .cloned();
        let admitted = normalize::admit(req, self.tls, &self.paths).ok()?;
        if !self.tls
            && req
                .uri
                .path()
                .starts_with(crate::listen::acme::HTTP01_PREFIX)
        {
            return None;
        }
        let mut ctx = Box::new(RequestCtx::new());
        ctx.host = admitted.authority.map(|a| a.host).unwrap_or_default();
        ctx.authority = admitted.header;
        let Candidate {
            state,
            route,
            plain,
        } = candidate;
        if plain.is_some_and(|len| {
            raw_host.is_none_or(|h| h.as_bytes().get(..len) != Some(ctx.host.as_bytes()))
        }) {
            // The door spelled the host otherwise: not the host the
            // route was found for.
            return None;
        }
        let pool = shortcut_gate(req, client, &state, &route)?;
        Some(Admitted {
            ctx,
            state,
            route,
            pool,
        })
    }

    /// Counts and logs a shortcut's answer; `write`: all of it went out,
    /// or how far it got (no head: the client went away, nginx's 499; a
    /// head: its status and the body's bytes written, as pingora's path
    /// logs a cut-off body).
    pub fn shortcut_done(
        &self,
        req: &RequestHeader,
        client: Option<IpAddr>,
        done: ShortcutDone,
        write: Result<(), ShortcutCut>,
    ) {
        // The error pingora's writer makes of the same failure, the
        // client's (`to_client.rs`): the log line reads as pingora's path's.
        let cut = write.err().map(|cut| {
            let e = Error::create(
                ErrorType::WriteError,
                ErrorSource::Downstream,
                Some(cut.context.into()),
                Some(Box::new(cut.error)),
            );
            (e, cut.head_out, cut.body_out)
        });
        self.shortcut_counted(req, client, done, 0, cut);
    }

    /// Counts (`edge_http_sessionless_requests_total`'s series `way`) and
    /// logs a shortcut's answer; `cut`: the write failed, with the error,
    /// whether the head went out and the body's bytes that did.
    pub(super) fn shortcut_counted(
        &self,
        req: &RequestHeader,
        client: Option<IpAddr>,
        done: ShortcutDone,
        way: usize,
        cut: Option<(Box<Error>, bool, u64)>,
    ) {
        let ShortcutDone {
            ctx,
            status,
            body_len,
            skipped_cached,
        } = done;
        self.sessionless[way].inc();
        if cut.is_none() {
            // As pingora's path counts them once the hit is written.
            if let Some(rt) = self.proxy.cache() {
                caching::prefetch::count_skipped_cached(rt, skipped_cached);
            }
        }
        let (status, bytes) = match &cut {
            None => (status, body_len),
            Some((_, true, body_out)) => (status, *body_out),
            Some(_) => (0, 0),
        };
        let e = cut.map(|(e, ..)| e);
        self.count_and_log(req, client, e.as_deref(), &ctx, (status, bytes), false);
    }
}

/// What a shortcut's route and request need past the door: only the
/// cache's step has anything to do (`CompiledRoute::shortcut`), no
/// players' data to count, no LL-HLS directive to refuse, not a site
/// peer's request. The route's pool's index, or `None`: pingora's path.
#[inline]
pub(super) fn shortcut_gate(
    req: &RequestHeader,
    client: Option<IpAddr>,
    state: &ProxyState,
    route: &CompiledRoute,
) -> Option<usize> {
    let Action::Proxy { pool } = route.action else {
        return None;
    };
    let query = req.uri.query().unwrap_or_default();
    if query.contains(crate::video::cmcd::QUERY)
        || req
            .headers
            .keys()
            .any(|k| crate::video::cmcd::HEADERS.contains(k))
        || caching::blocking::check_directives(req).is_err()
    {
        return None;
    }
    if let Some(site) = state.site.as_ref() {
        if site.is_peer_request(req, client, &state.pools) {
            return None;
        }
    }
    Some(pool)
}
