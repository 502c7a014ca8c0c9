//! GeoDNS end to end: the `edge` binary with a `dns` listener on port 0,
//! queried over UDP and TCP by a real DNS client from different source
//! addresses in 127.0.0.0/8.

// Helpers in test files may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::time::Duration;

use edge_testkit::dns::{addresses, subnet_scope, DnsType, ResponseCode};
use edge_testkit::{eventually, origin, Client, DnsClient, DnsQuery, EdgeNode, RunningOrigin};
use http::Method;

const BIN: &str = env!("CARGO_BIN_EXE_edge");
const TOKEN: &str = "dns-test-token-0123456789";

/// Three sites (Amsterdam, New York, Singapore), `video` a geo name, and
/// sources 127.0.1.0/24 in Europe, 127.0.2.0/24 in the US.
fn config(health: Option<(&RunningOrigin, &RunningOrigin)>, rrl: &str) -> String {
    let check = |o: Option<&RunningOrigin>| {
        match o {
        Some(o) => format!(
            "[dns.site.health]\nurls = [\"http://{}/_origin/health\"]\ninterval = \"100ms\"\ntimeout = \"500ms\"\nrise = 2\nfall = 2\n",
            o.addr()
        ),
        None => String::new(),
    }
    };
    let txt: Vec<String> = (0..20)
        .map(|i| {
            format!(
                "  {{ name = \"big\", type = \"TXT\", value = \"record {i:02} {}\" }},",
                "x".repeat(60)
            )
        })
        .collect();
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"

[[listener]]
name = "dns"
kind = "dns"
address = "127.0.0.1:0"

[dns]
all_sites_down = "servfail"

[[dns.zone]]
name = "cdn.test."
ttl = 300
ns = ["ns1.cdn.test."]
soa = {{ mname = "ns1.cdn.test.", rname = "hostmaster.cdn.test.", serial = 1, minimum = "30s" }}
records = [
  {{ name = "ns1", type = "A", value = "192.0.2.53" }},
  {{ name = "www", type = "CNAME", value = "video.cdn.test." }},
  {{ name = "mail", type = "A", value = "192.0.2.25" }},
{}
]

[[dns.zone.geo]]
name = "video"
policy = "nearest"
ttl = 20
default_sites = ["ams"]

[[dns.site]]
name = "ams"
lat = 52.37
lon = 4.90
region = "eu"
ipv4 = ["192.0.2.10"]
ipv6 = ["2001:db8:10::1"]
{}
[[dns.site]]
name = "nyc"
lat = 40.71
lon = -74.01
region = "us"
ipv4 = ["198.51.100.10"]
{}
[[dns.site]]
name = "sin"
lat = 1.35
lon = 103.82
region = "ap"
ipv4 = ["203.0.113.10"]

[dns.locator]
cidr = [
  {{ prefix = "127.0.1.0/24", lat = 48.85, lon = 2.35, region = "eu" }},
  {{ prefix = "127.0.2.0/24", lat = 42.36, lon = -71.06, region = "us" }},
  {{ prefix = "10.20.0.0/16", lat = 35.68, lon = 139.69, region = "ap" }},
  {{ prefix = "10.30.0.0/16", lat = 40.0, lon = -75.0 }},
]
{rrl}
"#,
        txt.join("\n"),
        check(health.map(|h| h.0)),
        check(health.map(|h| h.1)),
    )
}

fn start(config: &str) -> (EdgeNode, DnsClient) {
    let node = EdgeNode::start(BIN, config);
    let dns = DnsClient::new(node.addr("dns"));
    (node, dns)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

async fn video(dns: &DnsClient, from: &str) -> Vec<IpAddr> {
    let m = dns
        .clone()
        .from_ip(from)
        .udp(&DnsQuery::new("video.cdn.test.", DnsType::A))
        .await
        .unwrap();
    addresses(&m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_get_the_nearest_site_by_subnet_or_source_address() {
    let (_node, dns) = start(&config(None, ""));
    // By EDNS client subnet.
    let m = dns
        .udp(&DnsQuery::new("video.cdn.test.", DnsType::A).subnet("10.20.5.0", 24))
        .await
        .unwrap();
    assert_eq!(addresses(&m), [ip("203.0.113.10")], "Tokyo → Singapore");
    assert_eq!(subnet_scope(&m), Some((24, 16)), "scope of the /16 matched");
    let m = dns
        .udp(&DnsQuery::new("video.cdn.test.", DnsType::A).subnet("10.30.0.0", 20))
        .await
        .unwrap();
    assert_eq!(addresses(&m), [ip("198.51.100.10")]);
    assert_eq!(subnet_scope(&m), Some((20, 16)));
    // Unknown subnet: the default site; the answer holds for the whole source prefix.
    let m = dns
        .udp(&DnsQuery::new("video.cdn.test.", DnsType::A).subnet("192.0.2.0", 24))
        .await
        .unwrap();
    assert_eq!(addresses(&m), [ip("192.0.2.10")]);
    assert_eq!(subnet_scope(&m), Some((24, 24)));
    // A non-geo name: scope 0, it is the same for everyone.
    let m = dns
        .udp(&DnsQuery::new("mail.cdn.test.", DnsType::A).subnet("10.20.5.0", 24))
        .await
        .unwrap();
    assert_eq!(subnet_scope(&m), Some((24, 0)));
    // Bad ECS (bits set past the source prefix) is a FORMERR.
    let m = dns
        .udp(&DnsQuery::new("video.cdn.test.", DnsType::A).subnet("10.20.7.0", 22))
        .await
        .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);

    // By source address.
    assert_eq!(video(&dns, "127.0.1.9").await, [ip("192.0.2.10")]);
    assert_eq!(video(&dns, "127.0.2.9").await, [ip("198.51.100.10")]);
    // AAAA: only Amsterdam has IPv6.
    let m = dns
        .clone()
        .from_ip("127.0.2.9")
        .udp(&DnsQuery::new("video.cdn.test.", DnsType::AAAA))
        .await
        .unwrap();
    assert_eq!(addresses(&m), [ip("2001:db8:10::1")]);
    // A CNAME to the geo name is followed.
    let m = dns
        .clone()
        .from_ip("127.0.2.9")
        .tcp(&DnsQuery::new("www.cdn.test.", DnsType::A))
        .await
        .unwrap();
    assert_eq!(m.answers.len(), 2);
    assert_eq!(addresses(&m), [ip("198.51.100.10")]);
    assert!(m.metadata.authoritative);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_that_fails_its_checks_leaves_the_answers_and_returns() {
    let (ams, nyc) = (origin("ams").await, origin("nyc").await);
    let (node, dns) = start(&config(Some((&ams, &nyc)), ""));
    assert_eq!(video(&dns, "127.0.1.9").await, [ip("192.0.2.10")]);
    ams.set_health_status(503);
    // interval × fall = 200 ms; the deadline only bounds the wait.
    eventually(Duration::from_secs(5), "Amsterdam withdrawn", || async {
        (video(&dns, "127.0.1.9").await == [ip("198.51.100.10")]).then_some(())
    })
    .await;
    let sites = Client::new()
        .get(&node.admin_url("/dns/sites"))
        .await
        .json();
    assert_eq!(sites[0]["name"], "ams");
    assert_eq!(sites[0]["healthy"], false);
    assert!(sites[0]["nodes"][0]["last_error"]
        .as_str()
        .unwrap()
        .contains("503"));
    ams.set_health_status(200);
    eventually(Duration::from_secs(5), "Amsterdam back", || async {
        (video(&dns, "127.0.1.9").await == [ip("192.0.2.10")]).then_some(())
    })
    .await;
    // Every checked site down: SERVFAIL (configured), not a dead address.
    ams.set_health_status(500);
    nyc.set_health_status(500);
    eventually(Duration::from_secs(5), "both down", || async {
        let m = dns
            .clone()
            .from_ip("127.0.1.9")
            .udp(&DnsQuery::new("video.cdn.test.", DnsType::A))
            .await
            .ok()?;
        // Singapore has no checks: it stays up and takes everyone.
        (addresses(&m) == [ip("203.0.113.10")]).then_some(())
    })
    .await;
    let metrics = Client::new().get(&node.admin_url("/metrics")).await.text();
    assert!(
        metrics.contains("edge_dns_site_up{site=\"ams\"} 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_drains_a_site_with_the_token_only() {
    let (node, dns) = start(&config(None, ""));
    let c = Client::new();
    let url = node.admin_url("/dns/sites/ams/drain");
    let r = c.request(Method::POST, &url, &[], "").await.unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(video(&dns, "127.0.1.9").await, [ip("192.0.2.10")]);
    let auth = format!("Bearer {TOKEN}");
    let r = c
        .request(Method::POST, &url, &[("authorization", &auth)], "")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(video(&dns, "127.0.1.9").await, [ip("198.51.100.10")]);
    let sites = c.get(&node.admin_url("/dns/sites")).await.json();
    assert_eq!(
        (sites[0]["drained"].as_bool(), sites[0]["up"].as_bool()),
        (Some(true), Some(false))
    );
    let r = c
        .request(
            Method::POST,
            &node.admin_url("/dns/sites/nope/drain"),
            &[("authorization", &auth)],
            "",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    let r = c
        .request(
            Method::POST,
            &node.admin_url("/dns/sites/ams/undrain"),
            &[("authorization", &auth)],
            "",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(video(&dns, "127.0.1.9").await, [ip("192.0.2.10")]);
}

/// The packet cache (PowerDNS's idea) over real sockets: repeated queries
/// are answered from it with their own ID and case; a geo answer located
/// by the source address is that client's only, one located by ECS is the
/// subnet's; a drain changes the next answer at once; every answer is
/// still counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_packet_cache_answers_repeats_per_client_and_forgets_on_change() {
    let (node, dns) = start(&config(None, ""));
    let mut asked = 0;
    // The same bytes from two sources, interleaved: each its own site.
    for _ in 0..3 {
        assert_eq!(video(&dns, "127.0.1.9").await, [ip("192.0.2.10")]);
        assert_eq!(video(&dns, "127.0.2.9").await, [ip("198.51.100.10")]);
        assert_eq!(
            video(&dns, "127.0.9.9").await,
            [ip("192.0.2.10")],
            "default"
        );
        asked += 3;
    }
    // By subnet: the subnet decides, whoever asks.
    for from in ["127.0.1.9", "127.0.2.9", "127.0.1.9"] {
        let m = dns
            .clone()
            .from_ip(from)
            .udp(&DnsQuery::new("video.cdn.test.", DnsType::A).subnet("10.20.5.0", 24))
            .await
            .unwrap();
        assert_eq!(addresses(&m), [ip("203.0.113.10")], "{from}");
        asked += 1;
    }
    // Each answer carries its own query's ID, and the question's case.
    let mut packet = DnsQuery::new("ViDeO.cDn.TeSt.", DnsType::A).to_bytes();
    for id in [0x1234u16, 0x4321, 0xffff, 0] {
        packet[..2].copy_from_slice(&id.to_be_bytes());
        let raw = dns
            .clone()
            .from_ip("127.0.1.9")
            .udp_raw(&packet)
            .await
            .unwrap();
        let m = edge_testkit::dns::DnsMessage::from_vec(&raw).unwrap();
        assert_eq!(m.metadata.id, id);
        assert_eq!(m.answers[0].name.to_ascii(), "ViDeO.cDn.TeSt.");
        assert_eq!(addresses(&m), [ip("192.0.2.10")]);
        asked += 1;
    }
    // The same query over TCP is answered whole (not a UDP answer's TC).
    let big = DnsQuery::new("big.cdn.test.", DnsType::TXT).without_edns();
    for _ in 0..2 {
        assert!(dns.udp(&big).await.unwrap().metadata.truncation);
        let m = dns.tcp(&big).await.unwrap();
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 20);
    }
    // A drain takes effect on the very next answer, cached or not.
    let c = Client::new();
    let auth = format!("Bearer {TOKEN}");
    let r = c
        .request(
            Method::POST,
            &node.admin_url("/dns/sites/ams/drain"),
            &[("authorization", &auth)],
            "",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(video(&dns, "127.0.1.9").await, [ip("198.51.100.10")]);
    let r = c
        .request(
            Method::POST,
            &node.admin_url("/dns/sites/ams/undrain"),
            &[("authorization", &auth)],
            "",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(video(&dns, "127.0.1.9").await, [ip("192.0.2.10")]);
    asked += 2;
    // Counted: every A query of the zone, hits included.
    let metrics = c.get(&node.admin_url("/metrics")).await.text();
    let sum = |prefix: &str, must: &[&str]| -> u64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix) && must.iter().all(|m| l.contains(m)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(
        sum("edge_dns_queries_total{", &["qtype=\"A\"", "cdn.test"]),
        asked,
        "{metrics}"
    );
    assert!(
        sum("edge_dns_packet_cache_total{", &["result=\"hit\""]) >= 8,
        "{metrics}"
    );
    assert_eq!(
        sum("edge_dns_geo_answers_total{", &[]),
        asked,
        "every geo answer counted by site"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_answers_truncation_and_refusals() {
    let (_node, dns) = start(&config(None, ""));
    // A large answer: TC over UDP without EDNS (512) and with it (1232), whole over TCP.
    let big = DnsQuery::new("big.cdn.test.", DnsType::TXT);
    let m = dns.udp(&big.clone().without_edns()).await.unwrap();
    assert!(m.metadata.truncation && m.answers.is_empty());
    let m = dns.udp(&big).await.unwrap();
    assert!(m.metadata.truncation, "20 × 70 bytes > 1232");
    let m = dns.tcp(&big).await.unwrap();
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 20);

    let refused = dns
        .udp(&DnsQuery::new("example.com.", DnsType::A))
        .await
        .unwrap();
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
    assert!(!refused.metadata.authoritative && !refused.metadata.recursion_available);

    let nx = dns
        .udp(&DnsQuery::new("nope.cdn.test.", DnsType::A))
        .await
        .unwrap();
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert!(nx.answers.is_empty());
    assert_eq!(nx.authorities.len(), 1);
    assert_eq!(nx.authorities[0].record_type(), DnsType::SOA);
    assert_eq!(nx.authorities[0].ttl, 30, "the SOA minimum");

    let nodata = dns
        .udp(&DnsQuery::new("mail.cdn.test.", DnsType::MX))
        .await
        .unwrap();
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    assert_eq!(nodata.authorities[0].record_type(), DnsType::SOA);
    let geo_nodata = dns
        .tcp(&DnsQuery::new("video.cdn.test.", DnsType::TXT))
        .await
        .unwrap();
    assert_eq!(
        (geo_nodata.metadata.response_code, geo_nodata.answers.len()),
        (ResponseCode::NoError, 0)
    );

    let any = dns
        .udp(&DnsQuery::new("cdn.test.", DnsType::ANY))
        .await
        .unwrap();
    assert_eq!(any.answers.len(), 1, "RFC 8482: one small answer to ANY");
    let soa = dns
        .udp(&DnsQuery::new("CDN.Test.", DnsType::SOA))
        .await
        .unwrap();
    assert_eq!(soa.answers.len(), 1, "names are case-insensitive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_never_stops_the_server() {
    let (node, dns) = start(&config(None, ""));
    let dns = dns.with_timeout(Duration::from_millis(40));
    let good = DnsQuery::new("mail.cdn.test.", DnsType::A).to_bytes();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut answered = 0;
    for i in 0..500 {
        let packet: Vec<u8> = match i % 3 {
            // Random bytes of random length.
            0 => (0..(next() % 600) as usize).map(|_| next() as u8).collect(),
            // A real query cut short.
            1 => good[..(next() as usize % good.len())].to_vec(),
            // A real query with some bytes flipped.
            _ => {
                let mut p = good.clone();
                for _ in 0..3 {
                    let at = next() as usize % p.len();
                    p[at] ^= next() as u8;
                }
                p
            }
        };
        if dns.udp_raw(&packet).await.is_some() {
            answered += 1;
        }
    }
    assert!(
        answered > 0,
        "malformed queries with a readable header get FORMERR"
    );
    let m = dns
        .clone()
        .with_timeout(Duration::from_secs(2))
        .udp(&DnsQuery::new("mail.cdn.test.", DnsType::A))
        .await
        .unwrap();
    assert_eq!(addresses(&m), [ip("192.0.2.25")]);
    let m = dns
        .clone()
        .with_timeout(Duration::from_secs(2))
        .tcp(&DnsQuery::new("mail.cdn.test.", DnsType::A))
        .await
        .unwrap();
    assert_eq!(addresses(&m), [ip("192.0.2.25")]);
    let metrics = Client::new().get(&node.admin_url("/metrics")).await.text();
    assert!(metrics.contains("edge_dns_malformed_total"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limiting_holds_back_one_prefix_and_not_another() {
    let rrl = "[dns.rrl]\nresponses_per_second = 5\nwindow = \"5s\"\nslip = 2\nipv4_prefix = 24\n";
    let (node, dns) = start(&config(None, rrl));
    let q = DnsQuery::new("mail.cdn.test.", DnsType::A);
    let flood = dns
        .clone()
        .from_ip("127.0.3.7")
        .with_timeout(Duration::from_millis(300));
    // 40 at once: far past 5 per second.
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let (c, q) = (flood.clone(), q.clone());
            tokio::spawn(async move { c.udp(&q).await })
        })
        .collect();
    let (mut full, mut truncated, mut silent) = (0, 0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(m) if m.metadata.truncation => truncated += 1,
            Ok(_) => full += 1,
            Err(_) => silent += 1,
        }
    }
    assert!(
        (5..=7).contains(&full),
        "{full} full answers to a burst at 5/s"
    );
    assert!(
        truncated > 0 && silent > 0,
        "slip 2: some truncated, some dropped ({full}/{truncated}/{silent})"
    );
    // Another prefix is answered in full; TCP always is.
    let other = dns.clone().from_ip("127.0.4.7");
    for _ in 0..5 {
        let m = other.udp(&q).await.unwrap();
        assert!(!m.metadata.truncation);
    }
    assert!(
        !flood
            .clone()
            .with_timeout(Duration::from_secs(2))
            .tcp(&q)
            .await
            .unwrap()
            .metadata
            .truncation
    );
    let metrics = Client::new().get(&node.admin_url("/metrics")).await.text();
    assert!(
        metrics.contains("edge_dns_rrl_total{action=\"drop\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_change_answers_without_dropping_queries() {
    let (node, dns) = start(&config(None, ""));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let querier = {
        let (dns, stop) = (dns.clone().from_ip("127.0.1.9"), stop.clone());
        tokio::spawn(async move {
            let (mut answered, mut lost) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match dns.udp(&DnsQuery::new("video.cdn.test.", DnsType::A)).await {
                    Ok(m) if m.metadata.response_code == ResponseCode::NoError => answered += 1,
                    _ => lost += 1,
                }
            }
            (answered, lost)
        })
    };
    // Move Europe's clients to New York, then back, a few times.
    let original = config(None, "");
    let moved = original.replace(
        "lat = 48.85, lon = 2.35, region = \"eu\"",
        "lat = 40.0, lon = -74.0, region = \"us\"",
    );
    assert_ne!(original, moved);
    for round in 0..3 {
        node.write_config(&moved);
        node.signal(nix::sys::signal::Signal::SIGHUP);
        eventually(Duration::from_secs(10), "the moved locator", || async {
            (video(&dns, "127.0.1.9").await == [ip("198.51.100.10")]).then_some(())
        })
        .await;
        node.write_config(&original);
        node.signal(nix::sys::signal::Signal::SIGHUP);
        eventually(Duration::from_secs(10), "the original locator", || async {
            (video(&dns, "127.0.1.9").await == [ip("192.0.2.10")]).then_some(())
        })
        .await;
        let _ = round;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (answered, lost) = querier.await.unwrap();
    assert!(answered > 10, "{answered}");
    assert_eq!(lost, 0, "queries lost across reloads");
}

/// A zone from an RFC 1035 master file: served over UDP and TCP, reloaded
/// with SIGHUP when it changes, and a broken file keeps the zone as it was
/// (and `edge check` names the file and line).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_files_load_reload_and_a_bad_one_keeps_the_old_zone() {
    let dir = tempfile::tempdir().unwrap();
    let zone = dir.path().join("files.test.zone");
    let write_zone = |serial: u32, www: &str, extra: &str| {
        std::fs::write(
            &zone,
            format!(
                "$ORIGIN files.test.\n$TTL 600\n@ SOA ns1 hostmaster ( {serial} 3600 600 604800 60 )\n  NS ns1\nns1 A 192.0.2.53\nwww A {www}\n*.wild TXT \"any\"\nsub NS ns.sub\nns.sub A 192.0.2.54\n{extra}"
            ),
        )
        .unwrap();
    };
    write_zone(1, "192.0.2.80", "");
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\n[[listener]]\nname = \"dns\"\nkind = \"dns\"\naddress = \"127.0.0.1:0\"\n\n[[dns.zone]]\nname = \"files.test.\"\nfile = \"{}\"\nrecords = [ {{ name = \"toml\", type = \"MX\", value = \"10 www\" }} ]\n",
        zone.display()
    );
    let node = EdgeNode::start(BIN, &config);
    let dns = DnsClient::new(node.addr("dns"));
    let q = DnsQuery::new("www.files.test.", DnsType::A);
    for m in [dns.udp(&q).await.unwrap(), dns.tcp(&q).await.unwrap()] {
        assert_eq!(addresses(&m), vec!["192.0.2.80".parse::<IpAddr>().unwrap()]);
        assert!(m.metadata.authoritative);
    }
    let m = dns
        .udp(&DnsQuery::new("x.wild.files.test.", DnsType::TXT))
        .await
        .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 1, "the wildcard answers");
    let m = dns
        .udp(&DnsQuery::new("a.sub.files.test.", DnsType::A))
        .await
        .unwrap();
    assert!(!m.metadata.authoritative, "a referral");
    assert_eq!(m.authorities.len(), 1);
    assert_eq!(addresses(&m), Vec::<IpAddr>::new());
    let m = dns
        .udp(&DnsQuery::new("toml.files.test.", DnsType::MX))
        .await
        .unwrap();
    assert_eq!(m.answers.len(), 1, "TOML records beside the file's");

    // The file changes: SIGHUP serves the new data.
    write_zone(2, "192.0.2.81", "new A 192.0.2.82\n");
    node.signal(nix::sys::signal::Signal::SIGHUP);
    eventually(Duration::from_secs(10), "the new zone", || async {
        let m = dns.udp(&q).await.ok()?;
        (addresses(&m) == vec!["192.0.2.81".parse::<IpAddr>().unwrap()]).then_some(())
    })
    .await;
    let m = dns
        .udp(&DnsQuery::new("new.files.test.", DnsType::A))
        .await
        .unwrap();
    assert_eq!(addresses(&m), vec!["192.0.2.82".parse::<IpAddr>().unwrap()]);

    // A broken file: the reload is refused with the file and line, and the
    // zone stays as it was.
    write_zone(3, "192.0.2.99", "bad A 300.1.2.3\n");
    let r = Client::new()
        .request(
            Method::POST,
            &node.admin_url("/reload"),
            &[("authorization", &format!("Bearer {TOKEN}"))],
            "",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(r.text().contains("files.test.zone:10"), "{}", r.text());
    let m = dns.udp(&q).await.unwrap();
    assert_eq!(addresses(&m), vec!["192.0.2.81".parse::<IpAddr>().unwrap()]);
    // edge check says the same.
    let out = std::process::Command::new(BIN)
        .arg("check")
        .arg(node.config_path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("files.test.zone:10"), "{text}");
}

/// Runs `dig` (BIND's, a real client that checks TSIG) against the node.
fn dig(node: &EdgeNode, args: &[&str]) -> String {
    let addr = node.addr("dns");
    let out = std::process::Command::new("dig")
        .arg(format!("@{}", addr.ip()))
        .args(["-p", &addr.port().to_string(), "+tries=1", "+time=5"])
        .args(args)
        .output()
        .expect("dig (bind9-dnsutils; make test installs it)");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits for a NOTIFY on `secondary`, acknowledges it; its SOA serial.
async fn notified(secondary: &tokio::net::UdpSocket) -> u32 {
    let mut buf = [0u8; 512];
    let (n, from) = tokio::time::timeout(Duration::from_secs(10), secondary.recv_from(&mut buf))
        .await
        .expect("a NOTIFY")
        .unwrap();
    let m = hickory_proto::op::Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(m.metadata.op_code, hickory_proto::op::OpCode::Notify);
    assert!(m.metadata.authoritative);
    let mut reply = m.clone();
    reply.metadata.message_type = hickory_proto::op::MessageType::Response;
    reply.answers.clear();
    secondary
        .send_to(&reply.to_vec().unwrap(), from)
        .await
        .unwrap();
    match &m.answers[0].data {
        hickory_proto::rr::RData::SOA(s) => s.serial,
        other => panic!("{other:?}"),
    }
}

/// Zone transfers to the secondaries a zone names, signed with TSIG, in
/// several messages for a large zone, IXFR answered in full or as
/// up to date, and NOTIFY on a serial change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_transfers_with_tsig_to_allowed_secondaries_and_notify() {
    const SECRET: &str = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ==";
    let dir = tempfile::tempdir().unwrap();
    let zone = dir.path().join("xfr.test.zone");
    let write_zone = |serial: u32| {
        let mut text = format!(
            "$ORIGIN xfr.test.\n$TTL 600\n@ SOA ns1 hostmaster {serial} 3600 600 604800 60\n  NS ns1\nns1 A 192.0.2.53\n"
        );
        // About 60 KB of records: several messages.
        for i in 0..1200 {
            text.push_str(&format!(
                "r{i} TXT \"record number {i} of the transfer test\"\n"
            ));
        }
        std::fs::write(&zone, text).unwrap();
    };
    write_zone(10);
    let secondary = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\n[[listener]]\nname = \"dns\"\nkind = \"dns\"\naddress = \"127.0.0.1:0\"\n\n[[dns.tsig_key]]\nname = \"xfr-key\"\nalgorithm = \"hmac-sha256\"\nsecret = \"{SECRET}\"\n\n[[dns.zone]]\nname = \"xfr.test.\"\nfile = \"{}\"\ntransfer = {{ allow = [\"127.0.0.1\"], key = \"xfr-key\", notify = [\"{}\"] }}\ngeo = [ {{ name = \"video\", sites = [\"ams\"] }} ]\n\n[[dns.site]]\nname = \"ams\"\nlat = 52.37\nlon = 4.90\nipv4 = [\"192.0.2.10\"]\n",
        zone.display(),
        secondary.local_addr().unwrap()
    );
    let node = EdgeNode::start(BIN, &config);
    let key = format!("hmac-sha256:xfr-key:{SECRET}");
    let key512 = format!("hmac-sha512:xfr-key:{SECRET}");

    // NOTIFY for the zone as it is loaded.
    assert_eq!(notified(&secondary).await, 10);

    // Signed, from an allowed address: the whole zone, in several messages,
    // every one verified by dig.
    let out = dig(&node, &["-y", &key, "xfr.test.", "AXFR"]);
    // dig checks each message's TSIG (";; Couldn't verify signature" else).
    assert!(
        !out.contains("Transfer failed") && !out.contains("verify"),
        "{out}"
    );
    assert!(out.contains("r1199.xfr.test."), "{out}");
    assert!(
        out.contains("video.xfr.test.") && out.contains("192.0.2.10"),
        "geo default answer: {out}"
    );
    let size = out
        .lines()
        .find(|l| l.starts_with(";; XFR size"))
        .unwrap_or_else(|| panic!("{out}"));
    // SOA, NS, ns1 A, 1200 TXT, video A, SOA.
    assert!(size.contains("1205 records"), "{size}");
    let messages: usize = size
        .split("messages ")
        .nth(1)
        .and_then(|m| m.split(',').next())
        .and_then(|m| m.trim().parse().ok())
        .unwrap();
    assert!(messages >= 3, "{size}");

    // Unsigned, with a wrong key, or from an address not allowed: refused.
    for args in [
        vec!["xfr.test.", "AXFR"],
        vec![
            "-y",
            "hmac-sha256:xfr-key:d3JvbmctZnJvbmctd3JvbmctPT09PQ==",
            "xfr.test.",
            "AXFR",
        ],
        vec!["-b", "127.0.0.2", "-y", &key, "xfr.test.", "AXFR"],
        // The right secret under another algorithm: BADKEY.
        vec!["-y", &key512, "xfr.test.", "AXFR"],
    ] {
        let out = dig(&node, &args);
        assert!(!out.contains("r1199.xfr.test."), "{args:?}: {out}");
        assert!(
            out.contains("Transfer failed")
                || out.contains("NOTAUTH")
                || out.contains("REFUSED")
                || out.contains("tsig"),
            "{args:?}: {out}"
        );
    }
    // Not a zone apex.
    let out = dig(&node, &["-y", &key, "r1.xfr.test.", "AXFR"]);
    assert!(!out.contains("r1199.xfr.test."), "{out}");

    // IXFR: from an older serial, the whole zone; from ours, the SOA.
    let out = dig(&node, &["-y", &key, "xfr.test.", "IXFR=9"]);
    assert!(out.contains("r1199.xfr.test."), "{out}");
    let out = dig(&node, &["-y", &key, "xfr.test.", "IXFR=10"]);
    assert!(
        !out.contains("r1.xfr.test.") && out.contains("SOA"),
        "{out}"
    );

    // A new serial on reload: NOTIFY again.
    write_zone(11);
    node.signal(nix::sys::signal::Signal::SIGHUP);
    assert_eq!(notified(&secondary).await, 11);
}

/// Every UDP socket is read: three `dns` listeners of 256 UDP sockets each
/// (768 threads blocking in recvmmsg, more than a tokio runtime's default
/// 512 blocking threads) all answer every query, from many source ports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_udp_socket_of_many_listeners_is_served() {
    let cfg = config(None, "")
        .replacen("[dns]\n", "[dns]\nthreads = 256\n", 1)
        .replacen(
            "[dns]\n",
            "[[listener]]\nname = \"dns2\"\nkind = \"dns\"\naddress = \"127.0.0.1:0\"\n\n\
             [[listener]]\nname = \"dns3\"\nkind = \"dns\"\naddress = \"127.0.0.1:0\"\n\n[dns]\n",
            1,
        );
    let node = EdgeNode::start(BIN, &cfg);
    for name in ["dns", "dns2", "dns3"] {
        let dns = DnsClient::new(node.addr(name)).with_timeout(Duration::from_secs(2));
        let mut lost = 0;
        // A new source port each: SO_REUSEPORT spreads them over the sockets.
        for _ in 0..24 {
            match dns.udp(&DnsQuery::new("mail.cdn.test.", DnsType::A)).await {
                Ok(m) => assert_eq!(addresses(&m), [ip("192.0.2.25")]),
                Err(_) => lost += 1,
            }
        }
        assert_eq!(lost, 0, "{name}: UDP queries never read");
    }
}

/// A reload that removes a `dns` listener: it stops answering over UDP
/// (its threads end and close the sockets) while the other serves on; one
/// that adds it again answers; SIGTERM ends the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_listener_removed_by_reload_stops_answering_udp() {
    let two = config(None, "").replacen(
        "[dns]\n",
        "[[listener]]\nname = \"dns2\"\nkind = \"dns\"\naddress = \"127.0.0.1:0\"\n\n[dns]\nthreads = 2\n",
        1,
    );
    let one = config(None, "").replacen("[dns]\n", "[dns]\nthreads = 2\n", 1);
    let mut node = EdgeNode::start(BIN, &two);
    let q = DnsQuery::new("mail.cdn.test.", DnsType::A);
    let first = DnsClient::new(node.addr("dns"));
    let removed = DnsClient::new(node.addr("dns2")).with_timeout(Duration::from_millis(300));
    assert_eq!(
        addresses(&removed.udp(&q).await.unwrap()),
        [ip("192.0.2.25")]
    );
    node.write_config(&one);
    node.signal(nix::sys::signal::Signal::SIGHUP);
    eventually(Duration::from_secs(10), "dns2 silent over UDP", || async {
        // Several source ports: every socket of the listener is gone.
        for _ in 0..8 {
            if removed.udp(&q).await.is_ok() {
                return None;
            }
        }
        Some(())
    })
    .await;
    assert_eq!(addresses(&first.udp(&q).await.unwrap()), [ip("192.0.2.25")]);
    assert!(removed.tcp(&q).await.is_err(), "nor over TCP");
    // Added again (a new port): answers.
    node.write_config(&two);
    node.signal(nix::sys::signal::Signal::SIGHUP);
    eventually(Duration::from_secs(10), "dns2 back", || async {
        let again = DnsClient::new(node.addr("dns2")).with_timeout(Duration::from_millis(500));
        again.udp(&q).await.ok().map(|m| addresses(&m))
    })
    .await;
    node.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        node.wait_exit(Duration::from_secs(30)).is_some(),
        "SIGTERM ends a node with dns listeners"
    );
}
