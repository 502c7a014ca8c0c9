//! Protection end to end: rate limits (local and cluster-wide in a real
//! Redis), request head and body limits, and the slowloris head deadline.

// Helpers in test files may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use edge_testkit::{
    logged_bytes, metric_sum, origin, Client, EdgeNode, RedisServer, RunningOrigin, Stall,
};
use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_edge");

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

fn config(o: &RunningOrigin, extra: &str) -> String {
    format!(
        r#"
[server]
threads = 2
access_log = false

[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:0"
[listener.limits]
header_timeout = "2s"
max_headers = 50
max_request_line = 2048
max_body = 1000000

[[pool]]
name = "p"
backends = [{{ address = "{}" }}]

{extra}
"#,
        o.addr()
    )
}

async fn start(config: &str) -> EdgeNode {
    let node = EdgeNode::start(BIN, config);
    node.wait_ready(Duration::from_secs(30));
    node
}

const PER_IP: &str = r#"
[[route]]
name = "limited"
match = { path_prefix = "/obj/" }
pool = "p"
rate_limits = ["per-ip"]

[[route]]
name = "trial"
match = { path_prefix = "/trial/" }
strip_prefix = "/trial"
pool = "p"
rate_limits = ["trial"]

[[rate_limit]]
name = "per-ip"
key = ["client_ip"]
rate = "6/m"
burst = 5
exempt = ["127.0.0.3/32"]

[[rate_limit]]
name = "trial"
key = ["client_ip"]
rate = "1/m"
burst = 2
mode = "log_only"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_limit_passes_the_counted_number_with_headers() {
    let o = origin("o").await;
    let node = start(&config(&o, PER_IP)).await;
    let url = node.url("web", "/obj/a?size=10");
    let c = Client::bound_to(ip(1));
    let mut passed = 0;
    let mut first_ok = None;
    let mut first_limited = None;
    // At 6 a minute (one per 10 s) with a burst of 5, 30 requests in a row
    // pass 5, whatever the machine's speed (a run slower than 10 s could
    // pass one more: the count is exact only when it was quicker, and
    // never lower).
    let started = Instant::now();
    for _ in 0..30 {
        let r = c.get(&url).await;
        match r.status {
            200 => {
                passed += 1;
                first_ok.get_or_insert(r);
            }
            429 => {
                first_limited.get_or_insert(r);
            }
            s => panic!("unexpected status {s}"),
        }
    }
    let refills = (started.elapsed().as_secs_f64() / 10.0).floor() as usize;
    assert!(
        (5..=5 + refills).contains(&passed),
        "{passed} of 30 passed (burst 5, {refills} refills)"
    );
    let ok = first_ok.unwrap();
    assert_eq!(ok.header("ratelimit-limit"), Some("5"));
    assert_eq!(ok.header("ratelimit-remaining"), Some("4"));
    let limited = first_limited.unwrap();
    assert_eq!(limited.header("ratelimit-remaining"), Some("0"));
    // The next request is allowed a refill interval (10 s) after the burst.
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry), "retry-after {retry}");
    assert!(limited.header("ratelimit-reset").is_some());

    // Another client has its own bucket; an exempt one has none.
    let other = Client::bound_to(ip(2));
    for _ in 0..5 {
        assert_eq!(other.get(&url).await.status, 200);
    }
    let exempt = Client::bound_to(ip(3));
    for _ in 0..30 {
        assert_eq!(exempt.get(&url).await.status, 200);
    }

    // Log-only: everything passes, and the would-be refusals are counted.
    for _ in 0..5 {
        assert_eq!(
            c.get(&node.url("web", "/trial/obj/x?size=1")).await.status,
            200
        );
    }
    let metrics = c.get(&node.admin_url("/metrics")).await.text();
    assert_eq!(
        metric_sum(
            &metrics,
            "edge_ratelimit_decisions_total",
            &["limit=\"trial\"", "result=\"would_limit\""]
        ),
        3.0
    );
    // Local limits never talk to Redis: no Redis gauge to alert on.
    assert!(!metrics.contains("edge_ratelimit_redis_up"), "{metrics}");
    assert_eq!(
        metric_sum(
            &metrics,
            "edge_ratelimit_decisions_total",
            &["limit=\"per-ip\"", "result=\"exempt\""]
        ),
        30.0
    );
}

fn cluster_config(o: &RunningOrigin, redis: &str, node: &str, peer: &str) -> String {
    config(
        o,
        &format!(
            r#"
[site]
name = "ams"
node = "{node}"
peer = [{{ name = "{peer}", address = "127.0.0.1:1" }}]

[redis]
url = "{redis}"
timeout = "200ms"

[[route]]
name = "api"
pool = "p"
rate_limits = ["shared"]

[[rate_limit]]
name = "shared"
key = [{{ header = "X-Api-Key" }}]
rate = "1/m"
burst = 10
scope = "cluster"
"#
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_limit_in_redis_and_fall_back_when_it_dies() {
    let mut redis = RedisServer::start();
    let o = origin("o").await;
    let a = start(&cluster_config(&o, &redis.url(), "a", "b")).await;
    let b = start(&cluster_config(&o, &redis.url(), "b", "a")).await;
    let c = Client::new();
    let key = [("x-api-key", "k1")];
    let mut passed = 0;
    for i in 0..30 {
        let node = if i % 2 == 0 { &a } else { &b };
        let r = c.get_with(&node.url("web", "/obj/c?size=1"), &key).await;
        if r.status == 200 {
            passed += 1;
        } else {
            assert_eq!(r.status, 429);
        }
    }
    // One bucket of 10 for both nodes (plus at most one refill at 1/min).
    assert!(
        (10..=11).contains(&passed),
        "{passed} passed across two nodes"
    );

    redis.kill();
    // Without Redis each node counts its share (10 / 2 nodes) locally, and
    // answers without waiting on Redis each time.
    let key = [("x-api-key", "k2")];
    for node in [&a, &b] {
        let mut passed = 0;
        for _ in 0..10 {
            let r = c.get_with(&node.url("web", "/obj/c?size=1"), &key).await;
            if r.status == 200 {
                passed += 1;
            }
        }
        assert_eq!(passed, 5, "local share while Redis is down");
        let metrics = c.get(&node.admin_url("/metrics")).await.text();
        assert!(metric_sum(&metrics, "edge_ratelimit_local_fallback_total", &[]) >= 10.0);
        assert_eq!(metric_sum(&metrics, "edge_ratelimit_redis_up", &[]), 0.0);
        assert!(node.output().contains("Redis unreachable"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_and_bodies_are_refused() {
    let o = origin("o").await;
    let routes = r#"
[[route]]
name = "upload"
match = { path_prefix = "/echo" }
pool = "p"
max_body = 100

[[route]]
name = "all"
pool = "p"
"#;
    let node = start(&config(&o, routes)).await;
    let c = Client::new();
    let many: Vec<(String, String)> = (0..60).map(|i| (format!("x-h{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = c.get_with(&node.url("web", "/obj/a?size=1"), &many).await;
    assert_eq!(r.status, 431);
    let long = format!("/obj/{}", "a".repeat(3000));
    assert_eq!(c.get(&node.url("web", &long)).await.status, 414);
    let r = c
        .request(
            Method::POST,
            &node.url("web", "/echo"),
            &[],
            "x".repeat(101),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 413);
    let r = c
        .request(
            Method::POST,
            &node.url("web", "/echo"),
            &[],
            "x".repeat(100),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);

    // A chunked body with no declared length is cut at the limit.
    let mut s = TcpStream::connect(node.addr("web")).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..3 {
        s.write_all(b"40\r\n").await.unwrap();
        s.write_all(&[b'y'; 64]).await.unwrap();
        s.write_all(b"\r\n").await.unwrap();
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut reply)).await;
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_is_cut_off_while_others_are_served() {
    let o = origin("o").await;
    let node = start(&config(&o, "[[route]]\nname = \"all\"\npool = \"p\"\n")).await;
    let addr = node.addr("web");
    let slow = tokio::spawn(async move {
        let started = Instant::now();
        let mut s = TcpStream::connect(addr).await.unwrap();
        let head = b"GET /obj/a?size=1 HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        for b in head.iter() {
            if s.write_all(&[*b]).await.is_err() {
                break;
            }
            // One byte every 250 ms: each read is quick, the head is not.
            let mut probe = [0u8; 64];
            match tokio::time::timeout(Duration::from_millis(250), s.read(&mut probe)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return (true, started.elapsed()),
                Ok(Ok(_)) => return (false, started.elapsed()),
                Err(_) => {}
            }
        }
        (false, started.elapsed())
    });
    // Meanwhile a normal client is served.
    let c = Client::new();
    for _ in 0..5 {
        assert_eq!(c.get(&node.url("web", "/obj/a?size=1")).await.status, 200);
    }
    let (cut, after) = slow.await.unwrap();
    assert!(cut, "the slow client was not disconnected ({after:?})");
    assert!(
        after >= Duration::from_secs(2),
        "cut before the header timeout: {after:?}"
    );
}

/// One decoration for every serving path: a rate-limited route with
/// response header edits gets `RateLimit-*` and the edits on a proxied
/// miss, a fresh RAM hit (the fast path), a sliced object and its 416,
/// edge's own 502, a direct response and a redirect; each request counted
/// once (remaining goes down by one per request, whichever path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_serving_path_carries_the_rate_limit_fields_and_header_edits() {
    let o = origin("o").await;
    let extra = r#"
[[pool]]
name = "dead"
backends = [{ address = "127.0.0.1:9" }]

[[route]]
name = "cached"
match = { path_prefix = "/obj/" }
pool = "p"
rate_limits = ["lots"]
[route.cache]
slice = true
[route.response_headers]
set = { "x-decorated" = "yes" }
add = { "x-added" = "once" }

[[route]]
name = "gone"
match = { path_prefix = "/gone/" }
pool = "dead"
rate_limits = ["lots"]
[route.response_headers]
set = { "x-decorated" = "yes" }

[[route]]
name = "hello"
match = { path_prefix = "/hello" }
respond = { status = 200, body = "hi\n" }
rate_limits = ["lots"]
[route.response_headers]
set = { "x-decorated" = "yes" }

[[route]]
name = "moved"
match = { path_prefix = "/moved" }
redirect = { to = "/hello" }
rate_limits = ["lots"]
[route.response_headers]
set = { "x-decorated" = "yes" }

[[rate_limit]]
name = "lots"
key = ["client_ip"]
rate = "1/m"
burst = 100

[cache]
ram_size = "64 MiB"
ram_max_object = "8 MiB"
slice_size = "1 MiB"
slice_threshold = "2 MiB"
"#;
    let node = start(&config(&o, extra)).await;
    let c = Client::bound_to(ip(7));
    let mut remaining = 100;
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], u16, &'a str);
    let cases: [Case; 8] = [
        ("/obj/d.ts?size=2000", &[], 200, "proxied miss"),
        ("/obj/d.ts?size=2000", &[], 200, "RAM hit, fast path"),
        (
            "/obj/big.mp4?size=3000000",
            &[("range", "bytes=0-99")],
            206,
            "slices",
        ),
        (
            "/obj/big.mp4?size=3000000",
            &[("range", "bytes=0-99")],
            206,
            "slices, cached",
        ),
        (
            "/obj/big.mp4?size=3000000",
            &[("range", "bytes=5000000-")],
            416,
            "slices, 416",
        ),
        ("/gone/x", &[], 502, "edge's own 502"),
        ("/hello", &[], 200, "direct response"),
        ("/moved", &[], 302, "redirect"),
    ];
    for (path, headers, status, what) in cases {
        let r = c
            .request(Method::GET, &node.url("web", path), headers, "")
            .await
            .unwrap();
        assert_eq!(r.status, status, "{what}");
        remaining -= 1;
        assert_eq!(r.header("x-decorated"), Some("yes"), "{what}");
        if path.starts_with("/obj/") {
            // An `add` edit is made once, slices too (not once more by
            // each slice's subrequest).
            assert_eq!(r.headers.get_all("x-added").iter().count(), 1, "{what}");
        }
        assert_eq!(
            r.headers.get_all("ratelimit-limit").iter().count(),
            1,
            "{what}"
        );
        assert_eq!(r.header("ratelimit-limit"), Some("100"), "{what}");
        assert_eq!(
            r.header("ratelimit-remaining"),
            Some(remaining.to_string().as_str()),
            "{what}"
        );
        assert!(r.header("ratelimit-reset").is_some(), "{what}");
    }
}

/// Idle connections hold no request state (issue 17), and their limits
/// still apply: one that never sends is closed after `header_timeout`, a
/// keep-alive one idle for `keepalive_timeout` is closed, one that speaks
/// after idling is served, two requests sent in one write are both
/// answered in order, and a reload (a new handler for the listener)
/// closes the idle connections of the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_close_at_their_limits_and_are_served_when_they_speak() {
    let o = origin("o").await;
    let config = format!(
        r#"
[server]
threads = 1
[admin]
listen = "127.0.0.1:0"
[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:0"
[listener.limits]
header_timeout = "1s"
keepalive_timeout = "2s"
[[pool]]
name = "p"
backends = [{{ address = "{}" }}]
[[route]]
name = "all"
pool = "p"
"#,
        o.addr()
    );
    let node = start(&config).await;
    let addr = node.addr("web");
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes();

    // Silent from the start: closed by the head deadline.
    let mut silent = edge_testkit::RawConn::connect(addr).await;
    assert!(
        silent.closed().await,
        "a connection that never sends stays open"
    );

    // Served, idle, served again within the keep-alive time.
    let mut c = edge_testkit::RawConn::connect(addr).await;
    c.send(&get("/obj/a?size=10")).await;
    assert_eq!(c.response(false).await.unwrap().status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.send(&get("/obj/b?size=20")).await;
    let r = c.response(false).await.unwrap();
    assert_eq!((r.status, r.body.len()), (200, 20));

    // Pipelined: two heads in one write, both answered, in order.
    c.send(&[get("/obj/c?size=3"), get("/obj/d?size=4")].concat())
        .await;
    let first = c.response(false).await.unwrap();
    let second = c.response(false).await.unwrap();
    assert_eq!((first.body.len(), second.body.len()), (3, 4));

    // Then idle past keepalive_timeout: closed.
    assert!(c.closed().await, "an idle keep-alive connection stays open");

    // A reload retires the listener's handler: its idle connections close
    // at once. First a keep-alive time no test waits for, then a reload
    // while a connection idles under it.
    let long = config.replace("keepalive_timeout = \"2s\"", "keepalive_timeout = \"300s\"");
    std::fs::write(node.config_path(), &long).unwrap();
    node.signal(nix::sys::signal::Signal::SIGHUP);
    node.wait_for_line("config reloaded on SIGHUP", Duration::from_secs(10));
    let mut idle = edge_testkit::RawConn::connect(addr).await;
    idle.send(&get("/obj/e?size=5")).await;
    assert_eq!(idle.response(false).await.unwrap().status, 200);
    let other = long.replace("header_timeout = \"1s\"", "header_timeout = \"3s\"");
    std::fs::write(node.config_path(), other).unwrap();
    node.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        idle.closed().await,
        "the old handler's idle connection stays open"
    );
    // New connections get the new settings and are served.
    let mut fresh = edge_testkit::RawConn::connect(addr).await;
    fresh.send(&get("/obj/f?size=6")).await;
    assert_eq!(fresh.response(false).await.unwrap().body.len(), 6);
}

/// What the kernel holds of a response unsent, per connection, is bounded
/// by `listener.limits.tcp_notsent_lowat` (Linux `TCP_NOTSENT_LOWAT`,
/// 128 KiB by default): a large response goes to the socket as the client
/// takes it. With `0` the kernel's own default applies, and a RAM hit of a
/// few MB sits in the socket nearly whole (its send buffer grows to
/// `tcp_wmem`'s 4 MiB): the case the bound is for. Read from the kernel's
/// own count (`ss -tni`'s `notsent`) of edge's socket while the client reads
/// nothing; on a RAM hit (HTTP/1's shortcut, or pingora's path when the fast
/// paths are off), a pass-through, and for 16 KiB, the default and 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_waits_unsent_in_the_kernel_only_up_to_tcp_notsent_lowat() {
    let o = origin("o").await;
    let config = format!(
        r#"
[server]
threads = 1
access_log = false
[admin]
listen = "127.0.0.1:0"
[[listener]]
name = "default"
kind = "http"
address = "127.0.0.1:0"
[[listener]]
name = "small"
kind = "http"
address = "127.0.0.1:0"
[listener.limits]
tcp_notsent_lowat = "16 KiB"
[[listener]]
name = "kernel"
kind = "http"
address = "127.0.0.1:0"
[listener.limits]
tcp_notsent_lowat = 0
[[pool]]
name = "p"
backends = [{{ address = "{}" }}]
[[route]]
name = "cached"
match = {{ path_prefix = "/obj/cached/" }}
pool = "p"
[route.cache]
slice = false
[[route]]
name = "all"
pool = "p"
[cache]
ram_size = "256 MiB"
"#,
        o.addr()
    );
    let node = start(&config).await;
    const SIZE: usize = 4 << 20;
    let cached = format!("/obj/cached/big?size={SIZE}&cc=max-age%3D600");
    let c = Client::new();
    edge_testkit::eventually(Duration::from_secs(10), "the object in RAM", || async {
        let r = c.get(&node.url("default", &cached)).await;
        assert_eq!((r.status, r.body.len()), (200, SIZE));
        r.header("x-cache")
            .is_some_and(|v| v.starts_with("HIT"))
            .then_some(())
    })
    .await;
    let pass = format!("/obj/pass?size={SIZE}&cc=no-store");
    // The control needs the kernel's own default to be no mark at all and
    // a send buffer that may grow past 1 MiB (Linux's defaults); a host
    // tuned otherwise skips it.
    let sysctl = |name: &str| std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"));
    let untuned = sysctl("tcp_notsent_lowat").is_ok_and(|v| v.trim() == "4294967295")
        && sysctl("tcp_wmem").is_ok_and(|v| {
            v.split_whitespace()
                .last()
                .and_then(|m| m.parse::<u64>().ok())
                .is_some_and(|m| m >= 4 << 20)
        });
    if !untuned {
        eprintln!(
            "net.ipv4.tcp_notsent_lowat or tcp_wmem tuned: the kernel-default case is skipped"
        );
    }
    // At most the mark and one more segment (a write that starts below the
    // mark may queue one; 64 KiB on loopback) and headroom.
    let cases = [
        ("small", &cached, Some(16 * 1024 + 128 * 1024)),
        ("default", &cached, Some(128 * 1024 + 128 * 1024)),
        ("default", &pass, Some(128 * 1024 + 128 * 1024)),
        ("kernel", &cached, None),
    ];
    for (listener, path, bound) in cases {
        if bound.is_none() && !untuned {
            continue;
        }
        let addr = node.addr(listener);
        // A small receive buffer: the client's window takes little.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut s = socket.connect(addr).await.unwrap();
        let client = s.local_addr().unwrap();
        // The host the object was cached under (the port is in the key).
        let host = node.addr("default");
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let what = format!("{listener} {path}");
        // The head only, a few bytes at a time; then nothing more is read.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            assert_eq!(s.read(&mut b).await.unwrap(), 1, "{what}: head cut short");
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200 "), "{what}: {head}");
        let hit = head.contains("\r\nx-cache: hit");
        assert_eq!(hit, path == &cached, "{what}: {head}");
        match bound {
            Some(bound) => {
                // Once edge has written past what the client's window
                // takes, the count never goes over the bound.
                edge_testkit::eventually(Duration::from_secs(10), "bytes left unsent", || async {
                    (notsent(addr, client).await > 0).then_some(())
                })
                .await;
                for _ in 0..30 {
                    let n = notsent(addr, client).await;
                    assert!(n <= bound, "{what}: {n} bytes unsent, over {bound}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            None => {
                edge_testkit::eventually(Duration::from_secs(10), "most of it unsent", || async {
                    (notsent(addr, client).await > 1 << 20).then_some(())
                })
                .await;
            }
        }
        drop(s);
    }
}

/// Bytes edge's socket from `server` to `client` holds unsent, as the
/// kernel counts them (`ss -tni`'s `notsent`; 0 when it shows none).
async fn notsent(server: std::net::SocketAddr, client: std::net::SocketAddr) -> u64 {
    let filter = format!(
        "( sport = :{} and dport = :{} )",
        server.port(),
        client.port()
    );
    let out = tokio::process::Command::new("ss")
        .args(["-tniH", "state", "established", &filter])
        .output()
        .await
        .expect("ss (iproute2) runs");
    assert!(out.status.success(), "ss: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.trim().is_empty(),
        "ss finds no socket {server} -> {client}"
    );
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("notsent:"))
        .map_or(0, |n| n.parse().unwrap())
}

/// A client that stops reading (a slow read) is cut off `send_timeout`
/// after the last byte it took, on every path a response leaves by: a
/// pass-through, a RAM hit (HTTP/1's shortcut when the fast paths are on,
/// pingora's when they are off), a miss (whose fill goes on: the next
/// client gets a hit), and an HTTP/2 stream the client gives no
/// flow-control window (the socket is not blocked there: pingora's write
/// timeout). (TLS's records pass through the same write buffer.) The HTTP/1 connection is reset
/// rather than closed, so the kernel does not keep sending what was queued
/// (nginx's `reset_timedout_connection`); other clients are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_is_cut_off_after_send_timeout() {
    let o = origin("o").await;
    let config = format!(
        r#"
[server]
threads = 1
[admin]
listen = "127.0.0.1:0"
[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:0"
h2c = true
[listener.limits]
send_timeout = "1s"
[[pool]]
name = "p"
backends = [{{ address = "{}" }}]
[[route]]
name = "cached"
match = {{ path_prefix = "/obj/cached/" }}
pool = "p"
[route.cache]
slice = false
[[route]]
name = "all"
pool = "p"
[cache]
ram_size = "256 MiB"
"#,
        o.addr()
    );
    let node = start(&config).await;
    let addr = node.addr("web");
    const SIZE: usize = 20 << 20;
    let cached = format!("/obj/cached/big?size={SIZE}&cc=max-age%3D600");
    // The object in RAM first, read whole.
    let c = Client::new();
    let r = c.get(&node.url("web", &cached)).await;
    assert_eq!((r.status, r.body.len()), (200, SIZE));
    edge_testkit::eventually(Duration::from_secs(10), "the object in RAM", || async {
        let r = c.get(&node.url("web", &cached)).await;
        r.header("x-cache")
            .is_some_and(|v| v.starts_with("HIT"))
            .then_some(())
    })
    .await;

    let fill = format!("/obj/cached/fill?size={SIZE}&cc=max-age%3D600");
    for path in [
        format!("/obj/pass?size={SIZE}&cc=no-store"),
        cached,
        fill.clone(),
    ] {
        let logged_path = path.split('?').next().unwrap();
        let seen = node.access_lines(logged_path).len();
        // A small receive buffer: the kernel's queues fill at a few MB.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut s = socket.connect(addr).await.unwrap();
        // The host the object was cached under.
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        // Logged with the status sent and the body's bytes written before
        // the cut (nginx logs the same), not as a 499 of nothing.
        let line = node.access_line(logged_path, seen, "(send_timeout)").await;
        assert!(line.contains(" status=200 "), "{path}: {line}");
        let bytes = logged_bytes(&line);
        assert!(bytes > 0 && bytes < SIZE, "{path}: bytes={bytes}: {line}");
        // The client's failure, in the same words on every path (HTTP/1's
        // shortcut writes the error pingora's writer makes; the map way's
        // RAM hits mark theirs the client's too).
        let error = line
            .split_once(" error=\"")
            .and_then(|(_, e)| e.split_once('"'))
            .map(|(e, _)| e)
            .unwrap_or_else(|| panic!("{path}: no error= in {line}"));
        // (A proxied response's error names its backend in between.)
        assert!(
            error.starts_with("Downstream WriteError context: ")
                && error.ends_with(
                    "context: while writing body cause: \
                     the client read nothing for 1s (send_timeout)"
                ),
            "{path}: {line}"
        );
        // Meanwhile others are served.
        assert_eq!(c.get(&node.url("web", "/obj/a?size=10")).await.status, 200);
        // What was queued may still be read, then the reset: not the
        // whole body, and not an orderly end.
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        let end = loop {
            match tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await {
                Ok(Ok(0)) => break Ok(()),
                Ok(Ok(n)) => got += n,
                Ok(Err(e)) => break Err(e.kind()),
                Err(_) => panic!(
                    "{path}: the connection was neither reset nor closed: {}",
                    node.output()
                ),
            }
        };
        assert!(got < SIZE, "{path}: the whole body arrived");
        assert_eq!(end, Err(std::io::ErrorKind::ConnectionReset), "{path}");
    }

    // The client's fault, not edge's: nothing logged as edge's failure.
    assert!(
        !node.output().contains("request failed inside edge"),
        "{}",
        node.output()
    );
    // The miss the client gave up on filled the cache all the same.
    let r = c.get(&node.url("web", &fill)).await;
    assert_eq!((r.status, r.body.len()), (200, SIZE));
    assert!(r.header("x-cache").is_some_and(|v| v.starts_with("HIT")));

    // HTTP/2 with a window of `window` bytes, opened as the body is read.
    let h2 = |window: u32| async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let io = hyper_util::rt::TokioIo::new(tcp);
        let (send, conn) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .initial_stream_window_size(window)
                .handshake::<_, http_body_util::Empty<hyper::body::Bytes>>(io)
                .await
                .unwrap();
        tokio::spawn(conn);
        send
    };
    let get = |path: &str| {
        http::Request::builder()
            .uri(format!("http://{addr}{path}"))
            .body(http_body_util::Empty::new())
            .unwrap()
    };

    // A RAM hit (one write of the whole object) to a client that opens its
    // window a little at a time, taking longer than send_timeout in all
    // but never waiting that long for window: served whole.
    let small = "/obj/cached/steady?size=2097152&cc=max-age%3D600";
    edge_testkit::eventually(
        Duration::from_secs(10),
        "the small object in RAM",
        || async {
            let r = c.get(&node.url("web", small)).await;
            r.header("x-cache")
                .is_some_and(|v| v.starts_with("HIT"))
                .then_some(())
        },
    )
    .await;
    let mut send = h2(262_144).await;
    let resp = send.send_request(get(small)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp
        .headers()
        .get("x-cache")
        .is_some_and(|v| v.as_bytes().starts_with(b"HIT")));
    let mut body = resp.into_body();
    let (mut got, mut since_pause) = (0usize, 0usize);
    while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
        let n = frame.unwrap().data_ref().map_or(0, |d| d.len());
        got += n;
        since_pause += n;
        if since_pause >= 262_144 {
            since_pause = 0;
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    }
    assert_eq!(got, 2_097_152);

    // A stream whose window the client never opens past 64 KiB.
    let mut send = h2(65_535).await;
    let resp = send
        .send_request(get(&format!("/obj/h2?size={SIZE}&cc=no-store")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let line = node.access_line("/obj/h2", 0, "(send_timeout)").await;
    assert!(line.contains("status=200"), "{line}");
    let body = http_body_util::BodyExt::collect(resp.into_body()).await;
    assert!(body.is_err(), "the stream ended as if complete");
    assert_eq!(c.get(&node.url("web", "/obj/a?size=10")).await.status, 200);

    // Streams with all the window they want, on a connection whose client
    // stops reading its socket (edge's writes block, not its streams'
    // window): a pass-through and a RAM hit, each logged as the send
    // timeout with the bytes that were handed to the connection.
    for path in [
        format!("/obj/h2full?size={SIZE}&cc=no-store"),
        "/obj/cached/big?size=20971520&cc=max-age%3D600".to_string(),
    ] {
        let logged_path = path.split('?').next().unwrap();
        let seen = node.access_lines(logged_path).len();
        let stall = Stall::connect(addr, 4096).await.unwrap();
        let stop = stall.stopper();
        let io = hyper_util::rt::TokioIo::new(stall);
        let (mut send, conn) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .initial_stream_window_size(1 << 30)
                .initial_connection_window_size(1 << 30)
                .handshake::<_, http_body_util::Empty<hyper::body::Bytes>>(io)
                .await
                .unwrap();
        tokio::spawn(conn);
        let resp = send.send_request(get(&path)).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let line = node.access_line(logged_path, seen, "(send_timeout)").await;
        let bytes = logged_bytes(&line);
        assert!(bytes > 0 && bytes < SIZE, "{path}: bytes={bytes}: {line}");
        assert_eq!(c.get(&node.url("web", "/obj/a?size=10")).await.status, 200);
        drop(resp);
    }
    assert!(
        !node.output().contains("request failed inside edge"),
        "{}",
        node.output()
    );
}

/// An HTTP/2 connection (h2c by prior knowledge) is closed once idle for
/// the listener's `keepalive_timeout` (nginx's `keepalive_timeout` for
/// HTTP/2 too, HAProxy's `timeout http-keep-alive`), counted from the end
/// of its last stream: RAM hits (answered where the connection accepts
/// them, with no task of their own) leave it idle and it then closes; a
/// stream served for longer than the limit (a body dripped over about two
/// seconds) is not cut, and the idle time starts again after it. The limit
/// is short; the waits for the close are only failure bounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connections_close_when_idle_for_keepalive_timeout_not_while_a_stream_is_served() {
    let o = origin("o").await;
    let config = format!(
        r#"
[server]
threads = 1
[admin]
listen = "127.0.0.1:0"
[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:0"
h2c = true
[listener.limits]
keepalive_timeout = "1s"
[[pool]]
name = "p"
backends = [{{ address = "{}" }}]
[[route]]
name = "cached"
match = {{ path_prefix = "/obj/cached/" }}
pool = "p"
[route.cache]
[[route]]
name = "all"
pool = "p"
[cache]
ram_size = "64 MiB"
"#,
        o.addr()
    );
    let node = start(&config).await;
    let addr = node.addr("web");
    let hit = "/obj/cached/k?size=1000&cc=max-age%3D600";
    let c = Client::new();
    edge_testkit::eventually(Duration::from_secs(10), "the object in RAM", || async {
        let r = c.get(&node.url("web", hit)).await;
        r.header("x-cache")
            .is_some_and(|v| v.starts_with("HIT"))
            .then_some(())
    })
    .await;
    let connect = || async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let io = hyper_util::rt::TokioIo::new(tcp);
        let (send, conn) =
            hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .handshake::<_, http_body_util::Empty<hyper::body::Bytes>>(io)
                .await
                .unwrap();
        (send, tokio::spawn(conn))
    };
    let get = |path: &str| {
        http::Request::builder()
            .uri(format!("http://{addr}{path}"))
            .body(http_body_util::Empty::new())
            .unwrap()
    };
    let origin_before = o.stats().requests;

    // RAM hits, then nothing: the server closes the connection.
    let (mut send, conn) = connect().await;
    for i in 0..3 {
        let resp = send.send_request(get(hit)).await.unwrap();
        assert_eq!(resp.status(), 200, "hit {i}");
        let cache = resp.headers().get("x-cache").map(|v| v.as_bytes().to_vec());
        assert!(
            cache.as_deref().is_some_and(|v| v.starts_with(b"HIT")),
            "hit {i}: {cache:?}"
        );
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(body.len(), 1000, "hit {i}");
    }
    assert_eq!(o.stats().requests, origin_before, "hits reach no origin");
    let closed = tokio::time::timeout(Duration::from_secs(30), conn).await;
    assert!(
        matches!(closed, Ok(Ok(Ok(())))),
        "an idle HTTP/2 connection is closed by the server: {closed:?}"
    );
    assert!(send.send_request(get(hit)).await.is_err());

    // The close, frame by frame: a GOAWAY (NO_ERROR) naming the last
    // stream taken, the last frame before the end of the stream. A
    // connection that opened no stream names stream 0; one that was
    // answered a RAM hit on stream 1 names 1, after that stream's whole
    // answer.
    for (opened, path) in [(0u32, None), (1, Some(hit))] {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        out.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // SETTINGS, empty
        if let Some(path) = path {
            out.extend_from_slice(&h2_get_frame(1, &addr.to_string(), path));
        }
        tcp.write_all(&out).await.unwrap();
        let frames = h2_frames_until_closed(&mut tcp).await;
        let last = frames.last().expect("frames before the close");
        assert_eq!((last.0, last.2), (7, 0), "a GOAWAY last: {frames:?}");
        assert_eq!(
            last.3,
            [opened.to_be_bytes(), 0u32.to_be_bytes()].concat(),
            "last stream {opened}, NO_ERROR"
        );
        if path.is_some() {
            let data: usize = frames
                .iter()
                .filter(|f| f.0 == 0 && f.2 == 1)
                .map(|f| f.3.len())
                .sum();
            assert!(frames.iter().any(|f| f.0 == 1 && f.2 == 1), "{frames:?}");
            assert_eq!(data, 1000, "the whole answer before the GOAWAY");
        }
    }

    // A body dripped for longer than the limit arrives whole; the
    // connection closes once idle after it.
    let (mut send, conn) = connect().await;
    let slow = "/obj/slow.bin?size=20480&fault=drip%3D2048/200ms";
    let resp = send.send_request(get(slow)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(body.len(), 20480, "the slow body was not cut");
    let resp = send.send_request(get(hit)).await.unwrap();
    assert_eq!(resp.status(), 200, "served after the long stream");
    let closed = tokio::time::timeout(Duration::from_secs(30), conn).await;
    assert!(
        matches!(closed, Ok(Ok(Ok(())))),
        "closed once idle after the long stream: {closed:?}"
    );
}

/// An HTTP/2 HEADERS frame (END_STREAM, END_HEADERS) of a `GET` for
/// `path` at `authority` on stream `id`: indexed `:method GET` and
/// `:scheme http`, the two others literal without indexing (RFC 7541
/// §6.2.2), each value under 127 bytes.
fn h2_get_frame(id: u32, authority: &str, path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86];
    for (index, value) in [(4u8, path), (1, authority)] {
        assert!(value.len() < 127);
        block.push(index);
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    let len = block.len() as u32;
    let mut frame = len.to_be_bytes()[1..].to_vec();
    frame.extend_from_slice(&[1, 0x05]);
    frame.extend_from_slice(&id.to_be_bytes());
    frame.extend_from_slice(&block);
    frame
}

/// The HTTP/2 frames the server sends on `tcp` until it closes it (30 s
/// at most, else the test fails): (type, flags, stream, payload) each.
async fn h2_frames_until_closed(tcp: &mut TcpStream) -> Vec<(u8, u8, u32, Vec<u8>)> {
    let mut bytes = Vec::new();
    let read = async {
        let mut chunk = [0u8; 16384];
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("the server closes the connection");
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let len = u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]]) as usize;
        let stream = u32::from_be_bytes(bytes[at + 5..at + 9].try_into().unwrap()) & 0x7fff_ffff;
        let payload = bytes[at + 9..at + 9 + len].to_vec();
        frames.push((bytes[at + 3], bytes[at + 4], stream, payload));
        at += 9 + len;
    }
    assert_eq!(at, bytes.len(), "whole frames only");
    frames
}
