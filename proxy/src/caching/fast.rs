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
    // HTTP/1 with no range, condition or upgrade: the head from the stored
    // lines, no header map (`h1_head`).
    if fast_paths
        && decor.rate_limit.is_none()
        && session.downstream_session.as_http1().is_some()
        && ![
            header::RANGE,
            header::IF_NONE_MATCH,
            header::IF_MODIFIED_SINCE,
            header::UPGRADE,
        ]
        .iter()
        .any(|h| req.headers.contains_key(h))
    {
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
        if let Some(fields) = super::h1_head::render(parsed, &served, &settings, decor.ops, now) {
            let mut resp = ResponseHeader::build_no_case(parsed.status(), Some(0))?;
            if let Some(r) = parsed.reason() {
                resp.set_reason_phrase(Some(r))?;
            }
            let body = (!head_only && !obj.body.is_empty()).then(|| obj.body.clone());
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
    let Some(mut resp) = parsed.header() else {
        return Ok(None);
    };
    let (start, end) = match super::range::filter(req, &mut resp, super::range::MAX_RANGES) {
        RangeType::None => (0, obj.body.len()),
        RangeType::Single(r) => (r.start, r.end),
        RangeType::Invalid => {
            // 416: the full path words it the same way; let it.
            return Ok(None);
        }
        RangeType::Multi(_) => return Ok(None),
    };
    let not_modified = not_modified_filter(req, &resp);
    if not_modified {
        to_304(&mut resp);
    }
    let kind = video::classify(
        req.uri.path(),
        resp.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    strip_cache_headers(&mut resp);
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
    super::fields::apply(&mut resp, &served, &rt.storage.settings(), now)?;
    crate::hop::strip_response(&mut resp, req.version == http::Version::HTTP_10);
    decor.apply(&mut resp)?;
    let body = (!head_only && !not_modified && start < end).then(|| obj.body.slice(start..end));
    session
        .write_response_header(Box::new(resp), body.is_none())
        .await?;
    if let Some(body) = body {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(Some(kind))
}
