//! The audience run: an Open-Connect-style edge on loopback, real
//! processes. Three sites of three nodes (127.0.0.11–13, .21–23, .31–33),
//! one shield (127.0.0.40) and the synthetic origin (127.0.0.50). Clients of
//! three regions, each sent to a random node of its own site (as GeoDNS
//! would), ask for a Zipf-distributed VOD catalog of `/obj/` segments ten
//! times one node's RAM, and for the newest segment of two live streams.
//! The same run again without peers (each node alone), and both without
//! the shield, for contrast.
//!
//! Each response says where it came from in its `Cache-Status` members
//! (RFC 9211; the shield's named `shield`, the nodes' `node`, the member
//! nearest the client last): the node that answered (RAM or disk hit), the
//! owner in the site (a hit there), the shield, or the origin.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::sys::{wait_port, Proc};

pub struct Params {
    /// Distinct VOD segments.
    pub objects: usize,
    pub object_bytes: usize,
    pub alpha: f64,
    /// RAM and disk of one node, and of the shield, in MiB.
    pub node_ram_mib: usize,
    pub node_disk_mib: usize,
    pub shield_ram_mib: usize,
    pub shield_disk_mib: usize,
    /// Requests before measuring (filling), then measured.
    pub warmup: usize,
    pub measured: usize,
    pub concurrency: usize,
    /// Share of requests for live segments.
    pub live_share: f64,
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            // 1 700 × 100 kB = 170 MB: ten times a node's 16 MiB.
            objects: 1_700,
            object_bytes: 100_000,
            alpha: 0.9,
            node_ram_mib: 16,
            // A site's disks hold the catalog (as an OCA's do), one
            // node's do not; the shield's do.
            node_disk_mib: 96,
            shield_ram_mib: 64,
            shield_disk_mib: 256,
            warmup: 30_000,
            measured: 30_000,
            concurrency: 24,
            live_share: 0.05,
            seed: 7,
        }
    }
}

const SITES: [(&str, u8); 3] = [("ams", 1), ("fra", 2), ("lon", 3)];
const SHIELD: &str = "127.0.0.40:8080";
const ORIGIN: &str = "127.0.0.50:9000";
const HOST: &str = "video.bench";
const LIVE: [&str; 2] = ["low", "mid"];

fn node_addr(site: u8, node: u8) -> String {
    format!("127.0.0.{}{}", site, node)
}

fn node_config(p: &Params, dir: &Path, site: &str, s: u8, n: u8, setup: Setup) -> String {
    let peering = setup.peering;
    let peers: String = if peering {
        (1..=3)
            .map(|m| {
                format!(
                    "  {{ name = \"{site}-{m}\", address = \"{}:8080\" }},\n",
                    node_addr(s, m)
                )
            })
            .collect()
    } else {
        String::new()
    };
    format!(
        r#"[server]
threads = 1
access_log = false
[admin]
listen = "{addr}:9901"
[[listener]]
name = "http"
kind = "http"
address = "{addr}:8080"
[[pool]]
name = "origin"
backends = [{{ address = "{ORIGIN}" }}]
[[pool]]
name = "shield"
backends = [{{ address = "{SHIELD}" }}]
[[route]]
name = "all"
pool = "origin"
match = {{ path_prefix = "/" }}
[route.cache]
[cache]
ram_size = "{ram} MiB"
disk_path = "{disk}"
disk_size = "{disk_mib} MiB"
status_name = "node"
[cache.video]
prefetch = 0
[site]
name = "{site}"
node = "{site}-{n}"
{shield}
keep_copies = "hot"
peer = [
{peers}]
"#,
        addr = node_addr(s, n),
        ram = p.node_ram_mib,
        disk = dir.join(format!("{site}-{n}-cache")).display(),
        disk_mib = p.node_disk_mib,
        shield = if setup.shield {
            "shield = \"shield\""
        } else {
            ""
        },
    )
}

fn shield_config(p: &Params, dir: &Path) -> String {
    format!(
        r#"[server]
threads = 1
access_log = false
[admin]
listen = "127.0.0.40:9901"
[[listener]]
name = "http"
kind = "http"
address = "{SHIELD}"
[[pool]]
name = "origin"
backends = [{{ address = "{ORIGIN}" }}]
[[route]]
name = "all"
pool = "origin"
match = {{ path_prefix = "/" }}
[route.cache]
[cache]
ram_size = "{} MiB"
disk_path = "{}"
disk_size = "{} MiB"
status_name = "shield"
[cache.video]
prefetch = 0
[site]
name = "shield"
"#,
        p.shield_ram_mib,
        dir.join("shield-cache").display(),
        p.shield_disk_mib
    )
}

/// Where a response's bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Tier {
    NodeRam,
    NodeDisk,
    Peer,
    Shield,
    Origin,
}

impl Tier {
    fn name(self) -> &'static str {
        match self {
            Tier::NodeRam => "node RAM",
            Tier::NodeDisk => "node disk",
            Tier::Peer => "peer (owner in the site)",
            Tier::Shield => "shield",
            Tier::Origin => "origin",
        }
    }
}

/// Reads the `Cache-Status` members: the last `node` member is the node
/// that answered; a `node` member before it is the owner's; then the shield's.
fn tier(cache_status: &[String], x_cache: &str) -> Tier {
    let members: Vec<&str> = cache_status
        .iter()
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .collect();
    let hit = |m: &str| m.split(';').skip(1).any(|p| p.trim() == "hit");
    let nodes: Vec<&str> = members
        .iter()
        .copied()
        .filter(|m| m.starts_with("node"))
        .collect();
    if nodes.last().is_some_and(|m| hit(m)) {
        return if x_cache.contains("DISK") {
            Tier::NodeDisk
        } else {
            Tier::NodeRam
        };
    }
    if nodes.len() >= 2 && hit(nodes[nodes.len() - 2]) {
        return Tier::Peer;
    }
    if members.iter().any(|m| m.starts_with("shield") && hit(m)) {
        return Tier::Shield;
    }
    Tier::Origin
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn uniform(x: &mut u64) -> f64 {
    (splitmix64(x) >> 11) as f64 / (1u64 << 53) as f64
}

/// Zipf(alpha) ranks 0..n by inverse CDF.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: usize, alpha: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for k in 1..=n {
            sum += 1.0 / (k as f64).powf(alpha);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Zipf(cdf)
    }

    fn sample(&self, u: f64) -> usize {
        self.0.partition_point(|c| *c < u).min(self.0.len() - 1)
    }
}

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
    by_tier: [AtomicU64; 5],
    bytes_by_tier: [AtomicU64; 5],
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

async fn get(
    client: &HttpClient,
    node: &str,
    path: &str,
) -> Result<(u16, Bytes, Vec<String>, String)> {
    let req = hyper::Request::get(format!("http://{node}:8080{path}"))
        .header(hyper::header::HOST, HOST)
        .body(Empty::new())?;
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .context("timeout")??;
    let status = resp.status().as_u16();
    let cache_status = resp
        .headers()
        .get_all("cache-status")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    let x_cache = resp
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body, cache_status, x_cache))
}

/// The newest segment a live playlist lists.
fn newest(playlist: &str) -> Option<String> {
    playlist
        .lines()
        .rev()
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
}

async fn load(p: &Params, requests: usize, seed: u64, tally: Arc<Tally>) {
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build_http();
    let zipf = Arc::new(Zipf::new(p.objects, p.alpha));
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..p.concurrency {
        let (client, zipf, next, tally) =
            (client.clone(), zipf.clone(), next.clone(), tally.clone());
        let (size, live_share) = (p.object_bytes, p.live_share);
        let mut rng = seed ^ (t as u64).wrapping_mul(0x9E37_79B9);
        tasks.push(tokio::spawn(async move {
            while (next.fetch_add(1, Ordering::Relaxed) as usize) < requests {
                let site = SITES[t % 3].1;
                let node = node_addr(site, 1 + (splitmix64(&mut rng) % 3) as u8);
                let path = if uniform(&mut rng) < live_share {
                    let r = LIVE[(splitmix64(&mut rng) % 2) as usize];
                    let playlist = format!("/live/news/{r}/index.m3u8");
                    match get(&client, &node, &playlist).await {
                        Ok((200, body, _, _)) => match newest(&String::from_utf8_lossy(&body)) {
                            Some(seg) => format!("/live/news/{r}/{seg}"),
                            None => continue,
                        },
                        _ => {
                            tally.errors.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                } else {
                    let k = zipf.sample(uniform(&mut rng));
                    format!("/obj/{k}.ts?size={size}&cc=max-age%3D86400")
                };
                match get(&client, &node, &path).await {
                    Ok((200, body, cs, xc)) => {
                        let t = tier(&cs, &xc) as usize;
                        tally.requests.fetch_add(1, Ordering::Relaxed);
                        tally.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                        tally.by_tier[t].fetch_add(1, Ordering::Relaxed);
                        tally.bytes_by_tier[t].fetch_add(body.len() as u64, Ordering::Relaxed);
                    }
                    _ => {
                        tally.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// The origin's counters: (requests, bytes, requests by path).
async fn origin_stats() -> Result<(u64, u64, BTreeMap<String, u64>)> {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let req = hyper::Request::get(format!("http://{ORIGIN}/_origin/stats")).body(Empty::new())?;
    let body = client
        .request(req)
        .await?
        .into_body()
        .collect()
        .await?
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    // A flat reading of the JSON: "requests", "bytes", then "by_path".
    let num = |key: &str| -> u64 {
        text.find(&format!("\"{key}\":"))
            .and_then(|i| {
                text[i + key.len() + 3..]
                    .trim_start()
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    };
    let mut paths = BTreeMap::new();
    if let Some(i) = text.find("\"by_path\"") {
        let rest = &text[i..];
        let inner = rest.split_once('{').map(|(_, r)| r).unwrap_or("");
        let inner = inner.split_once('}').map(|(a, _)| a).unwrap_or("");
        for entry in inner.split(',') {
            if let Some((k, v)) = entry.split_once(':') {
                let k = k.trim().trim_matches('"').to_string();
                if let Ok(v) = v.trim().parse() {
                    paths.insert(k, v);
                }
            }
        }
    }
    Ok((num("requests"), num("bytes"), paths))
}

/// One arrangement of the edge.
#[derive(Debug, Clone, Copy)]
struct Setup {
    shield: bool,
    peering: bool,
}

impl Setup {
    const ALL: [Setup; 4] = [
        Setup {
            shield: true,
            peering: true,
        },
        Setup {
            shield: true,
            peering: false,
        },
        Setup {
            shield: false,
            peering: true,
        },
        Setup {
            shield: false,
            peering: false,
        },
    ];

    fn name(self) -> String {
        format!(
            "{}, {}",
            if self.shield { "shield" } else { "no shield" },
            if self.peering {
                "peering on"
            } else {
                "peering off"
            }
        )
    }
}

struct RunResult {
    client_bytes: u64,
    requests: u64,
    errors: u64,
    origin_bytes: u64,
    origin_requests: u64,
    by_tier: [u64; 5],
    bytes_by_tier: [u64; 5],
    /// VOD objects the origin sent more than once, of those it sent.
    vod_refetched: (usize, usize),
    vod_origin_requests: u64,
    live_origin_requests: u64,
    live_segments: usize,
    seconds: f64,
}

fn run_once(p: &Params, edge: &Path, dir: &Path, setup: Setup) -> Result<RunResult> {
    let edge = edge.to_str().context("edge path")?;
    let mut procs: Vec<Proc> = Vec::new();
    procs.push(Proc::spawn(
        "origin",
        None,
        edge,
        &["origin", "--listen", ORIGIN],
        dir,
    )?);
    wait_port(ORIGIN.parse()?, Duration::from_secs(20), "origin")?;
    let write = |name: &str, text: String| -> Result<String> {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, text)?;
        Ok(path.to_string_lossy().into_owned())
    };
    let shield = write("shield", shield_config(p, dir))?;
    procs.push(Proc::spawn(
        "shield",
        None,
        edge,
        &["run", "--config", &shield],
        dir,
    )?);
    for (site, s) in SITES {
        for n in 1..=3 {
            let cfg = write(
                &format!("{site}-{n}"),
                node_config(p, dir, site, s, n, setup),
            )?;
            procs.push(Proc::spawn(
                &format!("{site}-{n}"),
                None,
                edge,
                &["run", "--config", &cfg],
                dir,
            )?);
        }
    }
    wait_port(SHIELD.parse()?, Duration::from_secs(30), "shield")?;
    for (_, s) in SITES {
        for n in 1..=3 {
            wait_port(
                format!("{}:8080", node_addr(s, n)).parse()?,
                Duration::from_secs(30),
                "node",
            )?;
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        load(p, p.warmup, p.seed, Arc::new(Tally::default())).await;
        let before = origin_stats().await?;
        let tally = Arc::new(Tally::default());
        let start = Instant::now();
        load(p, p.measured, p.seed ^ 0xABCD, tally.clone()).await;
        let seconds = start.elapsed().as_secs_f64();
        let after = origin_stats().await?;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut by_tier = [0; 5];
        let mut bytes_by_tier = [0; 5];
        for i in 0..5 {
            by_tier[i] = n(&tally.by_tier[i]);
            bytes_by_tier[i] = n(&tally.bytes_by_tier[i]);
        }
        let vod: Vec<u64> = after
            .2
            .iter()
            .filter(|(k, _)| k.starts_with("/obj/"))
            .map(|(_, v)| *v)
            .collect();
        let live = after
            .2
            .iter()
            .filter(|(k, _)| k.starts_with("/live/") && k.ends_with(".ts"));
        let live: Vec<u64> = live.map(|(_, v)| *v).collect();
        Ok::<_, anyhow::Error>(RunResult {
            client_bytes: n(&tally.bytes),
            requests: n(&tally.requests),
            errors: n(&tally.errors),
            origin_bytes: after.1 - before.1,
            origin_requests: after.0 - before.0,
            by_tier,
            bytes_by_tier,
            vod_refetched: (vod.iter().filter(|c| **c > 1).count(), vod.len()),
            vod_origin_requests: vod.iter().sum(),
            live_origin_requests: live.iter().sum(),
            live_segments: live.len(),
            seconds,
        })
    })
}

/// Both runs (peering on, then off) and the report.
pub fn run(p: &Params, edge: &Path) -> Result<String> {
    let mut results = Vec::new();
    for (i, setup) in Setup::ALL.into_iter().enumerate() {
        // Each run starts with empty caches.
        let dir = std::env::temp_dir().join(format!("edge-audience-{}-{i}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        results.push(run_once(p, edge, &dir, setup)?);
        let _ = std::fs::remove_dir_all(&dir);
    }
    if results.iter().any(|r| r.requests == 0) {
        bail!("no request succeeded");
    }
    let mut out = String::new();
    let catalog_mb = (p.objects * p.object_bytes) as f64 / 1e6;
    writeln!(
        out,
        "### Audience: 3 sites × 3 nodes + shield + origin\n\n\
         Catalog {} objects × {} kB = {catalog_mb:.0} MB (Zipf {}), {:.1}× one node's {} MiB RAM \
         (and its {} MiB disk); shield {} MiB RAM, {} MiB disk; {}% of requests for the newest segment of 2 live streams; \
         {} clients; {} requests to fill, then {} measured.\n",
        p.objects,
        p.object_bytes / 1000,
        p.alpha,
        catalog_mb / (p.node_ram_mib as f64 * 1.048_576),
        p.node_ram_mib,
        p.node_disk_mib,
        p.shield_ram_mib,
        p.shield_disk_mib,
        p.live_share * 100.0,
        p.concurrency,
        p.warmup,
        p.measured,
    )?;
    let head: Vec<String> = Setup::ALL.iter().map(|s| s.name()).collect();
    writeln!(out, "| | {} |\n|---|---|---|---|---|", head.join(" | "))?;
    let row = |out: &mut String, name: &str, f: &dyn Fn(&RunResult) -> String| -> Result<()> {
        let cells: Vec<String> = results.iter().map(f).collect();
        writeln!(out, "| {name} | {} |", cells.join(" | "))?;
        Ok(())
    };
    row(&mut out, "requests (errors)", &|r| {
        format!("{} ({})", r.requests, r.errors)
    })?;
    row(&mut out, "client bytes", &|r| {
        format!("{:.1} MB", r.client_bytes as f64 / 1e6)
    })?;
    row(&mut out, "origin bytes", &|r| {
        format!("{:.1} MB", r.origin_bytes as f64 / 1e6)
    })?;
    row(
        &mut out,
        "**origin offload** (1 − origin/client bytes)",
        &|r| {
            format!(
                "**{:.2}%**",
                100.0 * (1.0 - r.origin_bytes as f64 / r.client_bytes.max(1) as f64)
            )
        },
    )?;
    row(&mut out, "origin requests", &|r| {
        r.origin_requests.to_string()
    })?;
    for t in [
        Tier::NodeRam,
        Tier::NodeDisk,
        Tier::Peer,
        Tier::Shield,
        Tier::Origin,
    ] {
        row(
            &mut out,
            &format!("served from {} (requests / bytes)", t.name()),
            &|r| {
                format!(
                    "{:.1}% / {:.1}%",
                    100.0 * r.by_tier[t as usize] as f64 / r.requests.max(1) as f64,
                    100.0 * r.bytes_by_tier[t as usize] as f64 / r.client_bytes.max(1) as f64
                )
            },
        )?;
    }
    row(
        &mut out,
        "VOD origin requests per distinct object (whole run)",
        &|r| {
            format!(
                "{:.3} ({} of {} objects fetched more than once)",
                r.vod_origin_requests as f64 / r.vod_refetched.1.max(1) as f64,
                r.vod_refetched.0,
                r.vod_refetched.1
            )
        },
    )?;
    row(
        &mut out,
        "live origin requests per live segment (whole run)",
        &|r| {
            format!(
                "{:.2}",
                r.live_origin_requests as f64 / r.live_segments.max(1) as f64
            )
        },
    )?;
    row(&mut out, "measured seconds", &|r| {
        format!("{:.1}", r.seconds)
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cs(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn cache_status_members_name_the_tier() {
        assert_eq!(tier(&cs(&["node; hit; ttl=5"]), "HIT RAM"), Tier::NodeRam);
        assert_eq!(tier(&cs(&["node; hit"]), "HIT DISK"), Tier::NodeDisk);
        assert_eq!(
            tier(&cs(&["node; hit", "node; fwd=uri-miss; stored"]), "MISS"),
            Tier::Peer
        );
        assert_eq!(
            tier(
                &cs(&["shield; hit", "node; fwd=uri-miss", "node; fwd=uri-miss"]),
                "MISS"
            ),
            Tier::Shield
        );
        assert_eq!(
            tier(&cs(&["shield; fwd=uri-miss, node; fwd=uri-miss"]), "MISS"),
            Tier::Origin
        );
        assert_eq!(tier(&[], ""), Tier::Origin);
    }

    #[test]
    fn zipf_favours_low_ranks() {
        let z = Zipf::new(1000, 0.9);
        assert_eq!(z.sample(0.0), 0);
        assert_eq!(z.sample(1.0), 999);
        assert!(z.sample(0.5) < 100);
    }
}
