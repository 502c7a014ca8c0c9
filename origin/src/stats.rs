//! Request and byte counters by path class, served as JSON at `/_origin/stats`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::Serialize;

use crate::catalog::Class;

/// Paths counted one by one before the rest go under `"(other paths)"`.
const MAX_PATHS: usize = 100_000;

#[derive(Debug, Default)]
pub struct Stats {
    requests: AtomicU64,
    bytes: AtomicU64,
    in_flight: AtomicI64,
    maps: Mutex<Maps>,
}

#[derive(Debug, Default)]
struct Maps {
    by_class: BTreeMap<&'static str, ClassCount>,
    by_status: BTreeMap<u16, u64>,
    by_path: HashMap<String, u64>,
}

#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct ClassCount {
    pub requests: u64,
    pub bytes: u64,
}

/// A copy of the counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatsSnapshot {
    pub name: String,
    /// Content requests (control endpoints such as health checks excluded).
    pub requests: u64,
    /// Body bytes sent for content requests.
    pub bytes: u64,
    pub in_flight: i64,
    pub by_class: BTreeMap<&'static str, ClassCount>,
    pub by_status: BTreeMap<u16, u64>,
    pub by_path: BTreeMap<String, u64>,
}

impl StatsSnapshot {
    pub fn class(&self, class: Class) -> ClassCount {
        self.by_class.get(class.name()).copied().unwrap_or_default()
    }

    pub fn path(&self, path: &str) -> u64 {
        self.by_path.get(path).copied().unwrap_or(0)
    }
}

impl Stats {
    /// Counts a request as it starts (before any fault is applied).
    pub fn request(&self, class: Class, path: &str) {
        let mut maps = self.maps.lock();
        maps.by_class.entry(class.name()).or_default().requests += 1;
        if class == Class::Control {
            return;
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let n = maps.by_path.len();
        match maps.by_path.get_mut(path) {
            Some(count) => *count += 1,
            None if n < MAX_PATHS => {
                maps.by_path.insert(path.to_string(), 1);
            }
            None => *maps.by_path.entry("(other paths)".into()).or_default() += 1,
        }
    }

    pub fn status(&self, class: Class, status: u16) {
        if class != Class::Control {
            *self.maps.lock().by_status.entry(status).or_default() += 1;
        }
    }

    pub fn body_bytes(&self, class: Class, n: u64) {
        if class != Class::Control {
            self.bytes.fetch_add(n, Ordering::Relaxed);
        }
        self.maps
            .lock()
            .by_class
            .entry(class.name())
            .or_default()
            .bytes += n;
    }

    pub fn enter(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn exit(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self, name: &str) -> StatsSnapshot {
        let maps = self.maps.lock();
        StatsSnapshot {
            name: name.to_string(),
            requests: self.requests.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            by_class: maps.by_class.clone(),
            by_status: maps.by_status.clone(),
            by_path: maps.by_path.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        }
    }

    pub fn reset(&self) {
        self.requests.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
        *self.maps.lock() = Maps::default();
    }
}
