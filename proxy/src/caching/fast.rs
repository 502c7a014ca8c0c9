//! Fresh hits from RAM, answered before pingora-cache's state machine runs:
//! the object's meta is kept parsed, so a hit is a key hash, a map lookup,
//! a header copy and a write. Anything this path does not handle (stale,
//! `Vary`, not in RAM, a multi-part range) takes the full cache path,
//! which gives the same answer.

use std::time::SystemTime;

use edge_cache::video::{self, Kind};
use edge_cache::{Status, Tier};
use http::header;
use pingora_core::protocols::http::conditional_filter::{not_modified_filter, to_304};
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::{RangeType, Session};

use super::{cache_key, strip_cache_headers, CacheCtx, CacheRuntime};
use crate::decorate::Decor;
use crate::route::CompiledRoute;

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
    let head_only = match req.method {
        http::Method::GET => false,
        http::Method::HEAD => true,
        _ => return Ok(None),
    };
    let key = edge_cache::key::storage_key(&cache_key(ctx, &route.cache, req));
    let Some(obj) = rt.storage.ram_object(&key) else {
        return Ok(None);
    };
    let Some(parsed) = obj.parsed.as_ref() else {
        return Ok(None);
    };
    let now = SystemTime::now();
    if parsed.varies || !parsed.is_fresh(now) || !parsed.has_length {
        return Ok(None);
    }
    ctx.status = Some(Status::Hit);
    ctx.tier = Some(Tier::Ram);
    // HTTP/1 without an upgrade: the head from the stored lines, no header
    // map (`h1_head`); a range or a condition answered as the map path
    // decides it (`h1_head::shape`).
    let lines_shape = (fast_paths
        && decor.rate_limit.is_none()
        && session.downstream_session.as_http1().is_some()
        && !req.headers.contains_key(header::UPGRADE))
    .then(|| {
        let conditional = [
            header::RANGE,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
        ]
        .iter()
        .any(|h| req.headers.contains_key(h));
        if conditional {
            super::h1_head::shape(req, parsed)
        } else {
            Some(super::h1_head::Shape::Whole)
        }
    })
    .flatten()
    // A stored length the body does not have goes the map way (which
    // refuses it too): never a slice past the body.
    .filter(|s| match s {
        super::h1_head::Shape::Part(r) => r.end <= obj.body.len(),
        _ => true,
    });
    if let Some(shape) = lines_shape {
        let kind = video::classify(req.uri.path(), parsed.field("content-type"));
        let served = super::fields::Served {
            status: Status::Hit,
            tier: ctx.tier,
            stored: Some((parsed.fresh_until, parsed.updated)),
            storing: false,
            fwd_status: None,
            fwd: None,
            key: ctx.url.as_str(),
            kind,
        };
        let settings = rt.storage.settings();
        if let Some(fields) =
            super::h1_head::render(parsed, &shape, &served, &settings, decor.ops, now)
        {
            let mut resp = ResponseHeader::build_no_case(shape.status(parsed.status()), Some(0))?;
            // The origin's own phrase goes with its status only.
            if let Some(r) = parsed
                .reason()
                .filter(|_| shape == super::h1_head::Shape::Whole)
            {
                resp.set_reason_phrase(Some(r))?;
            }
            let body = match &shape {
                _ if head_only => None,
                super::h1_head::Shape::Whole => Some(obj.body.clone()),
                super::h1_head::Shape::Part(r) => Some(obj.body.slice(r.clone())),
                super::h1_head::Shape::NotModified => None,
            }
            .filter(|b| !b.is_empty());
            let Some(h1) = session.downstream_session.as_http1_mut() else {
                return Ok(None);
            };
            h1.write_response_fields(
                Box::new(resp),
                &fields.lines,
                fields.has_date,
                fields.content_length,
            )
            .await?;
            if let Some(body) = body {
                h1.write_body(&body).await?;
                h1.finish_body().await?;
            }
            return Ok(Some(kind));
        }
    }
    let Some(MapHead {
        mut resp,
        part,
        not_modified,
        kind,
    }) = map_head(
        req,
        parsed,
        ctx.tier,
        ctx.url.as_str(),
        &rt.storage.settings(),
        now,
    )?
    else {
        return Ok(None);
    };
    let (start, end) = part.map_or((0, obj.body.len()), |r| (r.start, r.end));
    crate::hop::strip_response(&mut resp, req.version == http::Version::HTTP_10);
    decor.apply(&mut resp)?;
    if end > obj.body.len() {
        // A stored length the body does not have: the full path's answer.
        return Ok(None);
    }
    let body = (!head_only && !not_modified && start < end).then(|| obj.body.slice(start..end));
    session
        .write_response_header(Box::new(resp), body.is_none())
        .await?;
    if let Some(body) = body {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(Some(kind))
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
        stored: Some((parsed.fresh_until, parsed.updated)),
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
