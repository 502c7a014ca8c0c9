//! Request paths, normalized before routes see them; the result is also
//! what goes upstream, so edge and the backend never disagree about which
//! resource was asked for (the class of Envoy's CVE-2019-9901).
//!
//! In order (RFC 3986 §6.2.2, Envoy's `normalize_path` and `merge_slashes`):
//!
//! 1. Percent-encoding: an escape of an unreserved character is decoded
//!    (§6.2.2.2: `%61` is `a`, `%2E` is `.`); every other escape is
//!    upper-cased (§6.2.2.1: `%3a` is `%3A`); an encoded `/` or `\`
//!    (`%2F`, `%5C`) is kept, refused or decoded as the listener says; a
//!    `%` without two hex digits is refused. Raw bytes a path may not hold
//!    but that do no harm (`"<>[]^`{|}`, bytes ≥ 0x80) are encoded; raw
//!    control bytes, space, `\` and `#` are refused.
//! 2. Runs of `/` become one, when the listener merges slashes.
//! 3. Dot segments are removed (§5.2.4): `/a/./b/../c` is `/a/c`, and no
//!    `..` climbs above `/`.
//!
//! The output is ASCII and a fixed point: normalizing it again changes
//! nothing.

use std::fmt;

use edge_config::EscapedSlashes;

/// How a listener treats paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathOptions {
    pub merge_slashes: bool,
    pub escaped_slashes: EscapedSlashes,
}

impl Default for PathOptions {
    fn default() -> Self {
        Self {
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Reject,
        }
    }
}

/// Why a path was refused (each a 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not starting with `/`.
    NotAbsolute,
    /// A raw byte no request target may hold (control bytes, space, `\`, `#`).
    Byte(u8),
    /// `%` not followed by two hex digits.
    BadEscape,
    /// `%2F` or `%5C`, refused by the listener.
    EscapedSlash,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathError::NotAbsolute => f.write_str("the path does not start with /"),
            PathError::Byte(b) => write!(f, "byte {:?} in the path", char::from(*b)),
            PathError::BadEscape => f.write_str("bad percent-encoding in the path"),
            PathError::EscapedSlash => f.write_str("encoded / or \\ in the path"),
        }
    }
}

/// A normalized path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath {
    pub path: String,
    /// `%2F`/`%5C` were decoded under `decode_and_redirect`: the client is
    /// sent to `path` rather than served.
    pub redirect: bool,
}

const fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Bytes a path segment may hold as they are (RFC 3986 §3.3 `pchar` less
/// escapes, and `/`).
const fn path_byte(b: u8) -> bool {
    unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
        )
}

/// A raw byte that is never accepted in a request target.
pub const fn forbidden_target_byte(b: u8) -> bool {
    b < 0x20 || b == 0x7f || b == b' ' || b == b'\\' || b == b'#'
}

/// [`forbidden_target_byte`] of every byte, looked up.
pub static FORBIDDEN_TARGET_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = forbidden_target_byte(b as u8);
        b += 1;
    }
    t
};

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn push_escaped(out: &mut Vec<u8>, b: u8) {
    out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
}

/// [`path_byte`] of every byte, looked up: one load a byte where the
/// test is a dozen compares.
static PATH_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = path_byte(b as u8);
        b += 1;
    }
    t
};

/// Whether `raw` is already normal: only bytes a path holds as they are,
/// no escapes, no dot segments, and no `//` when slashes merge. The common
/// case, checked in one pass without allocating (three passes, a byte's
/// test a dozen compares, took about 300 instructions for a 27-byte
/// target: `benches/callgrind`, issue 17).
pub fn is_normal(raw: &[u8], opts: &PathOptions) -> bool {
    if raw.first() != Some(&b'/') {
        return false;
    }
    // The current segment starts after the last slash.
    let mut start = 1;
    for (i, &b) in raw.iter().enumerate().skip(1) {
        if b == b'/' {
            let segment = &raw[start..i];
            // An empty segment before a slash: `//`.
            if segment == b"." || segment == b".." || (opts.merge_slashes && segment.is_empty()) {
                return false;
            }
            start = i + 1;
        } else if !PATH_BYTES[usize::from(b)] {
            return false;
        }
    }
    let last = &raw[start..];
    last != b"." && last != b".."
}

/// Normalizes the path of a request target (without its query).
pub fn normalize(raw: &[u8], opts: &PathOptions) -> Result<NormalizedPath, PathError> {
    if raw.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut redirect = false;
    let mut decoded = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'%' {
            let (Some(hi), Some(lo)) = (
                raw.get(i + 1).copied().and_then(hex),
                raw.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(PathError::BadEscape);
            };
            let v = hi << 4 | lo;
            if unreserved(v) {
                decoded.push(v);
            } else if v == b'/' || v == b'\\' {
                match opts.escaped_slashes {
                    EscapedSlashes::Keep => push_escaped(&mut decoded, v),
                    EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                    EscapedSlashes::DecodeAndRedirect => {
                        decoded.push(b'/');
                        redirect = true;
                    }
                }
            } else {
                push_escaped(&mut decoded, v);
            }
            i += 3;
            continue;
        }
        if forbidden_target_byte(b) {
            return Err(PathError::Byte(b));
        }
        if path_byte(b) {
            decoded.push(b);
        } else {
            push_escaped(&mut decoded, b);
        }
        i += 1;
    }
    if opts.merge_slashes {
        decoded.dedup_by(|a, b| *a == b'/' && *b == b'/');
    }
    let path = remove_dot_segments(&decoded);
    Ok(NormalizedPath { path, redirect })
}

/// RFC 3986 §5.2.4 for a path starting with `/`.
fn remove_dot_segments(path: &[u8]) -> String {
    let segments: Vec<&[u8]> = path[1..].split(|&b| b == b'/').collect();
    let last = segments.len() - 1;
    let mut out: Vec<&[u8]> = Vec::with_capacity(segments.len());
    for (i, seg) in segments.into_iter().enumerate() {
        match seg {
            b"." | b".." => {
                if seg == b".." {
                    out.pop();
                }
                // A trailing dot segment leaves the path ending in `/`.
                if i == last {
                    out.push(b"");
                }
            }
            _ => out.push(seg),
        }
    }
    let mut s = String::with_capacity(path.len());
    for seg in out {
        s.push('/');
        // Only ASCII remains after step 1.
        s.push_str(&String::from_utf8_lossy(seg));
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// `is_normal` as it was written first (three passes): the one pass
    /// must give its answer for every path.
    fn is_normal_by_passes(raw: &[u8], opts: &PathOptions) -> bool {
        raw.first() == Some(&b'/')
            && raw.iter().all(|&b| path_byte(b))
            && !raw[1..]
                .split(|&b| b == b'/')
                .any(|seg| seg == b"." || seg == b"..")
            && !(opts.merge_slashes && raw.windows(2).any(|w| w == b"//"))
    }

    /// Paths drawn from the bytes that matter (slashes, dots, escapes,
    /// bytes a path may not hold as they are), every length to 12, both
    /// ways of treating slashes.
    #[test]
    fn one_pass_is_normal_answers_as_the_three_passes() {
        let alphabet = b"/./a%2F ?#\\\x7f\x80~-_";
        let mut rng = fastrand::Rng::with_seed(9);
        let merged = PathOptions::default();
        let unmerged = PathOptions {
            merge_slashes: false,
            ..PathOptions::default()
        };
        for _ in 0..200_000 {
            let len = rng.usize(0..13);
            let raw: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect();
            for opts in [&merged, &unmerged] {
                assert_eq!(
                    is_normal(&raw, opts),
                    is_normal_by_passes(&raw, opts),
                    "{:?} merge_slashes={}",
                    String::from_utf8_lossy(&raw),
                    opts.merge_slashes
                );
            }
        }
        for b in 0..=255u8 {
            assert_eq!(PATH_BYTES[usize::from(b)], path_byte(b), "{b:#x}");
            assert_eq!(
                FORBIDDEN_TARGET_BYTES[usize::from(b)],
                forbidden_target_byte(b),
                "{b:#x}"
            );
        }
    }

    fn norm(raw: &str) -> String {
        normalize(raw.as_bytes(), &PathOptions::default())
            .unwrap_or_else(|e| panic!("{raw:?}: {e}"))
            .path
    }

    #[test]
    fn the_rfc_examples_and_more() {
        let cases = [
            ("/", "/"),
            ("/a/b/c/./../../g", "/a/g"),
            ("/mid/content=5/../6", "/mid/6"),
            ("/public/../admin/x", "/admin/x"),
            ("/./admin/x", "/admin/x"),
            ("/../admin/x", "/admin/x"),
            ("/a/..", "/"),
            ("/a/.", "/a/"),
            ("/a/b/..", "/a/"),
            ("/..", "/"),
            ("/.", "/"),
            ("/...", "/..."),
            ("/a/..b/c", "/a/..b/c"),
            ("/%61dmin/x", "/admin/x"),
            ("/%2e%2e/admin", "/admin"),
            ("/a/%2E%2e/admin", "/admin"),
            ("/%7e%41%5f%2D", "/~A_-"),
            ("/a%3ab", "/a%3Ab"),
            ("/a%20b", "/a%20b"),
            ("/a%00b", "/a%00b"),
            ("/a%25b", "/a%25b"),
            ("/a%252e%252e/b", "/a%252e%252e/b"),
            ("//admin/x", "/admin/x"),
            ("/a//b///c", "/a/b/c"),
            ("/a//../b", "/b"),
            ("/a|b", "/a%7Cb"),
            ("/a{b}", "/a%7Bb%7D"),
            ("/\u{e9}", "/%C3%A9"),
            ("/a;b=c/d:e@f", "/a;b=c/d:e@f"),
            ("/a'b(c)*!$&+,", "/a'b(c)*!$&+,"),
        ];
        for (raw, want) in cases {
            assert_eq!(norm(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn normal_paths_are_recognized_without_work() {
        let o = PathOptions::default();
        for raw in [
            "/",
            "/a/b.ts",
            "/a/b/",
            "/.well-known/x",
            "/a..b/c.",
            "/x;y=1",
        ] {
            assert!(is_normal(raw.as_bytes(), &o), "{raw}");
            assert_eq!(norm(raw), raw);
        }
        for raw in [
            "/a/./b", "/a/..", "/./", "//a", "/a//b", "/%41", "/a b", "/a|b", "a",
        ] {
            assert!(!is_normal(raw.as_bytes(), &o), "{raw}");
        }
        let unmerged = PathOptions {
            merge_slashes: false,
            ..o
        };
        assert!(is_normal(b"//a//b", &unmerged));
    }

    #[test]
    fn bad_paths_are_refused() {
        let o = PathOptions::default();
        for (raw, want) in [
            ("a/b", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
            ("/a b", PathError::Byte(b' ')),
            ("/a\\b", PathError::Byte(b'\\')),
            ("/a\x00b", PathError::Byte(0)),
            ("/a\tb", PathError::Byte(b'\t')),
            ("/a\x7fb", PathError::Byte(0x7f)),
            ("/a#b", PathError::Byte(b'#')),
            ("/a%zz", PathError::BadEscape),
            ("/a%4", PathError::BadEscape),
            ("/a%", PathError::BadEscape),
            ("/a%2fb", PathError::EscapedSlash),
            ("/a%2Fb", PathError::EscapedSlash),
            ("/a%5cb", PathError::EscapedSlash),
        ] {
            assert_eq!(normalize(raw.as_bytes(), &o), Err(want), "{raw:?}");
        }
    }

    #[test]
    fn escaped_slashes_follow_the_listener() {
        let keep = PathOptions {
            escaped_slashes: EscapedSlashes::Keep,
            ..PathOptions::default()
        };
        let n = normalize(b"/a%2fb/%5c", &keep).unwrap();
        assert_eq!(n.path, "/a%2Fb/%5C");
        assert!(!n.redirect);
        let redirect = PathOptions {
            escaped_slashes: EscapedSlashes::DecodeAndRedirect,
            ..PathOptions::default()
        };
        let n = normalize(b"/public%2F..%2Fadmin", &redirect).unwrap();
        assert_eq!(n.path, "/admin");
        assert!(n.redirect);
        let unmerged = PathOptions {
            merge_slashes: false,
            ..PathOptions::default()
        };
        assert_eq!(normalize(b"/a//b", &unmerged).unwrap().path, "/a//b");
        assert_eq!(normalize(b"/a//../b", &unmerged).unwrap().path, "/a/b");
    }

    #[test]
    fn normalizing_twice_changes_nothing() {
        let all = [
            PathOptions::default(),
            PathOptions {
                merge_slashes: false,
                escaped_slashes: EscapedSlashes::Keep,
            },
            PathOptions {
                merge_slashes: true,
                escaped_slashes: EscapedSlashes::DecodeAndRedirect,
            },
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        let alphabet = b"/./..%2e%2f%5c%41%7ea;b//x%25|{";
        for _ in 0..20_000 {
            let len = rng.usize(1..24);
            let mut raw = vec![b'/'];
            raw.extend((0..len).map(|_| alphabet[rng.usize(..alphabet.len())]));
            for o in &all {
                if let Ok(once) = normalize(&raw, o) {
                    let twice = normalize(once.path.as_bytes(), o).unwrap();
                    assert_eq!(twice.path, once.path, "{:?}", String::from_utf8_lossy(&raw));
                    assert!(!twice.redirect);
                }
            }
        }
    }
}
