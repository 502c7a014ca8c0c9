//! Binary upgrade without a lost connection, as nginx's SIGUSR2 and
//! HAProxy's seamless reload: the running process starts its executable
//! again (the file now at its path: the new binary) with the same
//! arguments, hands it every listening socket (see [`crate::handover`]),
//! and once the new process says it serves, stops accepting and drains.
//! Both accept on the same sockets meanwhile, so a connection is never
//! refused; the kernel's accept queue is shared, so none is lost.
//!
//! The disk cache tier can be open in one process only: the old process
//! stops using it (lookups miss to the origin or RAM, writes under way
//! finish) before starting the new one, which opens it and reads its index
//! back. If the new process fails (bad binary, bad config, not ready within
//! [`READY_TIMEOUT`]), it is stopped and the old one reopens the tier and
//! serves on as before.
//!
//! Triggers: `SIGUSR2`, `POST /upgrade` on the admin API, `edge upgrade`.

use std::ffi::OsString;
use std::io;
use std::net::TcpListener;
use std::os::linux::net::SocketAddrExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::handover::{self, Socket};
use crate::runtime::Runtime;

/// How long the new process may take to apply its config and serve.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long disk writes under way may take to end before the new process
/// starts (it then waits for the tier's lock itself).
const DISK_RELEASE_WAIT: Duration = Duration::from_secs(10);
/// How long the listeners may take to stop accepting after a handover.
const HANDOVER_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("an upgrade is already under way")]
    Busy,
    #[error("this process is shutting down or has handed over to a new one")]
    Over,
    #[error("an upgrade needs a node started with `edge run --config <file>`")]
    NoSource,
    #[error("the upgrade failed and this process serves on: {0}")]
    Failed(String),
    /// The config file the new process would read is refused; nothing started.
    #[error("upgrade refused, this process serves on: {0}")]
    Refused(String),
}

/// The upgrade state of this process.
pub struct Upgrader {
    /// The admin API's socket (another descriptor of it).
    admin: Mutex<Option<TcpListener>>,
    busy: AtomicBool,
    state: watch::Sender<Phase>,
    /// True once the admin API no longer accepts (after a handover).
    admin_released: Arc<watch::Sender<bool>>,
    /// True once the admin API has answered what it had (after a handover).
    admin_done: watch::Sender<bool>,
}

/// Where this process is in its life, as far as upgrades go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Serving,
    /// A new process serves in this one's place; this one drains.
    HandedOver,
    /// A stop signal came; no upgrades from here.
    ShuttingDown,
}

impl Default for Upgrader {
    fn default() -> Self {
        Self {
            admin: Mutex::new(None),
            busy: AtomicBool::new(false),
            state: watch::channel(Phase::Serving).0,
            admin_released: Arc::new(watch::channel(false).0),
            admin_done: watch::channel(false).0,
        }
    }
}

impl std::fmt::Debug for Upgrader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgrader")
            .field("busy", &self.busy.load(Ordering::Relaxed))
            .field("state", &*self.state.borrow())
            .finish()
    }
}

/// Clears `busy` unless the upgrade succeeded.
struct BusyGuard<'a> {
    busy: &'a AtomicBool,
    keep: bool,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        if !self.keep {
            self.busy.store(false, Ordering::Release);
        }
    }
}

impl Upgrader {
    /// Keeps a descriptor of the admin API's socket to hand over.
    pub fn set_admin(&self, admin: &TcpListener) {
        *self.admin.lock() = admin.try_clone().ok();
    }

    /// The admin API's listener: it stops accepting (and says so) the
    /// moment a new process takes over.
    pub fn admin_listener(&self, listener: tokio::net::TcpListener) -> AdminListener {
        AdminListener {
            inner: Some(listener),
            state: self.state.subscribe(),
            released: self.admin_released.clone(),
        }
    }

    /// The admin API has answered every request it had after a handover.
    pub fn admin_finished(&self) {
        self.admin_done.send_replace(true);
    }

    /// Returns once the admin API has answered every request it had (the
    /// `POST /upgrade` that started the handover among them).
    pub async fn admin_drained(&self) {
        if self.admin.lock().is_none() {
            return;
        }
        let mut rx = self.admin_done.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// Waits until a new process has taken over from this one.
    pub async fn handed_over(&self) {
        let mut rx = self.state.subscribe();
        let _ = rx.wait_for(|p| *p == Phase::HandedOver).await;
    }

    /// Returns once a stop signal has come (see [`Self::end`]).
    async fn stopping(&self) {
        let mut rx = self.state.subscribe();
        let _ = rx.wait_for(|p| *p == Phase::ShuttingDown).await;
    }

    /// No upgrades from here on (the node is shutting down); one under way
    /// whose new process does not serve yet is abandoned (that process is
    /// stopped), as a stop signal means stop.
    pub fn end(&self) {
        self.state.send_if_modified(|p| {
            let serving = *p == Phase::Serving;
            if serving {
                *p = Phase::ShuttingDown;
            }
            serving
        });
    }

    /// Starts the new binary, hands it the sockets and waits until it
    /// serves. Returns its process id; this process should then drain.
    pub async fn upgrade(&self, runtime: &Runtime) -> Result<u32, UpgradeError> {
        if *self.state.borrow() != Phase::Serving {
            return Err(UpgradeError::Over);
        }
        if self.busy.swap(true, Ordering::AcqRel) {
            return Err(UpgradeError::Busy);
        }
        let mut busy = BusyGuard {
            busy: &self.busy,
            keep: false,
        };
        if runtime.source().is_none() {
            return Err(UpgradeError::NoSource);
        }
        // No reload in between: the new process reads the file as it is.
        let _no_applies = runtime.hold_applies().await;
        // What a reload would refuse, an upgrade refuses too, before it
        // starts anything (and says why, which the new process could only
        // print to its own stderr).
        runtime.check_source().map_err(UpgradeError::Refused)?;
        let failed =
            |what: &str, e: &dyn std::fmt::Display| UpgradeError::Failed(format!("{what}: {e}"));
        let exe = executable().map_err(|e| failed("the executable", &e))?;
        let sockets = self.sockets(runtime);
        let name = format!(
            "edge-upgrade-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        );
        let listener = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .and_then(|a| std::os::unix::net::UnixListener::bind_addr(&a))
            .and_then(|l| {
                l.set_nonblocking(true)?;
                tokio::net::UnixListener::from_std(l)
            })
            .map_err(|e| failed("the handover socket", &e))?;

        let storage = runtime.proxy.cache().map(|c| c.storage);
        if let Some(storage) = storage {
            if !storage.release_disk(DISK_RELEASE_WAIT).await {
                tracing::warn!(
                    "disk writes still under way; the new process waits for the disk tier's lock"
                );
            }
        }
        tracing::info!(executable = %exe.to_string_lossy(), sockets = sockets.len(), "upgrade: starting the new process");
        let result = self.start(&exe, &name, listener, sockets).await;
        match result {
            Ok(pid) => {
                tracing::info!(pid, "upgrade: the new process serves; this one drains");
                busy.keep = true;
                // Even if a stop signal came meanwhile: the new process
                // serves now, and this one drains either way.
                self.state.send_replace(Phase::HandedOver);
                // Before answering: from here a new connection, to the
                // admin API as to any listener, meets the new process.
                let stopped = async {
                    runtime.listeners.stop_accepting_and_wait().await;
                    runtime.dns.stop_serving().await;
                    if self.admin.lock().is_some() {
                        let mut released = self.admin_released.subscribe();
                        let _ = released.wait_for(|r| *r).await;
                    }
                };
                if tokio::time::timeout(HANDOVER_WAIT, stopped).await.is_err() {
                    tracing::warn!("upgrade: a listener was slow to stop accepting");
                }
                Ok(pid)
            }
            Err(why) => {
                tracing::error!(error = %why, "upgrade failed; this process serves on");
                if let Some(storage) = storage {
                    let reopened = tokio::task::spawn_blocking(move || storage.reopen_disk()).await;
                    match reopened {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::error!(error = %e, "cannot reopen the disk cache; serving without it")
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "cannot reopen the disk cache; serving without it")
                        }
                    }
                }
                Err(UpgradeError::Failed(why))
            }
        }
    }

    /// Every listening socket, named: HTTP, HTTPS and TCP listeners, `dns`
    /// listeners (TCP and UDP), the admin API.
    fn sockets(&self, runtime: &Runtime) -> Vec<(String, Socket)> {
        let mut out: Vec<(String, Socket)> = runtime
            .listeners
            .sockets()
            .into_iter()
            .map(|(n, s)| (n, Socket::Tcp(s)))
            .collect();
        out.extend(runtime.dns.sockets());
        if let Some(admin) = self.admin.lock().as_ref().and_then(|a| a.try_clone().ok()) {
            out.push((handover::ADMIN.to_string(), Socket::Tcp(admin)));
        }
        out
    }

    /// Spawns the new process and does the handover; its pid once it serves.
    async fn start(
        &self,
        exe: &OsString,
        name: &str,
        listener: tokio::net::UnixListener,
        sockets: Vec<(String, Socket)>,
    ) -> Result<u32, String> {
        let mut child = tokio::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env(handover::ENV, name)
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES")
            .stdin(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.to_string_lossy()))?;
        let pid = child.id().unwrap_or(0);
        let exchange = async {
            let stream = accept_from(&listener, pid).await?;
            let stream = stream.into_std().map_err(|e| e.to_string())?;
            tokio::task::spawn_blocking(move || -> Result<bool, String> {
                stream.set_nonblocking(false).map_err(|e| e.to_string())?;
                stream
                    .set_write_timeout(Some(handover::EXCHANGE_TIMEOUT))
                    .map_err(|e| e.to_string())?;
                handover::send(&stream, &sockets)
                    .map_err(|e| format!("handing over the sockets: {e}"))?;
                drop(sockets);
                stream
                    .set_read_timeout(Some(READY_TIMEOUT))
                    .map_err(|e| e.to_string())?;
                handover::wait_ready(&stream)
                    .map_err(|e| format!("waiting for the new process: {e}"))
            })
            .await
            .map_err(|e| e.to_string())?
        };
        let outcome = tokio::select! {
            r = exchange => r,
            status = child.wait() => Err(match status {
                Ok(s) => format!("the new process exited ({s}) before taking over"),
                Err(e) => format!("the new process: {e}"),
            }),
            _ = tokio::time::sleep(READY_TIMEOUT + handover::EXCHANGE_TIMEOUT) => Err("the new process did not get ready in time".to_string()),
            () = self.stopping() => Err("a stop signal came before the new process served; upgrade abandoned".to_string()),
        };
        match outcome {
            Ok(true) => Ok(pid),
            Ok(false) => {
                let status = child.wait().await;
                Err(match status {
                    Ok(s) => format!("the new process exited ({s}) without serving"),
                    Err(e) => format!("the new process: {e}"),
                })
            }
            Err(why) => {
                // It may be stuck: it is ours to stop.
                let _ = child.start_kill();
                let _ = child.wait().await;
                Err(why)
            }
        }
    }
}

/// The admin API's socket, as axum serves it; see [`Upgrader::admin_listener`].
pub struct AdminListener {
    inner: Option<tokio::net::TcpListener>,
    state: watch::Receiver<Phase>,
    released: Arc<watch::Sender<bool>>,
}

impl Drop for AdminListener {
    fn drop(&mut self) {
        self.released.send_replace(true);
    }
}

impl axum::serve::Listener for AdminListener {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Some(listener) = &self.inner else {
                return std::future::pending().await;
            };
            let state = &mut self.state;
            let handed_over = async move {
                let _ = state.wait_for(|p| *p == Phase::HandedOver).await.is_ok();
            };
            let accepted = tokio::select! {
                biased;
                () = handed_over => None,
                accepted = listener.accept() => Some(accepted),
            };
            match accepted {
                // The new process has the socket; this one lets go.
                None => {
                    self.inner = None;
                    self.released.send_replace(true);
                }
                Some(Ok(a)) => return a,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "admin API: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        match &self.inner {
            Some(l) => l.local_addr(),
            None => Err(io::Error::other("handed over")),
        }
    }
}

/// Accepts the handover connection of process `pid` (others are dropped).
async fn accept_from(
    listener: &tokio::net::UnixListener,
    pid: u32,
) -> Result<tokio::net::UnixStream, String> {
    let deadline = tokio::time::Instant::now() + handover::EXCHANGE_TIMEOUT;
    loop {
        let (stream, _) = tokio::time::timeout_at(deadline, listener.accept())
            .await
            .map_err(|_| "the new process did not connect in time".to_string())?
            .map_err(|e| format!("handover socket: {e}"))?;
        let peer = stream.peer_cred().ok().and_then(|c| c.pid());
        if peer.is_some_and(|p| i64::from(p) == i64::from(pid)) {
            return Ok(stream);
        }
        tracing::warn!(peer = ?peer, "upgrade: a connection to the handover socket from another process; dropped");
    }
}

/// The executable to start: the file at this process's path now (a
/// replaced file shows as "<path> (deleted)").
fn executable() -> io::Result<OsString> {
    let exe = std::env::current_exe()?.into_os_string();
    let bytes = exe.as_encoded_bytes();
    let path = match bytes.strip_suffix(b" (deleted)") {
        Some(p) => std::path::PathBuf::from(String::from_utf8_lossy(p).into_owned()),
        None => std::path::PathBuf::from(&exe),
    };
    if !path.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} is not a file", path.display()),
        ));
    }
    Ok(path.into_os_string())
}
