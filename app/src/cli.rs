//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "edge",
    version,
    about = "An edge networking stack: load balancer, video cache, GeoDNS"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a config file: every error with its line, or a summary.
    Check {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Run a node from a config file.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Log format (overrides `server.log_format`).
        #[arg(long, value_enum)]
        log_format: Option<LogFormatArg>,
    },
    /// Ask the running node a config describes to read its file again
    /// (`POST /reload` on its admin API, with its token).
    Reload {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Replace the running node's binary without dropping a connection:
    /// it starts the executable at its path again, hands it its sockets and
    /// drains once the new one serves (`POST /upgrade`; SIGUSR2 does the same).
    Upgrade {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Fill the cache of the running node a config describes ahead of
    /// demand (`POST /cache/prefill`): the URLs in LIST (one per line, `#`
    /// comments; `-` reads stdin), HLS/DASH manifests expanded to their
    /// segments. On every node of a site: each fills only what it owns.
    Prefill {
        #[arg(long, short)]
        config: PathBuf,
        /// A file of object or manifest URLs (`http://host/path`).
        list: PathBuf,
        /// Only these renditions of manifests (repeatable): HLS by path
        /// segment, file name, NAME or RESOLUTION; DASH by Representation id.
        #[arg(long)]
        rendition: Vec<String>,
        /// Local time window, such as "02:00-14:00".
        #[arg(long)]
        window: Option<String>,
        /// Bandwidth cap, such as "50 Mbit/s".
        #[arg(long)]
        rate: Option<String>,
    },
    /// Run the synthetic media origin alone.
    Origin {
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        /// Name sent in X-Origin-Name.
        #[arg(long, default_value = "origin")]
        name: String,
        /// Faults for every request, e.g. "latency=50ms, error=503@0.01".
        #[arg(long)]
        fault: Option<String>,
        #[arg(long, value_enum)]
        log_format: Option<LogFormatArg>,
    },
    /// Start an origin, an edge node in front of it and the admin API on
    /// loopback, and print what to try.
    Demo {
        #[arg(long, value_enum)]
        log_format: Option<LogFormatArg>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

impl From<LogFormatArg> for edge_config::LogFormat {
    fn from(f: LogFormatArg) -> Self {
        match f {
            LogFormatArg::Text => edge_config::LogFormat::Text,
            LogFormatArg::Json => edge_config::LogFormat::Json,
        }
    }
}
