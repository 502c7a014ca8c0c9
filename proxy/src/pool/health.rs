//! Active health checks: one task per backend of each checked pool, probing
//! at the configured interval (with a little jitter so probes do not march
//! in step). Results go through rise/fall before a backend changes state.
//! HTTP checks may carry load feedback in their body (`load=NN`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use edge_config::{HealthCheck, HealthCheckKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::pool::{BackendState, Pool};
use crate::state::ProxyState;

/// The running checks of one config generation; dropping them stops them.
#[derive(Default)]
pub struct HealthChecks {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl HealthChecks {
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What a probe needs to know of its backend.
struct Target {
    pool: String,
    label: String,
    addr: SocketAddr,
    host: String,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    load_from_body: bool,
    state: Arc<BackendState>,
}

/// Starts the checks of every pool that has one, on `runtime`.
pub fn spawn(state: &ProxyState, runtime: &tokio::runtime::Handle) -> HealthChecks {
    let mut checks = HealthChecks::default();
    for pool in &state.pools {
        let Some(check) = pool.config.health_check.clone() else {
            continue;
        };
        let tls = match &pool.config.tls {
            Some(t) => match crate::upstream_tls::client_config(&pool.name, t) {
                Ok(c) => Some((tokio_rustls::TlsConnector::from(c), t.sni.clone())),
                Err(e) => {
                    tracing::error!(pool = %pool.name, error = %e, "health checks: TLS settings");
                    None
                }
            },
            None => None,
        };
        for b in &pool.backends {
            let target = Target {
                pool: pool.name.clone(),
                label: b.label.clone(),
                addr: b.addr,
                host: host_header(pool, &check, &b.address.host),
                tls: tls.as_ref().and_then(|(connector, sni)| {
                    let name = sni.clone().unwrap_or_else(|| b.address.host.clone());
                    rustls::pki_types::ServerName::try_from(name)
                        .ok()
                        .map(|n| (connector.clone(), n))
                }),
                load_from_body: pool
                    .config
                    .load_feedback
                    .as_ref()
                    .is_some_and(|l| l.from_health_check),
                state: b.state.clone(),
            };
            checks.tasks.push(runtime.spawn(run(target, check.clone())));
        }
    }
    checks
}

fn host_header(pool: &Pool, check: &HealthCheck, backend_host: &str) -> String {
    if let HealthCheckKind::Http { host: Some(h), .. } = &check.kind {
        return h.clone();
    }
    pool.config
        .host
        .clone()
        .unwrap_or_else(|| backend_host.to_string())
}

async fn run(target: Target, check: HealthCheck) {
    // Spread the first probes over the interval.
    let jitter = |d: Duration| d.mul_f64(fastrand::f64() * 0.1);
    tokio::time::sleep(check.interval.mul_f64(fastrand::f64())).await;
    loop {
        let result = match tokio::time::timeout(check.timeout, probe(&target, &check)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", check.timeout)),
        };
        let (passed, error) = match result {
            Ok(load) => {
                if let (true, Some(load)) = (target.load_from_body, load) {
                    target.state.report_load(load);
                }
                (true, None)
            }
            Err(e) => (false, Some(e)),
        };
        if let Some(up) = target
            .state
            .health_report(passed, check.rise, check.fall, error.clone())
        {
            if up {
                tracing::info!(pool = %target.pool, backend = %target.label, "backend is up: health checks pass");
            } else {
                tracing::warn!(
                    pool = %target.pool,
                    backend = %target.label,
                    error = error.as_deref().unwrap_or(""),
                    "backend is down: health checks fail"
                );
            }
        }
        tokio::time::sleep(check.interval + jitter(check.interval)).await;
    }
}

/// One probe. `Ok(load)` when it passed (with a load figure if the body had one).
async fn probe(target: &Target, check: &HealthCheck) -> Result<Option<u8>, String> {
    let tcp = TcpStream::connect(target.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let HealthCheckKind::Http {
        path,
        expect_status,
        body_contains,
        ..
    } = &check.kind
    else {
        return Ok(None);
    };
    let request = get_request(&target.host, path);
    let response = match &target.tls {
        Some((connector, name)) => {
            let mut tls = connector
                .connect(name.clone(), tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            exchange(&mut tls, request.as_bytes()).await?
        }
        None => {
            let mut tcp = tcp;
            exchange(&mut tcp, request.as_bytes()).await?
        }
    };
    let (status, body) = parse_response(&response)?;
    if !expect_status.contains(status) {
        return Err(format!(
            "status {status}, expected {}-{}",
            expect_status.min, expect_status.max
        ));
    }
    if let Some(needle) = body_contains {
        if !body.contains(needle.as_str()) {
            return Err(format!("body does not contain {needle:?}"));
        }
    }
    Ok(load_in(&body))
}

/// A plain HTTP/1.1 GET of `path` at `addr` (with `Host: host`): the status
/// and body, for probes outside pools (GeoDNS site checks).
pub async fn http_get(addr: SocketAddr, host: &str, path: &str) -> Result<(u16, String), String> {
    let mut tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let response = exchange(&mut tcp, get_request(host, path).as_bytes()).await?;
    parse_response(&response)
}

fn get_request(host: &str, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: edge-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
}

/// Largest response read from a health endpoint.
const MAX_RESPONSE: usize = 64 * 1024;

async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    request: &[u8],
) -> Result<Vec<u8>, String> {
    stream
        .write_all(request)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            // A TLS peer closing without close_notify after a full response is common.
            Err(_) if !buf.is_empty() => 0,
            Err(e) => return Err(format!("read: {e}")),
        };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() >= MAX_RESPONSE {
            break;
        }
    }
    Ok(buf)
}

/// Status code and body text of a raw HTTP/1.x response.
fn parse_response(raw: &[u8]) -> Result<(u16, String), String> {
    let text = String::from_utf8_lossy(raw);
    let status_line = text.lines().next().ok_or("empty response")?;
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP response: {status_line:?}"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

/// `load=NN` (0–100) anywhere in a health body, HAProxy agent-check style.
fn load_in(body: &str) -> Option<u8> {
    let at = body.find("load=")?;
    let digits: String = body[at + 5..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse::<u8>().ok().map(|l| l.min(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_parsed_leniently() {
        let (s, b) =
            parse_response(b"HTTP/1.1 503 Service Unavailable\r\nX: y\r\n\r\ndown\n").unwrap();
        assert_eq!((s, b.as_str()), (503, "down\n"));
        assert!(parse_response(b"").is_err());
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 abc\r\n\r\n").is_err());
    }

    #[test]
    fn load_is_read_from_the_body() {
        assert_eq!(load_in("ok load=80\n"), Some(80));
        assert_eq!(load_in("load=250"), Some(100));
        assert_eq!(load_in("ok"), None);
        assert_eq!(load_in("load=x"), None);
    }
}
