//! The route table: compiled once per config (regexes built, pools and metric
//! handles resolved) and swapped whole on reload. The first route, in
//! priority order, whose every condition holds wins; `index.rs` finds it
//! without scanning the table.

pub mod index;
pub mod matcher;

use std::sync::Arc;

use edge_config::{HeaderOps, PathRewrite, Route, RouteAction, RouteCache};
use http::HeaderName;

use crate::error::BuildError;
use crate::metrics::{ProxyMetrics, RouteMetrics};
pub use matcher::{Matcher, RequestView};

/// One step of a route's request phase (`service/request.rs` runs them
/// in order; one that answers ends the request phase).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestStep {
    /// Body limit, a site peer's request recognized, the route's rate
    /// limits (`service/limits.rs`).
    Limits,
    /// CMCD, LL-HLS directives, country rule, signed URL (`service/gate.rs`).
    Gate,
    /// The route's pool and total deadline.
    Pool,
    /// The cache's own answers: slices, RAM hits, blocking LL-HLS reloads
    /// (`service/cache.rs`). Only on routes that cache.
    Cache,
    /// The upstream plan's first tier: the shield for cached objects
    /// (`plan.rs`).
    Plan,
    /// A direct response or a redirect (`service/answer.rs`).
    Answer,
}

/// One step of a route's upstream request phase toward its own pool (not
/// toward a peer or shield, which apply them themselves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamStep {
    /// `strip_prefix` / `rewrite_path`.
    Rewrite,
    /// `request_headers` edits.
    HeaderEdits,
    /// `cache.accept_encoding`: the origin is asked what the `Vary` key says.
    AcceptEncoding,
}

/// One step of a route's response phase, beyond what every response gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseStep {
    /// An unsafe method's success invalidates what is stored (RFC 9111 §4.4).
    Invalidate,
    /// Segments after the one served are fetched ahead.
    Prefetch,
}

/// The steps of each phase `route` needs, in the order they run: what a
/// route does not use is not in its chain.
fn chains(route: &Route) -> (Vec<RequestStep>, Vec<UpstreamStep>, Vec<ResponseStep>) {
    let caches = route.cache.enabled;
    let mut request = vec![RequestStep::Limits, RequestStep::Gate];
    match route.action {
        RouteAction::Proxy { .. } => {
            request.push(RequestStep::Pool);
            if caches {
                request.push(RequestStep::Cache);
            }
            request.push(RequestStep::Plan);
        }
        RouteAction::Respond { .. } | RouteAction::Redirect { .. } | RouteAction::Steer { .. } => {
            request.push(RequestStep::Answer)
        }
    }
    let mut upstream = Vec::new();
    if route.path_rewrite.is_some() {
        upstream.push(UpstreamStep::Rewrite);
    }
    if !route.request_headers.is_empty() {
        upstream.push(UpstreamStep::HeaderEdits);
    }
    if caches && !route.cache.accept_encoding.is_empty() {
        upstream.push(UpstreamStep::AcceptEncoding);
    }
    let response = if caches {
        vec![ResponseStep::Invalidate, ResponseStep::Prefetch]
    } else {
        Vec::new()
    };
    (request, upstream, response)
}

/// One route, ready to match.
pub struct CompiledRoute {
    pub name: String,
    pub matcher: Matcher,
    pub action: Action,
    pub rewrite: Option<PathRewrite>,
    pub request_headers: CompiledHeaderOps,
    pub response_headers: CompiledHeaderOps,
    pub cache: RouteCache,
    pub config: Route,
    pub metrics: RouteMetrics,
    /// `auth`, with its secrets read.
    pub auth: Option<crate::video::auth::UrlSigner>,
    /// Each phase's steps for this route, in order.
    pub request_steps: Vec<RequestStep>,
    pub upstream_steps: Vec<UpstreamStep>,
    pub response_steps: Vec<ResponseStep>,
    /// Whether the shortcut of fresh RAM hits may answer for it (HTTP/1:
    /// `service/lean.rs`, HTTP/2: `service/lean_h2.rs`): it proxies and caches, with no rate limit,
    /// signed URL or country rule to apply first.
    pub shortcut: bool,
    /// Whether the HTTP/1 shortcut may pass it through itself
    /// (`service/lean_pass.rs`): it proxies and does not cache, with no
    /// rate limit, signed URL or country rule to apply first.
    pub lean_pass: bool,
}

/// What a matched route does.
pub enum Action {
    /// Proxy to the pool at this index of the proxy state's pools.
    Proxy { pool: usize },
    Redirect {
        to: Option<String>,
        scheme: Option<String>,
        status: u16,
    },
    Respond {
        status: u16,
        body: bytes::Bytes,
        content_type: String,
    },
    /// Steering (see [`crate::steer`]).
    Steer { mode: crate::steer::SteerMode },
}

/// Header edits with names parsed once.
#[derive(Default, Clone, PartialEq)]
pub struct CompiledHeaderOps {
    pub remove: Vec<HeaderName>,
    pub set: Vec<(HeaderName, http::HeaderValue)>,
    pub add: Vec<(HeaderName, http::HeaderValue)>,
}

impl CompiledHeaderOps {
    /// Whether an edit names one of `names`.
    pub fn names_any(&self, names: &[HeaderName]) -> bool {
        self.remove
            .iter()
            .chain(self.set.iter().map(|(n, _)| n))
            .chain(self.add.iter().map(|(n, _)| n))
            .any(|n| names.contains(n))
    }

    fn compile(ops: &HeaderOps) -> Self {
        let pair = |(n, v): &(String, String)| {
            Some((
                HeaderName::from_bytes(n.as_bytes()).ok()?,
                http::HeaderValue::from_str(v).ok()?,
            ))
        };
        Self {
            remove: ops
                .remove
                .iter()
                .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                .collect(),
            set: ops.set.iter().filter_map(pair).collect(),
            add: ops.add.iter().filter_map(pair).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }
}

/// All routes, in evaluation order.
pub struct RouteTable {
    routes: Vec<Arc<CompiledRoute>>,
    index: index::RouteIndex,
    /// Whether any route looks at cookies (else they are never parsed).
    pub needs_cookies: bool,
    /// Whether any route looks at header fields (else a request's route
    /// is known from its listener, host, path, query and method).
    pub needs_fields: bool,
    /// The listeners a route the shortcut answers for is limited to;
    /// `None`: one such route is on every listener.
    shortcut_listeners: Option<Vec<String>>,
}

impl RouteTable {
    /// `pool_index` maps a pool name to its index in the proxy state.
    pub fn compile(
        routes: &[Route],
        pool_index: impl Fn(&str) -> Option<usize>,
        metrics: &ProxyMetrics,
    ) -> Result<Self, BuildError> {
        let mut out = Vec::with_capacity(routes.len());
        for route in routes {
            let matcher = Matcher::compile(&route.name, &route.matcher)?;
            let (action, pool_name) = match &route.action {
                RouteAction::Proxy { pool } => {
                    let index = pool_index(pool).ok_or_else(|| BuildError::UnknownPool {
                        route: route.name.clone(),
                        pool: pool.clone(),
                    })?;
                    (Action::Proxy { pool: index }, pool.as_str())
                }
                RouteAction::Redirect { to, scheme, status } => (
                    Action::Redirect {
                        to: to.clone(),
                        scheme: scheme.clone(),
                        status: *status,
                    },
                    "",
                ),
                RouteAction::Steer { redirect } => (
                    Action::Steer {
                        mode: if *redirect {
                            crate::steer::SteerMode::Redirect
                        } else {
                            crate::steer::SteerMode::List
                        },
                    },
                    "",
                ),
                RouteAction::Respond {
                    status,
                    body,
                    content_type,
                } => (
                    Action::Respond {
                        status: *status,
                        body: bytes::Bytes::from(body.clone()),
                        content_type: content_type.clone(),
                    },
                    "",
                ),
            };
            let auth = route
                .auth
                .as_ref()
                .map(crate::video::auth::UrlSigner::from_env)
                .transpose()
                .map_err(|why| BuildError::Secret {
                    route: route.name.clone(),
                    why,
                })?;
            let (request_steps, upstream_steps, response_steps) = chains(route);
            let plain = matches!(action, Action::Proxy { .. })
                && route.rate_limits.is_empty()
                && auth.is_none()
                && route.geo.is_none();
            let shortcut = plain && route.cache.enabled;
            let response_headers = CompiledHeaderOps::compile(&route.response_headers);
            // Edits of the framing fields frame the body as pingora's writer
            // reads them after the edits: pingora's path.
            let lean_pass = plain
                && !route.cache.enabled
                && !response_headers.names_any(&[
                    http::header::CONTENT_LENGTH,
                    http::header::TRANSFER_ENCODING,
                ]);
            out.push(Arc::new(CompiledRoute {
                shortcut,
                lean_pass,
                request_steps,
                upstream_steps,
                response_steps,
                auth,
                name: route.name.clone(),
                matcher,
                action,
                rewrite: route.path_rewrite.clone(),
                request_headers: CompiledHeaderOps::compile(&route.request_headers),
                response_headers,
                cache: route.cache.clone(),
                config: route.clone(),
                metrics: metrics.route(&route.name, pool_name),
            }));
        }
        let needs_cookies = out.iter().any(|r| r.matcher.uses_cookies());
        let needs_fields = out.iter().any(|r| r.matcher.uses_fields());
        let mut shortcut_listeners = Some(Vec::new());
        for r in out.iter().filter(|r| r.shortcut || r.lean_pass) {
            match (&mut shortcut_listeners, r.matcher.listeners()) {
                (Some(_), []) => shortcut_listeners = None,
                (Some(names), some) => names.extend(some.iter().cloned()),
                (None, _) => {}
            }
        }
        let index = index::RouteIndex::build(
            out.iter()
                .map(|r| (r.matcher.hosts(), r.matcher.path_kind())),
        );
        Ok(Self {
            routes: out,
            index,
            needs_cookies,
            needs_fields,
            shortcut_listeners,
        })
    }

    /// Whether a route the HTTP/1 shortcut answers for may match on
    /// `listener` (a check per request, linear in the listeners named by
    /// such routes, not in the routes).
    pub fn shortcut_on(&self, listener: &str) -> bool {
        self.shortcut_listeners
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == listener))
    }

    /// The first route matching the request, through the index.
    pub fn find(&self, req: &RequestView<'_>) -> Option<&Arc<CompiledRoute>> {
        match self
            .index
            .first(req.host, req.path, |i| self.routes[i].matcher.matches(req))
        {
            index::Lookup::Route(i) => Some(&self.routes[i]),
            index::Lookup::NoRoute => None,
            index::Lookup::Scan => self.scan(req),
        }
    }

    /// The first route matching the request, by a scan of the whole table
    /// (what the index must agree with).
    pub fn scan(&self, req: &RequestView<'_>) -> Option<&Arc<CompiledRoute>> {
        self.routes.iter().find(|r| r.matcher.matches(req))
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<CompiledRoute>> {
        self.routes.iter()
    }
}

/// The path after a route's rewrite.
pub fn rewrite_path(rewrite: &PathRewrite, path: &str) -> String {
    match rewrite {
        PathRewrite::StripPrefix(prefix) => match path.strip_prefix(prefix.as_str()) {
            Some(rest) if rest.starts_with('/') => rest.to_string(),
            Some(rest) => format!("/{rest}"),
            None => path.to_string(),
        },
        PathRewrite::Replace(new) => new.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_prefix_keeps_a_leading_slash() {
        let strip = PathRewrite::StripPrefix("/api".into());
        assert_eq!(rewrite_path(&strip, "/api/users"), "/users");
        assert_eq!(rewrite_path(&strip, "/api"), "/");
        assert_eq!(rewrite_path(&strip, "/apiv2"), "/v2");
        assert_eq!(rewrite_path(&strip, "/other"), "/other");
        assert_eq!(rewrite_path(&PathRewrite::Replace("/x".into()), "/y"), "/x");
    }

    #[test]
    fn each_route_gets_only_the_steps_its_config_needs() {
        let text = r#"
[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:0"
[[pool]]
name = "p"
backends = [{ address = "127.0.0.1:1" }]
[[route]]
name = "cached"
pool = "p"
strip_prefix = "/v"
request_headers = { set = { "x-a" = "1" } }
[route.match]
path_prefix = "/v/"
[route.cache]
enabled = true
accept_encoding = ["gzip"]
[[route]]
name = "plain"
pool = "p"
[route.match]
path_prefix = "/api/"
[[route]]
name = "static"
respond = { status = 200, body = "ok" }
[route.match]
path_prefix = "/s/"
[[route]]
name = "moved"
redirect = { scheme = "https" }
"#;
        let config = edge_config::parse_str(text, "t.toml", std::path::Path::new(".")).unwrap();
        let chains: Vec<_> = config.routes.iter().map(chains).collect();
        use RequestStep::*;
        assert_eq!(chains[0].0, [Limits, Gate, Pool, Cache, Plan]);
        assert_eq!(
            chains[0].1,
            [
                UpstreamStep::Rewrite,
                UpstreamStep::HeaderEdits,
                UpstreamStep::AcceptEncoding
            ]
        );
        assert_eq!(
            chains[0].2,
            [ResponseStep::Invalidate, ResponseStep::Prefetch]
        );
        assert_eq!(chains[1].0, [Limits, Gate, Pool, Plan]);
        assert!(chains[1].1.is_empty() && chains[1].2.is_empty());
        assert_eq!(chains[2].0, [Limits, Gate, Answer]);
        assert_eq!(chains[3].0, [Limits, Gate, Answer]);
    }

    /// The index finds what a scan of the table finds, for random tables
    /// over a small vocabulary of hosts, wildcards, path prefixes, exact
    /// paths, regexes, methods and listeners (so that conditions overlap
    /// and order decides), and random requests over the same vocabulary.
    #[test]
    fn the_index_finds_what_a_scan_finds() {
        use std::fmt::Write;
        let hosts = [
            "a.example",
            "b.example",
            "x.a.example",
            "y.x.a.example",
            "example",
            "127.0.0.1",
        ];
        let host_conds = [
            "a.example",
            "b.example",
            "*.example",
            "*.a.example",
            "*.x.a.example",
            "example",
            "x.a.example",
            "127.0.0.1",
        ];
        let paths = ["/", "/a", "/ab", "/ab/c", "/b/c.m3u8", "/abc/d.ts", ""];
        let mut rng = fastrand::Rng::with_seed(17);
        let metrics = crate::metrics::ProxyMetrics::new(&prometheus::Registry::new()).unwrap();
        for table in 0..200 {
            let mut text = String::from(
                "[[listener]]\nname = \"web\"\nkind = \"http\"\naddress = \"127.0.0.1:0\"\n\
                 [[listener]]\nname = \"alt\"\nkind = \"http\"\naddress = \"127.0.0.1:0\"\n\
                 [[pool]]\nname = \"p\"\nbackends = [{ address = \"127.0.0.1:1\" }]\n",
            );
            for r in 0..rng.usize(1..30) {
                write!(
                    text,
                    "[[route]]\nname = \"r{r}\"\npool = \"p\"\n[route.match]\n"
                )
                .unwrap();
                let n = rng.usize(0..3);
                if n > 0 {
                    let hs: Vec<String> = (0..n)
                        .map(|_| format!("{:?}", host_conds[rng.usize(..host_conds.len())]))
                        .collect();
                    writeln!(text, "host = [{}]", hs.join(", ")).unwrap();
                }
                let p = &paths[rng.usize(..paths.len() - 1)];
                match rng.usize(0..5) {
                    0 => writeln!(text, "path_prefix = {p:?}").unwrap(),
                    1 => writeln!(text, "path_exact = {p:?}").unwrap(),
                    2 => writeln!(text, "path_regex = \"^/a.*c\"").unwrap(),
                    _ => {}
                }
                if rng.usize(0..4) == 0 {
                    writeln!(text, "methods = [\"HEAD\"]").unwrap();
                }
                if rng.usize(0..4) == 0 {
                    writeln!(text, "listeners = [\"alt\"]").unwrap();
                }
            }
            let config = edge_config::parse_str(&text, "t.toml", std::path::Path::new("."))
                .unwrap_or_else(|e| panic!("table {table}: {e}\n{text}"));
            let routes = RouteTable::compile(&config.routes, |_| Some(0), &metrics).unwrap();
            let headers = http::HeaderMap::new();
            for host in hosts {
                for path in &paths[..paths.len() - 1] {
                    for method in [http::Method::GET, http::Method::HEAD] {
                        for listener in ["web", "alt"] {
                            let view = RequestView {
                                listener,
                                host,
                                path,
                                query: None,
                                method: &method,
                                headers: &headers,
                                cookies: &[],
                            };
                            assert_eq!(
                                routes.find(&view).map(|r| &r.name),
                                routes.scan(&view).map(|r| &r.name),
                                "table {table}, {method} {host}{path} on {listener}\n{text}"
                            );
                        }
                    }
                }
            }
        }
    }
}
