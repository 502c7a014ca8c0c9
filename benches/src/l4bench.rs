//! `loadbench tcp`: L4 proxying side by side: edge's tcp listener, HAProxy
//! (`mode tcp`) and nginx (`stream`), each with one worker pinned to CPU 0.
//! The backends and the load generator are this process, pinned to CPU 1:
//!
//! - throughput: 4 connections, the backend streams 64 KiB writes as fast as
//!   the proxy takes them, the client reads and counts (MB/s);
//! - connections/s: 32 loops of connect, send one byte, read the one-byte
//!   answer and the backend's close (a short-lived connection each).
//!
//! CPU time of the proxy per MB and per connection comes from /proc.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::report::median;
use crate::sys::{free_port, wait_port, Proc};

const SUT_CPU: usize = 0;
const STREAMS: usize = 4;
const CONNECTORS: usize = 32;

fn haproxy(tput: u16, cps: u16, stream_backend: u16, cps_backend: u16) -> String {
    format!(
        "global
  nbthread 1
  maxconn 8000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
listen tput
  bind 127.0.0.1:{tput}
  server b 127.0.0.1:{stream_backend}
listen cps
  bind 127.0.0.1:{cps}
  server b 127.0.0.1:{cps_backend}
"
    )
}

fn nginx(dir: &Path, tput: u16, cps: u16, stream_backend: u16, cps_backend: u16) -> String {
    let d = dir.display();
    format!(
        "load_module /usr/lib/nginx/modules/ngx_stream_module.so;
user root; worker_processes 1; daemon off; pid {d}/nginx-l4.pid; error_log {d}/nginx-l4.error.log warn;
events {{ worker_connections 16000; }}
stream {{
  server {{ listen 127.0.0.1:{tput} backlog=4096; proxy_pass 127.0.0.1:{stream_backend}; }}
  server {{ listen 127.0.0.1:{cps} backlog=4096; proxy_pass 127.0.0.1:{cps_backend}; }}
}}
"
    )
}

fn edge(tput: u16, cps: u16, stream_backend: u16, cps_backend: u16) -> String {
    format!(
        "[server]
threads = 1
access_log = false

[admin]
listen = \"127.0.0.1:0\"

[[listener]]
name = \"tput\"
kind = \"tcp\"
address = \"127.0.0.1:{tput}\"
pool = \"stream\"
max_connections = 8000

[[listener]]
name = \"cps\"
kind = \"tcp\"
address = \"127.0.0.1:{cps}\"
pool = \"short\"
max_connections = 8000

[[pool]]
name = \"stream\"
backends = [{{ address = \"127.0.0.1:{stream_backend}\" }}]

[[pool]]
name = \"short\"
backends = [{{ address = \"127.0.0.1:{cps_backend}\" }}]
"
    )
}

/// Backends: one streams bytes forever, one answers one byte and closes.
async fn backends() -> Result<(u16, u16)> {
    let stream = TcpListener::bind("127.0.0.1:0").await?;
    let short = TcpListener::bind("127.0.0.1:0").await?;
    let ports = (stream.local_addr()?.port(), short.local_addr()?.port());
    tokio::spawn(async move {
        let chunk = Arc::new(vec![0x5au8; 64 * 1024]);
        while let Ok((mut s, _)) = stream.accept().await {
            let chunk = chunk.clone();
            tokio::spawn(async move { while s.write_all(&chunk).await.is_ok() {} });
        }
    });
    tokio::spawn(async move {
        while let Ok((mut s, _)) = short.accept().await {
            tokio::spawn(async move {
                let mut b = [0u8; 1];
                if s.read_exact(&mut b).await.is_ok() {
                    let _ = s.write_all(b"y").await;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    Ok(ports)
}

async fn throughput(addr: SocketAddr, secs: u64) -> f64 {
    let bytes = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..STREAMS {
        let bytes = bytes.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(mut s) = TcpStream::connect(addr).await else {
                return;
            };
            let mut buf = vec![0u8; 256 * 1024];
            while Instant::now() < end {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        bytes.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    bytes.load(Ordering::Relaxed) as f64 / secs as f64 / 1e6
}

/// Completed and failed short connections per second.
async fn connections(addr: SocketAddr, secs: u64) -> (f64, u64) {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..CONNECTORS {
        let (done, failed) = (done.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let ok = async {
                    let mut s = TcpStream::connect(addr).await?;
                    s.set_nodelay(true)?;
                    s.write_all(b"x").await?;
                    let mut got = Vec::new();
                    s.read_to_end(&mut got).await?;
                    std::io::Result::Ok(got == b"y")
                };
                match tokio::time::timeout(Duration::from_secs(5), ok).await {
                    Ok(Ok(true)) => done.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    (
        done.load(Ordering::Relaxed) as f64 / secs as f64,
        failed.load(Ordering::Relaxed),
    )
}

struct Sut {
    name: &'static str,
    tput: SocketAddr,
    cps: SocketAddr,
    proc: Proc,
}

#[derive(Default, Clone)]
struct Runs {
    mbps: Vec<f64>,
    cpu_per_gb: Vec<f64>,
    cps: Vec<f64>,
    cpu_per_conn: Vec<f64>,
    failed: u64,
}

fn start_suts(dir: &Path, edge_bin: &Path, backend: (u16, u16)) -> Result<Vec<Sut>> {
    let mut suts = Vec::new();
    let ports = |_: ()| -> Result<(u16, u16)> { Ok((free_port()?, free_port()?)) };
    let (t, c) = ports(())?;
    std::fs::write(
        dir.join("haproxy-l4.cfg"),
        haproxy(t, c, backend.0, backend.1),
    )?;
    let cfg = dir.join("haproxy-l4.cfg");
    let cfg = cfg.to_string_lossy().to_string();
    suts.push(Sut {
        name: "haproxy",
        tput: ([127, 0, 0, 1], t).into(),
        cps: ([127, 0, 0, 1], c).into(),
        proc: Proc::spawn(
            "haproxy-l4",
            Some(SUT_CPU),
            "haproxy",
            &["-f", &cfg, "-db"],
            dir,
        )?,
    });
    let (t, c) = ports(())?;
    let conf = dir.join("nginx-l4.conf");
    std::fs::write(&conf, nginx(dir, t, c, backend.0, backend.1))?;
    let conf = conf.to_string_lossy().to_string();
    suts.push(Sut {
        name: "nginx",
        tput: ([127, 0, 0, 1], t).into(),
        cps: ([127, 0, 0, 1], c).into(),
        proc: Proc::spawn(
            "nginx-l4",
            Some(SUT_CPU),
            "nginx",
            &["-c", &conf, "-p", &dir.to_string_lossy()],
            dir,
        )?,
    });
    let (t, c) = ports(())?;
    let conf = dir.join("edge-l4.toml");
    std::fs::write(&conf, edge(t, c, backend.0, backend.1))?;
    let conf = conf.to_string_lossy().to_string();
    let bin = edge_bin.to_string_lossy().to_string();
    suts.push(Sut {
        name: "edge",
        tput: ([127, 0, 0, 1], t).into(),
        cps: ([127, 0, 0, 1], c).into(),
        proc: Proc::spawn(
            "edge-l4",
            Some(SUT_CPU),
            &bin,
            &["run", "--config", &conf],
            dir,
        )?,
    });
    for s in &suts {
        wait_port(s.tput, Duration::from_secs(20), s.name)?;
        wait_port(s.cps, Duration::from_secs(20), s.name)?;
    }
    Ok(suts)
}

/// Pins this process (all its threads, and those it starts later) to `cpu`.
fn pin_self(cpu: usize) -> Result<()> {
    let status = std::process::Command::new("taskset")
        .args([
            "-a",
            "-p",
            "-c",
            &cpu.to_string(),
            &std::process::id().to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running taskset")?;
    anyhow::ensure!(status.success(), "taskset could not pin the load generator");
    Ok(())
}

pub fn run(dir: &Path, edge_bin: &Path, reps: usize, secs: u64) -> Result<String> {
    pin_self(crate::LOAD_CPU)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let backend = rt.block_on(backends())?;
    let suts = start_suts(dir, edge_bin, backend)?;
    let mut runs = vec![Runs::default(); suts.len()];
    for round in 0..reps {
        for k in 0..suts.len() {
            let i = (k + round) % suts.len();
            let s = &suts[i];
            let cpu0 = s.proc.cpu();
            let mbps = rt.block_on(throughput(s.tput, secs));
            let cpu1 = s.proc.cpu();
            let (cps, failed) = rt.block_on(connections(s.cps, secs));
            let cpu2 = s.proc.cpu();
            let gb = mbps * secs as f64 / 1000.0;
            let conns = cps * secs as f64;
            let r = &mut runs[i];
            r.mbps.push(mbps);
            r.cpu_per_gb
                .push((cpu1 - cpu0).as_secs_f64() / gb.max(1e-9));
            r.cps.push(cps);
            r.cpu_per_conn
                .push((cpu2 - cpu1).as_secs_f64() * 1e6 / conns.max(1.0));
            r.failed += failed;
            eprintln!(
                "round {} {:8} {:8.0} MB/s  {:7.0} conn/s  failed {failed}",
                round + 1,
                s.name,
                mbps,
                cps
            );
            // Let TIME_WAIT sockets of the connection test drain a little.
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let mut out = format!(
        "- proxy pinned to CPU 0 (one worker); backends and load generator in one process on CPU 1; {reps} rounds of {secs} s per test, interleaved, medians\n- throughput: {STREAMS} connections, backend streams 64 KiB writes, client reads; connections/s: {CONNECTORS} loops of connect, 1 byte each way, close\n\n| proxy | MB/s | CPU s per GB | connections/s | CPU µs per connection | failed |\n|---|---:|---:|---:|---:|---:|\n"
    );
    let med: Vec<(f64, f64, f64, f64)> = runs
        .iter()
        .map(|r| {
            (
                median(r.mbps.clone()),
                median(r.cpu_per_gb.clone()),
                median(r.cps.clone()),
                median(r.cpu_per_conn.clone()),
            )
        })
        .collect();
    for (s, (m, r)) in suts.iter().zip(med.iter().zip(&runs)) {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.2} | {:.0} | {:.1} | {} |",
            s.name, m.0, m.1, m.2, m.3, r.failed
        );
    }
    let edge = suts.iter().position(|s| s.name == "edge").unwrap_or(0);
    let _ = writeln!(
        out,
        "\n| edge ÷ peer | MB/s | CPU per GB | connections/s | CPU per connection |\n|---|---:|---:|---:|---:|"
    );
    for (i, s) in suts.iter().enumerate() {
        if i == edge {
            continue;
        }
        let (e, p) = (med[edge], med[i]);
        let _ = writeln!(
            out,
            "| edge ÷ {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            s.name,
            e.0 / p.0,
            e.1 / p.1,
            e.2 / p.2,
            e.3 / p.3
        );
    }
    drop(suts);
    Ok(out)
}
