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
    path.ends_with(".add") || path.ends_with(".set") || path.ends_with(".failover")
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
