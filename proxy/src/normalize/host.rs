//! The request's authority (`Host`, `:authority`, or an absolute-form
//! target's), validated and normalized once.
//!
//! Grammar (RFC 9112 §3.2, RFC 3986 §3.2.2, §3.2.3):
//!
//! ```text
//! authority = host [ ":" port ]
//! host      = IP-literal / IPv4address / reg-name
//! reg-name  = *( unreserved / pct-encoded / sub-delims )
//! port      = *DIGIT
//! ```
//!
//! edge is stricter than the grammar where no real client needs the room,
//! as nginx is: a percent-encoded or empty host, an empty label (`a..b`,
//! `.a`), a zone id or an `IPvFuture` literal are refused. The result is
//! lower-case, has one trailing dot removed (`example.com.` is
//! `example.com`), an IPv6 literal in its canonical text form, and the
//! port only when it is not the scheme's default.

use std::fmt;
use std::net::Ipv6Addr;

/// A validated authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    /// Lower-case, no trailing dot; an IPv6 literal keeps its brackets.
    pub host: String,
    /// `None` when absent, empty or the default port of the scheme.
    pub port: Option<u16>,
}

/// Why an authority was refused (each a 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    Empty,
    /// `user@host`: userinfo is never sent in HTTP (RFC 9110 §4.2.4).
    Userinfo,
    /// A byte a host name may not hold (`/`, `\`, `?`, `#`, `%`, space, a control byte, …).
    Byte(u8),
    /// An empty label: `a..b`, `.a`, `..`.
    EmptyLabel,
    /// Not 0–65535, or not digits.
    Port,
    /// `[…]` that is not an IPv6 address.
    IpLiteral,
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::Empty => f.write_str("empty host"),
            HostError::Userinfo => f.write_str("userinfo in the host"),
            HostError::Byte(b) => write!(f, "byte {:?} in the host", char::from(*b)),
            HostError::EmptyLabel => f.write_str("empty label in the host"),
            HostError::Port => f.write_str("bad port"),
            HostError::IpLiteral => f.write_str("bad IP literal"),
        }
    }
}

/// Sub-delims (RFC 3986 §2.2), allowed in a reg-name.
const fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

const fn is_reg_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') || is_sub_delim(b)
}

/// [`is_reg_name_byte`] for every byte, looked up.
const REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = is_reg_name_byte(b as u8);
        b += 1;
    }
    table
};

/// Parses and normalizes `raw` (a `Host` value or an authority);
/// `default_port` is the scheme's (80 or 443) and is dropped.
///
/// Errors, the first that applies in this order: `Empty` (nothing),
/// `Userinfo` (an `@` anywhere), for an IP literal `IpLiteral` or the
/// `Byte` after its `]`; for a name (what is before the last `:`) the
/// first `Byte` it may not hold, `Empty` (nothing but one dot),
/// `EmptyLabel`; then `Port` (more than five digits, a non-digit, over
/// 65535).
pub fn parse(raw: &[u8], default_port: u16) -> Result<Authority, HostError> {
    if raw.is_empty() {
        return Err(HostError::Empty);
    }
    if raw.contains(&b'@') {
        return Err(HostError::Userinfo);
    }
    let (host, port) = if raw[0] == b'[' {
        let close = raw
            .iter()
            .position(|&b| b == b']')
            .ok_or(HostError::IpLiteral)?;
        let inside = std::str::from_utf8(&raw[1..close]).map_err(|_| HostError::IpLiteral)?;
        let ip: Ipv6Addr = inside.parse().map_err(|_| HostError::IpLiteral)?;
        let rest = &raw[close + 1..];
        let port = match rest.split_first() {
            None => None,
            Some((b':', digits)) => Some(digits),
            Some((&b, _)) => return Err(HostError::Byte(b)),
        };
        (format!("[{ip}]"), port)
    } else {
        let (name, port) = match raw.iter().rposition(|&b| b == b':') {
            Some(i) => (&raw[..i], Some(&raw[i + 1..])),
            None => (raw, None),
        };
        (reg_name(name)?, port)
    };
    let port = match port {
        None | Some([]) => None,
        Some(digits) => {
            if digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
                return Err(HostError::Port);
            }
            let n: u32 = digits.iter().fold(0, |n, &d| n * 10 + u32::from(d - b'0'));
            let n = u16::try_from(n).map_err(|_| HostError::Port)?;
            (n != default_port).then_some(n)
        }
    };
    Ok(Authority { host, port })
}

/// A reg-name checked and lowered in one walk (three walks and a lossy
/// text view were about 660 instructions a short host, issue 17): the
/// first byte it may not hold, then nothing but one trailing dot
/// (`Empty`), then an empty label (`.a`, `a..b`, `a..`).
fn reg_name(name: &[u8]) -> Result<String, HostError> {
    let mut empty_label = false;
    let mut dot = true;
    for &b in name {
        if !REG_NAME[usize::from(b)] {
            return Err(HostError::Byte(b));
        }
        let is_dot = b == b'.';
        empty_label |= dot & is_dot;
        dot = is_dot;
    }
    let kept = name.strip_suffix(b".").unwrap_or(name);
    if kept.is_empty() {
        return Err(HostError::Empty);
    }
    if empty_label {
        return Err(HostError::EmptyLabel);
    }
    // Every byte is a reg-name's, so ASCII: the check cannot fail.
    String::from_utf8(kept.to_ascii_lowercase())
        .map_err(|e| HostError::Byte(kept[e.utf8_error().valid_up_to()]))
}

impl Authority {
    /// `host[:port]`, as a `Host` header and a cache key carry it.
    pub fn to_header(&self) -> String {
        let Some(port) = self.port else {
            return self.host.clone();
        };
        let mut s = String::with_capacity(self.host.len() + 6);
        s.push_str(&self.host);
        s.push(':');
        // Digits by hand: this runs for every request with a port.
        let mut digits = [0u8; 5];
        let mut n = port;
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for &d in &digits[i..] {
            s.push(char::from(d));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ok(raw: &str, default: u16) -> String {
        parse(raw.as_bytes(), default)
            .unwrap_or_else(|e| panic!("{raw:?}: {e}"))
            .to_header()
    }

    /// The reg-name rule as it was written before the one-walk version
    /// (three walks): the model the one walk is checked against.
    fn reg_name_model(name: &[u8]) -> Result<String, HostError> {
        if let Some(&b) = name.iter().find(|&&b| !is_reg_name_byte(b)) {
            return Err(HostError::Byte(b));
        }
        let name = name.strip_suffix(b".").unwrap_or(name);
        if name.is_empty() {
            return Err(HostError::Empty);
        }
        if name.split(|&b| b == b'.').any(<[u8]>::is_empty) {
            return Err(HostError::EmptyLabel);
        }
        Ok(String::from_utf8_lossy(name).to_ascii_lowercase())
    }

    /// The one walk gives the model's host or error for 50,000 names built
    /// from letters in both cases, digits, dots (leading, trailing, doubled,
    /// alone), the other bytes a reg-name holds, and one or two bytes it
    /// may not (anywhere, beside an empty label: the byte is reported
    /// first), including non-ASCII; and `parse` the same through a port.
    #[test]
    fn one_walk_reads_a_name_as_the_three_walks_did() {
        let alphabet: &[u8] = b"aZ09.-_~!$&'()*+,;=..";
        let bad: &[u8] = b"/\\?#% \t\r\x00\x7f\xc3\xa9@[]:\"<>^`{|}";
        let mut rng = fastrand::Rng::with_seed(9);
        for _ in 0..50_000 {
            let mut name: Vec<u8> = (0..rng.usize(0..12))
                .map(|_| alphabet[rng.usize(..alphabet.len())])
                .collect();
            for _ in 0..rng.usize(0..=2) {
                let at = rng.usize(..=name.len());
                name.insert(at, bad[rng.usize(..bad.len())]);
            }
            let model = reg_name_model(&name);
            assert_eq!(
                reg_name(&name),
                model,
                "{:?}",
                name.escape_ascii().to_string()
            );
            // `@` is userinfo and `[` an IP literal wherever they stand.
            if !name.contains(&b'@') && name.first() != Some(&b'[') {
                let mut raw = name.clone();
                raw.extend_from_slice(b":8080");
                let got = parse(&raw, 80).map(|a| a.host);
                assert_eq!(got, model, "{:?}", raw.escape_ascii().to_string());
            }
        }
    }

    #[test]
    fn names_are_lower_case_without_trailing_dot_or_default_port() {
        assert_eq!(ok("Example.COM.", 80), "example.com");
        assert_eq!(ok("example.com:80", 80), "example.com");
        assert_eq!(ok("example.com:080", 80), "example.com");
        assert_eq!(ok("example.com:", 80), "example.com");
        assert_eq!(ok("example.com:443", 80), "example.com:443");
        assert_eq!(ok("example.com:443", 443), "example.com");
        assert_eq!(ok("EXAMPLE.com.:8080", 443), "example.com:8080");
        assert_eq!(ok("a_b-c~d.test", 80), "a_b-c~d.test");
        assert_eq!(ok("127.0.0.1:80", 80), "127.0.0.1");
        assert_eq!(ok("[::1]:8080", 80), "[::1]:8080");
        assert_eq!(ok("[0:0::1]", 80), "[::1]");
        assert_eq!(ok("[2001:DB8::A]:80", 80), "[2001:db8::a]");
    }

    #[test]
    fn bad_hosts_are_refused_by_class() {
        use HostError::*;
        let cases: &[(&str, HostError)] = &[
            ("", Empty),
            (".", Empty),
            (":80", Empty),
            ("edge.test/evil", Byte(b'/')),
            ("edge.test\\evil", Byte(b'\\')),
            ("user@edge.test", Userinfo),
            ("edge.test?x", Byte(b'?')),
            ("edge.test#x", Byte(b'#')),
            ("edge test", Byte(b' ')),
            ("edge\ttest", Byte(b'\t')),
            ("edge\x00test", Byte(0)),
            ("edge\x7ftest", Byte(0x7f)),
            ("edge%2etest", Byte(b'%')),
            ("edge\u{e9}.test", Byte(0xc3)),
            ("a..b", EmptyLabel),
            (".a", EmptyLabel),
            ("a..", EmptyLabel),
            ("a:b", Port),
            ("a:-1", Port),
            ("a:65536", Port),
            ("a:123456", Port),
            ("a:8 0", Port),
            ("a:80:80", Byte(b':')),
            ("::1", Byte(b':')),
            ("[::1", IpLiteral),
            ("[nope]", IpLiteral),
            ("[fe80::1%25eth0]", IpLiteral),
            ("[v1.x]", IpLiteral),
            ("[::1]x", Byte(b'x')),
            ("[::1]:x", Port),
        ];
        for (raw, want) in cases {
            assert_eq!(parse(raw.as_bytes(), 80), Err(*want), "{raw:?}");
        }
    }

    #[test]
    fn normalizing_twice_changes_nothing() {
        for raw in ["Example.COM.", "[0:0::1]:81", "a.b:443", "x:80"] {
            let once = ok(raw, 80);
            assert_eq!(ok(&once, 80), once);
        }
    }
}
