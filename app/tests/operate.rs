//! Operating edge: what an operator's actions (reloads, signals, the admin
//! API) can and cannot do to a node, and what it keeps secret.

// Helpers in test files may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use edge_testkit::{Client, EdgeNode};
use http::Method;

const BIN: &str = env!("CARGO_BIN_EXE_edge");
const TOKEN: &str = "operate-test-token-0123456789";
const REDIS_PASSWORD: &str = "hunter2-redis-password";
const UPSTREAM_SECRET: &str = "Bearer upstream-secret-value";

fn config_with_secrets() -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"

[redis]
url = "redis://:{REDIS_PASSWORD}@127.0.0.1:1"
timeout = "50ms"

[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:0"

[[route]]
name = "r"
respond = {{ status = 200, body = "ok" }}
request_headers = {{ set = {{ authorization = "{UPSTREAM_SECRET}" }} }}
"#
    )
}

async fn admin(
    c: &Client,
    node: &EdgeNode,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let r = c
        .request(method, &node.admin_url(path), &headers, "")
        .await
        .unwrap();
    (r.status, r.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_secret_in_the_config_api_errors_and_logs() {
    let node = EdgeNode::start(BIN, &config_with_secrets());
    let c = Client::new();
    let secrets = [TOKEN, REDIS_PASSWORD, "upstream-secret-value"];

    let (status, _) = admin(&c, &node, Method::GET, "/config", None).await;
    assert_eq!(status, 401, "/config needs the token");
    let (status, _) = admin(
        &c,
        &node,
        Method::GET,
        "/config",
        Some("wrong-token-0123456789"),
    )
    .await;
    assert_eq!(status, 401);
    let (status, body) = admin(&c, &node, Method::GET, "/config", Some(TOKEN)).await;
    assert_eq!(status, 200);
    for s in secrets {
        assert!(!body.contains(s), "/config shows {s}: {body}");
    }
    assert!(body.contains("<redacted>"));
    // The scheme is case-insensitive (RFC 9110 §11.1).
    let r = c
        .request(
            Method::GET,
            &node.admin_url("/config"),
            &[("authorization", &format!("bEaReR {TOKEN}"))],
            "",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);

    // Broken files with the secrets in them, each error on a secret's own
    // line: the refusal does not echo them.
    let good = config_with_secrets();
    let table_form = good.replace(
        "request_headers = { set = { authorization = \"Bearer upstream-secret-value\" } }",
        "[route.request_headers.set]\nX-Upstream = \"upstream-secret-value\\u0001\"",
    );
    assert_ne!(table_form, good);
    let numeric_token = good.replace(
        &format!("token = \"{TOKEN}\""),
        "token = 98765432109876543210",
    );
    for broken in [
        good.replace("@127.0.0.1:1\"", "@127.0.0.1:1\n"),
        good.replace("redis://:", "redis//:"),
        table_form,
        numeric_token,
    ] {
        node.write_config(&broken);
        let (status, body) = admin(&c, &node, Method::POST, "/reload", Some(TOKEN)).await;
        assert_eq!(status, 422, "{body}");
        for s in secrets.iter().chain(&["98765432109876543210"]) {
            assert!(!body.contains(s), "the refusal shows {s}: {body}");
        }
    }
    node.signal(nix::sys::signal::Signal::SIGHUP);
    node.wait_for_line("reload", Duration::from_secs(10));
    let (status, _) = admin(&c, &node, Method::GET, "/live", None).await;
    assert_eq!(status, 200);
    let out = node.output();
    for s in secrets {
        assert!(!out.contains(s), "the node's output shows {s}:\n{out}");
    }
}

fn small_config(extra_listener: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"

[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:0"
{extra_listener}

[[route]]
name = "r"
respond = {{ status = 200, body = "still serving" }}
"#
    )
}

async fn still_serving(c: &Client, node: &EdgeNode) {
    let r = c.get(&node.url("web", "/")).await;
    assert_eq!((r.status, r.text().as_str()), (200, "still serving"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_cannot_empty_the_node_unless_the_file_says_so() {
    let node = EdgeNode::start(BIN, &small_config(""));
    let c = Client::new();
    let reload = |node: &EdgeNode| {
        let c = c.clone();
        let url = node.admin_url("/reload");
        async move {
            c.request(
                Method::POST,
                &url,
                &[("authorization", &format!("Bearer {TOKEN}"))],
                "",
            )
            .await
            .unwrap()
        }
    };
    // An empty file, a file cut short after [admin], and one without the token.
    let admin_only = format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n");
    let no_token = small_config("").replace(&format!("token = \"{TOKEN}\""), "");
    for (what, text) in [
        ("empty", String::new()),
        ("cut short", admin_only),
        ("no token", no_token),
    ] {
        node.write_config(&text);
        let r = reload(&node).await;
        assert_eq!(r.status, 422, "{what}: {}", r.text());
        assert!(r.text().contains("reload refused"), "{what}: {}", r.text());
        still_serving(&c, &node).await;
    }
    // SIGHUP takes the same path.
    node.write_config("");
    node.signal(nix::sys::signal::Signal::SIGHUP);
    node.wait_for_line("reload refused", Duration::from_secs(10));
    still_serving(&c, &node).await;
    // Said on purpose, it applies.
    node.write_config(&format!(
        "listener = []\nroute = []\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n"
    ));
    let r = reload(&node).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The listener is gone: a new connection is refused once its accept
    // loop has stopped (a request already on a kept-alive connection is
    // still answered, with `Connection: close`).
    edge_testkit::eventually(Duration::from_secs(10), "the listener closed", || async {
        Client::new()
            .request(Method::GET, &node.url("web", "/"), &[], "")
            .await
            .is_err()
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_never_breaks_a_reload() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, small_config("")).unwrap();
    let mut child = edge_testkit::ChildGuard(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut admin = None;
    {
        let stdout = child.0.stdout.take().unwrap();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(a) = line.strip_prefix("listening admin admin ") {
                admin = Some(a.to_string());
            }
            if line == "ready" {
                break;
            }
        }
        // The reader goes away: stdout is a pipe nobody reads.
    }
    let admin = admin.unwrap();
    // A reload that adds a listener announces it on stdout.
    let port = edge_testkit::port_for_child();
    let extra =
        format!("[[listener]]\nname = \"more\"\nkind = \"http\"\naddress = \"127.0.0.1:{port}\"\n");
    std::fs::write(&path, small_config(&extra)).unwrap();
    let c = Client::new();
    let r = c
        .request(
            Method::POST,
            &format!("http://{admin}/reload"),
            &[("authorization", &format!("Bearer {TOKEN}"))],
            "",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let r = c.get(&format!("http://127.0.0.1:{port}/")).await;
    assert_eq!(r.text(), "still serving", "the new listener serves");
    // And later reloads still work (SIGHUP too).
    std::fs::write(&path, small_config("")).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    edge_testkit::eventually(Duration::from_secs(10), "the listener to go", || async {
        c.request(Method::GET, &format!("http://127.0.0.1:{port}/"), &[], "")
            .await
            .is_err()
            .then_some(())
    })
    .await;
    assert!(child.0.try_wait().unwrap().is_none(), "the node is alive");
}

/// Sends GETs from `clients` keep-alive clients until `stop` turns true;
/// returns (answered 200, failed) with the failures' reasons.
async fn load(
    url: String,
    clients: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    max_per_client: usize,
) -> (usize, Vec<String>) {
    use std::sync::atomic::Ordering;
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (url, stop) = (url.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let c = Client::new();
            let (mut ok, mut failed) = (0, Vec::new());
            for n in 0..max_per_client {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                match c
                    .request(
                        Method::GET,
                        &format!("{url}?c={i}&n={n}&size=1024"),
                        &[],
                        "",
                    )
                    .await
                {
                    Ok(r) if r.status == 200 && r.body.len() == 1024 => ok += 1,
                    Ok(r) => failed.push(format!("status {} {:?}", r.status, r.text())),
                    Err(e) => failed.push(e),
                }
            }
            (ok, failed)
        }));
    }
    let (mut ok, mut failed) = (0, Vec::new());
    for t in tasks {
        let (o, f) = t.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    (ok, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_backends_loses_no_request_with_the_defaults() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let mut origins: Vec<EdgeNode> = (0..3)
        .map(|i| {
            let name = format!("o{i}");
            let o = EdgeNode::spawn_command(
                BIN,
                &["origin", "--listen", "127.0.0.1:0", "--name", &name],
            );
            o.wait_ready(Duration::from_secs(30));
            o
        })
        .collect();
    let backends: Vec<String> = origins
        .iter()
        .enumerate()
        .map(|(i, o)| format!("{{ address = \"{}\" }}", o.addr(&format!("o{i}"))))
        .collect();
    // Nothing about retries, health or ejection: the shipped defaults.
    let config = format!(
        r#"
[server]
threads = 2
access_log = false

[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:0"

[[route]]
name = "all"
pool = "p"

[[pool]]
name = "p"
backends = [{}]
"#,
        backends.join(", ")
    );
    let node = EdgeNode::start(BIN, &config);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = 32;
    let run = tokio::spawn(load(node.url("web", "/obj/k"), clients, stop.clone(), 400));
    // Kill one backend (SIGKILL: no goodbye) once traffic flows to all three.
    let c = Client::new();
    edge_testkit::eventually(
        Duration::from_secs(10),
        "traffic on every backend",
        || async {
            let m = c.get(&node.admin_url("/metrics")).await.text();
            let on_all = (0..3).all(|i| {
                let addr = origins[i].addr(&format!("o{i}")).to_string();
                edge_testkit::metric_sum(&m, "edge_upstream_response_seconds_count", &[&addr])
                    > 20.0
            });
            on_all.then_some(())
        },
    )
    .await;
    let dead = origins[1].addr("o1").to_string();
    origins[1].signal(nix::sys::signal::Signal::SIGKILL);
    assert!(origins[1].wait_exit(Duration::from_secs(10)).is_some());
    // Keep the load on for a while after the kill, then stop it.
    let after_kill = edge_testkit::metric_sum(
        &c.get(&node.admin_url("/metrics")).await.text(),
        "edge_http_requests_total",
        &[],
    );
    edge_testkit::eventually(
        Duration::from_secs(30),
        "2,000 requests after the kill",
        || async {
            let m = c.get(&node.admin_url("/metrics")).await.text();
            (edge_testkit::metric_sum(&m, "edge_http_requests_total", &[]) > after_kill + 2000.0)
                .then_some(())
        },
    )
    .await;
    stop.store(true, Ordering::Release);
    let (ok, failed) = run.await.unwrap();
    eprintln!("kill one of three: {ok} answered, {} failed", failed.len());
    // Only requests in flight on the killed backend may be lost, and those
    // are retried too: at most one per client, and in practice none.
    assert!(
        failed.len() < clients,
        "{} of {} failed: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(5)]
    );
    let pools = c.get(&node.admin_url("/pools")).await.json();
    let backend = pools[0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"].as_str() == Some(dead.as_str()))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        backend["ejected"].as_bool(),
        Some(true),
        "the dead backend is out of selection: {backend}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_origin_gets_its_504_at_first_byte_whatever_idle_is() {
    let o = edge_testkit::origin("slow").await;
    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:0"

[[route]]
name = "all"
pool = "p"

[[pool]]
name = "p"
backends = [{{ address = "{}" }}]
timeouts = {{ connect = "1s", first_byte = "500ms", idle = "60s" }}
"#,
        o.addr()
    );
    let node = EdgeNode::start(BIN, &config);
    let c = Client::new();
    // The origin waits 5 s before its response head.
    let r = c
        .get(&node.url("web", "/obj/slow?fault=latency%3D5s"))
        .await;
    assert_eq!(r.status, 504, "{}", r.text());
    let r = c.get(&node.url("web", "/obj/quick")).await;
    assert_eq!(r.status, 200);
}

/// `first_byte` bounds the head and `idle` each body read, independently;
/// `total` bounds the streaming body too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_byte_idle_and_total_are_independent_timers() {
    let o = edge_testkit::origin("o").await;
    let pool = |name: &str, timeouts: &str| {
        format!(
            "[[route]]\nname = \"{name}\"\nmatch = {{ path_prefix = \"/{name}/\" }}\nstrip_prefix = \"/{name}\"\npool = \"{name}\"\n\n\
             [[pool]]\nname = \"{name}\"\nbackends = [{{ address = \"{}\" }}]\n\
             retry = {{ attempts = 0 }}\ntimeouts = {{ {timeouts} }}\n\n",
            o.addr()
        )
    };
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[[listener]]\nname = \"web\"\nkind = \"http\"\naddress = \"127.0.0.1:0\"\n\n{}{}{}{}",
        // A slow head (1 s) inside first_byte, body reads inside idle.
        pool("slowhead", "first_byte = \"3s\", idle = \"600ms\""),
        // A quick head, body reads 1.2 s apart: longer than first_byte,
        // inside idle.
        pool("slowbody", "first_byte = \"600ms\", idle = \"5s\""),
        // A body that streams for 4 s against a total of 1 s.
        pool("long", "first_byte = \"5s\", idle = \"5s\", total = \"1s\""),
        // Body reads 1 s apart against an idle of 300 ms.
        pool("idle", "first_byte = \"5s\", idle = \"300ms\""),
    );
    let node = EdgeNode::start(BIN, &config);
    let c = Client::new();
    let path = "/obj/a?size=4096&fault=latency%3D1s,drip%3D1024/100ms";
    let r = c.get(&node.url("web", &format!("/slowhead{path}"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, o.expected_body(path).unwrap());
    let path = "/obj/b?size=3072&fault=drip%3D1024/1200ms";
    let r = c.get(&node.url("web", &format!("/slowbody{path}"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, o.expected_body(path).unwrap());
    let path = "/obj/c?size=20480&fault=drip%3D1024/200ms";
    // Cut off mid-body, the client sees the connection end (an error), or
    // a short body.
    let r = c
        .request(
            Method::GET,
            &node.url("web", &format!("/long{path}")),
            &[],
            "",
        )
        .await;
    if let Ok(r) = r {
        assert!(
            r.status == 504 || r.body.len() < 20480,
            "total let a 4 s body through: {} with {} bytes",
            r.status,
            r.body.len()
        );
    }
    // The same timers over long bodies, whose rest is spliced socket to
    // socket on HTTP/1's shortcut (`service/splice.rs`): pieces 700 ms
    // apart inside idle; a 2 s body against total; pieces 1 s apart
    // against an idle of 300 ms.
    let path = "/obj/d?size=1000000&cc=no-store&fault=drip%3D250000/700ms";
    let r = c.get(&node.url("web", &format!("/slowbody{path}"))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body == o.expected_body(path).unwrap(), "the bytes differ");
    let fast = std::env::var("EDGE_TEST_FAST_PATHS").as_deref() != Ok("off");
    let spliced = edge_testkit::metric_sum(
        &c.get(&node.admin_url("/metrics")).await.text(),
        "edge_http_spliced_bytes_total",
        &[],
    );
    assert_eq!(spliced > 500_000.0, fast, "{spliced} bytes spliced");
    for (route, size, path, why) in [
        (
            "long",
            2_000_000,
            "/obj/e?size=2000000&cc=no-store&fault=drip%3D200000/200ms",
            "total timeout passed while the body was streaming",
        ),
        (
            "idle",
            1_000_000,
            "/obj/f?size=1000000&cc=no-store&fault=drip%3D200000/1s",
            "reading body, timeout: 300ms",
        ),
    ] {
        // The head is out: the client sees its body cut short (an error).
        let r = c
            .request(
                Method::GET,
                &node.url("web", &format!("/{route}{path}")),
                &[],
                "",
            )
            .await;
        assert!(
            r.as_ref().is_err_and(|e| e.starts_with("body:"))
                || r.as_ref().is_ok_and(|r| r.body.len() < size),
            "{route}: the whole body came"
        );
        let logged = format!("/{route}{}", path.split('?').next().unwrap());
        let line = node.access_line(&logged, 0, "status=").await;
        assert!(line.contains(why), "{route}: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_a_few_log_lines_and_a_silent_client_is_info() {
    let dead_addr = edge_testkit::refused_addr();
    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:0"
limits = {{ header_timeout = "1s" }}

[[route]]
name = "all"
pool = "p"

[[pool]]
name = "p"
backends = [{{ address = "{dead_addr}" }}]
outlier_detection = {{ max_ejection_percent = 0 }}
"#
    );
    let node = EdgeNode::start(BIN, &config);
    let c = Client::new();
    for _ in 0..200 {
        let r = c.get(&node.url("web", "/x")).await;
        assert!(r.status >= 500);
    }
    // A client that sends half a head and stops.
    let mut slow = edge_testkit::RawConn::connect(node.addr("web")).await;
    slow.send(b"GET / HTTP/1.1\r\nHo").await;
    assert!(slow.closed().await, "the silent client is cut off");
    node.wait_for_line(
        "closed: request head not complete in time",
        Duration::from_secs(10),
    );
    let out = node.output();
    let error_lines = out
        .lines()
        .filter(|l| l.contains("upstream error") || l.contains("Fail to proxy"))
        .count();
    assert!(
        (1..=3).contains(&error_lines),
        "200 failed requests, {error_lines} error lines:\n{out}"
    );
    let slow_line = out
        .lines()
        .find(|l| l.contains("request head not complete"))
        .unwrap();
    assert!(slow_line.contains("INFO"), "{slow_line}");
    assert!(!out.lines().any(|l| l.contains("ERROR")), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_json_mode_stdout_carries_only_json() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.toml");
    std::fs::write(
        &path,
        "[server]\nlog_format = \"json\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[[listener]]\nname = \"web\"\nkind = \"http\"\naddress = \"127.0.0.1:0\"\n[[route]]\nname = \"r\"\nrespond = { status = 200 }\n",
    )
    .unwrap();
    let mut child = edge_testkit::ChildGuard(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not JSON on stdout ({e}): {line}"));
        lines.push(v.clone());
        if v["event"] == "ready" {
            break;
        }
    }
    assert!(
        lines
            .iter()
            .any(|v| v["event"] == "listening" && v["name"] == "web"),
        "{lines:?}"
    );
}

/// An authoritative DNS node (edge itself) answering `origin.test.` with `ips`.
fn dns_config(ips: &[&str], ttl: u32) -> String {
    let records: Vec<String> = ips
        .iter()
        .map(|ip| format!("  {{ name = \"origin\", type = \"A\", value = \"{ip}\" }},"))
        .collect();
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "dns"
kind = "dns"
address = "127.0.0.1:0"

[[dns.zone]]
name = "test."
ttl = {ttl}
ns = ["ns1.test."]
soa = {{ mname = "ns1.test.", rname = "hostmaster.test.", serial = 1, minimum = "1s" }}
records = [
  {{ name = "ns1", type = "A", value = "192.0.2.53" }},
{}
]
"#,
        records.join("\n")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_by_name_follow_dns_and_keep_their_state() {
    // Two origins on one port, at two loopback addresses.
    let a = edge_testkit::Origin::new(edge_testkit::OriginConfig {
        name: "a".into(),
        ..Default::default()
    })
    .spawn(([127, 0, 0, 2], 0).into())
    .await
    .unwrap();
    let port = a.addr().port();
    let _b = edge_testkit::Origin::new(edge_testkit::OriginConfig {
        name: "b".into(),
        ..Default::default()
    })
    .spawn(([127, 0, 0, 3], port).into())
    .await
    .unwrap();
    let dns = EdgeNode::start(BIN, &dns_config(&["127.0.0.2"], 1));
    let dns_addr = dns.addr("dns");
    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[resolver]
nameservers = ["{dns_addr}"]
min_ttl = "1s"
max_ttl = "2s"

[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:0"

[[route]]
name = "all"
pool = "p"

[[pool]]
name = "p"
backends = [{{ address = "origin.test:{port}" }}, {{ address = "missing.test:{port}" }}]
"#
    );
    let node = EdgeNode::start(BIN, &config);
    let c = Client::new();
    let who = |r: edge_testkit::Response| r.header("x-origin-name").unwrap_or("?").to_string();
    assert_eq!(who(c.get(&node.url("web", "/obj/1")).await), "a");
    let pools = c.get(&node.admin_url("/pools")).await.json();
    let names = &pools[0]["names"];
    assert_eq!(names[0]["addresses"][0], "127.0.0.2", "{pools}");
    assert!(
        names[1]["error"].is_string(),
        "an unresolved name is reported: {pools}"
    );
    // The answer changes: the backend follows within a TTL or two.
    dns.write_config(&dns_config(&["127.0.0.3"], 1));
    dns.signal(nix::sys::signal::Signal::SIGHUP);
    edge_testkit::eventually(
        Duration::from_secs(15),
        "traffic on the new address",
        || async { (who(c.get(&node.url("web", "/obj/2")).await) == "b").then_some(()) },
    )
    .await;
    // Two addresses: both take traffic; the one that stayed keeps its state.
    let requests_on = |pools: &serde_json::Value, ip: &str| {
        pools[0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| {
                b["address"]
                    .as_str()
                    .is_some_and(|a| a.ends_with(&format!("@{ip}")))
            })
            .map(|b| b["requests"].as_u64().unwrap())
    };
    let before = requests_on(&c.get(&node.admin_url("/pools")).await.json(), "127.0.0.3").unwrap();
    assert!(before > 0);
    dns.write_config(&dns_config(&["127.0.0.2", "127.0.0.3"], 1));
    dns.signal(nix::sys::signal::Signal::SIGHUP);
    edge_testkit::eventually(
        Duration::from_secs(15),
        "two backends for one name",
        || async {
            let pools = c.get(&node.admin_url("/pools")).await.json();
            (pools[0]["backends"].as_array().map_or(0, Vec::len) == 2).then_some(pools)
        },
    )
    .await;
    let after = requests_on(&c.get(&node.admin_url("/pools")).await.json(), "127.0.0.3").unwrap();
    assert!(
        after >= before,
        "the backend at 127.0.0.3 kept its counts: {before} → {after}"
    );
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..20 {
        seen.insert(who(c.get(&node.url("web", &format!("/obj/r{i}"))).await));
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    let metrics = c.get(&node.admin_url("/metrics")).await.text();
    assert!(
        metrics.contains(&format!(
            "edge_backend_name_addresses{{name=\"origin.test:{port}\",pool=\"p\"}} 2"
        )),
        "{metrics}"
    );
}

/// The Python checkers `scripts/deps.sh test` installs (`<target>/pyenv`).
fn pyenv_tool(name: &str) -> std::path::PathBuf {
    let tool = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("../pyenv/bin")
        .join(name);
    assert!(
        tool.exists(),
        "{} is missing: run scripts/deps.sh test (make test does)",
        tool.display()
    );
    tool
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_valid_and_says_what_each_call_answers() {
    let node = EdgeNode::start(BIN, &config_with_secrets());
    let c = Client::new();
    let r = c.get(&node.admin_url("/openapi.json")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let doc = r.json();

    // Valid OpenAPI 3.1, by the reference validator.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, r.text()).unwrap();
    let out = std::process::Command::new(pyenv_tool("openapi-spec-validator"))
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Every call answers one of the statuses its entry lists: reads as
    // they are (no parameters), and calls that change state without the
    // token (401, nothing changed).
    let mut called = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{pool}", "p")
            .replace("{backend}", "127.0.0.1:1")
            .replace("{site}", "s")
            .replace("{action}", "drain");
        for (method, op) in item.as_object().unwrap() {
            let documented: Vec<&String> = op["responses"].as_object().unwrap().keys().collect();
            let (m, token) = match method.as_str() {
                "get" => (Method::GET, None),
                "post" => (Method::POST, None),
                "delete" => (Method::DELETE, None),
                other => panic!("{other} {path}"),
            };
            let (status, body) = admin(&c, &node, m, &concrete, token).await;
            assert!(
                documented.iter().any(|s| **s == status.to_string()),
                "{method} {concrete} answered {status} ({body}); documented: {documented:?}"
            );
            if method != "get" {
                assert_eq!(status, 401, "{method} {concrete}");
            }
            called += 1;
        }
    }
    assert!(called >= 30, "{called}");
}

/// The metric names a PromQL expression reads (`edge_…`, `process_…`),
/// with a histogram's `_bucket`, `_sum` and `_count` kept as written.
fn promql_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &expr[i..];
        let starts = (rest.starts_with("edge_") || rest.starts_with("process_"))
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
        if starts {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            names.push(rest[..end].to_string());
            i += end;
        } else {
            i += 1;
        }
    }
    names
}

fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(e) = m.get("expr").and_then(|e| e.as_str()) {
                out.push(e.to_string());
            }
            m.values().for_each(|x| exprs(x, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| exprs(x, out)),
        _ => {}
    }
}

#[test]
fn promql_names_are_read_from_expressions() {
    assert_eq!(
        promql_names(
            "sum by (route) (rate(edge_http_requests_total{class=\"5xx\"}[5m])) / \
             histogram_quantile(0.99, rate(edge_upstream_response_seconds_bucket[5m])) + my_edge_x"
        ),
        [
            "edge_http_requests_total",
            "edge_upstream_response_seconds_bucket"
        ]
    );
}

/// Every query of the shipped Grafana dashboard reads metrics a node
/// exports once it has served what the dashboard shows: requests, cache
/// hits and misses with evictions, a live playlist's prefetch, CMCD from
/// players, a signed-URL refusal and a country refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_reads_only_metrics_a_node_exports() {
    let o = edge_testkit::origin("o").await;
    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:0"

[dns.locator]
cidr = [{{ prefix = "127.0.0.3/32", lat = 48.8, lon = 2.3, country = "FR" }}]

[cache]
ram_size = "1 MiB"

[[pool]]
name = "origin"
backends = [{{ address = "{o}" }}]

[[route]]
name = "paid"
pool = "origin"
[route.match]
path_prefix = "/paid/"
[route.auth]
kind = "hmac"
secret_env = "EDGE_TEST_GRAFANA_KEY"

[[route]]
name = "not-fr"
respond = {{ status = 200, body = "ok" }}
geo = {{ deny = ["FR"] }}
[route.match]
path_prefix = "/not-fr/"

[[route]]
name = "video"
pool = "origin"
[route.cache]
enabled = true
"#,
        o = o.addr()
    );
    let node = EdgeNode::start_with(
        BIN,
        &config,
        &[],
        &[("EDGE_TEST_GRAFANA_KEY", "grafana-test-key-0123456789")],
    );
    node.wait_ready(Duration::from_secs(20));
    let c = Client::new();
    let url = |p: &str| node.url("web", p);
    assert_eq!(c.get(&url("/paid/x")).await.status, 403);
    let fr = Client::bound_to("127.0.0.3".parse().unwrap());
    assert_eq!(fr.get(&url("/not-fr/x")).await.status, 451);
    let cmcd = "CMCD=bl%3D900%2Cbr%3D3200%2Cbs%2Cmtp%3D25400%2Cot%3Dv%2Csid%3D%22s1%22";
    // 24 objects of 96 KiB through a 1 MiB RAM tier: misses, then
    // evictions; each twice: hits.
    for round in 0..2 {
        for n in 0..24 {
            let r = c.get(&url(&format!("/obj/{n}.ts?size=98304&{cmcd}"))).await;
            assert_eq!(r.status, 200, "round {round} object {n}");
        }
    }
    // A live playlist makes edge prefetch its next segments.
    assert_eq!(c.get(&url("/live/news/low/index.m3u8")).await.status, 200);

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/grafana/edge-dashboard.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    assert!(queries.len() >= 10, "{queries:?}");
    let mut wanted: Vec<String> = queries.iter().flat_map(|q| promql_names(q)).collect();
    wanted.sort();
    wanted.dedup();
    // Prefetches finish in the background: read again until they show.
    let mut missing = Vec::new();
    for _ in 0..100 {
        let metrics = c.get(&node.admin_url("/metrics")).await.text();
        let exported = |name: &str| {
            metrics
                .lines()
                .any(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        };
        missing = wanted.iter().filter(|n| !exported(n)).cloned().collect();
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        missing.is_empty(),
        "the dashboard reads metrics no node exports: {missing:?}"
    );
}

/// Request bytes are counted by route, and latency by route and status
/// class (a class's series appears at its first answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bytes_and_latency_by_status_class_are_counted() {
    let o = edge_testkit::origin("o").await;
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[listener]]\nname = \"web\"\nkind = \"http\"\naddress = \"127.0.0.1:0\"\n\
         [[pool]]\nname = \"p\"\nbackends = [{{ address = \"{}\" }}]\n[[route]]\nname = \"api\"\npool = \"p\"\n",
        o.addr()
    );
    let node = EdgeNode::start(BIN, &config);
    node.wait_ready(Duration::from_secs(20));
    let c = Client::new();
    let body = "x".repeat(1000);
    // What the client saw, by class: the metrics must say the same.
    let mut seen = [0u32; 6];
    for _ in 0..3 {
        let r = c
            .request(Method::POST, &node.url("web", "/obj/a"), &[], body.clone())
            .await
            .unwrap();
        seen[usize::from(r.status / 100)] += 1;
    }
    for path in ["/obj/a", "/no-such-thing"] {
        seen[usize::from(c.get(&node.url("web", path)).await.status / 100)] += 1;
    }
    assert!(seen[2] >= 1 && seen[4] >= 1, "{seen:?}");
    // A request is counted when its log line is made, just after its
    // response is sent: wait for all five.
    let metrics =
        edge_testkit::eventually(Duration::from_secs(10), "five requests counted", || async {
            let m = c.get(&node.admin_url("/metrics")).await.text();
            (edge_testkit::metric_sum(&m, "edge_http_requests_total", &["route=\"api\""]) >= 5.0)
                .then_some(m)
        })
        .await;
    let value = |line: &str| -> Option<f64> {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .and_then(|v| v.trim().parse().ok())
    };
    assert_eq!(
        value("edge_http_request_body_bytes_total{route=\"api\"}"),
        Some(3000.0),
        "{metrics}"
    );
    for (class, n) in seen.iter().enumerate().skip(1) {
        let line = format!(
            "edge_http_request_duration_seconds_count{{class=\"{class}xx\",route=\"api\"}}"
        );
        let want = (*n > 0).then_some(f64::from(*n));
        assert_eq!(
            value(&line),
            want,
            "{line}: a series only for a class answered"
        );
    }
}
