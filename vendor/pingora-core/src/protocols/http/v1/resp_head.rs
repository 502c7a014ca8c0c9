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

//! EDGE-PATCH (thirty-ninth): a response head in the usual shape read in
//! one pass, before httparse is asked.
//!
//! [`parse`] reads a complete head whose every line is in the shape
//! servers send (RFC 9112 §4 status line `HTTP/1.x SP 3DIGIT [SP reason]
//! CRLF`, §5 field lines `token ":" OWS value OWS CRLF`, the blank line)
//! and gives exactly what httparse gives for it with the configuration
//! [`super::client`] uses (spaces after a field name and obs-fold allowed
//! in responses). Anything else — a head not complete yet, a bare LF, a
//! line folded onto the next (obs-fold), a space before the colon, a
//! control byte, obs-text in the reason phrase, empty lines before the
//! status line, more than `max_fields` fields — gets `None`, and httparse
//! reads the head as before: its verdicts (partial, invalid, lenient
//! parses) stay its own. edge's `response_heads_read_in_one_pass_are_what_httparse_reads`
//! checks the two give the same on many heads.
//!
//! Why: issue 17, 1 KiB pass-through: httparse took 2,327 instructions
//! for a nine-field response head (`benches/callgrind/instr.sh`): a name a
//! byte at a time through its iterator, a vector setup per value. Here
//! names go through a table and values eight bytes at a time.

use crate::utils::{BufRef, KVRef};
use http::Version;

/// A response head as [`parse`] read it.
pub struct Head {
    /// The head's length in bytes, through its blank line.
    pub len: usize,
    pub version: Version,
    pub code: u16,
    /// The reason phrase, `BufRef(0, 0)` when empty (as pingora keeps
    /// httparse's `""`).
    pub reason: Option<BufRef>,
    /// Each field's name and value (without the whitespace around it).
    pub fields: Vec<KVRef>,
}

/// `tchar` (RFC 9110 §5.6.2), httparse's header name bytes.
static TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    t
};

const ONES: u64 = u64::from_le_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);

/// The bytes of a little-endian word below 0x20 or equal to 0x7f, each
/// marked by its high bit. The lowest mark is exact (a borrow only runs
/// upwards, past a byte that is itself marked); marks above it may not
/// be.
fn controls(w: u64) -> u64 {
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
    let x = w ^ (ONES * 0x7f);
    let del = x.wrapping_sub(ONES) & !x & HIGHS;
    below_space | del
}

/// The index of the CR that ends the value starting at `i`, when the
/// value's bytes are all field value bytes (HTAB, SP, VCHAR, obs-text:
/// RFC 9110 §5.5) and a CR comes before the buffer ends.
#[inline]
fn value_end(buf: &[u8], mut i: usize) -> Option<usize> {
    loop {
        if let Some(word) = buf.get(i..i + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            let marks = controls(u64::from_le_bytes(w));
            if marks == 0 {
                i += 8;
                continue;
            }
            i += (marks.trailing_zeros() / 8) as usize;
        } else {
            while buf.get(i).is_some_and(|&b| b >= 0x20 && b != 0x7f) {
                i += 1;
            }
        }
        match buf.get(i)? {
            b'\r' => return Some(i),
            b'\t' => i += 1,
            _ => return None,
        }
    }
}

/// Reads the head at the start of `buf` when it is complete and in the
/// usual shape (see the module's docs); `None` otherwise.
pub fn parse(buf: &[u8], max_fields: usize) -> Option<Head> {
    let line = buf.get(..12)?;
    let version = match &line[..9] {
        b"HTTP/1.1 " => Version::HTTP_11,
        b"HTTP/1.0 " => Version::HTTP_10,
        _ => return None,
    };
    let mut code = 0u16;
    for &d in &line[9..12] {
        if !d.is_ascii_digit() {
            return None;
        }
        code = code * 10 + u16::from(d - b'0');
    }
    let mut pos = 12;
    let reason = match buf.get(pos)? {
        b'\r' => BufRef(0, 0),
        b' ' => {
            let start = pos + 1;
            pos = start;
            while buf
                .get(pos)
                .is_some_and(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
            {
                pos += 1;
            }
            if pos == start {
                BufRef(0, 0)
            } else {
                BufRef(start, pos)
            }
        }
        _ => return None,
    };
    if buf.get(pos..pos + 2)? != b"\r\n" {
        return None;
    }
    pos += 2;

    let mut fields = Vec::with_capacity(16);
    loop {
        if *buf.get(pos)? == b'\r' {
            if *buf.get(pos + 1)? != b'\n' {
                return None;
            }
            return Some(Head {
                len: pos + 2,
                version,
                code,
                reason: Some(reason),
                fields,
            });
        }
        let name = pos;
        let name_len = buf[pos..]
            .iter()
            .position(|&b| !TCHAR[usize::from(b)])?;
        if name_len == 0 || buf[pos + name_len] != b':' {
            return None;
        }
        pos += name_len + 1;
        while matches!(buf.get(pos)?, b' ' | b'\t') {
            pos += 1;
        }
        let value = pos;
        let cr = value_end(buf, value)?;
        if *buf.get(cr + 1)? != b'\n' {
            return None;
        }
        let mut end = cr;
        while end > value && matches!(buf[end - 1], b' ' | b'\t') {
            end -= 1;
        }
        if fields.len() == max_fields {
            return None;
        }
        fields.push(KVRef::new(name, name_len, value, end - value));
        pos = cr + 2;
        // The next line folded onto this one (obs-fold), or not here yet.
        if matches!(buf.get(pos), None | Some(b' ' | b'\t')) {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_marks_the_first_control_byte_exactly() {
        for at in 0..8 {
            for b in 0..=255u8 {
                let mut w = [b'a'; 8];
                w[at] = b;
                let marks = controls(u64::from_le_bytes(w));
                let want = b < 0x20 || b == 0x7f;
                assert_eq!(marks != 0, want, "{b:#x} at {at}");
                if want {
                    assert_eq!(marks.trailing_zeros() / 8, at as u32);
                }
            }
        }
    }
}
