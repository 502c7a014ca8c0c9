//! `server.otlp`: the spans the request path finishes (`edge_proxy::spans`)
//! are batched here and sent to a collector as OTLP/HTTP protobuf by
//! `opentelemetry-otlp` (hyper with rustls, so `https` endpoints work).
//! A batch goes out at 512 spans or every second; 4,096 spans wait at most,
//! more are dropped and counted (a slow collector never slows requests).
//! `edge_otlp_spans_total{result="exported"|"failed"|"dropped"}` counts them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_config::Otlp;
use edge_proxy::spans::{FinishedSpan, SpanSink, SpanValue, Tracing};
use edge_proxy::state::Proxy;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use parking_lot::Mutex;
use prometheus::{IntCounterVec, Opts, Registry};
use tokio::sync::mpsc;

/// Spans waiting to be sent, at most.
const QUEUE: usize = 4096;
/// Spans per export, at most.
const BATCH: usize = 512;
/// How long a span waits for its batch, at most.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// The running `server.otlp`, replaced when its settings change.
pub struct OtlpExport {
    running: Mutex<Option<Otlp>>,
    spans: IntCounterVec,
}

impl OtlpExport {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let spans = IntCounterVec::new(
            Opts::new(
                "edge_otlp_spans_total",
                "Request spans for server.otlp by result (exported, failed, dropped)",
            ),
            &["result"],
        )?;
        registry.register(Box::new(spans.clone()))?;
        Ok(Self {
            running: Mutex::new(None),
            spans,
        })
    }

    /// What applying `config` changes: unchanged settings keep the running
    /// exporter; new ones build another; none stops exporting.
    ///
    /// Errors: the exporter cannot be built (the message says why).
    pub fn prepare(&self, config: Option<&Otlp>) -> Result<Change, String> {
        if self.running.lock().as_ref() == config {
            return Ok(Change::Keep);
        }
        Ok(match config {
            None => Change::Stop,
            Some(c) => Change::Start(c.clone(), Box::new(exporter(c)?)),
        })
    }

    /// Makes a prepared change (the old exporter sends what it holds and
    /// stops once no request holds its queue).
    pub fn commit(&self, change: Change, proxy: &Proxy) {
        let mut running = self.running.lock();
        match change {
            Change::Keep => {}
            Change::Stop => {
                proxy.set_tracing(None);
                *running = None;
            }
            Change::Start(config, exporter) => {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(send(
                    rx,
                    *exporter,
                    self.spans.clone(),
                    config.endpoint_shown(),
                ));
                proxy.set_tracing(Some(Tracing {
                    sink: Arc::new(Queue {
                        tx,
                        dropped: self.spans.with_label_values(&["dropped"]),
                    }),
                    sample_ratio: config.sample_ratio,
                }));
                *running = Some(config);
            }
        }
    }
}

/// What one apply does to the export.
pub enum Change {
    Keep,
    Stop,
    Start(Otlp, Box<opentelemetry_otlp::SpanExporter>),
}

/// The request path's end of the queue.
#[derive(Debug)]
struct Queue {
    tx: mpsc::Sender<FinishedSpan>,
    dropped: prometheus::IntCounter,
}

impl SpanSink for Queue {
    fn record(&self, span: FinishedSpan) {
        if self.tx.try_send(span).is_err() {
            self.dropped.inc();
        }
    }
}

fn exporter(config: &Otlp) -> Result<opentelemetry_otlp::SpanExporter, String> {
    // The system's roots, if it has any (a minimal image may not: an http
    // endpoint needs none), and `ca`.
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().unwrap_or_default() {
        let _ = roots.add(cert);
    }
    if let Some(ca) = &config.ca {
        let pem = std::fs::read(ca).map_err(|e| format!("server.otlp.ca {}: {e}", ca.display()))?;
        let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("server.otlp.ca {}: not PEM: {e}", ca.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "server.otlp.ca {}: no CERTIFICATE in the file",
                ca.display()
            ));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("server.otlp.ca {}: {e}", ca.display()))?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("server.otlp: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    let client = opentelemetry_http::hyper::HyperClient::new(connector, config.timeout, None);
    let headers: HashMap<String, String> = config
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.expose().to_string()))
        .collect();
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(config.endpoint.clone())
        .with_timeout(config.timeout)
        .with_headers(headers)
        .build()
        .map_err(|e| format!("server.otlp: {e}"))?;
    exporter.set_resource(
        &opentelemetry_sdk::Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build(),
    );
    Ok(exporter)
}

/// Sends batches until the queue's sender is gone, then what is left.
async fn send(
    mut rx: mpsc::Receiver<FinishedSpan>,
    exporter: opentelemetry_otlp::SpanExporter,
    counts: IntCounterVec,
    endpoint: String,
) {
    let scope = InstrumentationScope::builder("edge")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let mut batch: Vec<SpanData> = Vec::new();
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    let mut last_warning: Option<Instant> = None;
    loop {
        let open = tokio::select! {
            got = rx.recv() => match got {
                Some(span) => {
                    batch.push(span_data(span, &scope));
                    if batch.len() < BATCH {
                        continue;
                    }
                    true
                }
                None => false,
            },
            _ = tick.tick() => true,
        };
        if !batch.is_empty() {
            let n = batch.len() as u64;
            match exporter.export(std::mem::take(&mut batch)).await {
                Ok(()) => counts.with_label_values(&["exported"]).inc_by(n),
                Err(e) => {
                    counts.with_label_values(&["failed"]).inc_by(n);
                    // One line a minute, not one per batch.
                    if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                        last_warning = Some(Instant::now());
                        tracing::warn!(endpoint, spans = n, "OTLP export failed: {e}");
                    }
                }
            }
        }
        if !open {
            return;
        }
    }
}

/// A finished request as the SDK's span record.
fn span_data(span: FinishedSpan, scope: &InstrumentationScope) -> SpanData {
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(span.trace_id),
            SpanId::from_bytes(span.span_id),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: span.parent_id.map_or(SpanId::INVALID, SpanId::from_bytes),
        parent_span_is_remote: span.parent_id.is_some(),
        span_kind: SpanKind::Server,
        name: span.name.into(),
        start_time: span.start,
        end_time: span.end,
        attributes: span
            .attributes
            .into_iter()
            .map(|(k, v)| match v {
                SpanValue::Str(s) => KeyValue::new(k, s),
                SpanValue::Int(i) => KeyValue::new(k, i),
            })
            .collect(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: match span.error {
            Some(why) => Status::error(why),
            None => Status::Unset,
        },
        instrumentation_scope: scope.clone(),
    }
}
