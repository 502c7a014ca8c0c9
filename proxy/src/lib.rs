//! edge's request path, on pingora.
//!
//! - [`listen`]: sockets edge binds itself, accept loops on pingora's runtime,
//!   TLS by SNI, listeners added and removed at run time, drain.
//! - [`route`]: the route table, compiled per config.
//! - [`pool`]: backends and their selection.
//! - [`caching`]: the cache on the request path: keys, policy, `X-Cache`,
//!   slices and prefetch (storage itself is the `edge-cache` crate).
//! - [`service`]: the `ProxyHttp` implementation whose phases call into them.
//! - [`state`]: the hot state ([`Proxy`]), built aside and swapped on reload.
//!
//! `edge` (the binary) builds a [`Proxy`] and a [`listen::ListenerControl`],
//! adds one [`listen::HttpHandler`] per HTTP listener and hands the
//! [`listen::ListenerService`] to a pingora `Server`.

pub mod caching;
pub mod collector;
pub(crate) mod decorate;
pub mod errlog;
pub mod error;
pub mod guard;
pub mod hop;
pub mod listen;
pub mod load;
pub mod metrics;
pub mod names;
pub mod normalize;
pub mod plan;
pub mod pool;
pub mod ratelimit;
pub mod request_id;
pub mod route;
pub mod service;
pub mod site;
pub mod spans;
pub mod state;
pub mod steer;
pub mod tcp;
mod to_client;
pub mod trace_context;
mod upstream_tls;
pub mod video;

pub use error::BuildError;
pub use service::EdgeProxy;
pub use state::{Proxy, ProxyState};
