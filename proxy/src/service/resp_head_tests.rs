//! The vendored pingora-core's one-pass response head reader (EDGE-PATCH
//! thirty-ninth, `resp_head::parse`) against httparse, which reads every
//! head it declines. Here because the vendored crate's own tests are not
//! built with the workspace.
//!
//! The rule: for every input, the one-pass reader gives exactly what
//! httparse gives with pingora's configuration (length, version, status,
//! reason, each field's name and value and where they are), or declines.
//! And it must not decline the heads servers send, or it saves nothing.

use pingora_core::protocols::http::v1::resp_head::{self, Head};
use pingora_core::utils::BufRef;

/// What a head gives: length, version, code, reason, fields as offsets.
type Parts = (usize, http::Version, u16, (usize, usize), Vec<[usize; 4]>);

fn parts(h: &Head) -> Parts {
    let reason = h.reason.as_ref().map_or((usize::MAX, 0), |r| (r.0, r.1));
    let fields = h
        .fields
        .iter()
        .map(|f| [f.name().0, f.name().1, f.value().0, f.value().1])
        .collect();
    (h.len, h.version, h.code, reason, fields)
}

/// httparse's reading, as pingora's client converts it
/// (`parse_resp_buffer`): `None` when partial or refused.
fn by_httparse(buf: &[u8], slots: usize) -> Option<Parts> {
    let mut headers = vec![httparse::EMPTY_HEADER; slots];
    let mut resp = httparse::Response::new(&mut headers);
    let mut config = httparse::ParserConfig::default();
    config.allow_spaces_after_header_name_in_responses(true);
    config.allow_obsolete_multiline_headers_in_responses(true);
    let httparse::Status::Complete(len) = config.parse_response(&mut resp, buf).ok()? else {
        return None;
    };
    let base = buf.as_ptr() as usize;
    let at = |p: *const u8| p as usize - base;
    let version = match resp.version? {
        1 => http::Version::HTTP_11,
        0 => http::Version::HTTP_10,
        _ => return None,
    };
    let reason = match resp.reason? {
        "" => BufRef(0, 0),
        r => BufRef(at(r.as_ptr()), at(r.as_ptr()) + r.len()),
    };
    let fields = resp
        .headers
        .iter()
        .map(|h| {
            let (n, v) = (at(h.name.as_ptr()), at(h.value.as_ptr()));
            [n, n + h.name.len(), v, v + h.value.len()]
        })
        .collect();
    Some((len, version, resp.code?, (reason.0, reason.1), fields))
}

/// Checks `buf` and every prefix of it; returns whether the one-pass
/// reader took the whole.
fn agree(buf: &[u8], slots: usize) -> bool {
    let mut took = false;
    for end in 0..=buf.len() {
        let b = &buf[..end];
        if let Some(fast) = resp_head::parse(b, slots) {
            let fast = parts(&fast);
            assert_eq!(
                Some(&fast),
                by_httparse(b, slots).as_ref(),
                "{:?}",
                b.escape_ascii().to_string()
            );
            took = end == buf.len();
        }
    }
    took
}

const STATUS: [&str; 16] = [
    "HTTP/1.1 200 OK",
    "HTTP/1.0 404 Not Found",
    "HTTP/1.1 204",
    "HTTP/1.1 200 ",
    "HTTP/1.1 200  two spaces",
    "HTTP/1.1 999 \tTab\t",
    "HTTP/1.1 100 Continue",
    "HTTP/1.1 301 Moved Permanently, with \"quotes\" and ~",
    "HTTP/1.1 200 caf\u{e9}",
    "HTTP/1.1 200 O\u{7f}K",
    "HTTP/1.1 20 OK",
    "HTTP/1.1 2000 OK",
    "HTTP/1.2 200 OK",
    "HTTP/2.0 200 OK",
    "http/1.1 200 OK",
    "HTTP/1.1  200 OK",
];

const NAMES: [&str; 10] = [
    "Content-Length",
    "x",
    "ETag",
    "!#$%&'*+-.^_`|~09azAZ",
    "Set-Cookie",
    "X Space",
    "Bad(Name)",
    "",
    "N\u{e9}",
    "Name ",
];

const VALUES: [&str; 20] = [
    "1024",
    "a\t\u{7f}",
    "tab\t\tand\0nul in one word",
    "",
    " ",
    "\t",
    "  padded  ",
    "\tv\t",
    "seven77",
    "eight888",
    "nine99999",
    "a value of more than sixteen bytes, over several words",
    "tab\tinside and at the end of a word\t",
    "obs-text \u{e9}\u{e8} in it",
    "del \u{7f} in it",
    "nul \0 in it",
    "bare \r cr",
    "bare \n lf",
    "vertical \u{b} tab",
    "\"quoted\", commas; and = signs",
];

/// Status lines, names and values in turn, one and two fields, CRLF and
/// bare LF ends, a body after the head or none.
#[test]
fn response_heads_read_in_one_pass_are_what_httparse_reads() {
    let mut taken = 0;
    let mut heads = 0;
    for status in STATUS {
        for (i, name) in NAMES.iter().enumerate() {
            for (j, value) in VALUES.iter().enumerate() {
                let other = NAMES[(i + j) % NAMES.len()];
                let other_value = VALUES[(i * 7 + j) % VALUES.len()];
                for head in [
                    format!("{status}\r\n{name}: {value}\r\n\r\n"),
                    format!("{status}\r\n{name}:{value}\r\n{other}: {other_value}\r\n\r\nbody"),
                    format!("{status}\n{name}: {value}\n\n"),
                    format!("{status}\r\n{name}: {value}\n\r\n"),
                ] {
                    heads += 1;
                    taken += usize::from(agree(head.as_bytes(), 256));
                }
            }
        }
    }
    // The usual shapes were taken: every valid status line (8 of 16)
    // with valid names (4 of 10) and values without control bytes
    // (13 of 20), alone or with a second valid field.
    assert!(taken >= 8 * 4 * 12, "{taken} of {heads}");
}

/// A head as nginx sends one, each byte replaced in turn by bytes that
/// matter to the grammar; more fields than the reader is given slots
/// for; folded lines; empty lines before the status line.
#[test]
fn one_pass_heads_with_a_byte_changed_are_what_httparse_reads() {
    let head = "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 06 Dec 2026 01:00:00 GMT\r\n\
                Content-Type: application/octet-stream\r\nContent-Length: 1024\r\n\
                Last-Modified: Sat, 05 Dec 2026 22:00:00 GMT\r\nConnection: keep-alive\r\n\
                ETag: \"6752b1a0-400\"\r\nAccept-Ranges: bytes\r\n\r\n";
    assert!(agree(head.as_bytes(), 256));
    let bytes = [
        0u8, b'\t', b'\n', b'\r', b' ', b':', 0x7f, 0x80, 0xff, b'a', b'(', b'"', 0x1f,
    ];
    let mut taken = 0;
    for at in 0..head.len() {
        for &b in &bytes {
            let mut h = head.as_bytes().to_vec();
            h[at] = b;
            // Whole heads only here: prefixes were checked above.
            if let Some(fast) = resp_head::parse(&h, 256) {
                assert_eq!(
                    Some(parts(&fast)),
                    by_httparse(&h, 256),
                    "{}",
                    h.escape_ascii()
                );
                taken += 1;
            }
        }
    }
    assert!(taken > head.len(), "{taken}");
    // More fields than slots: httparse refuses, the reader declines.
    for slots in 0..10 {
        let took = agree(head.as_bytes(), slots);
        assert_eq!(took, slots >= 8, "{slots} slots");
    }
    for folded in [
        "HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n",
        "HTTP/1.1 200 OK\r\nA: b\r\n\tc\r\nD: e\r\n\r\n",
        "HTTP/1.1 200 OK\r\nA:\r\n c\r\n\r\n",
        "\r\nHTTP/1.1 200 OK\r\nA: b\r\n\r\n",
        "\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\n A: b\r\n\r\n",
    ] {
        assert!(!agree(folded.as_bytes(), 256), "{folded:?}");
    }
}
