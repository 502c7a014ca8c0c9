//! `edge check FILE`: every error (exit 1) or a summary (exit 0).

use std::path::Path;
use std::process::ExitCode;

pub fn run(file: &Path) -> ExitCode {
    match edge_config::load(file) {
        Ok(config) => {
            crate::out::say!("{}: ok", file.display());
            crate::out::say!("{}", edge_config::Summary(&config));
            ExitCode::SUCCESS
        }
        Err(diags) => {
            crate::out::complain!("{}\n", diags.render());
            let n = diags.len();
            crate::out::complain!(
                "{}: {n} error{}",
                file.display(),
                if n == 1 { "" } else { "s" }
            );
            ExitCode::from(1)
        }
    }
}
