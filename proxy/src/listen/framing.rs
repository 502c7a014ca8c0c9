//! HTTP/1 request framing, checked on the raw bytes before pingora parses
//! them, as strictly as nginx: a request either has one meaning or is
//! refused, so edge and the backend can never split a byte stream into
//! different requests (request smuggling) or read different targets.
//!
//! | rule (RFC 9112) | answer |
//! |---|---|
//! | lines end in CRLF; a bare LF or CR anywhere in the head (§2.2) | 400 |
//! | `method SP target SP HTTP/1.x CRLF`, method a token (§3) | 400 |
//! | a major version other than 1, or 1.2 and up (RFC 9110 §2.5) | 505 |
//! | target: origin form, absolute form (`http(s)://`), `*` for OPTIONS (§3.2) | 400 |
//! | control bytes, space, `\` or `#` in the target | 400 |
//! | `CONNECT` (edge is not a forward proxy) | 405 |
//! | request line longer than `max_request_line` | 414 |
//! | more than `max_headers` fields, or over `max_header_bytes` | 431 |
//! | obs-fold, whitespace before the first field or before `:` (§5.1, §5.2) | 400 |
//! | a field name that is not a token, a value with a control byte | 400 |
//! | HTTP/1.1 without `Host`, or two `Host` fields (§3.2) | 400 |
//! | `Content-Length` that is not one run of digits, or two of them (§6.3) | 400 |
//! | `Transfer-Encoding` other than exactly one `chunked` (§6.1) | 501 |
//! | `Transfer-Encoding` in HTTP/1.0 (§6.1) | 400 |
//! | `Transfer-Encoding` and `Content-Length`: chunked wins, CL is dropped, the connection closes after (§6.3) | — |
//! | chunk sizes, extensions, CRLFs, trailers (§7.1) | 400 |
//!
//! Repeated `Content-Length` fields are refused even when they agree:
//! forwarding a list is never right, and nginx does the same.
//!
//! An absolute-form target's authority wins over `Host` (§3.2.2): the `Host`
//! lines of such a head are dropped (after being checked) so that pingora
//! takes the target's.

use std::ops::Range;

use super::bytes::{
    all_tchar, all_value_bytes, any_forbidden_target_byte, any_high, is_tchar, is_value_byte,
    value_run_end,
};
use crate::normalize::host;

/// Limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_request_line: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
}

/// A request refused on its framing: the status and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
}

const fn refuse(status: u16, reason: &'static str) -> Refusal {
    Refusal { status, reason }
}

/// How the body of a message is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    None,
    Length(u64),
    Chunked,
}

/// A complete, valid request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub body: Body,
    /// The connection closes after this message (`Connection: close`,
    /// HTTP/1.0 without keep-alive, or TE and CL together).
    pub close: bool,
    /// The request asks for a protocol upgrade (`Upgrade` and `Connection: upgrade`).
    pub upgrade: bool,
    /// `Expect: 100-continue`: the client waits before sending the body.
    pub expect_continue: bool,
    /// The byte ranges of the `Expect` lines (left out when edge answers
    /// the expectation itself).
    pub expect_lines: Vec<Range<usize>>,
    /// Byte ranges of the head to leave out (the `Host` lines of an
    /// absolute-form request, `Upgrade` lines that ask no upgrade).
    pub drop: Vec<Range<usize>>,
    /// The request target's bytes in the head and what replaces them: bytes
    /// ≥ 0x80 percent-encoded (RFC 3986 §2.1), so every later reader sees
    /// ASCII.
    pub target: Option<(Range<usize>, Vec<u8>)>,
}

/// Finds the end of a head as its bytes arrive, without scanning any byte twice.
#[derive(Debug, Default)]
pub struct HeadScan {
    /// Bytes examined so far.
    pos: usize,
    /// Where the current line starts.
    line_start: usize,
}

/// What [`HeadScan::scan`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// The head is `len` bytes long (through its empty line).
    Complete(usize),
    Partial,
}

impl HeadScan {
    /// Looks further into `buf` (which starts at the head's first byte and
    /// grows between calls) for the head's end.
    pub fn scan(&mut self, buf: &[u8], limits: &Limits) -> Result<Scan, Refusal> {
        while let Some(i) = memchr::memchr(b'\n', &buf[self.pos..]) {
            let nl = self.pos + i;
            self.pos = nl + 1;
            let line = &buf[self.line_start..nl];
            let Some(content) = line.strip_suffix(b"\r") else {
                return Err(refuse(400, "a line ends in a bare LF"));
            };
            if self.line_start == 0 && content.len() > limits.max_request_line {
                return Err(refuse(414, "request line too long"));
            }
            if self.line_start > 0 && content.is_empty() {
                return Ok(Scan::Complete(self.pos));
            }
            self.line_start = self.pos;
            if self.line_start > limits.max_request_line + limits.max_header_bytes + 2 {
                return Err(refuse(431, "request headers too large"));
            }
        }
        self.pos = buf.len();
        if self.line_start == 0 && buf.len() > limits.max_request_line + 2 {
            return Err(refuse(414, "request line too long"));
        }
        if buf.len() > limits.max_request_line + limits.max_header_bytes + 4 {
            return Err(refuse(431, "request headers too large"));
        }
        Ok(Scan::Partial)
    }
}

/// Checks a complete head (`head` ends with its empty line).
pub fn check(head: &[u8], limits: &Limits) -> Result<Head, Refusal> {
    let mut lines = LineIter { buf: head, pos: 0 };
    let Some((_, request_line)) = lines.next() else {
        return Err(refuse(400, "empty request"));
    };
    let (method, target, version) = request_line_parts(request_line)?;
    let encoded_target = any_high(target).then(|| {
        let start = method.len() + 1;
        let mut out = Vec::with_capacity(target.len() * 2);
        for &b in target {
            if b >= 0x80 {
                out.extend_from_slice(format!("%{b:02X}").as_bytes());
            } else {
                out.push(b);
            }
        }
        (start..start + target.len(), out)
    });
    let http10 = version == Version::Http10;
    let absolute = if method == b"CONNECT" {
        return Err(refuse(405, "CONNECT is not supported"));
    } else if target.first() == Some(&b'/') {
        false
    } else if target == b"*" {
        if method != b"OPTIONS" {
            return Err(refuse(400, "* is a target for OPTIONS only"));
        }
        false
    } else {
        let rest = strip_prefix_ignore_case(target, b"http://")
            .or_else(|| strip_prefix_ignore_case(target, b"https://"))
            .ok_or(refuse(
                400,
                "the request target is not a path or an http(s) URL",
            ))?;
        let end = rest
            .iter()
            .position(|&b| b == b'/' || b == b'?')
            .unwrap_or(rest.len());
        host::parse(&rest[..end], 80)
            .map_err(|_| refuse(400, "bad authority in the request target"))?;
        true
    };

    let mut fields = 0usize;
    let mut field_bytes = 0usize;
    // The first of each, and how many (no allocation for a usual head).
    let mut hosts = Seen::default();
    let mut lengths = Seen::default();
    let mut codings = Seen::default();
    let (mut close, mut keep_alive, mut upgrade_token) = (false, false, false);
    let mut upgrade_field = false;
    let mut upgrade_lines = Vec::new();
    let mut expect_continue = false;
    let mut expect_lines = Vec::new();
    let mut pos = lines.pos;
    while pos < head.len() && !head[pos..].starts_with(b"\r\n") {
        let (end, clean) = field_line(head, pos);
        if end + 2 > head.len() {
            break;
        }
        let (range, line) = (pos..end + 2, &head[pos..end]);
        pos = end + 2;
        fields += 1;
        field_bytes += line.len() + 2;
        if fields > limits.max_headers {
            return Err(refuse(431, "too many request headers"));
        }
        if field_bytes > limits.max_header_bytes {
            return Err(refuse(431, "request headers too large"));
        }
        let (name, value) = match clean {
            Some((name, value)) => (&head[name], &head[value]),
            None => field_of(line)?,
        };
        // One comparison per name of the same length.
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        match name.len() {
            4 if is("host") => hosts.add(range, value),
            14 if is("content-length") => lengths.add(range, value),
            17 if is("transfer-encoding") => codings.add(range, value),
            10 if is("connection") => {
                for token in value.split(|&b| b == b',').map(trim_ows) {
                    close |= token.eq_ignore_ascii_case(b"close");
                    keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                    upgrade_token |= token.eq_ignore_ascii_case(b"upgrade");
                }
            }
            7 if is("upgrade") => {
                upgrade_field = true;
                upgrade_lines.push(range);
            }
            6 if is("expect") => {
                expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
                expect_lines.push(range);
            }
            _ => {}
        }
    }

    if hosts.count > 1 {
        return Err(refuse(400, "more than one Host header"));
    }
    if hosts.count == 0 && !http10 {
        return Err(refuse(400, "no Host header"));
    }
    let mut drop = Vec::new();
    // RFC 9110 §7.8: an upgrade is asked with `Upgrade` and `Connection:
    // upgrade` together, and never in HTTP/1.0. An `Upgrade` without them
    // is left out, as HAProxy and Envoy ignore it (pingora would forward
    // `Upgrade: websocket` as a handshake and switch the connection).
    let upgrade = upgrade_field && upgrade_token && !http10;
    if upgrade_field && !upgrade {
        drop.extend(upgrade_lines);
    }
    if absolute {
        // RFC 9112 §3.2: the request is still refused for a bad Host.
        if let Some((range, value)) = hosts.first {
            host::parse(value, 80).map_err(|_| refuse(400, "bad Host header"))?;
            drop.push(range);
        }
    }

    let body = if let Some((_, coding)) = codings.first {
        if http10 {
            return Err(refuse(400, "Transfer-Encoding in an HTTP/1.0 request"));
        }
        if codings.count > 1 || !coding.eq_ignore_ascii_case(b"chunked") {
            return Err(refuse(501, "only Transfer-Encoding: chunked is supported"));
        }
        // Chunked wins over a Content-Length; pingora drops the CL and the
        // connection is not reused (RFC 9112 §6.3).
        close |= lengths.count > 0;
        Body::Chunked
    } else {
        match lengths.first {
            None => Body::None,
            Some(_) if lengths.count > 1 => {
                return Err(refuse(400, "more than one Content-Length"))
            }
            Some((_, one)) => match content_length(one) {
                Some(0) => Body::None,
                Some(n) => Body::Length(n),
                None => return Err(refuse(400, "bad Content-Length")),
            },
        }
    };
    Ok(Head {
        body,
        close: close || (http10 && !keep_alive),
        upgrade,
        expect_continue: expect_continue && !http10,
        expect_lines,
        drop,
        target: encoded_target,
    })
}

/// The first field of a name seen in a head, and how many there were.
#[derive(Default)]
struct Seen<'a> {
    first: Option<(Range<usize>, &'a [u8])>,
    count: usize,
}

impl<'a> Seen<'a> {
    fn add(&mut self, range: Range<usize>, value: &'a [u8]) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some((range, value));
        }
    }
}

/// The field line starting at `start`: where its CRLF is, and its name's
/// and trimmed value's ranges when the line is clean (a token, a colon,
/// value bytes only), read in one pass (names through a table, values
/// eight bytes at a time). `None` for any other line, which
/// [`field_of`] reads to say why it is refused.
#[allow(clippy::type_complexity)]
fn field_line(head: &[u8], start: usize) -> (usize, Option<(Range<usize>, Range<usize>)>) {
    let mut i = start
        + head
            .get(start..)
            .and_then(|rest| rest.iter().position(|&b| !is_tchar(b)))
            .unwrap_or(0);
    if i > start && head.get(i) == Some(&b':') {
        let name = start..i;
        i += 1;
        while matches!(head.get(i), Some(b' ' | b'\t')) {
            i += 1;
        }
        let value = i;
        let cr = value_run_end(head, value);
        if head.get(cr..cr + 2) == Some(&b"\r\n"[..]) {
            let mut end = cr;
            while end > value && matches!(head[end - 1], b' ' | b'\t') {
                end -= 1;
            }
            return (cr, Some((name, value..end)));
        }
    }
    let mut lines = LineIter {
        buf: head,
        pos: start,
    };
    let end = lines.next().map_or(head.len(), |(r, _)| r.end - 2);
    (end, None)
}

/// A field line that is not clean ([`field_line`]): its name and value
/// if it is a field line at all, else why it is refused.
fn field_of(line: &[u8]) -> Result<(&[u8], &[u8]), Refusal> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(refuse(400, "folded or indented header line"));
    }
    let colon = memchr::memchr(b':', line).ok_or(refuse(400, "header line without a colon"))?;
    let name = &line[..colon];
    if name.is_empty() || !all_tchar(name) {
        return Err(refuse(400, "bad header name"));
    }
    let value = trim_ows(&line[colon + 1..]);
    if !all_value_bytes(value) {
        return Err(refuse(400, "control byte in a header value"));
    }
    Ok((name, value))
}

/// Without optional whitespace (SP and HTAB only, RFC 9110 §5.6.3): any
/// other byte at the ends is part of the value, and checked.
fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &v[start..end]
}

/// `1*DIGIT` that fits in a u64.
fn content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

fn strip_prefix_ignore_case<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    Http10,
    Http11,
}

/// The method, target and version of a request line: three parts
/// between single spaces (RFC 9112 §3). The method ends at the first
/// space and the version starts after the last, found from the line's
/// ends (a split of the whole line took about 5 instructions a byte,
/// `benches/callgrind`, issue 17); a space in between is a fourth part.
fn request_line_parts(line: &[u8]) -> Result<(&[u8], &[u8], Version), Refusal> {
    let malformed = || refuse(400, "malformed request line");
    let first = line.iter().position(|&b| b == b' ').ok_or_else(malformed)?;
    let last = memchr::memrchr(b' ', line).unwrap_or(first);
    if last == first {
        return Err(malformed());
    }
    let (method, target, version) = (&line[..first], &line[first + 1..last], &line[last + 1..]);
    let forbidden = any_forbidden_target_byte(target);
    if forbidden && target.contains(&b' ') {
        return Err(malformed());
    }
    checked_parts(method, target, forbidden, version)
}

/// The checks of a request line's three parts, in order: the method a
/// token, the target neither empty nor holding a `forbidden` byte, the
/// version HTTP/1.1 or 1.0.
fn checked_parts<'a>(
    method: &'a [u8],
    target: &'a [u8],
    forbidden: bool,
    version: &[u8],
) -> Result<(&'a [u8], &'a [u8], Version), Refusal> {
    if method.is_empty() || !all_tchar(method) {
        return Err(refuse(400, "bad method"));
    }
    if target.is_empty() {
        return Err(refuse(400, "empty request target"));
    }
    if forbidden {
        return Err(refuse(
            400,
            "control byte, space, \\ or # in the request target",
        ));
    }
    let version = match version {
        b"HTTP/1.1" => Version::Http11,
        b"HTTP/1.0" => Version::Http10,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return Err(refuse(505, "HTTP version not supported"));
        }
        _ => return Err(refuse(400, "bad HTTP version")),
    };
    Ok((method, target, version))
}

/// The CRLF-terminated lines of a head (already checked for bare LF), with
/// each line's byte range including its CRLF.
struct LineIter<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for LineIter<'a> {
    type Item = (Range<usize>, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.buf[self.pos..];
        // Every CR is followed by LF here (bare CRs were refused as they came).
        let mut i = memchr::memchr(b'\r', rest)?;
        while rest.get(i + 1) != Some(&b'\n') {
            i += 1 + memchr::memchr(b'\r', &rest[i + 1..])?;
        }
        let start = self.pos;
        self.pos += i + 2;
        Some((start..self.pos, &rest[..i]))
    }
}

// === chunked bodies ===

/// Checks a chunked body (RFC 9112 §7.1) as it streams.
#[derive(Debug)]
pub struct Chunked {
    state: ChunkState,
    /// Bytes of the current size line or trailer section.
    line: usize,
    max_trailer_bytes: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Hex digits of a chunk size.
    Size {
        digits: u8,
        value: u64,
    },
    /// After the size: BWS, then `;` and extensions, until CR.
    Ext {
        seen_semicolon: bool,
        value: u64,
    },
    SizeLf {
        value: u64,
    },
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// The start of a trailer field line or the final CRLF.
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    LastLf,
    Done,
}

/// Longest chunk-size line (with extensions) accepted.
const MAX_CHUNK_LINE: usize = 4096;

impl Chunked {
    pub fn new(max_trailer_bytes: usize) -> Self {
        Self {
            state: ChunkState::Size {
                digits: 0,
                value: 0,
            },
            line: 0,
            max_trailer_bytes,
        }
    }

    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Reads through `data`; returns how many bytes belong to the body
    /// (all of `data` unless the body ends inside it).
    pub fn feed(&mut self, data: &[u8]) -> Result<usize, Refusal> {
        use ChunkState::*;
        let bad = |reason| Err(refuse(400, reason));
        let mut i = 0;
        while i < data.len() && self.state != Done {
            if let Data { left } = self.state {
                let take = left.min((data.len() - i) as u64);
                i += take as usize;
                self.state = if take == left {
                    DataCr
                } else {
                    Data { left: left - take }
                };
                continue;
            }
            let b = data[i];
            i += 1;
            self.line += 1;
            self.state = match self.state {
                Size { digits, value } => match (b as char).to_digit(16) {
                    Some(d) if digits < 16 => Size {
                        digits: digits + 1,
                        value: value << 4 | u64::from(d),
                    },
                    Some(_) => return bad("chunk size too large"),
                    None if digits == 0 => return bad("bad chunk size"),
                    None => match b {
                        b'\r' => SizeLf { value },
                        b';' => Ext {
                            seen_semicolon: true,
                            value,
                        },
                        b' ' | b'\t' => Ext {
                            seen_semicolon: false,
                            value,
                        },
                        _ => return bad("bad chunk size"),
                    },
                },
                Ext {
                    seen_semicolon,
                    value,
                } => match b {
                    b'\r' if seen_semicolon => SizeLf { value },
                    b';' => Ext {
                        seen_semicolon: true,
                        value,
                    },
                    b' ' | b'\t' => Ext {
                        seen_semicolon,
                        value,
                    },
                    _ if seen_semicolon && is_value_byte(b) => Ext {
                        seen_semicolon,
                        value,
                    },
                    _ => return bad("bad chunk extension"),
                },
                SizeLf { value } => {
                    if b != b'\n' {
                        return bad("chunk size line not ended by CRLF");
                    }
                    self.line = 0;
                    if value == 0 {
                        TrailerStart
                    } else {
                        Data { left: value }
                    }
                }
                DataCr if b == b'\r' => DataLf,
                DataLf if b == b'\n' => {
                    self.line = 0;
                    Size {
                        digits: 0,
                        value: 0,
                    }
                }
                DataCr | DataLf => return bad("chunk data not followed by CRLF"),
                TrailerStart => match b {
                    b'\r' => LastLf,
                    _ if is_tchar(b) => TrailerName,
                    _ => return bad("bad trailer field"),
                },
                TrailerName => match b {
                    b':' => TrailerValue,
                    _ if is_tchar(b) => TrailerName,
                    _ => return bad("bad trailer field name"),
                },
                TrailerValue => match b {
                    b'\r' => TrailerLf,
                    _ if is_value_byte(b) => TrailerValue,
                    _ => return bad("control byte in a trailer field"),
                },
                TrailerLf if b == b'\n' => TrailerStart,
                LastLf if b == b'\n' => Done,
                TrailerLf | LastLf => return bad("trailer line not ended by CRLF"),
                // Data is consumed above; the loop stops at Done.
                Data { .. } | Done => return bad("chunked body parser out of step"),
            };
            let limit = match self.state {
                TrailerStart | TrailerName | TrailerValue | TrailerLf | LastLf => {
                    self.max_trailer_bytes
                }
                _ => MAX_CHUNK_LINE,
            };
            if self.line > limit {
                return bad("chunk size line or trailers too long");
            }
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// `request_line_parts` as it was first written, a split at every
    /// space (the parts' checks are shared): the search from the line's
    /// ends must give its answer, refusals' status and reason included,
    /// for every line.
    fn request_line_parts_by_split(line: &[u8]) -> Result<(&[u8], &[u8], Version), Refusal> {
        let mut parts = line.split(|&b| b == b' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(refuse(400, "malformed request line"));
        };
        checked_parts(method, target, any_forbidden_target_byte(target), version)
    }

    /// Lines built from request-line pieces and the bytes that break them
    /// (spaces, tabs, controls, `#`, `\`, obs-text), up to seven pieces.
    #[test]
    fn request_line_parts_from_the_ends_answer_as_the_split() {
        let pieces: [&[u8]; 16] = [
            b"GET",
            b"HEAD",
            b"G@T",
            b"/",
            b"/a?b=c",
            b"*",
            b"http://h/x",
            b"HTTP/1.1",
            b"HTTP/1.0",
            b"HTTP/2.0",
            b"HTTP/1.10",
            b"",
            b"\t",
            b"#",
            b"\\",
            b"\x7f\x80",
        ];
        let mut rng = fastrand::Rng::with_seed(5);
        for _ in 0..100_000 {
            let mut line = Vec::new();
            for i in 0..rng.usize(1..8) {
                if i > 0 {
                    line.extend_from_slice(if rng.u8(..) < 230 { b" " } else { b"  " });
                }
                line.extend_from_slice(pieces[rng.usize(..pieces.len())]);
            }
            let (ours, theirs) = (
                request_line_parts(&line),
                request_line_parts_by_split(&line),
            );
            let show = |r: &Result<(&[u8], &[u8], Version), Refusal>| match r {
                Ok((m, t, v)) => format!("{m:?} {t:?} {v:?}"),
                Err(e) => format!("{} {}", e.status, e.reason),
            };
            assert_eq!(
                show(&ours),
                show(&theirs),
                "{:?}",
                String::from_utf8_lossy(&line)
            );
        }
    }

    const LIMITS: Limits = Limits {
        max_request_line: 256,
        max_header_bytes: 1024,
        max_headers: 8,
    };

    fn head(raw: &str) -> Result<Head, Refusal> {
        let mut scan = HeadScan::default();
        match scan.scan(raw.as_bytes(), &LIMITS)? {
            Scan::Complete(n) => {
                assert_eq!(n, raw.len(), "{raw:?}: the head ends at its empty line");
                check(raw.as_bytes(), &LIMITS)
            }
            Scan::Partial => panic!("{raw:?} is not a complete head"),
        }
    }

    fn status(raw: &str) -> u16 {
        match head(raw) {
            Ok(_) => 200,
            Err(r) => r.status,
        }
    }

    #[test]
    fn request_lines() {
        let cases = [
            ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", 200),
            ("GET / HTTP/1.0\r\n\r\n", 200),
            ("PURGE /x HTTP/1.1\r\nHost: a\r\n\r\n", 200),
            ("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 200),
            ("GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET http://a/b HTTP/1.1\r\nHost: x\r\n\r\n", 200),
            ("GET HTTPS://a:8443 HTTP/1.1\r\nHost: x\r\n\r\n", 200),
            ("GET ftp://a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET http://u@a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET http:///b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 405),
            ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400),
            ("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET /a\\b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET /a?b\\c HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            (" GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET / http/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1.1\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
            ("GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
            ("GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505),
            ("GET /\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1\rX\r\nHost: a\r\n\r\n", 400),
        ];
        for (raw, want) in cases {
            assert_eq!(status(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn header_fields() {
        let cases = [
            ("GET / HTTP/1.1\r\nHost: a\r\nX: \t v \t\r\n\r\n", 200),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: caf\u{e9}\r\n\r\n", 200),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX(y): v\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\x0bb\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nhost: a\r\nHOST: b\r\n\r\n", 400),
            ("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("GET http://a/ HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
            ("GET http://a/ HTTP/1.1\r\n\r\n", 400),
        ];
        for (raw, want) in cases {
            assert_eq!(status(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn bodies() {
        let body = |raw: &str| head(raw).map(|h| (h.body, h.close));
        let h = "POST / HTTP/1.1\r\nHost: a\r\n";
        assert_eq!(body(&format!("{h}\r\n")), Ok((Body::None, false)));
        assert_eq!(
            body(&format!("{h}Content-Length: 0\r\n\r\n")),
            Ok((Body::None, false))
        );
        assert_eq!(
            body(&format!("{h}Content-Length: 0042\r\n\r\n")),
            Ok((Body::Length(42), false))
        );
        assert_eq!(
            body(&format!("{h}Transfer-Encoding: Chunked \r\n\r\n")),
            Ok((Body::Chunked, false))
        );
        assert_eq!(
            body(&format!(
                "{h}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            )),
            Ok((Body::Chunked, true)),
            "TE wins over CL and the connection closes"
        );
        for (field, want) in [
            ("Content-Length: 3,3", 400),
            ("Content-Length: 3\r\nContent-Length: 3", 400),
            ("Content-Length: 3\r\nContent-Length: 4", 400),
            ("Content-Length: -1", 400),
            ("Content-Length: +1", 400),
            ("Content-Length: 1 2", 400),
            ("Content-Length: 0x10", 400),
            ("Content-Length: ", 400),
            ("Content-Length: 99999999999999999999", 400),
            ("Content-Length: 18446744073709551616", 400),
            ("Transfer-Encoding: gzip, chunked", 501),
            ("Transfer-Encoding: chunked, chunked", 501),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
                501,
            ),
            ("Transfer-Encoding: gzip", 501),
            ("Transfer-Encoding: identity", 501),
            ("Transfer-Encoding: ", 501),
            ("Transfer-Encoding: chunked;q=1", 501),
        ] {
            assert_eq!(status(&format!("{h}{field}\r\n\r\n")), want, "{field:?}");
        }
        assert_eq!(
            status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
    }

    #[test]
    fn connection_close_upgrade_and_http10() {
        let close = |raw: &str| head(raw).unwrap().close;
        assert!(!close("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(close(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n"
        ));
        assert!(close(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: x, close\r\n\r\n"
        ));
        assert!(close("GET / HTTP/1.0\r\n\r\n"));
        assert!(!close("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
        let h =
            head("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
                .unwrap();
        assert!(h.upgrade);
        assert!(
            !head("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n")
                .unwrap()
                .upgrade
        );
    }

    #[test]
    fn an_upgrade_field_that_asks_no_upgrade_is_left_out() {
        let dropped = |raw: &str| {
            let h = head(raw).unwrap();
            let lines: Vec<&str> = h.drop.iter().map(|r| &raw[r.clone()]).collect();
            (h.upgrade, lines.join(""))
        };
        for (raw, upgrade, gone) in [
            (
                "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
                false,
                "Upgrade: websocket\r\n",
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nupgrade: h2c\r\n\r\n",
                false,
                "upgrade: h2c\r\n",
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: x-upgrade\r\nUpgrade: websocket\r\n\r\n",
                false,
                "Upgrade: websocket\r\n",
            ),
            (
                "GET / HTTP/1.1\r\nUpgrade: a\r\nHost: a\r\nUPGRADE: b\r\n\r\n",
                false,
                "Upgrade: a\r\nUPGRADE: b\r\n",
            ),
            (
                "GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
                false,
                "Upgrade: websocket\r\n",
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
                true,
                "",
            ),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n",
                false,
                "",
            ),
        ] {
            assert_eq!(dropped(raw), (upgrade, gone.to_string()), "{raw:?}");
        }
    }

    /// A field line read in one pass ([`field_line`]) is exactly what the
    /// line-by-line reading ([`field_of`]) accepts, with the same name,
    /// value and line end; any other line goes to `field_of`, which says
    /// why it is refused. Names and values of every shape, each byte of
    /// a line replaced in turn by each byte.
    #[test]
    fn a_field_line_read_in_one_pass_is_what_the_line_by_line_check_reads() {
        let names = [
            "Host",
            "x",
            "!#$%&'*+-.^_`|~09azAZ",
            "Bad(Name)",
            "",
            " Folded",
            "Sp ",
        ];
        let values = [
            "",
            " ",
            "v",
            " \tpadded\t ",
            "seven77",
            "eight888",
            "a value over sixteen bytes long",
            "tab\tin it",
            "caf\u{e9}",
            "del \u{7f}",
            "nul \0",
            "cr \r in it",
            "lf \n in it",
        ];
        let mut lines = Vec::new();
        for name in names {
            for value in values {
                lines.push(format!("{name}:{value}").into_bytes());
                lines.push(format!("{name}: {value}").into_bytes());
            }
        }
        let base = b"Accept-Language: en-GB,en;q=0.9,fr;q=0.8".to_vec();
        for at in 0..base.len() {
            for b in 0..=255u8 {
                let mut l = base.clone();
                l[at] = b;
                lines.push(l);
            }
        }
        let mut clean = 0;
        for line in lines {
            let mut head = line.clone();
            head.extend_from_slice(b"\r\nNext: x\r\n\r\n");
            let (end, fast) = field_line(&head, 0);
            let by_lines = LineIter { buf: &head, pos: 0 }
                .next()
                .map(|(r, _)| r.end - 2);
            assert_eq!(Some(end), by_lines, "{:?}", line.escape_ascii().to_string());
            let slow = field_of(&head[..end]);
            match fast {
                Some((n, v)) => {
                    assert_eq!(slow, Ok((&head[n], &head[v])), "{}", line.escape_ascii());
                    clean += 1;
                }
                None => assert!(slow.is_err(), "{}", line.escape_ascii()),
            }
        }
        assert!(clean > 6000, "{clean}");
    }

    #[test]
    fn only_spaces_and_tabs_are_trimmed_from_values() {
        for raw in [
            "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\x0c\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX: \x0b1\r\n\r\n",
        ] {
            let mut scan = HeadScan::default();
            let r = match scan.scan(raw.as_bytes(), &LIMITS) {
                Ok(Scan::Complete(n)) => check(&raw.as_bytes()[..n], &LIMITS).map(|_| ()),
                other => panic!("{raw:?}: {other:?}"),
            };
            assert_eq!(r.unwrap_err().status, 400, "{raw:?}");
        }
    }

    #[test]
    fn high_bytes_in_the_target_are_percent_encoded() {
        let raw = b"GET /caf\xc3\xa9?\x80 HTTP/1.1\r\nHost: a\r\n\r\n";
        let h = check(raw, &LIMITS).unwrap();
        let (range, bytes) = h.target.unwrap();
        assert_eq!(&raw[range], b"/caf\xc3\xa9?\x80");
        assert_eq!(bytes, b"/caf%C3%A9?%80");
        assert!(check(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n", &LIMITS)
            .unwrap()
            .target
            .is_none());
    }

    #[test]
    fn absolute_form_drops_its_host_lines() {
        let raw = "GET http://a/b HTTP/1.1\r\nX: 1\r\nHost: other\r\nY: 2\r\n\r\n";
        let h = head(raw).unwrap();
        assert_eq!(h.drop.len(), 1);
        assert_eq!(&raw[h.drop[0].clone()], "Host: other\r\n");
    }

    #[test]
    fn limits_give_414_and_431() {
        let long_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(300));
        assert_eq!(status(&long_target), 414);
        let many: String = (0..9).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            status(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")),
            431
        );
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "v".repeat(1100)
        );
        assert_eq!(status(&big), 431);
        // Found while the head is still arriving, not only at its end.
        let mut scan = HeadScan::default();
        let partial = format!("GET /{}", "a".repeat(300));
        assert_eq!(
            scan.scan(partial.as_bytes(), &LIMITS).unwrap_err().status,
            414
        );
        let mut scan = HeadScan::default();
        let partial = format!("GET / HTTP/1.1\r\nX: {}", "v".repeat(1400));
        assert_eq!(
            scan.scan(partial.as_bytes(), &LIMITS).unwrap_err().status,
            431
        );
    }

    #[test]
    fn bare_lf_anywhere_in_the_head_is_refused() {
        for raw in [
            "GET / HTTP/1.1\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n\n",
            "GET / HTTP/1.1\nHost: a\n\n",
        ] {
            let mut scan = HeadScan::default();
            assert_eq!(
                scan.scan(raw.as_bytes(), &LIMITS),
                Err(refuse(400, "a line ends in a bare LF")),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn the_head_end_is_found_across_reads() {
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody";
        for split in 1..raw.len() {
            let mut scan = HeadScan::default();
            let first = scan.scan(&raw[..split], &LIMITS).unwrap();
            let found = match first {
                Scan::Complete(n) => n,
                Scan::Partial => match scan.scan(raw, &LIMITS).unwrap() {
                    Scan::Complete(n) => n,
                    Scan::Partial => panic!("not found after split at {split}"),
                },
            };
            assert_eq!(found, raw.len() - 4, "split at {split}");
        }
    }

    /// Feeds `body` whole and byte by byte: both give the same answer.
    fn chunked(body: &str) -> Result<usize, Refusal> {
        let mut whole = Chunked::new(64);
        let all = whole.feed(body.as_bytes()).map(|n| (n, whole.done()));
        let mut bytes = Chunked::new(64);
        let mut used = 0;
        let mut one = Ok((0, false));
        for b in body.as_bytes() {
            match bytes.feed(std::slice::from_ref(b)) {
                Ok(n) => used += n,
                Err(e) => {
                    one = Err(e);
                    break;
                }
            }
            if bytes.done() {
                break;
            }
        }
        if one.is_ok() {
            one = Ok((used, bytes.done()));
        }
        assert_eq!(all.map(|r| r.1), one.map(|r| r.1), "{body:?}");
        match all {
            Ok((n, true)) => Ok(n),
            Ok((_, false)) => Err(refuse(0, "incomplete")),
            Err(e) => Err(e),
        }
    }

    #[test]
    fn chunked_bodies_follow_rfc_9112_section_7_1() {
        for ok in [
            "0\r\n\r\n",
            "5\r\nhello\r\n0\r\n\r\n",
            "5;ext=1\r\nhello\r\n0;a;b=\"c\"\r\n\r\n",
            "5 ;ext\r\nhello\r\n0\r\n\r\n",
            "A\r\n0123456789\r\n0\r\n\r\n",
            "000a\r\n0123456789\r\n0\r\n\r\n",
            "5\r\nhello\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n",
        ] {
            assert_eq!(chunked(ok), Ok(ok.len()), "{ok:?}");
        }
        // The body ends where its last CRLF does; a next request may follow.
        assert_eq!(chunked("0\r\n\r\nGET / HTTP/1.1\r\n"), Ok(5));
        for bad in [
            "zz\r\nabc\r\n0\r\n\r\n",
            "\r\n",
            "-1\r\n",
            "0x5\r\nhello\r\n",
            "5\nhello\r\n0\r\n\r\n",
            "5\r\nhello\n0\r\n\r\n",
            "5\r\nhelloXX0\r\n\r\n",
            "5\r\nhello\r\n0\r\n\n",
            "11111111111111111\r\n",
            "5 x\r\nhello\r\n0\r\n\r\n",
            "5;a\x00\r\nhello\r\n0\r\n\r\n",
            "0\r\n bad: fold\r\n\r\n",
            "0\r\nX : 1\r\n\r\n",
            "0\r\nX: a\x01\r\n\r\n",
            "5\r",
        ] {
            let r = chunked(bad);
            assert!(
                matches!(
                    r,
                    Err(Refusal { status: 400, .. }) | Err(Refusal { status: 0, .. })
                ),
                "{bad:?}: {r:?}"
            );
        }
        let long_ext = format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(5000));
        assert_eq!(chunked(&long_ext).unwrap_err().status, 400);
        let long_trailer = format!("0\r\nX: {}\r\n\r\n", "v".repeat(100));
        assert_eq!(chunked(&long_trailer).unwrap_err().status, 400);
    }
}
