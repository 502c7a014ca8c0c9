//! Test helpers shared by edge's crates: an HTTP client, origins on port 0,
//! the `edge` binary as a child process whose bound addresses are read from
//! its output, and polling with a deadline. Every server binds loopback port 0.

mod client;
pub mod dns;
mod node;
pub mod raw;
pub mod recorder;
mod redis;
pub mod scripted;
mod stall;
pub mod tls;

use std::future::Future;
use std::time::{Duration, Instant};

pub use client::{h2c, Client, Response};
pub use dns::{DnsClient, DnsQuery};
pub use edge_origin::{Faults, Origin, OriginConfig, RunningOrigin};
pub use node::{pid_alive, ChildGuard, EdgeNode, NodeOutput, PidGuard};
pub use raw::{RawConn, RawResponse};
pub use recorder::{Recorded, Recorder};
pub use redis::RedisServer;
pub use scripted::{Reply, Scripted};
pub use stall::Stall;

/// Starts an origin with the default catalog on 127.0.0.1:0.
pub async fn origin(name: &str) -> RunningOrigin {
    origin_with(OriginConfig {
        name: name.to_string(),
        ..OriginConfig::default()
    })
    .await
}

pub async fn origin_with(config: OriginConfig) -> RunningOrigin {
    Origin::new(config)
        .spawn(([127, 0, 0, 1], 0).into())
        .await
        .expect("bind an origin on 127.0.0.1:0")
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `limit`
/// with `what`. For waiting on background state, never for asserting speed.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The sum of a Prometheus metric's samples whose line has every one of
/// `labels` (e.g. `listener="l4"`), from `/metrics` text.
/// A loopback address where a connection is refused at once, reserved for
/// the rest of the test process: a socket bound there and never listening
/// (a SYN gets a reset), so no other test's listener can take the port, as
/// one could after binding a listener and dropping it.
pub fn refused_addr() -> std::net::SocketAddr {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let any: std::net::SocketAddr = ([127, 0, 0, 1], 0).into();
    socket.bind(&any.into()).expect("bind 127.0.0.1:0");
    let addr = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("bound address");
    // Kept open (not listening) until the process exits.
    std::mem::forget(socket);
    addr
}

/// A loopback port for a child process that must be told its port before
/// it starts (Pebble cannot report a port 0 binding). Taken from below the
/// kernel's ephemeral range (32768-60999 by default), where no port 0 bind
/// and no outgoing connection of another test lands, so the port is still
/// free when the child binds it; free on TCP and UDP both (a DNS server
/// binds both); tried by binding, from a start that differs per process
/// and per call.
pub fn port_for_child() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    const LOW: u16 = 20_000;
    const SPAN: u16 = 12_000;
    let start = (std::process::id() % u32::from(SPAN)) as u16;
    for _ in 0..SPAN {
        let step = NEXT.fetch_add(1, Ordering::Relaxed) % SPAN;
        let port = LOW + (start + step) % SPAN;
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        if tcp.is_ok() && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {LOW}..{}", LOW + SPAN)
}

/// An access log line's `bytes=` (a panic when it has none).
pub fn logged_bytes(line: &str) -> usize {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix("bytes="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no bytes= in {line}"))
}

pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                && labels.iter().all(|x| l.contains(x))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
