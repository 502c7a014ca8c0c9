//! `edge reload`, `edge upgrade` and `edge prefill`: the admin API's
//! `POST /reload`, `POST /upgrade` and `POST /cache/prefill` for the node a
//! config file describes (its `admin.listen` and `admin.token`), as
//! `nginx -s reload` signals the running master.
//! Prints the node's answer; fails (exit 1) unless it says done.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// How long the node may take to answer (an upgrade waits for the new
/// process to serve).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(180);

/// Sends `POST /{action}` to the admin API of the node `config` describes.
pub fn run(config: &Path, action: &str) -> anyhow::Result<()> {
    send(
        config,
        action,
        &format!("/{action}"),
        "text/plain",
        String::new(),
    )
}

/// `edge prefill`: the list read and checked here, then `POST
/// /cache/prefill` to the node `config` describes.
pub fn prefill(
    config: &Path,
    list: &Path,
    renditions: Vec<String>,
    window: Option<String>,
    rate: Option<String>,
) -> anyhow::Result<()> {
    let text = if list == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading the list from stdin")?
    } else {
        std::fs::read_to_string(list).with_context(|| format!("reading {}", list.display()))?
    };
    let urls: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    let spec = crate::prefill::Spec {
        urls,
        renditions,
        window,
        rate: rate.map(crate::prefill::spec::Rate::Text),
    };
    if let Err(e) = spec.check() {
        bail!("{}: {e}", list.display());
    }
    let body = serde_json::to_string(&spec).context("encoding the job")?;
    send(
        config,
        "prefill",
        "/cache/prefill",
        "application/json",
        body,
    )
}

/// `edge explain`: `GET /explain` of the node `config` describes, printed
/// as text (or the JSON). Fails (exit 1) when the node refuses the query.
pub fn explain(
    config: &Path,
    client: IpAddr,
    ecs: Option<String>,
    host: &str,
    url: Option<String>,
    as_json: bool,
) -> anyhow::Result<()> {
    let config = load(config)?;
    let addr = reachable(config.admin.listen).to_string();
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("client", &client.to_string());
    query.append_pair("host", host);
    if let Some(e) = &ecs {
        query.append_pair("ecs", e);
    }
    if let Some(u) = &url {
        query.append_pair("url", u);
    }
    if !as_json {
        query.append_pair("format", "text");
    }
    let path = format!("/explain?{}", query.finish());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    let call = request(
        &addr,
        hyper::Method::GET,
        &path,
        None,
        "text/plain",
        String::new(),
    );
    let (status, body) =
        match rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), call).await }) {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => bail!("admin API at {addr}: {e:#}"),
            Err(_) => bail!("admin API at {addr}: no answer in 10 s"),
        };
    if !status.is_success() {
        bail!("admin API at {addr}: {status}: {}", body.trim());
    }
    crate::out::say!("{}", body.trim_end());
    Ok(())
}

/// `edge status`: what the node's admin API says of it, in a few lines.
/// Fails (exit 1) when the node does not answer or is not ready.
pub fn status(config: &Path, live_only: bool) -> anyhow::Result<()> {
    let config = load(config)?;
    let addr = reachable(config.admin.listen);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    let get = |path: &'static str| {
        let addr = addr.to_string();
        async move {
            let call = request(
                &addr,
                hyper::Method::GET,
                path,
                None,
                "text/plain",
                String::new(),
            );
            match tokio::time::timeout(Duration::from_secs(10), call).await {
                Ok(Ok((status, body))) => Ok((status, body)),
                Ok(Err(e)) => Err(anyhow::anyhow!("admin API at {addr}: {e:#}")),
                Err(_) => Err(anyhow::anyhow!("admin API at {addr}: no answer in 10 s")),
            }
        }
    };
    if live_only {
        let (status, body) = rt.block_on(get("/live"))?;
        if !status.is_success() || body.trim() != "live" {
            bail!(
                "node {addr}: /live answered {status} {:?}: not a live edge admin API",
                body.trim()
            );
        }
        return Ok(());
    }
    let json = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap_or_default();
    let (ready, pools, cache, site, prefill) = rt.block_on(async {
        Ok::<_, anyhow::Error>((
            get("/ready").await?,
            get("/pools").await?,
            get("/cache").await?,
            get("/site").await?,
            get("/cache/prefill").await?,
        ))
    })?;
    // What edge's /ready says; anything else is not edge's admin API.
    let ready_text = ready.1.trim();
    if !(ready_text.starts_with("ready") || ready_text.starts_with("not ready")) {
        bail!(
            "{addr} answered /ready with {} {ready_text:?}: not an edge admin API",
            ready.0
        );
    }
    let is_ready = ready.0.is_success();
    crate::out::say!(
        "node {addr}: {}",
        if is_ready { "ready" } else { "not ready" }
    );
    for pool in json(&pools.1).as_array().into_iter().flatten() {
        let backends = pool["backends"].as_array().cloned().unwrap_or_default();
        let usable = backends.iter().filter(|b| b["usable"] == true).count();
        let down: Vec<String> = backends
            .iter()
            .filter(|b| b["usable"] != true)
            .map(|b| b["resolved"].as_str().unwrap_or("?").to_string())
            .collect();
        let mut line = format!(
            "pool {}: {usable}/{} backends usable",
            pool["name"].as_str().unwrap_or("?"),
            backends.len()
        );
        if !down.is_empty() {
            line.push_str(&format!(" (not: {})", down.join(", ")));
        }
        crate::out::say!("{line}");
    }
    for tier in json(&cache.1)["tiers"].as_array().into_iter().flatten() {
        crate::out::say!(
            "cache {}: {} objects, {} of {} bytes",
            tier["tier"].as_str().unwrap_or("?"),
            tier["objects"],
            tier["bytes"],
            tier["capacity"]
        );
    }
    if site.0.is_success() {
        let s = json(&site.1);
        let peers = s["peers"].as_array().cloned().unwrap_or_default();
        crate::out::say!(
            "site {} (node {}): {}/{} peers usable, owns {:.0}% of objects",
            s["site"].as_str().unwrap_or("?"),
            s["node"].as_str().unwrap_or("?"),
            peers.iter().filter(|p| p["usable"] == true).count(),
            peers.len(),
            s["owned_share"].as_f64().unwrap_or(0.0) * 100.0
        );
    }
    let p = json(&prefill.1);
    if p["phase"].as_str().is_some_and(|phase| phase != "idle") {
        crate::out::say!(
            "prefill: {}, {}/{} objects, {} bytes",
            p["phase"].as_str().unwrap_or("?"),
            p["done"],
            p["objects"],
            p["bytes"]
        );
    }
    if !is_ready {
        bail!("the node is not ready");
    }
    Ok(())
}

pub(crate) fn load(path: &Path) -> anyhow::Result<edge_config::Config> {
    match edge_config::load(path) {
        Ok(c) => Ok(c),
        Err(diags) => {
            crate::out::complain!("{}", diags.render());
            bail!("{}: {} error(s)", path.display(), diags.len());
        }
    }
}

/// POSTs `body` to `path` of the admin API of the node `config` describes
/// (its `admin.listen` and `admin.token`); prints the answer.
fn send(
    config: &Path,
    action: &str,
    path: &str,
    content_type: &str,
    body: String,
) -> anyhow::Result<()> {
    let config = load(config)?;
    let token = match &config.admin.token {
        Some(t) => t.resolve().map_err(anyhow::Error::msg)?,
        None => {
            bail!("the config has no admin.token: the admin API refuses `{action}` without one")
        }
    };
    let addr = reachable(config.admin.listen);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    let authorization = format!("Bearer {}", token.expose());
    let (status, body) = rt
        .block_on(async {
            tokio::time::timeout(
                ANSWER_TIMEOUT,
                post_body(
                    &addr.to_string(),
                    path,
                    Some(&authorization),
                    content_type,
                    body,
                ),
            )
            .await
        })
        .with_context(|| format!("no answer from the admin API at {addr} in {ANSWER_TIMEOUT:?}"))?
        .with_context(|| format!("admin API at {addr}"))?;
    crate::out::say!("{}", body.trim_end());
    if !status.is_success() {
        bail!("{action}: the node answered {status}");
    }
    Ok(())
}

/// An address to reach a socket bound to `listen` (an unspecified address
/// is reached on loopback).
fn reachable(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, listen.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, listen.port()).into(),
        _ => listen,
    }
}

/// POSTs `body` to `path` of an admin API at `addr` (`host:port`, a name
/// is looked up; HTTP/1.1, one connection); its status and body.
pub(crate) async fn post_body(
    addr: &str,
    path: &str,
    authorization: Option<&str>,
    content_type: &str,
    body: String,
) -> anyhow::Result<(hyper::StatusCode, String)> {
    request(
        addr,
        hyper::Method::POST,
        path,
        authorization,
        content_type,
        body,
    )
    .await
}

pub(crate) async fn request(
    addr: &str,
    method: hyper::Method,
    path: &str,
    authorization: Option<&str>,
    content_type: &str,
    body: String,
) -> anyhow::Result<(hyper::StatusCode, String)> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr)
        .header(hyper::header::CONTENT_TYPE, content_type);
    if let Some(a) = authorization {
        request = request.header(hyper::header::AUTHORIZATION, a);
    }
    let request = request.body(Full::new(Bytes::from(body)))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
