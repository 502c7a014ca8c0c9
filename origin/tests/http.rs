//! The origin over real sockets: ranges, conditional requests, the live
//! window, fault injection and counters.

// Helpers in test files may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edge_origin::{Catalog, Class, Faults, ManualClock, OriginConfig};
use edge_testkit::{origin, origin_with, Client};
use http::Method;

const SEG: &str = "/vod/bbb/low/seg_7.ts";

#[tokio::test]
async fn segments_are_deterministic_and_the_same_on_every_origin() {
    let (a, b) = (origin("a").await, origin("b").await);
    let c = Client::new();
    let from_a = c.get(&a.url(SEG)).await;
    let from_b = c.get(&b.url(SEG)).await;
    assert_eq!(from_a.status, 200);
    assert_eq!(from_a.body, from_b.body);
    assert_eq!(from_a.body, a.expected_body(SEG).unwrap());
    assert_eq!(from_a.header("etag"), from_b.header("etag"));
    assert_eq!(from_a.header("content-type"), Some("video/mp2t"));
    assert_eq!(from_a.header("x-origin-name"), Some("a"));
    assert_eq!(
        from_a.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(from_a.body[0], 0x47, "starts with a TS sync byte");
    // 400 kbit/s × 4 s = 200,000 bytes, rounded up to whole 188-byte packets.
    assert_eq!(from_a.body.len(), 200_032);
    let other = c.get(&a.url("/vod/bbb/low/seg_8.ts")).await;
    assert_ne!(other.body, from_a.body);
}

#[tokio::test]
async fn ranges_first_middle_suffix_and_beyond_the_end() {
    let o = origin("o").await;
    let c = Client::new();
    let whole = o.expected_body(SEG).unwrap();
    let len = whole.len();

    let first = c.get_with(&o.url(SEG), &[("range", "bytes=0-99")]).await;
    assert_eq!(first.status, 206);
    assert_eq!(first.body, whole.slice(0..100));
    assert_eq!(
        first.header("content-range"),
        Some(format!("bytes 0-99/{len}").as_str())
    );

    let middle = c
        .get_with(&o.url(SEG), &[("range", "bytes=1000-99999")])
        .await;
    assert_eq!(middle.status, 206);
    assert_eq!(middle.body, whole.slice(1000..100_000));

    let suffix = c.get_with(&o.url(SEG), &[("range", "bytes=-500")]).await;
    assert_eq!(suffix.status, 206);
    assert_eq!(suffix.body, whole.slice(len - 500..));

    let open = c
        .get_with(&o.url(SEG), &[("range", &format!("bytes={}-", len - 10))])
        .await;
    assert_eq!(open.body, whole.slice(len - 10..));

    let beyond = c
        .get_with(&o.url(SEG), &[("range", &format!("bytes={len}-"))])
        .await;
    assert_eq!(beyond.status, 416);
    assert_eq!(
        beyond.header("content-range"),
        Some(format!("bytes */{len}").as_str())
    );

    let garbage = c.get_with(&o.url(SEG), &[("range", "bytes=zebra")]).await;
    assert_eq!(garbage.status, 200, "an invalid Range is ignored");
    assert_eq!(garbage.body.len(), len);
}

#[tokio::test]
async fn multiple_ranges_come_as_multipart_byteranges() {
    let o = origin("o").await;
    let whole = o.expected_body(SEG).unwrap();
    let r = Client::new()
        .get_with(&o.url(SEG), &[("range", "bytes=0-9,100-109")])
        .await;
    assert_eq!(r.status, 206);
    let ctype = r.header("content-type").unwrap().to_string();
    let boundary = ctype
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap();
    assert_eq!(
        r.header("content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap(),
        r.body.len()
    );
    let text = r.body.to_vec();
    let marker = format!("--{boundary}\r\n");
    let count = text
        .windows(marker.len())
        .filter(|w| *w == marker.as_bytes())
        .count();
    assert_eq!(count, 2);
    let find = |needle: &[u8]| {
        text.windows(needle.len())
            .position(|w| w == needle)
            .unwrap()
    };
    let p1 = find(b"Content-Range: bytes 0-9/");
    let data1 = p1
        + text[p1..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap()
        + 4;
    assert_eq!(&text[data1..data1 + 10], &whole[..10]);
    let p2 = find(b"Content-Range: bytes 100-109/");
    let data2 = p2
        + text[p2..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap()
        + 4;
    assert_eq!(&text[data2..data2 + 10], &whole[100..110]);
    assert!(text.ends_with(format!("--{boundary}--\r\n").as_bytes()));
}

#[tokio::test]
async fn conditional_requests_get_304() {
    let o = origin("o").await;
    let c = Client::new();
    let first = c.get(&o.url(SEG)).await;
    let etag = first.header("etag").unwrap().to_string();
    let lm = first.header("last-modified").unwrap().to_string();

    let inm = c.get_with(&o.url(SEG), &[("if-none-match", &etag)]).await;
    assert_eq!(inm.status, 304);
    assert!(inm.body.is_empty());
    assert_eq!(inm.header("etag"), Some(etag.as_str()));
    let weak = c
        .get_with(
            &o.url(SEG),
            &[("if-none-match", &format!("\"x\", W/{etag}"))],
        )
        .await;
    assert_eq!(weak.status, 304, "weak comparison for If-None-Match");
    let other = c
        .get_with(&o.url(SEG), &[("if-none-match", "\"different\"")])
        .await;
    assert_eq!(other.status, 200);

    let ims = c.get_with(&o.url(SEG), &[("if-modified-since", &lm)]).await;
    assert_eq!(ims.status, 304);
    let old = c
        .get_with(
            &o.url(SEG),
            &[("if-modified-since", "Thu, 01 Jan 2015 00:00:00 GMT")],
        )
        .await;
    assert_eq!(old.status, 200);
    // If-None-Match wins over If-Modified-Since.
    let both = c
        .get_with(
            &o.url(SEG),
            &[("if-none-match", "\"nope\""), ("if-modified-since", &lm)],
        )
        .await;
    assert_eq!(both.status, 200);

    // If-Range: a matching ETag honours the Range, a stale one sends it all.
    let ok = c
        .get_with(&o.url(SEG), &[("range", "bytes=0-9"), ("if-range", &etag)])
        .await;
    assert_eq!(ok.status, 206);
    let stale = c
        .get_with(
            &o.url(SEG),
            &[("range", "bytes=0-9"), ("if-range", "\"stale\"")],
        )
        .await;
    assert_eq!(stale.status, 200);
}

#[tokio::test]
async fn head_and_methods() {
    let o = origin("o").await;
    let c = Client::new();
    let head = c.request(Method::HEAD, &o.url(SEG), &[], "").await.unwrap();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), Some("200032"));
    let post = c
        .request(Method::POST, &o.url(SEG), &[], "x")
        .await
        .unwrap();
    assert_eq!(post.status, 405);
    assert_eq!(c.get(&o.url("/vod/nope/master.m3u8")).await.status, 404);
}

#[tokio::test]
async fn playlists_and_manifests_describe_the_catalog() {
    let o = origin("o").await;
    let c = Client::new();
    let master = c.get(&o.url("/vod/bbb/master.m3u8")).await;
    assert_eq!(
        master.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    let text = master.text();
    assert!(text.starts_with("#EXTM3U"));
    assert_eq!(text.matches("#EXT-X-STREAM-INF").count(), 3);
    let media = c.get(&o.url("/vod/bbb/high/index.m3u8")).await.text();
    assert_eq!(media.matches("#EXTINF:4.000,").count(), 150);
    assert!(media.trim_end().ends_with("#EXT-X-ENDLIST"));
    let mpd = c.get(&o.url("/vod/bbb/manifest.mpd")).await;
    assert_eq!(mpd.header("content-type"), Some("application/dash+xml"));
    assert!(mpd
        .text()
        .contains("mediaPresentationDuration=\"PT600.000S\""));
    // Every segment a playlist names exists.
    for line in media.lines().filter(|l| l.ends_with(".ts")).take(3) {
        assert_eq!(
            c.get(&o.url(&format!("/vod/bbb/high/{line}"))).await.status,
            200
        );
    }
}

#[tokio::test]
async fn live_window_advances_with_the_clock() {
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    let o = origin_with(OriginConfig {
        name: "live".into(),
        clock: std::sync::Arc::new(clock.clone()),
        ..OriginConfig::default()
    })
    .await;
    let c = Client::new();
    let playlist = |text: String| -> (u64, Vec<String>) {
        let seq = text
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
            .unwrap()
            .parse()
            .unwrap();
        (
            seq,
            text.lines()
                .filter(|l| l.ends_with(".ts"))
                .map(str::to_string)
                .collect(),
        )
    };
    let url = o.url("/live/news/mid/index.m3u8");
    let first = c.get(&url).await;
    assert_eq!(
        first.header("cache-control"),
        Some("public, max-age=1"),
        "half of a 2 s target duration"
    );
    let (seq0, segs0) = playlist(first.text());
    assert_eq!(segs0.len(), 6);
    assert_eq!(segs0[0], format!("seg_{seq0}.ts"));

    clock.advance(Duration::from_secs(6));
    let (seq1, segs1) = playlist(c.get(&url).await.text());
    assert_eq!(seq1, seq0 + 3, "three 2 s segments later");
    assert_eq!(segs1.last().unwrap(), &format!("seg_{}.ts", seq1 + 5));

    let newest = o.url(&format!("/live/news/mid/{}", segs1.last().unwrap()));
    assert_eq!(c.get(&newest).await.status, 200);
    let future = o.url(&format!("/live/news/mid/seg_{}.ts", seq1 + 6));
    assert_eq!(c.get(&future).await.status, 404);
    clock.advance(Duration::from_secs(2));
    assert_eq!(
        c.get(&future).await.status,
        200,
        "published once its time has come"
    );
}

#[tokio::test]
async fn fault_latency_delays_the_answer() {
    let o = origin("o").await;
    let c = Client::new();
    let start = Instant::now();
    let r = c
        .get_with(&o.url(SEG), &[("x-origin-fault", "latency=300ms")])
        .await;
    assert_eq!(r.status, 200);
    assert!(start.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn fault_error_rate_answers_with_the_status() {
    let o = origin("o").await;
    let c = Client::new();
    let all = c.get(&o.url(&format!("{SEG}?fault=error%3D502"))).await;
    assert_eq!(all.status, 502);
    o.set_faults(Faults::parse("error=503@0.5").unwrap());
    let mut errors = 0;
    for _ in 0..200 {
        match c.get(&o.url(SEG)).await.status {
            503 => errors += 1,
            200 => {}
            other => panic!("unexpected {other}"),
        }
    }
    // Binomial(200, 0.5): outside 50..150 with probability below 1e-12.
    assert!((50..150).contains(&errors), "{errors} errors of 200");
    o.set_faults(Faults::default());
    assert_eq!(c.get(&o.url(SEG)).await.status, 200);
}

#[tokio::test]
async fn fault_abort_cuts_the_body() {
    let o = origin("o").await;
    let r = Client::new()
        .request(
            Method::GET,
            &o.url(SEG),
            &[("x-origin-fault", "abort=1000")],
            "",
        )
        .await;
    let err = r.expect_err("a body cut at 1000 of 200032 bytes is an error");
    assert!(err.contains("body"), "{err}");
    assert_eq!(o.stats().class(Class::Segment).bytes, 1000);
}

#[tokio::test]
async fn fault_drip_sends_slowly_but_completely() {
    let o = origin("o").await;
    let start = Instant::now();
    let r = Client::new()
        .get_with(
            &o.url("/obj/d.bin?size=4000"),
            &[("x-origin-fault", "drip=1000/100ms")],
        )
        .await;
    assert_eq!(r.body, o.expected_body("/obj/d.bin?size=4000").unwrap());
    // Four chunks, three waits between them.
    assert!(start.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn bad_fault_syntax_is_a_400_not_a_crash() {
    let o = origin("o").await;
    let r = Client::new()
        .get_with(&o.url(SEG), &[("x-origin-fault", "explode=1")])
        .await;
    assert_eq!(r.status, 400);
    assert!(r.text().contains("unknown fault"));
}

#[tokio::test]
async fn global_faults_and_health_through_the_control_api() {
    let o = origin("o").await;
    let c = Client::new();
    let set = c
        .request(Method::POST, &o.url("/_origin/faults"), &[], "error=500")
        .await
        .unwrap();
    assert_eq!(set.status, 200);
    assert_eq!(c.get(&o.url(SEG)).await.status, 500);
    assert_eq!(
        c.get(&o.url("/_origin/health")).await.status,
        200,
        "control is exempt"
    );
    c.request(Method::DELETE, &o.url("/_origin/faults"), &[], "")
        .await
        .unwrap();
    assert_eq!(c.get(&o.url(SEG)).await.status, 200);
    c.request(Method::POST, &o.url("/_origin/health?status=503"), &[], "")
        .await
        .unwrap();
    assert_eq!(c.get(&o.url("/_origin/health")).await.status, 503);
}

#[tokio::test]
async fn stats_count_requests_and_bytes_by_class() {
    let o = origin("o").await;
    let c = Client::new();
    c.get(&o.url("/vod/bbb/master.m3u8")).await;
    c.get(&o.url("/vod/bbb/low/index.m3u8")).await;
    c.get(&o.url(SEG)).await;
    c.get(&o.url(SEG)).await;
    c.get(&o.url("/_origin/health")).await;
    let s = c.get(&o.url("/_origin/stats")).await.json();
    assert_eq!(s["requests"], 4, "control requests are not counted: {s}");
    assert_eq!(s["by_class"]["segment"]["requests"], 2);
    assert_eq!(s["by_class"]["segment"]["bytes"], 2 * 200_032);
    assert_eq!(s["by_class"]["master_playlist"]["requests"], 1);
    assert_eq!(s["by_path"][SEG], 2);
    assert_eq!(s["by_status"]["200"], 4);
    c.request(Method::POST, &o.url("/_origin/stats/reset"), &[], "")
        .await
        .unwrap();
    assert_eq!(o.stats().requests, 0);
}

#[tokio::test]
async fn objects_echo_and_load_reports() {
    let o = origin("o").await;
    let c = Client::new();
    let r = c
        .get(&o.url("/obj/x.bin?size=5000&cc=private&surrogate=a%20b&set_cookie=1"))
        .await;
    assert_eq!(r.body.len(), 5000);
    assert_eq!(r.header("cache-control"), Some("private"));
    assert_eq!(r.header("surrogate-key"), Some("a b"));
    assert!(r.header("set-cookie").is_some());
    let echo = c
        .get_with(&o.url("/echo/a?b=1"), &[("x-test", "yes")])
        .await
        .json();
    assert_eq!(echo["path"], "/echo/a");
    assert_eq!(echo["headers"]["x-test"], "yes");
    o.set_load(Some(80));
    assert_eq!(
        c.get(&o.url(SEG)).await.header("x-backend-load"),
        Some("80")
    );
    assert!(c
        .get(&o.url("/_origin/health"))
        .await
        .text()
        .contains("load=80"));
}

#[test]
fn expected_bodies_come_from_the_catalog_alone() {
    let c = Catalog::default();
    let now = SystemTime::now();
    let a = c.resolve(SEG, "", now).unwrap().content.to_bytes();
    let b = c.resolve(SEG, "", now).unwrap().content.to_bytes();
    assert_eq!(a, b);
}
