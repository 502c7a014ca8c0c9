//! The DNS answer path on arbitrary packets (`make fuzz`, outside CI): a
//! zone with wildcards, a delegation, DNAME, CNAME chains, a geo name and
//! a transfer ACL; over UDP and TCP, from an allowed and another address.
//! No panic, and whatever is sent back parses as a DNS message with the
//! query's id.
#![no_main]

use std::net::IpAddr;
use std::sync::OnceLock;

use edge_dns::{DnsService, Transport};
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"
[[listener]]
name = "dns"
kind = "dns"
address = "127.0.0.1:0"

[[dns.tsig_key]]
name = "k"
secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ=="

[[dns.zone]]
name = "f.test."
ns = ["ns1.f.test."]
transfer = { allow = ["127.0.0.1"], key = "k" }
records = [
  { name = "ns1", type = "A", value = "192.0.2.1" },
  { name = "@", type = "MX", value = "10 ns1" },
  { name = "*.w", type = "TXT", value = "wild" },
  { name = "c", type = "CNAME", value = "x.w" },
  { name = "loop", type = "CNAME", value = "loop" },
  { name = "d", type = "DNAME", value = "f.test." },
  { name = "sub", type = "NS", value = "ns.sub" },
  { name = "ns.sub", type = "A", value = "192.0.2.2" },
  { name = "s", type = "SRV", value = "0 0 53 ns1" },
]
geo = [ { name = "g", sites = ["a"] } ]

[[dns.site]]
name = "a"
lat = 1.0
lon = 2.0
ipv4 = ["192.0.2.9"]
ipv6 = ["2001:db8::9"]

[[dns.locator.cidr]]
prefix = "10.0.0.0/8"
site = "a"
"#;

fn service() -> &'static DnsService {
    static SERVICE: OnceLock<std::sync::Arc<DnsService>> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let cfg = edge_config::parse_str(CONFIG, "fuzz.toml", std::path::Path::new("."))
            .unwrap_or_else(|d| panic!("{}", d.render()));
        let svc = DnsService::new(&prometheus::Registry::new()).expect("metrics");
        let state = svc.build(cfg.dns.as_ref()).expect("state");
        svc.install(state);
        svc
    })
}

fuzz_target!(|data: &[u8]| {
    let svc = service();
    for client in ["127.0.0.1", "10.1.2.3"] {
        let ip: IpAddr = client.parse().expect("address");
        let mut answers: Vec<Vec<u8>> = svc.respond(data, ip, Transport::Udp).into_iter().collect();
        answers.extend(svc.respond_tcp(data, ip));
        for a in answers {
            let m = hickory_proto::op::Message::from_vec(&a).expect("an answer parses");
            assert_eq!(&a[..2], &data[..2], "the query's id");
            let _ = m;
        }
    }
});
