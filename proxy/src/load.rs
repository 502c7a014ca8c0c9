//! What a node is serving now, for steering (`GET /site/state`): response
//! bytes and requests counted as requests end, turned into rates between
//! readings (at most one new reading a second; the first reading is 0),
//! and the process's CPU use from `/proc/self/stat` (Linux).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use serde::Serialize;

/// Rates between the last two readings.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Rates {
    pub egress_bits_per_second: f64,
    pub requests_per_second: f64,
    /// CPU time per second of wall time (1.0: one core busy); `None` off Linux.
    pub cpu_cores: Option<f64>,
}

struct Sample {
    at: Instant,
    bytes: u64,
    requests: u64,
    cpu_seconds: Option<f64>,
}

/// Counters and the last rates.
#[derive(Default)]
pub struct Load {
    bytes: AtomicU64,
    requests: AtomicU64,
    last: Mutex<Option<(Sample, Rates)>>,
}

/// Seconds of CPU the process used (user + system), from `/proc/self/stat`.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // The kernel's USER_HZ is 100 on every Linux architecture edge builds for.
    Some((utime + stime) / 100.0)
}

impl Load {
    /// One request ended, with `bytes` of response body.
    pub fn count(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// The rates since the previous reading (kept for a second, so that
    /// several readers close together see the same figures).
    pub fn rates(&self) -> Rates {
        let now = Instant::now();
        let sample = Sample {
            at: now,
            bytes: self.bytes.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            cpu_seconds: cpu_seconds(),
        };
        let mut last = self.last.lock();
        match last.as_ref() {
            Some((prev, rates)) if now.duration_since(prev.at).as_secs_f64() < 1.0 => *rates,
            Some((prev, _)) => {
                let dt = now.duration_since(prev.at).as_secs_f64();
                let rates = Rates {
                    egress_bits_per_second: (sample.bytes.saturating_sub(prev.bytes) as f64) * 8.0
                        / dt,
                    requests_per_second: sample.requests.saturating_sub(prev.requests) as f64 / dt,
                    cpu_cores: match (sample.cpu_seconds, prev.cpu_seconds) {
                        (Some(a), Some(b)) => Some(((a - b) / dt).max(0.0)),
                        _ => None,
                    },
                };
                *last = Some((sample, rates));
                rates
            }
            None => {
                let rates = Rates::default();
                *last = Some((sample, rates));
                rates
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reading_is_zero_and_counts_wait_for_the_next() {
        let l = Load::default();
        assert_eq!(l.rates().requests_per_second, 0.0);
        l.count(1000);
        // Within the second: the same figures.
        assert_eq!(l.rates().egress_bits_per_second, 0.0);
        #[cfg(target_os = "linux")]
        assert!(cpu_seconds().is_some_and(|s| s >= 0.0));
    }
}
