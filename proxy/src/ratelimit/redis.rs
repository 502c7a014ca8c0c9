//! Cluster-scope limit decisions in Redis: GCRA in one Lua script, one round
//! trip per decision (EVALSHA), through the `redis` crate on one multiplexed
//! connection. Time comes from the Redis server, so nodes with skewed clocks
//! agree.

use std::io;
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

/// KEYS[1]: the bucket. ARGV[1]: emission interval (µs per request);
/// ARGV[2]: tolerance (µs, interval × (burst − 1)).
/// Returns {allowed, remaining, retry_after_us, reset_us}.
const GCRA: &str = r"
local t = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local diff = tat - now
if diff > tau then
  return {0, 0, diff - tau, diff}
end
local new_tat = tat + t
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, math.floor((tau - (new_tat - now - t)) / t), 0, new_tat - now}
";

/// A decision Redis made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisDecision {
    pub allowed: bool,
    pub remaining: u32,
    pub retry_after: Duration,
    /// Until the bucket is full again.
    pub reset: Duration,
}

/// Where and how to reach Redis, from a `redis://[user:password@]host:port[/db]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub address: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub db: u32,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self, String> {
        if url.starts_with("rediss://") {
            return Err(
                "TLS to Redis (rediss://) is not supported; use redis:// on a trusted network"
                    .into(),
            );
        }
        let rest = url
            .strip_prefix("redis://")
            .ok_or_else(|| "a Redis URL starts with redis://".to_string())?;
        let (auth, host) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (host, db) = match host.split_once('/') {
            Some((h, "")) => (h, 0),
            Some((h, db)) => (
                h,
                db.parse()
                    .map_err(|_| format!("database {db:?} is not a number"))?,
            ),
            None => (host, 0),
        };
        if host.is_empty() {
            return Err("the Redis URL has no host".into());
        }
        let address = if host
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            host.to_string()
        } else {
            format!("{host}:6379")
        };
        let (user, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some((u, p)) => ((!u.is_empty()).then(|| u.to_string()), Some(p.to_string())),
                None => (None, Some(a.to_string())),
            },
        };
        Ok(Self {
            address,
            user,
            password,
            db,
        })
    }
}

fn protocol(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("Redis protocol: {what}"),
    )
}

/// One Redis, through the `redis` crate: one multiplexed connection (every
/// decision in flight shares it), made on first use and again after an
/// error; the GCRA script by EVALSHA, loaded again when Redis forgot it
/// (`redis::Script` does both).
pub struct RedisClient {
    endpoint: Endpoint,
    timeout: Duration,
    client: redis::Client,
    conn: Mutex<Option<MultiplexedConnection>>,
    script: redis::Script,
}

impl RedisClient {
    /// A client for `url` (a `redis://` URL `Endpoint::parse` accepted);
    /// no connection is made until the first decision.
    pub fn new(url: &str, endpoint: Endpoint, timeout: Duration) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        Ok(Self {
            endpoint,
            timeout,
            client,
            conn: Mutex::new(None),
            script: redis::Script::new(GCRA),
        })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn connection(&self) -> redis::RedisResult<MultiplexedConnection> {
        if let Some(c) = self.conn.lock().as_ref() {
            return Ok(c.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *self.conn.lock() = Some(c.clone());
        Ok(c)
    }

    /// One GCRA decision on `key`, within the client's timeout.
    pub async fn decide(
        &self,
        key: &str,
        interval: Duration,
        burst: u32,
    ) -> io::Result<RedisDecision> {
        let t = interval.as_micros().max(1) as u64;
        let tau = t * u64::from(burst.saturating_sub(1));
        let work = async {
            let mut conn = self.connection().await.map_err(io::Error::other)?;
            let n: Vec<i64> = self
                .script
                .key(key)
                .arg(t)
                .arg(tau)
                .invoke_async(&mut conn)
                .await
                .map_err(io::Error::other)?;
            let [allowed, remaining, retry, reset] = n[..] else {
                return Err(protocol("script returned the wrong number of values"));
            };
            let us = |v: i64| Duration::from_micros(v.max(0) as u64);
            Ok(RedisDecision {
                allowed: allowed == 1,
                remaining: remaining.clamp(0, i64::from(u32::MAX)) as u32,
                retry_after: us(retry),
                reset: us(reset),
            })
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer from Redis within {:?}", self.timeout),
            )),
        }
    }

    /// Drops the connection (after an error: it may be broken).
    pub fn reset(&self) {
        *self.conn.lock() = None;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_parse_with_and_without_credentials_and_database() {
        let e = Endpoint::parse("redis://127.0.0.1:6380/2").unwrap();
        assert_eq!(e.address, "127.0.0.1:6380");
        assert_eq!(e.db, 2);
        assert_eq!(e.password, None);
        let e = Endpoint::parse("redis://u:p@redis.example").unwrap();
        assert_eq!(e.address, "redis.example:6379");
        assert_eq!(
            (e.user.as_deref(), e.password.as_deref()),
            (Some("u"), Some("p"))
        );
        let e = Endpoint::parse("redis://:secret@[::1]:7000/").unwrap();
        assert_eq!(e.address, "[::1]:7000");
        assert_eq!((e.user, e.password.as_deref()), (None, Some("secret")));
        assert!(Endpoint::parse("rediss://h:1").is_err());
        assert!(Endpoint::parse("redis://h/x").is_err());
        assert!(Endpoint::parse("redis://").is_err());
    }
}
