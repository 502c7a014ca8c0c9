//! `edge demo`: the synthetic origin, one edge node in front of it and the
//! admin API, on loopback, from an embedded config; two sites' cache nodes
//! (`ams-1` on 127.0.0.11, `nyc-1` on 127.0.0.12, child `edge run`
//! processes) that the demo node's GeoDNS polls and steers to; prints what
//! to try.

use std::net::SocketAddr;

use anyhow::Context;
use edge_config::{AdminToken, HostPort, Secret};
use edge_origin::{Origin, OriginConfig};

const CONFIG: &str = include_str!("../../config/examples/demo.toml");

/// `preferred` if it can be bound now, else port 0 on the same address.
fn free_or_any(preferred: SocketAddr) -> SocketAddr {
    match std::net::TcpListener::bind(preferred) {
        Ok(_) => preferred,
        Err(_) => SocketAddr::new(preferred.ip(), 0),
    }
}

/// A free port on `ip`: `preferred` if it can be bound now, else one the
/// kernel picks (bound and released: the child binds it a moment later).
fn free_port(ip: [u8; 4], preferred: u16) -> SocketAddr {
    let want = SocketAddr::from((ip, preferred));
    if std::net::TcpListener::bind(want).is_ok() {
        return want;
    }
    std::net::TcpListener::bind(SocketAddr::from((ip, 0)))
        .and_then(|l| l.local_addr())
        .unwrap_or(want)
}

/// One cache node of a site: a child `edge run` process, stopped (killed)
/// when the demo ends.
struct SiteNode {
    site: &'static str,
    name: &'static str,
    web: SocketAddr,
    admin: SocketAddr,
    child: std::process::Child,
}

/// The demo's site nodes; dropping them stops them.
#[derive(Default)]
struct SiteNodes(Vec<SiteNode>);

impl Drop for SiteNodes {
    fn drop(&mut self) {
        for n in &mut self.0 {
            let _ = n.child.kill();
            let _ = n.child.wait();
        }
    }
}

fn site_node_config(
    site: &str,
    name: &str,
    web: SocketAddr,
    admin: SocketAddr,
    origin: SocketAddr,
) -> String {
    format!(
        r#"# edge demo: cache node {name} of site {site}
[server]
threads = 1
shutdown_delay = "0s"
access_log = false

[admin]
listen = "{admin}"

[[listener]]
name = "edge"
kind = "http"
address = "{web}"

[[pool]]
name = "origin"
backends = [{{ address = "{origin}" }}]

[[route]]
name = "video"
pool = "origin"
[route.cache]

[cache]
ram_size = "64 MiB"

[site]
name = "{site}"
node = "{name}"
url = "http://{web}"
capacity = {{ egress = "1 Gbit/s", connections = 1000 }}
digest = {{ refresh = "2s" }}
"#
    )
}

/// Starts `ams-1` and `nyc-1` (logs and configs in `dir`).
fn start_site_nodes(dir: &std::path::Path, origin: SocketAddr) -> anyhow::Result<SiteNodes> {
    let exe = std::env::current_exe().context("finding the edge binary")?;
    let mut nodes = SiteNodes::default();
    for (site, name, ip) in [
        ("ams", "ams-1", [127, 0, 0, 11]),
        ("nyc", "nyc-1", [127, 0, 0, 12]),
    ] {
        let web = free_port(ip, 8080);
        let admin = free_port(ip, 9901);
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, site_node_config(site, name, web, admin, origin))
            .with_context(|| format!("writing {}", config.display()))?;
        let log = std::fs::File::create(dir.join(format!("{name}.log")))
            .context("creating a site node's log")?;
        let child = std::process::Command::new(&exe)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().context("a site node's log")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting site node {name}"))?;
        nodes.0.push(SiteNode {
            site,
            name,
            web,
            admin,
            child,
        });
    }
    Ok(nodes)
}

fn random_token() -> String {
    (0..32).map(|_| fastrand::alphanumeric()).collect()
}

/// The variable the demo's `/paid/` route reads its signing key from.
const URL_KEY_ENV: &str = "EDGE_DEMO_URL_KEY";

pub fn run() -> anyhow::Result<()> {
    // Before any thread starts: a key for this run's signed URLs.
    if std::env::var_os(URL_KEY_ENV).is_none() {
        std::env::set_var(URL_KEY_ENV, random_token());
    }
    let mut config = edge_config::parse_str(CONFIG, "demo.toml", std::path::Path::new("."))
        .map_err(|d| anyhow::anyhow!("the embedded demo config is invalid:\n{d}"))?;
    let control = crate::server::control_runtime()?;

    let origin_addr = free_or_any(SocketAddr::from(([127, 0, 0, 1], 9000)));
    let origin = control
        .block_on(
            Origin::new(OriginConfig {
                name: "demo-origin".into(),
                ..OriginConfig::default()
            })
            .spawn(origin_addr),
        )
        .context("starting the demo origin")?;
    crate::runtime::announce("origin", "origin", origin.addr());

    for pool in &mut config.pools {
        for b in &mut pool.backends {
            b.address = HostPort {
                host: origin.addr().ip().to_string(),
                port: origin.addr().port(),
            };
        }
    }
    for l in &mut config.listeners {
        l.address = free_or_any(l.address);
    }
    config.admin.listen = free_or_any(config.admin.listen);
    // A disk cache of this run's own: another demo may be running.
    let demo_cache = std::env::temp_dir().join(format!("edge-demo-cache-{}", std::process::id()));
    let sites_dir = std::env::temp_dir().join(format!("edge-demo-sites-{}", std::process::id()));
    std::fs::create_dir_all(&sites_dir)
        .with_context(|| format!("creating {}", sites_dir.display()))?;
    let site_nodes = start_site_nodes(&sites_dir, origin.addr())?;
    // The GeoDNS polls each site's node: its health, load and digest.
    if let Some(dns) = &mut config.dns {
        for n in &site_nodes.0 {
            if let Some(site) = dns.sites.iter_mut().find(|s| s.name == n.site) {
                site.health = Some(edge_config::SiteHealth {
                    urls: vec![format!("http://{}/site/state", n.admin)],
                    interval: std::time::Duration::from_secs(1),
                    timeout: std::time::Duration::from_secs(1),
                    rise: 1,
                    fall: 3,
                    expect_status: edge_config::StatusRange { min: 200, max: 299 },
                });
            }
        }
    }
    if let Some(disk) = &mut config.cache.disk {
        disk.path = demo_cache.clone();
    }
    let token = random_token();
    config.admin.token = Some(AdminToken::Value(Secret::new(token.clone())));

    // The edge port is only known once bound: learn it from the listener
    // control after apply, inside run_node; print the guide from here using
    // the addresses chosen above (port 0 is resolved by reading them back).
    let edge_hint = config.listeners.first().map(|l| l.address);
    let admin_hint = config.admin.listen;
    let guide = Guide {
        origin: origin.addr(),
        edge: edge_hint,
        admin: admin_hint,
        token,
        signing: crate::sign::Signing::new(&config)?,
        sites: site_nodes
            .0
            .iter()
            .map(|n| (n.site, n.name, n.web, n.admin))
            .collect(),
    };
    // Keep the origin alive for as long as the node runs.
    let result = crate::server::run_node_with(
        config,
        control,
        crate::handover::Inherited::default(),
        move |edge, admin, dns| guide.print(edge, admin, dns),
    );
    drop(site_nodes);
    drop(origin);
    let _ = std::fs::remove_dir_all(&demo_cache);
    let _ = std::fs::remove_dir_all(&sites_dir);
    result
}

struct Guide {
    origin: SocketAddr,
    edge: Option<SocketAddr>,
    admin: SocketAddr,
    token: String,
    signing: crate::sign::Signing,
    /// (site, node, web, admin) of the site nodes.
    sites: Vec<(&'static str, &'static str, SocketAddr, SocketAddr)>,
}

impl Guide {
    fn print(&self, edge: Option<SocketAddr>, admin: SocketAddr, dns: Option<SocketAddr>) {
        let edge = edge
            .or(self.edge)
            .map_or_else(|| "?".to_string(), |a| a.to_string());
        let admin = if admin.port() == 0 { self.admin } else { admin };
        let o = self.origin;
        let signed = self
            .signing
            .sign(&crate::sign::Request {
                url: &format!("http://{edge}/paid/vod/bbb/master.m3u8"),
                ttl: "24h",
                route: None,
                client_ip: None,
                key: None,
                prefix: None,
            })
            .map_or_else(|e| format!("(cannot sign: {e})"), |s| s.url);
        let query = signed.split_once('?').map_or("", |(_, q)| q).to_string();
        let site_lines: String = self
            .sites
            .iter()
            .map(|(site, name, web, admin)| {
                format!("  {name:<7} http://{web}   cache node of site {site} (admin http://{admin}/site/state)\n")
            })
            .collect();
        let ams = self
            .sites
            .first()
            .map_or_else(|| "127.0.0.11:8080".to_string(), |s| s.2.to_string());
        crate::out::say!(
            r#"
edge demo is running
  origin  http://{o}         synthetic HLS/DASH origin (stats: /_origin/stats)
  edge    http://{edge}         an edge node proxying to it
  admin   http://{admin}         admin API (token: {token})
  dashboard  http://{admin}/     live dashboard: open it in a browser, paste the token for the buttons
{site_lines}
try:
  curl -s http://{edge}/vod/bbb/master.m3u8
  curl -s http://{edge}/vod/bbb/high/index.m3u8 | head
  curl -s -o /dev/null -w '%{{http_code}} %{{size_download}} bytes\n' http://{edge}/vod/bbb/high/seg_0.ts
  curl -s -D - -o /dev/null http://{edge}/vod/bbb/high/seg_0.ts | grep -i x-cache    # run twice: MISS, then HIT RAM
  curl -s -D - -o /dev/null -H 'Range: bytes=0-187' http://{edge}/vod/bbb/low/seg_1.ts
  curl -s http://{edge}/live/news/mid/index.m3u8
  curl -s http://{admin}/cache
  curl -s http://{admin}/metrics | grep -E 'edge_(http_requests|cache_requests)_total'
  curl -s http://{o}/_origin/stats
  curl -s -X POST -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \
       -d '{{"prefix": "{edge_host}/vod/bbb/"}}' http://{admin}/cache/purge
  curl -s -X POST -H 'Authorization: Bearer {token}' http://{admin}/reload
GeoDNS on {dns} (UDP and TCP): the nearest of three sites, by client subnet or source address
  dig @{dns_ip} -p {dns_port} video.demo.edge. +short                          # unknown client: the default, ams (127.0.0.11)
  dig @{dns_ip} -p {dns_port} video.demo.edge. +subnet=127.0.2.0/24 +short     # a US subnet: nyc (127.0.0.12)
  dig @{dns_ip} -p {dns_port} -b 127.0.3.1 video.demo.edge. +short             # an Asian source: sin (127.0.0.13)
  curl -s http://{admin}/dns/sites
  curl -s -X POST -H 'Authorization: Bearer {token}' http://{admin}/dns/sites/sin/drain   # then ask again
one control loop (the GeoDNS polls each site node's /site/state: health, load, a digest of what it holds):
  curl -s -H 'Host: video.demo.edge' http://{ams}/vod/bbb/high/seg_3.ts -o /dev/null   # ams-1 caches a segment
  curl -s --interface 127.0.1.1 'http://{edge}/steer?url=http://video.demo.edge/vod/bbb/high/seg_3.ts'   # a Paris client: ams-1 holds it
  curl -s -D - -o /dev/null --interface 127.0.2.1 -H 'Host: video.demo.edge' http://{edge}/go/vod/bbb/high/seg_3.ts   # a Boston client: 302 to nyc-1
  edge explain -c config/examples/demo.toml --client 127.0.1.1 --host video.demo.edge --url /vod/bbb/high/seg_3.ts
  curl -s 'http://{admin}/explain?client=127.0.0.1&ecs=127.0.2.0/24&host=video.demo.edge&format=text'
signed URLs (/paid/ needs a token; one covers the title's directory, valid 24 h):
  curl -s -o /dev/null -w '%{{http_code}}\n' http://{edge}/paid/vod/bbb/master.m3u8    # 403 forbidden: missing
  curl -s '{signed}'
  curl -s -o /dev/null -w '%{{http_code}}\n' 'http://{edge}/paid/vod/bbb/high/seg_0.ts?{query}'
  {URL_KEY_ENV}={url_key} edge sign -c config/examples/demo.toml http://{edge}/paid/vod/sintel/master.m3u8
Low-Latency HLS (parts of 0.5 s, blocking reloads held and shared at the edge):
  curl -s http://{edge}/ll/news/low/index.m3u8 | tail -4                       # the parts and the preload hint
  curl -s "http://{edge}/ll/news/low/index.m3u8?$(curl -s http://{edge}/ll/news/low/index.m3u8 | sed -n 's/.*PRELOAD-HINT.*seg_\([0-9]*\)\.\([0-9]*\)\.ts.*/_HLS_msn=\1\&_HLS_part=\2/p')" | tail -3   # held until that part exists
  play it: ffplay http://{edge}/ll/news/master.m3u8   (Safari, or hls.js with lowLatencyMode)
play it: ffplay http://{edge}/vod/bbb/master.m3u8   (or open the URL in VLC or Safari)
Ctrl-C stops everything.
"#,
            token = self.token,
            url_key = std::env::var(URL_KEY_ENV).unwrap_or_default(),
            edge_host = edge.split(':').next().unwrap_or("127.0.0.1"),
            dns = dns.map_or_else(|| "-".to_string(), |a| a.to_string()),
            dns_ip = dns.map_or_else(|| "127.0.0.1".to_string(), |a| a.ip().to_string()),
            dns_port = dns.map_or(5353, |a| a.port()),
        );
    }
}
