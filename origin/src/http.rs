//! The origin's HTTP behaviour: conditional requests (304), ranges (206, 416,
//! multipart/byteranges), HEAD, fault injection, streamed bodies, and the
//! control endpoints under `/_origin/`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::sync::atomic::{AtomicI32, AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::stream;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use parking_lot::RwLock;

use crate::catalog::{query_param, Catalog, Class, NotFound, Resolved};
use crate::clock::Clock;
use crate::content::Content;
use crate::faults::{Drip, Faults};
use crate::range::{parse_range, RangeRequest};
use crate::stats::Stats;

pub type Body = BoxBody<Bytes, io::Error>;

/// Largest chunk a body is sent in.
const CHUNK: usize = 64 * 1024;
/// Echo reads at most this much request body.
const MAX_ECHO_BODY: usize = 10 << 20;

/// Everything a request handler shares.
pub(crate) struct State {
    pub name: String,
    pub catalog: Catalog,
    pub stats: Stats,
    pub faults: RwLock<Faults>,
    pub health_status: AtomicU16,
    /// Load (0–100) reported in `X-Backend-Load` and the health body; -1: none.
    pub load: AtomicI32,
    pub clock: Arc<dyn Clock>,
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

fn empty() -> Body {
    full(Bytes::new())
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let body: String = body.into();
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let body = serde_json::to_vec_pretty(value)
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes());
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// Decrements the in-flight gauge when the response (and its body) is done.
struct InFlight(Arc<State>);

impl InFlight {
    fn new(state: &Arc<State>) -> Self {
        state.stats.enter();
        Self(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.stats.exit();
    }
}

pub(crate) async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let mut response = if let Some(rest) = path.strip_prefix("/_origin/") {
        let rest = rest.to_string();
        state.stats.request(Class::Control, &path);
        control(&state, &rest, req).await
    } else if path == "/echo" || path.starts_with("/echo/") {
        echo(&state, req).await
    } else if path.starts_with("/ll/") {
        let query = req.uri().query().unwrap_or("").to_string();
        let _guard = InFlight::new(&state);
        match crate::llhls::serve(&state, &path, &query).await {
            Some(r) => r,
            None => {
                state.stats.request(Class::Other, &path);
                state.stats.status(Class::Other, 404);
                text(StatusCode::NOT_FOUND, "not found\n")
            }
        }
    } else {
        content(&state, req).await
    };
    let headers = response.headers_mut();
    headers.insert(header::SERVER, HeaderValue::from_static("edge-origin"));
    set(headers, "x-origin-name", &state.name);
    set(headers, "date", &httpdate::fmt_http_date(state.clock.now()));
    let load = state.load.load(Ordering::Relaxed);
    if load >= 0 {
        set(headers, "x-backend-load", &load.to_string());
    }
    Ok(response)
}

async fn content(state: &Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let guard = InFlight::new(state);
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    let is_head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !is_head {
        state.stats.request(Class::Other, path);
        state.stats.status(Class::Other, 405);
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let now = state.clock.now();
    let resolved = state.catalog.resolve(path, query, now);
    let class = resolved.as_ref().map_or(Class::Other, |r| r.class);
    state.stats.request(class, path);

    // Faults: the global ones, overlaid by the request's own.
    let request_faults = req
        .headers()
        .get("x-origin-fault")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| query_param(query, "fault"));
    let faults = match request_faults.map(|f| Faults::parse(&f)) {
        Some(Err(e)) => {
            state.stats.status(class, 400);
            return text(StatusCode::BAD_REQUEST, format!("bad fault: {e}\n"));
        }
        Some(Ok(f)) => state.faults.read().overlaid(&f),
        None => state.faults.read().clone(),
    };
    if let Some(latency) = faults.latency {
        tokio::time::sleep(latency).await;
    }
    if let Some(status) = faults.error_now() {
        state.stats.status(class, status);
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return text(code, format!("injected fault: {status}\n"));
    }

    let mut resolved = match resolved {
        Ok(r) => r,
        Err(e) => {
            let (status, msg) = match e {
                NotFound::NoSuchPath => (StatusCode::NOT_FOUND, "not found\n".to_string()),
                NotFound::OutsideLiveWindow => (
                    StatusCode::NOT_FOUND,
                    "outside the live window\n".to_string(),
                ),
                NotFound::BadParameter(p) => {
                    (StatusCode::BAD_REQUEST, format!("bad parameter: {p}\n"))
                }
            };
            state.stats.status(class, status.as_u16());
            let mut r = text(status, msg);
            // A real packager lets a 404 for a future live segment be cached briefly.
            set(r.headers_mut(), "cache-control", "max-age=1");
            return r;
        }
    };

    resolved.vary_by(|name| req.headers().get(name).and_then(|v| v.to_str().ok()));
    let mut response = Response::new(empty());
    describe(response.headers_mut(), &resolved);
    if not_modified(req.headers(), &resolved) {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        state.stats.status(class, 304);
        return response;
    }

    let len = resolved.content.len();
    let range_header = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| resolved.status == 200 && if_range_holds(req.headers(), &resolved));
    let ranges = range_header.map_or(RangeRequest::Whole, |h| parse_range(h, len));
    let headers = response.headers_mut();
    let (status, pieces): (StatusCode, VecDeque<Piece>) = match ranges {
        RangeRequest::Whole => {
            let status = StatusCode::from_u16(resolved.status).unwrap_or(StatusCode::OK);
            set(headers, "content-length", &len.to_string());
            (status, VecDeque::from([Piece::Range(0, len)]))
        }
        RangeRequest::Unsatisfiable => {
            set(headers, "content-range", &format!("bytes */{len}"));
            headers.remove(header::CACHE_CONTROL);
            *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            state.stats.status(class, 416);
            return response;
        }
        RangeRequest::Ranges(ranges) if ranges.len() == 1 => {
            let (start, end) = ranges[0];
            set(
                headers,
                "content-range",
                &format!("bytes {start}-{}/{len}", end - 1),
            );
            set(headers, "content-length", &(end - start).to_string());
            (
                StatusCode::PARTIAL_CONTENT,
                VecDeque::from([Piece::Range(start, end)]),
            )
        }
        RangeRequest::Ranges(ranges) => {
            let boundary = format!("edge{:016x}", crate::content::splitmix64(len ^ ranges[0].0));
            let mut pieces = VecDeque::new();
            let mut total = 0u64;
            for (start, end) in &ranges {
                let head = format!(
                    "\r\n--{boundary}\r\nContent-Type: {}\r\nContent-Range: bytes {start}-{}/{len}\r\n\r\n",
                    resolved.content_type,
                    end - 1
                );
                total += head.len() as u64 + (end - start);
                pieces.push_back(Piece::Bytes(Bytes::from(head)));
                pieces.push_back(Piece::Range(*start, *end));
            }
            let tail = format!("\r\n--{boundary}--\r\n");
            total += tail.len() as u64;
            pieces.push_back(Piece::Bytes(Bytes::from(tail)));
            set(
                headers,
                "content-type",
                &format!("multipart/byteranges; boundary={boundary}"),
            );
            set(headers, "content-length", &total.to_string());
            (StatusCode::PARTIAL_CONTENT, pieces)
        }
    };
    *response.status_mut() = status;
    state.stats.status(class, response.status().as_u16());
    if is_head {
        return response;
    }
    *response.body_mut() = stream_body(Sender {
        pieces,
        content: resolved.content,
        drip: faults.drip,
        abort_after: faults.abort_after,
        sent: 0,
        first: true,
        class,
        state: state.clone(),
        _guard: guard,
    });
    response
}

/// The headers that describe a representation (also sent with a 304).
fn describe(headers: &mut HeaderMap, r: &Resolved) {
    set(headers, "content-type", r.content_type);
    set(headers, "etag", &r.etag);
    set(
        headers,
        "last-modified",
        &httpdate::fmt_http_date(r.last_modified),
    );
    set(headers, "cache-control", &r.cache_control);
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    for (name, value) in &r.extra_headers {
        if let (Ok(n), Ok(v)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(n, v);
        }
    }
}

fn strip_weak(tag: &str) -> &str {
    tag.trim().strip_prefix("W/").unwrap_or(tag.trim())
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// RFC 9110 §13.2.2: If-None-Match first; If-Modified-Since only without it.
fn not_modified(req: &HeaderMap, r: &Resolved) -> bool {
    if r.status != 200 {
        return false;
    }
    if let Some(inm) = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        return inm.trim() == "*" || inm.split(',').any(|t| strip_weak(t) == strip_weak(&r.etag));
    }
    if let Some(ims) = req
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
    {
        return secs(r.last_modified) <= secs(ims);
    }
    false
}

/// If-Range: a strong ETag match or an exact date; otherwise the Range is ignored.
fn if_range_holds(req: &HeaderMap, r: &Resolved) -> bool {
    let Some(v) = req.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let v = v.trim();
    if v.starts_with('"') {
        return v == r.etag;
    }
    if v.starts_with("W/") {
        return false;
    }
    httpdate::parse_http_date(v).is_ok_and(|d| secs(d) == secs(r.last_modified))
}

enum Piece {
    Bytes(Bytes),
    Range(u64, u64),
}

struct Sender {
    pieces: VecDeque<Piece>,
    content: Content,
    drip: Option<Drip>,
    abort_after: Option<u64>,
    sent: u64,
    first: bool,
    class: Class,
    state: Arc<State>,
    _guard: InFlight,
}

impl Sender {
    /// The next chunk, an injected abort, or the end.
    async fn next(&mut self) -> Option<Result<Bytes, io::Error>> {
        if self.abort_after.is_some_and(|limit| self.sent >= limit) {
            self.pieces.clear();
            // Pending for a moment lets the server flush what was sent, so the
            // cut comes mid-body, not before the headers.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            return Some(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "injected abort",
            )));
        }
        let mut limit = self.drip.map_or(CHUNK, |d| d.bytes.min(CHUNK));
        if let Some(abort) = self.abort_after {
            limit = limit.min((abort - self.sent) as usize);
        }
        let chunk = match self.pieces.front_mut()? {
            Piece::Bytes(b) => {
                let n = limit.min(b.len());
                let chunk = b.split_to(n);
                if b.is_empty() {
                    self.pieces.pop_front();
                }
                chunk
            }
            Piece::Range(start, end) => {
                let n = (limit as u64).min(*end - *start);
                let chunk = self.content.slice(*start, *start + n);
                *start += n;
                if start == end {
                    self.pieces.pop_front();
                }
                chunk
            }
        };
        if let Some(d) = self.drip {
            if !self.first {
                tokio::time::sleep(d.every).await;
            }
        }
        self.first = false;
        self.sent += chunk.len() as u64;
        self.state.stats.body_bytes(self.class, chunk.len() as u64);
        Some(Ok(chunk))
    }
}

fn stream_body(sender: Sender) -> Body {
    let s = stream::unfold(sender, |mut s| async move {
        let item = s.next().await?;
        Some((item.map(Frame::data), s))
    });
    BodyExt::boxed(StreamBody::new(s))
}

async fn echo(state: &Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let _guard = InFlight::new(state);
    state.stats.request(Class::Echo, req.uri().path());
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_ECHO_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            state.stats.status(Class::Echo, 413);
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body: {e}\n"),
            );
        }
    };
    let mut headers = serde_json::Map::new();
    for (name, value) in &parts.headers {
        let v = serde_json::Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned());
        match headers.get_mut(name.as_str()) {
            Some(serde_json::Value::Array(list)) => list.push(v),
            Some(existing) => *existing = serde_json::Value::Array(vec![existing.clone(), v]),
            None => {
                headers.insert(name.as_str().to_string(), v);
            }
        }
    }
    let value = serde_json::json!({
        "origin": state.name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query().unwrap_or(""),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_bytes": body.len(),
    });
    state.stats.status(Class::Echo, 200);
    state.stats.body_bytes(Class::Echo, body.len() as u64);
    let mut r = json(StatusCode::OK, &value);
    set(r.headers_mut(), "cache-control", "no-store");
    r
}

async fn control(state: &Arc<State>, rest: &str, req: Request<Incoming>) -> Response<Body> {
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().clone();
    match (method, rest) {
        (Method::GET, "stats") => json(StatusCode::OK, &state.stats.snapshot(&state.name)),
        (Method::POST, "stats/reset") => {
            state.stats.reset();
            text(StatusCode::OK, "reset\n")
        }
        (Method::GET | Method::HEAD, "health") => {
            let status = state.health_status.load(Ordering::Relaxed);
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let load = state.load.load(Ordering::Relaxed);
            let body = if load >= 0 {
                format!("ok load={load}\n")
            } else {
                "ok\n".to_string()
            };
            let mut r = text(code, body);
            set(r.headers_mut(), "cache-control", "no-store");
            r
        }
        (Method::POST | Method::PUT, "health") => {
            match query_param(&query, "status").and_then(|s| s.parse::<u16>().ok()) {
                Some(s) if (200..600).contains(&s) => {
                    state.health_status.store(s, Ordering::Relaxed);
                    text(StatusCode::OK, format!("health status {s}\n"))
                }
                _ => text(StatusCode::BAD_REQUEST, "use ?status=200..599\n"),
            }
        }
        (Method::GET, "faults") => json(StatusCode::OK, &*state.faults.read()),
        (Method::POST | Method::PUT, "faults") => {
            let spec = match query_param(&query, "set") {
                Some(s) => s,
                None => match Limited::new(req.into_body(), 64 * 1024).collect().await {
                    Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
                    Err(e) => return text(StatusCode::BAD_REQUEST, format!("body: {e}\n")),
                },
            };
            match Faults::parse(&spec) {
                Ok(f) => {
                    *state.faults.write() = f.clone();
                    json(StatusCode::OK, &f)
                }
                Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
            }
        }
        (Method::DELETE, "faults") => {
            *state.faults.write() = Faults::default();
            text(StatusCode::OK, "cleared\n")
        }
        (Method::POST | Method::PUT, "load") => {
            match query_param(&query, "value").and_then(|v| v.parse::<i32>().ok()) {
                Some(v) if (0..=100).contains(&v) => {
                    state.load.store(v, Ordering::Relaxed);
                    text(StatusCode::OK, format!("load {v}\n"))
                }
                _ => text(StatusCode::BAD_REQUEST, "use ?value=0..100\n"),
            }
        }
        (Method::DELETE, "load") => {
            state.load.store(-1, Ordering::Relaxed);
            text(StatusCode::OK, "cleared\n")
        }
        (_, "stats" | "stats/reset" | "health" | "faults" | "load") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "unknown control endpoint\n"),
    }
}

pub(crate) fn new_state(
    name: String,
    catalog: Catalog,
    faults: Faults,
    clock: Arc<dyn Clock>,
) -> State {
    State {
        name,
        catalog,
        stats: Stats::default(),
        faults: RwLock::new(faults),
        health_status: AtomicU16::new(200),
        load: AtomicI32::new(-1),
        clock,
    }
}
