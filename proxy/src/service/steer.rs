//! The `steer` action's answer (see [`crate::steer`]): the object the
//! request names, normalized as the door normalizes requests, its cache
//! URL and owner key from the route that would serve it, and the ranking.

use super::*;
use crate::steer::{SteerMode, SteerQuery};

/// The object a steering request names: scheme, `Host` value, target.
struct Named {
    scheme: &'static str,
    authority: String,
    target: String,
}

/// `?url=` (absolute, scheme-relative, or a path on the request's own
/// host), else the request's own target after the route's path rewrite
/// (`strip_prefix`, `rewrite_path`).
fn named(
    req: &RequestHeader,
    authority: &str,
    tls: bool,
    rewrite: Option<&edge_config::PathRewrite>,
) -> std::result::Result<Named, String> {
    let own = if tls { "https" } else { "http" };
    let Some(text) = crate::steer::param(req.uri.query(), "url")? else {
        let path = match rewrite {
            Some(r) => crate::route::rewrite_path(r, req.uri.path()),
            None => req.uri.path().to_string(),
        };
        let target = match req.uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        return Ok(Named {
            scheme: own,
            authority: authority.to_string(),
            target,
        });
    };
    let (scheme, authority, target) = crate::steer::split_url(&text, own, Some(authority))?;
    Ok(Named {
        scheme: if scheme == "https" { "https" } else { "http" },
        authority,
        target,
    })
}

impl EdgeProxy {
    /// A `steer` route's answer.
    pub(super) async fn steer(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        mode: SteerMode,
        decor: Decor<'_>,
    ) -> Result<()> {
        let text = "text/plain; charset=utf-8";
        let no_store = [("cache-control", "no-store".to_string())];
        let rewrite = ctx.route.as_ref().and_then(|r| r.rewrite.as_ref());
        let named = match named(session.req_header(), &ctx.authority, self.tls, rewrite) {
            Ok(n) => n,
            Err(why) => {
                return respond(
                    session,
                    400,
                    text,
                    Bytes::from(format!("{why}\n")),
                    &no_store,
                    decor,
                )
                .await
            }
        };
        let state = self.proxy.state();
        let object = match crate::steer::object(
            &state,
            &[&self.listener],
            &self.paths,
            named.scheme,
            &named.authority,
            &named.target,
        ) {
            Ok(o) => o,
            Err(why) => {
                let body = Bytes::from(format!("url: {why}\n"));
                return respond(session, 400, text, body, &no_store, decor).await;
            }
        };
        let Some(steerer) = self.proxy.steerer.get() else {
            let body = Bytes::from_static(b"steering needs this node's [dns] sites\n");
            return respond(session, 503, text, body, &no_store, decor).await;
        };
        // A dual-stack listener's IPv4 client is the IPv4 address it is
        // (located, hashed for shedding and answered as the DNS would it).
        let Some(client) = client_ip(session).map(|a| a.to_canonical()) else {
            let body = Bytes::from_static(b"the client's address is unknown\n");
            return respond(session, 503, text, body, &no_store, decor).await;
        };
        let answer = steerer.steer(&SteerQuery {
            client,
            host: &object.host,
            object: &object.url,
            primary: object.primary,
            path_and_query: &object.path_and_query,
        });
        match mode {
            SteerMode::List => {
                let body = serde_json::json!({
                    "object": object.url.as_str(),
                    "client": client.to_string(),
                    "location": answer.location,
                    "targets": answer.targets,
                });
                let body = Bytes::from(format!("{body}\n"));
                respond(session, 200, "application/json", body, &no_store, decor).await
            }
            SteerMode::Redirect => match answer.targets.first() {
                Some(best) => {
                    let body = Bytes::from(format!("redirecting to {}\n", best.url));
                    let extra = [
                        ("location", best.url.clone()),
                        ("cache-control", "no-store".to_string()),
                    ];
                    respond(session, 302, text, body, &extra, decor).await
                }
                None => {
                    let body = Bytes::from_static(b"no site can serve this client now\n");
                    respond(session, 503, text, body, &no_store, decor).await
                }
            },
        }
    }
}
