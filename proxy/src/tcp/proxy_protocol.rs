//! The PROXY protocol (HAProxy's, v1 text and v2 binary): written to backends
//! so they see the client's address, and read from a trusted load balancer in
//! front of edge.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use edge_config::ProxyProtocol;

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 line (a TCP6 line with the longest addresses), CRLF included.
const V1_MAX: usize = 107;
/// Largest v2 address block edge accepts (addresses plus TLVs).
const V2_MAX_BODY: usize = 4096;

/// Encodes the header announcing a connection from `client` to `local`.
pub fn encode(version: ProxyProtocol, client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    // Both ends must be in one family: map a v4 peer onto v6 if they differ.
    let (client, local) = same_family(client, local);
    match version {
        ProxyProtocol::V1 => {
            let family = if client.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {family} {} {} {} {}\r\n",
                client.ip(),
                local.ip(),
                client.port(),
                local.port()
            )
            .into_bytes()
        }
        ProxyProtocol::V2 => {
            let mut out = Vec::with_capacity(16 + 36);
            out.extend_from_slice(&V2_SIGNATURE);
            out.push(0x21); // version 2, command PROXY
            match (client.ip(), local.ip()) {
                (IpAddr::V4(c), IpAddr::V4(l)) => {
                    out.push(0x11); // AF_INET, STREAM
                    out.extend_from_slice(&12u16.to_be_bytes());
                    out.extend_from_slice(&c.octets());
                    out.extend_from_slice(&l.octets());
                }
                (c, l) => {
                    out.push(0x21); // AF_INET6, STREAM
                    out.extend_from_slice(&36u16.to_be_bytes());
                    out.extend_from_slice(&v6(c).octets());
                    out.extend_from_slice(&v6(l).octets());
                }
            }
            out.extend_from_slice(&client.port().to_be_bytes());
            out.extend_from_slice(&local.port().to_be_bytes());
            out
        }
    }
}

fn v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    if a.is_ipv4() == b.is_ipv4() {
        return (a, b);
    }
    (
        SocketAddr::new(IpAddr::V6(v6(a.ip())), a.port()),
        SocketAddr::new(IpAddr::V6(v6(b.ip())), b.port()),
    )
}

/// What a PROXY header said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The original client; `None` for `UNKNOWN` (v1) or `LOCAL` (v2), where
    /// the connection's own peer address stands.
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
    /// Bytes read past the header: the start of the proxied stream.
    pub rest: Vec<u8>,
}

/// Why a PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("no PROXY protocol header within {0:?}")]
    Timeout(Duration),
    #[error("connection closed before the PROXY protocol header ended")]
    Closed,
    #[error("not a PROXY protocol header")]
    NotProxy,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] io::Error),
}

/// Reads a v1 or v2 header from the start of `stream`, within `limit`.
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> Result<Received, HeaderError> {
    match tokio::time::timeout(limit, read_header_inner(stream)).await {
        Ok(r) => r,
        Err(_) => Err(HeaderError::Timeout(limit)),
    }
}

async fn read_header_inner<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Received, HeaderError> {
    let mut buf = Vec::with_capacity(256);
    loop {
        if let Some(r) = parse(&buf)? {
            return Ok(r);
        }
        let mut chunk = [0u8; 512];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(HeaderError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Parses a complete header at the start of `buf`; `Ok(None)` means more
/// bytes are needed.
pub fn parse(buf: &[u8]) -> Result<Option<Received>, HeaderError> {
    let prefix = buf.len().min(V2_SIGNATURE.len());
    if buf[..prefix] == V2_SIGNATURE[..prefix] && !buf.is_empty() && buf[0] == b'\r' {
        return parse_v2(buf);
    }
    let v1_prefix = b"PROXY ";
    let prefix = buf.len().min(v1_prefix.len());
    if buf[..prefix] != v1_prefix[..prefix] {
        return Err(HeaderError::NotProxy);
    }
    parse_v1(buf)
}

fn parse_v1(buf: &[u8]) -> Result<Option<Received>, HeaderError> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= V1_MAX {
            return Err(HeaderError::Malformed("v1 line longer than 107 bytes"));
        }
        return Ok(None);
    };
    if end + 2 > V1_MAX {
        return Err(HeaderError::Malformed("v1 line longer than 107 bytes"));
    }
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| HeaderError::Malformed("not ASCII"))?;
    let parts: Vec<&str> = line.split(' ').collect();
    let rest = buf[end + 2..].to_vec();
    match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(Some(Received {
            source: None,
            destination: None,
            rest,
        })),
        ["PROXY", family @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let ip = |s: &str| -> Result<IpAddr, HeaderError> {
                let ip: IpAddr = s
                    .parse()
                    .map_err(|_| HeaderError::Malformed("bad address"))?;
                if ip.is_ipv4() != (*family == "TCP4") {
                    return Err(HeaderError::Malformed("address does not match the family"));
                }
                Ok(ip)
            };
            let port = |s: &str| -> Result<u16, HeaderError> {
                if s.len() > 1 && s.starts_with('0') {
                    return Err(HeaderError::Malformed("port with a leading zero"));
                }
                s.parse().map_err(|_| HeaderError::Malformed("bad port"))
            };
            Ok(Some(Received {
                source: Some(SocketAddr::new(ip(src)?, port(sport)?)),
                destination: Some(SocketAddr::new(ip(dst)?, port(dport)?)),
                rest,
            }))
        }
        _ => Err(HeaderError::Malformed(
            "v1 line is not PROXY TCP4|TCP6|UNKNOWN …",
        )),
    }
}

fn parse_v2(buf: &[u8]) -> Result<Option<Received>, HeaderError> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(HeaderError::Malformed("v2 version is not 2"));
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX_BODY {
        return Err(HeaderError::Malformed("v2 header longer than 4 KiB"));
    }
    if buf.len() < 16 + len {
        return Ok(None);
    }
    let body = &buf[16..16 + len];
    let rest = buf[16 + len..].to_vec();
    let local = match ver_cmd & 0x0F {
        0 => true,
        1 => false,
        _ => {
            return Err(HeaderError::Malformed(
                "v2 command is neither LOCAL nor PROXY",
            ))
        }
    };
    let addrs = match buf[13] {
        _ if local => None,
        0x11 | 0x12 => {
            if body.len() < 12 {
                return Err(HeaderError::Malformed(
                    "v2 IPv4 block shorter than 12 bytes",
                ));
            }
            let ip = |o: usize| IpAddr::from([body[o], body[o + 1], body[o + 2], body[o + 3]]);
            let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
            Some((
                SocketAddr::new(ip(0), port(8)),
                SocketAddr::new(ip(4), port(10)),
            ))
        }
        0x21 | 0x22 => {
            if body.len() < 36 {
                return Err(HeaderError::Malformed(
                    "v2 IPv6 block shorter than 36 bytes",
                ));
            }
            let ip = |o: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&body[o..o + 16]);
                IpAddr::from(b)
            };
            let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
            Some((
                SocketAddr::new(ip(0), port(32)),
                SocketAddr::new(ip(16), port(34)),
            ))
        }
        // UNSPEC or unix sockets: keep the connection's own address.
        _ => None,
    };
    Ok(Some(Received {
        source: addrs.map(|a| a.0),
        destination: addrs.map(|a| a.1),
        rest,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_and_v2_round_trip_for_both_families() {
        for (c, l) in [
            ("192.0.2.7:51000", "10.0.0.1:443"),
            ("[2001:db8::7]:51000", "[2001:db8::1]:443"),
        ] {
            for v in [ProxyProtocol::V1, ProxyProtocol::V2] {
                let mut bytes = encode(v, addr(c), addr(l));
                bytes.extend_from_slice(b"GET /");
                let r = parse(&bytes).unwrap().unwrap();
                assert_eq!(r.source, Some(addr(c)), "{v:?}");
                assert_eq!(r.destination, Some(addr(l)));
                assert_eq!(r.rest, b"GET /");
            }
        }
    }

    #[test]
    fn mixed_families_are_sent_as_v6() {
        let h = encode(
            ProxyProtocol::V1,
            addr("192.0.2.7:1"),
            addr("[2001:db8::1]:2"),
        );
        assert_eq!(
            String::from_utf8(h).unwrap(),
            "PROXY TCP6 ::ffff:192.0.2.7 2001:db8::1 1 2\r\n"
        );
    }

    #[test]
    fn partial_headers_ask_for_more_and_bad_ones_are_refused() {
        let full = encode(ProxyProtocol::V2, addr("192.0.2.7:1"), addr("192.0.2.8:2"));
        for cut in 0..full.len() {
            assert!(parse(&full[..cut]).unwrap().is_none(), "cut at {cut}");
        }
        assert!(parse(b"PROXY TCP4 192.0.2.1").unwrap().is_none());
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 1\r\n",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 1\r\n",
            &[b'P'; 200],
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut wrong_version = full.clone();
        wrong_version[12] = 0x11;
        assert!(parse(&wrong_version).is_err());
        let mut short_block = full.clone();
        short_block[15] = 4;
        assert!(parse(&short_block).is_err());
    }

    #[test]
    fn unknown_and_local_keep_the_socket_address() {
        let r = parse(b"PROXY UNKNOWN\r\nhello").unwrap().unwrap();
        assert_eq!(r.source, None);
        assert_eq!(r.rest, b"hello");
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        let r = parse(&local).unwrap().unwrap();
        assert_eq!(r.source, None);
    }
}
