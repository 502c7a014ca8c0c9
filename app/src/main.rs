//! `edge`: check a config, run a node, run the synthetic origin, or a demo.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod acme;
mod admin;
mod check;
mod cli;
mod ctl;
mod demo;
mod digest;
mod dns;
mod events;
mod handover;
mod heap_stats;
mod logging;
mod names;
mod origin_cmd;
mod otlp;
mod out;
mod prefill;
mod runtime;
mod server;
mod sign;
mod steering;
mod upgrade;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc (`edge-alloc`); an `alloc-stats` build counts allocations
/// instead (`heap_stats`).
#[cfg(not(feature = "alloc-stats"))]
#[global_allocator]
static GLOBAL: edge_alloc::Mimalloc = edge_alloc::Mimalloc;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { file } => return check::run(&file),
        Command::Run { config, log_format } => run(&config, log_format),
        Command::Reload { config } => ctl::run(&config, "reload"),
        Command::Upgrade { config } => ctl::run(&config, "upgrade"),
        Command::Status { config, live } => ctl::status(&config, live),
        Command::Explain {
            config,
            client,
            ecs,
            host,
            url,
            json,
        } => ctl::explain(&config, client, ecs, &host, url, json),
        Command::Sign {
            config,
            url,
            ttl,
            route,
            client_ip,
            key,
            prefix,
            cookie,
        } => sign::run(
            &config,
            &sign::Request {
                url: &url,
                ttl: &ttl,
                route: route.as_deref(),
                client_ip,
                key: key.as_deref(),
                prefix: prefix.as_deref(),
            },
            cookie,
        ),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "edge", &mut std::io::stdout());
            Ok(())
        }
        Command::Openapi { markdown } => {
            use std::io::Write;
            admin::openapi_text(markdown).and_then(|text| {
                std::io::stdout()
                    .write_all(text.as_bytes())
                    .map_err(anyhow::Error::from)
            })
        }
        Command::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd)
                .render(&mut std::io::stdout())
                .map_err(anyhow::Error::from)
        }
        Command::Prefill {
            config,
            list,
            rendition,
            window,
            rate,
        } => ctl::prefill(&config, &list, rendition, window, rate),
        Command::Origin {
            listen,
            name,
            fault,
            log_format,
        } => {
            logging::init(log_format.map_or(edge_config::LogFormat::Text, Into::into));
            origin_cmd::run(listen, name, fault)
        }
        Command::Demo { log_format } => {
            logging::init(log_format.map_or(edge_config::LogFormat::Text, Into::into));
            demo::run()
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            crate::out::complain!("edge: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(path: &std::path::Path, log_format: Option<cli::LogFormatArg>) -> anyhow::Result<()> {
    // First, while this is the only thread: it edits the environment.
    let inherited = handover::Inherited::from_env().map_err(|e| {
        anyhow::anyhow!("taking over the sockets of the process being replaced: {e}")
    })?;
    let config = match edge_config::load(path) {
        Ok(c) => c,
        Err(diags) => {
            crate::out::complain!("{}", diags.render());
            anyhow::bail!("{}: {} error(s); not started", path.display(), diags.len());
        }
    };
    logging::init(log_format.map_or(config.server.log_format, Into::into));
    let control = server::control_runtime()?;
    server::run_node(config, control, inherited)
}
