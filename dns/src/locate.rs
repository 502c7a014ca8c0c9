//! Where a client is: a longest-prefix match over the CIDR table of the
//! config and of a CSV file (IPv4 and IPv6), then an optional MaxMind
//! database. A lookup is a handful of hash probes (one per prefix length in
//! use), so it never shows in the query path.
//!
//! CSV lines: `prefix,lat,lon[,region[,country]]`; `#` starts a comment,
//! and a first line starting with `prefix` is a header.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use edge_config::{Location, Locator as LocatorConfig};
use ipnet::IpNet;

use crate::geo::{Point, Where};

/// Why a locator table could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {what}")]
    Csv {
        path: PathBuf,
        line: usize,
        what: String,
    },
    #[error("{path}: not a MaxMind database: {what}")]
    Mmdb { path: PathBuf, what: String },
}

/// A match: where, and the prefix length it was found under (the ECS scope).
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub at: Where,
    pub prefix_len: u8,
}

/// One address family's table: by prefix length, longest first.
#[derive(Debug, Default)]
struct Table<K> {
    by_len: Vec<(u8, HashMap<K, u32>)>,
    /// Every (network, prefix length), by network: which entries lie
    /// inside a client subnet (see [`Table::longest_within`]).
    sorted: Vec<(K, u8)>,
}

trait Bits: Copy + Ord + std::hash::Hash {
    const WIDTH: u8;
    fn masked(self, len: u8) -> Self;
}

impl Bits for u32 {
    const WIDTH: u8 = 32;
    fn masked(self, len: u8) -> u32 {
        if len == 0 {
            0
        } else {
            self & (u32::MAX << (32 - u32::from(len)))
        }
    }
}

impl Bits for u128 {
    const WIDTH: u8 = 128;
    fn masked(self, len: u8) -> u128 {
        if len == 0 {
            0
        } else {
            self & (u128::MAX << (128 - u32::from(len)))
        }
    }
}

impl<K: Bits> Table<K> {
    /// Later entries for the same prefix replace earlier ones.
    fn insert(&mut self, net: K, len: u8, loc: u32) {
        let len = len.min(K::WIDTH);
        let pos = match self.by_len.iter().position(|(l, _)| *l == len) {
            Some(p) => p,
            None => {
                self.by_len.push((len, HashMap::new()));
                self.by_len.sort_by_key(|e| std::cmp::Reverse(e.0));
                self.by_len.iter().position(|(l, _)| *l == len).unwrap_or(0)
            }
        };
        self.by_len[pos].1.insert(net.masked(len), loc);
    }

    /// Orders the entries for [`Table::longest_within`]; after the inserts.
    fn finish(&mut self) {
        self.sorted = self
            .by_len
            .iter()
            .flat_map(|(len, map)| map.keys().map(move |k| (*k, *len)))
            .collect();
        self.sorted.sort_unstable_by_key(|(k, len)| (*k, *len));
    }

    /// The longest prefix length of an entry inside `net`/`len` (0: none).
    /// An answer for the whole subnet can differ below it, so the ECS scope
    /// is at least this (RFC 7871 §7.2.1).
    fn longest_within(&self, net: K, len: u8) -> u8 {
        let net = net.masked(len);
        let start = self.sorted.partition_point(|(k, _)| *k < net);
        let mut longest = 0;
        for (k, l) in &self.sorted[start..] {
            if k.masked(len) != net {
                break;
            }
            if *l > len {
                longest = longest.max(*l);
                if longest == K::WIDTH {
                    break;
                }
            }
        }
        longest
    }

    fn lookup(&self, addr: K) -> Option<(u32, u8)> {
        self.by_len
            .iter()
            .find_map(|(len, map)| map.get(&addr.masked(*len)).map(|loc| (*loc, *len)))
    }
}

/// The compiled locator.
#[derive(Debug, Default)]
pub struct Locator {
    places: Vec<Where>,
    /// Each place's country (ISO 3166-1 alpha-2, upper case), by place.
    countries: Vec<Option<[u8; 2]>>,
    /// Each site's country, by site index (for prefixes pinned to a site).
    site_countries: Vec<Option<[u8; 2]>>,
    v4: Table<u32>,
    v6: Table<u128>,
    mmdb: Option<maxminddb::Reader<Vec<u8>>>,
}

/// `DE` → `*b"DE"`; anything but two ASCII letters → `None`.
pub fn country_code(s: &str) -> Option<[u8; 2]> {
    match s.as_bytes() {
        [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
        }
        _ => None,
    }
}

fn place(loc: &Location, sites: &HashMap<&str, usize>) -> Option<Where> {
    match loc {
        Location::Point {
            lat, lon, region, ..
        } => Some(Where::At {
            point: Point::from_degrees(*lat, *lon),
            region: region.clone(),
        }),
        Location::Site(name) => sites.get(name.as_str()).map(|i| Where::Site(*i)),
    }
}

impl Locator {
    /// Builds the tables (reading the CSV and MMDB files: blocking).
    pub fn build(
        cfg: &LocatorConfig,
        sites: &HashMap<&str, usize>,
    ) -> Result<Locator, LocateError> {
        let mut l = Locator::default();
        if let Some(path) = &cfg.csv {
            l.load_csv(path)?;
        }
        // The config's own entries win over the file's.
        for c in &cfg.cidrs {
            if let Some(w) = place(&c.location, sites) {
                let country = match &c.location {
                    Location::Point { country, .. } => country.as_deref().and_then(country_code),
                    Location::Site(_) => None,
                };
                l.add(c.prefix, w, country);
            }
        }
        l.v4.finish();
        l.v6.finish();
        if let Some(path) = &cfg.mmdb {
            let reader = maxminddb::Reader::open_readfile(path).map_err(|e| LocateError::Mmdb {
                path: path.clone(),
                what: e.to_string(),
            })?;
            l.mmdb = Some(reader);
        }
        Ok(l)
    }

    /// Sets each site's country (by site index): a prefix pinned to a site
    /// is in the site's country.
    pub fn set_site_countries(&mut self, countries: Vec<Option<[u8; 2]>>) {
        self.site_countries = countries;
    }

    fn add(&mut self, net: IpNet, at: Where, country: Option<[u8; 2]>) {
        let id = self.places.len() as u32;
        self.places.push(at);
        self.countries.push(country);
        match net {
            IpNet::V4(n) => self.v4.insert(u32::from(n.network()), n.prefix_len(), id),
            IpNet::V6(n) => self.v6.insert(u128::from(n.network()), n.prefix_len(), id),
        }
    }

    fn load_csv(&mut self, path: &Path) -> Result<(), LocateError> {
        let text = std::fs::read_to_string(path).map_err(|source| LocateError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() || (n == 0 && line.starts_with("prefix")) {
                continue;
            }
            let err = |what: String| LocateError::Csv {
                path: path.to_path_buf(),
                line: n + 1,
                what,
            };
            let cols: Vec<&str> = line.split(',').map(str::trim).collect();
            if cols.len() < 3 {
                return Err(err("expected prefix,lat,lon[,region[,country]]".into()));
            }
            let net: IpNet = cols[0]
                .parse()
                .map_err(|_| err(format!("{:?} is not a CIDR prefix", cols[0])))?;
            let coord = |s: &str, max: f64| {
                s.parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && v.abs() <= max)
            };
            let lat = coord(cols[1], 90.0)
                .ok_or_else(|| err(format!("latitude {:?} is not in -90..90", cols[1])))?;
            let lon = coord(cols[2], 180.0)
                .ok_or_else(|| err(format!("longitude {:?} is not in -180..180", cols[2])))?;
            let region = cols
                .get(3)
                .filter(|r| !r.is_empty())
                .map(|r| r.to_ascii_lowercase());
            let country = match cols.get(4).filter(|c| !c.is_empty()) {
                Some(c) => Some(
                    country_code(c)
                        .ok_or_else(|| err(format!("country {c:?} is not a two-letter code")))?,
                ),
                None => None,
            };
            self.add(
                net.trunc(),
                Where::At {
                    point: Point::from_degrees(lat, lon),
                    region,
                },
                country,
            );
        }
        Ok(())
    }

    /// Entries in the CIDR tables.
    pub fn len(&self) -> usize {
        self.places.len()
    }

    pub fn is_empty(&self) -> bool {
        self.places.is_empty() && self.mmdb.is_none()
    }

    /// The longest prefix length of a table entry inside the subnet
    /// `addr`/`len` and longer than `len` (0: none).
    pub fn longest_within(&self, addr: IpAddr, len: u8) -> u8 {
        match addr {
            IpAddr::V4(a) => self.v4.longest_within(u32::from(a), len.min(32)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => self
                    .v4
                    .longest_within(u32::from(v4), len.saturating_sub(96)),
                None => self.v6.longest_within(u128::from(a), len.min(128)),
            },
        }
    }

    /// The country `addr` is in (ISO 3166-1 alpha-2, upper case), if known:
    /// the longest matching table entry's (a prefix pinned to a site is in
    /// the site's country), else the MaxMind database's.
    pub fn country(&self, addr: IpAddr) -> Option<[u8; 2]> {
        let addr = unmapped(addr);
        if let Some((id, _)) = self.lookup(addr) {
            return match self.places.get(id as usize)? {
                Where::Site(i) => self.site_countries.get(*i).copied().flatten(),
                Where::At { .. } => self.countries.get(id as usize).copied().flatten(),
            };
        }
        let reader = self.mmdb.as_ref()?;
        let result = reader.lookup(addr).ok()?;
        if !result.has_data() {
            return None;
        }
        let city: maxminddb::geoip2::City<'_> = result.decode().ok()??;
        city.country.iso_code.and_then(country_code)
    }

    fn lookup(&self, addr: IpAddr) -> Option<(u32, u8)> {
        match addr {
            IpAddr::V4(a) => self.v4.lookup(u32::from(a)),
            IpAddr::V6(a) => self.v6.lookup(u128::from(a)),
        }
    }

    /// Where `addr` is and which table said so: `"table"` (the config's
    /// prefixes and the CSV) or `"mmdb"`.
    pub fn locate_with_source(&self, addr: IpAddr) -> Option<(Found, &'static str)> {
        let addr = unmapped(addr);
        if let Some((id, prefix_len)) = self.lookup(addr) {
            return self.places.get(id as usize).map(|w| {
                (
                    Found {
                        at: w.clone(),
                        prefix_len,
                    },
                    "table",
                )
            });
        }
        self.mmdb
            .as_ref()
            .and_then(|r| mmdb_lookup(r, addr))
            .map(|f| (f, "mmdb"))
    }

    /// Where `addr` is, if known.
    pub fn locate(&self, addr: IpAddr) -> Option<Found> {
        let addr = unmapped(addr);
        let hit = self.lookup(addr);
        if let Some((id, prefix_len)) = hit {
            return self.places.get(id as usize).map(|w| Found {
                at: w.clone(),
                prefix_len,
            });
        }
        self.mmdb.as_ref().and_then(|r| mmdb_lookup(r, addr))
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn unmapped(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

fn mmdb_lookup(reader: &maxminddb::Reader<Vec<u8>>, addr: IpAddr) -> Option<Found> {
    let result = reader.lookup(addr).ok()?;
    if !result.has_data() {
        return None;
    }
    let city: maxminddb::geoip2::City<'_> = result.decode().ok()??;
    let lat = city.location.latitude?;
    let lon = city.location.longitude?;
    let region = city.continent.code.map(str::to_ascii_lowercase);
    let prefix_len = result.network().ok().map_or(0, |n| n.prefix());
    Some(Found {
        at: Where::At {
            point: Point::from_degrees(lat, lon),
            region,
        },
        prefix_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_config::CidrLocation;

    fn point(lat: f64, lon: f64) -> Location {
        Location::Point {
            lat,
            lon,
            region: Some("r".into()),
            country: None,
        }
    }

    #[test]
    fn the_longest_prefix_wins_in_both_families() {
        let sites = HashMap::from([("sin", 2usize)]);
        let cfg = LocatorConfig {
            cidrs: vec![
                CidrLocation {
                    prefix: "10.0.0.0/8".parse().unwrap(),
                    location: point(1.0, 1.0),
                },
                CidrLocation {
                    prefix: "10.1.0.0/16".parse().unwrap(),
                    location: point(2.0, 2.0),
                },
                CidrLocation {
                    prefix: "10.1.2.0/24".parse().unwrap(),
                    location: Location::Site("sin".into()),
                },
                CidrLocation {
                    prefix: "2001:db8::/32".parse().unwrap(),
                    location: point(3.0, 3.0),
                },
            ],
            csv: None,
            mmdb: None,
        };
        let l = Locator::build(&cfg, &sites).unwrap();
        let at = |ip: &str| l.locate(ip.parse().unwrap()).map(|f| (f.prefix_len, f.at));
        assert_eq!(at("10.9.9.9").unwrap().0, 8);
        assert_eq!(at("10.1.9.9").unwrap().0, 16);
        assert_eq!(at("10.1.2.3"), Some((24, Where::Site(2))));
        assert_eq!(
            at("::ffff:10.1.2.3"),
            Some((24, Where::Site(2))),
            "v4-mapped"
        );
        assert_eq!(at("2001:db8:1::1").unwrap().0, 32);
        assert_eq!(at("192.0.2.1"), None);
    }

    #[test]
    fn countries_come_from_entries_files_and_pinned_sites() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("c.csv");
        std::fs::write(
            &csv,
            "198.51.100.0/24,40.7,-74.0,na,us\n198.51.101.0/24,1,1,eu\n",
        )
        .unwrap();
        let cfg = LocatorConfig {
            cidrs: vec![
                CidrLocation {
                    prefix: "10.0.0.0/8".parse().unwrap(),
                    location: Location::Point {
                        lat: 1.0,
                        lon: 1.0,
                        region: None,
                        country: Some("DE".into()),
                    },
                },
                CidrLocation {
                    prefix: "10.1.0.0/16".parse().unwrap(),
                    location: Location::Site("sin".into()),
                },
            ],
            csv: Some(csv),
            mmdb: None,
        };
        let mut l = Locator::build(&cfg, &HashMap::from([("sin", 0usize)])).unwrap();
        l.set_site_countries(vec![Some(*b"SG")]);
        let c = |ip: &str| l.country(ip.parse().unwrap());
        assert_eq!(c("10.9.9.9"), Some(*b"DE"));
        assert_eq!(c("::ffff:10.9.9.9"), Some(*b"DE"));
        assert_eq!(c("10.1.2.3"), Some(*b"SG"), "a prefix pinned to a site");
        assert_eq!(c("198.51.100.9"), Some(*b"US"), "the csv's fifth column");
        assert_eq!(c("198.51.101.9"), None);
        assert_eq!(c("192.0.2.1"), None);
        let bad = dir.path().join("bad.csv");
        std::fs::write(&bad, "10.0.0.0/8,1,1,eu,Germany\n").unwrap();
        let cfg = LocatorConfig {
            cidrs: Vec::new(),
            csv: Some(bad),
            mmdb: None,
        };
        let e = Locator::build(&cfg, &HashMap::new()).unwrap_err();
        assert!(e.to_string().contains(":1: country \"Germany\""), "{e}");
    }

    #[test]
    fn csv_files_load_and_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("ok.csv");
        std::fs::write(&good, "prefix,lat,lon,region\n# comment\n198.51.100.0/24, 40.7, -74.0, us\n2001:db8:100::/48,48.85,2.35\n").unwrap();
        let cfg = LocatorConfig {
            cidrs: Vec::new(),
            csv: Some(good),
            mmdb: None,
        };
        let l = Locator::build(&cfg, &HashMap::new()).unwrap();
        assert_eq!(l.len(), 2);
        let f = l.locate("198.51.100.7".parse().unwrap()).unwrap();
        assert_eq!(f.prefix_len, 24);
        let bad = dir.path().join("bad.csv");
        std::fs::write(&bad, "10.0.0.0/8,1,1\n10.0.0.0/33,1,1\n").unwrap();
        let e = Locator::build(
            &LocatorConfig {
                cidrs: Vec::new(),
                csv: Some(bad),
                mmdb: None,
            },
            &HashMap::new(),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .ends_with(":2: \"10.0.0.0/33\" is not a CIDR prefix"),
            "{e}"
        );
    }

    #[test]
    fn a_maxmind_database_locates_what_the_tables_do_not() {
        // dns/tests/data/city.mmdb comes from scripts/make-test-mmdb.py.
        let mmdb = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/city.mmdb");
        let cfg = LocatorConfig {
            cidrs: vec![CidrLocation {
                prefix: "203.0.113.128/25".parse().unwrap(),
                location: point(9.0, 9.0),
            }],
            csv: None,
            mmdb: Some(mmdb),
        };
        let l = Locator::build(&cfg, &HashMap::new()).unwrap();
        let sg = l.locate("203.0.113.7".parse().unwrap()).unwrap();
        assert_eq!(sg.prefix_len, 24);
        assert_eq!(
            sg.at,
            Where::At {
                point: Point::from_degrees(1.35, 103.82),
                region: Some("as".into())
            }
        );
        assert_eq!(
            l.locate("203.0.113.200".parse().unwrap())
                .unwrap()
                .prefix_len,
            25,
            "the table first"
        );
        let fr = l.locate("2001:db8:200::1".parse().unwrap()).unwrap();
        assert_eq!(fr.prefix_len, 48);
        // Countries: the database's where the tables have none.
        assert_eq!(l.country("203.0.113.7".parse().unwrap()), Some(*b"SG"));
        assert_eq!(l.country("2001:db8:200::1".parse().unwrap()), Some(*b"FR"));
        assert_eq!(
            l.country("203.0.113.200".parse().unwrap()),
            None,
            "table entry without one"
        );
        assert_eq!(l.country("192.0.2.1".parse().unwrap()), None);
        assert_eq!(l.locate("192.0.2.1".parse().unwrap()), None);
        let bad = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(bad.path(), b"not a database").unwrap();
        let e = Locator::build(
            &LocatorConfig {
                cidrs: Vec::new(),
                csv: None,
                mmdb: Some(bad.path().to_path_buf()),
            },
            &HashMap::new(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not a MaxMind database"), "{e}");
    }
}
