//! The cache end to end: the `edge` binary in front of the synthetic origin,
//! checked against the origin's deterministic bytes and request counters.

// Helpers in test files may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use edge_testkit::{eventually, origin, Client, EdgeNode, Faults, Response, RunningOrigin};
use http::Method;
use nix::sys::signal::Signal;

const BIN: &str = env!("CARGO_BIN_EXE_edge");
const TOKEN: &str = "cache-test-token-0123456789";

/// One route to the origin, cached; `route_cache` and `cache` add keys to
/// `[route.cache]` and `[cache]`.
fn config(o: &RunningOrigin, route_cache: &str, cache: &str) -> String {
    format!(
        r#"
[server]
threads = 2
access_log = false
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
backends = [{{ address = "{}" }}]

[[route]]
name = "bypassed"
priority = 10
pool = "origin"
[route.match]
path_prefix = "/nocache/"

[[route]]
name = "video"
pool = "origin"
[route.cache]
{route_cache}

[cache]
{cache}
"#,
        o.addr()
    )
}

fn start(config: &str) -> EdgeNode {
    let node = EdgeNode::start(BIN, config);
    node.wait_ready(Duration::from_secs(20));
    node
}

fn x_cache(r: &Response) -> &str {
    r.header("x-cache").unwrap_or("-")
}

async fn get(c: &Client, node: &EdgeNode, path: &str, headers: &[(&str, &str)]) -> Response {
    c.get_with(&node.url("web", path), headers).await
}

async fn purge(c: &Client, node: &EdgeNode, body: &str, token: Option<&str>) -> Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    c.request(
        Method::POST,
        &node.admin_url("/cache/purge"),
        &headers,
        body.to_string(),
    )
    .await
    .unwrap()
}

async fn tier_usage(c: &Client, node: &EdgeNode) -> Vec<(String, u64, u64, u64)> {
    let v = c.get(&node.admin_url("/cache")).await.json();
    v["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["tier"].as_str().unwrap().to_string(),
                t["objects"].as_u64().unwrap(),
                t["bytes"].as_u64().unwrap(),
                t["capacity"].as_u64().unwrap(),
            )
        })
        .collect()
}

async fn disk_objects(c: &Client, node: &EdgeNode) -> u64 {
    tier_usage(c, node)
        .await
        .into_iter()
        .find(|t| t.0 == "disk")
        .map_or(0, |t| t.1)
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_and_ranges_equal_the_origin_from_ram_disk_and_slices() {
    let o = origin("o").await;
    let dir = tempfile::tempdir().unwrap();
    let node = start(&config(
        &o,
        "",
        &format!(
            "ram_max_object = \"100 KiB\"\ndisk_path = \"{}\"\ndisk_size = \"64 MiB\"\nslice_size = \"1 MiB\"\nslice_threshold = \"3 MiB\"",
            dir.path().display()
        ),
    ));
    let c = Client::new();

    // A small object: RAM.
    let small = "/obj/small.ts?size=50000";
    let want = o.expected_body(small).unwrap();
    let r = get(&c, &node, small, &[]).await;
    assert_eq!((r.status, x_cache(&r)), (200, "MISS"));
    assert_eq!(r.body, want);
    let r = get(&c, &node, small, &[]).await;
    assert_eq!((r.status, x_cache(&r)), (200, "HIT RAM"));
    assert_eq!(r.body, want);
    assert!(r.header("age").is_some());
    let r = get(&c, &node, small, &[("range", "bytes=1000-1999")]).await;
    assert_eq!((r.status, x_cache(&r)), (206, "HIT RAM"));
    assert_eq!(r.header("content-range"), Some("bytes 1000-1999/50000"));
    assert_eq!(r.body, want.slice(1000..2000));
    let r = get(&c, &node, small, &[("range", "bytes=-100")]).await;
    assert_eq!(r.body, want.slice(49_900..));
    let r = get(&c, &node, small, &[("range", "bytes=60000-")]).await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */50000"));
    // Conditionals and HEAD, from the stored object.
    let etag = get(&c, &node, small, &[])
        .await
        .header("etag")
        .unwrap()
        .to_string();
    let r = get(&c, &node, small, &[("if-none-match", &etag)]).await;
    assert_eq!((r.status, r.body.len()), (304, 0));
    let r = get(
        &c,
        &node,
        small,
        &[("range", "bytes=0-9"), ("if-range", &etag)],
    )
    .await;
    assert_eq!((r.status, r.body.len()), (206, 10));
    let r = get(
        &c,
        &node,
        small,
        &[("range", "bytes=0-9"), ("if-range", "\"other\"")],
    )
    .await;
    assert_eq!(
        (r.status, r.body.len()),
        (200, 50_000),
        "If-Range mismatch: the whole object"
    );
    let r = c
        .request(Method::HEAD, &node.url("web", small), &[], "")
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.header("content-length"), r.body.len()),
        (200, Some("50000"), 0)
    );
    assert_eq!(o.stats().path("/obj/small.ts"), 1);

    // A segment too large for RAM: disk.
    let seg = "/vod/bbb/low/seg_3.ts";
    let want = o.expected_body(seg).unwrap();
    let r = get(&c, &node, seg, &[]).await;
    assert_eq!((x_cache(&r), r.body == want), ("MISS", true));
    eventually(Duration::from_secs(10), "the disk write", || async {
        (disk_objects(&c, &node).await >= 2).then_some(())
    })
    .await;
    let r = get(&c, &node, seg, &[]).await;
    assert_eq!((x_cache(&r), r.body == want), ("HIT DISK", true));
    let r = get(&c, &node, seg, &[("range", "bytes=100000-150000")]).await;
    assert_eq!((r.status, x_cache(&r)), (206, "HIT DISK"));
    assert_eq!(r.body, want.slice(100_000..150_001));
    assert_eq!(o.stats().path(seg), 1);

    // A large object, first asked for by range: only the slices it needs.
    let big = "/obj/movie.mp4?size=5500000";
    let want = o.expected_body(big).unwrap();
    let r = get(&c, &node, big, &[("range", "bytes=1500000-2600000")]).await;
    assert_eq!((r.status, x_cache(&r)), (206, "MISS"));
    assert_eq!(
        r.header("content-range"),
        Some("bytes 1500000-2600000/5500000")
    );
    assert_eq!(r.body, want.slice(1_500_000..2_600_001));
    assert_eq!(o.stats().path("/obj/movie.mp4"), 2, "slices 1 and 2");
    // The whole object (6 slices): the four missing are fetched, no more.
    let r = get(&c, &node, big, &[]).await;
    assert_eq!((r.status, r.body.len()), (200, want.len()));
    assert!(r.body == want, "sliced body differs from the origin's");
    assert_eq!(o.stats().path("/obj/movie.mp4"), 6);
    let r = get(&c, &node, big, &[]).await;
    assert!(x_cache(&r).starts_with("HIT"), "{}", x_cache(&r));
    assert!(r.body == want);
    // Ranges across slice boundaries, and the last bytes.
    for (a, b) in [(1_048_000u64, 1_049_000u64), (0, 0), (5_499_990, 5_499_999)] {
        let r = get(&c, &node, big, &[("range", &format!("bytes={a}-{b}"))]).await;
        assert_eq!(r.status, 206);
        assert_eq!(r.body, want.slice(a as usize..=b as usize), "{a}-{b}");
    }
    let r = get(&c, &node, big, &[("range", "bytes=5500000-")]).await;
    assert_eq!(r.status, 416);
    assert_eq!(o.stats().path("/obj/movie.mp4"), 6, "all from slices");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests_for_a_new_segment_make_one_origin_request() {
    let o = origin("o").await;
    let node = start(&config(&o, "", ""));
    let path = "/obj/hot/seg_1.ts?size=300000";
    let want = o.expected_body(path).unwrap();
    let url = node.url("web", path);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            // Every client its own connection; the origin takes 300 ms.
            Client::without_keepalive()
                .get_with(&url, &[("x-origin-fault", "latency=300ms")])
                .await
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        assert!(r.body == want, "a coalesced response differs");
    }
    assert_eq!(o.stats().path("/obj/hot/seg_1.ts"), 1);
    // Counted when each request's log line is made, just after its
    // response is sent.
    eventually(
        Duration::from_secs(10),
        "coalesced requests counted",
        || async {
            let metrics = Client::new().get(&node.admin_url("/metrics")).await.text();
            (metric(&metrics, "edge_cache_coalesced_total") >= 1.0).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_entry_is_revalidated_with_its_etag_and_its_headers_refreshed() {
    let o = origin("o").await;
    let node = start(&config(&o, "", ""));
    let c = Client::new();
    // Date has one-second resolution: with max-age=3 the entry is stale
    // 3.1 s after it was stored, and fresh for at least 2 s after the 304.
    let path = "/obj/r.ts?size=20000&cc=max-age=3";
    let want = o.expected_body(path).unwrap();
    let first = get(&c, &node, path, &[]).await;
    assert_eq!(x_cache(&first), "MISS");
    let first_date = first.header("date").unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let r = get(&c, &node, path, &[]).await;
    assert_eq!(x_cache(&r), "REVALIDATED RAM");
    assert_eq!(r.body, want);
    assert_eq!(
        o.stats().by_status.get(&304),
        Some(&1),
        "the origin answered 304"
    );
    assert_ne!(
        r.header("date").unwrap(),
        first_date,
        "Date refreshed from the 304"
    );
    assert_eq!(r.header("age"), Some("0"));
    // Fresh again.
    let r = get(&c, &node, path, &[]).await;
    assert_eq!(x_cache(&r), "HIT RAM");
    assert_eq!(o.stats().path("/obj/r.ts"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_serves_the_stored_copy_within_its_window_then_the_error() {
    let o = origin("o").await;
    let node = start(&config(&o, "stale_if_error = \"2s\"", ""));
    let c = Client::new();
    let path = "/obj/s.ts?size=10000&cc=max-age=1";
    let want = o.expected_body(path).unwrap();
    let fetched = Instant::now();
    assert_eq!(x_cache(&get(&c, &node, path, &[]).await), "MISS");
    o.set_faults(Faults::parse("error=503").unwrap());
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let r = get(&c, &node, path, &[]).await;
    assert_eq!((r.status, x_cache(&r)), (200, "STALE RAM"));
    assert_eq!(r.body, want);
    // Past max-age (1 s) + stale-if-error (2 s).
    tokio::time::sleep(
        (fetched + Duration::from_millis(3600)).saturating_duration_since(Instant::now()),
    )
    .await;
    let r = get(&c, &node, path, &[]).await;
    assert_eq!(r.status, 503, "{}", x_cache(&r));
    // The origin is back: fresh again.
    o.set_faults(Faults::default());
    let r = get(&c, &node, path, &[]).await;
    assert_eq!((r.status, r.body == want), (200, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_keeps_variants_apart_and_private_or_cookie_responses_are_not_stored() {
    let o = origin("o").await;
    let node = start(&config(&o, "bypass = [\"header:x-no-cache\"]", ""));
    let c = Client::new();
    let path = "/obj/v.txt?size=3000&vary=Accept-Encoding";
    let gzip = [("accept-encoding", "gzip")];
    let br = [("accept-encoding", "br")];
    let want_gzip = o.expected_body_with(path, &gzip).unwrap();
    let want_br = o.expected_body_with(path, &br).unwrap();
    assert_ne!(want_gzip, want_br);
    for (headers, want, status) in [
        (&gzip, &want_gzip, "MISS"),
        (&br, &want_br, "MISS"),
        (&gzip, &want_gzip, "HIT RAM"),
        (&br, &want_br, "HIT RAM"),
    ] {
        let r = get(&c, &node, path, headers).await;
        assert_eq!((x_cache(&r), &r.body), (status, want));
    }
    assert_eq!(o.stats().path("/obj/v.txt"), 2);

    for (path, name) in [
        ("/obj/p.txt?cc=private,max-age=60", "/obj/p.txt"),
        ("/obj/c.txt?set_cookie=1", "/obj/c.txt"),
        ("/obj/n.txt?cc=no-store", "/obj/n.txt"),
    ] {
        for _ in 0..2 {
            let r = get(&c, &node, path, &[]).await;
            assert_eq!((r.status, x_cache(&r)), (200, "MISS"), "{path}");
        }
        assert_eq!(o.stats().path(name), 2, "{path} was stored");
    }
    // Authorization: not stored (though the origin says public), unless the
    // route says so.
    for _ in 0..2 {
        let r = get(&c, &node, "/obj/a.txt", &[("authorization", "Bearer x")]).await;
        assert_eq!(x_cache(&r), "MISS");
    }
    assert_eq!(o.stats().path("/obj/a.txt"), 2);
    // Bypass: by the route's condition, or a route without a cache.
    let r = get(&c, &node, "/obj/small.txt", &[]).await;
    assert_eq!(x_cache(&r), "MISS");
    let r = get(&c, &node, "/obj/small.txt", &[("x-no-cache", "1")]).await;
    assert_eq!(x_cache(&r), "BYPASS");
    let r = get(&c, &node, "/nocache/x", &[]).await;
    assert_eq!(x_cache(&r), "BYPASS");
    assert_eq!(o.stats().path("/obj/small.txt"), 2);
}

fn body_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(body_files(&p));
        } else if p.extension().is_some_and(|x| x == "body") {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_disk_objects_are_hits_and_a_flipped_byte_means_a_refetch() {
    let o = origin("o").await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &o,
        "",
        &format!(
            "disk_path = \"{}\"\ndisk_size = \"64 MiB\"",
            dir.path().display()
        ),
    );
    let c = Client::new();
    let (a, b) = ("/vod/bbb/mid/seg_1.ts", "/vod/bbb/mid/seg_2.ts");
    let (want_a, want_b) = (o.expected_body(a).unwrap(), o.expected_body(b).unwrap());
    // The node comes back on another port: a fixed Host names the same objects.
    let host = [("host", "media.test")];
    let mut node = start(&cfg);
    for p in [a, b] {
        assert_eq!(x_cache(&get(&c, &node, p, &host).await), "MISS");
    }
    eventually(Duration::from_secs(10), "two objects on disk", || async {
        (disk_objects(&c, &node).await == 2).then_some(())
    })
    .await;
    node.signal(Signal::SIGTERM);
    assert!(node.wait_exit(Duration::from_secs(20)).is_some());

    let node = start(&cfg);
    let r = get(&c, &node, a, &host).await;
    assert_eq!((x_cache(&r), r.body == want_a), ("HIT DISK", true));
    assert_eq!(o.stats().path(a), 1);
    // Damage every body file on disk; `a` is in RAM now, `b` is not.
    for f in body_files(dir.path()) {
        let mut raw = std::fs::read(&f).unwrap();
        let mid = raw.len() / 2;
        raw[mid] ^= 0x20;
        std::fs::write(&f, raw).unwrap();
    }
    let r = get(&c, &node, b, &host).await;
    assert_eq!(x_cache(&r), "MISS", "corrupt copy must not be served");
    assert!(r.body == want_b);
    assert_eq!(o.stats().path(b), 2);
    let metrics = c.get(&node.admin_url("/metrics")).await.text();
    assert_eq!(
        metric(&metrics, "edge_cache_disk_errors_total{kind=\"corrupt\"}"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_playlist_is_never_older_than_half_its_target_duration_and_the_next_segment_is_prefetched(
) {
    let o = origin("o").await;
    let node = start(&config(&o, "", ""));
    let c = Client::new();
    // The origin claims a minute; the playlist's 2 s target says at most 1 s.
    let live = "/live/news/low/index.m3u8?cc=public,max-age=60";
    let seq = |text: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    };
    let end = Instant::now() + Duration::from_secs(5);
    let mut hits = 0;
    while Instant::now() < end {
        let before = seq(&String::from_utf8_lossy(&o.expected_body(live).unwrap()));
        let r = get(&c, &node, live, &[]).await;
        assert_eq!(r.status, 200);
        let age: u64 = r.header("age").unwrap().parse().unwrap();
        assert!(age <= 1, "a live playlist {age} s old");
        // At most one segment behind the origin's current one.
        assert!(seq(&r.text()) + 1 >= before, "stale playlist");
        hits += usize::from(x_cache(&r).starts_with("HIT"));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(hits > 0, "never cached at all");
    let refetches = o.stats().path("/live/news/low/index.m3u8");
    assert!(
        (3..=8).contains(&refetches),
        "{refetches} playlist fetches in 5 s"
    );

    // VOD: the playlist teaches the order; segment 0 brings 1 and 2.
    assert_eq!(
        get(&c, &node, "/vod/sintel/low/index.m3u8", &[])
            .await
            .status,
        200
    );
    let r = get(&c, &node, "/vod/sintel/low/seg_0.ts", &[]).await;
    assert_eq!(x_cache(&r), "MISS");
    eventually(
        Duration::from_secs(10),
        "segments 1 and 2 prefetched",
        || async {
            let s = o.stats();
            (s.path("/vod/sintel/low/seg_1.ts") == 1 && s.path("/vod/sintel/low/seg_2.ts") == 1)
                .then_some(())
        },
    )
    .await;
    let r = get(&c, &node, "/vod/sintel/low/seg_1.ts", &[]).await;
    assert!(x_cache(&r).starts_with("HIT"), "{}", x_cache(&r));
    assert!(r.body == o.expected_body("/vod/sintel/low/seg_1.ts").unwrap());
    assert_eq!(o.stats().path("/vod/sintel/low/seg_1.ts"), 1);
    let metrics = c.get(&node.admin_url("/metrics")).await.text();
    assert!(metric(&metrics, "edge_cache_prefetch_used_total") >= 1.0);
    assert!(metric(&metrics, "edge_cache_prefetch_total{outcome=\"issued\"}") >= 2.0);
}

/// A segment served (hit or miss, GET or HEAD) looks at the `prefetch`
/// (2) segments after it: each one cached or fetched ahead already is
/// counted `skipped_cached`, each other one is fetched once. The same on
/// every path a hit takes (the HTTP/1 shortcut answers a hit whose next
/// segments are all cached itself; `EDGE_TEST_FAST_PATHS=off` sends every
/// request through pingora): checked against a model, request by request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_segment_served_counts_or_fetches_the_segments_after_it_exactly_once() {
    let o = origin("o").await;
    let node = start(&config(&o, "", ""));
    let c = Client::new();
    let dir = "/vod/bbb/mid";
    let seg = |n: u32| format!("{dir}/seg_{n}.ts");
    assert_eq!(
        get(&c, &node, &format!("{dir}/index.m3u8"), &[])
            .await
            .status,
        200
    );
    let counts = |c: Client, url: String| async move {
        let m = c.get(&url).await.text();
        (
            metric(&m, "edge_cache_prefetch_total{outcome=\"skipped_cached\"}"),
            metric(&m, "edge_cache_prefetch_total{outcome=\"issued\"}"),
        )
    };
    let metrics_url = node.admin_url("/metrics");
    // Segments the node has fetched (as a client's or ahead).
    let mut known = std::collections::BTreeSet::new();
    let (mut skipped, mut issued) = counts(c.clone(), metrics_url.clone()).await;
    assert_eq!((skipped, issued), (0.0, 0.0));
    // (segment, HEAD)
    let asked = [
        (0, false),
        (0, false),
        (1, false),
        (1, false),
        (0, true),
        (4, false),
        (3, false),
        (3, true),
        (2, false),
        (9, false),
        (9, false),
        (10, true),
        (9, false),
    ];
    for (n, head) in asked {
        let what = format!("{} seg_{n}", if head { "HEAD" } else { "GET" });
        let was_known = known.contains(&n);
        let r = if head {
            c.request(Method::HEAD, &node.url("web", &seg(n)), &[], Vec::new())
                .await
                .unwrap()
        } else {
            get(&c, &node, &seg(n), &[]).await
        };
        assert_eq!(r.status, 200, "{what}");
        assert_eq!(
            x_cache(&r).starts_with("HIT"),
            was_known,
            "{what}: {}",
            x_cache(&r)
        );
        if !head {
            assert!(r.body == o.expected_body(&seg(n)).unwrap(), "{what}");
        }
        known.insert(n);
        for next in [n + 1, n + 2] {
            if known.insert(next) {
                issued += 1.0;
            } else {
                skipped += 1.0;
            }
        }
        let want = (skipped, issued);
        eventually(Duration::from_secs(10), &what, || {
            let (c, url) = (c.clone(), metrics_url.clone());
            async move { (counts(c, url).await == want).then_some(()) }
        })
        .await;
        // Every segment known was fetched from the origin once, and only
        // those (a prefetch's fill may still be under way).
        eventually(Duration::from_secs(10), &what, || {
            let s = o.stats();
            let all = (0..14).all(|i| s.path(&seg(i)) == u64::from(known.contains(&i)));
            async move { all.then_some(()) }
        })
        .await;
        // Stored: the next request of a known segment is a hit.
        for &k in &known {
            let url: String = node
                .url("web", &seg(k))
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            let lookup = node.admin_url(&format!("/cache/lookup?url={url}"));
            eventually(Duration::from_secs(10), &what, || {
                let (c, lookup) = (c.clone(), lookup.clone());
                async move {
                    let l = c.get(&lookup).await.json();
                    (l["ram"] == true && l["filling"] == false).then_some(())
                }
            })
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_by_url_prefix_and_surrogate_key_remove_exactly_what_they_name() {
    let o = origin("o").await;
    let node = start(&config(&o, "", ""));
    let c = Client::new();
    let objects = [
        "/obj/p/a.ts?surrogate=title-1",
        "/obj/p/b.ts?surrogate=title-1%20season-2",
        "/obj/q/c.ts?surrogate=season-2",
        "/obj/q/d.ts",
    ];
    for p in objects {
        assert_eq!(x_cache(&get(&c, &node, p, &[]).await), "MISS");
    }
    let host = format!("127.0.0.1:{}", node.addr("web").port());
    let cached = |c: Client, node_url: Vec<String>| async move {
        let mut out = Vec::new();
        for u in node_url {
            let r = c.get(&u).await;
            out.push(x_cache(&r).starts_with("HIT"));
        }
        out
    };
    let urls: Vec<String> = objects.iter().map(|p| node.url("web", p)).collect();
    assert_eq!(cached(c.clone(), urls.clone()).await, [true; 4]);

    // Mutations need the token.
    let r = purge(&c, &node, r#"{"prefix": "127.0.0.1/"}"#, None).await;
    assert_eq!(r.status, 401);
    let r = purge(&c, &node, r#"{"url": "a", "prefix": "b"}"#, Some(TOKEN)).await;
    assert_eq!(r.status, 400);

    let r = purge(
        &c,
        &node,
        &format!(r#"{{"url": "http://{host}/obj/p/a.ts?surrogate=title-1"}}"#),
        Some(TOKEN),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["purged"].as_u64()),
        (200, Some(1)),
        "{}",
        r.text()
    );
    assert_eq!(
        cached(c.clone(), urls.clone()).await,
        [false, true, true, true]
    );

    let r = purge(
        &c,
        &node,
        &format!(r#"{{"prefix": "{host}/obj/q/"}}"#),
        Some(TOKEN),
    )
    .await;
    assert_eq!(r.json()["purged"].as_u64(), Some(2), "{}", r.text());
    assert_eq!(
        cached(c.clone(), urls.clone()).await,
        [true, true, false, false]
    );

    let r = purge(&c, &node, r#"{"surrogate_key": "season-2"}"#, Some(TOKEN)).await;
    assert_eq!(r.json()["purged"].as_u64(), Some(2), "b and c");
    assert_eq!(
        cached(c.clone(), urls.clone()).await,
        [true, false, false, true]
    );

    // Soft: kept, but revalidated on the next request (the origin says 304).
    let r = purge(
        &c,
        &node,
        r#"{"surrogate_key": "title-1", "mode": "soft"}"#,
        Some(TOKEN),
    )
    .await;
    assert_eq!(r.json()["purged"].as_u64(), Some(2));
    let before = o.stats().by_status.get(&304).copied().unwrap_or(0);
    let r = c.get(&urls[0]).await;
    assert_eq!(x_cache(&r), "REVALIDATED RAM");
    assert_eq!(
        o.stats().by_status.get(&304).copied().unwrap_or(0),
        before + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_keeps_each_tier_within_its_budget_under_a_larger_workload() {
    let o = origin("o").await;
    let dir = tempfile::tempdir().unwrap();
    let node = start(&config(
        &o,
        "",
        &format!(
            "ram_size = \"1 MiB\"\nram_max_object = \"512 KiB\"\ndisk_path = \"{}\"\ndisk_size = \"3 MiB\"",
            dir.path().display()
        ),
    ));
    let c = Client::new();
    // 40 × 200 KB = 8 MB through a 1 MiB RAM tier and a 3 MiB disk tier.
    for i in 0..40 {
        let path = format!("/obj/e/{i}.ts?size=200000");
        let r = get(&c, &node, &path, &[]).await;
        assert_eq!(r.status, 200);
        for (tier, _, bytes, capacity) in tier_usage(&c, &node).await {
            assert!(bytes <= capacity, "{tier}: {bytes} > {capacity} after {i}");
        }
    }
    let usage = tier_usage(&c, &node).await;
    assert!(
        usage.iter().all(|t| t.2 > t.3 / 2),
        "both tiers in use: {usage:?}"
    );
    let metrics = c.get(&node.admin_url("/metrics")).await.text();
    assert!(metric(&metrics, "edge_cache_evictions_total{tier=\"ram\"}") > 0.0);
    assert!(metric(&metrics, "edge_cache_evictions_total{tier=\"disk\"}") > 0.0);
}

/// A multipart answer's boundary (random per response), if it has one.
fn boundary(r: &edge_testkit::RawResponse) -> Option<String> {
    r.header("content-type")?
        .strip_prefix("multipart/byteranges; boundary=")
        .map(str::to_string)
}

/// The body with a multipart answer's boundary written as `(boundary)`.
fn comparable_body(r: &edge_testkit::RawResponse) -> Vec<u8> {
    let Some(b) = boundary(r).filter(|b| !b.is_empty()) else {
        return r.body.clone();
    };
    let (b, mut out, mut rest) = (b.as_bytes(), Vec::new(), &r.body[..]);
    while !rest.is_empty() {
        if rest.starts_with(b) {
            out.extend_from_slice(b"(boundary)");
            rest = &rest[b.len()..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}

/// A response's fields as a list of (lower-case name, value) sorted by name, with
/// what may differ between two nodes a second apart made equal: `Date`
/// and `Age` values, `Cache-Status`'s `ttl`, a multipart boundary.
fn comparable(r: &edge_testkit::RawResponse) -> Vec<(String, String)> {
    let bound = boundary(r);
    let mut fields: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|(n, v)| {
            let n = n.to_ascii_lowercase();
            let v = match n.as_str() {
                "date" | "age" => "(time)".to_string(),
                "content-type" if bound.is_some() => "multipart/byteranges".to_string(),
                "cache-status" => v
                    .split("; ")
                    .filter(|m| !m.starts_with("ttl="))
                    .collect::<Vec<_>>()
                    .join("; "),
                _ => v.clone(),
            };
            (n, v)
        })
        .collect();
    // By name; fields of one name keep their order (it is compared too).
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    fields
}

/// Issue 17: fresh RAM hits to HTTP/1 clients are written from the stored
/// head's lines (`server.fast_paths`); with the switch off they take the
/// header-map path. For heads with hop-by-hop fields, fields edge strips
/// or replaces, targeted fields, upstream `Cache-Status` members, playlist
/// lifetimes, a route's response edits, and for GET, HEAD, HTTP/1.0,
/// ranges and conditions, both nodes answer with the same status, fields
/// and body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ram_hits_from_stored_lines_answer_as_the_header_map_path_does() {
    // A VOD playlist: its lifetime is its s-maxage, not a live one's.
    const VOD: &[u8] =
        b"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\na.ts\n#EXT-X-ENDLIST\n";
    let body = |n: usize| (0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>();
    // The scripted origin writes `Content-Length` and the reason
    // "Scripted" itself, then these fields as given (order and case).
    let reply = |status: u16, fields: &[(&str, &str)], body: Vec<u8>| edge_testkit::Reply {
        status,
        headers: fields
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body,
        ..edge_testkit::Reply::default()
    };
    let answers = [
        (
            "/plain.ts",
            reply(
                200,
                &[
                    ("Content-Type", "video/mp2t"),
                    ("Cache-Control", "public, max-age=600"),
                    ("ETag", "\"v1\""),
                    ("Last-Modified", "Mon, 30 Nov 2026 10:00:00 GMT"),
                    ("Date", "Fri, 01 Jan 2027 00:00:00 GMT"),
                ],
                body(1024),
            ),
        ),
        (
            "/hop.ts",
            reply(
                200,
                &[
                    ("Connection", "keep-alive"),
                    ("Keep-Alive", "timeout=5"),
                    ("Proxy-Connection", "keep-alive"),
                    ("Trailer", "X-T"),
                    ("Upgrade", "h2c"),
                    ("Cache-Control", "max-age=600"),
                ],
                body(300),
            ),
        ),
        (
            "/nominated.ts",
            reply(
                200,
                &[
                    ("Connection", "X-Secret, keep-alive"),
                    ("X-Secret", "1"),
                    ("X-Kept", "2"),
                    ("Cache-Control", "max-age=600"),
                ],
                body(10),
            ),
        ),
        (
            "/stripped.ts",
            reply(
                200,
                &[
                    ("Surrogate-Key", "a b"),
                    ("Surrogate-Control", "max-age=60"),
                    ("X-Cache", "HIT from-origin"),
                    ("Age", "5"),
                    ("CDN-Cache-Control", "max-age=900"),
                    ("Cache-Status", "upstream; hit"),
                    ("Cache-Control", "max-age=600"),
                    ("Accept-Ranges", "none"),
                ],
                body(64),
            ),
        ),
        (
            "/vod.m3u8",
            reply(
                200,
                &[
                    ("Content-Type", "application/vnd.apple.mpegurl"),
                    ("Cache-Control", "public, max-age=86400, s-maxage=30"),
                    ("Cache-Control", "no-transform"),
                ],
                VOD.to_vec(),
            ),
        ),
        (
            // A playlist known by its type only (no extension).
            "/vod/index",
            reply(
                200,
                &[
                    ("Content-Type", "application/vnd.apple.mpegurl"),
                    ("Cache-Control", "max-age=86400, s-maxage=600"),
                    ("ETag", "\"v1\""),
                ],
                VOD.to_vec(),
            ),
        ),
        (
            "/cased.ts",
            reply(
                200,
                &[
                    ("content-TYPE", "text/plain"),
                    ("x-MIXED-case", "Value With Spaces"),
                    ("X-Empty", ""),
                    ("cache-control", "max-age=600"),
                ],
                b"hello".to_vec(),
            ),
        ),
        (
            "/missing.ts",
            reply(
                404,
                &[
                    ("Cache-Control", "max-age=600"),
                    ("Content-Type", "text/plain"),
                ],
                b"gone".to_vec(),
            ),
        ),
        (
            "/empty.ts",
            reply(
                200,
                &[("Cache-Control", "max-age=600"), ("Accept-Ranges", "none")],
                vec![],
            ),
        ),
        (
            "/edits/x.ts",
            reply(
                200,
                &[
                    ("Cache-Control", "max-age=600"),
                    ("ETag", "\"e\""),
                    ("X-Add", "origin"),
                    ("Server", "origin/1"),
                ],
                body(20),
            ),
        ),
    ];
    let scripted = edge_testkit::Scripted::start().await;
    for (path, r) in &answers {
        scripted.set(path, r.clone());
    }
    let paths: Vec<&str> = answers.iter().map(|a| a.0).collect();
    let origin = scripted.addr();
    let config = |fast: bool| {
        format!(
            r#"
[server]
threads = 1
access_log = false
shutdown_delay = "0s"
fast_paths = {fast}

[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:0"
h2c = true

[[pool]]
name = "origin"
backends = [{{ address = "{origin}" }}]

[[route]]
name = "edits"
priority = 10
pool = "origin"
[route.match]
path_prefix = "/edits/"
[route.cache]
[route.response_headers]
remove = ["Server", "X-Cache"]
set = {{ "Cache-Control" = "public, max-age=5", "Access-Control-Allow-Origin" = "*" }}
add = {{ "X-Add" = "edge", "Timing-Allow-Origin" = "*" }}

[[route]]
name = "all"
pool = "origin"
[route.cache]

[cache]
ram_size = "16 MiB"
"#
        )
    };
    // Started with EdgeNode::start directly: the switch is the test's own.
    let fast = EdgeNode::start(BIN, &config(true));
    let general = EdgeNode::start(BIN, &config(false));
    let requests: Vec<(&str, String)> = vec![
        ("GET", "HTTP/1.1\r\nConnection: close".into()),
        ("HEAD", "HTTP/1.1\r\nConnection: close".into()),
        ("GET", "HTTP/1.0".into()),
        ("GET", "HTTP/1.0\r\nConnection: keep-alive".into()),
        (
            "GET",
            "HTTP/1.1\r\nConnection: close\r\nRange: bytes=1-3".into(),
        ),
        (
            "GET",
            "HTTP/1.1\r\nConnection: close\r\nIf-None-Match: \"v1\"".into(),
        ),
        (
            "GET",
            "HTTP/1.1\r\nConnection: close\r\nCache-Control: max-age=0".into(),
        ),
    ];
    // Ranges and conditions (RFC 9110 §13, §14): one or several ranges,
    // suffixes, open ends, unsatisfiable ones, If-Range by ETag and date,
    // weak and strong and listed ETags, dates before, at and after
    // Last-Modified, and mixes of them.
    let close = "HTTP/1.1\r\nConnection: close";
    let mut requests = requests;
    for extra in [
        "Range: bytes=0-0",
        "Range: bytes=-5",
        "Range: bytes=10-",
        "Range: bytes=2-999999",
        "Range: bytes=0-1,3-4",
        "Range: bytes=5000-",
        "Range: bytes=-0",
        "Range: bytes=0-4,-0",
        "Range: items=0-1",
        "Range: bytes=1-3\r\nIf-Range: \"v1\"",
        "Range: bytes=1-3\r\nIf-Range: \"other\"",
        "Range: bytes=1-3\r\nIf-Range: Mon, 30 Nov 2026 10:00:00 GMT",
        "Range: bytes=1-3\r\nIf-None-Match: \"v1\"",
        "Range: bytes=1-3\r\nIf-Modified-Since: Mon, 30 Nov 2026 10:00:00 GMT",
        "Range: bytes=-0\r\nIf-Range: \"v1\"",
        "Range: bytes=-0\r\nIf-Range: \"other\"",
        "Range: bytes=1-3\r\nIf-Range: W/\"v1\"",
        "If-None-Match: W/\"v1\"",
        "If-None-Match: \"x\", \"v1\"",
        "If-None-Match: *",
        "If-None-Match: \"x\"",
        "If-Modified-Since: Mon, 30 Nov 2026 10:00:00 GMT",
        "If-Modified-Since: Sun, 29 Nov 2026 10:00:00 GMT",
        "If-None-Match: \"x\"\r\nIf-Modified-Since: Mon, 30 Nov 2026 10:00:00 GMT",
    ] {
        requests.push(("GET", format!("{close}\r\n{extra}")));
    }
    requests.push(("HEAD", format!("{close}\r\nRange: bytes=1-3")));
    requests.push(("HEAD", format!("{close}\r\nIf-None-Match: \"v1\"")));
    requests.push(("GET", "HTTP/1.0\r\nRange: bytes=1-3".into()));
    requests.push(("GET", "HTTP/1.1\r\nRange: bytes=1-3".into()));
    let ask = |node: &EdgeNode, method: &str, path: &str, rest: &str| {
        let addr = node.addr("web");
        let head = format!("{method} {path} {rest}\r\nHost: a.test\r\n\r\n");
        let head_only = method == "HEAD";
        async move {
            let mut conn = edge_testkit::RawConn::connect(addr).await;
            conn.send(head.as_bytes()).await;
            conn.response(head_only).await.unwrap()
        }
    };
    for path in &paths {
        // The first request fills each node's RAM tier.
        for node in [&fast, &general] {
            let r = ask(node, "GET", path, "HTTP/1.1\r\nConnection: close").await;
            assert!(
                r.status == 200 || r.status == 404,
                "{path}: {:?}",
                r.headers
            );
        }
        for (method, rest) in &requests {
            let a = ask(&fast, method, path, rest).await;
            let b = ask(&general, method, path, rest).await;
            let what = format!("{method} {path} {rest:?}");
            assert_eq!((a.status, &a.reason), (b.status, &b.reason), "{what}");
            assert_eq!(comparable_body(&a), comparable_body(&b), "{what}");
            assert_eq!(comparable(&a), comparable(&b), "{what}");
            if !rest.contains("max-age=0") {
                let hit = a.header("x-cache").is_some_and(|v| v.starts_with("HIT"));
                assert!(
                    hit || path.starts_with("/edits/") || *path == "/missing.ts",
                    "{what}: {a:?}"
                );
            }
        }
    }
    // HTTP/2 (h2c): a whole answer's head is kept from the object's last
    // hit on the fast node (`head_memo`, `Age` and `Cache-Status` written
    // per hit) and rendered every time on the general one; parts and 304s
    // are rendered on both. Each asked twice (the second from the kept
    // head), the same answer; `Age` and the `ttl` a second apart at most.
    let h2 = |node: &EdgeNode,
              method: Method,
              path: &str,
              headers: Vec<(&'static str, &'static str)>| {
        let addr = node.addr("web");
        // The authority spelled otherwise, to the same route and key: the
        // door's spelling is what both paths go on with.
        let pseudo = |name: &str, default: &'static str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(default, |(_, v)| *v)
        };
        let (scheme, authority) = (pseudo(":scheme", "http"), pseudo(":authority", "a.test"));
        let headers: Vec<(&str, &str)> = headers
            .into_iter()
            .filter(|(n, _)| !n.starts_with(':'))
            .collect();
        let uri = format!("{scheme}://{authority}{path}");
        async move {
            let r = edge_testkit::h2c(addr, method, &uri, &headers)
                .await
                .unwrap();
            edge_testkit::RawResponse {
                status: r.status,
                reason: String::new(),
                headers: r
                    .headers
                    .iter()
                    .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap().to_string()))
                    .collect(),
                body: r.body.to_vec(),
            }
        }
    };
    let number = |r: &edge_testkit::RawResponse, what: &str| -> Option<i64> {
        let v = match what {
            "age" => r.header("age")?.to_string(),
            _ => r
                .headers
                .iter()
                .rev()
                .find(|(n, _)| n == "cache-status")?
                .1
                .split("; ")
                .find_map(|m| m.strip_prefix("ttl="))?
                .to_string(),
        };
        Some(v.parse().unwrap())
    };
    // The fast node answers HTTP/2 RAM hits where it accepts the stream
    // (`lean_h2.rs`): each request it should take is counted there, each
    // it should leave to pingora's path is not.
    let h2_shortcuts = |node: &EdgeNode| {
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
    // As many fields as the listener allows (`max_headers`, 100): the
    // door lets it in, and the `Host` it writes from `:authority` makes
    // one more, which must not be counted again where the shortcut leaves
    // the request to pingora's path (several ranges).
    let mut full: Vec<(&'static str, &'static str)> = (1..100)
        .map(|i| (&*format!("x-f{i}").leak(), "1"))
        .collect();
    full.push(("range", "bytes=0-1,3-4"));
    for path in &paths {
        for (method, headers) in [
            (Method::GET, vec![]),
            (Method::HEAD, vec![]),
            (Method::GET, vec![("range", "bytes=1-3")]),
            (Method::GET, vec![("range", "bytes=0-1,3-4")]),
            (Method::GET, full.clone()),
            (Method::GET, vec![("range", "bytes=-5")]),
            (Method::GET, vec![("range", "bytes=5000-")]),
            (Method::HEAD, vec![("range", "bytes=1-3")]),
            (Method::GET, vec![("if-none-match", "\"v1\"")]),
            (Method::GET, vec![("if-none-match", "\"x\"")]),
            (
                Method::GET,
                vec![("if-modified-since", "Mon, 30 Nov 2026 10:00:00 GMT")],
            ),
            (
                Method::GET,
                vec![("range", "bytes=1-3"), ("if-range", "\"other\"")],
            ),
            (Method::GET, vec![("accept", "*/*"), ("user-agent", "h2")]),
            (Method::GET, vec![("cache-control", "max-age=0")]),
            (Method::GET, vec![("cache-control", "no-cache")]),
            (Method::GET, vec![("pragma", "no-cache")]),
            (Method::GET, vec![("cookie", "a=1"), ("cookie", "b=2")]),
            (Method::GET, vec![("x_under", "1"), ("x-over", "2")]),
            (Method::GET, vec![(":authority", "A.Test")]),
            (Method::GET, vec![(":authority", "a.test:80")]),
            (Method::GET, vec![(":authority", "a.test.")]),
            // `:scheme` is not the listener's: the port it makes default
            // is the one the door keeps or drops, on both paths.
            (
                Method::GET,
                vec![(":scheme", "https"), (":authority", "a.test:80")],
            ),
            (
                Method::GET,
                vec![(":scheme", "https"), (":authority", "a.test:443")],
            ),
            (Method::GET, vec![(":authority", "b.test")]),
            // (Not an unsafe method: it invalidates the stored answer,
            // RFC 9111 §4.4, which the checks below read.)
            (Method::OPTIONS, vec![]),
        ] {
            for turn in 0..2 {
                let before = h2_shortcuts(&fast).await;
                let a = h2(&fast, method.clone(), path, headers.clone()).await;
                let taken = h2_shortcuts(&fast).await - before;
                let b = h2(&general, method.clone(), path, headers.clone()).await;
                let what = format!("h2 {method} {path} {headers:?} (turn {turn})");
                // What the shortcut must take: what pingora's path answers
                // from RAM without asking the origin, one part at most (a
                // client's `max-age=0` does not make the route revalidate).
                let revalidates = headers
                    .iter()
                    .any(|(n, v)| *n == "pragma" || v.contains("max-age=0") || *v == "no-cache");
                let hit = b
                    .headers
                    .iter()
                    .rev()
                    .find(|(n, _)| n == "cache-status")
                    .is_some_and(|(_, v)| v.contains("; hit"));
                // Several ranges (multipart) and a range not satisfiable
                // are pingora's cache path's.
                let multipart = b.status == 416
                    || b.header("content-type")
                        .is_some_and(|t| t.starts_with("multipart/"));
                let expected = (hit && !multipart && matches!(method, Method::GET | Method::HEAD))
                    as u8 as f64;
                assert_eq!(taken, expected, "{what}: {a:?}");
                assert_eq!(a.status, b.status, "{what}");
                assert_eq!(comparable_body(&a), comparable_body(&b), "{what}");
                assert_eq!(comparable(&a), comparable(&b), "{what}");
                for n in ["age", "ttl"] {
                    let (x, y) = (number(&a, n), number(&b, n));
                    assert_eq!(x.is_some(), y.is_some(), "{what}: {n}");
                    if let (Some(x), Some(y)) = (x, y) {
                        assert!((x - y).abs() <= 1, "{what}: {n} {x} and {y}");
                    }
                }
                let plain = !revalidates
                    && !multipart
                    && matches!(method, Method::GET | Method::HEAD)
                    && !headers.iter().any(|(n, _)| n.starts_with(':'));
                if plain && *path != "/missing.ts" && !path.starts_with("/edits/") {
                    assert_eq!(a.header("x-cache"), Some("HIT RAM"), "{what}: {a:?}");
                    assert_eq!(taken, 1.0, "{what}: {a:?}");
                }
            }
        }
    }
    // What the map path gives, spelled out for a few (so that both being
    // wrong the same way fails too).
    let r = ask(&fast, "GET", "/hop.ts", "HTTP/1.1").await;
    for gone in ["keep-alive", "proxy-connection", "trailer", "upgrade"] {
        assert!(!r.has(gone), "{gone}: {r:?}");
    }
    assert_eq!(r.header("connection"), Some("keep-alive"), "{r:?}");
    let r = ask(
        &fast,
        "GET",
        "/nominated.ts",
        "HTTP/1.1\r\nConnection: close",
    )
    .await;
    assert!(
        !r.has("x-secret") && r.header("x-kept") == Some("2"),
        "{r:?}"
    );
    let r = ask(
        &fast,
        "GET",
        "/stripped.ts",
        "HTTP/1.1\r\nConnection: close",
    )
    .await;
    for gone in ["surrogate-key", "surrogate-control", "cdn-cache-control"] {
        assert!(!r.has(gone), "{gone}: {r:?}");
    }
    assert_eq!(r.header("x-cache"), Some("HIT RAM"), "{r:?}");
    assert_eq!(r.header("accept-ranges"), Some("bytes"), "{:?}", r.headers);
    let statuses: Vec<&str> = r
        .headers
        .iter()
        .filter(|(n, _)| n == "cache-status")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(statuses.len(), 2, "{r:?}");
    assert_eq!(statuses[0], "upstream; hit");
    assert!(statuses[1].starts_with("edge; hit; ttl="), "{r:?}");
    // current_age counts the origin's Age (RFC 9111 §4.2.3).
    let age: u64 = r.header("age").unwrap().parse().unwrap();
    assert!((5..60).contains(&age), "{:?}", r.headers);
    let r = ask(&fast, "GET", "/vod.m3u8", "HTTP/1.1\r\nConnection: close").await;
    let cc: Vec<&str> = r
        .headers
        .iter()
        .filter(|(n, _)| n == "cache-control")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        cc,
        ["public, max-age=30, s-maxage=30", "no-transform"],
        "{r:?}"
    );
    let r = ask(&fast, "GET", "/edits/x.ts", "HTTP/1.1\r\nConnection: close").await;
    assert!(!r.has("server") && !r.has("x-cache"), "{r:?}");
    assert_eq!(r.header("cache-control"), Some("public, max-age=5"));
    let adds: Vec<&str> = r
        .headers
        .iter()
        .filter(|(n, _)| n == "x-add")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(adds, ["origin", "edge"], "{r:?}");
    let r = ask(
        &fast,
        "GET",
        "/plain.ts",
        "HTTP/1.1\r\nConnection: close\r\nRange: bytes=1-3",
    )
    .await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (206, "Partial Content"),
        "{r:?}"
    );
    assert_eq!(r.body, body(1024)[1..4].to_vec());
    assert_eq!(r.header("content-range"), Some("bytes 1-3/1024"), "{r:?}");
    assert_eq!(r.header("content-length"), Some("3"), "{r:?}");
    assert!(!r.has("accept-ranges"), "{r:?}");
    assert_eq!(r.header("x-cache"), Some("HIT RAM"), "{r:?}");
    let r = ask(
        &fast,
        "GET",
        "/plain.ts",
        "HTTP/1.1\r\nConnection: close\r\nIf-None-Match: \"v1\"",
    )
    .await;
    assert_eq!(
        (r.status, r.reason.as_str()),
        (304, "Not Modified"),
        "{r:?}"
    );
    assert!(r.body.is_empty());
    for gone in ["content-length", "content-type", "accept-ranges"] {
        assert!(!r.has(gone), "{gone}: {r:?}");
    }
    assert_eq!(r.header("etag"), Some("\"v1\""), "{r:?}");
    let r = ask(
        &fast,
        "GET",
        "/plain.ts",
        "HTTP/1.1\r\nConnection: close\r\nRange: bytes=1-3\r\nIf-Range: \"other\"",
    )
    .await;
    assert_eq!((r.status, r.body.len()), (200, 1024), "{r:?}");
    // pingora's stored head keeps the status, not the origin's own phrase.
    assert_eq!(r.reason, "OK", "{r:?}");
    assert_eq!(r.header("accept-ranges"), Some("bytes"), "{r:?}");
    // RFC 9110 §13.2.2: the condition before the range (as pingora's own
    // cache path, which answers stale and disk hits, orders them).
    let r = ask(
        &fast,
        "GET",
        "/plain.ts",
        "HTTP/1.1\r\nConnection: close\r\nRange: bytes=1-3\r\nIf-None-Match: \"v1\"",
    )
    .await;
    assert_eq!(r.status, 304, "{r:?}");
    // A zero-length suffix: 416 where If-Range holds, the whole otherwise.
    let r = ask(
        &fast,
        "GET",
        "/plain.ts",
        "HTTP/1.1\r\nConnection: close\r\nRange: bytes=-0\r\nIf-Range: \"v1\"",
    )
    .await;
    assert_eq!(r.status, 416, "{r:?}");
    let r = ask(
        &fast,
        "GET",
        "/plain.ts",
        "HTTP/1.1\r\nConnection: close\r\nRange: bytes=-0\r\nIf-Range: \"other\"",
    )
    .await;
    assert_eq!(
        (r.status, r.header("accept-ranges")),
        (200, Some("bytes")),
        "{r:?}"
    );
    // A weak If-Range never holds (RFC 9110 §13.1.5).
    let r = ask(
        &fast,
        "GET",
        "/plain.ts",
        "HTTP/1.1\r\nConnection: close\r\nRange: bytes=1-3\r\nIf-Range: W/\"v1\"",
    )
    .await;
    assert_eq!((r.status, r.body.len()), (200, 1024), "{r:?}");
    // A 304 of a playlist says its capped lifetime, as its 200 does
    // (it updates what the client stored, RFC 9111 §4.3.4).
    for cond in ["", "\r\nIf-None-Match: \"v1\""] {
        let r = ask(
            &fast,
            "GET",
            "/vod/index",
            &format!("HTTP/1.1\r\nConnection: close{cond}"),
        )
        .await;
        assert_eq!(
            r.header("cache-control"),
            Some("max-age=600, s-maxage=600"),
            "{r:?}"
        );
    }
    let r = ask(&fast, "GET", "/empty.ts", "HTTP/1.1\r\nConnection: close").await;
    assert_eq!((r.status, r.header("content-length")), (200, Some("0")));
    assert_eq!(r.header("accept-ranges"), Some("none"), "{:?}", r.headers);
    assert!(r.closes(), "{r:?}");
}

/// RAM hits of 64 KiB or more are kept in mappings of their own and sent
/// over plain HTTP/1 by reference to their pages (vmsplice and splice,
/// `edge_http_spliced_bytes_total`) when 16 to 256 KiB of them are sent,
/// else written: every byte as the origin's, whole and in ranges at any
/// offset, the counter exactly the hits' body bytes sent so (0 with the
/// fast paths off, make test's second pass).
/// The kernel may send those pages after the object is gone: a response
/// a client stops reading once edge has handed the kernel all of it, its
/// object purged (unmapped) and others of the same size stored and sent
/// in its place, still reads as it was (what keeps this true is that a
/// mapping is never written after it is sealed nor reused: `mapped.rs`'s
/// and pingora-core's tests check that heap bytes are never taken for a
/// mapping's). A client that leaves mid-body ends only its own exchange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_ram_hits_leave_from_their_mapping_whole_even_when_evicted_mid_send() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let o = origin("o").await;
    let node = start(&config(&o, "", "ram_size = \"256 MiB\""));
    let fast = std::env::var("EDGE_TEST_FAST_PATHS").as_deref() != Ok("off");
    let c = Client::new();
    let spliced = |c: Client, url: String| async move {
        metric(
            &c.get(&url).await.text(),
            "edge_http_spliced_bytes_total{listener=\"web\"}",
        ) as u64
    };
    let metrics_url = node.admin_url("/metrics");
    let mut want_spliced = 0u64;
    for n in [65_535usize, 65_536, 100_000, 1_048_577, 3_000_001] {
        let path = format!("/obj/m{n}.bin?size={n}");
        let want = o.expected_body(&path).unwrap();
        let r = get(&c, &node, &path, &[]).await;
        assert_eq!((r.status, x_cache(&r)), (200, "MISS"), "{path}");
        assert!(r.body == want, "{path}: the miss's bytes differ");
        let mut ranges: Vec<(String, std::ops::Range<usize>)> = vec![
            ("bytes=1-".to_string(), 1..n),
            (format!("bytes=4095-{}", n - 2), 4095..n - 1),
            (format!("bytes=-{}", n / 3), n - n / 3..n),
            ("bytes=10-20".to_string(), 10..21),
            (
                format!("bytes={}-{}", n / 2, n / 2 + 16_383),
                n / 2..n / 2 + 16_384,
            ),
        ];
        ranges.insert(0, (String::new(), 0..n));
        if n > 300_000 {
            // Either side of the longest part sent by reference.
            for len in [262_144usize, 262_145] {
                ranges.push((format!("bytes=7-{}", 7 + len - 1), 7..7 + len));
            }
        }
        for _ in 0..2 {
            for (range, part) in &ranges {
                let headers: &[(&str, &str)] = if range.is_empty() {
                    &[]
                } else {
                    &[("range", range)]
                };
                let r = get(&c, &node, &path, headers).await;
                assert_eq!(x_cache(&r), "HIT RAM", "{path} {range}");
                assert_eq!(r.status, if range.is_empty() { 200 } else { 206 });
                assert_eq!(r.body.len(), part.len(), "{path} {range}");
                assert!(
                    r.body[..] == want[part.clone()],
                    "{path} {range}: bytes differ"
                );
                if n >= 65_536 && (16_384..=262_144).contains(&part.len()) {
                    want_spliced += part.len() as u64;
                }
            }
        }
    }
    // Counted once a send ends, which may be just after the client has
    // the last byte.
    if fast {
        let (c2, url) = (c.clone(), metrics_url.clone());
        eventually(Duration::from_secs(20), "every long hit counted", || {
            let (c2, url) = (c2.clone(), url.clone());
            async move { (spliced(c2, url).await >= want_spliced).then_some(()) }
        })
        .await;
    }
    let got = spliced(c.clone(), metrics_url.clone()).await;
    assert_eq!(got, if fast { want_spliced } else { 0 });
    assert_eq!(o.stats().path("/obj/m3000001.bin"), 1);

    // A client that stops reading a 100 KB hit after its head, once edge
    // has handed the kernel the whole body (the counter says so: the
    // socket queues hold it; the client's receive buffer is made room
    // for it) and let go of it.
    let big = "/obj/m100000.bin?size=100000";
    let before = spliced(c.clone(), metrics_url.clone()).await;
    let want = o.expected_body(big).unwrap();
    let addr = node.addr("web");
    let request = format!("GET {big} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(1 << 20).unwrap();
    let mut stalled = socket.connect(addr).await.unwrap();
    stalled.write_all(request.as_bytes()).await.unwrap();
    let mut first = vec![0u8; 4096];
    let mut got_first = 0;
    while !first[..got_first].windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stalled.read(&mut first[got_first..]).await.unwrap();
        assert!(n > 0, "closed before the head");
        got_first += n;
    }
    if fast {
        let want_now = before + want.len() as u64;
        let (c2, url) = (c.clone(), metrics_url.clone());
        eventually(
            Duration::from_secs(20),
            "the whole body in the kernel's hands",
            || {
                let (c2, url) = (c2.clone(), url.clone());
                async move { (spliced(c2, url).await == want_now).then_some(()) }
            },
        )
        .await;
    }
    // Its object purged, and others of its size filled and sent, many
    // times over, while the kernel still holds its pages.
    let host = format!("127.0.0.1:{}", addr.port());
    let r = purge(
        &c,
        &node,
        &format!(r#"{{"url": "http://{host}{big}"}}"#),
        Some(TOKEN),
    )
    .await;
    assert_eq!(r.json()["purged"].as_u64(), Some(1), "{}", r.text());
    for i in 0..6 {
        let other = format!("/obj/other{i}.bin?size=100000");
        let other_want = o.expected_body(&other).unwrap();
        assert!(other_want != want);
        for _ in 0..2 {
            let r = get(&c, &node, &other, &[]).await;
            assert!(r.body == other_want, "{other}");
        }
        purge(
            &c,
            &node,
            &format!(r#"{{"url": "http://{host}{other}"}}"#),
            Some(TOKEN),
        )
        .await;
    }
    let mut rest = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let head_end = first[..got_first]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap()
        + 4;
    rest.extend_from_slice(&first[head_end..got_first]);
    while rest.len() < want.len() {
        let n = tokio::time::timeout(Duration::from_secs(30), stalled.read(&mut buf))
            .await
            .expect("the stalled body never came")
            .unwrap();
        assert!(n > 0, "closed after {} bytes", rest.len());
        rest.extend_from_slice(&buf[..n]);
    }
    assert_eq!(rest.len(), want.len());
    assert!(
        rest[..] == want[..],
        "a purged object's bytes changed in flight"
    );
    assert_eq!(x_cache(&get(&c, &node, big, &[]).await), "MISS");

    // Clients that leave mid-body of a 3 MB hit, three times: the next
    // hits are whole.
    let big = "/obj/m3000001.bin?size=3000001";
    let want = o.expected_body(big).unwrap();
    let request = format!("GET {big} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    for _ in 0..3 {
        let mut gone = tokio::net::TcpStream::connect(addr).await.unwrap();
        gone.write_all(request.as_bytes()).await.unwrap();
        let n = gone.read(&mut buf).await.unwrap();
        assert!(n > 0);
        drop(gone);
        let r = get(&c, &node, big, &[]).await;
        assert_eq!(x_cache(&r), "HIT RAM");
        assert!(r.body == want, "a hit after a client left differs");
    }
}
