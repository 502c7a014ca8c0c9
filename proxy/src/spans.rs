//! Request spans for `server.otlp`: when the node exports traces, each
//! sampled request becomes one finished span (kind server), named and
//! described as OpenTelemetry's HTTP semantic conventions say
//! (`http.request.method`, `url.path`, `http.response.status_code`, …).
//! The request path only builds the span and hands it to a [`SpanSink`];
//! batching and OTLP encoding happen in the node (`app/src/otlp.rs`), off
//! the request path.

use std::sync::Arc;
use std::time::SystemTime;

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum SpanValue {
    Str(String),
    Int(i64),
}

/// One request, as exported.
#[derive(Debug, Clone)]
pub struct FinishedSpan {
    pub trace_id: [u8; 16],
    /// Edge's span: the `traceparent` parent id edge sent upstream.
    pub span_id: [u8; 8],
    /// The client's span, when the request carried a `traceparent`.
    pub parent_id: Option<[u8; 8]>,
    /// `METHOD route` (the route's name), or `METHOD` without a route.
    pub name: String,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, SpanValue)>,
    /// A 5xx answer, or no answer (OpenTelemetry: server spans are errors
    /// for 5xx only).
    pub error: Option<String>,
}

/// Where finished spans go. `record` must not block: it is called on the
/// request path.
pub trait SpanSink: Send + Sync + std::fmt::Debug {
    fn record(&self, span: FinishedSpan);
}

/// The running `server.otlp`: the sink, and the share of new traces sampled.
#[derive(Debug, Clone)]
pub struct Tracing {
    pub sink: Arc<dyn SpanSink>,
    pub sample_ratio: f64,
}
