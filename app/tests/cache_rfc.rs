//! The cache against RFC 9111, 9211 and 9213, end to end: the `edge` binary
//! in front of a scripted origin that sends exactly the fields under test.
//! Every rule is checked on a node that hits from RAM and on one that hits
//! from disk only (`ram_size = 0`). Ages are injected through the origin's
//! `Age` and `Date`; the few waits are for TTLs of one second.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use edge_testkit::{Client, EdgeNode, RawConn, Reply, Response, Scripted};
use http::Method;

const BIN: &str = env!("CARGO_BIN_EXE_edge");

/// A node in front of `o`; `route_cache` adds keys to `[route.cache]`,
/// `cache` to `[cache]`.
fn node(o: &Scripted, disk: Option<&std::path::Path>, route_cache: &str, cache: &str) -> EdgeNode {
    let tier = match disk {
        Some(d) => format!(
            "ram_size = 0\ndisk_path = \"{}\"\ndisk_size = \"64 MiB\"\n",
            d.display()
        ),
        None => String::new(),
    };
    let slice = if route_cache.contains("slice =") {
        ""
    } else {
        "slice = false\n"
    };
    let config = format!(
        r#"
[server]
threads = 1
access_log = false
shutdown_delay = "0s"

[admin]
listen = "127.0.0.1:0"
token = "cache-rfc-token-0123456789"

[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:0"

[[pool]]
name = "origin"
backends = [{{ address = "{}" }}]
retry = {{ attempts = 0 }}
timeouts = {{ first_byte = "1s" }}

[[route]]
name = "all"
pool = "origin"
[route.cache]
{slice}{route_cache}

[cache]
{tier}{cache}
"#,
        o.addr()
    );
    let n = EdgeNode::start(BIN, &config);
    n.wait_ready(Duration::from_secs(20));
    n
}

/// One node per tier: RAM hits, then disk-only hits.
struct Nodes {
    _dir: tempfile::TempDir,
    nodes: Vec<(&'static str, EdgeNode)>,
}

fn both(o: &Scripted, route_cache: &str, cache: &str) -> Nodes {
    let dir = tempfile::tempdir().unwrap();
    let nodes = vec![
        ("ram", node(o, None, route_cache, cache)),
        ("disk", node(o, Some(dir.path()), route_cache, cache)),
    ];
    Nodes { _dir: dir, nodes }
}

async fn get(c: &Client, n: &EdgeNode, path: &str, headers: &[(&str, &str)]) -> Response {
    c.get_with(&n.url("web", path), headers).await
}

async fn send(c: &Client, n: &EdgeNode, method: &str, path: &str) -> Response {
    c.request(
        Method::from_bytes(method.as_bytes()).unwrap(),
        &n.url("web", path),
        &[],
        "",
    )
    .await
    .unwrap()
}

fn xc(r: &Response) -> String {
    r.header("x-cache").unwrap_or("-").to_string()
}

fn age(r: &Response) -> u64 {
    r.header("age")
        .and_then(|a| a.parse().ok())
        .unwrap_or(u64::MAX)
}

/// A disk write lands on a blocking thread after the response: wait until
/// the next request is a hit from the tier under test.
async fn stored(c: &Client, n: &EdgeNode, tier: &str, path: &str) -> Response {
    let want = if tier == "disk" {
        "HIT DISK"
    } else {
        "HIT RAM"
    };
    for _ in 0..100 {
        let r = get(c, n, path, &[]).await;
        if xc(&r) == want {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{path} never became a {want}")
}

fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_age_a_response_arrives_with_counts_and_the_origin_date_is_kept() {
    let o = Scripted::start().await;
    let c = Client::new();
    let nodes = both(&o, "", "");
    for (tier, n) in &nodes.nodes {
        let p = |s: &str| format!("/{tier}/{s}");
        // Already stale on arrival (RFC 9111 §4.2.3): never a fresh hit.
        o.set(
            &p("aged"),
            Reply::ok(
                "aged",
                &[("cache-control", "max-age=3600"), ("age", "7200")],
            ),
        );
        let r = get(&c, n, &p("aged"), &[]).await;
        assert_eq!(r.status, 200);
        get(&c, n, &p("aged"), &[]).await;
        assert_eq!(
            o.count(&p("aged")),
            2,
            "{tier}: an object that arrived stale was served fresh"
        );

        // Apparent age from Date: the hit says at least that old, with the
        // origin's own Date.
        let date = http_date(SystemTime::now() - Duration::from_secs(100));
        o.set(
            &p("dated"),
            Reply::ok(
                "dated",
                &[("cache-control", "max-age=3600"), ("date", &date)],
            ),
        );
        get(&c, n, &p("dated"), &[]).await;
        let hit = stored(&c, n, tier, &p("dated")).await;
        assert!(
            (100..110).contains(&age(&hit)),
            "{tier}: Age {:?}",
            hit.header("age")
        );
        assert_eq!(
            hit.header("date"),
            Some(date.as_str()),
            "{tier}: the hit's Date"
        );
        assert!(
            hit.header("cache-status").unwrap().contains("hit; ttl=3"),
            "{tier}"
        );

        // Age reported by the origin counts, and is added to.
        o.set(
            &p("reported"),
            Reply::ok("r", &[("cache-control", "max-age=3600"), ("age", "500")]),
        );
        let miss = get(&c, n, &p("reported"), &[]).await;
        assert_eq!(
            miss.header("age"),
            Some("500"),
            "{tier}: a miss passes the origin's Age on"
        );
        let hit = stored(&c, n, tier, &p("reported")).await;
        assert!(
            (500..510).contains(&age(&hit)),
            "{tier}: Age {:?}",
            hit.header("age")
        );

        // Not a non-negative integer: ignored. Huge: clamped, so stale.
        for (name, value, hits) in [
            ("neg", "-10", true),
            ("frac", "1.5", true),
            ("word", "old", true),
            ("huge", "999999999999999999999999", false),
            ("big", "4294967296", false),
        ] {
            o.set(
                &p(name),
                Reply::ok(name, &[("cache-control", "max-age=600"), ("age", value)]),
            );
            get(&c, n, &p(name), &[]).await;
            if hits {
                let hit = stored(&c, n, tier, &p(name)).await;
                assert!(
                    age(&hit) < 10,
                    "{tier} Age: {value:?} gave {:?}",
                    hit.header("age")
                );
            } else {
                get(&c, n, &p(name), &[]).await;
                assert_eq!(
                    o.count(&p(name)),
                    2,
                    "{tier}: Age {value} is older than max-age"
                );
            }
        }

        // No Date from the origin: the one edge added is stored with it.
        o.set(
            &p("nodate"),
            Reply::ok("n", &[("cache-control", "max-age=600")]),
        );
        let first = get(&c, n, &p("nodate"), &[]).await;
        let first_date = first.header("date").unwrap().to_string();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let hit = stored(&c, n, tier, &p("nodate")).await;
        assert_eq!(hit.header("date"), Some(first_date.as_str()), "{tier}");
        assert!(age(&hit) >= 1, "{tier}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304_replaces_every_field_it_carries_except_framing() {
    let o = Scripted::start().await;
    let c = Client::new();
    let nodes = both(&o, "", "");
    for (tier, n) in &nodes.nodes {
        let path = format!("/{tier}/r");
        let fresh = Reply::new(
            304,
            "",
            &[
                ("etag", "\"v1\""),
                ("cache-control", "max-age=600"),
                ("x-version", "2"),
                ("x-added", "yes"),
                ("content-length", "999"),
                ("content-encoding", "gzip"),
                ("connection", "x-hop"),
                ("x-hop", "must-not-stay"),
                ("keep-alive", "timeout=1"),
            ],
        );
        o.set(
            &path,
            Reply::ok(
                "body-v1",
                &[
                    ("etag", "\"v1\""),
                    ("cache-control", "max-age=1"),
                    ("x-version", "1"),
                    ("x-old", "kept"),
                    ("content-type", "text/plain"),
                ],
            )
            .revalidated_with(fresh),
        );
        get(&c, n, &path, &[]).await;
        stored(&c, n, tier, &path).await;
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let r = get(&c, n, &path, &[]).await;
        assert!(xc(&r).starts_with("REVALIDATED"), "{tier}: {}", xc(&r));
        let last = o.requests(&path).pop().unwrap();
        assert_eq!(
            last.header("if-none-match").as_deref(),
            Some("\"v1\""),
            "{tier}"
        );
        for r in [r, stored(&c, n, tier, &path).await] {
            assert_eq!(r.text(), "body-v1", "{tier}");
            assert_eq!(
                r.header("x-version"),
                Some("2"),
                "{tier}: the 304's value replaces the stored one"
            );
            assert_eq!(r.header("x-added"), Some("yes"), "{tier}");
            assert_eq!(r.header("x-old"), Some("kept"), "{tier}");
            assert_eq!(r.header("content-length"), Some("7"), "{tier}");
            assert_eq!(r.header("content-encoding"), None, "{tier}");
            assert_eq!(r.header("x-hop"), None, "{tier}");
            assert_eq!(r.header("cache-control"), Some("max-age=600"), "{tier}");
        }
        assert_eq!(o.count(&path), 2, "{tier}: fresh for 600 s after the 304");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_methods_invalidate_the_target_and_same_origin_locations() {
    let o = Scripted::start().await;
    let c = Client::new();
    let nodes = both(&o, "", "");
    for (tier, n) in &nodes.nodes {
        let host = n.addr("web").to_string();
        let p = |s: &str| format!("/{tier}/{s}");
        let cacheable = |name: &str| {
            Reply::ok(
                name,
                &[
                    ("cache-control", "max-age=600"),
                    ("vary", "accept-language"),
                ],
            )
        };
        for (i, method) in ["POST", "PUT", "DELETE", "PATCH", "FOO"].iter().enumerate() {
            let path = p(&format!("m{i}"));
            o.set(&path, cacheable("m"));
            for lang in ["en", "fr"] {
                get(&c, n, &path, &[("accept-language", lang)]).await;
            }
            for lang in ["en", "fr"] {
                let r = c
                    .get_with(&n.url("web", &path), &[("accept-language", lang)])
                    .await;
                assert!(xc(&r).starts_with("HIT") || tier == &"disk", "{tier}");
            }
            // A disk write is asynchronous: wait for both variants.
            for lang in ["en", "fr"] {
                for _ in 0..100 {
                    let r = get(&c, n, &path, &[("accept-language", lang)]).await;
                    if xc(&r).starts_with("HIT") {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            let before = o.count(&path);
            let r = send(&c, n, method, &path).await;
            assert_eq!(r.status, 200, "{tier} {method}");
            for lang in ["en", "fr"] {
                let r = get(&c, n, &path, &[("accept-language", lang)]).await;
                assert_eq!(xc(&r), "MISS", "{tier}: {method} left the {lang} variant");
            }
            assert_eq!(o.count(&path), before + 3, "{tier} {method}");
        }

        // An error answer invalidates nothing.
        let path = p("kept");
        o.set(&path, cacheable("k"));
        get(&c, n, &path, &[]).await;
        stored(&c, n, tier, &path).await;
        o.once(&path, Reply::new(404, "no", &[]));
        send(&c, n, "DELETE", &path).await;
        o.once(&path, Reply::new(500, "no", &[]));
        send(&c, n, "POST", &path).await;
        assert!(
            xc(&get(&c, n, &path, &[]).await).starts_with("HIT"),
            "{tier}"
        );

        // Location and Content-Location, when same-origin.
        let targets = [
            ("loc-rel", "location", "loc-rel".to_string(), true),
            (
                "loc-abs",
                "location",
                format!("http://{host}/{tier}/loc-abs"),
                true,
            ),
            (
                "cl-abs",
                "content-location",
                format!("http://{host}/{tier}/cl-abs"),
                true,
            ),
            (
                "other-host",
                "location",
                format!("http://elsewhere.test/{tier}/other-host"),
                false,
            ),
            (
                "other-scheme",
                "content-location",
                format!("https://{host}/{tier}/other-scheme"),
                false,
            ),
        ];
        for (name, field, value, invalidates) in &targets {
            let path = p(name);
            o.set(&path, cacheable(name));
            get(&c, n, &path, &[]).await;
            stored(&c, n, tier, &path).await;
            let form = p(&format!("form-{name}"));
            o.set(&form, Reply::new(303, "", &[(field, value.as_str())]));
            let r = send(&c, n, "POST", &form).await;
            assert_eq!(r.status, 303);
            let after = get(&c, n, &path, &[]).await;
            assert_eq!(
                xc(&after) == "MISS",
                *invalidates,
                "{tier}: {field}: {value}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_directives_count_as_the_route_allows() {
    let o = Scripted::start().await;
    let c = Client::new();
    let trusting = node(
        &o,
        None,
        "client_directives = \"trusted\"\ntrusted_clients = [\"127.0.0.0/8\"]",
        "",
    );
    let default = node(&o, None, "", "");
    let n = &trusting;
    o.set("/d", Reply::ok("d", &[("cache-control", "max-age=600")]));
    get(&c, n, "/d", &[]).await;
    assert!(xc(&get(&c, n, "/d", &[]).await).starts_with("HIT"));
    for cc in [
        "no-cache",
        "max-age=0",
        "min-fresh=601",
        "max-age=0, max-stale",
    ] {
        let before = o.count("/d");
        let r = get(&c, n, "/d", &[("cache-control", cc)]).await;
        assert_eq!(r.status, 200);
        assert_eq!(o.count("/d"), before + 1, "{cc} goes to the origin");
        assert!(
            r.header("cache-status").unwrap().contains("fwd=request"),
            "{cc}: {:?}",
            r.header("cache-status")
        );
    }
    for cc in ["max-age=100", "min-fresh=10", "max-stale=5"] {
        let before = o.count("/d");
        let r = get(&c, n, "/d", &[("cache-control", cc)]).await;
        assert!(xc(&r).starts_with("HIT"), "{cc}");
        assert_eq!(o.count("/d"), before, "{cc}");
    }
    // only-if-cached: 504 when nothing is stored, the origin untouched.
    o.set("/none", Reply::ok("x", &[("cache-control", "max-age=600")]));
    let r = get(&c, n, "/none", &[("cache-control", "only-if-cached")]).await;
    assert_eq!(r.status, 504);
    assert_eq!(o.count("/none"), 0);
    let r = get(&c, n, "/d", &[("cache-control", "only-if-cached")]).await;
    assert_eq!(r.status, 200);
    // no-store: the response to it is not stored.
    o.set("/ns", Reply::ok("x", &[("cache-control", "max-age=600")]));
    get(&c, n, "/ns", &[("cache-control", "no-store")]).await;
    assert_eq!(xc(&get(&c, n, "/ns", &[]).await), "MISS");
    // max-stale: a stale copy within the bound is served as is, unless the
    // origin forbade stale.
    o.set("/st", Reply::ok("x", &[("cache-control", "max-age=1")]));
    o.set(
        "/mr",
        Reply::ok("x", &[("cache-control", "max-age=1, must-revalidate")]),
    );
    get(&c, n, "/st", &[]).await;
    get(&c, n, "/mr", &[]).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = get(&c, n, "/st", &[("cache-control", "max-stale=60")]).await;
    assert!(xc(&r).starts_with("HIT"), "{}", xc(&r));
    assert_eq!(o.count("/st"), 1);
    get(&c, n, "/mr", &[("cache-control", "max-stale=60")]).await;
    assert_eq!(o.count("/mr"), 2, "must-revalidate beats max-stale");
    let r = get(&c, n, "/st", &[("cache-control", "only-if-cached")]).await;
    assert_eq!(
        r.status, 504,
        "stale and not allowed: only-if-cached gets 504"
    );

    // By default a client outside trusted_clients cannot add origin load.
    let n = &default;
    get(&c, n, "/d", &[]).await;
    let before = o.count("/d");
    for cc in ["no-cache", "max-age=0", "min-fresh=9999"] {
        let r = get(
            &c,
            n,
            "/d",
            &[("cache-control", cc), ("pragma", "no-cache")],
        )
        .await;
        assert!(xc(&r).starts_with("HIT"), "{cc}");
    }
    assert_eq!(o.count("/d"), before);
    let r = get(&c, n, "/none", &[("cache-control", "only-if-cached")]).await;
    assert_eq!(r.status, 504, "only-if-cached counts from anyone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targeted_fields_govern_edge_and_cache_status_says_what_happened() {
    let o = Scripted::start().await;
    let c = Client::new();
    let nodes = both(
        &o,
        "",
        "targeted_fields = [\"Edge-Cache-Control\", \"CDN-Cache-Control\"]",
    );
    for (tier, n) in &nodes.nodes {
        let p = |s: &str| format!("/{tier}/{s}");
        // CDN-Cache-Control beats Cache-Control, both ways, and stops here.
        o.set(
            &p("cdn-store"),
            Reply::ok(
                "a",
                &[
                    ("cache-control", "no-store"),
                    ("cdn-cache-control", "max-age=60"),
                ],
            ),
        );
        o.set(
            &p("cdn-nostore"),
            Reply::ok(
                "b",
                &[
                    ("cache-control", "max-age=60"),
                    ("cdn-cache-control", "no-store"),
                ],
            ),
        );
        o.set(
            &p("edge-first"),
            Reply::ok(
                "c",
                &[
                    ("edge-cache-control", "no-store"),
                    ("cdn-cache-control", "max-age=60"),
                ],
            ),
        );
        o.set(
            &p("invalid"),
            Reply::ok(
                "d",
                &[("cdn-cache-control", ""), ("cache-control", "max-age=60")],
            ),
        );
        o.set(
            &p("expires"),
            Reply::ok(
                "e",
                &[
                    ("cdn-cache-control", "public"),
                    (
                        "expires",
                        &http_date(SystemTime::now() + Duration::from_secs(600)),
                    ),
                ],
            ),
        );
        let miss = get(&c, n, &p("cdn-store"), &[]).await;
        assert_eq!(
            miss.header("cdn-cache-control"),
            None,
            "{tier}: targeted fields stop at edge"
        );
        assert_eq!(
            miss.header("cache-control"),
            Some("no-store"),
            "{tier}: the client still gets Cache-Control"
        );
        let cs = miss.header("cache-status").unwrap();
        assert!(
            cs.starts_with("edge; fwd=uri-miss; fwd-status=200; ttl=")
                && cs.contains("; stored; key=\""),
            "{tier}: {cs}"
        );
        let hit = stored(&c, n, tier, &p("cdn-store")).await;
        assert!(
            hit.header("cache-status")
                .unwrap()
                .starts_with("edge; hit; ttl="),
            "{tier}"
        );
        assert_eq!(hit.header("cdn-cache-control"), None);
        for (name, stores) in [
            ("cdn-nostore", false),
            ("edge-first", false),
            ("invalid", true),
            ("expires", false),
        ] {
            get(&c, n, &p(name), &[]).await;
            if stores {
                stored(&c, n, tier, &p(name)).await;
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let r = get(&c, n, &p(name), &[]).await;
                assert_eq!(xc(&r), "MISS", "{tier}: {name}");
                assert!(
                    !r.header("cache-status").unwrap().contains("stored"),
                    "{tier}: {name}"
                );
            }
        }
        // An upstream cache's member is kept, ours after it.
        o.set(
            &p("chain"),
            Reply::ok(
                "f",
                &[
                    ("cache-control", "max-age=60"),
                    ("cache-status", "shield; hit"),
                ],
            ),
        );
        let r = get(&c, n, &p("chain"), &[]).await;
        let all: Vec<_> = r
            .headers
            .get_all("cache-status")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        assert_eq!(
            all.first().map(String::as_str),
            Some("shield; hit"),
            "{tier}: {all:?}"
        );
        assert!(
            all.last().unwrap().starts_with("edge; fwd=uri-miss"),
            "{tier}: {all:?}"
        );
    }
    // Forwarded when the operator says so (a shield in front of edges).
    let fwd = node(&o, None, "", "forward_targeted_fields = true");
    let r = get(&c, &fwd, "/ram/cdn-store", &[]).await;
    assert_eq!(r.header("cdn-cache-control"), Some("max-age=60"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_stale_where_the_origin_forbids_it_and_live_playlists_stay_young() {
    let o = Scripted::start().await;
    let c = Client::new();
    let nodes = both(
        &o,
        "stale_while_revalidate = \"60s\"\nstale_if_error = \"60s\"",
        "",
    );
    for (tier, n) in &nodes.nodes {
        let p = |s: &str| format!("/{tier}/{s}");
        for (name, cc) in [
            ("nc", "no-cache"),
            ("mr", "max-age=1, must-revalidate"),
            ("pr", "max-age=1, proxy-revalidate"),
            ("sm", "s-maxage=1"),
        ] {
            let path = p(name);
            o.set(&path, Reply::ok("one", &[("cache-control", cc)]));
            get(&c, n, &path, &[]).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            o.set(&path, Reply::ok("two", &[("cache-control", cc)]));
            if name != "nc" {
                tokio::time::sleep(Duration::from_millis(1900)).await;
            }
            let r = get(&c, n, &path, &[]).await;
            assert_eq!(
                r.text(),
                "two",
                "{tier}: {cc} was served stale ({})",
                xc(&r)
            );
        }
        // The route's default does apply when the origin is silent on it.
        let path = p("swr");
        o.set(&path, Reply::ok("one", &[("cache-control", "max-age=1")]));
        get(&c, n, &path, &[]).await;
        stored(&c, n, tier, &path).await;
        tokio::time::sleep(Duration::from_millis(2100)).await;
        o.set(&path, Reply::ok("two", &[("cache-control", "max-age=1")]));
        let r = get(&c, n, &path, &[]).await;
        assert_eq!(
            (r.text().as_str(), xc(&r).starts_with("STALE")),
            ("one", true),
            "{tier}"
        );

        // A live playlist: never older than half its target duration, and
        // players are not told to keep it longer.
        let path = p("live.m3u8");
        let playlist = |seq: u32| {
            format!("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{seq}\n#EXTINF:2,\nseg_{seq}.ts\n")
        };
        let reply = |seq| {
            Reply::ok(
                &playlist(seq),
                &[
                    ("cache-control", "max-age=86400"),
                    ("content-type", "application/vnd.apple.mpegurl"),
                ],
            )
        };
        o.set(&path, reply(1));
        let miss = get(&c, n, &path, &[]).await;
        assert_eq!(
            miss.header("cache-control"),
            Some("max-age=2"),
            "{tier}: a miss gets the live cap"
        );
        let hit = stored(&c, n, tier, &path).await;
        assert_eq!(
            hit.header("cache-control"),
            Some("max-age=1"),
            "{tier}: a hit gets half the target duration"
        );
        o.set(&path, reply(2));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let r = get(&c, n, &path, &[]).await;
        assert!(
            r.text().contains("SEQUENCE:2"),
            "{tier}: stale live playlist ({}, Age {:?})",
            xc(&r),
            r.header("age")
        );
        assert!(age(&r) <= 1, "{tier}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_stored_when_the_origin_says_and_stale_covers_a_dead_origin() {
    let o = Scripted::start().await;
    let c = Client::new();
    let nodes = both(&o, "stale_if_error = \"60s\"", "");
    for (tier, n) in &nodes.nodes {
        let p = |s: &str| format!("/{tier}/{s}");
        o.set(
            &p("503"),
            Reply::new(503, "down", &[("cache-control", "max-age=60")]),
        );
        o.set(&p("500"), Reply::new(500, "down", &[]));
        let r = get(&c, n, &p("503"), &[]).await;
        assert_eq!(r.status, 503);
        let r = stored(&c, n, tier, &p("503")).await;
        assert_eq!((r.status, r.text().as_str()), (503, "down"));
        get(&c, n, &p("500"), &[]).await;
        get(&c, n, &p("500"), &[]).await;
        assert_eq!(
            o.count(&p("500")),
            2,
            "{tier}: a 500 without freshness is not stored"
        );

        for (name, failure) in [
            ("dropped", Reply::dropped()),
            (
                "slow",
                Reply::ok("late", &[]).with_delay(Duration::from_secs(30)),
            ),
        ] {
            let path = p(name);
            o.set(&path, Reply::ok("kept", &[("cache-control", "max-age=1")]));
            get(&c, n, &path, &[]).await;
            stored(&c, n, tier, &path).await;
            tokio::time::sleep(Duration::from_millis(2100)).await;
            o.set(&path, failure);
            let r = get(&c, n, &path, &[]).await;
            assert_eq!(
                (r.status, r.text().as_str()),
                (200, "kept"),
                "{tier}: {name}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_hits_match_get_hits_and_interim_responses_pass_but_are_not_stored() {
    let o = Scripted::start().await;
    let c = Client::new();
    let nodes = both(&o, "", "");
    for (tier, n) in &nodes.nodes {
        let path = format!("/{tier}/h");
        o.set(
            &path,
            Reply::ok(
                "0123456789",
                &[
                    ("cache-control", "max-age=600"),
                    ("etag", "\"e\""),
                    ("x-meta", "m"),
                ],
            ),
        );
        get(&c, n, &path, &[]).await;
        let g = stored(&c, n, tier, &path).await;
        let h = send(&c, n, "HEAD", &path).await;
        assert!(xc(&h).starts_with("HIT"), "{tier}");
        let names = |r: &Response| {
            let mut v: Vec<(String, String)> = r
                .headers
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "age" | "date" | "cache-status"))
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(&h), names(&g), "{tier}: HEAD hit headers");

        // 103 in the same packet as the 200: forwarded, never stored.
        let path = format!("/{tier}/early");
        o.set(
            &path,
            Reply::ok("final", &[("cache-control", "max-age=600")]).with_interim(
                b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
            ),
        );
        let mut raw = RawConn::connect(n.addr("web")).await;
        raw.send(format!("GET {path} HTTP/1.1\r\nHost: a.test\r\n\r\n").as_bytes())
            .await;
        let early = raw.response(false).await.unwrap();
        assert_eq!(early.status, 103, "{tier}: the 103 is forwarded");
        assert!(
            early
                .header("link")
                .is_some_and(|l| l.contains("style.css")),
            "{tier}"
        );
        let last = raw.response(false).await.unwrap();
        assert_eq!(
            (last.status, last.text().as_str()),
            (200, "final"),
            "{tier}"
        );
        // Never to an HTTP/1.0 client (RFC 9110 §15.2).
        let old = format!("/{tier}/early-http10");
        o.set(
            &old,
            Reply::ok("final", &[("cache-control", "max-age=600")]).with_interim(
                b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
            ),
        );
        let mut raw = RawConn::connect(n.addr("web")).await;
        raw.send(format!("GET {old} HTTP/1.0\r\nHost: a.test\r\n\r\n").as_bytes())
            .await;
        let first = raw.response(false).await.unwrap();
        assert_eq!(
            (first.status, first.text().as_str()),
            (200, "final"),
            "{tier}"
        );
        for _ in 0..100 {
            let r = c
                .get_with(
                    &format!("http://{}{path}", n.addr("web")),
                    &[("host", "a.test")],
                )
                .await;
            assert_eq!((r.status, r.text().as_str()), (200, "final"), "{tier}");
            if xc(&r).starts_with("HIT") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_values_are_normalized_and_encodings_mapped() {
    let o = Scripted::start().await;
    let c = Client::new();
    let nodes = both(&o, "", "");
    for (tier, n) in &nodes.nodes {
        let path = format!("/{tier}/v");
        o.set(
            &path,
            Reply::ok(
                "v",
                &[
                    ("cache-control", "max-age=600"),
                    ("vary", "Accept-Encoding"),
                ],
            ),
        );
        get(&c, n, &path, &[("accept-encoding", "gzip, br")]).await;
        for _ in 0..100 {
            if xc(&get(&c, n, &path, &[("accept-encoding", "gzip, br")]).await).starts_with("HIT") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for same in ["br,gzip", " BR , Gzip ", "gzip,br,gzip"] {
            let r = get(&c, n, &path, &[("accept-encoding", same)]).await;
            assert!(
                xc(&r).starts_with("HIT"),
                "{tier}: {same:?} is the same variant"
            );
        }
        let r = get(&c, n, &path, &[("accept-encoding", "gzip")]).await;
        assert_eq!(xc(&r), "MISS", "{tier}");
    }
    let mapped = node(&o, None, "accept_encoding = [\"br\", \"gzip\"]", "");
    o.set(
        "/m",
        Reply::ok(
            "m",
            &[
                ("cache-control", "max-age=600"),
                ("vary", "Accept-Encoding"),
            ],
        ),
    );
    get(
        &c,
        &mapped,
        "/m",
        &[("accept-encoding", "gzip, deflate, br")],
    )
    .await;
    assert_eq!(
        o.requests("/m")[0].header("accept-encoding").as_deref(),
        Some("br")
    );
    for (ae, hit) in [
        ("br", true),
        ("br;q=1, zstd", true),
        ("gzip", false),
        ("gzip;q=0.5, deflate", true),
        ("deflate", false),
        ("identity", true),
    ] {
        let r = get(&c, &mapped, "/m", &[("accept-encoding", ae)]).await;
        assert_eq!(xc(&r).starts_with("HIT"), hit, "{ae:?}: {}", xc(&r));
    }
}

/// RFC 9111 §3.3-3.4 and RFC 9110 §14.2: an origin that ignores `Range`
/// answers a slice with the whole object; edge serves the range asked for
/// out of it, stores the object once and serves later ranges from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_of_an_origin_that_ignores_range_are_served_and_stored_whole() {
    const MIB: usize = 1 << 20;
    let o = Scripted::start().await;
    let body: String = (0..3 * MIB + 12_345)
        .map(|i| char::from(b'a' + (i % 7919 % 26) as u8))
        .collect();
    let total = body.len();
    let nodes = both(
        &o,
        "slice = true",
        "slice_size = \"1 MiB\"\nslice_threshold = \"1 MiB\"",
    );
    let c = Client::new();
    for (tier, n) in &nodes.nodes {
        let path = format!("/whole-{tier}.mp4");
        o.set(
            &path,
            Reply::ok(
                &body,
                &[("cache-control", "max-age=600"), ("etag", "\"w\"")],
            ),
        );
        let ranges: [(usize, usize); 5] = [
            (2 * MIB + 100, 2 * MIB + 199), // past the first slice, unseen
            (0, 99),
            (MIB - 10, MIB + 10),    // across a slice boundary
            (total - 50, total - 1), // the last bytes
            (3 * MIB, total - 1),
        ];
        for (i, (a, b)) in ranges.into_iter().enumerate() {
            let r = get(&c, n, &path, &[("range", &format!("bytes={a}-{b}"))]).await;
            assert_eq!(r.status, 206, "{tier} range {i}: {}", xc(&r));
            assert_eq!(
                r.header("content-range"),
                Some(format!("bytes {a}-{b}/{total}").as_str()),
                "{tier} range {i}"
            );
            assert_eq!(r.body.len(), b - a + 1, "{tier} range {i}");
            assert!(
                r.body == body.as_bytes()[a..=b],
                "{tier} range {i}: wrong bytes"
            );
        }
        // A suffix range, and the whole object: from the stored copy.
        let r = get(&c, n, &path, &[("range", "bytes=-10")]).await;
        assert_eq!(r.status, 206, "{tier}");
        assert!(r.body == body.as_bytes()[total - 10..], "{tier}");
        let r = get(&c, n, &path, &[]).await;
        assert_eq!(r.status, 200, "{tier}");
        assert!(r.body == body.as_bytes(), "{tier}: whole object");
        assert!(xc(&r).starts_with("HIT"), "{tier}: {}", xc(&r));
        // The first request's slice fetch was stopped when the whole object
        // came; the object was then fetched once and never again.
        assert!(
            o.count(&path) <= 2,
            "{tier}: {} origin fetches",
            o.count(&path)
        );
    }
}

/// A stale answer for an origin that failed (dropped, or too slow) never
/// says keep-alive on a connection edge then closes: a client that reuses
/// it gets its next answer or was told `Connection: close` (the same class
/// as the breaker test's keep-alive bug). RAM and disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_answer_for_a_failed_origin_keeps_its_word_on_keep_alive() {
    let o = Scripted::start().await;
    let c = Client::new();
    let nodes = both(&o, "stale_if_error = \"1h\"", "");
    for (tier, n) in &nodes.nodes {
        for (name, failure) in [
            ("dropped", Reply::dropped()),
            (
                "slow",
                Reply::ok("late", &[]).with_delay(Duration::from_secs(30)),
            ),
        ] {
            let path = format!("/{tier}/{name}");
            o.set(&path, Reply::ok("kept", &[("cache-control", "max-age=1")]));
            get(&c, n, &path, &[]).await;
            stored(&c, n, tier, &path).await;
            tokio::time::sleep(Duration::from_millis(2100)).await;
            o.set(&path, failure);
            let mut raw = edge_testkit::RawConn::connect(n.addr("web")).await;
            let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", n.addr("web"));
            raw.send(req.as_bytes()).await;
            let r = raw.response(false).await.unwrap();
            assert_eq!(
                (r.status, r.text().as_str()),
                (200, "kept"),
                "{tier} {name}"
            );
            if r.closes() {
                assert!(raw.closed().await, "{tier} {name}: said close, stayed open");
            } else {
                raw.send(req.as_bytes()).await;
                let again = raw.response(false).await;
                assert!(
                    again.is_ok(),
                    "{tier} {name}: said keep-alive, then closed: {again:?}"
                );
            }
        }
    }
}

/// The same when no backend is even tried (every one disabled, down or
/// ejected: the usual state of an outage after its first seconds): the
/// stale answer says `Connection: close`, as pingora closes after it, or
/// the next request on the connection is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_answer_with_no_backend_to_try_keeps_its_word_on_keep_alive() {
    let o = Scripted::start().await;
    let c = Client::new();
    let nodes = both(&o, "stale_if_error = \"1h\"", "");
    let auth = "Bearer cache-rfc-token-0123456789";
    for (tier, n) in &nodes.nodes {
        let path = format!("/{tier}/none");
        o.set(&path, Reply::ok("kept", &[("cache-control", "max-age=1")]));
        get(&c, n, &path, &[]).await;
        stored(&c, n, tier, &path).await;
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let disable = c
            .request(
                Method::POST,
                &n.admin_url(&format!("/pools/origin/backends/{}/disable", o.addr())),
                &[("authorization", auth)],
                "",
            )
            .await
            .unwrap();
        assert_eq!(disable.status, 200, "{}", disable.text());
        let mut raw = edge_testkit::RawConn::connect(n.addr("web")).await;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", n.addr("web"));
        raw.send(req.as_bytes()).await;
        let r = raw.response(false).await.unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "kept"), "{tier}");
        if r.closes() {
            assert!(raw.closed().await, "{tier}: said close, stayed open");
        } else {
            raw.send(req.as_bytes()).await;
            let again = raw.response(false).await;
            assert!(
                again.is_ok(),
                "{tier}: said keep-alive, then closed: {again:?}"
            );
        }
    }
}

/// `If-None-Match: *` matches any current representation (RFC 9110
/// §13.1.2): a stored response, with an ETag or without, answers 304 to a
/// GET or HEAD, from RAM (the fast path) and from disk; a list that
/// does not name its ETag gets the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_none_match_star_matches_any_stored_response() {
    let o = Scripted::start().await;
    let c = Client::new();
    let nodes = both(&o, "", "");
    for (tier, n) in &nodes.nodes {
        let tagged = format!("/{tier}/tagged");
        let bare = format!("/{tier}/bare");
        o.set(
            &tagged,
            Reply::ok("t", &[("cache-control", "max-age=600"), ("etag", "\"v1\"")]),
        );
        o.set(&bare, Reply::ok("b", &[("cache-control", "max-age=600")]));
        for path in [&tagged, &bare] {
            get(&c, n, path, &[]).await;
            stored(&c, n, tier, path).await;
            for star in ["*", " * "] {
                let r = get(&c, n, path, &[("if-none-match", star)]).await;
                assert_eq!(r.status, 304, "{tier} {path} {star:?}");
                assert!(r.body.is_empty(), "{tier} {path}");
            }
            let r = c
                .request(
                    Method::HEAD,
                    &n.url("web", path),
                    &[("if-none-match", "*")],
                    "",
                )
                .await
                .unwrap();
            assert_eq!(r.status, 304, "{tier} {path} HEAD");
            let r = get(&c, n, path, &[("if-none-match", "\"other\", W/\"x\"")]).await;
            assert_eq!(r.status, 200, "{tier} {path}: no match");
        }
        assert_eq!(o.count(&tagged), 1);
        assert_eq!(o.count(&bare), 1);
    }
}
