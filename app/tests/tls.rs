//! TLS: certificates by SNI, ALPN h2, reload of certificates, TLS to backends.

// Helpers in test files may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use edge_testkit::tls::{connect, get, TestCa, TestCert};
use edge_testkit::{eventually, logged_bytes, origin, Client, EdgeNode, RunningOrigin, Stall};

const BIN: &str = env!("CARGO_BIN_EXE_edge");

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// An https listener with certificates for a.example.test (default) and
/// b.example.test, in front of `o`.
fn tls_config(dir: &Path, o: &RunningOrigin, a: &TestCert, b: &TestCert) -> String {
    let (ac, ak) = (
        write(dir, "a.pem", &a.cert_pem),
        write(dir, "a.key", &a.key_pem),
    );
    let (bc, bk) = (
        write(dir, "b.pem", &b.cert_pem),
        write(dir, "b.key", &b.key_pem),
    );
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "tls"
kind = "https"
address = "127.0.0.1:0"
http2 = true
[[listener.certificate]]
server_names = ["a.example.test"]
cert = "{ac}"
key = "{ak}"
default = true
[[listener.certificate]]
server_names = ["b.example.test", "*.b.example.test"]
cert = "{bc}"
key = "{bk}"

[[listener]]
name = "plain"
kind = "http"
address = "127.0.0.1:0"

[[route]]
name = "https-only"
priority = 10
redirect = {{ scheme = "https" }}
[route.match]
listeners = ["plain"]
host = "a.example.test"

[[route]]
name = "all"
pool = "origin"

[[pool]]
name = "origin"
backends = [{{ address = "{}" }}]
"#,
        o.addr()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn each_sni_name_gets_its_certificate_and_h2_by_alpn() {
    let o = origin("o").await;
    let ca = TestCa::new("edge test CA");
    let (a, b) = (
        ca.issue(&["a.example.test"]),
        ca.issue(&["b.example.test", "*.b.example.test"]),
    );
    let dir = tempfile::tempdir().unwrap();
    let node = EdgeNode::start(BIN, &tls_config(dir.path(), &o, &a, &b));
    let addr = node.addr("tls");

    let ra = get(
        addr,
        "a.example.test",
        &ca.pem(),
        &[b"h2", b"http/1.1"],
        "/vod/bbb/master.m3u8",
    )
    .await
    .unwrap();
    assert_eq!(ra.peer_cert, a.der);
    assert_eq!(ra.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(ra.version, http::Version::HTTP_2);
    assert_eq!(ra.status, 200);
    assert_eq!(ra.body, o.expected_body("/vod/bbb/master.m3u8").unwrap());

    let rb = get(
        addr,
        "b.example.test",
        &ca.pem(),
        &[b"http/1.1"],
        "/obj/x?size=10",
    )
    .await
    .unwrap();
    assert_eq!(rb.peer_cert, b.der);
    assert_eq!(rb.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(rb.version, http::Version::HTTP_11);
    let wild = get(addr, "v.b.example.test", &ca.pem(), &[], "/obj/x?size=10")
        .await
        .unwrap();
    assert_eq!(wild.peer_cert, b.der, "one label under the wildcard");

    // An unknown name gets the default certificate, which then fails verification.
    let unknown = get(addr, "c.example.test", &ca.pem(), &[], "/").await;
    assert!(unknown.unwrap_err().contains("handshake"));

    // HTTP to HTTPS as a route action on the plain listener.
    let r = Client::new()
        .get_with(&node.url("plain", "/x?y=1"), &[("host", "a.example.test")])
        .await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("https://a.example.test/x?y=1"));
}

/// A small HTTP/1 response over TLS is one record: its head and body are
/// sealed together (pingora writes them in two calls; edge's write buffer
/// above TLS joins them), on pass-through, a miss and a RAM hit alike.
#[tokio::test(flavor = "multi_thread")]
async fn a_small_https_response_is_one_tls_record() {
    let o = origin("o").await;
    let ca = TestCa::new("edge test CA");
    let (a, b) = (
        ca.issue(&["a.example.test"]),
        ca.issue(&["b.example.test", "*.b.example.test"]),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = tls_config(dir.path(), &o, &a, &b).replace(
        "[[route]]\nname = \"all\"",
        "[[route]]\nname = \"cached\"\npool = \"origin\"\n[route.match]\npath_prefix = \"/obj/cached/\"\n[route.cache]\n\n[[route]]\nname = \"all\"",
    ) + "\n[cache]\nram_size = \"16 MiB\"\n";
    let node = EdgeNode::start(BIN, &config);
    let addr = node.addr("tls");
    let cached = "/obj/cached/x?size=900&cc=max-age%3D600";
    eventually(Duration::from_secs(10), "the object in RAM", || async {
        let r = get(addr, "a.example.test", &ca.pem(), &[b"http/1.1"], cached)
            .await
            .unwrap();
        r.headers
            .get("x-cache")
            .is_some_and(|v| v.as_bytes().starts_with(b"HIT"))
            .then_some(())
    })
    .await;
    let paths = [
        "/obj/x?size=10",
        "/obj/x?size=1",
        "/obj/x?size=500",
        "/obj/x?size=1024&cc=no-store",
        "/obj/cached/miss?size=700&cc=max-age%3D600",
        cached,
        cached,
    ];
    let got = edge_testkit::tls::records_per_response(addr, "a.example.test", &ca.pem(), &paths)
        .await
        .unwrap();
    // The first response may share its reads with the session tickets.
    for (seen, path) in got.iter().zip(&paths).skip(1) {
        assert_eq!(seen.status, 200, "{path}");
        assert!(seen.body_len > 0, "{path}");
        assert_eq!(seen.records, 1, "{path}: {got:?}");
    }
    // The cached path: a miss, then RAM hits.
    let cache: Vec<Option<&str>> = got[4..].iter().map(|s| s.x_cache.as_deref()).collect();
    assert!(cache[0].is_some_and(|c| c.starts_with("MISS")), "{got:?}");
    assert!(
        cache[1..]
            .iter()
            .all(|c| c.is_some_and(|c| c.starts_with("HIT"))),
        "{got:?}"
    );
}

/// The send timeout over TLS, HTTP/1.1 and HTTP/2 (ALPN `h2`, whose flag
/// is set on the transport below TLS): a client that stops reading its
/// socket is cut off after `send_timeout` and logged as such, with the
/// status sent and 0 < bytes < body, on a pass-through and a RAM hit; a
/// client that reads everything while the origin pauses longer than the
/// timeout between pieces of the body is served whole (the timer runs only
/// while a write waits on the client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_that_stops_reading_is_cut_off_after_send_timeout() {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::io::AsyncWriteExt;

    const SNI: &str = "a.example.test";
    const SIZE: usize = 20 << 20;
    let o = origin("o").await;
    let ca = TestCa::new("edge test CA");
    let (a, b) = (
        ca.issue(&["a.example.test"]),
        ca.issue(&["b.example.test", "*.b.example.test"]),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = tls_config(dir.path(), &o, &a, &b)
        .replace(
            "http2 = true\n",
            "http2 = true\n[listener.limits]\nsend_timeout = \"1s\"\n",
        )
        .replace(
            "[[route]]\nname = \"all\"",
            "[[route]]\nname = \"cached\"\npool = \"origin\"\n[route.match]\npath_prefix = \"/obj/cached/\"\n[route.cache]\nslice = false\n\n[[route]]\nname = \"all\"",
        )
        + "\n[cache]\nram_size = \"128 MiB\"\n";
    let node = EdgeNode::start(BIN, &config);
    let addr = node.addr("tls");
    let cached = format!("/obj/cached/big?size={SIZE}&cc=max-age%3D600");
    eventually(Duration::from_secs(20), "the object in RAM", || async {
        let r = get(addr, SNI, &ca.pem(), &[b"http/1.1"], &cached)
            .await
            .unwrap();
        assert_eq!(r.body.len(), SIZE);
        r.headers
            .get("x-cache")
            .is_some_and(|v| v.as_bytes().starts_with(b"HIT"))
            .then_some(())
    })
    .await;
    let pass = format!("/obj/pass?size={SIZE}&cc=no-store");

    // HTTP/1.1: the request written, then nothing read.
    for path in [&pass, &cached] {
        let logged = path.split('?').next().unwrap();
        let seen = node.access_lines(logged).len();
        let stall = Stall::connect(addr, 4096).await.unwrap();
        let stop = stall.stopper();
        let mut tls = connect(stall, SNI, &ca.pem(), &[b"http/1.1"])
            .await
            .unwrap();
        tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: {SNI}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        tls.flush().await.unwrap();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let line = node.access_line(logged, seen, "(send_timeout)").await;
        assert!(line.contains(" status=200 "), "{path}: {line}");
        let bytes = logged_bytes(&line);
        assert!(bytes > 0 && bytes < SIZE, "{path}: bytes={bytes}: {line}");
        // Meanwhile others are served.
        let r = get(addr, SNI, &ca.pem(), &[b"http/1.1"], "/obj/a?size=10")
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }

    // HTTP/2: every window the stream wants, then the socket not read.
    for path in [&pass, &cached] {
        let logged = path.split('?').next().unwrap();
        let seen = node.access_lines(logged).len();
        let stall = Stall::connect(addr, 4096).await.unwrap();
        let stop = stall.stopper();
        let tls = connect(stall, SNI, &ca.pem(), &[b"h2"]).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(1 << 30)
            .initial_connection_window_size(1 << 30)
            .handshake::<_, Empty<hyper::body::Bytes>>(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = http::Request::builder()
            .uri(format!("https://{SNI}{path}"))
            .body(Empty::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let line = node.access_line(logged, seen, "(send_timeout)").await;
        assert!(line.contains(" status=200 "), "{path}: {line}");
        let bytes = logged_bytes(&line);
        assert!(bytes > 0 && bytes < SIZE, "{path}: bytes={bytes}: {line}");
        drop(resp);
    }

    // A client that reads everything while the origin pauses 1.2 s (more
    // than send_timeout) between 16 KiB pieces: served whole, on both.
    for (alpn, name) in [(&b"http/1.1"[..], "slow1"), (&b"h2"[..], "slow2")] {
        let path = format!("/obj/{name}?size=49152&cc=no-store&fault=drip%3D16384%2F1200ms");
        let r = get(addr, SNI, &ca.pem(), &[alpn], &path).await.unwrap();
        assert_eq!((r.status, r.body.len()), (200, 49152), "{name}");
        let line = node
            .access_line(&format!("/obj/{name}"), 0, " status=200 ")
            .await;
        assert!(!line.contains("send_timeout"), "{line}");
        assert_eq!(logged_bytes(&line), 49152, "{line}");
    }
    assert!(
        !node.output().contains("request failed inside edge"),
        "{}",
        node.output()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_change_with_a_reload() {
    let o = origin("o").await;
    let ca = TestCa::new("edge test CA");
    let (a, b) = (ca.issue(&["a.example.test"]), ca.issue(&["b.example.test"]));
    let dir = tempfile::tempdir().unwrap();
    let node = EdgeNode::start(BIN, &tls_config(dir.path(), &o, &a, &b));
    let addr = node.addr("tls");
    let first = get(addr, "a.example.test", &ca.pem(), &[], "/obj/x")
        .await
        .unwrap();
    assert_eq!(first.peer_cert, a.der);
    // Each certificate's expiry is a metric, as its notAfter says.
    let metrics = Client::new().get(&node.admin_url("/metrics")).await.text();
    for (file, cert) in [("a.pem", &a), ("b.pem", &b)] {
        let want = edge_proxy::listen::tls::not_after(cert.cert_pem.as_bytes()).unwrap();
        let path = dir.path().join(file).display().to_string();
        let got = edge_testkit::metric_sum(
            &metrics,
            "edge_tls_certificate_expiry_timestamp_seconds",
            &["listener=\"tls\"", &format!("certificate=\"{path}\"")],
        );
        assert_eq!(got, want as f64, "{file}");
        assert!(want > 1_700_000_000);
    }

    let renewed = ca.issue(&["a.example.test"]);
    write(dir.path(), "a.pem", &renewed.cert_pem);
    write(dir.path(), "a.key", &renewed.key_pem);
    node.signal(nix::sys::signal::Signal::SIGHUP);
    eventually(
        Duration::from_secs(10),
        "the renewed certificate",
        || async {
            let r = get(addr, "a.example.test", &ca.pem(), &[], "/obj/x")
                .await
                .ok()?;
            (r.peer_cert == renewed.der).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_that_does_not_match_its_key_is_refused_at_start() {
    let o = origin("o").await;
    let ca = TestCa::new("edge test CA");
    let (a, b) = (ca.issue(&["a.example.test"]), ca.issue(&["b.example.test"]));
    let dir = tempfile::tempdir().unwrap();
    let config = tls_config(dir.path(), &o, &a, &b);
    // a.pem with b's key.
    write(dir.path(), "a.key", &b.key_pem);
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listener tls: certificate") && err.contains("does not match"),
        "{err}"
    );

    // A missing certificate file is a config error with its location.
    let missing = tls_config(dir.path(), &o, &a, &b).replace(
        &dir.path().join("b.pem").display().to_string(),
        "/no/such.pem",
    );
    std::fs::write(&path, missing).unwrap();
    let out = std::process::Command::new(BIN)
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "listener[0].certificate[1].cert: certificate file /no/such.pem does not exist"
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_to_backends_verifies_them_with_the_configured_ca_and_sni() {
    let o = origin("o").await;
    let ca = TestCa::new("backend CA");
    let (a, b) = (ca.issue(&["a.example.test"]), ca.issue(&["b.example.test"]));
    let dir = tempfile::tempdir().unwrap();
    // The backend: an edge node terminating TLS in front of the origin.
    let backend = EdgeNode::start(BIN, &tls_config(dir.path(), &o, &a, &b));
    let ca_file = write(dir.path(), "ca.pem", &ca.pem());
    let other_ca = write(
        dir.path(),
        "other-ca.pem",
        &TestCa::new("someone else").pem(),
    );
    let front = |ca: &str| {
        format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[[listener]]\nname = \"web\"\nkind = \"http\"\naddress = \"127.0.0.1:0\"\n\
             [[route]]\npool = \"secure\"\n[[pool]]\nname = \"secure\"\nbackends = [{{ address = \"{}\" }}]\n\
             [pool.tls]\nsni = \"b.example.test\"\nca_file = \"{ca}\"\n[pool.retry]\nattempts = 0\n",
            backend.addr("tls")
        )
    };
    let good = EdgeNode::start(BIN, &front(&ca_file));
    let r = Client::new().get(&good.url("web", "/obj/t?size=100")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, o.expected_body("/obj/t?size=100").unwrap());

    let distrusting = EdgeNode::start(BIN, &front(&other_ca));
    let r = Client::new()
        .get(&distrusting.url("web", "/obj/t?size=100"))
        .await;
    assert_eq!(
        r.status,
        502,
        "an untrusted backend certificate is refused: {}",
        r.text()
    );
}
