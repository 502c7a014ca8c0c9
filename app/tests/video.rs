//! Video delivery on real sockets: signed URLs and cookies (every way a
//! token can be wrong, key rotation across a reload, a manifest's token
//! covering its segments, the token out of the cache key and the upstream
//! request, `edge sign`), country rules (451 by the locator's table on
//! 127.0.0.x), and CMCD (out of the key and upstream, in the access log,
//! the metrics and `/cmcd`; garbage ignored).

// Helpers in test files may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edge_proxy::video::auth::UrlSigner;
use edge_testkit::{eventually, h2c, metric_sum, Client, EdgeNode, Reply, Scripted};

const BIN: &str = env!("CARGO_BIN_EXE_edge");
const K1: &str = "first-secret-of-more-than-16-bytes";
const K2: &str = "second-secret-of-more-than-16-bytes";
const ENV: [(&str, &str); 2] = [("EDGE_TEST_K1", K1), ("EDGE_TEST_K2", K2)];

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn auth_config(o: &Scripted, keys: &str) -> String {
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

[cache]
ram_size = "16 MiB"

[[pool]]
name = "origin"
backends = [{{ address = "{o}" }}]

[[route]]
name = "paid"
pool = "origin"
[route.match]
path_prefix = "/paid/"
[route.cache]
enabled = true
[route.auth]
kind = "hmac"
keys = [{keys}]

[[route]]
name = "title"
pool = "origin"
[route.match]
path_prefix = "/title/"
[route.cache]
enabled = true
[route.auth]
kind = "hmac"
secret_env = "EDGE_TEST_K1"
scope = "manifest-dir"
param = "sig"
expires_param = "until"

[[route]]
name = "bound"
pool = "origin"
[route.match]
path_prefix = "/bound/"
[route.auth]
kind = "hmac"
secret_env = "EDGE_TEST_K1"
bind = ["client_ip"]
cookies = false
"#,
        o = o.addr()
    )
}

const BOTH_KEYS: &str =
    r#"{ id = "k2", secret_env = "EDGE_TEST_K2" }, { id = "k1", secret_env = "EDGE_TEST_K1" }"#;
const K2_ONLY: &str = r#"{ id = "k2", secret_env = "EDGE_TEST_K2" }"#;

/// `edge sign` run as an operator would.
fn sign(node: &EdgeNode, url: &str, extra: &[&str]) -> String {
    let mut cmd = Command::new(BIN);
    cmd.arg("sign")
        .arg("-c")
        .arg(node.config_path())
        .arg(url)
        .args(extra);
    for (k, v) in ENV {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "edge sign {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A signer with the node's settings, for tokens `edge sign` will not make
/// (expired ones).
fn signer(keys: &[(&str, &str)]) -> UrlSigner {
    let cfg = edge_config::UrlAuth {
        keys: keys
            .iter()
            .map(|(id, env)| edge_config::SigningKey {
                id: id.to_string(),
                secret_env: env.to_string(),
            })
            .collect(),
        param: "token".into(),
        expires_param: "exp".into(),
        scope: edge_config::AuthScope::Path,
        bind_client_ip: false,
        cookies: true,
    };
    UrlSigner::new(&cfg, |name| {
        ENV.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    })
    .unwrap()
}

fn query_of(url: &str) -> &str {
    url.split_once('?').map_or("", |(_, q)| q)
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_urls_admit_what_they_sign_and_nothing_else() {
    let o = Scripted::start().await;
    let cached = [("cache-control", "max-age=600")];
    for p in [
        "/paid/a.mp4",
        "/paid/a.mp4?quality=hd",
        "/paid/b.mp4",
        "/title/t1/master.m3u8",
        "/title/t1/720p/seg1.ts",
        "/title/t2/master.m3u8",
    ] {
        o.set(p, Reply::ok(&format!("body of {p}"), &cached));
    }
    o.set(
        "/paid/private",
        Reply::ok("private", &[("cache-control", "no-store")]),
    );
    o.set("/bound/x", Reply::ok("bound", &[]));
    let node = EdgeNode::start_with(
        BIN,
        &auth_config(&o, BOTH_KEYS),
        &["--log-format", "json"],
        &ENV,
    );
    node.wait_ready(Duration::from_secs(20));
    let c = Client::new();
    let url = |p: &str| node.url("web", p);

    // No token at all, and a token whose parts are not a token.
    let r = c.get(&url("/paid/a.mp4")).await;
    assert_eq!(
        (r.status, r.text()),
        (403, "forbidden: missing\n".to_string())
    );
    for q in [
        "token=garbage&exp=9999999999",
        "token=k2.11.AAAA&exp=9999999999",
        "token=k2.11.@@@@&exp=soon",
        "exp=9999999999",
    ] {
        let r = c.get(&url(&format!("/paid/a.mp4?{q}"))).await;
        assert_eq!(r.status, 403, "{q}");
        assert!(r.text().starts_with("forbidden: "), "{q}: {}", r.text());
    }
    assert_eq!(
        o.count("/paid/a.mp4"),
        0,
        "nothing unsigned reached the origin"
    );

    // Signed by `edge sign`: served; the origin sees neither token nor expiry.
    let signed = sign(&node, &url("/paid/a.mp4?quality=hd"), &["--ttl", "10m"]);
    assert!(signed.contains("quality=hd&exp="), "{signed}");
    assert!(signed.contains("&token=k2."), "{signed}");
    let r = c.get(&signed).await;
    assert_eq!(
        (r.status, r.text()),
        (200, "body of /paid/a.mp4?quality=hd".to_string())
    );
    let seen = o.requests("/paid/a.mp4?quality=hd");
    assert_eq!(
        seen.len(),
        1,
        "the origin got /paid/a.mp4?quality=hd without the token"
    );
    assert!(!seen[0].head_text().contains("token"));

    // Another token for the same object (other expiry): a hit, one fetch.
    let again = sign(&node, &url("/paid/a.mp4?quality=hd"), &["--ttl", "20m"]);
    assert_ne!(again, signed);
    let r = c.get(&again).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("x-cache").unwrap_or("").starts_with("HIT"),
        "{:?}",
        r.headers
    );
    assert_eq!(o.count("/paid/a.mp4?quality=hd"), 1);

    // Expired, tampered with, or for another path.
    let s = signer(&[("k2", "EDGE_TEST_K2")]);
    let past = now() - 30;
    let token = s.sign("/paid/a.mp4", past, None, None).unwrap();
    let r = c
        .get(&url(&format!("/paid/a.mp4?{}", s.query(past, &token))))
        .await;
    assert_eq!(
        (r.status, r.text()),
        (403, "forbidden: expired\n".to_string())
    );
    let later = query_of(&signed).replace("exp=", "exp=1");
    let r = c.get(&url(&format!("/paid/a.mp4?{later}"))).await;
    assert_eq!(
        (r.status, r.text()),
        (403, "forbidden: invalid\n".to_string())
    );
    let mut flipped = query_of(&signed).to_string();
    let last = flipped.pop().unwrap();
    flipped.push(if last == 'A' { 'B' } else { 'A' });
    let r = c.get(&url(&format!("/paid/a.mp4?{flipped}"))).await;
    assert_eq!(r.status, 403);
    let r = c
        .get(&url(&format!("/paid/b.mp4?{}", query_of(&signed))))
        .await;
    assert_eq!(
        (r.status, r.text()),
        (403, "forbidden: invalid\n".to_string())
    );
    // A path that normalizes elsewhere is checked as what it is.
    let r = c
        .get(&url(&format!("/paid/x/../b.mp4?{}", query_of(&signed))))
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(o.count("/paid/b.mp4"), 0);

    // Signed cookies: the token's cookies stay here, the others go on.
    let cookie = sign(&node, &url("/paid/private"), &["--cookie"]);
    let cookie = cookie.strip_prefix("Cookie: ").unwrap();
    let r = c
        .get_with(
            &url("/paid/private"),
            &[("cookie", &format!("{cookie}; pref=1"))],
        )
        .await;
    assert_eq!((r.status, r.text()), (200, "private".to_string()));
    let head = o.requests("/paid/private")[0]
        .head_text()
        .to_ascii_lowercase();
    assert!(head.contains("cookie: pref=1\r\n"), "{head}");
    assert!(!head.contains("token="), "{head}");

    // Rotation: both keys verify; the second listed is still accepted.
    let by_k1 = sign(&node, &url("/paid/b.mp4"), &["--key", "k1"]);
    assert!(by_k1.contains("token=k1."), "{by_k1}");
    assert_eq!(c.get(&by_k1).await.status, 200);

    // A manifest's token covers its directory: renditions and segments.
    let manifest = sign(&node, &url("/title/t1/master.m3u8"), &[]);
    assert!(
        manifest.contains("until=") && manifest.contains("sig=0."),
        "{manifest}"
    );
    let q = query_of(&manifest).to_string();
    assert_eq!(c.get(&manifest).await.status, 200);
    let seg = c.get(&url(&format!("/title/t1/720p/seg1.ts?{q}"))).await;
    assert_eq!(
        (seg.status, seg.text()),
        (200, "body of /title/t1/720p/seg1.ts".to_string())
    );
    let other = c.get(&url(&format!("/title/t2/master.m3u8?{q}"))).await;
    assert_eq!(other.status, 403);
    // A token is not taken from cookies where the route says not to.
    let bound = sign(&node, &url("/bound/x"), &["--client-ip", "127.0.0.2"]);
    let b = Client::bound_to("127.0.0.2".parse().unwrap());
    assert_eq!(b.get(&bound).await.status, 200);
    let other_client = Client::bound_to("127.0.0.3".parse().unwrap());
    let r = other_client.get(&bound).await;
    assert_eq!(
        (r.status, r.text()),
        (403, "forbidden: invalid\n".to_string())
    );
    let r = other_client
        .get_with(
            &url("/bound/x"),
            &[("cookie", &query_of(&bound).replace('&', "; "))],
        )
        .await;
    assert_eq!(
        (r.status, r.text()),
        (403, "forbidden: missing\n".to_string())
    );

    // Counted by code, and the reason is in the log only.
    let metrics = c.get(&node.admin_url("/metrics")).await.text();
    for code in ["missing", "malformed", "invalid", "expired"] {
        let n = metric_sum(
            &metrics,
            "edge_auth_denied_total",
            &[&format!("code=\"{code}\"")],
        );
        assert!(n >= 1.0, "{code}: {n}");
    }
    node.wait_for_line("\"denied\":\"auth: expired", Duration::from_secs(5));
    node.wait_for_line(
        "\"denied\":\"auth: signature mismatch",
        Duration::from_secs(5),
    );

    // Key k1 removed: its tokens stop working, k2's still work.
    node.write_config(&auth_config(&o, K2_ONLY));
    node.signal(nix::sys::signal::Signal::SIGHUP);
    eventually(Duration::from_secs(10), "k1 tokens refused", || async {
        (c.get(&by_k1).await.status == 403).then_some(())
    })
    .await;
    assert_eq!(c.get(&again).await.status, 200);
    // A config naming a variable that is not set is refused; the node keeps serving.
    node.write_config(&auth_config(
        &o,
        r#"{ id = "k3", secret_env = "EDGE_TEST_UNSET" }"#,
    ));
    node.signal(nix::sys::signal::Signal::SIGHUP);
    node.wait_for_line("EDGE_TEST_UNSET is not set", Duration::from_secs(10));
    assert_eq!(c.get(&again).await.status, 200);
}

fn geo_config() -> String {
    r#"
[server]
shutdown_delay = "0s"

[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:0"

[dns.locator]
cidr = [
  { prefix = "127.0.0.2/32", lat = 52.5, lon = 13.4, country = "DE" },
  { prefix = "127.0.0.3/32", lat = 48.8, lon = 2.3, country = "fr" },
  { prefix = "127.0.0.5/32", lat = 52.3, lon = 4.9 },
]

[[route]]
name = "de-only"
respond = { status = 200, body = "de-only" }
geo = { allow = ["DE", "AT"] }
[route.match]
path_prefix = "/de-only/"

[[route]]
name = "not-fr"
respond = { status = 200, body = "not-fr" }
geo = { deny = ["FR"], body = "not in your country\n" }
[route.match]
path_prefix = "/not-fr/"

[[route]]
name = "de-or-unknown"
respond = { status = 200, body = "de-or-unknown" }
geo = { allow = ["DE"], unknown = "allow" }
[route.match]
path_prefix = "/de-or-unknown/"

[[route]]
name = "strict-deny"
respond = { status = 200, body = "strict-deny" }
geo = { deny = ["FR"], unknown = "deny" }
[route.match]
path_prefix = "/strict-deny/"
"#
    .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn country_rules_answer_451_by_the_locator() {
    let node = EdgeNode::start(BIN, &geo_config());
    node.wait_ready(Duration::from_secs(20));
    let from = |last: u8| Client::bound_to(IpAddr::from([127, 0, 0, last]));
    // .2 is DE, .3 is FR, .4 is in no table, .5 is listed without a country.
    let cases: [(&str, [u16; 4]); 4] = [
        ("/de-only/a", [200, 451, 451, 451]),
        ("/not-fr/a", [200, 451, 200, 200]),
        ("/de-or-unknown/a", [200, 451, 200, 200]),
        ("/strict-deny/a", [200, 451, 451, 451]),
    ];
    for (path, want) in cases {
        for (i, last) in [2u8, 3, 4, 5].into_iter().enumerate() {
            let r = from(last).get(&node.url("web", path)).await;
            assert_eq!(r.status, want[i], "{path} from 127.0.0.{last}");
        }
    }
    let r = from(3).get(&node.url("web", "/not-fr/a")).await;
    assert_eq!(r.text(), "not in your country\n");
    let r = from(4).get(&node.url("web", "/de-only/a")).await;
    assert_eq!(r.text(), "unavailable for legal reasons\n");
    let metrics = Client::new().get(&node.admin_url("/metrics")).await.text();
    assert!(metric_sum(&metrics, "edge_geo_denied_total", &["country=\"FR\""]) >= 4.0);
    assert!(metric_sum(&metrics, "edge_geo_denied_total", &["country=\"-\""]) >= 2.0);
}

fn cmcd_config(o: &Scripted) -> String {
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

[cache]
ram_size = "16 MiB"

[[pool]]
name = "origin"
backends = [{{ address = "{o}" }}]

[[route]]
name = "fwd"
pool = "origin"
cmcd = {{ forward = true }}
[route.match]
path_prefix = "/fwd/"

[[route]]
name = "vod"
pool = "origin"
[route.cache]
enabled = true
"#,
        o = o.addr()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn cmcd_is_logged_counted_and_kept_out_of_keys_and_upstream() {
    let o = Scripted::start().await;
    let cached = [("cache-control", "max-age=600")];
    for p in ["/vod/seg1.m4s", "/vod/seg2.m4s", "/vod/seg3.m4s"] {
        o.set(p, Reply::ok(p, &cached));
    }
    o.set("/fwd/x?a=1&CMCD=br%3D800", Reply::ok("fwd", &[]));
    let node = EdgeNode::start_with(BIN, &cmcd_config(&o), &["--log-format", "json"], &[]);
    node.wait_ready(Duration::from_secs(20));
    let c = Client::new();
    let url = |p: &str| node.url("web", p);

    // CTA-5004's query form (percent-encoded) and its headers.
    let q = "CMCD=bl%3D21300%2Cbr%3D3200%2Cbs%2Ccid%3D%22movie-1%22%2Cmtp%3D25400%2Cot%3Dv%2Csid%3D%22session-a%22";
    let r = c.get(&url(&format!("/vod/seg1.m4s?{q}"))).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        o.count("/vod/seg1.m4s"),
        1,
        "the origin got the path without CMCD"
    );
    let r = c
        .get_with(
            &url("/vod/seg1.m4s?CMCD=br%3D800%2Csid%3D%22session-b%22"),
            &[("cmcd-status", "bs"), ("cmcd-request", "bl=900,mtp=1200")],
        )
        .await;
    assert!(
        r.header("x-cache").unwrap_or("").starts_with("HIT"),
        "other CMCD, same key"
    );
    assert_eq!(o.count("/vod/seg1.m4s"), 1);
    let r = c
        .get_with(
            &url("/vod/seg2.m4s"),
            &[
                ("cmcd-request", "bl=1200,mtp=5000"),
                ("cmcd-object", "br=1500,d=4000,ot=v"),
                ("cmcd-session", r#"sid="session-c",sf=h,st=v"#),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    let head = o.requests("/vod/seg2.m4s")[0]
        .head_text()
        .to_ascii_lowercase();
    assert!(!head.contains("cmcd"), "{head}");

    // Garbage is ignored: served, not counted.
    let metrics = c.get(&node.admin_url("/metrics")).await.text();
    let counted = metric_sum(&metrics, "edge_cmcd_requests_total", &[]);
    assert_eq!(counted, 3.0);
    for junk in ["CMCD=%%%", "CMCD=br%3D,,", "CMCD=sid%3D%22open", "CMCD"] {
        let r = c.get(&url(&format!("/vod/seg3.m4s?{junk}"))).await;
        assert_eq!(r.status, 200, "{junk}");
    }
    let r = c
        .get_with(
            &url("/vod/seg3.m4s"),
            &[
                ("cmcd-request", "=,=,"),
                ("cmcd-session", "sid=\"unterminated"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        o.count("/vod/seg3.m4s"),
        1,
        "junk CMCD is out of the key too"
    );

    // Forwarded where the route says so, with the rest of the query.
    let r = c
        .get_with(
            &url("/fwd/x?a=1&CMCD=br%3D800"),
            &[("cmcd-session", r#"sid="s""#)],
        )
        .await;
    assert_eq!(r.status, 200);
    let fwd = o.requests("/fwd/x?a=1&CMCD=br%3D800");
    assert_eq!(fwd.len(), 1, "forwarded as sent");
    assert!(fwd[0]
        .head_text()
        .to_ascii_lowercase()
        .contains("cmcd-session: sid=\"s\""));

    // Metrics per site, the summary per client prefix, the access log.
    let metrics = c.get(&node.admin_url("/metrics")).await.text();
    let site = "site=\"none\"";
    assert_eq!(
        metric_sum(&metrics, "edge_cmcd_requests_total", &[site]),
        4.0
    );
    assert_eq!(
        metric_sum(&metrics, "edge_cmcd_buffer_starvations_total", &[site]),
        2.0
    );
    assert_eq!(
        metric_sum(&metrics, "edge_cmcd_bitrate_kbps_count", &[site]),
        4.0
    );
    assert_eq!(metric_sum(&metrics, "edge_cmcd_sessions", &[site]), 4.0);
    let summary = c.get(&node.admin_url("/cmcd")).await.json();
    let first = &summary["prefixes"][0];
    assert_eq!(first["prefix"], "127.0.0.0/24");
    assert_eq!(first["requests"], 4);
    assert_eq!(first["starvations"], 2);
    assert_eq!(first["starvation_per_mille"], 500.0);
    node.wait_for_line("\"cmcd_sid\":\"session-a\"", Duration::from_secs(5));
    let line = node
        .output()
        .lines()
        .find(|l| l.contains("\"cmcd_sid\":\"session-a\""))
        .unwrap()
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["cmcd_cid"], "movie-1");
    assert_eq!(v["cmcd_br"], 3200);
    assert_eq!(v["cmcd_bl"], 21300);
    assert_eq!(v["cmcd_bs"], true);
    assert_eq!(v["cmcd_mtp"], 25400);
    assert_eq!(v["cmcd_ot"], "v");
    assert_eq!(v["path"], "/vod/seg1.m4s");
}

/// A signed route whose large objects are cached in slices, on a listener
/// that also speaks h2c.
fn sliced_config(o: &Scripted) -> String {
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
h2c = true

[cache]
ram_size = "16 MiB"
slice_size = "1 MiB"
slice_threshold = "1 MiB"

[[pool]]
name = "origin"
backends = [{{ address = "{o}" }}]

[[route]]
name = "paid"
pool = "origin"
[route.match]
path_prefix = "/paid/"
[route.cache]
enabled = true
[route.auth]
kind = "hmac"
secret_env = "EDGE_TEST_K1"
"#,
        o = o.addr()
    )
}

/// Slices are subrequests: they start from the request as edge left it
/// (token, its cookies and `CMCD` out, path normalized), not from the
/// bytes an HTTP/1 client sent, and an HTTP/2 request gets them at all.
#[tokio::test(flavor = "multi_thread")]
async fn slices_of_a_signed_object_never_carry_the_token() {
    let o = Scripted::start().await;
    let big = "0123456789".repeat(300_000);
    let cached = [("cache-control", "max-age=600")];
    o.set("/paid/big.bin", Reply::ok(&big, &cached).with_ranges());
    o.set("/paid/h2.bin", Reply::ok(&big, &cached).with_ranges());
    let node = EdgeNode::start_with(BIN, &sliced_config(&o), &[], &ENV);
    node.wait_ready(Duration::from_secs(20));
    let c = Client::new();
    let url = |p: &str| node.url("web", p);
    let s = signer(&[("0", "EDGE_TEST_K1")]);
    let signed = |p: &str, exp: u64| {
        let t = s.sign(p, exp, None, None).unwrap();
        url(&format!("{p}?CMCD=bl%3D100&{}", s.query(exp, &t)))
    };
    let exp = now() + 600;

    // HTTP/1 with a range: the slices it needs, fetched without the token.
    let r = c
        .get_with(
            &signed("/paid/big.bin", exp).replace("/paid/big", "/paid/./big"),
            &[("range", "bytes=1500000-2500000")],
        )
        .await;
    assert_eq!(r.status, 206, "{}", r.text());
    assert_eq!(r.body.len(), 1_000_001);
    assert_eq!(&r.body[..], &big.as_bytes()[1_500_000..=2_500_000]);
    // Another token (a later expiry), by cookie: the same slices, a hit.
    let exp2 = exp + 60;
    let t2 = s.sign("/paid/big.bin", exp2, None, None).unwrap();
    let r = c
        .get_with(
            &url("/paid/big.bin"),
            &[
                ("range", "bytes=1500000-2500000"),
                ("cookie", &format!("exp={exp2}; token={t2}; pref=1")),
            ],
        )
        .await;
    assert_eq!(r.status, 206);
    assert!(
        r.header("x-cache").unwrap_or("").starts_with("HIT"),
        "{:?}",
        r.headers
    );

    // HTTP/2: the whole object and a range, from slices.
    let r = h2c(
        node.addr("web"),
        http::Method::GET,
        &signed("/paid/h2.bin", exp),
        &[],
    )
    .await
    .unwrap();
    assert_eq!((r.status, r.body.len()), (200, big.len()));
    let r = h2c(
        node.addr("web"),
        http::Method::GET,
        &signed("/paid/h2.bin", exp2),
        &[("range", "bytes=2000000-2000009")],
    )
    .await
    .unwrap();
    assert_eq!(
        (r.status, r.text()),
        (206, big[2_000_000..2_000_010].to_string())
    );

    let all = o.all();
    assert!(!all.is_empty());
    for (target, rec) in &all {
        let head = rec.head_text().to_ascii_lowercase();
        assert!(
            target == "/paid/big.bin" || target == "/paid/h2.bin",
            "the origin got {target}"
        );
        assert!(!head.contains("token"), "{head}");
        assert!(!head.contains("cmcd"), "{head}");
    }
    // Slices are shared whatever the token: at most three per object.
    assert_eq!(o.count("/paid/big.bin"), 2);
    assert!(o.count("/paid/h2.bin") <= 3);
}
