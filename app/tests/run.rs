//! End to end: the real `edge` binary on port 0 in front of real origins.

// Helpers in test files may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_testkit::{eventually, origin, Client, EdgeNode, RawConn, RunningOrigin};
use http::Method;
use nix::sys::signal::Signal;

const BIN: &str = env!("CARGO_BIN_EXE_edge");
const TOKEN: &str = "test-token-0123456789abcdef";

fn config(origin: &RunningOrigin) -> String {
    config_with(&[origin], "")
}

fn config_with(origins: &[&RunningOrigin], extra: &str) -> String {
    let backends: Vec<String> = origins
        .iter()
        .map(|o| format!("{{ address = \"{}\" }}", o.addr()))
        .collect();
    format!(
        r#"
[server]
threads = 2
grace_period = "10s"
shutdown_delay = "0s"

[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"

[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:0"

[[pool]]
name = "origin"
backends = [{}]

[[route]]
name = "video"
pool = "origin"
{extra}
"#,
        backends.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn bytes_through_the_edge_equal_the_origins_and_metrics_count_them() {
    let o = origin("a").await;
    let node = EdgeNode::start(BIN, &config(&o));
    let c = Client::new();
    for path in [
        "/vod/bbb/master.m3u8",
        "/vod/bbb/high/index.m3u8",
        "/vod/bbb/high/seg_3.ts",
        "/vod/sintel/low/seg_14.ts",
        "/vod/bbb/manifest.mpd",
        "/obj/x.bin?size=100000",
    ] {
        let r = c.get(&node.url("web", path)).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.body, o.expected_body(path).unwrap(), "{path}");
    }
    let whole = o.expected_body("/vod/bbb/low/seg_9.ts").unwrap();
    let range = c
        .get_with(
            &node.url("web", "/vod/bbb/low/seg_9.ts"),
            &[("range", "bytes=1000-1999")],
        )
        .await;
    assert_eq!(range.status, 206);
    assert_eq!(range.body, whole.slice(1000..2000));
    assert_eq!(c.get(&node.url("web", "/vod/nope/x.ts")).await.status, 404);

    // Requests are counted when their log line is made, just after the
    // response is sent: wait for the last one.
    let metrics = eventually(Duration::from_secs(5), "the 404 counted", || async {
        let m = c.get(&node.admin_url("/metrics")).await.text();
        m.contains("edge_http_requests_total{class=\"4xx\",pool=\"origin\",route=\"video\"} 1")
            .then_some(m)
    })
    .await;
    let count = |class: &str| -> u64 {
        let needle = format!(
            "edge_http_requests_total{{class=\"{class}\",pool=\"origin\",route=\"video\"}} "
        );
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(needle.as_str()))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {needle} in\n{metrics}"))
    };
    assert_eq!(count("2xx"), 7);
    assert_eq!(count("4xx"), 1);
    assert!(
        metrics.contains("edge_upstream_response_seconds_count{backend="),
        "{metrics}"
    );
    let info = metrics
        .lines()
        .find(|l| l.starts_with("edge_build_info{"))
        .expect("edge_build_info");
    assert!(
        info.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
            && info.contains("commit=\"")
            && info.ends_with(" 1"),
        "{info}"
    );
    // The process collector: memory, CPU, descriptors, start time.
    for name in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        let value = edge_testkit::metric_sum(&metrics, name, &[]);
        assert!(value > 0.0, "{name}");
    }
    assert!(metrics.contains("\nprocess_cpu_seconds_total "));
    assert_eq!(o.stats().requests, 8);
}

/// Bodies of every size and framing pass through byte for byte: a
/// `Content-Length` body read a whole buffer at a time (handed on without a
/// copy), in small pieces (copied), across the buffer's size; chunked and
/// close-delimited bodies; pieces read together leave in one vectored
/// write. Each size twice, the second on a connection the first used.
#[tokio::test(flavor = "multi_thread")]
async fn bodies_of_every_size_and_framing_pass_through_byte_for_byte() {
    let o = origin("a").await;
    let s = edge_testkit::Scripted::start().await;
    let extra = format!(
        r#"
[[pool]]
name = "scripted"
backends = [{{ address = "{}" }}]

[[route]]
name = "scripted"
priority = 10
pool = "scripted"
match = {{ path_prefix = "/s/" }}
"#,
        s.addr()
    );
    let node = EdgeNode::start(BIN, &config_with(&[&o], &extra));
    let c = Client::new();
    let mut paths: Vec<String> = [
        1usize, 100, 1023, 1024, 32_767, 32_768, 65_535, 65_536, 65_537, 100_000, 131_072,
        1_048_576, 3_000_001,
    ]
    .iter()
    .map(|n| format!("/obj/b{n}.bin?size={n}&cc=no-store"))
    .collect();
    // Pieces of 10,000 bytes a few milliseconds apart: small reads.
    paths.push("/obj/drip.bin?size=200000&cc=no-store&fault=drip%3D10000%2F2ms".into());
    for path in &paths {
        let expected = o.expected_body(path).unwrap();
        for _ in 0..2 {
            let r = c.get(&node.url("web", path)).await;
            assert_eq!(r.status, 200, "{path}");
            assert_eq!(r.body.len(), expected.len(), "{path}");
            assert!(r.body == expected, "{path}: the bytes differ");
        }
    }
    let pattern = |n: usize| -> Vec<u8> { (0..n).map(|i| (i * 7 + i / 251) as u8).collect() };
    let mut replies = Vec::new();
    for (name, n, chunk) in [
        ("chunked-small", 5_000, 700),
        ("chunked", 300_000, 7_000),
        ("chunked-large", 2_000_000, 65_536),
        ("close", 150_000, 0),
        ("close-large", 1_500_000, 0),
    ] {
        let mut r = edge_testkit::Reply::ok("", &[("cache-control", "no-store")]);
        r.body = pattern(n);
        let r = if chunk > 0 {
            r.chunked(chunk)
        } else {
            r.close_delimited()
        };
        let path = format!("/s/{name}");
        s.set(&path, r);
        replies.push((path, pattern(n)));
    }
    for (path, expected) in &replies {
        for _ in 0..2 {
            let r = c.get(&node.url("web", path)).await;
            assert_eq!(r.status, 200, "{path}");
            assert_eq!(r.body.len(), expected.len(), "{path}");
            assert!(r.body[..] == expected[..], "{path}: the bytes differ");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_nothing_routes_gets_404_from_edge_itself() {
    let o = origin("a").await;
    let node = EdgeNode::start(
        BIN,
        &config_with(&[&o], "[route.match]\npath_prefix = \"/vod/\""),
    );
    let r = Client::new().get(&node.url("web", "/other")).await;
    assert_eq!(r.status, 404);
    assert!(r.text().contains("no route"));
    assert_eq!(o.stats().requests, 0);
}

/// Keeps `workers` clients requesting until told to stop; counts failures.
struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    seen_origins: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
}

impl Load {
    fn start(url: String, workers: usize) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen_origins = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
        let tasks = (0..workers)
            .map(|_| {
                let (stop, ok, failed, seen, url) = (
                    stop.clone(),
                    ok.clone(),
                    failed.clone(),
                    seen_origins.clone(),
                    url.clone(),
                );
                tokio::spawn(async move {
                    let c = Client::new();
                    // Bounded: at most 20,000 requests or until stopped.
                    for _ in 0..20_000 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        match c.request(Method::GET, &url, &[], "").await {
                            Ok(r) if r.status == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                                if let Some(name) = r.header("x-origin-name") {
                                    seen.lock().unwrap().insert(name.to_string());
                                }
                            }
                            Ok(r) => failed.lock().unwrap().push(format!("status {}", r.status)),
                            Err(e) => failed.lock().unwrap().push(e),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            tasks,
            seen_origins,
        }
    }

    async fn finish(self) -> (usize, Vec<String>, std::collections::BTreeSet<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let failed = self.failed.lock().unwrap().clone();
        let seen = self.seen_origins.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failed, seen)
    }
}

async fn served_by(c: &Client, url: &str, name: &str) -> Option<()> {
    (c.get(url).await.header("x-origin-name") == Some(name)).then_some(())
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_with_a_new_pool_takes_effect_without_dropping_requests() {
    let (a, b) = (origin("a").await, origin("b").await);
    let node = EdgeNode::start(BIN, &config(&a));
    let url = node.url("web", "/obj/o.bin?size=20000");
    let c = Client::new();
    assert!(served_by(&c, &url, "a").await.is_some());

    // A slow request in flight across the reload: 40 KiB dripped over ~2 s.
    let slow_url = node.url("web", "/obj/slow.bin?size=40960&fault=drip%3D4096/200ms");
    let slow = tokio::spawn(async move { Client::new().get(&slow_url).await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let load = Load::start(url.clone(), 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    node.write_config(&config(&b));
    node.signal(Signal::SIGHUP);
    eventually(
        Duration::from_secs(10),
        "requests served by origin b",
        || served_by(&c, &url, "b"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, failed, seen) = load.finish().await;
    assert!(
        failed.is_empty(),
        "{} failed of {}: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 20, "{ok}");
    assert!(seen.contains("a") && seen.contains("b"), "{seen:?}");

    let slow = slow.await.unwrap();
    assert_eq!(slow.status, 200);
    assert_eq!(
        slow.body.len(),
        40960,
        "the in-flight request finished on the old pool"
    );
    assert_eq!(slow.header("x-origin-name"), Some("a"));
    node.wait_for_line("config reloaded on SIGHUP", Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_reload_applies_a_new_pool_and_a_bad_file_is_refused_while_serving_goes_on() {
    let (a, b) = (origin("a").await, origin("b").await);
    let node = EdgeNode::start(BIN, &config(&a));
    let url = node.url("web", "/obj/x?size=10");
    let c = Client::new();
    let reload = || async {
        c.request(
            Method::POST,
            &node.admin_url("/reload"),
            &[("authorization", &format!("Bearer {TOKEN}"))],
            "",
        )
        .await
        .unwrap()
    };

    node.write_config(&config(&b));
    let ok = reload().await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["status"], "applied");
    assert!(
        ok.json()["summary"]
            .as_str()
            .unwrap()
            .contains("pools ~origin"),
        "{}",
        ok.text()
    );
    assert!(served_by(&c, &url, "b").await.is_some());

    let load = Load::start(url.clone(), 2);
    let broken = config(&a).replace(
        "backends = [",
        "backends = [{ address = \"127.0.0.1:9\", weight = 0 }, ",
    );
    node.write_config(&broken);
    let bad = reload().await;
    assert_eq!(bad.status, 422, "{}", bad.text());
    let body = bad.json();
    assert_eq!(body["status"], "rejected");
    let diag = &body["diagnostics"][0];
    assert_eq!(diag["path"], "pool[0].backends[0].weight", "{body}");
    assert!(diag["line"].as_u64().unwrap() > 0);
    assert!(body["text"].as_str().unwrap().contains("0 is too small"));
    // The same errors `edge check` prints.
    let check = std::process::Command::new(BIN)
        .arg("check")
        .arg(node.config_path())
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&check.stderr).contains(diag["message"].as_str().unwrap()));

    let (ok_count, failed, seen) = load.finish().await;
    assert!(failed.is_empty(), "{failed:?}");
    assert!(ok_count > 0);
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec!["b".to_string()],
        "still the old config"
    );

    // A host name that does not resolve does not stop a reload: its backend
    // is down (and reported) until it resolves.
    node.write_config(&config(&a).replace(&format!("{}", a.addr()), "no-such-host.invalid:80"));
    let applied = reload().await;
    assert_eq!(applied.status, 200, "{}", applied.text());
    let auth = format!("Bearer {TOKEN}");
    let pools = c
        .get_with(&node.admin_url("/pools"), &[("authorization", &auth)])
        .await
        .json();
    assert!(pools[0]["names"][0]["error"].is_string(), "{pools}");
    assert_eq!(c.get(&url).await.status, 503);
}

#[tokio::test(flavor = "multi_thread")]
async fn mutating_admin_calls_need_the_token() {
    let o = origin("a").await;
    let node = EdgeNode::start(BIN, &config(&o));
    let c = Client::new();
    let url = node.admin_url("/reload");
    let none = c.request(Method::POST, &url, &[], "").await.unwrap();
    assert_eq!(none.status, 401);
    assert!(none.header("www-authenticate").is_some());
    let wrong = c
        .request(Method::POST, &url, &[("authorization", "Bearer nope")], "")
        .await
        .unwrap();
    assert_eq!(wrong.status, 401);
    // Reads are open but /config, and the token never shows.
    assert_eq!(c.get(&node.admin_url("/live")).await.status, 200);
    assert_eq!(c.get(&node.admin_url("/ready")).await.status, 200);
    assert_eq!(c.get(&node.admin_url("/config")).await.status, 401);
    let auth = format!("Bearer {TOKEN}");
    let config = c
        .get_with(&node.admin_url("/config"), &[("authorization", &auth)])
        .await;
    assert_eq!(config.status, 200);
    assert!(!config.text().contains(TOKEN));
    assert_eq!(config.json()["admin"]["token"], "<redacted>");
    assert_eq!(config.json()["pools"][0]["name"], "origin");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_token_mutating_calls_are_refused() {
    let o = origin("a").await;
    let node = EdgeNode::start(
        BIN,
        &config(&o).replace(&format!("token = \"{TOKEN}\""), ""),
    );
    let r = Client::new()
        .request(
            Method::POST,
            &node.admin_url("/reload"),
            &[("authorization", "Bearer anything")],
            "",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_keeps_accepting_for_the_shutdown_delay_with_ready_at_503() {
    let o = origin("a").await;
    let config = config(&o).replace("shutdown_delay = \"0s\"", "shutdown_delay = \"30s\"");
    let mut node = EdgeNode::start(BIN, &config);
    let c = Client::new();
    // A keep-alive client connected before the signal.
    let before = RawConn::connect(node.addr("web")).await;
    node.signal(Signal::SIGTERM);
    node.wait_for_line(
        "still accepting for the shutdown delay",
        Duration::from_secs(10),
    );
    assert_eq!(c.get(&node.admin_url("/ready")).await.status, 503);
    // New connections are still served, and told to go.
    for i in 0..5 {
        let mut conn = RawConn::connect(node.addr("web")).await;
        conn.send(format!("GET /obj/d{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .await;
        let r = conn.response(false).await.unwrap();
        assert_eq!(r.status, 200, "connection {i} during the delay");
        assert!(r.closes(), "answers during the delay say Connection: close");
        assert!(conn.closed().await);
    }
    let mut before = before;
    before.send(b"GET /obj/k HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let r = before.response(false).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.closes(),
        "an old keep-alive connection's next answer closes it"
    );
    // A second SIGTERM ends the delay: the node drains and exits.
    node.signal(Signal::SIGTERM);
    let status = node.wait_exit(Duration::from_secs(20)).expect("exits");
    assert!(status.success(), "{}", node.output());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_in_flight_requests_finish_then_exits() {
    let o = origin("a").await;
    let mut node = EdgeNode::start(BIN, &config(&o));
    let slow_url = node.url("web", "/obj/slow.bin?size=20480&fault=drip%3D2048/150ms");
    let slow = tokio::spawn(async move { Client::new().get(&slow_url).await });
    let c = Client::new();
    eventually(
        Duration::from_secs(5),
        "the slow request reaching the origin",
        || async { (o.stats().in_flight > 0).then_some(()) },
    )
    .await;
    let started = Instant::now();
    node.signal(Signal::SIGTERM);
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 20480, "the in-flight request was not cut");
    let status = node
        .wait_exit(Duration::from_secs(15))
        .expect("exits after draining");
    assert!(status.success(), "{status:?}\n{}", node.output());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "did not wait out the whole grace period"
    );
    assert!(c
        .request(Method::GET, &node.url("web", "/obj/x"), &[], "")
        .await
        .is_err());
    assert!(node.output().contains("drained"), "{}", node.output());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listener_added_by_reload_serves_and_a_removed_one_stops() {
    let o = origin("a").await;
    let node = EdgeNode::start(BIN, &config(&o));
    // Limits longer than a test waits: an idle connection closed below was
    // closed by the listener's removal, not by a timeout.
    let extra = "\n[[listener]]\nname = \"web2\"\nkind = \"http\"\naddress = \"127.0.0.1:0\"\n\
                 limits = { header_timeout = \"120s\", keepalive_timeout = \"120s\" }\n";
    node.write_config(&format!("{}{extra}", config(&o)));
    node.signal(Signal::SIGHUP);
    node.wait_for(Duration::from_secs(10), "listener web2", |out| {
        out.listeners.contains_key("web2")
    });
    let c = Client::new();
    assert_eq!(c.get(&node.url("web2", "/obj/x?size=5")).await.status, 200);

    let web2 = node.url("web2", "/obj/x?size=5");
    // Keep-alive connections idle on the listener to be removed: one that
    // was served two requests (its wait for the drain made at its first
    // idle wait and kept across the second request), one that never sent.
    let web2_addr = node.addr("web2");
    let open_on_web2 = || async {
        let text = c.get(&node.admin_url("/metrics")).await.text();
        edge_testkit::metric_sum(&text, "edge_connections_open", &["listener=\"web2\""])
    };
    let open_before = open_on_web2().await;
    let mut served = RawConn::connect(web2_addr).await;
    for i in 0..2 {
        served
            .send(format!("GET /obj/k{i}?size=5 HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .await;
        let r = served.response(false).await.unwrap();
        assert_eq!(r.status, 200, "request {i} before the reload");
        assert!(!r.closes());
    }
    let mut silent = RawConn::connect(web2_addr).await;
    // Both accepted by edge before the listener goes (a connection still
    // in the kernel's queue would be reset, not closed by edge).
    edge_testkit::eventually(
        Duration::from_secs(10),
        "two connections open on web2",
        || async { (open_on_web2().await >= open_before + 2.0).then_some(()) },
    )
    .await;
    node.write_config(&config(&o));
    node.signal(Signal::SIGHUP);
    eventually(
        Duration::from_secs(10),
        "web2 to stop accepting",
        || async {
            Client::without_keepalive()
                .request(Method::GET, &web2, &[], "")
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    // Idle connections of a removed listener are closed, not left open.
    assert!(served.closed().await, "a served idle connection closes");
    assert!(silent.closed().await, "a connection that never sent closes");
    assert_eq!(c.get(&node.url("web", "/obj/x?size=5")).await.status, 200);
}

#[test]
fn a_config_with_errors_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nthreads = 0\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:2:11: server.threads"), "{err}");
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.toml");
    std::fs::write(
        &path,
        format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[[listener]]\nname = \"web\"\nkind = \"http\"\naddress = \"{}\"\n",
            taken.local_addr().unwrap()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listener web: cannot listen on"), "{err}");
}

/// Issue 17: an HTTP/2 RAM hit is written where the connection accepts
/// the stream, and the stream gets a task of its own only when its body
/// must wait for the client's window.
/// With a stream window of 1,000 bytes, hits of every size around it
/// arrive whole and once (the part that left before the wait is not sent
/// again), each counted once by the shortcut; a client that resets its
/// streams while their bodies wait leaves the node serving.
#[tokio::test(flavor = "multi_thread")]
async fn http2_ram_hits_that_wait_for_the_window_arrive_whole_and_once() {
    let o = origin("a").await;
    let config = format!(
        r#"
[server]
threads = 1
shutdown_delay = "0s"

[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:0"
h2c = true

[[pool]]
name = "origin"
backends = [{{ address = "{}" }}]

[[route]]
name = "cached"
pool = "origin"
[route.cache]

[cache]
ram_size = "16 MiB"
"#,
        o.addr()
    );
    let node = EdgeNode::start(BIN, &config);
    let connect = |window: u32| {
        let addr = node.addr("web");
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (send, conn) =
                hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .initial_stream_window_size(window)
                    .handshake::<_, http_body_util::Empty<hyper::body::Bytes>>(
                        hyper_util::rt::TokioIo::new(tcp),
                    )
                    .await
                    .unwrap();
            tokio::spawn(conn);
            send
        }
    };
    let shortcuts = || {
        let url = node.admin_url("/metrics");
        async move {
            let metrics = Client::new().get(&url).await.text();
            edge_testkit::metric_sum(
                &metrics,
                "edge_http_sessionless_requests_total",
                &["way=\"h2_ram_hit\""],
            )
        }
    };
    let sizes = [1usize, 999, 1000, 1001, 2000, 5000, 16_384, 70_000];
    let path = |n: usize| format!("/obj/w/{n}.bin?size={n}&cc=max-age%3D600");
    // Filled over HTTP/1.1.
    let c = Client::new();
    for n in sizes {
        let r = c.get(&node.url("web", &path(n))).await;
        assert_eq!(r.status, 200);
    }
    let mut send = connect(1000).await;
    for round in 0..2 {
        let before = shortcuts().await;
        for n in sizes {
            let uri = format!("http://{}{}", node.addr("web"), path(n));
            let req = http::Request::builder()
                .uri(uri)
                .body(http_body_util::Empty::new())
                .unwrap();
            // Bounded: a body whose wait is never woken fails, not hangs.
            let (cache, body) = tokio::time::timeout(Duration::from_secs(30), async {
                let resp = send.send_request(req).await.unwrap();
                assert_eq!(resp.status(), 200, "{n}");
                let cache = resp.headers().get("x-cache").cloned();
                let body = http_body_util::BodyExt::collect(resp.into_body())
                    .await
                    .unwrap()
                    .to_bytes();
                (cache, body)
            })
            .await
            .unwrap_or_else(|_| panic!("round {round}: {n}: no whole answer in 30 s"));
            assert!(
                cache
                    .as_ref()
                    .is_some_and(|c| c.as_bytes().starts_with(b"HIT")),
                "{n}: {cache:?}"
            );
            let expected = o.expected_body(&path(n)).unwrap();
            assert_eq!(body.len(), expected.len(), "round {round}: {n}");
            assert!(body == expected, "round {round}: {n}: the bytes differ");
        }
        // `make test`'s second pass turns the fast paths off: pingora's
        // path answers each, the same bytes, and the shortcut none.
        let fast = std::env::var("EDGE_TEST_FAST_PATHS").as_deref() != Ok("off");
        let taken = shortcuts().await - before;
        let want = if fast { sizes.len() } else { 0 };
        assert_eq!(taken, want as f64, "round {round}");
    }
    // Streams reset while their bodies wait: each is logged with the part
    // handed to the connection before the wait (the window's 1,000 bytes
    // at least, not the whole), and the node goes on serving.
    let logged = "/obj/w/70000.bin";
    let seen = node.access_lines(logged).len();
    let mut cut = connect(1000).await;
    for _ in 0..3 {
        let uri = format!("http://{}{}", node.addr("web"), path(70_000));
        let req = http::Request::builder()
            .uri(uri)
            .body(http_body_util::Empty::new())
            .unwrap();
        let resp = cut.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        // The body is not read: dropping it resets the stream.
        drop(resp);
    }
    for k in 0..3 {
        let line = node.access_line(logged, seen + k, "status=200").await;
        let bytes = edge_testkit::logged_bytes(&line);
        assert!((1000..70_000).contains(&bytes), "bytes={bytes}: {line}");
    }
    let uri = format!("http://{}{}", node.addr("web"), path(5000));
    let req = http::Request::builder()
        .uri(uri)
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(body.len(), 5000);
}

/// Many HTTP/2 streams at once on one connection, of every body size
/// around h2's write thresholds (256 and 1,024 bytes chained, up to 4 KiB
/// copied into the write buffer when there is room: vendor/h2's
/// EDGE-PATCH), passed through and as RAM hits: each stream gets its own
/// body, byte for byte, however the connection batched the frames.
#[tokio::test(flavor = "multi_thread")]
async fn http2_streams_of_every_size_at_once_arrive_byte_for_byte() {
    let o = origin("a").await;
    let config = format!(
        r#"
[server]
threads = 1
shutdown_delay = "0s"

[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:0"
h2c = true

[[pool]]
name = "origin"
backends = [{{ address = "{}" }}]

[[route]]
name = "cached"
pool = "origin"
match = {{ path_prefix = "/obj/c/" }}
[route.cache]

[[route]]
name = "pass"
pool = "origin"

[cache]
ram_size = "16 MiB"
"#,
        o.addr()
    );
    let node = EdgeNode::start(BIN, &config);
    let tcp = tokio::net::TcpStream::connect(node.addr("web"))
        .await
        .unwrap();
    let (send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake::<_, http_body_util::Empty<hyper::body::Bytes>>(
                hyper_util::rt::TokioIo::new(tcp),
            )
            .await
            .unwrap();
    tokio::spawn(conn);
    let sizes = [
        0usize, 1, 255, 256, 257, 1000, 1023, 1024, 1025, 2048, 4095, 4096, 4097, 8192, 16_383,
        16_384, 16_385, 70_000,
    ];
    let mut paths = Vec::new();
    for n in sizes {
        paths.push(format!("/obj/p/{n}.bin?size={n}&cc=no-store"));
        paths.push(format!("/obj/c/{n}.bin?size={n}&cc=max-age%3D600"));
    }
    // Three rounds: the first fills the cache, the others hit RAM.
    for round in 0..3 {
        let streams = paths.iter().map(|path| {
            let mut send = send.clone();
            let uri = format!("http://{}{path}", node.addr("web"));
            async move {
                let req = http::Request::builder()
                    .uri(uri)
                    .body(http_body_util::Empty::new())
                    .unwrap();
                let resp = send.send_request(req).await.unwrap();
                let status = resp.status();
                let cache = resp
                    .headers()
                    .get("x-cache")
                    .map(|v| v.to_str().unwrap_or("").to_string());
                let body = http_body_util::BodyExt::collect(resp.into_body())
                    .await
                    .unwrap()
                    .to_bytes();
                (status, cache, body)
            }
        });
        let answers = futures::future::join_all(streams).await;
        for (path, (status, cache, body)) in paths.iter().zip(answers) {
            assert_eq!(status, 200, "round {round}: {path}");
            let expected = o.expected_body(path).unwrap();
            assert_eq!(body.len(), expected.len(), "round {round}: {path}");
            assert!(body == expected, "round {round}: {path}: the bytes differ");
            if round > 0 && path.starts_with("/obj/c/") {
                assert!(
                    cache.as_deref().is_some_and(|c| c.starts_with("HIT")),
                    "round {round}: {path}: {cache:?}"
                );
            }
        }
    }
}

/// A raw backend: answers every request on a connection with `head` then
/// `body`, then (when given) `smuggled` in the same write, bytes past the
/// `Content-Length` that must never reach a client; counts connections.
async fn raw_backend(
    head: String,
    body: Arc<Vec<u8>>,
    smuggled: &'static [u8],
) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let counted = conns.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let (head, body) = (head.clone(), body.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    buf.drain(..end);
                    let mut out = head.clone().into_bytes();
                    out.extend_from_slice(&body);
                    out.extend_from_slice(smuggled);
                    if s.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, conns)
}

/// Long `Content-Length` bodies between plain sockets are spliced (moved
/// socket to socket by the kernel, `edge_http_spliced_bytes_total`), byte
/// for byte, the backend's connection reused after each; counted in the
/// response bytes as any body. Either side cutting one off ends that
/// exchange only: a backend that closes early leaves the client a short
/// body and a closed connection; a client that leaves mid-body costs the
/// backend connection (what was left unread is not served to the next
/// request); bytes a backend sends past the `Content-Length` never reach
/// a client. With the fast paths off (make test's second pass) nothing is
/// spliced and the rest holds the same.
#[tokio::test(flavor = "multi_thread")]
async fn long_bodies_are_spliced_whole_and_a_cut_on_either_side_ends_only_its_exchange() {
    let o = origin("a").await;
    let s = edge_testkit::Scripted::start().await;
    let pattern = |n: usize| -> Vec<u8> { (0..n).map(|i| (i * 13 + i / 509) as u8).collect() };
    let body = Arc::new(pattern(300_000));
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\r\n",
        body.len()
    );
    let smuggled: &'static [u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!";
    let (raw, raw_conns) = raw_backend(head, body.clone(), smuggled).await;
    let extra = format!(
        r#"
[[pool]]
name = "scripted"
backends = [{{ address = "{}" }}]

[[pool]]
name = "raw"
backends = [{{ address = "{raw}" }}]

[[route]]
name = "scripted"
priority = 10
pool = "scripted"
match = {{ path_prefix = "/s/" }}

[[route]]
name = "raw"
priority = 10
pool = "raw"
match = {{ path_prefix = "/raw/" }}
"#,
        s.addr()
    );
    let config = config_with(&[&o], &extra).replace("threads = 2", "threads = 1");
    let node = EdgeNode::start(BIN, &config);
    let fast = std::env::var("EDGE_TEST_FAST_PATHS").as_deref() != Ok("off");
    let c = Client::new();
    let sizes = [
        65_535usize,
        65_537,
        131_071,
        131_073,
        200_003,
        1_048_576,
        3_000_001,
    ];
    let mut total = 0usize;
    for n in sizes {
        let path = format!("/s/{n}");
        let mut r = edge_testkit::Reply::ok("", &[("cache-control", "no-store")]);
        r.body = pattern(n);
        s.set(&path, r);
        for _ in 0..3 {
            let got = c.get(&node.url("web", &path)).await;
            assert_eq!(got.status, 200, "{path}");
            assert_eq!(got.body.len(), n, "{path}");
            assert!(got.body[..] == pattern(n)[..], "{path}: the bytes differ");
            total += n;
        }
    }
    // One worker thread, one client at a time: one backend connection.
    let conns: std::collections::BTreeSet<usize> =
        s.all().iter().map(|(_, r)| r.connection).collect();
    assert_eq!(conns.len(), 1, "{conns:?}");
    let metrics = eventually(Duration::from_secs(5), "every body counted", || async {
        let m = c.get(&node.admin_url("/metrics")).await.text();
        let counted = edge_testkit::metric_sum(
            &m,
            "edge_http_response_body_bytes_total",
            &["route=\"scripted\""],
        );
        (counted as usize == total).then_some(m)
    })
    .await;
    let spliced = edge_testkit::metric_sum(
        &metrics,
        "edge_http_spliced_bytes_total",
        &["listener=\"web\""],
    ) as usize;
    if fast {
        // At least what is past the first reads of each of the longest
        // (the head's and up to four more of 64 KiB taken at once).
        let floor: usize = sizes
            .iter()
            .filter(|&&n| n > 1_000_000)
            .map(|n| 3 * (n - 5 * 65_536))
            .sum();
        assert!(spliced >= floor && spliced < total, "{spliced} of {total}");
    } else {
        assert_eq!(spliced, 0);
    }

    // The backend closes 700,000 bytes into a body of 2,000,000: the
    // client has the head, less than the body, then the end.
    let addr = node.addr("web");
    let cut = "/obj/cut.bin?size=2000000&cc=no-store&fault=abort%3D700000";
    let mut conn = RawConn::connect(addr).await;
    conn.send(format!("GET {cut} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await;
    // (The error is the connection's end before the body's.)
    let err = conn.response(false).await.unwrap_err();
    assert_eq!(err, "closed in a body");
    let line = node.access_line("/obj/cut.bin", 0, "status=200").await;
    let logged = edge_testkit::logged_bytes(&line);
    assert!(logged > 0 && logged <= 700_000, "{line}");

    // A client that leaves after 100,000 bytes of 3,000,001, then others:
    // each gets its own body whole.
    for round in 0..3 {
        let mut conn = RawConn::connect(addr).await;
        conn.send(b"GET /s/3000001 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        conn.read_exact(100_000).await.unwrap();
        drop(conn);
        for n in [3_000_001usize, 200_003, 65_537] {
            let path = format!("/s/{n}");
            let got = c.get(&node.url("web", &path)).await;
            assert_eq!(got.body.len(), n, "round {round}: {path}");
            assert!(
                got.body[..] == pattern(n)[..],
                "round {round}: {path}: the bytes differ"
            );
        }
    }

    // Bytes past the `Content-Length`: never a second answer.
    for i in 0..5 {
        let got = c.get(&node.url("web", "/raw/x")).await;
        assert_eq!(got.status, 200, "{i}");
        assert!(got.body[..] == body[..], "{i}: the bytes differ");
    }
    // Each connection left with bytes on it is closed, not reused.
    assert_eq!(raw_conns.load(Ordering::SeqCst), 5);
}
