//! What changed between two configs, section by section, and what the change
//! needs: new sockets, or a restart for what cannot change in place.

use std::fmt;

use serde::Serialize;

use crate::model::Config;

/// Items of a named section that were added, removed or changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NamedChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl NamedChanges {
    fn between<T: PartialEq>(old: &[T], new: &[T], name: impl Fn(&T) -> &str) -> Self {
        let mut out = NamedChanges::default();
        for n in new {
            match old.iter().find(|o| name(o) == name(n)) {
                None => out.added.push(name(n).to_string()),
                Some(o) if o != n => out.changed.push(name(n).to_string()),
                Some(_) => {}
            }
        }
        for o in old {
            if !new.iter().any(|n| name(n) == name(o)) {
                out.removed.push(name(o).to_string());
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

impl fmt::Display for NamedChanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .added
            .iter()
            .map(|n| format!("+{n}"))
            .chain(self.removed.iter().map(|n| format!("-{n}")))
            .chain(self.changed.iter().map(|n| format!("~{n}")))
            .collect();
        f.write_str(&parts.join(" "))
    }
}

/// The difference between a running config and a new one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConfigDiff {
    pub server: bool,
    pub admin: bool,
    pub site: bool,
    pub listeners: NamedChanges,
    /// Listeners (by name) whose address or kind changed: they need a new socket.
    pub rebind: Vec<String>,
    pub pools: NamedChanges,
    pub routes: NamedChanges,
    /// Same routes, different evaluation order.
    pub route_order: bool,
    pub cache: bool,
    pub rate_limits: NamedChanges,
    pub redis: bool,
    pub dns: bool,
    pub resolver: bool,
    /// Changes that only take effect after a restart, with why.
    pub restart_required: Vec<String>,
}

impl ConfigDiff {
    pub fn between(old: &Config, new: &Config) -> Self {
        let listeners = NamedChanges::between(&old.listeners, &new.listeners, |l| &l.name);
        let rebind = new
            .listeners
            .iter()
            .filter(|n| {
                old.listener(&n.name)
                    .is_some_and(|o| o.address != n.address || o.kind_name() != n.kind_name())
            })
            .map(|l| l.name.clone())
            .collect();
        let routes = NamedChanges::between(&old.routes, &new.routes, |r| &r.name);
        let order = |c: &Config| c.routes.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        let mut restart_required = Vec::new();
        if old.server.threads != new.server.threads {
            restart_required.push(format!(
                "server.threads {} → {} (worker threads are fixed at start)",
                old.server.threads, new.server.threads
            ));
        }
        if old.server.work_stealing != new.server.work_stealing {
            restart_required.push("server.work_stealing (runtimes are built at start)".to_string());
        }
        if old.server.log_format != new.server.log_format {
            restart_required.push("server.log_format (logging is set up at start)".to_string());
        }
        if old.admin.listen != new.admin.listen {
            restart_required.push(format!(
                "admin.listen {} → {} (the admin socket is bound at start)",
                old.admin.listen, new.admin.listen
            ));
        }
        if old.dns.as_ref().map(|d| d.threads) != new.dns.as_ref().map(|d| d.threads) {
            restart_required.push("dns.threads (worker threads are fixed at start)".to_string());
        }
        ConfigDiff {
            server: old.server != new.server,
            admin: old.admin != new.admin,
            site: old.site != new.site,
            listeners,
            rebind,
            pools: NamedChanges::between(&old.pools, &new.pools, |p| &p.name),
            route_order: routes.is_empty() && order(old) != order(new),
            routes,
            cache: old.cache != new.cache,
            rate_limits: NamedChanges::between(&old.rate_limits, &new.rate_limits, |r| &r.name),
            redis: old.redis != new.redis,
            dns: old.dns != new.dns,
            resolver: old.resolver != new.resolver,
            restart_required,
        }
    }

    /// Whether applying this needs sockets the node does not have yet.
    pub fn needs_new_listeners(&self) -> bool {
        !self.listeners.added.is_empty() || !self.rebind.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        *self == ConfigDiff::default()
    }
}

impl fmt::Display for ConfigDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no changes");
        }
        let mut parts = Vec::new();
        for (flag, name) in [
            (self.server, "server"),
            (self.admin, "admin"),
            (self.site, "site"),
            (self.cache, "cache"),
            (self.redis, "redis"),
            (self.dns, "dns"),
            (self.resolver, "resolver"),
            (self.route_order, "route order"),
        ] {
            if flag {
                parts.push(name.to_string());
            }
        }
        for (changes, name) in [
            (&self.listeners, "listeners"),
            (&self.pools, "pools"),
            (&self.routes, "routes"),
            (&self.rate_limits, "rate limits"),
        ] {
            if !changes.is_empty() {
                parts.push(format!("{name} {changes}"));
            }
        }
        f.write_str(&parts.join("; "))?;
        if !self.restart_required.is_empty() {
            write!(
                f,
                " (needs a restart: {})",
                self.restart_required.join(", ")
            )?;
        }
        Ok(())
    }
}
