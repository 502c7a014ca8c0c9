//! Every file in `tests/invalid/` is rejected with exactly the diagnostics its
//! `# expect: LINE:COL PATH: MESSAGE` comments name (message is a substring).

// Helpers in test files may unwrap: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

struct Expect {
    line: usize,
    column: usize,
    path: String,
    message: String,
}

fn expectations(text: &str) -> Vec<Expect> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(|rest| {
            let (pos, rest) = rest.split_once(' ').expect("expect: L:C PATH: MESSAGE");
            let (line, column) = pos.split_once(':').expect("L:C");
            let (path, message) = rest.split_once(": ").expect("PATH: MESSAGE");
            Expect {
                line: line.parse().expect("line"),
                column: column.parse().expect("column"),
                path: path.trim().to_string(),
                message: message.to_string(),
            }
        })
        .collect()
}

fn invalid_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/invalid exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn each_invalid_file_gives_its_expected_errors_and_no_others() {
    let files = invalid_files();
    assert!(files.len() >= 20, "only {} invalid files", files.len());
    let mut failures = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expects = expectations(&text);
        assert!(
            !expects.is_empty(),
            "{} has no `# expect:` line",
            file.display()
        );
        let diags = match edge_config::load(&file) {
            Ok(_) => {
                failures.push(format!("{}: accepted", file.display()));
                continue;
            }
            Err(d) => d,
        };
        for e in &expects {
            let found = diags.iter().any(|d| {
                d.line == e.line
                    && d.column == e.column
                    && d.path == e.path
                    && d.to_string().contains(&e.message)
            });
            if !found {
                failures.push(format!(
                    "{}: expected {}:{} {}: {}\n  got:\n    {}",
                    file.display(),
                    e.line,
                    e.column,
                    e.path,
                    e.message,
                    diags.to_string().replace('\n', "\n    ")
                ));
            }
        }
        if diags.len() != expects.len() {
            failures.push(format!(
                "{}: {} diagnostics for {} expectations:\n    {}",
                file.display(),
                diags.len(),
                expects.len(),
                diags.to_string().replace('\n', "\n    ")
            ));
        }
        for d in diags.iter() {
            assert!(d
                .file
                .ends_with(file.file_name().unwrap().to_str().unwrap()));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn diagnostics_render_the_offending_line_with_a_caret() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid/06-bad-duration.toml");
    let rendered = edge_config::load(&file).unwrap_err().render();
    assert!(
        rendered.contains("6 | interval = \"5 parsecs\""),
        "{rendered}"
    );
    assert!(rendered.contains("  |            ^"), "{rendered}");
}

#[test]
fn unreadable_and_non_utf8_files_are_reported_not_panicked() {
    let missing = edge_config::load(Path::new("/no/such/edge.toml")).unwrap_err();
    assert!(missing.to_string().contains("cannot read"), "{missing}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bin.toml");
    std::fs::write(&path, [0x5b, 0xff, 0xfe, 0x5d]).unwrap();
    let binary = edge_config::load(&path).unwrap_err();
    assert!(binary.to_string().contains("not UTF-8"), "{binary}");
}
