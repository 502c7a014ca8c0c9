//! `edge check FILE`: every error (exit 1) or a summary (exit 0).

use std::path::Path;
use std::process::ExitCode;

pub fn run(file: &Path) -> ExitCode {
    match edge_config::load(file) {
        Ok(config) => {
            crate::out::say!("{}: ok", file.display());
            crate::out::say!("{}", edge_config::Summary(&config));
            for warning in unresolved(&config) {
                crate::out::complain!("warning: {warning}");
            }
            let zones = config.dns.iter().flat_map(|d| &d.zones);
            for warning in zones.flat_map(|z| &z.warnings) {
                crate::out::complain!("warning: {warning}");
            }
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

/// Backend host names that do not resolve now (a warning: the node starts
/// anyway, with those backends down until they do).
fn unresolved(config: &edge_config::Config) -> Vec<String> {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    let lookups = rt.block_on(crate::names::BackendNames::default().lookup(config));
    let mut out = Vec::new();
    for pool in &config.pools {
        for b in &pool.backends {
            if let Some(Err(e)) = lookups.resolved.get(&b.address.host) {
                out.push(format!(
                    "pool {}: backend {} does not resolve ({e}); it is down until it does",
                    pool.name, b.address
                ));
            }
        }
    }
    out
}
