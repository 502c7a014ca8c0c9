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

/// Reads `data` in pieces of at most `step` bytes, would-block before
/// each piece and once it is all read.
struct Trickle {
    data: Vec<u8>,
    step: usize,
    blocked: bool,
}

impl std::io::Read for Trickle {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if !self.blocked || self.data.is_empty() {
            self.blocked = true;
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        self.blocked = false;
        let n = self.step.min(out.len()).min(self.data.len());
        out[..n].copy_from_slice(&self.data[..n]);
        self.data.drain(..n);
        Ok(n)
    }
}

/// Moves what `from` has to send into `to`, read in pieces of `step`
/// bytes (would-block between them); the plaintext `to` got.
fn pass_on(
    from: &mut impl std::ops::DerefMut<Target = rustls::ConnectionCommon<impl Sized>>,
    to: &mut impl std::ops::DerefMut<Target = rustls::ConnectionCommon<impl Sized>>,
    step: usize,
) -> Vec<u8> {
    use std::io::Read;
    let mut wire = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut wire).unwrap();
    }
    let mut rd = Trickle {
        data: wire,
        step,
        blocked: false,
    };
    let mut plain = Vec::new();
    // Bounded: a read that never takes the reader's bytes fails, not hangs.
    let bound = 2 * rd.data.len() + 10;
    for round in 0.. {
        assert!(round < bound, "read_tls made no progress");
        match to.read_tls(&mut rd) {
            Ok(n) => assert!(n > 0, "no end of stream here"),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && rd.data.is_empty() => break,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => panic!("read_tls: {e}"),
        }
        let state = to.process_new_packets().unwrap();
        let mut chunk = vec![0u8; state.plaintext_bytes_to_read()];
        to.reader().read_exact(&mut chunk).unwrap();
        plain.extend(chunk);
    }
    plain
}

fn in_memory_pair(
    ca: &TestCa,
    cert: &TestCert,
) -> (rustls::ClientConnection, rustls::ServerConnection) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca.pem().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert.cert_pem.as_bytes())
        .map(|c| c.unwrap())
        .collect();
    let key = rustls_pemfile::private_key(&mut cert.key_pem.as_bytes())
        .unwrap()
        .unwrap();
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("a.example.test").unwrap();
    (
        rustls::ClientConnection::new(std::sync::Arc::new(client), name).unwrap(),
        rustls::ServerConnection::new(std::sync::Arc::new(server)).unwrap(),
    )
}

/// The vendored rustls' read buffer (EDGE-PATCH.md: taken per read from
/// a thread's scratch buffer, released when it holds nothing): a handshake
/// and 40,000 bytes each way, the TLS bytes read in pieces of 1 byte to
/// 40,000 with a would-block before each, come out whole and in order; so
/// do an inner connection's handshake and 5,000 bytes read inside another
/// connection's reads on the same thread (TLS inside TLS: the inner
/// handshake is read while the outer holds the scratch buffer, so it takes
/// the fallback; a build whose fallback panics fails here).
#[test]
fn tls_bytes_read_in_any_pieces_come_out_whole() {
    use std::io::Write;
    let ca = TestCa::new("edge test CA");
    let cert = ca.issue(&["a.example.test"]);
    let data: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    for step in [1, 2, 5, 100, 4_095, 4_096, 4_097, 9_000, 16_389, 40_000] {
        let (mut client, mut server) = in_memory_pair(&ca, &cert);
        for round in 0.. {
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
            assert!(round < 10, "step {step}: the handshake does not end");
            pass_on(&mut client, &mut server, step);
            pass_on(&mut server, &mut client, step);
        }
        client.writer().write_all(&data).unwrap();
        assert_eq!(pass_on(&mut client, &mut server, step), data, "step {step}");
        server.writer().write_all(&data).unwrap();
        assert_eq!(pass_on(&mut server, &mut client, step), data, "step {step}");
    }

    // TLS inside TLS: each read of the outer server's bytes moves the inner
    // pair's bytes (the inner server reading inside the outer's read).
    struct Nested<'a> {
        outer: Trickle,
        inner: &'a mut (rustls::ClientConnection, rustls::ServerConnection),
        got: Vec<u8>,
    }
    impl std::io::Read for Nested<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let (c, s) = &mut *self.inner;
            if c.is_handshaking() || s.is_handshaking() {
                pass_on(c, s, 7);
                pass_on(s, c, 7);
            } else {
                self.got.extend(pass_on(c, s, 700));
            }
            self.outer.read(out)
        }
    }
    let (mut oc, mut os) = in_memory_pair(&ca, &cert);
    for round in 0.. {
        if !oc.is_handshaking() && !os.is_handshaking() {
            break;
        }
        assert!(round < 10, "the outer handshake does not end");
        pass_on(&mut oc, &mut os, 4_096);
        pass_on(&mut os, &mut oc, 4_096);
    }
    let mut inner = in_memory_pair(&ca, &cert);
    oc.writer().write_all(&data).unwrap();
    let mut wire = Vec::new();
    while oc.wants_write() {
        oc.write_tls(&mut wire).unwrap();
    }
    let mut nested = Nested {
        outer: Trickle {
            data: wire,
            step: 1_000,
            blocked: false,
        },
        inner: &mut inner,
        got: Vec::new(),
    };
    let mut plain = Vec::new();
    let mut sent_inner = false;
    for round in 0.. {
        assert!(round < 1_000, "the outer read made no progress");
        match os.read_tls(&mut nested) {
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock && nested.outer.data.is_empty() =>
            {
                break
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("outer read_tls: {e}"),
        }
        let state = os.process_new_packets().unwrap();
        let mut chunk = vec![0u8; state.plaintext_bytes_to_read()];
        std::io::Read::read_exact(&mut os.reader(), &mut chunk).unwrap();
        plain.extend(chunk);
        let (c, s) = &mut *nested.inner;
        if !sent_inner && !c.is_handshaking() && !s.is_handshaking() {
            c.writer().write_all(&data[..5_000]).unwrap();
            sent_inner = true;
        }
    }
    assert_eq!(plain, data);
    assert!(sent_inner, "the inner handshake finished");
    assert_eq!(nested.got, &data[..5_000]);
}

/// TLS records read in parts and several at once: a client whose TLS
/// bytes (the handshake too) arrive in pieces of 1, 7, 100 and 1,500 bytes,
/// some paused between, and then whole, gets every answer whole: small
/// GETs, pipelined GETs sent in one record, and request bodies of 3 and
/// 100 KB (records of 16 KB read a few KB at a time) echoed with their
/// length. Edge's TLS read buffer is taken per read and released when it
/// holds nothing (vendored rustls, EDGE-PATCH.md); a record that spans
/// reads keeps what came until the rest does.
#[tokio::test(flavor = "multi_thread")]
async fn tls_records_arriving_in_pieces_or_together_are_read_whole() {
    use edge_testkit::raw::RawConn;
    let o = origin("o").await;
    let ca = TestCa::new("edge test CA");
    let (a, b) = (
        ca.issue(&["a.example.test"]),
        ca.issue(&["b.example.test", "*.b.example.test"]),
    );
    let dir = tempfile::tempdir().unwrap();
    let node = EdgeNode::start(BIN, &tls_config(dir.path(), &o, &a, &b));
    let addr = node.addr("tls");
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: a.example.test\r\n\r\n");
    let post = |len: usize| {
        let mut r =
            format!("POST /echo HTTP/1.1\r\nHost: a.example.test\r\nContent-Length: {len}\r\n\r\n")
                .into_bytes();
        r.extend((0..len).map(|i| b'a' + (i % 26) as u8));
        r
    };
    let cases: [(usize, u64, &[usize]); 5] = [
        (1, 0, &[3_000]),
        (7, 0, &[3_000]),
        (100, 1, &[3_000, 100_000]),
        (1_500, 0, &[100_000]),
        (usize::MAX, 0, &[3_000, 100_000]),
    ];
    for (piece, pause_ms, bodies) in cases {
        let pause = Duration::from_millis(pause_ms);
        let mut c =
            RawConn::connect_tls_in_pieces(addr, "a.example.test", &ca.pem(), piece, pause).await;
        let case = format!("pieces of {piece} bytes, {pause_ms} ms apart");
        for size in [1, 700, 20_000] {
            c.send(get(&format!("/obj/x?size={size}")).as_bytes()).await;
            let r = c
                .response(false)
                .await
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(r.status, 200, "{case}");
            assert_eq!(r.body.len(), size, "{case}");
        }
        // Eight requests in one write: one record (read whole where the
        // pieces allow).
        let sizes = [5, 50, 500, 5_000, 1, 2, 3, 4];
        let pipelined: String = sizes
            .iter()
            .map(|n| get(&format!("/obj/p?size={n}")))
            .collect();
        c.send(pipelined.as_bytes()).await;
        for n in sizes {
            let r = c
                .response(false)
                .await
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!((r.status, r.body.len()), (200, n), "{case}");
        }
        for &len in bodies {
            c.send(&post(len)).await;
            let r = c
                .response(false)
                .await
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(r.status, 200, "{case}: {}", r.text());
            let echoed: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(echoed["body_bytes"], len, "{case}");
            assert_eq!(echoed["method"], "POST", "{case}");
        }
    }
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
