//! The end of every request: counters, histograms, the access log line,
//! an LL-HLS playlist's preload hint fetched ahead, slots given back.

use super::*;

impl EdgeProxy {
    pub(super) async fn log_request(
        &self,
        session: &mut Session,
        e: Option<&Error>,
        ctx: &mut RequestCtx,
    ) {
        if let Some(e) = e {
            match e.esource() {
                // Upstream errors were counted by `errlog` as they happened.
                ErrorSource::Upstream => {}
                // The client's fault (a reset, the send timeout, gone
                // while a miss fills), not edge's: marked so, or an I/O
                // failure pingora left unmarked (`to_client.rs`).
                _ if crate::to_client::clients(e) => {
                    tracing::debug!(listener = %self.listener, error = %crate::to_client::describe(e), "client error")
                }
                ErrorSource::Downstream | ErrorSource::Internal | ErrorSource::Unset => {
                    tracing::error!(listener = %self.listener, error = %e, "request failed inside edge")
                }
            }
        }
        if let Some(conn) = &ctx.conn {
            if let Some(resp) = session.response_written() {
                conn.answered(ctx.conn_index, resp.status.as_u16());
            } else {
                conn.answered(ctx.conn_index, 0);
            }
            conn.end();
        }
        if ctx.cache.sub.is_some() {
            // Edge's own subrequests: their parent is what clients see.
            ctx.release();
            return;
        }
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let bytes = session.body_bytes_sent() as u64;
        let waited = session.cache.lock_duration().is_some();
        self.count_and_log(
            session.req_header(),
            client_ip(session),
            e,
            ctx,
            (status, bytes),
            waited,
        );
        // An LL-HLS playlist went out whole (its preload hint is learned
        // once its body is): the part it hints at is fetched ahead.
        if status == 200
            && ctx.cache.way == Some(Way::Whole)
            && e.is_none()
            && edge_cache::video::classify(session.req_header().uri.path(), None)
                == edge_cache::video::Kind::HlsPlaylist
            && ctx.prefetches(session.req_header())
        {
            if let (Some(rt), Some(route), Some(pool)) =
                (self.proxy.cache(), ctx.route.clone(), ctx.pool.clone())
            {
                // A prefetch is a copy of this request (a RAM hit's was
                // not stamped).
                ctx.stamp_ids(session.req_header_mut());
                caching::prefetch::after_playlist(
                    rt,
                    session,
                    &route.cache,
                    &pool,
                    &ctx.authority,
                    ctx.cache.scheme,
                );
            }
        }
        ctx.release();
    }

    /// The counters, histograms, span and access log line of a client
    /// request that was answered `status` with `bytes` of body (0: no
    /// answer) — from pingora's session, or from the HTTP/1 shortcut of
    /// fresh RAM hits (`lean.rs`). `waited`: it waited on a cache lock.
    pub(super) fn count_and_log(
        &self,
        req: &RequestHeader,
        client: Option<IpAddr>,
        e: Option<&Error>,
        ctx: &RequestCtx,
        (status, bytes): (u16, u64),
        waited: bool,
    ) {
        self.proxy.load.count(bytes);
        if let (Some(rt), Some(cache_status)) = (self.proxy.cache(), ctx.cache.status) {
            let m = rt.storage.metrics();
            m.request(cache_status, caching::tier_index(ctx.cache.tier));
            if !ctx.cache.counted {
                if caching::from_cache(cache_status) {
                    m.bytes_from_cache.inc_by(bytes);
                } else {
                    m.bytes_from_origin.inc_by(bytes);
                }
            }
            if cache_status == edge_cache::Status::Hit
                && (ctx.cache.tier == Some(edge_cache::Tier::Fill) || waited)
            {
                m.coalesced.inc();
            }
        }
        let total = ctx.start.elapsed();
        let route_name = ctx.route.as_ref().map_or("-", |r| r.name.as_str());
        let metrics = ctx
            .route
            .as_ref()
            .map_or(&self.proxy.unmatched, |r| &r.metrics);
        metrics.by_class[class_index(status)].inc();
        metrics.seconds.observe(status, total.as_secs_f64());
        metrics.bytes_in.inc_by(ctx.body_seen);
        metrics.bytes.inc_by(bytes);
        if let (Some(tracing), Some(trace)) = (self.proxy.tracing(), ctx.trace) {
            if trace.sampled() {
                let span = self.finished_span(req, client, ctx, trace, (status, bytes, total), e);
                tracing.sink.record(span);
            }
        }
        if self.proxy.access_log() {
            // A refused request is logged as it came, not as its stand-in.
            let (method, path) = match &ctx.refused_line {
                Some(line) => ("-", line.as_str()),
                None => (req.method.as_str(), req.uri.path()),
            };
            let field = |name: http::header::HeaderName| {
                req.headers
                    .get(name)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            };
            // The request's error, else the client's failure set aside
            // while a miss filled the cache.
            let gone = ctx.client_gone.get();
            let error = e
                .map(crate::to_client::describe)
                .or_else(|| gone.map(|g| g.to_string()));
            // nginx's 499: the client went away before an answer began.
            let logged_status =
                if status == 0 && (e.is_some_and(crate::to_client::clients) || gone.is_some()) {
                    499
                } else {
                    status
                };
            if let Some(template) = self.proxy.access_log_format() {
                use edge_config::LogField as F;
                use std::borrow::Cow;
                let now = jiff::Timestamp::now();
                let client = client.map(|ip| ip.to_string());
                let line = template.render(|f| match f {
                    F::Time => Some(Cow::Owned(
                        now.round(jiff::Unit::Millisecond)
                            .map_or_else(|_| now.to_string(), |t| t.to_string()),
                    )),
                    F::TimeLocal => Some(Cow::Owned(
                        now.to_zoned(jiff::tz::TimeZone::UTC)
                            .strftime("%d/%b/%Y:%H:%M:%S %z")
                            .to_string(),
                    )),
                    F::Listener => Some(Cow::Borrowed(&*self.listener)),
                    F::Client => client.clone().map(Cow::Owned),
                    F::Method => Some(Cow::Borrowed(method)),
                    F::Scheme => Some(Cow::Borrowed(self.scheme())),
                    F::Host => Some(Cow::Borrowed(ctx.authority.as_str())),
                    F::Path => Some(Cow::Borrowed(path)),
                    F::Query => req.uri.query().map(Cow::Borrowed),
                    F::Protocol => Some(Cow::Owned(format!("{:?}", req.version))),
                    F::Status => Some(Cow::Owned(logged_status.to_string())),
                    F::BytesIn => Some(Cow::Owned(ctx.body_seen.to_string())),
                    F::Bytes => Some(Cow::Owned(bytes.to_string())),
                    F::UserAgent => field(http::header::USER_AGENT).map(Cow::Owned),
                    F::Referer => field(http::header::REFERER).map(Cow::Owned),
                    F::RequestId => Some(Cow::Borrowed(ctx.request_id.as_str())),
                    F::TraceId => ctx.trace.map(|t| Cow::Owned(t.trace_id_hex())),
                    F::Route => Some(Cow::Borrowed(route_name)),
                    F::Pool => ctx.pool.as_ref().map(|p| Cow::Borrowed(p.name.as_str())),
                    F::Backend => Some(Cow::Owned(ctx.backend_label().to_string())),
                    F::Retries => Some(Cow::Owned(ctx.retries.to_string())),
                    F::Cache => ctx.cache.status.map(|s| Cow::Borrowed(s.as_header())),
                    F::UpstreamMs => ctx
                        .upstream_seconds
                        .map(|s| Cow::Owned(format!("{:.3}", s * 1e3))),
                    F::TotalMs => Some(Cow::Owned(format!("{:.3}", total.as_secs_f64() * 1e3))),
                    F::Error => error.as_deref().map(Cow::Borrowed),
                });
                tracing::info!(target: "access", "{line}");
                return;
            }
            tracing::info!(
                target: "access",
                listener = %self.listener,
                client = %client.map_or_else(|| "-".to_string(), |ip| ip.to_string()),
                method = %method,
                scheme = self.scheme(),
                host = %ctx.authority,
                path = %path,
                query = req.uri.query(),
                protocol = ?req.version,
                status = logged_status,
                bytes_in = ctx.body_seen,
                bytes,
                user_agent = field(http::header::USER_AGENT),
                referer = field(http::header::REFERER),
                request_id = %ctx.request_id,
                trace_id = ctx.trace.map(|t| t.trace_id_hex()),
                route = route_name,
                pool = ctx.pool.as_ref().map_or("-", |p| p.name.as_str()),
                backend = ctx.backend_label(),
                retries = ctx.retries,
                cache = ctx.cache.status.map_or("-", |s| s.as_header()),
                upstream_ms = ctx.upstream_seconds.map_or(-1.0, |s| (s * 1e6).round() / 1e3),
                total_ms = (total.as_secs_f64() * 1e6).round() / 1e3,
                error = error.unwrap_or_default(),
                denied = ctx.denied.as_deref(),
                cmcd_sid = ctx.cmcd.as_ref().and_then(|c| c.sid.as_deref()),
                cmcd_cid = ctx.cmcd.as_ref().and_then(|c| c.cid.as_deref()),
                cmcd_ot = ctx.cmcd.as_ref().and_then(|c| c.ot.as_deref()),
                cmcd_br = ctx.cmcd.as_ref().and_then(|c| c.br),
                cmcd_bl = ctx.cmcd.as_ref().and_then(|c| c.bl),
                cmcd_bs = ctx.cmcd.as_ref().and_then(|c| c.bs.then_some(true)),
                cmcd_mtp = ctx.cmcd.as_ref().and_then(|c| c.mtp),
                cmcd_dl = ctx.cmcd.as_ref().and_then(|c| c.dl),
            );
        }
    }

    /// The request as an OpenTelemetry server span (HTTP semantic
    /// conventions: `http.request.method`, `url.*`, `server.address`,
    /// `http.response.status_code`, …; edge's own as `edge.*`).
    fn finished_span(
        &self,
        req: &RequestHeader,
        client: Option<IpAddr>,
        ctx: &RequestCtx,
        trace: crate::trace_context::TraceContext,
        (status, bytes, total): (u16, u64, std::time::Duration),
        e: Option<&Error>,
    ) -> crate::spans::FinishedSpan {
        use crate::spans::SpanValue::{Int, Str};
        let end = std::time::SystemTime::now();
        let route = ctx.route.as_ref().map(|r| r.name.as_str());
        let mut attributes = vec![
            ("http.request.method", Str(req.method.as_str().to_string())),
            ("url.scheme", Str(self.scheme().to_string())),
            ("url.path", Str(req.uri.path().to_string())),
            ("server.address", Str(ctx.host.clone())),
            (
                "network.protocol.version",
                Str(match req.version {
                    http::Version::HTTP_2 => "2",
                    http::Version::HTTP_10 => "1.0",
                    _ => "1.1",
                }
                .to_string()),
            ),
            ("http.request.body.size", Int(ctx.body_seen as i64)),
            ("http.response.body.size", Int(bytes as i64)),
            ("edge.listener", Str(self.listener.to_string())),
            ("edge.request_id", Str(ctx.request_id.clone())),
            ("edge.retries", Int(i64::from(ctx.retries))),
        ];
        if status != 0 {
            attributes.push(("http.response.status_code", Int(i64::from(status))));
        }
        if let Some(q) = req.uri.query() {
            attributes.push(("url.query", Str(q.to_string())));
        }
        if let Some(ip) = client {
            attributes.push(("client.address", Str(ip.to_string())));
        }
        if let Some(ua) = req.headers.get(http::header::USER_AGENT) {
            attributes.push((
                "user_agent.original",
                Str(String::from_utf8_lossy(ua.as_bytes()).into_owned()),
            ));
        }
        if let Some(r) = route {
            attributes.push(("edge.route", Str(r.to_string())));
        }
        if let Some(p) = &ctx.pool {
            attributes.push(("edge.pool", Str(p.name.clone())));
        }
        if ctx.backend_label() != "-" {
            attributes.push(("edge.backend", Str(ctx.backend_label().to_string())));
        }
        if let Some(c) = ctx.cache.status {
            attributes.push(("edge.cache_status", Str(c.as_header().to_string())));
        }
        // Server spans are errors for 5xx and for no answer at all.
        let error = if status >= 500 {
            attributes.push(("error.type", Str(status.to_string())));
            Some(format!("answered {status}"))
        } else if status == 0 {
            // (A client gone while a miss filled: its error, set aside.)
            let why = e.map(crate::to_client::describe).unwrap_or_else(|| {
                ctx.client_gone
                    .get()
                    .map_or_else(|| "no answer".to_string(), |g| g.to_string())
            });
            attributes.push(("error.type", Str("no_answer".to_string())));
            Some(why)
        } else {
            None
        };
        crate::spans::FinishedSpan {
            trace_id: trace.trace_id,
            span_id: trace.span_id,
            parent_id: trace.parent_id,
            name: match route {
                Some(r) => format!("{} {r}", req.method),
                None => req.method.to_string(),
            },
            start: end.checked_sub(total).unwrap_or(end),
            end,
            attributes,
            error,
        }
    }
}
