//! Field names of request heads, parsed once per spelling and thread.
//!
//! A client sends the same names in every request of a connection, and
//! clients of one kind send the same set: `HeaderName::from_bytes` lowers
//! each name, checks its bytes and, for a name outside the standard set
//! (`sec-fetch-mode`, `x-forwarded-for`), copies it into a new allocation.
//! [`name`] keeps the names it parsed in a small two-way set-associative
//! table per thread, keyed by the name's bytes as they came, and gives a
//! clone of the kept one when the same bytes come again (a copy for a
//! standard name, a reference count for another).
//!
//! The table only remembers what `from_bytes` made of the same bytes, so
//! what it gives is what `from_bytes` gives; a third name in a set
//! replaces its oldest.

use std::cell::RefCell;

use http::HeaderName;

/// Sets of the table; each holds [`WAYS`] names (a browser's head has
/// about 15 to 20 names, in both cases across clients).
const SETS: usize = 128;
const WAYS: usize = 2;

/// Longer names are parsed every time (none in common use is).
const LONGEST: usize = 32;

/// A kept name: its bytes as they came, and what they parse to.
struct Slot {
    len: u8,
    raw: [u8; LONGEST],
    name: HeaderName,
}

thread_local! {
    static TABLE: RefCell<Vec<Option<Slot>>> = const { RefCell::new(Vec::new()) };
}

/// `raw` (1 to [`LONGEST`] bytes) zero-padded, and its set: a hash of
/// every byte, eight at a time, and the length (names of one length
/// that share their ends, `sec-fetch-mode` and `sec-fetch-site`, fall in
/// different sets).
fn key(raw: &[u8]) -> ([u8; LONGEST], usize) {
    let mut padded = [0u8; LONGEST];
    padded[..raw.len()].copy_from_slice(raw);
    let mut h = raw.len() as u64;
    for word in padded[..raw.len().div_ceil(8) * 8].chunks_exact(8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        h = (h ^ u64::from_le_bytes(w))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }
    (
        padded,
        (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 57) as usize % SETS,
    )
}

/// `HeaderName::from_bytes(raw)`, from the thread's table when these bytes
/// were parsed before on this thread. `None` where `from_bytes` fails
/// (such bytes are not kept).
pub(super) fn name(raw: &[u8]) -> Option<HeaderName> {
    if raw.is_empty() || raw.len() > LONGEST {
        return HeaderName::from_bytes(raw).ok();
    }
    let (padded, set) = key(raw);
    let found = TABLE.try_with(|table| {
        let mut table = table.borrow_mut();
        if table.is_empty() {
            table.resize_with(SETS * WAYS, || None);
        }
        let ways = &mut table[set * WAYS..(set + 1) * WAYS];
        let len = raw.len() as u8;
        if let Some(kept) = ways
            .iter()
            .flatten()
            .find(|k| k.len == len && k.raw == padded)
        {
            return Some(kept.name.clone());
        }
        let name = HeaderName::from_bytes(raw).ok()?;
        // The newest first; the oldest of the set goes.
        ways.rotate_right(1);
        ways[0] = Some(Slot {
            len,
            raw: padded,
            name: name.clone(),
        });
        Some(name)
    });
    // The thread's table gone (the thread ending): parsed as it came.
    found.unwrap_or_else(|_| HeaderName::from_bytes(raw).ok())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Every answer is `from_bytes`'s, for names in both cases, standard
    /// and not, repeated (from the table) and colliding (more names than
    /// slots), of every length around `LONGEST`, empty, and bytes a name
    /// may not hold (refused both ways, and not kept).
    #[test]
    fn a_kept_name_is_what_from_bytes_makes_of_the_same_bytes() {
        let mut names: Vec<Vec<u8>> = [
            "Host",
            "host",
            "HOST",
            "User-Agent",
            "user-agent",
            "Accept",
            "accept-encoding",
            "Accept-Language",
            "sec-fetch-dest",
            "sec-fetch-mode",
            "sec-fetch-site",
            "sec-fetch-user",
            "Sec-CH-UA",
            "sec-ch-ua-mobile",
            "sec-ch-ua-platform",
            "x-forwarded-for",
            "X-Request-Id",
            "traceparent",
            "cookie",
            "Cookie",
            "upgrade-insecure-requests",
            "",
            "bad name",
            "bad:name",
            "caf\u{e9}",
            "a\0b",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        for len in [1, 2, LONGEST - 1, LONGEST, LONGEST + 1, 100] {
            names.push(vec![b'x'; len]);
            names.push(vec![b'X'; len]);
        }
        let mut rng = fastrand::Rng::with_seed(48);
        let alphabet = b"abcXYZ-_09!#$%&'*+.^`|~ :@\x7f\x80";
        for _ in 0..500 {
            let len = rng.usize(1..=LONGEST + 2);
            names.push(
                (0..len)
                    .map(|_| alphabet[rng.usize(..alphabet.len())])
                    .collect(),
            );
        }
        for round in 0..4 {
            for raw in &names {
                let want = HeaderName::from_bytes(raw).ok();
                assert_eq!(name(raw), want, "round {round}: {:?}", raw.escape_ascii());
                // Asked again at once: from the table where it was kept.
                assert_eq!(name(raw), want, "again: {:?}", raw.escape_ascii());
            }
            rng.shuffle(&mut names);
        }
    }

    /// Whether `raw` is kept in this thread's table.
    fn kept(raw: &[u8]) -> bool {
        if raw.is_empty() || raw.len() > LONGEST {
            return false;
        }
        let (padded, set) = key(raw);
        TABLE.with(|t| {
            t.borrow()
                .get(set * WAYS..(set + 1) * WAYS)
                .is_some_and(|ways| {
                    ways.iter()
                        .flatten()
                        .any(|k| usize::from(k.len) == raw.len() && k.raw == padded)
                })
        })
    }

    /// Heads of the usual clients, all their names asked in turn as each
    /// request of a connection asks them: after the first request every
    /// name is kept (none pushes another out), for each client's spelling
    /// alone and for all of them on one thread.
    #[test]
    fn the_names_of_usual_heads_stay_kept_request_after_request() {
        let chrome: &[&str] = &[
            "Host",
            "Connection",
            "Cache-Control",
            "sec-ch-ua",
            "sec-ch-ua-mobile",
            "sec-ch-ua-platform",
            "Upgrade-Insecure-Requests",
            "User-Agent",
            "Accept",
            "Sec-Fetch-Site",
            "Sec-Fetch-Mode",
            "Sec-Fetch-User",
            "Sec-Fetch-Dest",
            "Accept-Encoding",
            "Accept-Language",
            "Cookie",
            "Referer",
            "If-None-Match",
            "If-Modified-Since",
            "Range",
            "Priority",
        ];
        let firefox: &[&str] = &[
            "Host",
            "User-Agent",
            "Accept",
            "Accept-Language",
            "Accept-Encoding",
            "DNT",
            "Connection",
            "Referer",
            "Cookie",
            "Upgrade-Insecure-Requests",
            "Sec-Fetch-Dest",
            "Sec-Fetch-Mode",
            "Sec-Fetch-Site",
            "Sec-GPC",
            "Priority",
            "TE",
            "Pragma",
            "Cache-Control",
        ];
        let tools: &[&str] = &[
            "Host",
            "User-Agent",
            "Accept",
            "X-Forwarded-For",
            "X-Forwarded-Proto",
            "X-Request-Id",
            "traceparent",
            "tracestate",
            "Authorization",
            "Content-Type",
            "Content-Length",
            "CMCD-Request",
            "CMCD-Session",
            "Origin",
        ];
        let lower: Vec<String> = chrome.iter().map(|n| n.to_ascii_lowercase()).collect();
        let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
        for heads in [
            vec![chrome],
            vec![firefox],
            vec![tools],
            vec![chrome, firefox, tools, &lower],
        ] {
            TABLE.with(|t| t.borrow_mut().clear());
            for request in 0..3 {
                for head in &heads {
                    for raw in head.iter() {
                        let got = name(raw.as_bytes()).unwrap();
                        assert_eq!(got, HeaderName::from_bytes(raw.as_bytes()).unwrap());
                    }
                }
                for head in &heads {
                    for raw in head.iter() {
                        assert!(kept(raw.as_bytes()), "request {request}: {raw} not kept");
                    }
                }
            }
        }
    }

    /// Bytes `from_bytes` refuses are refused and not kept; names longer
    /// than the table's are parsed, not kept.
    #[test]
    fn refused_and_long_names_are_not_kept() {
        for raw in [
            &b"bad name"[..],
            b"bad:name",
            b"caf\xc3\xa9",
            b"a\0b",
            b"(x)",
        ] {
            assert_eq!(name(raw), None);
            assert!(!kept(raw), "{:?}", raw.escape_ascii());
        }
        let long = [b'x'; LONGEST + 1];
        assert_eq!(name(&long), HeaderName::from_bytes(&long).ok());
        assert!(!kept(&long));
        assert!(name(&long[..LONGEST]).is_some());
        assert!(kept(&long[..LONGEST]));
    }

    /// A name asked again comes from the table: the same bytes as the kept
    /// one, not a new copy.
    #[test]
    fn a_name_asked_again_shares_the_kept_one() {
        let a = name(b"x-kept-name").unwrap();
        let b = name(b"x-kept-name").unwrap();
        assert_eq!(a.as_str().as_ptr(), b.as_str().as_ptr());
        let fresh = HeaderName::from_bytes(b"x-kept-name").unwrap();
        assert_ne!(a.as_str().as_ptr(), fresh.as_str().as_ptr());
    }
}
