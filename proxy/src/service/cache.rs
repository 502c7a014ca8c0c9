//! The cache step of a caching route's request phase: how the cache takes
//! the request ([`caching::plan`]) and the answers it gives itself (a
//! sliced object, a fresh RAM hit, a blocking LL-HLS reload); otherwise the
//! request goes on to the upstream plan and pingora's cache phases.

use super::*;
use crate::to_client::ToClient;

impl EdgeProxy {
    /// True when the cache answered.
    pub(super) async fn serve_cached(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        state: &ProxyState,
        route: &CompiledRoute,
    ) -> Result<bool> {
        let Some(rt) = self.proxy.cache() else {
            return Ok(false);
        };
        ctx.cache.scheme = self.scheme();
        let (way, url) = caching::plan(
            rt,
            &route.cache,
            session.req_header(),
            &ctx.authority,
            ctx.cache.scheme,
            ctx.cache.sub.as_ref(),
            session.subrequest_spawner.is_some(),
        );
        ctx.cache.way = Some(way);
        ctx.cache.url = url;
        if way != Way::Bypass && ctx.cache.sub.is_none() {
            ctx.cache.directives = caching::directives::RequestDirectives::of(
                session.req_header(),
                &route.cache,
                client_ip(session),
            );
        }
        let decor = Decor {
            ops: Some(&route.response_headers),
            rate_limit: ctx.rate_limit.as_ref(),
        };
        match way {
            Way::Sliced => {
                let prefill_owner = (ctx.cache.sub.is_none())
                    .then(|| {
                        let req = session.req_header();
                        let key = caching::cache_key(&ctx.cache, &route.cache, req);
                        let primary = pingora_cache::key::CacheHashKey::primary_bin(&key);
                        crate::plan::prefill_owner(state, req, primary)
                    })
                    .flatten();
                if let Some(owner) = prefill_owner {
                    respond(
                        session,
                        421,
                        "text/plain; charset=utf-8",
                        Bytes::from(format!("owned by {owner}\n")),
                        &[],
                        Decor::NONE,
                    )
                    .await?;
                    return Ok(true);
                }
                ctx.stamp_ids(session.req_header_mut());
                let decor = Decor {
                    ops: Some(&route.response_headers),
                    rate_limit: ctx.rate_limit.as_ref(),
                };
                caching::slice::serve(rt, session, &mut ctx.cache, route, decor).await?;
                return Ok(true);
            }
            Way::Whole
                if ctx.cache.sub.is_none() && !ctx.cache.directives.may_force_revalidation() =>
            {
                let served = caching::fast::try_serve(
                    rt,
                    session,
                    &mut ctx.cache,
                    route,
                    decor,
                    self.proxy.fast_paths(),
                )
                .await?;
                if let Some(kind) = served {
                    if kind == edge_cache::video::Kind::Segment
                        && ctx.prefetches(session.req_header())
                    {
                        ctx.stamp_ids(session.req_header_mut());
                        if let Some(pool) = &ctx.pool {
                            caching::prefetch::after_segment(
                                rt,
                                session,
                                &route.cache,
                                pool,
                                &ctx.authority,
                                ctx.cache.scheme,
                            );
                        }
                    }
                    return Ok(true);
                }
            }
            _ => {}
        }
        // A blocking LL-HLS reload not answered from RAM: held at most the
        // hold, then the current playlist.
        if way == Way::Whole
            && ctx.cache.sub.is_none()
            && session.subrequest_spawner.is_some()
            && caching::blocking::is_blocking(session.req_header())
        {
            let hold = caching::blocking::hold(
                rt,
                &ctx.authority,
                session.req_header().uri.path(),
                rt.storage.settings().video.blocking_hold,
            );
            // Its fetches are subrequests: copies of this request.
            ctx.stamp_ids(session.req_header_mut());
            let decor = Decor {
                ops: Some(&route.response_headers),
                rate_limit: ctx.rate_limit.as_ref(),
            };
            caching::blocking::serve(session, &mut ctx.cache, hold, decor).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// `only-if-cached` and nothing stored: 504, the origin not asked.
    pub(super) async fn upstream_allowed(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        if ctx.cache.directives.only_if_cached && ctx.cache.way != Some(Way::Bypass) {
            // RFC 9111 §5.2.1.7: nothing stored will do, and the origin is
            // not to be asked.
            ctx.cache.status = Some(edge_cache::Status::Miss);
            let route_caches = ctx.route.as_ref().is_some_and(|r| r.cache.enabled);
            let mut resp = ResponseHeader::build(504, Some(4))?;
            resp.insert_header(http::header::CONTENT_LENGTH, "0")?;
            caching::client_fields(
                self.proxy.cache().map(|c| &**c),
                session,
                &mut ctx.cache,
                route_caches,
                &mut resp,
            )?;
            session
                .write_response_header(Box::new(resp), true)
                .await
                .to_client()?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Whether the response is stored (a site's non-owner keeps a copy
    /// only as `keep_copies` says).
    pub(super) fn cacheable(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        let (Some(rt), Some(route)) = (self.proxy.cache(), ctx.route.clone()) else {
            return Ok(RespCacheable::Uncacheable(
                pingora_cache::NoCacheReason::NeverEnabled,
            ));
        };
        // A copy this node holds already (it was kept once) is refreshed.
        let held = matches!(
            session.cache.phase(),
            pingora_cache::CachePhase::Stale
                | pingora_cache::CachePhase::StaleUpdating
                | pingora_cache::CachePhase::Expired
        );
        if ctx.plan.tier == Tier::Owner && !held && !self.keep_copy(ctx) {
            return Ok(RespCacheable::Uncacheable(
                pingora_cache::NoCacheReason::Custom("the site's owner keeps it"),
            ));
        }
        Ok(caching::response_cacheable(
            rt,
            &mut ctx.cache,
            &route.cache,
            session.req_header(),
            resp,
            session.cache.maybe_cache_meta(),
        ))
    }
}
