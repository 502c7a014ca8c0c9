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

/// EDGE-PATCH (sixth): the names [`titled_header_name_str`] titles, for a
/// writer of field names as sent (edge's pass-through head written from
/// the backend's lines) that must write what pingora's HTTP/1 writer does.
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
    // Most names are of no titled length: one test, not twelve compares.
    if TITLED_LENGTHS & (1 << name.len().min(63)) == 0 {
        return None;
    }
    TITLED
        .iter()
        .copied()
        .find(|t| t.len() == name.len() && t.as_bytes().eq_ignore_ascii_case(name))
}

/// A bit for each length of a [`TITLED`] name.
const TITLED_LENGTHS: u64 = {
    let mut mask = 0u64;
    let mut i = 0;
    while i < TITLED.len() {
        mask |= 1 << TITLED[i].len();
        i += 1;
    }
    mask
};

pub(crate) fn titled_header_name_str(header_name: &HeaderName) -> Option<&'static str> {
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
    }

    #[test]
    fn test_case_header_name() {
        assert_eq!("FoO".into_case_header_name().as_slice(), b"FoO");
        assert_eq!("FoO".to_string().into_case_header_name().as_slice(), b"FoO");
        assert_eq!(header::SERVER.into_case_header_name().as_slice(), b"Server");
    }
}
