//! edge's configuration.
//!
//! A TOML file goes through two types: the on-disk schema (every table rejects
//! unknown keys) and the validated [`Config`] model that the rest of edge sees,
//! with parsed addresses, durations, sizes and cross-checked references.
//!
//! ```no_run
//! let config = edge_config::load(std::path::Path::new("edge.toml"))
//!     .map_err(|diags| eprintln!("{}", diags.render()));
//! ```
//!
//! Validation reports every problem at once, each with file, `line:column`,
//! key path and what was expected ([`Diagnostic`]). [`ConfigDiff`] compares two
//! configs for reloads. This crate does no networking and starts no tasks.

mod diag;
mod diff;
pub mod model;
mod raw;
mod source;
mod summary;
pub mod units;
mod validate;
pub mod zonefile;

use std::path::Path;

pub use diag::{Diagnostic, Diagnostics};
pub use diff::{ConfigDiff, NamedChanges};
pub use model::*;
pub use source::Source;
pub use summary::Summary;

/// The largest config file edge reads (zone data lives in its own files).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Reads and validates a config file. Relative paths in it (certificates,
/// cache directory, locator files) are relative to the file's directory.
pub fn load(path: &Path) -> Result<Config, Diagnostics> {
    let name = path.display().to_string();
    let refuse = |why: String| Diagnostics(vec![Diagnostic::file_level(&name, why)]);
    // A FIFO would block the read forever and a device never end: only a
    // regular file (symlinks followed) of a sane size is read.
    let meta = std::fs::metadata(path).map_err(|e| refuse(format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(refuse(
            "not a regular file (a directory, FIFO, socket or device)".to_string(),
        ));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(refuse(format!(
            "{} bytes; a config file is at most {MAX_CONFIG_BYTES} bytes",
            meta.len()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)
        .and_then(|f| {
            use std::io::Read;
            f.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes)
        })
        .map_err(|e| refuse(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(refuse(format!(
            "grew past {MAX_CONFIG_BYTES} bytes while read"
        )));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        Diagnostics(vec![Diagnostic::file_level(
            &name,
            format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )])
    })?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut config = parse_str(&text, &name, base)?;
    config.source = Some(path.to_path_buf());
    Ok(config)
}

/// Validates config text. `name` is used in diagnostics; `base_dir` resolves
/// relative paths.
pub fn parse_str(text: &str, name: &str, base_dir: &Path) -> Result<Config, Diagnostics> {
    validate::parse_str(text, name, base_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_of_a_sane_size_are_read() {
        let dir = tempfile::tempdir().unwrap();
        for (path, why) in [
            (Path::new("/dev/zero").to_path_buf(), "not a regular file"),
            (dir.path().to_path_buf(), "not a regular file"),
            (dir.path().join("missing.toml"), "cannot read"),
        ] {
            let e = load(&path).unwrap_err().to_string();
            assert!(e.contains(why), "{}: {e}", path.display());
        }
        let big = dir.path().join("big.toml");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_CONFIG_BYTES + 1)
            .unwrap();
        let e = load(&big).unwrap_err().to_string();
        assert!(e.contains("at most"), "{e}");
        let fifo = dir.path().join("fifo.toml");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let e = load(&fifo).unwrap_err().to_string();
            assert!(e.contains("not a regular file"), "{e}");
        }
    }
}
