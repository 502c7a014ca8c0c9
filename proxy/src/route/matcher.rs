//! One route's conditions, compiled.

use edge_config::{HostMatch, PathMatch, RouteMatch, ValueCondition};
use http::{HeaderMap, HeaderName, Method};
use regex::Regex;

use crate::error::BuildError;

/// What a route looks at in a request, borrowed from it.
pub struct RequestView<'a> {
    /// The listener the request came in on.
    pub listener: &'a str,
    /// Lower-case, without port.
    pub host: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    /// Parsed `Cookie` pairs (empty when no route needs them).
    pub cookies: &'a [(String, String)],
}

enum Cond {
    Present,
    Absent,
    Equals(String),
    Regex(Regex),
}

impl Cond {
    fn holds(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (Cond::Present, v) => v.is_some(),
            (Cond::Absent, v) => v.is_none(),
            (Cond::Equals(want), Some(v)) => v == want,
            (Cond::Regex(re), Some(v)) => re.is_match(v),
            (_, None) => false,
        }
    }
}

/// A route's path condition as [`super::index::RouteIndex`] files it.
#[derive(Debug, Clone, Copy)]
pub enum PathKind<'a> {
    Exact(&'a str),
    Prefix(&'a str),
    /// A regex or no path condition: tested on every request of the
    /// route's hosts.
    Any,
}

enum Path {
    Prefix(String),
    Exact(String),
    Regex(Regex),
}

pub struct Matcher {
    listeners: Vec<String>,
    hosts: Vec<HostMatch>,
    path: Option<Path>,
    methods: Vec<Method>,
    headers: Vec<(HeaderName, Cond)>,
    cookies: Vec<(String, Cond)>,
    query: Vec<(String, Cond)>,
}

fn cond(route: &str, what: &str, c: &ValueCondition) -> Result<Cond, BuildError> {
    Ok(match c {
        ValueCondition::Present => Cond::Present,
        ValueCondition::Absent => Cond::Absent,
        ValueCondition::Equals(v) => Cond::Equals(v.clone()),
        ValueCondition::Regex(r) => {
            Cond::Regex(Regex::new(r).map_err(|source| BuildError::Regex {
                route: route.to_string(),
                what: what.to_string(),
                source,
            })?)
        }
    })
}

impl Matcher {
    pub fn compile(route: &str, m: &RouteMatch) -> Result<Self, BuildError> {
        let path = match &m.path {
            None => None,
            Some(PathMatch::Prefix(p)) => Some(Path::Prefix(p.clone())),
            Some(PathMatch::Exact(p)) => Some(Path::Exact(p.clone())),
            Some(PathMatch::Regex(r)) => Some(Path::Regex(Regex::new(r).map_err(|source| {
                BuildError::Regex {
                    route: route.to_string(),
                    what: "path_regex".into(),
                    source,
                }
            })?)),
        };
        let mut headers = Vec::new();
        for h in &m.headers {
            let name =
                HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| BuildError::Regex {
                    route: route.to_string(),
                    what: format!("header {}", h.name),
                    source: regex::Error::Syntax("not a header name".into()),
                })?;
            headers.push((
                name,
                cond(route, &format!("header {}", h.name), &h.condition)?,
            ));
        }
        let named = |list: &[edge_config::ValueMatch],
                     what: &str|
         -> Result<Vec<(String, Cond)>, BuildError> {
            list.iter()
                .map(|v| {
                    Ok((
                        v.name.clone(),
                        cond(route, &format!("{what} {}", v.name), &v.condition)?,
                    ))
                })
                .collect()
        };
        Ok(Self {
            listeners: m.listeners.clone(),
            hosts: m.hosts.clone(),
            path,
            methods: m
                .methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                .collect(),
            headers,
            cookies: named(&m.cookies, "cookie")?,
            query: named(&m.query, "query")?,
        })
    }

    /// The host conditions (empty: any host), for the route index.
    pub fn hosts(&self) -> &[HostMatch] {
        &self.hosts
    }

    /// The path condition as the route index files it.
    pub fn path_kind(&self) -> PathKind<'_> {
        match &self.path {
            Some(Path::Prefix(p)) => PathKind::Prefix(p),
            Some(Path::Exact(p)) => PathKind::Exact(p),
            Some(Path::Regex(_)) | None => PathKind::Any,
        }
    }

    pub fn uses_cookies(&self) -> bool {
        !self.cookies.is_empty()
    }

    /// Whether the route looks at header fields (cookies included).
    pub fn uses_fields(&self) -> bool {
        !self.headers.is_empty() || !self.cookies.is_empty()
    }

    /// The listeners it is limited to (none: every listener).
    pub fn listeners(&self) -> &[String] {
        &self.listeners
    }

    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        if !self.listeners.is_empty() && !self.listeners.iter().any(|l| l == req.listener) {
            return false;
        }
        if !self.hosts.is_empty()
            && !self.hosts.iter().any(|h| match h {
                HostMatch::Exact(e) => req.host == e,
                HostMatch::Suffix(s) => req.host.len() > s.len() && req.host.ends_with(s.as_str()),
            })
        {
            return false;
        }
        match &self.path {
            Some(Path::Prefix(p)) if !req.path.starts_with(p.as_str()) => return false,
            Some(Path::Exact(p)) if req.path != p => return false,
            Some(Path::Regex(r)) if !r.is_match(req.path) => return false,
            _ => {}
        }
        if !self.methods.is_empty() && !self.methods.contains(req.method) {
            return false;
        }
        for (name, c) in &self.headers {
            let value = req.headers.get(name).and_then(|v| v.to_str().ok());
            if !c.holds(value) {
                return false;
            }
        }
        for (name, c) in &self.cookies {
            let value = req
                .cookies
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str());
            if !c.holds(value) {
                return false;
            }
        }
        for (name, c) in &self.query {
            let value = query_value(req.query, name);
            if !c.holds(value.as_deref()) {
                return false;
            }
        }
        true
    }
}

/// The first value of a query parameter, percent-decoded.
pub fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `Cookie` header pairs.
pub fn parse_cookies(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_config::ValueMatch;

    fn view<'a>(
        host: &'a str,
        path: &'a str,
        headers: &'a HeaderMap,
        cookies: &'a [(String, String)],
    ) -> RequestView<'a> {
        RequestView {
            listener: "web",
            host,
            path,
            query: Some("v=2&x=a%20b"),
            method: &Method::GET,
            headers,
            cookies,
        }
    }

    #[test]
    fn wildcard_hosts_match_subdomains_not_the_apex() {
        let m = Matcher::compile(
            "r",
            &RouteMatch {
                hosts: vec![HostMatch::Suffix(".example.com".into())],
                ..Default::default()
            },
        )
        .unwrap();
        let h = HeaderMap::new();
        assert!(m.matches(&view("a.example.com", "/", &h, &[])));
        assert!(m.matches(&view("a.b.example.com", "/", &h, &[])));
        assert!(!m.matches(&view("example.com", "/", &h, &[])));
        assert!(!m.matches(&view("badexample.com", "/", &h, &[])));
    }

    #[test]
    fn every_condition_must_hold() {
        let m = Matcher::compile(
            "r",
            &RouteMatch {
                path: Some(PathMatch::Regex("^/live/.*\\.m3u8$".into())),
                headers: vec![ValueMatch {
                    name: "x-env".into(),
                    condition: ValueCondition::Equals("prod".into()),
                }],
                cookies: vec![ValueMatch {
                    name: "beta".into(),
                    condition: ValueCondition::Present,
                }],
                query: vec![ValueMatch {
                    name: "x".into(),
                    condition: ValueCondition::Equals("a b".into()),
                }],
                ..Default::default()
            },
        )
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-env", "prod".parse().unwrap());
        let cookies = vec![("beta".to_string(), "1".to_string())];
        assert!(m.matches(&view("h", "/live/a.m3u8", &h, &cookies)));
        assert!(!m.matches(&view("h", "/live/a.ts", &h, &cookies)));
        assert!(!m.matches(&view("h", "/live/a.m3u8", &h, &[])));
        assert!(!m.matches(&view("h", "/live/a.m3u8", &HeaderMap::new(), &cookies)));
    }

    #[test]
    fn cookies_are_split_and_trimmed() {
        let mut h = HeaderMap::new();
        h.append("cookie", "a=1; b=\"two\"".parse().unwrap());
        h.append("cookie", "c=3".parse().unwrap());
        let c = parse_cookies(&h);
        assert_eq!(
            c,
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "two".into()),
                ("c".into(), "3".into())
            ]
        );
    }
}
