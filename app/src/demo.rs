//! `edge demo`: the synthetic origin, one edge node in front of it and the
//! admin API, on loopback, from an embedded config; prints what to try.

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
    };
    // Keep the origin alive for as long as the node runs.
    let result = crate::server::run_node_with(
        config,
        control,
        crate::handover::Inherited::default(),
        move |edge, admin, dns| guide.print(edge, admin, dns),
    );
    drop(origin);
    let _ = std::fs::remove_dir_all(&demo_cache);
    result
}

struct Guide {
    origin: SocketAddr,
    edge: Option<SocketAddr>,
    admin: SocketAddr,
    token: String,
    signing: crate::sign::Signing,
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
        crate::out::say!(
            r#"
edge demo is running
  origin  http://{o}         synthetic HLS/DASH origin (stats: /_origin/stats)
  edge    http://{edge}         an edge node proxying to it
  admin   http://{admin}         admin API (token: {token})

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
