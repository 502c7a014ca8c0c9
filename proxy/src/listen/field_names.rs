//! Field names of request heads, parsed once per spelling and thread.
//!
//! A client sends the same names in every request of a connection, and
//! clients of one kind send the same set: `HeaderName::from_bytes` lowers
//! each name, checks its bytes and, for a name outside the standard set
//! (`sec-fetch-mode`, `x-forwarded-for`), copies it into a new allocation.
//! [`name`] keeps the names it parsed in a small direct-mapped table per
//! thread, keyed by the name's bytes as they came, and gives a clone of the
//! kept one when the same bytes come again (a copy for a standard name, a
//! reference count for another).
//!
//! The table only remembers what `from_bytes` made of the same bytes, so
//! what it gives is what `from_bytes` gives; a slot taken by another name
//! is replaced (the cost of a collision is one parse).

use std::cell::RefCell;

use http::HeaderName;

/// Slots in a thread's table (a head has about 3 to 20 names).
const SLOTS: usize = 64;

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

/// The slot of `raw` (1 to [`LONGEST`] bytes): its length and the bytes at
/// both ends, which set the names of a browser's head apart
/// (`sec-fetch-dest`, `sec-fetch-mode`, `sec-fetch-site`).
fn slot_of(raw: &[u8]) -> usize {
    let (first, last) = (raw[0], raw[raw.len() - 1]);
    let second = raw[raw.len().min(2) - 1];
    let h = (raw.len() as u32)
        .wrapping_mul(0x9e37_79b9)
        .wrapping_add(u32::from(first) << 16 | u32::from(second) << 8 | u32::from(last))
        .wrapping_mul(0x85eb_ca6b);
    (h >> 26) as usize % SLOTS
}

/// `HeaderName::from_bytes(raw)`, from the thread's table when these bytes
/// were parsed before on this thread. `None` where `from_bytes` fails.
pub(super) fn name(raw: &[u8]) -> Option<HeaderName> {
    if raw.is_empty() || raw.len() > LONGEST {
        return HeaderName::from_bytes(raw).ok();
    }
    let at = slot_of(raw);
    TABLE.with(|table| {
        let mut table = table.borrow_mut();
        if table.is_empty() {
            table.resize_with(SLOTS, || None);
        }
        let slot = &mut table[at];
        if let Some(kept) = slot {
            if &kept.raw[..usize::from(kept.len)] == raw {
                return Some(kept.name.clone());
            }
        }
        let name = HeaderName::from_bytes(raw).ok()?;
        let mut bytes = [0; LONGEST];
        bytes[..raw.len()].copy_from_slice(raw);
        *slot = Some(Slot {
            // At most LONGEST (32): fits.
            len: raw.len() as u8,
            raw: bytes,
            name: name.clone(),
        });
        Some(name)
    })
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
