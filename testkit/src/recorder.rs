//! A strict HTTP/1.1 backend on 127.0.0.1:0 that records every request it
//! receives byte for byte, to check what a proxy forwards.
//!
//! It reads a head up to its first CRLF CRLF and a body by `Content-Length`
//! or chunked framing (anything else it cannot frame is recorded as
//! `malformed` and the connection is closed, as a strict server would). It
//! answers `200` with a body naming the request line it received, and with
//! hop-by-hop fields that must never reach a client: `Connection: keep-alive,
//! X-Hop-Secret`, `X-Hop-Secret`, `Keep-Alive`, `Proxy-Connection`,
//! `Upgrade`, `Proxy-Authenticate`. Paths with a `/cached/` segment are
//! cacheable (`max-age=300`); others are `no-store`. A path ending in
//! `/redirect` answers `301` to an https URL; one ending in
//! `/close-delimited` answers without a length and closes. A WebSocket
//! upgrade request gets `101` and an echo of every byte after it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the backend read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The head, through its empty line, as received.
    pub head: Vec<u8>,
    /// The body after decoding its framing.
    pub body: Vec<u8>,
    /// The backend could not frame it.
    pub malformed: bool,
    /// When its head had arrived.
    pub at: std::time::Instant,
    /// The connection it came on: 1 for the backend's first accepted
    /// connection, then in accept order.
    pub connection: usize,
}

impl Recorded {
    pub fn head_text(&self) -> String {
        String::from_utf8_lossy(&self.head).into_owned()
    }

    pub fn request_line(&self) -> String {
        self.head_text()
            .split("\r\n")
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// Every value of the field `name` (case-insensitive), in order.
    pub fn headers(&self, name: &str) -> Vec<String> {
        self.head_text()
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers(name).into_iter().next()
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Recorded>>,
    /// Answer the first request on each connection only; close on the next
    /// one without a byte (a backend that closed an idle connection).
    one_per_connection: AtomicBool,
}

/// A running recording backend. Stops when dropped.
pub struct Recorder {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    pub async fn start() -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind a recorder on 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let task = tokio::spawn(async move {
            let mut accepted = 0;
            while let Ok((stream, _)) = listener.accept().await {
                accepted += 1;
                tokio::spawn(serve(stream, s.clone(), accepted));
            }
        });
        Self { addr, shared, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The requests received since the last `take`.
    pub fn take(&self) -> Vec<Recorded> {
        std::mem::take(&mut *self.shared.requests.lock().expect("recorder lock"))
    }

    pub fn count(&self) -> usize {
        self.shared.requests.lock().expect("recorder lock").len()
    }

    /// From now on, each connection serves one request and is closed by the
    /// backend when a second one arrives.
    pub fn one_request_per_connection(&self, on: bool) {
        self.shared.one_per_connection.store(on, Ordering::SeqCst);
    }
}

async fn serve(mut stream: TcpStream, shared: Arc<Shared>, connection: usize) {
    let mut buf = Vec::new();
    let mut served = 0usize;
    loop {
        let Some(mut req) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        req.connection = connection;
        let malformed = req.malformed;
        if served > 0 && shared.one_per_connection.load(Ordering::SeqCst) {
            // Closed "while idle": the request is never answered.
            return;
        }
        let line = req.request_line();
        let path = line.split(' ').nth(1).unwrap_or("/").to_string();
        shared.requests.lock().expect("recorder lock").push(req);
        if malformed {
            let _ = stream
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            return;
        }
        served += 1;
        let rec = shared
            .requests
            .lock()
            .expect("recorder lock")
            .last()
            .cloned();
        let websocket = rec
            .as_ref()
            .and_then(|r| r.header("upgrade"))
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
        if websocket {
            // Switch, then echo every byte back.
            let _ = stream
                .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
                .await;
            let _ = stream.write_all(&buf).await;
            let (mut r, mut w) = stream.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
            return;
        }
        if path.ends_with("/close-delimited") {
            // No length: the body ends when the connection does.
            let _ = stream
                .write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: no-store\r\n\r\nupstream saw: {line}\n").as_bytes())
                .await;
            return;
        }
        let body = format!("upstream saw: {line}\n");
        let head_only = line.starts_with("HEAD ");
        let (status, extra) = if path.ends_with("/redirect") {
            (
                "301 Moved Permanently",
                format!("Location: https://secure.test{path}\r\nCache-Control: max-age=300\r\n"),
            )
        } else if path.contains("/cached/") {
            ("200 OK", "Cache-Control: max-age=300\r\n".to_string())
        } else {
            ("200 OK", "Cache-Control: no-store\r\n".to_string())
        };
        let resp = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n{extra}\
             Connection: keep-alive, X-Hop-Secret\r\nX-Hop-Secret: 1\r\nKeep-Alive: timeout=30\r\n\
             Proxy-Connection: keep-alive\r\nUpgrade: h2c\r\nProxy-Authenticate: Basic\r\n\
             X-End-To-End: 1\r\n\r\n{}",
            body.len(),
            if head_only { "" } else { body.as_str() }
        );
        if stream.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Reads one request; `None` at a clean end or an error.
pub(crate) async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Recorded> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 1 << 20 || !fill(stream, buf).await {
            return None;
        }
    };
    let head: Vec<u8> = buf.drain(..head_end).collect();
    let text = String::from_utf8_lossy(&head).to_lowercase();
    let field = |name: &str| -> Vec<String> {
        text.split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.trim().to_string())
            .collect()
    };
    let (lengths, codings) = (field("content-length"), field("transfer-encoding"));
    let mut rec = Recorded {
        at: std::time::Instant::now(),
        connection: 0,
        head,
        body: Vec::new(),
        malformed: false,
    };
    if text.contains('\n') && text.split("\r\n").any(|l| l.contains('\n')) {
        rec.malformed = true;
        return Some(rec);
    }
    match (lengths.as_slice(), codings.as_slice()) {
        ([], []) => {}
        ([n], []) => {
            let Ok(n) = n.parse::<usize>() else {
                rec.malformed = true;
                return Some(rec);
            };
            while buf.len() < n {
                if !fill(stream, buf).await {
                    return None;
                }
            }
            rec.body = buf.drain(..n).collect();
        }
        ([], [te]) if te == "chunked" => match read_chunked(stream, buf).await {
            Some(body) => rec.body = body,
            None => rec.malformed = true,
        },
        _ => rec.malformed = true,
    }
    Some(rec)
}

async fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = find(buf, b"\r\n") {
                break i;
            }
            if !fill(stream, buf).await {
                return None;
            }
        };
        let line: Vec<u8> = buf.drain(..line_end + 2).collect();
        let size_text = String::from_utf8_lossy(&line[..line_end]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                let end = loop {
                    if let Some(i) = find(buf, b"\r\n") {
                        break i;
                    }
                    if !fill(stream, buf).await {
                        return None;
                    }
                };
                buf.drain(..end + 2);
                if end == 0 {
                    return Some(body);
                }
            }
        }
        while buf.len() < size + 2 {
            if !fill(stream, buf).await {
                return None;
            }
        }
        body.extend(buf.drain(..size));
        if buf.drain(..2).as_slice() != b"\r\n" {
            return None;
        }
    }
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
