//! `loadbench dns`: edge's DNS side by side with NSD (static answers) and
//! PowerDNS with its GeoIP backend (geo answers by EDNS client subnet),
//! each pinned to CPU 0 with one thread, dnsperf (one thread) on CPU 1.
//! Both geo servers locate clients in the same MaxMind database
//! (dns/tests/data/city.mmdb, from scripts/make-test-mmdb.py).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::report::median;
use crate::sys::{free_port, wait_port, Proc};

const SUT_CPU: usize = 0;
const LOAD_CPU: usize = 1;
/// ECS 198.51.100.0/24 (family 1, source 24, scope 0, 3 address bytes).
const ECS_OPTION: &str = "8:00011800c63364";
const MMDB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../dns/tests/data/city.mmdb");

struct Server {
    name: &'static str,
    addr: SocketAddr,
    proc: Proc,
    /// Serves geo answers.
    geo: bool,
}

/// One dnsperf run.
#[derive(Debug, Clone, Copy)]
pub struct DnsRun {
    pub qps: f64,
    pub avg_us: f64,
    pub stddev_us: f64,
    pub lost: u64,
    pub completed: u64,
}

fn field(text: &str, label: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.trim_start().starts_with(label))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

pub fn parse(text: &str) -> Option<DnsRun> {
    Some(DnsRun {
        qps: field(text, "Queries per second")?,
        avg_us: field(text, "Average Latency (s)")? * 1e6,
        stddev_us: field(text, "Latency StdDev (s)").unwrap_or(0.0) * 1e6,
        lost: field(text, "Queries lost").unwrap_or(0.0) as u64,
        completed: field(text, "Queries completed").unwrap_or(0.0) as u64,
    })
}

fn dnsperf(addr: SocketAddr, queries: &Path, ecs: bool, secs: u64) -> Result<DnsRun> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &LOAD_CPU.to_string(), "dnsperf"])
        .args(["-s", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(["-d", &queries.display().to_string()])
        .args([
            "-l",
            &secs.to_string(),
            "-c",
            "1",
            "-T",
            "1",
            "-q",
            "50",
            "-t",
            "1",
            "-e",
        ]);
    if ecs {
        cmd.args(["-E", ECS_OPTION]);
    }
    let out = cmd.output().context("running dnsperf")?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse(&text).with_context(|| format!("dnsperf output not understood:\n{text}"))
}

fn write(dir: &Path, name: &str, text: &str) -> Result<String> {
    let p = dir.join(name);
    std::fs::write(&p, text)?;
    Ok(p.display().to_string())
}

fn nsd(dir: &Path) -> Result<Server> {
    let port = free_port()?;
    let d = dir.display();
    write(
        dir,
        "bench.test.zone",
        "$ORIGIN bench.test.\n$TTL 300\n@ IN SOA ns1.bench.test. hostmaster.bench.test. 1 7200 3600 86400 60\n@ IN NS ns1.bench.test.\nns1 IN A 192.0.2.53\nstatic IN A 192.0.2.80\n",
    )?;
    // NSD's response rate limiting is on by default; off, as for the others.
    let conf = write(
        dir,
        "nsd.conf",
        &format!(
            "server:\n  ip-address: 127.0.0.1@{port}\n  server-count: 1\n  username: \"\"\n  zonesdir: \"{d}\"\n  database: \"\"\n  zonelistfile: \"{d}/zone.list\"\n  xfrdfile: \"{d}/xfrd.state\"\n  pidfile: \"{d}/nsd.pid\"\n  logfile: \"{d}/nsd.log\"\n  verbosity: 0\n  rrl-ratelimit: 0\nremote-control:\n  control-enable: no\nzone:\n  name: bench.test\n  zonefile: bench.test.zone\n"
        ),
    )?;
    Ok(Server {
        name: "nsd",
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        proc: Proc::spawn("nsd", Some(SUT_CPU), "nsd", &["-d", "-c", &conf], dir)?,
        geo: false,
    })
}

fn powerdns(dir: &Path) -> Result<Server> {
    let port = free_port()?;
    let d = dir.display();
    write(
        dir,
        "geo.yaml",
        "domains:\n- domain: bench.test\n  ttl: 300\n  records:\n    bench.test:\n      - soa: ns1.bench.test hostmaster.bench.test 1 7200 3600 86400 60\n      - ns: ns1.bench.test\n    ns1.bench.test:\n      - a: 192.0.2.53\n    static.bench.test:\n      - a: 192.0.2.80\n    eu.video.bench.test:\n      - a: 192.0.2.10\n    na.video.bench.test:\n      - a: 198.51.100.10\n    as.video.bench.test:\n      - a: 203.0.113.10\n    unknown.video.bench.test:\n      - a: 192.0.2.10\n  services:\n    video.bench.test: '%cn.video.bench.test'\n",
    )?;
    write(
        dir,
        "pdns.conf",
        &format!(
            "launch=geoip\ngeoip-database-files=mmdb:{MMDB}\ngeoip-zones-file={d}/geo.yaml\nedns-subnet-processing=yes\nlocal-address=127.0.0.1:{port}\nreceiver-threads=1\ndistributor-threads=1\ndaemon=no\nguardian=no\nsocket-dir={d}\ndisable-syslog=yes\nloglevel=3\nwebserver=no\nsecurity-poll-suffix=\n"
        ),
    )?;
    Ok(Server {
        name: "powerdns",
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        proc: Proc::spawn(
            "powerdns",
            Some(SUT_CPU),
            "pdns_server",
            &[&format!("--config-dir={d}")],
            dir,
        )?,
        geo: true,
    })
}

fn edge(dir: &Path, bin: &Path, name: &'static str) -> Result<Server> {
    let port = free_port()?;
    let conf = write(
        dir,
        &format!("{name}-dns.toml"),
        &format!(
            r#"[server]
threads = 1
access_log = false

[admin]
listen = "127.0.0.1:0"

[[listener]]
name = "dns"
kind = "dns"
address = "127.0.0.1:{port}"

[dns]
threads = 1

[[dns.zone]]
name = "bench.test."
ttl = 300
ns = ["ns1.bench.test."]
soa = {{ mname = "ns1.bench.test.", rname = "hostmaster.bench.test.", serial = 1, refresh = "2h", retry = "1h", expire = "1d", minimum = "60s" }}
records = [
  {{ name = "ns1", type = "A", value = "192.0.2.53" }},
  {{ name = "static", type = "A", value = "192.0.2.80" }},
]

[[dns.zone.geo]]
name = "video"
policy = "nearest"
ttl = 300
default_sites = ["eu"]

[[dns.site]]
name = "eu"
lat = 50.1
lon = 8.7
ipv4 = ["192.0.2.10"]

[[dns.site]]
name = "na"
lat = 39.0
lon = -77.5
ipv4 = ["198.51.100.10"]

[[dns.site]]
name = "as"
lat = 1.35
lon = 103.82
ipv4 = ["203.0.113.10"]

[dns.locator]
mmdb = "{MMDB}"
"#
        ),
    )?;
    Ok(Server {
        name,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        proc: Proc::spawn(
            name,
            Some(SUT_CPU),
            &bin.display().to_string(),
            &["run", "--config", &conf],
            dir,
        )?,
        geo: true,
    })
}

struct Series {
    server: &'static str,
    runs: Vec<(DnsRun, f64)>,
}

fn table(title: &str, series: &[Series]) -> String {
    let med =
        |s: &Series, f: &dyn Fn(&DnsRun) -> f64| median(s.runs.iter().map(|(r, _)| f(r)).collect());
    let cpu = |s: &Series| median(s.runs.iter().map(|(_, c)| *c).collect());
    let mut out = format!(
        "\n#### {title}\n\n| server | queries/s | avg latency µs | latency stddev µs | CPU µs/query | lost |\n|---|---:|---:|---:|---:|---:|\n"
    );
    for s in series {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.0} | {:.2} | {} |",
            s.server,
            med(s, &|r| r.qps),
            med(s, &|r| r.avg_us),
            med(s, &|r| r.stddev_us),
            cpu(s),
            s.runs.iter().map(|(r, _)| r.lost).sum::<u64>()
        );
    }
    if let Some(e) = series.iter().find(|s| s.server == "edge") {
        out.push_str(
            "\n| edge ÷ peer | queries/s | avg latency | CPU/query |\n|---|---:|---:|---:|\n",
        );
        for p in series.iter().filter(|s| s.server != "edge") {
            let _ = writeln!(
                out,
                "| edge ÷ {} | {:.2} | {:.2} | {:.2} |",
                p.server,
                med(e, &|r| r.qps) / med(p, &|r| r.qps),
                med(e, &|r| r.avg_us) / med(p, &|r| r.avg_us),
                cpu(e) / cpu(p)
            );
        }
    }
    out
}

/// Runs the DNS scenario and returns its markdown section.
/// `baseline`: another edge binary run beside (as `edge-baseline`).
pub fn run(
    dir: &Path,
    edge_bin: &Path,
    baseline: Option<&Path>,
    reps: usize,
    secs: u64,
) -> Result<String> {
    if !Path::new(MMDB).exists() {
        bail!("{MMDB} is missing (scripts/make-test-mmdb.py writes it)");
    }
    let mut servers = vec![nsd(dir)?, powerdns(dir)?, edge(dir, edge_bin, "edge")?];
    if let Some(b) = baseline {
        servers.push(edge(dir, b, "edge-baseline")?);
    }
    for s in &servers {
        wait_port(s.addr, Duration::from_secs(30), s.name)?;
    }
    let static_q = dir.join("static.txt");
    std::fs::write(&static_q, "static.bench.test A\n")?;
    let geo_q = dir.join("geo.txt");
    std::fs::write(&geo_q, "video.bench.test A\n")?;
    let loads: [(&str, &Path, bool); 2] = [
        ("static A record", &static_q, false),
        ("geo A record with EDNS client subnet", &geo_q, true),
    ];
    let mut results: Vec<Vec<Series>> = loads
        .iter()
        .map(|(_, _, geo)| {
            servers
                .iter()
                .filter(|s| !geo || s.geo)
                .map(|s| Series {
                    server: s.name,
                    runs: Vec::new(),
                })
                .collect()
        })
        .collect();
    // Warm-up.
    for s in &servers {
        dnsperf(s.addr, &static_q, false, 1)?;
    }
    for round in 0..reps {
        for (li, (title, file, geo)) in loads.iter().enumerate() {
            let order: Vec<usize> = (0..servers.len())
                .filter(|&i| !geo || servers[i].geo)
                .collect();
            for k in 0..order.len() {
                let i = order[(k + round) % order.len()];
                let s = &mut servers[i];
                if !s.proc.alive() {
                    bail!("{} exited during the run", s.name);
                }
                let before = s.proc.cpu();
                let r = dnsperf(s.addr, file, *geo, secs)?;
                let cpu = s.proc.cpu().saturating_sub(before);
                let per_query = cpu.as_secs_f64() * 1e6 / r.completed.max(1) as f64;
                eprintln!(
                    "round {} {title} {:<8} {:>9.0} q/s avg {:>6.0} µs cpu {:>5.2} µs/q lost {}",
                    round + 1,
                    s.name,
                    r.qps,
                    r.avg_us,
                    per_query,
                    r.lost
                );
                if let Some(series) = results[li].iter_mut().find(|x| x.server == s.name) {
                    series.runs.push((r, per_query));
                }
            }
        }
    }
    let mut out = String::new();
    for ((title, _, _), series) in loads.iter().zip(&results) {
        out.push_str(&table(title, series));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_dnsperf_output() {
        let text = "Statistics:\n\n  Queries sent:         1186\n  Queries completed:    786 (66.27%)\n  Queries lost:         400 (33.73%)\n\n  Run time (s):         4.000257\n  Queries per second:   196.487376\n\n  Average Latency (s):  0.000421 (min 0.000016, max 0.001761)\n  Latency StdDev (s):   0.000434\n";
        let r = super::parse(text).unwrap();
        assert_eq!((r.completed, r.lost), (786, 400));
        assert!((r.qps - 196.487).abs() < 0.01);
        assert!((r.avg_us - 421.0).abs() < 0.5);
    }
}
