//! Response rate limiting, as BIND and dnsdist do it: identical responses
//! to one client prefix beyond `responses_per_second` are dropped, or every
//! `slip`-th of them is answered truncated (so a real client retries over
//! TCP while a spoofed-source flood gets nothing to amplify). Responses are
//! "identical" when they have the same name, type and result; NXDOMAIN and
//! errors are counted per zone, so random names do not escape the limit.
//!
//! Accounts live in a sharded table of token buckets; stale accounts are
//! swept when a shard grows past its share of `MAX_ACCOUNTS`.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::time::Instant;

use edge_config::Rrl;
use ipnet::IpNet;
use parking_lot::Mutex;

const SHARDS: usize = 16;
/// Accounts kept at most (spread over the shards).
const MAX_ACCOUNTS: usize = 256 * 1024;

/// What to do with a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// Send an empty, truncated answer instead.
    Slip,
    Drop,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: f64,
    limited: u32,
}

/// The response rate limiter of one config generation.
#[derive(Debug)]
pub struct Limiter {
    rate: f64,
    burst: f64,
    window: f64,
    slip: u32,
    v4_prefix: u8,
    v6_prefix: u8,
    exempt: Vec<IpNet>,
    pub log_only: bool,
    start: Instant,
    shards: Vec<Mutex<HashMap<u64, Bucket>>>,
}

/// What makes two responses "the same".
#[derive(Debug, Clone, Copy, Hash)]
pub struct ResponseClass {
    /// Hash of the query name, or of the zone for NXDOMAIN and errors.
    pub name: u64,
    pub qtype: u16,
    /// 0 answer, 1 NODATA, 2 NXDOMAIN, 3 error.
    pub kind: u8,
}

impl Limiter {
    pub fn new(cfg: &Rrl) -> Limiter {
        let rate = f64::from(cfg.responses_per_second.max(1));
        Limiter {
            rate,
            // One second's worth may come at once.
            burst: rate,
            window: cfg.window.as_secs_f64().max(1.0),
            slip: cfg.slip,
            v4_prefix: cfg.ipv4_prefix.min(32),
            v6_prefix: cfg.ipv6_prefix.min(128),
            exempt: cfg.exempt.clone(),
            log_only: cfg.log_only,
            start: Instant::now(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn client_prefix(&self, addr: IpAddr) -> u128 {
        match addr {
            IpAddr::V4(a) => {
                let bits = u32::from(a);
                let masked = if self.v4_prefix == 0 {
                    0
                } else {
                    bits & (u32::MAX << (32 - u32::from(self.v4_prefix)))
                };
                u128::from(masked) | (1u128 << 127)
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                if self.v6_prefix == 0 {
                    0
                } else {
                    bits & (u128::MAX << (128 - u32::from(self.v6_prefix)))
                }
            }
        }
    }

    /// Decides one response to `client`.
    pub fn check(&self, client: IpAddr, class: &ResponseClass) -> Verdict {
        if self.exempt.iter().any(|n| n.contains(&client)) {
            return Verdict::Send;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.client_prefix(client).hash(&mut h);
        class.hash(&mut h);
        let key = h.finish();
        let now = self.start.elapsed().as_secs_f64();
        let shard = &self.shards[(key as usize) % SHARDS];
        let mut map = shard.lock();
        if map.len() >= MAX_ACCOUNTS / SHARDS {
            // Forget accounts idle for a window (they are back to full).
            let window = self.window;
            map.retain(|_, b| now - b.last < window);
            if map.len() >= MAX_ACCOUNTS / SHARDS {
                map.clear();
            }
        }
        let b = map.entry(key).or_insert(Bucket {
            tokens: self.burst,
            last: now,
            limited: 0,
        });
        b.tokens = (b.tokens + (now - b.last) * self.rate).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            b.limited = 0;
            return Verdict::Send;
        }
        b.limited = b.limited.wrapping_add(1);
        if self.slip > 0 && b.limited.is_multiple_of(self.slip) {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limiter(rps: u32, slip: u32) -> Limiter {
        Limiter::new(&Rrl {
            responses_per_second: rps,
            window: Duration::from_secs(15),
            slip,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            exempt: vec!["10.0.0.0/8".parse().unwrap()],
            log_only: false,
        })
    }

    fn class(name: &str) -> ResponseClass {
        ResponseClass {
            name: name.len() as u64 * 31 + u64::from(name.as_bytes()[0]),
            qtype: 1,
            kind: 0,
        }
    }

    #[test]
    fn a_burst_from_one_prefix_is_limited_and_slips() {
        let l = limiter(5, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let same_prefix: IpAddr = "192.0.2.200".parse().unwrap();
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        let verdicts: Vec<Verdict> = (0..20)
            .map(|i| l.check(if i % 2 == 0 { a } else { same_prefix }, &class("x.")))
            .collect();
        let sent = verdicts.iter().filter(|v| **v == Verdict::Send).count();
        let slipped = verdicts.iter().filter(|v| **v == Verdict::Slip).count();
        assert!((5..=6).contains(&sent), "{verdicts:?}");
        assert!(slipped >= 6, "every second limited one slips: {verdicts:?}");
        assert_eq!(
            l.check(other, &class("x.")),
            Verdict::Send,
            "another prefix is unaffected"
        );
        assert_eq!(
            l.check(a, &class("y.")),
            Verdict::Send,
            "another response is unaffected"
        );
        for _ in 0..100 {
            assert_eq!(
                l.check("10.1.2.3".parse().unwrap(), &class("x.")),
                Verdict::Send
            );
        }
    }
}
