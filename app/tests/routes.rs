//! Routing end to end: every match kind and action, priority, the default
//! route, and a route reload under load.

// Helpers in test files may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use edge_testkit::{eventually, origin, Client, EdgeNode, RunningOrigin};
use http::Method;

const BIN: &str = env!("CARGO_BIN_EXE_edge");

fn config(o: &RunningOrigin, routes: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:0"

[[pool]]
name = "origin"
backends = [{{ address = "{}" }}]

{routes}
"#,
        o.addr()
    )
}

/// Routes that answer with their own name, so a test sees which matched.
const MATCHING: &str = r#"
[[route]]
name = "host-exact"
priority = 90
respond = { status = 200, body = "host-exact" }
[route.match]
host = "exact.example.com"

[[route]]
name = "host-wildcard"
priority = 80
respond = { status = 200, body = "host-wildcard" }
[route.match]
host = "*.wild.example.com"

[[route]]
name = "path-exact"
priority = 70
respond = { status = 200, body = "path-exact" }
[route.match]
path_exact = "/exact"

[[route]]
name = "path-regex"
priority = 60
respond = { status = 200, body = "path-regex" }
[route.match]
path_regex = '^/live/[a-z]+/index\.m3u8$'

[[route]]
name = "method"
priority = 55
respond = { status = 200, body = "method" }
[route.match]
path_prefix = "/m/"
methods = ["DELETE"]

[[route]]
name = "header-equals"
priority = 50
respond = { status = 200, body = "header-equals" }
[route.match]
headers = [{ name = "X-Env", equals = "staging" }]

[[route]]
name = "header-regex"
priority = 49
respond = { status = 200, body = "header-regex" }
[route.match]
headers = [{ name = "User-Agent", regex = "^curl/" }]

[[route]]
name = "header-present"
priority = 48
respond = { status = 200, body = "header-present" }
[route.match]
headers = [{ name = "X-Debug", present = true }]

[[route]]
name = "cookie"
priority = 40
respond = { status = 200, body = "cookie" }
[route.match]
cookies = [{ name = "beta", equals = "1" }]

[[route]]
name = "query"
priority = 30
respond = { status = 200, body = "query" }
[route.match]
query = [{ name = "variant", equals = "b" }]

[[route]]
name = "prefix-low"
priority = 10
respond = { status = 200, body = "prefix-low" }
[route.match]
path_prefix = "/p/"

[[route]]
name = "prefix-high"
priority = 20
respond = { status = 200, body = "prefix-high" }
[route.match]
path_prefix = "/p/special/"

[[route]]
name = "default"
respond = { status = 200, body = "default" }
"#;

#[tokio::test(flavor = "multi_thread")]
async fn each_match_kind_and_priority_order() {
    let o = origin("o").await;
    let node = EdgeNode::start(BIN, &config(&o, MATCHING));
    let c = Client::new();
    let url = |p: &str| node.url("web", p);
    let route = |r: edge_testkit::Response| r.text();
    // (path, request headers, the route expected to answer)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        ("/", vec![("host", "exact.example.com")], "host-exact"),
        ("/", vec![("host", "exact.example.com:8080")], "host-exact"),
        ("/", vec![("host", "a.wild.example.com")], "host-wildcard"),
        ("/", vec![("host", "wild.example.com")], "default"),
        ("/exact", vec![], "path-exact"),
        ("/exact/more", vec![], "default"),
        ("/live/news/index.m3u8", vec![], "path-regex"),
        ("/live/News/index.m3u8", vec![], "default"),
        ("/x", vec![("x-env", "staging")], "header-equals"),
        ("/x", vec![("x-env", "prod")], "default"),
        ("/x", vec![("user-agent", "curl/8.0")], "header-regex"),
        ("/x", vec![("x-debug", "")], "header-present"),
        ("/x", vec![("cookie", "a=2; beta=1")], "cookie"),
        ("/x", vec![("cookie", "beta=0")], "default"),
        ("/x?variant=b", vec![], "query"),
        ("/x?variant=a", vec![], "default"),
        ("/p/anything", vec![], "prefix-low"),
        ("/p/special/thing", vec![], "prefix-high"),
    ];
    for (path, headers, want) in cases {
        let got = route(c.get_with(&url(path), &headers).await);
        assert_eq!(got, want, "{path} {headers:?}");
    }
    let delete = c
        .request(Method::DELETE, &url("/m/x"), &[], "")
        .await
        .unwrap();
    assert_eq!(delete.text(), "method");
    assert_eq!(c.get(&url("/m/x")).await.text(), "default");
    assert_eq!(
        o.stats().requests,
        0,
        "direct responses never reach the origin"
    );
}

const ACTIONS: &str = r#"
[[route]]
name = "api"
priority = 10
pool = "origin"
strip_prefix = "/api"
[route.match]
path_prefix = "/api/"
[route.request_headers]
add = { "X-Added" = "yes" }
set = { "X-Env" = "edge" }
remove = ["X-Secret"]
[route.response_headers]
set = { "X-Served-By" = "edge" }
remove = ["X-Origin-Name"]

[[route]]
name = "v2"
priority = 9
pool = "origin"
rewrite_path = "/echo/v2"
[route.match]
path_prefix = "/old/"

[[route]]
name = "moved"
priority = 8
redirect = { to = "https://new.example.com{path_and_query}", status = 308 }
[route.match]
path_prefix = "/moved/"

[[route]]
name = "temp"
priority = 7
redirect = { to = "/elsewhere", status = 307 }
[route.match]
path_prefix = "/temp/"

[[route]]
name = "https"
priority = 6
redirect = { scheme = "https" }
[route.match]
host = "secure.example.com"

[[route]]
name = "found"
priority = 5
redirect = { to = "/found", status = 302 }
[route.match]
path_exact = "/f"

[[route]]
name = "forbidden"
priority = 4
respond = { status = 403, body = "no entry\n", content_type = "text/plain" }
[route.match]
path_prefix = "/admin"
[route.response_headers]
add = { "X-Reason" = "policy" }
"#;

#[tokio::test(flavor = "multi_thread")]
async fn each_action() {
    let o = origin("o").await;
    let node = EdgeNode::start(BIN, &config(&o, ACTIONS));
    let c = Client::new();
    let url = |p: &str| node.url("web", p);

    let r = c
        .get_with(
            &url("/api/echo/users?id=7"),
            &[("x-env", "prod"), ("x-secret", "s3cret")],
        )
        .await;
    assert_eq!(r.status, 200);
    let echo = r.json();
    assert_eq!(echo["path"], "/echo/users", "prefix stripped");
    assert_eq!(echo["query"], "id=7", "query kept");
    assert_eq!(echo["headers"]["x-added"], "yes");
    assert_eq!(echo["headers"]["x-env"], "edge");
    assert!(echo["headers"].get("x-secret").is_none(), "{echo}");
    assert_eq!(echo["headers"]["x-forwarded-proto"], "http");
    assert_eq!(echo["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(r.header("x-served-by"), Some("edge"));
    assert!(r.header("x-origin-name").is_none());

    let rewritten = c.get(&url("/old/anything?q=1")).await.json();
    assert_eq!(rewritten["path"], "/echo/v2");
    assert_eq!(rewritten["query"], "q=1");

    let moved = c.get(&url("/moved/a?b=c")).await;
    assert_eq!(moved.status, 308);
    assert_eq!(
        moved.header("location"),
        Some("https://new.example.com/moved/a?b=c")
    );
    let temp = c.get(&url("/temp/x")).await;
    assert_eq!(
        (temp.status, temp.header("location")),
        (307, Some("/elsewhere"))
    );
    let found = c.get(&url("/f")).await;
    assert_eq!(found.status, 302);
    let https = c
        .get_with(&url("/page?x=1"), &[("host", "secure.example.com")])
        .await;
    assert_eq!(https.status, 301);
    assert_eq!(
        https.header("location"),
        Some("https://secure.example.com/page?x=1")
    );

    let forbidden = c.get(&url("/admin/panel")).await;
    assert_eq!(forbidden.status, 403);
    assert_eq!(forbidden.text(), "no entry\n");
    assert_eq!(forbidden.header("x-reason"), Some("policy"));
    let head = c
        .request(Method::HEAD, &url("/admin/panel"), &[], "")
        .await
        .unwrap();
    assert_eq!(head.status, 403);
    assert!(head.body.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_swaps_routes_with_no_failed_request_in_flight() {
    let o = origin("o").await;
    let before = "[[route]]\nname = \"all\"\npool = \"origin\"\n";
    let after = "[[route]]\nname = \"teapot\"\npriority = 5\nrespond = { status = 418, body = \"short and stout\" }\n[route.match]\npath_prefix = \"/tea\"\n\n[[route]]\nname = \"all\"\npool = \"origin\"\n";
    let node = EdgeNode::start(BIN, &config(&o, before));
    let c = Client::new();
    assert_eq!(
        c.get(&node.url("web", "/tea")).await.status,
        404,
        "the origin has no /tea"
    );

    let url = node.url("web", "/obj/z?size=50000");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (stop, url) = (stop.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let c = Client::new();
            let mut failed = Vec::new();
            let mut ok = 0;
            for _ in 0..20_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                match c.request(Method::GET, &url, &[], "").await {
                    Ok(r) if r.status == 200 && r.body.len() == 50000 => ok += 1,
                    Ok(r) => failed.push(format!("{} {}", r.status, r.body.len())),
                    Err(e) => failed.push(e),
                }
            }
            (ok, failed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    node.write_config(&config(&o, after));
    node.signal(nix::sys::signal::Signal::SIGHUP);
    eventually(Duration::from_secs(10), "the new route", || async {
        (c.get(&node.url("web", "/tea")).await.status == 418).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total_ok = 0;
    for t in tasks {
        let (ok, failed) = t.await.unwrap();
        assert!(failed.is_empty(), "{failed:?}");
        total_ok += ok;
    }
    assert!(total_ok > 20);
}
