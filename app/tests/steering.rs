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
