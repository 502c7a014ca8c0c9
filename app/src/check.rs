//! `edge check FILE`: every error (exit 1) or a summary (exit 0).

use std::path::Path;
use std::process::ExitCode;

pub fn run(file: &Path) -> ExitCode {
    match edge_config::load(file) {
        Ok(config) => {
            println!("{}: ok", file.display());
            println!("{}", edge_config::Summary(&config));
            ExitCode::SUCCESS
        }
        Err(diags) => {
            eprintln!("{}\n", diags.render());
            let n = diags.len();
            eprintln!(
                "{}: {n} error{}",
                file.display(),
                if n == 1 { "" } else { "s" }
            );
            ExitCode::from(1)
        }
    }
}
