//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// `0.1.0 (1a2b3c4d5e6f)`: the crate version and the git commit.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("EDGE_GIT_COMMIT"),
    ")"
);

#[derive(Debug, Parser)]
#[command(
    name = "edge",
    version = VERSION,
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
    /// What the running node a config describes is doing: readiness, its
    /// config generation, pools and backends, cache tiers, its site, a
    /// prefill job (from its admin API).
    Status {
        #[arg(long, short)]
        config: PathBuf,
        /// Only whether the process answers (`GET /live`): exit status 0 or
        /// 1, nothing printed on success (a container HEALTHCHECK).
        #[arg(long)]
        live: bool,
    },
    /// Why a client goes where it goes: its location, every candidate
    /// site and why it won or lost, the DNS answer, then for --url the
    /// node that owns the object, whether it holds it, and the steering
    /// ranking (the admin API's `GET /explain` of the node a config
    /// describes: the GeoDNS node).
    Explain {
        #[arg(long, short)]
        config: PathBuf,
        /// The client's address.
        #[arg(long)]
        client: std::net::IpAddr,
        /// The EDNS client subnet its resolver would send, such as "203.0.113.0/24".
        #[arg(long)]
        ecs: Option<String>,
        /// The name it resolves.
        #[arg(long)]
        host: String,
        /// The object it fetches: a path on --host or an absolute URL.
        #[arg(long)]
        url: Option<String>,
        /// Print the JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a signed URL for a route with `auth` (HMAC-SHA256, the keys
    /// read from the environment the config names), valid for --ttl.
    Sign {
        #[arg(long, short)]
        config: PathBuf,
        /// The URL to sign (`https://host/path?query`).
        url: String,
        /// How long the URL stays valid, such as "1h" or "30m".
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// The route whose key signs (default: the route serving the URL).
        #[arg(long)]
        route: Option<String>,
        /// The client address the token is bound to (routes with
        /// `bind = ["client_ip"]`).
        #[arg(long)]
        client_ip: Option<std::net::IpAddr>,
        /// The key id to sign with (default: the route's first key).
        #[arg(long)]
        key: Option<String>,
        /// Sign a prefix of the path (`scope = "path-prefix"`), such as
        /// "/vod/title1/".
        #[arg(long)]
        prefix: Option<String>,
        /// Print the `Cookie` field for signed cookies instead of the URL.
        #[arg(long)]
        cookie: bool,
    },
    /// Print a shell completion script (`edge completions bash >
    /// /etc/bash_completion.d/edge`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the admin API's OpenAPI 3.1 document, as `GET /openapi.json`
    /// serves it (`--markdown`: the reference in docs/admin-api.md).
    Openapi {
        #[arg(long)]
        markdown: bool,
    },
    /// Print the manual page (roff; `edge man > edge.1`).
    #[command(hide = true)]
    Man,
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
