//! `edge sign`: a signed URL (or cookie pair) for a route with `auth`,
//! made from the config and its keys' environment, for testing and for
//! tools that hand out URLs.

use std::net::IpAddr;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use edge_proxy::normalize::{self, PathOptions};
use edge_proxy::route::{RequestView, RouteTable};
use pingora_http::RequestHeader;

/// What to sign.
pub struct Request<'a> {
    pub url: &'a str,
    pub ttl: &'a str,
    pub route: Option<&'a str>,
    pub client_ip: Option<IpAddr>,
    pub key: Option<&'a str>,
    pub prefix: Option<&'a str>,
}

/// The signed URL and the `Cookie` field carrying the same token.
pub struct Signed {
    pub url: String,
    pub cookie: String,
}

/// A config's routes, compiled to find the one serving a URL and sign
/// with its keys (read from the environment once).
pub struct Signing {
    table: RouteTable,
    /// (listener name, https, path options) of the HTTP listeners.
    listeners: Vec<(String, bool, PathOptions)>,
}

impl Signing {
    pub fn new(config: &edge_config::Config) -> anyhow::Result<Self> {
        let registry = prometheus::Registry::new();
        let metrics = edge_proxy::metrics::ProxyMetrics::new(&registry)?;
        let table = RouteTable::compile(
            &config.routes,
            |name| config.pools.iter().position(|p| p.name == name),
            &metrics,
        )?;
        let listeners = config
            .listeners
            .iter()
            .filter_map(|l| {
                let http = l.kind.http()?;
                let tls = matches!(l.kind, edge_config::ListenerKind::Https(_));
                let paths = PathOptions {
                    merge_slashes: http.merge_slashes,
                    escaped_slashes: http.escaped_slashes,
                };
                Some((l.name.clone(), tls, paths))
            })
            .collect();
        Ok(Self { table, listeners })
    }

    /// Whether any route needs a token.
    pub fn any(config: &edge_config::Config) -> bool {
        config.routes.iter().any(|r| r.auth.is_some())
    }

    /// Signs `r.url` with the route that serves it (or `r.route`).
    pub fn sign(&self, r: &Request<'_>) -> anyhow::Result<Signed> {
        sign_with(self, r)
    }
}

/// Signs `r.url` with the route of `config` that serves it (or `r.route`).
pub fn sign(config: &edge_config::Config, r: &Request<'_>) -> anyhow::Result<Signed> {
    Signing::new(config)?.sign(r)
}

fn sign_with(signing: &Signing, r: &Request<'_>) -> anyhow::Result<Signed> {
    let uri: http::Uri = r
        .url
        .parse()
        .with_context(|| format!("{:?} is not a URL", r.url))?;
    let scheme = match uri.scheme_str() {
        Some("http") => "http",
        Some("https") => "https",
        _ => bail!("{:?}: give an absolute http:// or https:// URL", r.url),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| anyhow!("{:?} has no host", r.url))?
        .to_string();
    let ttl = edge_config::units::parse_duration(r.ttl).map_err(|e| anyhow!("--ttl: {e}"))?;
    if ttl.as_secs() == 0 {
        bail!(
            "--ttl {:?}: a URL valid for less than a second is expired when it is used",
            r.ttl
        );
    }
    let table = &signing.table;
    let listeners = signing
        .listeners
        .iter()
        .filter(|(_, tls, _)| *tls == (scheme == "https"));
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut found = None;
    for (listener, tls, paths) in listeners {
        let mut req = RequestHeader::build("GET", target.as_bytes(), None)?;
        req.insert_header(http::header::HOST, authority.as_str())?;
        let admitted = normalize::admit(&mut req, *tls, paths)
            .map_err(|refusal| anyhow!("{}: {}", r.url, refusal.reason))?;
        let host = admitted.authority.map(|a| a.host).unwrap_or_default();
        let route = match r.route {
            Some(name) => table.iter().find(|c| c.name == name).cloned(),
            None => {
                let view = RequestView {
                    listener,
                    host: &host,
                    path: req.uri.path(),
                    query: req.uri.query(),
                    method: &req.method,
                    headers: &req.headers,
                    cookies: &[],
                };
                table.find(&view).cloned()
            }
        };
        if let Some(route) = route {
            found = Some((route, req));
            break;
        }
    }
    let (route, req) = found.ok_or_else(|| match r.route {
        Some(n) => anyhow!("no route named {n:?}"),
        None => anyhow!("no route serves {} on a {scheme} listener", r.url),
    })?;
    let signer = route
        .auth
        .as_ref()
        .ok_or_else(|| anyhow!("route {} needs no token (it has no `auth`)", route.name))?;
    let path = req.uri.path();
    let covered = signer.covered(path, r.prefix).map_err(anyhow::Error::msg)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let expires = now.saturating_add(ttl.as_secs());
    let token = signer
        .sign(covered, expires, r.client_ip, r.key)
        .map_err(anyhow::Error::msg)?;
    let names = [
        signer.config.param.as_str(),
        signer.config.expires_param.as_str(),
    ];
    let (rest, _) = edge_proxy::video::strip_params(req.uri.query().unwrap_or_default(), &names);
    let signed = signer.query(expires, &token);
    let query = match rest {
        Some(q) => format!("{q}&{signed}"),
        None => signed,
    };
    Ok(Signed {
        url: format!("{scheme}://{authority}{path}?{query}"),
        cookie: format!(
            "{}={expires}; {}={token}",
            signer.config.expires_param, signer.config.param
        ),
    })
}

/// `edge sign`: prints the URL (or with `cookie`, the `Cookie` field).
pub fn run(config: &Path, r: &Request<'_>, cookie: bool) -> anyhow::Result<()> {
    let config = crate::ctl::load(config)?;
    let signed = sign(&config, r)?;
    if cookie {
        crate::out::say!("Cookie: {}", signed.cookie);
    } else {
        crate::out::say!("{}", signed.url);
    }
    Ok(())
}
