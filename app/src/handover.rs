//! Listening sockets a node did not bind itself: handed over by the edge
//! process it replaces (a binary upgrade, see [`crate::upgrade`]) or passed
//! by systemd (socket activation, `LISTEN_FDS`/`LISTEN_FDNAMES`).
//!
//! The handover protocol, over a Unix stream socket the old process listens
//! on (an abstract address named in `EDGE_UPGRADE_SOCKET`; it accepts only
//! the process it started, by `SO_PEERCRED`):
//!
//! 1. old → new: one line of JSON, `{"names": ["web", "web", "dns", …]}`,
//!    with every socket attached (`SCM_RIGHTS`, at most [`FDS_PER_MESSAGE`]
//!    per message; later messages carry one byte each), in the order of the
//!    names. A `dns` listener's name is given to its TCP and to each of
//!    its UDP sockets; the admin API's is [`ADMIN`].
//! 2. new → old: `ready\n` once the new process serves (its config applied,
//!    `ready` printed). Closing without it means it failed.
//!
//! Sockets are matched to the config by address (a name only matters for a
//! port-0 address, where the port was chosen at bind); what no listener
//! claims is closed once the node has started.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// The environment variable naming the old process's handover socket.
pub const ENV: &str = "EDGE_UPGRADE_SOCKET";
/// The name the admin API's socket goes by (not a valid listener name).
pub const ADMIN: &str = "@admin";
/// Descriptors sent per message (the kernel takes up to 253).
pub const FDS_PER_MESSAGE: usize = 200;
/// Sockets in one handover, at most.
const MAX_SOCKETS: usize = 4096;
/// How long either side waits on the other during the exchange.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// A listening socket of either kind.
#[derive(Debug)]
pub enum Socket {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

impl Socket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Socket::Tcp(s) => s.local_addr(),
            Socket::Udp(s) => s.local_addr(),
        }
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Socket::Tcp(s) => s.as_fd(),
            Socket::Udp(s) => s.as_fd(),
        }
    }

    /// A received descriptor as what it is: a TCP listener or a UDP socket
    /// on an IP address; anything else is refused (and closed).
    fn classify(fd: OwnedFd) -> io::Result<Socket> {
        let s = socket2::Socket::from(fd);
        let addr = s.local_addr()?;
        if addr.as_socket().is_none() {
            return Err(io::Error::other("not an IP socket"));
        }
        match s.r#type()? {
            socket2::Type::STREAM => Ok(Socket::Tcp(s.into())),
            socket2::Type::DGRAM => Ok(Socket::Udp(s.into())),
            _ => Err(io::Error::other("neither a stream nor a datagram socket")),
        }
    }
}

struct Named {
    name: String,
    addr: SocketAddr,
    socket: Socket,
}

/// The sockets this process was given at start, until claimed.
#[derive(Default)]
pub struct Inherited {
    sockets: Vec<Named>,
    /// The process being replaced, waiting for `ready`.
    parent: Option<UnixStream>,
    /// Where the sockets came from, for logs.
    from: &'static str,
}

impl std::fmt::Debug for Inherited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inherited")
            .field("sockets", &self.sockets.len())
            .field("from", &self.from)
            .finish()
    }
}

impl Inherited {
    /// Takes what the environment says this process was given: an old
    /// edge's sockets (`EDGE_UPGRADE_SOCKET`), or systemd's (`LISTEN_FDS`).
    /// Call it first thing in `main`, while the process has one thread
    /// (it edits the environment so that children do not see these).
    pub fn from_env() -> io::Result<Self> {
        if let Some(name) = std::env::var_os(ENV) {
            std::env::remove_var(ENV);
            return Self::from_parent(name.as_encoded_bytes());
        }
        Ok(Self::from_systemd())
    }

    fn from_systemd() -> Self {
        let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
            .map(|n| n.split(':').map(str::to_string).collect())
            .unwrap_or_default();
        std::env::remove_var("LISTEN_FDNAMES");
        let mut fds = listenfd::ListenFd::from_env();
        let mut sockets = Vec::new();
        for i in 0..fds.len() {
            let socket = match fds.take_tcp_listener(i) {
                Ok(Some(l)) => Socket::Tcp(l),
                _ => match fds.take_udp_socket(i) {
                    Ok(Some(u)) => Socket::Udp(u),
                    _ => {
                        tracing::warn!(
                            fd = 3 + i,
                            "socket activation: not a TCP or UDP socket on IP; ignored"
                        );
                        continue;
                    }
                },
            };
            let Ok(addr) = socket.local_addr() else {
                continue;
            };
            let name = names.get(i).cloned().unwrap_or_default();
            sockets.push(Named { name, addr, socket });
        }
        Self {
            sockets,
            parent: None,
            from: "systemd",
        }
    }

    fn from_parent(name: &[u8]) -> io::Result<Self> {
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        let stream = UnixStream::connect_addr(&addr)?;
        stream.set_read_timeout(Some(EXCHANGE_TIMEOUT))?;
        stream.set_write_timeout(Some(EXCHANGE_TIMEOUT))?;
        let received = receive(&stream)?;
        let mut sockets = Vec::with_capacity(received.len());
        for (name, socket) in received {
            let addr = socket.local_addr()?;
            sockets.push(Named { name, addr, socket });
        }
        Ok(Self {
            sockets,
            parent: Some(stream),
            from: "the process this one replaces",
        })
    }

    /// Whether this process replaces an edge process (a binary upgrade).
    pub fn is_upgrade(&self) -> bool {
        self.parent.is_some()
    }

    /// A TCP listening socket for `name` at `addr`: one bound to exactly
    /// `addr`, or, when `addr` asks for port 0, the one named `name` on the
    /// same IP address.
    pub fn take_tcp(&mut self, name: &str, addr: SocketAddr) -> Option<TcpListener> {
        let i = self.find(name, addr, |s| matches!(s, Socket::Tcp(_)))?;
        match self.sockets.remove(i).socket {
            Socket::Tcp(l) => Some(l),
            Socket::Udp(_) => None,
        }
    }

    /// Every UDP socket bound to `addr` (the address a `dns` listener's
    /// TCP socket has).
    pub fn take_udp(&mut self, addr: SocketAddr) -> Vec<UdpSocket> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.sockets.len() {
            if self.sockets[i].addr == addr && matches!(self.sockets[i].socket, Socket::Udp(_)) {
                if let Socket::Udp(u) = self.sockets.remove(i).socket {
                    out.push(u);
                }
            } else {
                i += 1;
            }
        }
        out
    }

    fn find(&self, name: &str, addr: SocketAddr, kind: impl Fn(&Socket) -> bool) -> Option<usize> {
        let candidates = || {
            self.sockets
                .iter()
                .enumerate()
                .filter(|(_, s)| kind(&s.socket))
        };
        if addr.port() != 0 {
            let exact: Vec<usize> = candidates()
                .filter(|(_, s)| s.addr == addr)
                .map(|(i, _)| i)
                .collect();
            return exact
                .iter()
                .copied()
                .find(|&i| self.sockets[i].name == name)
                .or_else(|| exact.first().copied());
        }
        candidates()
            .find(|(_, s)| s.name == name && s.addr.ip() == addr.ip())
            .map(|(i, _)| i)
    }

    /// Says that listener `name` gets a socket of its own, when this
    /// process replaces another (a listener the old one did not have).
    pub fn note_new(&self, name: &str, addr: SocketAddr) {
        if self.is_upgrade() {
            tracing::info!(listener = name, address = %addr, "not handed over (new in the config); bound here");
        }
    }

    /// Closes what no listener claimed (a listener the new config no
    /// longer has), saying so.
    pub fn close_unclaimed(&mut self) {
        for s in self.sockets.drain(..) {
            tracing::info!(
                name = %s.name,
                address = %s.addr,
                from = self.from,
                "an inherited socket no listener uses; closed"
            );
        }
    }

    /// Tells the process being replaced that this one serves.
    pub fn report_ready(&mut self) {
        if let Some(mut parent) = self.parent.take() {
            if let Err(e) = parent.write_all(b"ready\n") {
                tracing::warn!(error = %e, "cannot tell the old process that this one is ready");
            }
        }
    }
}

/// Sends `sockets` (name and socket) over `stream`, as [`receive`] reads them.
pub fn send(stream: &UnixStream, sockets: &[(String, Socket)]) -> io::Result<()> {
    let names: Vec<&str> = sockets.iter().map(|(n, _)| n.as_str()).collect();
    let mut header = serde_json::to_vec(&serde_json::json!({ "names": names }))?;
    header.push(b'\n');
    let fds: Vec<BorrowedFd<'_>> = sockets.iter().map(|(_, s)| s.as_fd()).collect();
    let mut chunks = fds.chunks(FDS_PER_MESSAGE);
    let first = chunks.next().unwrap_or(&[]);
    send_with_fds(stream, &header, first)?;
    for chunk in chunks {
        send_with_fds(stream, b"+", chunk)?;
    }
    Ok(())
}

fn send_with_fds(stream: &UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_MESSAGE))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("too many sockets for one message"));
    }
    let sent = rustix::net::sendmsg(
        stream,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    // The descriptors went with the first byte; the rest is plain data.
    if sent < bytes.len() {
        (&*stream).write_all(&bytes[sent..])?;
    }
    Ok(())
}

/// Reads the names line and the sockets [`send`] sent.
fn receive(stream: &UnixStream) -> io::Result<Vec<(String, Socket)>> {
    let mut bytes = Vec::new();
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut names: Option<Vec<String>> = None;
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_MESSAGE))];
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(n) = &names {
            if fds.len() >= n.len() {
                break;
            }
        }
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = rustix::net::recvmsg(
            stream,
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                fds.extend(received);
            }
        }
        if got.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
            return Err(io::Error::other(
                "sockets were lost in transit (control data truncated)",
            ));
        }
        if got.bytes == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the old process closed the handover early",
            ));
        }
        if names.is_none() {
            bytes.extend_from_slice(&buf[..got.bytes]);
            if bytes.len() > 1 << 20 {
                return Err(io::Error::other("handover header too long"));
            }
            if let Some(end) = bytes.iter().position(|&b| b == b'\n') {
                names = Some(parse_names(&bytes[..end])?);
            }
        }
        if fds.len() > MAX_SOCKETS {
            return Err(io::Error::other("too many sockets handed over"));
        }
    }
    let names = names.unwrap_or_default();
    if fds.len() != names.len() {
        return Err(io::Error::other(format!(
            "{} names but {} sockets handed over",
            names.len(),
            fds.len()
        )));
    }
    names
        .into_iter()
        .zip(fds)
        .map(|(name, fd)| Ok((name, Socket::classify(fd)?)))
        .collect()
}

fn parse_names(line: &[u8]) -> io::Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Header {
        names: Vec<String>,
    }
    let h: Header = serde_json::from_slice(line)
        .map_err(|e| io::Error::other(format!("handover header: {e}")))?;
    if h.names.len() > MAX_SOCKETS {
        return Err(io::Error::other("too many sockets handed over"));
    }
    Ok(h.names)
}

/// Waits for the new process's `ready` line on `stream` (blocking, up to
/// the stream's read timeout). `Ok(false)`: it closed without one.
pub fn wait_ready(mut stream: &UnixStream) -> io::Result<bool> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte)? {
            0 => return Ok(false),
            _ if byte[0] == b'\n' => return Ok(line == b"ready"),
            _ if line.len() < 64 => line.push(byte[0]),
            _ => return Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_cross_with_their_names_in_order() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut sockets = Vec::new();
        // More than one message's worth, of both kinds.
        for i in 0..(FDS_PER_MESSAGE + 7) {
            let s = if i % 3 == 0 {
                Socket::Udp(UdpSocket::bind("127.0.0.1:0").unwrap())
            } else {
                Socket::Tcp(TcpListener::bind("127.0.0.1:0").unwrap())
            };
            sockets.push((format!("l{i}"), s));
        }
        let expected: Vec<(String, SocketAddr, bool)> = sockets
            .iter()
            .map(|(n, s)| {
                (
                    n.clone(),
                    s.local_addr().unwrap(),
                    matches!(s, Socket::Tcp(_)),
                )
            })
            .collect();
        let sender = std::thread::spawn(move || send(&a, &sockets));
        let got = receive(&b).unwrap();
        sender.join().unwrap().unwrap();
        let got: Vec<(String, SocketAddr, bool)> = got
            .iter()
            .map(|(n, s)| {
                (
                    n.clone(),
                    s.local_addr().unwrap(),
                    matches!(s, Socket::Tcp(_)),
                )
            })
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn a_handover_cut_short_is_an_error_not_a_hang() {
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(b"{\"names\": [\"web\"]}\n").unwrap();
        drop(a);
        let e = receive(&b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(b"not json\n").unwrap();
        drop(a);
        assert!(receive(&b).unwrap_err().to_string().contains("header"));
    }

    #[test]
    fn sockets_match_by_address_and_port_zero_by_name() {
        let web = TcpListener::bind("127.0.0.1:0").unwrap();
        let api = TcpListener::bind("127.0.0.1:0").unwrap();
        let dns_tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let dns_addr = dns_tcp.local_addr().unwrap();
        let dns_udp = UdpSocket::bind(dns_addr).unwrap();
        let (web_addr, api_addr) = (web.local_addr().unwrap(), api.local_addr().unwrap());
        let named = |name: &str, socket: Socket| Named {
            name: name.into(),
            addr: socket.local_addr().unwrap(),
            socket,
        };
        let mut inh = Inherited {
            sockets: vec![
                named("web", Socket::Tcp(web)),
                named("api", Socket::Tcp(api)),
                named("dns", Socket::Tcp(dns_tcp)),
                named("dns", Socket::Udp(dns_udp)),
            ],
            parent: None,
            from: "test",
        };
        // Port 0: by name on the same IP; another IP is no match.
        assert!(inh
            .take_tcp("web", "127.0.0.2:0".parse().unwrap())
            .is_none());
        let got = inh.take_tcp("web", "127.0.0.1:0".parse().unwrap()).unwrap();
        assert_eq!(got.local_addr().unwrap(), web_addr);
        // A fixed port: by address, whatever the name.
        let got = inh.take_tcp("renamed", api_addr).unwrap();
        assert_eq!(got.local_addr().unwrap(), api_addr);
        assert!(inh.take_tcp("api", api_addr).is_none(), "taken once");
        let tcp = inh.take_tcp("dns", dns_addr).unwrap();
        assert_eq!(tcp.local_addr().unwrap(), dns_addr);
        assert_eq!(inh.take_udp(dns_addr).len(), 1);
        assert!(inh.sockets.is_empty());
    }
}
