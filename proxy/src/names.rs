//! Field names the request path sets or removes on every request, made
//! once: a name given as `&str` is parsed and validated on each use (about
//! 100–200 instructions, `benches/callgrind/instr.sh`), a `HeaderName`
//! constant is not.

use http::HeaderName;

pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
/// RFC 9211.
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
pub const SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
pub const SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// RFC 8586.
pub const CDN_LOOP: HeaderName = HeaderName::from_static("cdn-loop");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static(crate::request_id::HEADER);
/// W3C Trace Context.
pub const TRACEPARENT: HeaderName = HeaderName::from_static(crate::trace_context::TRACEPARENT);
pub const TRACESTATE: HeaderName = HeaderName::from_static(crate::trace_context::TRACESTATE);
pub const PREFILL: HeaderName = HeaderName::from_static(crate::site::PREFILL);
