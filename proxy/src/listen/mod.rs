//! Listeners: sockets edge binds itself (so port 0 and bind errors are known
//! before serving), accept loops run on pingora's service runtime, and
//! listeners added or removed while running. A [`ListenerService`] is the
//! pingora service that hosts them; [`ListenerControl`] is how the rest of
//! edge adds, removes and drains them.
//!
//! Listener changes in a config apply in place: a reload binds the new
//! sockets first (a failure keeps everything as it was) and closes removed
//! ones, whose open connections finish normally.

pub mod acme;
mod buffered;
mod bytes;
mod conn;
mod field_names;
pub mod framing;
mod head;
mod http;
pub mod inspect;
mod shortcut;
mod spare;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{GetSocketDigest, SocketDigest};

use pingora_core::server::{ListenFds, ShutdownWatch};
use pingora_core::services::Service;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};

use crate::error::BuildError;
use crate::metrics::{ListenerMetrics, ProxyMetrics};

pub(crate) use self::buffered::WriteBuffered;
pub use self::conn::Connection;
pub use self::http::HttpHandler;
pub use self::tls::{load_certified_keys, SniResolver, TlsSettings};

/// How long a client may take to finish a TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves accepted connections of one listener.
#[async_trait]
pub trait ConnectionHandler: Send + Sync + 'static {
    /// Serves one connection until it closes. `shutdown` turns true when the
    /// node drains: finish the current request, do not keep the connection.
    async fn serve(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, shutdown: ShutdownWatch);

    /// Stop waiting on idle keep-alive connections (called when draining).
    async fn drain(&self) {}
}

/// A bound socket, not yet accepting.
pub struct BoundListener {
    pub name: String,
    pub local_addr: SocketAddr,
    socket: std::net::TcpListener,
}

const BACKLOG: i32 = 4096;

impl BoundListener {
    /// A socket bound already: inherited from the process that started this
    /// one (a binary upgrade) or from systemd (socket activation).
    pub fn from_std(name: &str, socket: std::net::TcpListener) -> Result<Self, BuildError> {
        let err = |source| BuildError::Bind {
            listener: name.to_string(),
            address: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        };
        socket.set_nonblocking(true).map_err(err)?;
        let local_addr = socket.local_addr().map_err(err)?;
        Ok(Self {
            name: name.to_string(),
            local_addr,
            socket,
        })
    }

    /// Binds `address` (port 0 picks a free port).
    pub fn bind(name: &str, address: SocketAddr) -> Result<Self, BuildError> {
        let err = |source| BuildError::Bind {
            listener: name.to_string(),
            address,
            source,
        };
        let domain = socket2::Domain::for_address(address);
        let socket =
            socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))
                .map_err(err)?;
        socket.set_reuse_address(true).map_err(err)?;
        if address.is_ipv6() {
            socket.set_only_v6(true).map_err(err)?;
        }
        socket.bind(&address.into()).map_err(err)?;
        socket.listen(BACKLOG).map_err(err)?;
        socket.set_nonblocking(true).map_err(err)?;
        let std: std::net::TcpListener = socket.into();
        let local_addr = std.local_addr().map_err(err)?;
        Ok(Self {
            name: name.to_string(),
            local_addr,
            socket: std,
        })
    }
}

/// Open connections across all listeners, with a wake-up when none are left.
#[derive(Default)]
struct ConnectionCount {
    open: AtomicUsize,
    idle: Notify,
}

struct ConnectionGuard {
    count: Arc<ConnectionCount>,
    metrics: ListenerMetrics,
}

impl ConnectionGuard {
    fn new(count: &Arc<ConnectionCount>, metrics: &ListenerMetrics) -> Self {
        count.open.fetch_add(1, Ordering::AcqRel);
        metrics.open.inc();
        metrics.total.inc();
        Self {
            count: count.clone(),
            metrics: metrics.clone(),
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.metrics.open.dec();
        if self.count.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.count.idle.notify_waiters();
        }
    }
}

struct Running {
    local_addr: SocketAddr,
    /// The listening socket (another descriptor of it), to hand to a new
    /// binary on upgrade.
    socket: Option<std::net::TcpListener>,
    stop: watch::Sender<bool>,
    /// Closed when the accept loop has ended.
    exited: watch::Receiver<()>,
    /// The handler new connections get; replaced on reload.
    handler: watch::Sender<Arc<dyn ConnectionHandler>>,
}

struct Pending {
    listener: BoundListener,
    handler: Arc<dyn ConnectionHandler>,
    max_connections: usize,
}

#[derive(Default)]
struct Inner {
    runtime: Option<tokio::runtime::Handle>,
    pending: Vec<Pending>,
    running: HashMap<String, Running>,
    draining: bool,
}

/// Adds, removes and drains listeners, before or after the service starts.
pub struct ListenerControl {
    inner: Mutex<Inner>,
    connections: Arc<ConnectionCount>,
    drain_tx: watch::Sender<bool>,
    metrics: Arc<ProxyMetrics>,
}

impl ListenerControl {
    pub fn new(metrics: Arc<ProxyMetrics>) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner::default()),
            connections: Arc::default(),
            drain_tx: watch::channel(false).0,
            metrics,
        })
    }

    /// Starts accepting on `listener` (at once if the service runs, else when it starts).
    pub fn add(
        &self,
        listener: BoundListener,
        handler: Arc<dyn ConnectionHandler>,
        max_connections: usize,
    ) {
        let mut inner = self.inner.lock();
        if inner.draining {
            return;
        }
        let pending = Pending {
            listener,
            handler,
            max_connections,
        };
        match inner.runtime.clone() {
            Some(rt) => self.spawn(&mut inner, &rt, pending),
            None => inner.pending.push(pending),
        }
    }

    /// Stops accepting on a listener. Its open connections finish what they
    /// are doing: idle keep-alive ones close, in-flight requests are
    /// answered with `Connection: close` (as a drain, for this listener).
    pub fn remove(&self, name: &str) -> bool {
        let mut inner = self.inner.lock();
        let removed = inner
            .pending
            .iter()
            .position(|p| p.listener.name == name)
            .map(|i| {
                inner.pending.remove(i);
            });
        let stopped = inner.running.remove(name).map(|r| {
            let _ = r.stop.send(true);
            r.handler.borrow().clone()
        });
        if let (Some(old), Some(rt)) = (&stopped, &inner.runtime) {
            let old = old.clone();
            rt.spawn(async move { old.drain().await });
        }
        removed.is_some() || stopped.is_some()
    }

    /// Gives a listener a new handler (new settings or certificates) for new
    /// connections, keeping its socket; connections of the old handler end
    /// after their current request, so clients come back to the new
    /// settings. Returns false if it is not running.
    pub fn replace_handler(&self, name: &str, handler: Arc<dyn ConnectionHandler>) -> bool {
        let mut inner = self.inner.lock();
        if let Some(p) = inner.pending.iter_mut().find(|p| p.listener.name == name) {
            p.handler = handler;
            return true;
        }
        let Some(r) = inner.running.get(name) else {
            return false;
        };
        let old = r.handler.borrow().clone();
        let sent = r.handler.send(handler).is_ok();
        if let Some(rt) = &inner.runtime {
            rt.spawn(async move { old.drain().await });
        }
        sent
    }

    /// Names and addresses of listeners accepting (or about to).
    pub fn addresses(&self) -> Vec<(String, SocketAddr)> {
        let inner = self.inner.lock();
        inner
            .running
            .iter()
            .map(|(n, r)| (n.clone(), r.local_addr))
            .chain(
                inner
                    .pending
                    .iter()
                    .map(|p| (p.listener.name.clone(), p.listener.local_addr)),
            )
            .collect()
    }

    /// The listening sockets (new descriptors of them) by listener name,
    /// for a binary upgrade: the new process accepts on the same sockets.
    pub fn sockets(&self) -> Vec<(String, std::net::TcpListener)> {
        let inner = self.inner.lock();
        // Pending ones too: a listener bound but not yet accepting (the
        // service has not started) is the new process's all the same.
        let pending = inner
            .pending
            .iter()
            .filter_map(|p| Some((p.listener.name.clone(), p.listener.socket.try_clone().ok()?)));
        inner
            .running
            .iter()
            .filter_map(|(name, r)| {
                let s = r.socket.as_ref()?.try_clone().ok()?;
                Some((name.clone(), s))
            })
            .chain(pending)
            .collect()
    }

    pub fn open_connections(&self) -> usize {
        self.connections.open.load(Ordering::Acquire)
    }

    /// Stops accepting everywhere; connections already open go on.
    pub fn stop_accepting(&self) {
        let mut inner = self.inner.lock();
        inner.draining = true;
        inner.pending.clear();
        for r in inner.running.values_mut() {
            let _ = r.stop.send(true);
            // The last descriptor here: closing it refuses new connections
            // instead of leaving them in a backlog nobody accepts from
            // (unless a new process took the socket over).
            r.socket = None;
        }
    }

    /// Stops accepting everywhere and returns once every accept loop has
    /// ended: no connection is accepted here after this.
    pub async fn stop_accepting_and_wait(&self) {
        self.stop_accepting();
        let mut exits: Vec<watch::Receiver<()>> = self
            .inner
            .lock()
            .running
            .values()
            .map(|r| r.exited.clone())
            .collect();
        for rx in &mut exits {
            // Ends with an error when the loop (holding the sender) ends.
            while rx.changed().await.is_ok() {}
        }
    }

    /// Returns once no connection is open.
    pub async fn wait_idle(&self) {
        loop {
            let idle = self.connections.idle.notified();
            if self.open_connections() == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Stops accepting everywhere, tells handlers to close idle keep-alive
    /// connections and in-flight ones to close after their request, then
    /// waits until no connection is open or `grace` has passed. Returns the
    /// number still open.
    pub async fn drain(&self, grace: Duration) -> usize {
        self.stop_accepting();
        let handlers: Vec<Arc<dyn ConnectionHandler>> = {
            let inner = self.inner.lock();
            inner
                .running
                .values()
                .map(|r| r.handler.borrow().clone())
                .collect()
        };
        let _ = self.drain_tx.send(true);
        for h in &handlers {
            h.drain().await;
        }
        let _ = tokio::time::timeout(grace, self.wait_idle()).await;
        self.open_connections()
    }

    fn started(&self, runtime: tokio::runtime::Handle) {
        let mut inner = self.inner.lock();
        inner.runtime = Some(runtime.clone());
        for pending in std::mem::take(&mut inner.pending) {
            self.spawn(&mut inner, &runtime, pending);
        }
    }

    fn spawn(&self, inner: &mut Inner, runtime: &tokio::runtime::Handle, p: Pending) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (exited_tx, exited_rx) = watch::channel(());
        let (handler_tx, handler_rx) = watch::channel(p.handler);
        let name = p.listener.name.clone();
        if let Some(old) = inner.running.remove(&name) {
            let _ = old.stop.send(true);
        }
        inner.running.insert(
            name.clone(),
            Running {
                local_addr: p.listener.local_addr,
                socket: p.listener.socket.try_clone().ok(),
                stop: stop_tx,
                exited: exited_rx,
                handler: handler_tx,
            },
        );
        let acceptor = Acceptor {
            name,
            handler: handler_rx,
            connections: self.connections.clone(),
            metrics: self.metrics.listener(&p.listener.name),
            limit: Arc::new(Semaphore::new(p.max_connections.max(1))),
            max_connections: p.max_connections.max(1),
            drain: self.drain_tx.subscribe(),
        };
        let socket = p.listener.socket;
        runtime.spawn(async move {
            let _exited = exited_tx;
            match TcpListener::from_std(socket) {
                Ok(l) => acceptor.run(l, stop_rx).await,
                Err(e) => tracing::error!(listener = %acceptor.name, error = %e, "cannot register listener"),
            }
        });
    }
}

async fn accept(listener: &TcpListener) -> std::io::Result<(TcpStream, SocketAddr)> {
    let (tcp, peer) = listener.accept().await?;
    let _ = tcp.set_nodelay(true);
    Ok((tcp, peer))
}

/// A client connection as pingora's stream, with its socket digest set so
/// `client_addr()` works; `peer` is the client's address (as accept gave
/// it, or the client a PROXY protocol header named), else the socket's own
/// peer address is looked up when first asked for.
pub fn pingora_stream(tcp: TcpStream, peer: Option<SocketAddr>) -> L4Stream {
    let fd = tcp.as_raw_fd();
    let mut stream = L4Stream::from(tcp);
    let digest = SocketDigest::from_raw_fd(fd);
    if let Some(peer) = peer {
        let _ = digest
            .peer_addr
            .set(Some(pingora_core::protocols::l4::socket::SocketAddr::Inet(
                peer,
            )));
    }
    stream.set_socket_digest(digest);
    stream
}

struct Acceptor {
    name: String,
    handler: watch::Receiver<Arc<dyn ConnectionHandler>>,
    connections: Arc<ConnectionCount>,
    metrics: ListenerMetrics,
    limit: Arc<Semaphore>,
    max_connections: usize,
    drain: watch::Receiver<bool>,
}

impl Acceptor {
    async fn run(self, socket: TcpListener, mut stop: watch::Receiver<bool>) {
        let mut last_limit_log: Option<Instant> = None;
        loop {
            let permit = match self.limit.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    self.metrics.limit_hits.inc();
                    if last_limit_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(
                            listener = %self.name,
                            max_connections = self.max_connections,
                            "connection limit reached; new connections wait in the kernel backlog"
                        );
                        last_limit_log = Some(Instant::now());
                    }
                    tokio::select! {
                        p = self.limit.clone().acquire_owned() => match p {
                            Ok(p) => p,
                            Err(_) => return,
                        },
                        _ = stop.changed() => return,
                    }
                }
            };
            let accepted = tokio::select! {
                // Stopped is stopped, even with connections waiting.
                biased;
                _ = stop.changed() => return,
                a = accept(&socket) => a,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let guard = ConnectionGuard::new(&self.connections, &self.metrics);
                    let handler = self.handler.borrow().clone();
                    let shutdown = self.drain.clone();
                    // Spread connections over the service's runtimes (one
                    // per thread when work stealing is off).
                    pingora_runtime::current_handle().spawn(async move {
                        handler.serve(stream, peer, shutdown).await;
                        drop(guard);
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!(listener = %self.name, error = %e, "accept failed");
                    // Out of file descriptors: back off instead of spinning.
                    if e.raw_os_error() == Some(24) || e.raw_os_error() == Some(23) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    }
}

/// The pingora service hosting every listener's accept loop on its runtime.
pub struct ListenerService {
    name: String,
    threads: usize,
    control: Arc<ListenerControl>,
}

impl ListenerService {
    pub fn new(name: &str, threads: usize, control: Arc<ListenerControl>) -> Self {
        Self {
            name: name.to_string(),
            threads,
            control,
        }
    }
}

#[async_trait]
impl Service for ListenerService {
    async fn start_service(
        &mut self,
        _fds: Option<ListenFds>,
        mut shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
        self.control.started(tokio::runtime::Handle::current());
        // By the time pingora broadcasts shutdown, edge's signal watcher has
        // drained; this only makes sure nothing accepts any more.
        while shutdown.changed().await.is_ok() {
            if *shutdown.borrow() {
                break;
            }
        }
        let _ = self.control.drain(Duration::from_secs(0)).await;
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn threads(&self) -> Option<usize> {
        Some(self.threads)
    }
}
