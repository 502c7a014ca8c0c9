//! Prefill's HTTP side: manifests expanded and objects fetched through
//! the node's own plain HTTP listener, one connection per request.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use super::pace::Pacer;
use super::spec::Checked;
use super::Progress;
use crate::runtime::Runtime;
use edge_cache::manifest;

/// A manifest larger than this is not read.
const MAX_MANIFEST: usize = 16 << 20;
/// Connecting, and waiting for each response head or body read.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Where prefill requests go: the node's first plain HTTP listener (an
/// unspecified address is reached on loopback).
pub struct Target {
    addr: SocketAddr,
    /// Routes with `auth`: each request is signed (for the address it
    /// comes from) like a client's.
    signing: Option<std::sync::Arc<crate::sign::Signing>>,
}

impl Target {
    pub fn of(rt: &Runtime) -> Option<Self> {
        let config = rt.config();
        let name = config
            .listeners
            .iter()
            .find(|l| l.kind_name() == "http")
            .map(|l| l.name.clone())?;
        let (_, addr) = rt
            .listeners
            .addresses()
            .into_iter()
            .find(|(n, _)| *n == name)?;
        let ip = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let signing = if crate::sign::Signing::any(&config) {
            match crate::sign::Signing::new(&config) {
                Ok(s) => Some(std::sync::Arc::new(s)),
                Err(e) => {
                    tracing::warn!(error = %e, "prefill cannot sign its requests");
                    None
                }
            }
        } else {
            None
        };
        Some(Self {
            addr: SocketAddr::new(ip, addr.port()),
            signing,
        })
    }
}

/// What became of one object.
pub enum Outcome {
    /// Read in full (body bytes): it was a miss here, now filled.
    Fetched(u64),
    /// Already fresh in this node's cache.
    Fresh,
    /// Another node of the site owns it.
    NotOwned,
    Failed(String),
}

async fn step<T, E: std::fmt::Display>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(STEP_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no progress in {STEP_TIMEOUT:?}")),
    }
}

async fn send(
    target: &Target,
    url: &url::Url,
    prefill: bool,
) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let tcp = step("connect", tokio::net::TcpStream::connect(target.addr)).await?;
    // A signed route lets the prefill in as it would a client: with a
    // token for this object, bound to the address the request comes from.
    let signed;
    let url = match &target.signing {
        Some(signing) => {
            let local = tcp.local_addr().map(|a| a.ip()).ok();
            let request = crate::sign::Request {
                url: url.as_str(),
                ttl: "5m",
                route: None,
                client_ip: local,
                key: None,
                prefix: None,
            };
            match signing.sign(&request) {
                Ok(s) => {
                    signed = url::Url::parse(&s.url).map_err(|e| format!("signed url: {e}"))?;
                    &signed
                }
                // A route without `auth`: as it is.
                Err(_) => url,
            }
        }
        None => url,
    };
    let (mut sender, conn) = step(
        "handshake",
        hyper::client::conn::http1::handshake(TokioIo::new(tcp)),
    )
    .await?;
    tokio::spawn(conn);
    let host = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let mut req = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "edge-prefill");
    if prefill {
        req = req.header(edge_proxy::site::PREFILL, "1");
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    step("response", sender.send_request(req)).await
}

/// Fetches one object, its body paced; a fresh hit is not read.
pub async fn object(target: &Target, url: &url::Url, pacer: &mut Pacer) -> Outcome {
    let response = match send(target, url, true).await {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(e),
    };
    let status = response.status().as_u16();
    if status == 421 {
        return Outcome::NotOwned;
    }
    if !(200..300).contains(&status) {
        return Outcome::Failed(format!("status {status}"));
    }
    let hit = response
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        // `HIT RAM`, `HIT DISK`: the tier follows.
        .is_some_and(|v| {
            v.split_whitespace()
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case("HIT"))
        });
    if hit {
        return Outcome::Fresh;
    }
    let mut body = response.into_body();
    let mut bytes = 0u64;
    loop {
        match tokio::time::timeout(STEP_TIMEOUT, body.frame()).await {
            Ok(None) => return Outcome::Fetched(bytes),
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    bytes += data.len() as u64;
                    pacer.take(data.len() as u64).await;
                }
            }
            Ok(Some(Err(e))) => return Outcome::Failed(format!("body: {e}")),
            Err(_) => return Outcome::Failed(format!("body: no progress in {STEP_TIMEOUT:?}")),
        }
    }
}

/// A manifest's text.
async fn text(target: &Target, url: &url::Url) -> Result<String, String> {
    let response = send(target, url, false).await?;
    let status = response.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(format!("status {status}"));
    }
    let body = http_body_util::Limited::new(response.into_body(), MAX_MANIFEST);
    let bytes = step("body", body.collect()).await?.to_bytes();
    String::from_utf8(bytes.to_vec()).map_err(|_| "not UTF-8".to_string())
}

fn kind(url: &url::Url) -> Option<&'static str> {
    let path = url.path().to_ascii_lowercase();
    if path.ends_with(".m3u8") || path.ends_with(".m3u") {
        Some("hls")
    } else if path.ends_with(".mpd") {
        Some("dash")
    } else {
        None
    }
}

fn join(base: &url::Url, uris: Vec<String>, out: &mut Vec<url::Url>) -> Result<(), String> {
    for u in uris {
        out.push(base.join(&u).map_err(|e| format!("{u:?}: {e}"))?);
    }
    Ok(())
}

/// One manifest's objects (a master playlist's renditions' segments).
async fn manifest(
    target: &Target,
    url: &url::Url,
    renditions: &[String],
    out: &mut Vec<url::Url>,
) -> Result<(), String> {
    let body = text(target, url).await?;
    if kind(url) == Some("dash") {
        let keep = |id: &str| renditions.is_empty() || renditions.iter().any(|r| r == id);
        return join(url, manifest::dash_segments(&body, keep)?, out);
    }
    if !manifest::is_hls_master(&body) {
        return join(url, manifest::hls_segments(&body)?, out);
    }
    let variants: Vec<_> = manifest::hls_variants(&body)
        .into_iter()
        .filter(|v| renditions.is_empty() || renditions.iter().any(|r| v.is(r)))
        .collect();
    if variants.is_empty() {
        return Err(format!("no rendition named {renditions:?}"));
    }
    for v in variants {
        let media = url.join(&v.uri).map_err(|e| format!("{:?}: {e}", v.uri))?;
        let body = text(target, &media)
            .await
            .map_err(|e| format!("{media}: {e}"))?;
        join(&media, manifest::hls_segments(&body)?, out)?;
        if out.len() > manifest::MAX_OBJECTS {
            return Err(format!("more than {} objects", manifest::MAX_OBJECTS));
        }
    }
    Ok(())
}

/// Every object of the job, in order, each once. A manifest that cannot
/// be read or expanded is an error of the job's (and fills nothing).
pub async fn expand(target: &Target, spec: &Checked, progress: &Progress) -> Vec<url::Url> {
    let mut out = Vec::new();
    for url in &spec.urls {
        if kind(url).is_none() {
            out.push(url.clone());
            continue;
        }
        let mut objects = Vec::new();
        match manifest(target, url, &spec.renditions, &mut objects).await {
            Ok(()) => out.extend(objects),
            Err(e) => {
                progress.error(format!("{url}: {e}"));
                progress
                    .failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        if out.len() > manifest::MAX_OBJECTS {
            out.truncate(manifest::MAX_OBJECTS);
            progress.error(format!(
                "more than {} objects: the rest is left out",
                manifest::MAX_OBJECTS
            ));
            break;
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|u| seen.insert(u.as_str().to_string()));
    out
}
