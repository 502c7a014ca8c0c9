//! The sockets of a `dns` listener: UDP (several sockets on one port with
//! SO_REUSEPORT, one loop each, answering inline) and TCP (length-prefixed
//! messages, several per connection, an idle timeout, a connection cap).

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmmsg, sendmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::answer::Transport;
use crate::DnsService;

/// How long a TCP connection may sit idle between queries.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Open TCP connections per listener, at most.
const TCP_CONNECTIONS: usize = 1024;
/// Largest UDP query read.
const UDP_BUFFER: usize = 4096;
/// How often a UDP thread waiting for queries looks whether it should stop.
const UDP_WAKE: Duration = Duration::from_millis(100);

/// Sockets bound for a `dns` listener, not yet served.
#[derive(Debug)]
pub struct BoundDns {
    pub name: String,
    pub local_addr: SocketAddr,
    udp: Vec<UdpSocket>,
    tcp: TcpListener,
}

fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_port(true)?;
    // Room for bursts: the loops answer inline.
    let _ = s.set_recv_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Ports [`BoundDns::bind`] tries for a listener on port 0.
pub const PORT_0_ATTEMPTS: usize = 16;

/// `bind_once(addr)`, tried again while it fails with `AddrInUse` and
/// `addr`'s port is 0 (a new port each time), up to [`PORT_0_ATTEMPTS`].
fn bind_pair<T>(
    addr: SocketAddr,
    mut bind_once: impl FnMut(SocketAddr) -> io::Result<T>,
) -> io::Result<T> {
    let attempts = if addr.port() == 0 { PORT_0_ATTEMPTS } else { 1 };
    let mut attempt = 1;
    loop {
        match bind_once(addr) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && attempt < attempts => attempt += 1,
            done => return done,
        }
    }
}

impl BoundDns {
    /// Binds `addr` over TCP and `udp_sockets` UDP sockets (port 0 picks one
    /// port for all). Port 0: the kernel picks a port free for TCP, which a
    /// UDP socket elsewhere may hold (a client's, without `SO_REUSEPORT`);
    /// then another port is picked, up to [`PORT_0_ATTEMPTS`] times.
    /// Errors: the socket calls' (`AddrInUse` for a port given or after the
    /// last attempt).
    pub fn bind(name: &str, addr: SocketAddr, udp_sockets: usize) -> io::Result<BoundDns> {
        bind_pair(addr, |addr| Self::bind_once(name, addr, udp_sockets))
    }

    fn bind_once(name: &str, addr: SocketAddr, udp_sockets: usize) -> io::Result<BoundDns> {
        let tcp = {
            let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
            if addr.is_ipv6() {
                s.set_only_v6(true)?;
            }
            s.set_reuse_address(true)?;
            s.set_nonblocking(true)?;
            s.bind(&addr.into())?;
            s.listen(1024)?;
            TcpListener::from(s)
        };
        let local_addr = tcp.local_addr()?;
        let udp = (0..udp_sockets.max(1))
            .map(|_| udp_socket(local_addr))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(BoundDns {
            name: name.to_string(),
            local_addr,
            udp,
            tcp,
        })
    }

    /// Sockets bound already: inherited from the process that started this
    /// one (a binary upgrade) or from systemd (socket activation). UDP
    /// sockets are added, on the TCP socket's address, up to `udp_sockets`
    /// when there are fewer (and the inherited ones allow `SO_REUSEPORT`).
    pub fn from_std(
        name: &str,
        tcp: TcpListener,
        mut udp: Vec<UdpSocket>,
        udp_sockets: usize,
    ) -> io::Result<BoundDns> {
        tcp.set_nonblocking(true)?;
        let local_addr = tcp.local_addr()?;
        for u in &udp {
            u.set_nonblocking(true)?;
        }
        while udp.len() < udp_sockets.max(1) {
            match udp_socket(local_addr) {
                Ok(u) => udp.push(u),
                // Inherited without SO_REUSEPORT: what there is serves.
                Err(_) if !udp.is_empty() => break,
                Err(e) => return Err(e),
            }
        }
        Ok(BoundDns {
            name: name.to_string(),
            local_addr,
            udp,
            tcp,
        })
    }
}

/// A served listener; dropping it (or `stop`) stops its loops.
#[derive(Debug)]
pub struct DnsListener {
    pub name: String,
    pub local_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
    /// Each resolves once its UDP thread has ended (never aborted).
    udp_threads: Vec<JoinHandle<()>>,
    /// True: the UDP threads stop (within UDP_WAKE).
    stopping: Arc<AtomicBool>,
    /// True: TCP connections close once idle (draining).
    drain: tokio::sync::watch::Sender<bool>,
    /// TCP connection slots; all free when none is open.
    slots: Arc<Semaphore>,
    /// Other descriptors of the sockets, to hand to a new binary.
    sockets: (TcpListener, Vec<UdpSocket>),
}

/// A bound listener registered with a runtime's reactor, ready to serve:
/// what can fail is done, [`ReadyDns::serve`] cannot.
#[derive(Debug)]
pub struct ReadyDns {
    pub name: String,
    pub local_addr: SocketAddr,
    udp: Vec<UdpSocket>,
    tcp: tokio::net::TcpListener,
    sockets: (TcpListener, Vec<UdpSocket>),
    runtime: tokio::runtime::Handle,
}

impl ReadyDns {
    /// Registers the sockets of `bound` with `runtime`.
    pub fn prepare(bound: BoundDns, runtime: &tokio::runtime::Handle) -> io::Result<ReadyDns> {
        let _enter = runtime.enter();
        let sockets = (
            bound.tcp.try_clone()?,
            bound
                .udp
                .iter()
                .map(UdpSocket::try_clone)
                .collect::<io::Result<Vec<_>>>()?,
        );
        // Each UDP socket is read by a thread of its own that blocks in
        // recvmmsg (as gdnsd does): one system call per batch, no epoll.
        // The wait wakes every UDP_WAKE to see whether to stop.
        for u in &bound.udp {
            u.set_nonblocking(false)?;
            u.set_read_timeout(Some(UDP_WAKE))?;
        }
        let udp = bound.udp;
        let tcp = tokio::net::TcpListener::from_std(bound.tcp)?;
        Ok(ReadyDns {
            name: bound.name,
            local_addr: bound.local_addr,
            udp,
            tcp,
            sockets,
            runtime: runtime.clone(),
        })
    }

    /// Starts serving.
    pub fn serve(self, service: Arc<DnsService>) -> DnsListener {
        let mut tasks = Vec::new();
        let mut udp_threads = Vec::new();
        let stopping = Arc::new(AtomicBool::new(false));
        for sock in self.udp {
            let (service, stopping) = (service.clone(), stopping.clone());
            // A thread of its own, not the runtime's blocking pool: that
            // pool has a cap (512), past which a socket would never be read
            // (its queries lost) while the threads before it serve on.
            let (done, ended) = tokio::sync::oneshot::channel::<()>();
            let spawned = std::thread::Builder::new()
                .name("edge-dns-udp".into())
                .spawn(move || {
                    udp_loop(&sock, &service, &stopping);
                    drop(sock);
                    let _ = done.send(());
                });
            match spawned {
                Ok(_) => udp_threads.push(self.runtime.spawn(async move {
                    let _ = ended.await;
                })),
                Err(e) => {
                    tracing::error!(listener = %self.name, error = %e, "cannot start a dns udp thread")
                }
            }
        }
        let (drain, draining) = tokio::sync::watch::channel(false);
        let slots = Arc::new(Semaphore::new(TCP_CONNECTIONS));
        tasks.push(
            self.runtime
                .spawn(tcp_loop(self.tcp, service, slots.clone(), draining)),
        );
        DnsListener {
            name: self.name,
            local_addr: self.local_addr,
            tasks,
            udp_threads,
            stopping,
            drain,
            slots,
            sockets: self.sockets,
        }
    }
}

impl DnsListener {
    /// Starts serving on `runtime`.
    pub fn serve(
        bound: BoundDns,
        service: Arc<DnsService>,
        runtime: &tokio::runtime::Handle,
    ) -> io::Result<DnsListener> {
        Ok(ReadyDns::prepare(bound, runtime)?.serve(service))
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
    }

    /// Stops reading queries and accepting connections; open TCP
    /// connections answer what they have read and close. Returns the
    /// loops, to await: once they have ended nothing is read here.
    pub fn stop_serving(&mut self) -> Vec<JoinHandle<()>> {
        self.drain.send_replace(true);
        self.stopping.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
        let mut tasks = std::mem::take(&mut self.tasks);
        tasks.append(&mut self.udp_threads);
        tasks
    }

    /// Resolves once no TCP connection is open.
    pub fn idle(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let slots = self.slots.clone();
        let all = u32::try_from(TCP_CONNECTIONS).unwrap_or(u32::MAX);
        async move {
            let _ = slots.acquire_many_owned(all).await;
        }
    }

    /// New descriptors of the listener's TCP and UDP sockets, for a binary
    /// upgrade: the new process serves the same sockets.
    pub fn sockets(&self) -> io::Result<(TcpListener, Vec<UdpSocket>)> {
        Ok((
            self.sockets.0.try_clone()?,
            self.sockets
                .1
                .iter()
                .map(UdpSocket::try_clone)
                .collect::<io::Result<Vec<_>>>()?,
        ))
    }
}

impl Drop for DnsListener {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Datagrams read (and answered) per system call, at most.
const BATCH: usize = 32;

/// Reads up to `bufs.len()` datagrams at once (recvmmsg): waits for the
/// first (up to the socket's read timeout), then takes what is there.
fn recv_batch(
    fd: RawFd,
    headers: &mut MultiHeaders<SockaddrStorage>,
    bufs: &mut [Vec<u8>],
    got: &mut Vec<(usize, Option<SocketAddr>)>,
) -> io::Result<()> {
    let mut iovs: Vec<[IoSliceMut<'_>; 1]> = bufs
        .iter_mut()
        .map(|b| [IoSliceMut::new(&mut b[..])])
        .collect();
    let read = recvmmsg(fd, headers, iovs.iter_mut(), MsgFlags::MSG_WAITFORONE, None)
        .map_err(io::Error::from)?;
    got.clear();
    got.extend(read.map(|m| (m.bytes, m.address.as_ref().and_then(socket_addr))));
    Ok(())
}

/// Sends datagrams at once (sendmmsg); returns how many went.
fn send_batch(
    fd: RawFd,
    headers: &mut MultiHeaders<SockaddrStorage>,
    out: &[(Vec<u8>, SocketAddr)],
) -> io::Result<usize> {
    let iovs: Vec<[IoSlice<'_>; 1]> = out.iter().map(|(b, _)| [IoSlice::new(b)]).collect();
    let addrs: Vec<Option<SockaddrStorage>> = out
        .iter()
        .map(|(_, a)| Some(SockaddrStorage::from(*a)))
        .collect();
    let sent = sendmmsg(fd, headers, &iovs, &addrs, [], MsgFlags::MSG_DONTWAIT)
        .map_err(io::Error::from)?;
    Ok(sent.count())
}

fn socket_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    s.as_sockaddr_in()
        .map(|v4| SocketAddr::V4((*v4).into()))
        .or_else(|| s.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into())))
}

/// Waits until `fd` can take a datagram (or UDP_WAKE passes).
fn wait_writable(fd: &impl AsFd) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
    let _ = poll(&mut fds, PollTimeout::from(100u16));
}

/// One UDP socket's thread: a batch read, answered inline, sent in one
/// call; until `stopping`.
fn udp_loop(sock: &UdpSocket, service: &DnsService, stopping: &AtomicBool) {
    let fd = sock.as_raw_fd();
    let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; UDP_BUFFER]).collect();
    let mut answers: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(BATCH);
    let mut got = Vec::with_capacity(BATCH);
    let mut recv_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let seconds = service.local_seconds();
    while !stopping.load(Ordering::Relaxed) {
        let waited = Instant::now();
        match recv_batch(fd, &mut recv_headers, &mut bufs, &mut got) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                // The read timeout: look at `stopping`. A socket another
                // process made non-blocking (an upgrade's new binary, for
                // a moment) returns at once: wait here instead of spinning.
                if e.kind() == io::ErrorKind::WouldBlock && waited.elapsed() < UDP_WAKE / 2 {
                    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
                    let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
                    let _ = poll(&mut fds, PollTimeout::from(100u16));
                }
                continue;
            }
            Err(e) => {
                // ICMP errors from earlier sends surface here; keep serving.
                tracing::debug!(error = %e, "dns udp receive");
                continue;
            }
        };
        let started = Instant::now();
        answers.clear();
        for (buf, &(n, src)) in bufs.iter().zip(&got) {
            let Some(src) = src else { continue };
            if let Some(out) = service.respond(&buf[..n.min(buf.len())], src.ip(), Transport::Udp) {
                answers.push((out, src));
            }
        }
        DnsService::observe_batch(&seconds, started, answers.len());
        let mut sent = 0;
        let mut waits = 0;
        // What was read is answered, stopping or not: a query read by
        // this process is not read by the one taking over.
        while sent < answers.len() {
            match send_batch(fd, &mut send_headers, &answers[sent..]) {
                Ok(0) => break,
                Ok(k) => sent += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && waits < 10 => {
                    waits += 1;
                    wait_writable(sock);
                }
                Err(e) => {
                    // This datagram cannot go (e.g. no route, or the send
                    // buffer stays full): skip it.
                    tracing::debug!(error = %e, client = %answers[sent].1, "dns udp send");
                    sent += 1;
                }
            }
        }
    }
}

async fn tcp_loop(
    listener: tokio::net::TcpListener,
    service: Arc<DnsService>,
    slots: Arc<Semaphore>,
    draining: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "dns tcp accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Over the cap: close at once rather than queue.
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let service = service.clone();
        let draining = draining.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = tcp_connection(stream, peer, &service, draining).await {
                tracing::debug!(error = %e, client = %peer, "dns tcp connection");
            }
        });
    }
}

async fn tcp_connection(
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
    service: &DnsService,
    mut draining: tokio::sync::watch::Receiver<bool>,
) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut len = [0u8; 2];
    loop {
        // Between queries a draining node closes (RFC 7766 §6.2.3): a
        // query already here is answered first.
        let next = tokio::select! {
            biased;
            r = tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)) => Some(r),
            _ = draining.wait_for(|d| *d) => None,
        };
        match next {
            Some(Ok(Ok(_))) => {}
            // Idle, closed, reset or draining: done.
            _ => return Ok(()),
        }
        let n = usize::from(u16::from_be_bytes(len));
        let mut msg = vec![0u8; n];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut msg))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "query cut short"))??;
        let started = Instant::now();
        let answers = service.respond_tcp(&msg, peer.ip());
        service.observe(started);
        for out in answers {
            let Some(framed) = crate::transfer::framed(&out) else {
                continue;
            };
            stream.write_all(&framed).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn in_use() -> io::Error {
        io::Error::from(io::ErrorKind::AddrInUse)
    }

    /// Port 0: a port a UDP socket holds is given up for another, up to
    /// `PORT_0_ATTEMPTS` tries; a port given is tried once; other errors
    /// are not retried.
    #[test]
    fn port_0_is_picked_again_while_udp_holds_it() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let given: SocketAddr = "127.0.0.1:5353".parse().unwrap();
        for failures in [0, 1, 3, PORT_0_ATTEMPTS - 1] {
            let mut tries = 0;
            let got = bind_pair(any, |_| {
                tries += 1;
                if tries <= failures {
                    Err(in_use())
                } else {
                    Ok(tries)
                }
            });
            assert_eq!(got.unwrap(), failures + 1);
        }
        let mut tries = 0;
        let got: io::Result<()> = bind_pair(any, |_| {
            tries += 1;
            Err(in_use())
        });
        assert_eq!(got.unwrap_err().kind(), io::ErrorKind::AddrInUse);
        assert_eq!(tries, PORT_0_ATTEMPTS);
        for (addr, error) in [
            (given, io::ErrorKind::AddrInUse),
            (any, io::ErrorKind::PermissionDenied),
            (any, io::ErrorKind::AddrNotAvailable),
        ] {
            let mut tries = 0;
            let got: io::Result<()> = bind_pair(addr, |_| {
                tries += 1;
                Err(io::Error::from(error))
            });
            assert_eq!(got.unwrap_err().kind(), error);
            assert_eq!(tries, 1, "{addr} {error:?}");
        }
    }

    /// Over real sockets: a port a client's UDP socket holds is refused
    /// when given; port 0 gets one port for TCP and every UDP socket.
    #[test]
    fn a_held_udp_port_is_refused_when_given_and_port_0_binds_both() {
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let held = client.local_addr().unwrap();
        let err = BoundDns::bind("dns", held, 2).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        for _ in 0..50 {
            let bound = BoundDns::bind("dns", "127.0.0.1:0".parse().unwrap(), 2).unwrap();
            assert_ne!(bound.local_addr.port(), 0);
            assert_eq!(bound.tcp.local_addr().unwrap(), bound.local_addr);
            assert_eq!(bound.udp.len(), 2);
            for u in &bound.udp {
                assert_eq!(u.local_addr().unwrap(), bound.local_addr);
            }
        }
    }
}
