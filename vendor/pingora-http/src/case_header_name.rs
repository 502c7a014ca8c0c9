// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

use crate::*;
use bytes::Bytes;
use http::header;

#[derive(Debug, Clone)]
pub struct CaseHeaderName(Bytes);

impl CaseHeaderName {
    pub fn new(name: String) -> Self {
        CaseHeaderName(name.into())
    }
}

impl CaseHeaderName {
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    pub fn from_slice(buf: &[u8]) -> Self {
        CaseHeaderName(Bytes::copy_from_slice(buf))
    }
}

/// A trait that converts into case-sensitive header names.
pub trait IntoCaseHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName;

    /// EDGE-PATCH (EDGE-PATCH.md, first): the name as a [`HeaderName`]
    /// when it already is one, so a head without a case map inserts it as
    /// is instead of rendering it to bytes and parsing it back; otherwise
    /// the name in its case form.
    fn into_header_name(self) -> Result<HeaderName, CaseHeaderName>
    where
        Self: Sized,
    {
        Err(self.into_case_header_name())
    }
}

impl IntoCaseHeaderName for CaseHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        self
    }
}

impl IntoCaseHeaderName for String {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self.into())
    }
}

impl IntoCaseHeaderName for &'static str {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self.into())
    }
}

impl IntoCaseHeaderName for HeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(titled_header_name(&self))
    }

    fn into_header_name(self) -> Result<HeaderName, CaseHeaderName> {
        Ok(self)
    }
}

impl IntoCaseHeaderName for &HeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(titled_header_name(self))
    }

    fn into_header_name(self) -> Result<HeaderName, CaseHeaderName> {
        Ok(self.clone())
    }
}

impl IntoCaseHeaderName for Bytes {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self)
    }
}

fn titled_header_name(header_name: &HeaderName) -> Bytes {
    titled_header_name_str(header_name).map_or_else(
        || Bytes::copy_from_slice(header_name.as_str().as_bytes()),
        |s| Bytes::from_static(s.as_bytes()),
    )
}

/// EDGE-PATCH (sixth): the names [`titled_header_name_str`] titles (and
/// [`titled_name_of`] finds by length and first letter).
#[cfg(test)]
const TITLED: [&str; 12] = [
    "Accept-Ranges",
    "Age",
    "Cache-Control",
    "Connection",
    "Content-Type",
    "Content-Encoding",
    "Content-Length",
    "Date",
    "Transfer-Encoding",
    "Host",
    "Server",
    "Set-Cookie",
];

/// EDGE-PATCH (sixth): how pingora's HTTP/1 writer (without a case map)
/// spells the field name `name` in any case: titled for the names of
/// [`titled_header_name_str`], else `None` (it writes them in lower case).
pub fn titled_name_of(name: &[u8]) -> Option<&'static str> {
    // One candidate by length and first letter (twelve compares of the
    // name, byte by byte, were about 100 instructions a field), then one
    // compare with its lower-case spelling, eight bytes at a time (a
    // byte-wise loop was about 68 instructions a name); a name of neither
    // is of no titled name.
    macro_rules! candidate {
        ($titled:literal, $lower:literal) => {
            same_letters(name, $lower).then_some($titled)
        };
    }
    match (name.len(), name.first()? | 0x20) {
        (3, b'a') => candidate!("Age", b"age"),
        (4, b'd') => candidate!("Date", b"date"),
        (4, b'h') => candidate!("Host", b"host"),
        (6, b's') => candidate!("Server", b"server"),
        (10, b'c') => candidate!("Connection", b"connection"),
        (10, b's') => candidate!("Set-Cookie", b"set-cookie"),
        (12, b'c') => candidate!("Content-Type", b"content-type"),
        (13, b'a') => candidate!("Accept-Ranges", b"accept-ranges"),
        (13, b'c') => candidate!("Cache-Control", b"cache-control"),
        (14, b'c') => candidate!("Content-Length", b"content-length"),
        (16, b'c') => candidate!("Content-Encoding", b"content-encoding"),
        (17, b't') => candidate!("Transfer-Encoding", b"transfer-encoding"),
        _ => None,
    }
}

/// Whether `name` is `lower` (lower-case letters and `-`) in any case.
/// A byte matches a letter with its 0x20 bit set, and `-` only as itself
/// (CR with its 0x20 bit set is `-`). Eight bytes at a time: each word of
/// `lower` (zero past its end) says by its letters' 0x40 bit where 0x20
/// may be set.
#[inline(always)]
fn same_letters<const N: usize>(name: &[u8], lower: &[u8; N]) -> bool {
    if name.len() != N {
        return false;
    }
    let mut diff = 0u64;
    let mut at = 0;
    while at < N {
        let want = word(lower, at);
        let fold = (want & 0x4040_4040_4040_4040) >> 1;
        diff |= (word(name, at) | fold) ^ want;
        at += 8;
    }
    diff == 0
}

/// Up to eight bytes of `bytes` from `at`, little-endian, zero past its
/// end.
#[inline(always)]
fn word(bytes: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    let take = bytes.len().saturating_sub(at).min(8);
    w[..take].copy_from_slice(&bytes[at..at + take]);
    u64::from_le_bytes(w)
}

/// EDGE-PATCH (sixth): public, for writers of a header map's fields that
/// must spell names as pingora's HTTP/1 writer does.
pub fn titled_header_name_str(header_name: &HeaderName) -> Option<&'static str> {
    Some(match *header_name {
        header::ACCEPT_RANGES => "Accept-Ranges",
        header::AGE => "Age",
        header::CACHE_CONTROL => "Cache-Control",
        header::CONNECTION => "Connection",
        header::CONTENT_TYPE => "Content-Type",
        header::CONTENT_ENCODING => "Content-Encoding",
        header::CONTENT_LENGTH => "Content-Length",
        header::DATE => "Date",
        header::TRANSFER_ENCODING => "Transfer-Encoding",
        header::HOST => "Host",
        header::SERVER => "Server",
        header::SET_COOKIE => "Set-Cookie",
        // TODO: add more const header here to map to their titled case
        // TODO: automatically upper case the first letter?
        _ => {
            return None;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titled_names_are_the_writer_s() {
        for t in TITLED {
            let name = HeaderName::from_bytes(t.as_bytes()).unwrap();
            assert_eq!(titled_header_name_str(&name), Some(t));
            assert_eq!(titled_name_of(t.to_ascii_lowercase().as_bytes()), Some(t));
            assert_eq!(titled_name_of(t.to_ascii_uppercase().as_bytes()), Some(t));
        }
        for other in ["etag", "x-cache", "vary", "last-modified", "content-range"] {
            let name = HeaderName::from_static(other);
            assert_eq!(titled_header_name_str(&name), None);
            assert_eq!(titled_name_of(other.as_bytes()), None);
        }
        // Names a letter off a titled one, of its length and first letter,
        // and names of every standard header in both cases.
        for t in TITLED {
            for i in 0..t.len() {
                let mut near = t.as_bytes().to_vec();
                near[i] = if near[i] == b'x' { b'y' } else { b'x' };
                assert_eq!(titled_name_of(&near), None, "{near:?}");
            }
        }
        assert_eq!(titled_name_of(b""), None);
        assert_eq!(titled_name_of(b"set\rcookie"), None);
        assert_eq!(titled_name_of(b"content\rtype"), None);
        assert_eq!(titled_name_of(b"Content-type"), Some("Content-Type"));
        for t in TITLED {
            // Each byte changed to every other value: only its other case matches.
            for i in 0..t.len() {
                for b in 0..=255u8 {
                    let mut near = t.as_bytes().to_vec();
                    near[i] = b;
                    let expect = near.eq_ignore_ascii_case(t.as_bytes()).then_some(t);
                    assert_eq!(titled_name_of(&near), expect, "{near:?}");
                }
            }
        }
        assert_eq!(titled_name_of(b"\xc1ge"), None);
        for name in [
            header::ACCEPT, header::ACCEPT_CHARSET, header::ACCEPT_ENCODING,
            header::ACCEPT_LANGUAGE, header::ACCEPT_RANGES, header::AGE, header::ALLOW,
            header::AUTHORIZATION, header::CACHE_CONTROL, header::CONNECTION,
            header::CONTENT_DISPOSITION, header::CONTENT_ENCODING, header::CONTENT_LANGUAGE,
            header::CONTENT_LENGTH, header::CONTENT_LOCATION, header::CONTENT_RANGE,
            header::CONTENT_TYPE, header::COOKIE, header::DATE, header::ETAG, header::EXPECT,
            header::EXPIRES, header::FORWARDED, header::FROM, header::HOST, header::IF_MATCH,
            header::IF_MODIFIED_SINCE, header::IF_NONE_MATCH, header::IF_RANGE,
            header::IF_UNMODIFIED_SINCE, header::LAST_MODIFIED, header::LINK, header::LOCATION,
            header::ORIGIN, header::PRAGMA, header::RANGE, header::REFERER, header::SERVER,
            header::SET_COOKIE, header::TE, header::TRAILER, header::TRANSFER_ENCODING,
            header::UPGRADE, header::USER_AGENT, header::VARY, header::VIA, header::WARNING,
            header::WWW_AUTHENTICATE,
        ] {
            let s = name.as_str();
            assert_eq!(titled_name_of(s.as_bytes()), titled_header_name_str(&name), "{s}");
            let upper = s.to_ascii_uppercase();
            assert_eq!(titled_name_of(upper.as_bytes()), titled_header_name_str(&name), "{s}");
        }
    }

    #[test]
    fn test_case_header_name() {
        assert_eq!("FoO".into_case_header_name().as_slice(), b"FoO");
        assert_eq!("FoO".to_string().into_case_header_name().as_slice(), b"FoO");
        assert_eq!(header::SERVER.into_case_header_name().as_slice(), b"Server");
    }
}
