//! The client's head of a pass-through written from the backend's own
//! lines (issue 17): for a final head whose body has a plain length
//! (pingora-core's `read_response_task_raw`, EDGE-PATCH twenty-sixth), no
//! header map is built on either side; the backend's fields are copied in
//! order and edge's own appended, byte for byte what pingora's path writes
//! (`lean_pass.rs`'s `client_head` on a [`ResponseHeader`], pingora's
//! HTTP/1 writer).
//!
//! That holds while nothing would be removed, replaced or regrouped: a
//! head with a field `hop::strip_response` or `strip_cache_headers` takes
//! out, a `Connection` naming more than `keep-alive` or `close`, a name
//! sent twice (a header map groups its values), a value folded onto more
//! lines (obs-fold, which pingora unfolds), a name longer than `http`
//! takes, a field the route's `response_headers` edits, rate-limit fields
//! to add, or more than [`MAX_FIELDS`] fields, is built into a
//! `ResponseHeader` and goes the usual way ([`plain`] is `None`).

use bytes::BytesMut;
use pingora_core::protocols::http::v1::client::RawHead;

use crate::decorate::Decor;
use crate::route::CompiledHeaderOps;

/// At most this many fields are checked against each other (a name sent
/// twice); a head with more goes the usual way.
const MAX_FIELDS: usize = 48;

/// The longest field name `http`'s `HeaderName` takes (its
/// `MAX_HEADER_NAME_LEN`, inclusive).
const MAX_NAME: usize = (1 << 16) - 1;

/// Names whose field pingora's path removes (`hop::strip_response`:
/// hop-by-hop; `caching::strip_cache_headers`).
const REMOVED: [&[u8]; 9] = [
    b"keep-alive",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"proxy-authenticate",
    b"upgrade",
    b"surrogate-key",
    b"surrogate-control",
    b"x-cache",
];

/// A bit for each length of a [`REMOVED`] name: most names are of none.
const REMOVED_LENGTHS: u64 = {
    let mut mask = 0u64;
    let mut i = 0;
    while i < REMOVED.len() {
        mask |= 1 << REMOVED[i].len();
        i += 1;
    }
    mask
};

/// Names edge writes itself after the backend's fields; a route edit of
/// one of them takes the usual way.
const OURS: [&str; 4] = ["x-cache", "age", "date", "connection"];

/// What [`client_head`] needs of a head [`plain`] passed.
pub(super) struct Plain {
    /// The backend sent `Age` (then edge adds none).
    age: bool,
    /// The backend sent `Date` (then edge adds none).
    date: bool,
    /// The index of the backend's `Connection` (`keep-alive` or `close`),
    /// written in its place as `keep-alive`.
    connection: Option<usize>,
}

/// Whether `raw` can be written as it came with edge's fields appended
/// (see the module's text); `decor`: the route's response edits (a
/// rate limit's fields take the usual way).
pub(super) fn plain(raw: &RawHead, decor: Decor<'_>) -> Option<Plain> {
    let fields = raw.fields();
    // A folded value pingora would unfold (and a head with empty lines
    // before its status line, to be safe): the usual way.
    if fields.len() > MAX_FIELDS || decor.rate_limit.is_some() || raw.folded() {
        return None;
    }
    let ops = decor.ops;
    let code = raw.status().as_u16();
    let ops = ops.filter(|o| !(o.remove.is_empty() && o.set.is_empty() && o.add.is_empty()));
    if let Some(ops) = ops {
        let names: Vec<&str> = ops
            .remove
            .iter()
            .chain(ops.set.iter().map(|(n, _)| n))
            .chain(ops.add.iter().map(|(n, _)| n))
            .map(|n| n.as_str())
            .collect();
        // A name edited twice, or one of edge's own: the header map's order.
        for (i, name) in names.iter().enumerate() {
            if OURS.contains(name) || names[..i].contains(name) {
                return None;
            }
        }
    }
    let mut plain = Plain {
        age: false,
        date: false,
        connection: None,
    };
    // A name sent twice: a bit per (length, last byte) seen, the names
    // compared only where two share one.
    let mut seen = 0u64;
    for (i, (name, value)) in raw.fields().enumerate() {
        let bit = 1u64 << ((name.len() * 7 + usize::from(name.last()? | 0x20)) % 64);
        let again = seen & bit != 0
            && raw
                .fields()
                .take(i)
                .any(|(other, _)| other.eq_ignore_ascii_case(name));
        seen |= bit;
        if again
            // A name `http` refuses: the header map's read fails.
            || name.len() > MAX_NAME
            || (REMOVED_LENGTHS & (1 << name.len().min(63)) != 0
                && REMOVED.iter().any(|r| r.eq_ignore_ascii_case(name)))
        {
            return None;
        }
        if name.eq_ignore_ascii_case(b"connection") {
            let token = value.trim_ascii();
            if !(token.eq_ignore_ascii_case(b"keep-alive") || token.eq_ignore_ascii_case(b"close"))
            {
                return None;
            }
            plain.connection = Some(i);
        } else if name.eq_ignore_ascii_case(b"age") {
            plain.age = true;
        } else if name.eq_ignore_ascii_case(b"date") {
            plain.date = true;
        } else if code == 204 && name.eq_ignore_ascii_case(b"content-length") {
            // RFC 9110 §8.6: pingora's path takes it out of a 204.
            return None;
        }
        if let Some(ops) = ops {
            let edited = ops
                .remove
                .iter()
                .chain(ops.set.iter().map(|(n, _)| n))
                .chain(ops.add.iter().map(|(n, _)| n))
                .any(|n| n.as_str().as_bytes().eq_ignore_ascii_case(name));
            if edited {
                return None;
            }
        }
    }
    Some(plain)
}

/// The value of `raw`'s first field named `name`.
pub(super) fn field<'a>(raw: &'a RawHead, name: &str) -> Option<&'a [u8]> {
    raw.fields()
        .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| v)
}

/// The client's head: the status line as pingora's writer makes it
/// (version kept, the reason sent or the canonical one), the backend's
/// fields in order with names spelled as pingora's writer spells them
/// (twelve titled, the rest in lower case: `pingora_http::titled_name_of`;
/// `Connection` as `keep-alive` in its place), then `X-Cache`, `Age: 0`
/// unless sent, the route's `set` and `add` fields, `Date` unless sent,
/// and `Connection: keep-alive` unless sent.
pub(super) fn client_head(
    raw: &RawHead,
    plain: &Plain,
    x_cache: &str,
    ops: Option<&CompiledHeaderOps>,
) -> BytesMut {
    let mut buf = BytesMut::with_capacity(512);
    buf.extend_from_slice(match raw.version() {
        http::Version::HTTP_10 => b"HTTP/1.0 ",
        http::Version::HTTP_09 => b"HTTP/0.9 ",
        _ => b"HTTP/1.1 ",
    });
    buf.extend_from_slice(raw.status().as_str().as_bytes());
    buf.extend_from_slice(b" ");
    if let Some(reason) = raw.reason() {
        buf.extend_from_slice(reason.as_bytes());
    }
    buf.extend_from_slice(b"\r\n");
    for (i, (name, value, whole)) in raw.field_lines().enumerate() {
        if plain.connection == Some(i) {
            buf.extend_from_slice(b"Connection: keep-alive\r\n");
            continue;
        }
        match whole {
            // `name: value` and CRLF as `line` writes them: one copy,
            // then the name spelled in place.
            Some(whole) => {
                let at = buf.len();
                buf.extend_from_slice(whole);
                spell(&mut buf[at..at + name.len()]);
            }
            None => line(&mut buf, name, value),
        }
    }
    line(&mut buf, b"x-cache", x_cache.as_bytes());
    if !plain.age {
        buf.extend_from_slice(b"Age: 0\r\n");
    }
    if let Some(ops) = ops {
        for (name, value) in ops.set.iter().chain(&ops.add) {
            line(&mut buf, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    if !plain.date {
        let date = pingora_core::protocols::http::date::get_cached_date();
        line(&mut buf, b"Date", date.as_bytes());
    }
    if plain.connection.is_none() {
        buf.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    buf.extend_from_slice(b"\r\n");
    buf
}

/// A field line, its name spelled as pingora's HTTP/1 writer spells it.
fn line(buf: &mut BytesMut, name: &[u8], value: &[u8]) {
    let at = buf.len();
    buf.extend_from_slice(name);
    spell(&mut buf[at..]);
    buf.extend_from_slice(b": ");
    buf.extend_from_slice(value);
    buf.extend_from_slice(b"\r\n");
}

/// A name spelled in place as pingora's HTTP/1 writer spells it: titled
/// for twelve names (`pingora_http::titled_name_of`), else in lower case.
fn spell(name: &mut [u8]) {
    match pingora_http::titled_name_of(name) {
        Some(titled) => name.copy_from_slice(titled.as_bytes()),
        None => name.make_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::sync::Arc;

    use bytes::Bytes;
    use pingora_core::protocols::http::v1::client::{HttpSession, RawTask};
    use pingora_core::protocols::http::HttpTask;
    use pingora_core::protocols::l4::stream::Stream;
    use pingora_http::RequestHeader;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::route::{CompiledRoute, RequestView, RouteTable};
    use crate::service::ctx::RequestCtx;
    use crate::service::lean_pass;

    /// How a head is expected to go.
    #[derive(Debug, PartialEq, Clone, Copy)]
    enum Way {
        /// Written from its lines.
        Plain,
        /// Read raw, then built into a header map (something would change).
        Built,
        /// Not read raw (framing, 1xx only).
        Task,
    }

    /// A client session that sent `method /` to a loopback backend that
    /// answers `response` and then holds the connection; `split`: in two
    /// writes (the head spans reads).
    async fn session_split(method: &str, response: &'static [u8], split: bool) -> HttpSession {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let mut b = [0u8; 1024];
                let n = sock.read(&mut b).await.unwrap();
                if n == 0 {
                    return;
                }
                got.extend_from_slice(&b[..n]);
            }
            if split {
                let (a, b) = response.split_at(response.len() / 2);
                sock.write_all(a).await.unwrap();
                sock.flush().await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                sock.write_all(b).await.unwrap();
            } else {
                sock.write_all(response).await.unwrap();
            }
            let mut rest = Vec::new();
            let _ = sock.read_to_end(&mut rest).await;
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut h1 = HttpSession::new(Box::new(Stream::from(tcp)));
        let req = RequestHeader::build(method, b"/", None).unwrap();
        h1.write_request_header(Box::new(req)).await.unwrap();
        h1.finish_body().await.unwrap();
        h1
    }

    fn route(ops: &str) -> Arc<CompiledRoute> {
        let text = format!(
            "[[listener]]\nname = \"web\"\nkind = \"http\"\naddress = \"127.0.0.1:0\"\n\
             [[pool]]\nname = \"p\"\nbackends = [{{ address = \"127.0.0.1:1\" }}]\n\
             [[route]]\nname = \"r\"\npool = \"p\"\n{ops}"
        );
        let config = edge_config::parse_str(&text, "t.toml", std::path::Path::new(".")).unwrap();
        let metrics = crate::metrics::ProxyMetrics::new(&prometheus::Registry::new()).unwrap();
        let routes = RouteTable::compile(&config.routes, |_| Some(0), &metrics).unwrap();
        let headers = http::HeaderMap::new();
        let view = RequestView {
            listener: "web",
            host: "a.example",
            path: "/",
            query: None,
            method: &http::Method::GET,
            headers: &headers,
            cookies: &[],
        };
        routes.find(&view).unwrap().clone()
    }

    /// The rest of a body, whether the session ends done and would keep
    /// its connection.
    async fn body(h1: &mut HttpSession, mut end: bool) -> (Vec<u8>, bool, bool) {
        let mut body = Vec::new();
        while !end {
            match h1.read_response_task().await.unwrap() {
                HttpTask::Body(piece, e) => {
                    body.extend_from_slice(&piece.unwrap_or_default());
                    end = e;
                }
                HttpTask::Done => end = true,
                other => panic!("{other:?}"),
            }
        }
        h1.respect_keepalive();
        (body, h1.is_body_done(), h1.will_keepalive())
    }

    /// A `Content-Length` body that came whole in the read of its head
    /// (vendored pingora-core, thirty-first) is handed out as a slice of
    /// that read when pieces are not kept and it is at least 1/8 of the
    /// read's 4 KiB buffer; kept pieces, short bodies and a body with
    /// bytes after it are copied as before. Each reads back byte for byte
    /// and done; so does one split over two writes (read whole with its
    /// head or not, as the reads fall).
    #[tokio::test]
    async fn a_body_read_with_its_head_goes_out_uncopied_when_it_may() {
        for (len, kept, extra, split, shared) in [
            (1024, false, "", false, true),
            (512, false, "", false, true),
            (3000, false, "", false, true),
            (511, false, "", false, false),
            (10, false, "", false, false),
            (1024, true, "", false, false),
            (1024, false, "X", false, false),
            (1024, false, "", true, false),
        ] {
            let body: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nETag: \"e\"\r\n\r\n{}{extra}",
                String::from_utf8(body.clone()).unwrap()
            );
            let response: &'static [u8] = Box::leak(response.into_bytes().into_boxed_slice());
            let mut h1 = session_split("GET", response, split).await;
            h1.set_body_pieces_kept(kept);
            let case = format!("{len} kept {kept} extra {extra:?} split {split}");
            let RawTask::Head(raw, end) = h1.read_response_task_raw().await.unwrap() else {
                panic!("{case}: not read raw");
            };
            assert!(!end, "{case}");
            let (_, etag) = raw.fields().last().unwrap();
            // The body's first byte in the head's read: after `"e"` CRLF CRLF.
            let after_head = etag.as_ptr().wrapping_add(etag.len() + 4);
            let HttpTask::Body(Some(piece), _) = h1.read_response_task().await.unwrap() else {
                panic!("{case}: no body piece");
            };
            if !split {
                assert_eq!(piece.as_ptr() == after_head, shared, "{case}");
            }
            let (rest, done, _) = body_rest(&mut h1, piece).await;
            assert_eq!(rest, body, "{case}");
            assert!(done, "{case}");
        }
        // Read by reference (`get_body`), then nothing more.
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\n{}",
            "b".repeat(1024)
        );
        let response: &'static [u8] = Box::leak(response.into_bytes().into_boxed_slice());
        let mut h1 = session_split("GET", response, false).await;
        h1.set_body_pieces_kept(false);
        let RawTask::Head(_, false) = h1.read_response_task_raw().await.unwrap() else {
            panic!("not read raw");
        };
        let piece = h1.read_body_ref().await.unwrap().map(<[u8]>::to_vec);
        assert_eq!(piece, Some(vec![b'b'; 1024]));
        assert_eq!(h1.read_body_ref().await.unwrap(), None);
        assert!(h1.is_body_done());
    }

    /// The body from its first piece on, and whether the session ends done.
    async fn body_rest(h1: &mut HttpSession, first: Bytes) -> (Vec<u8>, bool, bool) {
        let mut got = first.to_vec();
        let end = h1.is_body_done();
        let (rest, done, keep) = body(h1, end).await;
        got.extend_from_slice(&rest);
        (got, done, keep)
    }

    /// `Date` lines' values (pingora's cached date may turn between the
    /// two renderings) left out.
    fn text(head: &[u8]) -> String {
        String::from_utf8_lossy(head)
            .split("\r\n")
            .map(|l| {
                if l.to_ascii_lowercase().starts_with("date: ") {
                    format!("{}: -", &l[..4])
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\r\n")
    }

    /// RFC 9110/9112 heads through both renderings: a head [`plain`]
    /// passes is written byte for byte as the header map path writes it,
    /// with the same body, framing, cache status and keep-alive; one it
    /// does not pass is built into the same header map as pingora builds.
    #[tokio::test]
    async fn a_head_from_its_lines_is_the_header_map_s_byte_for_byte() {
        const TYPICAL: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\
            etag: \"296be\"\r\nlast-modified: Thu, 01 Jan 2026 00:00:00 GMT\r\n\
            cache-control: public, max-age=60\r\naccept-ranges: bytes\r\ncontent-length: 5\r\n\
            server: o\r\nx-origin-name: origin\r\ndate: Fri, 04 Dec 2026 18:44:39 GMT\r\n\r\nhello";
        let cases: &[(&str, &[u8], Way)] = &[
            ("GET", TYPICAL, Way::Plain),
            ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\nETag: \"a\"\r\n\r\n", Way::Plain),
            ("GET", b"HTTP/1.1 200 OK\r\nContent-Type: Text/HTML\r\nX-MiXeD: A b\r\nContent-Length: 2\r\n\r\nhi", Way::Plain),
            ("GET", b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi", Way::Plain),
            ("GET", b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi", Way::Plain),
            ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi", Way::Plain),
            ("GET", b"HTTP/1.1 200 OK\r\nconnection:  Keep-Alive \r\nContent-Length: 2\r\n\r\nhi", Way::Plain),
            ("GET", b"HTTP/1.1 200 OK\r\nAge: 30\r\nContent-Length: 2\r\n\r\nhi", Way::Plain),
            ("GET", b"HTTP/1.1 200 Fine Thanks\r\nContent-Length: 2\r\n\r\nhi", Way::Plain),
            ("GET", b"HTTP/1.1 200 \r\nContent-Length: 2\r\n\r\nhi", Way::Plain),
            ("GET", b"HTTP/1.1 599 \r\nContent-Length: 2\r\n\r\nhi", Way::Plain),
            ("GET", b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", Way::Plain),
            ("GET", b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 3\r\n\r\nbad", Way::Plain),
            ("GET", b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n", Way::Plain),
            ("GET", b"HTTP/1.1 304 Not Modified\r\nETag: \"a\"\r\nContent-Length: 100\r\n\r\n", Way::Plain),
            ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 007\r\n\r\n1234567", Way::Plain),
            ("GET", b"HTTP/1.1 200 OK\r\nX-Empty:\r\nX-Tab: a\tb\r\nContent-Length: 2\r\n\r\nhi", Way::Plain),
            ("GET", b"HTTP/1.1 200 OK\r\nX-Obs: caf\xc3\xa9 \xff\r\nContent-Length: 2\r\n\r\nhi", Way::Plain),
            ("GET", b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", Way::Built),
            ("GET", b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 2\r\n\r\nhi", Way::Built),
            ("GET", b"HTTP/1.1 200 OK\r\nVary: a\r\nContent-Length: 2\r\nvary: b\r\n\r\nhi", Way::Built),
            ("GET", b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nContent-Length: 2\r\n\r\nhi", Way::Built),
            ("GET", b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nhi", Way::Built),
            ("GET", b"HTTP/1.1 200 OK\r\nProxy-Connection: keep-alive\r\nContent-Length: 2\r\n\r\nhi", Way::Built),
            ("GET", b"HTTP/1.1 200 OK\r\nTrailer: x\r\nTE: trailers\r\nContent-Length: 2\r\n\r\nhi", Way::Built),
            ("GET", b"HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\nhi", Way::Built),
            ("GET", b"HTTP/1.1 200 OK\r\nProxy-Authenticate: Basic\r\nContent-Length: 2\r\n\r\nhi", Way::Built),
            ("GET", b"HTTP/1.1 200 OK\r\nX-Cache: HIT\r\nContent-Length: 2\r\n\r\nhi", Way::Built),
            ("GET", b"HTTP/1.1 200 OK\r\nSurrogate-Key: a b\r\nContent-Length: 2\r\n\r\nhi", Way::Built),
            ("GET", b"HTTP/1.1 200 OK\r\nSurrogate-Control: max-age=5\r\nContent-Length: 2\r\n\r\nhi", Way::Built),
            ("GET", b"HTTP/1.1 200 OK\r\nX-Fold: a\r\n b\r\nContent-Length: 2\r\n\r\nhi", Way::Built),
            ("GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n", Way::Task),
            ("GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n2\r\nhi\r\n0\r\n\r\n", Way::Task),
            ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi", Way::Task),
            ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nhi", Way::Task),
            ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nhi", Way::Task),
            ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", Way::Task),
            ("GET", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", Way::Plain),
            ("GET", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nX-Cache: a\r\nContent-Length: 2\r\n\r\nhi", Way::Built),
            ("GET", b"HTTP/1.1 200 \xe9t\xe9\r\nContent-Length: 2\r\n\r\nhi", Way::Plain),
            ("GET", b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nhi", Way::Plain),
            ("HEAD", b"HTTP/1.1 200 OK\r\nETag: \"a\"\r\n\r\n", Way::Plain),
            ("HEAD", b"HTTP/1.1 204 No Content\r\n\r\n", Way::Plain),
            ("HEAD", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", Way::Plain),
            ("GET", b"HTTP/1.0 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi", Way::Plain),
            ("GET", b"HTTP/1.1 200 OK\r\nX-A: 1\r\nCONNECTION: close\r\nX-B: 2\r\nContent-Length: 2\r\n\r\nhi", Way::Plain),
            ("GET", b"HTTP/1.1 200 OK\r\nDate: Thu, 01 Jan 2026 00:00:00 GMT\r\nAge: 7\r\nContent-Length: 2\r\n\r\nhi", Way::Plain),
            ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiEXTRA", Way::Plain),
            ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\nx-a: 2\r\n\r\nhi", Way::Built),
            ("GET", b"HTTP/1.1 200 OK\r\nX-A:1\r\nSERVER:   s \r\nDate:Thu, 01 Jan 2026 00:00:00 GMT\r\nContent-Length: 2\r\n\r\nhi", Way::Plain),
            ("GET", b"HTTP/1.1 200 OK\nX-A: 1\nContent-Type: t\nContent-Length: 2\n\nhi", Way::Plain),
            // Lines copied whole only when spelled `name: value` CRLF.
            ("GET", b"HTTP/1.1 200 OK\r\nX-Sp: \r\nX-Two:  2\r\nX-Trail: t \r\nX-Tab:\tt\r\nx-lf: l\nCONTENT-type: a/b\r\nX-Last: z\nContent-Length: 2\r\n\r\nhi", Way::Plain),
            ("GET", b"HTTP/1.1 200 OK\r\nSERVER: S\r\nAccept-RANGES: bytes\r\nX-UPPER: V\r\nContent-Length: 2\r\n\r\nhi", Way::Plain),
            ("GET", b"\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", Way::Built),
        ];
        let fields = |n: usize| -> &'static [u8] {
            let mut h = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..n - 1 {
                h.extend_from_slice(format!("x-f{i}: {i}\r\n").as_bytes());
            }
            h.extend_from_slice(b"Content-Length: 2\r\n\r\nhi");
            h.leak()
        };
        // A name `http` refuses (65,536 bytes): the head's read fails on
        // both ways.
        let long_name: &'static [u8] = {
            let mut h = b"HTTP/1.1 200 OK\r\n".to_vec();
            h.extend(std::iter::repeat_n(b'a', MAX_NAME + 1));
            h.extend_from_slice(b": 1\r\nContent-Length: 0\r\n\r\n");
            h.leak()
        };
        let longest_name: &'static [u8] = {
            let mut h = b"HTTP/1.1 200 OK\r\n".to_vec();
            h.extend(std::iter::repeat_n(b'a', MAX_NAME));
            h.extend_from_slice(b": 1\r\nContent-Length: 0\r\n\r\n");
            h.leak()
        };
        // A route's response edits, and the field whose presence takes a
        // head the usual way ("": every head; `None`: none).
        let routes = [
            ("", None),
            (
                "[route.response_headers]\nremove = [\"X-Absent\"]\nset = { \"Access-Control-Allow-Origin\" = \"*\" }\nadd = { \"Timing-Allow-Origin\" = \"*\" }\n",
                None,
            ),
            ("[route.response_headers]\nremove = [\"ETag\"]\n", Some("\netag:")),
            ("[route.response_headers]\nset = { \"Server\" = \"edge\" }\n", Some("\nserver:")),
            ("[route.response_headers]\nset = { \"Age\" = \"1\" }\n", Some("")),
            ("[route.response_headers]\nadd = { \"Date\" = \"x\" }\n", Some("")),
        ];
        let mut plain_heads = 0;
        let mut checked = Vec::new();
        for (r, &(ops, route_way)) in routes.iter().enumerate() {
            let route = route(ops);
            let all = cases.iter().copied().chain([
                ("GET", fields(MAX_FIELDS), Way::Plain),
                ("GET", fields(MAX_FIELDS + 1), Way::Built),
                ("GET", longest_name, Way::Plain),
                ("GET", long_name, Way::Task),
            ]);
            for ((method, response, way), split) in all.flat_map(|c| [(c, false), (c, true)]) {
                // A route edit of a field the typical head has, or of
                // one of edge's own, takes every head the usual way.
                let lower = String::from_utf8_lossy(response).to_ascii_lowercase();
                let way = match route_way {
                    Some(name) if way == Way::Plain && lower.contains(name) => Way::Built,
                    _ => way,
                };
                let shown = String::from_utf8_lossy(&response[..response.len().min(300)]);
                let case = format!("route {r}, split {split}, {method} {shown}");
                let mut raw_ctx = RequestCtx::new();
                raw_ctx.route = Some(route.clone());
                let mut map_ctx = RequestCtx::new();
                map_ctx.route = Some(route.clone());
                let req = RequestHeader::build(method, b"/", None).unwrap();

                let mut a = session_split(method, response, split).await;
                let got = loop {
                    match a.read_response_task_raw().await {
                        Ok(RawTask::Task(HttpTask::Header(h, _)))
                            if h.status.is_informational() => {}
                        Ok(other) => break other,
                        Err(e) => {
                            // Refused as pingora refuses it.
                            assert_eq!(way, Way::Task, "{case}: {e}");
                            let mut b = session_split(method, response, split).await;
                            assert!(b.read_response_task().await.is_err(), "{case}");
                            break RawTask::Task(HttpTask::Done);
                        }
                    }
                };
                if let RawTask::Task(task) = &got {
                    assert_eq!(way, Way::Task, "{case}: {task:?}");
                    continue;
                }
                // What the raw side writes; a head `http` refuses fails
                // as pingora's read of it does.
                let raw_side = match got {
                    RawTask::Head(raw, raw_end) => match plain(&raw, raw_ctx.decor()) {
                        Some(p) => {
                            assert_eq!(way, Way::Plain, "{case}");
                            plain_heads += 1;
                            let x_cache = crate::caching::bypass_x_cache(&mut raw_ctx.cache);
                            let framing = lean_pass::raw_framing(&req, raw.status().as_u16());
                            Some((
                                client_head(&raw, &p, x_cache, raw_ctx.decor().ops),
                                framing,
                                raw_end,
                            ))
                        }
                        None => match raw.into_response_header() {
                            Ok(mut built) => {
                                assert_eq!(way, Way::Built, "{case}");
                                let framing =
                                    lean_pass::client_head(&mut built, &req, &mut raw_ctx, raw_end)
                                        .unwrap();
                                Some((lean_pass::head_bytes(&built), framing, raw_end))
                            }
                            Err(e) => {
                                assert_eq!(way, Way::Task, "{case}: {e}");
                                None
                            }
                        },
                    },
                    RawTask::Task(_) => continue,
                };
                let mut b = session_split(method, response, split).await;
                let Some((raw_head, raw_framing, raw_end)) = raw_side else {
                    assert!(b.read_response_task().await.is_err(), "{case}");
                    continue;
                };
                let (mut head, end) = loop {
                    match b
                        .read_response_task()
                        .await
                        .unwrap_or_else(|e| panic!("{case}: {e}"))
                    {
                        HttpTask::Header(h, _) if h.status.is_informational() => {}
                        HttpTask::Header(h, end) => break (h, end),
                        other => panic!("{case}: {other:?}"),
                    }
                };
                let framing = lean_pass::client_head(&mut head, &req, &mut map_ctx, end).unwrap();
                let map_head = lean_pass::head_bytes(&head);
                assert_eq!(text(&raw_head), text(&map_head), "{case}");
                assert!(raw_framing == framing, "{case}");
                assert_eq!(raw_end, end, "{case}");
                assert_eq!(raw_ctx.cache.status, map_ctx.cache.status, "{case}");
                assert_eq!(
                    body(&mut a, raw_end).await,
                    body(&mut b, end).await,
                    "{case}"
                );
                checked.push(case);
            }
        }
        // Every way was taken, the plain one by most.
        assert!(plain_heads >= 2 * 2 * 30, "{plain_heads} plain heads");
        assert!(checked.len() > plain_heads, "{checked:?}");
    }
}
