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

thread_local! {
    /// A read buffer no connection holds (`spare.rs`): a connection gives
    /// its buffer back while it waits for its next request ([`release`])
    /// and takes this one, or a new one, when it reads ([`take`]).
    static SPARE: std::cell::Cell<Option<BytesMut>> = const { std::cell::Cell::new(None) };
}

/// Lets go of `held` (empty) while its connection waits: an idle
/// connection holds no read buffer (issue 17: 4 KiB of an idle HTTP
/// connection's 7.3 KB); it becomes the thread's spare (`spare::give`).
pub(super) fn release(held: &mut BytesMut) {
    super::spare::give(&SPARE, std::mem::take(held), READ_SIZE);
}

/// The buffer a read goes into when nothing is held: the thread's spare,
/// or a new one of [`READ_SIZE`].
fn read_buffer() -> BytesMut {
    super::spare::take(&SPARE, READ_SIZE)
}

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
        if held.capacity() == 0 {
            *held = read_buffer();
        } else {
            held.reserve(READ_SIZE);
        }
        match stream.read_buf(held).await {
            Ok(0) | Err(_) => return Taken::Closed,
            Ok(_) => {}
        }
    }
    // The head's parts found line by line, then the route from the request
    // line and `Host` as they came: most requests on a listener that also
    // passes through are not the shortcut's, and go to pingora having cost
    // this glance and a route lookup (`instr.sh`'s `mixed`). Filled in
    // place (a few hundred bytes, not moved).
    let mut fields = Fields::default();
    let Some(len) = glance(held, &mut fields) else {
        return Taken::Pass;
    };
    let host = fields.host.clone().map(|r| &held[r]);
    let Some(candidate) =
        proxy.shortcut_may_take(host, &held[fields.target.clone()], fields.method_get)
    else {
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
    let write = write(proxy, stream, &answer).await;
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
///
/// A body in a mapping of its own (`edge_cache::mapped`) of
/// [`SEND_MAPPED_MIN`] to [`SEND_MAPPED_MAX`] bytes goes by reference to
/// its pages where the client is plain TCP ([`EdgeProxy::send_mapped`]).
async fn write(
    proxy: &EdgeProxy,
    stream: &mut Stream,
    answer: &crate::service::Shortcut,
) -> Result<(), crate::service::ShortcutCut> {
    let (head, body) = (&answer.head[..], answer.body.as_ref());
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
    let mapped = body
        .filter(|b| (SEND_MAPPED_MIN..=SEND_MAPPED_MAX).contains(&b.len()))
        .and_then(|b| Some((b, edge_cache::mapped::pages_of(b)?)));
    if let Some((body, pages)) = mapped {
        let sent = proxy
            .send_mapped(stream, pages.sealed(), body, &mut out)
            .await;
        match sent {
            Some(Ok(())) => {
                return stream
                    .flush()
                    .await
                    .map_err(|e| cut(e, "flushing body", true, out))
            }
            Some(Err(e)) => return Err(cut(e, BODY, true, out)),
            None => {}
        }
    }
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

/// A mapped body shorter than this is written: a vmsplice and a splice per
/// pipe's worth cost more than copying a few pages (the pass-through's
/// splice threshold, `splice.rs`).
const SEND_MAPPED_MIN: usize = 16 * 1024;

/// A mapped body longer than this is written too. Measured on loopback
/// (`wrk -t1 -c50` on the other CPU, RESULTS "Large RAM hits sent from
/// their mapping"): up to 256 KiB, edge's CPU per hit falls (0.70x at
/// 256 KiB) with the same throughput; from 512 KiB the reader pays more
/// for page-referencing segments than edge saves (they coalesce less in
/// its queue): throughput 0.66-0.77x, p99 1.4-2x, the machine's CPU per
/// request unchanged.
const SEND_MAPPED_MAX: usize = 256 * 1024;

/// Where a head's parts are, by offset into it.
#[derive(Default)]
struct Fields {
    method_get: bool,
    target: std::ops::Range<usize>,
    /// The one `Host` field's value (`None`: none, or more than one).
    host: Option<std::ops::Range<usize>>,
    /// Each field's name and value, as start and end offsets: name's,
    /// then value's (inline and small: no allocation per request, little
    /// to copy).
    fields: smallvec::SmallVec<[[u16; 4]; MAX_FIELDS]>,
}

/// The length of the complete head at the start of `buf`, if the
/// shortcut may take it, with where its parts are in `out`: `GET` or
/// `HEAD`, HTTP/1.1, at most [`MAX_FIELDS`] fields and none of
/// [`NOT_TAKEN`], every line ending in CRLF, at most 65,535 bytes. Read line by
/// line, as httparse reads a head the door let through: the door's reader
/// refused anything else before it got here (control bytes, space, `\`
/// or `#` in the target, a name not a token, a control byte in a value,
/// a folded line, a bare CR or LF; `framing::check`), so httparse's own
/// checks would find nothing more (and were about 1,100 instructions per
/// request). A value is what httparse gives: without the spaces and tabs
/// around it. [`build`] checks names and values again as a header map
/// takes them.
fn glance(buf: &[u8], out: &mut Fields) -> Option<usize> {
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
    out.method_get = get;
    out.target = target;
    let mut hosts = 0;
    let mut at = line_end + 1;
    loop {
        let end = at + memchr::memchr(b'\n', buf.get(at..)?)?;
        let field = buf[at..end].strip_suffix(b"\r")?;
        if field.is_empty() {
            at = end + 1;
            break;
        }
        let colon = memchr::memchr(b':', field)?;
        let name = &field[..colon];
        if name.is_empty()
            || NOT_TAKEN
                .iter()
                .any(|n| n.len() == name.len() && n.as_bytes().eq_ignore_ascii_case(name))
        {
            return None;
        }
        let value = trim_ows(&field[colon + 1..]);
        let value = at + colon + 1 + value.start..at + colon + 1 + value.end;
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            out.host = Some(value.clone());
        }
        if out.fields.len() == MAX_FIELDS || end >= usize::from(u16::MAX) {
            return None;
        }
        // Below 64 KiB: each offset fits.
        out.fields
            .push([at, at + colon, value.start, value.end].map(|o| o as u16));
        at = end + 1;
    }
    // Offsets fit in 16 bits (a longer head is pingora's).
    if at > usize::from(u16::MAX) {
        return None;
    }
    if hosts != 1 {
        out.host = None;
    }
    Some(at)
}

/// Where `value` is without the spaces and tabs around it (RFC 9110
/// §5.5's OWS), as httparse gives a field's value.
fn trim_ows(value: &[u8]) -> std::ops::Range<usize> {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |e| e + 1);
    start..end
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
    for &[name_start, name_end, value_start, value_end] in &parts.fields {
        let (name, value) = (
            usize::from(name_start)..usize::from(name_end),
            usize::from(value_start)..usize::from(value_end),
        );
        // Parsed once per spelling and thread (`field_names.rs`).
        let name = super::field_names::name(head.get(name)?)?;
        let value = http::HeaderValue::from_maybe_shared(head.slice(value)).ok()?;
        req.append_header(name, value).ok()?;
    }
    Some(req)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::listen::framing::{self, HeadScan, Limits, Scan};

    /// A waiting connection's read buffer becomes the thread's spare when
    /// it has a read's room (a head read into it and still alive leaves
    /// less, and is not written over), and only if it is not outsized; the
    /// next read takes the spare whole, or a new buffer.
    #[test]
    fn a_released_buffer_is_the_threads_spare_only_when_nothing_shares_it() {
        // Nothing spare: a new buffer of READ_SIZE.
        SPARE.with(|s| s.set(None));
        let fresh = read_buffer();
        assert_eq!((fresh.len(), fresh.capacity()), (0, READ_SIZE));

        // A head split off and still alive: let go, not kept.
        let mut held = read_buffer();
        held.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let head = held.split_to(held.len()).freeze();
        let at = head.as_ptr();
        release(&mut held);
        assert_eq!(held.capacity(), 0);
        assert!(SPARE.with(|s| s.take()).is_none());
        let next = read_buffer();
        assert_ne!(next.as_ptr(), at);
        assert_eq!(&head[..], b"GET / HTTP/1.1\r\n\r\n");

        // The head gone: the whole block is the spare, and the next read's.
        let mut held = BytesMut::with_capacity(READ_SIZE);
        let base = held.as_ptr();
        held.extend_from_slice(b"GET /a HTTP/1.1\r\n\r\n");
        drop(held.split_to(held.len()).freeze());
        release(&mut held);
        assert_eq!(held.capacity(), 0);
        let again = read_buffer();
        assert_eq!(
            (again.as_ptr(), again.len(), again.capacity()),
            (base, 0, READ_SIZE)
        );
        assert!(SPARE.with(|s| s.take()).is_none());

        // Outsized (a long head grew it): let go.
        let mut big = BytesMut::with_capacity(4 * READ_SIZE);
        big.extend_from_slice(&[b'x'; 100]);
        drop(big.split_to(100));
        release(&mut big);
        assert!(SPARE.with(|s| s.take()).is_none());

        // Empty and never allocated: nothing to keep.
        release(&mut BytesMut::new());
        assert!(SPARE.with(|s| s.take()).is_none());
    }

    /// What a head gives, as httparse reads it (the shortcut's parse
    /// before `glance` read fields itself): length, method, target, host,
    /// fields.
    type Parts = (
        usize,
        bool,
        Vec<u8>,
        Option<Vec<u8>>,
        Vec<(Vec<u8>, Vec<u8>)>,
    );

    fn by_httparse(buf: &[u8]) -> Option<Parts> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut req = httparse::Request::new(&mut slots);
        let len = match req.parse(buf).ok()? {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial => return None,
        };
        if len > usize::from(u16::MAX) || req.version != Some(1) {
            return None;
        }
        let get = match req.method? {
            "GET" => true,
            "HEAD" => false,
            _ => return None,
        };
        let mut hosts = Vec::new();
        let mut fields = Vec::new();
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("host") {
                hosts.push(h.value.to_vec());
            }
            if NOT_TAKEN.iter().any(|n| n.eq_ignore_ascii_case(h.name)) {
                return None;
            }
            fields.push((h.name.as_bytes().to_vec(), h.value.to_vec()));
        }
        let host = (hosts.len() == 1).then(|| hosts.remove(0));
        Some((len, get, req.path?.as_bytes().to_vec(), host, fields))
    }

    fn by_glance(buf: &[u8]) -> Option<Parts> {
        let mut f = Fields::default();
        let len = glance(buf, &mut f)?;
        let fields = f
            .fields
            .iter()
            .map(|&[a, b, c, d]| {
                let r = |x: u16, y: u16| buf[usize::from(x)..usize::from(y)].to_vec();
                (r(a, b), r(c, d))
            })
            .collect();
        let host = f.host.map(|h| buf[h].to_vec());
        Some((len, f.method_get, buf[f.target].to_vec(), host, fields))
    }

    /// Whether the door's reader lets `head` through as it is. Its
    /// rewrites are not modelled (a target's bytes from 0x80 percent-
    /// encoded, CRLFs before a head dropped): the heads here have none.
    fn door_passes(head: &[u8]) -> bool {
        let limits = Limits {
            max_request_line: 8192,
            max_header_bytes: 80_000,
            max_headers: 100,
        };
        let complete = matches!(HeadScan::default().scan(head, &limits), Ok(Scan::Complete(n)) if n == head.len());
        let bare_cr = head
            .iter()
            .enumerate()
            .any(|(i, &b)| b == b'\r' && head.get(i + 1) != Some(&b'\n'));
        complete && !bare_cr && framing::check(head, &limits).is_ok()
    }

    /// For every head the door lets through, the line-by-line read gives
    /// exactly what httparse gives, or both decline it: request lines,
    /// names in any case, values with spaces and tabs around and inside,
    /// empty values, obs-text, `Host` none, one or twice, the fields the
    /// shortcut does not take, up to and past 32 fields, and heads near
    /// 64 KiB.
    #[test]
    fn a_head_read_line_by_line_is_what_httparse_reads() {
        let lines = [
            "GET / HTTP/1.1",
            "HEAD /a?b=c HTTP/1.1",
            "GET /%7e/x;y?z=1&w HTTP/1.1",
            "GET http://a.example/p HTTP/1.1",
            "GET * HTTP/1.1",
            "POST / HTTP/1.1",
            "GET / HTTP/1.0",
            "get / HTTP/1.1",
            "GET /a\"b<c>{d} HTTP/1.1",
        ];
        let names = [
            "Host",
            "host",
            "HOST",
            "X-A",
            "accept",
            "User-Agent",
            "x-b_c",
            "!#$%&'*+-.^`|~",
            "Content-Length",
            "transfer-encoding",
            "Connection",
            "Upgrade",
            "Expect",
            "TE",
            "te-x",
            "Hostx",
            "Ho",
        ];
        let values = [
            "v",
            " v",
            "v ",
            "\tv\t",
            "",
            " ",
            "\t",
            "a b",
            "a\tb",
            "  a  b  ",
            "caf\u{e9}",
            "x:y",
            "1",
            "a.example",
            "a.example:8080",
        ];
        let mut rng = fastrand::Rng::with_seed(9112);
        let (mut checked, mut taken) = (0, 0);
        for round in 0..20_000 {
            let mut head = lines[rng.usize(..lines.len())].as_bytes().to_vec();
            head.extend_from_slice(b"\r\n");
            let count = match round % 10 {
                0 => rng.usize(30..36),
                _ => rng.usize(0..8),
            };
            // The door wants one `Host` (RFC 9112 §3.2): most heads have it.
            let host_at = (rng.u8(..10) > 0).then(|| rng.usize(..=count));
            for i in 0..=count {
                if host_at == Some(i) {
                    head.extend_from_slice(b"Host: a.example\r\n");
                }
                if i == count {
                    break;
                }
                // Many fields: of names any head may carry once or more.
                let name = match round % 10 {
                    0 => names[rng.usize(3..8)],
                    _ => names[rng.usize(..names.len())],
                };
                let value = values[rng.usize(..values.len())];
                let colon_gap = if rng.u8(..50) == 0 { " " } else { "" };
                head.extend_from_slice(format!("{name}{colon_gap}:{value}\r\n").as_bytes());
            }
            if round % 100 == 1 {
                let pad = 65_536 - head.len() - rng.usize(0..40);
                head.extend_from_slice(b"X-Pad: ");
                head.extend(std::iter::repeat_n(b'p', pad));
                head.extend_from_slice(b"\r\n");
            }
            head.extend_from_slice(b"\r\n");
            if !door_passes(&head) {
                continue;
            }
            checked += 1;
            let got = by_glance(&head);
            taken += usize::from(got.is_some());
            assert_eq!(
                got,
                by_httparse(&head),
                "{}",
                String::from_utf8_lossy(&head)
            );
            // A head with what follows it (the next request's bytes).
            let mut more = head.clone();
            more.extend_from_slice(b"GET /next HTTP/1.1\r\n");
            assert_eq!(by_glance(&more), by_httparse(&more));
            // And every part of it: not complete, never taken.
            let cut = rng.usize(..head.len());
            assert_eq!(by_glance(&head[..cut]), None);
        }
        assert!(
            checked > 4_000 && taken > 2_000,
            "{checked} heads checked, {taken} taken"
        );
    }
}
