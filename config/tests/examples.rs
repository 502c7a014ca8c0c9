//! Every example config (config/examples and deploy/) is valid, and an
//! unknown key inserted into any of its tables is rejected at its path.

// Helpers in test files may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use toml::{Table, Value};

fn example_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = Vec::new();
    for dir in ["config/examples", "deploy"] {
        collect(&root.join(dir), &mut out);
    }
    out.sort();
    out
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "toml") {
            out.push(p);
        }
    }
}

#[test]
fn every_example_is_valid() {
    let files = example_files();
    assert!(files.len() >= 5, "found {files:?}");
    for f in files {
        if let Err(d) = edge_config::load(&f) {
            panic!("{} is invalid:\n{}", f.display(), d.render());
        }
    }
}

/// Tables whose keys are the user's (header names, regions): any key is valid there.
fn free_form(path: &str) -> bool {
    path.ends_with(".add")
        || path.ends_with(".set")
        || path.ends_with(".failover")
        || path == "server.otlp.headers"
}

/// Paths of every table in a document, with array indices.
fn table_paths(table: &Table, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in table {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Table(t) => {
                out.push(path.clone());
                table_paths(t, &path, out);
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Value::Table(t) = item {
                        let p = format!("{path}[{i}]");
                        out.push(p.clone());
                        table_paths(t, &p, out);
                    }
                }
            }
            _ => {}
        }
    }
}

fn table_at<'a>(root: &'a mut Table, path: &str) -> &'a mut Table {
    let mut t = root;
    for part in path.split('.') {
        let (key, index) = match part.split_once('[') {
            Some((k, i)) => (k, Some(i.trim_end_matches(']').parse::<usize>().unwrap())),
            None => (part, None),
        };
        let v = t.get_mut(key).unwrap();
        t = match (v, index) {
            (Value::Table(t), None) => t,
            (Value::Array(a), Some(i)) => a[i].as_table_mut().unwrap(),
            _ => panic!("bad path {path}"),
        };
    }
    t
}

#[test]
fn an_unknown_key_in_any_table_is_rejected_with_its_path() {
    let mut checked = 0;
    for file in example_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let doc: Table = text.parse().unwrap();
        let mut paths = Vec::new();
        table_paths(&doc, "", &mut paths);
        let base = file.parent().unwrap();
        for path in paths.into_iter().filter(|p| !free_form(p)) {
            let mut modified = doc.clone();
            table_at(&mut modified, &path).insert("zz_not_a_key".into(), Value::Integer(1));
            let text = toml::to_string(&modified).unwrap();
            let diags = edge_config::parse_str(&text, "modified.toml", base).expect_err(&format!(
                "{}: unknown key at {path} accepted",
                file.display()
            ));
            let want = format!("{path}.zz_not_a_key");
            assert!(
                diags
                    .iter()
                    .any(|d| d.path == want && d.message.contains("unknown key")),
                "{}: expected an unknown-key error at {want}, got:\n{diags}",
                file.display()
            );
            assert!(diags.iter().all(|d| d.line > 0), "{diags}");
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} tables checked");
}

/// The TOML blocks of docs/config.md, in order. Lines `#+ key = value` show
/// a key that cannot sit beside the one set (alternatives such as `token`
/// and `token_env`): `with_alternatives` makes them keys.
fn reference_blocks() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            inside = !inside && line.trim() == "```toml";
            continue;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn with_alternatives(toml_text: &str) -> String {
    toml_text
        .lines()
        .map(|l| match l.trim_start().strip_prefix("#+ ") {
            Some(rest) => rest.to_string(),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The keys an unknown-key diagnostic says the table takes (its
/// `expected`: "one of `a`, `b`").
fn expected_keys(expected: &str) -> Vec<String> {
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// `pool[3].backends[0]` → `pool[].backends[]`.
fn pattern(path: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for c in path.chars() {
        match c {
            '[' => {
                skipping = true;
                out.push_str("[]");
            }
            ']' => skipping = false,
            _ if skipping => {}
            _ => out.push(c),
        }
    }
    out
}

/// docs/config.md is the reference: its TOML blocks together are a valid
/// config, every table they show lists every key the table takes (the
/// parser's own list), every key they show exists, and every table a
/// shipped example uses is shown.
#[test]
fn the_configuration_reference_shows_every_key_of_every_table() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let text = reference_blocks();
    if let Err(d) = edge_config::parse_str(&text, "docs/config.md", &base) {
        panic!(
            "docs/config.md's TOML is not a valid config:\n{}",
            d.render()
        );
    }
    let doc: Table = text.parse().unwrap();
    let shown: Table = with_alternatives(&text)
        .parse()
        .unwrap_or_else(|e| panic!("docs/config.md with its #+ lines: {e}"));
    let mut paths = Vec::new();
    table_paths(&doc, "", &mut paths);
    let mut problems = Vec::new();
    let mut checked = 0;
    for path in std::iter::once(String::new()).chain(paths.iter().cloned()) {
        if free_form(&path) {
            continue;
        }
        let mut modified = doc.clone();
        let table = if path.is_empty() {
            &mut modified
        } else {
            table_at(&mut modified, &path)
        };
        table.insert("zz_not_a_key".into(), Value::Integer(1));
        let text = toml::to_string(&modified).unwrap();
        let diags = edge_config::parse_str(&text, "modified.toml", &base).unwrap_err();
        let want = if path.is_empty() {
            "zz_not_a_key".to_string()
        } else {
            format!("{path}.zz_not_a_key")
        };
        let Some(d) = diags.iter().find(|d| d.path == want) else {
            problems.push(format!("{path}: no unknown-key error:\n{diags}"));
            continue;
        };
        let takes = expected_keys(d.expected.as_deref().unwrap_or_default());
        if takes.is_empty() {
            problems.push(format!("{path}: the error lists no keys: {d:?}"));
            continue;
        }
        let mut shown_here = shown.clone();
        let table = if path.is_empty() {
            &mut shown_here
        } else {
            table_at(&mut shown_here, &path)
        };
        for key in &takes {
            if !table.contains_key(key) {
                problems.push(format!("{path}: `{key}` is not shown"));
            }
        }
        for key in table.keys() {
            if !takes.contains(key) {
                problems.push(format!("{path}: `{key}` is shown but not a key"));
            }
        }
        checked += 1;
    }
    // Every table a shipped example uses is in the reference.
    let mut documented: Vec<String> = paths.iter().map(|p| pattern(p)).collect();
    documented.sort();
    documented.dedup();
    for file in example_files() {
        let doc: Table = std::fs::read_to_string(&file).unwrap().parse().unwrap();
        let mut used = Vec::new();
        table_paths(&doc, "", &mut used);
        for p in used.iter().map(|p| pattern(p)) {
            if !free_form(&p) && documented.binary_search(&p).is_err() {
                problems.push(format!(
                    "{}: table {p} is not in docs/config.md",
                    file.display()
                ));
            }
        }
    }
    problems.sort();
    problems.dedup();
    assert!(
        problems.is_empty(),
        "docs/config.md:\n{}",
        problems.join("\n")
    );
    assert!(checked > 40, "only {checked} tables");
}

#[test]
fn diagnostics_list_the_keys_a_table_takes() {
    assert_eq!(
        expected_keys("one of `kind`, `path`, `host`"),
        ["kind", "path", "host"]
    );
    assert_eq!(expected_keys("`name`"), ["name"]);
    assert_eq!(pattern("pool[3].backends[10]"), "pool[].backends[]");
}

/// Every key path in `table`, array positions left out (`pool.backends.weight`).
fn key_paths(table: &Table, prefix: &str, out: &mut Vec<String>) {
    for (k, v) in table {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Table(t) => key_paths(t, &path, out),
            Value::Array(items) => {
                for item in items {
                    if let Value::Table(t) = item {
                        key_paths(t, &path, out);
                    }
                }
            }
            _ => {}
        }
        out.push(path);
    }
}

/// docs/coming-from.md maps nginx, HAProxy and Varnish directives to key
/// paths; each one it names is a key of the reference.
#[test]
fn the_coming_from_page_names_only_keys_that_exist() {
    let shown: Table = with_alternatives(&reference_blocks()).parse().unwrap();
    let mut keys = Vec::new();
    key_paths(&shown, "", &mut keys);
    let page = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/coming-from.md"),
    )
    .unwrap();
    let sections = [
        "server",
        "admin",
        "listener",
        "pool",
        "route",
        "cache",
        "rate_limit",
        "redis",
        "resolver",
        "site",
        "dns",
    ];
    let mut named = 0;
    let mut unknown = Vec::new();
    for token in page.split('`').skip(1).step_by(2) {
        let is_path = token.contains('.')
            && token
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.')
            && token
                .split('.')
                .next()
                .is_some_and(|s| sections.contains(&s));
        if is_path {
            named += 1;
            if !keys.iter().any(|k| k == token) {
                unknown.push(token);
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "docs/coming-from.md names keys that do not exist: {unknown:?}"
    );
    assert!(named > 100, "only {named} key paths named");
}

/// Regions compare in lower case everywhere: a failover order written for
/// `EU` applies to sites and clients whose region is `eu`, `Eu` or `EU`.
#[test]
fn failover_regions_are_case_insensitive() {
    let text = r#"
[[listener]]
kind = "dns"
address = "127.0.0.1:0"

[[dns.zone]]
name = "example.test."
ns = ["ns1.example.test."]
records = [{ name = "ns1", type = "A", value = "192.0.2.53" }]
geo = [{ name = "cdn", sites = ["fra", "nyc"], policy = "failover", failover = { EU = ["fra", "nyc"], Us = ["nyc", "fra"] } }]

[[dns.site]]
name = "fra"
lat = 50.1
lon = 8.7
region = "Eu"
ipv4 = ["203.0.113.1"]

[[dns.site]]
name = "nyc"
lat = 40.7
lon = -74.0
region = "US"
ipv4 = ["203.0.113.2"]
"#;
    let base = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = match edge_config::parse_str(text, "t.toml", base) {
        Ok(c) => c,
        Err(d) => panic!("{}", d.render()),
    };
    let dns = config.dns.unwrap();
    let geo = &dns.zones[0].geo[0];
    let regions: Vec<&String> = geo.failover.keys().collect();
    assert_eq!(regions, ["eu", "us"]);
    let site_regions: Vec<Option<String>> = dns.sites.iter().map(|s| s.region.clone()).collect();
    assert_eq!(
        site_regions,
        [Some("eu".to_string()), Some("us".to_string())]
    );
}

/// One spelling per backend: addresses in their canonical form, names in
/// lower case; what is neither an address nor an RFC 1123 name is refused.
#[test]
fn backend_addresses_have_one_spelling() {
    use edge_config::HostPort;
    let same = |a: &str, b: &str| {
        assert_eq!(
            HostPort::parse(a).unwrap(),
            HostPort::parse(b).unwrap(),
            "{a} vs {b}"
        );
    };
    same("[0:0::1]:80", "[::1]:80");
    same("[2001:DB8::1]:80", "[2001:db8:0::1]:80");
    same("Origin.Example.COM:443", "origin.example.com:443");
    assert_eq!(
        HostPort::parse("[2001:DB8::1]:80").unwrap().to_string(),
        "[2001:db8::1]:80"
    );
    let long_label = format!("{}.example:80", "a".repeat(64));
    let long_name = format!("{}:80", vec!["abcdefghij"; 30].join("."));
    for bad in [
        "127.000.000.001:80",
        "2130706433:80",
        "-a-.b:80",
        "a-.example:80",
        "a..b:80",
        long_label.as_str(),
        long_name.as_str(),
    ] {
        assert!(HostPort::parse(bad).is_err(), "{bad} accepted");
    }
    for good in [
        "a-b.example:80",
        "x1.example.com:8080",
        "localhost:9000",
        "10.0.0.1:1",
    ] {
        assert!(HostPort::parse(good).is_ok(), "{good} refused");
    }
}
