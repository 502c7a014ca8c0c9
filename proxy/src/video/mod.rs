//! What a streaming service needs of its edge besides caching: signed URLs
//! and cookies ([`auth`]), country rules ([`geo`]) and the players' own
//! telemetry, CTA-5004 Common Media Client Data ([`cmcd`]).

pub mod auth;
pub mod cmcd;
pub mod gate;
pub mod geo;

/// Refusals by `auth` and `geo`, and the players' data.
pub struct VideoMetrics {
    /// Requests refused by a route's `auth`, by route and code.
    pub auth_denied: prometheus::IntCounterVec,
    /// Requests refused by a route's `geo`, by route and country (`-`: unknown).
    pub geo_denied: prometheus::IntCounterVec,
    pub cmcd: cmcd::CmcdMetrics,
}

impl VideoMetrics {
    pub fn new(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let auth_denied = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "edge_auth_denied_total",
                "Requests refused for a missing, malformed, invalid or expired token, by route and code",
            ),
            &["route", "code"],
        )?;
        let geo_denied = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "edge_geo_denied_total",
                "Requests refused (451) by a route's country rule, by route and country",
            ),
            &["route", "country"],
        )?;
        registry.register(Box::new(auth_denied.clone()))?;
        registry.register(Box::new(geo_denied.clone()))?;
        Ok(Self {
            auth_denied,
            geo_denied,
            cmcd: cmcd::CmcdMetrics::new(registry)?,
        })
    }
}

/// Removes the query parameters named in `names` (exact, case-sensitive
/// names, as RFC 3986 leaves them) and returns the rest of the query
/// (`None` when nothing is left) with the removed pairs, values as sent
/// (not decoded). The other parameters keep their order and bytes.
pub fn strip_params<'q>(
    query: &'q str,
    names: &[&str],
) -> (Option<String>, Vec<(&'q str, &'q str)>) {
    let mut kept: Vec<&str> = Vec::new();
    let mut removed = Vec::new();
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if names.contains(&k) {
            removed.push((k, v));
        } else if !pair.is_empty() {
            kept.push(pair);
        }
    }
    let rest = (!kept.is_empty()).then(|| kept.join("&"));
    (rest, removed)
}

/// `path` with `query` (if any) as a request target.
pub fn with_query(path: &str, query: Option<&str>) -> String {
    match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_parameters_are_removed_and_the_rest_kept_in_order() {
        let (rest, gone) = strip_params("a=1&token=x.y&b=2&exp=9&c", &["token", "exp"]);
        assert_eq!(rest.as_deref(), Some("a=1&b=2&c"));
        assert_eq!(gone, vec![("token", "x.y"), ("exp", "9")]);
        let (rest, gone) = strip_params("token=1", &["token"]);
        assert_eq!(rest, None);
        assert_eq!(gone.len(), 1);
        // Only whole names: `tokens` and `xtoken` stay.
        let (rest, _) = strip_params("tokens=1&xtoken=2&&", &["token"]);
        assert_eq!(rest.as_deref(), Some("tokens=1&xtoken=2"));
        // A name with no `=` is removed too.
        let (rest, gone) = strip_params("CMCD&x=1", &["CMCD"]);
        assert_eq!(rest.as_deref(), Some("x=1"));
        assert_eq!(gone, vec![("CMCD", "")]);
    }
}
