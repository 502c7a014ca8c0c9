use std::time::Duration;

use serde::Serialize;

use super::{Retry, Timeouts};
use crate::units::duration_serde;

/// `[[route]]`: a match and what to do with what it matches.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    /// Unique; defaults to `route-<n>`.
    pub name: String,
    /// Higher first; file order among equals.
    pub priority: i64,
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    pub action: RouteAction,
    pub path_rewrite: Option<PathRewrite>,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    /// Overrides the pool's.
    pub timeouts: Option<Timeouts>,
    pub retry: Option<Retry>,
    pub cache: RouteCache,
    /// Names of `[[rate_limit]]`s applied to this route, in order.
    pub rate_limits: Vec<String>,
    /// Request body limit; `None` uses the listener's.
    pub max_body: Option<u64>,
    /// Signed URLs and cookies required (`auth`).
    pub auth: Option<UrlAuth>,
    /// Countries allowed or denied (`geo`).
    pub geo: Option<RouteGeo>,
    /// Common Media Client Data handling (`cmcd`).
    pub cmcd: Cmcd,
}

/// `auth = { kind = "hmac", ... }`: requests need a token signed with
/// HMAC-SHA256, in the query or in cookies of the same names (as nginx
/// `secure_link`, CloudFront signed URLs and cookies).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UrlAuth {
    /// Keys accepted, by id; the first signs (`edge sign`, prefill).
    pub keys: Vec<SigningKey>,
    /// Query parameter (and cookie) holding the token.
    pub param: String,
    /// Query parameter (and cookie) holding the expiry, Unix seconds.
    pub expires_param: String,
    pub scope: AuthScope,
    /// The client's address is part of what is signed.
    pub bind_client_ip: bool,
    /// The token and expiry are also taken from cookies.
    pub cookies: bool,
}

/// A signing key: its id (in every token) and where its secret is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SigningKey {
    pub id: String,
    /// Environment variable holding the secret (at least 16 bytes).
    pub secret_env: String,
}

/// What one token covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthScope {
    /// Exactly the signed path.
    Path,
    /// Every path starting with the signed prefix.
    PathPrefix,
    /// Every path under the signed path's directory (a manifest and its
    /// segments and renditions).
    ManifestDir,
}

/// `geo = { allow = [...] }` or `{ deny = [...] }`: countries (ISO 3166-1
/// alpha-2) by the `[dns.locator]`; refused with 451 (RFC 7725).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteGeo {
    pub rule: GeoRule,
    /// Whether a client whose country is unknown is served.
    pub unknown_allowed: bool,
    /// The 451 response's body.
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GeoRule {
    Allow(Vec<String>),
    Deny(Vec<String>),
}

impl GeoRule {
    /// Whether a client in `country` (upper-case) is served.
    pub fn admits(&self, country: &str) -> bool {
        match self {
            GeoRule::Allow(list) => list.iter().any(|c| c == country),
            GeoRule::Deny(list) => !list.iter().any(|c| c == country),
        }
    }
}

/// `cmcd = { forward = false }`: CTA-5004 data is always read, logged and
/// kept out of the cache key; `forward` sends it on upstream too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Cmcd {
    pub forward: bool,
}

/// All conditions must hold. An empty match matches everything (a default route).
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct RouteMatch {
    /// Only requests arriving on these listeners (by name); empty: any.
    pub listeners: Vec<String>,
    pub hosts: Vec<HostMatch>,
    pub path: Option<PathMatch>,
    /// Upper-case method names; empty: any.
    pub methods: Vec<String>,
    pub headers: Vec<ValueMatch>,
    pub cookies: Vec<ValueMatch>,
    pub query: Vec<ValueMatch>,
}

impl RouteMatch {
    pub fn is_catch_all(&self) -> bool {
        self == &RouteMatch::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostMatch {
    /// Lower-case host, no port.
    Exact(String),
    /// `*.example.com`: stored as `.example.com`; matches any name ending so, not the apex.
    Suffix(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathMatch {
    Prefix(String),
    Exact(String),
    /// A validated regular expression (`regex` crate syntax).
    Regex(String),
}

/// A header, cookie or query parameter condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ValueMatch {
    pub name: String,
    pub condition: ValueCondition,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueCondition {
    Present,
    Absent,
    Equals(String),
    Regex(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RouteAction {
    Proxy {
        pool: String,
    },
    Redirect {
        /// Target template: `{scheme}`, `{host}`, `{path}`, `{query}`,
        /// `{path_and_query}` are filled in. `None` keeps the URL and only
        /// changes the scheme (HTTP→HTTPS).
        to: Option<String>,
        scheme: Option<String>,
        status: u16,
    },
    Respond {
        status: u16,
        body: String,
        content_type: String,
    },
    /// Steering: the nodes that hold or own the object the request names,
    /// for the client's location (`list`: ranked JSON; `redirect`: 302 to
    /// the best).
    Steer {
        redirect: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathRewrite {
    /// Remove this prefix (keeping a leading `/`).
    StripPrefix(String),
    /// Replace the whole path (the query is kept).
    Replace(String),
}

/// Header edits, applied in order: remove, set, add.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct HeaderOps {
    /// Values print as `<redacted>`: they may be credentials for a backend.
    #[serde(serialize_with = "redacted_values")]
    pub add: Vec<(String, String)>,
    #[serde(serialize_with = "redacted_values")]
    pub set: Vec<(String, String)>,
    pub remove: Vec<String>,
}

fn redacted_values<S: serde::Serializer>(
    fields: &[(String, String)],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(fields.len()))?;
    for (name, _) in fields {
        seq.serialize_element(&(name, "<redacted>"))?;
    }
    seq.end()
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.set.is_empty() && self.remove.is_empty()
    }
}

/// How this route uses the cache.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteCache {
    pub enabled: bool,
    /// Overrides whatever the origin said.
    #[serde(with = "duration_serde::option")]
    pub ttl: Option<Duration>,
    pub ignore_query: IgnoreQuery,
    /// Request headers added to the cache key (lower-case).
    pub key_headers: Vec<String>,
    /// Used when the origin sends no `stale-while-revalidate`.
    #[serde(with = "duration_serde::option")]
    pub stale_while_revalidate: Option<Duration>,
    /// Used when the origin sends no `stale-if-error`.
    #[serde(with = "duration_serde::option")]
    pub stale_if_error: Option<Duration>,
    pub store_set_cookie: bool,
    pub store_authorization: bool,
    /// Fetch and cache large objects in slices.
    pub slice: bool,
    /// Segments fetched ahead after one is served (overrides `[cache.video]`).
    pub prefetch: Option<u32>,
    /// Requests carrying any of these skip the cache entirely (no lookup,
    /// not stored), like nginx's `proxy_cache_bypass`.
    pub bypass: Vec<Bypass>,
    /// Whose request `Cache-Control` directives count (RFC 9111 §5.2.1).
    pub client_directives: ClientDirectives,
    /// Clients whose directives all count under `client_directives = "trusted"`.
    pub trusted_clients: Vec<ipnet::IpNet>,
    /// Request fields (lower-case) whose values are normalized before a
    /// `Vary` key is made: tokens split on commas, trimmed, lower-cased,
    /// sorted, duplicates dropped.
    pub vary_normalize: Vec<String>,
    /// Content codings in preference order (lower-case): when set, a
    /// request's `Accept-Encoding` becomes the first of these it accepts,
    /// or `identity`, both for the `Vary` key and upstream.
    pub accept_encoding: Vec<String>,
}

/// Whose request cache directives edge honours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientDirectives {
    /// Every client's: `no-cache` and `max-age=0` from anyone revalidate.
    All,
    /// Everyone's `only-if-cached`, `max-stale` and `no-store` (they never
    /// add origin load); `no-cache`, `max-age` and `min-fresh` only from
    /// `trusted_clients`. The default, as CDNs do.
    Trusted,
    /// None: the origin's word alone decides.
    None,
}

/// A request property that, when present with a value other than empty or
/// `0`, bypasses the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bypass {
    /// Lower-case header name.
    Header(String),
    Cookie(String),
    Query(String),
}

impl Default for RouteCache {
    fn default() -> Self {
        Self {
            enabled: false,
            ttl: None,
            ignore_query: IgnoreQuery::None,
            key_headers: Vec::new(),
            stale_while_revalidate: None,
            stale_if_error: None,
            store_set_cookie: false,
            store_authorization: false,
            slice: true,
            prefetch: None,
            bypass: Vec::new(),
            client_directives: ClientDirectives::Trusted,
            trusted_clients: Vec::new(),
            vary_normalize: vec!["accept-encoding".to_string()],
            accept_encoding: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IgnoreQuery {
    None,
    All,
    Names(Vec<String>),
}
