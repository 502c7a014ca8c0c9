//! The control loop on real sockets: a node publishes its state as its
//! proxy sees it (`GET /site/state`); a GeoDNS node that polls it withdraws
//! the site when the node says it cannot serve (no usable backend), with no
//! health URL of its own, and sheds clients to the next site while the
//! node's load is above its capacity, then takes them back.

// Helpers in test files may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::time::Duration;

use edge_testkit::dns::{addresses, DnsType};
use edge_testkit::{eventually, metric_sum, origin, Client, DnsClient, DnsQuery, EdgeNode};

const BIN: &str = env!("CARGO_BIN_EXE_edge");

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn node_config(origin: std::net::SocketAddr) -> String {
    format!(
        r#"
[server]
shutdown_delay = "0s"

[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:0"

[[pool]]
name = "origin"
backends = [{{ address = "{origin}" }}]
[pool.health_check]
kind = "http"
path = "/_origin/health"
interval = "100ms"
timeout = "100ms"
rise = 1
fall = 1

[[route]]
name = "all"
pool = "origin"

[site]
name = "ams"
node = "ams-1"
capacity = {{ egress = "1 Gbit/s", connections = 4 }}
"#
    )
}

fn dns_config(state_url: &str) -> String {
    dns_config_with(state_url, "1s", 100)
}

fn dns_config_with(state_url: &str, interval: &str, fall: u32) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "dns"
kind = "dns"
address = "127.0.0.1:0"

[dns]
all_sites_down = "servfail"

[[dns.zone]]
name = "cdn.test."
ttl = 300
ns = ["ns1.cdn.test."]
soa = {{ mname = "ns1.cdn.test.", rname = "hostmaster.cdn.test.", serial = 1, minimum = "30s" }}
records = [{{ name = "ns1", type = "A", value = "192.0.2.53" }}]

[[dns.zone.geo]]
name = "video"
policy = "nearest"
ttl = 20
default_sites = ["ams"]

[[dns.site]]
name = "ams"
lat = 52.37
lon = 4.90
ipv4 = ["192.0.2.10"]
[dns.site.health]
urls = ["{state_url}"]
interval = "{interval}"
timeout = "{interval}"
rise = 1
fall = {fall}

[[dns.site]]
name = "nyc"
lat = 40.71
lon = -74.01
ipv4 = ["198.51.100.10"]

[dns.locator]
cidr = [
  {{ prefix = "127.0.1.0/24", lat = 48.85, lon = 2.35 }},
  {{ prefix = "10.1.0.0/16", lat = 48.85, lon = 2.35 }},
]
"#
    )
}

async fn video(dns: &DnsClient) -> Vec<IpAddr> {
    let m = dns
        .clone()
        .from_ip("127.0.1.9")
        .udp(&DnsQuery::new("video.cdn.test.", DnsType::A))
        .await
        .unwrap();
    addresses(&m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_serve_leaves_the_dns_answers() {
    let o = origin("o").await;
    let node = EdgeNode::start(BIN, &node_config(o.addr()));
    node.wait_ready(Duration::from_secs(20));
    let c = Client::new();
    assert_eq!(
        c.get(&node.url("web", "/obj/a?size=1000")).await.status,
        200
    );

    let state = c.get(&node.admin_url("/site/state")).await.json();
    assert_eq!(state["site"], "ams");
    assert_eq!(state["node"], "ams-1");
    assert_eq!(state["serving"], true, "{state}");
    assert_eq!(state["health"]["ready"], true);
    assert_eq!(state["health"]["pools"][0]["name"], "origin");
    assert_eq!(state["health"]["pools"][0]["usable"], 1);
    assert_eq!(state["capacity"]["connections"], 4);
    assert_eq!(
        state["capacity"]["egress_bits_per_second"],
        1_000_000_000u64
    );
    assert!(state["load"]["connections"].as_u64().is_some());
    assert!(
        state["utilization"].as_f64().is_some_and(|u| u >= 0.0),
        "{state}"
    );

    let dns_node = EdgeNode::start(BIN, &dns_config(&node.admin_url("/site/state")));
    dns_node.wait_ready(Duration::from_secs(20));
    let dns = DnsClient::new(dns_node.addr("dns"));
    eventually(Duration::from_secs(10), "Amsterdam answered", || async {
        (video(&dns).await == [ip("192.0.2.10")]).then_some(())
    })
    .await;

    // The origin fails the node's own health checks: the node says it
    // cannot serve, and the site leaves the answers at once, although the
    // DNS node's own `fall` would wait for 100 failed polls (100 s).
    o.set_health_status(503);
    eventually(Duration::from_secs(10), "Amsterdam withdrawn", || async {
        (video(&dns).await == [ip("198.51.100.10")]).then_some(())
    })
    .await;
    let state = c.get(&node.admin_url("/site/state")).await.json();
    assert_eq!(state["serving"], false);
    assert_eq!(state["why"], "no usable backend in any pool");
    let sites = c.get(&dns_node.admin_url("/dns/sites")).await.json();
    assert_eq!(sites[0]["healthy"], false);
    let error = sites[0]["nodes"][0]["last_error"].as_str().unwrap();
    assert!(
        error.contains("the node reports it cannot serve: no usable backend"),
        "{error}"
    );

    o.set_health_status(200);
    eventually(Duration::from_secs(10), "Amsterdam back", || async {
        (video(&dns).await == [ip("192.0.2.10")]).then_some(())
    })
    .await;
    // The load the node reports is the site's, in the API and the metrics.
    let sites = c.get(&dns_node.admin_url("/dns/sites")).await.json();
    assert!(sites[0]["utilization"].as_f64().is_some(), "{sites}");
    let metrics = c.get(&dns_node.admin_url("/metrics")).await.text();
    assert!(metric_sum(&metrics, "edge_dns_site_utilization", &["site=\"ams\""]) >= 0.0);
    assert!(metrics.contains("edge_dns_site_utilization{site=\"ams\"}"));
}

/// The answers for 100 client subnets of 10.1.0.0/16 (all near Amsterdam):
/// how many got New York.
async fn moved(dns: &DnsClient) -> usize {
    let mut n = 0;
    for i in 0..100u32 {
        let subnet = format!("10.1.{}.0", i);
        let m = dns
            .clone()
            .udp(&DnsQuery::new("video.cdn.test.", DnsType::A).subnet(&subnet, 24))
            .await
            .unwrap();
        if addresses(&m) == [ip("198.51.100.10")] {
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_over_capacity_sheds_clients_and_takes_them_back() {
    let o = origin("o").await;
    let node = EdgeNode::start(
        BIN,
        &node_config(o.addr()).replace("connections = 4", "connections = 1"),
    );
    node.wait_ready(Duration::from_secs(20));
    let dns_node = EdgeNode::start(
        BIN,
        &dns_config_with(&node.admin_url("/site/state"), "100ms", 3),
    );
    dns_node.wait_ready(Duration::from_secs(20));
    let dns = DnsClient::new(dns_node.addr("dns"));
    eventually(Duration::from_secs(10), "Amsterdam answered", || async {
        (moved(&dns).await == 0).then_some(())
    })
    .await;
    let c = Client::new();

    // Four idle clients on a node that can hold one: 400% of capacity.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(
            tokio::net::TcpStream::connect(node.addr("web"))
                .await
                .unwrap(),
        );
    }
    eventually(Duration::from_secs(20), "every client shed", || async {
        let sites = c.get(&dns_node.admin_url("/dns/sites")).await.json();
        (sites[0]["shed_per_mille"] == 1000).then_some(())
    })
    .await;
    // Steady load, steady answers: every subnet on New York, poll after poll.
    for _ in 0..3 {
        assert_eq!(moved(&dns).await, 100);
    }
    let m = dns
        .clone()
        .udp(&DnsQuery::new("video.cdn.test.", DnsType::A).subnet("10.1.7.0", 24))
        .await
        .unwrap();
    assert!(
        m.answers.iter().all(|a| a.ttl <= 5),
        "short TTLs while shedding"
    );
    let metrics = c.get(&dns_node.admin_url("/metrics")).await.text();
    assert_eq!(
        metric_sum(&metrics, "edge_dns_site_shed_ratio", &["site=\"ams\""]),
        1.0
    );

    // The load goes: the share steps down and every client comes back.
    drop(held);
    eventually(Duration::from_secs(20), "every client back", || async {
        let sites = c.get(&dns_node.admin_url("/dns/sites")).await.json();
        (sites[0]["shed_per_mille"] == 0).then_some(())
    })
    .await;
    assert_eq!(moved(&dns).await, 0);
}

/// A stand-in for a node's admin API: answers every request with the body
/// set now, as `200 OK` JSON.
async fn fake_state(body: std::sync::Arc<parking_lot::Mutex<String>>) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let body = body.lock().clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(body.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// Whatever a `/site/state` says that is not "serving: true" in JSON
/// withdraws the site; hostile utilization values never panic the prober
/// nor withdraw a node that says it serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_that_does_not_say_serving_withdraws_the_site() {
    let good = r#"{"serving": true, "utilization": 0.1}"#.to_string();
    let body = std::sync::Arc::new(parking_lot::Mutex::new(good.clone()));
    let addr = fake_state(body.clone()).await;
    let url = format!("http://{addr}/site/state");
    let dns_node = EdgeNode::start(BIN, &dns_config_with(&url, "100ms", 1));
    dns_node.wait_ready(Duration::from_secs(20));
    let dns = DnsClient::new(dns_node.addr("dns"));
    let ams = || async { (video(&dns).await == [ip("192.0.2.10")]).then_some(()) };
    let nyc = || async { (video(&dns).await == [ip("198.51.100.10")]).then_some(()) };
    eventually(Duration::from_secs(10), "Amsterdam answered", ams).await;
    let huge = format!(r#"{{"serving": true, "pad": "{}"}}"#, "x".repeat(200_000));
    let bad = [
        "{}".to_string(),
        r#"{"serving": "false"}"#.to_string(),
        r#"{"serving": null}"#.to_string(),
        "[]".to_string(),
        "null".to_string(),
        r#"{"serving": tr"#.to_string(),
        "not json at all".to_string(),
        huge,
    ];
    for b in bad {
        *body.lock() = b.clone();
        let what = format!("withdrawn for {:.40}", b);
        eventually(Duration::from_secs(10), &what, nyc).await;
        *body.lock() = good.clone();
        eventually(Duration::from_secs(10), "Amsterdam back", ams).await;
    }
    // Hostile utilization: the node serves; the site stays (shedding at
    // worst: a located client of Paris still gets one site).
    for u in [
        "-1",
        "1e308",
        "-1e308",
        "0",
        "\"NaN\"",
        "[1]",
        "1.7976931348623157e309",
    ] {
        *body.lock() = format!(r#"{{"serving": true, "utilization": {u}}}"#);
        for _ in 0..5 {
            let got = video(&dns).await;
            assert_eq!(got.len(), 1, "utilization {u}: {got:?}");
        }
    }
    let c = Client::new();
    let sites = c.get(&dns_node.admin_url("/dns/sites")).await.json();
    assert_eq!(sites[0]["healthy"], true, "{sites}");
}

/// A cache node of `site` named `name`: one cached route to the origin, a
/// digest of every object rebuilt each second.
fn cache_node_config(origin: std::net::SocketAddr, site: &str, name: &str) -> String {
    format!(
        r#"
[server]
shutdown_delay = "0s"
access_log = false

[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:0"

[[pool]]
name = "origin"
backends = [{{ address = "{origin}" }}]

[[route]]
name = "objects"
pool = "origin"
[route.cache]

[site]
name = "{site}"
node = "{name}"
capacity = {{ egress = "10 Gbit/s" }}
digest = {{ min_size = "0", refresh = "1s" }}
"#
    )
}

/// The GeoDNS and steering node: sites `ams` and `nyc`, two nodes each
/// (their `/site/state`), a locator that puts 127.0.1.0/24 near Paris
/// and 10.2.0.0/16 near Boston, and steering routes: `/steer` (list) and
/// `/go/…` (redirect, the object is the rest of the path).
fn steering_dns_config(ams: [&str; 2], nyc: [&str; 2]) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "dns"
kind = "dns"
address = "127.0.0.1:0"

[[listener]]
name = "steer"
kind = "http"
address = "127.0.0.1:0"

[[route]]
name = "steer-list"
match = {{ path_exact = "/steer" }}
steer = "list"

[[route]]
name = "steer-go"
match = {{ path_prefix = "/go/" }}
strip_prefix = "/go"
steer = "redirect"

[dns]

[[dns.zone]]
name = "cdn.test."
ttl = 300
ns = ["ns1.cdn.test."]
soa = {{ mname = "ns1.cdn.test.", rname = "hostmaster.cdn.test.", serial = 1, minimum = "30s" }}
records = [{{ name = "ns1", type = "A", value = "192.0.2.53" }}]

[[dns.zone.geo]]
name = "video"
policy = "nearest"
ttl = 20
default_sites = ["nyc"]

[[dns.site]]
name = "ams"
lat = 52.37
lon = 4.90
ipv4 = ["192.0.2.10"]
[dns.site.health]
urls = ["{}", "{}"]
interval = "300ms"
timeout = "1s"
rise = 1
fall = 3

[[dns.site]]
name = "nyc"
lat = 40.71
lon = -74.01
ipv4 = ["198.51.100.10"]
[dns.site.health]
urls = ["{}", "{}"]
interval = "300ms"
timeout = "1s"
rise = 1
fall = 3

[dns.locator]
cidr = [
  {{ prefix = "127.0.1.0/24", lat = 48.85, lon = 2.35, country = "FR" }},
  {{ prefix = "10.2.0.0/16", lat = 42.36, lon = -71.06, country = "US" }},
  {{ prefix = "10.1.0.0/16", lat = 48.85, lon = 2.35, country = "FR" }},
]
"#,
        ams[0], ams[1], nyc[0], nyc[1]
    )
}

/// `/steer?url=…` from `from`.
async fn steer(dns_node: &EdgeNode, from: &str, object: &str) -> serde_json::Value {
    let url = format!(
        "{}?url={}",
        dns_node.url("steer", "/steer"),
        url_encode(object)
    );
    let r = Client::bound_to(ip(from)).get(&url).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steering_ranks_the_node_that_holds_an_object_and_explain_tells_why() {
    let o = origin("o").await;
    let nodes: Vec<(EdgeNode, &str, &str)> =
        [("ams", "a1"), ("ams", "a2"), ("nyc", "n1"), ("nyc", "n2")]
            .into_iter()
            .map(|(site, name)| {
                (
                    EdgeNode::start(BIN, &cache_node_config(o.addr(), site, name)),
                    site,
                    name,
                )
            })
            .collect();
    for (n, _, _) in &nodes {
        n.wait_ready(Duration::from_secs(20));
    }
    let state_url = |i: usize| nodes[i].0.admin_url("/site/state");
    let dns_node = EdgeNode::start(
        BIN,
        &steering_dns_config(
            [&state_url(0), &state_url(1)],
            [&state_url(2), &state_url(3)],
        ),
    );
    dns_node.wait_ready(Duration::from_secs(20));
    let c = Client::new();
    let base = |i: usize| format!("http://{}", nodes[i].0.addr("web"));

    // The object, not yet held anywhere: Amsterdam (nearest to a Paris
    // client) first, its owner only; then New York's owner.
    let object = "http://video.cdn.test/obj/title1/seg1.ts?size=200000";
    let path = "/obj/title1/seg1.ts?size=200000";
    // Every node up and named first: an owner computed while a node of a
    // site is not yet named (nodes are up until probed) is another one.
    let ranked = eventually(Duration::from_secs(15), "every node known", || async {
        for ecs in ["127.0.1.0/24", "10.2.3.0/24"] {
            let e = c
                .get(&dns_node.admin_url(&format!(
                    "/explain?client=127.0.0.1&ecs={ecs}&host=video.cdn.test&url=/"
                )))
                .await
                .json();
            let nodes = e["object"]["nodes"].as_array().cloned().unwrap_or_default();
            if nodes.len() != 2
                || !nodes
                    .iter()
                    .all(|n| n["up"] == true && n["name"].is_string())
            {
                return None;
            }
        }
        let s = steer(&dns_node, "127.0.1.9", object).await;
        let t = s["targets"].as_array().cloned().unwrap_or_default();
        (t.len() == 2 && t.iter().all(|x| x["node"].is_string())).then_some(s)
    })
    .await;
    let t = &ranked["targets"];
    assert_eq!(t[0]["site"], "ams", "{ranked}");
    assert_eq!(t[0]["owner"], true);
    assert_eq!(t[0]["holds"], false);
    assert_eq!(t[1]["site"], "nyc");
    assert_eq!(
        ranked["object"],
        "video.cdn.test/obj/title1/seg1.ts?size=200000"
    );
    assert_eq!(ranked["location"]["found"], true);
    let owner = t[0]["node"].as_str().unwrap().to_string();
    let (holder, other) = if owner == "a1" { (1, 0) } else { (0, 1) };
    assert_eq!(nodes[other].2, owner);
    assert_eq!(t[0]["url"], format!("{}{path}", base(other)));

    // The non-owner caches it: once its digest says so, it ranks first,
    // then the owner (which would have to fill it).
    let host = [("host", "video.cdn.test")];
    let r = c.get_with(&format!("{}{path}", base(holder)), &host).await;
    assert_eq!(r.status, 200);
    let ranked = eventually(
        Duration::from_secs(15),
        "the holder ranked first",
        || async {
            let s = steer(&dns_node, "127.0.1.9", object).await;
            (s["targets"][0]["holds"] == true).then_some(s)
        },
    )
    .await;
    let t = &ranked["targets"];
    assert_eq!(t[0]["node"], nodes[holder].2, "{ranked}");
    assert_eq!(t[0]["url"], format!("{}{path}", base(holder)));
    assert_eq!(t[0]["owner"], false, "{ranked}");
    assert_eq!(t[1]["node"], owner.as_str());
    assert_eq!(t[1]["holds"], false);
    assert_eq!(t[2]["site"], "nyc");
    // A player's URL with its CMCD data names the same object (every
    // node's gate takes CMCD out before the cache key); the node it is
    // steered to still gets the data.
    let s = steer(
        &dns_node,
        "127.0.1.9",
        &format!("{object}&CMCD=bl%3D1000%2Cbr%3D3000"),
    )
    .await;
    assert_eq!(s["object"], ranked["object"], "{s}");
    assert_eq!(s["targets"][0]["holds"], true, "{s}");
    assert_eq!(
        s["targets"][0]["url"],
        format!("{}{path}&CMCD=bl%3D1000%2Cbr%3D3000", base(holder))
    );
    // Another object is held by no one: the holder does not rank for it.
    let s = steer(
        &dns_node,
        "127.0.1.9",
        "http://video.cdn.test/obj/title1/seg2.ts",
    )
    .await;
    assert_eq!(s["targets"][0]["holds"], false, "{s}");
    assert_eq!(s["targets"][0]["owner"], true);

    // A client near Boston: New York first.
    let s = steer(&dns_node, "127.0.0.1", object).await;
    assert_eq!(s["location"]["found"], false, "{s}");
    // Any URL on a redirecting route names the object (its Host, its
    // path after the route's `strip_prefix`).
    let s = Client::bound_to(ip("127.0.1.9"))
        .get_with(&format!("{}{path}", dns_node.url("steer", "/go")), &host)
        .await;
    assert_eq!(s.status, 302, "{}", s.text());
    assert_eq!(
        s.header("location").unwrap(),
        format!("{}{path}", base(holder))
    );
    assert_eq!(s.header("cache-control"), Some("no-store"));
    // Hostile steering targets: a precise 400, nothing else.
    for bad in [
        "ftp://x/y",
        "http://",
        "http://a b/",
        "http://user@h/x",
        "/a/../../b%00",
    ] {
        let r = Client::bound_to(ip("127.0.1.9"))
            .get(&format!(
                "{}?url={}",
                dns_node.url("steer", "/steer"),
                url_encode(bad)
            ))
            .await;
        assert!(r.status == 400 || r.status == 200, "{bad}: {}", r.status);
        if r.status == 400 {
            assert!(r.text().starts_with("url: "), "{bad}: {}", r.text());
        }
    }

    // Explain: a located client, with the object.
    let explain = |q: String| {
        let c = c.clone();
        let url = dns_node.admin_url(&format!("/explain?{q}"));
        async move {
            let r = c.get(&url).await;
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()
        }
    };
    let e = explain(format!(
        "client=127.0.1.9&host=video.cdn.test&url={}",
        url_encode(path)
    ))
    .await;
    assert_eq!(e["location"]["found"], true, "{e}");
    assert_eq!(e["location"]["by"], "address");
    assert_eq!(e["location"]["table"], "table");
    assert_eq!(e["location"]["entry"], "127.0.1.0/24");
    assert_eq!(e["location"]["country"], "FR");
    assert_eq!(e["geo_name"], "video.cdn.test.");
    assert_eq!(e["policy"], "nearest");
    assert_eq!(e["sites"][0]["site"], "ams");
    assert_eq!(e["sites"][0]["chosen"], true);
    assert!(e["sites"][0]["distance_km"].as_f64().unwrap() < 500.0);
    assert_eq!(e["sites"][1]["site"], "nyc");
    assert_eq!(e["sites"][1]["why"], "a nearer site answers");
    assert!(e["sites"][1]["distance_km"].as_f64().unwrap() > 5000.0);
    assert!(e["sites"][0]["utilization"].as_f64().is_some(), "{e}");
    assert_eq!(e["dns"][0]["type"], "A");
    assert_eq!(e["dns"][0]["rcode"], "No Error");
    assert_eq!(e["dns"][0]["answers"][0]["data"], "192.0.2.10");
    assert_eq!(e["dns"][0]["ttl"], 20);
    assert_eq!(e["object"]["site"], "ams");
    assert_eq!(e["object"]["owner"], owner.as_str());
    assert_eq!(e["object"]["owner_holds"], false);
    assert_eq!(e["object"]["owner_cache"]["ram"], false, "{e}");
    assert_eq!(e["object"]["owner_cache"]["route"], "objects");
    assert_eq!(
        e["object"]["owner_cache"]["on_miss"][0],
        "origin pool origin"
    );
    let nodes_seen = e["object"]["nodes"].as_array().unwrap();
    assert_eq!(nodes_seen.len(), 2);
    assert!(nodes_seen
        .iter()
        .any(|n| n["name"] == nodes[holder].2 && n["holds"] == true));
    assert_eq!(e["steering"][0]["node"], nodes[holder].2);
    // The holder's own view.
    let l = c
        .get(
            &nodes[holder]
                .0
                .admin_url(&format!("/cache/lookup?url={}", url_encode(object))),
        )
        .await
        .json();
    assert_eq!(l["ram"], true, "{l}");

    // An ECS client near Boston, asked through a resolver that is not located.
    let e = explain("client=127.0.0.1&ecs=10.2.3.0/24&host=video.cdn.test".into()).await;
    assert_eq!(e["location"]["by"], "ecs", "{e}");
    assert_eq!(e["location"]["source_prefix"], 24);
    assert_eq!(e["location"]["entry"], "10.2.0.0/16");
    assert_eq!(e["sites"][0]["site"], "nyc");
    assert_eq!(e["dns"][0]["answers"][0]["data"], "198.51.100.10");
    assert_eq!(e["dns"][0]["ecs_scope"], 16);
    assert!(e["object"].is_null());

    // An unlocatable client: the default site.
    let e = explain("client=192.0.2.77&host=video.cdn.test&format=json".into()).await;
    assert_eq!(e["location"]["found"], false, "{e}");
    assert_eq!(e["pick"], "default");
    assert_eq!(e["sites"][0]["site"], "nyc");
    assert_eq!(
        e["sites"][0]["why"],
        "the client is not located: a default site"
    );
    assert!(e["sites"][0]["distance_km"].is_null());
    assert_eq!(e["dns"][0]["answers"][0]["data"], "198.51.100.10");

    // Bad questions get a precise 400.
    for (q, why) in [
        ("client=nope&host=video.cdn.test", "client"),
        (
            "client=127.0.0.1&ecs=10.0.0.0/99&host=video.cdn.test",
            "ecs",
        ),
        ("client=127.0.0.1&host=", "host"),
        ("client=127.0.0.1&host=video.cdn.test&url=gopher://x", "url"),
    ] {
        let r = c.get(&dns_node.admin_url(&format!("/explain?{q}"))).await;
        assert_eq!(r.status, 400, "{q}");
        assert!(
            r.json()["error"].as_str().unwrap().starts_with(why),
            "{q}: {}",
            r.text()
        );
    }

    let label = "a".repeat(64);
    for (q, why) in [
        ("host=video.cdn.test", "client: required"),
        ("client=127.0.0.1", "host: required"),
        ("client=127.0.0.1&host=a..b.cdn.test", "host"),
        ("client=127.0.0.1&host=video.cdn.test..", "host"),
        ("client=127.0.0.1&host=x.cdn.test:80", "host"),
        ("client=127.0.0.1&host=a%20b.cdn.test", "host"),
        ("client=127.0.0.1&host=a%00b.cdn.test", "host"),
        (&format!("client=127.0.0.1&host={label}.cdn.test"), "host"),
        // Not UTF-8 once decoded: refused, not read as U+FFFD.
        (
            "client=127.0.0.1&host=video.cdn.test&url=/%FF",
            "url: not UTF-8",
        ),
        ("client=127.0.0.1&host=vid%E9o.cdn.test", "host: not UTF-8"),
    ] {
        let r = c.get(&dns_node.admin_url(&format!("/explain?{q}"))).await;
        assert_eq!(r.status, 400, "{q}: {}", r.text());
        assert!(
            r.json()["error"].as_str().unwrap().starts_with(why),
            "{q}: {}",
            r.text()
        );
    }
    for q in ["url=http://video.cdn.test/%FF", "url=/x", ""] {
        let r = c
            .get(&nodes[holder].0.admin_url(&format!("/cache/lookup?{q}")))
            .await;
        assert_eq!(r.status, 400, "{q}: {}", r.text());
        assert!(
            r.json()["error"].as_str().unwrap().starts_with("url: "),
            "{q}"
        );
    }
    // A name in Unicode is asked by its A-labels; an IPv4-mapped client is
    // located by its IPv4 entry.
    let e = explain("client=::ffff:127.0.1.9&host=VID%C3%89O.cdn.test.".into()).await;
    assert_eq!(e["host"], "xn--vido-dpa.cdn.test", "{e}");
    assert_eq!(e["location"]["entry"], "127.0.1.0/24", "{e}");
    // `url=` scheme-relative is on the request's scheme (RFC 3986 §4.2),
    // not a path; bytes that are not UTF-8 are a 400.
    let s = steer(
        &dns_node,
        "127.0.1.9",
        "//video.cdn.test/obj/title1/seg1.ts?size=200000",
    )
    .await;
    assert_eq!(
        s["object"], "video.cdn.test/obj/title1/seg1.ts?size=200000",
        "{s}"
    );
    let r = Client::bound_to(ip("127.0.1.9"))
        .get(&format!("{}?url=/obj/%FF", dns_node.url("steer", "/steer")))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.text(), "url: not UTF-8 once percent-decoded\n");

    // `edge explain` prints the same as text (its config names the bound
    // admin address).
    let config = std::fs::read_to_string(dns_node.config_path())
        .unwrap()
        .replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{}\"", dns_node.addr("admin")),
            1,
        );
    let file = dns_node.dir().join("explain.toml");
    std::fs::write(&file, config).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["explain", "-c"])
        .arg(&file)
        .args([
            "--client",
            "127.0.1.9",
            "--host",
            "video.cdn.test",
            "--url",
            path,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("located by its address 127.0.1.9 in the table entry 127.0.1.0/24"),
        "{text}"
    );
    assert!(text.contains("* ams"), "{text}");
    assert!(
        text.contains(&format!("steer 1: {}{path}", base(holder))),
        "{text}"
    );

    // The digest and headroom metrics.
    let m = c.get(&nodes[holder].0.admin_url("/metrics")).await.text();
    assert!(metric_sum(&m, "edge_site_digest_keys", &[]) >= 1.0, "{m}");
    assert!(metric_sum(&m, "edge_site_digest_bytes", &[]) >= 128.0);
    let m = c.get(&dns_node.admin_url("/metrics")).await.text();
    assert!(m.contains("edge_dns_node_headroom{"), "{m}");
    assert!(metric_sum(&m, "edge_dns_geo_answers_total", &["site=\"ams\""]) >= 1.0);
}

/// What a fake node answers to `GET …/site/digest`.
#[derive(Clone)]
enum FakeDigest {
    /// This head, then `body`, then the connection closes.
    Answer(String, Vec<u8>),
    /// This head, then one byte every 500 ms, for ever.
    Drip(String),
}

/// A stand-in for a node's admin API: `…/site/state` answers `state`
/// (200, JSON), `…/site/digest` as `digest` says.
async fn fake_node(
    state: std::sync::Arc<parking_lot::Mutex<String>>,
    digest: std::sync::Arc<parking_lot::Mutex<FakeDigest>>,
) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let state = state.lock().clone();
            let digest = digest.lock().clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&head).to_string();
                if line.contains("/site/state ") {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        state.len()
                    );
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(state.as_bytes()).await;
                } else {
                    match digest {
                        FakeDigest::Answer(head, body) => {
                            let _ = s.write_all(head.as_bytes()).await;
                            let _ = s.write_all(&body).await;
                        }
                        FakeDigest::Drip(head) => {
                            let _ = s.write_all(head.as_bytes()).await;
                            loop {
                                tokio::time::sleep(Duration::from_millis(500)).await;
                                if s.write_all(&[0]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// A node that sends its digest a byte at a time holds neither its rise
/// nor its withdrawal up (the digest is fetched beside the probes, which
/// read health on time), and hostile digests (wrong or absurd headers,
/// impossible lengths, a body shorter or longer than said) are refused
/// with a reason in the log and in `/explain`, the node still steered by
/// its health.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_digest_neither_delays_health_nor_hurts_steering() {
    let serving = |yes: bool, generation: u64| {
        format!(
            r#"{{"serving": {yes}, "node": "x1", "url": "http://192.0.2.1:8080", "digest": {{"generation": {generation}}}}}"#
        )
    };
    let head = |fields: &str| format!("HTTP/1.1 200 OK\r\n{fields}connection: close\r\n\r\n");
    let good_fields =
        "edge-digest-generation: 1\r\nedge-digest-hashes: 7\r\nedge-digest-keys: 1\r\n";
    let state = std::sync::Arc::new(parking_lot::Mutex::new(serving(true, 1)));
    let digest = std::sync::Arc::new(parking_lot::Mutex::new(FakeDigest::Drip(head(&format!(
        "{good_fields}content-length: 1024\r\n"
    )))));
    let addr = fake_node(state.clone(), digest.clone()).await;
    let url = format!("http://{addr}/site/state");
    let config = dns_config_with(&url, "100ms", 1).replace(
        "[dns]\n",
        "[[listener]]\nname = \"steer\"\nkind = \"http\"\naddress = \"127.0.0.1:0\"\n\n[[route]]\nname = \"steer\"\nmatch = { path_exact = \"/steer\" }\nsteer = \"list\"\n\n[dns]\n",
    );
    let dns_node = EdgeNode::start(BIN, &config);
    dns_node.wait_ready(Duration::from_secs(20));
    let dns = DnsClient::new(dns_node.addr("dns"));
    let ams = || async { (video(&dns).await == [ip("192.0.2.10")]).then_some(()) };
    let nyc = || async { (video(&dns).await == [ip("198.51.100.10")]).then_some(()) };
    // The digest takes 10 s and more to come (it never does): the site is
    // up at its first probes all the same, and down at once when the node
    // says it cannot serve.
    eventually(Duration::from_secs(3), "Amsterdam answered", ams).await;
    for _ in 0..2 {
        *state.lock() = serving(false, 1);
        eventually(Duration::from_secs(3), "Amsterdam withdrawn", nyc).await;
        *state.lock() = serving(true, 1);
        eventually(Duration::from_secs(3), "Amsterdam back", ams).await;
    }
    dns_node.wait_for_line("the digest took too long", Duration::from_secs(20));

    let c = Client::new();
    let steer_url = format!(
        "{}?url={}",
        dns_node.url("steer", "/steer"),
        url_encode("http://video.cdn.test/a.ts")
    );
    let bits = vec![0u8; 1024];
    let hostile = [
        ("no generation", head("edge-digest-hashes: 7\r\nedge-digest-keys: 1\r\ncontent-length: 1024\r\n"), bits.clone(), "no number in edge-digest-generation"),
        ("absurd hashes", head("edge-digest-generation: 1\r\nedge-digest-hashes: 99999999999\r\nedge-digest-keys: 1\r\ncontent-length: 1024\r\n"), bits.clone(), "99999999999 hashes"),
        ("no hashes", head("edge-digest-generation: 1\r\nedge-digest-hashes: 0\r\nedge-digest-keys: 1\r\ncontent-length: 1024\r\n"), bits.clone(), "0 hashes per key"),
        ("huge length", head(&format!("{good_fields}content-length: 1000000000000\r\n")), Vec::new(), "a digest of 1000000000000 bytes"),
        ("odd length", head(&format!("{good_fields}content-length: 1001\r\n")), vec![0; 1001], "a digest of 1001 bytes"),
        ("short body", head(&format!("{good_fields}content-length: 1024\r\n")), vec![0; 100], "error reading a body"),
        ("unframed odd body", head(good_fields), vec![0; 1004], "a digest of 1004 bytes"),
    ];
    // (Each reason differs from the one before: a check never passes on a
    // fetch not yet made.)
    for (generation, (what, head, body, why)) in (2u64..).zip(hostile) {
        *digest.lock() = FakeDigest::Answer(head, body);
        *state.lock() = serving(true, generation);
        let e = eventually(Duration::from_secs(20), what, || async {
            let e = c
                .get(&dns_node.admin_url("/explain?client=127.0.1.9&host=video.cdn.test&url=/a.ts"))
                .await
                .json();
            let error = e["object"]["nodes"][0]["digest_error"]
                .as_str()?
                .to_string();
            error.contains(why).then_some(e)
        })
        .await;
        assert_eq!(e["object"]["nodes"][0]["up"], true, "{what}: {e}");
        assert!(e["object"]["nodes"][0]["holds"].is_null(), "{what}: {e}");
        // Steered by health: the node, as its owner, named by its URL.
        let s = c.get(&steer_url).await.json();
        assert_eq!(s["targets"][0]["node"], "x1", "{what}: {s}");
        assert_eq!(s["targets"][0]["url"], "http://192.0.2.1:8080/a.ts");
        assert_eq!(video(&dns).await, [ip("192.0.2.10")], "{what}");
    }
    // A good digest after all that is taken (once the retry delay is over).
    let bits = vec![0xffu8; 1024];
    *digest.lock() = FakeDigest::Answer(
        head(&format!("{good_fields}content-length: 1024\r\n")),
        bits,
    );
    *state.lock() = serving(true, 100);
    eventually(Duration::from_secs(20), "a good digest", || async {
        let s = c.get(&steer_url).await.json();
        (s["targets"][0]["holds"] == true).then_some(())
    })
    .await;
    // A node's URL is the prefix of every URL steering gives: a trailing
    // `/` is dropped; one with a CR LF (a header in a `Location`), a path
    // or a user is not the node's, and the site is named by its address.
    // (Each answer differs from the one before: a check never passes on
    // a state not yet polled.)
    for (url, want) in [
        (
            "http://192.0.2.1:8080/\\r\\nSet-Cookie: a=1",
            "http://192.0.2.10/a.ts",
        ),
        ("HTTP://192.0.2.1:8081/", "http://192.0.2.1:8081/a.ts"),
        ("http://192.0.2.1:8080/elsewhere", "http://192.0.2.10/a.ts"),
        ("http://192.0.2.1:8082/", "http://192.0.2.1:8082/a.ts"),
        ("http://user@192.0.2.1:8080", "http://192.0.2.10/a.ts"),
    ] {
        *state.lock() = format!(r#"{{"serving": true, "node": "x1", "url": "{url}"}}"#);
        eventually(Duration::from_secs(10), url, || async {
            let s = c.get(&steer_url).await.json();
            (s["targets"][0]["url"] == want).then_some(())
        })
        .await;
    }
    // A node that gives no name (no `[site]`) has no owner: the site is
    // steered to by its up nodes all the same.
    *state.lock() = r#"{"serving": true, "url": "http://192.0.2.1:8080"}"#.to_string();
    eventually(Duration::from_secs(10), "a node without a name", || async {
        let s = c.get(&steer_url).await.json();
        (s["targets"][0]["url"] == "http://192.0.2.1:8080/a.ts"
            && s["targets"][0]["node"].is_null())
        .then_some(())
    })
    .await;
    assert!(!dns_node.output().contains("panicked"));
}

/// The answers for 100 client subnets of 10.1.0.0/16 (near Paris, so
/// Amsterdam's): how many got New York.
async fn moved_to_nyc(dns: &DnsClient) -> usize {
    let mut n = 0;
    for i in 0..100u32 {
        let m = dns
            .clone()
            .udp(&DnsQuery::new("video.cdn.test.", DnsType::A).subnet(&format!("10.1.{i}.0"), 24))
            .await
            .unwrap();
        if addresses(&m) == [ip("198.51.100.10")] {
            n += 1;
        }
    }
    n
}

/// Two sites of two nodes each: a bounded load above the Amsterdam nodes'
/// egress capacity moves Amsterdam's clients to New York within a few
/// polls, they stay there while the load holds (answers do not flap), and
/// come back once it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_above_capacity_moves_a_sites_clients_and_they_come_back() {
    let o = origin("o").await;
    let nodes: Vec<EdgeNode> = [("ams", "a1"), ("ams", "a2"), ("nyc", "n1"), ("nyc", "n2")]
        .into_iter()
        .map(|(site, name)| {
            // Amsterdam's nodes can send 4 Mbit/s each.
            let config = cache_node_config(o.addr(), site, name);
            let config = if site == "ams" {
                config.replace("egress = \"10 Gbit/s\"", "egress = \"4 Mbit/s\"")
            } else {
                config
            };
            EdgeNode::start(BIN, &config)
        })
        .collect();
    for n in &nodes {
        n.wait_ready(Duration::from_secs(20));
    }
    let state_url = |i: usize| nodes[i].admin_url("/site/state");
    let dns_node = EdgeNode::start(
        BIN,
        &steering_dns_config(
            [&state_url(0), &state_url(1)],
            [&state_url(2), &state_url(3)],
        ),
    );
    dns_node.wait_ready(Duration::from_secs(20));
    let dns = DnsClient::new(dns_node.addr("dns"));
    let c = Client::new();
    eventually(
        Duration::from_secs(15),
        "Amsterdam answers its clients",
        || async { (moved_to_nyc(&dns).await == 0).then_some(()) },
    )
    .await;

    // The load: 200 KB hits from both Amsterdam nodes, 20 a second
    // (≈ 16 Mbit/s each: 4 × capacity), for at most 60 s or until told.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        let urls: Vec<String> = (0..2)
            .map(|i| format!("http://{}/obj/load.bin?size=200000", nodes[i].addr("web")))
            .collect();
        tokio::spawn(async move {
            let c = Client::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && tokio::time::Instant::now() < deadline
            {
                tick.tick().await;
                for u in &urls {
                    let _ = c.request(http::Method::GET, u, &[], Vec::new()).await;
                }
            }
        })
    };
    eventually(
        Duration::from_secs(30),
        "every Amsterdam client shed",
        || async {
            let sites = c.get(&dns_node.admin_url("/dns/sites")).await.json();
            (sites[0]["shed_per_mille"] == 1000).then_some(())
        },
    )
    .await;
    // Steady load, steady answers.
    for _ in 0..3 {
        assert_eq!(moved_to_nyc(&dns).await, 100);
    }
    let sites = c.get(&dns_node.admin_url("/dns/sites")).await.json();
    assert!(sites[0]["utilization"].as_f64().unwrap() > 0.9, "{sites}");
    // A Paris client is steered to New York too while Amsterdam sheds it.
    let s = steer(&dns_node, "127.0.1.9", "http://video.cdn.test/obj/x.ts").await;
    assert_eq!(s["targets"][0]["site"], "nyc", "{s}");

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.await.unwrap();
    eventually(Duration::from_secs(30), "every client back", || async {
        let sites = c.get(&dns_node.admin_url("/dns/sites")).await.json();
        (sites[0]["shed_per_mille"] == 0).then_some(())
    })
    .await;
    assert_eq!(moved_to_nyc(&dns).await, 0);
}
