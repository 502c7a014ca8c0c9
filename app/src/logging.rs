//! Structured logs with tracing: text or JSON on stderr, filtered by
//! `RUST_LOG` (default `info`). pingora's `log` records are bridged in.
//! Access log lines use the target `access`.

use std::io::IsTerminal;

use edge_config::LogFormat;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

pub fn init(format: LogFormat) {
    crate::out::use_json(format == LogFormat::Json);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(true)
        // A closed stderr loses the line; the default would print about
        // it with eprintln!, which panics on a closed stderr.
        .log_internal_errors(false);
    // The dashboard's recent events come from the same events (events.rs).
    let result = match format {
        LogFormat::Text => builder.finish().with(crate::events::Recorder).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .finish()
            .with(crate::events::Recorder)
            .try_init(),
    };
    if let Err(e) = result {
        crate::out::complain!("edge: logging already initialised: {e}");
    }
}
