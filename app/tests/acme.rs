//! `tls.acme` against Let's Encrypt's ACME test server, Pebble (Debian's
//! `pebble`, installed by `make deps-test`), on loopback. Pebble resolves the
//! names through edge's own DNS listener and validates `tls-alpn-01` on one
//! https listener and `http-01` on the http listener (behind a redirect to
//! https that must not hide it). One listener starts with a kept
//! certificate near its end: it is served until Pebble, started late (so
//! the first order fails and is retried), has issued its successor.

// Helpers in test files may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use edge_testkit::tls::{get, TestCa};
use edge_testkit::{
    eventually, origin, port_for_child, ChildGuard, Client, EdgeNode, RunningOrigin,
};
use nix::sys::signal::Signal;

const BIN: &str = env!("CARGO_BIN_EXE_edge");

struct Pebble {
    _child: ChildGuard,
    management: SocketAddr,
}

/// Starts Pebble on `port` (and `port2` for management), validating on
/// `http_port`/`tls_port`, resolving names through `dns`.
async fn start_pebble(
    dir: &Path,
    ca: &TestCa,
    (port, port2): (u16, u16),
    http_port: u16,
    tls_port: u16,
    dns: SocketAddr,
) -> Pebble {
    let server = ca.issue(&["localhost", "127.0.0.1"]);
    std::fs::write(dir.join("pebble.pem"), &server.cert_pem).unwrap();
    std::fs::write(dir.join("pebble.key"), &server.key_pem).unwrap();
    let config = serde_json::json!({
        "pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{port2}"),
            "certificate": dir.join("pebble.pem"),
            "privateKey": dir.join("pebble.key"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        }
    });
    std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
    let log = std::fs::File::create(dir.join("pebble.log")).unwrap();
    let child = Command::new("pebble")
        .arg("-config")
        .arg(dir.join("pebble.json"))
        .arg("-dnsserver")
        .arg(dns.to_string())
        .arg("-strict=false")
        // Validate at once, and never reject a good nonce (the client
        // retries badNonce, but this keeps the test's path short).
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("pebble (apt-get install pebble, or make deps-test)");
    let child = ChildGuard(child);
    let management: SocketAddr = format!("127.0.0.1:{port2}").parse().unwrap();
    // Pebble opens its management listener in a goroutine of its own,
    // after or before the directory's: wait for both.
    for p in [port, port2] {
        eventually(Duration::from_secs(20), "pebble listening", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", p))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
    }
    Pebble {
        _child: child,
        management,
    }
}

fn config(o: &RunningOrigin, state: &Path, directory: &str, ca: &Path, alpn: &str) -> String {
    let acme = |domains: &str, challenge: &str| {
        format!(
            "[listener.tls.acme]\ndirectory = \"{directory}\"\nemail = \"ops@acme.test\"\ndomains = [{domains}]\nchallenge = \"{challenge}\"\nstate_dir = \"{}\"\nca = \"{}\"\n",
            state.display(),
            ca.display()
        )
    };
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "dns"
kind = "dns"
address = "127.0.0.1:0"

[[dns.zone]]
name = "acme.test."
ns = ["ns1.acme.test."]
soa = {{ mname = "ns1.acme.test.", rname = "hostmaster.acme.test.", serial = 1, minimum = "30s" }}
records = [
  {{ name = "ns1", type = "A", value = "127.0.0.1" }},
  {{ name = "a", type = "A", value = "127.0.0.1" }},
  {{ name = "b", type = "A", value = "127.0.0.1" }},
  {{ name = "c", type = "A", value = "127.0.0.1" }},
  {{ name = "d", type = "A", value = "127.0.0.1" }},
]

[[listener]]
name = "plain"
kind = "http"
address = "127.0.0.1:0"

[[listener]]
name = "alpn"
kind = "https"
address = "127.0.0.1:0"
{}
[[listener]]
name = "web"
kind = "https"
address = "127.0.0.1:0"
{}
[[route]]
name = "https-only"
priority = 10
redirect = {{ scheme = "https" }}
[route.match]
listeners = ["plain"]

[[route]]
name = "all"
pool = "origin"

[[pool]]
name = "origin"
backends = [{{ address = "{}" }}]
"#,
        acme(alpn, "tls-alpn-01"),
        acme("\"b.acme.test\", \"c.acme.test\"", "http-01"),
        o.addr()
    )
}

/// A certificate for a.acme.test from `ca`, valid from 80 days ago until
/// tomorrow: due for renewal (a third of its life is long gone).
fn nearly_expired(names: &[&str]) -> (String, String, String) {
    let now = jiff::Timestamp::now();
    let ymd = |t: jiff::Timestamp| {
        let d = t.to_zoned(jiff::tz::TimeZone::UTC).date();
        rcgen::date_time_ymd(d.year().into(), d.month() as u8, d.day() as u8)
    };
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "old test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.not_before = ymd(now - jiff::SignedDuration::from_hours(80 * 24));
    params.not_after = ymd(now + jiff::SignedDuration::from_hours(48));
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem(), ca_cert.pem())
}

fn leaf_names(der: &[u8]) -> (Vec<String>, String) {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let names = cert
        .subject_alternative_name()
        .unwrap()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .map(|n| n.to_string())
                .collect()
        })
        .unwrap_or_default();
    (names, cert.issuer().to_string())
}

fn metric(text: &str, name: &str, labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l.contains(labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_are_obtained_by_tls_alpn_01_and_http_01_renewed_and_kept() {
    let o = origin("o").await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("acme");
    std::fs::create_dir(&state).unwrap();
    let ports = (port_for_child(), port_for_child());
    let directory = format!("https://127.0.0.1:{}/dir", ports.0);
    let pebble_ca = TestCa::new("pebble listener CA");
    let ca_path = dir.path().join("pebble-ca.pem");
    std::fs::write(&ca_path, pebble_ca.pem()).unwrap();

    // a.acme.test's kept certificate, as edge keeps them, nearly expired.
    let (old_cert, old_key, old_ca) = nearly_expired(&["a.acme.test"]);
    std::fs::write(
        state.join("a.acme.test.pem"),
        format!("{old_cert}{old_key}"),
    )
    .unwrap();
    std::fs::write(
        state.join("a.acme.test.json"),
        serde_json::json!({ "directory": directory, "domains": ["a.acme.test"] }).to_string(),
    )
    .unwrap();

    let cfg = config(&o, &state, &directory, &ca_path, "\"a.acme.test\"");
    let node = EdgeNode::start(BIN, &cfg);
    node.wait_ready(Duration::from_secs(30));
    let (alpn, web) = (node.addr("alpn"), node.addr("web"));

    // Before Pebble runs: the kept certificate is served; b has none yet,
    // so its handshake fails rather than showing another name's.
    let old = get(
        alpn,
        "a.acme.test",
        &old_ca,
        &[b"http/1.1"],
        "/_origin/health",
    )
    .await
    .expect("the kept certificate is served");
    assert_eq!(old.status, 200);
    let refused = get(
        web,
        "b.acme.test",
        &pebble_ca.pem(),
        &[b"http/1.1"],
        "/_origin/health",
    )
    .await;
    assert!(refused.is_err(), "{refused:?}");
    node.wait_for_line("ACME order failed", Duration::from_secs(30));
    assert!(node.output().contains("retry_in_s=10"), "{}", node.output());

    let pebble = start_pebble(
        dir.path(),
        &pebble_ca,
        ports,
        node.addr("plain").port(),
        alpn.port(),
        node.addr("dns"),
    )
    .await;
    // Pebble's root, to check what edge serves chains to it.
    let root = get(
        pebble.management,
        "localhost",
        &pebble_ca.pem(),
        &[b"http/1.1"],
        "/roots/0",
    )
    .await
    .unwrap();
    assert_eq!(root.status, 200);
    let root = String::from_utf8(root.body.to_vec()).unwrap();
    assert!(root.contains("BEGIN CERTIFICATE"), "{root}");

    // Renewed over tls-alpn-01 after the retry.
    let renewed = eventually(Duration::from_secs(60), "a.acme.test renewed", || async {
        get(
            alpn,
            "a.acme.test",
            &root,
            &[b"http/1.1"],
            "/_origin/health",
        )
        .await
        .ok()
    })
    .await;
    assert_eq!(renewed.status, 200);
    let (names, issuer) = leaf_names(&renewed.peer_cert);
    assert_eq!(names, ["DNSName(a.acme.test)"]);
    assert!(issuer.contains("Pebble"), "{issuer}");
    // Obtained over http-01, both names on one certificate.
    let issued = eventually(Duration::from_secs(60), "b.acme.test issued", || async {
        get(web, "c.acme.test", &root, &[b"h2"], "/_origin/health")
            .await
            .ok()
    })
    .await;
    assert_eq!(issued.status, 200);
    let (mut names, _) = leaf_names(&issued.peer_cert);
    names.sort();
    assert_eq!(names, ["DNSName(b.acme.test)", "DNSName(c.acme.test)"]);
    let b = get(web, "b.acme.test", &root, &[b"http/1.1"], "/_origin/health")
        .await
        .unwrap();
    assert_eq!(b.peer_cert, issued.peer_cert);
    // A client offering acme-tls/1 among other protocols is no CA: it
    // gets the certificate and its protocol, on either listener.
    let mixed = get(
        web,
        "b.acme.test",
        &root,
        &[b"h2", b"acme-tls/1"],
        "/_origin/health",
    )
    .await
    .expect("mixed ALPN offer on an http-01 listener");
    assert_eq!(mixed.alpn.as_deref(), Some(&b"h2"[..]));
    let mixed = get(
        alpn,
        "a.acme.test",
        &root,
        &[b"http/1.1", b"acme-tls/1"],
        "/_origin/health",
    )
    .await
    .expect("mixed ALPN offer on a tls-alpn-01 listener");
    assert_eq!(mixed.status, 200);
    // acme-tls/1 alone with no order open: no handshake.
    assert!(get(alpn, "a.acme.test", &root, &[b"acme-tls/1"], "/")
        .await
        .is_err());
    // Without SNI-matching names, the ACME certificate is the listener's default.
    assert!(get(
        web,
        "other.acme.test",
        &root,
        &[b"http/1.1"],
        "/_origin/health"
    )
    .await
    .is_err());

    // The challenge path of no open order goes through the routes (here
    // the redirect to https), as any other request.
    let client = Client::new();
    let r = client
        .get_with(
            &node.url("plain", "/.well-known/acme-challenge/unknownToken"),
            &[("host", "b.acme.test")],
        )
        .await;
    assert!([301, 302, 307, 308].contains(&r.status), "{}", r.status);

    // Kept under state_dir, private.
    let account = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.starts_with(&format!("account-127.0.0.1_{}-", ports.0)))
        .expect("the account file");
    for f in ["a.acme.test.pem", "b.acme.test.pem", account.as_str()] {
        let meta = std::fs::metadata(state.join(f)).expect(f);
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o600,
            "{f}"
        );
    }
    let kept = std::fs::read_to_string(state.join("b.acme.test.pem")).unwrap();
    assert!(kept.contains("PRIVATE KEY"));

    // Metrics: expiry of each ACME certificate (as notAfter), and orders.
    let metrics = client.get(&node.admin_url("/metrics")).await.text();
    let (_, cert) = x509_parser::parse_x509_certificate(&issued.peer_cert).unwrap();
    let not_after = cert.validity().not_after.timestamp() as f64;
    let b_path = state.join("b.acme.test.pem").display().to_string();
    assert_eq!(
        metric(
            &metrics,
            "edge_tls_certificate_expiry_timestamp_seconds",
            &format!("certificate=\"{b_path}\",listener=\"web\"")
        ),
        Some(not_after),
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "edge_acme_orders_total",
            "listener=\"alpn\",result=\"failed\""
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "edge_acme_orders_total",
            "listener=\"web\",result=\"issued\""
        ),
        Some(1.0),
        "{metrics}"
    );

    // A restart serves the kept certificates with no CA to ask.
    drop(pebble);
    node.signal(Signal::SIGTERM);
    let mut node = node;
    node.wait_exit(Duration::from_secs(30));
    let again = EdgeNode::start(BIN, &cfg);
    again.wait_ready(Duration::from_secs(30));
    let b = get(
        again.addr("web"),
        "b.acme.test",
        &root,
        &[b"http/1.1"],
        "/_origin/health",
    )
    .await
    .expect("kept certificate served after a restart");
    assert_eq!(b.peer_cert, issued.peer_cert);
    let a = get(
        again.addr("alpn"),
        "a.acme.test",
        &root,
        &[b"http/1.1"],
        "/_origin/health",
    )
    .await
    .unwrap();
    assert_eq!(a.peer_cert, renewed.peer_cert);

    // A new CA instance that forgot every account, and a name added: the
    // kept account is refused, a new one registered, the order made.
    let pebble = start_pebble(
        dir.path(),
        &pebble_ca,
        ports,
        again.addr("plain").port(),
        again.addr("alpn").port(),
        again.addr("dns"),
    )
    .await;
    let root = get(
        pebble.management,
        "localhost",
        &pebble_ca.pem(),
        &[b"http/1.1"],
        "/roots/0",
    )
    .await
    .unwrap();
    let root = String::from_utf8(root.body.to_vec()).unwrap();
    again.write_config(&config(
        &o,
        &state,
        &directory,
        &ca_path,
        "\"a.acme.test\", \"d.acme.test\"",
    ));
    again.signal(Signal::SIGHUP);
    let d = eventually(Duration::from_secs(60), "d.acme.test issued", || async {
        get(
            again.addr("alpn"),
            "d.acme.test",
            &root,
            &[b"http/1.1"],
            "/_origin/health",
        )
        .await
        .ok()
    })
    .await;
    let (mut names, _) = leaf_names(&d.peer_cert);
    names.sort();
    assert_eq!(names, ["DNSName(a.acme.test)", "DNSName(d.acme.test)"]);
    assert!(
        again
            .output()
            .contains("no longer knows the kept ACME account"),
        "{}",
        again.output()
    );
    drop(pebble);
}
