//! Fresh hits from RAM, answered before pingora-cache's state machine runs:
//! the object's meta is kept parsed, so a hit is a key hash, a map lookup,
//! a header copy and a write. Anything this path does not handle (stale,
//! `Vary`, not in RAM, a multi-part range) takes the full cache path,
//! which gives the same answer.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use edge_cache::object::Object;

use edge_cache::video::{self, Kind};
use edge_cache::{Status, Tier};
use http::header;
use pingora_core::protocols::http::conditional_filter::{not_modified_filter, to_304};
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{RangeType, Session};

use super::{cache_key, strip_cache_headers, CacheCtx, CacheRuntime};
use crate::decorate::Decor;
use crate::route::CompiledRoute;
use crate::to_client::ToClient;

/// A fresh RAM hit answered from the object's stored lines (`h1_head`):
/// what an HTTP/1 client gets, before the connection's own fields.
pub(crate) struct LinesHit {
    /// The status: the stored one, 206 or 304 (`h1_head::Shape`).
    pub status: u16,
    /// The origin's reason phrase, with its own status only.
    pub reason: Option<String>,
    pub fields: super::h1_head::Fields,
    /// The body bytes to send (`None`: HEAD, 304, or empty).
    pub body: Option<Bytes>,
    /// What was sent, for prefetch.
    pub kind: Kind,
}

/// The object in RAM for `req` (GET or HEAD) when it is fresh, does not
/// vary and knows its length; `None` when the full cache path answers.
pub(crate) fn fresh_object(
    rt: &CacheRuntime,
    ctx: &CacheCtx,
    route: &CompiledRoute,
    req: &RequestHeader,
    now: SystemTime,
) -> Option<Arc<Object>> {
    let key = edge_cache::key::stored_key(&cache_key(ctx, &route.cache, req));
    let obj = rt.storage.ram_object(&key)?;
    let parsed = obj.parsed()?;
    if parsed.varies || !parsed.is_fresh(now) || !parsed.has_length {
        return None;
    }
    Some(obj)
}

/// The request fields that make a hit's answer other than the whole
/// object (a part, a 304): without them it is the whole.
/// `static`, not `const`: a `const` array is built and dropped at each use.
static CONDITIONAL: [header::HeaderName; 3] = [
    header::RANGE,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
];

/// A fresh RAM object's answer to an HTTP/1 request without `Upgrade`,
/// from its stored lines: a range or a condition answered as the map
/// path decides it (`h1_head::shape`); `None` where the map path answers
/// (a rate limit's fields to add, a head the lines cannot give).
pub(crate) fn lines_hit(
    rt: &CacheRuntime,
    req: &RequestHeader,
    obj: &Arc<Object>,
    ctx: &CacheCtx,
    decor: Decor<'_>,
    now: SystemTime,
) -> Option<LinesHit> {
    let parsed = obj.parsed()?;
    if decor.rate_limit.is_some() {
        return None;
    }
    let head_only = req.method == http::Method::HEAD;
    // One walk of the request's names, where a probe per name hashed each
    // (about 300 instructions per RAM hit; issue 17).
    let conditional = crate::names::any_present(&req.headers, &CONDITIONAL);
    let shape = if conditional {
        super::h1_head::shape(req, parsed)?
    } else {
        super::h1_head::Shape::Whole
    };
    // A stored length the body does not have goes the map way (which
    // refuses it too): never a slice past the body.
    if let super::h1_head::Shape::Part(r) = &shape {
        if r.end > obj.body.len() {
            return None;
        }
    }
    let settings = rt.storage.settings_now();
    let key = ctx.url.as_str();
    // Rendered once per object and shape (`head_memo`).
    let (fields, kind) = rt.heads.lines(
        obj,
        &shape,
        (key, req.uri.path()),
        decor.ops,
        &settings,
        now,
    )?;
    let status = shape.status(parsed.status());
    // The origin's own phrase goes with its status only; the standard one
    // is what the writer says without one.
    let reason = parsed
        .reason()
        .filter(|_| shape == super::h1_head::Shape::Whole)
        .filter(|r| {
            http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                != Some(*r)
        })
        .map(str::to_string);
    let body = match &shape {
        _ if head_only => None,
        super::h1_head::Shape::Whole => Some(obj.body.clone()),
        super::h1_head::Shape::Part(r) => Some(obj.body.slice(r.clone())),
        super::h1_head::Shape::NotModified => None,
    }
    .filter(|b| !b.is_empty());
    Some(LinesHit {
        status,
        reason,
        fields,
        body,
        kind,
    })
}

/// Answers from RAM if the object is there and fresh: `Ok(Some(kind))`
/// when answered (the kind of what was sent, for prefetch).
pub(crate) async fn try_serve(
    rt: &CacheRuntime,
    session: &mut Session,
    ctx: &mut CacheCtx,
    route: &CompiledRoute,
    decor: Decor<'_>,
    fast_paths: bool,
) -> Result<Option<Kind>> {
    let req = session.req_header();
    if !matches!(req.method, http::Method::GET | http::Method::HEAD) {
        return Ok(None);
    }
    let now = SystemTime::now();
    let Some(obj) = fresh_object(rt, ctx, route, req, now) else {
        return Ok(None);
    };
    if obj.parsed().is_none() {
        return Ok(None);
    }
    ctx.status = Some(Status::Hit);
    ctx.tier = Some(Tier::Ram);
    // HTTP/1 without an upgrade: the head from the stored lines, no header
    // map (`h1_head`).
    let h1 = session.downstream_session.as_http1().is_some();
    let lines = (fast_paths && h1 && !req.headers.contains_key(header::UPGRADE))
        .then(|| lines_hit(rt, req, &obj, ctx, decor, now))
        .flatten();
    if let Some(hit) = lines {
        let mut resp = ResponseHeader::build_no_case(hit.status, Some(0))?;
        if let Some(r) = &hit.reason {
            resp.set_reason_phrase(Some(r))?;
        }
        let Some(h1) = session.downstream_session.as_http1_mut() else {
            return Ok(None);
        };
        h1.write_response_fields(
            Box::new(resp),
            &hit.fields.lines,
            hit.fields.has_date,
            hit.fields.content_length,
        )
        .await
        .to_client()?;
        if let Some(body) = hit.body {
            h1.write_body(&body).await.to_client()?;
            h1.finish_body().await.to_client()?;
        }
        return Ok(Some(hit.kind));
    }
    let Some(hit) = map_hit(rt, req, &obj, ctx, decor, now, fast_paths && !h1)? else {
        return Ok(None);
    };
    session
        .write_response_header(Box::new(hit.resp), hit.body.is_none())
        .await
        .to_client()?;
    if let Some(body) = hit.body {
        session
            .write_response_body(Some(body), true)
            .await
            .to_client()?;
    }
    Ok(Some(hit.kind))
}

/// A fresh RAM object's answer on the header-map path: what HTTP/2 gets,
/// and HTTP/1 where the stored lines do not answer.
pub(crate) struct MapHit {
    /// The head, hop-by-hop fields stripped and the route's edits made.
    pub resp: ResponseHeader,
    /// The body bytes to send (`None`: HEAD, 304, or empty).
    pub body: Option<Bytes>,
    /// What was sent, for prefetch.
    pub kind: Kind,
}

/// `obj`'s answer to `req` (GET or HEAD) on the header-map path, `Ok(None)`
/// where the full path answers. `kept`: a whole answer (no range, no
/// condition, no rate limit's fields) may be the head kept from the
/// object's last hit with `Age` and `Cache-Status` written again
/// (`head_memo`; HTTP/2 with the fast paths on).
pub(crate) fn map_hit(
    rt: &CacheRuntime,
    req: &RequestHeader,
    obj: &Arc<Object>,
    ctx: &CacheCtx,
    decor: Decor<'_>,
    now: SystemTime,
    kept: bool,
) -> Result<Option<MapHit>> {
    let Some(parsed) = obj.parsed() else {
        return Ok(None);
    };
    let head_only = req.method == http::Method::HEAD;
    let settings = rt.storage.settings();
    let key = ctx.url.as_str();
    // The header map's way: the stored head with the cache's fields,
    // hop-by-hop fields stripped, the route's edits made.
    let render = || -> Result<Option<MapHead>> {
        let Some(mut head) = map_head(req, parsed, ctx.tier, key, &settings, now)? else {
            return Ok(None);
        };
        crate::hop::strip_response(&mut head.resp, req.version == http::Version::HTTP_10);
        decor.apply(&mut head.resp)?;
        Ok(Some(head))
    };
    let whole = kept && whole_answer(req, decor);
    let mapped = if whole {
        rt.heads
            .map_whole(obj, key, decor.ops, &settings, now, || {
                Ok(render()?.map(|h| (h.resp, h.kind)))
            })?
            .map(|(resp, kind)| MapHead {
                resp,
                part: None,
                not_modified: false,
                kind,
            })
    } else {
        render()?
    };
    let Some(MapHead {
        resp,
        part,
        not_modified,
        kind,
    }) = mapped
    else {
        return Ok(None);
    };
    let (start, end) = part.map_or((0, obj.body.len()), |r| (r.start, r.end));
    if end > obj.body.len() {
        // A stored length the body does not have: the full path's answer.
        return Ok(None);
    }
    let body = (!head_only && !not_modified && start < end).then(|| obj.body.slice(start..end));
    Ok(Some(MapHit { resp, body, kind }))
}

/// Whether `req`'s answer is the whole object with the head kept per
/// object (`head_memo`): no range, no condition, no rate limit's fields.
fn whole_answer(req: &RequestHeader, decor: Decor<'_>) -> bool {
    decor.rate_limit.is_none() && !crate::names::any_present(&req.headers, &CONDITIONAL)
}

/// A fresh RAM object's whole answer for the HTTP/2 shortcut, its head as
/// encoded fields (`head_memo::Memo::h2_whole`).
pub(crate) struct FieldsHit {
    pub status: http::StatusCode,
    /// The head's fields, `Date` included, encoded for HTTP/2.
    pub fields: pingora_core::protocols::http::v2::server::StaticFields,
    /// The body bytes to send (`None`: HEAD, or empty).
    pub body: Option<Bytes>,
    pub kind: Kind,
}

/// `obj`'s whole answer to `req` (GET or HEAD, HTTP/2) with its head as
/// encoded fields: what [`map_hit`] answers with a kept head (no range, no
/// condition, no rate limit's fields), from the same kept head, when it
/// was encoded. `None`: [`map_hit`]'s way.
pub(crate) fn fields_hit(
    rt: &CacheRuntime,
    req: &RequestHeader,
    obj: &Arc<Object>,
    ctx: &CacheCtx,
    decor: Decor<'_>,
    now: SystemTime,
) -> Option<FieldsHit> {
    if !whole_answer(req, decor) {
        return None;
    }
    let settings = rt.storage.settings();
    let (status, mut fields, has_date, kind) =
        rt.heads
            .h2_whole(obj, ctx.url.as_str(), decor.ops, &settings, now)?;
    if !has_date {
        // Where pingora's HTTP/2 writer adds it: after the kept fields.
        let date = pingora_core::protocols::http::date::get_cached_date();
        fields.push(&header::DATE, &date).ok()?;
    }
    let body = (req.method != http::Method::HEAD && !obj.body.is_empty()).then(|| obj.body.clone());
    Some(FieldsHit {
        status,
        fields,
        body,
        kind,
    })
}

/// A RAM hit's head on the header-map path, before hop-by-hop fields are
/// stripped and the route's edits applied.
pub(super) struct MapHead {
    pub resp: ResponseHeader,
    /// The part of the body it answers with, `None` for the whole (a
    /// part's end may exceed a body shorter than its stored length: the
    /// caller checks).
    pub part: Option<std::ops::Range<usize>>,
    pub not_modified: bool,
    pub kind: Kind,
}

/// The header-map path's head for `req` from the stored head (RFC 9110
/// §13.2.2's order: a validated 200 is a 304 before `Range` is looked at;
/// then one range is a 206), with the cache's fields; `Ok(None)` where the
/// full path answers (several ranges, an unsatisfiable one: 416, or a head
/// that does not rebuild). The kind is the stored `Content-Type`'s, also
/// on a 304 (which updates what the client stored, RFC 9111 §4.3.4).
pub(super) fn map_head(
    req: &pingora_http::RequestHeader,
    parsed: &edge_cache::object::Parsed,
    tier: Option<Tier>,
    key: &str,
    settings: &edge_config::Cache,
    now: SystemTime,
) -> Result<Option<MapHead>> {
    let Some(mut resp) = parsed.header() else {
        return Ok(None);
    };
    let kind = video::classify(req.uri.path(), parsed.field("content-type"));
    let not_modified = not_modified_filter(req, &resp);
    let part = if not_modified {
        to_304(&mut resp);
        None
    } else {
        match super::range::filter(req, &mut resp, super::range::MAX_RANGES) {
            RangeType::None => None,
            RangeType::Single(r) => Some(r),
            // 416: the full path words it the same way; let it.
            RangeType::Invalid | RangeType::Multi(_) => return Ok(None),
        }
    };
    if resp.status.as_u16() != parsed.status() {
        // The origin's own phrase goes with its status only (a 206 or 304
        // says its standard one).
        resp.set_reason_phrase(None)?;
    }
    strip_cache_headers(&mut resp);
    let served = super::fields::Served {
        status: Status::Hit,
        tier,
        stored: Some((parsed.fresh_until(), parsed.updated())),
        storing: false,
        fwd_status: None,
        fwd: None,
        key,
        kind,
    };
    super::fields::apply(&mut resp, &served, settings, now)?;
    Ok(Some(MapHead {
        resp,
        part,
        not_modified,
        kind,
    }))
}
