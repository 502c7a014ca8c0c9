//! The HTTP/2 load generator: nghttp2's h2load, pinned, over cleartext
//! HTTP/2 with prior knowledge (h2c), its summary parsed into a [`Run`].
//!
//! h2load reports no percentiles: `p50_ms` holds the mean time per request
//! and `p99_ms` the longest (the report says so).

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::wrk::Run;

pub struct H2load {
    pub cpu: usize,
    /// Client connections.
    pub connections: usize,
    /// Streams each connection keeps open at once.
    pub streams: usize,
    pub duration: Duration,
}

impl H2load {
    pub fn run(&self, url: &str) -> Result<Run> {
        let out = Command::new("taskset")
            .arg("-c")
            .arg(self.cpu.to_string())
            .arg("h2load")
            .arg("-t1")
            .arg(format!("-c{}", self.connections))
            .arg(format!("-m{}", self.streams))
            .arg(format!("-D{}", self.duration.as_secs().max(1)))
            .arg(url)
            .output()
            .context("running h2load")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "h2load failed: {}{}",
                text,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        parse(&text).with_context(|| format!("parsing h2load output:\n{text}"))
    }
}

/// `850us`, `1.20ms`, `2.5s` in milliseconds.
fn ms(value: &str) -> Option<f64> {
    let split = value.find(|c: char| c.is_alphabetic())?;
    let n: f64 = value[..split].parse().ok()?;
    Some(match &value[split..] {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => return None,
    })
}

/// `12.3MB/s`, `680B/s` in MiB per second.
fn mib_per_s(value: &str) -> Option<f64> {
    let v = value.strip_suffix("/s")?;
    let split = v.find(|c: char| c.is_alphabetic())?;
    let n: f64 = v[..split].parse().ok()?;
    let scale = match &v[split..] {
        "B" => 1.0,
        "KB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(n * scale / (1024.0 * 1024.0))
}

pub fn parse(text: &str) -> Option<Run> {
    let mut run = Run::default();
    let mut seconds = 0.0;
    for line in text.lines() {
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|w| !w.is_empty())
            .collect();
        match words.as_slice() {
            ["finished", "in", t, _rps, "req/s", rate] => {
                seconds = ms(t)? / 1000.0;
                run.mb_per_s = mib_per_s(rate)?;
            }
            ["requests:", _total, "total", _s, "started", _d, "done", ok, "succeeded", failed, "failed", errored, "errored", timeout, "timeout"] =>
            {
                run.requests = ok.parse().ok()?;
                run.errors = failed.parse::<u64>().ok()?
                    + errored.parse::<u64>().ok()?
                    + timeout.parse::<u64>().ok()?;
            }
            ["status", "codes:", _ok, "2xx", _r, "3xx", c4, "4xx", c5, "5xx"] => {
                run.errors += c4.parse::<u64>().ok()? + c5.parse::<u64>().ok()?;
            }
            ["time", "for", "request:", _min, max, mean, ..] => {
                run.p50_ms = ms(mean)?;
                run.p99_ms = ms(max)?;
            }
            _ => {}
        }
    }
    if run.requests == 0 || seconds <= 0.0 {
        return None;
    }
    run.rps = run.requests as f64 / seconds;
    Some(run)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_h2load_output() {
        let text = "starting benchmark...\nspawning thread #0: 10 total client(s). 0 total requests\nApplication protocol: h2c\n\nfinished in 5.00s, 40000.20 req/s, 42.50MB/s\nrequests: 200001 total, 200101 started, 200001 done, 199990 succeeded, 11 failed, 1 errored, 2 timeout\nstatus codes: 199990 2xx, 0 3xx, 3 4xx, 4 5xx\ntraffic: 212.50MB (222822400) total, 1.20MB (1258291) headers (space savings 90.00%), 200.00MB (209715200) data\n                     min         max         mean         sd        +/- sd\ntime for request:      120us     12.40ms      2.45ms       310us    91.00%\n";
        let r = super::parse(text).unwrap();
        assert_eq!(r.requests, 199_990);
        assert_eq!(r.errors, 11 + 1 + 2 + 3 + 4);
        assert!((r.rps - 39_998.0).abs() < 1e-6);
        assert!((r.p50_ms - 2.45).abs() < 1e-9);
        assert!((r.p99_ms - 12.4).abs() < 1e-9);
        assert!((r.mb_per_s - 42.5).abs() < 1e-9);
        assert!(super::parse("requests: 0 total").is_none());
    }
}
