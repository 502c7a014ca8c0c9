//! Error lines that an outage cannot turn into a flood: per-request errors
//! are counted by (pool, backend, kind) and logged once per key per
//! interval, with the count: the first of a kind at once, the rest as
//! "N more in the last 10 s". Exact figures are in the metrics
//! (`edge_upstream_errors_total`); the log says what and since when.
//!
//! Errors of the client's own (it went away, reset, sent garbage) are not
//! the node's problem: they are logged at debug level, never as errors.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How often a key may produce a line.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Keys counted at most; past this, new keys are counted under `other`.
const MAX_KEYS: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    pool: String,
    backend: String,
    kind: String,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    /// Errors since the last line about this key.
    unreported: u64,
    /// One example, for the summary line.
    example: String,
}

/// The per-node aggregator.
#[derive(Debug, Default)]
pub struct ErrorLog {
    windows: Mutex<HashMap<Key, Window>>,
}

/// What to log for one error, decided under the lock, logged outside it.
enum Line {
    First,
    Summary { more: u64, since: Duration },
    None,
}

impl ErrorLog {
    /// Counts one upstream error; logs a line when it is the first of its
    /// kind in an interval, or the first after a quiet one.
    pub fn upstream(&self, pool: &str, backend: &str, kind: &str, error: &str) {
        let now = Instant::now();
        let line = {
            let mut w = self.windows.lock();
            let mut key = Key {
                pool: pool.to_string(),
                backend: backend.to_string(),
                kind: kind.to_string(),
            };
            if !w.contains_key(&key) && w.len() >= MAX_KEYS {
                key.backend = "other".into();
            }
            match w.get_mut(&key) {
                None => {
                    w.insert(
                        key,
                        Window {
                            started: now,
                            unreported: 0,
                            example: error.to_string(),
                        },
                    );
                    Line::First
                }
                Some(win) if now.saturating_duration_since(win.started) >= INTERVAL => {
                    let more = win.unreported;
                    let since = now.saturating_duration_since(win.started);
                    win.started = now;
                    win.unreported = 0;
                    win.example = error.to_string();
                    if more == 0 {
                        Line::First
                    } else {
                        Line::Summary { more, since }
                    }
                }
                Some(win) => {
                    win.unreported += 1;
                    Line::None
                }
            }
        };
        match line {
            Line::First => {
                tracing::warn!(pool, backend, kind, %error, "upstream error (more like it are counted, not logged, for 10 s)");
            }
            Line::Summary { more, since } => {
                tracing::warn!(pool, backend, kind, %error, more, seconds = since.as_secs(), "upstream errors continue");
            }
            Line::None => {}
        }
    }

    /// Logs what was counted and not yet said, for windows that ended
    /// (called every [`INTERVAL`]); forgets keys that went quiet.
    pub fn flush(&self) {
        let now = Instant::now();
        let mut lines = Vec::new();
        {
            let mut w = self.windows.lock();
            w.retain(|key, win| {
                let age = now.saturating_duration_since(win.started);
                if age < INTERVAL {
                    return true;
                }
                if win.unreported > 0 {
                    lines.push((key.clone(), win.unreported, age, win.example.clone()));
                    win.unreported = 0;
                    win.started = now;
                    return true;
                }
                // A whole interval without an error: forget it.
                false
            });
        }
        for (key, more, since, example) in lines {
            tracing::warn!(
                pool = %key.pool,
                backend = %key.backend,
                kind = %key.kind,
                error = %example,
                more,
                seconds = since.as_secs(),
                "upstream errors continue"
            );
        }
    }

    #[cfg(test)]
    fn unreported(&self, pool: &str, backend: &str, kind: &str) -> Option<u64> {
        let key = Key {
            pool: pool.into(),
            backend: backend.into(),
            kind: kind.into(),
        };
        self.windows.lock().get(&key).map(|w| w.unreported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_one_line_and_a_count() {
        let log = ErrorLog::default();
        for _ in 0..1000 {
            log.upstream("p", "10.0.0.1:80", "connect_refused", "refused");
        }
        assert_eq!(
            log.unreported("p", "10.0.0.1:80", "connect_refused"),
            Some(999)
        );
        log.upstream("p", "10.0.0.2:80", "connect_refused", "refused");
        assert_eq!(
            log.unreported("p", "10.0.0.2:80", "connect_refused"),
            Some(0)
        );
        // Within the interval nothing is flushed.
        log.flush();
        assert_eq!(
            log.unreported("p", "10.0.0.1:80", "connect_refused"),
            Some(999)
        );
    }

    #[test]
    fn keys_are_bounded() {
        let log = ErrorLog::default();
        for i in 0..(MAX_KEYS + 100) {
            log.upstream("p", &format!("b{i}"), "k", "e");
        }
        assert!(log.windows.lock().len() <= MAX_KEYS + 1);
    }
}
