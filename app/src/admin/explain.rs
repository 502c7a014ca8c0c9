//! `GET /explain` and `GET /cache/lookup`: why a client goes where it
//! goes, DNS → site → node → cache tier, and what the upstream plan would
//! be on a miss. Route 53's TestDNSAnswer covers only the first step.
//!
//! `/explain?client=IP[&ecs=PREFIX]&host=NAME[&url=PATH|URL][&format=text]`:
//! where the client was located (table entry, coordinates, region,
//! country), every candidate site of the geo name with distance, health,
//! load, shed share and why it won or lost, the DNS answers (A and AAAA,
//! TTL, ECS scope: the real answer path's), then for `url` the site's
//! nodes, the owner, whether each node's digest holds the object, the
//! owner's own cache state (its `/cache/lookup`) and plan, and the
//! steering ranking. JSON, or readable text with `format=text`.
//!
//! `/cache/lookup?url=URL`: this node's view of one object: the route
//! and pool that serve it, whether it is in RAM, on disk or being filled,
//! and where a miss would go (site owner, shield, origin).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use edge_proxy::steer::SteerQuery;
use hickory_proto::op::{Edns, Message, Query as DnsQuestion};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};
use ipnet::IpNet;
use serde_json::{json, Value};

use crate::runtime::Runtime;

fn bad(msg: impl Into<String>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": msg.into() })),
    )
        .into_response()
}

/// A URL or path → (scheme, authority, target); a path is on `host`.
fn split_url(text: &str, host: Option<&str>) -> Result<(String, String, String), String> {
    edge_proxy::steer::split_url(text, "http", host)
}

/// The object as this node's request path would key it.
fn object_of(
    rt: &Runtime,
    scheme: &str,
    authority: &str,
    target: &str,
) -> Result<edge_proxy::steer::Object, String> {
    let config = rt.config();
    let http: Vec<&edge_config::Listener> = config
        .listeners
        .iter()
        .filter(|l| l.kind.http().is_some())
        .collect();
    let names: Vec<&str> = http.iter().map(|l| l.name.as_str()).collect();
    let paths = http
        .first()
        .and_then(|l| l.kind.http())
        .map(|h| edge_proxy::normalize::PathOptions {
            merge_slashes: h.merge_slashes,
            escaped_slashes: h.escaped_slashes,
        })
        .unwrap_or_default();
    edge_proxy::steer::object(&rt.proxy.state(), &names, &paths, scheme, authority, target)
}

/// A query's parameters as [`edge_proxy::steer::param`] reads them (not
/// UTF-8 once decoded: an error, never a replacement character).
struct Params<'a>(Option<&'a str>);

impl Params<'_> {
    fn get(&self, name: &str) -> Result<Option<String>, String> {
        edge_proxy::steer::param(self.0, name)
    }

    fn required(&self, name: &str, what: &str) -> Result<String, String> {
        self.get(name)?
            .ok_or_else(|| format!("{name}: required ({what})"))
    }
}

/// This node's plan for a miss of a cached object: the tiers in order.
fn miss_plan(rt: &Runtime, object: &edge_proxy::steer::Object) -> Vec<String> {
    let state = rt.proxy.state();
    let mut plan = Vec::new();
    let Some(pool) = &object.pool else {
        return plan;
    };
    if object.cached {
        if let Some(site) = state.site.as_ref() {
            if let Some(peers) = site.peers.and_then(|i| state.pools.get(i)) {
                match site.owner(&object.primary, peers) {
                    edge_proxy::site::Owner::Me => {
                        plan.push(format!("this node ({}) owns it and fills it", site.node))
                    }
                    edge_proxy::site::Owner::Peer(i) => {
                        let name = peers
                            .backends
                            .get(i)
                            .and_then(|b| site.peer_name(&b.address))
                            .unwrap_or("-");
                        plan.push(format!("site owner {name} (peer fill)"));
                    }
                }
            }
            if let Some(shield) = site.shield.and_then(|i| state.pools.get(i)) {
                plan.push(format!("shield pool {}", shield.name));
                if site.fallback == edge_config::ShieldFallback::Fail {
                    plan.push("503 if no shield node answers (shield_fallback = \"fail\")".into());
                    return plan;
                }
            }
        }
    }
    plan.push(format!("origin pool {pool}"));
    plan
}

/// `GET /cache/lookup?url=…`
#[utoipa::path(
    get,
    path = "/cache/lookup",
    tag = "cache",
    summary = "This node's view of one object",
    description = "Its route and pool, whether it is in RAM, on disk or being filled, and where a miss would go.",
    params(("url" = String, Query, description = "The object's absolute URL")),
    responses(
        (status = 200, description = "The object", body = Object),
        (status = 400, description = "`url` missing or not a URL", body = super::api::ErrorBody),
    )
)]
pub async fn lookup(State(rt): State<Arc<Runtime>>, RawQuery(q): RawQuery) -> Response {
    let url = match Params(q.as_deref()).required("url", "an absolute URL") {
        Ok(u) => u,
        Err(e) => return bad(e),
    };
    let (scheme, authority, target) = match split_url(&url, None) {
        Ok(x) => x,
        Err(e) => return bad(e),
    };
    let object = match object_of(&rt, &scheme, &authority, &target) {
        Ok(o) => o,
        Err(e) => return bad(format!("url: {e}")),
    };
    let (ram, disk, filling) = rt.proxy.cache().map_or((false, false, false), |c| {
        let whole = c.storage.tiers_of(&object.storage_key);
        let slice = c.storage.tiers_of(&object.first_slice_key);
        (whole.0 || slice.0, whole.1 || slice.1, whole.2 || slice.2)
    });
    let config = rt.config();
    Json(json!({
        "node": config.site.as_ref().map(|s| s.node.clone()),
        "url": object.url.as_str(),
        "route": object.route,
        "pool": object.pool,
        "cached_route": object.cached,
        "ram": ram,
        "disk": disk,
        "filling": filling,
        "on_miss": miss_plan(&rt, &object),
    }))
    .into_response()
}

/// `/explain`'s parameters.
struct ExplainParams {
    client: String,
    ecs: Option<String>,
    host: String,
    url: Option<String>,
    format: Option<String>,
}

impl ExplainParams {
    fn read(q: Option<&str>) -> Result<Self, String> {
        let p = Params(q);
        Ok(Self {
            client: p.required("client", "an IP address")?,
            ecs: p.get("ecs")?,
            host: p.required("host", "a DNS name")?,
            url: p.get("url")?,
            format: p.get("format")?,
        })
    }
}

/// `host` as a DNS name: lower-case, no trailing dot; a name in Unicode
/// becomes its A-labels (IDNA, as a client's resolver would ask).
fn dns_host(text: &str) -> Result<String, String> {
    let text = text.trim();
    let ascii = if text.is_ascii() {
        text.to_ascii_lowercase()
    } else {
        match url::Host::parse(text) {
            Ok(url::Host::Domain(d)) => d,
            _ => return Err(format!("host: {text:?} is not a DNS name")),
        }
    };
    let name = ascii.strip_suffix('.').unwrap_or(&ascii);
    let labels_ok = name.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'*')
    });
    if name.is_empty() || name.len() > 253 || !labels_ok || Name::from_ascii(name).is_err() {
        return Err(format!(
            "host: {text:?} is not a DNS name (labels of 1 to 63 letters, digits, - or _; 253 bytes at most)"
        ));
    }
    Ok(name.to_string())
}

/// The real DNS answer for `host` of `qtype`, for `client` (and `ecs`).
fn dns_answer(
    rt: &Runtime,
    host: &str,
    qtype: RecordType,
    client: IpAddr,
    ecs: Option<IpNet>,
) -> Value {
    let Ok(name) = Name::from_ascii(format!("{}.", host.trim_end_matches('.'))) else {
        return json!({ "error": "not a DNS name" });
    };
    let mut m = Message::query();
    m.metadata.recursion_desired = false;
    m.add_query(DnsQuestion::query(name, qtype));
    let mut e = Edns::new();
    e.set_max_payload(1232);
    if let Some(n) = ecs {
        e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
            n.trunc().addr(),
            n.prefix_len(),
            0,
        )));
    }
    m.set_edns(e);
    let Ok(packet) = m.to_vec() else {
        return json!({ "error": "cannot encode the query" });
    };
    // Over "TCP": no response rate limit applies to an explanation.
    let Some(raw) = rt
        .dns
        .service
        .respond(&packet, client, edge_dns::answer::Transport::Tcp)
    else {
        return json!({ "error": "no answer" });
    };
    let Ok(answer) = Message::from_vec(&raw) else {
        return json!({ "error": "an unreadable answer" });
    };
    let records: Vec<Value> = answer
        .answers
        .iter()
        .map(|r| {
            let data = match &r.data {
                RData::A(a) => a.0.to_string(),
                RData::AAAA(a) => a.0.to_string(),
                other => other.to_string(),
            };
            json!({ "name": r.name.to_string(), "type": r.record_type().to_string(), "ttl": r.ttl, "data": data })
        })
        .collect();
    let scope = answer.edns.as_ref().and_then(|e| {
        e.options().as_ref().iter().find_map(|(_, o)| match o {
            EdnsOption::Subnet(s) => Some(s.scope_prefix()),
            _ => None,
        })
    });
    json!({
        "type": qtype.to_string(),
        "rcode": answer.metadata.response_code.to_string(),
        "answers": records,
        "ttl": answer.answers.iter().map(|r| r.ttl).min(),
        "ecs_scope": scope,
    })
}

/// `GET /explain`
#[utoipa::path(
    get,
    path = "/explain",
    tag = "dns",
    summary = "Why a client goes where it goes",
    description = "Its location, every candidate site and why it won or lost, the DNS answers (TTL, ECS scope), \
and with `url` the object's owner node, whether it holds it, its cache state and miss plan, and the steering ranking.",
    params(
        ("client" = String, Query, description = "The client's (or its resolver's) IP address"),
        ("ecs" = Option<String>, Query, description = "An EDNS Client Subnet prefix, as `203.0.113.0/24`"),
        ("host" = String, Query, description = "The DNS name asked for"),
        ("url" = Option<String>, Query, description = "A path or URL on that name, for the object's part"),
        ("format" = Option<String>, Query, description = "`text` for a readable answer instead of JSON"),
    ),
    responses(
        (status = 200, description = "The explanation (JSON, or text with `format=text`)", body = Object),
        (status = 400, description = "A parameter is missing or wrong", body = super::api::ErrorBody),
    )
)]
pub async fn explain(State(rt): State<Arc<Runtime>>, RawQuery(q): RawQuery) -> Response {
    let p = match ExplainParams::read(q.as_deref()) {
        Ok(p) => p,
        Err(e) => return bad(e),
    };
    let Ok(client) = p.client.trim().parse::<IpAddr>() else {
        return bad("client: not an IP address");
    };
    let ecs = match p.ecs.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => match text
            .parse::<IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        {
            Ok(n) => Some(n),
            Err(_) => return bad("ecs: not a prefix such as 203.0.113.0/24"),
        },
    };
    let host = match dns_host(&p.host) {
        Ok(h) => h,
        Err(e) => return bad(e),
    };
    let state = rt.dns.service.state();
    let loc = edge_dns::explain::locate(&state, client, ecs);
    let geo = edge_dns::explain::geo_name(&state, &host);
    let family = if loc.address.is_ipv4() {
        edge_dns::geo::Family::V4
    } else {
        edge_dns::geo::Family::V6
    };
    let (chosen, pick) = geo
        .as_ref()
        .map(|(_, g)| edge_dns::explain::chosen(&state, g, &loc, family))
        .unwrap_or((Vec::new(), edge_dns::geo::Pick::Default));
    let candidates =
        edge_dns::explain::candidates(&state, geo.as_ref().map(|(_, g)| *g), &loc, &chosen);
    let dns = json!([
        dns_answer(&rt, &host, RecordType::A, client, ecs),
        dns_answer(&rt, &host, RecordType::AAAA, client, ecs),
    ]);
    let mut out = json!({
        "client": client.to_string(),
        "ecs": ecs.map(|n| n.to_string()),
        "host": host,
        "location": loc,
        "geo_name": geo.as_ref().map(|(n, _)| n.clone()),
        "policy": geo.as_ref().map(|(_, g)| g.policy_name()),
        "pick": format!("{pick:?}").to_lowercase(),
        "sites": candidates,
        "dns": dns,
    });
    if let Some(url) = &p.url {
        let (scheme, authority, target) = match split_url(url, Some(&host)) {
            Ok(x) => x,
            Err(e) => return bad(e),
        };
        let object = match object_of(&rt, &scheme, &authority, &target) {
            Ok(o) => o,
            Err(e) => return bad(format!("url: {e}")),
        };
        let steering = crate::steering::Steering {
            dns: rt.dns.service.clone(),
            nodes: rt.dns.nodes.clone(),
        };
        let ranked = steering.rank(
            &SteerQuery {
                client,
                host: &object.host,
                object: &object.url,
                primary: object.primary,
                path_and_query: &object.path_and_query,
            },
            ecs,
        );
        let site = candidates.iter().find(|c| c.up && !c.sheds_this_client);
        let nodes = site.map(|c| {
            crate::steering::site_nodes(
                &rt.dns.service,
                &rt.dns.nodes,
                c.index,
                &object.url,
                &object.primary,
            )
        });
        let owner = nodes
            .as_ref()
            .and_then(|n| n.iter().find(|v| v.owner).cloned());
        let absolute = format!("{scheme}://{authority}{}", object.path_and_query);
        let owner_cache = match &owner {
            Some(o) => owner_lookup(&o.health_url, &absolute).await,
            None => json!(null),
        };
        out["object"] = json!({
            "url": object.url.as_str(),
            "route": object.route,
            "pool": object.pool,
            "cached_route": object.cached,
            "site": site.map(|c| c.site.clone()),
            "nodes": nodes,
            "owner": owner.as_ref().and_then(|o| o.name.clone()),
            "owner_holds": owner.as_ref().and_then(|o| o.holds),
            "owner_cache": owner_cache,
            "on_miss_here": miss_plan(&rt, &object),
        });
        out["steering"] = json!(ranked.targets);
    }
    if p.format.as_deref() == Some("text") {
        return (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8",
            )],
            text(&out),
        )
            .into_response();
    }
    Json(out).into_response()
}

/// The owner's own view (`/cache/lookup` on its admin API, found from its
/// `/site/state` health URL); `{"error": …}` when it cannot be asked.
async fn owner_lookup(health_url: &str, absolute: &str) -> Value {
    let Some(rest) = health_url.strip_prefix("http://") else {
        return json!({ "error": "the owner's state URL is not http://" });
    };
    let Some((authority, path)) = rest.split_once('/') else {
        return json!({ "error": "the owner's state URL has no path" });
    };
    let base = format!("/{path}");
    let base = base.strip_suffix("/site/state").unwrap_or("");
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("url", absolute)
        .finish();
    let path = format!("{base}/cache/lookup?{query}");
    let call = crate::ctl::request(
        authority,
        hyper::Method::GET,
        &path,
        None,
        "text/plain",
        String::new(),
    );
    match tokio::time::timeout(Duration::from_secs(3), call).await {
        Ok(Ok((status, body))) if status.is_success() => {
            serde_json::from_str(&body).unwrap_or_else(|_| json!({ "error": "not JSON" }))
        }
        Ok(Ok((status, _))) => json!({ "error": format!("status {status}") }),
        Ok(Err(e)) => json!({ "error": format!("{e:#}") }),
        Err(_) => json!({ "error": "no answer within 3 s" }),
    }
}

/// The explanation as readable text.
fn text(v: &Value) -> String {
    let s = |x: &Value| match x {
        Value::String(t) => t.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let mut out = String::new();
    let loc = &v["location"];
    let _ = writeln!(out, "client {} (ecs {})", s(&v["client"]), s(&v["ecs"]));
    if loc["found"] == true {
        let place = if loc["pinned_site"].is_string() {
            format!("pinned to site {}", s(&loc["pinned_site"]))
        } else {
            format!("at {}, {}", s(&loc["lat"]), s(&loc["lon"]))
        };
        let _ = writeln!(
            out,
            "  located by its {} {} in the {} entry {}: {place}, region {}, country {}",
            s(&loc["by"]),
            s(&loc["address"]),
            s(&loc["table"]),
            s(&loc["entry"]),
            s(&loc["region"]),
            s(&loc["country"])
        );
    } else {
        let _ = writeln!(
            out,
            "  not located ({} {} is in no table)",
            s(&loc["by"]),
            s(&loc["address"])
        );
    }
    let _ = writeln!(
        out,
        "name {}: geo name {}, policy {}, pick {}",
        s(&v["host"]),
        s(&v["geo_name"]),
        s(&v["policy"]),
        s(&v["pick"])
    );
    for c in v["sites"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {} {:<12} {:>9} km  up {:<5} utilization {:<6} shed {}‰  {}",
            if c["chosen"] == true { "*" } else { " " },
            s(&c["site"]),
            s(&c["distance_km"]),
            s(&c["up"]),
            s(&c["utilization"]),
            s(&c["shed_per_mille"]),
            s(&c["why"])
        );
    }
    for d in v["dns"].as_array().into_iter().flatten() {
        let answers: Vec<String> = d["answers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| s(&a["data"]))
            .collect();
        let _ = writeln!(
            out,
            "dns {}: {} [{}] ttl {} ecs scope {}",
            s(&d["type"]),
            s(&d["rcode"]),
            answers.join(", "),
            s(&d["ttl"]),
            s(&d["ecs_scope"])
        );
    }
    let o = &v["object"];
    if !o.is_null() {
        let _ = writeln!(
            out,
            "object {}: route {}, pool {}, site {}, owner {} (digest says holds: {})",
            s(&o["url"]),
            s(&o["route"]),
            s(&o["pool"]),
            s(&o["site"]),
            s(&o["owner"]),
            s(&o["owner_holds"])
        );
        for n in o["nodes"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "  node {:<10} {:<28} up {:<5} holds {:<5} owner {}",
                s(&n["name"]),
                s(&n["url"]),
                s(&n["up"]),
                s(&n["holds"]),
                s(&n["owner"])
            );
        }
        let c = &o["owner_cache"];
        if !c.is_null() {
            if c["error"].is_string() {
                let _ = writeln!(out, "  owner's cache: cannot ask ({})", s(&c["error"]));
            } else {
                let plan: Vec<String> = c["on_miss"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(&s)
                    .collect();
                let _ = writeln!(
                    out,
                    "  owner's cache: ram {}, disk {}, filling {}; a miss goes to: {}",
                    s(&c["ram"]),
                    s(&c["disk"]),
                    s(&c["filling"]),
                    plan.join(" → ")
                );
            }
        }
        for (i, t) in v["steering"].as_array().into_iter().flatten().enumerate() {
            let _ = writeln!(
                out,
                "steer {}: {} (site {}, node {}, holds {}, owner {})",
                i + 1,
                s(&t["url"]),
                s(&t["site"]),
                s(&t["node"]),
                s(&t["holds"]),
                s(&t["owner"])
            );
        }
    }
    out
}
