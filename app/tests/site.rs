//! Sites: the shield tier. Real `edge` processes on loopback: two nodes of
//! different sites behind one shield node, in front of a scripted origin
//! that counts what it is asked.

// Helpers in test files may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use edge_testkit::{Client, EdgeNode, RawConn, Reply, Scripted};
use http::Method;

const BIN: &str = env!("CARGO_BIN_EXE_edge");
const TOKEN: &str = "site-test-token-0123456789";

/// A node of `site` whose cached route `/v/` (prefix stripped for the
/// origin) goes to `shield` first, when given.
fn node(o: &Scripted, site: &str, shield: Option<SocketAddr>, fallback: &str) -> String {
    let shield_pool = match shield {
        Some(a) => format!("[[pool]]\nname = \"shield\"\nbackends = [{{ address = \"{a}\" }}]\n"),
        None => String::new(),
    };
    let shield_key = match shield {
        Some(_) => format!("shield = \"shield\"\nshield_fallback = \"{fallback}\"\n"),
        None => String::new(),
    };
    format!(
        r#"
[server]
threads = 2
access_log = false

[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"

[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:0"

[[pool]]
name = "origin"
backends = [{{ address = "{}" }}]

{shield_pool}

[[route]]
name = "video"
match = {{ path_prefix = "/v/" }}
strip_prefix = "/v"
pool = "origin"
[route.cache]

[cache]
ram_size = "64 MiB"

[site]
name = "{site}"
{shield_key}
"#,
        o.addr()
    )
}

fn start(config: &str) -> EdgeNode {
    let node = EdgeNode::start(BIN, config);
    node.wait_ready(Duration::from_secs(30));
    node
}

fn segment(o: &Scripted, i: usize) {
    o.set(
        &format!("/seg/{i}.ts"),
        Reply::ok(&format!("segment {i}"), &[("cache-control", "max-age=600")]),
    );
}

/// Clients ask every node for the same host name (the cache key holds it).
const HOST: (&str, &str) = ("host", "video.test");

async fn fetch(c: &Client, n: &EdgeNode, i: usize) {
    let r = c
        .get_with(&n.url("web", &format!("/v/seg/{i}.ts")), &[HOST])
        .await;
    assert_eq!(
        (r.status, r.text()),
        (200, format!("segment {i}")),
        "segment {i}"
    );
}

async fn reload(n: &EdgeNode, config: &str) {
    n.write_config(config);
    let r = Client::new()
        .request(
            Method::POST,
            &n.admin_url("/reload"),
            &[("authorization", &format!("Bearer {TOKEN}"))],
            "",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Two sites share a shield: every object reaches the origin once, however
/// many times and wherever it is asked; the shield is asked with the
/// client's path (it strips the prefix itself), and the origin sees both
/// sites in `CDN-Loop` (RFC 8586). The shield gone, misses go to the
/// origin (`shield_fallback = "origin"`) and no client sees an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misses_go_through_the_shield_once_and_fall_back_to_the_origin() {
    let o = Scripted::start().await;
    for i in 0..30 {
        segment(&o, i);
    }
    let shield = start(&node(&o, "shield", None, "origin"));
    let eu = start(&node(&o, "eu", Some(shield.addr("web")), "origin"));
    let us = start(&node(&o, "us", Some(shield.addr("web")), "origin"));
    let c = Client::new();
    for _ in 0..3 {
        for i in 0..20 {
            fetch(&c, &eu, i).await;
            fetch(&c, &us, i).await;
        }
    }
    for i in 0..20 {
        assert_eq!(o.count(&format!("/seg/{i}.ts")), 1, "segment {i}");
    }
    let head = String::from_utf8_lossy(&o.requests("/seg/0.ts")[0].head).to_ascii_lowercase();
    assert!(
        head.contains("cdn-loop: eu, shield") || head.contains("cdn-loop: us, shield"),
        "{head}"
    );

    drop(shield);
    for i in 20..30 {
        fetch(&c, &eu, i).await;
        fetch(&c, &eu, i).await;
        assert_eq!(o.count(&format!("/seg/{i}.ts")), 1, "segment {i}");
    }
}

/// `shield_fallback = "fail"`: with the shield unreachable a miss is a
/// gateway error and the origin is never asked; a hit is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_that_must_not_reach_the_origin_gets_a_gateway_error_without_its_shield() {
    let o = Scripted::start().await;
    segment(&o, 1);
    segment(&o, 2);
    let shield = start(&node(&o, "shield", None, "origin"));
    let eu = start(&node(&o, "eu", Some(shield.addr("web")), "fail"));
    let c = Client::new();
    fetch(&c, &eu, 1).await;
    drop(shield);
    fetch(&c, &eu, 1).await;
    let r = c.get_with(&eu.url("web", "/v/seg/2.ts"), &[HOST]).await;
    // 502 while the dead shield is tried, 503 once it is known down.
    assert!(matches!(r.status, 502 | 503), "{}", r.status);
    assert_eq!(o.count("/seg/2.ts"), 0);
    assert_eq!(o.count("/seg/1.ts"), 1);
}

/// Shields pointing at each other (a mistake) do not loop: a request that
/// has been through a site already goes to the origin from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shields_that_point_at_each_other_do_not_loop() {
    let o = Scripted::start().await;
    for i in 0..4 {
        segment(&o, i);
    }
    let eu = start(&node(&o, "eu", None, "origin"));
    let us = start(&node(&o, "us", Some(eu.addr("web")), "origin"));
    reload(&eu, &node(&o, "eu", Some(us.addr("web")), "origin")).await;
    let c = Client::new();
    for i in 0..4 {
        let n = if i % 2 == 0 { &eu } else { &us };
        fetch(&c, n, i).await;
        fetch(&c, &eu, i).await;
        fetch(&c, &us, i).await;
        assert_eq!(o.count(&format!("/seg/{i}.ts")), 1, "segment {i}");
    }
}

/// `CDN-Loop` as clients and other CDNs send it: several lines, parameters,
/// bytes that are not text. Every member is passed on (RFC 8586: none may
/// be dropped) and shields pointing at each other still stop after one
/// round, whatever the garbage around their names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cdn_loop_line_is_passed_on_and_garbage_does_not_make_a_loop() {
    let o = Scripted::start().await;
    for i in 0..2 {
        segment(&o, i);
    }
    let eu = start(&node(&o, "eu", None, "origin"));
    let us = start(&node(&o, "us", Some(eu.addr("web")), "origin"));
    reload(&eu, &node(&o, "eu", Some(us.addr("web")), "origin")).await;
    for (i, lines) in [
        &b"CDN-Loop: foo\r\ncdn-loop: bar; v=1\r\n"[..],
        &b"CDN-Loop: caf\xe9\xff, bar\r\n"[..],
    ]
    .iter()
    .enumerate()
    {
        let mut conn = RawConn::connect(eu.addr("web")).await;
        let mut req = format!("GET /v/seg/{i}.ts HTTP/1.1\r\nHost: video.test\r\n").into_bytes();
        req.extend_from_slice(lines);
        req.extend_from_slice(b"\r\n");
        conn.send(&req).await;
        let r = conn.response(false).await.unwrap();
        assert_eq!((r.status, r.text()), (200, format!("segment {i}")), "{i}");
        let seen = o.requests(&format!("/seg/{i}.ts"));
        assert_eq!(seen.len(), 1, "{i}");
        let head = String::from_utf8_lossy(&seen[0].head).to_ascii_lowercase();
        let loop_line = head
            .lines()
            .filter(|l| l.starts_with("cdn-loop:"))
            .collect::<Vec<_>>();
        assert_eq!(loop_line.len(), 1, "{head}");
        assert!(loop_line[0].contains("bar"), "{head}");
        assert!(loop_line[0].ends_with("eu, us, eu"), "{head}");
    }
}

/// The route's `add` response edits are made once however many tiers an
/// answer passed: the shield made them, the node in front takes them back
/// before keeping the answer and makes them itself (miss and hit alike).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_add_edit_appears_once_on_answers_through_the_shield() {
    let o = Scripted::start().await;
    segment(&o, 1);
    let with_add = |config: String| {
        config.replace(
            "[route.cache]",
            "[route.response_headers]\nadd = { \"x-added\" = \"edge\" }\n[route.cache]",
        )
    };
    let shield = start(&with_add(node(&o, "shield", None, "origin")));
    let eu = start(&with_add(node(
        &o,
        "eu",
        Some(shield.addr("web")),
        "origin",
    )));
    let c = Client::new();
    for what in ["miss", "hit"] {
        let r = c.get_with(&eu.url("web", "/v/seg/1.ts"), &[HOST]).await;
        assert_eq!(r.status, 200, "{what}");
        let added: Vec<_> = r.headers.get_all("x-added").iter().collect();
        assert_eq!(added, ["edge"], "{what}");
    }
    assert_eq!(o.count("/seg/1.ts"), 1);
}

/// A `host` on the shield pool does not replace the client's Host toward
/// the shield: the shield routes and keys its cache by it, and one Host for
/// every name would serve one site's object for another's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shield_gets_the_clients_host_whatever_its_pool_says() {
    let o = Scripted::start().await;
    segment(&o, 1);
    let shield = start(&node(&o, "shield", None, "origin"));
    let eu = start(&node(&o, "eu", Some(shield.addr("web")), "origin").replace(
        "name = \"shield\"\n",
        "name = \"shield\"\nhost = \"shield.internal\"\n",
    ));
    let c = Client::new();
    for host in ["a.test", "b.test"] {
        let r = c
            .get_with(&eu.url("web", "/v/seg/1.ts"), &[("host", host)])
            .await;
        assert_eq!(r.status, 200, "{host}");
    }
    let seen: Vec<String> = o
        .requests("/seg/1.ts")
        .iter()
        .map(|r| r.head_text().to_ascii_lowercase())
        .collect();
    assert_eq!(seen.len(), 2, "one origin request per host: {seen:?}");
    assert!(seen[0].contains("host: a.test"), "{}", seen[0]);
    assert!(seen[1].contains("host: b.test"), "{}", seen[1]);
}

/// Falling back from a dead shield starts the request afresh in the
/// route's own pool: the shield's failed connection does not use up the
/// origin's retries (one retry allowed: a 502 from one origin backend is
/// retried on the other).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fallback_keeps_the_origins_own_retries() {
    let good = Scripted::start().await;
    let bad = Scripted::start().await;
    for i in 0..6 {
        segment(&good, i);
        bad.set(&format!("/seg/{i}.ts"), Reply::new(502, "bad\n", &[]));
    }
    let dead_addr = edge_testkit::refused_addr();
    let config = format!(
        r#"
[server]
threads = 2
access_log = false

[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:0"

[[pool]]
name = "origin"
backends = [{{ address = "{}" }}, {{ address = "{}" }}]
[pool.retry]
attempts = 1
on = ["gateway_error"]
[pool.outlier_detection]
max_ejection_percent = 0

[[pool]]
name = "shield"
backends = [{{ address = "{dead_addr}" }}]
[pool.outlier_detection]
max_ejection_percent = 0

[[route]]
name = "video"
match = {{ path_prefix = "/v/" }}
strip_prefix = "/v"
pool = "origin"
[route.cache]

[cache]
ram_size = "64 MiB"

[site]
name = "eu"
shield = "shield"
"#,
        good.addr(),
        bad.addr()
    );
    let eu = start(&config);
    let c = Client::new();
    for i in 0..6 {
        fetch(&c, &eu, i).await;
    }
    // The 502 backend was asked (and its answers retried).
    let asked: usize = (0..6).map(|i| bad.count(&format!("/seg/{i}.ts"))).sum();
    assert!(asked > 0);
}
