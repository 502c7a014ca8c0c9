use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;

use super::StatusRange;
use crate::units::duration_serde;

/// `[dns]`: authoritative zones with geo answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dns {
    pub zones: Vec<Zone>,
    pub sites: Vec<DnsSite>,
    pub locator: Locator,
    pub rrl: Option<Rrl>,
    pub all_sites_down: AllSitesDown,
    /// Worker threads of the DNS service.
    pub threads: usize,
    /// TSIG keys (RFC 8945) that zone transfers may require.
    pub tsig_keys: Vec<TsigKey>,
    /// Bytes of answers (and their keys) kept ready to send again (0: off).
    /// Like PowerDNS's packet cache: a repeated query skips parsing, lookup
    /// and encoding.
    pub packet_cache: u64,
    /// When a site above its capacity sheds clients to the next nearest.
    pub shedding: Shedding,
}

/// `[dns.shedding]`: a site whose nodes report a utilization (load ÷
/// capacity) above `high_water` sheds `step` more of its located clients
/// to the next nearest site at each poll; below `low_water`, `step` fewer;
/// in between the share holds (hysteresis).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Shedding {
    pub high_water: f64,
    pub low_water: f64,
    /// Per mille of the site's clients, per poll interval.
    pub step_per_mille: u32,
}

impl Default for Shedding {
    fn default() -> Self {
        Self {
            high_water: 0.9,
            low_water: 0.75,
            step_per_mille: 100,
        }
    }
}

/// A TSIG key: its name (absolute), algorithm and secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TsigKey {
    pub name: String,
    /// `hmac-sha256`, `hmac-sha384` or `hmac-sha512`.
    pub algorithm: String,
    /// The shared secret, base64 (validated).
    pub secret: super::Secret,
}

/// Who may transfer a zone (AXFR, and IXFR answered as AXFR) and whom to
/// NOTIFY when it changes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transfer {
    /// Client prefixes allowed; a transfer from elsewhere is REFUSED.
    pub allow: Vec<IpNet>,
    /// The TSIG key a transfer must be signed with (NOTAUTH otherwise).
    pub key: Option<String>,
    /// Secondaries sent a NOTIFY (RFC 1996) when the serial changes.
    pub notify: Vec<std::net::SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AllSitesDown {
    /// Answer with every site, as if all were up.
    FailOpen,
    Servfail,
}

/// A zone; names are lower-case, absolute (ending in `.`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Zone {
    pub name: String,
    /// Default TTL of records that give none (seconds).
    pub ttl: u32,
    pub soa: Soa,
    /// The apex NS set (from `ns` and the zone file's apex NS records).
    pub ns: Vec<String>,
    /// The RFC 1035 master file the zone's records come from, if any
    /// (`records` are added to what it holds).
    pub file: Option<PathBuf>,
    /// Zone transfers out, if any.
    pub transfer: Option<Transfer>,
    /// Every record but the apex SOA and NS: one TTL per RRset (the
    /// lowest), duplicates removed.
    pub records: Vec<Record>,
    pub geo: Vec<GeoRecord>,
    /// What `edge check` warns about (RRsets whose TTLs differed).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Soa {
    /// The SOA record's own TTL (a zone file's, else the zone's `ttl`).
    pub ttl: u32,
    pub mname: String,
    pub rname: String,
    pub serial: u32,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    /// Negative-caching TTL.
    pub minimum: u32,
}

/// A record: owner, TTL, type and data, in presentation and wire form
/// (see [`crate::zonefile`]).
pub type Record = crate::zonefile::ZoneRecord;

/// A name answered with the best site(s) for the client.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GeoRecord {
    pub name: String,
    /// Candidate sites (all sites when the config names none).
    pub sites: Vec<String>,
    pub policy: GeoPolicy,
    pub ttl: u32,
    /// Answered when the client's location is unknown; empty: all candidates.
    pub default_sites: Vec<String>,
    /// For `failover`: region → sites in order of preference.
    pub failover: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GeoPolicy {
    /// The N nearest up sites, nearest first.
    Nearest { count: u32 },
    /// One of the K nearest up sites, picked by weight.
    Weighted { among: u32 },
    /// The first up site of the client's region's list.
    Failover,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DnsSite {
    pub name: String,
    pub lat: f64,
    pub lon: f64,
    pub region: Option<String>,
    pub country: Option<String>,
    pub ipv4: Vec<Ipv4Addr>,
    pub ipv6: Vec<Ipv6Addr>,
    pub weight: u32,
    pub capacity: u32,
    pub health: Option<SiteHealth>,
}

/// HTTP probes of a site's nodes: the site is up while any node passes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteHealth {
    pub urls: Vec<String>,
    #[serde(with = "duration_serde")]
    pub interval: Duration,
    #[serde(with = "duration_serde")]
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub expect_status: StatusRange,
}

/// Where a client is, by its address or EDNS client subnet.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Locator {
    pub cidrs: Vec<CidrLocation>,
    pub csv: Option<PathBuf>,
    pub mmdb: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CidrLocation {
    pub prefix: IpNet,
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    /// A point; the nearest sites are found by great-circle distance.
    Point {
        lat: f64,
        lon: f64,
        region: Option<String>,
        country: Option<String>,
    },
    /// Pin the prefix to a site.
    Site(String),
}

/// Response rate limiting (as BIND's RRL).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rrl {
    pub responses_per_second: u32,
    #[serde(with = "duration_serde")]
    pub window: Duration,
    /// Every Nth limited response is sent truncated (TC) instead of dropped; 0: drop all.
    pub slip: u32,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    pub exempt: Vec<IpNet>,
    pub log_only: bool,
}
