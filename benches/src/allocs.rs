//! `loadbench allocs`: heap allocations per request on edge's HTTP path,
//! counted by an `alloc-stats` build of edge (`cargo build --release -p edge
//! --features alloc-stats`: every allocation and reallocation through a
//! counting wrapper, exposed on `/metrics`). For each load, wrk runs against
//! edge after a warm-up, and the counters read before and after are divided
//! by the requests wrk completed (the two scrapes themselves are counted
//! too: a few hundred allocations over hundreds of thousands of requests).
//! Counts, not CPU: such a build runs on glibc's allocator.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::wrk::Wrk;

/// (allocations, bytes allocated) from edge's `/metrics` at `admin`.
fn counters(admin: SocketAddr) -> Result<(u64, u64)> {
    let mut s = TcpStream::connect(admin).context("connecting to edge's admin listener")?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let value = |name: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
    };
    match (
        value("edge_heap_allocations_total"),
        value("edge_heap_allocated_bytes_total"),
    ) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => bail!("no edge_heap_* metrics: build edge with `--features alloc-stats`"),
    }
}

/// One row: allocations and bytes per request for `url`.
pub fn measure(wrk: &Wrk, warm: &Wrk, admin: SocketAddr, url: &str) -> Result<(f64, f64, u64)> {
    warm.run(url, &[])?;
    let (a0, b0) = counters(admin)?;
    let run = wrk.run(url, &[])?;
    let (a1, b1) = counters(admin)?;
    if run.requests == 0 {
        bail!("wrk completed no request against {url}");
    }
    let n = run.requests as f64;
    Ok(((a1 - a0) as f64 / n, (b1 - b0) as f64 / n, run.requests))
}

/// The report's table for `rows` of (load, allocations/req, bytes/req, requests).
pub fn table(title: &str, rows: &[(String, f64, f64, u64)]) -> String {
    let mut out = format!(
        "#### {title}\n\n| load | allocations/req | bytes allocated/req | requests |\n|---|---:|---:|---:|\n"
    );
    for (load, a, b, n) in rows {
        out.push_str(&format!("| {load} | {a:.1} | {b:.0} | {n} |\n"));
    }
    out.push('\n');
    out
}

/// The edge config `text` with its admin listener moved to `admin`.
pub fn with_admin(text: &str, admin: u16) -> Result<String> {
    let from = "[admin]\nlisten = \"127.0.0.1:0\"";
    if !text.contains(from) {
        bail!("the edge config has no [admin] on port 0 to move");
    }
    Ok(text.replace(from, &format!("[admin]\nlisten = \"127.0.0.1:{admin}\"")))
}

/// Whether `edge` was built with alloc-stats (it answers with the metrics).
pub fn check_binary(edge: &Path) -> Result<()> {
    if !edge.exists() {
        bail!(
            "{}: build it with `cargo build --release -p edge --features alloc-stats`",
            edge.display()
        );
    }
    Ok(())
}
