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

use std::path::Path;

pub use diag::{Diagnostic, Diagnostics};
pub use diff::{ConfigDiff, NamedChanges};
pub use model::*;
pub use source::Source;
pub use summary::Summary;

/// Reads and validates a config file. Relative paths in it (certificates,
/// cache directory, locator files) are relative to the file's directory.
pub fn load(path: &Path) -> Result<Config, Diagnostics> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| {
        Diagnostics(vec![Diagnostic::file_level(
            &name,
            format!("cannot read: {e}"),
        )])
    })?;
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
