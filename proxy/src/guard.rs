//! Request protections on the HTTP path: limits on the request head (line
//! length, header count and size) and on the body, checked before routing or
//! proxying, and the route's rate limits.

use std::net::IpAddr;

use edge_config::HttpLimits;
use pingora_http::RequestHeader;

use crate::ratelimit::{Decision, KeyInput, Limiters};

/// Why a request head was refused: status and a short reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
}

/// Checks a request head against the listener's limits.
pub fn check_head(req: &RequestHeader, limits: &HttpLimits) -> Option<Refusal> {
    let uri_len = req.uri.path_and_query().map_or(1, |p| p.as_str().len())
        + req.uri.authority().map_or(0, |a| a.as_str().len());
    // "METHOD SP URI SP HTTP/1.1"
    let line = req.method.as_str().len() + uri_len + 10;
    if line > limits.max_request_line {
        return Some(Refusal {
            status: 414,
            reason: "request line too long",
        });
    }
    if req.headers.len() > limits.max_headers {
        return Some(Refusal {
            status: 431,
            reason: "too many request headers",
        });
    }
    let bytes: usize = req
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if bytes > limits.max_header_bytes {
        return Some(Refusal {
            status: 431,
            reason: "request headers too large",
        });
    }
    None
}

/// The declared body length, if it is over `max`.
pub fn declared_body_over(req: &RequestHeader, max: u64) -> Option<u64> {
    let len = req
        .headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()?;
    (len > max).then_some(len)
}

/// Runs a route's rate limits in order. Returns the first enforced refusal,
/// or else the allowed decision with the least room left (for the
/// `RateLimit-*` headers).
pub async fn rate_limit(
    limits: &Limiters,
    names: &[String],
    client: Option<IpAddr>,
    route: &str,
    req: &RequestHeader,
) -> Option<Decision> {
    let input = KeyInput {
        client,
        route,
        headers: &req.headers,
    };
    let mut tightest: Option<Decision> = None;
    for name in names {
        let Some(limiter) = limits.get(name) else {
            continue;
        };
        let Some(d) = limiter.check(&input).await else {
            continue;
        };
        if !d.allowed && d.enforce {
            return Some(d);
        }
        if d.allowed && tightest.is_none_or(|t| d.remaining < t.remaining) {
            tightest = Some(d);
        }
    }
    tightest
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn req(path: &str, headers: usize, value_len: usize) -> RequestHeader {
        let mut r = RequestHeader::build("GET", path.as_bytes(), None).unwrap();
        for i in 0..headers {
            r.append_header(format!("x-h{i}"), "v".repeat(value_len))
                .unwrap();
        }
        r
    }

    #[test]
    fn head_limits_refuse_with_the_right_status() {
        let limits = HttpLimits {
            max_request_line: 100,
            max_headers: 5,
            max_header_bytes: 200,
            ..HttpLimits::default()
        };
        assert_eq!(check_head(&req("/ok", 5, 10), &limits), None);
        assert_eq!(
            check_head(&req(&format!("/{}", "a".repeat(100)), 0, 0), &limits)
                .unwrap()
                .status,
            414
        );
        assert_eq!(check_head(&req("/", 6, 1), &limits).unwrap().status, 431);
        assert_eq!(check_head(&req("/", 2, 150), &limits).unwrap().status, 431);
    }

    #[test]
    fn declared_bodies_over_the_limit_are_found() {
        let mut r = req("/", 0, 0);
        assert_eq!(declared_body_over(&r, 10), None);
        r.insert_header("content-length", "11").unwrap();
        assert_eq!(declared_body_over(&r, 10), Some(11));
        assert_eq!(declared_body_over(&r, 11), None);
    }
}
