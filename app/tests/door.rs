//! The request path's door, end to end: each fault the request-path issue
//! names, as its own test, against a strict recording backend (the corpus
//! in `requests.rs` covers the rules case by case).

// Helpers in test files may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use edge_testkit::scripted::{Reply, Scripted};
use edge_testkit::tls::TestCa;
use edge_testkit::{eventually, h2c, Client, EdgeNode, RawConn, RawResponse, Recorder};
use http::Method;
use tokio::io::AsyncWriteExt;

const BIN: &str = env!("CARGO_BIN_EXE_edge");

/// Plain, TLS and h2c listeners; a deny route for `/admin/`, a route for
/// `example.com`, and everything else cached in front of `rec`.
fn config(dir: &Path, rec: &Recorder, ca: &TestCa, extra: &str) -> String {
    let cert = ca.issue(&["edge.test"]);
    let (c, k) = (dir.join("c.pem"), dir.join("c.key"));
    std::fs::write(&c, &cert.cert_pem).unwrap();
    std::fs::write(&k, &cert.key_pem).unwrap();
    format!(
        r#"
[server]
threads = 2

[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:0"
h2c = true

[[listener]]
name = "tls"
kind = "https"
address = "127.0.0.1:0"
[[listener.certificate]]
server_names = ["edge.test"]
cert = "{c}"
key = "{k}"
default = true

[[route]]
name = "deny-admin"
priority = 90
respond = {{ status = 403, body = "denied" }}
[route.match]
path_prefix = "/admin/"

[[route]]
name = "example"
priority = 80
respond = {{ status = 200, body = "the example.com route" }}
[route.match]
host = "example.com"

{extra}

[[route]]
name = "all"
pool = "rec"
[route.cache]

[[pool]]
name = "rec"
backends = [{{ address = "{rec}" }}]

[cache]
ram_size = "16 MiB"
"#,
        c = c.display(),
        k = k.display(),
        rec = rec.addr(),
    )
}

struct Setup {
    rec: Recorder,
    ca: TestCa,
    node: EdgeNode,
    _dir: tempfile::TempDir,
}

async fn setup(extra: &str) -> Setup {
    let rec = Recorder::start().await;
    let ca = TestCa::new("door CA");
    let dir = tempfile::tempdir().unwrap();
    let node = EdgeNode::start(BIN, &config(dir.path(), &rec, &ca, extra));
    Setup {
        rec,
        ca,
        node,
        _dir: dir,
    }
}

impl Setup {
    /// One raw exchange on a new plain connection.
    async fn raw(&self, bytes: &[u8]) -> RawResponse {
        let mut c = RawConn::connect(self.node.addr("web")).await;
        c.send(bytes).await;
        c.response(false).await.unwrap()
    }

    async fn raw_tls(&self, bytes: &[u8]) -> RawResponse {
        let mut c = RawConn::connect_tls(self.node.addr("tls"), "edge.test", &self.ca.pem()).await;
        c.send(bytes).await;
        c.response(false).await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crafted_host_cannot_poison_the_cache() {
    let s = setup("").await;
    let evil = s
        .raw(b"GET /cached/app.js HTTP/1.1\r\nHost: edge.test/evil\r\n\r\n")
        .await;
    assert_eq!(evil.status, 400, "{}", evil.text());
    assert_eq!(s.rec.count(), 0, "a bad Host never reaches the backend");
    let ok = s
        .raw(b"GET /evil/cached/app.js HTTP/1.1\r\nHost: edge.test\r\n\r\n")
        .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("x-cache"), Some("MISS"));
    assert_eq!(
        ok.text(),
        "upstream saw: GET /evil/cached/app.js HTTP/1.1\n"
    );
    // Every other bad-Host shape is refused the same way.
    for bad in [
        "edge.test\\evil",
        "x@edge.test",
        "edge.test?x",
        "edge.test#x",
        "edge test",
        "",
    ] {
        let r = s
            .raw(format!("GET /cached/app.js HTTP/1.1\r\nHost: {bad}\r\n\r\n").as_bytes())
            .await;
        assert_eq!(r.status, 400, "Host {bad:?}");
    }
    assert_eq!(s.rec.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_reaches_its_route_and_cache_entries_in_any_spelling() {
    let s = setup(
        r#"
[[route]]
name = "cached-example"
priority = 85
pool = "rec"
[route.match]
host = "cdn.example.com"
[route.cache]
"#,
    )
    .await;
    for h in [
        "example.com.",
        "Example.COM",
        "example.com:80",
        "EXAMPLE.com.:80",
    ] {
        let r = s
            .raw(format!("GET / HTTP/1.1\r\nHost: {h}\r\n\r\n").as_bytes())
            .await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "the example.com route"),
            "Host {h:?}"
        );
    }
    let first = s
        .raw(b"GET /cached/x HTTP/1.1\r\nHost: CDN.Example.com.\r\n\r\n")
        .await;
    assert_eq!(first.header("x-cache"), Some("MISS"));
    for h in ["cdn.example.com", "cdn.example.com:80", "Cdn.Example.Com."] {
        let r = s
            .raw(format!("GET /cached/x HTTP/1.1\r\nHost: {h}\r\n\r\n").as_bytes())
            .await;
        assert!(
            r.header("x-cache").unwrap().starts_with("HIT"),
            "Host {h:?} shares the entry: {:?}",
            r.header("x-cache")
        );
    }
    let got = s.rec.take();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("host").as_deref(), Some("cdn.example.com"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_cannot_walk_around_a_deny_route() {
    let s = setup("").await;
    for path in [
        "/public/../admin/x",
        "/%61dmin/x",
        "/./admin/x",
        "//admin/x",
        "/%2e%2e/admin/x",
        "/a/%2E%2E/admin/x",
        "/admin/./x",
        "///admin//x",
    ] {
        let r = s
            .raw(format!("GET {path} HTTP/1.1\r\nHost: edge.test\r\n\r\n").as_bytes())
            .await;
        assert_eq!((r.status, r.text().as_str()), (403, "denied"), "{path}");
        let r = h2c(
            s.node.addr("web"),
            Method::GET,
            &format!("http://edge.test{path}"),
            &[],
        )
        .await
        .unwrap();
        assert_eq!(r.status, 403, "{path} over HTTP/2");
    }
    for path in ["/admin%2Fx", "/admin%5cx", "/x/..%2Fadmin/y"] {
        let r = s
            .raw(format!("GET {path} HTTP/1.1\r\nHost: edge.test\r\n\r\n").as_bytes())
            .await;
        assert_eq!(r.status, 400, "{path}");
        let r = h2c(
            s.node.addr("web"),
            Method::GET,
            &format!("http://edge.test{path}"),
            &[],
        )
        .await
        .unwrap();
        assert_eq!(r.status, 400, "{path} over HTTP/2");
    }
    assert_eq!(s.rec.count(), 0, "the backend never saw /admin/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_redirect_is_not_served_to_https_clients() {
    let s = setup("").await;
    let req = b"GET /cached/login/redirect HTTP/1.1\r\nHost: edge.test\r\n\r\n";
    let plain = s.raw(req).await;
    assert_eq!(plain.status, 301);
    assert_eq!(plain.header("x-cache"), Some("MISS"));
    assert!(s
        .raw(req)
        .await
        .header("x-cache")
        .unwrap()
        .starts_with("HIT"));
    let secure = s.raw_tls(req).await;
    assert_eq!(
        secure.header("x-cache"),
        Some("MISS"),
        "the http answer is not the https one"
    );
    assert_eq!(s.rec.take().len(), 2, "one fetch per scheme");
    let secure = s.raw_tls(req).await;
    assert!(secure.header("x-cache").unwrap().starts_with("HIT"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_are_normalized_like_http1() {
    let s = setup("").await;
    let addr = s.node.addr("web");
    let r = h2c(
        addr,
        Method::GET,
        "http://Edge.TEST.:80/a/./b/../c%7e?q=%2F",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let got = s.rec.take();
    assert_eq!(got[0].request_line(), "GET /a/c~?q=%2F HTTP/1.1");
    assert_eq!(got[0].header("host").as_deref(), Some("edge.test"));
    let r = h2c(
        addr,
        Method::GET,
        "http://edge.test/x",
        &[("host", "other.test")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400, "Host must agree with :authority");
    let r = h2c(addr, Method::GET, "http://example.com./", &[])
        .await
        .unwrap();
    assert_eq!(r.text(), "the example.com route");
    assert_eq!(s.rec.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_fields_never_cross_on_any_serving_path() {
    let s = setup("").await;
    let hop = [
        "x-hop-secret",
        "keep-alive",
        "proxy-connection",
        "upgrade",
        "proxy-authenticate",
    ];
    let check = |r: &RawResponse, what: &str| {
        for name in hop {
            assert!(!r.has(name), "{what}: {name} crossed: {:?}", r.headers);
        }
        assert!(
            r.has("x-end-to-end") || r.status != 200,
            "{what}: end-to-end fields stay"
        );
    };
    let pass = s
        .raw(b"GET /plain HTTP/1.1\r\nHost: edge.test\r\n\r\n")
        .await;
    check(&pass, "pass-through");
    let miss = s
        .raw(b"GET /cached/h HTTP/1.1\r\nHost: edge.test\r\n\r\n")
        .await;
    assert_eq!(miss.header("x-cache"), Some("MISS"));
    check(&miss, "cache miss");
    let hit = s
        .raw(b"GET /cached/h HTTP/1.1\r\nHost: edge.test\r\n\r\n")
        .await;
    assert_eq!(hit.header("x-cache"), Some("HIT RAM"));
    check(&hit, "RAM hit");
    let range = s
        .raw(b"GET /cached/h HTTP/1.1\r\nHost: edge.test\r\nRange: bytes=0-3\r\n\r\n")
        .await;
    assert_eq!(range.status, 206);
    check(&range, "range from the cache");
    let h2 = h2c(
        s.node.addr("web"),
        Method::GET,
        "http://edge.test/plain2",
        &[],
    )
    .await
    .unwrap();
    for name in hop {
        assert!(!h2.headers.contains_key(name), "HTTP/2: {name} crossed");
    }
    // An HTTP/1.0 client never gets chunked framing.
    let mut c = RawConn::connect(s.node.addr("web")).await;
    c.send(b"GET /plain3 HTTP/1.0\r\nHost: edge.test\r\n\r\n")
        .await;
    let r = c.response(false).await.unwrap();
    assert!(r.header("transfer-encoding").is_none());
    assert!(r.closes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_error_answers_are_honest_about_the_connection() {
    let dead_addr = edge_testkit::refused_addr();
    let s = setup(&format!(
        r#"
[[route]]
name = "dead"
priority = 70
pool = "dead"
[route.match]
host = "dead.test"

[[pool]]
name = "dead"
backends = [{{ address = "{dead_addr}" }}]
[pool.retry]
attempts = 0
"#
    ))
    .await;
    // 502 / 503: pingora does not reuse the connection, and says so.
    for _ in 0..3 {
        let mut c = RawConn::connect(s.node.addr("web")).await;
        c.send(b"GET / HTTP/1.1\r\nHost: dead.test\r\n\r\n").await;
        let r = c.response(false).await.unwrap();
        assert!(r.status >= 500, "{}", r.status);
        assert!(r.closes(), "a {} that closes says so", r.status);
        assert!(c.closed().await);
    }
    // 403, 404 and redirects keep the connection, and it works.
    let mut c = RawConn::connect(s.node.addr("web")).await;
    for (req, status) in [
        ("GET /admin/x HTTP/1.1\r\nHost: edge.test\r\n\r\n", 403),
        ("GET /x HTTP/1.1\r\nHost: example.com\r\n\r\n", 200),
        ("GET /admin/y HTTP/1.1\r\nHost: edge.test\r\n\r\n", 403),
    ] {
        c.send(req.as_bytes()).await;
        let r = c.response(false).await.unwrap();
        assert_eq!(r.status, status);
        assert!(!r.closes());
    }
    // A bad request closes, and says so.
    c.send(b"GET /x HTTP/1.1\r\nHost: a/b\r\n\r\n").await;
    let r = c.response(false).await.unwrap();
    assert_eq!(r.status, 400);
    assert!(r.closes());
    assert!(c.closed().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_all_answered_in_order() {
    let s = setup("").await;
    let mut c = RawConn::connect(s.node.addr("web")).await;
    // Misses, a hit from RAM (answered before pingora's cache runs), an
    // edge-own answer and pass-through, in one write.
    let paths = [
        "/cached/p1",
        "/cached/p1",
        "/admin/x",
        "/p2",
        "/cached/p1",
        "/p3",
    ];
    let all: String = paths
        .iter()
        .map(|p| format!("GET {p} HTTP/1.1\r\nHost: edge.test\r\n\r\n"))
        .collect();
    c.send(all.as_bytes()).await;
    for p in paths {
        let r = c.response(false).await.unwrap();
        if p.starts_with("/admin/") {
            assert_eq!(r.status, 403);
        } else {
            assert_eq!(r.status, 200, "{p}");
            assert_eq!(
                r.text(),
                format!("upstream saw: GET {p} HTTP/1.1\n"),
                "answers in order"
            );
        }
    }
    let lines: Vec<String> = s.rec.take().iter().map(|r| r.request_line()).collect();
    assert_eq!(
        lines,
        [
            "GET /cached/p1 HTTP/1.1",
            "GET /p2 HTTP/1.1",
            "GET /p3 HTTP/1.1"
        ]
    );
}

/// A route that does not cache, in front of `origin`, for paths under `/pass/`.
fn pass_route(origin: &Scripted) -> String {
    format!(
        r#"
[[route]]
name = "pass"
priority = 70
pool = "scripted"
[route.match]
path_prefix = "/pass/"

[[pool]]
name = "scripted"
backends = [{{ address = "{}" }}]
"#,
        origin.addr()
    )
}

/// A backend's keep-alive is respected as the response head said it
/// (RFC 9112 §9.3, §9.6): after `Connection: close` the next request goes
/// on a new upstream connection, even though this backend would go on
/// reading; keep-alive answers, with `Keep-Alive: timeout=` or without,
/// share one; a client's own `Connection: close` closes the client side
/// only. Checked through whichever loop proxies them (the fast paths on and
/// off, as the suite runs twice).
#[tokio::test]
async fn a_backend_s_connection_close_is_respected_and_keep_alive_reused() {
    let origin = Scripted::start().await;
    origin.set("/pass/ka", Reply::ok("ka", &[]));
    origin.set(
        "/pass/timeout",
        Reply::ok("timeout", &[("Keep-Alive", "timeout=30, max=100")]),
    );
    origin.set(
        "/pass/close",
        Reply::ok("close", &[("Connection", "close")]),
    );
    origin.set(
        "/pass/close-mixed",
        Reply::ok("mixed", &[("Connection", "Keep-Alive, Close")]),
    );
    let s = setup(&pass_route(&origin)).await;
    let mut c = RawConn::connect(s.node.addr("web")).await;
    let get = |p: &str| format!("GET {p} HTTP/1.1\r\nHost: edge.test\r\n\r\n");
    for path in [
        "/pass/ka",
        "/pass/timeout",
        "/pass/ka",
        "/pass/close",
        "/pass/ka",
        "/pass/close-mixed",
        "/pass/timeout",
        "/pass/ka",
    ] {
        c.send(get(path).as_bytes()).await;
        let r = c.response(false).await.unwrap();
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(
            r.text(),
            path.trim_start_matches("/pass/")
                .replace("close-mixed", "mixed")
        );
    }
    let connections: Vec<(String, usize)> = origin
        .all()
        .into_iter()
        .map(|(path, r)| (path, r.connection))
        .collect();
    let want: Vec<(String, usize)> = [
        ("/pass/ka", 1),
        ("/pass/timeout", 1),
        ("/pass/ka", 1),
        ("/pass/close", 1),
        ("/pass/ka", 2),
        ("/pass/close-mixed", 2),
        ("/pass/timeout", 3),
        ("/pass/ka", 3),
    ]
    .into_iter()
    .map(|(p, n)| (p.to_string(), n))
    .collect();
    assert_eq!(connections, want);
}

/// Pass-through answers keep their framing on one keep-alive connection,
/// whichever loop proxies them (the sequential HTTP/1 loop with the fast
/// paths on, the duplex pump with them off): an interim 103 goes before its
/// final answer (RFC 9110 §15.2), 204 and 304 carry no body, HEAD gets the
/// GET's Content-Length and no body (§9.3.2), pipelined requests are answered
/// in order while the first waits on the backend, and the backend's
/// connection is kept for the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_through_answers_keep_their_framing_on_one_connection() {
    let origin = Scripted::start().await;
    origin.set(
        "/pass/hints",
        Reply::ok("hinted", &[])
            .with_interim(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"),
    );
    // A 204 whose backend frames it anyway (RFC 9110 §8.6: it must not).
    origin.set(
        "/pass/empty",
        Reply::new(204, "", &[("X-Kind", "none"), ("Content-Length", "0")]),
    );
    // A switch nobody asked for (RFC 9110 §7.8).
    origin.set(
        "/pass/switch",
        Reply::new(
            101,
            "",
            &[("Upgrade", "websocket"), ("Connection", "Upgrade")],
        ),
    );
    origin.set(
        "/pass/tagged",
        Reply::ok("tagged", &[("ETag", "\"v1\"")]).revalidated_with(Reply::new(
            304,
            "",
            &[("ETag", "\"v1\"")],
        )),
    );
    origin.set(
        "/pass/slowish",
        Reply::ok("slowish", &[]).with_delay(Duration::from_millis(200)),
    );
    let s = setup(&pass_route(&origin)).await;
    let mut c = RawConn::connect(s.node.addr("web")).await;
    let get = |p: &str, extra: &str| format!("GET {p} HTTP/1.1\r\nHost: edge.test\r\n{extra}\r\n");

    c.send(get("/pass/hints", "").as_bytes()).await;
    let interim = c.response(false).await.unwrap();
    assert_eq!(interim.status, 103, "{interim:?}");
    assert_eq!(interim.header("link"), Some("</s.css>; rel=preload"));
    let r = c.response(false).await.unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "hinted"));

    c.send(get("/pass/empty", "").as_bytes()).await;
    let r = c.response(false).await.unwrap();
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.header("x-kind"), Some("none"));
    assert!(r.header("content-length").is_none() && r.header("transfer-encoding").is_none());

    c.send(get("/pass/tagged", "If-None-Match: \"v1\"\r\n").as_bytes())
        .await;
    let r = c.response(false).await.unwrap();
    assert_eq!(r.status, 304, "{r:?}");
    assert_eq!(r.header("etag"), Some("\"v1\""));

    c.send(b"HEAD /pass/tagged HTTP/1.1\r\nHost: edge.test\r\n\r\n")
        .await;
    let r = c.response(true).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-length"), Some("6"));

    // Two requests in one write; the first waits on the backend while the
    // second's bytes are already in.
    let both = get("/pass/slowish", "") + &get("/pass/tagged", "");
    c.send(both.as_bytes()).await;
    let r = c.response(false).await.unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "slowish"));
    let r = c.response(false).await.unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "tagged"));
    assert!(!r.closes(), "{r:?}");

    // Nothing followed the bodyless answers: the next request reads clean.
    c.send(get("/pass/hints", "").as_bytes()).await;
    assert_eq!(c.response(false).await.unwrap().status, 103);
    assert_eq!(c.response(false).await.unwrap().text(), "hinted");

    let mut connections: Vec<usize> = origin.all().iter().map(|(_, r)| r.connection).collect();
    assert_eq!(connections.len(), 7);
    connections.sort_unstable();
    connections.dedup();
    assert!(
        connections.len() <= 2,
        "7 requests from one client connection came on upstream connections {connections:?}"
    );

    // Bodies larger than one read, in each framing, arrive byte for byte;
    // a body the backend ends by closing goes on chunked, on a connection
    // that stays open.
    let body: Vec<u8> = (0..3 * 1024 * 1024 + 777u32)
        .map(|i| (i.wrapping_mul(7) % 251) as u8)
        .collect();
    let with_body = |r: Reply| Reply {
        body: body.clone(),
        ..r
    };
    origin.set("/pass/big", with_body(Reply::ok("", &[])));
    origin.set("/pass/chunky", with_body(Reply::ok("", &[]).chunked(1000)));
    origin.set(
        "/pass/closing",
        with_body(Reply::ok("", &[]).close_delimited()),
    );
    for (path, framing) in [
        ("/pass/big", "content-length"),
        ("/pass/chunky", "transfer-encoding"),
        ("/pass/closing", "transfer-encoding"),
        ("/pass/big", "content-length"),
    ] {
        c.send(get(path, "").as_bytes()).await;
        let r = c.response(false).await.unwrap();
        assert_eq!(r.status, 200, "{path}");
        assert!(r.has(framing), "{path}: {:?}", r.headers);
        assert!(!r.closes(), "{path}: {:?}", r.headers);
        assert_eq!(r.body.len(), body.len(), "{path}");
        assert!(r.body == body, "{path}: the bytes differ");
    }

    // A 101 to a request that asked for no upgrade is the backend's error:
    // 502, and the client is not left waiting on a tunnel.
    let mut c = RawConn::connect(s.node.addr("web")).await;
    c.send(get("/pass/switch", "").as_bytes()).await;
    let r = c.response(false).await.unwrap();
    assert_eq!(r.status, 502, "{r:?}");
}

/// A client that goes away while the backend has not answered yet is seen
/// at once, not when the backend answers: the request is logged 499
/// (nginx's "client closed request") and nothing waits for the backend's
/// answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_while_the_backend_is_slow_is_logged_499_at_once() {
    let origin = Scripted::start().await;
    // Far longer than the test waits for the 499.
    origin.set(
        "/pass/slow",
        Reply::ok("late", &[]).with_delay(Duration::from_secs(120)),
    );
    let s = setup(&pass_route(&origin)).await;
    let mut c = RawConn::connect(s.node.addr("web")).await;
    c.send(b"GET /pass/slow HTTP/1.1\r\nHost: edge.test\r\n\r\n")
        .await;
    eventually(
        Duration::from_secs(10),
        "the request at the backend",
        || async { (origin.count("/pass/slow") == 1).then_some(()) },
    )
    .await;
    drop(c);
    let node = &s.node;
    tokio::task::block_in_place(|| {
        node.wait_for(Duration::from_secs(20), "a 499 access line", |o| {
            o.lines
                .iter()
                .any(|l| l.contains("path=/pass/slow ") && l.contains(" status=499 "))
        })
    });
}

/// A client that goes away while its cache miss is being fetched is the
/// client's failure whichever way it goes (a half-close, a reset; pingora
/// sets the error aside so the fill goes on): logged 499 with the error
/// named the client's (`Downstream`), never as a failure inside edge, and
/// the fill completes, so the next client gets a hit. As a pass-through's
/// gone client is logged (above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_during_a_miss_is_logged_499_and_the_fill_goes_on() {
    let origin = Scripted::start().await;
    let extra = format!(
        "{}\n[[route]]\nname = \"cached\"\npriority = 70\npool = \"scripted\"\n\
         [route.match]\npath_prefix = \"/cached/\"\n[route.cache]\n",
        pass_route(&origin)
    );
    let s = setup(&extra).await;
    for (i, how) in ["half-close", "reset"].into_iter().enumerate() {
        let path = format!("/cached/slow{i}");
        // Long enough that the client is gone before the answer comes.
        origin.set(
            &path,
            Reply::ok("filled", &[("cache-control", "max-age=600")])
                .with_delay(Duration::from_secs(3)),
        );
        let mut c = tokio::net::TcpStream::connect(s.node.addr("web"))
            .await
            .unwrap();
        c.write_all(format!("GET {path} HTTP/1.1\r\nHost: edge.test\r\n\r\n").as_bytes())
            .await
            .unwrap();
        eventually(
            Duration::from_secs(10),
            "the miss at the backend",
            || async { (origin.count(&path) == 1).then_some(()) },
        )
        .await;
        // Half-closed, the socket stays open for reading until the end.
        let _kept = match how {
            "half-close" => {
                c.shutdown().await.unwrap();
                Some(c)
            }
            _ => {
                // SO_LINGER 0: the close is a reset.
                socket2::SockRef::from(&c)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
                drop(c);
                None
            }
        };
        let logged = format!("path={path} ");
        let node = &s.node;
        let line = tokio::task::block_in_place(|| {
            node.wait_for(Duration::from_secs(20), "the miss's access line", |o| {
                o.lines.iter().any(|l| l.contains(&logged))
            });
            node.access_lines(&path).pop().unwrap()
        });
        assert!(
            line.contains(" status=499 ") && line.contains(" client=127.0.0.1 "),
            "{how}: {line}"
        );
        // (A half-close is read as the connection closed, a reset as the
        // read failing: either is the client's.)
        assert!(
            line.contains("error=\"Downstream ConnectionClosed")
                || line.contains("error=\"Downstream ReadError"),
            "{how}: {line}"
        );
        // The fill went on: a hit, the backend asked once.
        let r = s
            .raw(format!("GET {path} HTTP/1.1\r\nHost: edge.test\r\n\r\n").as_bytes())
            .await;
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, &b"filled"[..]),
            "{how}"
        );
        assert_eq!(origin.count(&path), 1, "{how}: fetched again");
    }
    assert!(
        !s.node.output().contains("request failed inside edge"),
        "{}",
        s.node.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_the_backend_closed_is_retried_on_a_new_one() {
    let s = setup("").await;
    // The backend closes every connection it already answered on when the
    // next request arrives: each reuse of a pooled connection fails.
    s.rec.one_request_per_connection(true);
    let c = Client::new();
    for i in 0..20 {
        let r = c
            .request(
                Method::GET,
                &s.node.url("web", &format!("/stale/{i}")),
                &[],
                "",
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    assert_eq!(s.rec.count(), 20);
    let metrics = c.get(&s.node.admin_url("/metrics")).await.text();
    let exhausted = edge_testkit::metric_sum(&metrics, "edge_retry_budget_exhausted_total", &[]);
    assert_eq!(
        exhausted, 0.0,
        "stale connections do not draw from the retry budget"
    );
}

/// The idle upstream pool (edge-pool, one shard per worker thread): a
/// connection released after a response is taken again by the next request
/// on that thread, whichever client connection it comes on, so sequential
/// requests need no more upstream connections than the node has worker
/// threads (2 here). (`a_pooled_connection_the_backend_closed_is_retried_on_a_new_one`
/// covers a pooled connection the backend closed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_kept_and_reused_across_client_connections() {
    let s = setup("").await;
    for i in 0..20 {
        // A new client connection each time.
        let c = Client::new();
        let r = c
            .request(
                Method::GET,
                &s.node.url("web", &format!("/pool/{i}")),
                &[],
                "",
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    let seen = s.rec.take();
    assert_eq!(seen.len(), 20);
    let mut connections: Vec<usize> = seen.iter().map(|r| r.connection).collect();
    connections.sort_unstable();
    connections.dedup();
    assert!(
        connections.len() <= 2,
        "20 sequential requests came on upstream connections {connections:?}"
    );
}

/// CTA-5004 data is the node's to read: a route without `cmcd.forward`
/// sends none of the four CMCD fields upstream, whichever of them and in
/// whatever case the client sent, and leaves every other field alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cmcd_fields_do_not_reach_the_backend_unless_the_route_forwards_them() {
    let s = setup("").await;
    let cases: [&[(&str, &str)]; 5] = [
        &[("CMCD-Request", "bl=900"), ("x-kept", "1")],
        &[
            ("cmcd-object", "br=1500"),
            ("cmcd-status", "bs"),
            ("x-kept", "1"),
        ],
        &[("CMCD-Session", "sid=\"s\""), ("x-kept", "1")],
        &[
            ("cmcd-request", "bl=1"),
            ("cmcd-object", "br=1"),
            ("cmcd-status", "bs"),
            ("cmcd-session", "sf=h"),
            ("x-kept", "1"),
        ],
        &[("x-kept", "1")],
    ];
    for (i, fields) in cases.iter().enumerate() {
        let r = Client::new()
            .get_with(&s.node.url("web", &format!("/cmcd/{i}")), fields)
            .await;
        assert_eq!(r.status, 200, "case {i}: {}", r.text());
        let seen = s.rec.take();
        assert_eq!(seen.len(), 1, "case {i}");
        let head = seen[0].head_text().to_ascii_lowercase();
        assert!(
            !head.contains("cmcd-"),
            "case {i} reached the backend with: {head}"
        );
        assert_eq!(
            seen[0].header("x-kept").as_deref(),
            Some("1"),
            "case {i}: {head}"
        );
    }
    // Names in upper and mixed case on the wire (the client above sends
    // lower case).
    let r = s
        .raw(b"GET /cmcd/raw HTTP/1.1\r\nHost: edge.test\r\nCMCD-REQUEST: bl=900\r\nCmcd-Status: bs\r\nX-Kept: 1\r\n\r\n")
        .await;
    assert_eq!(r.status, 200);
    let seen = s.rec.take();
    assert_eq!(seen.len(), 1);
    let head = seen[0].head_text().to_ascii_lowercase();
    assert!(!head.contains("cmcd-"), "reached the backend with: {head}");
    assert_eq!(seen[0].header("x-kept").as_deref(), Some("1"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suffix_range_of_zero_bytes_is_416_on_every_cache_path() {
    let s = setup("").await;
    let req = |range: &str| {
        format!("GET /cached/r HTTP/1.1\r\nHost: edge.test\r\nRange: {range}\r\n\r\n")
    };
    assert_eq!(
        s.raw(b"GET /cached/r HTTP/1.1\r\nHost: edge.test\r\n\r\n")
            .await
            .status,
        200
    );
    for range in ["bytes=-0", "bytes=-000"] {
        let r = s.raw(req(range).as_bytes()).await;
        assert_eq!(r.status, 416, "{range}");
        assert!(
            r.header("content-range").unwrap().starts_with("bytes */"),
            "{range}"
        );
    }
    let r = s.raw(req("bytes=-3").as_bytes()).await;
    assert_eq!((r.status, r.text().as_str()), (206, ".1\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_switches_and_tunnels() {
    let s = setup("").await;
    for listener in ["web", "tls"] {
        let mut c = match listener {
            "web" => RawConn::connect(s.node.addr("web")).await,
            _ => RawConn::connect_tls(s.node.addr("tls"), "edge.test", &s.ca.pem()).await,
        };
        c.send(b"GET /ws HTTP/1.1\r\nHost: edge.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await;
        let r = c.response(true).await.unwrap();
        assert_eq!(r.status, 101, "{listener}");
        assert_eq!(
            r.header("upgrade"),
            Some("websocket"),
            "{listener}: {:?}",
            r.headers
        );
        assert!(
            r.header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("upgrade")),
            "{listener}: {:?}",
            r.headers
        );
        // Bytes after the switch are the new protocol's, both ways.
        let frame = b"\x81\x05hello GET / HTTP/1.1\r\n\r\n";
        c.send(frame).await;
        assert_eq!(
            c.read_exact(frame.len()).await.unwrap(),
            frame,
            "{listener}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_authority_and_cookies_go_upstream_normalized() {
    let s = setup("").await;
    let addr = s.node.addr("web");
    let r = h2c(addr, Method::GET, "http://EDGE.test.:80/cached/h2", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let got = s.rec.take();
    assert_eq!(
        got[0].header("host").as_deref(),
        Some("edge.test"),
        "{:?}",
        got[0].head_text()
    );
    // The same object, by another spelling, over HTTP/1: one entry.
    let r = s
        .raw(b"GET /cached/h2 HTTP/1.1\r\nHost: edge.test\r\n\r\n")
        .await;
    assert!(r.header("x-cache").unwrap().starts_with("HIT"));
    let r = h2c(
        addr,
        Method::GET,
        "http://edge.test/plain",
        &[("cookie", "a=1"), ("cookie", "b=2")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let got = s.rec.take();
    assert_eq!(got[0].headers("cookie"), ["a=1; b=2"], "RFC 9113 §8.2.3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_http1_request_on_an_h2c_listener_is_answered_at_once() {
    let s = setup("").await;
    // Fewer bytes than the HTTP/2 preface, and the client keeps waiting.
    let mut c = RawConn::connect(s.node.addr("web")).await;
    c.send(b"GET /x HTTP/1.0\r\n\r\n").await;
    let r = c.response(false).await.unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_answers_100_continue_and_checks_the_chunked_body_first() {
    let s = setup("").await;
    let head = b"POST /up HTTP/1.1\r\nHost: edge.test\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n";
    let mut c = RawConn::connect(s.node.addr("web")).await;
    c.send(head).await;
    let interim = c.read_until(b"\r\n\r\n").await.unwrap();
    assert!(
        interim.starts_with(b"HTTP/1.1 100"),
        "{:?}",
        String::from_utf8_lossy(&interim)
    );
    c.send(b"5\r\nhello\r\nzz\r\n\r\n").await;
    let r = c.response(false).await.unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(
        s.rec.count(),
        0,
        "a malformed body never reaches the backend"
    );

    let mut c = RawConn::connect(s.node.addr("web")).await;
    c.send(head).await;
    c.read_until(b"\r\n\r\n").await.unwrap();
    c.send(b"5\r\nhello\r\n0\r\n\r\n").await;
    let r = c.response(false).await.unwrap();
    assert_eq!(r.status, 200);
    let got = s.rec.take();
    assert_eq!(got[0].body, b"hello");
    assert!(
        got[0].header("expect").is_none(),
        "edge answered the expectation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_delimited_by_closing_never_breaks_a_promised_keep_alive() {
    let s = setup("").await;
    // HTTP/1.0 asking for keep-alive: the answer must say close, and close.
    let mut c = RawConn::connect(s.node.addr("web")).await;
    c.send(b"GET /x/close-delimited HTTP/1.0\r\nHost: edge.test\r\nConnection: keep-alive\r\n\r\n")
        .await;
    let r = c.response(false).await.unwrap();
    assert_eq!(r.text(), "upstream saw: GET /x/close-delimited HTTP/1.1\n");
    assert!(r.closes(), "{:?}", r.headers);
    assert!(c.closed().await);
    // HTTP/1.1: chunked, and the connection goes on.
    let mut c = RawConn::connect(s.node.addr("web")).await;
    c.send(b"GET /y/close-delimited HTTP/1.1\r\nHost: edge.test\r\n\r\n")
        .await;
    let r = c.response(false).await.unwrap();
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert!(!r.closes());
    c.send(b"GET /admin/z HTTP/1.1\r\nHost: edge.test\r\n\r\n")
        .await;
    assert_eq!(c.response(false).await.unwrap().status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_query_parameters_in_another_order_are_another_object() {
    let s = setup("").await;
    let a = s
        .raw(b"GET /cached/q?id=2&id=1 HTTP/1.1\r\nHost: edge.test\r\n\r\n")
        .await;
    assert_eq!(a.header("x-cache"), Some("MISS"));
    let b = s
        .raw(b"GET /cached/q?id=1&id=2 HTTP/1.1\r\nHost: edge.test\r\n\r\n")
        .await;
    assert_eq!(b.header("x-cache"), Some("MISS"));
    assert_eq!(b.text(), "upstream saw: GET /cached/q?id=1&id=2 HTTP/1.1\n");
    // Different names still share, in any order.
    s.raw(b"GET /cached/q?a=1&b=2 HTTP/1.1\r\nHost: edge.test\r\n\r\n")
        .await;
    let c = s
        .raw(b"GET /cached/q?b=2&a=1 HTTP/1.1\r\nHost: edge.test\r\n\r\n")
        .await;
    assert!(c.header("x-cache").unwrap().starts_with("HIT"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_set_with_a_zero_suffix_serves_the_rest_from_every_path() {
    let s = setup("").await;
    let req = b"GET /cached/rs HTTP/1.1\r\nHost: edge.test\r\nRange: bytes=0-4,-0\r\n\r\n";
    let miss = s.raw(req).await;
    let hit = s.raw(req).await;
    for (what, r) in [("miss", miss), ("hit", hit)] {
        assert_eq!(r.status, 206, "{what}");
        assert_eq!(r.header("content-range"), Some("bytes 0-4/38"), "{what}");
        assert_eq!(r.text(), "upstr", "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_far_past_any_object_does_not_crash_the_node() {
    let s = setup("").await;
    for range in [
        "bytes=18446744073709551615-",
        "bytes=18446744073709551614-18446744073709551615",
    ] {
        let r = s
            .raw(
                format!("GET /cached/far HTTP/1.1\r\nHost: edge.test\r\nRange: {range}\r\n\r\n")
                    .as_bytes(),
            )
            .await;
        assert!(r.status == 416 || r.status == 200, "{range}: {}", r.status);
    }
    let r = s
        .raw(b"GET /cached/alive HTTP/1.1\r\nHost: edge.test\r\n\r\n")
        .await;
    assert_eq!(r.status, 200, "the node is still up");
}

/// Fresh RAM hits on HTTP/1 keep-alive connections are answered by the
/// connection's own loop before pingora builds a session (issue 17,
/// `listen/shortcut.rs`); everything else is handed to pingora as it came.
/// Sent one at a time and all in one write, in both orders of hits and
/// other requests: answers in order, the same answer either way, only
/// misses reach the backend, a refused head after hits still gets its
/// refusal and the close, and hits are counted and logged like others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ram_hits_answered_before_pingora_keep_order_refusals_and_counts() {
    let s = setup("").await;
    let get = |path: &str, extra: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: edge.test\r\n{extra}\r\n").into_bytes()
    };
    // Stored first (a miss), then answered from RAM.
    for p in ["/cached/a", "/cached/b"] {
        let r = s.raw(&get(p, "")).await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(s.rec.take().len(), 2);
    let body_a = "upstream saw: GET /cached/a HTTP/1.1\n".to_string();
    for pipelined in [false, true] {
        let miss = format!("/fresh/{pipelined}");
        // (request, status, body, head_only)
        let exchange: Vec<(Vec<u8>, u16, Option<String>, bool)> = vec![
            (get("/cached/a", ""), 200, Some(body_a.clone()), false),
            (
                b"HEAD /cached/a HTTP/1.1\r\nHost: edge.test\r\n\r\n".to_vec(),
                200,
                None,
                true,
            ),
            (get("/admin/x", ""), 403, None, false),
            // Another spelling of the same authority and path: the same object.
            (
                b"GET /cached/./a HTTP/1.1\r\nHost: EDGE.test:80\r\n\r\n".to_vec(),
                200,
                Some(body_a.clone()),
                false,
            ),
            // The default port, as it came and with leading zeros.
            (
                b"GET /cached/a HTTP/1.1\r\nHost: edge.test:80\r\n\r\n".to_vec(),
                200,
                Some(body_a.clone()),
                false,
            ),
            (
                b"GET /cached/a HTTP/1.1\r\nHost: edge.test:00080\r\n\r\n".to_vec(),
                200,
                Some(body_a.clone()),
                false,
            ),
            (
                get(&miss, ""),
                200,
                Some(format!("upstream saw: GET {miss} HTTP/1.1\n")),
                false,
            ),
            (
                get("/cached/a", "Range: bytes=0-7\r\n"),
                206,
                Some("upstream".to_string()),
                false,
            ),
            (
                get("/cached/b", "X-Request-Id: abc-1\r\n"),
                200,
                None,
                false,
            ),
            (
                get("/cached/a", "If-None-Match: *\r\n"),
                304,
                Some(String::new()),
                false,
            ),
            (get("/cached/a", ""), 200, Some(body_a.clone()), false),
        ];
        let mut c = RawConn::connect(s.node.addr("web")).await;
        if pipelined {
            let all: Vec<u8> = exchange.iter().flat_map(|e| e.0.clone()).collect();
            c.send(&all).await;
        }
        for (req, status, body, head_only) in &exchange {
            if !pipelined {
                c.send(req).await;
            }
            let r = c.response(*head_only).await.unwrap();
            let what = String::from_utf8_lossy(req).into_owned();
            assert_eq!(r.status, *status, "{what} (pipelined: {pipelined})");
            if let Some(b) = body {
                assert_eq!(r.text(), *b, "{what}");
            }
            if *status == 200 && req.starts_with(b"GET /cached/") {
                assert_eq!(r.header("x-cache"), Some("HIT RAM"), "{what}");
                assert_eq!(r.header("connection"), Some("keep-alive"), "{what}");
                assert!(r.header("date").is_some(), "{what}");
                assert!(r.header("cache-status").is_some(), "{what}");
            }
        }
        // A head the door refuses, after hits on the same connection.
        c.send(b"GET /cached/a HTTP/1.1\r\nHost: edge.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
            .await;
        let r = c.response(false).await.unwrap();
        assert_eq!(r.status, 400, "pipelined: {pipelined}");
        assert_eq!(r.header("connection"), Some("close"));
        assert!(c.closed().await);
        let seen: Vec<String> = s.rec.take().iter().map(|r| r.request_line()).collect();
        assert_eq!(
            seen,
            [format!("GET {miss} HTTP/1.1")],
            "pipelined: {pipelined}"
        );
    }
    // Counted and logged as pingora's answers are: 2 x 10 answers of the
    // cached route with 2xx or 3xx and 2 warm-up misses (the refusals are
    // not the route's).
    let c = Client::new();
    let metrics = c.get(&s.node.admin_url("/metrics")).await.text();
    let ok = edge_testkit::metric_sum(
        &metrics,
        "edge_http_requests_total",
        &["route=\"all\"", "class=\"2xx\""],
    );
    let not_modified = edge_testkit::metric_sum(
        &metrics,
        "edge_http_requests_total",
        &["route=\"all\"", "class=\"3xx\""],
    );
    assert_eq!(ok + not_modified, 2.0 + 2.0 * 10.0, "{metrics}");
    eventually(
        Duration::from_secs(10),
        "the hits' access log lines",
        || async {
            let out = s.node.output();
            let lines: Vec<&str> = out
                .lines()
                .filter(|l| l.contains("abc-1") && l.contains("HIT") && l.contains("all"))
                .collect();
            (lines.len() == 2).then_some(())
        },
    )
    .await;
}

/// `max_requests_per_connection` counts the shortcut's answers too: the
/// last request a connection may carry is answered with `Connection: close`
/// (by pingora's path) and nothing after it is read, whether the earlier
/// ones were RAM hits or not, sent one by one or all at once; over TLS the
/// shortcut answers as over plain TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_cap_counts_ram_hits_answered_before_pingora() {
    let rec = Recorder::start().await;
    let ca = TestCa::new("cap CA");
    let dir = tempfile::tempdir().unwrap();
    let cert = ca.issue(&["edge.test"]);
    let (c, k) = (dir.path().join("c.pem"), dir.path().join("c.key"));
    std::fs::write(&c, &cert.cert_pem).unwrap();
    std::fs::write(&k, &cert.key_pem).unwrap();
    let node = EdgeNode::start(
        BIN,
        &format!(
            r#"
[server]
threads = 2
[admin]
listen = "127.0.0.1:0"
[[listener]]
name = "capped"
kind = "http"
address = "127.0.0.1:0"
limits = {{ max_requests_per_connection = 3 }}
[[listener]]
name = "tls"
kind = "https"
address = "127.0.0.1:0"
[[listener.certificate]]
server_names = ["edge.test"]
cert = "{c}"
key = "{k}"
default = true
[[route]]
name = "all"
pool = "rec"
[route.cache]
[[pool]]
name = "rec"
backends = [{{ address = "{rec}" }}]
[cache]
ram_size = "16 MiB"
"#,
            c = c.display(),
            k = k.display(),
            rec = rec.addr(),
        ),
    );
    let get = |p: &str| format!("GET {p} HTTP/1.1\r\nHost: edge.test\r\n\r\n").into_bytes();
    let mut warm = RawConn::connect(node.addr("capped")).await;
    warm.send(&get("/cached/c")).await;
    assert_eq!(warm.response(false).await.unwrap().status, 200);
    for (pipelined, miss_first) in [(false, false), (true, false), (false, true), (true, true)] {
        let first = if miss_first {
            format!("/fresh/{pipelined}")
        } else {
            "/cached/c".to_string()
        };
        let reqs = [
            get(&first),
            get("/cached/c"),
            get("/cached/c"),
            get("/cached/c"),
        ];
        let mut conn = RawConn::connect(node.addr("capped")).await;
        if pipelined {
            conn.send(&reqs.concat()).await;
        }
        for (i, req) in reqs.iter().take(3).enumerate() {
            if !pipelined {
                conn.send(req).await;
            }
            let r = conn.response(false).await.unwrap();
            assert_eq!(r.status, 200, "answer {i} ({pipelined}, {miss_first})");
            let want = if i == 2 { "close" } else { "keep-alive" };
            assert_eq!(
                r.header("connection"),
                Some(want),
                "answer {i} ({pipelined}, {miss_first})"
            );
        }
        assert!(conn.closed().await, "({pipelined}, {miss_first})");
    }
    // https is part of the key: stored by the first, answered from RAM after.
    let mut tls = RawConn::connect_tls(node.addr("tls"), "edge.test", &ca.pem()).await;
    for i in 0..4 {
        tls.send(&get("/cached/c")).await;
        let r = tls.response(false).await.unwrap();
        assert_eq!(r.status, 200);
        let want = if i == 0 { "MISS" } else { "HIT RAM" };
        assert_eq!(r.header("x-cache"), Some(want), "TLS request {i}");
        assert_eq!(r.header("connection"), Some("keep-alive"));
        assert_eq!(r.text(), "upstream saw: GET /cached/c HTTP/1.1\n");
    }
    let seen: Vec<String> = rec.take().iter().map(|r| r.request_line()).collect();
    assert_eq!(
        seen,
        [
            "GET /cached/c HTTP/1.1",
            "GET /fresh/false HTTP/1.1",
            "GET /fresh/true HTTP/1.1",
            "GET /cached/c HTTP/1.1"
        ]
    );
}

/// A body-less HTTP/1 pass-through is sent by the connection's own loop
/// without a pingora session (`service/lean_pass.rs`, issue 17) and must
/// be indistinguishable from pingora's path: two nodes, the fast paths on
/// and off, each in front of its own backend scripted alike, get the same
/// requests on one keep-alive connection. The client gets the same
/// answers (status, reason, fields in order but `Date`, body), the backend
/// the same requests (heads but the generated ids, bodies), the access log
/// the same lines (but ids, timings and the backend's port), whatever the
/// backend answers: length, chunks, a body delimited by its close, a 103
/// first, 204, 304 to a conditional request, 404, a 500 (no retries), a
/// `HEAD`, hop-by-hop and connection-nominated fields both ways, bodies
/// of 300 KB, an empty one. The node with the fast paths counts every
/// one of them as served without a session, the other none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_through_without_a_session_is_pingora_s_byte_for_byte() {
    let script = |o: &Scripted| {
        o.set(
            "/p/plain",
            Reply::ok(
                "plain body",
                &[("X-A", "1"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")],
            ),
        );
        o.set(
            "/p/hop",
            Reply::ok(
                "hop",
                &[
                    ("Connection", "X-Private, keep-alive"),
                    ("X-Private", "secret"),
                    ("Keep-Alive", "timeout=5"),
                    ("Proxy-Authenticate", "Basic"),
                    ("Trailer", "X-T"),
                    ("Upgrade", "h2c"),
                    ("X-Kept", "yes"),
                ],
            ),
        );
        o.set("/p/chunked", Reply::ok(&"c".repeat(100), &[]).chunked(7));
        o.set(
            "/p/big",
            Reply::ok(&"b".repeat(300_000), &[]).chunked(16_384),
        );
        o.set("/p/biglen", Reply::ok(&"l".repeat(300_000), &[]));
        o.set(
            "/p/close",
            Reply::ok("until the close", &[]).close_delimited(),
        );
        o.set(
            "/p/hints",
            Reply::ok("hinted", &[])
                .with_interim(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"),
        );
        o.set("/p/empty", Reply::new(204, "", &[("X-Kind", "none")]));
        o.set(
            "/p/tagged",
            Reply::ok("tagged", &[("ETag", "\"v1\"")]).revalidated_with(Reply::new(
                304,
                "",
                &[("ETag", "\"v1\"")],
            )),
        );
        o.set("/p/missing", Reply::new(404, "not here", &[]));
        o.set("/p/broken", Reply::new(500, "broken", &[]));
        o.set("/p/zero", Reply::ok("", &[]));
        o.set(
            "/p/aged",
            Reply::ok("aged", &[("Age", "30"), ("Cache-Control", "max-age=60")]),
        );
    };
    let config = |origin: &Scripted, a: &Scripted, b: &Scripted, fast: bool| {
        format!(
            r#"
[server]
fast_paths = {fast}

[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:0"

[[route]]
name = "pass"
pool = "scripted"
request_headers = {{ set = {{ "X-To-Backend" = "1" }}, remove = ["X-Secret"] }}
response_headers = {{ set = {{ "X-Edge" = "1" }}, remove = ["X-A"] }}

[[pool]]
name = "scripted"
backends = [{{ address = "{}" }}]
retry = {{ attempts = 0 }}

[[route]]
name = "pair"
priority = 10
pool = "pair"
match = {{ path_prefix = "/r/" }}

[[pool]]
name = "pair"
backends = [{{ address = "{}" }}, {{ address = "{}" }}]
retry = {{ attempts = 1, backoff = "1ms", max_backoff = "1ms", on = ["connect_failure", "reset", "timeout", "gateway_error"] }}
timeouts = {{ first_byte = "300ms" }}
"#,
            origin.addr(),
            a.addr(),
            b.addr(),
        )
    };
    let get = |m: &str, p: &str, extra: &str| {
        format!("{m} {p} HTTP/1.1\r\nHost: edge.test\r\n{extra}\r\n")
    };
    let requests = [
        get("GET", "/p/plain", ""),
        get(
            "GET",
            "/p/plain?b=2&a=1",
            "X-Forwarded-For: 10.0.0.1\r\nVia: 1.1 other\r\nCookie: a=b\r\nX-Secret: s\r\n",
        ),
        get(
            "GET",
            "/p/hop",
            "Keep-Alive: 5\r\nProxy-Authorization: x\r\n",
        ),
        get("HEAD", "/p/plain", ""),
        get("HEAD", "/p/chunked", ""),
        get("GET", "/p/chunked", "Accept-Encoding: gzip\r\n"),
        get("GET", "/p/big", ""),
        get("GET", "/p/biglen", ""),
        get("GET", "/p/hints", ""),
        get("GET", "/p/empty", ""),
        get("GET", "/p/tagged", "If-None-Match: \"v1\"\r\n"),
        get("GET", "/p/tagged", ""),
        get("GET", "/p/missing", ""),
        get("GET", "/p/broken", ""),
        get("GET", "/p/zero", ""),
        get("GET", "/p/aged", "X-Request-Id: client-given-id\r\n"),
        get(
            "GET",
            "/p/plain",
            "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n",
        ),
        get("GET", "/p/close", ""),
        get("GET", "/p/plain", ""),
        get("GET", "/r/flaky", ""),
        get("GET", "/r/flaky", ""),
        get("GET", "/r/flaky", ""),
        get("GET", "/r/hinted", ""),
        get("GET", "/r/slow", ""),
        // Pipelined: three heads in one write, answered in order.
        [
            get("GET", "/p/plain?one", ""),
            get("GET", "/p/chunked", ""),
            get("GET", "/p/plain?three", ""),
        ]
        .concat(),
    ];
    let mut seen = Vec::new();
    for fast in [true, false] {
        let origin = Scripted::start().await;
        script(&origin);
        // Two backends, alike: both hold back an answer past `first_byte`,
        // both send a 103 before a 404. (After a 103 the pass-through does
        // not retry a 5xx, the client having an answer begun; pingora's
        // path was seen to retry one, the client getting one 103.)
        let (a, b) = (Scripted::start().await, Scripted::start().await);
        // Which one a round robin starts with is not fixed: each fails its
        // first `/r/flaky` (the first request's attempt and its retry both
        // get a 503), then answers.
        for o in [&a, &b] {
            o.set("/r/flaky", Reply::ok("fine", &[]));
            o.once("/r/flaky", Reply::new(503, "busy", &[]));
            o.set(
                "/r/hinted",
                Reply::new(404, "hinted, missing", &[]).with_interim(
                    b"HTTP/1.1 103 Early Hints\r\nLink: </h.css>; rel=preload\r\n\r\n",
                ),
            );
            o.set(
                "/r/slow",
                Reply::ok("late", &[]).with_delay(Duration::from_millis(1500)),
            );
        }
        let node = EdgeNode::start(BIN, &config(&origin, &a, &b, fast));
        let mut c = RawConn::connect(node.addr("web")).await;
        let mut answers = Vec::new();
        for req in &requests {
            c.send(req.as_bytes()).await;
            let heads = req.matches(" HTTP/1.1\r\n").count();
            let mut finals = 0;
            while finals < heads {
                let r = c.response(req.starts_with("HEAD")).await.unwrap();
                let interim = r.status < 200;
                answers.push((
                    r.status,
                    r.reason.clone(),
                    r.headers
                        .iter()
                        .filter(|(k, _)| k != "date")
                        .cloned()
                        .collect::<Vec<_>>(),
                    r.body.clone(),
                ));
                if !interim {
                    finals += 1;
                }
            }
            // A 504 ends its connection (pingora does not reuse it).
            if answers.last().is_some_and(|a| a.0 == 504) {
                c = RawConn::connect(node.addr("web")).await;
            }
        }
        let mut pair = a.all();
        pair.extend(b.all());
        // In order at the one backend; as a set at the pair.
        pair.sort_by(|x, y| (&x.0, &x.1.head).cmp(&(&y.0, &y.1.head)));
        let upstream: Vec<(String, Vec<String>, Vec<u8>)> = origin
            .all()
            .into_iter()
            .chain(pair)
            .map(|(path, r)| {
                let head = String::from_utf8_lossy(&r.head)
                    .lines()
                    .filter(|l| {
                        let l = l.to_ascii_lowercase();
                        !l.starts_with("x-request-id: ") || l.contains("client-given-id")
                    })
                    .map(|l| {
                        // The span id is edge's own, new per request, and
                        // so is the trace id of a trace edge starts.
                        match l.get(..12) {
                            Some(p) if p.eq_ignore_ascii_case("traceparent:") => {
                                let parts: Vec<&str> = l.split('-').collect();
                                let given =
                                    parts.get(1) == Some(&"4bf92f3577b34da6a3ce929d0e0e4736");
                                format!(
                                    "{}-{}-{}",
                                    parts[0],
                                    if given { parts[1] } else { "new" },
                                    parts.last().copied().unwrap_or_default()
                                )
                            }
                            _ => l.to_string(),
                        }
                    })
                    .collect();
                (path, head, r.body)
            })
            .collect();
        let heads: usize = requests
            .iter()
            .map(|r| r.matches(" HTTP/1.1\r\n").count())
            .sum();
        // A request's line is written after its answer.
        tokio::task::block_in_place(|| {
            node.wait_for(
                Duration::from_secs(20),
                "every request's access line",
                |o| o.lines.iter().filter(|l| l.contains(" access: ")).count() >= heads,
            )
        });
        let logged: Vec<String> = node
            .output()
            .lines()
            .filter(|l| l.contains(" access: "))
            .map(|l| {
                l.split(' ')
                    .skip(1)
                    .filter(|f| {
                        ![
                            "request_id=",
                            "trace_id=",
                            "upstream_ms=",
                            "total_ms=",
                            "backend=",
                        ]
                        .iter()
                        .any(|p| f.starts_with(p))
                            // (The backend's address is in an error's text too.)
                            && !f.starts_with("127.0.0.1:")
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        let metrics = Client::new().get(&node.admin_url("/metrics")).await.text();
        let sessionless = edge_testkit::metric_sum(
            &metrics,
            "edge_http_sessionless_requests_total",
            &["way=\"pass\""],
        );
        // Every head under /p/ is the pass-through's to the end; one under
        // /r/ may be handed to pingora's path after a failed attempt.
        let on_p = requests
            .iter()
            .flat_map(|r| r.split("\r\n\r\n"))
            .filter(|h| h.contains(" /p/"))
            .count();
        if fast {
            assert!(
                sessionless >= on_p as f64 && sessionless <= heads as f64,
                "fast paths on: {sessionless} of {heads} ({on_p} under /p/): {metrics}"
            );
        } else {
            assert_eq!(sessionless, 0.0, "fast paths off: {metrics}");
        }
        assert_eq!(logged.len(), heads, "{}", node.output());
        seen.push((answers, upstream, logged));
    }
    let (off, on) = (seen.pop().unwrap(), seen.pop().unwrap());
    for (i, (a, b)) in on.0.iter().zip(&off.0).enumerate() {
        assert_eq!(a, b, "answer {i} differs (fast paths on, off)");
    }
    assert_eq!(on.0.len(), off.0.len());
    for (i, (a, b)) in on.1.iter().zip(&off.1).enumerate() {
        assert_eq!(a, b, "request {i} upstream differs (fast paths on, off)");
    }
    assert_eq!(on.1.len(), off.1.len());
    assert_eq!(on.2, off.2, "access log lines differ (fast paths on, off)");
}
