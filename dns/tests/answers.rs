//! The answer function, table-driven: a zone loaded from an RFC 1035 master
//! file (dns/tests/data/example.test.zone) plus TOML records and geo names;
//! each row is a query and the sections, flags and rcode every
//! authoritative server (NSD, Knot, BIND) returns for it, from RFC 1034
//! §4.3.2, RFC 2308, RFC 4592, RFC 6604, RFC 6672, RFC 3225, RFC 7871.
//! Every row runs over UDP and TCP and with the query name's case mixed
//! (0x20): 3 × the rows; then all again with another ID, answered from the
//! packet cache, which must give the same answers.

#![allow(clippy::unwrap_used)]

use std::net::IpAddr;

use edge_dns::{DnsService, Transport};
use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

const ZONE: &str = r#"
[[listener]]
name = "dns"
kind = "dns"
address = "127.0.0.1:0"

[[dns.zone]]
name = "example.test."
file = "example.test.zone"
records = [
  { name = "toml", type = "A", value = "192.0.2.77" },
  { name = "long", type = "TXT", value = "LONGTEXT" },
]
geo = [
  { name = "cdn", sites = ["fra", "nyc"], policy = "nearest", count = 1 },
  { name = "v4only", sites = ["nyc"] },
  { name = "dual", sites = ["fra"] },
]

[[dns.zone]]
name = "other.test."
ns = ["ns1.other.test."]
records = [
  { name = "x", type = "A", value = "198.51.100.1" },
]

[[dns.site]]
name = "fra"
lat = 50.1
lon = 8.7
ipv4 = ["203.0.113.1"]
ipv6 = ["2001:db8:f::1"]

[[dns.site]]
name = "nyc"
lat = 40.7
lon = -74.0
ipv4 = ["203.0.113.2"]

[[dns.locator.cidr]]
prefix = "10.0.0.0/8"
lat = 50.0
lon = 8.0

[[dns.locator.cidr]]
prefix = "10.1.0.0/16"
lat = 40.0
lon = -74.0
"#;

fn service() -> std::sync::Arc<DnsService> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let long = "x".repeat(300);
    let text = ZONE.replace("LONGTEXT", &long);
    let cfg = match edge_config::parse_str(&text, "answers.toml", &dir) {
        Ok(c) => c,
        Err(d) => panic!("{}", d.render()),
    };
    let svc = DnsService::new(&prometheus::Registry::new()).unwrap();
    let state = svc.build(cfg.dns.as_ref()).unwrap();
    svc.install(state);
    svc
}

/// A query's options.
#[derive(Clone, Copy, Default)]
struct Opts {
    class: Option<DNSClass>,
    edns: bool,
    dnssec_ok: bool,
    version: u8,
    payload: Option<u16>,
    ecs: Option<(&'static str, u8)>,
}

fn query(name: &str, t: RecordType, o: Opts) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 4242;
    m.metadata.op_code = OpCode::Query;
    let mut q = Query::query(Name::from_ascii(name).unwrap(), t);
    if let Some(c) = o.class {
        q.set_query_class(c);
    }
    m.add_query(q);
    if o.edns || o.dnssec_ok || o.ecs.is_some() || o.version > 0 {
        let mut e = Edns::new();
        e.set_max_payload(o.payload.unwrap_or(1232));
        e.set_dnssec_ok(o.dnssec_ok);
        e.set_version(o.version);
        if let Some((addr, len)) = o.ecs {
            let a: IpAddr = addr.parse().unwrap();
            e.options_mut()
                .insert(EdnsOption::Subnet(ClientSubnet::new(a, len, 0)));
        }
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

/// `owner TYPE data`, as the rows spell it; an SOA is `owner SOA`.
fn show(r: &Record) -> String {
    match (&r.data, r.record_type()) {
        (_, RecordType::SOA) => format!("{} SOA", r.name),
        (_, RecordType::DNAME) => format!("{} DNAME", r.name),
        (RData::Unknown { rdata, .. }, t) => {
            format!("{} TYPE{} {:02x?}", r.name, u16::from(t), rdata.anything)
        }
        (d, t) => format!("{} {t} {d}", r.name),
    }
}

fn ask(svc: &DnsService, packet: &[u8], transport: Transport) -> Message {
    let out = svc
        .respond(packet, "192.0.2.250".parse().unwrap(), transport)
        .expect("an answer");
    Message::from_vec(&out).unwrap()
}

/// One row: query, and the expected rcode, AA, sections (sorted).
struct Row {
    q: &'static str,
    t: RecordType,
    o: Opts,
    rcode: ResponseCode,
    aa: bool,
    answer: &'static [&'static str],
    authority: &'static [&'static str],
    additional: &'static [&'static str],
}

const NEG_SOA: &[&str] = &["example.test. SOA"];
const NONE: &[&str] = &[];
const SUB_NS: &[&str] = &[
    "sub.example.test. NS ns.other.test.",
    "sub.example.test. NS ns.sub.example.test.",
];
const SUB_GLUE: &[&str] = &["ns.sub.example.test. A 192.0.2.200"];

fn row(
    q: &'static str,
    t: RecordType,
    rcode: ResponseCode,
    aa: bool,
    answer: &'static [&'static str],
    authority: &'static [&'static str],
    additional: &'static [&'static str],
) -> Row {
    Row {
        q,
        t,
        o: Opts::default(),
        rcode,
        aa,
        answer,
        authority,
        additional,
    }
}

fn ok(q: &'static str, t: RecordType, answer: &'static [&'static str]) -> Row {
    row(q, t, ResponseCode::NoError, true, answer, NONE, NONE)
}

fn nodata(q: &'static str, t: RecordType) -> Row {
    row(q, t, ResponseCode::NoError, true, NONE, NEG_SOA, NONE)
}

fn nxdomain(q: &'static str, t: RecordType) -> Row {
    row(q, t, ResponseCode::NXDomain, true, NONE, NEG_SOA, NONE)
}

fn referral(q: &'static str, t: RecordType) -> Row {
    row(q, t, ResponseCode::NoError, false, NONE, SUB_NS, SUB_GLUE)
}

fn rows() -> Vec<Row> {
    use RecordType::*;
    let no = ResponseCode::NoError;
    vec![
        // The apex.
        ok("example.test.", SOA, NEG_SOA),
        row(
            "example.test.",
            NS,
            no,
            true,
            &[
                "example.test. NS ns1.example.test.",
                "example.test. NS ns2.example.test.",
            ],
            NONE,
            &[
                "ns1.example.test. A 192.0.2.53",
                "ns2.example.test. AAAA 2001:db8::53",
            ],
        ),
        row(
            "example.test.",
            MX,
            no,
            true,
            &[
                "example.test. MX 10 mail.example.test.",
                "example.test. MX 20 mx.other.test.",
            ],
            NONE,
            &[
                "mail.example.test. A 192.0.2.25",
                "mail.example.test. AAAA 2001:db8::25",
            ],
        ),
        ok("example.test.", A, &["example.test. A 192.0.2.1"]),
        ok("example.test.", TXT, &["example.test. TXT v=spf1 -all"]),
        nodata("example.test.", AAAA),
        nodata("example.test.", SRV),
        nodata("example.test.", CNAME),
        nodata("example.test.", DS),
        // Plain names, every type.
        ok("ns1.example.test.", A, &["ns1.example.test. A 192.0.2.53"]),
        nodata("ns1.example.test.", AAAA),
        ok(
            "mail.example.test.",
            AAAA,
            &["mail.example.test. AAAA 2001:db8::25"],
        ),
        ok(
            "null.example.test.",
            MX,
            &["null.example.test. MX 0 ."],
        ),
        ok(
            "caa.example.test.",
            CAA,
            &[
                "caa.example.test. CAA 0 issue \"ca.example\"",
                "caa.example.test. CAA 128 tbs \"unknown tag\"",
            ],
        ),
        ok("txt2.example.test.", TXT, &["txt2.example.test. TXT onetwo"]),
        ok("h.example.test.", HINFO, &["h.example.test. HINFO PC Linux"]),
        ok(
            "gen.example.test.",
            RecordType::Unknown(65280),
            &["gen.example.test. TYPE65280 [0a, 00, 00, 01]"],
        ),
        nodata("gen.example.test.", A),
        ok(
            "1.2.0.192.in-addr.example.test.",
            PTR,
            &["1.2.0.192.in-addr.example.test. PTR www.example.test."],
        ),
        ok("dup.example.test.", A, &["dup.example.test. A 192.0.2.5"]),
        ok("toml.example.test.", A, &["toml.example.test. A 192.0.2.77"]),
        ok(
            "included.example.test.",
            A,
            &["included.example.test. A 192.0.2.123"],
        ),
        ok(
            "_sip._tcp.example.test.",
            SRV,
            &["_sip._tcp.example.test. SRV 10 5 5060 sipserver.example.test."],
        )
        .with_additional(&["sipserver.example.test. A 192.0.2.60"]),
        nxdomain("nope.example.test.", A),
        nxdomain("nope.example.test.", AAAA),
        nxdomain("x.ns1.example.test.", A),
        nxdomain("x.deep.a.b.c.example.test.", A),
        // Empty non-terminals: NODATA, never NXDOMAIN.
        nodata("c.example.test.", A),
        nodata("b.c.example.test.", A),
        nodata("a.b.c.example.test.", TXT),
        nodata("_tcp.example.test.", SRV),
        ok("deep.a.b.c.example.test.", A, &["deep.a.b.c.example.test. A 192.0.2.7"]),
        // CNAME chains (RFC 1034 §4.3.2, RFC 6604).
        ok(
            "www.example.test.",
            A,
            &["www.example.test. CNAME example.test.", "example.test. A 192.0.2.1"],
        ),
        ok(
            "alias.example.test.",
            A,
            &[
                "alias.example.test. CNAME www.example.test.",
                "www.example.test. CNAME example.test.",
                "example.test. A 192.0.2.1",
            ],
        ),
        ok(
            "www.example.test.",
            CNAME,
            &["www.example.test. CNAME example.test."],
        ),
        ok(
            "www.example.test.",
            TXT,
            &[
                "www.example.test. CNAME example.test.",
                "example.test. TXT v=spf1 -all",
            ],
        ),
        row(
            "www.example.test.",
            AAAA,
            no,
            true,
            &["www.example.test. CNAME example.test."],
            NEG_SOA,
            NONE,
        ),
        ok(
            "ext.example.test.",
            A,
            &["ext.example.test. CNAME www.other.test."],
        ),
        row(
            "dangling.example.test.",
            A,
            ResponseCode::NXDomain,
            true,
            &["dangling.example.test. CNAME nothere.example.test."],
            NEG_SOA,
            NONE,
        ),
        ok(
            "loop1.example.test.",
            A,
            &[
                "loop1.example.test. CNAME loop2.example.test.",
                "loop2.example.test. CNAME loop1.example.test.",
            ],
        ),
        ok("self.example.test.", A, &["self.example.test. CNAME self.example.test."]),
        // Wildcards (RFC 4592).
        ok("x.wild.example.test.", A, &["x.wild.example.test. A 192.0.2.99"]),
        ok(
            "x.wild.example.test.",
            TXT,
            &["x.wild.example.test. TXT wildcard"],
        ),
        ok(
            "a.b.x.wild.example.test.",
            A,
            &["a.b.x.wild.example.test. A 192.0.2.99"],
        ),
        nodata("x.wild.example.test.", AAAA),
        nodata("exists.wild.example.test.", A),
        ok(
            "exists.wild.example.test.",
            AAAA,
            &["exists.wild.example.test. AAAA 2001:db8::99"],
        ),
        nodata("wild.example.test.", A),
        ok("*.wild.example.test.", A, &["*.wild.example.test. A 192.0.2.99"]),
        nxdomain("y.sub.wild.example.test.", A),
        nxdomain("x.exists.wild.example.test.", A),
        ok(
            "q.cname-wild.example.test.",
            A,
            &[
                "q.cname-wild.example.test. CNAME www.example.test.",
                "www.example.test. CNAME example.test.",
                "example.test. A 192.0.2.1",
            ],
        ),
        // Delegations (RFC 1034 §4.3.2 3b, RFC 4035 §3.1.4.1 for DS).
        referral("sub.example.test.", A),
        referral("sub.example.test.", NS),
        referral("sub.example.test.", SOA),
        referral("a.sub.example.test.", A),
        referral("deep.a.sub.example.test.", AAAA),
        referral("ns.sub.example.test.", A),
        referral("a.sub.example.test.", DS),
        ok(
            "sub.example.test.",
            DS,
            &["sub.example.test. DS 12345 13 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"],
        ),
        row(
            "to-sub.example.test.",
            A,
            no,
            true,
            &["to-sub.example.test. CNAME host.sub.example.test."],
            SUB_NS,
            SUB_GLUE,
        ),
        // DNAME (RFC 6672).
        ok("d.example.test.", DNAME, &["d.example.test. DNAME"]),
        nodata("d.example.test.", A),
        ok(
            "x.d.example.test.",
            A,
            &["d.example.test. DNAME", "x.d.example.test. CNAME x.other.test."],
        ),
        ok(
            "x.dn.example.test.",
            A,
            &[
                "dn.example.test. DNAME",
                "x.dn.example.test. CNAME x.target.example.test.",
                "x.target.example.test. A 192.0.2.111",
            ],
        ),
        row(
            "y.dn.example.test.",
            A,
            ResponseCode::NXDomain,
            true,
            &["dn.example.test. DNAME", "y.dn.example.test. CNAME y.target.example.test."],
            NEG_SOA,
            NONE,
        ),
        // Geo names: a family the sites lack is NODATA, not SERVFAIL.
        // An unknown client: every candidate (no default_sites).
        ok(
            "cdn.example.test.",
            A,
            &["cdn.example.test. A 203.0.113.1", "cdn.example.test. A 203.0.113.2"],
        ),
        nxdomain("v4only2.example.test.", A),
        nodata("v4only.example.test.", AAAA),
        ok("v4only.example.test.", A, &["v4only.example.test. A 203.0.113.2"]),
        ok("dual.example.test.", AAAA, &["dual.example.test. AAAA 2001:db8:f::1"]),
        nodata("cdn.example.test.", TXT),
        // Other zone, and none.
        ok("x.other.test.", A, &["x.other.test. A 198.51.100.1"]),
        row("example.com.", A, ResponseCode::Refused, false, NONE, NONE, NONE),
        row("test.", SOA, ResponseCode::Refused, false, NONE, NONE, NONE),
        // ANY: RFC 8482.
        ok("example.test.", ANY, &["example.test. HINFO RFC8482 "]),
        nxdomain("nope.example.test.", ANY),
        nodata("c.example.test.", ANY),
        ok("x.wild.example.test.", ANY, &["x.wild.example.test. HINFO RFC8482 "]),
        ok("www.example.test.", ANY, &["www.example.test. CNAME example.test."]),
        referral("sub.example.test.", ANY),
        // Classes: ANY is answered as IN, the rest refused.
        // Answered as IN, without AA (RFC 6895 §3.2).
        row("example.test.", A, ResponseCode::NoError, false, &["example.test. A 192.0.2.1"], NONE, NONE)
            .class(DNSClass::ANY),
        row("example.test.", A, ResponseCode::Refused, false, NONE, NONE, NONE)
            .class(DNSClass::CH),
        row("example.test.", A, ResponseCode::Refused, false, NONE, NONE, NONE)
            .class(DNSClass::HS),
        // Zone transfers are not over UDP.
        row("example.test.", AXFR, ResponseCode::Refused, false, NONE, NONE, NONE),
        // EDNS.
        ok("example.test.", A, &["example.test. A 192.0.2.1"]).edns(Opts {
            edns: true,
            dnssec_ok: true,
            ..Opts::default()
        }),
        row("example.test.", A, ResponseCode::BADVERS, false, NONE, NONE, NONE).edns(Opts {
            edns: true,
            version: 1,
            ..Opts::default()
        }),
        ok("example.test.", TXT, &["example.test. TXT v=spf1 -all"]).edns(Opts {
            edns: true,
            payload: Some(100),
            ..Opts::default()
        }),
        ok(
            "long.example.test.",
            TXT,
            &["long.example.test. TXT LONG"],
        ),
    ]
}

impl Row {
    fn with_additional(mut self, a: &'static [&'static str]) -> Row {
        self.additional = a;
        self
    }

    fn class(mut self, c: DNSClass) -> Row {
        self.o.class = Some(c);
        self
    }

    fn edns(mut self, o: Opts) -> Row {
        self.o = o;
        self
    }
}

/// The query name with its letters' case alternated (DNS 0x20).
fn mixed_case(name: &str) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if i % 2 == 0 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

fn sorted(records: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = records.iter().map(show).collect();
    v.sort();
    v
}

fn expected(list: &[&str], long: &str) -> Vec<String> {
    let mut v: Vec<String> = list
        .iter()
        .map(|s| s.replace("TXT LONG", &format!("TXT {long}")))
        .collect();
    v.sort();
    v
}

#[test]
fn every_row_over_udp_and_tcp_and_in_mixed_case() {
    let svc = service();
    let long = "x".repeat(300);
    let mut checked = 0;
    for (pass, row) in [0u16, 1]
        .into_iter()
        .flat_map(|p| rows().into_iter().map(move |r| (p, r)))
    {
        for (transport, case) in [
            (Transport::Udp, false),
            (Transport::Tcp, false),
            (Transport::Udp, true),
        ] {
            let qname = if case {
                mixed_case(row.q)
            } else {
                row.q.to_string()
            };
            let what = format!(
                "{qname} {:?} {:?} {:?} pass {pass}",
                row.t, row.o.class, transport
            );
            let mut packet = query(&qname, row.t, row.o);
            let id = 4242 + pass;
            packet[..2].copy_from_slice(&id.to_be_bytes());
            let m = ask(&svc, &packet, transport);
            assert_eq!(m.metadata.id, id, "{what}: the query's ID");
            // The question comes back as asked, case and all.
            assert_eq!(m.queries.len(), 1, "{what}");
            assert_eq!(
                m.queries[0].name().to_string(),
                qname,
                "{what}: question case"
            );
            // By value: BADVERS and BADSIG are both 16.
            assert_eq!(
                u16::from(m.metadata.response_code),
                u16::from(row.rcode),
                "{what}"
            );
            assert_eq!(m.metadata.authoritative, row.aa, "{what}: AA");
            assert!(!m.metadata.recursion_available, "{what}: RA");
            if row.o.payload.is_some() && m.metadata.truncation {
                // A tiny buffer: truncated, the question only.
                assert!(m.answers.is_empty(), "{what}");
                checked += 1;
                continue;
            }
            assert!(!m.metadata.truncation, "{what}: TC");
            let lower = |v: Vec<String>| -> Vec<String> {
                let mut v: Vec<String> = v.into_iter().map(|s| s.to_ascii_lowercase()).collect();
                v.sort();
                v
            };
            assert_eq!(
                lower(sorted(&m.answers)),
                lower(expected(row.answer, &long)),
                "{what}: answer"
            );
            assert_eq!(
                lower(sorted(&m.authorities)),
                lower(expected(row.authority, &long)),
                "{what}: authority"
            );
            assert_eq!(
                lower(sorted(&m.additionals)),
                lower(expected(row.additional, &long)),
                "{what}: additional"
            );
            // Owner names at the name asked carry its case.
            for a in &m.answers {
                if a.name.to_ascii().eq_ignore_ascii_case(&qname) {
                    assert_eq!(a.name.to_ascii(), qname, "{what}: answer owner case");
                }
            }
            if row.o.dnssec_ok {
                assert!(
                    m.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok),
                    "{what}: DO copied (RFC 3225)"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 400, "{checked} checks");
}

#[test]
fn negative_answers_carry_the_soa_with_the_negative_ttl() {
    let svc = service();
    for (q, t) in [
        ("nope.example.test.", RecordType::A),
        ("example.test.", RecordType::AAAA),
        ("wild.example.test.", RecordType::A),
    ] {
        let m = ask(&svc, &query(q, t, Opts::default()), Transport::Udp);
        let soa = &m.authorities[0];
        // RFC 2308 §3: min(SOA TTL, SOA MINIMUM) = min(3600, 300).
        assert_eq!(soa.ttl, 300, "{q}");
    }
}

#[test]
fn additional_data_is_dropped_before_the_answer_is_truncated() {
    let svc = service();
    let m = ask(
        &svc,
        &query(
            "bigmx.included.example.test.",
            RecordType::MX,
            Opts::default(),
        ),
        Transport::Udp,
    );
    assert!(
        !m.metadata.truncation,
        "the MX fits; its addresses do not all"
    );
    assert_eq!(m.answers.len(), 1);
    assert!(!m.additionals.is_empty() && m.additionals.len() < 59);
    let bytes = svc
        .respond(
            &query(
                "bigmx.included.example.test.",
                RecordType::MX,
                Opts::default(),
            ),
            "192.0.2.250".parse().unwrap(),
            Transport::Udp,
        )
        .unwrap();
    assert!(bytes.len() <= 512);
    // Over TCP all of them.
    let m = ask(
        &svc,
        &query(
            "bigmx.included.example.test.",
            RecordType::MX,
            Opts::default(),
        ),
        Transport::Tcp,
    );
    assert_eq!(m.additionals.len(), 59);
    // An answer that cannot fit is truncated (TC, question only).
    let m = ask(
        &svc,
        &query(
            "many.included.example.test.",
            RecordType::A,
            Opts::default(),
        ),
        Transport::Udp,
    );
    assert!(m.metadata.truncation && m.answers.is_empty());
}

#[test]
fn client_subnet_rules_of_rfc_7871() {
    let svc = service();
    let ecs = |addr: &'static str, len: u8| Opts {
        edns: true,
        ecs: Some((addr, len)),
        ..Opts::default()
    };
    let scope = |m: &Message| match m
        .edns
        .as_ref()
        .and_then(|e| e.option(hickory_proto::rr::rdata::opt::EdnsCode::Subnet))
    {
        Some(EdnsOption::Subnet(s)) => s.scope_prefix(),
        _ => panic!("no ECS in the answer"),
    };
    // A /8 that holds a more specific entry (10.1/16): scope 16 at least.
    let m = ask(
        &svc,
        &query("cdn.example.test.", RecordType::A, ecs("10.0.0.0", 8)),
        Transport::Udp,
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(scope(&m) >= 16, "scope {}", scope(&m));
    // A /24 inside the /16: the /16 decided it.
    let m = ask(
        &svc,
        &query("cdn.example.test.", RecordType::A, ecs("10.1.2.0", 24)),
        Transport::Udp,
    );
    assert_eq!(scope(&m), 16);
    assert_eq!(show(&m.answers[0]), "cdn.example.test. A 203.0.113.2");
    // /0: scope 0.
    let m = ask(
        &svc,
        &query("cdn.example.test.", RecordType::A, ecs("0.0.0.0", 0)),
        Transport::Udp,
    );
    assert_eq!(scope(&m), 0);
    // Bits set beyond the prefix: FORMERR (the wire edited: 10.1.2 as a
    // /20, whose third octet may hold 4 bits only).
    let mut packet = query("cdn.example.test.", RecordType::A, ecs("10.1.2.0", 24));
    let at = packet.windows(4).rposition(|w| w == [0, 1, 24, 0]).unwrap();
    packet[at + 2] = 20;
    let m = ask(&svc, &packet, Transport::Udp);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    // More address octets than the prefix needs: FORMERR (the wire edited:
    // a /8 with four octets).
    let mut packet = query("cdn.example.test.", RecordType::A, ecs("10.0.0.0", 24));
    let at = packet.windows(4).rposition(|w| w == [0, 1, 24, 0]).unwrap();
    packet[at + 2] = 8;
    let m = ask(&svc, &packet, Transport::Udp);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
}

/// Mutated queries (a fixed seed, bounded): no panic, and every answer
/// parses and carries the query's id. `make fuzz` runs the unbounded
/// version (fuzz/fuzz_targets/dns_answer.rs).
#[test]
fn mutated_queries_never_panic_and_answers_parse() {
    let svc = service();
    let mut rng = fastrand::Rng::with_seed(0x5eed_d15c);
    let seeds: Vec<Vec<u8>> = rows()
        .iter()
        .map(|r| query(r.q, r.t, r.o))
        .chain([
            query(
                "cdn.example.test.",
                RecordType::A,
                Opts {
                    edns: true,
                    ecs: Some(("10.1.0.0", 16)),
                    ..Opts::default()
                },
            ),
            query("example.test.", RecordType::AXFR, Opts::default()),
            query("example.test.", RecordType::IXFR, Opts::default()),
        ])
        .collect();
    for i in 0..20_000 {
        let mut p = seeds[i % seeds.len()].clone();
        for _ in 0..=rng.usize(..4) {
            match rng.u8(..4) {
                0 if !p.is_empty() => {
                    let at = rng.usize(..p.len());
                    p[at] = rng.u8(..);
                }
                1 if !p.is_empty() => p.truncate(rng.usize(..p.len())),
                2 => p.extend((0..rng.usize(..8)).map(|_| rng.u8(..))),
                _ if p.len() > 12 => {
                    // A count field set wild.
                    let at = 4 + 2 * rng.usize(..4);
                    p[at + 1] = rng.u8(..);
                }
                _ => {}
            }
        }
        for transport in [Transport::Udp, Transport::Tcp] {
            let client: IpAddr = if i % 2 == 0 { "10.1.2.3" } else { "127.0.0.1" }
                .parse()
                .unwrap();
            let out: Vec<Vec<u8>> = match transport {
                Transport::Udp => svc.respond(&p, client, transport).into_iter().collect(),
                Transport::Tcp => svc.respond_tcp(&p, client),
            };
            for a in out {
                assert!(
                    Message::from_vec(&a).is_ok(),
                    "an answer to {p:02x?} does not parse"
                );
                assert_eq!(a[..2], p[..2], "the id of {p:02x?}");
            }
        }
    }
}

/// A referral whose glue does not all fit: as much glue as fits, no TC
/// (RFC 9471 asks for TC only when none of it fits).
#[test]
fn a_referral_sends_the_glue_that_fits() {
    let glue: Vec<String> = (1..=80)
        .map(|i| format!("  {{ name = \"ns.sub\", type = \"A\", value = \"192.0.2.{i}\" }},"))
        .collect();
    let text = format!(
        "[[listener]]\nname = \"dns\"\nkind = \"dns\"\naddress = \"127.0.0.1:0\"\n\n[[dns.zone]]\nname = \"g.test.\"\nns = [\"ns1.g.test.\"]\nrecords = [\n  {{ name = \"sub\", type = \"NS\", value = \"ns.sub\" }},\n{}\n]\n",
        glue.join("\n")
    );
    let cfg = edge_config::parse_str(&text, "g.toml", std::path::Path::new("."))
        .unwrap_or_else(|d| panic!("{}", d.render()));
    let svc = DnsService::new(&prometheus::Registry::new()).unwrap();
    svc.install(svc.build(cfg.dns.as_ref()).unwrap());
    for (payload, edns) in [(512u16, false), (1232, true)] {
        let o = Opts {
            edns,
            payload: Some(payload),
            ..Opts::default()
        };
        let bytes = svc
            .respond(
                &query("x.sub.g.test.", RecordType::A, o),
                "192.0.2.250".parse().unwrap(),
                Transport::Udp,
            )
            .unwrap();
        assert!(bytes.len() <= usize::from(payload));
        let m = Message::from_vec(&bytes).unwrap();
        assert!(!m.metadata.truncation, "{payload}");
        assert!(!m.metadata.authoritative);
        assert_eq!(m.authorities.len(), 1);
        assert!(
            !m.additionals.is_empty() && m.additionals.len() < 80,
            "{payload}: {}",
            m.additionals.len()
        );
    }
}

/// The packet cache never repeats an answer drawn at random: a weighted
/// geo name among two sites of equal weight answers both, to one client
/// asking the same bytes again and again; `packet_cache = 0` turns the
/// cache off and answers stay the same.
#[test]
fn weighted_answers_are_drawn_per_query_and_the_cache_can_be_off() {
    let config = |cache: &str| {
        format!(
            r#"
[[listener]]
name = "dns"
kind = "dns"
address = "127.0.0.1:0"

[dns]
{cache}

[[dns.zone]]
name = "w.test."
ns = ["ns1.w.test."]
records = [{{ name = "ns1", type = "A", value = "192.0.2.53" }}]
geo = [{{ name = "pick", sites = ["a", "b"], policy = "weighted", count = 2 }}]

[[dns.site]]
name = "a"
lat = 50.0
lon = 8.0
ipv4 = ["203.0.113.1"]

[[dns.site]]
name = "b"
lat = 50.1
lon = 8.1
ipv4 = ["203.0.113.2"]

[[dns.locator.cidr]]
prefix = "192.0.2.0/24"
lat = 50.0
lon = 8.0
"#
        )
    };
    for cache in ["", "packet_cache = 0"] {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let cfg = match edge_config::parse_str(&config(cache), "w.toml", dir) {
            Ok(c) => c,
            Err(d) => panic!("{}", d.render()),
        };
        let svc = DnsService::new(&prometheus::Registry::new()).unwrap();
        svc.install(svc.build(cfg.dns.as_ref()).unwrap());
        let packet = query("pick.w.test.", RecordType::A, Opts::default());
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let m = ask(&svc, &packet, Transport::Udp);
            for a in &m.answers {
                seen.insert(a.data.to_string());
            }
        }
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            ["203.0.113.1", "203.0.113.2"],
            "{cache:?}"
        );
    }
}

/// Differential: a service with the packet cache and one without, built
/// from the same configuration, give the same bytes (the ID aside) and
/// count the same metrics for every query, client and transport, across
/// drains, health changes and all sites down; each query is asked twice in
/// a row so the second is a cache hit.
#[test]
fn the_packet_cache_answers_as_a_fresh_computation_would() {
    let config = |cache: u32, down: &str| {
        format!(
            r#"
[[listener]]
name = "dns"
kind = "dns"
address = "127.0.0.1:0"

[dns]
packet_cache = {cache}
all_sites_down = "{down}"

[[dns.zone]]
name = "g.test."
ns = ["ns1.g.test."]
records = [
  {{ name = "ns1", type = "A", value = "192.0.2.53" }},
  {{ name = "www", type = "CNAME", value = "cdn.g.test." }},
  {{ name = "www2", type = "CNAME", value = "www.g.test." }},
  {{ name = "big", type = "TXT", value = "{big}" }},
  {{ name = "big", type = "TXT", value = "{big}2" }},
]
geo = [
  {{ name = "cdn", sites = ["fra", "nyc", "sin"], policy = "nearest", count = 1 }},
  {{ name = "two", sites = ["fra", "nyc", "sin"], policy = "nearest", count = 2 }},
  {{ name = "*.wild", sites = ["fra", "nyc"], policy = "nearest", count = 1 }},
  {{ name = "fo", sites = ["fra", "nyc", "sin"], policy = "failover", failover = {{ eu = ["fra", "nyc"], us = ["nyc", "fra"] }} }},
  {{ name = "w1", sites = ["fra", "nyc"], policy = "weighted", count = 1 }},
]

[[dns.site]]
name = "fra"
lat = 50.1
lon = 8.7
region = "eu"
ipv4 = ["203.0.113.1"]
ipv6 = ["2001:db8:f::1"]

[[dns.site]]
name = "nyc"
lat = 40.7
lon = -74.0
region = "us"
ipv4 = ["203.0.113.2"]

[[dns.site]]
name = "sin"
lat = 1.35
lon = 103.8
ipv4 = ["203.0.113.3"]
ipv6 = ["2001:db8:5::1"]

[[dns.locator.cidr]]
prefix = "10.0.0.0/8"
lat = 50.0
lon = 8.0
region = "eu"

[[dns.locator.cidr]]
prefix = "10.1.0.0/16"
lat = 40.0
lon = -74.0
region = "us"

[[dns.locator.cidr]]
prefix = "10.2.0.0/16"
site = "sin"

[[dns.locator.cidr]]
prefix = "2001:db8:100::/48"
lat = 1.0
lon = 103.0
"#,
            big = "y".repeat(250)
        )
    };
    let build = |cache: u32, down: &str| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let cfg = match edge_config::parse_str(&config(cache, down), "g.toml", dir) {
            Ok(c) => c,
            Err(d) => panic!("{}", d.render()),
        };
        let registry = prometheus::Registry::new();
        let svc = DnsService::new(&registry).unwrap();
        svc.install(svc.build(cfg.dns.as_ref()).unwrap());
        (svc, registry)
    };
    let metrics = |r: &prometheus::Registry| -> Vec<String> {
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&r.gather())
            .unwrap();
        text.lines()
            .filter(|l| {
                !l.starts_with('#')
                    && !l.starts_with("edge_dns_packet_cache_total")
                    && !l.starts_with("edge_dns_answer_seconds")
            })
            .map(str::to_string)
            .collect()
    };
    let names = [
        "cdn.g.test.",
        "CdN.g.TEST.",
        "www.g.test.",
        "www2.g.test.",
        "two.g.test.",
        "x.wild.g.test.",
        "y.z.wild.g.test.",
        "fo.g.test.",
        "w1.g.test.",
        "big.g.test.",
        "nothere.g.test.",
        "g.test.",
        "elsewhere.test.",
    ];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::ANY,
        RecordType::TXT,
        RecordType::SOA,
    ];
    let ecs = |a: &'static str, l: u8| Opts {
        edns: true,
        ecs: Some((a, l)),
        ..Opts::default()
    };
    let opts = [
        Opts::default(),
        Opts {
            edns: true,
            dnssec_ok: true,
            ..Opts::default()
        },
        Opts {
            edns: true,
            payload: Some(512),
            ..Opts::default()
        },
        Opts {
            class: Some(DNSClass::ANY),
            ..Opts::default()
        },
        Opts {
            version: 1,
            ..Opts::default()
        },
        ecs("0.0.0.0", 0),
        ecs("::", 0),
        ecs("10.1.0.0", 16),
        ecs("10.2.3.0", 24),
        ecs("2001:db8:100::", 48),
    ];
    let clients: Vec<IpAddr> = [
        "10.0.0.1",
        "10.1.0.1",
        "10.2.0.1",
        "192.0.2.250",
        "2001:db8:100::1",
        "2001:db8:999::1",
    ]
    .iter()
    .map(|a| a.parse().unwrap())
    .collect();
    // Health and drain changes between rounds: (site, drained, healthy).
    let rounds: &[&[(&str, bool)]] = &[
        &[],
        &[("fra", true)],
        &[("nyc", true)],
        &[("fra", false)],
        &[("sin", true), ("fra", true)],
        &[("fra", false), ("nyc", false), ("sin", false)],
        &[],
        &[],
    ];
    // Shed shares set in each round too (per mille of located clients).
    let sheds: &[&[(&str, u32)]] = &[
        &[],
        &[("fra", 300)],
        &[("nyc", 1000)],
        &[("fra", 0), ("sin", 500)],
        &[],
        &[("fra", 1000), ("nyc", 1000), ("sin", 1000)],
        &[("fra", 200), ("nyc", 0)],
        &[("fra", 0), ("nyc", 0), ("sin", 0)],
    ];
    for down in ["servfail", "fail_open"] {
        let (cached, cached_metrics) = build(4 << 20, down);
        let (fresh, fresh_metrics) = build(0, down);
        let mut id = 1u16;
        for (round, changes) in rounds.iter().enumerate() {
            for &(site, drained) in *changes {
                assert!(cached.sites.set_drained(site, drained));
                assert!(fresh.sites.set_drained(site, drained));
            }
            for &(site, share) in sheds[round] {
                set_shed(&cached, site, share);
                set_shed(&fresh, site, share);
            }
            for name in names {
                for t in types {
                    for o in opts {
                        let mut packet = query(name, t, o);
                        // Trailing garbage too, on some.
                        if id.is_multiple_of(7) {
                            packet.extend_from_slice(&[1, 2, 3]);
                        }
                        for &client in &clients {
                            for transport in [Transport::Udp, Transport::Tcp] {
                                for _ in 0..2 {
                                    id = id.wrapping_add(1);
                                    packet[..2].copy_from_slice(&id.to_be_bytes());
                                    let a = cached.respond(&packet, client, transport);
                                    let b = fresh.respond(&packet, client, transport);
                                    assert_eq!(
                                        a, b,
                                        "{down} round {round}: {name} {t:?} from {client} over {transport:?}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(metrics(&cached_metrics), metrics(&fresh_metrics), "{down}");
        let hits = prometheus::TextEncoder::new()
            .encode_to_string(&cached_metrics.gather())
            .unwrap();
        assert!(
            hits.contains("edge_dns_packet_cache_total{result=\"hit\"}"),
            "{hits}"
        );
    }
}

/// Response rate limiting on cached answers: past the limit (1 a second,
/// every limited answer slipped) a repeat, answered from the packet cache,
/// is TC with the question only, in the query's case and with its ID; TCP
/// is never limited.
#[test]
fn rate_limiting_applies_to_answers_from_the_packet_cache() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let text = ZONE.replace("LONGTEXT", "x").replacen(
        "[[dns.zone]]",
        "[dns.rrl]\nresponses_per_second = 1\nwindow = \"15s\"\nslip = 1\n\n[[dns.zone]]",
        1,
    );
    let cfg = match edge_config::parse_str(&text, "answers.toml", &dir) {
        Ok(c) => c,
        Err(d) => panic!("{}", d.render()),
    };
    let registry = prometheus::Registry::new();
    let svc = DnsService::new(&registry).unwrap();
    svc.install(svc.build(cfg.dns.as_ref()).unwrap());
    let client: IpAddr = "10.1.2.3".parse().unwrap();
    for (name, t) in [
        ("cdn.example.test.", RecordType::A),
        ("mail.example.test.", RecordType::A),
    ] {
        let mut packet = query(name, t, Opts::default());
        let mut full = 0;
        for id in 1..=6u16 {
            packet[..2].copy_from_slice(&id.to_be_bytes());
            let out = svc
                .respond(&packet, client, Transport::Udp)
                .expect("slip 1");
            let m = Message::from_vec(&out).unwrap();
            assert_eq!(m.metadata.id, id, "{name}");
            assert_eq!(m.queries.len(), 1, "{name}");
            assert_eq!(m.queries[0].name().to_string(), name);
            if m.metadata.truncation {
                assert!(
                    m.answers.is_empty() && m.authorities.is_empty() && m.additionals.is_empty(),
                    "{name}: a slipped answer is the question only"
                );
            } else {
                assert!(!m.answers.is_empty(), "{name}");
                full += 1;
            }
            let m =
                Message::from_vec(&svc.respond(&packet, client, Transport::Tcp).unwrap()).unwrap();
            assert!(
                !m.metadata.truncation && !m.answers.is_empty(),
                "{name} TCP"
            );
        }
        assert!(full < 6, "{name}: {full} full answers at 1 a second");
    }
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    assert!(
        text.contains("edge_dns_rrl_total{action=\"slip\"}"),
        "{text}"
    );
    assert!(
        text.contains("edge_dns_packet_cache_total{result=\"hit\"}"),
        "{text}"
    );
}

/// Mutated queries, each asked twice of a service with the packet cache
/// and of one without: the same bytes back (the second from the cache).
#[test]
fn mutated_queries_get_the_same_answer_from_the_packet_cache() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let long = "x".repeat(300);
    let build = |cache: &str| {
        let text = ZONE.replace("LONGTEXT", &long).replacen(
            "[[dns.zone]]",
            &format!("[dns]\n{cache}\n\n[[dns.zone]]"),
            1,
        );
        let cfg = match edge_config::parse_str(&text, "answers.toml", &dir) {
            Ok(c) => c,
            Err(d) => panic!("{}", d.render()),
        };
        let svc = DnsService::new(&prometheus::Registry::new()).unwrap();
        svc.install(svc.build(cfg.dns.as_ref()).unwrap());
        svc
    };
    let (cached, fresh) = (build("packet_cache = \"1 MiB\""), build("packet_cache = 0"));
    let mut rng = fastrand::Rng::with_seed(0xcac4e);
    let seeds: Vec<Vec<u8>> = rows().iter().map(|r| query(r.q, r.t, r.o)).collect();
    for i in 0..10_000 {
        let mut p = seeds[i % seeds.len()].clone();
        for _ in 0..=rng.usize(..3) {
            match rng.u8(..3) {
                0 if !p.is_empty() => {
                    let at = rng.usize(..p.len());
                    p[at] = rng.u8(..);
                }
                1 if !p.is_empty() => p.truncate(rng.usize(..p.len())),
                _ => p.extend((0..rng.usize(..8)).map(|_| rng.u8(..))),
            }
        }
        let client: IpAddr = ["10.1.2.3", "10.9.9.9", "127.0.0.1"][i % 3]
            .parse()
            .unwrap();
        for transport in [Transport::Udp, Transport::Tcp] {
            for _ in 0..2 {
                assert_eq!(
                    cached.respond(&p, client, transport),
                    fresh.respond(&p, client, transport),
                    "{p:02x?} from {client} over {transport:?}"
                );
            }
        }
    }
}

/// Makes `site` shed `per_mille` of its located clients, as a node's
/// `/site/state` utilization would, one step per poll.
fn set_shed(svc: &DnsService, site: &str, per_mille: u32) {
    let state = svc.sites.get(site);
    state.set_nodes(&[format!("http://{site}.test/site/state")]);
    while state.shed() != per_mille {
        let u = if state.shed() < per_mille { 5.0 } else { 0.0 };
        state.set_utilization(0, Some(u));
        state.steer(std::time::Duration::ZERO, &edge_config::Shedding::default());
    }
}

/// While a site sheds, an ECS answer's scope covers the client's subnet
/// (the hash of the subnet decided it), never more than its family's
/// width; a /0 source (no subnet given, RFC 7871 §7.1.2) gets scope 0
/// whatever the resolver's own address, IPv4 or IPv6.
#[test]
fn ecs_scope_while_shedding() {
    let svc = service();
    set_shed(&svc, "fra", 500);
    let ecs = |addr: &'static str, len: u8| Opts {
        edns: true,
        ecs: Some((addr, len)),
        ..Opts::default()
    };
    let scope_from = |packet: &[u8], client: &str| {
        let out = svc
            .respond(packet, client.parse().unwrap(), Transport::Udp)
            .expect("an answer");
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(!m.answers.is_empty(), "shedding never leaves no answer");
        assert!(m.answers.iter().all(|r| r.ttl <= 5), "short TTL");
        match m
            .edns
            .as_ref()
            .and_then(|e| e.option(hickory_proto::rr::rdata::opt::EdnsCode::Subnet))
        {
            Some(EdnsOption::Subnet(s)) => s.scope_prefix(),
            _ => panic!("no ECS in the answer"),
        }
    };
    for client in ["10.0.0.1", "192.0.2.250", "2001:db8::1", "::ffff:10.0.0.1"] {
        for (addr, family) in [("0.0.0.0", 32), ("::", 128)] {
            let scope = scope_from(
                &query("cdn.example.test.", RecordType::A, ecs(addr, 0)),
                client,
            );
            assert_eq!(scope, 0, "/0 {addr} from {client}");
            assert!(scope <= family);
        }
        // A /24: the subnet decided (its hash), scope 24 at least.
        let scope = scope_from(
            &query("cdn.example.test.", RecordType::A, ecs("10.0.0.0", 24)),
            client,
        );
        assert!((24..=32).contains(&scope), "/24 from {client}: {scope}");
        let scope = scope_from(
            &query("cdn.example.test.", RecordType::AAAA, ecs("2001:db8::", 56)),
            client,
        );
        assert!((56..=128).contains(&scope), "/56 from {client}: {scope}");
    }
}
