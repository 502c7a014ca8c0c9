//! The last [`KEEP`] notable log events, for the dashboard and
//! `GET /events`: every warning and error, and what edge itself says at
//! `info` (reloads, admin actions, health changes, drains), not the access
//! log. A `tracing` layer beside the log writer fills it, so what the page
//! shows is what the log says.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use parking_lot::Mutex;
use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// How many events are kept (the oldest go first).
pub const KEEP: usize = 200;

/// One kept event.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Kept {
    /// Increases by one per event kept since the process started.
    pub seq: u64,
    /// Seconds since the Unix epoch, with milliseconds.
    pub time: f64,
    /// `ERROR`, `WARN` or `INFO`.
    pub level: &'static str,
    /// The module that logged it, as in the log line.
    pub target: String,
    pub message: String,
    /// The event's other fields, `key=value` separated by spaces.
    pub fields: String,
}

struct Ring {
    events: Mutex<VecDeque<Kept>>,
    next: AtomicU64,
}

fn ring() -> &'static Ring {
    static RING: OnceLock<Ring> = OnceLock::new();
    RING.get_or_init(|| Ring {
        events: Mutex::new(VecDeque::with_capacity(KEEP)),
        next: AtomicU64::new(1),
    })
}

/// The kept events with `seq` above `after`, oldest first.
pub fn since(after: u64) -> Vec<Kept> {
    ring()
        .events
        .lock()
        .iter()
        .filter(|e| e.seq > after)
        .cloned()
        .collect()
}

/// Whether an event is worth keeping: warnings and errors from anywhere;
/// `info` from edge's own crates, except the access and connection logs.
fn keeps(level: &Level, target: &str) -> bool {
    if *level <= Level::WARN {
        return true;
    }
    *level == Level::INFO && target.starts_with("edge") && !target.starts_with("access")
}

/// The layer that keeps events; add it beside the log writer.
pub struct Recorder;

impl<S: Subscriber> Layer<S> for Recorder {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if !keeps(meta.level(), meta.target()) {
            return;
        }
        let mut visitor = Fields::default();
        event.record(&mut visitor);
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| (d.as_millis() as f64) / 1000.0);
        record(Kept {
            seq: 0,
            time,
            level: level_name(meta.level()),
            target: meta.target().to_string(),
            message: visitor.message,
            fields: visitor.fields,
        });
    }
}

fn record(mut event: Kept) {
    let ring = ring();
    let mut events = ring.events.lock();
    event.seq = ring.next.fetch_add(1, Ordering::Relaxed);
    if events.len() == KEEP {
        events.pop_front();
    }
    events.push_back(event);
}

fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN",
        Level::INFO => "INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

/// Longest value kept per field, in bytes: an event is a line, not a dump.
const FIELD_MAX: usize = 512;

#[derive(Default)]
struct Fields {
    message: String,
    fields: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.add(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.add(field, &format!("{value:?}"));
    }
}

impl Fields {
    fn add(&mut self, field: &Field, value: &str) {
        let value = cut(value, FIELD_MAX);
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            if !self.fields.is_empty() {
                self.fields.push(' ');
            }
            if value.is_empty() || value.contains(char::is_whitespace) {
                let _ = write!(self.fields, "{}={:?}", field.name(), value);
            } else {
                let _ = write!(self.fields, "{}={}", field.name(), value);
            }
        }
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn keeps_warnings_and_edges_own_info_but_not_the_access_log() {
        let subscriber = tracing_subscriber::registry().with(Recorder);
        let before = ring().next.load(Ordering::Relaxed) - 1;
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "edge::runtime", changes = "1 route", "config reloaded");
            tracing::info!(target: "access", status = 200, "GET /");
            tracing::info!(target: "hyper::proto", "chatter");
            tracing::debug!(target: "edge::runtime", "detail");
            tracing::warn!(target: "pingora_core::x", error = %"refused", "upstream");
            tracing::error!(target: "edge_proxy::pool", "{}", "é".repeat(400));
        });
        let kept: Vec<_> = since(before)
            .into_iter()
            .filter(|e| e.target != "edge::t")
            .collect();
        let ours: Vec<_> = kept.iter().map(|e| (e.level, e.target.as_str())).collect();
        assert_eq!(
            ours,
            [
                ("INFO", "edge::runtime"),
                ("WARN", "pingora_core::x"),
                ("ERROR", "edge_proxy::pool")
            ]
        );
        assert_eq!(kept[0].message, "config reloaded");
        assert_eq!(kept[0].fields, "changes=\"1 route\"");
        assert_eq!(kept[1].fields, "error=refused");
        assert!(kept[2].message.len() <= FIELD_MAX && kept[2].message.starts_with('é'));
        assert!(kept.windows(2).all(|w| w[0].seq < w[1].seq));
    }

    #[test]
    fn the_ring_keeps_the_newest() {
        for i in 0..KEEP + 10 {
            record(Kept {
                seq: 0,
                time: 0.0,
                level: "INFO",
                target: "edge::t".into(),
                message: format!("n{i}"),
                fields: String::new(),
            });
        }
        let all = since(0);
        assert_eq!(all.len(), KEEP);
        let last = all.iter().rev().find(|e| e.target == "edge::t");
        assert_eq!(
            last.map(|e| e.message.clone()),
            Some(format!("n{}", KEEP + 9))
        );
    }
}
