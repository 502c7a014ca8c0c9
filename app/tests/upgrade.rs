//! Binary upgrades (`POST /upgrade`, SIGUSR2) and socket activation: real
//! processes on loopback, a strict keep-alive load that counts every request
//! not answered 200 (no client retries), DNS over UDP and TCP, the disk tier.

// Helpers in test files may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edge_testkit::{
    eventually, origin, pid_alive, Client, DnsClient, DnsQuery, EdgeNode, PidGuard, RunningOrigin,
};
use http::Method;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use nix::sys::signal::Signal;

const BIN: &str = env!("CARGO_BIN_EXE_edge");
const TOKEN: &str = "upgrade-test-token-0123456789";

fn config(o: &RunningOrigin, web: &str, disk: &std::path::Path) -> String {
    format!(
        r#"
[server]
threads = 2
access_log = false
shutdown_delay = "0s"
grace_period = "20s"

[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"

[[listener]]
name = "web"
kind = "http"
address = "{web}"

[[listener]]
name = "dns"
kind = "dns"
address = "127.0.0.1:0"

[[pool]]
name = "origin"
backends = [{{ address = "{}" }}]

[[route]]
name = "video"
pool = "origin"
[route.cache]

[cache]
disk_path = "{}"
disk_size = "64 MiB"

[dns]
threads = 2
[[dns.zone]]
name = "cdn.test."
ns = ["ns1.cdn.test."]
soa = {{ mname = "ns1.cdn.test.", rname = "hostmaster.cdn.test.", serial = 1, minimum = "30s" }}
records = [ {{ name = "www", type = "A", value = "192.0.2.80" }} ]
"#,
        o.addr(),
        disk.display()
    )
}

async fn upgrade(node: &EdgeNode, token: &str) -> (u16, serde_json::Value) {
    // A client of its own: no keep-alive connection to a process that
    // has handed over.
    let r = Client::new()
        .request(
            Method::POST,
            &node.admin_url("/upgrade"),
            &[("authorization", &format!("Bearer {token}"))],
            "",
        )
        .await
        .unwrap();
    let v = serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null);
    (r.status, v)
}

async fn disk_objects(node: &EdgeNode) -> u64 {
    let v = Client::new().get(&node.admin_url("/cache")).await.json();
    v["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tier"] == "disk")
        .and_then(|t| t["objects"].as_u64())
        .unwrap_or(0)
}

/// Strict keep-alive HTTP/1.1 clients: one request at a time per
/// connection, a new connection only after one the server said it closes
/// (or after a failure). Every request not answered 200 in full is a
/// failure, with its reason; nothing is retried.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<Mutex<Vec<String>>>,
    /// What each client is doing (for a stall's report).
    at: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Clone)]
struct Shared {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<Mutex<Vec<String>>>,
    at: Arc<Mutex<Vec<String>>>,
}

impl Load {
    fn start(addr: SocketAddr, clients: usize) -> Self {
        let shared = Shared {
            stop: Arc::new(AtomicBool::new(false)),
            ok: Arc::new(AtomicUsize::new(0)),
            failed: Arc::new(Mutex::new(Vec::new())),
            at: Arc::new(Mutex::new(vec![String::new(); clients])),
        };
        let tasks = (0..clients)
            .map(|i| {
                let shared = shared.clone();
                tokio::spawn(async move { client(addr, i, shared).await })
            })
            .collect();
        Load {
            stop: shared.stop,
            ok: shared.ok,
            failed: shared.failed,
            at: shared.at,
            tasks,
        }
    }

    fn ok(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits until `target` requests have been answered (at most 30 s); on
    /// a stall, fails with what the clients and the node were doing.
    async fn progress(&self, target: usize, node: &EdgeNode) {
        for _ in 0..1500 {
            if self.ok() >= target {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "stalled at {} of {target} answered; failures {:?}; clients at: {:?}\n{}",
            self.ok(),
            self.failed.lock().unwrap(),
            self.at.lock().unwrap(),
            node.output()
        );
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let failed = self.failed.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failed)
    }
}

async fn client(addr: SocketAddr, i: usize, sh: Shared) {
    let fail = |why: String| sh.failed.lock().unwrap().push(why);
    let state = |what: String| sh.at.lock().unwrap()[i] = what;
    // Bounded: at most 100,000 requests per client, or until stopped.
    let mut budget = 100_000usize;
    'connection: while budget > 0 && !sh.stop.load(Ordering::Relaxed) {
        state("connecting".into());
        let tcp = match tokio::net::TcpStream::connect(addr).await {
            Ok(t) => t,
            Err(e) => {
                fail(format!("connect: {e}"));
                budget -= 1;
                continue;
            }
        };
        let port = tcp.local_addr().map_or(0, |a| a.port());
        let (mut sender, conn) =
            match hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await {
                Ok(x) => x,
                Err(e) => {
                    fail(format!("handshake: {e}"));
                    continue;
                }
            };
        tokio::spawn(conn);
        while budget > 0 && !sh.stop.load(Ordering::Relaxed) {
            state(format!("port {port}: waiting to send"));
            // Closed after a response that said so: a new connection, no request lost.
            if sender.ready().await.is_err() {
                continue 'connection;
            }
            budget -= 1;
            let path = format!("/vod/bbb/mid/seg_{}.ts", 1 + (i + budget) % 4);
            state(format!("port {port}: sent {path}"));
            let request = hyper::Request::get(path)
                .header("host", "media.test")
                .body(Empty::<Bytes>::new())
                .unwrap();
            let response = match sender.send_request(request).await {
                Ok(r) => r,
                Err(e) => {
                    fail(format!("request: {e}"));
                    continue 'connection;
                }
            };
            let status = response.status();
            let close = response
                .headers()
                .get("connection")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            state(format!("port {port}: reading the body ({status})"));
            match response.into_body().collect().await {
                Ok(_) if status == 200 => {
                    sh.ok.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => fail(format!("status {status}")),
                Err(e) => {
                    fail(format!("body: {e}"));
                    continue 'connection;
                }
            }
            if close {
                continue 'connection;
            }
        }
    }
    state("done".into());
}

async fn dns_answers(node: &EdgeNode) {
    let dns = DnsClient::new(node.addr("dns"));
    let q = DnsQuery::new("www.cdn.test.", edge_testkit::dns::DnsType::A);
    for m in [dns.udp(&q).await, dns.tcp(&q).await] {
        let m = m.unwrap();
        assert_eq!(
            edge_testkit::dns::addresses(&m),
            vec!["192.0.2.80".parse::<std::net::IpAddr>().unwrap()]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_upgrades_under_keep_alive_load_lose_no_request_and_keep_the_disk_cache() {
    let o = origin("o").await;
    let disk = tempfile::tempdir().unwrap();
    let mut node = EdgeNode::start(BIN, &config(&o, "127.0.0.1:0", disk.path()));
    let web = node.addr("web");
    let c = Client::new();
    // An object on disk before any upgrade.
    let kept = "/vod/bbb/mid/seg_9.ts";
    let url = node.url("web", kept);
    let host = [("host", "media.test")];
    assert_eq!(
        c.get_with(&url, &host).await.header("x-cache"),
        Some("MISS")
    );
    eventually(Duration::from_secs(10), "the object on disk", || async {
        (disk_objects(&node).await >= 1).then_some(())
    })
    .await;
    dns_answers(&node).await;

    let load = Load::start(web, 8);
    let mut pids = vec![node.pid()];
    let mut guards = Vec::new();
    for round in 0..10 {
        let before = load.ok();
        let (status, v) = upgrade(&node, TOKEN).await;
        assert_eq!(status, 200, "upgrade {round}: {v}\n{}", node.output());
        let pid = v["pid"].as_u64().unwrap() as u32;
        assert_eq!(v["old_pid"].as_u64().unwrap() as u32, *pids.last().unwrap());
        guards.push(PidGuard(pid));
        pids.push(pid);
        dns_answers(&node).await;
        // Traffic through every generation.
        load.progress(before + 200, &node).await;
    }
    let (ok, failed) = load.finish().await;
    eprintln!(
        "10 upgrades under load: {ok} requests answered 200, {} failed",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(20)]
    );
    assert!(ok >= 2000, "{ok}");

    // Every old process drained and exited; the newest serves.
    assert!(
        node.wait_exit(Duration::from_secs(30)).is_some(),
        "the first process exited"
    );
    for &pid in &pids[1..pids.len() - 1] {
        eventually(
            Duration::from_secs(30),
            "an old process to exit",
            || async { (!pid_alive(pid)).then_some(()) },
        )
        .await;
    }
    assert!(pid_alive(*pids.last().unwrap()));
    // The disk tier went from process to process: still a hit, from disk.
    let r = Client::new().get_with(&url, &host).await;
    assert_eq!(r.header("x-cache"), Some("HIT DISK"), "{}", node.output());
    assert_eq!(o.stats().path(kept), 1);
    dns_answers(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_that_fails_leaves_the_old_process_serving_with_its_disk_cache() {
    let o = origin("o").await;
    let disk = tempfile::tempdir().unwrap();
    let cfg = config(&o, "127.0.0.1:0", disk.path());
    let node = EdgeNode::start(BIN, &cfg);
    let c = Client::new();
    let host = [("host", "media.test")];
    let url = node.url("web", "/vod/bbb/mid/seg_3.ts");
    c.get_with(&url, &host).await;
    eventually(Duration::from_secs(10), "the object on disk", || async {
        (disk_objects(&node).await >= 1).then_some(())
    })
    .await;

    // No token, a wrong one: refused before anything starts.
    assert_eq!(upgrade(&node, "wrong-token-0123456789").await.0, 401);
    // What a reload refuses, an upgrade refuses before starting anything,
    // and says why: a broken file, one cut short (no routes), one that
    // drops the admin token.
    node.write_config("[[listener]]\nname = 7\n");
    let (status, v) = upgrade(&node, TOKEN).await;
    assert_eq!(status, 422, "{v}");
    assert!(v["error"].as_str().unwrap().contains("listener[0]"), "{v}");
    let (route, cache) = (cfg.find("[[route]]").unwrap(), cfg.find("[cache]").unwrap());
    node.write_config(&format!("{}{}", &cfg[..route], &cfg[cache..]));
    let (status, v) = upgrade(&node, TOKEN).await;
    assert_eq!(status, 422, "{v}");
    assert!(v["error"].as_str().unwrap().contains("no routes"), "{v}");
    node.write_config(&cfg.replace(&format!("token = \"{TOKEN}\""), ""));
    let (status, v) = upgrade(&node, TOKEN).await;
    assert_eq!(status, 422, "{v}");
    assert!(v["error"].as_str().unwrap().contains("admin token"), "{v}");
    // Valid, but the new process cannot start: it cannot bind its listener.
    node.write_config(&config(&o, "192.0.2.1:8080", disk.path()));
    let (status, v) = upgrade(&node, TOKEN).await;
    assert_eq!(status, 500, "{v}");
    assert!(v["error"].as_str().unwrap().contains("exited"), "{v}");
    // The old one serves on, with its disk tier open again.
    let r = c.get_with(&url, &host).await;
    assert_eq!(r.status, 200);
    assert_eq!(disk_objects(&node).await, 1);
    assert!(Client::new().get(&node.admin_url("/ready")).await.status == 200);
    dns_answers(&node).await;

    // Fixed, it goes through (the failed attempt left nothing held).
    node.write_config(&cfg);
    let (status, v) = upgrade(&node, TOKEN).await;
    assert_eq!(status, 200, "{v}");
    let _new = PidGuard(v["pid"].as_u64().unwrap() as u32);
    // A new connection: the old process still finishes what it has.
    let r = Client::new().get_with(&url, &host).await;
    assert_eq!(r.header("x-cache"), Some("HIT DISK"));
    assert_eq!(o.stats().path("/vod/bbb/mid/seg_3.ts"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_sockets_are_served_and_sigusr2_upgrades() {
    use command_fds::{CommandFdExt, FdMapping};
    let o = origin("o").await;
    let disk = tempfile::tempdir().unwrap();
    // Bound and listening here, as systemd does: edge cannot bind it again
    // (no SO_REUSEPORT), so serving proves the passed socket is used.
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let fd: OwnedFd = socket.into();
    let cfg = config(&o, &addr.to_string(), disk.path());
    let mut node = EdgeNode::start_customized(BIN, &cfg, move |cmd| {
        cmd.fd_mappings(vec![FdMapping {
            parent_fd: fd,
            child_fd: 3,
        }])
        .unwrap()
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "web");
    });
    assert_eq!(node.addr("web"), addr);
    let c = Client::new();
    let host = [("host", "media.test")];
    let url = format!("http://{addr}/vod/bbb/mid/seg_1.ts");
    assert_eq!(c.get_with(&url, &host).await.status, 200);

    let load = Load::start(addr, 4);
    eventually(Duration::from_secs(30), "requests", || async {
        (load.ok() >= 100).then_some(())
    })
    .await;
    node.signal(Signal::SIGUSR2);
    node.wait_for_line("upgraded=true", Duration::from_secs(60));
    let before = load.ok();
    load.progress(before + 200, &node).await;
    let (ok, failed) = load.finish().await;
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(20)]
    );
    assert!(
        node.wait_exit(Duration::from_secs(30)).is_some(),
        "the old process exited"
    );
    let out = node.output();
    let pid: u32 = out
        .lines()
        .find(|l| l.contains("the new process serves"))
        .and_then(|l| l.split("pid=").nth(1))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no new pid in:\n{out}"));
    let _new = PidGuard(pid);
    assert_eq!(c.get_with(&url, &host).await.status, 200);
    dns_answers(&node).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_reload_and_edge_upgrade_reach_the_node_a_config_names() {
    let o = origin("o").await;
    let disk = tempfile::tempdir().unwrap();
    let cfg = config(&o, "127.0.0.1:0", disk.path());
    let node = EdgeNode::start(BIN, &cfg);
    // The same file with the admin address the node was given.
    let admin = node.addr("admin");
    let cli_cfg = node.dir().join("cli.toml");
    std::fs::write(
        &cli_cfg,
        cfg.replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{admin}\"")),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(BIN).args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let cli = cli_cfg.to_str().unwrap();
    let (code, out, err) = run(&["reload", "-c", cli]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("\"applied\""), "{out}");

    let (code, out, err) = run(&["upgrade", "--config", cli]);
    assert_eq!(code, Some(0), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let _new = PidGuard(v["pid"].as_u64().unwrap() as u32);
    assert_eq!(v["old_pid"].as_u64().unwrap() as u32, node.pid());
    let r = Client::new()
        .get_with(
            &node.url("web", "/vod/bbb/mid/seg_1.ts"),
            &[("host", "media.test")],
        )
        .await;
    assert_eq!(r.status, 200);

    // Without a token in the file: refused before asking.
    let no_token = node.dir().join("no-token.toml");
    std::fs::write(
        &no_token,
        format!("[admin]\nlisten = \"{admin}\"\n[[listener]]\nname = \"web\"\nkind = \"http\"\naddress = \"127.0.0.1:0\"\n[[route]]\nname = \"r\"\nrespond = {{ status = 200 }}\n"),
    )
    .unwrap();
    let (code, _, err) = run(&["upgrade", "-c", no_token.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no admin.token"), "{err}");
    // Nothing listening there: a clear error, not a hang.
    let closed = edge_testkit::refused_addr();
    let gone = node.dir().join("gone.toml");
    std::fs::write(
        &gone,
        cfg.replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{closed}\""),
        ),
    )
    .unwrap();
    let (code, _, err) = run(&["reload", "-c", gone.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(err.contains(&format!("admin API at {closed}")), "{err}");
    // A wrong token: the node's 401 is the answer.
    let wrong = node.dir().join("wrong.toml");
    std::fs::write(
        &wrong,
        std::fs::read_to_string(&cli_cfg)
            .unwrap()
            .replace(TOKEN, "another-token-0123456789"),
    )
    .unwrap();
    let (code, _, err) = run(&["reload", "-c", wrong.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("401"), "{err}");
}

/// Children of `pid` (from /proc), and whether each catches SIGTERM yet.
fn children(pid: u32) -> Vec<(u32, bool)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{child}/status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        if field("PPid:").and_then(|p| p.parse::<u32>().ok()) != Some(pid) {
            continue;
        }
        // SigCgt is a hex mask; SIGTERM is signal 15, bit 14.
        let catches = field("SigCgt:")
            .and_then(|m| u64::from_str_radix(&m, 16).ok())
            .is_some_and(|m| m & (1 << 14) != 0);
        out.push((child, catches));
    }
    out
}

/// A stop signal during an upgrade, before the new process serves, is
/// obeyed and leaves one process: to the new one, the upgrade is abandoned
/// and the old one serves on; to the old one, the new one is stopped too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_signal_during_an_upgrade_leaves_exactly_one_process() {
    let o = origin("o").await;
    let disk = tempfile::tempdir().unwrap();
    let cfg = config(&o, "127.0.0.1:0", disk.path());
    // A name server that never answers: a new process reading this config
    // spends seconds on its backend name before it serves.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let slow = format!(
        "{cfg}\n[resolver]\nnameservers = [\"{}\"]\ntimeout = \"2s\"\n\n[[pool]]\nname = \"named\"\nbackends = [{{ address = \"origin.invalid.test:80\" }}]\n",
        silent.local_addr().unwrap()
    );
    for target in ["new", "old"] {
        let mut node = EdgeNode::start(BIN, &cfg);
        node.write_config(&slow);
        let pending = tokio::spawn({
            let url = node.admin_url("/upgrade");
            async move {
                Client::new()
                    .request(
                        Method::POST,
                        &url,
                        &[("authorization", &format!("Bearer {TOKEN}"))],
                        "",
                    )
                    .await
            }
        });
        // The new process exists and has its signal handlers.
        let child = eventually(Duration::from_secs(20), "the new process", || async {
            children(node.pid())
                .into_iter()
                .find(|(_, catches)| *catches)
                .map(|(pid, _)| pid)
        })
        .await;
        let _guard = PidGuard(child);
        if target == "new" {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(child as i32), Signal::SIGTERM)
                .unwrap();
            let r = pending.await.unwrap().unwrap();
            assert_eq!(r.status, 500, "{}", r.text());
            assert!(r.text().contains("exited"), "{}", r.text());
            eventually(Duration::from_secs(10), "the new process gone", || async {
                (!pid_alive(child)).then_some(())
            })
            .await;
            // The old one serves on, disk tier included.
            let r = Client::new()
                .get_with(
                    &node.url("web", "/vod/bbb/mid/seg_1.ts"),
                    &[("host", "media.test")],
                )
                .await;
            assert_eq!(r.status, 200);
            assert_eq!(
                Client::new().get(&node.admin_url("/ready")).await.status,
                200
            );
        } else {
            node.signal(Signal::SIGTERM);
            // The answer says why, if it gets out before the process ends.
            if let Ok(Ok(r)) = pending.await {
                assert_eq!(r.status, 500, "{}", r.text());
                assert!(r.text().contains("stop signal"), "{}", r.text());
            }
            let status = node.wait_exit(Duration::from_secs(30));
            assert!(status.is_some(), "the old process stopped");
            eventually(Duration::from_secs(10), "the new process gone", || async {
                (!pid_alive(child)).then_some(())
            })
            .await;
        }
    }
}
