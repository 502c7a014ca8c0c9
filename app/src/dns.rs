//! The DNS side of a node: the service (one per node), its runtime (created
//! with the first `dns` listener, `dns.threads` workers), its listeners, and
//! the site health probes (HTTP, through the proxy's prober; results go to
//! the service's site states).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use edge_config::SiteHealth;
use edge_dns::{BoundDns, DnsListener, DnsService, DnsState, ReadyDns};
use parking_lot::Mutex;
use tokio::task::JoinHandle;

pub struct DnsNode {
    pub service: Arc<DnsService>,
    runtime: OnceLock<&'static tokio::runtime::Runtime>,
    listeners: Mutex<HashMap<String, DnsListener>>,
    probes: Mutex<Vec<JoinHandle<()>>>,
    /// What the probes learn of nodes beyond health (steering).
    pub nodes: Arc<crate::steering::Nodes>,
}

impl DnsNode {
    pub fn new(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            service: DnsService::new(registry)?,
            runtime: OnceLock::new(),
            listeners: Mutex::new(HashMap::new()),
            probes: Mutex::new(Vec::new()),
            nodes: Arc::default(),
        })
    }

    /// The DNS runtime, started on first use (it lives as long as the process).
    fn runtime(&self, threads: usize) -> std::io::Result<&'static tokio::runtime::Runtime> {
        if let Some(rt) = self.runtime.get() {
            return Ok(rt);
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("edge-dns")
            .enable_all()
            .build()?;
        Ok(*self.runtime.get_or_init(|| Box::leak(Box::new(rt))))
    }

    /// Readies new `dns` listeners: the DNS runtime is started if it is
    /// not yet, and their sockets registered with it. What can fail is here.
    pub fn prepare(&self, bind: Vec<BoundDns>, threads: usize) -> std::io::Result<Vec<ReadyDns>> {
        if bind.is_empty() {
            return Ok(Vec::new());
        }
        let rt = self.runtime(threads)?;
        bind.into_iter()
            .map(|b| ReadyDns::prepare(b, rt.handle()))
            .collect()
    }

    /// Commits a generation: its state, listeners to stop and to start.
    /// Cannot fail: [`Self::prepare`] did what could.
    pub fn commit(
        &self,
        state: DnsState,
        remove: &[String],
        ready: Vec<ReadyDns>,
    ) -> Vec<(String, SocketAddr)> {
        // RFC 1996: secondaries hear of a zone whose serial changed.
        let notify = edge_dns::transfer::notifications(&self.service.state(), &state);
        self.service.install(state);
        if let Some(rt) = self.runtime.get() {
            for (zone, message, targets) in notify {
                rt.spawn(edge_dns::transfer::notify(zone, message, targets));
            }
        }
        let mut listeners = self.listeners.lock();
        for name in remove {
            listeners.remove(name);
        }
        let mut started = Vec::new();
        for r in ready {
            let l = r.serve(self.service.clone());
            started.push((l.name.clone(), l.local_addr));
            listeners.insert(l.name.clone(), l);
        }
        started
    }

    /// New descriptors of every `dns` listener's sockets (TCP, then UDP),
    /// by listener name, for a binary upgrade.
    pub fn sockets(&self) -> Vec<(String, crate::handover::Socket)> {
        let mut out = Vec::new();
        for (name, l) in self.listeners.lock().iter() {
            match l.sockets() {
                Ok((tcp, udp)) => {
                    out.push((name.clone(), crate::handover::Socket::Tcp(tcp)));
                    out.extend(
                        udp.into_iter()
                            .map(|u| (name.clone(), crate::handover::Socket::Udp(u))),
                    );
                }
                Err(e) => {
                    tracing::error!(listener = %name, error = %e, "cannot duplicate a dns socket")
                }
            }
        }
        out
    }

    /// Stops every `dns` listener reading and accepting (a drain, or a new
    /// process took the sockets over); returns once none does. Open TCP
    /// connections close after the query they are answering.
    pub async fn stop_serving(&self) {
        let tasks: Vec<JoinHandle<()>> = self
            .listeners
            .lock()
            .values_mut()
            .flat_map(DnsListener::stop_serving)
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Returns once no DNS TCP connection is open.
    pub async fn wait_idle(&self) {
        let listeners: Vec<_> = self.listeners.lock().keys().cloned().collect();
        for name in listeners {
            let slots = self.listeners.lock().get(&name).map(DnsListener::idle);
            if let Some(idle) = slots {
                idle.await;
            }
        }
    }

    /// The address of a `dns` listener (the first by name).
    pub fn first_address(&self) -> Option<SocketAddr> {
        let listeners = self.listeners.lock();
        let mut names: Vec<&String> = listeners.keys().collect();
        names.sort();
        names
            .first()
            .and_then(|n| listeners.get(*n))
            .map(|l| l.local_addr)
    }

    /// Starts the probes of the current generation's sites on `runtime`,
    /// replacing the previous ones.
    pub fn start_probes(&self, runtime: &tokio::runtime::Handle) {
        let state = self.service.state();
        let mut tasks = Vec::new();
        let urls: Vec<String> = state
            .site_health
            .iter()
            .flatten()
            .flat_map(|h| h.urls.iter().cloned())
            .collect();
        self.nodes.retain(&urls);
        for ((site, health), site_state) in state
            .sites
            .iter()
            .zip(&state.site_health)
            .zip(&state.site_states)
        {
            let Some(health) = health else { continue };
            for (i, url) in health.urls.iter().enumerate() {
                let Some(target) = Target::parse(url) else {
                    continue;
                };
                tasks.push(runtime.spawn(probe_loop(
                    Probe {
                        site: site.name.clone(),
                        node: i,
                        url: url.clone(),
                        target,
                        health: health.clone(),
                        marks: state.shedding,
                    },
                    site_state.clone(),
                    self.nodes.clone(),
                )));
            }
        }
        let old = std::mem::replace(&mut *self.probes.lock(), tasks);
        for t in old {
            t.abort();
        }
    }
}

/// A probed URL: `http://host:port/path`.
struct Target {
    authority: String,
    host: String,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Option<Target> {
        let rest = url.strip_prefix("http://")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let host = edge_config::HostPort::parse(authority).ok()?;
        Some(Target {
            authority: format!("{}:{}", host.host, host.port),
            host: authority.to_string(),
            path: path.to_string(),
        })
    }
}

/// Why a probe failed; `reported`: the node itself says it cannot serve
/// (its `/site/state`), which takes the node down at once, whatever `fall`.
struct Failed {
    why: String,
    reported: bool,
}

impl From<String> for Failed {
    fn from(why: String) -> Self {
        Failed {
            why,
            reported: false,
        }
    }
}

/// What a passing probe of a node's `/site/state` says of it.
#[derive(Default)]
struct Probed {
    utilization: Option<f64>,
    name: Option<String>,
    url: Option<String>,
    digest_generation: Option<u64>,
    addr: Option<SocketAddr>,
}

/// Probes once. A node's `/site/state` answers with its own view: not
/// serving (no usable backend, not ready) is a failure; its utilization,
/// name, URL and digest generation are returned.
async fn probe_once(target: &Target, health: &SiteHealth) -> Result<Probed, Failed> {
    let addr = tokio::net::lookup_host(&target.authority)
        .await
        .map_err(|e| format!("resolve {}: {e}", target.authority))?
        .next()
        .ok_or_else(|| format!("{} has no address", target.authority))?;
    let (status, body) =
        edge_proxy::pool::health::http_get(addr, &target.host, &target.path).await?;
    if !health.expect_status.contains(status) {
        return Err(format!(
            "status {status}, expected {}-{}",
            health.expect_status.min, health.expect_status.max
        )
        .into());
    }
    if !target.path.ends_with("/site/state") {
        return Ok(Probed::default());
    }
    let state: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("/site/state is not JSON: {e}"))?;
    // Only an explicit `"serving": true` passes: a 200 with other JSON
    // (`{}`, `[]`, `"serving": "yes"`) is not a node's state.
    let serving = state.get("serving").and_then(serde_json::Value::as_bool);
    if serving.is_none() {
        return Err(format!(
            "/site/state has no boolean \"serving\": {:?}",
            body.trim().chars().take(80).collect::<String>()
        )
        .into());
    }
    if serving == Some(false) {
        return Err(Failed {
            why: format!(
                "the node reports it cannot serve: {}",
                state["why"].as_str().unwrap_or("no reason given")
            ),
            reported: true,
        });
    }
    let text = |v: &serde_json::Value| v.as_str().filter(|s| s.len() <= 512).map(str::to_string);
    Ok(Probed {
        utilization: state["utilization"]
            .as_f64()
            .filter(|u| u.is_finite() && *u >= 0.0),
        name: text(&state["node"]),
        url: text(&state["url"]).and_then(|u| node_base(&u)),
        digest_generation: state["digest"]["generation"].as_u64(),
        addr: Some(addr),
    })
}

/// A node's base URL as its `/site/state` says it, as steering answers
/// use it (a prefix of every URL they give, and a `Location`): `http` or
/// `https`, a host, no user part, path, query or fragment; normalized
/// (host lower-case, default port and trailing `/` dropped, non-ASCII
/// encoded). `None` for anything else: a URL with a CR or LF, a path, a
/// user, would make answers that are not the node's (or no answer).
fn node_base(text: &str) -> Option<String> {
    if text.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return None;
    }
    let u = url::Url::parse(text).ok()?;
    let plain = matches!(u.scheme(), "http" | "https")
        && u.host_str().is_some_and(|h| !h.is_empty())
        && u.username().is_empty()
        && u.password().is_none()
        && u.path() == "/"
        && u.query().is_none()
        && u.fragment().is_none();
    plain.then(|| u.as_str().trim_end_matches('/').to_string())
}

/// One node's probe: its site, index, health URL and settings.
struct Probe {
    site: String,
    node: usize,
    url: String,
    target: Target,
    health: SiteHealth,
    /// `[dns.shedding]`.
    marks: edge_config::Shedding,
}

/// A digest fetch, aborted when dropped.
struct Fetch(JoinHandle<()>);

impl Drop for Fetch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Fetches a node's digest into `nodes` (or why it could not be), within
/// its own deadline, longer than a probe's: a digest can be large.
async fn fetch_digest(
    nodes: Arc<crate::steering::Nodes>,
    site: String,
    url: String,
    addr: SocketAddr,
    host: String,
    path: String,
    timeout: std::time::Duration,
) {
    let got = tokio::time::timeout(
        timeout.max(std::time::Duration::from_secs(10)),
        crate::steering::fetch_digest(addr, &host, &path),
    )
    .await
    .unwrap_or_else(|_| Err("the digest took too long".into()));
    if let Err(e) = &got {
        tracing::warn!(site = %site, node = %url, error = %e, "cannot fetch a node's digest; its previous one is kept");
    }
    nodes.fetched(&url, got);
}

async fn probe_loop(
    probe: Probe,
    state: Arc<edge_dns::health::SiteState>,
    nodes: Arc<crate::steering::Nodes>,
) {
    let Probe {
        site,
        node,
        url,
        target,
        health,
        marks,
    } = probe;
    // The digest fetch in flight, if any (it ends with this loop).
    let mut fetch: Option<Fetch> = None;
    // Spread the first probes over the interval.
    tokio::time::sleep(health.interval.mul_f64(fastrand::f64() * 0.5)).await;
    loop {
        let result = match tokio::time::timeout(health.timeout, probe_once(&target, &health)).await
        {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", health.timeout).into()),
        };
        let (passed, fall, error, utilization) = match result {
            Ok(p) => {
                // After a failed fetch: ten polls, 1 s to a minute.
                let retry = (health.interval * 10).clamp(
                    std::time::Duration::from_secs(1),
                    std::time::Duration::from_secs(60),
                );
                let wanted = nodes.saw(&url, p.name, p.url, p.digest_generation, retry);
                let idle = fetch.as_ref().is_none_or(|f| f.0.is_finished());
                if let (true, true, Some(addr)) = (wanted, idle, p.addr) {
                    // Beside the probes, never in their way: a digest can
                    // be large, or a node slow to send it, and health is
                    // read on time meanwhile. One fetch at a time.
                    fetch = Some(Fetch(tokio::spawn(fetch_digest(
                        nodes.clone(),
                        site.clone(),
                        url.clone(),
                        addr,
                        target.host.clone(),
                        target.path.clone(),
                        health.timeout,
                    ))));
                }
                (true, health.fall, None, p.utilization)
            }
            Err(Failed { why, reported }) => (
                false,
                if reported { 1 } else { health.fall },
                Some(why),
                None,
            ),
        };
        state.set_utilization(node, utilization);
        if let Some(share) = state.steer(health.interval, &marks) {
            tracing::info!(
                site = %site,
                shed_per_mille = share,
                utilization = state.utilization().unwrap_or(0.0),
                "site load: share of its clients answered with the next site"
            );
        }
        if let Some(up) = state.report(node, passed, health.rise, fall, error.clone()) {
            if up {
                tracing::info!(site = %site, "site is up: a node passes its checks");
            } else {
                tracing::warn!(site = %site, error = error.as_deref().unwrap_or(""), "site is down: no node passes its checks; withdrawn from DNS answers");
            }
        }
        let jitter = health.interval.mul_f64(fastrand::f64() * 0.1);
        tokio::time::sleep(health.interval + jitter).await;
    }
}

#[cfg(test)]
mod tests {
    use super::node_base;

    #[test]
    fn a_node_base_url_is_plain_and_normalized() {
        let b = |t: &str| node_base(t);
        assert_eq!(
            b("http://10.0.0.2:8080").as_deref(),
            Some("http://10.0.0.2:8080")
        );
        assert_eq!(
            b("http://10.0.0.2:8080/").as_deref(),
            Some("http://10.0.0.2:8080")
        );
        assert_eq!(
            b("HTTPS://Edge-1.Example:443/").as_deref(),
            Some("https://edge-1.example")
        );
        assert_eq!(
            b("http://[2001:db8::1]:80").as_deref(),
            Some("http://[2001:db8::1]")
        );
        for bad in [
            "http://x/\r\nSet-Cookie: a=1",
            "http://x\r\n.example",
            "http://x /",
            "http://x/path",
            "http://x/?q",
            "http://x/#f",
            "http://u:p@x",
            "ftp://x",
            "javascript:alert(1)",
            "http://",
            "/relative",
        ] {
            assert_eq!(b(bad), None, "{bad:?}");
        }
    }
}
