//! A short human summary of what a config defines, for `edge check`.

use std::fmt;

use crate::model::{Config, ListenerKind, RouteAction};

/// `Display`s a few lines saying what a config defines.
pub struct Summary<'a>(pub &'a Config);

fn size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (unit, n) in UNITS {
        if bytes >= n && bytes.is_multiple_of((n / 1024).max(1)) {
            let v = bytes as f64 / n as f64;
            return if v.fract() == 0.0 {
                format!("{v:.0} {unit}")
            } else {
                format!("{v:.1} {unit}")
            };
        }
    }
    format!("{bytes} B")
}

fn plural(n: usize, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.0;
        writeln!(f, "{}:", plural(c.listeners.len(), "listener"))?;
        for l in &c.listeners {
            let extra = match &l.kind {
                ListenerKind::Https(h) => match &h.acme {
                    Some(a) if h.certificates.is_empty() => {
                        format!(" (ACME: {})", a.domains.join(", "))
                    }
                    Some(a) => format!(
                        " ({}, ACME: {})",
                        plural(h.certificates.len(), "certificate"),
                        a.domains.join(", ")
                    ),
                    None => format!(" ({})", plural(h.certificates.len(), "certificate")),
                },
                ListenerKind::Tcp(t) => format!(" → pool {}", t.pool),
                _ => String::new(),
            };
            writeln!(f, "  {} {} on {}{extra}", l.kind_name(), l.name, l.address)?;
        }
        writeln!(f, "{}:", plural(c.pools.len(), "pool"))?;
        for p in &c.pools {
            writeln!(
                f,
                "  {} ({}, {}{})",
                p.name,
                p.algorithm.name(),
                plural(p.backends.len(), "backend"),
                if p.health_check.is_some() {
                    ", health-checked"
                } else {
                    ""
                }
            )?;
        }
        writeln!(
            f,
            "{} (in evaluation order):",
            plural(c.routes.len(), "route")
        )?;
        for r in &c.routes {
            let action = match &r.action {
                RouteAction::Proxy { pool } => format!("→ {pool}"),
                RouteAction::Redirect { status, .. } => format!("redirect {status}"),
                RouteAction::Respond { status, .. } => format!("respond {status}"),
                RouteAction::Steer { redirect: false } => "steer (list)".to_string(),
                RouteAction::Steer { redirect: true } => "steer (redirect)".to_string(),
            };
            let cached = if r.cache.enabled { ", cached" } else { "" };
            writeln!(f, "  {} {action}{cached}", r.name)?;
        }
        let cache = &c.cache;
        write!(f, "cache: RAM {}", size(cache.ram_size))?;
        if let Some(d) = &cache.disk {
            write!(f, ", disk {} at {}", size(d.size), d.path.display())?;
        }
        writeln!(f, ", slices of {}", size(cache.slice_size))?;
        if !c.rate_limits.is_empty() {
            writeln!(f, "{}:", plural(c.rate_limits.len(), "rate limit"))?;
            for l in &c.rate_limits {
                writeln!(
                    f,
                    "  {} {} burst {} ({:?})",
                    l.name, l.rate, l.burst, l.scope
                )?;
            }
        }
        if let Some(dns) = &c.dns {
            let records: usize = dns.zones.iter().map(|z| z.records.len()).sum();
            let geo: usize = dns.zones.iter().map(|z| z.geo.len()).sum();
            writeln!(
                f,
                "dns: {}, {}, {}, {}",
                plural(dns.zones.len(), "zone"),
                plural(records, "record"),
                plural(geo, "geo name"),
                plural(dns.sites.len(), "site")
            )?;
        }
        let token = match &c.admin.token {
            Some(crate::model::AdminToken::Value(_)) => "token set".to_string(),
            Some(crate::model::AdminToken::Env(name)) => format!("token from ${name}"),
            None => "no token: mutating calls refused".to_string(),
        };
        write!(f, "admin: {} ({token})", c.admin.listen)
    }
}
