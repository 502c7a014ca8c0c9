//! Conversions of single values, each reporting where it went wrong.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use super::Checker;
use crate::model::StatusRange;
use crate::raw::WordOrPart;
use crate::source::join_key;
use crate::units::{
    parse_duration, parse_rate, parse_size, Rate, Scalar, DURATION_EXPECTED, RATE_EXPECTED,
    SIZE_EXPECTED,
};

type S<T> = Spanned<T>;

impl Checker<'_> {
    pub(crate) fn duration(
        &mut self,
        value: &Option<S<Scalar>>,
        path: &str,
        key: &str,
        default: Duration,
    ) -> Duration {
        match value {
            Some(v) => self
                .duration_value(v, &join_key(path, key))
                .unwrap_or(default),
            None => default,
        }
    }

    pub(crate) fn opt_duration(
        &mut self,
        value: &Option<S<Scalar>>,
        path: &str,
        key: &str,
    ) -> Option<Duration> {
        value
            .as_ref()
            .and_then(|v| self.duration_value(v, &join_key(path, key)))
    }

    pub(crate) fn duration_value(&mut self, v: &S<Scalar>, path: &str) -> Option<Duration> {
        match v.get_ref() {
            Scalar::Str(s) => match parse_duration(s) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.error(v.span(), path, e, Some(DURATION_EXPECTED));
                    None
                }
            },
            Scalar::Int(n) => {
                self.error(
                    v.span(),
                    path,
                    format!(
                        "{n} has no unit: write \"{n}s\" for seconds or \"{n}ms\" for milliseconds"
                    ),
                    Some(DURATION_EXPECTED),
                );
                None
            }
            other => {
                self.error(
                    v.span(),
                    path,
                    format!("wrong type: found {}", other.type_name()),
                    Some(DURATION_EXPECTED),
                );
                None
            }
        }
    }

    /// A duration that must be longer than zero.
    pub(crate) fn positive_duration(
        &mut self,
        value: &Option<S<Scalar>>,
        path: &str,
        key: &str,
        default: Duration,
    ) -> Duration {
        let Some(v) = value else { return default };
        let path = join_key(path, key);
        match self.duration_value(v, &path) {
            Some(d) if d.is_zero() => {
                self.error(
                    v.span(),
                    path,
                    "must be longer than zero",
                    Some(DURATION_EXPECTED),
                );
                default
            }
            Some(d) => d,
            None => default,
        }
    }

    pub(crate) fn size(
        &mut self,
        value: &Option<S<Scalar>>,
        path: &str,
        key: &str,
        default: u64,
    ) -> u64 {
        match value {
            Some(v) => self.size_value(v, &join_key(path, key)).unwrap_or(default),
            None => default,
        }
    }

    pub(crate) fn size_value(&mut self, v: &S<Scalar>, path: &str) -> Option<u64> {
        match v.get_ref() {
            Scalar::Str(s) => match parse_size(s) {
                Ok(n) => Some(n),
                Err(e) => {
                    self.error(v.span(), path, e, Some(SIZE_EXPECTED));
                    None
                }
            },
            Scalar::Int(n) if *n >= 0 => Some(*n as u64),
            Scalar::Int(n) => {
                self.error(
                    v.span(),
                    path,
                    format!("{n} is negative"),
                    Some(SIZE_EXPECTED),
                );
                None
            }
            other => {
                self.error(
                    v.span(),
                    path,
                    format!("wrong type: found {}", other.type_name()),
                    Some(SIZE_EXPECTED),
                );
                None
            }
        }
    }

    pub(crate) fn rate_value(&mut self, v: &S<Scalar>, path: &str) -> Option<Rate> {
        match v.get_ref() {
            Scalar::Str(s) => match parse_rate(s) {
                Ok(r) => Some(r),
                Err(e) => {
                    self.error(v.span(), path, e, Some(RATE_EXPECTED));
                    None
                }
            },
            other => {
                self.error(
                    v.span(),
                    path,
                    format!("wrong type: found {}", other.type_name()),
                    Some(RATE_EXPECTED),
                );
                None
            }
        }
    }

    /// An integer in `min..=max`.
    pub(crate) fn int(
        &mut self,
        value: &Option<S<i64>>,
        path: &str,
        key: &str,
        min: i64,
        max: i64,
        default: i64,
    ) -> i64 {
        match value {
            Some(v) => self
                .int_value(v, &join_key(path, key), min, max)
                .unwrap_or(default),
            None => default,
        }
    }

    pub(crate) fn int_value(&mut self, v: &S<i64>, path: &str, min: i64, max: i64) -> Option<i64> {
        let n = *v.get_ref();
        if n < min || n > max {
            let expected = if max == i64::MAX {
                format!("an integer ≥ {min}")
            } else {
                format!("an integer from {min} to {max}")
            };
            let message = if n < min && n <= 0 && min > 0 {
                format!("{n} is too small: must be at least {min}")
            } else if n < min {
                format!("{n} is too small")
            } else {
                format!("{n} is too large")
            };
            self.error(v.span(), path, message, Some(&expected));
            None
        } else {
            Some(n)
        }
    }

    /// An optional integer in `min..=max`.
    pub(crate) fn opt_int(
        &mut self,
        value: &Option<S<i64>>,
        path: &str,
        key: &str,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        value
            .as_ref()
            .and_then(|v| self.int_value(v, &join_key(path, key), min, max))
    }

    pub(crate) fn socket_addr(&mut self, v: &S<String>, path: &str) -> Option<SocketAddr> {
        match v.get_ref().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.error(
                    v.span(),
                    path,
                    format!("{:?} is not an IP address and port", v.get_ref()),
                    Some("an address such as \"0.0.0.0:8080\", \"127.0.0.1:0\" or \"[::]:443\""),
                );
                None
            }
        }
    }

    /// A non-empty name made of letters, digits, `-`, `_` and `.`.
    pub(crate) fn name(&mut self, v: &S<String>, path: &str) -> Option<String> {
        let s = v.get_ref();
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if ok {
            Some(s.clone())
        } else {
            self.error(
                v.span(),
                path,
                format!("{s:?} is not a valid name"),
                Some("1–128 letters, digits, '-', '_' or '.'"),
            );
            None
        }
    }

    /// One of a fixed set of words.
    pub(crate) fn choice<T: Clone>(
        &mut self,
        v: &S<String>,
        path: &str,
        options: &[(&str, T)],
    ) -> Option<T> {
        if let Some((_, t)) = options.iter().find(|(name, _)| name == v.get_ref()) {
            return Some(t.clone());
        }
        let names: Vec<String> = options.iter().map(|(n, _)| format!("\"{n}\"")).collect();
        self.error(
            v.span(),
            path,
            format!("unknown value {:?}", v.get_ref()),
            Some(&format!("one of {}", names.join(", "))),
        );
        None
    }

    /// A regular expression; returns the pattern when it compiles.
    pub(crate) fn regex(&mut self, v: &S<String>, path: &str) -> Option<String> {
        match regex::Regex::new(v.get_ref()) {
            Ok(_) => Some(v.get_ref().clone()),
            Err(e) => {
                let detail = e.to_string();
                let last = detail.lines().last().unwrap_or("").trim().to_string();
                self.error(
                    v.span(),
                    path,
                    format!("invalid regular expression: {last}"),
                    Some("a regular expression in Rust `regex` syntax"),
                );
                None
            }
        }
    }

    /// A path to an existing readable file, resolved against the config's directory.
    pub(crate) fn existing_file(&mut self, v: &S<String>, path: &str, what: &str) -> PathBuf {
        let resolved = self.resolve(v.get_ref());
        match std::fs::metadata(&resolved) {
            Ok(m) if m.is_file() => {
                if let Err(e) = std::fs::File::open(&resolved) {
                    self.error(
                        v.span(),
                        path,
                        format!("{what} {} cannot be read: {e}", resolved.display()),
                        Some("a readable file"),
                    );
                }
            }
            Ok(_) => self.error(
                v.span(),
                path,
                format!("{what} {} is not a file", resolved.display()),
                Some("a readable file"),
            ),
            Err(e) => self.error(
                v.span(),
                path,
                format!("{what} {} does not exist ({e})", resolved.display()),
                Some("a readable file"),
            ),
        }
        resolved
    }

    pub(crate) fn resolve(&self, path: &str) -> PathBuf {
        let p = PathBuf::from(path);
        if p.is_absolute() {
            p
        } else {
            self.base_dir().join(p)
        }
    }

    pub(crate) fn ip_net(&mut self, v: &S<String>, path: &str) -> Option<IpNet> {
        let s = v.get_ref();
        if let Ok(net) = s.parse::<IpNet>() {
            if net.trunc() != net {
                self.error(
                    v.span(),
                    path,
                    format!("{s} has host bits set; the network is {}", net.trunc()),
                    Some("a network address such as \"10.0.0.0/8\""),
                );
                return None;
            }
            return Some(net);
        }
        if let Ok(ip) = s.parse::<std::net::IpAddr>() {
            return Some(IpNet::from(ip));
        }
        self.error(
            v.span(),
            path,
            format!("{s:?} is not a network"),
            Some("a CIDR such as \"10.0.0.0/8\" or \"2001:db8::/32\", or one address"),
        );
        None
    }

    /// `200`, `"200-399"` or `"2xx"`.
    pub(crate) fn status_range(&mut self, v: &S<Scalar>, path: &str) -> Option<StatusRange> {
        const EXPECTED: &str = "a status (200), a range (\"200-399\") or a class (\"2xx\")";
        let parsed = match v.get_ref() {
            Scalar::Int(n) => u16::try_from(*n)
                .ok()
                .map(|s| StatusRange { min: s, max: s }),
            Scalar::Str(s) => parse_status_range(s),
            _ => None,
        };
        match parsed {
            Some(r)
                if (100..=599).contains(&r.min)
                    && (100..=599).contains(&r.max)
                    && r.min <= r.max =>
            {
                Some(r)
            }
            _ => {
                self.error(
                    v.span(),
                    path,
                    format!("{} is not a status range", v.get_ref()),
                    Some(EXPECTED),
                );
                None
            }
        }
    }

    /// Requires `key` to be absent; used for keys that only apply to some kinds.
    pub(crate) fn not_here<T>(&mut self, value: &Option<S<T>>, path: &str, key: &str, why: &str) {
        if let Some(v) = value {
            self.error(
                v.span(),
                join_key(path, key),
                format!("`{key}` {why}"),
                None,
            );
        }
    }

    pub(crate) fn span_or(
        &self,
        value: &Option<S<impl Sized>>,
        fallback: &Range<usize>,
    ) -> Range<usize> {
        value.as_ref().map_or(fallback.clone(), |v| v.span())
    }
}

/// What a [`WordOrPart`] turned out to be.
pub(crate) enum Choice {
    Word(String),
    /// (`header` | `cookie` | `query`, the name given)
    Part(&'static str, String),
}

impl Checker<'_> {
    /// A word from `words`, or a one-key table whose key is one of `parts`.
    pub(crate) fn word_or_part(
        &mut self,
        v: &S<WordOrPart>,
        path: &str,
        words: &[&str],
        parts: &[&'static str],
    ) -> Option<Choice> {
        let expected = {
            let mut all: Vec<String> = words.iter().map(|w| format!("\"{w}\"")).collect();
            all.extend(parts.iter().map(|p| format!("{{ {p} = \"…\" }}")));
            format!("one of {}", all.join(", "))
        };
        match v.get_ref() {
            WordOrPart::Word(w) if words.contains(&w.as_str()) => Some(Choice::Word(w.clone())),
            WordOrPart::Word(w) => {
                self.error(
                    v.span(),
                    path,
                    format!("unknown value {w:?}"),
                    Some(&expected),
                );
                None
            }
            WordOrPart::Part(part) => {
                let given: Vec<(&'static str, &String)> = [
                    ("header", &part.header),
                    ("cookie", &part.cookie),
                    ("query", &part.query),
                ]
                .into_iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
                .collect();
                match given.as_slice() {
                    [(kind, name)] if parts.contains(kind) && !name.is_empty() => {
                        Some(Choice::Part(kind, (*name).clone()))
                    }
                    [(kind, _)] if !parts.contains(kind) => {
                        self.error(
                            v.span(),
                            join_key(path, kind),
                            format!("`{kind}` is not allowed here"),
                            Some(&expected),
                        );
                        None
                    }
                    _ => {
                        self.error(
                            v.span(),
                            path,
                            "a part table holds exactly one non-empty key",
                            Some(&expected),
                        );
                        None
                    }
                }
            }
        }
    }
}

fn parse_status_range(s: &str) -> Option<StatusRange> {
    let s = s.trim();
    if let Some(class) = s.strip_suffix("xx") {
        let c: u16 = class.parse().ok()?;
        return Some(StatusRange {
            min: c * 100,
            max: c * 100 + 99,
        });
    }
    if let Some((a, b)) = s.split_once('-') {
        return Some(StatusRange {
            min: a.trim().parse().ok()?,
            max: b.trim().parse().ok()?,
        });
    }
    let n: u16 = s.parse().ok()?;
    Some(StatusRange { min: n, max: n })
}

/// Checks a DNS name (relative or absolute) and returns it lower-cased.
pub(crate) fn dns_name_ok(name: &str) -> bool {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() || trimmed.len() > 253 {
        return false;
    }
    trimmed.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '*')
    })
}
