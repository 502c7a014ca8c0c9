//! `loadbench`: edge side by side with the servers operators run today, in one
//! run, on one machine.
//!
//! The server under test is pinned to CPU 0; the load generator and the
//! origin share CPU 1. Repetitions are short and interleaved across servers
//! (the order rotates each round), and the report gives medians and edge's
//! ratio to each peer from the same run. CPU time per request comes from
//! /proc (user + system, the whole process tree).
//!
//! ```text
//! loadbench proxy|cache [--reps 5] [--duration 5] [--connections 50] [--edge target/release/edge] [--out FILE]
//! loadbench https      (TLS 1.3 keep-alive pass-through: nginx, HAProxy; wrk)
//! loadbench h2         (HTTP/2 cache hits, cleartext prior knowledge: nginx, Varnish, HAProxy cache; h2load)
//! loadbench hitratio [--out FILE]      (a simulation: no servers)
//! loadbench audience [--edge …] [--out FILE]   (3 sites × 3 nodes + shield + origin on loopback: offload)
//! loadbench dns [--reps 5] [--duration 5] [--edge …] [--out FILE]   (dnsperf, NSD, PowerDNS)
//! loadbench tcp [--reps 5] [--duration 5] [--edge …] [--out FILE]   (HAProxy mode tcp, nginx stream)
//! ```

mod allocs;
mod audience;
mod dnsbench;
mod h2load;
mod hitratio;
mod l4bench;
mod peers;
mod report;
mod sys;
mod wrk;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use report::Samples;
use sys::{free_port, have, wait_port, Proc};

/// CPU of the server under test; the load generator and origin use the other.
const SUT_CPU: usize = 0;
const LOAD_CPU: usize = 1;

struct Args {
    scenario: String,
    reps: usize,
    duration: Duration,
    connections: usize,
    edge: PathBuf,
    /// Another edge binary run beside `edge` (e.g. the previous commit's),
    /// reported as `edge-baseline`: before/after in one run.
    baseline: Option<PathBuf>,
    out: Option<PathBuf>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        scenario: "proxy".into(),
        reps: 5,
        duration: Duration::from_secs(5),
        connections: 50,
        edge: PathBuf::from("target/release/edge"),
        baseline: None,
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--reps" => a.reps = value()?.parse()?,
            "--duration" => a.duration = Duration::from_secs(value()?.parse()?),
            "--connections" => a.connections = value()?.parse()?,
            "--edge" => a.edge = PathBuf::from(value()?),
            "--baseline" => a.baseline = Some(PathBuf::from(value()?)),
            "--out" => a.out = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                println!("loadbench proxy|cache|https|h2 [--reps N] [--duration SECS] [--connections N] [--edge PATH] [--baseline PATH] [--out FILE]");
                println!(
                    "loadbench dns|tcp [--reps N] [--duration SECS] [--edge PATH] [--out FILE]"
                );
                println!("loadbench hitratio [--out FILE]");
                println!("loadbench audience [--edge PATH] [--out FILE]");
                println!("loadbench allocs [--duration SECS] [--connections N] [--edge PATH built with --features alloc-stats] [--out FILE]");
                std::process::exit(0);
            }
            s if !s.starts_with('-') => a.scenario = s.to_string(),
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

/// Makes `--edge` absolute, or says how to build it.
fn release_edge(args: &mut Args) -> Result<()> {
    args.edge = std::fs::canonicalize(&args.edge).with_context(|| {
        format!(
            "{}: build it with `cargo build --release -p edge`",
            args.edge.display()
        )
    })?;
    Ok(())
}

/// Prints a report and writes it to `--out` if given.
fn emit(args: &Args, report: &str) -> Result<()> {
    println!("{report}");
    if let Some(out) = &args.out {
        std::fs::write(out, report).with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

/// A server under test, listening on `addr`.
struct Sut {
    name: &'static str,
    addr: SocketAddr,
    proc: Proc,
}

fn need(tools: &[&str]) -> Result<()> {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
    if !missing.is_empty() {
        bail!(
            "missing tools: {} (run `make deps-bench` as root, or apt-get install them)",
            missing.join(" ")
        );
    }
    Ok(())
}

fn work_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("edge-loadbench-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("www"))?;
    Ok(dir)
}

fn write(dir: &Path, name: &str, text: &str) -> Result<String> {
    let p = dir.join(name);
    std::fs::write(&p, text)?;
    Ok(p.display().to_string())
}

fn start_origin(dir: &Path) -> Result<(Proc, u16)> {
    std::fs::write(dir.join("www/1k"), vec![b'x'; 1024])?;
    std::fs::write(dir.join("www/100k"), vec![b'y'; 100 * 1024])?;
    std::fs::write(dir.join("www/2m"), vec![b'z'; 2 << 20])?;
    let port = free_port()?;
    let conf = write(dir, "origin.conf", &peers::nginx_origin(dir, port)?)?;
    let p = Proc::spawn(
        "origin",
        Some(LOAD_CPU),
        "nginx",
        &["-p", &dir.display().to_string(), "-c", &conf],
        dir,
    )?;
    wait_port(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(10),
        "the origin nginx",
    )?;
    Ok((p, port))
}

/// Starts a server under test on `port`, pinned to its CPU.
fn sut(dir: &Path, name: &'static str, port: u16, program: &str, args: &[&str]) -> Result<Sut> {
    Ok(Sut {
        name,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        proc: Proc::spawn(name, Some(SUT_CPU), program, args, dir)?,
    })
}

/// The `--baseline` edge, on a port of its own with `config` (the edge
/// config with its port swapped), when one was given.
fn baseline(dir: &Path, args: &Args, config: &str, port: u16) -> Result<Option<Sut>> {
    let Some(bin) = &args.baseline else {
        return Ok(None);
    };
    let bin =
        std::fs::canonicalize(bin).with_context(|| format!("--baseline {}", bin.display()))?;
    let p = free_port()?;
    let conf = write(
        dir,
        "edge-baseline.toml",
        &config.replace(&format!("127.0.0.1:{port}\""), &format!("127.0.0.1:{p}\"")),
    )?;
    let bin = bin.display().to_string();
    Ok(Some(sut(
        dir,
        "edge-baseline",
        p,
        &bin,
        &["run", "--config", &conf],
    )?))
}

fn wait_all(dir: &Path, suts: &[Sut]) -> Result<()> {
    for s in suts {
        wait_port(s.addr, Duration::from_secs(30), s.name).map_err(|e| {
            // What the server said is the reason; the work dir goes at exit.
            let said =
                std::fs::read_to_string(dir.join(format!("{}.err", s.name))).unwrap_or_default();
            let tail: Vec<&str> = said.lines().rev().take(10).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            e.context(format!("{} said:\n{}", s.name, tail.join("\n")))
        })?;
    }
    Ok(())
}

/// The pass-through servers; with `tls`, each terminates TLS 1.3 with the
/// same self-signed certificate.
fn start_proxies(dir: &Path, origin: u16, args: &Args, tls: bool) -> Result<Vec<Sut>> {
    let d = dir.display().to_string();
    let edge = args.edge.display().to_string();
    let (p1, p2, p3) = (free_port()?, free_port()?, free_port()?);
    let (nginx, haproxy, edge_text) = if tls {
        let (cert, key, both) = peers::self_signed(dir)?;
        (
            peers::nginx_https_proxy(dir, p1, origin, &cert, &key)?,
            peers::haproxy_https(p2, origin, &both),
            peers::edge_https_proxy(p3, origin, &cert, &key),
        )
    } else {
        (
            peers::nginx_proxy(dir, p1, origin)?,
            peers::haproxy(p2, origin),
            peers::edge_proxy(p3, origin),
        )
    };
    let nginx = write(dir, "nginx.conf", &nginx)?;
    let haproxy = write(dir, "haproxy.cfg", &haproxy)?;
    let edge_conf = write(dir, "edge.toml", &edge_text)?;
    let mut suts = vec![
        sut(dir, "nginx", p1, "nginx", &["-p", &d, "-c", &nginx])?,
        sut(dir, "haproxy", p2, "haproxy", &["-f", &haproxy, "-db"])?,
        sut(dir, "edge", p3, &edge, &["run", "--config", &edge_conf])?,
    ];
    suts.extend(baseline(dir, args, &edge_text, p3)?);
    wait_all(dir, &suts)?;
    Ok(suts)
}

/// The caches; with `h2c`, each speaks cleartext HTTP/2 (prior knowledge)
/// to clients.
fn start_caches(dir: &Path, origin: u16, args: &Args, h2c: bool) -> Result<Vec<Sut>> {
    let d = dir.display().to_string();
    let edge = args.edge.display().to_string();
    let (p1, p2, p3, p4) = (free_port()?, free_port()?, free_port()?, free_port()?);
    let (nginx, varnish, haproxy, edge_text) = if h2c {
        (
            peers::nginx_cache_h2c(dir, p1, origin)?,
            peers::varnish_args_h2c(dir, p2, origin),
            peers::haproxy_cache_h2c(p4, origin),
            peers::edge_cache_h2c(p3, origin),
        )
    } else {
        (
            peers::nginx_cache(dir, p1, origin)?,
            peers::varnish_args(dir, p2, origin),
            peers::haproxy_cache(p4, origin),
            peers::edge_cache(p3, origin),
        )
    };
    let nginx = write(dir, "nginx-cache.conf", &nginx)?;
    let varnish: Vec<&str> = varnish.iter().map(String::as_str).collect();
    let haproxy = write(dir, "haproxy-cache.cfg", &haproxy)?;
    let edge_conf = write(dir, "edge-cache.toml", &edge_text)?;
    let mut suts = vec![
        sut(dir, "nginx", p1, "nginx", &["-p", &d, "-c", &nginx])?,
        sut(dir, "varnish", p2, "varnishd", &varnish)?,
        sut(
            dir,
            "haproxy-cache",
            p4,
            "haproxy",
            &["-f", &haproxy, "-db"],
        )?,
        sut(dir, "edge", p3, &edge, &["run", "--config", &edge_conf])?,
    ];
    suts.extend(baseline(dir, args, &edge_text, p3)?);
    wait_all(dir, &suts)?;
    Ok(suts)
}

/// How load is made: wrk over `http://` or `https://`, or h2load over
/// cleartext HTTP/2.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Generator {
    Wrk { https: bool },
    H2load,
}

impl Generator {
    fn run(
        self,
        args: &Args,
        duration: Duration,
        addr: SocketAddr,
        path: &str,
        headers: &[&str],
    ) -> Result<wrk::Run> {
        match self {
            Generator::Wrk { https } => {
                let scheme = if https { "https" } else { "http" };
                let extra: Vec<&str> = headers.iter().flat_map(|h| ["-H", *h]).collect();
                wrk::Wrk {
                    cpu: LOAD_CPU,
                    threads: 1,
                    connections: args.connections,
                    duration,
                }
                .run(&format!("{scheme}://{addr}{path}"), &extra)
            }
            // 10 streams on each of a fifth as many connections: as many
            // requests outstanding as wrk's rows, multiplexed.
            Generator::H2load if !headers.is_empty() => {
                bail!("h2load rows take no request headers here")
            }
            Generator::H2load => h2load::H2load {
                cpu: LOAD_CPU,
                connections: (args.connections / 10).max(1),
                streams: 10,
                duration,
            }
            .run(&format!("http://{addr}{path}")),
        }
    }
}

/// A row: its title, the path asked for, and request header lines sent
/// with it.
type Load<'a> = (&'a str, &'a str, &'a [&'a str]);

/// Runs every load against every server, rounds interleaved; returns samples per load.
fn measure(
    suts: &mut [Sut],
    loads: &[Load<'_>],
    args: &Args,
    generator: Generator,
) -> Result<Vec<(String, Vec<Samples>)>> {
    let mut results: Vec<(String, Vec<Samples>)> = loads
        .iter()
        .map(|(title, _, _)| {
            (
                title.to_string(),
                suts.iter()
                    .map(|s| Samples {
                        server: s.name.to_string(),
                        runs: Vec::new(),
                        user_us: Vec::new(),
                    })
                    .collect(),
            )
        })
        .collect();
    for s in suts.iter() {
        for (_, path, headers) in loads {
            let run = generator.run(args, Duration::from_secs(1), s.addr, path, headers)?;
            if run.errors > 0 {
                bail!(
                    "{} answered {} errors to {path} while warming up",
                    s.name,
                    run.errors
                );
            }
        }
    }
    for round in 0..args.reps {
        for (li, (title, path, headers)) in loads.iter().enumerate() {
            for k in 0..suts.len() {
                let i = (k + round) % suts.len();
                let s = &mut suts[i];
                if !s.proc.alive() {
                    bail!("{} exited during the run", s.name);
                }
                let (user0, system0) = s.proc.cpu_split();
                let run = generator.run(args, args.duration, s.addr, path, headers)?;
                let (user1, system1) = s.proc.cpu_split();
                let per_request = |d: Duration| d.as_secs_f64() * 1e6 / run.requests.max(1) as f64;
                let user_us = per_request(user1.saturating_sub(user0));
                let per_request_us = user_us + per_request(system1.saturating_sub(system0));
                eprintln!(
                    "round {} {title} {:<8} {:>9.0} req/s p99 {:>7.3} ms cpu {:>6.1} µs/req (user {:>5.1}) errors {}",
                    round + 1,
                    s.name,
                    run.rps,
                    run.p99_ms,
                    per_request_us,
                    user_us,
                    run.errors
                );
                results[li].1[i].user_us.push(user_us);
                results[li].1[i].runs.push((run, per_request_us));
            }
        }
    }
    Ok(results)
}

fn environment(args: &Args) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let version = |cmd: &str, arg: &str| {
        std::process::Command::new(cmd)
            .arg(arg)
            .output()
            .map(|o| {
                let text = String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr);
                text.lines().next().unwrap_or("").trim().to_string()
            })
            .unwrap_or_default()
    };
    format!(
        "- CPU: {cpu} ({} CPUs); server under test pinned to CPU {SUT_CPU}, wrk and the origin to CPU {LOAD_CPU}\n\
         - wrk: 1 thread, {} connections, {} s per run, {} rounds interleaved, medians reported\n\
         - {}; {}; {}; {}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.connections,
        args.duration.as_secs(),
        args.reps,
        version("nginx", "-v"),
        version("haproxy", "-v"),
        version("varnishd", "-V"),
        version(&args.edge.display().to_string(), "--version"),
    )
}

fn main() -> Result<()> {
    let mut args = args()?;
    if args.scenario == "hitratio" {
        let report = hitratio::report(&hitratio::Params::default());
        return emit(&args, &report);
    }
    if args.scenario == "audience" {
        release_edge(&mut args)?;
        let report = audience::run(&audience::Params::default(), &args.edge)?;
        return emit(&args, &report);
    }
    if args.scenario == "tcp" {
        need(&["taskset", "nginx", "haproxy"])?;
        release_edge(&mut args)?;
        let dir = work_dir()?;
        let _cleanup = RemoveOnDrop(dir.clone());
        let report = format!(
            "### L4 TCP proxying: edge, HAProxy (mode tcp) and nginx (stream)\n\n{}",
            l4bench::run(&dir, &args.edge, args.reps, args.duration.as_secs())?
        );
        return emit(&args, &report);
    }
    if args.scenario == "dns" {
        need(&["taskset", "dnsperf", "nsd", "pdns_server"])?;
        release_edge(&mut args)?;
        let dir = work_dir()?;
        let _cleanup = RemoveOnDrop(dir.clone());
        let report = format!(
            "### Authoritative DNS: edge, NSD and PowerDNS (GeoIP backend)\n\n- server pinned to CPU {SUT_CPU}, dnsperf (1 thread, 50 queries outstanding, EDNS) to CPU {LOAD_CPU}; {} rounds of {} s, interleaved, medians\n{}",
            args.reps,
            args.duration.as_secs(),
            dnsbench::run(
                &dir,
                &args.edge,
                args.baseline.as_deref(),
                args.reps,
                args.duration.as_secs()
            )?
        );
        return emit(&args, &report);
    }
    if args.scenario == "allocs" {
        need(&["taskset", "wrk", "nginx"])?;
        allocs::check_binary(&args.edge)?;
        release_edge(&mut args)?;
        let dir = work_dir()?;
        let _cleanup = RemoveOnDrop(dir.clone());
        let (_origin, origin_port) = start_origin(&dir)?;
        let generator = wrk::Wrk {
            cpu: LOAD_CPU,
            threads: 1,
            connections: args.connections,
            duration: args.duration,
        };
        let warm = wrk::Wrk {
            duration: Duration::from_secs(1),
            ..generator
        };
        let edge = args.edge.display().to_string();
        let mut report = format!(
            "### Heap allocations per request (edge built with `--features alloc-stats`)\n\n- wrk: 1 thread, {} connections, {} s per load after a 1 s warm-up; edge pinned to CPU {SUT_CPU}\n- {}\n\n",
            args.connections,
            args.duration.as_secs(),
            std::process::Command::new(&edge)
                .arg("--version")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default()
        );
        type Setup = (
            &'static str,
            fn(u16, u16) -> String,
            &'static [(&'static str, &'static str)],
        );
        let setups: [Setup; 2] = [
            (
                "L7 pass-through",
                peers::edge_proxy,
                &[("1 KiB", "/1k"), ("100 KiB", "/100k")],
            ),
            (
                "Cache hits (RAM)",
                peers::edge_cache,
                &[("1 KiB", "/1k"), ("100 KiB", "/100k"), ("2 MiB", "/2m")],
            ),
        ];
        for (title, config, loads) in setups {
            let (port, admin) = (free_port()?, free_port()?);
            let config = allocs::with_admin(&config(port, origin_port), admin)?;
            let conf = write(&dir, "edge-allocs.toml", &config)?;
            let s = sut(&dir, "edge", port, &edge, &["run", "--config", &conf])?;
            wait_all(&dir, std::slice::from_ref(&s))?;
            let admin = SocketAddr::from(([127, 0, 0, 1], admin));
            wait_port(admin, Duration::from_secs(30), "edge's admin listener")?;
            let mut rows = Vec::new();
            for (load, path) in loads {
                let (a, b, n) = allocs::measure(
                    &generator,
                    &warm,
                    admin,
                    &format!("http://{}{path}", s.addr),
                )?;
                eprintln!(
                    "{title} {load}: {a:.1} allocations, {b:.0} bytes per request ({n} requests)"
                );
                rows.push((load.to_string(), a, b, n));
            }
            drop(s);
            report.push_str(&allocs::table(title, &rows));
        }
        return emit(&args, &report);
    }
    need(&["taskset", "wrk", "nginx", "haproxy"])?;
    release_edge(&mut args)?;
    let dir = work_dir()?;
    let _cleanup = RemoveOnDrop(dir.clone());
    let report = match args.scenario.as_str() {
        "proxy" => {
            let (_origin, origin_port) = start_origin(&dir)?;
            let mut suts = start_proxies(&dir, origin_port, &args, false)?;
            let loads: [Load<'_>; 2] = [
                ("1 KiB responses", "/1k", &[]),
                ("100 KiB responses", "/100k", &[]),
            ];
            let results = measure(&mut suts, &loads, &args, Generator::Wrk { https: false })?;
            let mut out = format!(
                "### L7 proxy (load balancer) through to an nginx origin\n\n{}",
                environment(&args)
            );
            for (title, samples) in &results {
                out.push_str(&report::table(title, samples, title.contains("100")));
            }
            out
        }
        "cache" => {
            need(&["varnishd"])?;
            let (_origin, origin_port) = start_origin(&dir)?;
            let mut suts = start_caches(&dir, origin_port, &args, false)?;
            let loads: [Load<'_>; 4] = [
                ("1 KiB cache hits", "/1k", &[]),
                ("100 KiB cache hits", "/100k", &[]),
                ("2 MiB segment cache hits", "/2m", &[]),
                // A player's byte range of a stored segment (HLS
                // EXT-X-BYTERANGE, DASH SegmentBase): a 206 from the cache.
                (
                    "1 KiB ranges of a 2 MiB segment (cache hits, 206)",
                    "/2m",
                    &["Range: bytes=1048576-1049599"],
                ),
            ];
            let results = measure(&mut suts, &loads, &args, Generator::Wrk { https: false })?;
            let mut out = format!(
                "### Cache hits: edge, nginx proxy_cache, Varnish and HAProxy's cache in front of an nginx origin\n\n{}",
                environment(&args)
            );
            for (title, samples) in &results {
                out.push_str(&report::table(title, samples, !title.starts_with("1 KiB")));
            }
            out
        }
        "https" => {
            need(&["openssl"])?;
            let (_origin, origin_port) = start_origin(&dir)?;
            let mut suts = start_proxies(&dir, origin_port, &args, true)?;
            let loads: [Load<'_>; 1] = [("1 KiB responses over TLS 1.3", "/1k", &[])];
            let results = measure(&mut suts, &loads, &args, Generator::Wrk { https: true })?;
            let mut out = format!(
                "### HTTPS pass-through (TLS 1.3, keep-alive, ECDSA P-256) through to an nginx origin\n\n{}",
                environment(&args)
            );
            for (title, samples) in &results {
                out.push_str(&report::table(title, samples, false));
            }
            out
        }
        "h2" => {
            need(&["varnishd", "h2load"])?;
            let (_origin, origin_port) = start_origin(&dir)?;
            let mut suts = start_caches(&dir, origin_port, &args, true)?;
            let loads: [Load<'_>; 1] = [("1 KiB cache hits over HTTP/2", "/1k", &[])];
            let results = measure(&mut suts, &loads, &args, Generator::H2load)?;
            let mut out = format!(
                "### HTTP/2 cache hits (cleartext, prior knowledge): edge, nginx, Varnish and HAProxy's cache\n\n{}\
                 - h2load in wrk's place: 1 thread, {} connections × 10 streams; it gives no percentiles: the p50 column holds the mean time per request, p99 the longest\n",
                environment(&args),
                (args.connections / 10).max(1),
            );
            for (title, samples) in &results {
                out.push_str(&report::table(title, samples, false));
            }
            out
        }
        other => bail!("unknown scenario {other} (proxy, cache, https, h2, hitratio, audience, dns, tcp, allocs)"),
    };
    emit(&args, &report)
}

/// Removes the work directory however the run ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
