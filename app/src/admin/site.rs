//! `/site`: this node's view of its site (peers, their health, the share
//! of objects each owns now, peer-fill traffic), and the purge fan-out to
//! the site's other nodes.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::runtime::Runtime;

/// Keys sampled to estimate each node's share of the hash space.
const SAMPLE: u32 = 10_000;

/// `GET /site`
#[utoipa::path(
    get,
    path = "/site",
    tag = "site",
    summary = "The node's view of its site",
    description = "Its peers, their health (usable, healthy, ejected, admin state), the share of objects each \
owns now, and peer-fill traffic.",
    responses(
        (status = 200, description = "The site", body = Object),
        (status = 404, description = "The node has no `[site]`", body = super::api::ErrorBody),
    )
)]
pub async fn view(State(rt): State<Arc<Runtime>>) -> Response {
    let state = rt.proxy.state();
    let config = rt.config();
    let (Some(site), Some(cfg)) = (state.site.as_ref(), config.site.as_ref()) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "this node has no [site]" })),
        )
            .into_response();
    };
    let peers_pool = site.peers.and_then(|i| state.pools.get(i));
    let shares = edge_proxy::site::shares(site, peers_pool, SAMPLE);
    let share = |name: &str| {
        shares
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0.0, |(_, s)| *s)
    };
    let m = &rt.proxy.metrics.site;
    let peers: Vec<Value> = cfg
        .other_peers()
        .map(|p| {
            let backends: Vec<Value> = peers_pool
                .into_iter()
                .flat_map(|pool| pool.report().backends)
                .filter(|b| {
                    b.address == p.address.to_string()
                        || b.address.starts_with(&format!("{}@", p.address))
                })
                .map(|b| {
                    json!({
                        "resolved": b.resolved,
                        "usable": b.usable,
                        "healthy": b.healthy,
                        "health_error": b.health_error,
                        "ejected": b.ejected,
                        "admin": b.admin,
                        "in_flight": b.in_flight,
                    })
                })
                .collect();
            json!({
                "name": p.name,
                "address": p.address.to_string(),
                "admin": p.admin,
                "usable": backends.iter().any(|b| b["usable"] == true),
                "backends": backends,
                "owned_share": share(&p.name),
                "fills": m.fills.with_label_values(&[&p.name]).get(),
                "fill_bytes": m.fill_bytes.with_label_values(&[&p.name]).get(),
            })
        })
        .collect();
    Json(json!({
        "site": site.name,
        "node": site.node,
        "owned_share": share(&site.node),
        "keep_copies": cfg.keep_copies,
        "shield": cfg.shield,
        "shield_fallback": cfg.shield_fallback,
        "served_to_peers": m.served_to_peers.get(),
        "peer_fallbacks": m.fallbacks.get(),
        "copies_kept": m.copies.with_label_values(&["true"]).get(),
        "copies_not_kept": m.copies.with_label_values(&["false"]).get(),
        "peers": peers,
    }))
    .into_response()
}

/// Sends a purge to every other node of the site that names its admin
/// API (`[[site.peer]].admin`), at once, each bounded by 5 s; the same
/// body, marked `"local": true` so it goes no further, with the caller's
/// `Authorization` (the site's nodes share an admin token). One entry per
/// node: its answer, or why there is none.
pub async fn fan_out_purge(rt: &Runtime, body: &Value, authorization: &str) -> Vec<Value> {
    let config = rt.config();
    let Some(site) = config.site.as_ref() else {
        return Vec::new();
    };
    let mut body = body.clone();
    body["local"] = Value::Bool(true);
    let body = body.to_string();
    let calls = site.other_peers().map(|p| {
        let body = body.clone();
        async move {
            let Some(admin) = &p.admin else {
                return json!({ "node": p.name, "status": "skipped", "error": "no admin address in [[site.peer]]" });
            };
            match post(admin, &body, authorization).await {
                Ok((status, text)) if status.is_success() => {
                    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    json!({ "node": p.name, "status": "ok", "purged": answer.get("purged") })
                }
                Ok((status, text)) => json!({
                    "node": p.name,
                    "status": "failed",
                    "error": format!("{status}: {}", text.trim()),
                }),
                Err(e) => json!({ "node": p.name, "status": "failed", "error": e }),
            }
        }
    });
    futures::future::join_all(calls).await
}

/// The most of a peer admin's answer read: a purge's answer is small; a
/// peer that sends more (garbage, or without end) is cut off there.
const MAX_ANSWER: usize = 64 << 10;

async fn post(
    admin: &edge_config::HostPort,
    body: &str,
    authorization: &str,
) -> Result<(StatusCode, String), String> {
    let admin = admin.to_string();
    match tokio::time::timeout(
        Duration::from_secs(5),
        purge_call(&admin, body, authorization),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err("no answer within 5 s".to_string()),
    }
}

/// One `POST /cache/purge` to a peer's admin API; its status and at most
/// `MAX_ANSWER` bytes of its answer.
async fn purge_call(
    admin: &str,
    body: &str,
    authorization: &str,
) -> Result<(StatusCode, String), String> {
    use http_body_util::{BodyExt, Full, Limited};
    let tcp = tokio::net::TcpStream::connect(admin)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let request = hyper::Request::post("/cache/purge")
        .header(hyper::header::HOST, admin)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::AUTHORIZATION, authorization)
        .body(Full::new(hyper::body::Bytes::from(body.to_string())))
        .map_err(|e| format!("request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    let answer = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| format!("answer: {e}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&answer).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A peer's admin API that answers without end, or garbage: the
    /// fan-out reads a bounded amount and reports a failure.
    #[tokio::test]
    async fn a_peer_admin_that_floods_or_babbles_is_cut_off() {
        let big = [
            b"HTTP/1.1 500 Oops\r\ncontent-length: 1048576\r\n\r\n".to_vec(),
            vec![b'y'; 1 << 20],
        ]
        .concat();
        for reply in [
            &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"[..],
            &b"\x00\xff garbage\r\n\r\n"[..],
            // A megabyte of error page, all of it echoed in the purge's answer.
            &big[..],
        ] {
            let reply = reply.to_vec();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let flood = reply.starts_with(b"HTTP/1.1 200");
            let server = tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(&reply).await;
                // 1 MiB chunks until the client goes away.
                let chunk = vec![b'x'; 1 << 20];
                if !flood {
                    return;
                }
                loop {
                    let head = format!("{:x}\r\n", chunk.len());
                    if s.write_all(head.as_bytes()).await.is_err()
                        || s.write_all(&chunk).await.is_err()
                        || s.write_all(b"\r\n").await.is_err()
                    {
                        break;
                    }
                }
            });
            let admin = edge_config::HostPort::parse(&addr.to_string()).unwrap();
            let r = post(&admin, "{}", "Bearer x").await;
            let e = r.expect_err("a failure");
            assert!(e.len() < 1000, "{e}");
            server.abort();
        }
    }
}
