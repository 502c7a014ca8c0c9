//! edge against NSD, the reference: the same zone file (dns/tests/data)
//! loaded by both, the same queries, and the answers compared section by
//! section (rcode, AA, answer, authority, additional). NSD is started by
//! the test on a free loopback port (`make test` installs it).

#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edge_dns::{DnsService, Transport};
use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, Record, RecordType};

struct Nsd {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Nsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn data() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn start_nsd() -> Option<Nsd> {
    if Command::new("nsd").arg("-v").output().is_err() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    for f in ["example.test.zone", "example.test.inc"] {
        std::fs::copy(data().join(f), dir.path().join(f)).unwrap();
    }
    let port = edge_testkit::port_for_child();
    let d = dir.path().display();
    let conf = format!(
        "server:\n  ip-address: 127.0.0.1@{port}\n  port: {port}\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  pidfile: \"{d}/nsd.pid\"\n  xfrdfile: \"{d}/xfrd.state\"\n  zonelistfile: \"{d}/zone.list\"\n  database: \"\"\n  logfile: \"{d}/nsd.log\"\n  verbosity: 1\n  server-count: 1\n  hide-version: yes\n  minimal-responses: yes\nremote-control:\n  control-enable: no\nzone:\n  name: example.test\n  zonefile: \"{d}/example.test.zone\"\n"
    );
    let conf_path = dir.path().join("nsd.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let child = Command::new("nsd")
        .arg("-d")
        .arg("-c")
        .arg(&conf_path)
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let nsd = Nsd {
        child,
        addr: ([127, 0, 0, 1], port).into(),
        _dir: dir,
    };
    // Ready when it answers for the zone.
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if ask_nsd(&nsd, "example.test.", RecordType::SOA).is_some_and(|m| !m.answers.is_empty()) {
            return Some(nsd);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(nsd._dir.path().join("nsd.log")).unwrap_or_default();
    panic!("nsd did not start:\n{log}");
}

fn query(name: &str, t: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 7;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    let mut e = Edns::new();
    e.set_max_payload(1232);
    m.set_edns(e);
    m.to_vec().unwrap()
}

fn ask_nsd(nsd: &Nsd, name: &str, t: RecordType) -> Option<Message> {
    let s = UdpSocket::bind("127.0.0.1:0").ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.send_to(&query(name, t), nsd.addr).ok()?;
    let mut buf = [0u8; 4096];
    let n = s.recv(&mut buf).ok()?;
    Message::from_vec(&buf[..n]).ok()
}

fn edge() -> std::sync::Arc<DnsService> {
    let text = "[[listener]]\nname = \"dns\"\nkind = \"dns\"\naddress = \"127.0.0.1:0\"\n\n[[dns.zone]]\nname = \"example.test.\"\nfile = \"example.test.zone\"\n";
    let cfg = edge_config::parse_str(text, "t.toml", &data())
        .unwrap_or_else(|d| panic!("{}", d.render()));
    let svc = DnsService::new(&prometheus::Registry::new()).unwrap();
    svc.install(svc.build(cfg.dns.as_ref()).unwrap());
    svc
}

fn section(records: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = records
        .iter()
        .map(|r| {
            format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data).to_ascii_lowercase()
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn edge_answers_as_nsd_does_for_the_same_zone_file() {
    let Some(nsd) = start_nsd() else {
        panic!("nsd is not installed: make test installs it (scripts/deps.sh test)");
    };
    let edge = edge();
    use RecordType::*;
    let names = [
        "example.test.",
        "ns1.example.test.",
        "ns2.example.test.",
        "mail.example.test.",
        "www.example.test.",
        "alias.example.test.",
        "ext.example.test.",
        "dangling.example.test.",
        "_sip._tcp.example.test.",
        "_tcp.example.test.",
        "sipserver.example.test.",
        "x.wild.example.test.",
        "a.b.x.wild.example.test.",
        "exists.wild.example.test.",
        "x.exists.wild.example.test.",
        "wild.example.test.",
        "sub.wild.example.test.",
        "y.sub.wild.example.test.",
        "q.cname-wild.example.test.",
        "deep.a.b.c.example.test.",
        "a.b.c.example.test.",
        "c.example.test.",
        "x.deep.a.b.c.example.test.",
        "sub.example.test.",
        "a.sub.example.test.",
        "ns.sub.example.test.",
        "to-sub.example.test.",
        "d.example.test.",
        "x.d.example.test.",
        "x.dn.example.test.",
        "y.dn.example.test.",
        "x.target.example.test.",
        "null.example.test.",
        "caa.example.test.",
        "txt2.example.test.",
        "h.example.test.",
        "loc.example.test.",
        "svc.example.test.",
        "s.example.test.",
        "_443._tcp.example.test.",
        "n.example.test.",
        "1.2.0.192.in-addr.example.test.",
        "dup.example.test.",
        "included.example.test.",
        "nope.example.test.",
        "a.selfd.example.test.",
        "selfd.example.test.",
        "l1.example.test.",
        "l5.example.test.",
    ];
    let types = [
        A,
        AAAA,
        NS,
        MX,
        TXT,
        SOA,
        CNAME,
        SRV,
        CAA,
        DS,
        PTR,
        HTTPS,
        RecordType::from(29),
    ];
    let mut compared = 0;
    let mut differences = Vec::new();
    for name in names {
        for t in types {
            let Some(theirs) = ask_nsd(&nsd, name, t) else {
                differences.push(format!("{name} {t}: no answer from nsd"));
                continue;
            };
            let bytes = edge
                .respond(
                    &query(name, t),
                    "127.0.0.1".parse().unwrap(),
                    Transport::Udp,
                )
                .unwrap();
            let ours = Message::from_vec(&bytes).unwrap();
            let what = format!("{name} {t}");
            let pairs = [
                (
                    "rcode",
                    vec![format!("{:?}", theirs.metadata.response_code)],
                    vec![format!("{:?}", ours.metadata.response_code)],
                ),
                (
                    "aa",
                    vec![theirs.metadata.authoritative.to_string()],
                    vec![ours.metadata.authoritative.to_string()],
                ),
                ("answer", section(&theirs.answers), section(&ours.answers)),
                (
                    "authority",
                    section(&theirs.authorities),
                    section(&ours.authorities),
                ),
            ];
            // NSD runs with minimal-responses (as Knot answers): no apex NS
            // in the authority of a positive answer, and additional data
            // only for a referral's glue. edge adds the A/AAAA of NS, MX and
            // SRV targets besides (what NSD adds without minimal-responses),
            // so additional sections are compared for referrals only.
            let referral = !theirs.metadata.authoritative && theirs.answers.is_empty();
            let pairs: Vec<_> = if referral {
                pairs
                    .into_iter()
                    .chain([(
                        "additional",
                        section(&theirs.additionals),
                        section(&ours.additionals),
                    )])
                    .collect()
            } else {
                pairs.into_iter().collect()
            };
            for (part, a, b) in pairs {
                if a != b {
                    differences.push(format!("{what} {part}:\n  nsd:  {a:?}\n  edge: {b:?}"));
                }
            }
            compared += 1;
        }
    }
    assert!(compared >= 500, "{compared}");
    assert!(
        differences.is_empty(),
        "{} of {compared} answers differ:\n{}",
        differences.len(),
        differences.join("\n")
    );
}
