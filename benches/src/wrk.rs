//! The HTTP load generator: wrk, pinned, with its latency distribution parsed.

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// What one wrk run measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Run {
    pub requests: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Socket errors and non-2xx/3xx answers.
    pub errors: u64,
    pub mb_per_s: f64,
}

pub struct Wrk {
    pub cpu: usize,
    pub threads: usize,
    pub connections: usize,
    pub duration: Duration,
}

impl Wrk {
    pub fn run(&self, url: &str, extra: &[&str]) -> Result<Run> {
        let out = Command::new("taskset")
            .arg("-c")
            .arg(self.cpu.to_string())
            .arg("wrk")
            .arg(format!("-t{}", self.threads))
            .arg(format!("-c{}", self.connections))
            .arg(format!("-d{}s", self.duration.as_secs().max(1)))
            .arg("--latency")
            .args(extra)
            .arg(url)
            .output()
            .context("running wrk")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "wrk failed: {}{}",
                text,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        parse(&text).with_context(|| format!("parsing wrk output:\n{text}"))
    }
}

fn ms(value: &str) -> Option<f64> {
    let split = value.find(|c: char| c.is_alphabetic())?;
    let n: f64 = value[..split].parse().ok()?;
    Some(match &value[split..] {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

fn bytes(value: &str) -> Option<f64> {
    let split = value.find(|c: char| c.is_alphabetic())?;
    let n: f64 = value[..split].parse().ok()?;
    Some(match &value[split..] {
        "B" => n,
        "KB" => n * 1024.0,
        "MB" => n * 1024.0 * 1024.0,
        "GB" => n * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    })
}

pub fn parse(text: &str) -> Option<Run> {
    let mut run = Run::default();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => run.p50_ms = ms(v)?,
            ["99%", v] => run.p99_ms = ms(v)?,
            [n, "requests", "in", ..] => run.requests = n.parse().ok()?,
            ["Requests/sec:", v] => run.rps = v.parse().ok()?,
            ["Transfer/sec:", v] => run.mb_per_s = bytes(v)? / (1024.0 * 1024.0),
            ["Non-2xx", "or", "3xx", "responses:", n] => run.errors += n.parse::<u64>().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                for pair in rest.chunks(2) {
                    if let [_, n] = pair {
                        run.errors += n.trim_end_matches(',').parse::<u64>().unwrap_or(0);
                    }
                }
            }
            _ => {}
        }
    }
    (run.requests > 0).then_some(run)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_wrk_output() {
        let text = "Running 5s test @ http://127.0.0.1:1/1k\n  1 threads and 50 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     2.10ms  310.00us   9.00ms   90.00%\n  Latency Distribution\n     50%    2.05ms\n     75%    2.20ms\n     90%    2.40ms\n     99%    3.50ms\n  118000 requests in 5.00s, 140.00MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\nRequests/sec:  23600.00\nTransfer/sec:     28.00MB\n";
        let r = super::parse(text).unwrap();
        assert_eq!(r.requests, 118_000);
        assert!((r.p50_ms - 2.05).abs() < 1e-9);
        assert!((r.p99_ms - 3.5).abs() < 1e-9);
        assert!((r.rps - 23600.0).abs() < 1e-9);
        assert!((r.mb_per_s - 28.0).abs() < 1e-9);
        assert_eq!(r.errors, 3);
        assert_eq!(super::ms("850us"), Some(0.85));
    }
}
