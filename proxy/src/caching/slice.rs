//! Slices: a large object is cached as fixed-size parts (like nginx's slice
//! module). The client's request is answered by this module directly: it
//! fetches the slices its range covers, each with a subrequest that goes
//! through the whole-object cache path under its own key (so slices are
//! coalesced, stored, revalidated and purged like any object), and streams
//! the requested bytes out of them. The slice after the current one is
//! requested while the current one streams.
//!
//! Every slice must agree with the first on total length and `ETag`; one
//! that does not means the object changed at the origin: its slices are
//! purged and the request fails (502 if nothing was sent yet).

use bytes::Bytes;
use edge_cache::key;
use edge_cache::{PurgeMode, Status, Tier};
use http::header;
use pingora_core::protocols::http::conditional_filter::{not_modified_filter, to_304};
use pingora_core::protocols::http::subrequest::server::SubrequestHandle;
use pingora_core::protocols::http::HttpTask;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::subrequest::Ctx as SubrequestCtx;
use pingora_proxy::{RangeType, Session};

use super::{content_range, single_range, strip_cache_headers, CacheCtx, CacheRuntime, SubTask};
use crate::decorate::Decor;
use crate::route::CompiledRoute;
use crate::to_client::ToClient;

/// One slice (or, for [`super::blocking`], one whole object) being
/// fetched by a subrequest.
pub(super) struct Fetch {
    index: u64,
    handle: Option<SubrequestHandle>,
    header: Option<Box<ResponseHeader>>,
    done: bool,
}

fn failed(what: impl Into<String>) -> Box<Error> {
    Error::explain(ErrorType::HTTPStatus(502), what.into())
}

impl Fetch {
    fn start(session: &Session, index: u64, size: u64) -> Result<Fetch> {
        Self::spawn(session, SubTask::Slice { index, size }, index)
    }

    /// Starts a subrequest for `task`; `index` names it in errors. The
    /// subrequest copies the session's request: the caller has written the
    /// request id and trace context on it (`RequestCtx::stamp_ids`).
    pub(super) fn spawn(session: &Session, task: SubTask, index: u64) -> Result<Fetch> {
        let spawner = session
            .subrequest_spawner
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no subrequest spawner"))?;
        let ctx = SubrequestCtx::builder().user_ctx(Box::new(task)).build();
        let (prepared, handle) = spawner.create_subrequest(session.as_ref(), ctx);
        tokio::spawn(prepared.run());
        Ok(Fetch {
            index,
            handle: Some(handle),
            header: None,
            done: false,
        })
    }

    async fn recv(&mut self) -> Result<Option<HttpTask>> {
        let Some(h) = self.handle.as_mut() else {
            return Ok(None);
        };
        match h.rx.recv().await {
            Some(HttpTask::Failed(e)) => {
                self.done = true;
                Err(e)
            }
            Some(t) => Ok(Some(t)),
            None => {
                self.done = true;
                match h.subreq_proxy_error.try_recv() {
                    Ok(e) => Err(e),
                    Err(_) => Ok(None),
                }
            }
        }
    }

    pub(super) async fn header(&mut self) -> Result<&ResponseHeader> {
        while self.header.is_none() {
            match self.recv().await? {
                Some(HttpTask::Header(h, end)) if !h.status.is_informational() => {
                    self.done |= end;
                    self.header = Some(h);
                }
                Some(_) => {}
                None => return Err(failed(format!("slice {}: no response", self.index))),
            }
        }
        self.header
            .as_deref()
            .ok_or_else(|| failed(format!("slice {}: no response", self.index)))
    }

    /// The next piece of body; `None` at its end.
    pub(super) async fn chunk(&mut self) -> Result<Option<Bytes>> {
        while !self.done {
            match self.recv().await? {
                Some(HttpTask::Body(data, end)) | Some(HttpTask::UpgradedBody(data, end)) => {
                    self.done |= end;
                    if let Some(d) = data.filter(|d| !d.is_empty()) {
                        return Ok(Some(d));
                    }
                }
                Some(HttpTask::Done) | None => self.done = true,
                Some(_) => {}
            }
        }
        Ok(None)
    }

    /// The cache status the slice's own response reported.
    pub(super) fn status(&self) -> (Status, Option<Tier>) {
        let v = self
            .header
            .as_ref()
            .and_then(|h| h.headers.get("x-cache"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mut parts = v.split_ascii_whitespace();
        let status = match parts.next() {
            Some("HIT") => Status::Hit,
            Some("STALE") => Status::Stale,
            Some("REVALIDATED") => Status::Revalidated,
            _ => Status::Miss,
        };
        let tier = match parts.next() {
            Some("DISK") => Some(Tier::Disk),
            Some(_) => Some(Tier::Ram),
            None => None,
        };
        (status, tier)
    }
}

fn has_length(h: &ResponseHeader) -> bool {
    h.headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().parse::<u64>().is_ok())
}

impl Fetch {
    /// Stops the fetch: its subrequest ends instead of completing.
    fn abandon(mut self) {
        self.done = true;
        drop(self.handle.take());
    }
}

impl Drop for Fetch {
    fn drop(&mut self) {
        // Let an unfinished subrequest complete (and fill the cache) on its own.
        if let Some(h) = self.handle.take() {
            if !self.done {
                h.drain_tasks();
            }
        }
    }
}

/// Sends a response from edge (a 416 or a 304) built from `resp`.
async fn send_head(
    session: &mut Session,
    mut resp: ResponseHeader,
    decor: Decor<'_>,
) -> Result<()> {
    decor.apply(&mut resp)?;
    session
        .write_response_header(Box::new(resp), true)
        .await
        .to_client()
}

/// Passes a slice response that is not a slice (an error, or an origin
/// that ignores ranges without a length) through unchanged.
async fn pass_through(
    session: &mut Session,
    mut first: Fetch,
    ctx: &mut CacheCtx,
    decor: Decor<'_>,
) -> Result<()> {
    let mut resp = first.header().await?.clone();
    strip_cache_headers(&mut resp);
    resp.insert_header("x-cache", Status::Miss.as_header())?;
    decor.apply(&mut resp)?;
    ctx.status = Some(Status::Miss);
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(resp), head_only)
        .await
        .to_client()?;
    if !head_only {
        while let Some(d) = first.chunk().await? {
            session
                .write_response_body(Some(d), false)
                .await
                .to_client()?;
        }
        session.write_response_body(None, true).await.to_client()?;
    }
    Ok(())
}

/// Answers the request from slices.
pub(crate) async fn serve(
    rt: &CacheRuntime,
    session: &mut Session,
    ctx: &mut CacheCtx,
    route: &CompiledRoute,
    decor: Decor<'_>,
) -> Result<()> {
    let size = rt.storage.settings().slice_size.max(1);
    let req = session.req_header().clone();
    let head_only = req.method == http::Method::HEAD;
    let range = single_range(&req);
    let mut first_index = match (range, rt.known_size(&ctx.url)) {
        // An origin that ignores ranges: the whole object is slice 0.
        _ if rt.ignores_ranges(&ctx.url) => 0,
        (Some((Some(start), _)), _) => start / size,
        (Some((None, Some(n))), Some(total)) => total.saturating_sub(n) / size,
        _ => 0,
    };
    let mut first = Fetch::start(session, first_index, size)?;
    let mut head = first.header().await?.clone();
    if first_index > 0 && head.status.as_u16() == 200 && has_length(&head) {
        // The origin ignored the slice's range and sends the whole object,
        // which a slice's key cannot hold: stop this fetch and take the
        // whole object as slice 0, where it is stored and ranges are served
        // from it (RFC 9110 §14.2: a server may ignore Range).
        rt.remember_ignores_ranges(&ctx.url);
        first.abandon();
        first_index = 0;
        first = Fetch::start(session, 0, size)?;
        head = first.header().await?.clone();
    }
    let (total, whole) = match head.status.as_u16() {
        206 => match content_range(&head) {
            Some((a, _, total)) if a == first_index.saturating_mul(size) => (total, false),
            _ => return Err(failed("slice response does not match its range")),
        },
        200 if first_index == 0 => match head
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            Some(len) => {
                if len > size {
                    rt.remember_ignores_ranges(&ctx.url);
                }
                (len, true)
            }
            None => return pass_through(session, first, ctx, decor).await,
        },
        416 => {
            // The range starts past the end.
            let total = head
                .headers
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes */"))
                .and_then(|v| v.parse::<u64>().ok());
            if let Some(t) = total {
                rt.remember_size(&ctx.url, t);
            }
            return pass_through(session, first, ctx, decor).await;
        }
        _ => return pass_through(session, first, ctx, decor).await,
    };
    rt.remember_size(&ctx.url, total);

    // The client's response, as if the whole object were here.
    let mut resp = head.clone();
    resp.set_status(200)?;
    for h in [
        header::CONTENT_RANGE,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
        header::ACCEPT_RANGES,
    ] {
        resp.remove_header(&h);
    }
    resp.remove_header("x-cache");
    strip_cache_headers(&mut resp);
    resp.insert_header(header::CONTENT_LENGTH, total.to_string())?;
    let (start, end) = match super::range::filter(&req, &mut resp, Some(2)) {
        RangeType::Single(r) => (r.start as u64, r.end as u64),
        RangeType::Invalid => {
            let mut r = ResponseHeader::build(416, Some(2))?;
            r.insert_header(header::CONTENT_RANGE, format!("bytes */{total}"))?;
            r.insert_header(header::CONTENT_LENGTH, "0")?;
            ctx.status = Some(Status::Hit);
            r.insert_header(
                "x-cache",
                http::HeaderValue::from_static(super::x_cache(Status::Hit, ctx.tier)),
            )?;
            return send_head(session, r, decor).await;
        }
        _ => (0, total),
    };
    if not_modified_filter(&req, &resp) {
        to_304(&mut resp);
        ctx.status = Some(Status::Hit);
        return send_head(session, resp, decor).await;
    }
    let needed: Vec<u64> = if start >= end {
        Vec::new()
    } else if whole {
        vec![0]
    } else {
        (start / size..=(end - 1) / size).collect()
    };

    // HIT when every slice is there now (STALE or REVALIDATED if the first
    // one was); the first one's tier stands for all.
    let slice_key = |i: u64| {
        let primary = key::primary(
            &ctx.url,
            ctx.scheme,
            Some(i),
            &route.cache.key_headers,
            &req.headers,
        );
        edge_cache::key::storage_key(&edge_cache::key::cache_key(primary))
    };
    let (first_status, first_tier) = first.status();
    let all_cached = needed.iter().all(|&i| {
        if i == first_index {
            super::from_cache(first_status)
        } else {
            rt.storage.is_cached(&slice_key(i))
        }
    });
    let status = match (all_cached, first_status) {
        (false, _) => Status::Miss,
        (true, s @ (Status::Stale | Status::Revalidated)) => s,
        (true, _) => Status::Hit,
    };
    ctx.status = Some(status);
    ctx.tier = first_tier.filter(|_| all_cached);
    // The first slice's own member stands for the object's.
    resp.remove_header("cache-status");
    let served = super::fields::Served {
        status,
        tier: ctx.tier,
        stored: None,
        storing: false,
        fwd_status: None,
        fwd: None,
        key: ctx.url.as_str(),
        kind: super::kind_of(&req, &resp),
    };
    super::fields::apply(
        &mut resp,
        &served,
        &rt.storage.settings(),
        std::time::SystemTime::now(),
    )?;
    decor.apply(&mut resp)?;
    let no_body = head_only || needed.is_empty();
    session
        .write_response_header(Box::new(resp), no_body)
        .await
        .to_client()?;
    if no_body {
        return Ok(());
    }
    // Bytes are counted per slice below, by where each came from.
    ctx.counted = true;

    let etag = head.headers.get(header::ETAG).cloned();
    let metrics = rt.storage.metrics();
    let mut current = Some(first);
    let mut ahead: Option<Fetch> = None;
    for (n, &i) in needed.iter().enumerate() {
        let mut fetch = match current.take().filter(|f| f.index == i) {
            Some(f) => f,
            None => match ahead.take().filter(|f| f.index == i) {
                Some(f) => f,
                None => Fetch::start(session, i, size)?,
            },
        };
        let h = fetch.header().await?.clone();
        let consistent = whole
            || (h.status.as_u16() == 206
                && content_range(&h).is_some_and(|(a, b, t)| {
                    a == i.saturating_mul(size)
                        && b.saturating_add(1)
                            == i.saturating_add(1).saturating_mul(size).min(total)
                        && t == total
                })
                && h.headers.get(header::ETAG) == etag.as_ref());
        if !consistent && !matches!(h.status.as_u16(), 200 | 206) {
            // No slice at all (an error from the origin, or the site's
            // owner of the slice): this response fails, and the slices
            // held here stay; nothing says the object changed.
            return Err(Error::explain(
                ErrorType::ReadError,
                format!("slice {i} of {}: status {}", ctx.url, h.status.as_u16()),
            ));
        }
        if !consistent {
            rt.storage.purge_url(&ctx.url, PurgeMode::Hard);
            return Err(Error::explain(
                ErrorType::ReadError,
                format!("slice {i} of {} disagrees with the first: the object changed at the origin; its slices were purged", ctx.url),
            ));
        }
        if let Some(&next) = needed.get(n + 1) {
            if ahead.is_none() {
                ahead = Some(Fetch::start(session, next, size)?);
            }
        }
        let (slice_status, _) = fetch.status();
        let counter = if super::from_cache(slice_status) {
            &metrics.bytes_from_cache
        } else {
            &metrics.bytes_from_origin
        };
        let slice_start = if whole { 0 } else { i.saturating_mul(size) };
        let mut offset = slice_start;
        while let Some(data) = fetch.chunk().await? {
            let (a, b) = (offset, offset + data.len() as u64);
            offset = b;
            let (from, to) = (a.max(start), b.min(end));
            if from < to {
                let piece = data.slice((from - a) as usize..(to - a) as usize);
                counter.inc_by(piece.len() as u64);
                session
                    .write_response_body(Some(piece), false)
                    .await
                    .to_client()?;
            }
            if offset >= end {
                break;
            }
        }
        let expected_end = if whole {
            total
        } else {
            i.saturating_add(1).saturating_mul(size).min(total)
        };
        if offset < expected_end.min(end) {
            return Err(Error::explain(
                ErrorType::ReadError,
                format!("slice {i} of {} ended early", ctx.url),
            ));
        }
    }
    session.write_response_body(None, true).await.to_client()?;
    Ok(())
}
