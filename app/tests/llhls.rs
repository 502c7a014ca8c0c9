//! Low-Latency HLS through the edge, against the synthetic origin's live
//! channel with parts produced in real time (`/ll/`): identical blocking
//! reloads share one origin request, a part read while it is produced is
//! fetched once and streamed to every reader, a blocking reload held past
//! the edge's limit gets the current playlist, preload hints are fetched
//! ahead, and so are the segments a DASH SegmentTemplate numbers.

// Helpers in test files may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use edge_testkit::{eventually, Client, EdgeNode, RunningOrigin};

const BIN: &str = env!("CARGO_BIN_EXE_edge");
const PLAYLIST: &str = "/ll/news/low/index.m3u8";

fn config(o: &RunningOrigin, video: &str) -> String {
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

[cache]
ram_size = "64 MiB"

[cache.video]
{video}

[[pool]]
name = "origin"
backends = [{{ address = "{o}" }}]

[[route]]
name = "live"
pool = "origin"
[route.cache]
enabled = true
"#,
        o = o.addr()
    )
}

/// The part a playlist hints at: (segment, part).
fn hint(playlist: &str) -> (u64, u64) {
    let line = playlist
        .lines()
        .find(|l| l.starts_with("#EXT-X-PRELOAD-HINT"))
        .unwrap_or_else(|| panic!("no preload hint in\n{playlist}"));
    let uri = line.split("URI=\"seg_").nth(1).unwrap();
    let name = uri.split(".ts").next().unwrap();
    let (n, p) = name.split_once('.').unwrap();
    (n.parse().unwrap(), p.parse().unwrap())
}

async fn start(video: &str) -> (RunningOrigin, EdgeNode) {
    let o = edge_testkit::origin("ll").await;
    let node = EdgeNode::start(BIN, &config(&o, video));
    node.wait_ready(Duration::from_secs(20));
    (o, node)
}

#[tokio::test(flavor = "multi_thread")]
async fn identical_blocking_reloads_make_one_origin_request() {
    let (o, node) = start("prefetch = 0").await;
    let c = Client::new();
    let now = c.get(&node.url("web", PLAYLIST)).await;
    assert_eq!(now.status, 200);
    let (n, p) = hint(&now.text());
    let target = format!("{PLAYLIST}?_HLS_msn={n}&_HLS_part={p}");
    let url = node.url("web", &target);
    let clients: Vec<_> = (0..50)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Client::new().get(&url).await })
        })
        .collect();
    let mut bodies = Vec::new();
    for h in clients {
        let r = h.await.unwrap();
        assert_eq!(r.status, 200);
        bodies.push(r.text());
    }
    let part = format!("URI=\"seg_{n}.{p}.ts\"");
    assert!(
        bodies[0].contains(&format!("#EXT-X-PART:DURATION=0.500,{part}")),
        "{}",
        bodies[0]
    );
    assert!(bodies.iter().all(|b| *b == bodies[0]), "one answer for all");
    assert_eq!(
        o.stats().by_path.get(&target).copied(),
        Some(1),
        "{:?}",
        o.stats().by_path
    );
    // The directives are keyed: another part is another request.
    let (n2, p2) = hint(&bodies[0]);
    let next = format!("{PLAYLIST}?_HLS_msn={n2}&_HLS_part={p2}");
    let r = c.get(&node.url("web", &next)).await;
    assert_eq!(r.status, 200);
    assert_eq!(o.stats().by_path.get(&next).copied(), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_part_read_while_produced_is_fetched_once_for_every_reader() {
    let (o, node) = start("prefetch = 0").await;
    let c = Client::new();
    let (n, p) = hint(&c.get(&node.url("web", PLAYLIST)).await.text());
    // The hinted part has not started: every reader waits for it, then
    // gets it as the origin produces it.
    let path = format!("/ll/news/low/seg_{n}.{p}.ts");
    let url = node.url("web", &path);
    let readers: Vec<_> = (0..20)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Client::new().get(&url).await })
        })
        .collect();
    let catalog = o.catalog();
    let channel = &catalog.live[0];
    let want = edge_origin::llhls::expected(channel, &channel.renditions[0], n, Some(p)).unwrap();
    for h in readers {
        let r = h.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), want.len());
        assert!(r.body == want, "identical bytes");
    }
    assert_eq!(
        o.stats().by_path.get(&path).copied(),
        Some(1),
        "{:?}",
        o.stats().by_path
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_held_past_the_limit_gets_the_current_playlist() {
    let (o, node) = start("prefetch = 0\nblocking_hold = \"200ms\"").await;
    let c = Client::new();
    let (n, _) = hint(&c.get(&node.url("web", PLAYLIST)).await.text());
    // The segment after the one in production: at least a part away, up
    // to a whole segment (2 s), far past the edge's hold.
    let target = format!("{PLAYLIST}?_HLS_msn={}", n + 1);
    let r = c.get(&node.url("web", &target)).await;
    assert_eq!(r.status, 200, "the current playlist, not an error");
    let body = r.text();
    assert!(body.contains("#EXT-X-PRELOAD-HINT"), "{body}");
    assert!(!body.contains(&format!("seg_{}.ts", n + 1)), "{body}");
    // The held fetch went on: its answer is cached for the next client,
    // and it was the only request for it the origin saw.
    eventually(Duration::from_secs(10), "the held answer", || async {
        let b = c.get(&node.url("web", &target)).await.text();
        b.contains(&format!("seg_{}.ts\n", n + 1)).then_some(())
    })
    .await;
    assert_eq!(
        o.stats().by_path.get(&target).copied(),
        Some(1),
        "{:?}",
        o.stats().by_path
    );
    // Asked further ahead than the spec allows: the origin's 400 is passed on.
    let far = format!("{PLAYLIST}?_HLS_msn={}", n + 9);
    assert_eq!(c.get(&node.url("web", &far)).await.status, 400);
    // Malformed directives are the edge's to refuse: never fetched or held.
    for bad in [
        "_HLS_msn=abc",
        "_HLS_part=1",
        "_HLS_msn=1&_HLS_msn=2",
        "_HLS_msn=-5",
        "_HLS_skip=ALL",
    ] {
        let target = format!("{PLAYLIST}?{bad}");
        let r = c.get(&node.url("web", &target)).await;
        assert_eq!(r.status, 400, "{bad}");
        assert_eq!(o.stats().by_path.get(&target), None, "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hinted_part_is_fetched_before_anyone_asks() {
    let (o, node) = start("prefetch = 1").await;
    let c = Client::new();
    let (n, p) = hint(&c.get(&node.url("web", PLAYLIST)).await.text());
    let path = format!("/ll/news/low/seg_{n}.{p}.ts");
    eventually(
        Duration::from_secs(10),
        "the hinted part fetched",
        || async { (o.stats().by_path.get(&path).copied() == Some(1)).then_some(()) },
    )
    .await;
    let r = c.get(&node.url("web", &path)).await;
    assert_eq!(r.status, 200);
    let catalog = o.catalog();
    let channel = &catalog.live[0];
    let want = edge_origin::llhls::expected(channel, &channel.renditions[0], n, Some(p)).unwrap();
    assert!(r.body == want);
    assert_eq!(
        o.stats().by_path.get(&path).copied(),
        Some(1),
        "served by the prefetch"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dash_template_segments_are_fetched_ahead() {
    let (o, node) = start("prefetch = 2").await;
    let c = Client::new();
    assert_eq!(
        c.get(&node.url("web", "/vod/bbb/manifest.mpd"))
            .await
            .status,
        200
    );
    assert_eq!(
        c.get(&node.url("web", "/vod/bbb/low/seg_3.ts"))
            .await
            .status,
        200
    );
    let count = |p: &str| o.stats().by_path.get(p).copied().unwrap_or(0);
    eventually(
        Duration::from_secs(10),
        "seg_4 and seg_5 fetched ahead",
        || async {
            (count("/vod/bbb/low/seg_4.ts") == 1 && count("/vod/bbb/low/seg_5.ts") == 1)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        count("/vod/bbb/low/seg_6.ts"),
        0,
        "two ahead, as configured"
    );
    assert_eq!(
        count("/vod/bbb/high/seg_4.ts"),
        0,
        "only the rendition played"
    );
    let r = c.get(&node.url("web", "/vod/bbb/low/seg_4.ts")).await;
    assert!(
        r.header("x-cache").unwrap_or("").starts_with("HIT"),
        "{:?}",
        r.headers
    );
}
