//! `[dns]`: zones, records (values in zone-file syntax), geo names, sites,
//! the locator and response rate limiting.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use toml::de::DeValue;
use toml::Spanned;

use super::fields::dns_name_ok;
use super::Checker;
use crate::model::{
    AllSitesDown, CidrLocation, Dns, DnsSite, GeoPolicy, GeoRecord, Location, Locator, Record, Rrl,
    Secret, Shedding, SiteHealth, Soa, StatusRange, Transfer, TsigKey, Zone,
};
use crate::raw::{
    RawCidrLocation, RawDns, RawDnsSite, RawGeo, RawLocator, RawRecord, RawRrl, RawShedding,
    RawSiteHealth, RawTransfer, RawTsigKey, RawZone,
};
use crate::source::join_key;
use crate::zonefile;

pub(super) fn dns(ck: &mut Checker<'_>, value: &Spanned<DeValue<'_>>) -> Option<Dns> {
    let raw: RawDns = ck.deser(value)?;
    let RawDns {
        all_sites_down,
        zone,
        site,
        locator,
        rrl,
        threads,
        packet_cache,
        tsig_key,
        shedding,
    } = raw;
    let p = "dns";
    let mut tsig_keys: Vec<TsigKey> = Vec::new();
    for (i, k) in tsig_key.into_iter().enumerate() {
        let kp = format!("{p}.tsig_key[{i}]");
        if let Some(key) = tsig_key_item(ck, &kp, k.into_inner(), &tsig_keys) {
            tsig_keys.push(key);
        }
    }
    let mut sites: Vec<DnsSite> = Vec::new();
    for (i, s) in site.into_iter().enumerate() {
        let sp = format!("{p}.site[{i}]");
        if let Some(built) = dns_site(ck, &sp, s, &sites) {
            sites.push(built);
        }
    }
    let mut zones: Vec<Zone> = Vec::new();
    for (i, z) in zone.into_iter().enumerate() {
        let zp = format!("{p}.zone[{i}]");
        if let Some(built) = zone_item(ck, &zp, z, &sites, &zones, &tsig_keys) {
            zones.push(built);
        }
    }
    let locator = locator
        .map(|l| locator_section(ck, &join_key(p, "locator"), l.into_inner(), &sites))
        .unwrap_or_default();
    let all_sites_down = match all_sites_down {
        Some(v) => ck
            .choice(
                &v,
                &join_key(p, "all_sites_down"),
                &[
                    ("fail_open", AllSitesDown::FailOpen),
                    ("servfail", AllSitesDown::Servfail),
                ],
            )
            .unwrap_or(AllSitesDown::FailOpen),
        None => AllSitesDown::FailOpen,
    };
    Some(Dns {
        zones,
        sites,
        locator,
        rrl: rrl.map(|r| rrl_section(ck, &join_key(p, "rrl"), r.into_inner())),
        all_sites_down,
        threads: ck.int(&threads, p, "threads", 1, 256, 1) as usize,
        tsig_keys,
        packet_cache: ck.size(&packet_cache, p, "packet_cache", 32 << 20),
        shedding: shedding
            .map(|s| shedding_section(ck, &join_key(p, "shedding"), s.into_inner()))
            .unwrap_or_default(),
    })
}

fn shedding_section(ck: &mut Checker<'_>, p: &str, raw: RawShedding) -> Shedding {
    let d = Shedding::default();
    let mut fraction = |v: &Option<Spanned<f64>>, key: &str, lo: f64, hi: f64, what: &str| {
        v.as_ref().and_then(|x| {
            let n = *x.get_ref();
            if n.is_finite() && n >= lo && n <= hi {
                Some(n)
            } else {
                ck.error(
                    x.span(),
                    join_key(p, key),
                    format!("{n} is out of range"),
                    Some(what),
                );
                None
            }
        })
    };
    let high = fraction(
        &raw.high_water,
        "high_water",
        0.01,
        10.0,
        "a utilization from 0.01 to 10, such as 0.9",
    )
    .unwrap_or(d.high_water);
    let low = fraction(
        &raw.low_water,
        "low_water",
        0.0,
        10.0,
        "a utilization from 0 to 10, such as 0.75",
    )
    .unwrap_or(d.low_water);
    let step = fraction(
        &raw.step,
        "step",
        0.001,
        1.0,
        "a share of clients from 0.001 to 1, such as 0.1",
    )
    .unwrap_or(0.1);
    if low >= high {
        if let Some(l) = &raw.low_water {
            ck.error(
                l.span(),
                join_key(p, "low_water"),
                format!("{low} is not below high_water ({high})"),
                Some("a low water mark below the high one: the band between them holds the share steady"),
            );
        }
    }
    Shedding {
        high_water: high,
        low_water: low.min(high),
        step_per_mille: ((step * 1000.0).round() as u32).clamp(1, 1000),
    }
}

/// Lower-case absolute name of `name` in `zone` (`@` is the apex).
fn absolute(name: &str, zone: &str) -> String {
    let name = name.to_ascii_lowercase();
    if name == "@" {
        zone.to_string()
    } else if name.ends_with('.') {
        name
    } else {
        format!("{name}.{zone}")
    }
}

fn in_zone(name: &str, zone: &str) -> bool {
    name == zone || name.ends_with(&format!(".{zone}"))
}

fn checked_name(
    ck: &mut Checker<'_>,
    v: &Spanned<String>,
    path: &str,
    zone: &str,
) -> Option<String> {
    let raw = v.get_ref();
    if raw != "@" && !dns_name_ok(raw) {
        ck.error(
            v.span(),
            path,
            format!("{raw:?} is not a DNS name"),
            Some("a name such as \"www\", \"@\" or \"video.cdn.example.\""),
        );
        return None;
    }
    let name = absolute(raw, zone);
    if !in_zone(&name, zone) {
        ck.error(
            v.span(),
            path,
            format!("{name} is outside zone {zone}"),
            Some(&format!("a name within {zone}")),
        );
        return None;
    }
    Some(name)
}

fn target_name(
    ck: &mut Checker<'_>,
    text: &str,
    span: std::ops::Range<usize>,
    path: &str,
    zone: &str,
) -> Option<String> {
    if !dns_name_ok(text) || text.contains('*') {
        ck.error(
            span,
            path,
            format!("{text:?} is not a DNS name"),
            Some("a host name"),
        );
        return None;
    }
    Some(absolute(text, zone))
}

fn ttl(ck: &mut Checker<'_>, v: &Option<Spanned<i64>>, path: &str, key: &str, default: u32) -> u32 {
    ck.int(v, path, key, 0, 2_147_483_647, default as i64) as u32
}

fn secs(
    ck: &mut Checker<'_>,
    v: &Option<Spanned<crate::units::Scalar>>,
    p: &str,
    key: &str,
    default: u64,
) -> u32 {
    let d = ck.duration(v, p, key, Duration::from_secs(default));
    d.as_secs().min(u32::MAX as u64) as u32
}

fn zone_item(
    ck: &mut Checker<'_>,
    zp: &str,
    raw: Spanned<RawZone>,
    sites: &[DnsSite],
    zones: &[Zone],
    tsig_keys: &[TsigKey],
) -> Option<Zone> {
    let span = raw.span();
    let RawZone {
        name,
        file,
        transfer,
        ttl: zone_ttl,
        soa,
        ns,
        records,
        geo,
    } = raw.into_inner();
    if !dns_name_ok(name.get_ref()) || name.get_ref().contains('*') {
        ck.error(
            name.span(),
            join_key(zp, "name"),
            format!("{:?} is not a zone name", name.get_ref()),
            Some("a domain such as \"cdn.example.\""),
        );
        return None;
    }
    let zone = {
        let n = name.get_ref().to_ascii_lowercase();
        if n.ends_with('.') {
            n
        } else {
            format!("{n}.")
        }
    };
    if zones.iter().any(|z| z.name == zone) {
        ck.error(
            name.span(),
            join_key(zp, "name"),
            format!("zone {zone} is defined twice"),
            None,
        );
        return None;
    }
    let default_ttl = ttl(ck, &zone_ttl, zp, "ttl", 300);

    // The master file first: its SOA and apex NS, and its records.
    let mut scanned = zonefile::Scanned::default();
    let mut scanned_failed = false;
    let mut file_path = None;
    if let Some(f) = &file {
        let path = ck.base_dir().join(f.get_ref());
        match zonefile::load(&path, &zone, default_ttl) {
            Ok(s) => scanned = s,
            Err(e) => {
                scanned_failed = true;
                ck.error(
                    f.span(),
                    join_key(zp, "file"),
                    format!("zone file {e}"),
                    Some("an RFC 1035 master file"),
                );
            }
        }
        file_path = Some(path);
    }

    let soa = match (soa, scanned.soa.take()) {
        (Some(s), from_file) => {
            let sp = join_key(zp, "soa");
            if from_file.is_some() {
                ck.error(
                    s.span(),
                    sp.clone(),
                    "the zone file has an SOA already",
                    Some("the SOA in one place: the file or `soa`"),
                );
            }
            let s = s.into_inner();
            let mname = target_name(
                ck,
                s.mname.get_ref(),
                s.mname.span(),
                &join_key(&sp, "mname"),
                &zone,
            );
            let rname = target_name(
                ck,
                s.rname.get_ref(),
                s.rname.span(),
                &join_key(&sp, "rname"),
                &zone,
            );
            let serial = ck.int(&s.serial, &sp, "serial", 0, u32::MAX as i64, 1) as u32;
            Soa {
                ttl: default_ttl,
                mname: mname.unwrap_or_default(),
                rname: rname.unwrap_or_default(),
                serial,
                refresh: secs(ck, &s.refresh, &sp, "refresh", 3600),
                retry: secs(ck, &s.retry, &sp, "retry", 600),
                expire: secs(ck, &s.expire, &sp, "expire", 604_800),
                minimum: secs(ck, &s.minimum, &sp, "minimum", 60),
            }
        }
        (None, Some(f)) => Soa {
            ttl: f.ttl,
            mname: f.mname,
            rname: f.rname,
            serial: f.serial,
            refresh: f.refresh,
            retry: f.retry,
            expire: f.expire,
            minimum: f.minimum,
        },
        (None, None) => {
            if let Some(f) = &file {
                if !scanned_failed {
                    ck.error(
                        f.span(),
                        join_key(zp, "file"),
                        format!("the zone file has no SOA record at {zone}"),
                        Some("an SOA record at the zone apex"),
                    );
                }
            }
            let first_ns = ns.first().map(|n| absolute(n.get_ref(), &zone));
            Soa {
                ttl: default_ttl,
                mname: first_ns.unwrap_or_else(|| format!("ns1.{zone}")),
                rname: format!("hostmaster.{zone}"),
                serial: 1,
                refresh: 3600,
                retry: 600,
                expire: 604_800,
                minimum: 60,
            }
        }
    };

    let mut ns_names = Vec::new();
    for (i, n) in ns.iter().enumerate() {
        if let Some(t) = target_name(ck, n.get_ref(), n.span(), &format!("{zp}.ns[{i}]"), &zone) {
            if !ns_names.contains(&t) {
                ns_names.push(t);
            }
        }
    }
    // Every record, the file's then the table's, with where it came from.
    let mut all: Vec<(Record, std::ops::Range<usize>, String)> = Vec::new();
    let file_span = file.as_ref().map_or(span.clone(), |f| f.span());
    for r in scanned.records {
        let at = join_key(zp, "file");
        all.push((r, file_span.clone(), at));
    }
    for (i, r) in records.into_iter().enumerate() {
        let rp = format!("{zp}.records[{i}]");
        if let Some(rec) = record(ck, &rp, r.into_inner(), &zone, default_ttl) {
            all.push((rec.0, rec.1, rp));
        }
    }
    let mut out_records: Vec<Record> = Vec::new();
    for (rec, rspan, rp) in all {
        let here = if rec.origin.is_empty() {
            rec.name.clone()
        } else {
            format!("{} ({})", rec.name, rec.origin)
        };
        if !in_zone(&rec.name, &zone) {
            ck.error(
                rspan,
                rp,
                format!("{here} is outside zone {zone}"),
                Some(&format!("names within {zone}")),
            );
            continue;
        }
        if rec.wire.rtype == 6 {
            if rec.origin.is_empty() {
                // A TOML record: the zone's SOA is `soa` or the file's.
                ck.error(
                    rspan,
                    rp,
                    format!("{here}: an SOA in `records`"),
                    Some("the SOA in `soa` or in the zone file"),
                );
                continue;
            }
            if rec.name != zone {
                ck.error(
                    rspan,
                    rp,
                    format!("{here}: an SOA below the apex"),
                    Some("the SOA at the zone apex only"),
                );
            }
            continue;
        }
        if rec.wire.rtype == 2 && rec.name == zone {
            // Kept as a record too: with its own TTL.
            let target = rec.value.to_ascii_lowercase();
            if !ns_names.contains(&target) {
                ns_names.push(target);
            }
        }
        if out_records.iter().any(|o| {
            o.name == rec.name && o.wire.rtype == rec.wire.rtype && o.wire.rdata == rec.wire.rdata
        }) {
            // RFC 2181 §5: an RRset holds no duplicates; served once.
            continue;
        }
        // RFC 1034 §3.6.2 / RFC 2181 §10.1: a CNAME is alone at its name
        // (DNSSEC types aside) and never at the apex; RFC 6672: one DNAME.
        let dnssec = |t: u16| matches!(t, 46 | 47 | 50);
        let cname_clash = out_records.iter().any(|o| {
            o.name == rec.name
                && !dnssec(o.wire.rtype)
                && !dnssec(rec.wire.rtype)
                && (o.wire.rtype == 5) != (rec.wire.rtype == 5)
                || (o.name == rec.name && o.wire.rtype == 5 && rec.wire.rtype == 5)
        });
        if cname_clash || (rec.wire.rtype == 5 && rec.name == zone) {
            ck.error(
                rspan,
                rp,
                format!("{here} has a CNAME and other data"),
                Some("a CNAME alone at its name (and never at the zone apex)"),
            );
            continue;
        }
        if rec.wire.rtype == 39
            && out_records
                .iter()
                .any(|o| o.name == rec.name && o.wire.rtype == 39)
        {
            ck.error(
                rspan,
                rp,
                format!("{here} has two DNAMEs"),
                Some("one DNAME at a name"),
            );
            continue;
        }
        out_records.push(rec);
    }
    if ns_names.is_empty() && !scanned_failed {
        ck.error(
            span.clone(),
            join_key(zp, "ns"),
            "a zone needs at least one name server",
            Some("ns = [\"ns1.cdn.example.\"], or NS records at the apex of the zone file"),
        );
    }
    // One TTL per RRset (RFC 2181 §5.2): the lowest, and a warning.
    let mut warnings = Vec::new();
    let mut seen: Vec<(String, u16)> = Vec::new();
    for i in 0..out_records.len() {
        let key = (out_records[i].name.clone(), out_records[i].wire.rtype);
        if seen.contains(&key) {
            continue;
        }
        let ttls: Vec<u32> = out_records
            .iter()
            .filter(|r| r.name == key.0 && r.wire.rtype == key.1)
            .map(|r| r.ttl)
            .collect();
        let min = ttls.iter().copied().min().unwrap_or(0);
        if ttls.iter().any(|&t| t != min) {
            warnings.push(format!(
                "zone {zone}: {} {} has records with different TTLs {ttls:?}; all are served with {min}",
                key.0, out_records[i].rtype
            ));
            for r in out_records
                .iter_mut()
                .filter(|r| r.name == key.0 && r.wire.rtype == key.1)
            {
                r.ttl = min;
            }
        }
        seen.push(key);
    }

    let mut geo_records: Vec<GeoRecord> = Vec::new();
    for (i, g) in geo.into_iter().enumerate() {
        let gp = format!("{zp}.geo[{i}]");
        if let Some(rec) = geo_item(ck, &gp, g, &zone, sites) {
            if out_records.iter().any(|r| r.name == rec.name)
                || geo_records.iter().any(|r| r.name == rec.name)
            {
                ck.error(
                    span.clone(),
                    gp,
                    format!("{} is both a geo name and has other records", rec.name),
                    None,
                );
                continue;
            }
            geo_records.push(rec);
        }
    }

    let transfer = transfer.map(|t| transfer_item(ck, &join_key(zp, "transfer"), t, tsig_keys));
    Some(Zone {
        name: zone,
        ttl: default_ttl,
        soa,
        ns: ns_names,
        file: file_path,
        transfer,
        records: out_records,
        geo: geo_records,
        warnings,
    })
}

/// A TSIG key (RFC 8945): a name, an HMAC-SHA2 algorithm, a base64 secret.
fn tsig_key_item(
    ck: &mut Checker<'_>,
    kp: &str,
    raw: RawTsigKey,
    keys: &[TsigKey],
) -> Option<TsigKey> {
    use base64::Engine;
    let RawTsigKey {
        name,
        algorithm,
        secret,
    } = raw;
    let n = name.get_ref().trim().to_ascii_lowercase();
    if !dns_name_ok(&n) || n.contains('*') {
        ck.error(
            name.span(),
            join_key(kp, "name"),
            format!("{:?} is not a key name", name.get_ref()),
            Some("a domain name such as \"xfr-key.\""),
        );
        return None;
    }
    let n = if n.ends_with('.') { n } else { format!("{n}.") };
    if keys.iter().any(|k| k.name == n) {
        ck.error(
            name.span(),
            join_key(kp, "name"),
            format!("key {n} is defined twice"),
            None,
        );
        return None;
    }
    let algorithm = match &algorithm {
        Some(a) => {
            let v = a.get_ref().trim().to_ascii_lowercase();
            if !["hmac-sha256", "hmac-sha384", "hmac-sha512"].contains(&v.as_str()) {
                ck.error(
                    a.span(),
                    join_key(kp, "algorithm"),
                    format!("{:?} is not an algorithm edge signs with", a.get_ref()),
                    Some("hmac-sha256, hmac-sha384 or hmac-sha512"),
                );
                return None;
            }
            v
        }
        None => "hmac-sha256".to_string(),
    };
    match base64::engine::general_purpose::STANDARD.decode(secret.get_ref().trim()) {
        Ok(bytes) if bytes.len() >= 16 => Some(TsigKey {
            name: n,
            algorithm,
            secret: Secret::new(secret.get_ref().trim()),
        }),
        _ => {
            ck.error(
                secret.span(),
                join_key(kp, "secret"),
                "not a base64 secret of at least 16 bytes",
                Some("the output of `tsig-keygen` or `openssl rand -base64 32`"),
            );
            None
        }
    }
}

/// `transfer = { allow = [prefixes], key = "name", notify = ["ip:port"] }`.
fn transfer_item(
    ck: &mut Checker<'_>,
    tp: &str,
    raw: Spanned<RawTransfer>,
    keys: &[TsigKey],
) -> Transfer {
    let span = raw.span();
    let RawTransfer { allow, key, notify } = raw.into_inner();
    let mut nets = Vec::new();
    for (i, a) in allow.iter().enumerate() {
        let text = a.get_ref().trim();
        let parsed = text.parse::<ipnet::IpNet>().ok().or_else(|| {
            text.parse::<std::net::IpAddr>()
                .ok()
                .map(ipnet::IpNet::from)
        });
        match parsed {
            Some(n) => nets.push(n.trunc()),
            None => ck.error(
                a.span(),
                format!("{tp}.allow[{i}]"),
                format!("{text:?} is not an address or prefix"),
                Some("e.g. \"192.0.2.0/24\" or \"2001:db8::1\""),
            ),
        }
    }
    if allow.is_empty() {
        ck.error(
            span,
            join_key(tp, "allow"),
            "no address may transfer the zone",
            Some("allow = [\"192.0.2.10\"]: the secondaries' addresses"),
        );
    }
    let key = key.and_then(|k| {
        let n = k.get_ref().trim().to_ascii_lowercase();
        let n = if n.ends_with('.') { n } else { format!("{n}.") };
        if keys.iter().any(|t| t.name == n) {
            Some(n)
        } else {
            ck.error(
                k.span(),
                join_key(tp, "key"),
                format!("no [[dns.tsig_key]] named {n}"),
                None,
            );
            None
        }
    });
    let mut targets = Vec::new();
    for (i, n) in notify.iter().enumerate() {
        let text = n.get_ref().trim();
        let parsed = text.parse::<std::net::SocketAddr>().ok().or_else(|| {
            text.parse::<std::net::IpAddr>()
                .ok()
                .map(|ip| (ip, 53).into())
        });
        match parsed {
            Some(a) => targets.push(a),
            None => ck.error(
                n.span(),
                format!("{tp}.notify[{i}]"),
                format!("{text:?} is not an address"),
                Some("\"192.0.2.10\" or \"192.0.2.10:5353\""),
            ),
        }
    }
    Transfer {
        allow: nets,
        key,
        notify: targets,
    }
}

fn record(
    ck: &mut Checker<'_>,
    rp: &str,
    raw: RawRecord,
    zone: &str,
    default_ttl: u32,
) -> Option<(Record, std::ops::Range<usize>)> {
    let RawRecord {
        name,
        rtype,
        value,
        ttl: record_ttl,
    } = raw;
    let owner = checked_name(ck, &name, &join_key(rp, "name"), zone);
    let record_ttl = ttl(ck, &record_ttl, rp, "ttl", default_ttl);
    let kind = rtype.get_ref().trim().to_ascii_uppercase();
    if kind.is_empty() || !kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        ck.error(
            rtype.span(),
            join_key(rp, "type"),
            format!("{:?} is not a record type", rtype.get_ref()),
            Some("a type mnemonic (A, MX, TXT, SVCB, …) or TYPE<number>"),
        );
        return None;
    }
    let text = value.get_ref().trim();
    // TXT given as plain text is one string (split in 255-byte pieces),
    // as this table always took it; quoted strings are zone-file syntax.
    let text = if kind == "TXT" && !text.starts_with('"') {
        txt_quoted(text)
    } else {
        text.to_string()
    };
    let owner = owner?;
    match zonefile::record(&owner, record_ttl, &kind, &text, zone) {
        Ok(r) => Some((r, value.span())),
        Err(e) => {
            ck.error(
                value.span(),
                join_key(rp, "value"),
                format!("{:?} is not a valid {kind} value: {e}", value.get_ref()),
                Some(&format!("{kind} record data in zone-file syntax")),
            );
            None
        }
    }
}

/// Plain text as TXT character-strings: quoted, escaped, 255 bytes each.
fn txt_quoted(text: &str) -> String {
    let mut out = Vec::new();
    let mut piece = String::new();
    let mut len = 0;
    for c in text.chars() {
        let n = c.len_utf8();
        if len + n > 255 {
            out.push(format!("\"{piece}\""));
            piece.clear();
            len = 0;
        }
        match c {
            '"' | '\\' => {
                piece.push('\\');
                piece.push(c);
            }
            c if c.is_ascii_graphic() || c == ' ' => piece.push(c),
            c => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    piece.push_str(&format!("\\{b:03}"));
                }
            }
        }
        len += n;
    }
    out.push(format!("\"{piece}\""));
    out.join(" ")
}

fn geo_item(
    ck: &mut Checker<'_>,
    gp: &str,
    raw: Spanned<RawGeo>,
    zone: &str,
    sites: &[DnsSite],
) -> Option<GeoRecord> {
    let span = raw.span();
    let RawGeo {
        name,
        sites: site_names,
        policy,
        count,
        ttl: geo_ttl,
        default_sites,
        failover,
    } = raw.into_inner();
    let owner = checked_name(ck, &name, &join_key(gp, "name"), zone);
    let known = |ck: &mut Checker<'_>, v: &Spanned<String>, path: String| -> Option<String> {
        if sites.iter().any(|s| &s.name == v.get_ref()) {
            Some(v.get_ref().clone())
        } else {
            let names: Vec<&str> = sites.iter().map(|s| s.name.as_str()).collect();
            ck.error(
                v.span(),
                path,
                format!("no [[dns.site]] is named {:?}", v.get_ref()),
                Some(&if names.is_empty() {
                    "a site defined in [[dns.site]]".to_string()
                } else {
                    format!("one of {}", names.join(", "))
                }),
            );
            None
        }
    };
    let candidates: Vec<String> = match &site_names {
        Some(list) => list
            .iter()
            .enumerate()
            .filter_map(|(i, s)| known(ck, s, format!("{gp}.sites[{i}]")))
            .collect(),
        None => sites.iter().map(|s| s.name.clone()).collect(),
    };
    if candidates.is_empty() {
        ck.error(
            span.clone(),
            join_key(gp, "sites"),
            "a geo name needs at least one site",
            Some("[[dns.site]] entries, or `sites = [...]` naming them"),
        );
    }
    let policy_name = policy
        .as_ref()
        .map_or("nearest".to_string(), |p| p.get_ref().clone());
    let n = ck.int(&count, gp, "count", 1, 64, 1) as u32;
    let policy_value = match policy_name.as_str() {
        "nearest" => Some(GeoPolicy::Nearest { count: n }),
        "weighted" => Some(GeoPolicy::Weighted {
            among: ck.int(&count, gp, "count", 1, 64, 2) as u32,
        }),
        "failover" => Some(GeoPolicy::Failover),
        other => {
            let span = ck.span_or(&policy, &span);
            ck.error(
                span,
                join_key(gp, "policy"),
                format!("unknown geo policy {other:?}"),
                Some("one of \"nearest\", \"weighted\", \"failover\""),
            );
            None
        }
    };
    let mut failover_map = BTreeMap::new();
    for (region, list) in failover {
        let names: Vec<String> = list
            .iter()
            .enumerate()
            .filter_map(|(i, s)| known(ck, s, format!("{gp}.failover.{region}[{i}]")))
            .collect();
        // Regions compare in lower case, as sites' and locators' do.
        failover_map.insert(region.to_ascii_lowercase(), names);
    }
    if matches!(policy_value, Some(GeoPolicy::Failover)) && failover_map.is_empty() {
        ck.error(
            span.clone(),
            join_key(gp, "failover"),
            "the failover policy needs an order per region",
            Some("failover = { eu = [\"ams\", \"fra\"], us = [\"nyc\", \"ams\"] }"),
        );
    }
    let defaults: Vec<String> = default_sites
        .iter()
        .enumerate()
        .filter_map(|(i, s)| known(ck, s, format!("{gp}.default_sites[{i}]")))
        .collect();
    Some(GeoRecord {
        name: owner?,
        sites: candidates,
        policy: policy_value?,
        ttl: ttl(ck, &geo_ttl, gp, "ttl", 30),
        default_sites: defaults,
        failover: failover_map,
    })
}

fn dns_site(
    ck: &mut Checker<'_>,
    sp: &str,
    raw: Spanned<RawDnsSite>,
    existing: &[DnsSite],
) -> Option<DnsSite> {
    let span = raw.span();
    let RawDnsSite {
        name,
        lat,
        lon,
        region,
        country,
        ipv4,
        ipv6,
        weight,
        capacity,
        health,
    } = raw.into_inner();
    let site_name = ck.name(&name, &join_key(sp, "name"));
    if let Some(n) = &site_name {
        if existing.iter().any(|s| &s.name == n) {
            ck.error(
                name.span(),
                join_key(sp, "name"),
                format!("site {n} is defined twice"),
                None,
            );
        }
    }
    let (lat_ok, lon_ok) = coords(ck, sp, &lat, &lon);
    let mut v4 = Vec::new();
    for (i, a) in ipv4.iter().enumerate() {
        match a.get_ref().parse::<Ipv4Addr>() {
            Ok(ip) => v4.push(ip),
            Err(_) => ck.error(
                a.span(),
                format!("{sp}.ipv4[{i}]"),
                format!("{:?} is not an IPv4 address", a.get_ref()),
                Some("an IPv4 address"),
            ),
        }
    }
    let mut v6 = Vec::new();
    for (i, a) in ipv6.iter().enumerate() {
        match a.get_ref().parse::<Ipv6Addr>() {
            Ok(ip) => v6.push(ip),
            Err(_) => ck.error(
                a.span(),
                format!("{sp}.ipv6[{i}]"),
                format!("{:?} is not an IPv6 address", a.get_ref()),
                Some("an IPv6 address"),
            ),
        }
    }
    if ipv4.is_empty() && ipv6.is_empty() {
        ck.error(
            span,
            sp,
            "a site needs at least one address",
            Some("`ipv4 = [...]` and/or `ipv6 = [...]`"),
        );
    }
    // An invalid health table is reported; the site is kept so that names
    // referring to it do not cascade into more errors.
    let health = health.and_then(|h| site_health(ck, &join_key(sp, "health"), h));
    if !(lat_ok && lon_ok) {
        return None;
    }
    Some(DnsSite {
        name: site_name?,
        lat: *lat.get_ref(),
        lon: *lon.get_ref(),
        region: region.map(|r| r.to_ascii_lowercase()),
        country: country.map(|c| c.to_ascii_uppercase()),
        ipv4: v4,
        ipv6: v6,
        weight: ck.int(&weight, sp, "weight", 1, 1_000_000, 1) as u32,
        capacity: ck.int(&capacity, sp, "capacity", 1, 1_000_000_000, 100) as u32,
        health,
    })
}

fn coords(ck: &mut Checker<'_>, p: &str, lat: &Spanned<f64>, lon: &Spanned<f64>) -> (bool, bool) {
    let lat_ok = (-90.0..=90.0).contains(lat.get_ref());
    if !lat_ok {
        ck.error(
            lat.span(),
            join_key(p, "lat"),
            format!("{} is not a latitude", lat.get_ref()),
            Some("a number from -90 to 90"),
        );
    }
    let lon_ok = (-180.0..=180.0).contains(lon.get_ref());
    if !lon_ok {
        ck.error(
            lon.span(),
            join_key(p, "lon"),
            format!("{} is not a longitude", lon.get_ref()),
            Some("a number from -180 to 180"),
        );
    }
    (lat_ok, lon_ok)
}

fn site_health(ck: &mut Checker<'_>, hp: &str, raw: Spanned<RawSiteHealth>) -> Option<SiteHealth> {
    let span = raw.span();
    let RawSiteHealth {
        urls,
        interval,
        timeout,
        rise,
        fall,
        expect_status,
    } = raw.into_inner();
    let mut out = Vec::new();
    for (i, u) in urls.iter().enumerate() {
        let url = u.get_ref();
        let ok = url
            .strip_prefix("http://")
            .and_then(|rest| rest.split('/').next())
            .is_some_and(|authority| crate::model::HostPort::parse(authority).is_ok());
        if ok {
            out.push(url.clone());
        } else {
            ck.error(
                u.span(),
                format!("{hp}.urls[{i}]"),
                format!("{url:?} is not an http:// URL with host and port"),
                Some("a URL such as \"http://192.0.2.10:80/healthz\""),
            );
        }
    }
    if urls.is_empty() {
        ck.error(
            span,
            join_key(hp, "urls"),
            "a health check needs URLs to probe",
            Some("urls = [\"http://192.0.2.10:80/healthz\"]"),
        );
        return None;
    }
    let interval = ck.positive_duration(&interval, hp, "interval", Duration::from_secs(5));
    Some(SiteHealth {
        urls: out,
        interval,
        timeout: ck.positive_duration(
            &timeout,
            hp,
            "timeout",
            Duration::from_secs(2).min(interval),
        ),
        rise: ck.int(&rise, hp, "rise", 1, 100, 2) as u32,
        fall: ck.int(&fall, hp, "fall", 1, 100, 3) as u32,
        expect_status: expect_status
            .and_then(|s| ck.status_range(&s, &join_key(hp, "expect_status")))
            .unwrap_or(StatusRange { min: 200, max: 399 }),
    })
}

fn locator_section(ck: &mut Checker<'_>, lp: &str, raw: RawLocator, sites: &[DnsSite]) -> Locator {
    let RawLocator { cidr, csv, mmdb } = raw;
    let mut cidrs = Vec::new();
    for (i, c) in cidr.into_iter().enumerate() {
        let cp = format!("{lp}.cidr[{i}]");
        if let Some(loc) = cidr_item(ck, &cp, c, sites) {
            cidrs.push(loc);
        }
    }
    Locator {
        cidrs,
        csv: csv.map(|f| ck.existing_file(&f, &join_key(lp, "csv"), "locations file")),
        mmdb: mmdb.map(|f| ck.existing_file(&f, &join_key(lp, "mmdb"), "MaxMind database")),
    }
}

fn cidr_item(
    ck: &mut Checker<'_>,
    cp: &str,
    raw: Spanned<RawCidrLocation>,
    sites: &[DnsSite],
) -> Option<CidrLocation> {
    let span = raw.span();
    let RawCidrLocation {
        prefix,
        lat,
        lon,
        site,
        region,
        country,
    } = raw.into_inner();
    let net = ck.ip_net(&prefix, &join_key(cp, "prefix"));
    if let Some(c) = &country {
        if !(c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic())) {
            ck.error(
                span.clone(),
                join_key(cp, "country"),
                format!("{c:?} is not a country code"),
                Some("an ISO 3166-1 alpha-2 code such as \"DE\""),
            );
        }
    }
    let location = match (site, lat, lon) {
        (Some(s), None, None) => {
            if sites.iter().any(|x| &x.name == s.get_ref()) {
                Some(Location::Site(s.into_inner()))
            } else {
                ck.error(
                    s.span(),
                    join_key(cp, "site"),
                    format!("no [[dns.site]] is named {:?}", s.get_ref()),
                    None,
                );
                None
            }
        }
        (None, Some(lat), Some(lon)) => {
            let (a, b) = coords(ck, cp, &lat, &lon);
            (a && b).then(|| Location::Point {
                lat: *lat.get_ref(),
                lon: *lon.get_ref(),
                region: region.map(|r| r.to_ascii_lowercase()),
                country: country.map(|c| c.to_ascii_uppercase()),
            })
        }
        _ => {
            ck.error(
                span,
                cp,
                "a location needs a point or a site",
                Some("`lat` and `lon`, or `site`"),
            );
            None
        }
    };
    Some(CidrLocation {
        prefix: net?,
        location: location?,
    })
}

fn rrl_section(ck: &mut Checker<'_>, rp: &str, raw: RawRrl) -> Rrl {
    let RawRrl {
        responses_per_second,
        window,
        slip,
        ipv4_prefix,
        ipv6_prefix,
        exempt,
        log_only,
    } = raw;
    let mut nets = Vec::new();
    for (i, e) in exempt.iter().enumerate() {
        if let Some(n) = ck.ip_net(e, &format!("{rp}.exempt[{i}]")) {
            nets.push(n);
        }
    }
    Rrl {
        responses_per_second: ck.int(
            &responses_per_second,
            rp,
            "responses_per_second",
            1,
            1_000_000,
            5,
        ) as u32,
        window: ck.positive_duration(&window, rp, "window", Duration::from_secs(15)),
        slip: ck.int(&slip, rp, "slip", 0, 10, 2) as u32,
        ipv4_prefix: ck.int(&ipv4_prefix, rp, "ipv4_prefix", 8, 32, 24) as u8,
        ipv6_prefix: ck.int(&ipv6_prefix, rp, "ipv6_prefix", 16, 128, 56) as u8,
        exempt: nets,
        log_only: log_only.unwrap_or(false),
    }
}
