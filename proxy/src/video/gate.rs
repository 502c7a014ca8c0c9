//! The request phase of a video route: CMCD read and taken out of the
//! request, then the route's country rule, then its signed-URL check. Runs
//! after the rate limits and before the cache, so that neither the token
//! nor the players' data reach the cache key.

use std::net::IpAddr;

use bytes::Bytes;
use http::{HeaderValue, Uri};
use pingora_http::RequestHeader;

use super::auth::Denied;
use super::cmcd::{self, Cmcd};
use super::{strip_params, with_query, VideoMetrics};
use crate::route::matcher::parse_cookies;
use crate::route::CompiledRoute;
use crate::state::ProxyState;

/// What the gate decided.
pub enum Verdict {
    Pass,
    /// edge answers `status` with `body`; `log` says why (access log only).
    Refuse {
        status: u16,
        body: Bytes,
        log: String,
    },
}

/// The gate's findings for the rest of the request.
pub struct Gate {
    pub verdict: Verdict,
    /// The players' data, when the request carried any.
    pub cmcd: Option<Box<Cmcd>>,
    /// The `CMCD` query parameter as sent (for `cmcd.forward`).
    pub cmcd_query: Option<String>,
}

/// Replaces the request target's path and query, keeping any scheme and
/// authority (HTTP/2).
fn set_path_and_query(req: &mut RequestHeader, target: &str) -> Result<(), http::Error> {
    let mut parts = req.uri.clone().into_parts();
    parts.path_and_query = Some(target.parse()?);
    req.set_uri(Uri::from_parts(parts)?);
    Ok(())
}

/// Removes the cookies named in `names` from the request; other cookies
/// stay, joined in one `Cookie` field (RFC 9113 §8.2.3).
fn strip_cookies(req: &mut RequestHeader, names: &[&str]) {
    let all = parse_cookies(&req.headers);
    if !all.iter().any(|(k, _)| names.contains(&k.as_str())) {
        return;
    }
    let kept: Vec<String> = all
        .into_iter()
        .filter(|(k, _)| !names.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    req.remove_header(&http::header::COOKIE);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            let _ = req.insert_header(http::header::COOKIE, v);
        }
    }
}

/// Runs the gate on `req` (edited in place: the `CMCD` parameter, and the
/// token and its cookies once accepted, are taken out). `from_peer`: a
/// node of this site asks on behalf of a client it let in, with a request
/// it already cleaned.
#[allow(clippy::too_many_arguments)]
pub fn check(
    route: &CompiledRoute,
    state: &ProxyState,
    metrics: &VideoMetrics,
    qoe: &cmcd::QoeTable,
    req: &mut RequestHeader,
    client: Option<IpAddr>,
    from_peer: bool,
    now: u64,
) -> Gate {
    let auth = route.auth.as_ref().filter(|_| !from_peer);
    // No Vec: this runs on every request of a video route.
    let names: &[&str] = match auth {
        Some(a) => &[cmcd::QUERY, &a.config.param, &a.config.expires_param],
        None => &[cmcd::QUERY],
    };
    // Only when a name is there: most requests keep their target untouched.
    let query = req.uri.query().unwrap_or_default();
    let mentioned = names.iter().any(|n| query.contains(n));
    let query = if mentioned {
        query.to_string()
    } else {
        String::new()
    };
    let (rest, removed) = if mentioned {
        strip_params(&query, names)
    } else {
        (None, Vec::new())
    };
    let found = |name: &str| {
        removed
            .iter()
            .rev()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    let cmcd_query = found(cmcd::QUERY);
    // One pass over the names (no hashing) before four lookups: most
    // requests carry no CMCD field.
    let cmcd_headers: Vec<String> = if req.headers.keys().any(|k| cmcd::HEADERS.contains(k)) {
        cmcd::HEADERS
            .iter()
            .flat_map(|h| req.headers.get_all(h).iter())
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    } else {
        Vec::new()
    };
    let cmcd = (cmcd_query.is_some() || !cmcd_headers.is_empty())
        .then(|| {
            Cmcd::of(
                cmcd_query.as_deref(),
                cmcd_headers.iter().map(String::as_str),
            )
        })
        .filter(|c| !c.is_empty())
        .map(Box::new);
    if let Some(c) = &cmcd {
        if !from_peer {
            qoe.record(&metrics.cmcd, &state.site_label, client, c);
        }
    }
    let (token, expires) = match auth {
        Some(a) => {
            let cookies = if a.config.cookies {
                parse_cookies(&req.headers)
            } else {
                Vec::new()
            };
            let cookie = |name: &str| {
                cookies
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            };
            // The query's pair, else the cookies' pair: never one of each.
            match found(&a.config.param) {
                Some(t) => (Some(t), found(&a.config.expires_param)),
                None => (cookie(&a.config.param), cookie(&a.config.expires_param)),
            }
        }
        None => (None, None),
    };
    let path_target = |req: &RequestHeader| with_query(req.uri.path(), rest.as_deref());
    let refuse = |status, body: String, log: String| Gate {
        verdict: Verdict::Refuse {
            status,
            body: Bytes::from(body),
            log,
        },
        cmcd: None,
        cmcd_query: None,
    };
    if let Err(why) = crate::caching::blocking::check_directives(req) {
        return refuse(400, format!("{why}\n"), format!("ll-hls: {why}"));
    }
    if let Some(geo) = route.config.geo.as_ref().filter(|_| !from_peer) {
        let country = client.and_then(|ip| state.countries.as_ref().and_then(|f| f(ip)));
        if !super::geo::admits(geo, country) {
            let cc = country
                .and_then(|c| std::str::from_utf8(&c).ok().map(str::to_string))
                .unwrap_or_else(|| "-".to_string());
            metrics
                .geo_denied
                .with_label_values(&[&route.name, &cc])
                .inc();
            return refuse(451, geo.body.clone(), format!("geo: country {cc}"));
        }
    }
    if let Some(signer) = auth {
        let verdict = signer.verify(
            req.uri.path(),
            token.as_deref(),
            expires.as_deref(),
            client,
            now,
        );
        if let Err(denied) = verdict {
            metrics
                .auth_denied
                .with_label_values(&[&route.name, denied.code()])
                .inc();
            let log = match &denied {
                Denied::Missing => "auth: no token".to_string(),
                other => format!("auth: {other}"),
            };
            return refuse(403, format!("forbidden: {}\n", denied.code()), log);
        }
        strip_cookies(req, &[&signer.config.param, &signer.config.expires_param]);
    }
    if mentioned && !removed.is_empty() {
        let target = path_target(req);
        if set_path_and_query(req, &target).is_err() {
            return refuse(400, "bad request target\n".into(), "gate: target".into());
        }
    }
    Gate {
        verdict: Verdict::Pass,
        cmcd,
        cmcd_query,
    }
}
