//! Zone files and TOML records through `edge check`'s validation: what is
//! refused (with the file and line), what is warned about, and that both
//! sources mix.

#![allow(clippy::unwrap_used)]

use std::path::Path;

fn config(zone_file: &str, extra: &str) -> String {
    format!(
        "[[listener]]\nname = \"dns\"\nkind = \"dns\"\naddress = \"127.0.0.1:0\"\n\n[[dns.zone]]\nname = \"z.test.\"\nfile = \"{zone_file}\"\n{extra}"
    )
}

/// Writes `text` as `z.test.zone` in a new directory and validates a
/// config naming it; the diagnostics' text, or the zone.
fn check(text: &str, extra: &str) -> Result<edge_config::Zone, String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("z.test.zone"), text).unwrap();
    std::fs::write(dir.path().join("inc.zone"), "inc A 192.0.2.9\n").unwrap();
    match edge_config::parse_str(&config("z.test.zone", extra), "edge.toml", dir.path()) {
        Ok(c) => Ok(c.dns.unwrap().zones.remove(0)),
        Err(d) => Err(d.render()),
    }
}

const HEAD: &str =
    "$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 604800 60\n@ NS ns1\nns1 A 192.0.2.1\n";

#[test]
fn a_zone_file_and_toml_records_make_one_zone() {
    let z = check(
        &format!("{HEAD}www A 192.0.2.2\n$INCLUDE inc.zone\n"),
        "records = [ { name = \"mx\", type = \"MX\", value = \"10 www\" } ]\n",
    )
    .unwrap();
    assert_eq!(z.soa.mname, "ns1.z.test.");
    assert_eq!(z.soa.minimum, 60);
    assert_eq!(z.ns, vec!["ns1.z.test."]);
    let names: Vec<String> = z
        .records
        .iter()
        .map(|r| format!("{} {} {}", r.name, r.rtype, r.value))
        .collect();
    assert_eq!(
        names,
        vec![
            "z.test. NS ns1.z.test.",
            "ns1.z.test. A 192.0.2.1",
            "www.z.test. A 192.0.2.2",
            "inc.z.test. A 192.0.2.9",
            "mx.z.test. MX 10 www.z.test.",
        ]
    );
}

#[test]
fn what_a_zone_file_may_not_say_is_refused_with_its_line() {
    for (body, line, what) in [
        ("www A 300.1.2.3\n", 5, "IPv4"),
        ("www CNAME a\nwww A 192.0.2.1\n", 6, "CNAME and other data"),
        ("www CNAME a\nwww CNAME b\n", 6, "CNAME and other data"),
        ("@ CNAME a\n", 5, "CNAME"),
        ("d DNAME a.\nd DNAME b.\n", 6, "two DNAMEs"),
        ("www.other.test. A 192.0.2.1\n", 5, "outside zone"),
        ("www CH A 192.0.2.1\n", 5, "class"),
        (
            "sub SOA ns1 hostmaster 1 1 1 1 1\n",
            5,
            "SOA below the apex",
        ),
        ("www IN BOGUSTYPE 1\n", 5, ""),
        ("www A ( 192.0.2.1\n", 0, ""),
        ("$INCLUDE missing.zone\n", 5, "missing.zone"),
    ] {
        let text = format!("{HEAD}{body}");
        let err = check(&text, "").expect_err(body);
        if line > 0 {
            assert!(
                err.contains(&format!("z.test.zone:{line}")),
                "{body:?}: {err}"
            );
        }
        assert!(err.contains(what), "{body:?}: {err}");
    }
    // No SOA, and an SOA twice.
    let err = check("$TTL 60\n@ NS ns1\n", "").unwrap_err();
    assert!(err.contains("no SOA"), "{err}");
    let err = check(
        HEAD,
        "soa = { mname = \"ns1.z.test.\", rname = \"h.z.test.\", serial = 1 }\n",
    )
    .unwrap_err();
    assert!(err.contains("SOA already"), "{err}");
    // A file that is not there.
    let dir = tempfile::tempdir().unwrap();
    let err = edge_config::parse_str(&config("nope.zone", ""), "edge.toml", dir.path())
        .unwrap_err()
        .render();
    assert!(
        err.contains("nope.zone") && err.contains("cannot read"),
        "{err}"
    );
}

#[test]
fn rrsets_get_one_ttl_and_duplicates_go() {
    let z = check(
        &format!("{HEAD}www 60 A 192.0.2.1\nwww 30 A 192.0.2.2\nwww 60 A 192.0.2.1\n"),
        "",
    )
    .unwrap();
    let www: Vec<u32> = z
        .records
        .iter()
        .filter(|r| r.name == "www.z.test.")
        .map(|r| r.ttl)
        .collect();
    assert_eq!(www, vec![30, 30], "the lowest TTL, the duplicate once");
    assert_eq!(z.warnings.len(), 1);
    assert!(z.warnings[0].contains("www.z.test. A"), "{:?}", z.warnings);
}

#[test]
fn toml_values_take_any_type_in_zone_file_syntax() {
    let z = check(
        HEAD,
        r#"records = [
  { name = "t", type = "TXT", value = "plain text, one string" },
  { name = "l", type = "TXT", value = "LONG" },
  { name = "s", type = "SVCB", value = "1 . alpn=h2" },
  { name = "g", type = "TYPE65000", value = "\\# 2 abcd" },
  { name = "*.w", type = "A", value = "192.0.2.3" },
]
"#
        .replace("LONG", &"y".repeat(600))
        .as_str(),
    )
    .unwrap();
    let value = |n: &str| {
        z.records
            .iter()
            .find(|r| r.name == n)
            .map(|r| (r.rtype.clone(), r.value.clone(), r.wire.rdata.clone()))
            .unwrap()
    };
    assert_eq!(value("t.z.test.").1, "\"plain text, one string\"");
    // 600 bytes: three strings of at most 255.
    let long = value("l.z.test.").2;
    assert_eq!(long.len(), 600 + 3);
    assert_eq!((long[0], long[256], long[512]), (255, 255, 90));
    assert_eq!(value("s.z.test.").0, "SVCB");
    assert_eq!(value("g.z.test.").2, vec![0xab, 0xcd]);
    assert!(z.records.iter().any(|r| r.name == "*.w.z.test."));
    // What does not scan is refused at the value.
    let err = check(
        HEAD,
        "records = [ { name = \"m\", type = \"MX\", value = \"ten mail\" } ]\n",
    )
    .unwrap_err();
    assert!(err.contains("records[0].value"), "{err}");
    let err = check(
        HEAD,
        "records = [ { name = \"m\", type = \"A\", value = \"192.0.2.1\\nx A 192.0.2.2\" } ]\n",
    )
    .unwrap_err();
    assert!(err.contains("one line"), "{err}");
}

#[test]
fn include_loops_end() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("z.test.zone"),
        format!("{HEAD}$INCLUDE z.test.zone\n"),
    )
    .unwrap();
    let err = edge_config::parse_str(&config("z.test.zone", ""), "edge.toml", dir.path())
        .unwrap_err()
        .render();
    // The file included into itself: its SOA again, or the depth limit.
    assert!(
        err.contains("$INCLUDE") || err.contains("second SOA"),
        "{err}"
    );
    let _ = Path::new(".");
}

/// What NSD and BIND read that a first version refused or misread.
#[test]
fn zone_files_as_bind_and_nsd_write_them() {
    // TTL units, in $TTL and on records; no line break at the end.
    let z = check(
        "$TTL 1h\n@ SOA ns1 hostmaster 1 3600 600 604800 60\n@ NS ns1\nns1 A 192.0.2.1\nu 1h30m A 192.0.2.9\nv IN 2D A 192.0.2.10\nlast A 192.0.2.11",
        "",
    )
    .unwrap();
    let ttl = |n: &str| {
        z.records
            .iter()
            .find(|r| r.name == n)
            .map(|r| r.ttl)
            .unwrap()
    };
    assert_eq!(ttl("ns1.z.test."), 3600);
    assert_eq!(ttl("u.z.test."), 5400);
    assert_eq!(ttl("v.z.test."), 172_800);
    assert_eq!(ttl("last.z.test."), 3600);
    // A Latin-1 byte in a string is that byte.
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = HEAD.as_bytes().to_vec();
    bytes.extend_from_slice(b"x TXT \"caf\xe9\"\n");
    std::fs::write(dir.path().join("z.test.zone"), &bytes).unwrap();
    let c = edge_config::parse_str(&config("z.test.zone", ""), "edge.toml", dir.path()).unwrap();
    let z = &c.dns.unwrap().zones[0];
    let x = z.records.iter().find(|r| r.name == "x.z.test.").unwrap();
    assert_eq!(x.wire.rdata, b"\x04caf\xe9");
    // $INCLUDE without an origin reads at the origin in effect there.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("z.test.zone"),
        format!("{HEAD}$ORIGIN sub2.z.test.\n$INCLUDE inc1.zone\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("inc1.zone"), "a A 192.0.2.11\n").unwrap();
    let c = edge_config::parse_str(&config("z.test.zone", ""), "edge.toml", dir.path()).unwrap();
    assert!(c.dns.unwrap().zones[0]
        .records
        .iter()
        .any(|r| r.name == "a.sub2.z.test."));
    // A line shaped like LOC data inside another record's parentheses is
    // that record's data.
    let z = check(&format!("{HEAD}x TXT ( \"a\"\n LOC 1 N 2 E 0m\n )\n"), "").unwrap();
    let x = z.records.iter().find(|r| r.name == "x.z.test.").unwrap();
    assert_eq!(x.rtype, "TXT");
    assert!(x.value.contains("\"LOC\""), "{}", x.value);
    // A second SOA, and an SOA among the TOML records, are refused.
    let err = check(&format!("{HEAD}@ SOA ns1 host 2 2 3 4 5\n"), "").unwrap_err();
    assert!(err.contains("second SOA"), "{err}");
    let err = check(
        HEAD,
        "records = [ { name = \"@\", type = \"SOA\", value = \"ns1 host 9 2 3 4 5\" } ]\n",
    )
    .unwrap_err();
    assert!(err.contains("SOA in `records`"), "{err}");
    // UTF-8 inside a TOML value's quotes is kept as its bytes.
    let z = check(
        HEAD,
        "records = [ { name = \"u\", type = \"TXT\", value = \"\\\"café\\\"\" } ]\n",
    )
    .unwrap();
    let u = z.records.iter().find(|r| r.name == "u.z.test.").unwrap();
    assert_eq!(u.wire.rdata, "\u{5}café".as_bytes());
}

#[test]
fn an_include_fan_out_ends() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.inc"), "").unwrap();
    let fan: String = (0..5000).map(|_| "$INCLUDE empty.inc\n").collect();
    std::fs::write(dir.path().join("z.test.zone"), format!("{HEAD}{fan}")).unwrap();
    let started = std::time::Instant::now();
    let err = edge_config::parse_str(&config("z.test.zone", ""), "edge.toml", dir.path())
        .unwrap_err()
        .render();
    assert!(err.contains("larger than"), "{err}");
    let _ = started;
}
