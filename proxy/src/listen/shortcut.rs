//! The HTTP/1 connection loop's shortcut (issue 17): a request head the
//! door's reader let through is parsed here, and a fresh RAM hit is
//! answered without a pingora session ([`EdgeProxy::shortcut`]). Anything
//! else is handed to pingora as the bytes came (its pipelined prefix), so
//! pingora parses and answers it exactly as without the shortcut.
//!
//! Only a head that cannot change the connection is taken: `GET` or
//! `HEAD`, HTTP/1.1, no `Content-Length`, `Transfer-Encoding`,
//! `Connection`, `Upgrade`, `Expect` or `TE` field (a refused head's
//! stand-in says `Connection: close`, so it always goes to pingora).
//!
//! [`EdgeProxy::shortcut`]: crate::service::EdgeProxy::shortcut

use std::net::IpAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use pingora_core::protocols::Stream;
use pingora_http::RequestHeader;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::conn::Connection;
use crate::service::{ClientConn, EdgeProxy, LeanPass};
use pingora_core::protocols::http::v1::wait_timer::WaitTimer;

/// Fields a head the shortcut takes does not carry.
const NOT_TAKEN: [&str; 6] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "expect",
    "te",
];

/// The most fields a head the shortcut takes has (more: pingora's).
const MAX_FIELDS: usize = 32;

/// Bytes read at a time while no bytes are held.
const READ_SIZE: usize = 4096;

pub(super) enum Taken {
    /// Answered: the connection goes on with the next request.
    Answered,
    /// pingora's: `held` holds the bytes read for it.
    Pass,
    /// The client ended the connection (or writing to it failed).
    Closed,
}

/// Reads the next request head into `held` (unless a complete one is held
/// already) and answers it if it is a fresh RAM hit the shortcut gives.
pub(super) async fn take(
    proxy: &EdgeProxy,
    connector: &pingora_core::connectors::http::Connector,
    stream: &mut Stream,
    held: &mut BytesMut,
    conn: &Arc<Connection>,
    client: Option<IpAddr>,
    wait_timer: &mut Option<WaitTimer>,
) -> Taken {
    if held.is_empty() {
        held.reserve(READ_SIZE);
        match stream.read_buf(held).await {
            Ok(0) | Err(_) => return Taken::Closed,
            Ok(_) => {}
        }
    }
    // The route from the request line and `Host` as they came, before the
    // head is parsed: most requests on a listener that also passes through
    // are not the shortcut's, and go to pingora having cost this glance
    // and a route lookup (`instr.sh`'s `mixed`).
    let Some(glance) = glance(held) else {
        return Taken::Pass;
    };
    let host = glance.host.clone().map(|r| &held[r]);
    let Some(candidate) = proxy.shortcut_may_take(host, &held[glance.target.clone()], glance.get)
    else {
        return Taken::Pass;
    };
    // The route was found from what the parse reads too.
    let Some((len, fields)) = scan(held).filter(|(_, f)| {
        f.method_get == glance.get && f.target == glance.target && f.host == glance.host
    }) else {
        return Taken::Pass;
    };
    let head = held.split_to(len).freeze();
    if candidate.lean_pass() {
        // A pass-through (`service/lean_pass.rs`).
        let passed = match build(&head, &fields) {
            Some(mut req) => {
                let client_conn = ClientConn {
                    stream,
                    held,
                    conn,
                    client,
                    wait_timer,
                };
                proxy
                    .lean_pass(connector, client_conn, &mut req, candidate)
                    .await
            }
            None => LeanPass::Pass,
        };
        return match passed {
            LeanPass::Answered => Taken::Answered,
            LeanPass::Closed => Taken::Closed,
            LeanPass::Pass | LeanPass::Carried => {
                put_back(held, head);
                Taken::Pass
            }
        };
    }
    let answer = build(&head, &fields).and_then(|mut req| {
        let a = proxy.shortcut(&mut req, client, candidate, conn)?;
        Some((req, a))
    });
    let Some((req, answer)) = answer else {
        put_back(held, head);
        return Taken::Pass;
    };
    let begun = conn.begin();
    let status = answer.status();
    let write = write(stream, &answer.head, answer.body.as_ref()).await;
    let written = write.is_ok();
    conn.answered(begun.index, if written { status } else { 0 });
    conn.end();
    proxy.shortcut_done(&req, client, answer.done, write);
    if written {
        Taken::Answered
    } else {
        Taken::Closed
    }
}

/// A head not taken, as it came, in front of what follows it.
fn put_back(held: &mut BytesMut, head: Bytes) {
    let mut back = BytesMut::from(head);
    back.unsplit(std::mem::take(held));
    *held = back;
}

/// Writes the head and the body, then flushes; a failure says how far it
/// got (for the access log, as pingora's path counts a cut-off body) and
/// what was being written, in the words pingora's HTTP/1 writer uses for
/// the same failure (`writing response header`, `flushing response
/// header`, `while writing body`, `flushing body`), so the log line reads
/// the same.
async fn write(
    stream: &mut Stream,
    head: &[u8],
    body: Option<&Bytes>,
) -> Result<(), crate::service::ShortcutCut> {
    const HEAD: &str = "writing response header";
    const BODY: &str = "while writing body";
    let cut = |error, context, head_out, body_out| crate::service::ShortcutCut {
        error,
        context,
        head_out,
        body_out,
    };
    if let Err(e) = stream.write_all(head).await {
        return Err(cut(e, HEAD, false, 0));
    }
    let mut out = 0u64;
    if let Some(body) = body {
        let mut rest = &body[..];
        while !rest.is_empty() {
            match stream.write(rest).await {
                Ok(0) => return Err(cut(std::io::ErrorKind::WriteZero.into(), BODY, true, out)),
                Ok(n) => {
                    rest = &rest[n..];
                    out += n as u64;
                }
                Err(e) => return Err(cut(e, BODY, true, out)),
            }
        }
    }
    // Most of a small answer is still held by the write buffer here, so
    // this is where a reset client is usually found. pingora flushes a
    // body-less head inside its head write (the head not counted as out:
    // a 499) and a body once it is written whole.
    match body {
        Some(_) => stream
            .flush()
            .await
            .map_err(|e| cut(e, "flushing body", true, out)),
        None => stream
            .flush()
            .await
            .map_err(|e| cut(e, "flushing response header", false, 0)),
    }
}

/// A head's request line and `Host`, found line by line.
struct Glance {
    get: bool,
    target: std::ops::Range<usize>,
    /// The one `Host` field's value (`None`: none, or more than one).
    host: Option<std::ops::Range<usize>>,
}

/// The method (`GET`/`HEAD`), target and `Host` value of the head at the
/// start of `buf`, read line by line (a few instructions a line; the
/// door's reader checked the head's framing); `None` for anything else:
/// another method or version, a line it does not read as httparse would.
fn glance(buf: &[u8]) -> Option<Glance> {
    let line_end = memchr::memchr(b'\n', buf)?;
    let line = buf[..line_end].strip_suffix(b"\r")?;
    let (get, rest) = if let Some(r) = line.strip_prefix(b"GET ") {
        (true, r)
    } else {
        (false, line.strip_prefix(b"HEAD ")?)
    };
    let target_len = rest.strip_suffix(b" HTTP/1.1")?.len();
    let start = line.len() - rest.len();
    let target = start..start + target_len;
    if target.is_empty() || memchr::memchr(b' ', &buf[target.clone()]).is_some() {
        return None;
    }
    let mut host = None;
    let mut hosts = 0;
    let mut at = line_end + 1;
    loop {
        let end = at + memchr::memchr(b'\n', buf.get(at..)?)?;
        let field = buf[at..end].strip_suffix(b"\r")?;
        if field.is_empty() {
            break;
        }
        if field.len() >= 5 && field[..5].eq_ignore_ascii_case(b"host:") {
            hosts += 1;
            let value = &field[5..];
            let lead = value.len() - value.trim_ascii_start().len();
            let v_start = at + 5 + lead;
            host = Some(v_start..v_start + value.trim_ascii().len());
        }
        at = end + 1;
    }
    Some(Glance {
        get,
        target,
        host: host.filter(|_| hosts == 1),
    })
}

/// Where a head's parts are, by offset into it.
struct Fields {
    method_get: bool,
    target: std::ops::Range<usize>,
    /// The one `Host` field's value (`None`: none, or more than one).
    host: Option<std::ops::Range<usize>>,
    fields: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
}

/// The length of the complete head at the start of `buf` and where its
/// parts are, if the shortcut may take it.
fn scan(buf: &[u8]) -> Option<(usize, Fields)> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(buf).ok()? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return None,
    };
    if req.version != Some(1) {
        return None;
    }
    let method_get = match req.method? {
        "GET" => true,
        "HEAD" => false,
        _ => return None,
    };
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let target = at(req.path?.as_bytes());
    let mut fields = Vec::with_capacity(req.headers.len());
    let mut host = None;
    let mut hosts = 0;
    for h in req.headers.iter() {
        if h.name.len() == 4 && h.name.eq_ignore_ascii_case("host") {
            hosts += 1;
            host = Some(at(h.value));
        }
        if NOT_TAKEN.iter().any(|n| {
            n.len() == h.name.len() && n.as_bytes().eq_ignore_ascii_case(h.name.as_bytes())
        }) {
            return None;
        }
        fields.push((at(h.name.as_bytes()), at(h.value)));
    }
    Some((
        len,
        Fields {
            method_get,
            target,
            host: host.filter(|_| hosts == 1),
            fields,
        },
    ))
}

/// The request header pingora would parse from `head`, its values sharing
/// `head`'s bytes.
fn build(head: &Bytes, parts: &Fields) -> Option<RequestHeader> {
    let method = if parts.method_get {
        http::Method::GET
    } else {
        http::Method::HEAD
    };
    // The target shared with the head, not copied into the Uri.
    let mut req = RequestHeader::build_no_case_shared(
        method,
        head.slice(parts.target.clone()),
        Some(parts.fields.len()),
    )
    .ok()?;
    req.set_version(http::Version::HTTP_11);
    for (name, value) in &parts.fields {
        let name = http::HeaderName::from_bytes(&head[name.clone()]).ok()?;
        let value = http::HeaderValue::from_maybe_shared(head.slice(value.clone())).ok()?;
        req.append_header(name, value).ok()?;
    }
    Some(req)
}
