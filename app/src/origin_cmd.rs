//! `edge origin`: the synthetic media origin on its own.

use std::net::SocketAddr;

use anyhow::Context;
use edge_origin::{Faults, Origin, OriginConfig};

pub fn run(listen: SocketAddr, name: String, fault: Option<String>) -> anyhow::Result<()> {
    let faults = match fault {
        Some(f) => Faults::parse(&f).map_err(|e| anyhow::anyhow!("--fault: {e}"))?,
        None => Faults::default(),
    };
    let rt = crate::server::control_runtime()?;
    rt.block_on(async move {
        // Installed before `ready`, so an early SIGTERM is handled, not fatal.
        let stop = StopOnSignal::install();
        let origin = Origin::new(OriginConfig {
            name: name.clone(),
            faults,
            ..OriginConfig::default()
        })
        .spawn(listen)
        .await
        .with_context(|| format!("origin: cannot listen on {listen}"))?;
        crate::runtime::announce("origin", &name, origin.addr());
        crate::out::ready();
        tracing::info!(
            addr = %origin.addr(),
            "origin serving: try http://{}/vod/bbb/master.m3u8 and /_origin/stats",
            origin.addr()
        );
        stop.wait().await;
        tracing::info!("origin stopping");
        origin.shutdown().await;
        Ok(())
    })
}

/// SIGINT and SIGTERM, watched from the moment of `install`.
struct StopOnSignal {
    term: std::io::Result<tokio::signal::unix::Signal>,
    int: std::io::Result<tokio::signal::unix::Signal>,
}

impl StopOnSignal {
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Self {
            term: signal(SignalKind::terminate()),
            int: signal(SignalKind::interrupt()),
        }
    }

    async fn wait(self) {
        match (self.term, self.int) {
            (Ok(mut t), Ok(mut i)) => {
                tokio::select! { _ = t.recv() => {}, _ = i.recv() => {} }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
