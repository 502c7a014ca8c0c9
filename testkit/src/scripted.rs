//! An HTTP/1.1 origin on 127.0.0.1:0 that answers each path exactly as a
//! test scripts it, to check a cache against the header fields under test.
//!
//! Each path has a default [`Reply`] and a queue of one-shot replies used
//! first. A request with `If-None-Match` or `If-Modified-Since` gets the
//! reply's `revalidated` answer when it has one (a 304, typically). A
//! reply with `ranges` answers a single `Range: bytes=a-b` with 206 and
//! `Content-Range`; without it `Range` is ignored (200, the whole body), as
//! many origins do. `Date` is sent only when the script sets it. Every
//! request is recorded, in order, with its path.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::recorder::{read_request, Recorded};

/// One scripted answer.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Answer single byte ranges with 206.
    pub ranges: bool,
    /// Bytes written just before the response, in the same write (a 103).
    pub interim: Option<Vec<u8>>,
    /// Waited before answering.
    pub delay: Duration,
    /// The answer to a conditional request, if it differs.
    pub revalidated: Option<Box<Reply>>,
    /// Close the connection without answering.
    pub drop: bool,
    /// Send the body as chunks of this many bytes (`Transfer-Encoding: chunked`).
    pub chunk_size: Option<usize>,
    /// Send the body without `Content-Length`, delimited by closing the connection.
    pub close_delimited: bool,
}

impl Reply {
    /// `200` with `body` and these fields.
    pub fn ok(body: &str, headers: &[(&str, &str)]) -> Reply {
        Reply::new(200, body, headers)
    }

    pub fn new(status: u16, body: &str, headers: &[(&str, &str)]) -> Reply {
        Reply {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
            ..Reply::default()
        }
    }

    /// This reply, answering conditional requests with `r`.
    pub fn revalidated_with(mut self, r: Reply) -> Reply {
        self.revalidated = Some(Box::new(r));
        self
    }

    pub fn with_ranges(mut self) -> Reply {
        self.ranges = true;
        self
    }

    pub fn with_delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }

    pub fn with_interim(mut self, bytes: &[u8]) -> Reply {
        self.interim = Some(bytes.to_vec());
        self
    }

    /// A reply that closes the connection without a byte.
    /// This reply with its body in chunks of `size` bytes.
    pub fn chunked(mut self, size: usize) -> Reply {
        self.chunk_size = Some(size.max(1));
        self
    }

    /// This reply delimited by closing the connection.
    pub fn close_delimited(mut self) -> Reply {
        self.close_delimited = true;
        self
    }

    pub fn dropped() -> Reply {
        Reply {
            drop: true,
            ..Reply::default()
        }
    }
}

#[derive(Default)]
struct Script {
    default: HashMap<String, Reply>,
    once: HashMap<String, VecDeque<Reply>>,
    requests: Vec<(String, Recorded)>,
}

/// A running scripted origin. Stops when dropped.
pub struct Scripted {
    addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Scripted {
    pub async fn start() -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind a scripted origin on 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let script = Arc::new(Mutex::new(Script::default()));
        let s = script.clone();
        let task = tokio::spawn(async move {
            let mut accepted = 0;
            while let Ok((stream, _)) = listener.accept().await {
                accepted += 1;
                tokio::spawn(serve(stream, accepted, s.clone()));
            }
        });
        Self { addr, script, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `path` (with its query) answers `reply` from now on.
    pub fn set(&self, path: &str, reply: Reply) {
        let mut s = self.script.lock().expect("script lock");
        s.default.insert(path.to_string(), reply);
        s.once.remove(path);
    }

    /// The next request for `path` answers `reply` (queued after earlier ones).
    pub fn once(&self, path: &str, reply: Reply) {
        self.script
            .lock()
            .expect("script lock")
            .once
            .entry(path.to_string())
            .or_default()
            .push_back(reply);
    }

    /// Requests received for `path` so far.
    pub fn requests(&self, path: &str) -> Vec<Recorded> {
        self.script
            .lock()
            .expect("script lock")
            .requests
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, r)| r.clone())
            .collect()
    }

    pub fn count(&self, path: &str) -> usize {
        self.requests(path).len()
    }

    /// Every request received so far, with its target, in order.
    pub fn all(&self) -> Vec<(String, Recorded)> {
        self.script.lock().expect("script lock").requests.clone()
    }
}

fn byte_range(req: &Recorded, len: usize) -> Option<(usize, usize)> {
    let v = req.header("range")?;
    let spec = v.strip_prefix("bytes=")?;
    if spec.contains(',') || len == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: usize = n.parse().ok()?;
            (len.saturating_sub(n), len - 1)
        }
        (a, "") => (a.parse().ok()?, len - 1),
        (a, b) => (a.parse().ok()?, b.parse::<usize>().ok()?.min(len - 1)),
    };
    (start <= end && start < len).then_some((start, end))
}

/// Serves one connection, the `connection`th accepted (what its requests'
/// [`Recorded::connection`] says).
async fn serve(mut stream: TcpStream, connection: usize, script: Arc<Mutex<Script>>) {
    let mut buf = Vec::new();
    while let Some(mut req) = read_request(&mut stream, &mut buf).await {
        req.connection = connection;
        let line = req.request_line();
        let path = line.split(' ').nth(1).unwrap_or("/").to_string();
        let head_only = line.starts_with("HEAD ");
        let conditional =
            req.header("if-none-match").is_some() || req.header("if-modified-since").is_some();
        let reply = {
            let mut s = script.lock().expect("script lock");
            s.requests.push((path.clone(), req.clone()));
            let once = s.once.get_mut(&path).and_then(VecDeque::pop_front);
            once.or_else(|| s.default.get(&path).cloned())
        };
        let Some(mut reply) = reply else {
            let resp = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
            if stream.write_all(resp).await.is_err() {
                return;
            }
            continue;
        };
        if conditional {
            if let Some(r) = reply.revalidated.take() {
                reply = *r;
            }
        }
        if !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        if reply.drop {
            return;
        }
        let mut status = reply.status;
        let mut body = reply.body.clone();
        let mut extra = String::new();
        if reply.ranges && status == 200 {
            if let Some((a, b)) = byte_range(&req, body.len()) {
                extra = format!("Content-Range: bytes {a}-{b}/{}\r\n", body.len());
                body = body[a..=b].to_vec();
                status = 206;
            }
        }
        let mut out = reply.interim.clone().unwrap_or_default();
        out.extend_from_slice(format!("HTTP/1.1 {status} Scripted\r\n").as_bytes());
        let bodiless = status == 304 || status == 204 || (100..200).contains(&status);
        if bodiless {
        } else if reply.chunk_size.is_some() {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        } else if reply.close_delimited {
            out.extend_from_slice(b"Connection: close\r\n");
        } else {
            out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        out.extend_from_slice(extra.as_bytes());
        for (k, v) in &reply.headers {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        if !head_only && !bodiless {
            match reply.chunk_size {
                Some(size) => {
                    for chunk in body.chunks(size) {
                        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                        out.extend_from_slice(chunk);
                        out.extend_from_slice(b"\r\n");
                    }
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                None => out.extend_from_slice(&body),
            }
        }
        if stream.write_all(&out).await.is_err() {
            return;
        }
        if reply.close_delimited && !bodiless {
            return;
        }
    }
}
