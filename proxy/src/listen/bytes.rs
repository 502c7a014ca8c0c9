//! The door's byte classes (RFC 9110 §5.6.2 tokens, §5.5 field values,
//! RFC 9112 §3.2 targets), checked a word at a time where a head is long.
//!
//! A request head is checked byte by byte before pingora parses it
//! ([`super::framing`]); with a comparison chain per byte and each field
//! name compared with six names in turn, a pass-through of a browser's
//! 800-byte head took 7,700 instructions more than with these checks
//! (100,445 → 92,739, `benches/callgrind/instr.sh`). Field values and
//! targets are checked eight bytes at a time (a word with no byte below
//! 0x20 and none equal to 0x7f is good as a whole; a word with one is
//! looked at byte by byte), token bytes through a table. The word test
//! reads a word little-endian, so its lowest mark is the first such byte.

/// `tchar` (RFC 9110 §5.6.2): `!#$%&'*+-.^_`|~`, digits, letters.
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

/// A token byte.
pub fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// `1*tchar` without the emptiness check: every byte a token byte.
pub fn all_tchar(s: &[u8]) -> bool {
    s.iter().all(|&b| is_tchar(b))
}

/// A field value byte (RFC 9110 §5.5: VCHAR, obs-text, SP, HTAB).
pub fn is_value_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

const ONES: u64 = u64::from_le_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);

/// The bytes of a little-endian word below 0x20 or equal to 0x7f, each
/// marked by its high bit. The lowest mark is exact (a borrow only runs
/// upwards, past a byte that is itself marked); marks above it may not
/// be.
fn control_marks(w: u64) -> u64 {
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
    let x = w ^ (ONES * 0x7f);
    let del = x.wrapping_sub(ONES) & !x & HIGHS;
    below_space | del
}

/// The word of `s` at `i`, little-endian, if eight bytes are there.
fn word_at(s: &[u8], i: usize) -> Option<u64> {
    let mut a = [0u8; 8];
    a.copy_from_slice(s.get(i..i + 8)?);
    Some(u64::from_le_bytes(a))
}

/// A word some byte of which is below 0x20 or equal to 0x7f.
fn word_has_control(w: u64) -> bool {
    control_marks(w) != 0
}

/// The index of the first byte of `s` from `i` on that is not a field
/// value byte ([`is_value_byte`]), or `s.len()`: eight bytes at a time.
#[inline]
pub fn value_run_end(s: &[u8], mut i: usize) -> usize {
    loop {
        if let Some(w) = word_at(s, i) {
            let marks = control_marks(w);
            if marks == 0 {
                i += 8;
                continue;
            }
            i += (marks.trailing_zeros() / 8) as usize;
        } else {
            while s.get(i).is_some_and(|&b| b >= 0x20 && b != 0x7f) {
                i += 1;
            }
        }
        match s.get(i) {
            Some(b'\t') => i += 1,
            _ => return i.min(s.len()),
        }
    }
}

/// Some byte of `s` is 0x80 or above: eight bytes at a time.
pub fn any_high(s: &[u8]) -> bool {
    let words = s.chunks_exact(8);
    let rest = words.remainder();
    words
        .map(|w| word_at(w, 0).unwrap_or(u64::MAX))
        .any(|w| w & HIGHS != 0)
        || rest.iter().any(|&b| b >= 0x80)
}

/// Whether every byte passes `byte_ok`, where `byte_ok` accepts every byte
/// that is not a control byte (below 0x20, 0x7f) and maybe some of those:
/// words without control bytes pass at once.
fn all_with_words(s: &[u8], byte_ok: impl Fn(u8) -> bool) -> bool {
    let mut words = s.chunks_exact(8);
    for w in words.by_ref() {
        if word_at(w, 0).is_none_or(word_has_control) && !w.iter().all(|&b| byte_ok(b)) {
            return false;
        }
    }
    words.remainder().iter().all(|&b| byte_ok(b))
}

/// Every byte a field value byte ([`is_value_byte`]).
pub fn all_value_bytes(s: &[u8]) -> bool {
    all_with_words(s, is_value_byte)
}

/// Some byte of a target is one never accepted there
/// ([`crate::normalize::path::forbidden_target_byte`]: control bytes,
/// space, `\\`, `#`).
pub fn any_forbidden_target_byte(s: &[u8]) -> bool {
    // Space, `\` and `#` are not control bytes: they are looked for in a
    // word as well (`memchr3`, a vector search).
    memchr::memchr3(b' ', b'\\', b'#', s).is_some()
        || !all_with_words(s, |b| b >= 0x20 && b != 0x7f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::path::forbidden_target_byte;

    fn tchar_by_rule(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
    }

    #[test]
    fn the_table_is_the_rule() {
        for b in 0..=255u8 {
            assert_eq!(is_tchar(b), tchar_by_rule(b), "{b:#x}");
        }
    }

    /// Every byte at every position of strings of 0 to 20 bytes (the word
    /// loop, its remainder, and a byte on each side of a word boundary),
    /// against the byte rules.
    #[test]
    fn word_checks_answer_as_byte_checks() {
        for len in 0..=20usize {
            for at in 0..len.max(1) {
                for b in 0..=255u8 {
                    for fill in [b'a', 0x80, b'\t', 0xff] {
                        let mut s = vec![fill; len];
                        if len > 0 {
                            s[at] = b;
                        }
                        assert_eq!(
                            all_value_bytes(&s),
                            s.iter().all(|&c| is_value_byte(c)),
                            "{s:?}"
                        );
                        assert_eq!(
                            any_forbidden_target_byte(&s),
                            s.iter().any(|&c| forbidden_target_byte(c)),
                            "{s:?}"
                        );
                        assert_eq!(any_high(&s), s.iter().any(|&c| c >= 0x80), "{s:?}");
                        for from in 0..=len {
                            let first = (from..len).find(|&i| !is_value_byte(s[i]));
                            assert_eq!(value_run_end(&s, from), first.unwrap_or(len), "{s:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn two_bad_bytes_in_one_word_are_seen() {
        // The borrow of one byte must not hide another.
        for a in [0x00u8, 0x1f, 0x7f, b'\t'] {
            for b in [0x00u8, 0x1f, 0x7f, 0x20, b'\t'] {
                for i in 0..8 {
                    for j in 0..8 {
                        if i == j {
                            continue;
                        }
                        let mut s = [b'x'; 8];
                        s[i] = a;
                        s[j] = b;
                        assert_eq!(all_value_bytes(&s), s.iter().all(|&c| is_value_byte(c)));
                        assert_eq!(
                            any_forbidden_target_byte(&s),
                            s.iter().any(|&c| forbidden_target_byte(c))
                        );
                    }
                }
            }
        }
    }
}
