//! L4 (TCP) load balancing end to end: real TCP backends on loopback behind
//! the `edge` binary's tcp listeners.

// Helpers in test files may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use edge_testkit::{eventually, metric_sum, origin, Client, EdgeNode};
use http::Method;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

const BIN: &str = env!("CARGO_BIN_EXE_edge");
const TOKEN: &str = "l4-test-token-0123456789";

/// What a test backend does with each connection.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Sends "<name>\n", then echoes until EOF, then closes its write side.
    GreetAndEcho,
    /// Reads to EOF, then sends `n` bytes of a pattern and closes.
    ReplyAfterEof(usize),
    /// Reads a PROXY header (v1 line or v2 block) and sends it back as
    /// "<source ip>:<port>\n", then echoes.
    ReportProxyHeader,
}

struct Backend {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(31) % 251) as u8
}

async fn read_proxy_source(s: &mut BufReader<TcpStream>) -> String {
    let first = s.fill_buf().await.unwrap()[0];
    if first == b'P' {
        let mut line = String::new();
        s.read_line(&mut line).await.unwrap();
        let parts: Vec<&str> = line.trim_end().split(' ').collect();
        return format!("v1 {}:{}", parts[2], parts[4]);
    }
    let mut head = [0u8; 16];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(&head[..12], b"\r\n\r\n\0\r\nQUIT\n");
    let len = u16::from_be_bytes([head[14], head[15]]) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    assert_eq!(head[13], 0x11, "IPv4 over TCP");
    let ip = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
    let port = u16::from_be_bytes([body[8], body[9]]);
    format!("v2 {ip}:{port}")
}

async fn backend(name: &'static str, behaviour: Behaviour) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut s = BufReader::new(stream);
                match behaviour {
                    Behaviour::GreetAndEcho => {
                        s.get_mut()
                            .write_all(format!("{name}\n").as_bytes())
                            .await
                            .unwrap();
                    }
                    Behaviour::ReportProxyHeader => {
                        let source = read_proxy_source(&mut s).await;
                        s.get_mut()
                            .write_all(format!("{source}\n").as_bytes())
                            .await
                            .unwrap();
                    }
                    Behaviour::ReplyAfterEof(n) => {
                        let mut sink = Vec::new();
                        s.read_to_end(&mut sink).await.unwrap();
                        let reply: Vec<u8> = (0..n).map(pattern).collect();
                        let _ = s.get_mut().write_all(&reply).await;
                        let _ = s.get_mut().shutdown().await;
                        return;
                    }
                }
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.get_mut().write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = s.get_mut().shutdown().await;
            });
        }
    });
    Backend { addr, task }
}

/// A loopback port with nothing listening.
fn config(pool: &str, listener_extra: &str) -> String {
    format!(
        r#"
[server]
threads = 2
access_log = false

[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"

[[listener]]
name = "l4"
kind = "tcp"
address = "127.0.0.1:0"
pool = "p"
{listener_extra}

[[pool]]
name = "p"
{pool}
"#
    )
}

fn backends(addrs: &[SocketAddr]) -> String {
    let list: Vec<String> = addrs
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    format!("backends = [{}]", list.join(", "))
}

async fn start(config: &str) -> EdgeNode {
    let node = EdgeNode::start(BIN, config);
    node.wait_ready(Duration::from_secs(30));
    node
}

/// Connects through edge and reads the backend's greeting line.
async fn greeted(addr: SocketAddr) -> (String, BufReader<TcpStream>) {
    let mut s = BufReader::new(TcpStream::connect(addr).await.unwrap());
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_line(&mut line))
        .await
        .expect("greeting in time")
        .unwrap();
    (line.trim_end().to_string(), s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_bytes_cross_both_ways_unchanged_with_half_close() {
    let echo = backend("echo", Behaviour::GreetAndEcho).await;
    let node = start(&config(&backends(&[echo.addr]), "")).await;
    let (name, stream) = greeted(node.addr("l4")).await;
    assert_eq!(name, "echo");
    let (mut rd, mut wr) = stream.into_inner().into_split();
    const SIZE: usize = 24 * 1024 * 1024;
    let writer = tokio::spawn(async move {
        let data: Vec<u8> = (0..SIZE).map(pattern).collect();
        for chunk in data.chunks(100_003) {
            wr.write_all(chunk).await.unwrap();
        }
        // Half-close: the echo of everything must still come back.
        wr.shutdown().await.unwrap();
        wr
    });
    let mut got = Vec::with_capacity(SIZE);
    tokio::time::timeout(Duration::from_secs(60), rd.read_to_end(&mut got))
        .await
        .expect("echo in time")
        .unwrap();
    let _wr = writer.await.unwrap();
    assert_eq!(got.len(), SIZE);
    assert!(
        got.iter().enumerate().all(|(i, b)| *b == pattern(i)),
        "bytes differ"
    );

    // The reply a backend sends after the client's EOF arrives whole.
    let late = backend("late", Behaviour::ReplyAfterEof(9 * 1024 * 1024 + 7)).await;
    node.write_config(&config(&backends(&[late.addr]), ""));
    let c = Client::new();
    let auth = format!("Bearer {TOKEN}");
    let r = c
        .request(
            Method::POST,
            &node.admin_url("/reload"),
            &[("authorization", &auth)],
            "",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let mut s = TcpStream::connect(node.addr("l4")).await.unwrap();
    s.write_all(b"request, then EOF").await.unwrap();
    s.shutdown().await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.len(), 9 * 1024 * 1024 + 7);
    assert!(reply.iter().enumerate().all(|(i, b)| *b == pattern(i)));

    let metrics = c.get(&node.admin_url("/metrics")).await.text();
    let bytes_in = metric_sum(
        &metrics,
        "edge_tcp_bytes_total",
        &["listener=\"l4\"", "direction=\"in\""],
    );
    assert!(bytes_in >= SIZE as f64, "bytes in counted: {bytes_in}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_backend_is_skipped_on_connect() {
    let live = backend("live", Behaviour::GreetAndEcho).await;
    // Reserved, never listening: another test's listener cannot take it.
    let dead = edge_testkit::refused_addr();
    let pool = format!(
        "algorithm = \"round_robin\"\n{}\ntimeouts = {{ connect = \"1s\" }}",
        backends(&[dead, live.addr])
    );
    let node = start(&config(&pool, "")).await;
    for _ in 0..6 {
        let (name, _s) = greeted(node.addr("l4")).await;
        assert_eq!(name, "live");
    }
    let metrics = Client::new().get(&node.admin_url("/metrics")).await.text();
    assert!(
        metric_sum(
            &metrics,
            "edge_tcp_connect_failures_total",
            &["listener=\"l4\""]
        ) >= 1.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_fills_the_emptier_backend() {
    let a = backend("a", Behaviour::GreetAndEcho).await;
    let b = backend("b", Behaviour::GreetAndEcho).await;
    let pool = format!(
        "algorithm = \"least_connections\"\n{}",
        backends(&[a.addr, b.addr])
    );
    let node = start(&config(&pool, "")).await;
    let mut open = Vec::new();
    for _ in 0..6 {
        open.push(greeted(node.addr("l4")).await);
    }
    let on_a = open.iter().filter(|(n, _)| n == "a").count();
    assert_eq!(on_a, 3, "six long-lived connections split evenly");
    // Close a's three: the next three all go to a (0 open) rather than b (3).
    open.retain(|(n, _)| n == "b");
    let node_addr = node.addr("l4");
    eventually(Duration::from_secs(5), "a's connections closed", || async {
        let metrics = Client::new().get(&node.admin_url("/metrics")).await.text();
        let open_a = metric_sum(
            &metrics,
            "edge_tcp_backend_connections_open",
            &[&format!("backend=\"{}\"", a.addr)],
        );
        (open_a == 0.0).then_some(())
    })
    .await;
    let mut next = Vec::new();
    for _ in 0..3 {
        next.push(greeted(node_addr).await.0);
    }
    assert_eq!(next, vec!["a", "a", "a"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_tells_backends_the_client_address() {
    let reporter = backend("r", Behaviour::ReportProxyHeader).await;
    for version in ["v1", "v2"] {
        let pool = format!(
            "proxy_protocol = \"{version}\"\n{}",
            backends(&[reporter.addr])
        );
        let node = start(&config(&pool, "")).await;
        let client_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7));
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(client_ip, 0)).unwrap();
        let stream = socket.connect(node.addr("l4")).await.unwrap();
        let local = stream.local_addr().unwrap();
        let mut s = BufReader::new(stream);
        let mut line = String::new();
        s.read_line(&mut line).await.unwrap();
        assert_eq!(line.trim_end(), format!("{version} {local}"));
    }

    // A trusted balancer in front sends v1; the backend gets v2 naming the
    // original client.
    let pool = format!("proxy_protocol = \"v2\"\n{}", backends(&[reporter.addr]));
    let node = start(&config(&pool, "accept_proxy_protocol = true")).await;
    let mut s = BufReader::new(TcpStream::connect(node.addr("l4")).await.unwrap());
    s.get_mut()
        .write_all(b"PROXY TCP4 198.51.100.9 127.0.0.1 40000 443\r\nhello")
        .await
        .unwrap();
    let mut line = String::new();
    s.read_line(&mut line).await.unwrap();
    assert_eq!(line.trim_end(), "v2 198.51.100.9:40000");
    let mut echoed = [0u8; 5];
    s.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"hello", "bytes after the header are relayed");

    // Without a valid header the connection is closed.
    let mut bad = TcpStream::connect(node.addr("l4")).await.unwrap();
    bad.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), bad.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_listeners_accept_proxy_protocol_from_a_balancer_in_front() {
    let o = origin("o").await;
    let config = format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[[listener]]
name = "web"
kind = "http"
address = "127.0.0.1:0"
accept_proxy_protocol = true
[[route]]
name = "all"
pool = "p"
[[pool]]
name = "p"
backends = [{{ address = "{}" }}]
"#,
        o.addr()
    );
    let node = start(&config).await;
    let mut s = TcpStream::connect(node.addr("web")).await.unwrap();
    s.write_all(
        b"PROXY TCP4 203.0.113.5 127.0.0.1 5555 80\r\nGET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut reply))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("203.0.113.5"),
        "X-Forwarded-For names the client: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_and_rates_hold() {
    let echo = backend("e", Behaviour::GreetAndEcho).await;
    let node = start(&config(&backends(&[echo.addr]), "max_connections = 2")).await;
    let first = greeted(node.addr("l4")).await;
    let _second = greeted(node.addr("l4")).await;
    // The third waits in the backlog: no greeting while two are open.
    let mut third = BufReader::new(TcpStream::connect(node.addr("l4")).await.unwrap());
    let mut line = String::new();
    let waited = tokio::time::timeout(Duration::from_millis(700), third.read_line(&mut line)).await;
    assert!(
        waited.is_err(),
        "third connection served over the cap: {line:?}"
    );
    drop(first);
    tokio::time::timeout(Duration::from_secs(5), third.read_line(&mut line))
        .await
        .expect("served once a slot frees")
        .unwrap();
    assert_eq!(line.trim_end(), "e");

    // Connection rate: 3 at once, then 1 per 10 s.
    let node = start(&config(
        &backends(&[echo.addr]),
        "connection_rate = \"1/10s\"\nconnection_burst = 3",
    ))
    .await;
    let mut served = 0;
    let mut open = Vec::new();
    for _ in 0..10 {
        let mut s = BufReader::new(TcpStream::connect(node.addr("l4")).await.unwrap());
        let mut line = String::new();
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_secs(5), s.read_line(&mut line)).await
        {
            if n > 0 {
                served += 1;
            }
        }
        open.push(s);
    }
    assert_eq!(served, 3);
    let metrics = Client::new().get(&node.admin_url("/metrics")).await.text();
    assert_eq!(
        metric_sum(
            &metrics,
            "edge_tcp_rejected_total",
            &["reason=\"rate_limited\""]
        ),
        7.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_a_backend_sends_new_connections_elsewhere_and_idle_ones_close() {
    let a = backend("a", Behaviour::GreetAndEcho).await;
    let b = backend("b", Behaviour::GreetAndEcho).await;
    let node = start(&config(
        &backends(&[a.addr, b.addr]),
        "idle_timeout = \"1s\"",
    ))
    .await;
    let auth = format!("Bearer {TOKEN}");
    let r = Client::new()
        .request(
            Method::POST,
            &node.admin_url(&format!("/pools/p/backends/{}/drain", a.addr)),
            &[("authorization", &auth)],
            "",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    for _ in 0..4 {
        assert_eq!(greeted(node.addr("l4")).await.0, "b");
    }
    // Idle for over a second: edge closes the connection.
    let (_, mut s) = greeted(node.addr("l4")).await;
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("closed by the idle timeout")
        .unwrap();
    assert_eq!(n, 0);
}

/// One access line per TCP connection: client, backend, bytes each way,
/// duration, why it closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tcp_connection_is_logged_once() {
    let echo = backend("echo", Behaviour::GreetAndEcho).await;
    let config =
        config(&backends(&[echo.addr]), "").replace("access_log = false", "access_log = true");
    let node = start(&config).await;
    let (name, stream) = greeted(node.addr("l4")).await;
    assert_eq!(name, "echo");
    let (mut rd, mut wr) = stream.into_inner().into_split();
    wr.write_all(b"hello").await.unwrap();
    wr.shutdown().await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, b"hello");
    node.wait_for_line("close=\"done\"", Duration::from_secs(5));
    let out = node.output();
    let line = out
        .lines()
        .find(|l| l.contains("kind=\"tcp\"") && l.contains("close=\"done\""))
        .unwrap();
    assert!(line.contains("bytes_in=5 "), "{line}");
    assert!(
        line.contains(&format!("backend=\"{}\"", echo.addr))
            || line.contains(&echo.addr.to_string()),
        "{line}"
    );
    assert!(line.contains("total_ms="), "{line}");
    // The greeting "echo\n" and the echo itself.
    assert!(line.contains("bytes_out=10 "), "{line}");
}
