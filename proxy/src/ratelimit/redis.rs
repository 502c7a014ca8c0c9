//! Cluster-scope limit decisions in Redis: GCRA in one Lua script, one round
//! trip per decision (EVALSHA), on a small pool of plain RESP connections.
//! Time comes from the Redis server, so nodes with skewed clocks agree.

use std::io;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

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

/// Idle connections kept for reuse.
const MAX_IDLE: usize = 32;

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

struct Conn {
    stream: BufReader<TcpStream>,
}

enum Reply {
    Int(i64),
    Text(String),
    Error(String),
    Nil,
    Array(Vec<Reply>),
}

fn protocol(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("Redis protocol: {what}"),
    )
}

impl Conn {
    async fn send(&mut self, args: &[&[u8]]) -> io::Result<()> {
        let mut out = Vec::with_capacity(64 + args.iter().map(|a| a.len() + 16).sum::<usize>());
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.stream.get_mut().write_all(&out).await
    }

    async fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        let n = self.stream.read_line(&mut line).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }

    async fn scalar(&mut self, line: &str) -> io::Result<Reply> {
        let (kind, rest) = line.split_at(line.len().min(1));
        match kind {
            "+" => Ok(Reply::Text(rest.to_string())),
            "-" => Ok(Reply::Error(rest.to_string())),
            ":" => rest
                .parse()
                .map(Reply::Int)
                .map_err(|_| protocol("bad integer")),
            "$" => {
                let len: i64 = rest.parse().map_err(|_| protocol("bad length"))?;
                if len < 0 {
                    return Ok(Reply::Nil);
                }
                if len > 1 << 20 {
                    return Err(protocol("bulk string too long"));
                }
                let mut buf = vec![0u8; len as usize + 2];
                self.stream.read_exact(&mut buf).await?;
                buf.truncate(len as usize);
                Ok(Reply::Text(String::from_utf8_lossy(&buf).into_owned()))
            }
            _ => Err(protocol("unexpected reply type")),
        }
    }

    async fn reply(&mut self) -> io::Result<Reply> {
        let line = self.line().await?;
        if let Some(n) = line.strip_prefix('*') {
            let n: i64 = n.parse().map_err(|_| protocol("bad array length"))?;
            if !(0..=64).contains(&n) {
                return Ok(Reply::Nil);
            }
            let mut items = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let l = self.line().await?;
                items.push(self.scalar(&l).await?);
            }
            return Ok(Reply::Array(items));
        }
        self.scalar(&line).await
    }

    async fn call(&mut self, args: &[&[u8]]) -> io::Result<Reply> {
        self.send(args).await?;
        self.reply().await
    }
}

/// A pool of connections to one Redis.
pub struct RedisClient {
    endpoint: Endpoint,
    timeout: Duration,
    idle: Mutex<Vec<Conn>>,
    sha: Mutex<Option<String>>,
}

impl RedisClient {
    pub fn new(endpoint: Endpoint, timeout: Duration) -> Self {
        Self {
            endpoint,
            timeout,
            idle: Mutex::new(Vec::new()),
            sha: Mutex::new(None),
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn connect(&self) -> io::Result<Conn> {
        let tcp = TcpStream::connect(&self.endpoint.address).await?;
        let _ = tcp.set_nodelay(true);
        let mut conn = Conn {
            stream: BufReader::new(tcp),
        };
        if let Some(password) = &self.endpoint.password {
            let reply = match &self.endpoint.user {
                Some(user) => {
                    conn.call(&[b"AUTH", user.as_bytes(), password.as_bytes()])
                        .await?
                }
                None => conn.call(&[b"AUTH", password.as_bytes()]).await?,
            };
            if let Reply::Error(e) = reply {
                return Err(io::Error::other(format!("AUTH: {e}")));
            }
        }
        if self.endpoint.db != 0 {
            let db = self.endpoint.db.to_string();
            if let Reply::Error(e) = conn.call(&[b"SELECT", db.as_bytes()]).await? {
                return Err(io::Error::other(format!("SELECT: {e}")));
            }
        }
        Ok(conn)
    }

    async fn load_script(&self, conn: &mut Conn) -> io::Result<String> {
        match conn.call(&[b"SCRIPT", b"LOAD", GCRA.as_bytes()]).await? {
            Reply::Text(sha) => {
                *self.sha.lock() = Some(sha.clone());
                Ok(sha)
            }
            Reply::Error(e) => Err(io::Error::other(format!("SCRIPT LOAD: {e}"))),
            _ => Err(protocol("SCRIPT LOAD answered oddly")),
        }
    }

    async fn decide_on(
        &self,
        conn: &mut Conn,
        key: &str,
        interval: Duration,
        burst: u32,
    ) -> io::Result<RedisDecision> {
        let t = interval.as_micros().max(1) as u64;
        let tau = t * u64::from(burst.saturating_sub(1));
        let (t, tau) = (t.to_string(), tau.to_string());
        let existing = self.sha.lock().clone();
        let mut sha = match existing {
            Some(s) => s,
            None => self.load_script(conn).await?,
        };
        for attempt in 0..2 {
            let reply = conn
                .call(&[
                    b"EVALSHA",
                    sha.as_bytes(),
                    b"1",
                    key.as_bytes(),
                    t.as_bytes(),
                    tau.as_bytes(),
                ])
                .await?;
            match reply {
                Reply::Array(items) => {
                    let n: Vec<i64> = items
                        .iter()
                        .map(|r| match r {
                            Reply::Int(i) => Ok(*i),
                            _ => Err(protocol("script returned a non-integer")),
                        })
                        .collect::<io::Result<_>>()?;
                    let [allowed, remaining, retry, reset] = n[..] else {
                        return Err(protocol("script returned the wrong number of values"));
                    };
                    let us = |v: i64| Duration::from_micros(v.max(0) as u64);
                    return Ok(RedisDecision {
                        allowed: allowed == 1,
                        remaining: remaining.clamp(0, i64::from(u32::MAX)) as u32,
                        retry_after: us(retry),
                        reset: us(reset),
                    });
                }
                Reply::Error(e) if e.starts_with("NOSCRIPT") && attempt == 0 => {
                    sha = self.load_script(conn).await?;
                }
                Reply::Error(e) => return Err(io::Error::other(e)),
                _ => return Err(protocol("EVALSHA answered oddly")),
            }
        }
        Err(io::Error::other("script could not be loaded"))
    }

    /// One GCRA decision on `key`, within the client's timeout.
    pub async fn decide(
        &self,
        key: &str,
        interval: Duration,
        burst: u32,
    ) -> io::Result<RedisDecision> {
        let work = async {
            let pooled = self.idle.lock().pop();
            let mut conn = match pooled {
                Some(c) => c,
                None => self.connect().await?,
            };
            let decision = self.decide_on(&mut conn, key, interval, burst).await?;
            let mut idle = self.idle.lock();
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
            Ok(decision)
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer from Redis within {:?}", self.timeout),
            )),
        }
    }

    /// Drops pooled connections (after an error: they may be broken).
    pub fn reset(&self) {
        self.idle.lock().clear();
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
