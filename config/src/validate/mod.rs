//! Raw TOML → validated model. Every section and every array item is
//! deserialized on its own, so one bad item does not hide the others, and a
//! serde error is retried with the offending key removed, so each item reports
//! all its schema errors, not just the first. Semantic checks then run on what
//! deserialized, and cross-checks on the whole.

mod cache;
mod cross;
mod dns;
mod fields;
mod limits;
mod listeners;
mod pools;
mod routes;
mod server;
mod video;

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::{DeserializeOwned, IntoDeserializer};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::diag::{Diagnostic, Diagnostics};
use crate::model::Config;
use crate::source::{join_key, PathIndex, Source};

const SECTIONS: &[&str] = &[
    "server",
    "admin",
    "site",
    "listener",
    "pool",
    "route",
    "cache",
    "rate_limit",
    "redis",
    "dns",
    "resolver",
];

/// Collects diagnostics while the model is built.
pub(crate) struct Checker<'s> {
    source: &'s Source,
    index: PathIndex,
    base_dir: PathBuf,
    diags: Vec<Diagnostic>,
}

impl<'s> Checker<'s> {
    fn new(source: &'s Source, index: PathIndex, base_dir: &Path) -> Self {
        Self {
            source,
            index,
            base_dir: base_dir.to_path_buf(),
            diags: Vec::new(),
        }
    }

    /// Records an error at `span`, for the key at `path`.
    pub(crate) fn error(
        &mut self,
        span: Range<usize>,
        path: impl Into<String>,
        message: impl Into<String>,
        expected: Option<&str>,
    ) {
        self.diags.push(Diagnostic::at(
            self.source,
            span.start,
            path,
            message,
            expected.map(str::to_string),
        ));
    }

    pub(crate) fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// Deserializes one value; on failure records every schema error in it
    /// (retrying with each offending key removed) and returns `None`.
    pub(crate) fn deser<T: DeserializeOwned>(&mut self, value: &Spanned<DeValue<'_>>) -> Option<T> {
        let mut value = value.clone();
        let mut removed: Vec<String> = Vec::new();
        let mut failed = false;
        for _ in 0..64 {
            match T::deserialize(value.clone().into_deserializer()) {
                Ok(v) => return (!failed).then_some(v),
                Err(e) => {
                    failed = true;
                    let span = e.span().unwrap_or_else(|| value.span());
                    let message = e.message().to_string();
                    let spurious = message.starts_with("missing field")
                        && removed.iter().any(|k| message.contains(&format!("`{k}`")));
                    if !spurious {
                        self.serde_error(&span, &message);
                    }
                    match remove_at(&mut value, &span) {
                        Some(key) => removed.push(key),
                        None => return None,
                    }
                }
            }
        }
        None
    }

    /// Turns serde's wording into ours: key, not field; what was expected apart.
    fn serde_error(&mut self, span: &Range<usize>, message: &str) {
        let path = self.index.path_at(span).unwrap_or("").to_string();
        let (message, expected, path) = if let Some(rest) = message.strip_prefix("unknown field ") {
            let (key, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
            let expected = if expected.is_empty() {
                "no keys here".to_string()
            } else {
                expected.to_string()
            };
            (format!("unknown key {key}"), Some(expected), path)
        } else if message.starts_with("unexpected keys in table") {
            (
                "unknown keys in table".to_string(),
                message
                    .split_once("available keys: ")
                    .map(|(_, k)| k.trim().to_string())
                    .filter(|k| !k.is_empty())
                    .or(Some("no keys here".into())),
                path,
            )
        } else if let Some(rest) = message.strip_prefix("missing field ") {
            let key = rest.trim_matches('`');
            (format!("missing key `{key}`"), None, join_key(&path, key))
        } else if let Some(rest) = message.strip_prefix("invalid type: ") {
            let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
            (
                format!("wrong type: found {found}"),
                Some(friendly_type(expected)),
                path,
            )
        } else if let Some(rest) = message.strip_prefix("unknown variant ") {
            let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
            (
                format!("unknown value {found}"),
                Some(expected.to_string()),
                path,
            )
        } else if let Some(rest) = message.strip_prefix("invalid value: ") {
            let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
            (
                format!("invalid value: {found}"),
                Some(friendly_type(expected)),
                path,
            )
        } else {
            (message.to_string(), None, path)
        };
        self.error(span.clone(), path, message, expected.as_deref());
    }

    fn finish(mut self) -> Diagnostics {
        let mut d = Diagnostics(std::mem::take(&mut self.diags));
        d.sort();
        d
    }
}

fn friendly_type(rust: &str) -> String {
    match rust {
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "usize" | "isize" => {
            "an integer".into()
        }
        "f32" | "f64" => "a number".into(),
        "a boolean" | "bool" => "true or false".into(),
        "" => "another type".into(),
        other => other.to_string(),
    }
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end.max(outer.start + 1)
}

/// Removes the key that owns `span` (the deepest one), returning its name.
fn remove_at(value: &mut Spanned<DeValue<'_>>, span: &Range<usize>) -> Option<String> {
    match value.get_mut() {
        DeValue::Table(table) => {
            let mut target = None;
            for (key, val) in table.iter_mut() {
                if contains(&key.span(), span) {
                    target = Some(key.get_ref().to_string());
                    break;
                }
                if contains(&val.span(), span) {
                    if val.span() != *span {
                        if let Some(found) = remove_at(val, span) {
                            return Some(found);
                        }
                    }
                    target = Some(key.get_ref().to_string());
                    break;
                }
            }
            let key = target?;
            table.remove(key.as_str());
            Some(key)
        }
        DeValue::Array(items) => {
            for item in items.iter_mut() {
                if contains(&item.span(), span) {
                    return remove_at(item, span);
                }
            }
            None
        }
        _ => None,
    }
}

/// The sections of a file, as deserialized (before semantic checks).
pub(crate) struct Document<'a> {
    pub sections: Vec<(Spanned<String>, Spanned<DeValue<'a>>)>,
}

impl Document<'_> {
    pub(crate) fn get(&self, name: &str) -> Option<&Spanned<DeValue<'_>>> {
        self.sections
            .iter()
            .find(|(k, _)| k.get_ref() == name)
            .map(|(_, v)| v)
    }
}

/// Parses and validates one file's text. `base_dir` resolves relative paths.
pub fn parse_str(text: &str, name: &str, base_dir: &Path) -> Result<Config, Diagnostics> {
    let source = Source::new(name, text);
    let doc = match DeTable::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let message = e.message().trim().to_string();
            let diag = Diagnostic::at(
                &source,
                span.start,
                "",
                format!("TOML syntax: {message}"),
                None,
            );
            return Err(Diagnostics(vec![diag]));
        }
    };
    let mut ck = Checker::new(&source, PathIndex::build(&doc), base_dir);
    let mut sections = Vec::new();
    for (key, value) in doc.get_ref().iter() {
        let name = key.get_ref().to_string();
        if !SECTIONS.contains(&name.as_str()) {
            let expected = SECTIONS
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ");
            ck.error(
                key.span(),
                name.clone(),
                format!("unknown section `{name}`"),
                Some(&format!("one of {expected}")),
            );
            continue;
        }
        sections.push((Spanned::new(key.span(), name), value.clone()));
    }
    let document = Document { sections };
    let config = build(&mut ck, &document);
    let diags = ck.finish();
    if diags.is_empty() {
        Ok(config)
    } else {
        Err(diags)
    }
}

fn build(ck: &mut Checker<'_>, doc: &Document<'_>) -> Config {
    let server = server::server(ck, doc.get("server"));
    let admin = server::admin(ck, doc.get("admin"));
    let site = doc.get("site").and_then(|v| server::site(ck, v));
    let listeners = ck.items(doc.get("listener"), "listener", listeners::listener);
    let pools = ck.items(doc.get("pool"), "pool", pools::pool);
    let mut routes = ck.items(doc.get("route"), "route", |ck, item, path| {
        routes::route(ck, item, path, &pools)
    });
    let cache = cache::cache(ck, doc.get("cache"));
    let rate_limits = ck.items(doc.get("rate_limit"), "rate_limit", limits::rate_limit);
    let redis = doc.get("redis").and_then(|v| limits::redis(ck, v));
    let dns = doc.get("dns").and_then(|v| dns::dns(ck, v));
    let resolver = doc
        .get("resolver")
        .map_or_else(crate::model::Resolver::default, |v| pools::resolver(ck, v));

    // Evaluation order: highest priority first; the sort is stable, so file
    // order decides among equals.
    routes.sort_by_key(|(_, r)| std::cmp::Reverse(r.priority));

    let mut config = Config {
        source: None,
        server,
        admin,
        site,
        listeners: Vec::new(),
        pools: Vec::new(),
        routes: Vec::new(),
        cache,
        rate_limits: Vec::new(),
        redis,
        dns,
        resolver,
        declared: crate::model::Declared {
            listeners: doc.get("listener").is_some(),
            routes: doc.get("route").is_some(),
            dns_zones: doc
                .get("dns")
                .and_then(|d| d.get_ref().as_table())
                .is_some_and(|t| t.contains_key("zone")),
        },
    };
    cross::check(ck, doc, &listeners, &pools, &routes, &rate_limits, &config);
    config.listeners = listeners.into_iter().map(|(_, l)| l).collect();
    config.pools = pools.into_iter().map(|(_, p)| p).collect();
    config.routes = routes.into_iter().map(|(_, r)| r).collect();
    config.rate_limits = rate_limits.into_iter().map(|(_, r)| r).collect();
    config
}

/// Where an item came from, for cross-checks that point back at it.
#[derive(Debug, Clone)]
pub(crate) struct ItemAt {
    pub path: String,
    pub span: Range<usize>,
    /// Spans of particular keys (e.g. "address", "pool"), for precise cross-check errors.
    pub keys: Vec<(String, Range<usize>)>,
}

impl ItemAt {
    pub(crate) fn new(path: &str, span: Range<usize>) -> Self {
        Self {
            path: path.to_string(),
            span,
            keys: Vec::new(),
        }
    }

    pub(crate) fn with(mut self, key: impl Into<String>, span: Range<usize>) -> Self {
        self.keys.push((key.into(), span));
        self
    }

    /// The span and path of `key` if recorded, else the item's.
    pub(crate) fn key(&self, key: &str) -> (Range<usize>, String) {
        match self.keys.iter().find(|(k, _)| *k == key) {
            Some((_, span)) => (span.clone(), format!("{}.{key}", self.path)),
            None => (self.span.clone(), self.path.clone()),
        }
    }
}

impl Checker<'_> {
    /// Validates each item of an array-of-tables section on its own.
    pub(crate) fn items<T>(
        &mut self,
        value: Option<&Spanned<DeValue<'_>>>,
        section: &str,
        mut each: impl FnMut(&mut Self, &Spanned<DeValue<'_>>, &str) -> Option<(ItemAt, T)>,
    ) -> Vec<(ItemAt, T)> {
        let Some(value) = value else {
            return Vec::new();
        };
        let DeValue::Array(items) = value.get_ref() else {
            self.error(
                value.span(),
                section,
                format!("`{section}` must be a list of tables"),
                Some(&format!("[[{section}]] tables")),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("{section}[{i}]");
            if !item.get_ref().is_table() {
                self.error(
                    item.span(),
                    path,
                    format!("each `{section}` must be a table"),
                    Some("a table"),
                );
                continue;
            }
            if let Some(built) = each(self, item, &path) {
                out.push(built);
            }
        }
        out
    }
}
