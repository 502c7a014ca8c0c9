//! Running a node: the control runtime (admin API, SIGHUP reloads), pingora's
//! server hosting the listeners, and the signal handling that drains before
//! exit.
//!
//! | signal | effect |
//! |---|---|
//! | SIGHUP | re-read the config file and apply it |
//! | SIGTERM, SIGQUIT | mark not ready and answer with `Connection: close`, keep accepting for `server.shutdown_delay`, then stop accepting, let open connections finish (up to `server.grace_period`), exit |
//! | SIGINT (Ctrl-C) | the same without the shutdown delay and with at most 10 s of grace |
//! | a second SIGTERM/SIGINT while draining | exit at once |
//! | SIGUSR2 | binary upgrade: start the executable again, hand it the sockets, drain once it serves (see [`crate::upgrade`]) |
//!
//! Under systemd (`Type=notify`), `READY=1` is sent once serving,
//! `STOPPING=1` when draining, and a process started by an upgrade sends
//! `MAINPID` (the unit needs `NotifyAccess=all`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use edge_config::Config;
use edge_proxy::listen::ListenerService;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::runtime::{announce, Runtime};

/// pingora's server settings for a config.
pub fn server_conf(config: &Config) -> ServerConf {
    ServerConf {
        threads: config.server.threads,
        work_stealing: config.server.work_stealing,
        upstream_keepalive_pool_size: config.server.upstream_keepalive,
        // Draining is ours (see `SignalWatch`): pingora must not sleep on top of it.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..Default::default()
    }
}

/// A runtime for the control plane: admin API, reloads, health checks.
pub fn control_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("edge-control")
        .enable_all()
        .build()
        .context("starting the control runtime")
}

/// Applies `config`, starts the admin API and serves until a signal drains
/// the node.
pub fn run_node(
    config: Config,
    control: tokio::runtime::Runtime,
    inherited: crate::handover::Inherited,
) -> anyhow::Result<()> {
    run_node_with(config, control, inherited, |_, _, _| {})
}

/// As [`run_node`]; `on_ready` gets the first HTTP listener's, the admin
/// API's and the first DNS listener's bound addresses just before `ready`
/// is printed.
pub fn run_node_with(
    config: Config,
    control: tokio::runtime::Runtime,
    inherited: crate::handover::Inherited,
    on_ready: impl FnOnce(Option<SocketAddr>, SocketAddr, Option<SocketAddr>),
) -> anyhow::Result<()> {
    let conf = server_conf(&config);
    let threads = config.server.threads;
    let runtime = Runtime::new(Arc::new(server_conf(&config)), config.source.clone())
        .context("building the runtime")?;
    let upgraded = inherited.is_upgrade();
    runtime.inherit(inherited);

    let admin_addr = config.admin.listen;
    let admin = match runtime.take_inherited_admin(admin_addr) {
        Some(l) => Ok(l),
        None => std::net::TcpListener::bind(admin_addr),
    }
    .with_context(|| format!("admin API: cannot listen on {admin_addr}"))?;
    runtime.upgrader.set_admin(&admin);
    let admin = admin
        .set_nonblocking(true)
        .and_then(|()| {
            let _enter = control.enter();
            tokio::net::TcpListener::from_std(admin)
        })
        .with_context(|| format!("admin API: cannot listen on {admin_addr}"))?;
    let admin_bound: SocketAddr = admin.local_addr().unwrap_or(admin_addr);

    // Handlers go in before `ready` is printed: a signal's default action
    // (terminate) must never be what a SIGHUP or SIGTERM meets.
    let mut signals = control.block_on(async { Signals::install() });
    if let Err(e) = control.block_on(runtime.apply(config)) {
        anyhow::bail!("{e}");
    }
    announce("admin", "admin", admin_bound);
    control.spawn(crate::admin::serve(admin, runtime.clone()));
    control.spawn(reload_on_hangup(runtime.clone(), signals.hup));
    control.spawn(upgrade_on_usr2(runtime.clone(), signals.usr2));
    control.spawn(crate::digest::refresh_loop(runtime.clone()));
    let errors = runtime.clone();
    control.spawn(async move {
        loop {
            tokio::time::sleep(edge_proxy::errlog::INTERVAL).await;
            errors.proxy.errors.flush();
        }
    });

    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    server.add_service(ListenerService::new(
        "edge-listeners",
        threads,
        runtime.listeners.clone(),
    ));
    let first_http = runtime
        .config()
        .listeners
        .iter()
        .find(|l| l.kind.http().is_some())
        .map(|l| l.name.clone())
        .and_then(|name| {
            runtime
                .listeners
                .addresses()
                .into_iter()
                .find(|(n, _)| *n == name)
        })
        .map(|(_, addr)| addr);
    // A stop signal to a process an upgrade started, before it took over,
    // abandons the upgrade: it exits without saying ready, and the old
    // process serves on.
    if upgraded && control.block_on(async { signals.stop.pending() }) {
        anyhow::bail!(
            "a stop signal came before this process took over; the old process serves on"
        );
    }
    on_ready(first_http, admin_bound, runtime.dns.first_address());
    runtime.set_ready(true);
    {
        let _enter = control.enter();
        runtime.prefill.resume(&runtime);
    }
    crate::out::ready();
    runtime.started();
    let mut ready = vec![sd_notify::NotifyState::Ready];
    if upgraded {
        ready.push(sd_notify::NotifyState::MainPid(std::process::id()));
    }
    let _ = sd_notify::notify(false, &ready);
    tracing::info!(admin = %admin_bound, upgraded, "edge is ready");
    server.run(RunArgs {
        shutdown_signal: Box::new(SignalWatch {
            runtime: runtime.clone(),
            stop: tokio::sync::Mutex::new(signals.stop),
        }),
    });
    control.shutdown_timeout(Duration::from_secs(1));
    tracing::info!("edge stopped");
    Ok(())
}

/// Signal streams, created (and their handlers installed) up front.
struct Signals {
    hup: Option<Signal>,
    usr2: Option<Signal>,
    stop: StopSignals,
}

struct StopSignals {
    term: Option<Signal>,
    int: Option<Signal>,
    quit: Option<Signal>,
}

impl StopSignals {
    /// Whether a stop signal has come (and not yet been acted on).
    fn pending(&mut self) -> bool {
        use futures::FutureExt;
        [&mut self.term, &mut self.int, &mut self.quit]
            .into_iter()
            .flatten()
            .any(|s| s.recv().now_or_never().is_some())
    }
}

impl Signals {
    fn install() -> Self {
        Signals {
            hup: watch(SignalKind::hangup()),
            usr2: watch(SignalKind::user_defined2()),
            stop: StopSignals {
                term: watch(SignalKind::terminate()),
                int: watch(SignalKind::interrupt()),
                quit: watch(SignalKind::quit()),
            },
        }
    }
}

async fn reload_on_hangup(runtime: Arc<Runtime>, hup: Option<Signal>) {
    let Some(mut hup) = hup else {
        tracing::error!("cannot watch SIGHUP; reload through the admin API");
        return;
    };
    while hup.recv().await.is_some() {
        match runtime.reload().await {
            Ok(diff) => tracing::info!(changes = %diff, "config reloaded on SIGHUP"),
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP reload refused; the running config stays")
            }
        }
    }
}

async fn upgrade_on_usr2(runtime: Arc<Runtime>, usr2: Option<Signal>) {
    let Some(mut usr2) = usr2 else {
        tracing::error!("cannot watch SIGUSR2; upgrade through the admin API");
        return;
    };
    while usr2.recv().await.is_some() {
        match runtime.upgrader.upgrade(&runtime).await {
            Ok(pid) => tracing::info!(pid, "upgraded on SIGUSR2"),
            Err(e) => tracing::error!(error = %e, "SIGUSR2 upgrade"),
        }
    }
}

/// How long, after a new process took over, keep-alive clients of this one
/// have to get a response saying `Connection: close` before idle
/// connections are closed (a client that sends on a connection as it is
/// closed must retry; one that is told first need not).
const HANDOVER_LINGER: Duration = Duration::from_secs(1);

/// Waits for a stop signal, then drains: that is pingora's main loop.
struct SignalWatch {
    runtime: Arc<Runtime>,
    stop: tokio::sync::Mutex<StopSignals>,
}

fn watch(kind: SignalKind) -> Option<Signal> {
    signal(kind)
        .map_err(|e| tracing::error!(error = %e, "cannot watch a signal"))
        .ok()
}

async fn next(s: &mut Option<Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[async_trait]
impl ShutdownSignalWatch for SignalWatch {
    async fn recv(&self) -> ShutdownSignal {
        let mut guard = self.stop.lock().await;
        let StopSignals { term, int, quit } = &mut *guard;
        let name = tokio::select! {
            _ = next(term) => "SIGTERM",
            _ = next(int) => "SIGINT",
            _ = next(quit) => "SIGQUIT",
            _ = self.runtime.upgrader.handed_over() => "upgrade",
        };
        self.runtime.upgrader.end();
        self.runtime.set_ready(false);
        self.runtime.proxy.set_closing();
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        let server = self.runtime.config().server.clone();
        let mut grace = server.grace_period;
        if name == "upgrade" {
            // The new process accepts on the same sockets: stop at once,
            // and let busy keep-alive clients learn they must reconnect.
            self.runtime.listeners.stop_accepting();
            let open = self.runtime.listeners.open_connections();
            tracing::info!(open_connections = open, "handed over: no longer accepting");
            let linger = HANDOVER_LINGER.min(grace);
            let _ = tokio::time::timeout(linger, self.runtime.listeners.wait_idle()).await;
        } else if name == "SIGINT" {
            grace = grace.min(Duration::from_secs(10));
        } else if !server.shutdown_delay.is_zero() {
            // Load balancers see /ready at 503 and stop sending; meanwhile
            // new connections are still served (and told to close).
            tracing::info!(
                signal = name,
                delay = ?server.shutdown_delay,
                "shutting down: not ready, still accepting for the shutdown delay"
            );
            tokio::select! {
                _ = tokio::time::sleep(server.shutdown_delay) => {}
                _ = next(term) => tracing::warn!("second signal: no more delay"),
                _ = next(int) => tracing::warn!("second signal: no more delay"),
            }
        }
        tracing::info!(
            signal = name,
            open_connections = self.runtime.listeners.open_connections(),
            grace = ?grace,
            "draining: no new connections, open ones may finish"
        );
        self.runtime.dns.stop_serving().await;
        let handed_over = name == "upgrade";
        let drained = async {
            let (left, _, _) = tokio::join!(
                self.runtime.listeners.drain(grace),
                tokio::time::timeout(grace, self.runtime.dns.wait_idle()),
                // After a handover the admin API finishes too (the answer
                // to `POST /upgrade` must not die with this process).
                tokio::time::timeout(grace, async {
                    if handed_over {
                        self.runtime.upgrader.admin_drained().await;
                    }
                })
            );
            left
        };
        let left = tokio::select! {
            left = drained => left,
            _ = next(term) => { tracing::warn!("second signal: stopping now"); self.runtime.listeners.open_connections() }
            _ = next(int) => { tracing::warn!("second signal: stopping now"); self.runtime.listeners.open_connections() }
        };
        if left > 0 {
            tracing::warn!(
                open_connections = left,
                "grace period over; closing what is left"
            );
        } else {
            tracing::info!("drained");
        }
        ShutdownSignal::FastShutdown
    }
}
