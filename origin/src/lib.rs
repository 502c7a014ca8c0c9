//! A synthetic media origin, for load-testing and checking a CDN.
//!
//! It serves VOD and live HLS (and a DASH manifest for the same titles) whose
//! segments are real, playable MPEG-TS with deterministic bytes: any byte is a
//! function of title, rendition, segment index and offset, so a cache in front
//! can be checked byte for byte without storing anything ([`Catalog::resolve`]
//! gives the expected body). It honours `Range`, `If-Range`, `If-None-Match`
//! and `If-Modified-Since`, sends the `Cache-Control` a packager would, injects
//! faults on demand ([`Faults`]) and counts requests and bytes by path class at
//! `/_origin/stats`.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! let origin = edge_origin::Origin::new(edge_origin::OriginConfig::default());
//! let running = origin.spawn("127.0.0.1:0".parse().unwrap()).await?;
//! println!("origin on http://{}/vod/bbb/master.m3u8", running.addr());
//! # Ok(()) }
//! ```

mod catalog;
mod clock;
mod content;
mod faults;
mod h264;
mod http;
pub mod llhls;
mod playlist;
mod range;
mod stats;
mod ts;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use catalog::{
    decode_component, query_param, Catalog, Class, LiveChannel, NotFound, Rendition, Resolved,
    VodTitle,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use content::{fill_random, fnv1a, object_bytes, splitmix64, Content};
pub use faults::{Drip, Faults};
pub use h264::{Picture, CODECS};
pub use range::{parse_range, RangeRequest};
pub use stats::{ClassCount, StatsSnapshot};
pub use ts::{Segment, SegmentSpec, FPS, PACKET};

/// How the origin is set up.
#[derive(Clone)]
pub struct OriginConfig {
    /// Sent in `X-Origin-Name`, to tell backends apart.
    pub name: String,
    pub catalog: Catalog,
    /// Faults applied to every content request.
    pub faults: Faults,
    pub clock: Arc<dyn Clock>,
}

impl Default for OriginConfig {
    fn default() -> Self {
        Self {
            name: "origin".to_string(),
            catalog: Catalog::default(),
            faults: Faults::default(),
            clock: Arc::new(SystemClock),
        }
    }
}

/// The origin server (not yet listening).
pub struct Origin {
    state: Arc<http::State>,
}

impl Origin {
    pub fn new(config: OriginConfig) -> Self {
        let OriginConfig {
            name,
            catalog,
            faults,
            clock,
        } = config;
        Self {
            state: Arc::new(http::new_state(name, catalog, faults, clock)),
        }
    }

    /// Binds `addr` and serves on the current runtime until the returned
    /// handle is dropped or shut down.
    pub async fn spawn(self, addr: SocketAddr) -> std::io::Result<RunningOrigin> {
        let listener = TcpListener::bind(addr).await?;
        Ok(self.spawn_on(listener))
    }

    /// Serves on an already bound listener.
    pub fn spawn_on(self, listener: TcpListener) -> RunningOrigin {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (stop_tx, stop_rx) = watch::channel(false);
        let state = self.state.clone();
        let task = tokio::spawn(serve(state.clone(), listener, stop_rx));
        RunningOrigin {
            addr,
            state,
            stop: stop_tx,
            task: Some(task),
        }
    }
}

async fn serve(state: Arc<http::State>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => break,
        };
        let (stream, _) = match accepted {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "origin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let service = hyper::service::service_fn(move |req| http::handle(state.clone(), req));
        let conn = auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "origin connection ended with an error");
            }
        });
    }
    // In-flight responses get a moment to finish.
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}

/// A running origin. Dropping it stops it.
pub struct RunningOrigin {
    addr: SocketAddr,
    state: Arc<http::State>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningOrigin {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.state.stats.snapshot(&self.state.name)
    }

    pub fn reset_stats(&self) {
        self.state.stats.reset();
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.state.faults.write() = faults;
    }

    pub fn set_health_status(&self, status: u16) {
        self.state
            .health_status
            .store(status, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn set_load(&self, load: Option<u8>) {
        self.state.load.store(
            load.map_or(-1, i32::from),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    pub fn catalog(&self) -> &Catalog {
        &self.state.catalog
    }

    /// The body the origin serves for `path?query` now (for byte-for-byte checks).
    pub fn expected_body(&self, path_and_query: &str) -> Option<bytes::Bytes> {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        self.state
            .catalog
            .resolve(path, query, self.state.clock.now())
            .ok()
            .map(|r| r.content.to_bytes())
    }

    /// [`expected_body`](Self::expected_body) for a request carrying
    /// `headers` (lower-case names), for objects that vary.
    pub fn expected_body_with(
        &self,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> Option<bytes::Bytes> {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let mut r = self
            .state
            .catalog
            .resolve(path, query, self.state.clock.now())
            .ok()?;
        r.vary_by(|name| headers.iter().find(|(k, _)| *k == name).map(|(_, v)| *v));
        Some(r.content.to_bytes())
    }

    /// Stops accepting and waits (up to 5 s) for in-flight responses.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningOrigin {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
